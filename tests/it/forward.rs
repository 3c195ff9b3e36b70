//! Forward-auth on `/auth/verify` as Traefik and nginx call it, on its own listener.

use std::time::Duration;

use reqwest::StatusCode;

use crate::harness::browser::Browser;
use crate::login::Stack;

/// A call as the edge makes it, on the forward-auth listener: the browser's cookie plus the
/// edge's description of the request.
async fn verify(
    stack: &Stack,
    b: &Browser,
    path: &str,
    headers: &[(&str, &str)],
) -> reqwest::Response {
    let base = stack
        .gateway
        .forward_url
        .as_deref()
        .expect("forward_auth configured");
    let mut req = b.http.get(format!("{base}{path}"));
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
async fn the_edge_gets_identity_tokens_redirects_and_401s() {
    let stack = Stack::start_with(
        |p| p.access_token_ttl = 120,
        |g| g.forward_auth = Some("traefik"),
    )
    .await;
    let anon = stack.browser();
    let traefik_nav = [
        ("x-forwarded-method", "GET"),
        ("x-forwarded-uri", "/app/page?x=1"),
        ("accept", "text/html"),
    ];

    // Not logged in: Traefik navigations go to login with the original URI as return_to…
    let resp = verify(&stack, &anon, "/auth/verify", &traefik_nav).await;
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
        let resp = verify(&stack, &anon, "/auth/verify", &headers).await;
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED, "{headers:?}");
        let body: serde_json::Value = resp.json().await.unwrap();
        assert_eq!(body["error"], "not_authenticated");
    }
    // Headers another kind of edge sets are not read: the question is not understood.
    let resp = verify(
        &stack,
        &anon,
        "/auth/verify",
        &[("x-original-uri", "/app/page"), ("accept", "text/html")],
    )
    .await;
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    // A return_to to another site is never produced.
    let resp = verify(
        &stack,
        &anon,
        "/auth/verify",
        &[
            ("x-forwarded-uri", "//evil.example/x"),
            ("accept", "text/html"),
        ],
    )
    .await;
    assert_eq!(
        resp.status(),
        StatusCode::BAD_REQUEST,
        "not a path in normal form"
    );
    assert!(header(&resp, "location").is_none());

    // Logged in: identity headers, and the bearer the matched route's service wants.
    let b = stack.browser();
    b.login("alice", "/").await;
    let (access, _, _) = stack.tokens_of(&b).await;
    for path in ["/auth/verify", "/auth/forward"] {
        let resp = verify(
            &stack,
            &b,
            path,
            &[("x-forwarded-uri", "/api/echo/orders?page=2")],
        )
        .await;
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
    let resp = verify(
        &stack,
        &b,
        "/auth/verify",
        &[("x-forwarded-uri", "/app/page")],
    )
    .await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(
        header(&resp, "authorization").is_none(),
        "no route, no token"
    );
    let resp = verify(
        &stack,
        &b,
        "/auth/verify",
        &[("x-forwarded-uri", "/api/public/x")],
    )
    .await;
    assert!(
        header(&resp, "authorization").is_none(),
        "a service with token: none gets none"
    );

    // The bearer is refreshed as on the proxy path.
    stack.gateway.clock.advance(Duration::from_secs(90));
    let resp = verify(
        &stack,
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
async fn nginx_gets_401_for_pages_and_reads_only_its_own_headers() {
    let stack = Stack::start_with(|_| {}, |g| g.forward_auth = Some("nginx")).await;
    let anon = stack.browser();
    // nginx's auth_request cannot pass a redirect on: a page gets 401 (the recipe's
    // error_page turns it into the login redirect).
    let resp = verify(
        &stack,
        &anon,
        "/auth/verify",
        &[("x-original-uri", "/app/page"), ("accept", "text/html")],
    )
    .await;
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);

    let b = stack.browser();
    b.login("alice", "/").await;
    let (access, _, _) = stack.tokens_of(&b).await;
    let resp = verify(
        &stack,
        &b,
        "/auth/verify",
        &[
            ("x-original-uri", "/api/echo/orders"),
            ("x-original-method", "GET"),
        ],
    )
    .await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(
        header(&resp, "authorization"),
        Some(format!("Bearer {access}"))
    );
    // Traefik's headers mean nothing from nginx: only X-Original-URI says what is asked.
    let resp = verify(
        &stack,
        &b,
        "/auth/verify",
        &[("x-forwarded-uri", "/api/echo/orders")],
    )
    .await;
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    assert!(header(&resp, "authorization").is_none());
}

#[tokio::test(flavor = "multi_thread")]
async fn the_public_port_never_answers_forward_auth() {
    // Page JavaScript can call the public port, through the edge or not, with any header: it
    // must never get a forward-auth answer, which would carry the access token.
    let stack = Stack::start_with(
        |_| {},
        |g| {
            g.forward_auth = Some("nginx");
            g.trusted_proxies = "[127.0.0.1/32]";
        },
    )
    .await;
    let b = stack.browser();
    b.login("alice", "/").await;
    let (access, _, _) = stack.tokens_of(&b).await;
    for path in ["/auth/verify", "/auth/forward"] {
        for headers in [
            [
                ("x-original-uri", "/api/echo/orders"),
                ("x-original-method", "GET"),
            ],
            [
                ("x-forwarded-uri", "/api/echo/orders"),
                ("x-forwarded-method", "GET"),
            ],
        ] {
            let page = b.fetch_with(reqwest::Method::GET, path, &headers).await;
            assert_eq!(page.status, StatusCode::NOT_FOUND, "{path} {headers:?}");
            assert!(page.header("authorization").is_none());
            assert!(!page.body.contains(&access));
        }
    }
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

/// Traefik and Caddy get the same decisions as nginx, with the login redirect made here; an
/// `auth: none` route is answered without reading the store (it passes while Redis is down,
/// when every session route fails closed).
#[tokio::test(flavor = "multi_thread")]
async fn traefik_gets_each_modes_answer_and_public_routes_need_no_store() {
    let mut redis = crate::harness::redis::Redis::start().await;
    let session_yaml = format!(
        "  store: redis\n  redis: {{ url: \"{}\", key_prefix: \"fa:\", timeout: 300ms }}",
        redis.url
    );
    let stack = Stack::start_with(
        |_| {},
        |g| {
            g.session_yaml = session_yaml;
            g.forward_auth = Some("traefik");
        },
    )
    .await;
    let anon = stack.browser();
    let ask = |uri: &'static str, method: &'static str, nav: bool| {
        let mut h = vec![("x-forwarded-uri", uri), ("x-forwarded-method", method)];
        if nav {
            h.push(("sec-fetch-mode", "navigate"));
        } else {
            h.push(("sec-fetch-mode", "cors"));
        }
        h
    };

    // A navigation to an API route is sent to login too: the kind of request decides.
    let resp = verify(
        &stack,
        &anon,
        "/auth/verify",
        &ask("/api/echo/x", "GET", true),
    )
    .await;
    assert_eq!(resp.status(), StatusCode::FOUND);
    assert_eq!(
        header(&resp, "location").unwrap(),
        "/auth/login?return_to=%2Fapi%2Fecho%2Fx"
    );
    let resp = verify(
        &stack,
        &anon,
        "/auth/verify",
        &ask("/api/echo/x", "GET", false),
    )
    .await;
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        header(&resp, "x-sallyport-error").as_deref(),
        Some("not_authenticated")
    );
    assert!(header(&resp, "x-sallyport-login").is_none());
    // optional passes anonymously; a method the route does not take is 405 with Allow.
    let resp = verify(
        &stack,
        &anon,
        "/auth/verify",
        &ask("/api/optional/x", "GET", false),
    )
    .await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(header(&resp, "x-auth-request-user").is_none());
    let resp = verify(
        &stack,
        &anon,
        "/auth/verify",
        &ask("/api/readonly/x", "DELETE", false),
    )
    .await;
    assert_eq!(resp.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(header(&resp, "allow").as_deref(), Some("GET"));

    let user = stack.browser();
    user.login("alice", "/").await;
    redis.stop();
    // The store is gone: a public route still passes (no store read), without identity…
    let resp = verify(
        &stack,
        &user,
        "/auth/verify",
        &ask("/api/public/x", "GET", true),
    )
    .await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(header(&resp, "x-auth-request-user").is_none());
    assert!(header(&resp, "authorization").is_none());
    // …and a session route fails closed.
    let resp = verify(
        &stack,
        &user,
        "/auth/verify",
        &ask("/api/echo/x", "GET", false),
    )
    .await;
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["error"], "store_unavailable");
}
