//! The records of recently used sessions, kept opened (decrypted and parsed) beside the sealed
//! bytes each was opened from.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use bytes::Bytes;

use super::{SessionRecord, StoreKey};

/// How many opened records [`Opened`] keeps: the sessions active at one time on one instance.
/// Each costs its decoded size (a few KiB, mostly tokens) on top of the store's copy.
pub const OPENED_CAPACITY: usize = 4096;

/// Opened records of recently used sessions, each with the sealed bytes it was opened from.
///
/// A hit needs the store's current bytes to be the same, so a record changed or ended by
/// another instance is never served from here. The mutex is held for a map lookup only.
#[derive(Default)]
pub(super) struct Opened {
    map: Mutex<HashMap<StoreKey, (Bytes, Arc<SessionRecord>)>>,
}

impl Opened {
    pub(super) fn lock(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<StoreKey, (Bytes, Arc<SessionRecord>)>> {
        // A poisoned map is still a consistent map of immutable entries.
        self.map
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The record opened from exactly `sealed`, if it is cached.
    pub(super) fn get(&self, key: &StoreKey, sealed: &Bytes) -> Option<Arc<SessionRecord>> {
        let map = self.lock();
        let (bytes, record) = map.get(key)?;
        // The memory store hands out its own `Bytes`: equal pointers settle it without a scan.
        let same =
            (bytes.as_ptr() == sealed.as_ptr() && bytes.len() == sealed.len()) || bytes == sealed;
        same.then(|| Arc::clone(record))
    }

    pub(super) fn put(&self, key: StoreKey, sealed: Bytes, record: Arc<SessionRecord>) {
        let evicted = {
            let mut map = self.lock();
            let mut evicted = Vec::new();
            if map.len() >= OPENED_CAPACITY && !map.contains_key(&key) {
                // Drop an eighth, in the map's arbitrary order: cheap, and a dropped session
                // is only opened again on its next request.
                let drop: Vec<StoreKey> = map.keys().take(OPENED_CAPACITY / 8).copied().collect();
                evicted.extend(drop.iter().filter_map(|k| map.remove(k)));
            }
            map.insert(key, (sealed, record));
            evicted
        };
        // Records zeroize their tokens on drop: do that outside the lock.
        drop(evicted);
    }

    pub(super) fn remove(&self, key: &StoreKey) {
        // Bound first, so the record (zeroizing its tokens) drops after the lock is released.
        let removed = self.lock().remove(key);
        drop(removed);
    }

    /// Drops the records `ended` says are over; returns how many.
    pub(super) fn forget(&self, ended: impl Fn(&SessionRecord) -> bool) -> usize {
        let dropped: Vec<_> = self
            .lock()
            .extract_if(|_, (_, record)| ended(record))
            .collect();
        dropped.len()
    }
}
