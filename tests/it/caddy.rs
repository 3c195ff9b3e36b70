//! The Caddy recipe (`examples/caddy/Caddyfile`) with a real Caddy in front of Sallyport and
//! the upstream: the nginx recipe's checks, through `forward_auth`.

use reqwest::{Method, StatusCode};

use crate::harness::browser::Browser;
use crate::harness::caddy::Caddy;
use crate::login::Stack;

/// A stack behind a real Caddy running the recipe, which asks the forward-auth listener.
async fn behind_caddy() -> (Stack, Caddy) {
    let stack = Stack::start_with(
        |_| {},
        |g| {
            g.trusted_proxies = "[127.0.0.1/32]";
            g.forward_auth = Some("caddy");
        },
    )
    .await;
    let app = stack.upstream.url.trim_start_matches("http://").to_owned();
    let caddy = Caddy::start(stack.opts.port, stack.opts.forward_auth_port, &app).await;
    (stack, caddy)
}

#[tokio::test(flavor = "multi_thread")]
async fn the_caddy_recipe_protects_the_app_with_forward_auth() {
    let (stack, caddy) = behind_caddy().await;
    let edge = Browser::new(&caddy.url);

    // Not logged in: the API answers 401 (Sallyport's JSON), a page navigation goes to login.
    let api = edge.fetch(Method::GET, "/api/echo/orders").await;
    assert_eq!(api.status, StatusCode::UNAUTHORIZED, "{}", api.body);
    assert_eq!(api.json()["error"], "not_authenticated");
    let page = edge.get("/app/page").await;
    assert_eq!(page.status, StatusCode::FOUND, "{}", page.body);
    let location = page.header("location").unwrap();
    assert!(
        location.ends_with("/auth/login?return_to=%2Fapp%2Fpage"),
        "{location}"
    );
    // A client's identity headers get nothing through either.
    let forged = edge
        .fetch_with(
            Method::GET,
            "/api/echo/orders",
            &[
                ("x-auth-request-user", "admin"),
                ("authorization", "Bearer forged"),
            ],
        )
        .await;
    assert_eq!(forged.status, StatusCode::UNAUTHORIZED);
    assert!(
        stack.upstream.seen.lock().unwrap().is_empty(),
        "nothing reached the app"
    );

    // Logged in (at Sallyport's public_url; the session cookie belongs to localhost, whatever
    // the port): through Caddy, the app sees the identity and the bearer token, not what the
    // client claimed.
    let (edge, access) = crate::nginx::identity_reaches_the_app(
        &stack,
        &caddy.url,
        Some("x-sallyport-authorization"),
    )
    .await;

    // An auth: none route passes without identity or token, even when the client forges them.
    let public = edge
        .fetch_with(
            Method::GET,
            "/api/public/x",
            &[
                ("x-auth-request-user", "admin"),
                ("x-sallyport-authorization", "Bearer forged"),
                ("authorization", "Bearer forged"),
            ],
        )
        .await;
    assert_eq!(public.status, StatusCode::OK, "{}", public.body);
    let headers = &public.json()["headers"];
    assert!(headers.get("x-auth-request-user").is_none(), "{headers}");
    assert!(headers.get("authorization").is_none(), "{headers}");

    // Page JavaScript asking forward-auth itself, through the edge: no answer, no token.
    for path in ["/auth/verify", "/auth/forward"] {
        let probe = edge
            .fetch_with(
                Method::GET,
                path,
                &[
                    ("x-forwarded-uri", "/api/echo/orders"),
                    ("x-forwarded-method", "GET"),
                ],
            )
            .await;
        assert_eq!(probe.status, StatusCode::NOT_FOUND, "{path}");
        assert!(probe.header("authorization").is_none(), "{path}");
        assert!(!probe.body.contains(&access), "{path}");
    }

    // Pages get the identity, never the token.
    let page = edge.get("/app/page").await;
    assert_eq!(page.status, StatusCode::OK, "pages pass once logged in");
    assert_eq!(page.json()["headers"]["x-auth-request-user"][0], "alice");
    assert!(
        page.json()["headers"].get("authorization").is_none(),
        "pages get no token"
    );

    // A state-changing API call without the CSRF header: Sallyport's 403, passed on.
    let post = edge.fetch_with(Method::POST, "/api/echo/orders", &[]).await;
    assert_eq!(post.status, StatusCode::FORBIDDEN, "{}", post.body);
    assert_eq!(post.json()["error"], "csrf_failed");

    // Logout through Caddy: the API answers 401 again.
    let csrf = edge.csrf_token().await;
    let logout = edge
        .fetch_with(Method::POST, "/auth/logout", &[("x-csrf-token", &csrf)])
        .await;
    assert_eq!(logout.status, StatusCode::OK, "{}", logout.body);
    assert_eq!(
        edge.fetch(Method::GET, "/api/echo/orders").await.status,
        StatusCode::UNAUTHORIZED
    );
}
