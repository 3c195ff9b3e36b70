//! Step-up: a route (or its upstream, RFC 9470) that needs a stronger or more recent login
//! answers `401 step_up_required` with the login that gives it; the callback checks that the
//! provider did what was asked.

use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::harness::browser::{Browser, urlencode};
use crate::login::Stack;

const ROUTES: &str = "  - path: /api/reports/*\n    service: echo\n    upstream_path: /echo/*\n    step_up: { acr: [mfa] }\n\
\x20 - path: /api/recent/*\n    service: echo\n    upstream_path: /echo/*\n    step_up: { max_age: 2s }\n\
\x20 - path: /api/guarded\n    service: echo_id\n    upstream_path: /step-up\n";

async fn stack(provider: serde_json::Value) -> Stack {
    Stack::start_with(
        move |p| p.config = provider,
        |g| {
            g.extra_yaml = ROUTES.into();
            g.forward_auth = Some("traefik");
            // The callback's checks of `auth_time` allow this much clock difference.
            g.provider_yaml = "    clock_skew: 1s".into();
        },
    )
    .await
}

/// Follows a `login_url` from Sallyport through the provider (with `otp` when given) and
/// back; the callback's answer.
async fn step_up_login(
    b: &Browser,
    login_url: &str,
    otp: Option<&str>,
) -> crate::harness::browser::Page {
    let query = login_url.strip_prefix("/auth/login?").expect("a login URL");
    let to_provider = b.start_login(query).await;
    let callback = b.through_provider_with(&to_provider, "alice", otp).await;
    b.get(&callback).await
}

#[tokio::test(flavor = "multi_thread")]
async fn a_route_needing_mfa_sends_a_password_session_to_login_and_lets_it_through_after() {
    let stack = stack(json!({})).await;
    let alice = stack.browser();
    alice.login("alice", "/").await;
    let session = alice.fetch(Method::GET, "/api/auth/session").await.json();
    assert_eq!(session["user"]["acr"], "pwd", "a password login");
    assert!(session["user"]["auth_time"].is_u64());

    let page = alice.fetch(Method::GET, "/api/reports/q3").await;
    assert_eq!(page.status, StatusCode::UNAUTHORIZED, "{}", page.body);
    assert_eq!(page.json()["error"], "step_up_required");
    let login_url = page.json()["login_url"].as_str().unwrap().to_owned();
    assert_eq!(login_url, "/auth/login?acr_values=mfa");
    assert!(page.set_cookies().is_empty(), "the session stays");
    // A navigation is sent there, coming back to the page.
    let nav = alice
        .fetch_with(
            Method::GET,
            "/api/reports/q3?x=1",
            &[("sec-fetch-mode", "navigate")],
        )
        .await;
    assert_eq!(nav.status, StatusCode::FOUND);
    assert_eq!(
        nav.header("location"),
        Some(
            format!(
                "/auth/login?acr_values=mfa&return_to={}",
                urlencode("/api/reports/q3?x=1")
            )
            .as_str()
        )
    );
    // The edge answers the same.
    let forward = Browser::with_jar(
        stack.gateway.forward_url.as_deref().unwrap(),
        std::sync::Arc::clone(&alice.jar),
    );
    let verify = forward
        .fetch_with(
            Method::GET,
            "/auth/verify",
            &[
                ("x-forwarded-uri", "/api/reports/q3"),
                ("x-forwarded-method", "GET"),
            ],
        )
        .await;
    assert_eq!(verify.status, StatusCode::UNAUTHORIZED);
    assert_eq!(verify.header("x-sallyport-error"), Some("step_up_required"));
    assert_eq!(
        stack.upstream.seen.lock().unwrap().len(),
        0,
        "nothing went upstream"
    );

    // The provider is asked for mfa, asks for the password again (its session is `pwd`), and
    // the one-time code gives `mfa`.
    let to_provider = alice.start_login("acr_values=mfa").await;
    let old_cookie = alice.cookie("sallyport").unwrap();
    let callback = alice
        .through_provider_with(&to_provider, "alice", Some("123456"))
        .await;
    let page = alice.get(&callback).await;
    assert_eq!(page.status, StatusCode::FOUND, "{}", page.body);
    assert_ne!(
        alice.cookie("sallyport").unwrap(),
        old_cookie,
        "the stronger login is a new session"
    );
    let session = alice.fetch(Method::GET, "/api/auth/session").await.json();
    assert_eq!(session["user"]["acr"], "mfa");
    let page = alice.fetch(Method::GET, "/api/reports/q3").await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);

    // max_age: a login older than 2 s is sent to log in again, with max_age.
    let page = alice.fetch(Method::GET, "/api/recent/x").await;
    assert_eq!(page.status, StatusCode::OK, "a fresh login passes");
    tokio::time::sleep(std::time::Duration::from_millis(3100)).await;
    let page = alice.fetch(Method::GET, "/api/recent/x").await;
    assert_eq!(page.status, StatusCode::UNAUTHORIZED);
    let login_url = page.json()["login_url"].as_str().unwrap().to_owned();
    assert_eq!(login_url, "/auth/login?max_age=2");
    let page = step_up_login(&alice, &login_url, None).await;
    assert_eq!(page.status, StatusCode::FOUND, "{}", page.body);
    let page = alice.fetch(Method::GET, "/api/recent/x").await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_upstreams_rfc_9470_challenge_becomes_step_up_required() {
    let stack = stack(json!({})).await;
    let alice = stack.browser();
    alice.login("alice", "/").await;
    let page = alice.fetch(Method::GET, "/api/guarded").await;
    assert_eq!(page.status, StatusCode::UNAUTHORIZED, "{}", page.body);
    assert_eq!(page.json()["error"], "step_up_required");
    assert_eq!(page.json()["login_url"], "/auth/login?acr_values=mfa");
    assert!(!page.body.contains("step up"), "not the upstream's body");
    let nav = alice
        .fetch_with(
            Method::GET,
            "/api/guarded",
            &[("sec-fetch-mode", "navigate")],
        )
        .await;
    assert_eq!(nav.status, StatusCode::FOUND);
    assert_eq!(
        nav.header("location"),
        Some("/auth/login?acr_values=mfa&return_to=%2Fapi%2Fguarded")
    );
    let page = step_up_login(&alice, "/auth/login?acr_values=mfa", Some("123456")).await;
    assert_eq!(page.status, StatusCode::FOUND, "{}", page.body);
    let page = alice.fetch(Method::GET, "/api/guarded").await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    assert_eq!(page.json()["granted"], true);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_provider_that_ignores_the_request_cannot_pass_an_old_login_off_as_new() {
    let stack = stack(json!({ "ignore_acr_values": true, "ignore_max_age": true })).await;
    let alice = stack.browser();
    alice.login("alice", "/").await;
    let before = alice.cookie("sallyport").unwrap();

    // The provider's session lets every request straight back, with the old `pwd` login.
    let page = step_up_login(&alice, "/auth/login?acr_values=mfa", None).await;
    assert_eq!(page.status, StatusCode::UNAUTHORIZED, "{}", page.body);
    assert!(page.body.contains("(acr)"), "{}", page.body);
    tokio::time::sleep(std::time::Duration::from_millis(3100)).await;
    let page = step_up_login(&alice, "/auth/login?max_age=1", None).await;
    assert_eq!(page.status, StatusCode::UNAUTHORIZED);
    assert!(page.body.contains("(max_age)"), "{}", page.body);
    let page = step_up_login(&alice, "/auth/login?force=true", None).await;
    assert_eq!(page.status, StatusCode::UNAUTHORIZED);
    assert!(
        page.body.contains("earlier authentication"),
        "{}",
        page.body
    );

    // The session from before is untouched, and still not enough for the reports.
    assert_eq!(alice.cookie("sallyport").unwrap(), before);
    assert_eq!(
        alice.fetch(Method::GET, "/api/echo/x").await.status,
        StatusCode::OK
    );
    let page = alice.fetch(Method::GET, "/api/reports/q3").await;
    assert_eq!(page.json()["error"], "step_up_required");
}
