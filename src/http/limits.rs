//! Sallyport's own answers: `no-store` and security headers on `/auth/*` and
//! `/api/auth/session`, the header size limit, and the per-client rate limit on what costs a
//! provider call for an unproven client.
//!
//! # What is limited, and what is not
//! Only attempts that make Sallyport work for someone who has proven nothing: a login callback
//! that brings a valid login cookie (so the code is redeemed at the provider) and a client
//! bearer on a `session_or_bearer` route (a signature check). Each takes a permit *before* the
//! work, atomically, and gives it back when it succeeds, so only failures count. Never
//! limited: login starts (they keep their state in the browser's cookie and cost nothing; a
//! pushed authorization request does cost a provider call, so pushes have their own budget per
//! client and fall back to a front-channel request past it, see `auth::login`),
//! answers without a session (`401` is a normal answer), and anything a logged-in user does —
//! what others behind the same address did never refuses them.
//!
//! Clients are counted by address, IPv6 by its /64 (one host's share), in a token bucket per
//! client in process memory (each instance limits on its own). The table is bounded: when it
//! is full, idle buckets go first, then an eighth of the rest, so a flood from many addresses
//! evicts instead of growing or switching the limit off.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::ops::ControlFlow;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::extract::Request;
use axum::response::{IntoResponse, Response};
use http::{HeaderMap, HeaderValue, header};

use crate::error::{ApiError, ErrorCode};

/// Pushed authorization requests per client address and minute (and at once): plenty for the
/// people behind one address logging in, a bound on what a flood of login starts costs the
/// provider.
pub const PAR_PER_MINUTE: u32 = 60;

/// How many clients the limiter tracks at most.
const MAX_TRACKED: usize = 100_000;

/// The key a client is counted under: its IPv4 address, or its IPv6 /64.
fn client_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(Ipv6Addr::from_bits(v6.to_bits() & !u128::from(u64::MAX))),
        },
        v4 => v4,
    }
}

/// One client's bucket: `tokens` left as of `at`.
#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// A token bucket per client: `limit` attempts at once, refilled at `limit` per `window`.
#[derive(Debug)]
pub struct RateLimiter {
    limit: f64,
    per_second: f64,
    buckets: Mutex<HashMap<IpAddr, Bucket>>,
}

/// One attempt taken from a client's bucket; [`Permit::succeeded`] gives it back.
#[derive(Debug)]
#[must_use = "an attempt that succeeded gives its permit back"]
pub struct Permit<'a> {
    limiter: &'a RateLimiter,
    key: IpAddr,
}

impl Permit<'_> {
    /// The attempt succeeded: it does not count against the client.
    pub fn succeeded(self) {
        let mut buckets = self.limiter.lock();
        if let Some(b) = buckets.get_mut(&self.key) {
            b.tokens = (b.tokens + 1.0).min(self.limiter.limit);
        }
    }
}

impl RateLimiter {
    /// At most `limit` counted attempts per client per `window` (and `limit` at once).
    pub fn new(limit: u32, window: Duration) -> Self {
        let limit = f64::from(limit.max(1));
        Self {
            limit,
            per_second: limit / window.as_secs_f64().max(0.001),
            buckets: Mutex::default(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, Bucket>> {
        // A poisoned map still holds plain numbers.
        self.buckets
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Takes one attempt for the client at `ip` before the work is done.
    ///
    /// # Errors
    /// How long until the next attempt is allowed, when the client is over its limit.
    pub fn acquire(&self, ip: IpAddr) -> Result<Permit<'_>, Duration> {
        let key = client_key(ip);
        let now = Instant::now();
        let mut buckets = self.lock();
        if buckets.len() >= MAX_TRACKED && !buckets.contains_key(&key) {
            self.evict(&mut buckets, now);
        }
        let bucket = buckets.entry(key).or_insert(Bucket {
            tokens: self.limit,
            at: now,
        });
        let refilled = bucket.tokens
            + now.saturating_duration_since(bucket.at).as_secs_f64() * self.per_second;
        bucket.tokens = refilled.min(self.limit);
        bucket.at = now;
        if bucket.tokens < 1.0 {
            return Err(Duration::from_secs_f64(
                (1.0 - bucket.tokens) / self.per_second,
            ));
        }
        bucket.tokens -= 1.0;
        Ok(Permit { limiter: self, key })
    }

    /// Makes room: buckets that have refilled completely carry no information; if none has,
    /// an eighth of the table goes, in the map's arbitrary order.
    fn evict(&self, buckets: &mut HashMap<IpAddr, Bucket>, now: Instant) {
        let full_after = Duration::from_secs_f64(self.limit / self.per_second);
        buckets.retain(|_, b| now.saturating_duration_since(b.at) < full_after);
        if buckets.len() >= MAX_TRACKED {
            let drop: Vec<IpAddr> = buckets.keys().take(MAX_TRACKED / 8).copied().collect();
            for k in drop {
                buckets.remove(&k);
            }
        }
    }

    /// How many clients are tracked (tests).
    pub fn tracked(&self) -> usize {
        self.lock().len()
    }
}

/// `429 rate_limited` with `Retry-After`.
pub fn rate_limited(wait: Duration) -> ApiError {
    ApiError::new(ErrorCode::RateLimited).with_header(
        header::RETRY_AFTER,
        HeaderValue::from(wait.as_secs().max(1)),
    )
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
        return Err(ApiError::new(ErrorCode::RequestHeadersTooLarge));
    }
    Ok(())
}

/// Marks a request to one of Sallyport's own endpoints, for [`after`].
#[derive(Debug, Clone, Copy)]
pub struct Own;

/// Before the handler, for Sallyport's own endpoints (`None` for every other path): the
/// default header limit, checked before any session is read; `Break` with the `431`.
pub fn before(_peer: SocketAddr, req: &Request) -> ControlFlow<Response, Option<Own>> {
    if !super::is_own(req.uri().path()) {
        return ControlFlow::Continue(None);
    }
    // Routes carry their own limit (`max_headers`); our endpoints have the default one.
    if let Err(e) = check_header_size(req.headers(), crate::config::DEFAULT_MAX_HEADERS) {
        return ControlFlow::Break(e.into_response());
    }
    ControlFlow::Continue(Some(Own))
}

/// After the handler: the security headers of our own answers.
pub fn after(_own: Own, resp: &mut Response) {
    let h = resp.headers_mut();
    // An answer that may be cached says so itself (the JWKS); the others are never cached.
    h.entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
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

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn failures_count_per_client_and_successes_give_their_permit_back() {
        let l = RateLimiter::new(3, Duration::from_secs(60));
        for _ in 0..10 {
            l.acquire(ip("10.0.0.1")).unwrap().succeeded();
        }
        for _ in 0..3 {
            let _failed = l.acquire(ip("10.0.0.1")).unwrap();
        }
        let wait = l.acquire(ip("10.0.0.1")).expect_err("over the limit");
        assert!(
            wait > Duration::from_secs(15) && wait <= Duration::from_secs(20),
            "{wait:?}"
        );
        assert!(
            l.acquire(ip("10.0.0.2")).is_ok(),
            "another client is not affected"
        );
    }

    #[test]
    fn the_bucket_refills_over_the_window() {
        let l = RateLimiter::new(2, Duration::from_millis(200));
        let _a = l.acquire(ip("10.0.0.1")).unwrap();
        let _b = l.acquire(ip("10.0.0.1")).unwrap();
        assert!(l.acquire(ip("10.0.0.1")).is_err());
        std::thread::sleep(Duration::from_millis(120));
        assert!(
            l.acquire(ip("10.0.0.1")).is_ok(),
            "one attempt back after half the window"
        );
    }

    #[test]
    fn concurrent_attempts_never_exceed_the_limit() {
        let l = RateLimiter::new(50, Duration::from_secs(3600));
        let passed = std::sync::atomic::AtomicUsize::new(0);
        std::thread::scope(|s| {
            for _ in 0..8 {
                s.spawn(|| {
                    for _ in 0..100 {
                        if l.acquire(ip("192.0.2.1")).is_ok() {
                            passed.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        }
                    }
                });
            }
        });
        assert_eq!(
            passed.into_inner(),
            50,
            "counted before the work, atomically"
        );
    }

    #[test]
    fn ipv6_clients_are_counted_by_their_64() {
        let l = RateLimiter::new(2, Duration::from_secs(60));
        let _a = l.acquire(ip("2001:db8:1:2::1")).unwrap();
        let _b = l.acquire(ip("2001:db8:1:2:ffff::9")).unwrap();
        assert!(
            l.acquire(ip("2001:db8:1:2:abcd::1")).is_err(),
            "a new address in the same /64 is the same client"
        );
        assert!(
            l.acquire(ip("2001:db8:1:3::1")).is_ok(),
            "the next /64 is not"
        );
        let _c = l.acquire(ip("::ffff:10.1.1.1")).unwrap();
        let _d = l.acquire(ip("10.1.1.1")).unwrap();
        assert!(
            l.acquire(ip("10.1.1.1")).is_err(),
            "v4-mapped is the v4 client"
        );
    }

    #[test]
    fn a_full_table_evicts_instead_of_failing_open() {
        let l = RateLimiter::new(1, Duration::from_secs(3600));
        for i in 0..MAX_TRACKED as u32 {
            let _failed = l.acquire(IpAddr::V4(i.into())).unwrap();
        }
        assert_eq!(l.tracked(), MAX_TRACKED);
        // Full of live buckets: a new client is still counted, and still limited.
        let newcomer = ip("203.0.113.1");
        let _failed = l.acquire(newcomer).unwrap();
        assert!(l.acquire(newcomer).is_err());
        assert!(l.tracked() <= MAX_TRACKED);
    }
}
