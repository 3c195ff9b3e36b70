//! Pushed authorization requests (RFC 9126) against the real provider: on by default where the
//! provider offers them, required where configured or where the provider requires them, and a
//! per-address budget so that a flood of login starts does not become a flood at the provider.

use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::harness::browser::Browser;
use crate::login::Stack;

/// The names of the query parameters of `url`, sorted.
fn query_keys(url: &str) -> Vec<String> {
    let url = reqwest::Url::parse(url).unwrap();
    let mut keys: Vec<String> = url.query_pairs().map(|(k, _)| k.into_owned()).collect();
    keys.sort();
    keys
}

/// Logs in as alice from the provider URL a login start gave, and checks the session works.
pub async fn finish(b: &Browser, to_provider: &str) {
    let callback = b.through_provider(to_provider, "alice").await;
    let page = b.get(&callback).await;
    assert_eq!(page.status, StatusCode::FOUND, "{}", page.body);
    assert_eq!(
        b.fetch(Method::GET, "/api/echo/x").await.status,
        StatusCode::OK
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn logins_push_their_request_by_default_and_the_browser_carries_only_its_reference() {
    let stack = Stack::start().await;
    let b = stack.browser();
    let to_provider = b.start_login("return_to=/").await;
    assert_eq!(
        query_keys(&to_provider),
        ["client_id", "request_uri"],
        "no state, nonce, PKCE challenge or scope in the browser's URL: {to_provider}"
    );
    finish(&b, &to_provider).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_provider_that_requires_pushed_authorization_requests_gets_them() {
    let stack = Stack::start_with(
        |p| p.client_metadata = json!({ "require_pushed_authorization_requests": true }),
        |g| g.provider_yaml = "    par: required".into(),
    )
    .await;
    let b = stack.browser();
    let to_provider = b.start_login("return_to=/").await;
    assert_eq!(
        query_keys(&to_provider),
        ["client_id", "request_uri"],
        "the browser carries nothing else: {to_provider}"
    );
    finish(&b, &to_provider).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn par_required_with_a_provider_without_it_is_not_ready_and_starts_no_login() {
    let stack = Stack::start_with(
        |p| p.config = json!({ "par": "off" }),
        |g| g.provider_yaml = "    par: required".into(),
    )
    .await;
    let b = stack.browser();
    let ready = b.fetch(Method::GET, "/auth/ready").await;
    assert_eq!(
        ready.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        ready.body
    );
    let login = b.get("/auth/login?return_to=/").await;
    assert_eq!(
        login.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        login.body
    );
    assert!(
        login.body.contains("provider_unavailable"),
        "{}",
        login.body
    );
    assert!(
        login.header("location").is_none(),
        "no front-channel request instead"
    );

    // `auto`, the default, logs in with the same provider through the front channel.
    let auto = Stack::start_with(|p| p.config = json!({ "par": "off" }), |_| {}).await;
    let b = auto.browser();
    let to_provider = b.start_login("return_to=/").await;
    assert!(
        to_provider.contains("code_challenge=") && !to_provider.contains("request_uri="),
        "{to_provider}"
    );
    finish(&b, &to_provider).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_flood_of_login_starts_pushes_a_bounded_number_of_requests() {
    let stack = Stack::start().await;
    let flood = Browser::new(&stack.gateway.url);
    let mut pushed = 0;
    for _ in 0..150 {
        let to_provider = flood.start_login("return_to=/").await;
        if to_provider.contains("request_uri=") {
            pushed += 1;
        } else {
            // Past the budget: the same request through the front channel, complete.
            assert!(to_provider.contains("code_challenge="), "{to_provider}");
        }
    }
    assert_eq!(pushed, 60, "pushes per address and minute");
    // The last front-channel login works; another address still gets its requests pushed.
    let to_provider = flood.start_login("return_to=/").await;
    finish(&flood, &to_provider).await;
    let other = Browser::with_local_address(&stack.gateway.url, "127.0.0.2");
    assert!(
        other
            .start_login("return_to=/")
            .await
            .contains("request_uri=")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn past_the_budget_a_provider_that_requires_pushed_requests_gets_429_not_a_bypass() {
    let stack = Stack::start_with(|p| p.config = json!({ "par": "required" }), |_| {}).await;
    let flood = Browser::new(&stack.gateway.url);
    for i in 0..60 {
        let page = flood.get("/auth/login?return_to=/").await;
        assert_eq!(page.status, StatusCode::FOUND, "login start {i}");
        assert!(page.header("location").unwrap().contains("request_uri="));
    }
    let page = flood.get("/auth/login?return_to=/").await;
    assert_eq!(page.status, StatusCode::TOO_MANY_REQUESTS, "{}", page.body);
    assert!(page.body.contains("rate_limited"), "{}", page.body);
    assert!(page.body.contains("too many sign-ins"), "{}", page.body);
    assert!(page.header("retry-after").is_some());
    // Another address logs in.
    let other = Browser::with_local_address(&stack.gateway.url, "127.0.0.2");
    other.login("alice", "/").await;
    assert_eq!(
        other.fetch(Method::GET, "/api/auth/session").await.status,
        StatusCode::OK
    );
}
