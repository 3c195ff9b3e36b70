//! Logout token validation (OpenID Connect Back-Channel Logout 1.0 §2.6).

use serde::Deserialize;

use super::id_token::{IdTokenError, KeyHint};

/// The Back-Channel Logout event that a logout token's `events` claim must hold.
pub const BACKCHANNEL_LOGOUT_EVENT: &str = "http://schemas.openid.net/event/backchannel-logout";

/// The claims of a logout token.
#[derive(Debug, Deserialize)]
pub struct LogoutClaims {
    /// Issuer.
    pub iss: String,
    /// Audience(s).
    #[serde(deserialize_with = "super::id_token::one_or_many")]
    pub aud: Vec<String>,
    /// Issued at (unix seconds).
    pub iat: i64,
    /// Expiry, when given.
    #[serde(default)]
    pub exp: Option<i64>,
    /// Unique id, for replay detection.
    #[serde(default)]
    pub jti: Option<String>,
    /// The user whose sessions end.
    #[serde(default)]
    pub sub: Option<String>,
    /// The provider session whose sessions end.
    #[serde(default)]
    pub sid: Option<String>,
    /// Must hold the back-channel logout event.
    #[serde(default)]
    pub events: Option<serde_json::Map<String, serde_json::Value>>,
    /// Must be absent (it would make the token usable as an ID token).
    #[serde(default)]
    pub nonce: Option<serde_json::Value>,
}

/// Why a logout token was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum LogoutTokenError {
    /// Signature, algorithm or key problems, as for ID tokens.
    #[error(transparent)]
    Token(#[from] IdTokenError),
    /// `typ` is present and not `logout+jwt`.
    #[error("logout token has another type")]
    WrongType,
    /// `iss` differs from the provider's.
    #[error("logout token issuer mismatch")]
    IssuerMismatch,
    /// `aud` lacks our client id.
    #[error("logout token audience mismatch")]
    AudienceMismatch,
    /// `iat` too far from now, or `exp` passed.
    #[error("logout token outside its time window")]
    Stale,
    /// No back-channel logout event.
    #[error("logout token lacks the back-channel logout event")]
    NoEvent,
    /// Neither `sub` nor `sid`.
    #[error("logout token names neither sub nor sid")]
    NoSubject,
    /// A `nonce` is present.
    #[error("logout token carries a nonce")]
    NonceForbidden,
    /// No `jti`.
    #[error("logout token has no jti")]
    NoId,
    /// This `jti` was seen before.
    #[error("logout token replayed")]
    Replayed,
}

/// How old (or how far in the future) a logout token may be, beyond the clock skew.
pub const MAX_AGE_SECS: i64 = 300;

/// Checks the claims of a signature-verified logout token.
///
/// # Errors
/// The first check that fails, in the order of §2.6.
pub fn check(
    claims: &LogoutClaims,
    hint: &KeyHint,
    issuer: &str,
    client_id: &str,
    now: i64,
    skew: i64,
) -> Result<(), LogoutTokenError> {
    if let Some(typ) = &hint.typ {
        let typ = typ.to_ascii_lowercase();
        if typ != "logout+jwt" && typ != "application/logout+jwt" {
            return Err(LogoutTokenError::WrongType);
        }
    }
    if claims.iss != issuer {
        return Err(LogoutTokenError::IssuerMismatch);
    }
    if !claims.aud.iter().any(|a| a == client_id) {
        return Err(LogoutTokenError::AudienceMismatch);
    }
    if (claims.iat - now).abs() > MAX_AGE_SECS + skew
        || claims.exp.is_some_and(|exp| exp <= now - skew)
    {
        return Err(LogoutTokenError::Stale);
    }
    if !claims
        .events
        .as_ref()
        .is_some_and(|e| e.contains_key(BACKCHANNEL_LOGOUT_EVENT))
    {
        return Err(LogoutTokenError::NoEvent);
    }
    if claims.sub.is_none() && claims.sid.is_none() {
        return Err(LogoutTokenError::NoSubject);
    }
    if claims.nonce.is_some() {
        return Err(LogoutTokenError::NonceForbidden);
    }
    if claims.jti.as_deref().is_none_or(str::is_empty) {
        return Err(LogoutTokenError::NoId);
    }
    Ok(())
}
