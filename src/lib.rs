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
//! - [`telemetry`]: logs, traces and correlation ids.
//! - [`reload`]: configuration reload (what changes, what needs a restart).
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
pub mod reload;
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

/// A configured gateway, ready to serve; [`Gateway::reload`] swaps in a new configuration.
#[derive(Debug, Clone)]
pub struct Gateway {
    live: Arc<Live>,
}

/// The generation being served, swapped whole by a reload: each request takes the one
/// current when it arrives and finishes on it.
#[derive(Debug)]
struct Live {
    current: arc_swap::ArcSwap<Generation>,
    /// One reload at a time.
    reloading: tokio::sync::Mutex<()>,
}

/// One configuration's state and the services built on it.
#[derive(Debug)]
struct Generation {
    state: AppState,
    public: http::Public,
    admin: axum::Router,
    forward: axum::Router,
}

impl Generation {
    fn new(state: AppState) -> Self {
        Self {
            public: http::Public::new(state.clone()),
            admin: http::admin_router(state.clone()),
            forward: http::forward_router(state.clone()),
            state,
        }
    }
}

/// What a new generation takes over from the running one.
struct Carried {
    sessions: Arc<session::manager::Sessions>,
    metrics: Option<Arc<metrics::Metrics>>,
    http: reqwest::Client,
    reloads: reload::Requests,
}

/// Builds the state of `config` on the parts `carried` over; `proxy` is the running proxy
/// whose connection pools and WebSocket relays the new one shares.
fn assemble(
    config: Config,
    carried: Carried,
    proxy: Option<&proxy::Proxy>,
) -> Result<Shared, StartError> {
    let Carried {
        sessions,
        metrics,
        http,
        reloads,
    } = carried;
    let redirect_uri = config.server.redirect_uri();
    let providers = config
        .providers
        .iter()
        .map(|p| {
            oidc::Provider::new(p.clone(), redirect_uri.clone(), http.clone())
                .with_metrics(metrics.clone())
        })
        .collect();
    let proxy = match proxy {
        Some(running) => running.reconfigured(&config),
        None => proxy::Proxy::new(&config)?,
    };
    Ok(Shared {
        broker: tokens::Broker::new(&config),
        authz: authz::Authz::new(&config, &http).with_metrics(metrics.clone()),
        proxy: proxy.with_metrics(metrics.clone()),
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
        reloads,
        http,
        config,
    })
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
        let sessions = Arc::new(session::manager::Sessions::new(
            store,
            &config.session,
            clock,
        ));
        let carried = Carried {
            sessions,
            metrics,
            http: oidc::http_client(),
            reloads: reload::Requests::default(),
        };
        let state = AppState(Arc::new(assemble(config, carried, None)?));
        Ok(Self {
            live: Arc::new(Live {
                current: arc_swap::ArcSwap::from_pointee(Generation::new(state)),
                reloading: tokio::sync::Mutex::new(()),
            }),
        })
    }

    /// The current state (tests inspect it).
    pub fn state(&self) -> AppState {
        self.live.current.load().state.clone()
    }

    /// The current public service.
    pub fn public(&self) -> http::Public {
        self.live.current.load().public.clone()
    }

    /// Where reloads are asked for through the admin API (`main` takes them).
    pub fn reload_requests(&self) -> reload::Requests {
        self.live.current.load().state.reloads.clone()
    }

    /// Serves `config` from now on: routes, services, providers, authorization, CORS, CSRF,
    /// static files, rate limits, tokens, signing keys and the admin token change; settings
    /// that need a restart keep their running value and are named in the report. Providers
    /// are fetched (and registrations looked up) before the swap, within 10 s; a new one that
    /// is not ready by then is retried in the background, as at start. Requests in flight
    /// finish on the configuration they started with.
    ///
    /// # Errors
    /// When the new state cannot be built, or a provider that was ready would not be (the
    /// running configuration stays).
    pub async fn reload(&self, mut config: Config) -> reload::Outcome {
        let _one = self.live.reloading.lock().await;
        let running = self.live.current.load_full();
        let old = &running.state;
        let restart_required = reload::keep_running(&old.config, &mut config);
        let carried = Carried {
            sessions: Arc::clone(&old.sessions),
            metrics: old.metrics.clone(),
            http: old.http.clone(),
            reloads: old.reloads.clone(),
        };
        let shared = assemble(config, carried, Some(&old.proxy))
            .map_err(|e| reload::Refused(vec![telemetry::chain(&e)]))?;
        shared.broker.adopt(&old.broker);
        let state = AppState(Arc::new(shared));
        let ready =
            futures_util::future::join_all((0..state.providers.len()).map(|i| prepare(&state, i)));
        let _ = tokio::time::timeout(Duration::from_secs(10), ready).await;
        // A reload never takes away a working login: a provider that was ready stays so.
        let lost: Vec<String> = state
            .providers
            .iter()
            .filter(|p| !p.is_ready())
            .filter(|p| old.provider(Some(&p.config().name)).is_some_and(|o| o.is_ready()))
            .map(|p| {
                format!(
                    "providers.{}: ready before the reload but not with the new file within 10 s (discovery, keys or registration failed; the log says why)",
                    p.config().name
                )
            })
            .collect();
        if !lost.is_empty() {
            return Err(reload::Refused(lost));
        }
        let report = reload::Report {
            restart_required,
            providers: state.providers.len(),
            services: state.config.services.len(),
            routes: state.config.routes.len(),
        };
        self.live.current.store(Arc::new(Generation::new(state)));
        self.start_discovery();
        Ok(report)
    }

    /// Loads every provider's discovery and keys in the background, and registers Sallyport
    /// where `registration` says, retrying with backoff until it succeeds: Sallyport serves
    /// (and reports not-ready) while a provider is down or refuses the registration.
    pub fn start_discovery(&self) {
        let current = self.state();
        for index in 0..current.providers.len() {
            // Weak: a gateway that has stopped, or a generation a reload replaced, stops
            // retrying too.
            let state = Arc::downgrade(&current.0);
            tokio::spawn(async move {
                let mut delay = Duration::from_millis(250);
                loop {
                    let Some(state) = state.upgrade() else { return };
                    if prepare(&AppState(state), index).await {
                        return;
                    }
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(30));
                }
            });
        }
    }
}

/// One attempt to make provider `index` of `state` ready: its discovery and keys fetched, its
/// registration (if any) known. `true` once it is.
async fn prepare(state: &AppState, index: usize) -> bool {
    let provider = &state.providers[index];
    let cfg = provider.config();
    if !provider.is_warm()
        && let Err(e) = provider.warm_up().await
    {
        tracing::warn!(provider = %cfg.name, error = %e, "provider not reachable yet");
        return false;
    }
    if cfg.client_id.is_known() {
        return true;
    }
    let metadata = oidc::registration::ClientMetadata::new(&state.config, cfg);
    match oidc::registration::ensure(provider, &state.sessions, &metadata).await {
        Ok(()) => true,
        Err(e) => {
            tracing::error!(provider = %cfg.name, error = %telemetry::chain(&e), "registration at the provider failed; not ready");
            false
        }
    }
}

/// Every minute, drops the opened records of timed-out sessions, until the gateway is gone.
fn forget_ended_sessions(sessions: &Arc<session::manager::Sessions>) {
    let sessions = Arc::downgrade(sessions);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(60));
        tick.tick().await;
        loop {
            tick.tick().await;
            let Some(sessions) = sessions.upgrade() else {
                return;
            };
            let dropped = sessions.forget_ended();
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
    let first = gateway.state();
    // Listener settings need a restart (a reload keeps them): read once.
    let server = &first.config.server;
    let grace = server.shutdown_grace;
    let limits = listener::ConnLimits {
        header_read_timeout: server.header_read_timeout,
        max_connections: server.max_connections,
    };
    let sessions = Arc::clone(&first.sessions);
    drop(first);
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    // Weak, so that nothing of a stopped gateway outlives `serve` (an embedded file store
    // must be free to reopen at once).
    let live = Arc::downgrade(&gateway.live);
    // When shutdown began: WebSockets get what is left of the grace once the listeners are done.
    let began = Arc::new(std::sync::OnceLock::new());
    let began_at = Arc::clone(&began);
    tokio::spawn(async move {
        shutdown.await;
        began_at.get_or_init(tokio::time::Instant::now);
        // WebSockets get the same grace as requests: a Close frame (1001) at once, at the
        // next frame boundary, and until the grace period ends to finish (below). Every
        // generation shares the relays.
        if let Some(live) = live.upgrade() {
            live.current.load().state.proxy.relays().shut_down();
        }
        let _ = stop_tx.send(true);
    });
    let mut sides = Vec::new();
    let mut side =
        |name: &'static str, tcp: TcpListener, router: fn(&Generation) -> &axum::Router| {
            let live = Arc::clone(&gateway.live);
            sides.push(tokio::spawn(listener::run(
                name,
                tcp,
                limits,
                move |peer| {
                    let live = Arc::clone(&live);
                    move |mut req: axum::extract::Request| {
                        req.extensions_mut().insert(ConnectInfo(peer));
                        // The generation current now answers, whatever a reload does meanwhile.
                        let router = router(&live.current.load()).clone();
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
        side("admin", admin, |g| &g.admin);
    }
    if let Some(forward) = listeners.forward_auth {
        side("forward_auth", forward, |g| &g.forward);
    }
    forget_ended_sessions(&sessions);
    let live = Arc::downgrade(&gateway.live);
    let renewals = tokio::spawn(tokens::background::run(
        move || {
            live.upgrade()
                .map(|l| Arc::clone(&l.current.load().state.0))
        },
        |s: &http::Shared| (&s.broker, &*s.sessions, &s.providers[..]),
        stop_rx.clone(),
        grace,
    ));
    let live = Arc::clone(&gateway.live);
    listener::run(
        "public",
        listeners.public,
        limits,
        move |peer| {
            let live = Arc::clone(&live);
            move |req: axum::extract::Request| live.current.load().public.clone().handle(peer, req)
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
    if !gateway.state().proxy.relays().drained(left).await {
        tracing::warn!(
            ?grace,
            "grace period over; WebSocket relays still finishing their last frame"
        );
    }
    Ok(())
}
