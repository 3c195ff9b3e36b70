//! Rate limits on Sallyport's login and check endpoints, and the headers on its own answers.

use std::net::IpAddr;

use reqwest::StatusCode;

use crate::login::Stack;

fn client_from(ip: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .local_address(ip.parse::<IpAddr>().unwrap())
        .build()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn login_starts_and_failed_checks_are_rate_limited_per_client_ip() {
    let stack = Stack::start_with(
        |_| {},
        |g| g.server_yaml = "  rate_limit: { limit: 5, window: 1m }".into(),
    )
    .await;
    let url = |path: &str| format!("http://127.0.0.1:{}{path}", stack.opts.port);

    let flood = client_from("127.0.0.1");
    for i in 0..5 {
        let resp = flood.get(url("/auth/login")).send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::FOUND, "login {i}");
    }
    let resp = flood.get(url("/auth/login")).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry: u64 = resp.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry), "Retry-After {retry}");
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["error"], "rate_limited");
    // The callback is limited for the same address too.
    let resp = flood
        .get(url("/auth/callback?state=x&code=y"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);

    // Another address is not affected, and the proxy path is never limited.
    let other = client_from("127.0.0.2");
    assert_eq!(
        other.get(url("/auth/login")).send().await.unwrap().status(),
        StatusCode::FOUND
    );
    assert_eq!(
        flood
            .get(url("/api/public/x"))
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );

    // Failed callbacks count; after five, a sixth attempt is refused before it is checked.
    let prober = client_from("127.0.0.3");
    for _ in 0..5 {
        assert_eq!(
            prober
                .get(url("/auth/callback?state=x&code=y"))
                .send()
                .await
                .unwrap()
                .status(),
            StatusCode::BAD_REQUEST
        );
    }
    assert_eq!(
        prober
            .get(url("/auth/callback?state=x&code=y"))
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::TOO_MANY_REQUESTS
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn behind_a_trusted_proxy_the_limit_applies_to_each_client_not_to_the_proxy() {
    let stack = Stack::start_with(
        |_| {},
        |g| {
            g.trusted_proxies = "[127.0.0.1/32]";
            g.server_yaml = "  rate_limit: { limit: 3, window: 1m }".into();
        },
    )
    .await;
    let url = format!(
        "http://127.0.0.1:{}/auth/callback?state=x&code=y",
        stack.opts.port
    );
    let edge = client_from("127.0.0.1");
    let via_edge = |client: &'static str| edge.get(&url).header("x-forwarded-for", client).send();
    for _ in 0..3 {
        assert_eq!(
            via_edge("203.0.113.7").await.unwrap().status(),
            StatusCode::BAD_REQUEST
        );
    }
    assert_eq!(
        via_edge("203.0.113.7").await.unwrap().status(),
        StatusCode::TOO_MANY_REQUESTS
    );
    assert_eq!(
        via_edge("203.0.113.8").await.unwrap().status(),
        StatusCode::BAD_REQUEST,
        "another client behind the same proxy is not limited"
    );
    // An untrusted peer cannot dodge its limit by naming other addresses.
    let direct = client_from("127.0.0.2");
    let spoofing = |fake: &'static str| direct.get(&url).header("x-forwarded-for", fake).send();
    for fake in ["198.51.100.1", "198.51.100.2", "198.51.100.3"] {
        assert_eq!(
            spoofing(fake).await.unwrap().status(),
            StatusCode::BAD_REQUEST
        );
    }
    assert_eq!(
        spoofing("198.51.100.4").await.unwrap().status(),
        StatusCode::TOO_MANY_REQUESTS
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
