//! Dynamic Client Registration (RFC 7591/7592) against the real provider with an initial access
//! token: Sallyport registers itself once, with `private_key_jwt` and its own JWKS, keeps the
//! registration sealed in the store, reuses it after a restart and from other instances, and
//! updates it when what it registers changes.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::harness::browser::Browser;
use crate::harness::eventually;
use crate::harness::gateway::{Gateway, GatewayOptions};
use crate::harness::redis::Redis;
use crate::login::Stack;

const IAT: &str = "initial-access-token-for-sallyport";

/// Gateway options that register with the initial access token in `TEST_DCR_IAT`, on `store`.
fn registering(g: &mut GatewayOptions, dir: &std::path::Path, session_yaml: String) {
    g.registration = Some("{ initial_access_token: ${TEST_DCR_IAT} }".into());
    g.env = vec![("TEST_DCR_IAT".into(), IAT.into())];
    g.extra_yaml = crate::harness::signing_key(dir, sallyport::keys::NewKey::Es256, "1");
    g.session_yaml = session_yaml;
}

/// A provider that registers clients with [`IAT`], and a gateway that registers there with it,
/// its keys and its file store in `dir`.
async fn registering_stack(dir: &std::path::Path) -> Stack {
    Stack::start_with(
        |p| p.config = json!({ "registration": { "initial_access_token": IAT } }),
        |g| registering(g, dir, file_store(dir)),
    )
    .await
}

fn file_store(dir: &std::path::Path) -> String {
    format!(
        "  store: file\n  file: {{ path: {} }}",
        dir.join("sessions.redb").display()
    )
}

/// Waits until `gateway` says it is ready.
async fn ready(gateway: &Gateway) {
    let b = Browser::new(&gateway.url);
    let ok = eventually(Duration::from_secs(10), || async {
        (b.fetch(Method::GET, "/auth/ready").await.status == StatusCode::OK).then_some(())
    })
    .await;
    assert!(ok.is_some(), "{} becomes ready", gateway.url);
}

/// A whole login as alice and an API call with her token.
async fn works(b: &Browser) {
    b.login("alice", "/").await;
    let page = b.fetch(Method::GET, "/api/echo/x").await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    assert_eq!(page.json()["headers"]["x-auth-request-user"][0], "alice");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_first_start_registers_and_a_restart_reuses_the_registration_without_the_token() {
    let dir = tempfile::tempdir().unwrap();
    let mut stack = registering_stack(dir.path()).await;
    ready(&stack.gateway).await;
    assert_eq!(stack.provider.stats().await["registrations"], 1);
    let clients = stack.provider.registered_clients().await;
    assert_eq!(clients.len(), 1);
    let (client_id, client) = clients.iter().next().unwrap();
    let origin = format!("http://localhost:{}", stack.opts.port);
    assert_eq!(
        client["redirect_uris"],
        json!([format!("{origin}/auth/callback")])
    );
    assert_eq!(
        client["post_logout_redirect_uris"],
        json!([format!("{origin}/")])
    );
    assert_eq!(
        client["backchannel_logout_uri"],
        format!("{origin}/auth/backchannel-logout")
    );
    assert_eq!(
        client["jwks_uri"],
        format!("{origin}/.well-known/jwks.json")
    );
    assert_eq!(client["token_endpoint_auth_method"], "private_key_jwt");
    assert_eq!(client["token_endpoint_auth_signing_alg"], "ES256");
    assert_eq!(
        client["grant_types"],
        json!(["authorization_code", "refresh_token"])
    );
    let b = stack.browser();
    works(&b).await;
    assert!(
        stack.provider.grants("authorization_code").await >= 1,
        "the registered client redeemed the code"
    );

    // A restart reads the registration from the store: the initial access token (used up,
    // as far as the operator is concerned) may leave the environment.
    stack.gateway.stop().await;
    stack.opts.env.clear();
    stack.gateway = Gateway::start(&stack.opts).await;
    ready(&stack.gateway).await;
    assert_eq!(
        stack.provider.stats().await["registrations"],
        1,
        "no second registration"
    );
    assert_eq!(stack.provider.stats().await["registration_updates"], 0);
    let page = b.fetch(Method::GET, "/api/echo/after-restart").await;
    assert_eq!(
        page.status,
        StatusCode::OK,
        "the session lives on: {}",
        page.body
    );
    let other = Browser::with_local_address(&stack.gateway.url, "127.0.0.2");
    works(&other).await;
    assert_eq!(stack.provider.registered_clients().await.len(), 1);
    assert!(
        stack
            .provider
            .registered_clients()
            .await
            .contains_key(client_id)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_changed_redirect_uri_updates_the_registration_in_place() {
    let dir = tempfile::tempdir().unwrap();
    let mut stack = registering_stack(dir.path()).await;
    ready(&stack.gateway).await;
    let before = stack.provider.registered_clients().await;
    let client_id = before.keys().next().unwrap().clone();

    // Sallyport moves to another public URL (here: another port), and gains a service that
    // needs client credentials from this provider.
    stack.gateway.stop().await;
    let reserved = crate::harness::reserve_port();
    stack.opts.port = reserved.local_addr().unwrap().port();
    stack.opts.services_yaml =
        "  machine:\n    url: http://127.0.0.1:9\n    token: { kind: client_credentials }\n".into();
    stack.gateway = Gateway::start_on(&stack.opts, Some(reserved)).await;
    ready(&stack.gateway).await;
    let stats = stack.provider.stats().await;
    assert_eq!(stats["registrations"], 1, "updated, not registered anew");
    assert_eq!(stats["registration_updates"], 1);
    let after = stack.provider.registered_clients().await;
    assert_eq!(after.len(), 1);
    let client = &after[&client_id];
    assert_eq!(
        client["redirect_uris"],
        json!([format!(
            "http://localhost:{}/auth/callback",
            stack.opts.port
        )])
    );
    assert_eq!(
        client["grant_types"],
        json!(["authorization_code", "refresh_token", "client_credentials"])
    );
    works(&stack.browser()).await;

    // The provider rotated the registration access token; the next change uses the new one.
    stack.gateway.stop().await;
    stack.opts.services_yaml = String::new();
    stack.gateway = Gateway::start(&stack.opts).await;
    ready(&stack.gateway).await;
    assert_eq!(stack.provider.stats().await["registration_updates"], 2);
    assert_eq!(
        stack.provider.registered_clients().await[&client_id]["grant_types"],
        json!(["authorization_code", "refresh_token"])
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn instances_starting_at_the_same_moment_register_once() {
    let redis = Redis::start().await;
    let dir = tempfile::tempdir().unwrap();
    let session_yaml = format!(
        "  store: redis\n  redis: {{ url: \"{}\", key_prefix: \"dcr:\" }}",
        redis.url
    );
    // Three instances start together: the first a moment earlier (the harness starts it with
    // the provider), the others while its registration is on the way (the provider answers
    // registrations 1.5 s late).
    let stack = Stack::start_with(
        |p| {
            p.config = json!({
                "registration": { "initial_access_token": IAT },
                "registration_delay_ms": 1500,
            });
        },
        |g| registering(g, dir.path(), session_yaml),
    )
    .await;
    // Behind one address (public_url), as behind a load balancer.
    let starts = (0..2).map(|_| {
        let reserved = crate::harness::reserve_port();
        let mut opts = stack.opts.clone();
        opts.port = reserved.local_addr().unwrap().port();
        opts.public_port = Some(stack.opts.port);
        async move { Gateway::start_on(&opts, Some(reserved)).await }
    });
    let others = futures_util::future::join_all(starts).await;
    assert_eq!(
        stack.provider.stats().await["registrations"],
        0,
        "all three started before the first registration was answered"
    );
    ready(&stack.gateway).await;
    for g in &others {
        ready(g).await;
    }
    let stats = stack.provider.stats().await;
    assert_eq!(
        stats["registrations"], 1,
        "one registration for three instances"
    );
    assert_eq!(stats["registration_updates"], 0, "and nothing to update");
    // The instances share sessions: a login on one works on another.
    let b = stack.browser();
    works(&b).await;
    let on_other = Browser::with_jar(&others[0].url, std::sync::Arc::clone(&b.jar));
    assert_eq!(
        on_other.fetch(Method::GET, "/api/echo/x").await.status,
        StatusCode::OK
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_wrong_initial_access_token_leaves_sallyport_not_ready_and_starts_no_login() {
    let dir = tempfile::tempdir().unwrap();
    let stack = Stack::start_with(
        |p| p.config = json!({ "registration": { "initial_access_token": IAT } }),
        |g| {
            registering(g, dir.path(), file_store(dir.path()));
            g.env = vec![("TEST_DCR_IAT".into(), "expired-token".into())];
        },
    )
    .await;
    let refused = eventually(Duration::from_secs(5), || async {
        (stack.provider.stats().await["registration_errors"]
            .as_u64()
            .unwrap()
            >= 1)
            .then_some(())
    })
    .await;
    assert!(refused.is_some(), "the provider was asked and refused");
    let b = stack.browser();
    let page = b.fetch(Method::GET, "/auth/ready").await;
    assert_eq!(page.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(page.json()["providers"]["main"], false);
    let login = b.get("/auth/login?return_to=/").await;
    assert_eq!(login.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        login.body.contains("provider_unavailable"),
        "{}",
        login.body
    );
    assert_eq!(stack.provider.stats().await["registrations"], 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn without_a_stored_registration_an_unset_initial_access_token_is_not_ready() {
    let dir = tempfile::tempdir().unwrap();
    let stack = Stack::start_with(
        |p| p.config = json!({ "registration": { "initial_access_token": IAT } }),
        |g| {
            registering(g, dir.path(), file_store(dir.path()));
            // The config names ${TEST_DCR_IAT}; the environment no longer has it.
            g.env.clear();
        },
    )
    .await;
    let b = stack.browser();
    let ready = eventually(Duration::from_secs(2), || async {
        (b.fetch(Method::GET, "/auth/ready").await.status == StatusCode::OK).then_some(())
    })
    .await;
    assert!(ready.is_none(), "never ready without a registration");
    assert_eq!(
        b.get("/auth/login?return_to=/").await.status,
        StatusCode::SERVICE_UNAVAILABLE
    );
    let stats = stack.provider.stats().await;
    assert_eq!(stats["registrations"], 0);
    assert_eq!(
        stats["registration_errors"], 0,
        "the provider is not even asked"
    );
}
