//! Header rewriting between the browser and an upstream: strip, then inject.
//!
//! Towards the upstream, everything a client could use to pose as someone else goes first —
//! `Authorization`, `X-Auth-Request-*`, `X-Forwarded-*`, `Forwarded`, our cookies, hop-by-hop
//! headers — and only then are our own added. Towards the browser, hop-by-hop headers and any
//! attempt to set our cookies are removed.

use std::net::IpAddr;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use serde_json::Value;

use crate::config::{Claim, IdentityHeader};

/// `X-Correlation-ID`.
pub static X_CORRELATION_ID: HeaderName = HeaderName::from_static("x-correlation-id");
static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

/// Hop-by-hop headers (RFC 9110 §7.6.1), plus the old `Proxy-Connection` and `Keep-Alive`.
/// As `HeaderName`s, so removing one hashes a known name instead of parsing a string.
static HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
];

/// The claims identity headers are filled from.
#[derive(Debug, Clone, Copy)]
pub struct Claims<'a> {
    /// The user's (or machine client's) `sub`.
    pub sub: &'a str,
    /// The issuer that vouched for it.
    pub issuer: &'a str,
    /// The session's other claims (none for a machine client's bearer).
    pub claims: Option<&'a serde_json::Map<String, Value>>,
}

/// The identity headers one service receives, with the claims that fill them.
#[derive(Debug, Clone, Copy)]
pub struct IdentityHeaders<'a> {
    /// Which headers, from which claims (`services.<name>.headers`).
    pub headers: &'a [IdentityHeader],
    /// Whose.
    pub claims: Claims<'a>,
}

impl IdentityHeaders<'_> {
    /// Calls `f` with each header that has a value. A claim that is absent, an object, or holds
    /// control characters (a CR/LF would split the header) gives none; arrays are joined with
    /// `,` (elements that hold a `,` themselves are left out, so the list stays unambiguous).
    pub fn each(&self, mut f: impl FnMut(&HeaderName, HeaderValue)) {
        for h in self.headers {
            if let Some(v) = claim_value(&h.claim, &self.claims) {
                f(&h.name, v);
            }
        }
    }
}

fn claim_value(claim: &Claim, c: &Claims<'_>) -> Option<HeaderValue> {
    match claim {
        Claim::Sub => header_text(c.sub),
        Claim::Issuer => header_text(c.issuer),
        Claim::VerifiedEmail => {
            let claims = c.claims?;
            let verified = matches!(claims.get("email_verified"), Some(Value::Bool(true)))
                || claims.get("email_verified").and_then(Value::as_str) == Some("true");
            verified
                .then(|| claims.get("email")?.as_str())
                .flatten()
                .and_then(header_text)
        }
        Claim::Named(name) => match c.claims?.get(name)? {
            Value::String(s) => header_text(s),
            Value::Number(n) => header_text(&n.to_string()),
            Value::Bool(b) => header_text(if *b { "true" } else { "false" }),
            Value::Array(items) => {
                let mut joined = String::new();
                for item in items {
                    let text = match item {
                        Value::String(s) => s.clone(),
                        Value::Number(n) => n.to_string(),
                        _ => continue,
                    };
                    if text.is_empty() || text.contains(',') {
                        continue;
                    }
                    if !joined.is_empty() {
                        joined.push(',');
                    }
                    joined.push_str(&text);
                }
                header_text(&joined)
            }
            Value::Object(_) | Value::Null => None,
        },
    }
}

/// A claim as a header value; `None` when empty or when it holds a control character.
fn header_text(text: &str) -> Option<HeaderValue> {
    if text.is_empty() || text.chars().any(char::is_control) {
        return None;
    }
    HeaderValue::from_str(text).ok()
}

/// What Sallyport adds to a request it forwards.
#[derive(Debug)]
pub struct Injected<'a> {
    /// `Authorization: Bearer …` value, when the service gets a token.
    pub bearer: Option<&'a str>,
    /// The key that token is bound to, when the service gets it with a DPoP proof: then it
    /// goes as `Authorization: DPoP …`, and the proxy adds the proof.
    pub dpop: Option<&'a crate::oidc::dpop::DpopKey>,
    /// The identity headers, when the request is someone's.
    pub identity: Option<IdentityHeaders<'a>>,
    /// Identity header names configured for any service: a client's copies are removed.
    pub strip: &'a [HeaderName],
    /// This request's correlation id.
    pub correlation_id: &'a HeaderValue,
    /// The browser's address as Sallyport saw it.
    pub client_ip: IpAddr,
    /// `http` or `https`, from `public_url`.
    pub proto: &'static str,
    /// The public host (`public_url`'s authority), for `X-Forwarded-Host`.
    pub host: &'a HeaderValue,
    /// The upstream's authority, for `Host`.
    pub upstream_host: &'a HeaderValue,
}

/// Client-address headers that upstream frameworks and CDNs trust; Sallyport sets
/// `X-Forwarded-For` itself, so a browser's own copy of any of these is a spoof.
const CLIENT_ADDRESS: [&str; 6] = [
    "x-real-ip",
    "x-client-ip",
    "true-client-ip",
    "x-cluster-client-ip",
    "cf-connecting-ip",
    "fastly-client-ip",
];

/// Whether a browser-sent header could make the upstream believe something Sallyport did not
/// say: identity (`X-Auth-Request-*`), origin and address (`X-Forwarded-*` and the
/// [`CLIENT_ADDRESS`] family), and path overrides (`X-Original-*`, `X-Rewrite-URL`), which some
/// frameworks honour over the request line — a known way past path-based access rules.
fn is_spoofable(name: &str) -> bool {
    name.starts_with("x-auth-request-")
        || name.starts_with("x-forwarded-")
        || name.starts_with("x-original-")
        || name == "x-rewrite-url"
        // A proof of possession is Sallyport's to make, for the token it sends.
        || name == "dpop"
        || CLIENT_ADDRESS.contains(&name)
}

/// The names a `Connection` header lists for removal, besides `keep-alive` and `close`
/// (which are removed anyway); `Upgrade` stays listed out when `upgrade`.
fn connection_listed(headers: &HeaderMap, upgrade: bool) -> Vec<HeaderName> {
    // `Connection` usually says only `keep-alive` or `close`: the common request parses and
    // allocates nothing here.
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|name| {
            !name.eq_ignore_ascii_case("keep-alive") && !name.eq_ignore_ascii_case("close")
        })
        .filter_map(|name| HeaderName::try_from(name).ok())
        .filter(|name| !(upgrade && name == header::UPGRADE))
        .collect()
}

/// Whether `name` is hop-by-hop here: in [`HOP_BY_HOP`], listed in `Connection`, or `Upgrade`
/// outside a WebSocket handshake.
fn is_hop(name: &HeaderName, listed: &[HeaderName], upgrade: bool) -> bool {
    HOP_BY_HOP.contains(name) || (!upgrade && name == header::UPGRADE) || listed.contains(name)
}

/// Removes every header `doomed` names, in one pass over the map's names. Requests and
/// responses rarely carry any of them, so this usually removes (and allocates) nothing, where
/// removing each candidate by name would hash every one of them on every request.
fn remove_where(headers: &mut HeaderMap, doomed: impl Fn(&HeaderName) -> bool) {
    let names: Vec<HeaderName> = headers.keys().filter(|k| doomed(k)).cloned().collect();
    for name in names {
        headers.remove(name);
    }
}

/// A header value made from text built for it, without copying it again.
fn owned_value(text: String) -> Option<HeaderValue> {
    HeaderValue::from_maybe_shared(bytes::Bytes::from(text)).ok()
}

/// The `X-Forwarded-For` value for a client address. IPv4 is written by hand: its `Display`
/// goes through `core::fmt`, which callgrind counted at more than the rest of this rewrite.
fn forwarded_for(ip: IpAddr) -> Option<HeaderValue> {
    let IpAddr::V4(v4) = ip else {
        return owned_value(ip.to_string());
    };
    let mut text = Vec::with_capacity(15);
    for (i, octet) in v4.octets().into_iter().enumerate() {
        if i > 0 {
            text.push(b'.');
        }
        if octet >= 100 {
            text.push(b'0' + octet / 100);
        }
        if octet >= 10 {
            text.push(b'0' + octet / 10 % 10);
        }
        text.push(b'0' + octet % 10);
    }
    HeaderValue::from_maybe_shared(bytes::Bytes::from(text)).ok()
}

/// Rewrites a browser request's headers for the upstream.
pub fn to_upstream(
    headers: &mut HeaderMap,
    our_cookies: &[&str],
    upgrade: bool,
    add: &Injected<'_>,
) {
    let listed = connection_listed(headers, upgrade);
    // `Host`, `X-Correlation-ID` and our `X-Forwarded-For/Proto/Host` are replaced below;
    // `Authorization` only when the service gets a token, so it goes here.
    remove_where(headers, |name| {
        is_hop(name, &listed, upgrade)
            || name == header::AUTHORIZATION
            || name == header::FORWARDED
            || is_spoofable(name.as_str())
            || add.strip.contains(name)
    });
    if upgrade {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    }
    crate::session::cookie::strip(headers, our_cookies);

    // Room for what follows at once, rather than growing the map twice on the way.
    headers.reserve(8);
    headers.insert(header::HOST, add.upstream_host.clone());
    if let Some(bearer) = add.bearer {
        let mut value = String::with_capacity(7 + bearer.len());
        value.push_str(if add.dpop.is_some() {
            "DPoP "
        } else {
            "Bearer "
        });
        value.push_str(bearer);
        match owned_value(value) {
            Some(mut v) => {
                v.set_sensitive(true);
                headers.insert(header::AUTHORIZATION, v);
            }
            None => tracing::warn!("token is not valid header text; not forwarded"),
        }
    }
    // Claims come from the provider, but a value with CR/LF or other control characters never
    // becomes a header (see `IdentityHeaders::each`).
    if let Some(identity) = &add.identity {
        identity.each(|name, value| {
            headers.insert(name.clone(), value);
        });
    }
    headers.insert(X_CORRELATION_ID.clone(), add.correlation_id.clone());
    if let Some(v) = forwarded_for(add.client_ip) {
        headers.insert(X_FORWARDED_FOR.clone(), v);
    }
    headers.insert(
        X_FORWARDED_PROTO.clone(),
        HeaderValue::from_static(add.proto),
    );
    headers.insert(X_FORWARDED_HOST.clone(), add.host.clone());
}

/// Rewrites an upstream response's headers for the browser.
pub fn to_browser(headers: &mut HeaderMap, our_cookies: &[&str], upgrade: bool) {
    let listed = connection_listed(headers, upgrade);
    // Sallyport owns CORS (http::cors): an upstream's `Access-Control-Allow-Origin: *` must not
    // meet our credentialed cookies.
    remove_where(headers, |name| {
        is_hop(name, &listed, upgrade) || name.as_str().starts_with("access-control-")
    });
    if upgrade {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    }
    if headers
        .get_all(header::SET_COOKIE)
        .iter()
        .any(|v| sets_one_of(v, our_cookies))
    {
        let set_cookies: Vec<HeaderValue> = headers
            .get_all(header::SET_COOKIE)
            .iter()
            .cloned()
            .collect();
        headers.remove(header::SET_COOKIE);
        for v in set_cookies
            .into_iter()
            .filter(|v| !sets_one_of(v, our_cookies))
        {
            headers.append(header::SET_COOKIE, v);
        }
    }
}

fn sets_one_of(value: &HeaderValue, names: &[&str]) -> bool {
    let name = value
        .to_str()
        .ok()
        .and_then(|v| v.split_once('='))
        .map(|(n, _)| n.trim());
    name.is_some_and(|n| crate::session::cookie::is_ours(n, names))
}

#[cfg(test)]
mod tests {
    use super::*;

    static CID: HeaderValue = HeaderValue::from_static("cid-1");
    static UPSTREAM: HeaderValue = HeaderValue::from_static("orders.internal:7000");

    fn defaults() -> &'static [IdentityHeader] {
        static DEFAULTS: std::sync::OnceLock<Vec<IdentityHeader>> = std::sync::OnceLock::new();
        DEFAULTS.get_or_init(crate::config::default_identity_headers)
    }

    fn alice() -> &'static serde_json::Map<String, Value> {
        static CLAIMS: std::sync::OnceLock<serde_json::Map<String, Value>> =
            std::sync::OnceLock::new();
        CLAIMS.get_or_init(|| {
            serde_json::json!({
                "email": "alice@example.com",
                "email_verified": true,
                "roles": ["admin", "ops", "has,comma", {"x": 1}],
                "name": "Alice\r\nX-Admin: yes",
                "level": 3,
            })
            .as_object()
            .unwrap()
            .clone()
        })
    }

    fn injected(host: &HeaderValue) -> Injected<'_> {
        Injected {
            bearer: Some("tok"),
            dpop: None,
            identity: Some(IdentityHeaders {
                headers: defaults(),
                claims: Claims {
                    sub: "alice",
                    issuer: "https://id.example.com",
                    claims: Some(alice()),
                },
            }),
            strip: &[],
            correlation_id: &CID,
            client_ip: "127.0.0.1".parse().unwrap(),
            proto: "https",
            host,
            upstream_host: &UPSTREAM,
        }
    }

    #[test]
    fn spoofed_identity_and_our_cookies_are_replaced() {
        let mut h = HeaderMap::new();
        for (k, v) in [
            ("authorization", "Bearer forged"),
            ("x-auth-request-user", "admin"),
            ("x-auth-request-groups", "admins"),
            ("x-forwarded-for", "10.0.0.1"),
            ("x-forwarded-host", "evil.example"),
            ("forwarded", "for=10.0.0.1"),
            ("x-real-ip", "10.0.0.2"),
            ("true-client-ip", "10.0.0.3"),
            ("x-original-url", "/admin"),
            ("x-rewrite-url", "/admin"),
            ("x-original-uri", "/admin"),
            ("x-correlation-id", "forged"),
            ("cookie", "sallyport=secret-id; theme=dark"),
            ("connection", "keep-alive, x-drop-me"),
            ("x-drop-me", "1"),
            ("te", "trailers"),
            ("upgrade", "h2c"),
            ("keep-alive", "timeout=5"),
            ("x-forwarded-prefix", "/admin"),
            ("host", "app.example.com"),
            ("accept", "application/json"),
        ] {
            h.append(k, HeaderValue::from_static(v));
        }
        let host = HeaderValue::from_static("app.example.com");
        to_upstream(
            &mut h,
            &["sallyport", "sallyport-login"],
            false,
            &injected(&host),
        );
        assert_eq!(h["authorization"], "Bearer tok");
        assert_eq!(h["x-auth-request-user"], "alice");
        assert_eq!(h["x-auth-request-email"], "alice@example.com");
        assert_eq!(h["x-auth-request-issuer"], "https://id.example.com");
        assert!(h.get("x-auth-request-groups").is_none());
        assert_eq!(h["x-forwarded-for"], "127.0.0.1");
        assert_eq!(h["x-forwarded-host"], "app.example.com");
        assert_eq!(h["x-forwarded-proto"], "https");
        assert_eq!(h["x-correlation-id"], "cid-1");
        assert!(h.get("forwarded").is_none());
        for spoof in [
            "x-real-ip",
            "true-client-ip",
            "x-original-url",
            "x-rewrite-url",
            "x-original-uri",
        ] {
            assert!(h.get(spoof).is_none(), "{spoof}");
        }
        assert_eq!(h["cookie"], "theme=dark");
        assert!(
            h.get("x-drop-me").is_none() && h.get("te").is_none() && h.get("connection").is_none()
        );
        assert!(h.get("upgrade").is_none() && h.get("keep-alive").is_none());
        assert!(h.get("x-forwarded-prefix").is_none());
        assert_eq!(
            h["host"], "orders.internal:7000",
            "the upstream's own authority"
        );
        assert_eq!(h["accept"], "application/json");
    }

    #[test]
    fn forwarded_for_writes_addresses_as_display_does() {
        for ip in [
            "0.0.0.0",
            "255.255.255.255",
            "10.0.100.9",
            "127.0.0.1",
            "192.168.19.250",
            "::1",
            "2001:db8::8a2e:370:7334",
        ] {
            let ip: IpAddr = ip.parse().unwrap();
            assert_eq!(forwarded_for(ip).unwrap(), ip.to_string().as_str());
        }
    }

    #[test]
    fn claims_with_line_breaks_never_become_headers() {
        let mut h = HeaderMap::new();
        let host = HeaderValue::from_static("app.example.com");
        let claims = serde_json::json!({"email": "a@b\nc", "email_verified": true});
        let add = Injected {
            identity: Some(IdentityHeaders {
                headers: defaults(),
                claims: Claims {
                    sub: "alice\r\nx-admin: true",
                    issuer: "https://id.example.com",
                    claims: claims.as_object(),
                },
            }),
            ..injected(&host)
        };
        to_upstream(&mut h, &[], false, &add);
        assert!(h.get("x-auth-request-user").is_none());
        assert!(h.get("x-auth-request-email").is_none());
        assert!(h.get("x-admin").is_none());
    }

    #[test]
    fn configured_headers_carry_claims_and_replace_client_copies() {
        let headers = [
            ("X-User-Id", "sub"),
            ("X-User-Roles", "roles"),
            ("X-User-Name", "name"),
            ("X-Level", "level"),
            ("X-Email", "email"),
            ("X-Tenant", "tenant"),
        ]
        .map(|(name, claim)| IdentityHeader {
            name: HeaderName::from_static(leak_lower(name)),
            claim: match claim {
                "sub" => Claim::Sub,
                "email" => Claim::VerifiedEmail,
                other => Claim::Named(other.to_owned()),
            },
        });
        let strip: Vec<HeaderName> = headers.iter().map(|h| h.name.clone()).collect();
        let mut h = HeaderMap::new();
        h.insert("x-tenant", HeaderValue::from_static("forged"));
        h.insert("x-user-roles", HeaderValue::from_static("root"));
        let host = HeaderValue::from_static("app.example.com");
        let add = Injected {
            identity: Some(IdentityHeaders {
                headers: &headers,
                claims: Claims {
                    sub: "alice",
                    issuer: "https://id.example.com",
                    claims: Some(alice()),
                },
            }),
            strip: &strip,
            ..injected(&host)
        };
        to_upstream(&mut h, &[], false, &add);
        assert_eq!(h["x-user-id"], "alice");
        assert_eq!(
            h["x-user-roles"], "admin,ops",
            "an array, joined; odd elements left out"
        );
        assert!(
            h.get("x-user-name").is_none(),
            "a claim with CR/LF is dropped"
        );
        assert_eq!(h["x-level"], "3");
        assert_eq!(h["x-email"], "alice@example.com");
        assert!(
            h.get("x-tenant").is_none(),
            "the client's copy is gone, and no claim replaces it"
        );
        assert!(
            h.get("x-auth-request-user").is_none(),
            "only the configured headers"
        );

        // An unverified email is not sent.
        let unverified = serde_json::json!({"email": "bob@example.com"});
        let mut h = HeaderMap::new();
        let add = Injected {
            identity: Some(IdentityHeaders {
                headers: &headers,
                claims: Claims {
                    sub: "bob",
                    issuer: "https://id.example.com",
                    claims: unverified.as_object(),
                },
            }),
            ..injected(&host)
        };
        to_upstream(&mut h, &[], false, &add);
        assert!(h.get("x-email").is_none());
    }

    fn leak_lower(name: &str) -> &'static str {
        Box::leak(name.to_ascii_lowercase().into_boxed_str())
    }

    #[test]
    fn websocket_handshakes_keep_upgrade() {
        let mut h = HeaderMap::new();
        h.insert("connection", HeaderValue::from_static("Upgrade"));
        h.insert("upgrade", HeaderValue::from_static("websocket"));
        let host = HeaderValue::from_static("h");
        to_upstream(&mut h, &[], true, &injected(&host));
        assert_eq!(h["upgrade"], "websocket");
        assert_eq!(h["connection"], "upgrade");
    }

    #[test]
    fn upstreams_cannot_set_our_cookies() {
        let mut h = HeaderMap::new();
        h.append(
            "set-cookie",
            HeaderValue::from_static("sallyport=evil; Path=/"),
        );
        h.append("set-cookie", HeaderValue::from_static("pref=1; Path=/"));
        h.append("transfer-encoding", HeaderValue::from_static("chunked"));
        h.append(
            "connection",
            HeaderValue::from_static("keep-alive, x-internal"),
        );
        h.append("x-internal", HeaderValue::from_static("1"));
        h.append("cache-control", HeaderValue::from_static("no-store"));
        h.append("access-control-allow-origin", HeaderValue::from_static("*"));
        h.append(
            "access-control-allow-credentials",
            HeaderValue::from_static("true"),
        );
        to_browser(&mut h, &["sallyport"], false);
        assert!(
            h.get("access-control-allow-origin").is_none(),
            "Sallyport owns CORS"
        );
        assert!(h.get("access-control-allow-credentials").is_none());
        assert_eq!(
            h.get_all("set-cookie").iter().collect::<Vec<_>>(),
            ["pref=1; Path=/"]
        );
        assert!(h.get("transfer-encoding").is_none());
        assert!(h.get("connection").is_none() && h.get("x-internal").is_none());
        assert_eq!(h["cache-control"], "no-store", "end-to-end headers pass");
    }
}
