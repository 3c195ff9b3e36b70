//! ID token validation (OIDC Core §3.1.3.7, and §12.2 for tokens from a refresh).
//!
//! jsonwebtoken checks the signature; every claim check is ours, against the injectable clock,
//! so each failure has its own stable reason.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, KeyAlgorithm};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use sha2::Digest;
use subtle::ConstantTimeEq;

/// The claims Sallyport reads from an ID token; the rest stay in `other`.
#[derive(Debug, Clone, Deserialize)]
pub struct IdTokenClaims {
    /// Issuer.
    pub iss: String,
    /// Subject.
    pub sub: String,
    /// Audience(s).
    #[serde(deserialize_with = "one_or_many")]
    pub aud: Vec<String>,
    /// Expiry (unix seconds).
    pub exp: i64,
    /// Issued at (unix seconds).
    pub iat: i64,
    /// Login nonce.
    #[serde(default)]
    pub nonce: Option<String>,
    /// Authorized party.
    #[serde(default)]
    pub azp: Option<String>,
    /// Access token hash.
    #[serde(default)]
    pub at_hash: Option<String>,
    /// The provider's session id.
    #[serde(default)]
    pub sid: Option<String>,
    /// Every other claim (profile, email, roles…).
    #[serde(flatten)]
    pub other: serde_json::Map<String, serde_json::Value>,
}

pub(crate) fn one_or_many<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    Ok(match OneOrMany::deserialize(d)? {
        OneOrMany::One(s) => vec![s],
        OneOrMany::Many(v) => v,
    })
}

/// Why an ID token was refused. The names are the stable reasons logged with the error.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum IdTokenError {
    /// Not a JWS compact serialisation with JSON header and claims.
    #[error("malformed ID token")]
    Malformed,
    /// `alg` is `none`, symmetric, unknown, or not in the allow-list.
    #[error("ID token algorithm not allowed")]
    AlgorithmNotAllowed,
    /// No JWKS key matches `kid` and `alg`, even after re-fetching the JWKS.
    #[error("no provider key matches the ID token's kid")]
    UnknownKey,
    /// The signature does not verify.
    #[error("ID token signature invalid")]
    BadSignature,
    /// `iss` differs from the configured issuer.
    #[error("ID token issuer mismatch")]
    IssuerMismatch,
    /// `aud` lacks our client id.
    #[error("ID token audience mismatch")]
    AudienceMismatch,
    /// `azp` is present (or required by several audiences) and is not our client id.
    #[error("ID token authorized party mismatch")]
    AuthorizedPartyMismatch,
    /// `exp` has passed.
    #[error("ID token expired")]
    Expired,
    /// `iat` is in the future, or before the login started.
    #[error("ID token issued at an implausible time")]
    IssuedAtInvalid,
    /// `nonce` is missing or differs from the login's.
    #[error("ID token nonce mismatch")]
    NonceMismatch,
    /// `at_hash` does not match the access token.
    #[error("ID token at_hash mismatch")]
    AccessTokenHashMismatch,
    /// A refreshed ID token names another subject.
    #[error("refreshed ID token has another subject")]
    SubjectChanged,
}

/// What a token must match.
#[derive(Debug)]
pub struct Expectations<'a> {
    /// The configured issuer, compared exactly.
    pub issuer: &'a str,
    /// Our client id.
    pub client_id: &'a str,
    /// The login's nonce; `None` for tokens from a refresh (OIDC Core §12.2).
    pub nonce: Option<&'a str>,
    /// The access token issued alongside, for `at_hash`.
    pub access_token: Option<&'a str>,
    /// Allowed algorithms.
    pub algorithms: &'a [Algorithm],
    /// Now, in unix seconds.
    pub now: i64,
    /// Allowed clock difference, seconds.
    pub skew: i64,
    /// `iat` may not be earlier than this (the login's start), minus skew.
    pub not_issued_before: i64,
}

/// The header fields needed to pick a key.
#[derive(Debug)]
pub struct KeyHint {
    /// Key id, when the token names one.
    pub kid: Option<String>,
    /// Signature algorithm (already checked against the allow-list).
    pub alg: Algorithm,
    /// The `typ` header, when present.
    pub typ: Option<String>,
}

/// Reads the header and checks the algorithm against the allow-list.
///
/// # Errors
/// [`IdTokenError::Malformed`] or [`IdTokenError::AlgorithmNotAllowed`] (`none` never passes:
/// jsonwebtoken has no such algorithm, so its header fails to parse as any allowed one).
pub fn key_hint(token: &str, allowed: &[Algorithm]) -> Result<KeyHint, IdTokenError> {
    if token.split('.').count() != 3 {
        return Err(IdTokenError::Malformed);
    }
    let header = match jsonwebtoken::decode_header(token) {
        Ok(h) => h,
        Err(e) => {
            return Err(match e.kind() {
                jsonwebtoken::errors::ErrorKind::Json(_) => {
                    // Distinguish an unknown `alg` (e.g. "none") from a broken header.
                    let raw = token.split('.').next().unwrap_or("");
                    let alg = URL_SAFE_NO_PAD
                        .decode(raw)
                        .ok()
                        .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
                        .and_then(|v| v.get("alg").cloned());
                    if alg.is_some() {
                        IdTokenError::AlgorithmNotAllowed
                    } else {
                        IdTokenError::Malformed
                    }
                }
                _ => IdTokenError::Malformed,
            });
        }
    };
    if !allowed.contains(&header.alg) {
        return Err(IdTokenError::AlgorithmNotAllowed);
    }
    Ok(KeyHint {
        kid: header.kid,
        alg: header.alg,
        typ: header.typ,
    })
}

/// Picks the key for `hint` from a JWKS: by `kid` when given, and always of a type that fits
/// the algorithm (so a token cannot choose an RSA key for an EC algorithm, or the reverse).
pub fn select_key<'a>(keys: &'a [Jwk], hint: &KeyHint) -> Option<&'a Jwk> {
    let mut fitting = keys.iter().filter(|k| key_fits(k, hint.alg));
    match &hint.kid {
        Some(kid) => fitting.find(|k| k.common.key_id.as_deref() == Some(kid)),
        None => {
            let first = fitting.next()?;
            // Without a kid, only an unambiguous key may be used.
            fitting.next().is_none().then_some(first)
        }
    }
}

fn key_fits(key: &Jwk, alg: Algorithm) -> bool {
    if let Some(declared) = &key.common.key_algorithm {
        let matches = matches!(
            (declared, alg),
            (KeyAlgorithm::RS256, Algorithm::RS256)
                | (KeyAlgorithm::RS384, Algorithm::RS384)
                | (KeyAlgorithm::RS512, Algorithm::RS512)
                | (KeyAlgorithm::PS256, Algorithm::PS256)
                | (KeyAlgorithm::PS384, Algorithm::PS384)
                | (KeyAlgorithm::PS512, Algorithm::PS512)
                | (KeyAlgorithm::ES256, Algorithm::ES256)
                | (KeyAlgorithm::ES384, Algorithm::ES384)
                | (KeyAlgorithm::EdDSA, Algorithm::EdDSA)
        );
        if !matches {
            return false;
        }
    }
    if key
        .common
        .public_key_use
        .as_ref()
        .is_some_and(|u| *u != jsonwebtoken::jwk::PublicKeyUse::Signature)
    {
        return false;
    }
    match (&key.algorithm, alg) {
        (AlgorithmParameters::RSA(_), Algorithm::RS256 | Algorithm::RS384 | Algorithm::RS512)
        | (AlgorithmParameters::RSA(_), Algorithm::PS256 | Algorithm::PS384 | Algorithm::PS512) => {
            true
        }
        (AlgorithmParameters::EllipticCurve(p), Algorithm::ES256) => p.curve == EllipticCurve::P256,
        (AlgorithmParameters::EllipticCurve(p), Algorithm::ES384) => p.curve == EllipticCurve::P384,
        (AlgorithmParameters::OctetKeyPair(_), Algorithm::EdDSA) => true,
        _ => false,
    }
}

/// Verifies the signature with `key` and checks every claim.
///
/// # Errors
/// The first check that fails, in the order of OIDC Core §3.1.3.7.
pub fn verify(
    token: &str,
    key: &Jwk,
    hint: &KeyHint,
    expect: &Expectations<'_>,
) -> Result<IdTokenClaims, IdTokenError> {
    check(decode(token, key, hint)?, hint, expect)
}

/// Verifies the signature with `key` and decodes the claims (checks none of them).
///
/// # Errors
/// A bad signature, or claims that do not parse as `T`.
pub fn decode<T: serde::de::DeserializeOwned>(
    token: &str,
    key: &Jwk,
    hint: &KeyHint,
) -> Result<T, IdTokenError> {
    let decoding_key = DecodingKey::from_jwk(key).map_err(|_| IdTokenError::UnknownKey)?;
    let mut validation = Validation::new(hint.alg);
    validation.validate_exp = false;
    validation.validate_nbf = false;
    validation.validate_aud = false;
    validation.required_spec_claims.clear();
    let data = jsonwebtoken::decode::<T>(token, &decoding_key, &validation).map_err(|e| match e
        .kind()
    {
        jsonwebtoken::errors::ErrorKind::InvalidSignature => IdTokenError::BadSignature,
        jsonwebtoken::errors::ErrorKind::InvalidAlgorithm => IdTokenError::AlgorithmNotAllowed,
        _ => IdTokenError::Malformed,
    })?;
    Ok(data.claims)
}

/// Checks the claims of a signature-verified ID token.
///
/// # Errors
/// The first check that fails, in the order of OIDC Core §3.1.3.7.
pub fn check(
    claims: IdTokenClaims,
    hint: &KeyHint,
    expect: &Expectations<'_>,
) -> Result<IdTokenClaims, IdTokenError> {
    if claims.iss != expect.issuer {
        return Err(IdTokenError::IssuerMismatch);
    }
    if !claims.aud.iter().any(|a| a == expect.client_id) {
        return Err(IdTokenError::AudienceMismatch);
    }
    if (claims.aud.len() > 1 || claims.azp.is_some())
        && claims.azp.as_deref() != Some(expect.client_id)
    {
        return Err(IdTokenError::AuthorizedPartyMismatch);
    }
    if claims.exp <= expect.now - expect.skew {
        return Err(IdTokenError::Expired);
    }
    if claims.iat > expect.now + expect.skew || claims.iat < expect.not_issued_before - expect.skew
    {
        return Err(IdTokenError::IssuedAtInvalid);
    }
    if let Some(expected) = expect.nonce {
        let ok = claims
            .nonce
            .as_deref()
            .is_some_and(|n| n.as_bytes().ct_eq(expected.as_bytes()).into());
        if !ok {
            return Err(IdTokenError::NonceMismatch);
        }
    }
    if let (Some(at_hash), Some(access_token)) = (&claims.at_hash, expect.access_token)
        && !at_hash_matches(at_hash, access_token, hint.alg)
    {
        return Err(IdTokenError::AccessTokenHashMismatch);
    }
    Ok(claims)
}

/// OIDC Core §3.1.3.6: the left half of the hash of the access token, base64url.
fn at_hash_matches(at_hash: &str, access_token: &str, alg: Algorithm) -> bool {
    let digest: Vec<u8> = match alg {
        Algorithm::RS384 | Algorithm::PS384 | Algorithm::ES384 => {
            sha2::Sha384::digest(access_token).to_vec()
        }
        Algorithm::RS512 | Algorithm::PS512 | Algorithm::EdDSA => {
            sha2::Sha512::digest(access_token).to_vec()
        }
        _ => sha2::Sha256::digest(access_token).to_vec(),
    };
    URL_SAFE_NO_PAD.encode(&digest[..digest.len() / 2]) == at_hash
}

#[cfg(test)]
mod tests;
