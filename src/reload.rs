//! Configuration reload: which settings a running gateway can take from a new file, which
//! need a restart, and how a reload is asked for (`SIGHUP`, or `POST /admin/reload` through
//! `sallyport reload`).
//!
//! A reload builds the next generation of the gateway's state beside the running one and
//! swaps it in whole; each request runs on the generation current when it arrived. Sessions,
//! the store, the upstream connection pools, open WebSockets and the metrics carry over.

use std::sync::{Arc, OnceLock};

use serde::Serialize;
use tokio::sync::{mpsc, oneshot};

use crate::config::Config;

/// What a reload did.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Settings that changed in the file but keep their running value until a restart.
    pub restart_required: Vec<&'static str>,
    /// Providers, services and routes now served.
    pub providers: usize,
    /// Services now served.
    pub services: usize,
    /// Routes now served.
    pub routes: usize,
}

/// Why a reload changed nothing: every problem, as `check` words it.
#[derive(Debug, Clone)]
pub struct Refused(pub Vec<String>);

/// The outcome of a reload.
pub type Outcome = Result<Report, Refused>;

/// A reload asked for through the admin API, answered when it is done.
pub type Ask = oneshot::Sender<Outcome>;

/// Where the admin API asks for reloads: the process that knows the configuration file (the
/// binary's `main`) takes them. Shared by every generation.
#[derive(Debug, Clone, Default)]
pub struct Requests(Arc<OnceLock<mpsc::Sender<Ask>>>);

impl Requests {
    /// Takes the reload requests from now on (once per gateway).
    ///
    /// # Panics
    /// When called twice.
    pub fn take(&self) -> mpsc::Receiver<Ask> {
        let (tx, rx) = mpsc::channel(4);
        assert!(self.0.set(tx).is_ok(), "reload requests are taken once");
        rx
    }

    /// Asks for a reload and waits for its outcome; `None` when nothing takes requests (a
    /// gateway embedded without a configuration file).
    pub async fn ask(&self) -> Option<Outcome> {
        let tx = self.0.get()?;
        let (reply, outcome) = oneshot::channel();
        tx.send(reply).await.ok()?;
        outcome.await.ok()
    }
}

/// Keeps in `next` the running value of every setting that takes effect only at start
/// (listeners, the session store and cookies, telemetry), and names the ones that differ.
pub(crate) fn keep_running(running: &Config, next: &mut Config) -> Vec<&'static str> {
    let mut changed = Vec::new();
    let (old, new) = (&running.server, &mut next.server);
    if old.listen != new.listen {
        changed.push("server.listen");
        new.listen = old.listen;
    }
    if old.admin_listen != new.admin_listen {
        changed.push("server.admin_listen");
        new.admin_listen = old.admin_listen;
    }
    let forward = |f: &Option<crate::config::ForwardAuthConfig>| f.as_ref().map(|f| f.listen);
    if forward(&old.forward_auth) != forward(&new.forward_auth) {
        changed.push("server.forward_auth.listen");
        match (&old.forward_auth, &mut new.forward_auth) {
            (Some(o), Some(n)) => n.listen = o.listen,
            (o, n) => n.clone_from(o),
        }
    }
    if old.public_url != new.public_url {
        // The redirect URI, the cookies' names and flags, and every registration follow it.
        changed.push("server.public_url");
        new.public_url = old.public_url.clone();
        new.public_origin = old.public_origin.clone();
    }
    if old.max_connections != new.max_connections {
        changed.push("server.max_connections");
        new.max_connections = old.max_connections;
    }
    if old.header_read_timeout != new.header_read_timeout {
        changed.push("server.header_read_timeout");
        new.header_read_timeout = old.header_read_timeout;
    }
    if old.shutdown_grace != new.shutdown_grace {
        changed.push("server.shutdown_grace");
        new.shutdown_grace = old.shutdown_grace;
    }
    let (old, new) = (&running.session, &next.session);
    if old.store != new.store {
        changed.push("session.store");
    }
    if !same_session(old, new) {
        changed.push("session");
    }
    next.session = running.session.clone();
    if running.telemetry.metrics != next.telemetry.metrics {
        changed.push("telemetry.metrics");
    }
    if running.telemetry.otlp != next.telemetry.otlp {
        changed.push("telemetry.otlp");
    }
    next.telemetry = running.telemetry.clone();
    changed
}

/// Whether two `session` sections agree on everything but the store.
fn same_session(a: &crate::config::SessionConfig, b: &crate::config::SessionConfig) -> bool {
    a.cookie.name == b.cookie.name
        && a.cookie.same_site == b.cookie.same_site
        && a.idle_timeout == b.idle_timeout
        && a.absolute_timeout == b.absolute_timeout
        && a.max_pending_logins == b.max_pending_logins
        && a.stream_recheck == b.stream_recheck
        && a.keys.len() == b.keys.len()
        && a.keys.iter().zip(&b.keys).all(|(x, y)| {
            use subtle::ConstantTimeEq as _;
            bool::from(x.expose().ct_eq(y.expose()))
        })
}
