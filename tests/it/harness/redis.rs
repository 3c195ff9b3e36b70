//! A real `redis-server` on 127.0.0.1 that can be stopped and started again with its data
//! (append-only file in a temporary folder), killed by PID when dropped.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A running (or stopped) Redis.
pub struct Redis {
    /// `redis://127.0.0.1:PORT`.
    pub url: String,
    port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl Redis {
    /// Starts Redis on a free port.
    pub async fn start() -> Redis {
        let port = super::free_port();
        let mut redis = Redis {
            url: format!("redis://127.0.0.1:{port}"),
            port,
            dir: tempfile::tempdir().unwrap(),
            child: None,
        };
        redis.resume().await;
        redis
    }

    /// Starts the server again on the same port and data.
    pub async fn resume(&mut self) {
        let child = Command::new("redis-server")
            .args([
                "--port",
                &self.port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
            ])
            .args(["--appendonly", "yes", "--appendfsync", "always"])
            .arg("--dir")
            .arg(self.dir.path())
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server (apt-get install redis-server)");
        self.child = Some(child);
        let ready = super::eventually(Duration::from_secs(10), || async {
            let client = redis::Client::open(self.url.as_str()).ok()?;
            let mut conn = client.get_multiplexed_async_connection().await.ok()?;
            redis::cmd("PING")
                .query_async::<String>(&mut conn)
                .await
                .ok()
        })
        .await;
        assert!(ready.is_some(), "redis-server did not start");
    }

    /// Stops the server (SIGTERM: it flushes its append-only file and exits).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
            let _ = child.wait();
        }
    }

    /// Freezes (`SIGSTOP`) or thaws (`SIGCONT`) the server: connections stay open, answers stop.
    pub fn freeze(&self, frozen: bool) {
        let child = self.child.as_ref().expect("running");
        let sig = if frozen { "-STOP" } else { "-CONT" };
        let _ = Command::new("kill")
            .args([sig, &child.id().to_string()])
            .status();
    }

    /// A connection for inspecting or arranging keys.
    pub async fn conn(&self) -> redis::aio::MultiplexedConnection {
        redis::Client::open(self.url.as_str())
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap()
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
