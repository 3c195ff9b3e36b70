//! `ApiError`: a status, a stable error code and a safe message; the one way errors become
//! HTTP responses.
//!
//! `IntoResponse` has no side effects: it attaches an [`ErrorInfo`] to the response, and the
//! telemetry middleware (which knows the correlation id and whether the caller is a browser
//! navigation) logs the cause and renders the JSON or HTML body. The cause never reaches the
//! body.

use std::borrow::Cow;
use std::sync::Arc;

use axum::response::{IntoResponse, Response};
use http::{HeaderName, HeaderValue, StatusCode};

/// An error answer.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: Cow<'static, str>,
    cause: Option<Arc<dyn std::error::Error + Send + Sync>>,
    headers: Vec<(HeaderName, HeaderValue)>,
}

/// What the middleware needs to log and render an error.
#[derive(Debug, Clone)]
pub struct ErrorInfo {
    /// Stable code, e.g. `session_expired`.
    pub code: &'static str,
    /// Safe, human-readable message.
    pub message: Cow<'static, str>,
    /// The internal cause, for the log only.
    pub cause: Option<Arc<dyn std::error::Error + Send + Sync>>,
}

impl ApiError {
    /// An error with a stable `code` and a safe `message`.
    pub fn new(
        status: StatusCode,
        code: &'static str,
        message: impl Into<Cow<'static, str>>,
    ) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            cause: None,
            headers: Vec::new(),
        }
    }

    /// Attaches the internal cause (logged with the correlation id, never sent).
    pub fn with_cause(mut self, cause: impl std::error::Error + Send + Sync + 'static) -> Self {
        self.cause = Some(Arc::new(cause));
        self
    }

    /// Adds a response header (`Allow`, `Set-Cookie`, …).
    pub fn with_header(mut self, name: HeaderName, value: HeaderValue) -> Self {
        self.headers.push((name, value));
        self
    }

    /// The stable code.
    pub fn code(&self) -> &'static str {
        self.code
    }

    /// `401 not_authenticated`.
    pub fn not_authenticated() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "not_authenticated",
            "log in first",
        )
    }

    /// `401 session_expired`.
    pub fn session_expired() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "session_expired",
            "the session has ended; log in again",
        )
    }

    /// `503 store_unavailable`.
    pub fn store_unavailable(cause: crate::session::StoreError) -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "store_unavailable",
            "the session store is unavailable",
        )
        .with_cause(cause)
    }

    /// `503 provider_unavailable`.
    pub fn provider_unavailable(cause: impl std::error::Error + Send + Sync + 'static) -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "provider_unavailable",
            "the identity provider is unavailable",
        )
        .with_cause(cause)
    }

    /// `403 csrf_failed`.
    pub fn csrf_failed(why: &'static str) -> Self {
        Self::new(StatusCode::FORBIDDEN, "csrf_failed", why)
    }

    /// `400 invalid_path`: the path has no safe normal form (see `proxy::routes::normalize`).
    pub fn invalid_path(cause: crate::proxy::routes::PathError) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "invalid_path",
            "the path has dot or empty segments, path parameters (;), backslashes, or escapes that must not be escaped",
        )
        .with_cause(cause)
    }

    /// `404 not_found`.
    pub fn not_found() -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", "no such resource")
    }
}

impl From<crate::session::StoreError> for ApiError {
    fn from(e: crate::session::StoreError) -> Self {
        Self::store_unavailable(e)
    }
}

impl From<crate::tokens::TokenFailure> for ApiError {
    fn from(e: crate::tokens::TokenFailure) -> Self {
        use crate::tokens::TokenFailure;
        match e {
            TokenFailure::SessionEnded => Self::session_expired(),
            TokenFailure::ProviderUnavailable(cause) => Self::provider_unavailable(cause),
            TokenFailure::Store(cause) => Self::store_unavailable(cause),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut resp = self.status.into_response();
        for (name, value) in self.headers {
            resp.headers_mut().append(name, value);
        }
        resp.extensions_mut().insert(ErrorInfo {
            code: self.code,
            message: self.message,
            cause: self.cause,
        });
        resp
    }
}
