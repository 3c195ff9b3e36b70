//! The `routes` section: client paths, upstream paths, auth modes, methods and limits.

use super::*;

impl Validator {
    pub(super) fn routes(
        &mut self,
        raw: Vec<RawRoute>,
        services: &[ServiceConfig],
        authz: &AuthzConfig,
    ) -> Vec<RouteConfig> {
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
            if let (Some(service), Some(auth)) = (service, auth) {
                self.route_and_token(&key("auth"), auth, &services[service]);
            }
            let require = r
                .require
                .and_then(|req| self.require(&key("require"), req, auth));
            let step_up = r
                .step_up
                .and_then(|raw| self.step_up(&key("step_up"), raw, auth));
            let route_authz = r
                .authz
                .and_then(|raw| self.route_authz(&key("authz"), raw, path.as_deref(), auth, authz));
            if let (Some(path), Some(service), Some(auth)) = (path, service, auth) {
                out.push(RouteConfig {
                    path,
                    service,
                    upstream_path,
                    auth,
                    methods,
                    max_body,
                    max_headers,
                    require,
                    authz: route_authz,
                    step_up,
                });
            }
        }
        out
    }
}

impl Validator {
    /// Whether a route's `auth` reads the session that `key` (which `does` something with it)
    /// needs; an error saying so when not.
    pub(super) fn reads_a_session(
        &mut self,
        key: &str,
        auth: Option<AuthMode>,
        does: &str,
    ) -> bool {
        let why = match auth {
            Some(AuthMode::None) => "auth: none reads no session; use auth: session",
            Some(AuthMode::SessionOrBearer) => {
                "a machine client's bearer has no session; give machine clients a route of their own"
            }
            _ => return true,
        };
        self.err(key, format!("{does}, and {why}"));
        false
    }

    /// `routes[].require`: claim names with the values one of which the session must hold.
    fn require(
        &mut self,
        key: &str,
        raw: crate::config::raw::RawRequire,
        auth: Option<AuthMode>,
    ) -> Option<crate::authz::Require> {
        if !self.reads_a_session(key, auth, "checks the session's claims") {
            return None;
        }
        if raw.claims.is_empty() {
            self.err(
                key,
                "expected claims: { <claim>: [<value>, …] }, e.g. claims: { roles: [admin] }",
            );
            return None;
        }
        let mut claims = Vec::new();
        for (claim, values) in raw.claims {
            if claim.trim().is_empty() || values.is_empty() || values.iter().any(String::is_empty) {
                self.err(
                    &format!("{key}.claims.{claim}"),
                    "expected a claim name and a non-empty list of accepted values, e.g. roles: [admin]",
                );
                continue;
            }
            claims.push((claim, values));
        }
        Some(crate::authz::Require { claims })
    }

    /// `routes[].step_up`: accepted `acr` values and/or a `max_age`.
    fn step_up(
        &mut self,
        key: &str,
        raw: crate::config::raw::RawStepUp,
        auth: Option<AuthMode>,
    ) -> Option<crate::authz::StepUp> {
        if !self.reads_a_session(key, auth, "asks how the session's user logged in") {
            return None;
        }
        let acr = raw.acr.unwrap_or_default();
        if acr.iter().any(|a| !crate::authz::is_acr(a)) {
            self.err(
                &format!("{key}.acr"),
                "expected acr values such as [mfa] or [urn:example:loa:2] (no spaces or quotes)",
            );
            return None;
        }
        let max_age = match raw.max_age {
            None => None,
            Some(text) => match super::super::duration::parse_duration(&text) {
                Some(d) if d.as_secs() > 0 => Some(d),
                _ => {
                    self.err(
                        &format!("{key}.max_age"),
                        "expected a duration of at least 1s such as 15m",
                    );
                    return None;
                }
            },
        };
        if acr.is_empty() && max_age.is_none() {
            self.err(key, "expected acr: [mfa] and/or max_age: 15m");
            return None;
        }
        Some(crate::authz::StepUp { acr, max_age })
    }

    /// A route's `auth` must give its service's token something to work with.
    fn route_and_token(&mut self, key: &str, auth: AuthMode, service: &ServiceConfig) {
        if service.token.kind != TokenKind::Exchange {
            return;
        }
        match auth {
            AuthMode::None => self.err(
                key,
                format!(
                    "service {} exchanges the session's token, and auth: none reads no session; use auth: session (or a client_credentials service for calls without a user)",
                    service.name
                ),
            ),
            AuthMode::SessionOrBearer => self.err(
                key,
                format!(
                    "service {} exchanges the session's token; a machine client's bearer is not exchanged. Route machine clients to a service with token: user, or use auth: session",
                    service.name
                ),
            ),
            AuthMode::Session | AuthMode::Optional => {}
        }
    }
}

fn check_route_path(path: &str) -> Result<(), &'static str> {
    if !path.starts_with('/') {
        return Err("expected a path starting with / such as /api/orders/*");
    }
    let body = path.strip_suffix("/*").unwrap_or(path);
    if body.contains('*') {
        return Err("* is only allowed as the last segment (/api/orders/*)");
    }
    let mut names = HashSet::new();
    for segment in body.split('/').filter(|s| s.contains(['{', '}'])) {
        let name = segment
            .strip_prefix('{')
            .and_then(|s| s.strip_suffix('}'))
            .filter(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'))
            .ok_or(
                "a named segment is a whole segment such as {id}: letters, digits and _ in braces",
            )?;
        if !names.insert(name) {
            return Err("names a segment twice");
        }
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
    for segment in body.split('/').filter(|s| s.contains(['{', '}'])) {
        let name = segment.strip_prefix('{').and_then(|s| s.strip_suffix('}'));
        let known = route_path
            .is_some_and(|p| crate::proxy::routes::param_names(p).any(|n| Some(n) == name));
        if !known {
            return Err(
                "a {name} segment must be a whole segment naming one of the route path's, such as /v1/orders/{id}/*",
            );
        }
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
