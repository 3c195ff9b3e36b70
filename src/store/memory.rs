//! The in-process session store: a hash map per record kind behind short-held mutexes.
//!
//! Sessions are lost when the process stops; use the file store to keep them.
//! No capacity bound applies to sessions (an eviction would be a silent logout); pending logins
//! are bounded.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::SystemTime;

use async_trait::async_trait;
use bytes::Bytes;

use crate::session::{SessionStore, StoreError, StoreKey};

struct Entry<V = Bytes> {
    sealed: V,
    expires_at: SystemTime,
}

/// Sessions and pending logins in memory.
pub struct MemoryStore {
    sessions: Mutex<HashMap<StoreKey, Entry>>,
    logins: Mutex<HashMap<StoreKey, Entry<Vec<u8>>>>,
    index: Mutex<HashMap<StoreKey, (HashSet<StoreKey>, SystemTime)>>,
    used: Mutex<HashMap<StoreKey, SystemTime>>,
    max_logins: usize,
}

impl MemoryStore {
    /// An empty store keeping at most `max_logins` pending logins.
    pub fn new(max_logins: usize) -> Self {
        Self {
            sessions: Mutex::default(),
            logins: Mutex::default(),
            index: Mutex::default(),
            used: Mutex::default(),
            max_logins: max_logins.max(1),
        }
    }

    /// Drops every expired record.
    pub fn sweep(&self) {
        let now = SystemTime::now();
        lock(&self.sessions).retain(|_, e| e.expires_at > now);
        lock(&self.logins).retain(|_, e| e.expires_at > now);
        lock(&self.index).retain(|_, (_, exp)| *exp > now);
        lock(&self.used).retain(|_, exp| *exp > now);
    }

    /// How many sessions are held, expired ones included until swept.
    pub fn len(&self) -> usize {
        lock(&self.sessions).len()
    }

    /// Whether no session is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A poisoned map only means another request panicked mid-update of a plain `HashMap`; the map
/// itself is still consistent, so keep serving.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl MemoryStore {
    /// Writes `sealed` under `key` when `allow(a live record exists)` says so.
    /// Writes `sealed` under `key` when `allow` says so of what the key holds now: `None`
    /// when absent or expired, else the stored sealed bytes.
    fn write_session(
        &self,
        key: &StoreKey,
        sealed: Bytes,
        expires_at: SystemTime,
        allow: impl FnOnce(Option<&Bytes>) -> bool,
    ) -> bool {
        let mut map = lock(&self.sessions);
        let now = SystemTime::now();
        let allowed = allow(
            map.get(key)
                .filter(|e| e.expires_at > now)
                .map(|e| &e.sealed),
        );
        if allowed {
            map.insert(*key, Entry { sealed, expires_at });
        }
        allowed
    }
}

#[async_trait]
impl SessionStore for MemoryStore {
    async fn count(&self) -> Option<u64> {
        Some(self.len() as u64)
    }

    async fn load(&self, key: &StoreKey) -> Result<Option<Bytes>, StoreError> {
        let map = lock(&self.sessions);
        let now = SystemTime::now();
        Ok(map
            .get(key)
            .filter(|e| e.expires_at > now)
            .map(|e| e.sealed.clone()))
    }

    async fn create(
        &self,
        key: &StoreKey,
        sealed: Bytes,
        expires_at: SystemTime,
    ) -> Result<bool, StoreError> {
        Ok(self.write_session(key, sealed, expires_at, |live| live.is_none()))
    }

    async fn update(
        &self,
        key: &StoreKey,
        sealed: Bytes,
        expires_at: SystemTime,
    ) -> Result<bool, StoreError> {
        Ok(self.write_session(key, sealed, expires_at, |live| live.is_some()))
    }

    async fn replace(
        &self,
        key: &StoreKey,
        expected: &Bytes,
        sealed: Bytes,
        expires_at: SystemTime,
    ) -> Result<bool, StoreError> {
        Ok(self.write_session(key, sealed, expires_at, |current| {
            // The request path hands back the `Bytes` it loaded from here: equal pointers
            // settle it without comparing the contents.
            current.is_some_and(|held| {
                (held.as_ptr() == expected.as_ptr() && held.len() == expected.len())
                    || held == expected
            })
        }))
    }

    async fn delete(&self, key: &StoreKey) -> Result<(), StoreError> {
        lock(&self.sessions).remove(key);
        Ok(())
    }

    async fn put_login(
        &self,
        key: &StoreKey,
        sealed: Vec<u8>,
        expires_at: SystemTime,
    ) -> Result<(), StoreError> {
        let mut map = lock(&self.logins);
        if map.len() >= self.max_logins && !map.contains_key(key) {
            let now = SystemTime::now();
            map.retain(|_, e| e.expires_at > now);
            if map.len() >= self.max_logins {
                // Still full of live logins (a flood): drop the tenth closest to expiry, so the
                // next inserts do not each pay for a full scan.
                let mut by_expiry: Vec<(SystemTime, StoreKey)> =
                    map.iter().map(|(k, e)| (e.expires_at, *k)).collect();
                by_expiry.sort_unstable();
                let drop = (self.max_logins / 10).max(1);
                for (_, k) in by_expiry.into_iter().take(drop) {
                    map.remove(&k);
                }
            }
        }
        map.insert(*key, Entry { sealed, expires_at });
        Ok(())
    }

    async fn take_login(&self, key: &StoreKey) -> Result<Option<Vec<u8>>, StoreError> {
        let entry = lock(&self.logins).remove(key);
        Ok(entry
            .filter(|e| e.expires_at > SystemTime::now())
            .map(|e| e.sealed))
    }

    async fn ping(&self) -> Result<(), StoreError> {
        Ok(())
    }

    async fn index(
        &self,
        owner: &StoreKey,
        session: &StoreKey,
        expires_at: SystemTime,
    ) -> Result<(), StoreError> {
        let mut index = lock(&self.index);
        let (sessions, until) = index
            .entry(*owner)
            .or_insert_with(|| (HashSet::new(), expires_at));
        sessions.insert(*session);
        *until = (*until).max(expires_at);
        Ok(())
    }

    async fn indexed(&self, owner: &StoreKey) -> Result<Vec<StoreKey>, StoreError> {
        Ok(lock(&self.index)
            .get(owner)
            .map(|(s, _)| s.iter().copied().collect())
            .unwrap_or_default())
    }

    async fn forget(&self, owner: &StoreKey) -> Result<(), StoreError> {
        lock(&self.index).remove(owner);
        Ok(())
    }

    async fn is_used(&self, key: &StoreKey) -> Result<bool, StoreError> {
        let now = SystemTime::now();
        Ok(lock(&self.used).get(key).is_some_and(|exp| *exp > now))
    }

    async fn first_use(&self, key: &StoreKey, expires_at: SystemTime) -> Result<bool, StoreError> {
        let mut used = lock(&self.used);
        let now = SystemTime::now();
        if used.get(key).is_some_and(|exp| *exp > now) {
            return Ok(false);
        }
        // Marks outlive their use by minutes at most: drop the expired ones whenever the map
        // reaches a power of two, which keeps the sweeps amortised and the map bounded by what
        // is live.
        if used.len() >= 1024 && used.len().is_power_of_two() {
            used.retain(|_, exp| *exp > now);
        }
        used.insert(*key, expires_at);
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn passes_the_conformance_suite() {
        crate::store::conformance::run(|max| async move { MemoryStore::new(max) }).await;
    }
}
