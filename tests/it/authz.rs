//! Authorization per route: `401` is "log in", `403` is "logged in, and no". The proxy and
//! forward-auth answer the same, and a refused request never reaches the upstream nor costs a
//! token request.

use reqwest::{Method, StatusCode};

use crate::harness::browser::Browser;
use crate::login::Stack;

const ADMIN_ROUTES: &str = "  - path: /api/admin/*\n    service: echo\n    upstream_path: /echo/*\n    require: { claims: { roles: [admin] } }\n\
\x20 - path: /api/maybe-admin/*\n    service: echo\n    upstream_path: /echo/*\n    auth: optional\n    require: { claims: { roles: [admin, owner] } }\n";

#[tokio::test(flavor = "multi_thread")]
async fn a_route_requiring_a_role_lets_holders_in_refuses_others_with_403_and_strangers_with_401() {
    let stack = Stack::start_with(
        |_| {},
        |g| {
            g.extra_yaml = ADMIN_ROUTES.into();
            g.forward_auth = Some("traefik");
        },
    )
    .await;
    let stranger = stack.browser();
    let page = stranger.fetch(Method::GET, "/api/admin/users").await;
    assert_eq!(page.status, StatusCode::UNAUTHORIZED);
    assert_eq!(page.json()["error"], "not_authenticated");
    let page = stranger.fetch(Method::GET, "/api/maybe-admin/x").await;
    assert_eq!(
        page.status,
        StatusCode::UNAUTHORIZED,
        "optional, but there is something to check"
    );

    let alice = stack.browser();
    alice.login("alice", "/").await;
    for path in ["/api/admin/users", "/api/maybe-admin/x"] {
        let page = alice.fetch(Method::GET, path).await;
        assert_eq!(page.status, StatusCode::OK, "{path}: {}", page.body);
    }
    let seen = stack.upstream.seen.lock().unwrap().len();
    assert_eq!(seen, 2);

    let bob = stack.browser();
    bob.login("bob", "/").await;
    let page = bob.fetch(Method::GET, "/api/admin/users").await;
    assert_eq!(page.status, StatusCode::FORBIDDEN, "{}", page.body);
    assert_eq!(page.json()["error"], "access_denied");
    assert!(page.set_cookies().is_empty(), "the session stays");
    let csrf = bob.csrf_token().await;
    let page = bob
        .fetch_with(
            Method::DELETE,
            "/api/admin/users/alice",
            &[("origin", &stack.gateway.url), ("x-csrf-token", &csrf)],
        )
        .await;
    assert_eq!(page.status, StatusCode::FORBIDDEN);
    assert_eq!(
        stack.upstream.seen.lock().unwrap().len(),
        seen,
        "no refused request reached the upstream"
    );
    assert_eq!(
        bob.fetch(Method::GET, "/api/echo/fine").await.status,
        StatusCode::OK
    );

    // The edge gets the same answers.
    let verify = |b: &Browser| {
        let forward = Browser::with_jar(
            stack.gateway.forward_url.as_deref().unwrap(),
            std::sync::Arc::clone(&b.jar),
        );
        async move {
            forward
                .fetch_with(
                    Method::GET,
                    "/auth/verify",
                    &[
                        ("x-forwarded-uri", "/api/admin/users"),
                        ("x-forwarded-method", "GET"),
                    ],
                )
                .await
        }
    };
    assert_eq!(verify(&alice).await.status, StatusCode::OK);
    let refused = verify(&bob).await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);
    assert_eq!(refused.header("x-sallyport-error"), Some("access_denied"));
    assert_eq!(verify(&stranger).await.status, StatusCode::UNAUTHORIZED);
}
