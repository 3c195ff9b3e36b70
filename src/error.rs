//! Error answers: every stable error code in one enum ([`ErrorCode`]), each with its status and
//! safe default message, and [`ApiError`], the one way an error becomes an HTTP response.
//!
//! `IntoResponse` has no side effects: it attaches an [`ErrorInfo`] to the response, and the
//! telemetry middleware (which knows the correlation id and whether the caller is a browser
//! navigation) logs the cause and renders the JSON body or HTML page from it. The cause never
//! reaches the body.

use std::borrow::Cow;
use std::sync::Arc;

use axum::response::{IntoResponse, Response};
use http::{HeaderName, HeaderValue, StatusCode};

/// Declares [`ErrorCode`] with, for each code, its wire name, status and default message, so
/// that the three can never disagree.
macro_rules! error_codes {
    ($($(#[$doc:meta])* $variant:ident = $code:literal, $status:ident, $message:literal;)*) => {
        /// A stable error code: the `error` of a JSON answer and the code on an error page.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum ErrorCode {
            $($(#[$doc])* $variant,)*
        }

        impl ErrorCode {
            /// Every code, in declaration order.
            pub const ALL: &'static [ErrorCode] = &[$(ErrorCode::$variant,)*];

            /// The code as sent, e.g. `session_expired`.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $(ErrorCode::$variant => $code,)*
                }
            }

            /// The HTTP status this code is always sent with.
            pub const fn status(self) -> StatusCode {
                match self {
                    $(ErrorCode::$variant => StatusCode::$status,)*
                }
            }

            /// The safe, human-readable message sent when the call site gives no better one.
            pub const fn message(self) -> &'static str {
                match self {
                    $(ErrorCode::$variant => $message,)*
                }
            }
        }
    };
}

error_codes! {
    /// A parameter or header is missing or malformed.
    InvalidRequest = "invalid_request", BAD_REQUEST, "the request is malformed";
    /// `return_to` is not a relative path on this site.
    InvalidReturnTo = "invalid_return_to", BAD_REQUEST, "return_to must be a relative path on this site";
    /// The login's state is unknown, used, expired or from another browser.
    InvalidState = "invalid_state", BAD_REQUEST, "this login was not started in this browser";
    /// RFC 9207: the authorization response names another issuer, or none when it must.
    InvalidIssuer = "invalid_issuer", BAD_REQUEST, "the response did not come from the provider this login was started at";
    /// The path has no safe normal form (see `proxy::routes::normalize`).
    InvalidPath = "invalid_path", BAD_REQUEST, "the path has dot or empty segments, path parameters (;), backslashes, or escapes that must not be escaped";
    /// The provider refused the authorization code.
    TokenExchangeFailed = "token_exchange_failed", BAD_REQUEST, "the identity provider refused the authorization code";
    /// No such provider is configured.
    UnknownProvider = "unknown_provider", BAD_REQUEST, "no such provider";
    /// No session.
    NotAuthenticated = "not_authenticated", UNAUTHORIZED, "log in first";
    /// The session ended: timed out, logged out, revoked, or its refresh was refused.
    SessionExpired = "session_expired", UNAUTHORIZED, "the session has ended; log in again";
    /// The login's ID token failed validation.
    InvalidIdToken = "invalid_id_token", UNAUTHORIZED, "the identity provider's ID token was refused";
    /// The provider answered the login with an error.
    LoginFailed = "login_failed", UNAUTHORIZED, "the identity provider refused the login";
    /// The userinfo endpoint names another user than the ID token.
    UserinfoMismatch = "userinfo_mismatch", UNAUTHORIZED, "the identity provider's userinfo names another user";
    /// The route (or its upstream) needs a stronger or more recent login than the session's
    /// (`login_url` says which).
    StepUpRequired = "step_up_required", UNAUTHORIZED, "this needs a stronger or more recent login";
    /// A client's own bearer token was refused.
    InvalidToken = "invalid_token", UNAUTHORIZED, "the bearer token was refused";
    /// A state-changing request failed the origin or token check.
    CsrfFailed = "csrf_failed", FORBIDDEN, "the request failed the CSRF checks";
    /// A cookie-authenticated WebSocket from another origin.
    ForbiddenOrigin = "forbidden_origin", FORBIDDEN, "the WebSocket request does not come from an allowed origin";
    /// Logged in, and the route's requirements or policy refuse this user.
    AccessDenied = "access_denied", FORBIDDEN, "you are logged in, and this is not allowed for you";
    /// The provider refused to exchange this user's token for the service's (RFC 8693).
    TokenExchangeDenied = "token_exchange_denied", FORBIDDEN, "the identity provider does not grant you access to this service";
    /// A CORS preflight from an origin not in `cors.allowed_origins`.
    CorsOriginDenied = "cors_origin_denied", FORBIDDEN, "this origin may not call Sallyport";
    /// Nothing here.
    NotFound = "not_found", NOT_FOUND, "no such resource";
    /// A reload found problems in the configuration file (the running one stays).
    InvalidConfig = "invalid_config", UNPROCESSABLE_ENTITY, "the configuration file has problems; the running configuration stays";
    /// The route does not accept the method (`Allow` lists what it does).
    MethodNotAllowed = "method_not_allowed", METHOD_NOT_ALLOWED, "this route does not accept the method";
    /// The body is larger than the route's `max_body`.
    RequestTooLarge = "request_too_large", PAYLOAD_TOO_LARGE, "the request body is larger than this route allows";
    /// Too many failed attempts from this client (`Retry-After` says how long to wait).
    RateLimited = "rate_limited", TOO_MANY_REQUESTS, "too many failed attempts from this address; try again later";
    /// The headers are larger than the route's `max_headers`.
    RequestHeadersTooLarge = "request_headers_too_large", REQUEST_HEADER_FIELDS_TOO_LARGE, "the request headers are larger than allowed here";
    /// The upstream service refused the connection.
    UpstreamUnavailable = "upstream_unavailable", BAD_GATEWAY, "the upstream service is unavailable";
    /// The upstream service failed mid-request.
    UpstreamError = "upstream_error", BAD_GATEWAY, "the upstream service failed";
    /// The provider's token response broke the protocol (no ID token at login).
    ProviderError = "provider_error", BAD_GATEWAY, "the identity provider sent an invalid answer";
    /// The session store cannot be reached (fail closed).
    StoreUnavailable = "store_unavailable", SERVICE_UNAVAILABLE, "the session store is unavailable";
    /// The provider cannot be reached (fail closed).
    ProviderUnavailable = "provider_unavailable", SERVICE_UNAVAILABLE, "the identity provider is unavailable";
    /// The policy decision point cannot be reached, timed out or answered garbage (fail closed).
    PdpUnavailable = "pdp_unavailable", SERVICE_UNAVAILABLE, "the policy decision point is unavailable";
    /// The upstream service sent no response headers within its timeout.
    UpstreamTimeout = "upstream_timeout", GATEWAY_TIMEOUT, "the upstream service did not answer in time";
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An error answer: a code, perhaps a more specific safe message, the internal cause (logged,
/// never sent) and extra response headers.
#[derive(Debug)]
pub struct ApiError {
    code: ErrorCode,
    message: Option<Cow<'static, str>>,
    cause: Option<Arc<dyn std::error::Error + Send + Sync>>,
    headers: Vec<(HeaderName, HeaderValue)>,
    /// Boxed: most errors have none, and a `Result<_, ApiError>` stays small.
    extra: Option<Box<serde_json::Map<String, serde_json::Value>>>,
}

/// What the middleware needs to log and render an error.
#[derive(Debug, Clone)]
pub struct ErrorInfo {
    /// The stable code.
    pub code: ErrorCode,
    /// Safe, human-readable message.
    pub message: Cow<'static, str>,
    /// The internal cause, for the log only.
    pub cause: Option<Arc<dyn std::error::Error + Send + Sync>>,
    /// More fields of the JSON answer (`reason_user`, `login_url`), safe to show.
    pub extra: Option<serde_json::Map<String, serde_json::Value>>,
}

impl From<ErrorCode> for ApiError {
    fn from(code: ErrorCode) -> Self {
        Self {
            code,
            message: None,
            cause: None,
            headers: Vec::new(),
            extra: None,
        }
    }
}

impl ApiError {
    /// An error with `code`'s status and default message.
    pub fn new(code: ErrorCode) -> Self {
        code.into()
    }

    /// Replaces the default message with a more specific safe one (it is sent to the client).
    pub fn with_message(mut self, message: impl Into<Cow<'static, str>>) -> Self {
        self.message = Some(message.into());
        self
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

    /// Adds a field to the JSON answer. It is sent to the client: only what page JavaScript
    /// may read (never a token or an internal reason).
    pub fn with_field(mut self, name: &str, value: serde_json::Value) -> Self {
        self.extra
            .get_or_insert_with(Box::default)
            .insert(name.to_owned(), value);
        self
    }

    /// A field added with [`ApiError::with_field`].
    pub fn field(&self, name: &str) -> Option<&serde_json::Value> {
        self.extra.as_ref()?.get(name)
    }

    /// The code.
    pub fn code(&self) -> ErrorCode {
        self.code
    }

    /// `503 store_unavailable`.
    pub fn store_unavailable(cause: crate::session::StoreError) -> Self {
        Self::new(ErrorCode::StoreUnavailable).with_cause(cause)
    }

    /// `503 provider_unavailable`.
    pub fn provider_unavailable(cause: impl std::error::Error + Send + Sync + 'static) -> Self {
        Self::new(ErrorCode::ProviderUnavailable).with_cause(cause)
    }

    /// `403 csrf_failed`, saying which check failed.
    pub fn csrf_failed(why: &'static str) -> Self {
        Self::new(ErrorCode::CsrfFailed).with_message(why)
    }

    /// `400 invalid_path`.
    pub fn invalid_path(cause: crate::proxy::routes::PathError) -> Self {
        Self::new(ErrorCode::InvalidPath).with_cause(cause)
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
            TokenFailure::SessionEnded => Self::new(ErrorCode::SessionExpired),
            TokenFailure::ProviderUnavailable(cause) => Self::provider_unavailable(cause),
            e @ TokenFailure::ExchangeDenied { .. } => {
                Self::new(ErrorCode::TokenExchangeDenied).with_cause(e)
            }
            e @ TokenFailure::ClientCredentialsRefused { .. } => {
                Self::new(ErrorCode::ProviderError)
                    .with_message(
                        "the identity provider refused the gateway's token for this service",
                    )
                    .with_cause(e)
            }
            TokenFailure::Store(cause) => Self::store_unavailable(cause),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut resp = self.code.status().into_response();
        for (name, value) in self.headers {
            resp.headers_mut().append(name, value);
        }
        resp.extensions_mut().insert(ErrorInfo {
            code: self.code,
            message: self.message.unwrap_or(Cow::Borrowed(self.code.message())),
            cause: self.cause,
            extra: self.extra.map(|extra| *extra),
        });
        resp
    }
}

impl IntoResponse for ErrorCode {
    fn into_response(self) -> Response {
        ApiError::new(self).into_response()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    use super::*;

    #[test]
    fn codes_are_unique_snake_case_and_errors() {
        let names: BTreeSet<&str> = ErrorCode::ALL.iter().map(|c| c.as_str()).collect();
        assert_eq!(
            names.len(),
            ErrorCode::ALL.len(),
            "a code is declared twice"
        );
        for code in ErrorCode::ALL {
            assert!(
                code.as_str()
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b == b'_'),
                "{code}"
            );
            assert!(
                code.status().is_client_error() || code.status().is_server_error(),
                "{code}"
            );
        }
    }

    /// The README's error table lists exactly the codes of the enum, each under its status.
    #[test]
    fn the_readme_error_table_matches_the_enum() {
        let readme = include_str!("../README.md");
        let table = readme
            .split("| status | codes |")
            .nth(1)
            .expect("README has the error table");
        let mut documented: BTreeMap<&str, u16> = BTreeMap::new();
        for row in table.lines().skip(2).take_while(|l| l.starts_with('|')) {
            let mut cells = row.split('|').skip(1);
            let status: u16 = cells
                .next()
                .and_then(|s| s.trim().parse().ok())
                .unwrap_or_else(|| panic!("one status per row: {row}"));
            let codes = cells.next().unwrap_or_default();
            // The codes are the backticked words outside parentheses (which explain them).
            let (mut depth, mut start) = (0u32, None);
            for (i, c) in codes.char_indices() {
                match c {
                    '(' => depth += 1,
                    ')' => depth = depth.saturating_sub(1),
                    '`' if depth == 0 => match start.take() {
                        None => start = Some(i + 1),
                        Some(s) => assert!(
                            documented.insert(&codes[s..i], status).is_none(),
                            "{} is documented twice",
                            &codes[s..i]
                        ),
                    },
                    _ => {}
                }
            }
        }
        let actual: BTreeMap<&str, u16> = ErrorCode::ALL
            .iter()
            .map(|c| (c.as_str(), c.status().as_u16()))
            .collect();
        assert_eq!(documented, actual, "README ### Errors table vs ErrorCode");
    }
}
