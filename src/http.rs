//! The public HTTP surface: the public service, shared state, and the handlers in `http/`.
//!
//! Sallyport's own endpoints (`/auth/*`, `/api/auth/session`, `/api/auth/evaluations`) take precedence; everything else
//! goes straight to the route table (proxy), then to static files, without the router.
//! Forward-auth (`/auth/verify`) has a listener and router of its own.

pub mod admin;
pub mod admit;
pub mod api;
pub mod assets;
pub mod auth;
pub mod backchannel;
pub mod client;
pub mod cors;
pub mod csrf;
pub mod evaluations;
pub mod forward;
pub mod limits;
pub mod session_api;

use std::net::SocketAddr;
use std::ops::ControlFlow;
use std::sync::Arc;

use axum::Router;
use axum::extract::{ConnectInfo, Request, State};
use axum::response::Response;
use axum::routing::{delete, get, post};
use tower::ServiceExt as _;

use http::HeaderMap;

use crate::config::Config;
use crate::error::{ApiError, ErrorCode};
use crate::oidc::Provider;
use crate::proxy::Proxy;
use crate::session::manager::Sessions;
use crate::tokens::Broker;

/// Everything a handler needs, shared by reference count.
#[derive(Clone, Debug)]
pub struct AppState(pub(crate) Arc<Shared>);

/// The parts of the running gateway.
#[derive(Debug)]
pub struct Shared {
    /// The validated config.
    pub config: Config,
    /// Providers, in config order.
    pub providers: Vec<Provider>,
    /// Sessions and pending logins (shared with the streams that outlive a request).
    pub sessions: Arc<Sessions>,
    /// Token refresh.
    pub broker: Broker,
    /// Policy decision points.
    pub authz: crate::authz::Authz,
    /// Upstream forwarding.
    pub proxy: Proxy,
    /// Static SPA files, if configured.
    pub assets: Option<assets::Assets>,
    /// Per-client limit on failed attempts that cost a provider call or a signature check.
    pub limiter: limits::RateLimiter,
    /// Per-client budget of pushed authorization requests (each is a provider call).
    pub par_budget: limits::RateLimiter,
    /// Metrics, when `telemetry.metrics` is on.
    pub metrics: Option<Arc<crate::metrics::Metrics>>,
    /// The client for providers and decision points (its pool outlives reloads).
    pub http: reqwest::Client,
    /// Where the admin API asks for a reload.
    pub reloads: crate::reload::Requests,
}

impl AppState {
    /// The provider named `name`, or the default one.
    pub fn provider(&self, name: Option<&str>) -> Option<&Provider> {
        match name {
            None => self.0.providers.first(),
            Some(n) => self.0.providers.iter().find(|p| p.config().name == n),
        }
    }
}

impl std::ops::Deref for AppState {
    type Target = Shared;
    fn deref(&self) -> &Shared {
        &self.0
    }
}

/// Whether the browser is loading a page (a login redirect helps), as opposed to a `fetch()`
/// or XHR (which wants a `401` it can act on).
pub(crate) fn is_navigation(headers: &HeaderMap) -> bool {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    match header("sec-fetch-mode") {
        Some(mode) => mode == "navigate",
        None => {
            header("accept").is_some_and(|a| a.contains("text/html"))
                && !headers.contains_key("x-requested-with")
        }
    }
}

/// Where a navigation refused with `e` should log in, coming back to `uri`: the plain login
/// for `401 not_authenticated`/`session_expired`, the error's `login_url` for
/// `step_up_required`; `None` for other refusals (or a `uri` that is no safe place to return
/// to).
pub(crate) fn login_for(e: &ApiError, uri: &str, public_url: &url::Url) -> Option<String> {
    let base = match e.code() {
        ErrorCode::NotAuthenticated | ErrorCode::SessionExpired => "/auth/login",
        ErrorCode::StepUpRequired => e.field("login_url")?.as_str()?,
        _ => return None,
    };
    let to = auth::safe_return_to(uri, public_url)?;
    let to = url::form_urlencoded::byte_serialize(to.as_bytes()).collect::<String>();
    let sep = if base.contains('?') { '&' } else { '?' };
    Some(format!("{base}{sep}return_to={to}"))
}

/// Whether `path` is one of Sallyport's own endpoints (which take precedence over routes).
pub fn is_own(path: &str) -> bool {
    path.starts_with("/auth/")
        || path == "/api/auth/session"
        || path == "/api/auth/evaluations"
        || path == "/.well-known/jwks.json"
}

/// The router of Sallyport's own endpoints; any other path under them falls back to the
/// proxy (a route there) or `404`.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/auth/login", get(auth::login))
        .route("/auth/callback", get(auth::callback))
        .route("/auth/logout", post(auth::logout))
        .route("/auth/logout/continue", get(auth::logout_continue))
        .route(
            "/auth/backchannel-logout",
            post(backchannel::backchannel_logout),
        )
        .route("/auth/health", get(session_api::health))
        .route("/auth/ready", get(session_api::ready))
        .route("/api/auth/session", get(session_api::session))
        .route("/api/auth/evaluations", post(evaluations::evaluations))
        .route("/.well-known/jwks.json", get(session_api::jwks))
        .fallback(api::fallback)
        .with_state(state)
}

/// The public service: what answers every request on the public listener.
#[derive(Clone, Debug)]
pub struct Public {
    app: AppState,
    own: Router,
}

impl Public {
    /// The public service of `app`.
    pub fn new(app: AppState) -> Self {
        Self {
            own: router(app.clone()),
            app,
        }
    }

    /// Answers `req` from `peer`: telemetry outermost, then CORS, then the limits and headers
    /// of Sallyport's own endpoints, then the handler.
    ///
    /// Proxied requests go straight to the proxy rather than through the router, which only
    /// knows Sallyport's own endpoints: every layer of routing and boxing the router would add
    /// is paid on every API call (callgrind counted them at about a tenth of a proxied
    /// request's instructions).
    pub async fn handle(self, peer: SocketAddr, req: Request) -> Response {
        let Self { app, own } = self;
        let metrics = app.metrics.clone();
        let observed = metrics
            .as_deref()
            .map(|m| (m, crate::metrics::Listener::public));
        // Only a trusted edge's trace context is continued.
        let traced = crate::telemetry::trace::enabled()
            .then(|| client::is_trusted(peer.ip(), &app.config.server.trusted_proxies));
        crate::telemetry::observe(req, observed, traced, |mut req| async move {
            let allowed = match cors::before(&app, &req) {
                ControlFlow::Continue(allowed) => allowed,
                ControlFlow::Break(preflight) => return preflight,
            };
            let mut resp = match limits::before(peer, &req) {
                ControlFlow::Break(refused) => refused,
                ControlFlow::Continue(None) => {
                    api::fallback(State(app.clone()), ConnectInfo(peer), req).await
                }
                ControlFlow::Continue(Some(own_endpoint)) => {
                    req.extensions_mut().insert(ConnectInfo(peer));
                    let Ok(mut resp) = own.oneshot(req).await;
                    limits::after(own_endpoint, &mut resp);
                    resp
                }
            };
            cors::after(&app, allowed, &mut resp);
            resp
        })
        .await
    }
}

/// The admin router: readiness and liveness off the public port, and the metrics.
pub fn admin_router(state: AppState) -> Router {
    Router::new()
        .route("/auth/health", get(session_api::health))
        .route("/auth/ready", get(session_api::ready))
        .route("/metrics", get(session_api::metrics))
        .route(
            "/admin/sessions",
            get(admin::list).delete(admin::revoke_all),
        )
        .route("/admin/sessions/{handle}", delete(admin::revoke_one))
        .route("/admin/ready", get(admin::ready))
        .route("/admin/reload", post(admin::reload))
        .with_state(state.clone())
        .layer(axum::middleware::from_fn_with_state(
            (state, crate::metrics::Listener::admin),
            observed,
        ))
}

/// The forward-auth router, for `server.forward_auth.listen` only: its answers carry tokens,
/// so the public port, which page JavaScript can call, never serves them.
pub fn forward_router(state: AppState) -> Router {
    Router::new()
        .route("/auth/verify", get(forward::verify))
        .route("/auth/forward", get(forward::verify))
        .route("/auth/health", get(session_api::health))
        .fallback(|| async { crate::error::ErrorCode::NotFound })
        .with_state(state.clone())
        .layer(axum::middleware::from_fn_with_state(
            (state, crate::metrics::Listener::forward_auth),
            observed,
        ))
}

/// Correlation id, error rendering, the request log line and its metrics, as on the public
/// port; a trace span for forward-auth checks (the admin port's scrapes and probes get none).
async fn observed(
    State((app, listener)): State<(AppState, crate::metrics::Listener)>,
    req: Request,
    next: axum::middleware::Next,
) -> Response {
    let observed = app.metrics.as_deref().map(|m| (m, listener));
    let traced = (crate::telemetry::trace::enabled()
        && listener == crate::metrics::Listener::forward_auth)
        .then(|| {
            req.extensions()
                .get::<ConnectInfo<SocketAddr>>()
                .is_some_and(|peer| {
                    client::is_trusted(peer.0.ip(), &app.config.server.trusted_proxies)
                })
        });
    crate::telemetry::observe(req, observed, traced, |req| next.run(req)).await
}
