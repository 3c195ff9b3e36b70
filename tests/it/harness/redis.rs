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
        for _ in 0..5 {
            let port = super::free_port();
            let mut redis = Redis {
                url: format!("redis://127.0.0.1:{port}"),
                port,
                dir: tempfile::tempdir().unwrap(),
                child: None,
            };
            if redis.launch().await {
                return redis;
            }
            // Another test took the port between choosing and binding it: `redis` is dropped
            // (its child killed) and another port tried.
        }
        panic!("redis-server did not start");
    }

    /// Starts the server again on the same port and data.
    pub async fn resume(&mut self) {
        assert!(
            self.launch().await,
            "redis-server did not start again on its port"
        );
    }

    /// Starts the child; true once the server answering on the port is this child.
    async fn launch(&mut self) -> bool {
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
        let pid = format!("process_id:{}", child.id());
        self.child = Some(child);
        let answer = super::eventually(Duration::from_secs(10), || async {
            let client = redis::Client::open(self.url.as_str()).ok()?;
            let mut conn = client.get_multiplexed_async_connection().await.ok()?;
            let info: String = redis::cmd("INFO")
                .arg("server")
                .query_async(&mut conn)
                .await
                .ok()?;
            Some(info.lines().any(|l| l.trim() == pid))
        })
        .await;
        answer == Some(true)
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
