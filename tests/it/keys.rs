//! Sallyport's own keys: `private_key_jwt` against the real provider, which fetches the
//! client's JWKS from Sallyport's `/.well-known/jwks.json`; the JWKS holds public parts only.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::login::Stack;

#[tokio::test(flavor = "multi_thread")]
async fn logins_and_refreshes_authenticate_with_a_client_assertion_verified_by_the_published_jwks()
{
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("sallyport.pem");
    std::fs::write(
        &key,
        sallyport::keys::generate(sallyport::keys::NewKey::Es256).unwrap(),
    )
    .unwrap();
    let keys_yaml = format!(
        "signing_keys:\n  - {{ file: {}, kid: k1 }}\n",
        key.display()
    );
    let stack = Stack::start_with(
        |p| {
            p.token_endpoint_auth_method = "private_key_jwt";
            p.client_metadata = json!({
                "jwks_uri": format!("http://localhost:{}/.well-known/jwks.json", p.gateway_port),
                "token_endpoint_auth_signing_alg": "ES256",
            });
        },
        move |g| {
            g.client_auth = "private_key_jwt";
            g.extra_yaml = keys_yaml;
        },
    )
    .await;

    // The JWKS: the key's public part, cacheable, nothing private.
    let jwks = stack
        .browser()
        .fetch(Method::GET, "/.well-known/jwks.json")
        .await;
    assert_eq!(jwks.status, StatusCode::OK);
    assert_eq!(jwks.header("cache-control"), Some("public, max-age=300"));
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
}
