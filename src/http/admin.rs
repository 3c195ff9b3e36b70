//! The admin API on `server.admin_listen`, behind `admin.token` (a bearer compared in constant
//! time): a user's sessions (list, end one, end all), readiness details, and reloads.
//!
//! Sessions are found through the same store index as back-channel logout and `sessions
//! revoke`, so an instance sees and ends the sessions every instance on the store made. A
//! session is shown by a handle (a hash of its store key), never by its id or a token.

use std::collections::HashMap;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use http::{HeaderMap, StatusCode, header};
use serde_json::json;
use subtle::ConstantTimeEq as _;

use super::AppState;
use crate::error::{ApiError, ErrorCode};
use crate::session::StoreKey;
use crate::session::revoke::{Owner, SessionInfo};

/// `Ok` for a request with the admin bearer; `404` when no token is configured (the API is
/// off), `401` otherwise.
fn authorized(app: &AppState, headers: &HeaderMap) -> Result<(), ApiError> {
    use sha2::Digest as _;
    let Some(expected) = &app.config.admin_token else {
        return Err(ApiError::new(ErrorCode::NotFound));
    };
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    // Digests of equal length, compared in constant time: neither the token nor its length
    // leaks through timing.
    let same = sha2::Sha256::digest(given.as_bytes())
        .ct_eq(&sha2::Sha256::digest(expected.expose().as_bytes()));
    if bool::from(same) && !given.is_empty() {
        Ok(())
    } else {
        Err(ApiError::new(ErrorCode::NotAuthenticated)
            .with_message("the admin API needs Authorization: Bearer <admin.token>"))
    }
}

/// The user a request is about: `sub`, at `provider` (default: the first).
fn owner(app: &AppState, query: &HashMap<String, String>) -> Result<(String, String), ApiError> {
    let sub = query.get("sub").filter(|s| !s.is_empty()).ok_or_else(|| {
        ApiError::new(ErrorCode::InvalidRequest).with_message("the sub parameter is missing")
    })?;
    let provider = app
        .provider(query.get("provider").map(String::as_str))
        .ok_or_else(|| ApiError::new(ErrorCode::UnknownProvider))?;
    Ok((provider.config().name.clone(), sub.clone()))
}

/// The live sessions of the user the query names, for an authorized request.
async fn sessions_of(
    app: &AppState,
    headers: &HeaderMap,
    query: &HashMap<String, String>,
) -> Result<(String, String, Vec<(StoreKey, SessionInfo)>), ApiError> {
    authorized(app, headers)?;
    let (provider, sub) = owner(app, query)?;
    let sessions = app.sessions.list(&provider, Owner::Subject(&sub)).await?;
    Ok((provider, sub, sessions))
}

/// `GET /admin/sessions?sub=…[&provider=…]`: the user's live sessions.
pub async fn list(
    State(app): State<AppState>,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let (provider, sub, sessions) = sessions_of(&app, &headers, &query).await?;
    let sessions: Vec<SessionInfo> = sessions.into_iter().map(|(_, info)| info).collect();
    Ok(Json(json!({ "sub": sub, "provider": provider, "sessions": sessions })).into_response())
}

/// `DELETE /admin/sessions?sub=…`: ends every session of the user, on every instance.
pub async fn revoke_all(
    State(app): State<AppState>,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    authorized(&app, &headers)?;
    let (provider, sub) = owner(&app, &query)?;
    let ended = app.sessions.revoke(&provider, Owner::Subject(&sub)).await?;
    tracing::info!(provider = %provider, ended, "admin ended a user's sessions");
    Ok(Json(json!({ "ended": ended })).into_response())
}

/// `DELETE /admin/sessions/{handle}?sub=…`: ends one session of the user.
pub async fn revoke_one(
    State(app): State<AppState>,
    headers: HeaderMap,
    Path(handle): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let (provider, _, sessions) = sessions_of(&app, &headers, &query).await?;
    let found = sessions.into_iter().find(|(_, info)| info.handle == handle);
    let Some((key, _)) = found else {
        return Err(ApiError::new(ErrorCode::NotFound).with_message("no such session of this user"));
    };
    app.sessions.delete(&key).await?;
    tracing::info!(provider = %provider, "admin ended a session");
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `GET /admin/ready`: what `/auth/ready` says, in detail: each provider (discovery loaded,
/// registered), the store (answers, and how fast), each decision point (answers).
pub async fn ready(State(app): State<AppState>, headers: HeaderMap) -> Result<Response, ApiError> {
    authorized(&app, &headers)?;
    let providers: serde_json::Map<String, serde_json::Value> = app
        .providers
        .iter()
        .map(|p| {
            let cfg = p.config();
            (
                cfg.name.clone(),
                json!({
                    "ready": p.is_ready(),
                    "issuer": cfg.issuer,
                    "client_id_known": cfg.client_id.is_known(),
                    "registration": cfg.registration.is_some(),
                }),
            )
        })
        .collect();
    let started = std::time::Instant::now();
    let store = app.sessions.store().ping().await;
    let store = json!({
        "ready": store.is_ok(),
        "ms": started.elapsed().as_secs_f64() * 1000.0,
        "kind": app.config.session.store.kind(),
    });
    let pdps = app.authz.probe().await;
    let ready = store["ready"] == true
        && providers.values().all(|p| p["ready"] == true)
        && pdps.values().all(|p| p["ready"] == true);
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    Ok((
        status,
        Json(json!({ "ready": ready, "providers": providers, "store": store, "pdps": pdps })),
    )
        .into_response())
}

/// `POST /admin/reload`: re-reads the configuration file, as `SIGHUP` does, and answers when
/// the new configuration serves (`200` with what needs a restart) or was refused (`422
/// invalid_config` with every problem; the running configuration stays).
pub async fn reload(State(app): State<AppState>, headers: HeaderMap) -> Result<Response, ApiError> {
    authorized(&app, &headers)?;
    match app.reloads.ask().await {
        None => Err(ApiError::new(ErrorCode::NotFound)
            .with_message("this gateway was not started from a configuration file")),
        Some(Ok(report)) => Ok(Json(json!({ "reloaded": true, "report": report })).into_response()),
        Some(Err(refused)) => {
            Err(ApiError::new(ErrorCode::InvalidConfig).with_field("problems", json!(refused.0)))
        }
    }
}
