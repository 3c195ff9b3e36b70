//! The attacker's list: each test is one thing an attacker tries against a deployment, run
//! against the real provider, the echo upstream and (for the edge) real nginx.
//!
//! 1. Spoofed identity, address and path headers (`X-Auth-Request-*`, `X-Forwarded-*`,
//!    `Forwarded`, `X-Real-IP` and kin, `X-Original-URL`/`X-Rewrite-URL`, a client bearer)
//!    from an untrusted peer, on the proxy path and on `/auth/verify` (which the public port
//!    does not answer: forward-auth has a listener of its own).
//! 2. Header injection with CR/LF through `return_to` (login and forward-auth redirect) and
//!    through claims the provider issues (name, email).
//! 3. Oversized cookies, and a second session or login cookie planted for another path
//!    (cookie tossing).
//! 4. A session cookie riding a request from another origin: through the edge (`/auth/verify`
//!    with an unsafe original method, via real nginx too) and at `/auth/verify` directly —
//!    no upstream call, no refresh, no logout, nothing readable cross-origin.
//!
//! Related cases live with their feature: login CSRF and code replay (`login.rs`), tampered
//! cookies (`login.rs`), path traversal in routes (`proxy.rs`), upstreams setting our cookies
//! (`proxy.rs`), forged ID tokens (`id_tokens.rs`), forged bearers (`bearer.rs`), rate limits
//! and spoofed `X-Forwarded-For` (`limits.rs`).

use std::sync::Arc;

use reqwest::{Method, StatusCode};

use crate::harness::browser::{Browser, urlencode};
use crate::harness::upstream::fingerprint;
use crate::login::Stack;

const EVIL: &str = "https://evil.example";

/// Calls to an upstream that carried a bearer (every call on a session route does).
fn upstream_calls(stack: &Stack) -> usize {
    stack.upstream.seen.lock().unwrap().len()
}

#[tokio::test(flavor = "multi_thread")]
async fn spoofed_identity_address_and_path_headers_never_reach_the_upstream() {
    // trusted_proxies is empty: the test client is an ordinary, untrusted peer.
    let stack = Stack::start().await;
    let b = stack.browser();
    b.login("alice", "/").await;
    let (access, _, _) = stack.tokens_of(&b).await;
    let spoofs = [
        ("x-auth-request-user", "admin"),
        ("X-Auth-Request-User", "root"),
        ("x-auth-request-email", "admin@example.com"),
        ("x-auth-request-groups", "admins"),
        ("x-forwarded-for", "10.0.0.1"),
        ("x-forwarded-host", "evil.example"),
        ("x-forwarded-proto", "https"),
        ("x-forwarded-prefix", "/admin"),
        ("x-forwarded-uri", "/admin"),
        ("forwarded", "for=10.0.0.1;host=evil.example"),
        ("x-real-ip", "10.0.0.2"),
        ("true-client-ip", "10.0.0.3"),
        ("x-client-ip", "10.0.0.4"),
        ("x-original-url", "/admin/delete-all"),
        ("x-rewrite-url", "/admin/delete-all"),
        ("x-original-uri", "/admin"),
        ("x-correlation-id", "forged"),
        ("authorization", "Bearer forged"),
    ];
    let page = b.fetch_with(Method::GET, "/api/echo/orders", &spoofs).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    let seen = &page.json()["headers"];
    let host = stack.gateway.url.trim_start_matches("http://");
    assert_eq!(seen["x-auth-request-user"], serde_json::json!(["alice"]));
    assert_eq!(
        seen["x-auth-request-email"],
        serde_json::json!(["alice@example.com"])
    );
    assert_eq!(seen["x-forwarded-for"], serde_json::json!(["127.0.0.1"]));
    assert_eq!(seen["x-forwarded-host"], serde_json::json!([host]));
    assert_eq!(seen["x-forwarded-proto"], serde_json::json!(["http"]));
    assert_eq!(
        seen["authorization"],
        serde_json::json!([fingerprint(&access)])
    );
    assert_ne!(seen["x-correlation-id"], serde_json::json!(["forged"]));
    for gone in [
        "x-auth-request-groups",
        "x-forwarded-prefix",
        "x-forwarded-uri",
        "forwarded",
        "x-real-ip",
        "true-client-ip",
        "x-client-ip",
        "x-original-url",
        "x-rewrite-url",
        "x-original-uri",
    ] {
        assert!(seen.get(gone).is_none(), "{gone} reached the upstream");
    }

    // Without a session (a public route) the identity headers are simply absent.
    let anon = stack.browser();
    let page = anon.fetch_with(Method::GET, "/api/public/x", &spoofs).await;
    assert_eq!(page.status, StatusCode::OK);
    let seen = &page.json()["headers"];
    assert!(seen.get("x-auth-request-user").is_none());
    assert!(seen.get("x-auth-request-email").is_none());
    assert!(
        seen.get("authorization").is_none(),
        "a client bearer is stripped"
    );

    // The public port has no forward-auth: whatever a client claims about an original
    // request, it gets no answer and no token.
    let resp = b
        .http
        .get(b.url("/auth/verify"))
        .header("x-forwarded-uri", "/api/echo/orders")
        .header("x-forwarded-method", "GET")
        .header("x-original-uri", "/api/echo/orders")
        .header("x-auth-request-user", "admin")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    assert!(resp.headers().get("authorization").is_none());
    assert!(resp.headers().get("x-auth-request-user").is_none());
}

#[tokio::test(flavor = "multi_thread")]
async fn crlf_cannot_inject_headers_through_return_to_or_claims() {
    let stack = Stack::start_with(|_| {}, |g| g.forward_auth = Some("traefik")).await;
    let forward = stack.gateway.forward_url.clone().unwrap();
    let b = stack.browser();

    // return_to at login: raw and encoded line breaks, and a path that only normalises to
    // `//host` (found by the return_to fuzz target).
    for bad in [
        "/x\r\nSet-Cookie: sallyport=planted",
        "/x\nLocation: https://evil.example",
        "/x\rX-Injected: yes",
        "/.//evil.example",
        "/a/..//evil.example/x",
    ] {
        let page = b
            .get(&format!("/auth/login?return_to={}", urlencode(bad)))
            .await;
        assert_eq!(page.status, StatusCode::BAD_REQUEST, "{bad:?}");
        assert!(page.set_cookies().iter().all(|c| !c.contains("planted")));
        assert!(page.header("x-injected").is_none());
    }
    // Encoded line breaks stay encoded in the Location we send.
    let page = b
        .get(&format!(
            "/auth/login?return_to={}",
            urlencode("/x%0d%0aSet-Cookie:%20a=b")
        ))
        .await;
    assert_eq!(page.status, StatusCode::FOUND);
    let location = page.header("location").unwrap();
    assert!(!location.contains(['\r', '\n']));
    assert!(page.set_cookies().iter().all(|c| !c.starts_with("a=")));

    // The forward-auth redirect built from the edge's original URI: the same rules.
    let verify = |uri: &'static str| {
        b.http
            .get(format!("{forward}/auth/verify"))
            .header("x-forwarded-uri", uri)
            .header("accept", "text/html")
            .send()
    };
    let resp = verify("/x%0d%0aSet-Cookie:%20a=b").await.unwrap();
    assert_eq!(resp.status(), StatusCode::FOUND);
    assert_eq!(
        resp.headers()["location"],
        "/auth/login?return_to=%2Fx%250d%250aSet-Cookie%3A%2520a%3Db"
    );
    assert!(resp.headers().get("set-cookie").is_none());
    for evil in ["/.//evil.example", "//evil.example/x"] {
        let resp = verify(evil).await.unwrap();
        assert_eq!(resp.status(), StatusCode::BAD_REQUEST, "{evil}");
        assert!(
            resp.headers().get("location").is_none(),
            "no redirect to another site"
        );
    }

    // Claims with CR/LF, issued by the provider (mallory's name and email carry them): they
    // stay data in the session API, and never become a header anywhere.
    let m = stack.browser();
    let landing = m.login("mallory", "/").await;
    assert!(landing.set_cookies().iter().all(|c| !c.contains("planted")));
    let session = m.fetch(Method::GET, "/api/auth/session").await;
    assert_eq!(session.status, StatusCode::OK, "{}", session.body);
    assert_eq!(
        session.json()["user"]["email"],
        "mallory@example.com\r\nX-Injected: yes",
        "{}",
        session.body
    );
    let page = m.fetch(Method::GET, "/api/echo/x").await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    let seen = &page.json()["headers"];
    assert_eq!(seen["x-auth-request-user"], serde_json::json!(["mallory"]));
    assert!(
        seen.get("x-auth-request-email").is_none(),
        "an email with CR/LF is left out"
    );
    assert!(seen.get("x-injected").is_none());
    let resp = m
        .http
        .get(format!("{forward}/auth/verify"))
        .header("x-forwarded-uri", "/api/echo/x")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()["x-auth-request-user"], "mallory");
    assert!(resp.headers().get("x-auth-request-email").is_none());
    assert!(resp.headers().get("x-injected").is_none());
    assert!(resp.headers().get("set-cookie").is_none());
}

#[tokio::test(flavor = "multi_thread")]
async fn oversized_cookies_and_cookies_planted_for_another_path_are_refused() {
    let stack = Stack::start().await;
    let alice = stack.browser();
    alice.login("alice", "/").await;
    let alice_id = alice.cookie("sallyport").unwrap();
    let mallory = stack.browser();
    mallory.login("bob", "/").await;
    let mallory_id = mallory.cookie("sallyport").unwrap();
    let raw = Browser::new(&stack.gateway.url);
    let with_cookie = |path: &str, cookie: String| {
        raw.http
            .get(raw.url(path))
            .header("accept", "application/json")
            .header("cookie", cookie)
            .send()
    };

    // A cookie header beyond the route's header limit: 431 with a stable code, nothing
    // forwarded, and the session itself unharmed.
    let calls = upstream_calls(&stack);
    let huge = format!("sallyport={alice_id}; junk={}", "j".repeat(20 * 1024));
    let resp = with_cookie("/api/echo/x", huge.clone()).await.unwrap();
    assert_eq!(resp.status(), StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
    assert_eq!(
        resp.json::<serde_json::Value>().await.unwrap()["error"],
        "request_headers_too_large"
    );
    assert_eq!(upstream_calls(&stack), calls);
    // Sallyport's own endpoints refuse oversized headers too, without reading the session.
    let resp = with_cookie("/api/auth/session", huge.clone())
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
    // …and so do paths no route serves (static files, 404s).
    let resp = with_cookie("/app/page", huge).await.unwrap();
    assert_eq!(resp.status(), StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
    // A session id of the wrong size is no session.
    let resp = with_cookie("/api/echo/x", format!("sallyport={}", "A".repeat(4000)))
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        alice.fetch(Method::GET, "/api/echo/x").await.status,
        StatusCode::OK
    );

    // Mallory plants his session cookie for /api/echo in Alice's browser (from a sibling
    // subdomain, say); her browser now sends his first. Neither is used: she is asked to log
    // in again, and nothing runs under his identity.
    let calls = upstream_calls(&stack);
    for path in ["/api/echo/x", "/api/auth/session"] {
        let resp = with_cookie(
            path,
            format!("sallyport={mallory_id}; sallyport={alice_id}"),
        )
        .await
        .unwrap();
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED, "{path}");
    }
    assert_eq!(upstream_calls(&stack), calls);
    // The same value twice is just a repeat.
    let resp = with_cookie(
        "/api/echo/x",
        format!("sallyport={alice_id}; sallyport={alice_id}"),
    )
    .await
    .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);

    // A planted login cookie cannot make a callback log the victim in as the planter: one
    // under the victim's cookie name does not open (it was sealed for the planter's name),
    // and two values under one name make the cookie unusable.
    let victim = stack.browser();
    let to_provider = victim.start_login("return_to=/").await;
    let callback = victim.through_provider(&to_provider, "alice").await;
    let (name, own) = victim.login_cookies().pop().unwrap();
    let planter = stack.browser();
    planter.start_login("return_to=/").await;
    let (_, planted) = planter.login_cookies().pop().unwrap();
    for cookie in [
        format!("{name}={planted}"),
        format!("{name}={planted}; {name}={own}"),
    ] {
        let resp = raw
            .http
            .get(&callback)
            .header("cookie", cookie)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
        assert_eq!(
            resp.json::<serde_json::Value>().await.unwrap()["error"],
            "invalid_state"
        );
    }
}

/// The subrequest an edge makes for a browser request: the browser's cookie and headers, plus
/// the edge's description of the original request.
async fn edge_asks(
    stack: &Stack,
    b: &Browser,
    method: &str,
    uri: &str,
    headers: &[(&str, &str)],
) -> reqwest::Response {
    let forward = stack.gateway.forward_url.as_deref().unwrap();
    let mut req = b
        .http
        .get(format!("{forward}/auth/verify"))
        .header("x-forwarded-method", method)
        .header("x-forwarded-uri", uri);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    req.send().await.unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_cross_site_request_through_the_edge_cannot_change_state() {
    // Every token is within refresh_before of expiring, so any token handed out would first
    // be refreshed: the refresh count shows whether a refused request got that far.
    let stack = Stack::start_with(
        |p| p.access_token_ttl = 30,
        |g| g.forward_auth = Some("traefik"),
    )
    .await;
    let b = stack.browser();
    b.login("alice", "/").await;
    let csrf = b.csrf_token().await;
    let refreshes = stack.provider.grants("refresh_token").await;
    let cross_site = [("origin", EVIL), ("sec-fetch-site", "cross-site")];

    for method in ["POST", "PUT", "PATCH", "DELETE"] {
        for uri in ["/api/echo/orders", "/app/settings"] {
            let resp = edge_asks(&stack, &b, method, uri, &cross_site).await;
            assert_eq!(resp.status(), StatusCode::FORBIDDEN, "{method} {uri}");
            assert!(resp.headers().get("authorization").is_none());
            assert_eq!(
                resp.json::<serde_json::Value>().await.unwrap()["error"],
                "csrf_failed"
            );
        }
    }
    // Even with a stolen CSRF token, another origin is refused.
    let mut with_token = cross_site.to_vec();
    with_token.push(("x-csrf-token", &csrf));
    let resp = edge_asks(&stack, &b, "POST", "/api/echo/orders", &with_token).await;
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    // Same origin but no token, on an API route: refused as on the proxy path.
    let origin = stack.gateway.url.clone();
    let resp = edge_asks(
        &stack,
        &b,
        "POST",
        "/api/echo/orders",
        &[("origin", &origin)],
    )
    .await;
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    assert_eq!(
        stack.provider.grants("refresh_token").await,
        refreshes,
        "no refused request refreshed a token"
    );

    // The SPA's own request passes and gets its (refreshed) token.
    let resp = edge_asks(
        &stack,
        &b,
        "POST",
        "/api/echo/orders",
        &[("origin", &origin), ("x-csrf-token", &csrf)],
    )
    .await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(resp.headers().get("authorization").is_some());
    // A same-origin form post to a page (no API route) needs only the origin check.
    let resp = edge_asks(
        &stack,
        &b,
        "POST",
        "/app/settings",
        &[("sec-fetch-site", "same-origin")],
    )
    .await;
    assert_eq!(resp.status(), StatusCode::OK);
    // Safe methods from anywhere are answered (reading is what GET is for).
    let resp = edge_asks(&stack, &b, "GET", "/api/echo/orders", &cross_site).await;
    assert_eq!(resp.status(), StatusCode::OK);

    // Directly, from a page on another origin: the public port has no /auth/verify, for any
    // method; nothing is readable cross-origin, and the session survives all of the above.
    for method in [Method::POST, Method::GET] {
        let resp = b
            .http
            .request(method.clone(), b.url("/auth/verify"))
            .header("origin", EVIL)
            .send()
            .await
            .unwrap();
        assert!(
            matches!(resp.status(), StatusCode::NOT_FOUND | StatusCode::FORBIDDEN),
            "{method}: {}",
            resp.status()
        );
        assert!(resp.headers().get("authorization").is_none());
    }
    let resp = b
        .http
        .get(b.url("/auth/verify"))
        .header("origin", EVIL)
        .send()
        .await
        .unwrap();
    assert!(
        resp.headers()
            .keys()
            .all(|k| !k.as_str().starts_with("access-control-")),
        "no CORS grant for another origin"
    );
    assert_eq!(
        b.fetch(Method::GET, "/api/auth/session").await.status,
        StatusCode::OK
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn through_real_nginx_a_cross_site_post_never_reaches_the_app() {
    let (stack, nginx) = crate::nginx::behind_nginx().await;
    let direct = stack.browser();
    direct.login("alice", "/").await;
    let csrf = direct.csrf_token().await;
    let edge = Browser::with_jar(&nginx.url, Arc::clone(&direct.jar));
    let post = |headers: Vec<(&'static str, String)>| {
        let mut req = edge
            .http
            .post(edge.url("/api/echo/orders"))
            .body("{\"delete\":\"all\"}");
        for (k, v) in headers {
            req = req.header(k, v);
        }
        req.send()
    };

    let calls = upstream_calls(&stack);
    let resp = post(vec![
        ("origin", EVIL.to_owned()),
        ("sec-fetch-site", "cross-site".to_owned()),
    ])
    .await
    .unwrap();
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    assert_eq!(upstream_calls(&stack), calls, "the app saw the forged POST");

    // The SPA's own POST (its origin is public_url) passes.
    let resp = post(vec![
        ("origin", stack.gateway.url.clone()),
        ("x-csrf-token", csrf),
    ])
    .await
    .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(upstream_calls(&stack), calls + 1);
}
