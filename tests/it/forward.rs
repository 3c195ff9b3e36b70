//! Forward-auth on `/auth/verify` as Traefik and nginx call it.

use std::time::Duration;

use reqwest::StatusCode;

use crate::harness::browser::Browser;
use crate::login::Stack;

/// A call as the edge makes it: the browser's cookie plus the edge's description of the request.
async fn verify(b: &Browser, path: &str, headers: &[(&str, &str)]) -> reqwest::Response {
    let mut req = b.http.get(b.url(path));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    req.send().await.unwrap()
}

fn header(resp: &reqwest::Response, name: &str) -> Option<String> {
    resp.headers()
        .get(name)
        .map(|v| v.to_str().unwrap().to_owned())
}

#[tokio::test(flavor = "multi_thread")]
async fn trusted_edges_get_identity_tokens_redirects_and_401s() {
    let stack = Stack::start_with(
        |p| p.access_token_ttl = 120,
        |g| g.trusted_proxies = "[127.0.0.1/32]",
    )
    .await;
    let anon = stack.browser();
    let traefik_nav = [
        ("x-forwarded-method", "GET"),
        ("x-forwarded-uri", "/app/page?x=1"),
        ("accept", "text/html"),
    ];

    // Not logged in: Traefik navigations go to login with the original URI as return_to…
    let resp = verify(&anon, "/auth/verify", &traefik_nav).await;
    assert_eq!(resp.status(), StatusCode::FOUND);
    assert_eq!(
        header(&resp, "location").unwrap(),
        "/auth/login?return_to=%2Fapp%2Fpage%3Fx%3D1"
    );
    // …API-style requests get 401 JSON…
    for headers in [
        vec![("x-forwarded-uri", "/api/echo/orders")],
        vec![
            ("x-forwarded-uri", "/app/page"),
            ("accept", "application/json"),
        ],
        vec![
            ("x-forwarded-uri", "/app/page"),
            ("x-requested-with", "XMLHttpRequest"),
        ],
    ] {
        let resp = verify(&anon, "/auth/verify", &headers).await;
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED, "{headers:?}");
        let body: serde_json::Value = resp.json().await.unwrap();
        assert_eq!(body["error"], "not_authenticated");
    }
    // …and nginx, whose auth_request cannot pass a redirect on, always gets 401.
    let resp = verify(
        &anon,
        "/auth/verify",
        &[("x-original-uri", "/app/page"), ("accept", "text/html")],
    )
    .await;
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    // A return_to to another site is never produced.
    let resp = verify(
        &anon,
        "/auth/verify",
        &[
            ("x-forwarded-uri", "//evil.example/x"),
            ("accept", "text/html"),
        ],
    )
    .await;
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);

    // Logged in: identity headers, and the bearer the matched route's service wants.
    let b = stack.browser();
    b.login("alice", "/").await;
    let (access, _, _) = stack.tokens_of(&b).await;
    for path in ["/auth/verify", "/auth/forward"] {
        let resp = verify(&b, path, &[("x-forwarded-uri", "/api/echo/orders?page=2")]).await;
        assert_eq!(resp.status(), StatusCode::OK, "{path}");
        assert_eq!(
            header(&resp, "x-auth-request-user").as_deref(),
            Some("alice")
        );
        assert_eq!(
            header(&resp, "x-auth-request-email").as_deref(),
            Some("alice@example.com")
        );
        assert_eq!(
            header(&resp, "authorization"),
            Some(format!("Bearer {access}"))
        );
        assert_eq!(header(&resp, "cache-control").as_deref(), Some("no-store"));
    }
    let resp = verify(&b, "/auth/verify", &[("x-original-uri", "/app/page")]).await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(
        header(&resp, "authorization").is_none(),
        "no route, no token"
    );
    let resp = verify(&b, "/auth/verify", &[("x-forwarded-uri", "/api/public/x")]).await;
    assert!(
        header(&resp, "authorization").is_none(),
        "a service with token: none gets none"
    );

    // The bearer is refreshed as on the proxy path.
    stack.gateway.clock.advance(Duration::from_secs(90));
    let resp = verify(
        &b,
        "/auth/verify",
        &[("x-forwarded-uri", "/api/echo/orders")],
    )
    .await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(stack.provider.grants("refresh_token").await, 1);
    let (fresh, _, _) = stack.tokens_of(&b).await;
    assert_ne!(fresh, access);
    assert_eq!(
        header(&resp, "authorization"),
        Some(format!("Bearer {fresh}"))
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn untrusted_callers_get_no_token_and_their_forwarded_headers_are_ignored() {
    // trusted_proxies is empty: the test client is not an edge.
    let stack = Stack::start().await;
    let b = stack.browser();
    b.login("alice", "/").await;
    let resp = verify(
        &b,
        "/auth/verify",
        &[("x-forwarded-uri", "/api/echo/orders")],
    )
    .await;
    assert_eq!(
        resp.status(),
        StatusCode::OK,
        "the session itself is still reported"
    );
    assert_eq!(
        header(&resp, "x-auth-request-user").as_deref(),
        Some("alice")
    );
    assert!(
        header(&resp, "authorization").is_none(),
        "a browser calling /auth/verify itself never gets a token"
    );
    let body = resp.text().await.unwrap();
    let (access, _, _) = stack.tokens_of(&b).await;
    assert!(!body.contains(&access));

    let anon = stack.browser();
    let resp = verify(
        &anon,
        "/auth/verify",
        &[("x-forwarded-uri", "/app/page"), ("accept", "text/html")],
    )
    .await;
    assert_eq!(
        resp.status(),
        StatusCode::UNAUTHORIZED,
        "a spoofed original URI is not used for a redirect"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn upstreams_see_the_client_address_a_trusted_proxy_names_and_no_other() {
    let trusted = Stack::start_with(|_| {}, |g| g.trusted_proxies = "[127.0.0.1/32]").await;
    let b = trusted.browser();
    let page = b
        .fetch_with(
            reqwest::Method::GET,
            "/api/public/x",
            &[("x-forwarded-for", "203.0.113.9")],
        )
        .await;
    assert_eq!(
        page.json()["headers"]["x-forwarded-for"],
        serde_json::json!(["203.0.113.9"])
    );

    let untrusted = Stack::start().await;
    let b = untrusted.browser();
    let page = b
        .fetch_with(
            reqwest::Method::GET,
            "/api/public/x",
            &[("x-forwarded-for", "203.0.113.9")],
        )
        .await;
    assert_eq!(
        page.json()["headers"]["x-forwarded-for"],
        serde_json::json!(["127.0.0.1"]),
        "a spoofed address is replaced"
    );
}
