//! The `/api/**` proxy: routing, methods, auth modes, upstream failures, path safety, header
//! hygiene and WebSocket upgrades.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::harness::browser::Browser;
use crate::login::Stack;

#[tokio::test(flavor = "multi_thread")]
async fn routes_methods_and_auth_modes() {
    let stack = Stack::start().await;
    let anon = stack.browser();

    // auth: none forwards without a session and without a token.
    let page = anon.fetch(Method::GET, "/api/public/status").await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.json()["headers"].get("authorization").is_none());
    // auth: optional forwards anonymously…
    let page = anon.fetch(Method::GET, "/api/optional/feed").await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.json()["headers"].get("x-auth-request-user").is_none());
    // …and a client's own bearer is never passed on.
    let page = anon
        .fetch_with(
            Method::GET,
            "/api/public/x",
            &[("authorization", "Bearer client-made-this-up")],
        )
        .await;
    assert!(page.json()["headers"].get("authorization").is_none());

    let b = stack.browser();
    b.login("alice", "/").await;
    let page = b.fetch(Method::GET, "/api/optional/feed").await;
    assert_eq!(
        page.json()["headers"]["x-auth-request-user"][0],
        "alice",
        "optional uses the session when present"
    );

    // A method the route does not list: 405 with Allow.
    let csrf = b.csrf_token().await;
    let origin = stack.gateway.url.clone();
    let page = b
        .fetch_with(
            Method::POST,
            "/api/readonly/x",
            &[("x-csrf-token", &csrf), ("origin", &origin)],
        )
        .await;
    assert_eq!(page.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(page.header("allow"), Some("GET"));
    assert_eq!(page.json()["error"], "method_not_allowed");
    assert_eq!(
        b.fetch(Method::GET, "/api/readonly/x").await.status,
        StatusCode::OK
    );

    // Unsafe methods on session routes carry the CSRF token.
    let page = b
        .fetch_with(Method::POST, "/api/echo/orders", &[("origin", &origin)])
        .await;
    assert_eq!(page.status, StatusCode::FORBIDDEN);
    assert_eq!(page.json()["error"], "csrf_failed");
    let resp = b
        .http
        .delete(b.url("/api/echo/orders/7"))
        .header("x-csrf-token", &csrf)
        .header("origin", &origin)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let seen: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(seen["method"], "DELETE");

    // A service with `token: id_token` gets the ID token.
    let (_, id_token, _) = stack.tokens_of(&b).await;
    let page = b.fetch(Method::GET, "/api/id/profile").await;
    assert_eq!(
        page.json()["headers"]["authorization"][0],
        crate::harness::upstream::fingerprint(&id_token)
    );

    // No route: a JSON 404, never the upstream.
    let page = b.fetch(Method::GET, "/api/nowhere").await;
    assert_eq!(page.status, StatusCode::NOT_FOUND);
    assert_eq!(page.json()["error"], "not_found");
}

#[tokio::test(flavor = "multi_thread")]
async fn upstream_timeouts_and_refusals_map_to_504_and_502() {
    let stack = Stack::start().await;
    let b = stack.browser();
    b.login("alice", "/").await;
    let started = std::time::Instant::now();
    let page = b.fetch(Method::GET, "/api/slow").await;
    assert_eq!(page.status, StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(page.json()["error"], "upstream_timeout");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(4),
        "the 2 s service timeout applies"
    );

    let page = anon_fetch(&stack, "/api/dead/x").await;
    assert_eq!(page.status, StatusCode::BAD_GATEWAY);
    assert_eq!(page.json()["error"], "upstream_unavailable");
    assert!(
        !page.body.contains("127.0.0.1"),
        "no internal detail in the body: {}",
        page.body
    );
}

async fn anon_fetch(stack: &Stack, path: &str) -> crate::harness::browser::Page {
    // The `dead` service's route needs a session like the others.
    let b = stack.browser();
    b.login("bob", "/").await;
    b.fetch(Method::GET, path).await
}

#[tokio::test(flavor = "multi_thread")]
async fn wildcard_tails_cannot_climb_out_of_the_upstream_path() {
    let stack = Stack::start().await;
    let b = stack.browser();
    b.login("alice", "/").await;
    // Raw TCP, so that no client normalises the paths first.
    for evil in [
        "/api/echo/../admin",
        "/api/echo/%2e%2e/admin",
        "/api/echo/%2E%2E%2Fadmin",
        "/api/echo/a%2f..%2fadmin",
        "/api/echo//admin",
        "/api/echo/..%5cadmin",
        "/api/echo/%252e%252e/admin",
    ] {
        let (status, body) = raw_get(&stack, &b, evil).await;
        assert_eq!(status, 400, "{evil}: {body}");
        assert!(body.contains("invalid_path"), "{evil}: {body}");
    }
    let (status, body) = raw_get(&stack, &b, "/api/echo/ok/file.txt").await;
    assert_eq!(status, 200);
    assert!(body.contains("\"/echo/ok/file.txt\""), "{body}");
}

async fn raw_get(stack: &Stack, b: &Browser, path: &str) -> (u16, String) {
    let cookie = b.cookie("sallyport").unwrap();
    raw_request(stack.opts.port, path, Some(&cookie)).await
}

/// A GET sent byte for byte, so that no client normalises the path first.
async fn raw_request(port: u16, path: &str, session: Option<&str>) -> (u16, String) {
    let mut tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let cookie = session.map_or(String::new(), |c| format!("Cookie: sallyport={c}\r\n"));
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: localhost:{port}\r\n{cookie}Accept: application/json\r\nConnection: close\r\n\r\n"
    );
    tcp.write_all(req.as_bytes()).await.unwrap();
    let mut out = String::new();
    tcp.read_to_string(&mut out).await.unwrap();
    let status = out.split(' ').nth(1).unwrap().parse().unwrap();
    (status, out)
}

/// Every spelling of a path that another server could read differently from Sallyport: the
/// route confusion of `..;` (Tomcat, Spring), path parameters that slip past a stricter route,
/// encoded unreserved characters, and the separators and dot segments refused before.
const CONFUSING_PATHS: [&str; 20] = [
    "/api/echo/..;/..;/actuator/env",
    "/api/echo/x/..;/y",
    "/api/echo/x;jsessionid=1",
    "/api/public/private;x=1/page",
    "/api/public;/private/page",
    "/api/public/private%3Bx=1/page",
    "/api/public/private%3bx=1/page",
    "/api/public/%70rivate/page",
    "/api/public/priv%61te/page",
    "/api/public/private/%7Euser",
    "/api/public/private%2Dx",
    "/api/echo/../admin",
    "/api/echo/%2e%2e/admin",
    "/api/echo/./admin",
    "/api/public//private/page",
    "/api/echo/a%2Fb",
    "/api/echo/a%5Cb",
    "/api/echo/a%00",
    "/api/echo/%252e%252e",
    "/api/echo/a%zz",
];

#[tokio::test(flavor = "multi_thread")]
async fn one_path_one_route_on_the_proxy_path() {
    let stack = Stack::start().await;
    let b = stack.browser();
    b.login("alice", "/").await;
    let cookie = b.cookie("sallyport").unwrap();
    let port = stack.opts.port;
    let calls = || stack.upstream.seen.lock().unwrap().len();
    let before = calls();
    for path in CONFUSING_PATHS {
        for session in [None, Some(cookie.as_str())] {
            let (status, body) = raw_request(port, path, session).await;
            assert_eq!(status, 400, "{path}: {body}");
            assert!(body.contains("\"invalid_path\""), "{path}: {body}");
        }
    }
    assert_eq!(calls(), before, "no confusing path reached the upstream");

    // The stricter route under a public one holds: anonymous is refused, alice passes, and
    // the upstream receives exactly the path that was matched.
    let (status, _) = raw_request(port, "/api/public/private/page", None).await;
    assert_eq!(status, 401);
    let (status, body) = raw_request(port, "/api/public/private/page", Some(&cookie)).await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"/echo/private/page\""), "{body}");
    // Escapes that must stay escaped go upstream in one spelling (upper-case hex).
    let (status, body) = raw_request(port, "/api/echo/caf%c3%a9%20x", Some(&cookie)).await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"/echo/caf%C3%A9%20x\""), "{body}");
}

#[tokio::test(flavor = "multi_thread")]
async fn one_path_one_route_on_forward_auth() {
    let stack = Stack::start_with(|_| {}, |g| g.forward_auth = Some("traefik")).await;
    let b = stack.browser();
    b.login("alice", "/").await;
    let forward = stack.gateway.forward_url.clone().unwrap();
    for path in CONFUSING_PATHS {
        let resp = b
            .http
            .get(format!("{forward}/auth/verify"))
            .header("x-forwarded-method", "GET")
            .header("x-forwarded-uri", format!("{path}?q=1"))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::BAD_REQUEST, "{path}");
        assert!(resp.headers().get("authorization").is_none(), "{path}");
        let body: serde_json::Value = resp.json().await.unwrap();
        assert_eq!(body["error"], "invalid_path", "{path}");
    }
    let anon = stack.browser();
    let resp = anon
        .http
        .get(format!("{forward}/auth/verify"))
        .header("x-forwarded-uri", "/api/public/private/page")
        .send()
        .await
        .unwrap();
    assert_eq!(
        resp.status(),
        StatusCode::UNAUTHORIZED,
        "the stricter route decides"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn upstreams_cannot_set_our_cookies() {
    let stack = Stack::start().await;
    let b = stack.browser();
    b.login("alice", "/").await;
    let before = b.cookie("sallyport").unwrap();
    let page = b.fetch(Method::GET, "/api/set-cookie").await;
    assert_eq!(page.status, StatusCode::OK);
    let set = page.set_cookies();
    assert_eq!(
        set,
        ["app-pref=1; Path=/"],
        "the upstream's own cookies pass, ours do not"
    );
    assert_eq!(b.cookie("sallyport").unwrap(), before);
}

#[tokio::test(flavor = "multi_thread")]
async fn websocket_upgrades_are_relayed_and_need_our_origin() {
    let stack = Stack::start().await;
    let b = stack.browser();
    b.login("alice", "/").await;
    let cookie = b.cookie("sallyport").unwrap();
    let port = stack.opts.port;
    let handshake = |origin: &str| {
        format!(
            "GET /api/ws HTTP/1.1\r\nHost: localhost:{port}\r\nCookie: sallyport={cookie}\r\nOrigin: {origin}\r\n\
             Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
        )
    };

    let mut tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    tcp.write_all(handshake("https://evil.example").as_bytes())
        .await
        .unwrap();
    let mut buf = vec![0u8; 4096];
    let n = tcp.read(&mut buf).await.unwrap();
    assert!(
        String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 403"),
        "cross-site WebSocket hijacking refused"
    );

    let mut tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    tcp.write_all(handshake(&stack.gateway.url).as_bytes())
        .await
        .unwrap();
    let n = tcp.read(&mut buf).await.unwrap();
    let head = String::from_utf8_lossy(&buf[..n]).to_lowercase();
    assert!(head.starts_with("http/1.1 101"), "{head}");
    assert!(head.contains("upgrade: websocket"), "{head}");
    for msg in [&b"hello through the gate"[..], b"second frame"] {
        tcp.write_all(msg).await.unwrap();
        let mut got = vec![0u8; msg.len()];
        tokio::time::timeout(std::time::Duration::from_secs(5), tcp.read_exact(&mut got))
            .await
            .expect("echo within 5 s")
            .unwrap();
        assert_eq!(got, msg);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn sallyports_own_endpoints_take_precedence_over_a_catch_all_route() {
    let stack = Stack::start_with(
        |_| {},
        |g| {
            g.extra_yaml = "  - path: /api/*\n    service: public\n    upstream_path: /echo/*\n    auth: none\n  - path: /auth/extra/*\n    service: public\n    upstream_path: /echo/*\n    auth: none\n".into();
        },
    )
    .await;
    let anon = stack.browser();
    let page = anon.fetch(Method::GET, "/api/auth/session").await;
    assert_eq!(page.status, StatusCode::UNAUTHORIZED);
    assert_eq!(page.json()["authenticated"], false, "{}", page.body);
    let page = anon.fetch(Method::GET, "/auth/health").await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.json().get("headers").is_none(), "{}", page.body);
    // Everything else under the catch-all reaches the upstream, under /auth/ too.
    for path in ["/api/anything/else", "/auth/extra/x"] {
        let page = anon.fetch(Method::GET, path).await;
        assert_eq!(page.status, StatusCode::OK, "{path}: {}", page.body);
        assert!(page.json()["headers"].is_object(), "{path}: {}", page.body);
    }
    let page = anon.fetch(Method::GET, "/auth/nothing-here").await;
    assert_eq!(page.status, StatusCode::NOT_FOUND);
}

/// A WebSocket text frame from a client: masked (RFC 6455 §5.3).
fn client_frame(text: &[u8]) -> Vec<u8> {
    let key = [7u8, 1, 9, 3];
    let mut f = vec![0x81, 0x80 | text.len() as u8];
    f.extend_from_slice(&key);
    f.extend(text.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
    f
}

/// Opens a WebSocket through the gateway as `b`; returns the connection after the `101`.
async fn open_websocket(stack: &Stack, b: &Browser) -> tokio::net::TcpStream {
    let cookie = b.cookie("sallyport").unwrap();
    let port = stack.opts.port;
    let mut tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let handshake = format!(
        "GET /api/ws HTTP/1.1\r\nHost: localhost:{port}\r\nCookie: sallyport={cookie}\r\nOrigin: {}\r\n\
         Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
        stack.gateway.url
    );
    tcp.write_all(handshake.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8; 1];
        tcp.read_exact(&mut byte).await.unwrap();
        head.push(byte[0]);
    }
    assert!(
        head.starts_with(b"HTTP/1.1 101"),
        "{}",
        String::from_utf8_lossy(&head)
    );
    // Frames pass both ways while the session lives (the test upstream echoes).
    let frame = client_frame(b"hello");
    tcp.write_all(&frame).await.unwrap();
    let mut echoed = vec![0u8; frame.len()];
    tokio::time::timeout(Duration::from_secs(5), tcp.read_exact(&mut echoed))
        .await
        .expect("echo")
        .unwrap();
    assert_eq!(echoed, frame);
    tcp
}

/// Reads until the connection closes; panics unless that happens within `bound`.
async fn read_until_closed(tcp: &mut tokio::net::TcpStream, bound: Duration) -> Vec<u8> {
    let mut rest = Vec::new();
    tokio::time::timeout(bound, tcp.read_to_end(&mut rest))
        .await
        .unwrap_or_else(|_| panic!("the WebSocket stayed open past {bound:?}"))
        .unwrap();
    rest
}

/// What the browser receives when its session ends: a Close frame, status 1008.
const CLOSE_1008: &[u8] = b"\x88\x0f\x03\xf0session ended";

/// What the browser receives when Sallyport shuts down: a Close frame, status 1001.
const CLOSE_1001: &[u8] = b"\x88\x16\x03\xe9server shutting down";

#[tokio::test(flavor = "multi_thread")]
async fn a_graceful_shutdown_closes_websockets_with_1001_and_waits_for_them() {
    let stack = Stack::start().await;
    let b = stack.browser();
    b.login("alice", "/").await;
    let mut ws = open_websocket(&stack, &b).await;
    let started = std::time::Instant::now();
    let stopping = tokio::spawn(stack.gateway.stop());
    let rest = read_until_closed(&mut ws, Duration::from_secs(5)).await;
    assert!(rest.ends_with(CLOSE_1001), "{rest:?}");
    tokio::time::timeout(Duration::from_secs(5), stopping)
        .await
        .expect("serve() returns once the relay has ended")
        .unwrap();
    // The grace period is 2 s; the relay ends at once, at a frame boundary.
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn logout_closes_open_websockets_and_streams() {
    let stack = Stack::start().await;
    let b = stack.browser();
    b.login("alice", "/").await;
    let mut ws = open_websocket(&stack, &b).await;
    let mut events = b.http.get(b.url("/api/events")).send().await.unwrap();
    assert_eq!(events.status(), StatusCode::OK);
    assert!(events.chunk().await.unwrap().is_some(), "the stream flows");

    let csrf = b.csrf_token().await;
    let logout = b
        .fetch_with(
            Method::POST,
            "/auth/logout",
            &[("origin", &stack.gateway.url), ("x-csrf-token", &csrf)],
        )
        .await;
    assert_eq!(logout.status, StatusCode::OK);

    let rest = read_until_closed(&mut ws, Duration::from_secs(5)).await;
    assert!(rest.ends_with(CLOSE_1008), "{rest:?}");
    let cut = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match events.chunk().await {
                Ok(Some(_)) => {}
                Ok(None) => return "ended cleanly",
                Err(_) => return "cut off",
            }
        }
    })
    .await
    .expect("the event stream ended with the session");
    assert_eq!(
        cut, "cut off",
        "a clean end could pass for a complete response"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_session_ended_elsewhere_closes_the_websocket_within_the_recheck() {
    // Another instance (or an operator) ends the session in the shared store: this instance
    // learns it by asking the store again, every stream_recheck.
    let stack = Stack::start_with(|_| {}, |g| g.session_yaml = "  stream_recheck: 1s".into()).await;
    let b = stack.browser();
    b.login("alice", "/").await;
    let mut ws = open_websocket(&stack, &b).await;
    let id = sallyport::session::SessionId::parse(&b.cookie("sallyport").unwrap()).unwrap();
    stack
        .gateway
        .gateway
        .state()
        .sessions
        .store()
        .delete(&id.store_key())
        .await
        .unwrap();
    let started = std::time::Instant::now();
    let rest = read_until_closed(&mut ws, Duration::from_secs(5)).await;
    assert!(rest.ends_with(CLOSE_1008), "{rest:?}");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
}
