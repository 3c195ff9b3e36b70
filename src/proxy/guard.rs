//! Ending open streams with their session: a streamed response or a WebSocket opened while
//! the session was live must not stay authorized after a logout, a back-channel logout, a
//! revocation or the session's end.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::body::Body;
use bytes::Bytes;
use http_body::{Frame, SizeHint};

use crate::session::StoreKey;
use crate::session::manager::Sessions;

/// The session an open stream belongs to.
#[derive(Clone)]
pub struct SessionGuard {
    sessions: Arc<Sessions>,
    key: StoreKey,
    expires_at: u64,
}

impl std::fmt::Debug for SessionGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionGuard")
            .field("key", &self.key)
            .finish()
    }
}

impl SessionGuard {
    /// The guard of the session stored under `key`, which ends at `expires_at` (unix seconds)
    /// at the latest.
    pub fn new(sessions: Arc<Sessions>, key: StoreKey, expires_at: u64) -> Self {
        Self {
            sessions,
            key,
            expires_at,
        }
    }

    /// Completes when the session has ended (see [`Sessions::ended`]).
    pub async fn ended(self) {
        self.sessions.ended(self.key, self.expires_at).await;
    }
}

/// Why a guarded stream was cut off.
#[derive(Debug, thiserror::Error)]
#[error("the session of this stream ended")]
pub struct SessionEnded;

/// A response body that fails once its session has ended: hyper then aborts the response
/// (an HTTP/1 connection is closed mid-body), so the client sees a broken stream — never a
/// clean end that a download could take for complete.
pub struct Guarded {
    inner: Body,
    ended: Pin<Box<dyn Future<Output = ()> + Send>>,
}

impl Guarded {
    /// `inner`, cut off when `guard`'s session ends.
    pub fn new(inner: Body, guard: SessionGuard) -> Self {
        Self {
            inner,
            ended: Box::pin(guard.ended()),
        }
    }
}

impl http_body::Body for Guarded {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        if self.ended.as_mut().poll(cx).is_ready() {
            tracing::info!("streamed response cut off: its session ended");
            return Poll::Ready(Some(Err(axum::Error::new(SessionEnded))));
        }
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
