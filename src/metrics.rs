//! Prometheus metrics, served as text at `GET /metrics` on `server.admin_listen`.
//!
//! Each gateway owns its registry (`prometheus-client`, the official client): no process-wide
//! recorder, so several gateways in one process (the tests, a configuration reload) never mix
//! their numbers, and nothing is recorded when `telemetry.metrics` is off. Label values are
//! bounded: a route is named by its configured path, never the request's; a method by its class;
//! providers, services and PDPs by their configured names; refusals by their stable error code.
//!
//! On the request path a sample costs a read-locked map lookup and an atomic add; label sets
//! hold `Arc<str>` names from the configuration, so building one allocates nothing.

use std::sync::Arc;
use std::time::Duration;

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Registry;

/// Latency buckets, in seconds: 0.5 ms to 10 s.
const BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

fn histogram() -> Histogram {
    Histogram::new(BUCKETS)
}

/// A name from the configuration (a route path, a service, a provider), shared, not copied.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Name(pub Arc<str>);

impl Name {
    /// A name that is always the same text.
    pub fn of(text: &str) -> Self {
        Self(Arc::from(text))
    }
}

impl EncodeLabelValue for Name {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        EncodeLabelValue::encode(&&*self.0, encoder)
    }
}

/// Which listener answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum Listener {
    /// `server.listen`.
    public,
    /// `server.forward_auth.listen`.
    forward_auth,
    /// `server.admin_listen`.
    admin,
}

/// `read` (GET, HEAD, OPTIONS) or `write` (every other method).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum MethodClass {
    /// Safe methods.
    read,
    /// Unsafe methods.
    write,
}

impl MethodClass {
    /// The class of `method`.
    pub fn of(method: &http::Method) -> Self {
        match *method {
            http::Method::GET | http::Method::HEAD | http::Method::OPTIONS => Self::read,
            _ => Self::write,
        }
    }
}

/// The labels of a request.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct RequestLabels {
    /// The listener.
    pub listener: Listener,
    /// The configured route path, or Sallyport's own endpoint, or `unmatched`.
    pub route: Name,
    /// The method class.
    pub method: MethodClass,
    /// The status code.
    pub status: u16,
}

/// A response extension naming the route a request was decided under (set by the proxy path
/// and forward-auth; Sallyport's own endpoints are named by their path).
#[derive(Debug, Clone)]
pub struct RouteLabel(pub Name);

/// Labels with a service name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct ServiceLabels {
    /// The service.
    pub service: Name,
}

/// Labels of an upstream failure.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct UpstreamErrorLabels {
    /// The service.
    pub service: Name,
    /// `timeout`, `connect` or `other`.
    pub kind: &'static str,
}

/// Labels of a login event.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct LoginLabels {
    /// `started`, `completed` or `failed`.
    pub event: &'static str,
    /// Why it failed (a stable error code); empty otherwise.
    pub reason: &'static str,
}

/// What a token request was for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum TokenGrant {
    /// A session's refresh.
    refresh,
    /// A token exchange for a service.
    exchange,
    /// Sallyport's own client-credentials token.
    client_credentials,
}

/// How a call to another party ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum Outcome {
    /// It answered as asked.
    ok,
    /// It answered with a refusal.
    refused,
    /// It could not be reached, or answered something unusable.
    unavailable,
}

/// Labels of a token request.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct TokenLabels {
    /// The provider asked.
    pub provider: Name,
    /// The grant.
    pub grant: TokenGrant,
    /// How it ended.
    pub outcome: Outcome,
}

/// Labels of a store operation.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct StoreLabels {
    /// The operation (`load`, `create`, `update`, `lock`, …).
    pub op: &'static str,
    /// `ok` or `error`.
    pub outcome: &'static str,
}

/// Labels of a PDP decision.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct DecisionLabels {
    /// The decision point (`embedded` for the Cedar engine).
    pub pdp: Name,
    /// `permit`, `deny` or `error`.
    pub decision: &'static str,
    /// Whether the decision cache answered.
    pub cached: bool,
}

/// Labels of a provider document fetch.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct FetchLabels {
    /// The provider.
    pub provider: Name,
    /// `discovery` or `jwks`.
    pub document: &'static str,
    /// How it ended.
    pub outcome: Outcome,
}

/// Labels of a refusal.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct RefusalLabels {
    /// The stable error code (`rate_limited`, `csrf_failed`, `not_authenticated`, …).
    pub code: &'static str,
}

/// Sallyport's own endpoints, as route labels.
/// `path` when it is one of Sallyport's own endpoints (a bounded name for a request).
pub fn own_endpoint(path: &str) -> Option<&'static str> {
    OWN.iter().find(|p| **p == path).copied()
}

const OWN: [&str; 13] = [
    "/auth/login",
    "/auth/callback",
    "/auth/logout",
    "/auth/logout/continue",
    "/auth/backchannel-logout",
    "/auth/health",
    "/auth/ready",
    "/auth/verify",
    "/auth/forward",
    "/api/auth/session",
    "/api/auth/evaluations",
    "/.well-known/jwks.json",
    "/metrics",
];

/// Every metric of one gateway.
pub struct Metrics {
    registry: Registry,
    /// [`OWN`] as labels, and `unmatched` last.
    own: Vec<Name>,
    /// Requests answered.
    pub requests: Family<RequestLabels, Histogram>,
    /// Upstream calls, time to response headers.
    pub upstream: Family<ServiceLabels, Histogram>,
    /// Upstream calls that failed.
    pub upstream_errors: Family<UpstreamErrorLabels, Counter>,
    /// Login starts, completions and failures.
    pub logins: Family<LoginLabels, Counter>,
    /// Token requests of the broker.
    pub tokens: Family<TokenLabels, Counter>,
    /// Session store operations.
    pub store: Family<StoreLabels, Counter>,
    /// Authorization decisions.
    pub decisions: Family<DecisionLabels, Counter>,
    /// Discovery and JWKS fetches.
    pub fetches: Family<FetchLabels, Counter>,
    /// Requests refused, by error code.
    pub refusals: Family<RefusalLabels, Counter>,
    /// Sessions in the embedded store (set at each scrape).
    pub sessions: Gauge,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A registry with every metric, prefixed `sallyport_`.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("sallyport");
        let requests = Family::<RequestLabels, Histogram>::new_with_constructor(
            histogram as fn() -> Histogram,
        );
        let upstream = Family::<ServiceLabels, Histogram>::new_with_constructor(
            histogram as fn() -> Histogram,
        );
        let this = Self {
            registry: Registry::default(),
            own: OWN
                .iter()
                .chain(std::iter::once(&"unmatched"))
                .map(|p| Name::of(p))
                .collect(),
            requests,
            upstream,
            upstream_errors: Family::default(),
            logins: Family::default(),
            tokens: Family::default(),
            store: Family::default(),
            decisions: Family::default(),
            fetches: Family::default(),
            refusals: Family::default(),
            sessions: Gauge::default(),
        };
        registry.register(
            "http_request_duration_seconds",
            "Requests answered, by listener, route (its configured path), method class and status; time to response headers",
            this.requests.clone(),
        );
        registry.register(
            "upstream_duration_seconds",
            "Calls to upstream services, time to response headers",
            this.upstream.clone(),
        );
        registry.register(
            "upstream_errors",
            "Calls to upstream services that failed (timeout, connect, other)",
            this.upstream_errors.clone(),
        );
        registry.register(
            "logins",
            "Logins started, completed and failed (with the error code)",
            this.logins.clone(),
        );
        registry.register(
            "token_requests",
            "Token requests: refreshes, exchanges and client credentials, by provider and outcome",
            this.tokens.clone(),
        );
        registry.register(
            "store_operations",
            "Session store operations, by operation and outcome",
            this.store.clone(),
        );
        registry.register(
            "authz_decisions",
            "Authorization decisions, by decision point, decision and whether the cache answered",
            this.decisions.clone(),
        );
        registry.register(
            "provider_fetches",
            "Discovery and JWKS fetches, by provider and outcome",
            this.fetches.clone(),
        );
        registry.register(
            "refusals",
            "Requests refused, by error code (rate_limited, csrf_failed, not_authenticated, ...)",
            this.refusals.clone(),
        );
        registry.register(
            "sessions",
            "Sessions in the embedded session store (memory, file)",
            this.sessions.clone(),
        );
        registry.register(
            "build",
            "Version and build of this Sallyport",
            Info::new(vec![
                ("version", crate::build::VERSION),
                ("commit", crate::build::COMMIT),
                ("rustc", crate::build::RUSTC),
            ]),
        );
        Self { registry, ..this }
    }

    /// Records a request.
    pub fn request(
        &self,
        listener: Listener,
        route: Name,
        method: &http::Method,
        status: u16,
        took: Duration,
    ) {
        self.requests
            .get_or_create(&RequestLabels {
                listener,
                route,
                method: MethodClass::of(method),
                status,
            })
            .observe(took.as_secs_f64());
    }

    /// The label of a request to `path` that no route decided: Sallyport's own endpoint, or
    /// `unmatched` (never the request's own path, which anyone can vary).
    pub fn own_route(&self, path: &str) -> Name {
        let i = OWN.iter().position(|p| *p == path).unwrap_or(OWN.len());
        self.own[i].clone()
    }

    /// Counts a refused request.
    pub fn refusal(&self, code: &'static str) {
        self.refusals.get_or_create(&RefusalLabels { code }).inc();
    }

    /// Counts a login event.
    pub fn login(&self, event: &'static str, reason: &'static str) {
        self.logins
            .get_or_create(&LoginLabels { event, reason })
            .inc();
    }

    /// Counts a token request.
    pub fn token(&self, provider: &str, grant: TokenGrant, outcome: Outcome) {
        self.tokens
            .get_or_create(&TokenLabels {
                provider: Name::of(provider),
                grant,
                outcome,
            })
            .inc();
    }

    /// Counts a discovery or JWKS fetch.
    pub fn fetch(&self, provider: &str, document: &'static str, outcome: Outcome) {
        self.fetches
            .get_or_create(&FetchLabels {
                provider: Name::of(provider),
                document,
                outcome,
            })
            .inc();
    }

    /// Counts an authorization decision.
    pub fn decision(&self, pdp: &Name, decision: &'static str, cached: bool) {
        self.decisions
            .get_or_create(&DecisionLabels {
                pdp: pdp.clone(),
                decision,
                cached,
            })
            .inc();
    }

    /// Counts a store operation.
    pub fn store_op(&self, op: &'static str, ok: bool) {
        self.store
            .get_or_create(&StoreLabels {
                op,
                outcome: if ok { "ok" } else { "error" },
            })
            .inc();
    }

    /// The text exposition (OpenMetrics) of every metric.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(16 * 1024);
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String does not fail");
        out
    }
}
