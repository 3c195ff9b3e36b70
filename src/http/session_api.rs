//! `/api/auth/session` (who is logged in, for the SPA) and the health endpoints.

use axum::Json;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use http::{HeaderMap, HeaderValue, StatusCode, header};
use serde_json::json;

use super::AppState;
use crate::error::ApiError;
use crate::session::cookie;
use crate::session::manager::Lookup;

fn no_store(mut resp: Response) -> Response {
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

/// `GET /api/auth/session`: the user and the CSRF token, never a token.
pub async fn session(
    State(app): State<AppState>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let lookup = app.sessions.lookup(&headers).await?;
    let resp = match lookup {
        Lookup::Found(s) => Json(json!({
            "authenticated": true,
            "user": s.record.claims,
            "expires_at": s.record.expires_at,
            "csrf_token": s.record.csrf_token,
        }))
        .into_response(),
        other => {
            let mut resp = (
                StatusCode::UNAUTHORIZED,
                Json(json!({ "authenticated": false, "login_url": "/auth/login" })),
            )
                .into_response();
            if matches!(other, Lookup::Ended) {
                let c = app.sessions.cookie();
                resp.headers_mut()
                    .append(header::SET_COOKIE, cookie::clear(c, &c.name));
            }
            resp
        }
    };
    Ok(no_store(resp))
}

/// `GET /.well-known/jwks.json`: Sallyport's public signing keys (RFC 7517), for providers
/// verifying its client assertions. Public parts only; cacheable for a minute, so a key added
/// for rotation is seen within that time by a provider that honours it.
pub async fn jwks(State(app): State<AppState>) -> Response {
    let mut resp = app.config.signing_keys.jwks().into_response();
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/jwk-set+json"),
    );
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=60"),
    );
    resp
}

/// `GET /auth/health`: the process is up.
pub async fn health() -> Response {
    no_store(Json(json!({ "status": "ok" })).into_response())
}

/// `GET /auth/ready`: every provider's discovery is loaded and the store answers.
pub async fn ready(State(app): State<AppState>) -> Response {
    let providers: serde_json::Map<String, serde_json::Value> = app
        .providers
        .iter()
        .map(|p| (p.config().name.clone(), p.is_ready().into()))
        .collect();
    let store = app.sessions.store().ping().await.is_ok();
    let ready = store && providers.values().all(|v| v == true);
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    no_store(
        (
            status,
            Json(json!({ "ready": ready, "store": store, "providers": providers })),
        )
            .into_response(),
    )
}

/// `GET /metrics` (admin port): Prometheus' text exposition (OpenMetrics); `404` when
/// `telemetry.metrics` is off.
pub async fn metrics(State(app): State<AppState>) -> Response {
    let Some(m) = &app.metrics else {
        return crate::error::ErrorCode::NotFound.into_response();
    };
    if let Some(n) = app.sessions.store().count().await {
        m.sessions.set(i64::try_from(n).unwrap_or(i64::MAX));
    }
    let mut resp = m.render().into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
    );
    resp
}
