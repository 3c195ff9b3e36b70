//! The nginx recipe (`examples/nginx/sallyport.conf`) with a real nginx in front of Sallyport
//! and the upstream.

use std::sync::Arc;

use reqwest::{Method, StatusCode};

use crate::harness::bad_provider::BadProvider;
use crate::harness::browser::{Browser, Page};
use crate::harness::gateway::Gateway;
use crate::harness::nginx::Nginx;
use crate::harness::upstream::Upstream;
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

/// Logs alice in at Sallyport and calls the app through the edge at `edge_url` with forged
/// identity and token headers (and a forged `relay`, the header the edge's recipe carries the
/// token in, if it uses one): the app sees her identity and Sallyport's bearer token, not what
/// the client claimed, and the path and query as sent. Returns the edge browser, logged in,
/// and her access token.
pub async fn identity_reaches_the_app(
    stack: &Stack,
    edge_url: &str,
    relay: Option<&str>,
) -> (Browser, String) {
    let direct = stack.browser();
    direct.login("alice", "/").await;
    let (access, _, _) = stack.tokens_of(&direct).await;
    let edge = Browser::with_jar(edge_url, Arc::clone(&direct.jar));
    let mut forged = vec![
        ("x-auth-request-user", "admin"),
        ("authorization", "Bearer forged"),
    ];
    forged.extend(relay.map(|name| (name, "Bearer forged")));
    let api = edge
        .fetch_with(Method::GET, "/api/echo/orders?page=2", &forged)
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
    if let Some(name) = relay {
        assert!(
            seen["headers"].get(name).is_none(),
            "{name} reached the app"
        );
    }
    assert_eq!(
        stack.upstream.seen.lock().unwrap().last().unwrap(),
        &format!("Bearer {access}")
    );
    (edge, access)
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
    let expected = format!("{}/auth/login?return_to=%2Fapp%2Fpage", nginx.url);
    assert_eq!(page.header("location"), Some(expected.as_str()));
    assert!(
        stack.upstream.seen.lock().unwrap().is_empty(),
        "nothing reached the app"
    );

    // Logged in (the session cookie belongs to localhost, whatever the port).
    let (edge, access) = identity_reaches_the_app(&stack, &nginx.url, None).await;
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

/// A refusal as the nginx recipe passes it on: Sallyport's status, its code as JSON, and the
/// correlation id of Sallyport's log line.
fn assert_refused(page: &Page, status: StatusCode, code: &str) {
    assert_eq!(page.status, status, "{}", page.body);
    let body = page.json();
    assert_eq!(body["error"], code, "{}", page.body);
    let cid = body["correlation_id"].as_str().unwrap();
    assert_eq!(cid.len(), 32, "{}", page.body);
    assert_eq!(page.header("x-correlation-id"), Some(cid));
    assert_eq!(page.header("cache-control"), Some("no-store"));
}

/// Each route's `auth` mode and `methods`, asked through nginx's `auth_request`: the edge
/// answers what the proxy path would.
#[tokio::test(flavor = "multi_thread")]
async fn nginx_answers_what_the_proxy_would_for_each_auth_mode() {
    let (stack, nginx) = behind_nginx().await;
    let anon = Browser::new(&nginx.url);
    let seen = || stack.upstream.seen.lock().unwrap().len();

    // auth: none — public, with or without a session, never with an identity.
    for page in [
        anon.get("/api/public/x").await,
        anon.fetch(Method::GET, "/api/public/x").await,
    ] {
        assert_eq!(page.status, StatusCode::OK, "{}", page.body);
        let headers = &page.json()["headers"];
        assert!(headers.get("x-auth-request-user").is_none(), "{headers}");
        assert!(headers.get("authorization").is_none(), "{headers}");
    }
    // auth: optional — passes without a session, anonymously.
    let page = anon.fetch(Method::GET, "/api/optional/x").await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    assert!(page.json()["headers"].get("x-auth-request-user").is_none());

    // auth: session, and a page under no route: a navigation is sent to login, a fetch() gets
    // the 401 — whether or not a route matched.
    let before = seen();
    for path in ["/api/echo/orders?page=2", "/app/page?x=1"] {
        let nav = anon.get(path).await;
        assert_eq!(nav.status, StatusCode::FOUND, "{path}: {}", nav.body);
        let to = url::form_urlencoded::byte_serialize(path.as_bytes()).collect::<String>();
        assert_eq!(
            nav.header("location").unwrap(),
            format!("{}/auth/login?return_to={to}", nginx.url),
        );
        assert_refused(
            &anon.fetch(Method::GET, path).await,
            StatusCode::UNAUTHORIZED,
            "not_authenticated",
        );
        let xhr = anon
            .fetch_with(
                Method::GET,
                path,
                &[
                    ("accept", "text/html"),
                    ("x-requested-with", "XMLHttpRequest"),
                ],
            )
            .await;
        assert_eq!(xhr.status, StatusCode::UNAUTHORIZED, "{path}");
    }
    // A method the route does not allow: 405 with Allow, before any session is read.
    let post = anon.fetch(Method::POST, "/api/readonly/x").await;
    assert_refused(&post, StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed");
    assert_eq!(post.header("allow"), Some("GET"));
    // A path that is not in normal form never reaches the app.
    assert_refused(
        &anon.fetch(Method::GET, "/api/echo/a;jsessionid=x").await,
        StatusCode::BAD_REQUEST,
        "invalid_path",
    );
    assert_eq!(seen(), before, "no refused request reached the app");

    // Logged in.
    let direct = stack.browser();
    direct.login("alice", "/").await;
    let (access, _, _) = stack.tokens_of(&direct).await;
    let user = Browser::with_jar(&nginx.url, Arc::clone(&direct.jar));
    let page = user.fetch(Method::GET, "/api/optional/x").await;
    assert_eq!(page.status, StatusCode::OK);
    assert_eq!(page.json()["headers"]["x-auth-request-user"][0], "alice");
    assert_eq!(
        stack.upstream.seen.lock().unwrap().last().unwrap(),
        &format!("Bearer {access}"),
        "optional with a session gets the service's token"
    );
    let page = user.fetch(Method::GET, "/api/public/x").await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(
        page.json()["headers"].get("x-auth-request-user").is_none(),
        "auth: none carries no identity, even with a session"
    );
    assert_eq!(
        user.fetch(Method::GET, "/app/page").await.json()["headers"]["x-auth-request-user"][0],
        "alice"
    );
    // A state-changing request without the CSRF token: refused before it reaches the app.
    let before = seen();
    let post = user
        .fetch_with(
            Method::POST,
            "/api/echo/orders",
            &[("origin", &stack.gateway.url)],
        )
        .await;
    assert_refused(&post, StatusCode::FORBIDDEN, "csrf_failed");
    assert_eq!(seen(), before);
    let csrf = user.csrf_token().await;
    let post = user
        .fetch_with(
            Method::POST,
            "/api/echo/orders",
            &[("origin", &stack.gateway.url), ("x-csrf-token", &csrf)],
        )
        .await;
    assert_eq!(post.status, StatusCode::OK, "{}", post.body);
}

/// `auth: session_or_bearer` behind nginx: a machine client's valid bearer passes and reaches
/// the app unchanged; a refused one gets 401 `invalid_token`; a bearer is no key to a
/// `session` route.
#[tokio::test(flavor = "multi_thread")]
async fn nginx_passes_a_valid_client_bearer_on_session_or_bearer_routes() {
    let provider = BadProvider::start().await;
    let upstream = Upstream::start().await;
    let (_gateway, opts) = Gateway::start_with(&provider.issuer, &upstream.url, |o| {
        o.provider_yaml = "    bearer_audiences: [orders-api]".into();
        o.extra_yaml = "  - path: /api/m2m/*\n    service: echo\n    upstream_path: /echo/*\n    auth: session_or_bearer\n".into();
        o.trusted_proxies = "[127.0.0.1/32]";
        o.forward_auth = Some("nginx");
    })
    .await;
    let app = upstream.url.trim_start_matches("http://").to_owned();
    let nginx = Nginx::start(opts.port, opts.forward_auth_port, &app).await;
    let client = Browser::new(&nginx.url);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let claims = serde_json::json!({"iss": provider.issuer, "aud": "orders-api",
        "sub": "svc-reporting", "exp": now + 300, "iat": now});
    let token = provider.sign(&claims, Some("at+jwt"));
    let bearer = format!("Bearer {token}");

    let page = client
        .fetch_with(
            Method::POST,
            "/api/m2m/reports",
            &[("authorization", &bearer)],
        )
        .await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    assert_eq!(
        page.json()["headers"]["x-auth-request-user"][0],
        "svc-reporting"
    );
    assert_eq!(upstream.seen.lock().unwrap().last().unwrap(), &bearer);

    let before = upstream.seen.lock().unwrap().len();
    let forged = provider.forged(&claims);
    let page = client
        .fetch_with(
            Method::GET,
            "/api/m2m/reports",
            &[("authorization", &format!("Bearer {forged}"))],
        )
        .await;
    assert_refused(&page, StatusCode::UNAUTHORIZED, "invalid_token");
    let page = client
        .fetch_with(
            Method::GET,
            "/api/echo/reports",
            &[("authorization", &bearer)],
        )
        .await;
    assert_refused(&page, StatusCode::UNAUTHORIZED, "not_authenticated");
    assert_eq!(upstream.seen.lock().unwrap().len(), before);
}
