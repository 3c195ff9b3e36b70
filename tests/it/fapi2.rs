//! `profile: fapi2` against the real provider set up as a FAPI 2.0 client asks: the whole login
//! and API path with PAR, `private_key_jwt`, DPoP-bound tokens and an ES256 ID token.

use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::login::Stack;

#[tokio::test(flavor = "multi_thread")]
async fn a_fapi2_provider_logs_in_with_par_private_key_jwt_and_dpop() {
    let dir = tempfile::tempdir().unwrap();
    let keys_yaml = crate::harness::signing_key(dir.path(), sallyport::keys::NewKey::Es256, "k1");
    let stack = Stack::start_with(
        |p| {
            crate::keys::jwt_client(p);
            // The provider holds the client to it: only pushed requests, only bound tokens,
            // an ES256 ID token (the test provider's keys sign RS256 or ES256).
            p.client_metadata["require_pushed_authorization_requests"] = json!(true);
            p.client_metadata["dpop_bound_access_tokens"] = json!(true);
            p.client_metadata["id_token_signed_response_alg"] = json!("ES256");
        },
        move |g| {
            // Only the profile: it sets client_auth, par and dpop itself.
            g.client_auth = "private_key_jwt";
            g.provider_yaml = "    profile: fapi2".into();
            g.extra_yaml = keys_yaml;
        },
    )
    .await;
    let b = stack.browser();
    let to_provider = b.start_login("return_to=/").await;
    let url = reqwest::Url::parse(&to_provider).unwrap();
    let mut keys: Vec<String> = url.query_pairs().map(|(k, _)| k.into_owned()).collect();
    keys.sort();
    assert_eq!(keys, ["client_id", "request_uri"], "{to_provider}");
    let callback = b.through_provider(&to_provider, "alice").await;
    assert!(callback.contains("iss="), "RFC 9207: {callback}");
    // The same response without `iss` is refused (a mix-up attack would look like this).
    let stripped = {
        let mut u = reqwest::Url::parse(&callback).unwrap();
        let kept: Vec<(String, String)> = u
            .query_pairs()
            .filter(|(k, _)| k != "iss")
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
        u.query_pairs_mut().clear().extend_pairs(kept);
        u.to_string()
    };
    let refused = b.get(&stripped).await;
    assert_eq!(refused.status, StatusCode::BAD_REQUEST, "{}", refused.body);
    assert!(refused.body.contains("invalid_issuer"), "{}", refused.body);

    // A new login, completed.
    let to_provider = b.start_login("return_to=/").await;
    let callback = b.through_provider(&to_provider, "alice").await;
    let page = b.get(&callback).await;
    assert_eq!(page.status, StatusCode::FOUND, "{}", page.body);
    let record = stack.record_of(&b).await;
    assert!(
        record.dpop_key.is_some(),
        "tokens bound to the session's key"
    );
    let header = jsonwebtoken::decode_header(record.id_token.expose()).unwrap();
    assert_eq!(header.alg, jsonwebtoken::Algorithm::ES256);
    assert_eq!(
        b.fetch(Method::GET, "/api/auth/session").await.json()["user"]["sub"],
        "alice"
    );
}
