//! Builds a [`Config`] from YAML text, collecting every problem with its key path.

use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use base64::Engine as _;
use http::{HeaderName, Method};
use serde_json::Value;
use url::Url;

use super::duration::parse_duration;
use super::env::{EnvSource, InterpolateError, interpolate};
use super::raw::{RawConfig, RawProvider, RawRoute, RawService};
use super::*;
use crate::secret::{ClientSecret, SessionKey};

const DEFAULT_SCOPES: [&str; 4] = ["openid", "profile", "email", "offline_access"];
const DEFAULT_ALGS: [jsonwebtoken::Algorithm; 9] = [
    jsonwebtoken::Algorithm::RS256,
    jsonwebtoken::Algorithm::RS384,
    jsonwebtoken::Algorithm::RS512,
    jsonwebtoken::Algorithm::PS256,
    jsonwebtoken::Algorithm::PS384,
    jsonwebtoken::Algorithm::PS512,
    jsonwebtoken::Algorithm::ES256,
    jsonwebtoken::Algorithm::ES384,
    jsonwebtoken::Algorithm::EdDSA,
];

pub(super) fn parse(
    text: &str,
    base_dir: &Path,
    env: &dyn EnvSource,
) -> Result<Config, ConfigErrors> {
    let mut v = Validator::default();
    let protected = protect_references(text);
    let mut tree: Value = match serde_saphyr::from_str(&protected) {
        Ok(Value::Null) => Value::Object(Default::default()),
        Ok(tree) => tree,
        Err(e) => {
            // The YAML error may quote the offending line, which can hold a secret: keep only
            // its position and first sentence.
            let message = e.to_string();
            let first = message.lines().next().unwrap_or("invalid YAML");
            v.err("", format!("invalid YAML: {}", strip_snippet(first)));
            return Err(ConfigErrors(v.errors));
        }
    };
    interpolate_tree(&mut tree, &mut String::new(), env, &mut v);
    if !v.errors.is_empty() {
        return Err(ConfigErrors(v.errors));
    }
    let raw: RawConfig = match serde_path_to_error::deserialize(tree) {
        Ok(raw) => raw,
        Err(e) => {
            let path = e.path().to_string();
            let path = if path == "." { String::new() } else { path };
            v.err(&path, describe_serde_error(&e.into_inner().to_string()));
            return Err(ConfigErrors(v.errors));
        }
    };
    let config = v.config(raw, base_dir);
    match config {
        Some(mut config) if v.errors.is_empty() => {
            config.warnings = std::mem::take(&mut v.warnings);
            Ok(config)
        }
        _ => Err(ConfigErrors(v.errors)),
    }
}

/// `{` and `}` are flow indicators in YAML, so `keys: [${KEY}]` would not parse. Valid
/// references are rewritten to private-use characters before parsing and restored before
/// interpolation; nothing else in the text changes.
const OPEN: char = '\u{E000}';
const CLOSE: char = '\u{E001}';

fn protect_references(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(pos) = rest.find('$') {
        out.push_str(&rest[..pos]);
        rest = &rest[pos..];
        if rest.starts_with("$$") {
            out.push_str("$$");
            rest = &rest[2..];
            continue;
        }
        let name_len = rest[1..]
            .strip_prefix('{')
            .and_then(|after| after.find('}').map(|end| (after, end)))
            .filter(|(after, end)| {
                *end > 0
                    && after[..*end]
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'_')
            })
            .map(|(_, end)| end);
        match name_len {
            Some(len) => {
                out.push('$');
                out.push(OPEN);
                out.push_str(&rest[2..2 + len]);
                out.push(CLOSE);
                rest = &rest[3 + len..];
            }
            None => {
                out.push('$');
                rest = &rest[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// Drops anything after a quote mark, so that no value from the file is echoed.
fn strip_snippet(message: &str) -> String {
    match message.find(['`', '"', '\'']) {
        Some(i) => message[..i].trim_end().trim_end_matches(':').to_owned(),
        None => message.to_owned(),
    }
}

/// Rewrites serde's messages (which may quote a value) into ones that only name the problem.
fn describe_serde_error(message: &str) -> String {
    if let Some(rest) = message.strip_prefix("unknown field `") {
        let field = rest.split('`').next().unwrap_or("");
        let expected = rest
            .split_once("expected ")
            .map(|(_, e)| format!("; expected {}", e.replace('`', "")))
            .unwrap_or_default();
        return format!("unknown key `{field}`{expected}");
    }
    if let Some(rest) = message.strip_prefix("missing field `") {
        let field = rest.split('`').next().unwrap_or("");
        return format!("missing required key `{field}`");
    }
    if message.starts_with("invalid type") {
        let expected = message
            .rsplit_once("expected ")
            .map(|(_, e)| e.to_owned())
            .unwrap_or_else(|| "another type".into());
        return format!("wrong type: expected {expected}");
    }
    strip_snippet(message)
}

fn interpolate_tree(value: &mut Value, path: &mut String, env: &dyn EnvSource, v: &mut Validator) {
    match value {
        Value::String(s) => match interpolate(&s.replace(OPEN, "{").replace(CLOSE, "}"), env) {
            Ok(new) => *s = new,
            Err(InterpolateError::Unset(name)) => v.err(
                path,
                format!("environment variable {name} is not set; export it or remove the reference"),
            ),
            Err(InterpolateError::Malformed) => v.err(
                path,
                "malformed ${...} reference; write ${NAME} with letters, digits and _ (or $$ for a literal $)",
            ),
        },
        Value::Array(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                let len = path.len();
                path.push_str(&format!("[{i}]"));
                interpolate_tree(item, path, env, v);
                path.truncate(len);
            }
        }
        Value::Object(map) => {
            for (key, item) in map.iter_mut() {
                let len = path.len();
                if !path.is_empty() {
                    path.push('.');
                }
                path.push_str(key);
                interpolate_tree(item, path, env, v);
                path.truncate(len);
            }
        }
        _ => {}
    }
}

#[derive(Default)]
struct Validator {
    errors: Vec<ConfigError>,
    warnings: Vec<ConfigError>,
}

impl Validator {
    fn err(&mut self, path: &str, message: impl Into<String>) {
        self.errors.push(ConfigError {
            path: path.to_owned(),
            message: message.into(),
        });
    }

    fn warn(&mut self, path: &str, message: impl Into<String>) {
        self.warnings.push(ConfigError {
            path: path.to_owned(),
            message: message.into(),
        });
    }

    fn required<'a>(&mut self, path: &str, value: Option<&'a String>) -> Option<&'a str> {
        match value.map(|s| s.trim()) {
            Some(s) if !s.is_empty() => Some(s),
            _ => {
                self.err(path, "is required");
                None
            }
        }
    }

    fn duration(&mut self, path: &str, value: Option<&String>, default: Duration) -> Duration {
        match value {
            None => default,
            Some(text) => parse_duration(text).unwrap_or_else(|| {
                self.err(
                    path,
                    "expected a duration such as 90s, 30m or 8h (units ms, s, m, h, d)",
                );
                default
            }),
        }
    }

    fn positive_duration(
        &mut self,
        path: &str,
        value: Option<&String>,
        default: Duration,
    ) -> Duration {
        let d = self.duration(path, value, default);
        if d.is_zero() {
            self.err(path, "must be longer than 0s");
            return default;
        }
        d
    }

    fn socket_addr(&mut self, path: &str, value: &str) -> Option<SocketAddr> {
        value.parse().ok().or_else(|| {
            self.err(
                path,
                "expected an address such as 127.0.0.1:8080 or [::]:8080",
            );
            None
        })
    }

    fn config(&mut self, raw: RawConfig, base_dir: &Path) -> Option<Config> {
        let server = self.server(raw.server);
        let providers = self.providers(raw.providers);
        let session = self.session(&raw.session, server.as_ref(), base_dir);
        let tokens = TokensConfig {
            refresh_before: self.duration(
                "tokens.refresh_before",
                raw.tokens.refresh_before.as_ref(),
                Duration::from_secs(60),
            ),
        };
        if !raw.signing_keys.is_empty() {
            self.err(
                "signing_keys",
                "signing keys (private_key_jwt, published JWKS) are not supported by this version yet; remove the key",
            );
        }
        let services = self.services(raw.services);
        let routes = self.routes(raw.routes, &services);
        if let Some(providers) = &providers
            && providers.iter().all(|p| p.bearer_audiences.is_empty())
        {
            for (i, r) in routes.iter().enumerate() {
                if r.auth == AuthMode::SessionOrBearer {
                    self.err(
                            &format!("routes[{i}].auth"),
                            "session_or_bearer needs providers.<name>.bearer_audiences: the audience(s) your API's access tokens carry (not the client id, which ID tokens carry)",
                        );
                }
            }
        }
        let static_files = raw.static_files.and_then(|s| {
            let frame_ancestors = self.frame_ancestors(s.frame_ancestors.as_deref());
            let dir = self.required("static.dir", s.dir.as_ref())?;
            Some(StaticConfig {
                dir: base_dir.join(dir),
                spa_fallback: s.spa_fallback,
                frame_ancestors,
            })
        });
        let csrf_header = raw.csrf.header.as_deref().unwrap_or("X-CSRF-Token");
        let csrf = CsrfConfig {
            header: HeaderName::try_from(csrf_header).unwrap_or_else(|_| {
                self.err(
                    "csrf.header",
                    "expected a valid HTTP header name such as X-CSRF-Token",
                );
                HeaderName::from_static("x-csrf-token")
            }),
        };
        let mut allowed_origins = Vec::new();
        for (i, origin) in raw.cors.allowed_origins.iter().enumerate() {
            match Url::parse(origin) {
                Ok(url)
                    if matches!(url.scheme(), "http" | "https")
                        && url.path() == "/"
                        && url.query().is_none()
                        && !origin.ends_with('/') =>
                {
                    allowed_origins.push(url.origin().ascii_serialization());
                }
                _ => self.err(
                    &format!("cors.allowed_origins[{i}]"),
                    "expected an origin such as https://app.example.com (scheme, host, optional port; no path, no trailing slash, no *)",
                ),
            }
        }
        Some(Config {
            server: server?,
            providers: providers?,
            session: session?,
            tokens,
            services,
            routes,
            static_files,
            csrf,
            cors: CorsConfig { allowed_origins },
            warnings: Vec::new(),
        })
    }

    fn server(&mut self, raw: Option<raw::RawServer>) -> Option<ServerConfig> {
        let Some(raw) = raw else {
            self.err(
                "server",
                "is required (at least server.listen and server.public_url)",
            );
            return None;
        };
        let listen = self
            .required("server.listen", raw.listen.as_ref())
            .and_then(|l| self.socket_addr("server.listen", l));
        let listen_addr = listen;
        let admin_listen = raw
            .admin_listen
            .as_deref()
            .and_then(|l| self.socket_addr("server.admin_listen", l));
        let public_url = self
            .required("server.public_url", raw.public_url.as_ref())
            .and_then(|text| self.public_url(text));
        let mut trusted_proxies = Vec::new();
        for (i, cidr) in raw.trusted_proxies.iter().enumerate() {
            match parse_cidr(cidr) {
                Some(net) => trusted_proxies.push(net),
                None => self.err(
                    &format!("server.trusted_proxies[{i}]"),
                    "expected an IP address or CIDR such as 10.0.0.0/8",
                ),
            }
        }
        let shutdown_grace = self.duration(
            "server.shutdown_grace",
            raw.shutdown_grace.as_ref(),
            Duration::from_secs(10),
        );
        let header_read_timeout = self.positive_duration(
            "server.header_read_timeout",
            raw.header_read_timeout.as_ref(),
            Duration::from_secs(30),
        );
        let max_connections = match raw.max_connections {
            Some(0) => {
                self.err("server.max_connections", "must be at least 1");
                10_000
            }
            Some(n) => n as usize,
            None => 10_000,
        };
        let rate_limit = (
            match raw.rate_limit.as_ref().and_then(|r| r.limit) {
                Some(0) => {
                    self.err("server.rate_limit.limit", "must be at least 1");
                    60
                }
                Some(n) => n,
                None => 60,
            },
            self.positive_duration(
                "server.rate_limit.window",
                raw.rate_limit.as_ref().and_then(|r| r.window.as_ref()),
                Duration::from_secs(60),
            ),
        );
        let forward_auth = raw.forward_auth.and_then(|f| {
            let listen = self
                .required("server.forward_auth.listen", f.listen.as_ref())
                .and_then(|l| self.socket_addr("server.forward_auth.listen", l));
            let edge = match f.edge.as_deref() {
                Some("nginx") => Some(Edge::Nginx),
                Some("traefik") => Some(Edge::Traefik),
                Some("caddy") => Some(Edge::Caddy),
                _ => {
                    self.err(
                        "server.forward_auth.edge",
                        "expected nginx, traefik or caddy: the edge proxy that calls /auth/verify",
                    );
                    None
                }
            };
            if listen.is_some() && listen == listen_addr {
                self.err(
                    "server.forward_auth.listen",
                    "must differ from server.listen: browsers must not reach forward-auth answers, which carry tokens",
                );
                return None;
            }
            Some(ForwardAuthConfig {
                listen: listen?,
                edge: edge?,
            })
        });
        let public_url = public_url?;
        if public_url.scheme() == "https" && trusted_proxies.is_empty() {
            self.warn(
                "server.trusted_proxies",
                "empty while public_url is https: if a TLS terminator or load balancer is in front of Sallyport, every browser arrives from its address (one rate-limit bucket for everyone, its address in X-Forwarded-For); list its address or network here",
            );
        }
        Some(ServerConfig {
            header_read_timeout,
            max_connections,
            forward_auth,
            rate_limit,
            listen: listen?,
            public_origin: public_url.origin().ascii_serialization(),
            public_url,
            admin_listen,
            trusted_proxies,
            shutdown_grace,
        })
    }

    /// `static.frame_ancestors`: `self` and `none` (quoted or not) or origins such as
    /// `https://portal.example.com` (`https://*.example.com` too), as CSP sources.
    fn frame_ancestors(&mut self, raw: Option<&[String]>) -> Vec<String> {
        const KEY: &str = "static.frame_ancestors";
        let Some(raw) = raw else {
            return vec!["'self'".to_owned()];
        };
        let mut sources = Vec::new();
        for (i, text) in raw.iter().enumerate() {
            let source = match text.trim_matches('\'') {
                "self" => "'self'".to_owned(),
                "none" => "'none'".to_owned(),
                origin
                    if (origin.starts_with("https://") || origin.starts_with("http://"))
                        && origin.len() > "https://".len()
                        && !origin.bytes().any(|b| {
                            b.is_ascii_whitespace() || matches!(b, b';' | b',' | b'\'' | b'"')
                        })
                        && !origin
                            .trim_start_matches("https://")
                            .trim_start_matches("http://")
                            .contains('/') =>
                {
                    origin.to_owned()
                }
                _ => {
                    self.err(
                        &format!("{KEY}[{i}]"),
                        "expected self, none, or an origin such as https://portal.example.com",
                    );
                    continue;
                }
            };
            sources.push(source);
        }
        if sources.is_empty() || (sources.len() > 1 && sources.iter().any(|s| s == "'none'")) {
            self.err(KEY, "list self and/or origins, or none alone");
            return vec!["'self'".to_owned()];
        }
        sources
    }

    fn public_url(&mut self, text: &str) -> Option<Url> {
        const KEY: &str = "server.public_url";
        let Ok(url) = Url::parse(text) else {
            self.err(
                KEY,
                "expected an absolute URL such as https://app.example.com",
            );
            return None;
        };
        if url.path() != "/" || url.query().is_some() || url.fragment().is_some() {
            self.err(
                KEY,
                "expected an origin without path, query or fragment (Sallyport serves at the root)",
            );
            return None;
        }
        match url.scheme() {
            "https" => Some(url),
            "http" if is_localhost(&url) => Some(url),
            "http" => {
                self.err(
                    KEY,
                    "plain http is only allowed for localhost development; use an https URL (cookies must be Secure)",
                );
                None
            }
            _ => {
                self.err(KEY, "expected an http(s) URL");
                None
            }
        }
    }

    fn providers(
        &mut self,
        raw: Option<indexmap::IndexMap<String, RawProvider>>,
    ) -> Option<Vec<ProviderConfig>> {
        let raw = match raw {
            Some(raw) if !raw.is_empty() => raw,
            _ => {
                self.err(
                    "providers",
                    "at least one provider is required (issuer, client_id, client_secret)",
                );
                return None;
            }
        };
        let mut out = Vec::new();
        for (name, p) in raw {
            let key = |field: &str| format!("providers.{name}.{field}");
            let issuer = self
                .required(&key("issuer"), p.issuer.as_ref())
                .and_then(|issuer| match Url::parse(issuer) {
                    Ok(u) if u.scheme() == "https" || (u.scheme() == "http" && is_loopback(&u)) => {
                        if u.query().is_some() || u.fragment().is_some() {
                            self.err(&key("issuer"), "an issuer has no query or fragment");
                            None
                        } else {
                            Some(issuer.to_owned())
                        }
                    }
                    Ok(_) => {
                        self.err(
                            &key("issuer"),
                            "expected an https URL (plain http only for a provider on localhost)",
                        );
                        None
                    }
                    Err(_) => {
                        self.err(
                            &key("issuer"),
                            "expected a URL such as https://login.example.com/realms/app",
                        );
                        None
                    }
                });
            let client_id = self
                .required(&key("client_id"), p.client_id.as_ref())
                .map(str::to_owned);
            let client_auth = match p.client_auth.as_deref().unwrap_or("client_secret_basic") {
                "client_secret_basic" => Some(ClientAuth::ClientSecretBasic),
                "client_secret_post" => Some(ClientAuth::ClientSecretPost),
                "private_key_jwt" => {
                    self.err(
                        &key("client_auth"),
                        "private_key_jwt is not supported by this version yet; use client_secret_basic or client_secret_post",
                    );
                    None
                }
                _ => {
                    self.err(
                        &key("client_auth"),
                        "expected one of client_secret_basic, client_secret_post",
                    );
                    None
                }
            };
            let client_secret = self
                .required(&key("client_secret"), p.client_secret.as_ref())
                .map(ClientSecret::new);
            let scopes: Vec<String> = p
                .scopes
                .unwrap_or_else(|| DEFAULT_SCOPES.iter().map(|s| s.to_string()).collect());
            if !scopes.iter().any(|s| s == "openid") {
                self.err(&key("scopes"), "must include openid");
            }
            for (i, param) in p.login_params.iter().enumerate() {
                const RESERVED: [&str; 9] = [
                    "client_id",
                    "redirect_uri",
                    "response_type",
                    "scope",
                    "state",
                    "nonce",
                    "code_challenge",
                    "code_challenge_method",
                    "return_to",
                ];
                if RESERVED.contains(&param.as_str()) {
                    self.err(
                        &format!("providers.{name}.login_params[{i}]"),
                        "this parameter is set by Sallyport itself and cannot be passed through",
                    );
                }
            }
            let mut id_token_algs = Vec::new();
            match p.id_token_algs {
                None => id_token_algs.extend(DEFAULT_ALGS),
                Some(algs) => {
                    for (i, alg) in algs.iter().enumerate() {
                        match alg.parse::<jsonwebtoken::Algorithm>() {
                            Ok(a) if DEFAULT_ALGS.contains(&a) => id_token_algs.push(a),
                            _ => self.err(
                                &format!("providers.{name}.id_token_algs[{i}]"),
                                "expected an asymmetric JWS algorithm: RS256, RS384, RS512, PS256, PS384, PS512, ES256, ES384 or EdDSA",
                            ),
                        }
                    }
                }
            }
            let discovery_ttl = self.positive_duration(
                &key("discovery_ttl"),
                p.discovery_ttl.as_ref(),
                Duration::from_secs(3600),
            );
            let clock_skew = self.duration(
                &key("clock_skew"),
                p.clock_skew.as_ref(),
                Duration::from_secs(60),
            );
            if let (Some(issuer), Some(client_id), Some(client_secret), Some(client_auth)) =
                (issuer, client_id, client_secret, client_auth)
            {
                out.push(ProviderConfig {
                    name,
                    issuer,
                    client_id,
                    client_secret,
                    client_auth,
                    scopes,
                    login_params: p.login_params,
                    userinfo: p.userinfo.unwrap_or(true),
                    discovery_ttl,
                    id_token_algs,
                    clock_skew,
                    bearer_audiences: p.bearer_audiences,
                });
            }
        }
        Some(out)
    }

    fn session(
        &mut self,
        raw: &raw::RawSession,
        server: Option<&ServerConfig>,
        base_dir: &Path,
    ) -> Option<SessionConfig> {
        let store = match raw.store.as_deref().unwrap_or("memory") {
            "memory" => Some(StoreConfig::Memory),
            "file" => {
                let path = raw
                    .file
                    .as_ref()
                    .and_then(|f| f.path.as_deref())
                    .unwrap_or("./data/sessions.db");
                Some(StoreConfig::File {
                    path: base_dir.join(path),
                })
            }
            "redis" => {
                let r = raw.redis.as_ref();
                let redis_url = |text: &str| {
                    url::Url::parse(text).is_ok_and(|u| {
                        matches!(u.scheme(), "redis" | "rediss" | "valkey" | "valkeys")
                            && u.has_host()
                    })
                };
                const EXPECTED: &str = "expected a redis:// or rediss:// URL such as redis://127.0.0.1:6379 (user and password may go before the host)";
                let cluster: Vec<String> = r.and_then(|r| r.cluster.clone()).unwrap_or_default();
                let mut valid = true;
                for (i, node) in cluster.iter().enumerate() {
                    if !redis_url(node) {
                        self.err(&format!("session.redis.cluster[{i}]"), EXPECTED);
                        valid = false;
                    }
                }
                if !cluster.is_empty() && r.is_some_and(|r| r.url.is_some()) {
                    self.err(
                        "session.redis",
                        "set either url (one server) or cluster (Redis Cluster nodes), not both",
                    );
                    valid = false;
                }
                let mut sentinel = None;
                if let Some(s) = r.and_then(|r| r.sentinel.as_ref()) {
                    if !cluster.is_empty() {
                        self.err("session.redis", "set either cluster or sentinel, not both");
                        valid = false;
                    }
                    let master = s.master.clone().filter(|m| !m.is_empty());
                    if master.is_none() {
                        self.err(
                            "session.redis.sentinel.master",
                            "is required: the name the Sentinels monitor the master by",
                        );
                        valid = false;
                    }
                    if s.nodes.is_empty() {
                        self.err(
                            "session.redis.sentinel.nodes",
                            "at least one Sentinel URL is required, such as redis://10.0.0.1:26379",
                        );
                        valid = false;
                    }
                    for (i, node) in s.nodes.iter().enumerate() {
                        if !redis_url(node) {
                            self.err(&format!("session.redis.sentinel.nodes[{i}]"), EXPECTED);
                            valid = false;
                        }
                    }
                    let nodes = s
                        .nodes
                        .iter()
                        .cloned()
                        .map(crate::secret::RedisUrl::new)
                        .collect();
                    sentinel = master.map(|m| (m, nodes));
                }
                let url = r
                    .and_then(|r| r.url.clone())
                    .unwrap_or_else(|| "redis://127.0.0.1:6379".into());
                if cluster.is_empty() && !redis_url(&url) {
                    self.err("session.redis.url", EXPECTED);
                    valid = false;
                }
                let timeout = self.positive_duration(
                    "session.redis.timeout",
                    r.and_then(|r| r.timeout.as_ref()),
                    Duration::from_secs(1),
                );
                let key_prefix = r
                    .and_then(|r| r.key_prefix.clone())
                    .unwrap_or_else(|| "sallyport:".into());
                valid.then(|| StoreConfig::Redis {
                    url: crate::secret::RedisUrl::new(url),
                    cluster: cluster
                        .into_iter()
                        .map(crate::secret::RedisUrl::new)
                        .collect(),
                    sentinel,
                    key_prefix,
                    timeout,
                })
            }
            _ => {
                self.err("session.store", "expected one of memory, file, redis");
                None
            }
        };
        let secure = server.is_none_or(ServerConfig::is_https);
        let same_site = match raw.cookie.same_site.as_deref().unwrap_or("lax") {
            "lax" | "Lax" => Some(SameSite::Lax),
            "strict" | "Strict" => Some(SameSite::Strict),
            "none" | "None" => {
                self.err(
                    "session.cookie.same_site",
                    "none would send the session cookie on cross-site requests; use lax or strict",
                );
                None
            }
            _ => {
                self.err("session.cookie.same_site", "expected lax or strict");
                None
            }
        };
        let default_name = if secure {
            "__Host-sallyport"
        } else {
            "sallyport"
        };
        let name = raw
            .cookie
            .name
            .clone()
            .unwrap_or_else(|| default_name.to_owned());
        if name.is_empty()
            || !name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        {
            self.err(
                "session.cookie.name",
                "expected letters, digits, '-', '_' or '.'",
            );
        } else if name.starts_with("__Host-") && !secure {
            self.err(
                "session.cookie.name",
                "a __Host- cookie needs https; with an http://localhost public_url use a name without the prefix (default: sallyport)",
            );
        } else if secure && !name.starts_with("__Host-") {
            // Allowed (some deployments share the cookie across paths), but weaker: say so.
            self.warn(
                "session.cookie.name",
                "without the __Host- prefix, a sibling subdomain can plant a cookie of this name; keep the default unless you must",
            );
        }
        let login_name = format!("{name}-login");
        let logout_name = format!("{name}-logout");
        let idle_timeout = self.positive_duration(
            "session.idle_timeout",
            raw.idle_timeout.as_ref(),
            Duration::from_secs(30 * 60),
        );
        let absolute_timeout = self.positive_duration(
            "session.absolute_timeout",
            raw.absolute_timeout.as_ref(),
            Duration::from_secs(8 * 3600),
        );
        let stream_recheck = self.positive_duration(
            "session.stream_recheck",
            raw.stream_recheck.as_ref(),
            Duration::from_secs(60),
        );
        if stream_recheck > Duration::from_secs(60) {
            self.err(
                "session.stream_recheck",
                "at most 60s: an open WebSocket must not outlive its session by longer",
            );
        }
        let mut keys = Vec::new();
        if raw.keys.is_empty() {
            self.err(
                "session.keys",
                "at least one 32-byte key is required; generate one with `openssl rand -base64 32` and pass it as ${SALLYPORT_SESSION_KEY}",
            );
        }
        for (i, key) in raw.keys.iter().enumerate() {
            match decode_key(key) {
                Ok(k) => keys.push(k),
                Err(len) => self.err(
                    &format!("session.keys[{i}]"),
                    match len {
                        Some(n) => format!(
                            "expected 32 bytes, base64-encoded, but it decodes to {n} bytes; generate one with `openssl rand -base64 32`"
                        ),
                        None => "expected 32 bytes, base64-encoded (standard or URL-safe); generate one with `openssl rand -base64 32`".to_owned(),
                    },
                ),
            }
        }
        let max_pending_logins = match raw.max_pending_logins {
            None => 10_000,
            Some(0) => {
                self.err("session.max_pending_logins", "must be at least 1");
                10_000
            }
            Some(n) => n.min(10_000_000) as usize,
        };
        Some(SessionConfig {
            store: store?,
            cookie: CookieConfig {
                name,
                login_name,
                logout_name,
                same_site: same_site?,
                secure,
            },
            idle_timeout,
            absolute_timeout,
            keys,
            max_pending_logins,
            stream_recheck: stream_recheck.min(Duration::from_secs(60)),
        })
    }

    fn services(&mut self, raw: indexmap::IndexMap<String, RawService>) -> Vec<ServiceConfig> {
        let mut out = Vec::new();
        for (name, s) in raw {
            let key = |field: &str| format!("services.{name}.{field}");
            let url = self
                .required(&key("url"), s.url.as_ref())
                .and_then(|text| match Url::parse(text) {
                    Ok(u)
                        if matches!(u.scheme(), "http" | "https")
                            && u.has_host()
                            && u.query().is_none() =>
                    {
                        Some(u)
                    }
                    _ => {
                        self.err(
                            &key("url"),
                            "expected an http(s) URL such as http://127.0.0.1:7000 (no query)",
                        );
                        None
                    }
                });
            let token = match s.token.as_deref().unwrap_or("user") {
                "none" => Some(TokenMode::None),
                "user" => Some(TokenMode::User),
                "id_token" => Some(TokenMode::IdToken),
                "client_credentials" | "exchange" => {
                    self.err(
                        &key("token"),
                        "client_credentials and exchange are not supported by this version yet; use user, id_token or none",
                    );
                    None
                }
                _ => {
                    self.err(
                        &key("token"),
                        "expected one of none, user, id_token, client_credentials, exchange",
                    );
                    None
                }
            };
            if s.audience.is_some() || s.scopes.is_some() || s.provider.is_some() {
                self.err(
                    &name_key(&name),
                    "audience, scopes and provider apply to client_credentials and exchange, which this version does not support yet",
                );
            }
            let timeout = self.positive_duration(
                &key("timeout"),
                s.timeout.as_ref(),
                Duration::from_secs(30),
            );
            if let (Some(url), Some(token)) = (url, token) {
                out.push(ServiceConfig {
                    name,
                    url,
                    token,
                    timeout,
                });
            } else {
                // Keep the name so routes naming it do not report a second, misleading error.
                out.push(ServiceConfig {
                    name,
                    url: Url::parse("http://invalid.invalid").expect("static URL"),
                    token: TokenMode::None,
                    timeout,
                });
            }
        }
        out
    }

    fn routes(&mut self, raw: Vec<RawRoute>, services: &[ServiceConfig]) -> Vec<RouteConfig> {
        let mut out = Vec::new();
        let mut seen = HashSet::new();
        for (i, r) in raw.into_iter().enumerate() {
            let key = |field: &str| format!("routes[{i}].{field}");
            let path = self.required(&key("path"), r.path.as_ref()).and_then(|p| {
                if let Err(why) = check_route_path(p) {
                    self.err(&key("path"), why);
                    None
                } else if !seen.insert(p.to_owned()) {
                    self.err(&key("path"), "another route has the same path");
                    None
                } else {
                    Some(p.to_owned())
                }
            });
            let service = self
                .required(&key("service"), r.service.as_ref())
                .and_then(|name| {
                    let found = services.iter().position(|s| s.name == name);
                    if found.is_none() {
                        let known: Vec<&str> = services.iter().map(|s| s.name.as_str()).collect();
                        self.err(
                            &key("service"),
                            format!(
                                "names no service under `services` (known: {})",
                                if known.is_empty() {
                                    "none".to_owned()
                                } else {
                                    known.join(", ")
                                }
                            ),
                        );
                    }
                    found
                });
            let upstream_path = match r.upstream_path {
                None => None,
                Some(up) => match check_upstream_path(&up, path.as_deref()) {
                    Ok(()) => Some(up),
                    Err(why) => {
                        self.err(&key("upstream_path"), why);
                        None
                    }
                },
            };
            let auth = match r.auth.as_deref().unwrap_or("session") {
                "session" => Some(AuthMode::Session),
                "optional" => Some(AuthMode::Optional),
                "session_or_bearer" => Some(AuthMode::SessionOrBearer),
                "none" => Some(AuthMode::None),
                _ => {
                    self.err(
                        &key("auth"),
                        "expected one of session, optional, none, session_or_bearer",
                    );
                    None
                }
            };
            let methods = r.methods.map(|methods| {
                let mut parsed = Vec::new();
                for (j, m) in methods.iter().enumerate() {
                    let upper = m.to_ascii_uppercase();
                    match Method::from_bytes(upper.as_bytes()) {
                        Ok(method) if !upper.is_empty() => parsed.push(method),
                        _ => self.err(
                            &format!("routes[{i}].methods[{j}]"),
                            "expected an HTTP method such as GET or POST",
                        ),
                    }
                }
                parsed
            });
            let mut size = |field: &str, value: Option<&String>| {
                value.and_then(|v| {
                    let parsed = super::size::parse_size(v);
                    if parsed.is_none() {
                        self.err(&key(field), "expected a size such as 512KiB, 10MB or 1GiB (units B, KB, MB, GB, KiB, MiB, GiB)");
                    }
                    parsed
                })
            };
            let max_body = size("max_body", r.max_body.as_ref());
            let max_headers =
                size("max_headers", r.max_headers.as_ref()).unwrap_or(super::DEFAULT_MAX_HEADERS);
            if let (Some(path), Some(service), Some(auth)) = (path, service, auth) {
                out.push(RouteConfig {
                    path,
                    service,
                    upstream_path,
                    auth,
                    methods,
                    max_body,
                    max_headers,
                });
            }
        }
        out
    }
}

fn name_key(name: &str) -> String {
    format!("services.{name}")
}

fn check_route_path(path: &str) -> Result<(), &'static str> {
    if !path.starts_with('/') {
        return Err("expected a path starting with / such as /api/orders/*");
    }
    let body = path.strip_suffix("/*").unwrap_or(path);
    if body.contains('*') {
        return Err("* is only allowed as the last segment (/api/orders/*)");
    }
    check_segments(body)
}

fn check_upstream_path(up: &str, route_path: Option<&str>) -> Result<(), &'static str> {
    if !up.starts_with('/') || up.starts_with("//") || up.contains("://") || up.contains('\\') {
        return Err(
            "expected a relative path starting with / such as /v1/orders/* (no scheme, host or //)",
        );
    }
    if up.contains(['?', '#']) {
        return Err("expected a path without query or fragment");
    }
    let body = up.strip_suffix("/*").unwrap_or(up);
    if body.contains('*') {
        return Err("* is only allowed as the last segment (/v1/orders/*)");
    }
    if up.ends_with("/*") && route_path.is_some_and(|p| !p.ends_with("/*")) {
        return Err("ends with /* but the route path has no /* to fill it");
    }
    check_segments(body)
}

fn check_segments(path: &str) -> Result<(), &'static str> {
    if path.len() > 1 && path.contains("//") {
        return Err("expected no empty segments (//)");
    }
    if path.split('/').any(|s| s == "." || s == "..") {
        return Err("expected no . or .. segments");
    }
    if path.to_ascii_lowercase().contains('%') {
        return Err("expected a plain path without percent-encoding");
    }
    if path
        .bytes()
        .any(|b| b.is_ascii_control() || b == b' ' || b == b'?' || b == b'#')
    {
        return Err("expected a path without spaces, control characters, ? or #");
    }
    Ok(())
}

fn decode_key(text: &str) -> Result<SessionKey, Option<usize>> {
    use base64::engine::general_purpose::{STANDARD_NO_PAD, URL_SAFE_NO_PAD};
    let trimmed = text.trim().trim_end_matches('=');
    let bytes = STANDARD_NO_PAD
        .decode(trimmed)
        .or_else(|_| URL_SAFE_NO_PAD.decode(trimmed))
        .map_err(|_| None)?;
    let len = bytes.len();
    let array: [u8; 32] = bytes.try_into().map_err(|_| Some(len))?;
    Ok(SessionKey::new(array))
}

fn parse_cidr(text: &str) -> Option<(IpAddr, u8)> {
    let (addr, prefix) = match text.split_once('/') {
        Some((a, p)) => (a.parse::<IpAddr>().ok()?, Some(p.parse::<u8>().ok()?)),
        None => (text.parse::<IpAddr>().ok()?, None),
    };
    let max = if addr.is_ipv4() { 32 } else { 128 };
    let prefix = prefix.unwrap_or(max);
    (prefix <= max).then_some((addr, prefix))
}

fn is_localhost(url: &Url) -> bool {
    match url.host() {
        Some(url::Host::Domain(d)) => d == "localhost" || d.ends_with(".localhost"),
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    }
}

fn is_loopback(url: &Url) -> bool {
    is_localhost(url)
}

#[cfg(test)]
mod tests;
