//! Builds a [`Config`] from YAML text, collecting every problem with its key path.
//!
//! This module reads the text (YAML, `${ENV}` references) and assembles the sections; each
//! section with more than a few keys is checked in a module of its own (`server`,
//! `providers`, `session`, `services`, `routes`), its defaults named as constants at the top.

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

/// `tokens.refresh_before`: how long before expiry an access token is refreshed.
const DEFAULT_REFRESH_BEFORE: Duration = Duration::from_secs(60);
/// `tokens.default_lifetime`: the lifetime assumed for an access token whose provider does
/// not say (no `expires_in`, not a JWT with `exp`).
const DEFAULT_TOKEN_LIFETIME: Duration = Duration::from_secs(300);
/// `csrf.header`.
const DEFAULT_CSRF_HEADER: &str = "X-CSRF-Token";

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
/// Starts a value whose only reference named an unset variable, where that is allowed; the
/// variable's name follows.
pub(super) const UNSET_MARK: char = '\u{E002}';

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
            // An initial access token is needed only until the registration is stored, so it
            // may leave the environment afterwards: startup decides (and names the variable).
            Err(InterpolateError::Unset(name))
                if path.ends_with(".registration.initial_access_token") =>
            {
                *s = format!("{UNSET_MARK}{name}");
            }
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
    /// `authz.policies` is set (even if the file has errors): routes may ask `embedded`.
    policies_given: bool,
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

    fn config(&mut self, raw: RawConfig, base_dir: &Path) -> Option<Config> {
        let server = self.server(raw.server);
        let signing_keys = std::sync::Arc::new(self.signing_keys(raw.signing_keys, base_dir));
        let providers = self.providers(raw.providers, &signing_keys);
        let session = self.session(&raw.session, server.as_ref(), base_dir);
        let admin_token = match raw.admin.token {
            Some(t) if t.len() < 32 => {
                self.err(
                    "admin.token",
                    "is shorter than 32 characters; use a random one, e.g. openssl rand -base64 32",
                );
                None
            }
            Some(t) => {
                if server.as_ref().is_some_and(|s| s.admin_listen.is_none()) {
                    self.warn(
                        "admin.token",
                        "the admin API is served on server.admin_listen, which is not set",
                    );
                }
                Some(ClientSecret::new(t))
            }
            None => None,
        };
        if let (Some(providers), Some(session)) = (&providers, &session)
            && session.store == StoreConfig::Memory
        {
            for p in providers.iter().filter(|p| p.registration.is_some()) {
                self.err(
                    &format!("providers.{}.registration", p.name),
                    "the registration is kept in the session store, and the memory store forgets it: every start would register another client. Use session.store: file (one instance, with session.file.path) or redis",
                );
            }
        }
        let otlp = raw.telemetry.otlp.as_ref().and_then(|o| self.otlp(o));
        let tokens = TokensConfig {
            refresh_before: self.duration(
                "tokens.refresh_before",
                raw.tokens.refresh_before.as_ref(),
                DEFAULT_REFRESH_BEFORE,
            ),
            background_refresh: raw.tokens.background_refresh.unwrap_or(true),
            default_lifetime: self.positive_duration(
                "tokens.default_lifetime",
                raw.tokens.default_lifetime.as_ref(),
                DEFAULT_TOKEN_LIFETIME,
            ),
        };
        let services = self.services(raw.services, providers.as_deref());
        let authz = self.authz(raw.authz, providers.as_deref(), base_dir);
        let routes = self.routes(raw.routes, &services, &authz);
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
        let csrf_header = raw.csrf.header.as_deref().unwrap_or(DEFAULT_CSRF_HEADER);
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
            authz,
            signing_keys,
            telemetry: TelemetryConfig {
                metrics: raw.telemetry.metrics.unwrap_or(true),
                otlp,
            },
            admin_token,
            warnings: Vec::new(),
        })
    }
}

impl Validator {
    /// `telemetry.otlp`: the collector's URL and the sampling ratio.
    fn otlp(&mut self, raw: &super::raw::RawOtlp) -> Option<OtlpConfig> {
        let sample_ratio = match raw.sample_ratio {
            None => 1.0,
            Some(r) if (0.0..=1.0).contains(&r) => r,
            Some(r) => {
                self.err(
                    "telemetry.otlp.sample_ratio",
                    format!("is {r}; give a share between 0 (none) and 1 (every trace)"),
                );
                return None;
            }
        };
        let service_name = match raw.service_name.as_deref() {
            None => "sallyport".to_owned(),
            Some("") => {
                self.err(
                    "telemetry.otlp.service_name",
                    "is empty; leave it out for sallyport",
                );
                return None;
            }
            Some(name) => name.to_owned(),
        };
        let endpoint = self.required("telemetry.otlp.endpoint", raw.endpoint.as_ref())?;
        let mut url = match Url::parse(endpoint) {
            Ok(u) if matches!(u.scheme(), "http" | "https") && u.has_host() => u,
            _ => {
                self.err(
                    "telemetry.otlp.endpoint",
                    "is not an http(s) URL; give the collector's OTLP/HTTP address, e.g. http://127.0.0.1:4318",
                );
                return None;
            }
        };
        // The OTLP exporter spec: a base URL gets the signal's path, a URL with a path is
        // taken as it is.
        if url.path() == "/" {
            url.set_path("/v1/traces");
        }
        Some(OtlpConfig {
            traces_url: url,
            sample_ratio,
            service_name,
        })
    }
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

mod authz;
mod keys;
mod providers;
mod routes;
mod server;
mod services;
pub use services::default_identity_headers;
mod session;
#[cfg(test)]
mod tests;
