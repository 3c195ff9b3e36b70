//! The test harness: real servers on 127.0.0.1, each a handle that stops its process or task
//! when dropped.

pub mod bad_provider;
pub mod browser;
pub mod caddy;
pub mod gateway;
pub mod nginx;
pub mod otlp;
pub mod pdp;
pub mod prometheus;
pub mod provider;
pub mod redis;
pub mod upstream;

use std::future::Future;
use std::time::{Duration, Instant};

/// A 32-byte session key, base64.
pub const SESSION_KEY: &str = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=";
/// Another one, for rotation tests.
pub const SESSION_KEY_2: &str = "ZmVkY2JhOTg3NjU0MzIxMGZlZGNiYTk4NzY1NDMyMTA=";
/// The client secret every test client uses.
pub const CLIENT_SECRET: &str = "test-client-secret-3f9a";

/// Writes a new signing key of `alg` to `dir/sallyport.pem`; the `signing_keys` YAML listing
/// it with `kid`.
pub fn signing_key(dir: &std::path::Path, alg: sallyport::keys::NewKey, kid: &str) -> String {
    let key = dir.join("sallyport.pem");
    std::fs::write(&key, sallyport::keys::generate(alg).unwrap()).unwrap();
    format!(
        "signing_keys:\n  - {{ file: {}, kid: \"{kid}\" }}\n",
        key.display()
    )
}

/// Waits until `check` returns `Some`, polling for at most `timeout`.
pub async fn eventually<T, F, Fut>(timeout: Duration, mut check: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = check().await {
            return Some(v);
        }
        if start.elapsed() > timeout {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Stops a server process the way its operator would: SIGTERM (a master process then stops
/// its workers too), a second to exit, then SIGKILL.
pub fn stop_process(child: &mut std::process::Child) {
    let pid = child.id().to_string();
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status();
    for _ in 0..50 {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// Whether something accepts connections on `port` of 127.0.0.1 within 10 s.
pub async fn listening(port: u16) -> bool {
    eventually(Duration::from_secs(10), || async {
        tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .ok()
            .map(|_| ())
    })
    .await
    .is_some()
}

/// A listener on a free port, held until the gateway takes it over (no race with other tests).
pub fn reserve_port() -> std::net::TcpListener {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap()
}

/// A port that was free a moment ago (for servers that must bind it themselves).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
