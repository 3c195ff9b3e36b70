//! Forwarding to upstream services: a pooled HTTP client, streamed bodies both ways, header
//! rewriting, upstream timeouts, and WebSocket upgrades relayed as raw bytes.
//!
//! Which route and which token are decided by the caller (`http::api`); this module only
//! forwards.

pub mod guard;
pub mod headers;
pub mod routes;
mod upgrade;

pub use upgrade::Relays;

use std::time::Duration;

use axum::body::Body;
use http::{HeaderName, HeaderValue, Request, Response, StatusCode, Uri, Version, header};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use tracing::Instrument as _;

use crate::config::{Config, IdentityHeader, TokenKind};
use crate::error::{ApiError, ErrorCode};
use headers::Injected;
use routes::RouteTable;

type Connector = hyper_rustls::HttpsConnector<HttpConnector>;

/// A configured upstream service.
#[derive(Debug)]
pub struct Upstream {
    /// The key under `services`.
    pub name: String,
    /// `scheme://authority[/base]`, without a trailing slash.
    base: String,
    /// Which kind of token it gets.
    pub token: TokenKind,
    /// The identity headers it gets.
    pub headers: Vec<IdentityHeader>,
    timeout: Duration,
    /// `Host` for its requests: its authority, built once (the client would format it anew
    /// for every request that comes without one).
    host: HeaderValue,
    /// Whether it gets DPoP-bound tokens with a proof (`services.<name>.dpop`).
    pub dpop: bool,
    /// Its name, as the metrics label it.
    label: crate::metrics::Name,
}

/// The forwarding half of the gateway.
pub struct Proxy {
    client: Client<Connector, Body>,
    routes: RouteTable,
    upstreams: Vec<Upstream>,
    /// Every configured identity header name: a client's copies never reach any upstream.
    strip: Vec<HeaderName>,
    /// The identity headers of a page under no route (forward-auth).
    default_headers: Vec<IdentityHeader>,
    our_cookies: [String; 3],
    proto: &'static str,
    public_host: HeaderValue,
    relays: Relays,
    /// Upstream latency and errors, when metrics are on.
    metrics: Option<std::sync::Arc<crate::metrics::Metrics>>,
}

impl std::fmt::Debug for Proxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Proxy")
            .field("upstreams", &self.upstreams)
            .finish()
    }
}

/// Why the proxy could not be built.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// The system's root certificates could not be loaded.
    #[error("loading root certificates for https upstreams")]
    RootCertificates(#[source] std::io::Error),
}

impl Proxy {
    /// Builds the route table and the pooled client from the config.
    ///
    /// # Errors
    /// When root certificates cannot be loaded.
    pub fn new(config: &Config) -> Result<Self, BuildError> {
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(Some(Duration::from_secs(5)));
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_native_roots()
            .map_err(BuildError::RootCertificates)?
            .https_or_http()
            .enable_http1()
            .enable_http2()
            .wrap_connector(http);
        // Idle connections are reaped only with both a timer and an idle timeout (hyper#3640).
        let client = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .pool_max_idle_per_host(256)
            .build(https);
        Ok(Self::on(client, Relays::default(), config))
    }

    /// The proxy of a reloaded `config`, on this one's connection pools and WebSocket relays
    /// (open connections and WebSockets carry over). Cookie names and the public origin need a
    /// restart, so they stay.
    pub fn reconfigured(&self, config: &Config) -> Self {
        let mut next = Self::on(self.client.clone(), self.relays.clone(), config);
        next.our_cookies.clone_from(&self.our_cookies);
        next.proto = self.proto;
        next.public_host = self.public_host.clone();
        next
    }

    fn on(client: Client<Connector, Body>, relays: Relays, config: &Config) -> Self {
        let upstreams = config
            .services
            .iter()
            .map(|s| Upstream {
                name: s.name.clone(),
                base: s.url.as_str().trim_end_matches('/').to_owned(),
                token: s.token.kind,
                headers: s.headers.clone(),
                timeout: s.timeout,
                host: authority(&s.url),
                dpop: s.dpop,
                label: crate::metrics::Name::of(&s.name),
            })
            .collect();
        let mut strip: Vec<HeaderName> = Vec::new();
        for h in config.services.iter().flat_map(|s| &s.headers) {
            if !strip.contains(&h.name) && !h.name.as_str().starts_with("x-auth-request-") {
                strip.push(h.name.clone());
            }
        }
        let cookie = &config.session.cookie;
        Self {
            client,
            routes: RouteTable::new(&config.routes),
            upstreams,
            strip,
            default_headers: crate::config::default_identity_headers(),
            our_cookies: [
                cookie.name.clone(),
                cookie.login_name.clone(),
                cookie.logout_name.clone(),
            ],
            proto: if config.server.is_https() {
                "https"
            } else {
                "http"
            },
            public_host: authority(&config.server.public_url),
            relays,
            metrics: None,
        }
    }

    /// The open WebSocket relays.
    pub fn relays(&self) -> &Relays {
        &self.relays
    }

    /// The route table.
    pub fn routes(&self) -> &RouteTable {
        &self.routes
    }

    /// Records upstream calls in `metrics`.
    #[must_use]
    pub fn with_metrics(
        mut self,
        metrics: Option<std::sync::Arc<crate::metrics::Metrics>>,
    ) -> Self {
        self.metrics = metrics;
        self
    }

    /// The upstream of a route.
    pub fn upstream(&self, index: usize) -> &Upstream {
        &self.upstreams[index]
    }

    /// The identity headers of a page under no route (forward-auth).
    pub fn default_headers(&self) -> &[IdentityHeader] {
        &self.default_headers
    }

    /// The names of Sallyport's own cookies, which never reach an upstream.
    pub fn our_cookies(&self) -> [&str; 3] {
        [
            &self.our_cookies[0],
            &self.our_cookies[1],
            &self.our_cookies[2],
        ]
    }

    /// Fills in the parts of [`Injected`] the proxy knows, for a request to `upstream`.
    pub fn injected<'a>(
        &'a self,
        upstream: usize,
        correlation_id: &'a HeaderValue,
        client_ip: std::net::IpAddr,
    ) -> Injected<'a> {
        Injected {
            upstream_host: &self.upstreams[upstream].host,
            bearer: None,
            dpop: None,
            identity: None,
            strip: &self.strip,
            correlation_id,
            client_ip,
            proto: self.proto,
            host: &self.public_host,
        }
    }

    /// Sends `req` to `upstream` at `path` (keeping the query), streaming both bodies. With a
    /// `guard`, a WebSocket or a streamed response (one without `Content-Length`) ends when
    /// the guard's session does.
    ///
    /// # Errors
    /// `504 upstream_timeout` when no response headers arrive in time, `502
    /// upstream_unavailable` when the connection is refused, `502 upstream_error` otherwise.
    pub async fn forward(
        &self,
        mut req: Request<Body>,
        upstream: usize,
        path: &str,
        add: &Injected<'_>,
        guard: Option<guard::SessionGuard>,
    ) -> Result<Response<Body>, ApiError> {
        let up = &self.upstreams[upstream];
        let query = req.uri().query();
        let mut target =
            String::with_capacity(up.base.len() + path.len() + query.map_or(0, |q| q.len() + 1));
        target.push_str(&up.base);
        target.push_str(path);
        if let Some(q) = query {
            target.push('?');
            target.push_str(q);
        }
        let uri: Uri = target.parse().map_err(|_| {
            ApiError::new(ErrorCode::InvalidPath)
                .with_message("the request path cannot be forwarded")
        })?;

        let upgrade = is_upgrade(req.headers());
        let client_upgrade = upgrade.then(|| hyper::upgrade::on(&mut req));
        let (mut parts, body) = req.into_parts();
        headers::to_upstream(&mut parts.headers, &self.our_cookies(), upgrade, add);
        if let (Some(key), Some(token)) = (add.dpop, add.bearer) {
            // RFC 9449 §7.1: the proof names this request (method, URL without the query)
            // and the token (`ath`).
            let proof = key.proof(
                parts.method.as_str(),
                &target[..up.base.len() + path.len()],
                Some(token),
                None,
                crate::oidc::dpop::now(),
            );
            match HeaderValue::try_from(proof) {
                Ok(v) => {
                    parts.headers.insert("dpop", v);
                }
                Err(_) => tracing::warn!("a DPoP proof is not valid header text; not sent"),
            }
        }
        // The upstream call's span (until the response headers), whose context the upstream
        // continues.
        let span = tracing::debug_span!(
            target: crate::telemetry::trace::TARGET,
            "upstream",
            otel.kind = "client",
            sallyport.service = %up.name,
            http.request.method = %parts.method,
            http.response.status_code = tracing::field::Empty,
        );
        let unrecorded = parts
            .extensions
            .get::<crate::telemetry::trace::Unrecorded>();
        crate::telemetry::trace::inject(&span, unrecorded, &mut parts.headers);
        parts.uri = uri;
        parts.version = Version::HTTP_11;
        let upstream_req = Request::from_parts(parts, body);

        let started = std::time::Instant::now();
        let answer = tokio::time::timeout(up.timeout, self.client.request(upstream_req))
            .instrument(span.clone())
            .await;
        match &answer {
            Ok(Ok(resp)) => {
                span.record("http.response.status_code", resp.status().as_u16());
            }
            Err(_) => crate::telemetry::trace::failed(&span, "timeout"),
            Ok(Err(_)) => crate::telemetry::trace::failed(&span, "upstream_error"),
        }
        if let Some(m) = &self.metrics {
            let labels = crate::metrics::ServiceLabels {
                service: up.label.clone(),
            };
            m.upstream
                .get_or_create(&labels)
                .observe(started.elapsed().as_secs_f64());
            let failed = match &answer {
                Err(_) => Some("timeout"),
                Ok(Err(e)) if e.is_connect() => Some("connect"),
                Ok(Err(_)) => Some("other"),
                Ok(Ok(_)) => None,
            };
            if let Some(kind) = failed {
                m.upstream_errors
                    .get_or_create(&crate::metrics::UpstreamErrorLabels {
                        service: labels.service,
                        kind,
                    })
                    .inc();
            }
        }
        let mut resp =
            match answer {
                Err(_) => {
                    return Err(ApiError::new(ErrorCode::UpstreamTimeout).with_cause(
                        UpstreamFailure(format!("{} timed out after {:?}", up.name, up.timeout)),
                    ));
                }
                Ok(Err(e)) if e.is_connect() => {
                    return Err(ApiError::new(ErrorCode::UpstreamUnavailable)
                        .with_cause(UpstreamFailure(format!("{}: {e}", up.name))));
                }
                Ok(Err(e)) => {
                    return Err(ApiError::new(ErrorCode::UpstreamError)
                        .with_cause(UpstreamFailure(format!("{}: {e}", up.name))));
                }
                Ok(Ok(resp)) => resp,
            };
        let switching = resp.status() == StatusCode::SWITCHING_PROTOCOLS;
        let mut guard = guard;
        if let (Some(client_upgrade), true) = (client_upgrade, switching) {
            self.relays
                .relay(client_upgrade, hyper::upgrade::on(&mut resp), guard.take());
        }
        let (mut parts, body) = resp.into_parts();
        headers::to_browser(
            &mut parts.headers,
            &self.our_cookies(),
            upgrade && switching,
        );
        let body = match guard {
            // A body of known length ends by itself; only open-ended streams need watching.
            Some(guard) if !parts.headers.contains_key(header::CONTENT_LENGTH) => {
                Body::new(guard::Guarded::new(Body::new(body), guard))
            }
            _ => Body::new(body),
        };
        Ok(Response::from_parts(parts, body))
    }
}

/// A URL's authority as a `Host` value: the host, and the port unless it is the scheme's
/// default (as HTTP clients send it).
fn authority(url: &url::Url) -> HeaderValue {
    let host = url.host_str().unwrap_or("localhost");
    let text = match url.port() {
        Some(port) => format!("{host}:{port}"),
        None => host.to_owned(),
    };
    HeaderValue::from_str(&text).expect("a URL host is header-safe")
}

/// An upstream failure, for the log.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct UpstreamFailure(String);

/// Whether a request asks to switch protocols (a WebSocket handshake).
pub fn is_upgrade(headers: &http::HeaderMap) -> bool {
    headers.contains_key(header::UPGRADE)
        && headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .any(|v| {
                v.split(',')
                    .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
            })
}
