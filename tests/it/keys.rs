//! Sallyport's own keys: `private_key_jwt` against the real provider, which fetches the
//! client's JWKS from Sallyport's `/.well-known/jwks.json`; the JWKS holds public parts only.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::harness::provider::ProviderOptions;
use crate::login::Stack;

/// The provider side of `private_key_jwt`: the `sallyport` client authenticates with ES256
/// assertions, verified by the keys the provider fetches from Sallyport's JWKS.
pub fn jwt_client(p: &mut ProviderOptions) {
    p.token_endpoint_auth_method = "private_key_jwt";
    p.client_metadata = json!({
        "jwks_uri": format!("http://localhost:{}/.well-known/jwks.json", p.gateway_port),
        "token_endpoint_auth_signing_alg": "ES256",
    });
}

#[tokio::test(flavor = "multi_thread")]
async fn logins_and_refreshes_authenticate_with_a_client_assertion_verified_by_the_published_jwks()
{
    let dir = tempfile::tempdir().unwrap();
    let keys_yaml = crate::harness::signing_key(dir.path(), sallyport::keys::NewKey::Es256, "k1");
    let stack = Stack::start_with(jwt_client, move |g| {
        g.client_auth = "private_key_jwt";
        g.extra_yaml = keys_yaml;
    })
    .await;

    // The JWKS: the key's public part, cacheable, nothing private.
    let jwks = stack
        .browser()
        .fetch(Method::GET, "/.well-known/jwks.json")
        .await;
    assert_eq!(jwks.status, StatusCode::OK);
    assert_eq!(jwks.header("cache-control"), Some("public, max-age=60"));
    let set = jwks.json();
    assert_eq!(set["keys"].as_array().unwrap().len(), 1);
    let k = &set["keys"][0];
    assert_eq!(
        (
            k["kid"].as_str(),
            k["kty"].as_str(),
            k["use"].as_str(),
            k["alg"].as_str()
        ),
        (Some("k1"), Some("EC"), Some("sig"), Some("ES256"))
    );
    assert!(k.get("d").is_none(), "no private part: {k}");

    // The code exchange authenticates with the assertion (the provider refuses anything else
    // for this client), and so does a refresh.
    let b = stack.browser();
    b.login("alice", "/").await;
    assert_eq!(
        b.fetch(Method::GET, "/api/echo/x").await.status,
        StatusCode::OK
    );
    let before = stack.provider.grants("refresh_token").await;
    stack.gateway.clock.advance(Duration::from_secs(280));
    let page = b.fetch(Method::GET, "/api/echo/x").await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    assert_eq!(
        stack.provider.grants("refresh_token").await,
        before + 1,
        "refreshed with an assertion"
    );

    // Logging out revokes the grant at the provider (RFC 7009), authenticated the same way:
    // the refresh token is worth nothing afterwards.
    let (_, _, refresh_token) = stack.tokens_of(&b).await;
    let refresh_token = refresh_token.expect("a refresh token");
    let csrf = b.csrf_token().await;
    let logout = b
        .fetch_with(Method::POST, "/auth/logout", &[("x-csrf-token", &csrf)])
        .await;
    assert_eq!(logout.status, StatusCode::OK, "{}", logout.body);
    let revoked = crate::harness::eventually(Duration::from_secs(5), || async {
        (stack.provider.stats().await["grants_revoked"] == 1).then_some(())
    })
    .await;
    assert!(revoked.is_some(), "the grant is revoked at the provider");
    let key = std::fs::read(dir.path().join("sallyport.pem")).unwrap();
    let signing = sallyport::keys::SigningKey::from_pem("k1", &key).unwrap();
    let keys = sallyport::keys::Keys::new(vec![std::sync::Arc::new(signing)]);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let assertion = keys
        .client_assertion("sallyport", &stack.provider.issuer, now)
        .unwrap();
    let answer = reqwest::Client::new()
        .post(format!("{}/token", stack.provider.issuer))
        .form(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh_token.as_str()),
            ("client_id", "sallyport"),
            (
                "client_assertion_type",
                "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
            ),
            ("client_assertion", assertion.as_str()),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), StatusCode::BAD_REQUEST);
    let body: serde_json::Value = answer.json().await.unwrap();
    assert_eq!(body["error"], "invalid_grant", "{body}");
}

/// The rotation procedure of the README, step by step, against a provider that caches the
/// client's JWKS (oidc-provider keeps it for `max(60 s, max-age)`): add the new key second,
/// wait for the provider's cache, make it first, later remove the old one. Logins and
/// refreshes work at every step; sessions live in the file store across the restarts.
#[tokio::test(flavor = "multi_thread")]
async fn a_key_rotation_keeps_logins_and_refreshes_working_at_every_step() {
    let dir = tempfile::tempdir().unwrap();
    let (old, new) = (dir.path().join("old.pem"), dir.path().join("new.pem"));
    for path in [&old, &new] {
        std::fs::write(
            path,
            sallyport::keys::generate(sallyport::keys::NewKey::Es256).unwrap(),
        )
        .unwrap();
    }
    let keys = |list: &[(&std::path::Path, &str)]| {
        let mut yaml = "signing_keys:\n".to_owned();
        for (file, kid) in list {
            yaml.push_str(&format!("  - {{ file: {}, kid: {kid} }}\n", file.display()));
        }
        yaml
    };
    let store = format!(
        "  store: file\n  file: {{ path: {} }}",
        dir.path().join("sessions.db").display()
    );
    let first = keys(&[(&old, "old")]);
    let mut stack = Stack::start_with(jwt_client, move |g| {
        g.client_auth = "private_key_jwt";
        g.extra_yaml = first;
        g.session_yaml = store;
    })
    .await;
    let alice = stack.browser();
    alice.login("alice", "/").await;
    // The provider fetched the JWKS (only `old`) for that code exchange.
    let fetched = std::time::Instant::now();
    let mut refreshes = stack.provider.grants("refresh_token").await;

    let steps: [&[(&std::path::Path, &str)]; 3] = [
        &[(&old, "old"), (&new, "new")], // publish the new key second; the old one signs
        &[(&new, "new"), (&old, "old")], // after the provider's cache: the new one signs
        &[(&new, "new")],                // later: the old one is gone
    ];
    for (i, step) in steps.iter().enumerate() {
        if i == 1 {
            // Wait out the provider's cache of the JWKS it fetched before `new` was published.
            let wait = Duration::from_secs(61).saturating_sub(fetched.elapsed());
            tokio::time::sleep(wait).await;
        }
        let mut opts = stack.opts.clone();
        opts.extra_yaml = keys(step);
        stack.gateway.stop().await;
        stack.gateway = crate::harness::gateway::Gateway::start(&opts).await;
        let kids: Vec<String> = stack
            .browser()
            .fetch(Method::GET, "/.well-known/jwks.json")
            .await
            .json()["keys"]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| k["kid"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(
            kids,
            step.iter()
                .map(|(_, kid)| (*kid).to_owned())
                .collect::<Vec<_>>()
        );
        // A new login (its code exchange authenticates with the assertion)…
        let b = stack.browser();
        b.login("bob", "/").await;
        assert_eq!(
            b.fetch(Method::GET, "/api/echo/y").await.status,
            StatusCode::OK,
            "step {i}"
        );
        // …and a refresh of the session from before: its token is due on the gateway's clock
        // (each step's refresh dated the new token on the clock moved by the step before).
        let (before, _, _) = stack.tokens_of(&alice).await;
        stack
            .gateway
            .clock
            .advance(Duration::from_secs(280 * (i as u64 + 1)));
        let page = alice.fetch(Method::GET, "/api/echo/x").await;
        assert_eq!(page.status, StatusCode::OK, "step {i}: {}", page.body);
        let (after, _, _) = stack.tokens_of(&alice).await;
        assert_ne!(before, after, "step {i}: alice's token was refreshed");
        // (bob's session, due too on the moved clock, may be renewed in the background.)
        let now = stack.provider.grants("refresh_token").await;
        assert!(now > refreshes, "step {i}: refreshed with an assertion");
        refreshes = now;
    }
}

/// `assertion_audience: token_endpoint`, and a pushed authorization request authenticated by
/// an assertion (the form must carry `client_id` once).
#[tokio::test(flavor = "multi_thread")]
async fn assertions_for_the_token_endpoint_also_authenticate_pushed_requests() {
    let dir = tempfile::tempdir().unwrap();
    let keys_yaml = crate::harness::signing_key(dir.path(), sallyport::keys::NewKey::EdDsa, "ed");
    let stack = Stack::start_with(
        |p| {
            jwt_client(p);
            p.client_metadata["token_endpoint_auth_signing_alg"] = json!("EdDSA");
            p.client_metadata["require_pushed_authorization_requests"] = json!(true);
        },
        move |g| {
            g.client_auth = "private_key_jwt";
            g.provider_yaml = "    assertion_audience: token_endpoint\n    par: required".into();
            g.extra_yaml = keys_yaml;
        },
    )
    .await;
    let b = stack.browser();
    let to_provider = b.start_login("return_to=/").await;
    assert!(to_provider.contains("request_uri="), "{to_provider}");
    crate::par::finish(&b, &to_provider).await;
}

/// Token exchange and client credentials authenticate with assertions too (the provider
/// accepts nothing else from this client).
#[tokio::test(flavor = "multi_thread")]
async fn the_brokers_token_requests_authenticate_with_client_assertions() {
    let dir = tempfile::tempdir().unwrap();
    let keys_yaml = crate::harness::signing_key(dir.path(), sallyport::keys::NewKey::Es256, "k1");
    let stack = Stack::start_with(
        |p| {
            crate::broker::broker_provider(p);
            jwt_client(p);
        },
        move |g| {
            crate::broker::broker_gateway(g);
            g.client_auth = "private_key_jwt";
            g.extra_yaml = format!("{}{keys_yaml}", g.extra_yaml);
        },
    )
    .await;
    // Sallyport's own token, for a public route's service.
    let anonymous = stack.browser();
    let page = anonymous
        .fetch(Method::GET, "/api/public-reports/daily")
        .await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    assert_eq!(stack.provider.grants("client_credentials").await, 1);
    // A user's token exchanged for the billing service.
    let b = stack.browser();
    b.login("alice", "/").await;
    let page = b.fetch(Method::GET, "/api/billing/1").await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    assert_eq!(
        stack
            .provider
            .grants("urn:ietf:params:oauth:grant-type:token-exchange")
            .await,
        1
    );
}
