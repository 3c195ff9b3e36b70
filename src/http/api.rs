//! The proxy path on the public port: admission (`http::admit`), then forwarding
//! (`proxy::Proxy::forward`). Requests under no route go to the static files, then `404`.

use std::net::SocketAddr;

use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::response::{IntoResponse, Response};

use super::AppState;
use super::admit::{Admission, Ask, Surface, admit};
use crate::error::{ApiError, ErrorCode};
use crate::telemetry::CorrelationId;

/// The fallback handler: proxy a matching route, else static files, else `404`.
pub async fn fallback(
    State(app): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    req: Request,
) -> Response {
    let found = app.proxy.routes().find(req.uri().path());
    // The configured path of the route names the request in the metrics, refused or not.
    let label = super::admit::route_label(&app, &found);
    let mut resp = match proxy(&app, peer, req, found).await {
        Ok(resp) => resp,
        Err(e) => e.into_response(),
    };
    if let Some(label) = label {
        resp.extensions_mut().insert(label);
    }
    resp
}

async fn proxy<'a>(
    app: &'a AppState,
    peer: SocketAddr,
    req: Request<Body>,
    found: super::admit::Found<'a>,
) -> Result<Response, ApiError> {
    let ask = Ask {
        method: req.method(),
        path: req.uri().path(),
        headers: req.headers(),
        peer: peer.ip(),
        surface: Surface::Proxy,
    };
    let pass = match admit(app, found, ask).await {
        Ok(Admission::Pass(pass)) => pass,
        // Boxed: serving a static file holds a large future that proxied requests need not carry.
        Ok(Admission::Unrouted) => return Box::pin(not_routed(app, req)).await,
        Err(e) => {
            return step_up_navigation(app, super::is_navigation(req.headers()), req.uri(), e);
        }
    };
    let Some(route) = &pass.route else {
        return Err(ApiError::new(ErrorCode::NotFound));
    };
    // A body without a declared length is cut off at the limit while it streams (a declared
    // one over it was refused by admission).
    let req = match route.route.max_body {
        None => req,
        Some(max) => req.map(|body| {
            Body::new(http_body_util::Limited::new(
                body,
                usize::try_from(max).unwrap_or(usize::MAX),
            ))
        }),
    };
    let correlation_id = req
        .extensions()
        .get::<CorrelationId>()
        .cloned()
        .unwrap_or_default();
    let forwarded = pass.forwarded(app);
    let mut add = app
        .proxy
        .injected(route.route.service, correlation_id.header(), pass.client);
    add.bearer = forwarded.bearer;
    add.dpop = forwarded.dpop;
    add.identity = forwarded.identity;
    // A stream opened under this session (WebSocket, streamed response) ends with it.
    let guard = pass.session_guard(app);
    // RFC 9470: the upstream may ask for a stronger or more recent login. The user's session
    // can get one (kept: where the page was); a machine client's bearer gets the challenge as
    // it is.
    let page = matches!(pass.identity, super::admit::Identity::Session(_))
        .then(|| (super::is_navigation(req.headers()), req.uri().clone()));
    let resp = app
        .proxy
        .forward(req, route.route.service, &route.upstream_path, &add, guard)
        .await?;
    if resp.status() == http::StatusCode::UNAUTHORIZED
        && let Some((navigation, uri)) = page
        && let Some(step) = resp
            .headers()
            .get(http::header::WWW_AUTHENTICATE)
            .and_then(|v| v.to_str().ok())
            .and_then(crate::authz::StepUp::from_challenge)
    {
        let e = super::admit::step_up_required(&step);
        return step_up_navigation(app, navigation, &uri, e);
    }
    Ok(resp)
}

/// A navigation refused with `step_up_required` is redirected to the login that meets it,
/// coming back to the page; everything else is the refusal as it is.
fn step_up_navigation(
    app: &AppState,
    navigation: bool,
    uri: &http::Uri,
    e: ApiError,
) -> Result<Response, ApiError> {
    if e.code() != ErrorCode::StepUpRequired || !navigation {
        return Err(e);
    }
    let target = uri.path_and_query().map_or("/", |p| p.as_str());
    match super::login_for(&e, target, &app.config.server.public_url) {
        Some(login) => {
            let mut resp = http::StatusCode::FOUND.into_response();
            let h = resp.headers_mut();
            match http::HeaderValue::from_str(&login) {
                Ok(v) => h.insert(http::header::LOCATION, v),
                Err(_) => return Err(e),
            };
            h.insert(
                http::header::CACHE_CONTROL,
                http::HeaderValue::from_static("no-store"),
            );
            Ok(resp)
        }
        None => Err(e),
    }
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
    Err(ApiError::new(ErrorCode::NotFound))
}
