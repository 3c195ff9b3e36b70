//! Single flight: one holder at a time of a named piece of work (a session's refresh, a
//! session's exchange for one service, a client-credentials token, a client registration), in
//! this process and across instances.
//!
//! In one process, callers queue on an in-process lock, so one of them goes on. Across
//! processes, that one takes the store's lock (Redis `SET NX PX`, token-checked release); when
//! another instance holds it, it polls until that instance's result lands in the store. The
//! holder extends the store lock while its work runs, so a slow provider never lets a second
//! instance do the same work (redeem the same rotating refresh token, exchange twice); a holder
//! that dies blocks nobody beyond the lock's TTL. No sync lock is held across an await.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::oidc::PROVIDER_TIMEOUT;
use crate::session::{SessionStore, StoreError, StoreKey};

/// The most one piece of work may take while holding the lock: discovery, the token request
/// and a JWKS fetch for a refreshed ID token (each bounded by [`PROVIDER_TIMEOUT`]), and the
/// store write. Work still running then is abandoned and the lock released.
pub const DEADLINE: Duration = Duration::from_secs(PROVIDER_TIMEOUT.as_secs() * 3 + 5);
/// How long the store's lock lives unless its holder extends it (every third of it, while the
/// work runs): a holder that dies frees it this soon.
const LOCK_TTL: Duration = Duration::from_secs(15);
/// How often a waiting instance looks whether the holder's result has landed.
const POLL: Duration = Duration::from_millis(25);

/// In-process locks by name, each present only while someone holds or waits for it.
#[derive(Debug, Default)]
pub struct Flights {
    locks: Mutex<HashMap<StoreKey, Arc<tokio::sync::Mutex<()>>>>,
}

impl Flights {
    fn lock_map(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<StoreKey, Arc<tokio::sync::Mutex<()>>>> {
        self.locks
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Runs `work` as the only holder of the lock named `key`. While another instance holds
    /// it, `landed` is polled for that instance's result instead.
    ///
    /// `work` should first look whether the result it would produce is already there (the
    /// previous holder's): callers queued behind it find it so.
    ///
    /// `Ok(None)` when the work ran past [`DEADLINE`], or another instance's did (the caller
    /// decides what is still usable).
    pub async fn run<T, E, W, P, PF>(
        &self,
        store: &dyn SessionStore,
        key: StoreKey,
        work: W,
        mut landed: P,
    ) -> Result<Option<T>, E>
    where
        E: From<StoreError>,
        W: Future<Output = Result<T, E>>,
        P: FnMut() -> PF,
        PF: Future<Output = Result<Option<T>, E>>,
    {
        let lock = Arc::clone(self.lock_map().entry(key).or_default());
        let result = {
            let _held = lock.lock().await;
            across_instances(store, key, work, &mut landed).await
        };
        drop(lock);
        let mut locks = self.lock_map();
        if locks.get(&key).is_some_and(|l| Arc::strong_count(l) == 1) {
            locks.remove(&key);
        }
        result
    }
}

/// Runs `work` while holding the store's lock named `key`; while another instance holds it,
/// polls `landed` for that instance's result. No in-process queueing: see [`Flights::run`].
///
/// `Ok(None)` when the work ran past [`DEADLINE`], or another instance's did.
pub async fn across_instances<T, E, W, P, PF>(
    store: &dyn SessionStore,
    key: StoreKey,
    work: W,
    landed: &mut P,
) -> Result<Option<T>, E>
where
    E: From<StoreError>,
    W: Future<Output = Result<T, E>>,
    P: FnMut() -> PF,
    PF: Future<Output = Result<Option<T>, E>>,
{
    let deadline = Instant::now() + DEADLINE + Duration::from_secs(1);
    let mut work = Some(work);
    loop {
        if let Some(token) = store.try_lock(&key, LOCK_TTL).await.map_err(E::from)? {
            let work = work
                .take()
                .expect("the work runs once: this branch returns");
            let held = tokio::time::timeout(DEADLINE, async {
                tokio::select! {
                    result = work => result,
                    never = keep_locked(store, &key, &token) => match never {},
                }
            })
            .await;
            if let Err(e) = store.unlock(&key, &token).await {
                tracing::warn!(lock = ?key, error = %e, "releasing a lock failed; it expires by itself");
            }
            return match held {
                Ok(result) => result.map(Some),
                Err(_) => {
                    tracing::warn!(lock = ?key, deadline = ?DEADLINE, "work abandoned: the provider is too slow");
                    Ok(None)
                }
            };
        }
        // Another instance is doing this work: use its result instead.
        tokio::time::sleep(POLL).await;
        if let Some(result) = landed().await? {
            return Ok(Some(result));
        }
        if Instant::now() > deadline {
            return Ok(None);
        }
    }
}

/// Extends the lock every third of its lifetime, for as long as it is polled (the work it
/// guards runs beside it). Never returns.
async fn keep_locked(
    store: &dyn SessionStore,
    key: &StoreKey,
    token: &str,
) -> std::convert::Infallible {
    loop {
        tokio::time::sleep(LOCK_TTL / 3).await;
        match store.extend_lock(key, token, LOCK_TTL).await {
            Ok(true) => {}
            Ok(false) => {
                tracing::warn!(lock = ?key, "a token lock expired while held; another instance may do the same work");
                return std::future::pending().await;
            }
            Err(e) => {
                tracing::warn!(lock = ?key, error = %e, "extending a token lock failed");
            }
        }
    }
}
