//! The `services` section: upstream URLs, the token each receives, its identity headers,
//! timeouts.

use super::*;
use crate::config::raw::{RawToken, RawTokenSpec};

/// `services.<name>.timeout`: how long the upstream may take to send its response headers.
const DEFAULT_UPSTREAM_TIMEOUT: Duration = Duration::from_secs(30);

/// Headers an identity header map may not name: what carries credentials, framing or
/// addressing, and what Sallyport sets itself.
const RESERVED_HEADERS: [&str; 17] = [
    "authorization",
    "proxy-authorization",
    "cookie",
    "set-cookie",
    "host",
    "content-length",
    "content-type",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "upgrade",
    "forwarded",
    "x-correlation-id",
    "dpop",
];

/// The identity headers a service gets when it configures none: the user, the provider that
/// vouched for them (a `sub` is unique only per issuer), and the email once verified.
pub fn default_identity_headers() -> Vec<IdentityHeader> {
    vec![
        IdentityHeader {
            name: HeaderName::from_static("x-auth-request-user"),
            claim: Claim::Sub,
        },
        IdentityHeader {
            name: HeaderName::from_static("x-auth-request-issuer"),
            claim: Claim::Issuer,
        },
        IdentityHeader {
            name: HeaderName::from_static("x-auth-request-email"),
            claim: Claim::VerifiedEmail,
        },
    ]
}

impl Validator {
    pub(super) fn services(
        &mut self,
        raw: indexmap::IndexMap<String, RawService>,
        providers: Option<&[ProviderConfig]>,
    ) -> Vec<ServiceConfig> {
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
            let token = match s.token {
                None => Some(TokenSpec::of(TokenKind::User)),
                Some(RawToken::Kind(kind)) => self.token_shorthand(&key("token"), &kind),
                Some(RawToken::Spec(spec)) => self.token_spec(&key("token"), spec, providers),
            };
            for (field, set) in [
                ("audience", s.audience.is_some()),
                ("scopes", s.scopes.is_some()),
                ("provider", s.provider.is_some()),
                ("resource", s.resource.is_some()),
            ] {
                if set {
                    self.err(
                        &key(field),
                        format!("belongs in the token map: token: {{ kind: exchange (or client_credentials), {field}: … }}"),
                    );
                }
            }
            let headers = match s.headers {
                None => default_identity_headers(),
                Some(map) => self.identity_headers(&key("headers"), map),
            };
            let timeout = self.positive_duration(
                &key("timeout"),
                s.timeout.as_ref(),
                DEFAULT_UPSTREAM_TIMEOUT,
            );
            // An invalid service keeps its name, so routes naming it do not report a second,
            // misleading error.
            let (url, token) = match (url, token) {
                (Some(url), Some(token)) => (url, token),
                _ => (
                    Url::parse("http://invalid.invalid").expect("static URL"),
                    TokenSpec::of(TokenKind::None),
                ),
            };
            let dpop = s.dpop.unwrap_or(false);
            if dpop {
                if token.kind != TokenKind::User {
                    self.err(
                        &key("dpop"),
                        "DPoP proofs go with the user's own token (token: user), which the provider binds to the session's key; remove dpop or set token: user",
                    );
                } else if providers.is_some_and(|ps| !ps.iter().any(|p| p.dpop)) {
                    self.err(
                        &key("dpop"),
                        "no provider binds tokens to a key: set dpop: true on the provider (providers.<name>.dpop) too",
                    );
                }
            } else if token.kind == TokenKind::User
                && providers.is_some_and(|ps| ps.iter().any(|p| p.dpop))
            {
                self.warn(
                    &key("dpop"),
                    "this service gets DPoP-bound user tokens as plain bearer tokens, which a resource server that checks the binding refuses; set dpop: true if it does",
                );
            }
            out.push(ServiceConfig {
                name,
                url,
                token,
                headers,
                timeout,
                dpop,
            });
        }
        out
    }

    fn token_shorthand(&mut self, key: &str, kind: &str) -> Option<TokenSpec> {
        match kind {
            "none" => Some(TokenSpec::of(TokenKind::None)),
            "user" => Some(TokenSpec::of(TokenKind::User)),
            "id_token" => Some(TokenSpec::of(TokenKind::IdToken)),
            "client_credentials" => Some(TokenSpec::of(TokenKind::ClientCredentials)),
            "exchange" => {
                self.err(
                    key,
                    "an exchange needs its target: write token: { kind: exchange, audience: <the service's audience> } (or resource:)",
                );
                None
            }
            _ => {
                self.err(
                    key,
                    "expected none, user, id_token, or a map with kind: client_credentials or exchange",
                );
                None
            }
        }
    }

    pub(super) fn token_spec(
        &mut self,
        key: &str,
        raw: RawTokenSpec,
        providers: Option<&[ProviderConfig]>,
    ) -> Option<TokenSpec> {
        let sub = |field: &str| format!("{key}.{field}");
        let kind = match self.required(&sub("kind"), raw.kind.as_ref())? {
            "client_credentials" => TokenKind::ClientCredentials,
            "exchange" => TokenKind::Exchange,
            "none" => TokenKind::None,
            "user" => TokenKind::User,
            "id_token" => TokenKind::IdToken,
            _ => {
                self.err(
                    &sub("kind"),
                    "expected client_credentials or exchange (or none, user, id_token)",
                );
                return None;
            }
        };
        let mut spec = TokenSpec::of(kind);
        if !spec.is_brokered() {
            let given = [
                ("provider", raw.provider.is_some()),
                ("audience", raw.audience.is_some()),
                ("resource", raw.resource.is_some()),
                ("scopes", raw.scopes.is_some()),
                ("subject_token", raw.subject_token.is_some()),
            ];
            for (field, _) in given.iter().filter(|(_, set)| *set) {
                self.err(
                    &sub(field),
                    "applies only to kind: client_credentials or exchange; remove it",
                );
            }
            return Some(spec);
        }
        let mut ok = true;
        if let Some(provider) = raw.provider {
            if let Some(providers) = providers
                && !providers.iter().any(|p| p.name == provider)
            {
                let known: Vec<&str> = providers.iter().map(|p| p.name.as_str()).collect();
                self.err(
                    &sub("provider"),
                    format!(
                        "names no provider under `providers` (known: {})",
                        known.join(", ")
                    ),
                );
                ok = false;
            }
            spec.provider = Some(provider);
        }
        if let Some(audience) = raw.audience {
            if audience.trim().is_empty() || audience.chars().any(char::is_control) {
                self.err(
                    &sub("audience"),
                    "expected a non-empty audience such as billing-api",
                );
                ok = false;
            }
            spec.audience = Some(audience);
        }
        if let Some(resource) = raw.resource {
            // RFC 8707 §2: an absolute URI without a fragment.
            match Url::parse(&resource) {
                Ok(u) if u.fragment().is_none() && u.has_host() => {}
                _ => {
                    self.err(
                        &sub("resource"),
                        "expected an absolute URI without fragment, such as https://billing.example.com",
                    );
                    ok = false;
                }
            }
            spec.resource = Some(resource);
        }
        for (i, scope) in raw.scopes.iter().flatten().enumerate() {
            // RFC 6749 §3.3: printable ASCII except space, `"` and `\`.
            if scope.is_empty()
                || !scope
                    .bytes()
                    .all(|b| b.is_ascii_graphic() && b != b'"' && b != b'\\')
            {
                self.err(
                    &format!("{key}.scopes[{i}]"),
                    "expected one scope token (no spaces, quotes or backslashes)",
                );
                ok = false;
            }
        }
        spec.scopes = raw.scopes.unwrap_or_default();
        match (kind, raw.subject_token.as_deref()) {
            (_, None) | (TokenKind::Exchange, Some("access_token")) => {}
            (TokenKind::Exchange, Some("id_token")) => spec.subject_token = SubjectToken::IdToken,
            (TokenKind::Exchange, Some(_)) => {
                self.err(&sub("subject_token"), "expected access_token or id_token");
                ok = false;
            }
            (_, Some(_)) => {
                self.err(
                    &sub("subject_token"),
                    "applies only to kind: exchange; remove it",
                );
                ok = false;
            }
        }
        if kind == TokenKind::Exchange && spec.audience.is_none() && spec.resource.is_none() {
            self.err(
                key,
                "an exchange needs audience: or resource: (the service its token is for); without one the provider would hand back a token for any audience, as good as the user's own",
            );
            ok = false;
        }
        ok.then_some(spec)
    }

    fn identity_headers(
        &mut self,
        key: &str,
        map: indexmap::IndexMap<String, String>,
    ) -> Vec<IdentityHeader> {
        let mut out: Vec<IdentityHeader> = Vec::new();
        for (header, claim) in map {
            let here = format!("{key}.{header}");
            let Ok(name) = HeaderName::try_from(header.as_str()) else {
                self.err(&here, "expected a valid HTTP header name such as X-User-Id");
                continue;
            };
            let lower = name.as_str();
            if RESERVED_HEADERS.contains(&lower)
                || lower.starts_with("x-forwarded-")
                || lower.starts_with("sec-")
            {
                self.err(
                    &here,
                    "this header carries credentials, framing or addressing, or Sallyport sets it itself; pick another name such as X-User-Id",
                );
                continue;
            }
            if out.iter().any(|h| h.name == name) {
                self.err(&here, "named twice (header names are case-insensitive)");
                continue;
            }
            let claim = match claim.trim() {
                "" => {
                    self.err(&here, "expected a claim name such as sub, email or roles");
                    continue;
                }
                "sub" => Claim::Sub,
                "iss" => Claim::Issuer,
                "email" => Claim::VerifiedEmail,
                other => Claim::Named(other.to_owned()),
            };
            out.push(IdentityHeader { name, claim });
        }
        out
    }
}
