//! The nginx recipe (`examples/nginx/sallyport.conf`) with a real nginx in front of Sallyport
//! and the upstream.

use std::sync::Arc;

use reqwest::{Method, StatusCode};

use crate::harness::browser::Browser;
use crate::harness::nginx::Nginx;
use crate::login::Stack;

/// A stack behind a real nginx running the recipe, which asks the forward-auth listener.
pub async fn behind_nginx() -> (Stack, Nginx) {
    let stack = Stack::start_with(
        |_| {},
        |g| {
            g.trusted_proxies = "[127.0.0.1/32]";
            g.forward_auth = Some("nginx");
        },
    )
    .await;
    let app = stack.upstream.url.trim_start_matches("http://").to_owned();
    let nginx = Nginx::start(stack.opts.port, stack.opts.forward_auth_port, &app).await;
    (stack, nginx)
}

#[tokio::test(flavor = "multi_thread")]
async fn the_nginx_recipe_protects_the_app_with_auth_request() {
    let (stack, nginx) = behind_nginx().await;
    let edge = Browser::new(&nginx.url);

    // Not logged in: the API answers 401, a page navigation goes to login.
    let api = edge.fetch(Method::GET, "/api/echo/orders").await;
    assert_eq!(api.status, StatusCode::UNAUTHORIZED);
    let page = edge.get("/app/page").await;
    assert_eq!(page.status, StatusCode::FOUND);
    // nginx makes the redirect absolute, to its own origin.
    let expected = format!("{}/auth/login?return_to=/app/page", nginx.url);
    assert_eq!(page.header("location"), Some(expected.as_str()));
    assert!(
        stack.upstream.seen.lock().unwrap().is_empty(),
        "nothing reached the app"
    );

    // Logged in (the session cookie belongs to localhost, whatever the port): the app sees
    // the identity and the bearer token, not what the client claimed.
    let direct = stack.browser();
    direct.login("alice", "/").await;
    let (access, _, _) = stack.tokens_of(&direct).await;
    let edge = Browser::with_jar(&nginx.url, Arc::clone(&direct.jar));
    let api = edge
        .fetch_with(
            Method::GET,
            "/api/echo/orders?page=2",
            &[
                ("x-auth-request-user", "admin"),
                ("authorization", "Bearer forged"),
            ],
        )
        .await;
    assert_eq!(api.status, StatusCode::OK, "{}", api.body);
    let seen = api.json();
    assert_eq!(seen["path"], "/api/echo/orders");
    assert_eq!(seen["query"], "page=2");
    assert_eq!(
        seen["headers"]["x-auth-request-user"],
        serde_json::json!(["alice"])
    );
    assert_eq!(
        seen["headers"]["x-auth-request-email"][0],
        "alice@example.com"
    );
    assert_eq!(
        stack.upstream.seen.lock().unwrap().last().unwrap(),
        &format!("Bearer {access}")
    );
    // Page JavaScript asking forward-auth itself, with a forged original URI, through the
    // edge (nginx passes client headers on): no answer, so no token. nginx's own subrequest
    // location is internal.
    for path in [
        "/auth/verify",
        "/auth/forward",
        "/auth/%76erify",
        "/_sallyport/verify",
    ] {
        let probe = edge
            .fetch_with(
                Method::GET,
                path,
                &[
                    ("x-original-uri", "/api/echo/orders"),
                    ("x-original-method", "GET"),
                ],
            )
            .await;
        assert_eq!(probe.status, StatusCode::NOT_FOUND, "{path}");
        assert!(probe.header("authorization").is_none(), "{path}");
        assert!(!probe.body.contains(&access), "{path}");
    }
    // The genuine auth_request still delivered the token (checked above); once more after
    // the probes, which changed nothing.
    let api = edge.fetch(Method::GET, "/api/echo/orders").await;
    assert_eq!(api.status, StatusCode::OK);
    assert_eq!(
        stack.upstream.seen.lock().unwrap().last().unwrap(),
        &format!("Bearer {access}")
    );

    let page = edge.get("/app/page").await;
    assert_eq!(page.status, StatusCode::OK, "pages pass once logged in");
    assert_eq!(page.json()["headers"]["x-auth-request-user"][0], "alice");
    assert!(
        page.json()["headers"].get("authorization").is_none(),
        "pages get no token"
    );

    // Logout through nginx: the API answers 401 again.
    let csrf = edge.csrf_token().await;
    let logout = edge
        .fetch_with(
            Method::POST,
            "/auth/logout",
            &[("origin", &stack.gateway.url), ("x-csrf-token", &csrf)],
        )
        .await;
    assert_eq!(logout.status, StatusCode::OK, "{}", logout.body);
    assert_eq!(
        edge.fetch(Method::GET, "/api/echo/orders").await.status,
        StatusCode::UNAUTHORIZED
    );
}
