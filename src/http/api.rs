//! The `/api/**` proxy path: route → session → CSRF → token → forward. Requests matching no
//! route go to the static files, then `404`.

use std::net::SocketAddr;

use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::response::{IntoResponse, Response};
use http::{StatusCode, header};

use super::AppState;
use super::error::ApiError;
use crate::config::{AuthMode, TokenMode};
use crate::session::cookie;
use crate::session::manager::{Loaded, Lookup};
use crate::telemetry::CorrelationId;

/// The fallback handler: proxy a matching route, else static files, else `404`.
pub async fn fallback(
    State(app): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    req: Request,
) -> Response {
    match proxy(&app, peer, req).await {
        Ok(resp) => resp,
        Err(e) => e.into_response(),
    }
}

async fn proxy(app: &AppState, peer: SocketAddr, req: Request<Body>) -> Result<Response, ApiError> {
    let found = app
        .proxy
        .routes()
        .find(req.uri().path())
        .map_err(ApiError::invalid_path)?;
    let (route, upstream_path) = match found {
        Some(m) => (m.route, m.upstream_path),
        // Boxed: serving a static file holds a large future that proxied requests need not carry.
        None => return Box::pin(not_routed(app, req)).await,
    };
    // Limits first: an oversized request costs no session lookup and never reaches upstream.
    super::limits::check_header_size(req.headers(), route.max_headers)?;
    let req = match route.max_body {
        None => req,
        Some(max) => {
            let declared = req
                .headers()
                .get(header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<u64>().ok());
            if declared.is_some_and(|len| len > max) {
                return Err(ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "request_too_large",
                    "the request body is larger than this route allows",
                ));
            }
            // A body without a declared length is cut off at the limit while it streams.
            req.map(|body| {
                Body::new(http_body_util::Limited::new(
                    body,
                    usize::try_from(max).unwrap_or(usize::MAX),
                ))
            })
        }
    };
    if !route.allows(req.method()) {
        return Err(ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "this route does not accept the method",
        )
        .with_header(header::ALLOW, route.allow.clone()));
    }
    if route.auth == AuthMode::SessionOrBearer
        && let Some(token) = client_bearer(req.headers())
    {
        // A machine client: its own token, checked and forwarded unchanged. No cookie is
        // involved, so there is nothing for CSRF to ride on. A refused token counts against
        // the client's address; a valid one gives its attempt back.
        let permit = app
            .limiter
            .acquire(client_ip(app, peer, &req))
            .map_err(super::limits::rate_limited)?;
        let claims = Box::pin(validate_bearer(app, &token)).await?;
        permit.succeeded();
        let correlation_id = correlation_id(&req);
        let mut add = app.proxy.injected(
            route.service,
            correlation_id.header(),
            client_ip(app, peer, &req),
        );
        add.bearer = Some(&token);
        add.user = claims.sub.as_deref();
        return app
            .proxy
            .forward(req, route.service, &upstream_path, &add, None)
            .await;
    }
    let required = matches!(route.auth, AuthMode::Session | AuthMode::SessionOrBearer);
    let session = match route.auth {
        AuthMode::None => None,
        AuthMode::Session | AuthMode::Optional | AuthMode::SessionOrBearer => {
            match app.sessions.lookup(req.headers()).await? {
                Lookup::Found(s) => Some(s),
                Lookup::NoCookie if required => return Err(ApiError::not_authenticated()),
                Lookup::Ended if required => return Err(expired(app)),
                Lookup::NoCookie | Lookup::Ended => None,
            }
        }
    };
    if let Some(s) = &session {
        if super::csrf::is_unsafe(req.method()) {
            super::csrf::check(req.headers(), &app.config, &s.record.csrf_token, None)?;
        }
        if crate::proxy::is_upgrade(req.headers())
            && !super::csrf::origin_allowed(req.headers(), &app.config)
        {
            // Cross-site WebSocket hijacking: a cookie-authenticated upgrade must come from us.
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "forbidden_origin",
                "the WebSocket request does not come from an allowed origin",
            ));
        }
    }
    let upstream = app.proxy.upstream(route.service);
    let session = match (session, upstream.token) {
        (Some(s), TokenMode::User) => Some(fresh(app, s).await.map_err(|e| {
            if e.code() == "session_expired" {
                e.with_header(header::SET_COOKIE, clear_cookie(app))
            } else {
                e
            }
        })?),
        (s, _) => s,
    };

    let correlation_id = correlation_id(&req);
    let mut add = app.proxy.injected(
        route.service,
        correlation_id.header(),
        client_ip(app, peer, &req),
    );
    if let Some(s) = &session {
        add.user = Some(&s.record.sub);
        add.email = s.record.claims.get("email").and_then(|e| e.as_str());
        add.bearer = crate::tokens::token_for(&s.record, upstream.token);
    }
    // A stream opened under this session (WebSocket, streamed response) ends with it.
    let guard = session.as_ref().map(|s| {
        crate::proxy::guard::SessionGuard::new(
            std::sync::Arc::clone(&app.sessions),
            s.key,
            s.record.expires_at,
        )
    });
    app.proxy
        .forward(req, route.service, &upstream_path, &add, guard)
        .await
}

/// The token of an `Authorization: Bearer …` header, if the client sent one.
fn client_bearer(headers: &http::HeaderMap) -> Option<String> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    (scheme.eq_ignore_ascii_case("bearer") && !token.trim().is_empty())
        .then(|| token.trim().to_owned())
}

fn invalid_token(cause: impl std::error::Error + Send + Sync + 'static) -> ApiError {
    ApiError::new(
        StatusCode::UNAUTHORIZED,
        "invalid_token",
        "the bearer token was refused",
    )
    .with_cause(cause)
    .with_header(
        header::WWW_AUTHENTICATE,
        http::HeaderValue::from_static("Bearer error=\"invalid_token\""),
    )
}

async fn validate_bearer(
    app: &AppState,
    token: &str,
) -> Result<crate::oidc::bearer::BearerClaims, ApiError> {
    use crate::oidc::bearer::BearerError;
    let issuer = crate::oidc::unverified_issuer(token)
        .ok_or_else(|| invalid_token(BearerError::UnknownIssuer))?;
    let provider = app
        .providers
        .iter()
        .find(|p| p.config().issuer == issuer && !p.config().bearer_audiences.is_empty())
        .ok_or_else(|| invalid_token(BearerError::UnknownIssuer))?;
    let now = app.sessions.clock().unix() as i64;
    provider
        .validate_bearer(token, now)
        .await
        .map_err(|e| match e {
            Ok(reason) => invalid_token(reason),
            Err(unavailable) => ApiError::provider_unavailable(unavailable),
        })
}

/// The browser's address for `X-Forwarded-For`: behind a trusted proxy, the client it names.
fn client_ip(app: &AppState, peer: SocketAddr, req: &Request<Body>) -> std::net::IpAddr {
    super::forward::client_ip(peer.ip(), req.headers(), &app.config.server.trusted_proxies)
}

/// This request's correlation id (set by the telemetry middleware).
fn correlation_id(req: &Request<Body>) -> CorrelationId {
    req.extensions()
        .get::<CorrelationId>()
        .cloned()
        .unwrap_or_default()
}

/// The session with an access token that is not about to expire (refreshed if needed).
pub(super) async fn fresh(app: &AppState, session: Loaded) -> Result<Loaded, ApiError> {
    let provider = app
        .provider(Some(&session.record.provider))
        .ok_or_else(ApiError::session_expired)?;
    Ok(app
        .broker
        .ensure_fresh(&app.sessions, provider, session)
        .await?)
}

fn clear_cookie(app: &AppState) -> http::HeaderValue {
    let c = app.sessions.cookie();
    cookie::clear(c, &c.name)
}

fn expired(app: &AppState) -> ApiError {
    ApiError::session_expired().with_header(header::SET_COOKIE, clear_cookie(app))
}

async fn not_routed(app: &AppState, req: Request<Body>) -> Result<Response, ApiError> {
    super::limits::check_header_size(req.headers(), crate::config::DEFAULT_MAX_HEADERS)?;
    let path = req.uri().path();
    let ours = path.starts_with("/api/")
        || path == "/api"
        || path.starts_with("/auth/")
        || path.starts_with("/.well-known/");
    if !ours
        && let Some(assets) = &app.assets
        && let Some(resp) = assets.serve(req).await
    {
        return Ok(resp);
    }
    Err(ApiError::not_found())
}
