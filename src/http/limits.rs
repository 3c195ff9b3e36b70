//! Sallyport's own answers: `no-store` and security headers on `/auth/*` and
//! `/api/auth/session`, and a per-client-IP rate limit on login starts and on failed callbacks
//! and verifications (`429` with `Retry-After`).
//!
//! The limiter counts in fixed windows per IP, in process memory (each instance limits on its
//! own); the map is bounded, so a flood from many addresses cannot grow it without limit.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::ops::ControlFlow;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::extract::Request;
use axum::response::{IntoResponse, Response};
use http::{HeaderMap, HeaderValue, StatusCode, header};

use super::AppState;
use super::error::ApiError;

/// How many addresses the limiter tracks at most.
const MAX_TRACKED: usize = 100_000;

/// Counts requests per client address in fixed windows.
#[derive(Debug)]
pub struct RateLimiter {
    limit: u32,
    window: Duration,
    counts: Mutex<HashMap<IpAddr, (Instant, u32)>>,
}

impl RateLimiter {
    /// At most `limit` counted requests per address per `window`.
    pub fn new(limit: u32, window: Duration) -> Self {
        Self {
            limit,
            window,
            counts: Mutex::default(),
        }
    }

    /// `Some(retry_after)` when `ip` is over its limit.
    pub fn blocked(&self, ip: IpAddr) -> Option<Duration> {
        let counts = self
            .counts
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let (start, n) = counts.get(&ip)?;
        let elapsed = start.elapsed();
        (*n >= self.limit && elapsed < self.window).then(|| self.window - elapsed)
    }

    /// Counts one request of `ip`.
    pub fn count(&self, ip: IpAddr) {
        let mut counts = self
            .counts
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if counts.len() >= MAX_TRACKED && !counts.contains_key(&ip) {
            let window = self.window;
            counts.retain(|_, (start, _)| start.elapsed() < window);
            if counts.len() >= MAX_TRACKED {
                return; // still full of live windows: count nothing rather than grow
            }
        }
        let entry = counts.entry(ip).or_insert((Instant::now(), 0));
        if entry.0.elapsed() >= self.window {
            *entry = (Instant::now(), 0);
        }
        entry.1 = entry.1.saturating_add(1);
    }
}

/// The size of a request's headers as the limits count it: name, value and `: ` + CRLF each.
fn header_bytes(headers: &HeaderMap) -> u64 {
    headers
        .iter()
        .map(|(k, v)| (k.as_str().len() + v.len() + 4) as u64)
        .sum()
}

/// `431 request_headers_too_large` when `headers` exceed `max`.
///
/// # Errors
/// The `431`.
pub fn check_header_size(headers: &HeaderMap, max: u64) -> Result<(), ApiError> {
    if header_bytes(headers) > max {
        return Err(ApiError::new(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "request_headers_too_large",
            "the request headers are larger than allowed here",
        ));
    }
    Ok(())
}

/// Whether a response to `path` counts against the client's limit.
fn counts(path: &str, status: StatusCode) -> bool {
    match path {
        // Every login start creates a pending login: count them all.
        "/auth/login" => true,
        "/auth/callback" => status.is_client_error(),
        _ => false,
    }
}

/// What [`after`] needs of a request to one of Sallyport's own endpoints.
#[derive(Debug, Clone, Copy)]
pub struct Own {
    /// Whether the endpoint is rate-limited, and the client it counts.
    limited: Option<(&'static str, IpAddr)>,
}

/// The rate-limited endpoints, as `'static` names so that no path is copied per request.
const LIMITED: [&str; 2] = ["/auth/login", "/auth/callback"];

/// Before the handler, for Sallyport's own endpoints (`None` for every other path): the
/// default header limit, then the client's rate limit; `Break` with the `431` or `429`.
pub fn before(
    app: &AppState,
    peer: SocketAddr,
    req: &Request,
) -> ControlFlow<Response, Option<Own>> {
    let path = req.uri().path();
    if !super::is_own(path) {
        return ControlFlow::Continue(None);
    }
    // Routes carry their own limit (`max_headers`); our endpoints have the default one, checked
    // before any session or pending login is read.
    if let Err(e) = check_header_size(req.headers(), crate::config::DEFAULT_MAX_HEADERS) {
        return ControlFlow::Break(e.into_response());
    }
    let Some(limited) = LIMITED.iter().copied().find(|p| *p == path) else {
        return ControlFlow::Continue(Some(Own { limited: None }));
    };
    // Behind an edge proxy every request comes from the proxy: count the client it names.
    let ip =
        super::forward::client_ip(peer.ip(), req.headers(), &app.config.server.trusted_proxies);
    if let Some(wait) = app.limiter.blocked(ip) {
        let secs = wait.as_secs().max(1);
        return ControlFlow::Break(
            ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                "too many attempts; try again later",
            )
            .with_header(header::RETRY_AFTER, HeaderValue::from(secs))
            .into_response(),
        );
    }
    ControlFlow::Continue(Some(Own {
        limited: Some((limited, ip)),
    }))
}

/// After the handler: counts the attempt and adds the security headers of our own answers.
pub fn after(app: &AppState, own: Own, resp: &mut Response) {
    if let Some((path, ip)) = own.limited
        && counts(path, resp.status())
    {
        app.limiter.count(ip);
    }
    let h = resp.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.entry(header::CONTENT_SECURITY_POLICY)
        .or_insert(HeaderValue::from_static(
            "default-src 'none'; frame-ancestors 'none'",
        ));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_limit_applies_per_address_and_window() {
        let l = RateLimiter::new(3, Duration::from_millis(200));
        let (a, b): (IpAddr, IpAddr) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        for _ in 0..3 {
            assert!(l.blocked(a).is_none());
            l.count(a);
        }
        let wait = l.blocked(a).expect("over the limit");
        assert!(wait <= Duration::from_millis(200));
        assert!(l.blocked(b).is_none(), "another address is not affected");
        std::thread::sleep(Duration::from_millis(220));
        assert!(l.blocked(a).is_none(), "a new window starts");
    }
}
