use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair};
use jsonwebtoken::{EncodingKey, Header};
use serde_json::json;

use super::*;

const NOW: i64 = 1_800_000_000;

struct TestKey {
    enc: EncodingKey,
    jwk: Jwk,
}

fn key(kid: &str) -> TestKey {
    let pair = EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING).unwrap();
    let enc = EncodingKey::from_ec_der(pair.to_pkcs8v1().unwrap().as_ref());
    let mut jwk = Jwk::from_encoding_key(&enc, Algorithm::ES256).unwrap();
    jwk.common.key_id = Some(kid.to_owned());
    TestKey { enc, jwk }
}

fn claims() -> serde_json::Value {
    json!({
        "iss": "https://idp.example", "sub": "alice", "aud": "app",
        "exp": NOW + 300, "iat": NOW - 5, "nonce": "n-1", "name": "Alice",
    })
}

fn sign(k: &TestKey, kid: &str, claims: &serde_json::Value) -> String {
    let mut header = Header::new(Algorithm::ES256);
    header.kid = Some(kid.to_owned());
    jsonwebtoken::encode(&header, claims, &k.enc).unwrap()
}

fn expect() -> Expectations<'static> {
    Expectations {
        issuer: "https://idp.example",
        client_id: "app",
        nonce: Some("n-1"),
        access_token: None,
        algorithms: &[Algorithm::ES256, Algorithm::RS256],
        now: NOW,
        skew: 60,
        not_issued_before: NOW - 30,
    }
}

fn check(
    token: &str,
    keys: &[Jwk],
    expect: &Expectations<'_>,
) -> Result<IdTokenClaims, IdTokenError> {
    let hint = key_hint(token, expect.algorithms)?;
    let key = select_key(keys, &hint).ok_or(IdTokenError::UnknownKey)?;
    verify(token, key, &hint, expect)
}

fn with(field: &str, value: serde_json::Value) -> serde_json::Value {
    let mut c = claims();
    c[field] = value;
    c
}

#[test]
fn a_valid_token_passes_and_keeps_profile_claims() {
    let k = key("k1");
    let c = check(
        &sign(&k, "k1", &claims()),
        std::slice::from_ref(&k.jwk),
        &expect(),
    )
    .unwrap();
    assert_eq!(c.sub, "alice");
    assert_eq!(c.other["name"], "Alice");
}

#[test]
fn a_signature_by_another_key_is_refused() {
    let (good, evil) = (key("k1"), key("k1"));
    let token = sign(&evil, "k1", &claims());
    assert_eq!(
        check(&token, &[good.jwk], &expect()).unwrap_err(),
        IdTokenError::BadSignature
    );
}

#[test]
fn alg_none_and_symmetric_algorithms_are_refused() {
    let b64 = |v: serde_json::Value| URL_SAFE_NO_PAD.encode(v.to_string());
    let none = format!(
        "{}.{}.",
        b64(json!({"alg": "none", "kid": "k1"})),
        b64(claims())
    );
    assert_eq!(
        key_hint(&none, expect().algorithms).unwrap_err(),
        IdTokenError::AlgorithmNotAllowed
    );
    let hs = jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims(),
        &EncodingKey::from_secret(b"client-secret"),
    )
    .unwrap();
    assert_eq!(
        key_hint(&hs, expect().algorithms).unwrap_err(),
        IdTokenError::AlgorithmNotAllowed
    );
    assert_eq!(
        key_hint("not.a-jwt", expect().algorithms).unwrap_err(),
        IdTokenError::Malformed
    );
}

#[test]
fn keys_are_chosen_by_kid_and_type() {
    let (k1, k2) = (key("k1"), key("k2"));
    let keys = [k1.jwk.clone(), k2.jwk.clone()];
    let hint = |kid: Option<&str>, alg| KeyHint {
        typ: None,
        kid: kid.map(str::to_owned),
        alg,
    };
    assert_eq!(
        select_key(&keys, &hint(Some("k2"), Algorithm::ES256)),
        Some(&k2.jwk)
    );
    assert_eq!(
        select_key(&keys, &hint(Some("k3"), Algorithm::ES256)),
        None,
        "unknown kid"
    );
    assert_eq!(
        select_key(&keys, &hint(Some("k1"), Algorithm::RS256)),
        None,
        "an EC key never verifies RS256"
    );
    assert_eq!(
        select_key(&keys, &hint(None, Algorithm::ES256)),
        None,
        "no kid and two keys is ambiguous"
    );
    assert_eq!(
        select_key(&keys[..1], &hint(None, Algorithm::ES256)),
        Some(&k1.jwk)
    );
}

#[test]
fn each_claim_is_checked() {
    let k = key("k1");
    let keys = [k.jwk.clone()];
    let cases = [
        (
            with("iss", json!("https://evil.example")),
            IdTokenError::IssuerMismatch,
        ),
        (
            with("aud", json!("other-app")),
            IdTokenError::AudienceMismatch,
        ),
        (
            with("aud", json!(["app", "other"])),
            IdTokenError::AuthorizedPartyMismatch,
        ),
        (
            with("azp", json!("other")),
            IdTokenError::AuthorizedPartyMismatch,
        ),
        (with("exp", json!(NOW - 61)), IdTokenError::Expired),
        (with("iat", json!(NOW + 120)), IdTokenError::IssuedAtInvalid),
        (
            with("iat", json!(NOW - 3600)),
            IdTokenError::IssuedAtInvalid,
        ),
        (with("nonce", json!("n-2")), IdTokenError::NonceMismatch),
        (with("nonce", json!(null)), IdTokenError::NonceMismatch),
    ];
    for (claims, expected) in cases {
        let result = check(&sign(&k, "k1", &claims), &keys, &expect());
        assert_eq!(result.err(), Some(expected), "{claims}");
    }
    let mut multi = with("aud", json!(["app", "other"]));
    multi["azp"] = json!("app");
    check(&sign(&k, "k1", &multi), &keys, &expect()).expect("several audiences with azp = us pass");
    let no_nonce = Expectations {
        nonce: None,
        ..expect()
    };
    check(
        &sign(&k, "k1", &with("nonce", json!(null))),
        &keys,
        &no_nonce,
    )
    .expect("refreshed tokens need no nonce");
}

#[test]
fn at_hash_binds_the_access_token() {
    let k = key("k1");
    // OIDC Core: left half of SHA-256 of the access token.
    let digest = sha2::Sha256::digest(b"the-access-token");
    let token = sign(
        &k,
        "k1",
        &with("at_hash", json!(URL_SAFE_NO_PAD.encode(&digest[..16]))),
    );
    let e = Expectations {
        access_token: Some("the-access-token"),
        ..expect()
    };
    check(&token, std::slice::from_ref(&k.jwk), &e).unwrap();
    let e = Expectations {
        access_token: Some("another-token"),
        ..expect()
    };
    assert_eq!(
        check(&token, &[k.jwk], &e).unwrap_err(),
        IdTokenError::AccessTokenHashMismatch
    );
}
