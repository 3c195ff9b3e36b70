//! Rate limits on failed attempts that cost a provider call, that nothing else is limited, and
//! the headers on Sallyport's own answers.

use std::net::IpAddr;
use std::time::Duration;

use reqwest::{Method, StatusCode};

use crate::harness::browser::{Browser, urlencode};
use crate::login::Stack;

fn client_from(ip: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .local_address(ip.parse::<IpAddr>().unwrap())
        .build()
        .unwrap()
}

/// A callback that brings this client's own valid login cookie but a code the provider
/// refuses: the kind of attempt that costs a provider call, and so counts. (The state is read
/// from a front-channel request: the stacks here have `par: off`.)
async fn failed_callback(stack: &Stack, b: &Browser, headers: &[(&str, &str)]) -> StatusCode {
    let state = state_of(&b.start_login("return_to=/").await);
    let iss = urlencode(&stack.provider.issuer);
    b.fetch_with(
        Method::GET,
        &format!("/auth/callback?state={state}&code=forged&iss={iss}"),
        headers,
    )
    .await
    .status
}

/// The `state` of an authorization request URL.
fn state_of(to_provider: &str) -> String {
    url::Url::parse(to_provider)
        .unwrap()
        .query_pairs()
        .find(|(k, _)| k == "state")
        .unwrap()
        .1
        .into_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn failed_callbacks_are_limited_per_client_and_nothing_else_is() {
    let stack = Stack::start_with(
        |_| {},
        |g| {
            g.server_yaml = "  rate_limit: { limit: 5, window: 1m }".into();
            g.provider_yaml = "    par: off".into();
        },
    )
    .await;
    // A logged-in user behind the same address as the attacker.
    let user = Browser::with_local_address(&stack.gateway.url, "127.0.0.3");
    user.login("alice", "/").await;

    let attacker = Browser::with_local_address(&stack.gateway.url, "127.0.0.3");
    for i in 0..5 {
        assert_eq!(
            failed_callback(&stack, &attacker, &[]).await,
            StatusCode::BAD_REQUEST,
            "attempt {i} reaches the provider and fails"
        );
    }
    let to_provider = attacker.start_login("return_to=/").await;
    assert!(
        to_provider.contains("state="),
        "login starts are never limited"
    );
    let page = attacker
        .fetch(Method::GET, "/auth/callback?state=aaaaaaaaaaaaaaaa&code=x")
        .await;
    assert_eq!(
        page.status,
        StatusCode::BAD_REQUEST,
        "a callback without a valid login cookie is refused for free, never counted"
    );
    // The sixth attempt that would call the provider is refused before it does.
    let state = state_of(&attacker.start_login("return_to=/").await);
    let iss = urlencode(&stack.provider.issuer);
    let refused = attacker
        .fetch(
            Method::GET,
            &format!("/auth/callback?state={state}&code=x&iss={iss}"),
        )
        .await;
    assert_eq!(refused.status, StatusCode::TOO_MANY_REQUESTS);
    let retry: u64 = refused.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry), "Retry-After {retry}");
    assert_eq!(refused.json()["error"], "rate_limited");

    // The logged-in user behind the same address is not affected, and another address can
    // still log in.
    assert_eq!(
        user.fetch(Method::GET, "/api/echo/x").await.status,
        StatusCode::OK
    );
    assert_eq!(
        user.fetch(Method::GET, "/api/auth/session").await.status,
        StatusCode::OK
    );
    let other = Browser::with_local_address(&stack.gateway.url, "127.0.0.4");
    other.login("bob", "/").await;
    assert_eq!(
        other.fetch(Method::GET, "/api/auth/session").await.status,
        StatusCode::OK
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn behind_a_trusted_proxy_the_limit_applies_to_each_client_not_to_the_proxy() {
    let stack = Stack::start_with(
        |_| {},
        |g| {
            g.trusted_proxies = "[127.0.0.1/32]";
            g.server_yaml = "  rate_limit: { limit: 3, window: 1m }".into();
            g.provider_yaml = "    par: off".into();
        },
    )
    .await;
    let edge = stack.browser();
    let via_edge = |client: &'static str| {
        let edge = edge.clone();
        let stack = &stack;
        async move { failed_callback(stack, &edge, &[("x-forwarded-for", client)]).await }
    };
    for _ in 0..3 {
        assert_eq!(via_edge("203.0.113.7").await, StatusCode::BAD_REQUEST);
    }
    assert_eq!(via_edge("203.0.113.7").await, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(
        via_edge("203.0.113.8").await,
        StatusCode::BAD_REQUEST,
        "another client behind the same proxy is not limited"
    );
    // An untrusted peer cannot dodge its limit by naming other addresses.
    let direct = Browser::with_local_address(&stack.gateway.url, "127.0.0.2");
    for fake in ["198.51.100.1", "198.51.100.2", "198.51.100.3"] {
        assert_eq!(
            failed_callback(&stack, &direct, &[("x-forwarded-for", fake)]).await,
            StatusCode::BAD_REQUEST
        );
    }
    assert_eq!(
        failed_callback(&stack, &direct, &[("x-forwarded-for", "198.51.100.4")]).await,
        StatusCode::TOO_MANY_REQUESTS
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn two_thousand_logins_from_one_address_succeed_with_defaults() {
    let stack = Stack::start().await;
    let started = std::time::Instant::now();
    let workers = (0..8).map(|_| {
        let url = stack.gateway.url.clone();
        tokio::spawn(async move {
            for _ in 0..250 {
                let b = Browser::new(&url);
                let page = b.login("alice", "/").await;
                assert_eq!(page.status, StatusCode::FOUND, "{}", page.body);
            }
        })
    });
    for w in futures_util::future::join_all(workers).await {
        w.unwrap();
    }
    let took = started.elapsed();
    eprintln!(
        "2,000 logins from one address in {took:?} ({:.0}/s, the provider's pace)",
        2000.0 / took.as_secs_f64()
    );
    assert_eq!(stack.provider.grants("authorization_code").await, 2000);
}

#[tokio::test(flavor = "multi_thread")]
async fn anonymous_verifications_leave_a_logged_in_user_behind_the_same_address_unaffected() {
    let stack = Stack::start_with(|_| {}, |g| g.forward_auth = Some("nginx")).await;
    let forward = stack.gateway.forward_url.clone().unwrap();
    let user = stack.browser();
    user.login("alice", "/").await;
    let anon = reqwest::Client::new();
    for _ in 0..1000 {
        let resp = anon
            .get(format!("{forward}/auth/verify"))
            .header("x-original-uri", "/app/page")
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED, "a normal answer");
    }
    let resp = user
        .http
        .get(format!("{forward}/auth/verify"))
        .header("x-original-uri", "/api/echo/x")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(resp.headers().get("authorization").is_some());
    // And 1,000 anonymous API calls on the public port are just as harmless.
    for _ in 0..1000 {
        let page = Browser::new(&stack.gateway.url)
            .fetch(Method::GET, "/api/echo/x")
            .await;
        assert_eq!(page.status, StatusCode::UNAUTHORIZED);
    }
    assert_eq!(
        user.fetch(Method::GET, "/api/echo/x").await.status,
        StatusCode::OK
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn sallyports_own_answers_are_not_stored_sniffed_or_framed() {
    let stack = Stack::start().await;
    let http = client_from("127.0.0.1");
    for path in [
        "/auth/health",
        "/auth/ready",
        "/api/auth/session",
        "/auth/login?return_to=//evil",
        "/auth/login",
        "/auth/nothing",
    ] {
        let resp = http
            .get(format!("http://127.0.0.1:{}{path}", stack.opts.port))
            .send()
            .await
            .unwrap();
        let h = resp.headers();
        assert_eq!(h["cache-control"], "no-store", "{path}");
        assert_eq!(h["x-content-type-options"], "nosniff", "{path}");
        assert_eq!(h["referrer-policy"], "no-referrer", "{path}");
        assert!(
            h["content-security-policy"]
                .to_str()
                .unwrap()
                .contains("frame-ancestors 'none'"),
            "{path}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn routes_limit_body_and_header_sizes() {
    let small = "  - path: /api/small\n    service: public\n    upstream_path: /upload\n    auth: none\n    max_body: 1KiB\n    max_headers: 2KiB\n";
    let stack = Stack::start_with(|_| {}, |g| g.extra_yaml = small.into()).await;
    let http = client_from("127.0.0.1");
    let url = |path: &str| format!("http://127.0.0.1:{}{path}", stack.opts.port);

    let resp = http
        .post(url("/api/small"))
        .body(vec![b'x'; 512])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(
        resp.json::<serde_json::Value>().await.unwrap()["bytes"],
        512
    );

    let resp = http
        .post(url("/api/small"))
        .body(vec![b'x'; 2048])
        .send()
        .await
        .unwrap();
    assert_eq!(
        resp.status(),
        StatusCode::PAYLOAD_TOO_LARGE,
        "a declared length over the limit"
    );
    assert_eq!(
        resp.json::<serde_json::Value>().await.unwrap()["error"],
        "request_too_large"
    );

    // A chunked body (no declared length) is cut off at the limit: the upstream never gets it whole.
    let chunks = futures_util::stream::iter(
        (0..8).map(|_| Ok::<_, std::io::Error>(bytes::Bytes::from(vec![b'y'; 512]))),
    );
    let resp = http
        .post(url("/api/small"))
        .body(reqwest::Body::wrap_stream(chunks))
        .send()
        .await;
    if let Ok(resp) = resp {
        assert_ne!(resp.status(), StatusCode::OK, "4 KiB passed a 1 KiB limit");
    }

    let resp = http
        .get(url("/api/small"))
        .header("x-big", "z".repeat(3000))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
    assert_eq!(
        resp.json::<serde_json::Value>().await.unwrap()["error"],
        "request_headers_too_large"
    );
    // Other routes keep the 16 KiB default.
    let resp = http
        .get(url("/api/public/x"))
        .header("x-big", "z".repeat(3000))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let resp = http
        .get(url("/api/public/x"))
        .header("x-big", "z".repeat(17 * 1024))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
}

#[tokio::test(flavor = "multi_thread")]
async fn slow_heads_and_idle_connections_are_cut_off_and_connections_are_capped() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;
    let stack = Stack::start_with(
        |_| {},
        |g| g.server_yaml = "  header_read_timeout: 1s".into(),
    )
    .await;
    let port = stack.opts.port;
    let closed_within = |mut tcp: TcpStream, limit: Duration| async move {
        let started = std::time::Instant::now();
        let mut sink = Vec::new();
        let read = tokio::time::timeout(limit, tcp.read_to_end(&mut sink)).await;
        assert!(read.is_ok(), "still open after {limit:?}");
        (started.elapsed(), sink)
    };
    // Slowloris: a request head that never ends.
    let mut slow = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    slow.write_all(b"GET /auth/health HTTP/1.1\r\nHost: localhost\r\nX-A: ")
        .await
        .unwrap();
    let (took, _) = closed_within(slow, Duration::from_secs(5)).await;
    assert!(took >= Duration::from_millis(900), "cut off after {took:?}");
    // A connection that never says anything, and one left idle after a request.
    let silent = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    closed_within(silent, Duration::from_secs(5)).await;
    let mut idle = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    idle.write_all(b"GET /auth/health HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    let (_, answered) = closed_within(idle, Duration::from_secs(5)).await;
    assert!(
        answered.starts_with(b"HTTP/1.1 200"),
        "the request itself was answered"
    );
    // HTTP/2 with prior knowledge (h2c) is still recognised: the server's SETTINGS come back.
    let mut h2 = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    h2.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0")
        .await
        .unwrap();
    let mut frame = [0u8; 9];
    tokio::time::timeout(Duration::from_secs(5), h2.read_exact(&mut frame))
        .await
        .expect("an HTTP/2 answer")
        .unwrap();
    assert_eq!(frame[3], 0x04, "a SETTINGS frame: {frame:?}");

    // At most max_connections at once: the next one waits until one closes.
    let capped = Stack::start_with(|_| {}, |g| g.server_yaml = "  max_connections: 2".into()).await;
    let port = capped.opts.port;
    let hold = [
        TcpStream::connect(("127.0.0.1", port)).await.unwrap(),
        TcpStream::connect(("127.0.0.1", port)).await.unwrap(),
    ];
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut third = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    third
        .write_all(b"GET /auth/health HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    let waited =
        tokio::time::timeout(Duration::from_millis(500), third.read_to_end(&mut answer)).await;
    assert!(
        waited.is_err(),
        "a third connection was served while two were open"
    );
    drop(hold);
    tokio::time::timeout(Duration::from_secs(5), third.read_to_end(&mut answer))
        .await
        .expect("served once a connection closed")
        .unwrap();
    assert!(answer.starts_with(b"HTTP/1.1 200"));
}
