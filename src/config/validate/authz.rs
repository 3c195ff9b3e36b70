//! The `authz` section (PDPs, the subject) and each route's `authz` block.

use super::*;
use crate::authz::{Actions, RouteAuthz, Template};
use crate::config::raw::{RawAction, RawAuthz, RawRouteAuthz, RawToken};

/// `authz.pdps.<name>.timeout`: time allowed for a PDP's answer.
const DEFAULT_PDP_TIMEOUT: Duration = Duration::from_millis(500);
/// `authz.pdps.<name>.cache.ttl`: how long a permit is reused.
const DEFAULT_PERMIT_TTL: Duration = Duration::from_secs(30);
/// `authz.pdps.<name>.cache.deny_ttl`: how long a denial is reused.
const DEFAULT_DENY_TTL: Duration = Duration::from_secs(5);
/// `authz.pdps.<name>.cache.max_entries`.
const DEFAULT_CACHE_ENTRIES: u64 = 100_000;

impl Validator {
    pub(super) fn authz(
        &mut self,
        raw: RawAuthz,
        providers: Option<&[ProviderConfig]>,
        base_dir: &Path,
    ) -> AuthzConfig {
        let mut pdps = Vec::new();
        for (name, p) in raw.pdps {
            let key = |field: &str| format!("authz.pdps.{name}.{field}");
            if name == "embedded" {
                self.err(
                    "authz.pdps.embedded",
                    "`embedded` names the in-process engine (authz.policies); give the remote PDP another name",
                );
                continue;
            }
            let url = self
                .required(&key("url"), p.url.as_ref())
                .and_then(|text| match Url::parse(text) {
                    Ok(u)
                        if matches!(u.scheme(), "http" | "https")
                            && u.has_host()
                            && u.username().is_empty()
                            && u.password().is_none()
                            && u.query().is_none()
                            && u.fragment().is_none() =>
                    {
                        Some(u)
                    }
                    _ => {
                        self.err(
                            &key("url"),
                            "expected the PDP's base URL such as https://pdp.example.com (no credentials, query or fragment; evaluations go to {url}/access/v1/evaluation)",
                        );
                        None
                    }
                });
            if let Some(u) = &url
                && u.scheme() == "http"
                && !is_loopback(u)
            {
                self.warn(
                    &key("url"),
                    "plain http to another host: whoever sits on the network can answer permit; use https",
                );
            }
            let auth = match p.auth {
                None => Some(PdpAuth::None),
                Some(a) => match (a.bearer, a.token) {
                    (Some(bearer), None) if !bearer.trim().is_empty() => {
                        Some(PdpAuth::Bearer(ClientSecret::new(bearer)))
                    }
                    (None, Some(RawToken::Spec(spec))) => self
                        .token_spec(&key("auth.token"), spec, providers)
                        .and_then(|spec| {
                            if spec.kind == TokenKind::ClientCredentials {
                                Some(PdpAuth::Token(spec))
                            } else {
                                self.err(
                                    &key("auth.token.kind"),
                                    "a PDP is called with Sallyport's own token: kind: client_credentials",
                                );
                                None
                            }
                        }),
                    _ => {
                        self.err(
                            &key("auth"),
                            "expected one of bearer: ${PDP_TOKEN} or token: { kind: client_credentials, provider: …, audience: … } (or no auth for a PDP on a private network)",
                        );
                        None
                    }
                },
            };
            let timeout =
                self.positive_duration(&key("timeout"), p.timeout.as_ref(), DEFAULT_PDP_TIMEOUT);
            let cache = p.cache.unwrap_or(crate::config::raw::RawDecisionCache {
                ttl: None,
                deny_ttl: None,
                max_entries: None,
            });
            let cache = DecisionCacheConfig {
                ttl: self.duration(&key("cache.ttl"), cache.ttl.as_ref(), DEFAULT_PERMIT_TTL),
                deny_ttl: self.duration(
                    &key("cache.deny_ttl"),
                    cache.deny_ttl.as_ref(),
                    DEFAULT_DENY_TTL,
                ),
                max_entries: cache.max_entries.unwrap_or(DEFAULT_CACHE_ENTRIES),
            };
            if cache.deny_ttl > cache.ttl {
                self.warn(
                    &key("cache.deny_ttl"),
                    "is longer than cache.ttl: a user just granted access would wait longer than one just refused",
                );
            }
            if let (Some(url), Some(auth)) = (url, auth) {
                pdps.push(PdpConfig {
                    name,
                    url,
                    auth,
                    timeout,
                    cache,
                });
            }
        }
        self.policies_given = raw.policies.is_some();
        let policies = raw
            .policies
            .and_then(|file| self.policy_file(&base_dir.join(file)));
        let mut subject = SubjectConfig::default();
        if let Some(s) = raw.subject {
            if let Some(kind) = s.kind {
                if is_identifier(&kind) {
                    subject.kind = kind;
                } else {
                    self.err(
                        "authz.subject.type",
                        "expected a type name such as user (letters, digits, _ and ::)",
                    );
                }
            }
            if let Some(id) = s.id {
                if id.trim().is_empty() {
                    self.err("authz.subject.id", "expected a claim name such as sub");
                } else {
                    subject.id = id;
                }
            }
            if let Some(properties) = s.properties {
                if properties.iter().any(|p| p.trim().is_empty()) {
                    self.err(
                        "authz.subject.properties",
                        "expected claim names such as [roles, groups, email]",
                    );
                }
                subject.properties = properties;
            }
        }
        let evaluations = match raw.evaluations.and_then(|e| e.pdp) {
            Some(name) if name == "embedded" && self.policies_given => Some(PdpRef::Embedded),
            Some(name) => match pdps.iter().position(|p| p.name == name) {
                Some(i) => Some(PdpRef::Remote(i)),
                None => {
                    self.err(
                        "authz.evaluations.pdp",
                        "expected embedded (with authz.policies) or the name of a PDP under authz.pdps",
                    );
                    None
                }
            },
            None => match (pdps.len(), self.policies_given) {
                (0, true) => Some(PdpRef::Embedded),
                (1, false) => Some(PdpRef::Remote(0)),
                (0, false) => None,
                _ => {
                    self.err(
                        "authz.evaluations.pdp",
                        "is required with more than one decision point: which one answers the SPA's questions (POST /api/auth/evaluations)",
                    );
                    None
                }
            },
        };
        AuthzConfig {
            pdps,
            policies,
            subject,
            evaluations,
        }
    }

    /// `authz.policies`: read and parsed, each error with its line and column.
    fn policy_file(&mut self, path: &Path) -> Option<PolicyFile> {
        const KEY: &str = "authz.policies";
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) => {
                self.err(
                    KEY,
                    format!(
                        "cannot read {}: {e}; give the path of a Cedar policy file (relative to the config file)",
                        path.display()
                    ),
                );
                return None;
            }
        };
        match crate::authz::Embedded::parse(&text, &path.display().to_string()) {
            Ok(engine) => {
                if engine.is_empty() {
                    self.warn(KEY, "holds no policy: every request asking it is denied");
                }
                Some(PolicyFile {
                    path: path.to_owned(),
                    text,
                })
            }
            Err(errors) => {
                for e in errors {
                    self.err(KEY, e);
                }
                None
            }
        }
    }

    /// `routes[i].authz`, for a route with `path` and `auth`.
    pub(super) fn route_authz(
        &mut self,
        key: &str,
        raw: RawRouteAuthz,
        path: Option<&str>,
        auth: Option<AuthMode>,
        authz: &AuthzConfig,
    ) -> Option<RouteAuthz> {
        let sub = |field: &str| format!("{key}.{field}");
        if !self.reads_a_session(key, auth, "asks about the session's user") {
            return None;
        }
        let names: Vec<&str> = path
            .map(|p| crate::proxy::routes::param_names(p).collect())
            .unwrap_or_default();
        let pdp = match raw.pdp.as_deref() {
            Some("embedded") if authz.policies.is_some() => Some(PdpRef::Embedded),
            Some("embedded") | None if self.policies_given && authz.policies.is_none() => {
                None // the file's errors are reported
            }
            Some("embedded") => {
                self.err(
                    &sub("pdp"),
                    "embedded needs a policy file: authz.policies: ./policies.cedar",
                );
                None
            }
            Some(name) => match authz.pdps.iter().position(|p| p.name == name) {
                Some(i) => Some(PdpRef::Remote(i)),
                None => {
                    let known: Vec<&str> = authz.pdps.iter().map(|p| p.name.as_str()).collect();
                    self.err(
                        &sub("pdp"),
                        format!(
                            "names no PDP under authz.pdps (known: {})",
                            if known.is_empty() {
                                "none".to_owned()
                            } else {
                                known.join(", ")
                            }
                        ),
                    );
                    None
                }
            },
            None if authz.pdps.is_empty() && self.policies_given => Some(PdpRef::Embedded),
            None if authz.pdps.len() == 1 && authz.policies.is_none() => Some(PdpRef::Remote(0)),
            None => {
                self.err(
                    &sub("pdp"),
                    "is required: embedded (authz.policies) or the name of a PDP under authz.pdps",
                );
                None
            }
        };
        let resource = raw.resource.unwrap_or(crate::config::raw::RawResource {
            kind: None,
            id: None,
        });
        let resource_type = match resource.kind {
            Some(kind) if is_identifier(&kind) => Some(kind),
            Some(_) => {
                self.err(
                    &sub("resource.type"),
                    "expected a type name such as order (letters, digits, _ and ::)",
                );
                None
            }
            None => {
                self.err(
                    &sub("resource.type"),
                    "is required: the kind of thing the route serves, such as order",
                );
                None
            }
        };
        let resource_id = match resource.id {
            None => Some(Template::path()),
            Some(text) => match Template::parse(&text, &names) {
                Ok(t) => Some(t),
                Err(why) => {
                    self.err(&sub("resource.id"), why);
                    None
                }
            },
        };
        let action = match raw.action {
            None => Some(Actions::default()),
            Some(RawAction::One(name)) if is_action(&name) => Some(Actions {
                fixed: Some(name),
                by_method: Vec::new(),
            }),
            Some(RawAction::One(_)) => {
                self.err(
                    &sub("action"),
                    "expected an action name such as read, or a map such as { GET: read, POST: create }",
                );
                None
            }
            Some(RawAction::ByMethod(map)) => {
                let mut by_method = Vec::new();
                for (method, name) in map {
                    let upper = method.to_ascii_uppercase();
                    match Method::from_bytes(upper.as_bytes()) {
                        Ok(m) if !upper.is_empty() && is_action(&name) => {
                            by_method.push((m, name));
                        }
                        _ => self.err(
                            &sub(&format!("action.{method}")),
                            "expected an HTTP method mapped to an action name, such as POST: create",
                        ),
                    }
                }
                Some(Actions {
                    fixed: None,
                    by_method,
                })
            }
        };
        Some(RouteAuthz {
            pdp: pdp?,
            resource_type: resource_type?,
            resource_id: resource_id?,
            action: action?,
        })
    }
}

/// A type name both AuthZEN and the embedded engine (Cedar entity types) accept:
/// identifiers joined by `::`.
fn is_identifier(s: &str) -> bool {
    !s.is_empty()
        && s.split("::").all(|part| {
            let mut bytes = part.bytes();
            bytes
                .next()
                .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
                && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
        })
}

/// An action name: printable, no spaces, not too long.
fn is_action(s: &str) -> bool {
    !s.is_empty() && s.len() <= 64 && s.bytes().all(|b| b.is_ascii_graphic())
}
