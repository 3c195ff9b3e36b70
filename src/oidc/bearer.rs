//! Bearer JWTs that machine clients send themselves (`auth: session_or_bearer` routes): checked
//! against the provider's JWKS with the same key choice and algorithm allow-list as ID tokens.

use serde::Deserialize;

use super::id_token::IdTokenError;

/// The claims Sallyport reads from a client's bearer JWT.
#[derive(Debug, Deserialize)]
pub struct BearerClaims {
    /// Issuer.
    pub iss: String,
    /// Audience(s).
    #[serde(default, deserialize_with = "super::id_token::one_or_many")]
    pub aud: Vec<String>,
    /// Expiry (required).
    pub exp: i64,
    /// Not before.
    #[serde(default)]
    pub nbf: Option<i64>,
    /// The client or user the token stands for.
    #[serde(default)]
    pub sub: Option<String>,
    /// Present in ID tokens, never in access tokens.
    #[serde(default)]
    pub nonce: Option<serde_json::Value>,
}

/// Why a bearer token was refused (all of them answer `401 invalid_token`).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BearerError {
    /// Signature, algorithm or key problems.
    #[error(transparent)]
    Token(#[from] IdTokenError),
    /// Issued by no configured provider.
    #[error("bearer token from an unknown issuer")]
    UnknownIssuer,
    /// Names none of the configured audiences.
    #[error("bearer token audience mismatch")]
    AudienceMismatch,
    /// Expired, or not yet valid.
    #[error("bearer token outside its validity")]
    NotValidNow,
    /// An ID token (it carries a nonce) offered as an API token.
    #[error("an ID token is not an access token")]
    IdToken,
}

/// Checks the claims of a signature-verified bearer token.
///
/// # Errors
/// The first check that fails.
pub fn check(
    claims: &BearerClaims,
    issuer: &str,
    audiences: &[String],
    now: i64,
    skew: i64,
) -> Result<(), BearerError> {
    if claims.iss != issuer {
        return Err(BearerError::UnknownIssuer);
    }
    if !claims.aud.iter().any(|a| audiences.contains(a)) {
        return Err(BearerError::AudienceMismatch);
    }
    if claims.exp <= now - skew || claims.nbf.is_some_and(|nbf| nbf > now + skew) {
        return Err(BearerError::NotValidNow);
    }
    if claims.nonce.is_some() {
        return Err(BearerError::IdToken);
    }
    Ok(())
}
