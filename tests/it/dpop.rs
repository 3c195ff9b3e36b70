//! DPoP (RFC 9449) against the real provider: the session's tokens are bound to a key of the
//! session's own, and a resource server that checks proofs (jose, in the test provider, with
//! the binding from the provider's token store) accepts Sallyport's requests and nothing a
//! thief of the access token can make.

use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::harness::browser::Browser;
use crate::login::Stack;

/// A stack whose provider binds tokens (`dpop: true`), with `/api/dpop/*` going to the
/// provider's DPoP resource server as a `dpop: true` service; `provider_config` is the test
/// provider's.
async fn stack(provider_config: serde_json::Value) -> Stack {
    Stack::start_with(
        |p| {
            p.config = provider_config;
            p.access_token_ttl = 120;
        },
        |g| {
            g.provider_yaml = "    dpop: true".into();
            g.services_yaml = format!(
                "  dpop_api:\n    url: {}/__test/dpop-api\n    token: user\n    dpop: true\n",
                g.issuer
            );
            g.extra_yaml =
                "  - path: /api/dpop/*\n    service: dpop_api\n    upstream_path: /*\n".into();
        },
    )
    .await
}

/// A DPoP-checking API call through Sallyport; its answer.
async fn call(b: &Browser, method: Method, path: &str) -> serde_json::Value {
    let page = if method == Method::GET {
        b.fetch(method, path).await
    } else {
        let csrf = b.csrf_token().await;
        b.fetch_with(method, path, &[("x-csrf-token", &csrf)]).await
    };
    assert_eq!(page.status, StatusCode::OK, "{path}: {}", page.body);
    page.json()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_sessions_tokens_are_bound_to_its_key_and_each_api_request_carries_a_proof() {
    let stack = stack(json!({})).await;
    let b = stack.browser();
    b.login("alice", "/").await;
    let record = stack.record_of(&b).await;
    let jkt = record
        .dpop_key
        .as_ref()
        .expect("a key per session")
        .thumbprint();

    let answer = call(&b, Method::GET, "/api/dpop/orders?page=2").await;
    assert_eq!(answer["sub"], "alice");
    assert_eq!(answer["jkt"], jkt, "bound to the session's key");
    assert_eq!(
        answer["htu"],
        format!("{}/__test/dpop-api/orders", stack.provider.issuer)
    );
    // Another request, another method: a proof of its own (the server refuses a reused jti).
    assert_eq!(call(&b, Method::POST, "/api/dpop/orders").await["jkt"], jkt);
    assert_eq!(call(&b, Method::GET, "/api/dpop/orders").await["jkt"], jkt);

    // Another login, another key.
    let bob = Browser::with_local_address(&stack.gateway.url, "127.0.0.2");
    bob.login("bob", "/").await;
    let bobs = call(&bob, Method::GET, "/api/dpop/x").await;
    assert_eq!(bobs["sub"], "bob");
    assert_ne!(bobs["jkt"], jkt);

    // The access token alone is useless: as a bearer, or with a proof of another key.
    let (access_token, _, _) = stack.tokens_of(&b).await;
    let api = format!("{}/__test/dpop-api/orders", stack.provider.issuer);
    let http = reqwest::Client::new();
    let stolen = http
        .get(&api)
        .header("authorization", format!("Bearer {access_token}"))
        .send()
        .await
        .unwrap();
    assert_eq!(stolen.status(), StatusCode::UNAUTHORIZED);
    let thief = sallyport::oidc::dpop::DpopKey::generate();
    let proof = thief.proof(
        "GET",
        &api,
        Some(&access_token),
        None,
        sallyport::oidc::dpop::now(),
    );
    let forged = http
        .get(&api)
        .header("authorization", format!("DPoP {access_token}"))
        .header("dpop", proof)
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), StatusCode::UNAUTHORIZED);
    let reason: serde_json::Value = forged.json().await.unwrap();
    assert_eq!(
        reason["reason"],
        "the proof key is not the key the token is bound to"
    );

    // The browser's own DPoP header never reaches an upstream, and other services get the
    // token as before (a plain bearer to a service that does not check the binding).
    let page = b
        .fetch_with(Method::GET, "/api/echo/x", &[("dpop", "forged")])
        .await;
    assert_eq!(page.status, StatusCode::OK);
    let headers = &page.json()["headers"];
    assert!(headers.get("dpop").is_none(), "{headers}");
    assert_eq!(
        headers["authorization"][0],
        crate::harness::upstream::fingerprint(&access_token)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn refreshed_tokens_stay_bound_to_the_same_key_with_server_nonces() {
    // The provider wants a nonce in every proof: the code exchange, userinfo and each refresh
    // learn it from the `use_dpop_nonce` answer and try once more.
    let stack = stack(json!({ "dpop_nonce": true })).await;
    let b = stack.browser();
    b.login("alice", "/").await;
    let jkt = stack
        .record_of(&b)
        .await
        .dpop_key
        .as_ref()
        .unwrap()
        .thumbprint();
    assert_eq!(call(&b, Method::GET, "/api/dpop/a").await["jkt"], jkt);
    let (before, _, _) = stack.tokens_of(&b).await;

    // Past the token's lifetime: the next request refreshes first.
    stack
        .gateway
        .clock
        .advance(std::time::Duration::from_secs(100));
    let answer = call(&b, Method::GET, "/api/dpop/b").await;
    let (after, _, _) = stack.tokens_of(&b).await;
    assert_ne!(before, after, "refreshed");
    assert!(stack.provider.grants("refresh_token").await >= 1);
    assert_eq!(answer["jkt"], jkt, "the new token is bound to the same key");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_provider_that_does_not_bind_the_tokens_fails_the_login() {
    let stack = stack(json!({ "dpop": false })).await;
    let b = stack.browser();
    let to_provider = b.start_login("return_to=/").await;
    let callback = b.through_provider(&to_provider, "alice").await;
    let page = b.get(&callback).await;
    assert_eq!(page.status, StatusCode::BAD_REQUEST, "{}", page.body);
    assert!(page.body.contains("token_exchange_failed"), "{}", page.body);
    assert!(
        b.cookie("sallyport").is_none(),
        "no session with unbound tokens"
    );
}
