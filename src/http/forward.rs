//! `GET /auth/verify` (alias `/auth/forward`) on `server.forward_auth.listen`: forward-auth
//! for edge proxies (nginx `auth_request`, Traefik ForwardAuth, Caddy `forward_auth`). The
//! same session checks as the proxy path, no proxying.
//!
//! # Security
//! The answer carries the bearer token the matched route's service wants, so it is served only
//! on a listener of its own that only the edge reaches: the public port has no `/auth/verify`,
//! and a page's `fetch('/auth/verify', …)` through the edge gets `404` (the nginx recipe also
//! refuses the path itself). The original request is read only from the headers the configured
//! edge sets (`X-Original-URI/-Method` for nginx, `X-Forwarded-Uri/-Method` for Traefik and
//! Caddy), and its path must be in normal form (`400 invalid_path` otherwise), so that the
//! route decided here is the one the upstream sees.
//!
//! Authenticated: `200` with the identity headers and the bearer. Not authenticated: `401`
//! JSON for API-style requests and for nginx (whose `auth_request` accepts only 2xx, 401 and
//! 403; the recipe turns a page's 401 into the login redirect); a `302` to login for Traefik
//! and Caddy navigations. A state-changing original request must pass the CSRF checks of the
//! proxy path, or gets `403 csrf_failed`, which the edge returns to the browser.

use std::net::IpAddr;

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use http::{HeaderMap, HeaderValue, Method, StatusCode, header};

use super::error::ApiError;
use super::{AppState, csrf};
use crate::config::{AuthMode, Edge, TokenMode};
use crate::proxy::headers::{X_AUTH_EMAIL, X_AUTH_USER};
use crate::session::manager::Lookup;

/// Whether `ip` is in one of the trusted networks.
pub fn is_trusted(ip: IpAddr, networks: &[(IpAddr, u8)]) -> bool {
    let ip = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    };
    networks.iter().any(|(net, prefix)| match (ip, net) {
        (IpAddr::V4(a), IpAddr::V4(n)) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(*prefix)).unwrap_or(0);
            u32::from(a) & mask == u32::from(*n) & mask
        }
        (IpAddr::V6(a), IpAddr::V6(n)) => {
            let mask = u128::MAX.checked_shl(128 - u32::from(*prefix)).unwrap_or(0);
            u128::from(a) & mask == u128::from(*n) & mask
        }
        _ => false,
    })
}

/// The client's address: the peer itself, or — when the peer is a trusted proxy — the
/// rightmost `X-Forwarded-For` entry that is not a trusted proxy (entries to its left could
/// have been written by the client).
pub fn client_ip(peer: IpAddr, headers: &HeaderMap, trusted: &[(IpAddr, u8)]) -> IpAddr {
    if !is_trusted(peer, trusted) {
        return peer;
    }
    headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|entry| entry.trim().parse::<IpAddr>().ok())
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .find(|ip| !is_trusted(*ip, trusted))
        .unwrap_or(peer)
}

/// The original request as the edge describes it.
struct Original<'a> {
    uri: &'a str,
    /// `GET` when the edge does not say (every recipe does).
    method: Method,
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

fn original(headers: &HeaderMap, edge: Edge) -> Result<Original<'_>, ApiError> {
    let (uri, method) = edge.original_headers();
    let uri = header(headers, uri).ok_or_else(|| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "the edge did not say which request it asks about (X-Original-URI for nginx, X-Forwarded-Uri for Traefik and Caddy); configure it as in Sallyport's recipe",
        )
    })?;
    Ok(Original {
        uri,
        method: header(headers, method)
            .and_then(|m| Method::from_bytes(m.as_bytes()).ok())
            .unwrap_or(Method::GET),
    })
}

/// The handler.
pub async fn verify(State(app): State<AppState>, headers: HeaderMap) -> Result<Response, ApiError> {
    let Some(edge) = app.config.server.forward_auth.as_ref().map(|f| f.edge) else {
        return Err(ApiError::not_found());
    };
    let original = original(&headers, edge)?;
    let path = original.uri.split(['?', '#']).next().unwrap_or_default();
    let route = app
        .proxy
        .routes()
        .find(path)
        .map_err(ApiError::invalid_path)?
        .map(|m| m.route);

    let session = match app.sessions.lookup(&headers).await? {
        Lookup::Found(s) => s,
        Lookup::NoCookie | Lookup::Ended => {
            return Ok(unauthenticated(
                &app,
                &headers,
                &original,
                edge,
                route.is_some(),
            ));
        }
    };
    // The edge passes the browser's own headers, so a state-changing request it is about to
    // forward gets the proxy path's CSRF checks here — before anything (a refresh) happens.
    // Without them, any site could make a logged-in browser POST through the edge. Paths
    // outside the API routes (server-rendered pages) get the origin check only.
    if csrf::is_unsafe(&original.method) {
        match route {
            Some(r) if r.auth != AuthMode::None => {
                csrf::check(&headers, &app.config, &session.record.csrf_token, None)?;
            }
            _ => csrf::check_origin(&headers, &app.config)?,
        }
    }
    let service = route.map(|r| app.proxy.upstream(r.service));
    let session = match service.map(|s| s.token) {
        Some(TokenMode::User) => super::api::fresh(&app, session).await?,
        _ => session,
    };

    let mut resp = StatusCode::OK.into_response();
    let h = resp.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    // Claims with control characters never become headers (from_str refuses them).
    if let Ok(v) = HeaderValue::from_str(&session.record.sub) {
        h.insert(X_AUTH_USER.clone(), v);
    }
    if let Some(v) = session
        .record
        .claims
        .get("email")
        .and_then(|e| e.as_str())
        .and_then(|e| HeaderValue::from_str(e).ok())
    {
        h.insert(X_AUTH_EMAIL.clone(), v);
    }
    let bearer = service.and_then(|s| crate::tokens::token_for(&session.record, s.token));
    if let Some(token) = bearer
        && let Ok(mut v) = HeaderValue::from_str(&format!("Bearer {token}"))
    {
        v.set_sensitive(true);
        h.insert(header::AUTHORIZATION, v);
    }
    Ok(resp)
}

fn unauthenticated(
    app: &AppState,
    headers: &HeaderMap,
    original: &Original<'_>,
    edge: Edge,
    api_route: bool,
) -> Response {
    let api_style = api_route
        || header(headers, "accept").is_some_and(|a| a.contains("application/json"))
        || headers.contains_key("x-requested-with");
    let login =
        super::auth::safe_return_to(original.uri, &app.config.server.public_url).map(|to| {
            format!(
                "/auth/login?return_to={}",
                url::form_urlencoded::byte_serialize(to.as_bytes()).collect::<String>()
            )
        });
    match login {
        Some(location) if !api_style && edge.passes_redirects() => {
            let mut resp = StatusCode::FOUND.into_response();
            if let Ok(v) = HeaderValue::from_str(&location) {
                resp.headers_mut().insert(header::LOCATION, v);
            }
            resp.headers_mut()
                .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            resp
        }
        _ => ApiError::not_authenticated().into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trusted_networks_match_by_prefix() {
        let nets = [
            ("10.0.0.0".parse().unwrap(), 8),
            ("::1".parse().unwrap(), 128),
            ("192.168.1.7".parse().unwrap(), 32),
        ];
        for ip in ["10.1.2.3", "::1", "192.168.1.7", "::ffff:10.9.9.9"] {
            assert!(is_trusted(ip.parse().unwrap(), &nets), "{ip}");
        }
        for ip in ["11.0.0.1", "192.168.1.8", "::2", "127.0.0.1"] {
            assert!(!is_trusted(ip.parse().unwrap(), &nets), "{ip}");
        }
        assert!(is_trusted(
            "8.8.8.8".parse().unwrap(),
            &[("0.0.0.0".parse().unwrap(), 0)]
        ));
    }

    #[test]
    fn the_client_address_comes_from_trusted_proxies_only() {
        let nets = [("10.0.0.0".parse().unwrap(), 8)];
        let mut h = HeaderMap::new();
        h.insert(
            "x-forwarded-for",
            HeaderValue::from_static("1.1.1.1, 2.2.2.2, 10.0.0.5"),
        );
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert_eq!(
            client_ip(ip("10.0.0.9"), &h, &nets),
            ip("2.2.2.2"),
            "rightmost untrusted entry"
        );
        assert_eq!(
            client_ip(ip("8.8.8.8"), &h, &nets),
            ip("8.8.8.8"),
            "an untrusted peer's header is ignored"
        );
        assert_eq!(
            client_ip(ip("10.0.0.9"), &HeaderMap::new(), &nets),
            ip("10.0.0.9")
        );
    }
}
