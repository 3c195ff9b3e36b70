//! The embedded durable store across restarts, and session key rotation.

use reqwest::{Method, StatusCode};

use crate::harness::gateway::Gateway;
use crate::harness::{SESSION_KEY, SESSION_KEY_2};
use crate::login::Stack;

#[tokio::test(flavor = "multi_thread")]
async fn file_store_sessions_survive_a_restart_and_key_rotation() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sessions.db");
    let session_yaml = format!("  store: file\n  file: {{ path: {} }}", path.display());
    let mut stack = Stack::start_with(|_| {}, |g| g.session_yaml = session_yaml.clone()).await;
    let b = stack.browser();
    b.login("alice", "/").await;
    assert_eq!(
        b.fetch(Method::GET, "/api/echo/before").await.status,
        StatusCode::OK
    );
    let (access, _, _) = stack.tokens_of(&b).await;
    // Nothing readable in the file: records are sealed and keyed by a hash of the id.
    let raw = std::fs::read(&path).unwrap();
    let cookie = b.cookie("sallyport").unwrap();
    for secret in [access.as_bytes(), cookie.as_bytes(), b"alice@example.com"] {
        assert!(
            !raw.windows(secret.len()).any(|w| w == secret),
            "the store file holds plaintext"
        );
    }

    // Restart Sallyport on the same file: the session is still valid.
    let opts = stack.opts.clone();
    stack.gateway.stop().await;
    stack.gateway = Gateway::start(&opts).await;
    let page = b.fetch(Method::GET, "/api/echo/after-restart").await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    assert_eq!(page.json()["headers"]["x-auth-request-user"][0], "alice");

    // Rotate: a new first key seals, the old one still opens.
    let mut rotated = opts.clone();
    rotated.keys = vec![SESSION_KEY_2.to_owned(), SESSION_KEY.to_owned()];
    stack.gateway.stop().await;
    stack.gateway = Gateway::start(&rotated).await;
    assert_eq!(
        b.fetch(Method::GET, "/api/auth/session").await.status,
        StatusCode::OK,
        "old sessions survive rotation"
    );
    let newer = stack.browser();
    newer.login("bob", "/").await;

    // Retire the old key: sessions sealed only with it end, newer ones live on.
    let mut retired = opts.clone();
    retired.keys = vec![SESSION_KEY_2.to_owned()];
    stack.gateway.stop().await;
    stack.gateway = Gateway::start(&retired).await;
    assert_eq!(
        newer.fetch(Method::GET, "/api/auth/session").await.status,
        StatusCode::OK,
        "sealed with the new key"
    );
    // And the reverse: with only the old key, a session sealed under the new one does not open.
    let mut old_only = opts.clone();
    old_only.keys = vec![SESSION_KEY.to_owned()];
    stack.gateway.stop().await;
    stack.gateway = Gateway::start(&old_only).await;
    assert_eq!(
        newer.fetch(Method::GET, "/api/auth/session").await.status,
        StatusCode::UNAUTHORIZED,
        "a key that is no longer configured opens nothing"
    );
}

/// A gateway that stops lets go of its store within the grace period, whatever its clients
/// do: one connected and sent nothing, one sent half a request head. Both would otherwise
/// hold it until `server.header_read_timeout` (30 s), and a restart on the same file fails.
#[tokio::test(flavor = "multi_thread")]
async fn stopping_closes_silent_and_stalled_connections_and_releases_the_store() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sessions.db");
    let session_yaml = format!("  store: file\n  file: {{ path: {} }}", path.display());
    let stack = Stack::start_with(|_| {}, |g| g.session_yaml = session_yaml.clone()).await;
    let addr = ("127.0.0.1", stack.opts.port);
    let mut silent = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut stalled = tokio::net::TcpStream::connect(addr).await.unwrap();
    stalled
        .write_all(b"GET /api/echo/x HTTP/1.1\r\nHost: localhost\r\n")
        .await
        .unwrap();
    // Both are being served (sniffed, or reading the head) before the stop.
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;

    let started = std::time::Instant::now();
    let stopping = tokio::spawn(stack.gateway.stop());
    // The silent one goes at once, well within the 2 s grace period…
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(
        std::time::Duration::from_secs(1),
        silent.read_to_end(&mut rest),
    )
    .await;
    assert!(closed.is_ok(), "the silent connection is closed at once");
    // …the stalled one at its end, and serve() returns then.
    tokio::time::timeout(std::time::Duration::from_secs(10), stopping)
        .await
        .expect("serve() returns")
        .unwrap();
    assert!(
        started.elapsed() < std::time::Duration::from_secs(4),
        "{:?}",
        started.elapsed()
    );
    let closed = tokio::time::timeout(
        std::time::Duration::from_secs(1),
        stalled.read_to_end(&mut rest),
    )
    .await;
    assert!(closed.is_ok(), "the stalled connection is closed");
    sallyport::Gateway::new(stack.opts.config()).expect("the store file is free again");
}
