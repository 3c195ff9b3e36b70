//! `GET /auth/verify` (alias `/auth/forward`) on `server.forward_auth.listen`: forward-auth
//! for edge proxies (nginx `auth_request`, Traefik ForwardAuth, Caddy `forward_auth`). The
//! same session checks as the proxy path, no proxying.
//!
//! # Security
//! The answer carries the bearer token the matched route's service wants, so it is served only
//! on a listener of its own that only the edge reaches: the public port has no `/auth/verify`,
//! and a page's `fetch('/auth/verify', …)` through the edge gets `404` (the nginx recipe also
//! refuses the path itself). The original request is read only from the headers the configured
//! edge sets (`X-Original-URI/-Method` for nginx, `X-Forwarded-Uri/-Method` for Traefik and
//! Caddy), and its path must be in normal form (`400 invalid_path` otherwise), so that the
//! route decided here is the one the upstream sees.
//!
//! The decision is the proxy path's own (`http::admit`), for the route the original path falls
//! under; a path under no route is a page of the app and needs a session. `200` passes, with
//! the identity headers and the bearer the route's service receives (`auth: none`: no store
//! read, no identity; `optional`: identity when there is a session; `session_or_bearer`: a
//! valid client bearer passes and is handed back). Every refusal is the proxy path's (`405`
//! with `Allow`, `403 csrf_failed`, `401`, …) and names its code in `X-Sallyport-Error`. A
//! navigation without a session is sent to login: `302` for Traefik and Caddy, the `401` with
//! `X-Sallyport-Login` for nginx (whose `auth_request` passes on only 2xx, 401 and 403; its
//! recipe makes the redirect). A `fetch()` or XHR gets the `401`.

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, State};
use axum::response::{IntoResponse, Response};
use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, header};

use super::AppState;
use super::admit::{Admission, Ask, Surface, admit};
use crate::config::Edge;
use crate::error::{ApiError, ErrorCode};

/// The original request as the edge describes it.
struct Original<'a> {
    uri: &'a str,
    /// `GET` when the edge does not say (every recipe does).
    method: Method,
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

fn original(headers: &HeaderMap, edge: Edge) -> Result<Original<'_>, ApiError> {
    let (uri, method) = edge.original_headers();
    let uri = header(headers, uri).ok_or_else(|| {
        ApiError::new(ErrorCode::InvalidRequest).with_message("the edge did not say which request it asks about (X-Original-URI for nginx, X-Forwarded-Uri for Traefik and Caddy); configure it as in Sallyport's recipe")
    })?;
    Ok(Original {
        uri,
        method: header(headers, method)
            .and_then(|m| Method::from_bytes(m.as_bytes()).ok())
            .unwrap_or(Method::GET),
    })
}

/// The handler: the decision the proxy path would take for the original request, named in
/// the metrics by the route of the original path.
pub async fn verify(
    State(app): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Response {
    let mut label = None;
    let mut resp = decide(&app, peer, &headers, &mut label)
        .await
        .into_response();
    if let Some(label) = label {
        resp.extensions_mut().insert(label);
    }
    resp
}

/// The decision; `label` gets the route the original path falls under, for the metrics.
async fn decide(
    app: &AppState,
    peer: SocketAddr,
    headers: &HeaderMap,
    label: &mut Option<crate::metrics::RouteLabel>,
) -> Result<Response, ApiError> {
    let Some(edge) = app.config.server.forward_auth.as_ref().map(|f| f.edge) else {
        return Err(ApiError::new(ErrorCode::NotFound));
    };
    let original = original(headers, edge)?;
    let path = original.uri.split(['?', '#']).next().unwrap_or_default();
    let found = app.proxy.routes().find(path);
    *label = super::admit::route_label(app, &found);
    let ask = Ask {
        method: &original.method,
        path,
        headers,
        peer: peer.ip(),
        surface: Surface::Edge,
    };
    let pass = match admit(app, found, ask).await {
        Ok(Admission::Pass(pass)) => pass,
        Ok(Admission::Unrouted) => return Err(ApiError::new(ErrorCode::NotFound)),
        Err(e) => return Ok(refused(app, headers, &original, edge, e)),
    };
    let forwarded = pass.forwarded(app);
    let mut resp = answer();
    let h = resp.headers_mut();
    // Exactly the headers the proxy would send the route's service (claims with control
    // characters never become headers).
    if let Some(identity) = &forwarded.identity {
        identity.each(|name, value| {
            h.insert(name.clone(), value);
        });
    }
    if let Some(token) = forwarded.bearer
        && let Ok(mut v) = HeaderValue::from_str(&format!("Bearer {token}"))
    {
        v.set_sensitive(true);
        h.insert(header::AUTHORIZATION, v);
    }
    Ok(resp)
}

/// `200`, never cached: the request may pass.
fn answer() -> Response {
    let mut resp = StatusCode::OK.into_response();
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

/// A refusal as the edge passes it on. Every one names its code in `X-Sallyport-Error` (nginx
/// does not pass the body of an `auth_request` answer; its recipe builds one from this). A
/// navigation without a session (or one that needs a step-up login) is sent to login: a `302` where the edge passes redirects
/// (Traefik, Caddy), else the `401` with the login URL in `X-Sallyport-Login`, which the nginx
/// recipe turns into the redirect. A `fetch()` or XHR gets the `401`.
fn refused(
    app: &AppState,
    headers: &HeaderMap,
    original: &Original<'_>,
    edge: Edge,
    e: ApiError,
) -> Response {
    let code = e.code();
    let e = e.with_header(
        X_SALLYPORT_ERROR.clone(),
        HeaderValue::from_static(code.as_str()),
    );
    if !super::is_navigation(headers) {
        return e.into_response();
    }
    let Some(login) = super::login_for(&e, original.uri, &app.config.server.public_url)
        .and_then(|login| HeaderValue::from_str(&login).ok())
    else {
        return e.into_response();
    };
    if !edge.passes_redirects() {
        return e
            .with_header(X_SALLYPORT_LOGIN.clone(), login)
            .into_response();
    }
    let mut resp = StatusCode::FOUND.into_response();
    let h = resp.headers_mut();
    h.insert(header::LOCATION, login);
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

/// The refusal's code, for edges that do not pass the body on.
static X_SALLYPORT_ERROR: HeaderName = HeaderName::from_static("x-sallyport-error");
/// Where to log in, on a navigation's `401` for edges that do not pass redirects on.
static X_SALLYPORT_LOGIN: HeaderName = HeaderName::from_static("x-sallyport-login");
