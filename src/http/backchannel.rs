//! `POST /auth/backchannel-logout`: OpenID Connect Back-Channel Logout 1.0. The provider posts a
//! signed logout token; every session it names ends, on every instance sharing the store.

use axum::body::Bytes;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use http::{HeaderValue, StatusCode, header};

use super::AppState;
use crate::error::{ApiError, ErrorCode};
use crate::oidc::logout_token::{LogoutTokenError, MAX_AGE_SECS};
use crate::session::revoke::Owner;
use crate::session::{StoreKey, from_unix};

fn refused(reason: impl std::error::Error + Send + Sync + 'static) -> ApiError {
    // §2.8: a refused logout token gets 400 with `invalid_request`.
    ApiError::new(ErrorCode::InvalidRequest)
        .with_message("the logout token was refused")
        .with_cause(reason)
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct Malformed(&'static str);

/// The handler.
pub async fn backchannel_logout(
    State(app): State<AppState>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let token = url::form_urlencoded::parse(&body)
        .find(|(k, _)| k == "logout_token")
        .map(|(_, v)| v.into_owned())
        .ok_or_else(|| refused(Malformed("no logout_token form field")))?;
    let issuer = crate::oidc::unverified_issuer(&token)
        .ok_or_else(|| refused(Malformed("logout token unreadable")))?;
    let provider = app
        .providers
        .iter()
        .find(|p| p.config().issuer == issuer)
        .ok_or_else(|| refused(LogoutTokenError::IssuerMismatch))?;
    let now = app.sessions.clock().unix() as i64;
    let claims = provider
        .validate_logout_token(&token, now)
        .await
        .map_err(|e| match e {
            Ok(reason) => refused(reason),
            Err(unavailable) => ApiError::provider_unavailable(unavailable),
        })?;
    let jti = claims.jti.as_deref().unwrap_or_default();
    let marker = StoreKey::hash(format!("jti\0{issuer}\0{jti}").as_bytes());
    let keep_until =
        from_unix((now + MAX_AGE_SECS * 2).max(0) as u64 + provider.config().clock_skew.as_secs());
    // Refuse a replay, but mark the jti used only once its sessions are ended: a store that
    // fails half-way must leave the provider's retry of the same token acceptable.
    if app.sessions.store().is_used(&marker).await? {
        return Err(refused(LogoutTokenError::Replayed));
    }
    let name = &provider.config().name;
    let ended = match (&claims.sid, &claims.sub) {
        // A sid names one provider session: end only the sessions made from it.
        (Some(sid), _) => {
            app.sessions
                .revoke(name, Owner::ProviderSession(sid))
                .await?
        }
        (None, Some(sub)) => app.sessions.revoke(name, Owner::Subject(sub)).await?,
        (None, None) => return Err(refused(LogoutTokenError::NoSubject)),
    };
    // Two deliveries racing past the check above both end the same sessions: harmless.
    if !app.sessions.store().first_use(&marker, keep_until).await? {
        tracing::debug!(provider = %name, "back-channel logout delivered twice at once");
    }
    tracing::info!(provider = %name, ended, by_sid = claims.sid.is_some(), "back-channel logout");
    let mut resp = StatusCode::OK.into_response();
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(resp)
}
