//! CSRF checks for state-changing requests made with a session cookie.
//!
//! Two independent checks, both required: the request comes from an allowed origin (`Origin`,
//! or `Sec-Fetch-Site: same-origin` when a browser sends no `Origin`), and it carries the
//! session's CSRF token (in the configured header, or a `csrf_token` form field for a plain
//! form post), compared in constant time.

use http::{HeaderMap, Method};
use subtle::ConstantTimeEq;

use crate::config::Config;
use crate::error::ApiError;

/// Whether `method` can change state.
pub fn is_unsafe(method: &Method) -> bool {
    !matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE
    )
}

/// Whether the request's `Origin` is ours or an allowed one; without `Origin`, whether the
/// browser says the request is same-origin.
pub fn origin_allowed(headers: &HeaderMap, config: &Config) -> bool {
    match headers.get(http::header::ORIGIN).map(|v| v.to_str()) {
        Some(Ok(origin)) => {
            origin == config.server.public_origin
                || config.cors.allowed_origins.iter().any(|o| o == origin)
        }
        Some(Err(_)) => false,
        None => headers
            .get("sec-fetch-site")
            .is_some_and(|v| v == "same-origin"),
    }
}

/// Checks the origin only, where there is no session token to compare.
///
/// # Errors
/// `403 csrf_failed`.
pub fn check_origin(headers: &HeaderMap, config: &Config) -> Result<(), ApiError> {
    if origin_allowed(headers, config) {
        Ok(())
    } else {
        Err(ApiError::csrf_failed(
            "the request does not come from an allowed origin",
        ))
    }
}

/// Checks origin and token.
///
/// # Errors
/// `403 csrf_failed`.
pub fn check(
    headers: &HeaderMap,
    config: &Config,
    expected: &str,
    form_token: Option<&str>,
) -> Result<(), ApiError> {
    check_origin(headers, config)?;
    let sent = headers
        .get(&config.csrf.header)
        .and_then(|v| v.to_str().ok())
        .or(form_token)
        .ok_or_else(|| ApiError::csrf_failed("the CSRF token is missing"))?;
    if sent.len() == expected.len() && bool::from(sent.as_bytes().ct_eq(expected.as_bytes())) {
        Ok(())
    } else {
        Err(ApiError::csrf_failed("the CSRF token is wrong"))
    }
}
