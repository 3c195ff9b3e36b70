//! Waiting for a session to end, for the streams (WebSockets, streamed responses) opened
//! under it.

use std::collections::HashMap;
use std::time::Duration;

use super::StoreKey;
use super::manager::Sessions;

impl Sessions {
    pub(super) fn ending_streams(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<StoreKey, tokio::sync::watch::Sender<()>>> {
        self.ending
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Completes when the session under `key` has ended, for an open stream to close then:
    /// at once when it is deleted through this instance (logout, back-channel logout,
    /// revocation, a refused refresh), within `session.stream_recheck` when another instance
    /// ended it or it timed out (the store is asked again), and at its absolute end
    /// (`expires_at`, unix seconds) at the latest.
    pub async fn ended(&self, key: StoreKey, expires_at: u64) {
        let mut deleted = self
            .ending_streams()
            .entry(key)
            .or_insert_with(|| tokio::sync::watch::channel(()).0)
            .subscribe();
        loop {
            let left = expires_at.saturating_sub(self.clock.unix());
            if left == 0 {
                return;
            }
            let wait = self.stream_recheck.min(Duration::from_secs(left));
            tokio::select! {
                _ = deleted.changed() => return,
                () = tokio::time::sleep(wait) => {}
            }
            match self.load(&key).await {
                Ok(Some(_)) => {}
                Ok(None) => return,
                // The store is down: the stream stays until it answers, as requests fail closed.
                Err(e) => {
                    tracing::warn!(session = ?key, error = %e, "could not check an open stream's session")
                }
            }
        }
    }
}
