//! Sallyport: a Backend-for-Frontend authentication gateway.
//!
//! The browser gets an opaque, `HttpOnly` session cookie; tokens stay on the server. Sallyport
//! runs the OpenID Connect authorization-code flow itself, keeps tokens sealed in a session
//! store, and forwards the SPA's API calls upstream with `Authorization: Bearer …` added.
//!
//! # Layout
//! - [`config`]: the YAML model, `${ENV}` interpolation, validation that names the key.
//! - [`oidc`]: discovery and JWKS caches, the authorization request, token endpoint calls,
//!   ID token validation.
//! - [`session`]: ids, the sealed record, cookies, the [`session::SessionStore`] contract and
//!   the request-path [`session::manager::Sessions`].
//! - [`store`]: the backends (`memory`, `file`, `redis`).
//! - [`tokens`]: refreshing tokens once per session.
//! - [`proxy`]: route table, header rewriting, forwarding, WebSocket relay.
//! - [`http`]: the public service (own endpoints through a router, the rest to the proxy),
//!   handlers, CSRF, errors.
//! - [`listener`]: accepting connections, with header-read timeout, connection cap and
//!   graceful shutdown.
//! - [`telemetry`]: logs and correlation ids.
//!
//! [`serve`] takes already-bound listeners and a shutdown future, so `main` and the tests run
//! the same code.

pub mod authz;
pub mod build;
pub mod clock;
pub mod config;
pub mod error;
#[doc(hidden)]
pub mod fuzzing;
mod hex;
pub mod http;
pub mod keys;
pub mod listener;
pub mod metrics;
pub mod oidc;
pub mod proxy;
pub mod random;
pub mod secret;
pub mod session;
pub mod store;
pub mod telemetry;
pub mod tokens;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ConnectInfo;
use tokio::net::TcpListener;

use crate::clock::Clock;
use crate::config::Config;
use crate::http::{AppState, Shared};

/// The runtime to serve on: one thread when the process may use only one CPU (pinned, or a
/// container limited to one), a work-stealing pool of one thread per CPU otherwise.
///
/// On one CPU a multi-threaded runtime still runs its single worker beside the thread that
/// waits in `block_on`, and pays for stealing and cross-thread wake-ups that never help: the
/// load benchmark's bare hyper proxy used 10–20 % less CPU per request on a current-thread
/// runtime.
///
/// # Errors
/// When the runtime cannot be built (no threads or file descriptors left).
pub fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    let cpus = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
    let mut builder = if cpus == 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        tokio::runtime::Builder::new_multi_thread()
    };
    builder.enable_all().build()
}

/// Why the gateway could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The session store could not be opened.
    #[error("opening the session store")]
    Store(#[from] session::StoreError),
    /// The upstream client could not be built.
    #[error("building the upstream client")]
    Proxy(#[from] proxy::BuildError),
}

/// A configured gateway, ready to serve.
#[derive(Debug, Clone)]
pub struct Gateway {
    state: AppState,
}

impl Gateway {
    /// Builds the gateway from a validated config, with the system clock.
    ///
    /// # Errors
    /// When the store cannot be opened or the upstream client cannot be built.
    pub fn new(config: Config) -> Result<Self, StartError> {
        Self::with_clock(config, Clock::default())
    }

    /// Builds the gateway with `clock` judging session and token expiry (tests move it).
    ///
    /// # Errors
    /// When the store cannot be opened or the upstream client cannot be built.
    pub fn with_clock(config: Config, clock: Clock) -> Result<Self, StartError> {
        // Served only on the admin port: without one nobody can read them, and none are kept.
        let metrics = (config.telemetry.metrics && config.server.admin_listen.is_some())
            .then(|| Arc::new(metrics::Metrics::new()));
        let mut store = store::build(&config.session)?;
        if let Some(m) = &metrics {
            store = Arc::new(store::metered::Metered::new(store, Arc::clone(m)));
        }
        let http = oidc::http_client();
        let redirect_uri = config.server.redirect_uri();
        let providers = config
            .providers
            .iter()
            .map(|p| {
                oidc::Provider::new(p.clone(), redirect_uri.clone(), http.clone())
                    .with_metrics(metrics.clone())
            })
            .collect();
        let sessions = Arc::new(session::manager::Sessions::new(
            store,
            &config.session,
            clock,
        ));
        let shared = Shared {
            broker: tokens::Broker::new(&config),
            authz: authz::Authz::new(&config, &http).with_metrics(metrics.clone()),
            proxy: proxy::Proxy::new(&config)?.with_metrics(metrics.clone()),
            assets: config.static_files.as_ref().map(http::assets::Assets::new),
            limiter: http::limits::RateLimiter::new(
                config.server.rate_limit.0,
                config.server.rate_limit.1,
            ),
            par_budget: http::limits::RateLimiter::new(
                http::limits::PAR_PER_MINUTE,
                std::time::Duration::from_secs(60),
            ),
            providers,
            sessions,
            metrics,
            config,
        };
        Ok(Self {
            state: AppState(Arc::new(shared)),
        })
    }

    /// The shared state (tests inspect it).
    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// The public service.
    pub fn public(&self) -> http::Public {
        http::Public::new(self.state.clone())
    }

    /// Loads every provider's discovery and keys in the background, and registers Sallyport
    /// where `registration` says, retrying with backoff until it succeeds: Sallyport serves
    /// (and reports not-ready) while a provider is down or refuses the registration.
    pub fn start_discovery(&self) {
        for index in 0..self.state.providers.len() {
            // Weak: a gateway that has stopped stops retrying too.
            let state = Arc::downgrade(&self.state.0);
            tokio::spawn(async move {
                let mut delay = Duration::from_millis(250);
                let mut warm = false;
                loop {
                    let Some(state) = state.upgrade() else { return };
                    let provider = &state.providers[index];
                    let cfg = provider.config();
                    if !warm {
                        match provider.warm_up().await {
                            Ok(()) => warm = true,
                            Err(e) => {
                                tracing::warn!(provider = %cfg.name, error = %e, retry_in = ?delay, "provider not reachable yet");
                            }
                        }
                    }
                    if warm && cfg.client_id.is_known() {
                        return;
                    }
                    if warm {
                        let metadata = oidc::registration::ClientMetadata::new(&state.config, cfg);
                        match oidc::registration::ensure(provider, &state.sessions, &metadata).await
                        {
                            Ok(()) => return,
                            Err(e) => {
                                tracing::error!(provider = %cfg.name, error = %telemetry::chain(&e), retry_in = ?delay, "registration at the provider failed; not ready");
                            }
                        }
                    }
                    drop(state);
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(30));
                }
            });
        }
    }
}

/// Every minute, drops the opened records of timed-out sessions, until the gateway is gone.
fn forget_ended_sessions(state: &AppState) {
    let state = Arc::downgrade(&state.0);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(60));
        tick.tick().await;
        loop {
            tick.tick().await;
            let Some(state) = state.upgrade() else { return };
            let dropped = state.sessions.forget_ended();
            if dropped > 0 {
                tracing::debug!(dropped, "opened records of ended sessions dropped");
            }
        }
    });
}

/// The sockets Sallyport serves on, bound by the caller (`main`, or a test on port 0).
#[derive(Debug)]
pub struct Listeners {
    /// `server.listen`: browsers, through the edge if there is one.
    pub public: TcpListener,
    /// `server.admin_listen`: readiness and liveness.
    pub admin: Option<TcpListener>,
    /// `server.forward_auth.listen`: the edge's forward-auth calls.
    pub forward_auth: Option<TcpListener>,
}

impl Listeners {
    /// Binds every listener `config` names.
    ///
    /// # Errors
    /// Which address could not be bound, naming its key.
    pub async fn bind(config: &Config) -> Result<Self, String> {
        async fn bind(key: &str, addr: std::net::SocketAddr) -> Result<TcpListener, String> {
            TcpListener::bind(addr)
                .await
                .map_err(|e| format!("binding {key} {addr}: {e}"))
        }
        let server = &config.server;
        Ok(Self {
            public: bind("server.listen", server.listen).await?,
            admin: match server.admin_listen {
                Some(addr) => Some(bind("server.admin_listen", addr).await?),
                None => None,
            },
            forward_auth: match &server.forward_auth {
                Some(f) => Some(bind("server.forward_auth.listen", f.listen).await?),
                None => None,
            },
        })
    }
}

/// Serves `gateway` on `listeners` until `shutdown` completes; then stops accepting and lets
/// in-flight requests finish within `server.shutdown_grace`.
///
/// # Errors
/// None today: failed accepts are logged and retried. The `Result` keeps room for listener
/// failures that cannot be retried.
pub async fn serve(
    gateway: Gateway,
    listeners: Listeners,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    gateway.start_discovery();
    let server = &gateway.state.config.server;
    let grace = server.shutdown_grace;
    let limits = listener::ConnLimits {
        header_read_timeout: server.header_read_timeout,
        max_connections: server.max_connections,
    };
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    // Weak, so that nothing of a stopped gateway outlives `serve` (an embedded file store
    // must be free to reopen at once).
    let state = Arc::downgrade(&gateway.state.0);
    // When shutdown began: WebSockets get what is left of the grace once the listeners are done.
    let began = Arc::new(std::sync::OnceLock::new());
    let began_at = Arc::clone(&began);
    tokio::spawn(async move {
        shutdown.await;
        began_at.get_or_init(tokio::time::Instant::now);
        // WebSockets get the same grace as requests: a Close frame (1001) at once, at the
        // next frame boundary, and until the grace period ends to finish (below).
        if let Some(state) = state.upgrade() {
            state.proxy.relays().shut_down();
        }
        let _ = stop_tx.send(true);
    });
    let mut sides = Vec::new();
    let mut side = |name: &'static str, tcp: TcpListener, router: axum::Router| {
        sides.push(tokio::spawn(listener::run(
            name,
            tcp,
            limits,
            move |peer| {
                let router = router.clone();
                move |mut req: axum::extract::Request| {
                    req.extensions_mut().insert(ConnectInfo(peer));
                    let router = router.clone();
                    async move {
                        let Ok(resp) = tower::ServiceExt::oneshot(router, req).await;
                        resp
                    }
                }
            },
            stop_rx.clone(),
            grace,
        )));
    };
    if let Some(admin) = listeners.admin {
        side("admin", admin, http::admin_router(gateway.state.clone()));
    }
    if let Some(forward) = listeners.forward_auth {
        side(
            "forward_auth",
            forward,
            http::forward_router(gateway.state.clone()),
        );
    }
    forget_ended_sessions(&gateway.state);
    let renewals = tokio::spawn(tokens::background::run(
        Arc::downgrade(&gateway.state.0),
        |s: &http::Shared| (&s.broker, &*s.sessions, &s.providers[..]),
        stop_rx.clone(),
        grace,
    ));
    let public = gateway.public();
    listener::run(
        "public",
        listeners.public,
        limits,
        move |peer| {
            let public = public.clone();
            move |req: axum::extract::Request| public.clone().handle(peer, req)
        },
        stop_rx,
        grace,
    )
    .await;
    for side in sides {
        let _ = side.await;
    }
    let _ = renewals.await;
    let left = began
        .get()
        .map_or(grace, |at| grace.saturating_sub(at.elapsed()));
    if !gateway.state.proxy.relays().drained(left).await {
        tracing::warn!(
            ?grace,
            "grace period over; WebSocket relays still finishing their last frame"
        );
    }
    Ok(())
}
