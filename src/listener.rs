//! Accepting connections: the limits every listener enforces against slow or greedy clients,
//! and graceful shutdown.
//!
//! `axum::serve` gives no access to hyper's connection settings, and without a timer hyper
//! enforces no header-read timeout at all: a client that sends a request head one byte at a
//! time (slowloris), or opens connections and sends nothing, would hold them forever. So the
//! accept loop is ours, on hyper-util's connection builder:
//! - `server.header_read_timeout`: the whole request head must arrive within it. hyper starts
//!   the clock whenever a connection waits for a head, so it is also the idle keep-alive
//!   timeout between requests.
//! - `server.max_connections`: at most this many open connections per listener; further ones
//!   wait in the kernel's backlog until one closes.
//! - HTTP/2: at most 256 concurrent streams per connection, and a ping every 20 s that must be
//!   answered within 20 s. WebSocket over HTTP/2 (RFC 8441) stays off, so browsers upgrade
//!   over HTTP/1.1, which the proxy relays.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::response::Response;
use http::Request;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};

/// What a client speaks.
enum Protocol {
    Http1,
    /// HTTP/2 with prior knowledge (h2c), as some proxies speak to their backends.
    Http2,
}

/// The HTTP/2 client preface (RFC 9113 §3.4).
const H2_PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Reads (without consuming) the first bytes of a connection to tell HTTP/1 from HTTP/2;
/// `None` when the client closes or sends too little within `within`.
async fn sniff(tcp: &tokio::net::TcpStream, within: Duration) -> Option<Protocol> {
    tokio::time::timeout(within, async {
        let mut buf = [0u8; 24];
        loop {
            let n = tcp.peek(&mut buf).await.ok()?;
            if n == 0 {
                return None;
            }
            if buf[..n] != H2_PREFACE[..n] {
                return Some(Protocol::Http1);
            }
            if n == H2_PREFACE.len() {
                return Some(Protocol::Http2);
            }
            // Part of the preface: peek would answer at once again; wait for the rest.
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .ok()
    .flatten()
}

/// Completes once `stop` turns true (or its sender is gone).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    // The guard `wait_for` returns is not `Send`: drop it here, not across the caller's awaits.
    let _ = stop.wait_for(|s| *s).await.map(drop);
}

/// What every connection of a listener is held to.
#[derive(Debug, Clone, Copy)]
pub struct ConnLimits {
    /// The longest a request head may take to arrive (and a connection may idle between
    /// requests).
    pub header_read_timeout: Duration,
    /// How many connections may be open at once.
    pub max_connections: usize,
}

/// Serves `listener` until `stop` turns true, answering each request with the service that
/// `service_for` makes for the connection's peer; then stops accepting and lets open
/// connections finish within `grace`.
///
/// # Errors
/// Never for a failed accept (logged and retried, as when file descriptors run out).
pub async fn run<F, S, Fut>(
    name: &'static str,
    listener: TcpListener,
    limits: ConnLimits,
    service_for: F,
    mut stop: watch::Receiver<bool>,
    grace: Duration,
) where
    F: Fn(SocketAddr) -> S,
    S: Fn(Request<Body>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Response> + Send + 'static,
{
    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(256)
        .keep_alive_interval(Duration::from_secs(20))
        .keep_alive_timeout(Duration::from_secs(20));
    // Which protocol a connection speaks is sniffed here, within the header timeout (hyper-util
    // would wait for the first bytes without one); each builder then skips its own sniffing.
    let http1 = Arc::new(builder.clone().http1_only());
    let http2 = Arc::new(builder.http2_only());
    let graceful = GracefulShutdown::new();
    // Turns true when the grace period is over: connections still open are closed then.
    let (close_tx, close_rx) = watch::channel(false);
    let open = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    loop {
        let permit = tokio::select! {
            permit = Arc::clone(&open).acquire_owned() => permit.expect("the semaphore is never closed"),
            () = stopped(&mut stop) => break,
        };
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors, say: wait a moment rather than spin.
                    tracing::warn!(listener = name, error = %e, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = stopped(&mut stop) => break,
        };
        // Responses go out as soon as they are written: Nagle's algorithm would hold back the
        // last segment of a multi-segment response until the peer acknowledges the others.
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "could not set TCP_NODELAY on a connection");
        }
        let handle = service_for(peer);
        let service = TowerToHyperService::new(tower::service_fn(move |req: Request<Incoming>| {
            let answer = handle(req.map(Body::new));
            async move { Ok::<_, Infallible>(answer.await) }
        }));
        let (http1, http2) = (Arc::clone(&http1), Arc::clone(&http2));
        let watcher = graceful.watcher();
        let timeout = limits.header_read_timeout;
        let (mut stopping, mut closing) = (stop.clone(), close_rx.clone());
        tokio::spawn(async move {
            // A connection that has not sent its first bytes when shutdown begins is closed
            // like an idle keep-alive one: hyper cannot, as it does not hold it yet.
            let protocol = tokio::select! {
                protocol = sniff(&tcp, timeout) => protocol,
                () = stopped(&mut stopping) => None,
            };
            let builder = match protocol {
                Some(Protocol::Http1) => http1,
                Some(Protocol::Http2) => http2,
                None => {
                    // The service (and the gateway it holds) goes before the watcher that
                    // shutdown waits for.
                    drop(service);
                    drop(watcher);
                    return;
                }
            };
            let conn = builder
                .serve_connection_with_upgrades(TokioIo::new(tcp), service)
                .into_owned();
            tokio::select! {
                served = watcher.watch(conn) => if let Err(e) = served {
                    tracing::debug!(%peer, error = %e, "connection ended with an error");
                },
                () = stopped(&mut closing) => {}
            }
            drop(permit);
        });
    }
    drop(listener);
    let drained = graceful.shutdown();
    tokio::pin!(drained);
    tokio::select! {
        () = &mut drained => {}
        () = tokio::time::sleep(grace) => {
            tracing::warn!(listener = name, ?grace, "grace period over; closing the remaining connections");
            // Each connection drops its socket (and whatever it holds of the gateway) now,
            // not at its next timeout; returning waits until they have.
            let _ = close_tx.send(true);
            drained.await;
        }
    }
}
