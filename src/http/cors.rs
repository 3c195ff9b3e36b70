//! CORS for the origins in `cors.allowed_origins` (two-origin development, or an SPA served
//! from another origin of the same site).
//!
//! Sallyport owns CORS: an allowed origin gets `Access-Control-Allow-Origin: <that origin>` with
//! credentials, and its preflights are answered here with the route's methods; any other origin
//! gets no CORS header at all, and its preflights are refused. `*` is never sent. Upstream
//! `Access-Control-*` headers are dropped (see `proxy::headers`), so an upstream's `*` cannot
//! combine with our credentials.

use std::ops::ControlFlow;

use axum::extract::Request;
use axum::response::{IntoResponse, Response};
use http::{HeaderMap, HeaderValue, Method, StatusCode, header};

use super::AppState;
use crate::error::{ApiError, ErrorCode};

/// How long a browser may cache a preflight answer.
const MAX_AGE: HeaderValue = HeaderValue::from_static("600");
const VARY: HeaderValue = HeaderValue::from_static(
    "Origin, Access-Control-Request-Method, Access-Control-Request-Headers",
);

/// Before the handler: answers a preflight (`Break`), else goes on with the origin to grant,
/// if the request comes from an allowed one (for [`after`]).
pub fn before(app: &AppState, req: &Request) -> ControlFlow<Response, Option<HeaderValue>> {
    let origin = cross_origin(req.headers(), &app.config.server.public_origin);
    let allowed = origin.filter(|o| {
        o.to_str()
            .is_ok_and(|o| app.config.cors.allowed_origins.iter().any(|a| a == o))
    });
    let is_preflight = req.method() == Method::OPTIONS
        && req
            .headers()
            .contains_key(header::ACCESS_CONTROL_REQUEST_METHOD);

    if is_preflight && origin.is_some() {
        let Some(origin) = allowed else {
            return ControlFlow::Break(
                ApiError::new(ErrorCode::CorsOriginDenied)
                    .with_header(header::VARY, VARY)
                    .into_response(),
            );
        };
        return ControlFlow::Break(preflight(app, req, origin.clone()));
    }
    ControlFlow::Continue(allowed.cloned())
}

/// After the handler: marks the response for an allowed cross-origin caller.
pub fn after(app: &AppState, allowed: Option<HeaderValue>, resp: &mut Response) {
    let headers = resp.headers_mut();
    if !app.config.cors.allowed_origins.is_empty() {
        headers.append(header::VARY, HeaderValue::from_static("Origin"));
    }
    if let Some(origin) = allowed {
        headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
        headers.insert(
            header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
            HeaderValue::from_static("true"),
        );
        headers.insert(
            header::ACCESS_CONTROL_EXPOSE_HEADERS,
            HeaderValue::from_static("X-Correlation-ID"),
        );
    }
}

/// The `Origin` of a request from another origin than Sallyport's own.
fn cross_origin<'a>(headers: &'a HeaderMap, own: &str) -> Option<&'a HeaderValue> {
    headers
        .get(header::ORIGIN)
        .filter(|o| o.as_bytes() != own.as_bytes())
}

fn preflight(app: &AppState, req: &Request, origin: HeaderValue) -> Response {
    let path = req.uri().path();
    let methods = match path {
        "/auth/logout" => HeaderValue::from_static("POST"),
        "/api/auth/session" => HeaderValue::from_static("GET"),
        "/api/auth/evaluations" => HeaderValue::from_static("POST"),
        _ => match app.proxy.routes().find(path) {
            Ok(Some(m)) => m.route.allow.clone(),
            _ => {
                return ApiError::new(ErrorCode::NotFound)
                    .with_header(header::VARY, VARY)
                    .into_response();
            }
        },
    };
    let requested = req
        .headers()
        .get(header::ACCESS_CONTROL_REQUEST_METHOD)
        .and_then(|m| m.to_str().ok())
        .unwrap_or("");
    let method_ok = methods
        .to_str()
        .is_ok_and(|list| list.split(", ").any(|m| m.eq_ignore_ascii_case(requested)));
    if !method_ok {
        return ApiError::new(ErrorCode::MethodNotAllowed)
            .with_header(header::ALLOW, methods)
            .with_header(header::VARY, VARY)
            .into_response();
    }
    let allow_headers = format!(
        "Content-Type, Accept, X-Requested-With, {}",
        app.config.csrf.header.as_str()
    );
    let mut resp = StatusCode::NO_CONTENT.into_response();
    let h = resp.headers_mut();
    h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
    h.insert(
        header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
        HeaderValue::from_static("true"),
    );
    h.insert(header::ACCESS_CONTROL_ALLOW_METHODS, methods);
    if let Ok(v) = HeaderValue::from_str(&allow_headers) {
        h.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, v);
    }
    h.insert(header::ACCESS_CONTROL_MAX_AGE, MAX_AGE);
    h.insert(header::VARY, VARY);
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}
