//! The embedded durable store: one redb file (ACID, crash-safe, fsync per commit).
//!
//! Sessions survive a restart of Sallyport. redb's API is synchronous, so every call runs on
//! tokio's blocking pool. redb has no TTL: each value carries its expiry, reads ignore expired
//! values, and a sweeper deletes them.

use std::path::Path;
use std::sync::Arc;
use std::time::SystemTime;

use async_trait::async_trait;
use bytes::Bytes;
use redb::{Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};

use crate::session::{SessionStore, StoreError, StoreKey};

/// key → (expires_at in unix milliseconds, sealed record)
const SESSIONS: TableDefinition<&[u8], (u64, &[u8])> = TableDefinition::new("sessions_v1");
const LOGINS: TableDefinition<&[u8], (u64, &[u8])> = TableDefinition::new("logins_v1");
/// owner ‖ session → expires_at (unix ms): sessions by user (`sub`) and provider session (`sid`).
const INDEX: TableDefinition<&[u8], u64> = TableDefinition::new("index_v1");
/// key → expires_at (unix ms): one-time markers (logout token `jti`).
const USED: TableDefinition<&[u8], u64> = TableDefinition::new("used_v1");

/// Sessions and pending logins in a redb file.
pub struct FileStore {
    db: Arc<Database>,
    max_logins: u64,
}

fn millis(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn unavailable(e: impl Into<redb::Error>) -> StoreError {
    StoreError::Unavailable(Box::new(e.into()))
}

impl FileStore {
    /// Opens (or creates) the database at `path`, creating its folder.
    ///
    /// # Errors
    /// When the file cannot be created or opened, e.g. another process holds it.
    pub fn open(path: &Path, max_logins: usize) -> Result<Self, StoreError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| StoreError::Unavailable(Box::new(e)))?;
        }
        let db = Database::create(path).map_err(unavailable)?;
        let tx = db.begin_write().map_err(unavailable)?;
        tx.open_table(SESSIONS).map_err(unavailable)?;
        tx.open_table(LOGINS).map_err(unavailable)?;
        tx.open_table(INDEX).map_err(unavailable)?;
        tx.open_table(USED).map_err(unavailable)?;
        tx.commit().map_err(unavailable)?;
        Ok(Self {
            db: Arc::new(db),
            max_logins: max_logins.max(1) as u64,
        })
    }

    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Database) -> Result<T, redb::Error> + Send + 'static,
    ) -> Result<T, StoreError> {
        let db = Arc::clone(&self.db);
        tokio::task::spawn_blocking(move || f(&db))
            .await
            .map_err(|e| StoreError::Unavailable(Box::new(e)))?
            .map_err(unavailable)
    }

    /// Deletes every expired record.
    ///
    /// # Errors
    /// When the database cannot be written.
    pub async fn sweep(&self) -> Result<(), StoreError> {
        self.blocking(|db| {
            let now = millis(SystemTime::now());
            let tx = db.begin_write()?;
            tx.open_table(SESSIONS)?.retain(|_, (exp, _)| exp > now)?;
            tx.open_table(LOGINS)?.retain(|_, (exp, _)| exp > now)?;
            tx.open_table(INDEX)?.retain(|_, exp| exp > now)?;
            tx.open_table(USED)?.retain(|_, exp| exp > now)?;
            tx.commit()?;
            Ok(())
        })
        .await
    }

    /// Writes `sealed` under `key` when `allow` says so of what the key holds now: `None`
    /// when absent or expired, else the stored sealed bytes.
    async fn write_session(
        &self,
        key: &StoreKey,
        sealed: Bytes,
        expires_at: SystemTime,
        allow: impl FnOnce(Option<&[u8]>) -> bool + Send + 'static,
    ) -> Result<bool, StoreError> {
        let key = *key.as_bytes();
        self.blocking(move |db| {
            let now = millis(SystemTime::now());
            let tx = db.begin_write()?;
            let written = {
                let mut t = tx.open_table(SESSIONS)?;
                let allowed = {
                    let current = t.get(&key[..])?;
                    let live = current
                        .as_ref()
                        .map(|v| v.value())
                        .filter(|(exp, _)| *exp > now)
                        .map(|(_, bytes)| bytes);
                    allow(live)
                };
                if allowed {
                    t.insert(&key[..], (millis(expires_at), &sealed[..]))?;
                }
                allowed
            };
            if written {
                tx.commit()?;
            } else {
                tx.abort()?;
            }
            Ok(written)
        })
        .await
    }
}

/// The first and last index keys of `owner`.
fn owner_range(owner: &StoreKey) -> ([u8; 64], [u8; 64]) {
    let mut from = [0u8; 64];
    let mut to = [0xffu8; 64];
    from[..32].copy_from_slice(owner.as_bytes());
    to[..32].copy_from_slice(owner.as_bytes());
    (from, to)
}

#[async_trait]
impl SessionStore for FileStore {
    async fn count(&self) -> Option<u64> {
        self.blocking(|db| Ok(db.begin_read()?.open_table(SESSIONS)?.len()?))
            .await
            .ok()
    }

    async fn load(&self, key: &StoreKey) -> Result<Option<Bytes>, StoreError> {
        let key = *key.as_bytes();
        self.blocking(move |db| {
            let tx = db.begin_read()?;
            let t = tx.open_table(SESSIONS)?;
            let now = millis(SystemTime::now());
            Ok(t.get(&key[..])?.and_then(|v| {
                let (exp, sealed) = v.value();
                (exp > now).then(|| Bytes::copy_from_slice(sealed))
            }))
        })
        .await
    }

    async fn create(
        &self,
        key: &StoreKey,
        sealed: Bytes,
        expires_at: SystemTime,
    ) -> Result<bool, StoreError> {
        self.write_session(key, sealed, expires_at, |live| live.is_none())
            .await
    }

    async fn update(
        &self,
        key: &StoreKey,
        sealed: Bytes,
        expires_at: SystemTime,
    ) -> Result<bool, StoreError> {
        self.write_session(key, sealed, expires_at, |live| live.is_some())
            .await
    }

    async fn replace(
        &self,
        key: &StoreKey,
        expected: &Bytes,
        sealed: Bytes,
        expires_at: SystemTime,
    ) -> Result<bool, StoreError> {
        let expected = expected.clone();
        self.write_session(key, sealed, expires_at, move |current| {
            current == Some(&expected[..])
        })
        .await
    }

    async fn delete(&self, key: &StoreKey) -> Result<(), StoreError> {
        let key = *key.as_bytes();
        self.blocking(move |db| {
            let tx = db.begin_write()?;
            tx.open_table(SESSIONS)?.remove(&key[..])?;
            tx.commit()?;
            Ok(())
        })
        .await
    }

    async fn put_login(
        &self,
        key: &StoreKey,
        sealed: Vec<u8>,
        expires_at: SystemTime,
    ) -> Result<(), StoreError> {
        let key = *key.as_bytes();
        let max = self.max_logins;
        self.blocking(move |db| {
            let tx = db.begin_write()?;
            {
                let mut t = tx.open_table(LOGINS)?;
                if t.len()? >= max {
                    let now = millis(SystemTime::now());
                    t.retain(|_, (exp, _)| exp > now)?;
                    if t.len()? >= max {
                        // A flood of live logins: drop the tenth closest to expiry.
                        let mut by_expiry = Vec::new();
                        for entry in t.iter()? {
                            let (k, v) = entry?;
                            by_expiry.push((v.value().0, k.value().to_vec()));
                        }
                        by_expiry.sort_unstable();
                        for (_, k) in by_expiry.into_iter().take((max as usize / 10).max(1)) {
                            t.remove(&k[..])?;
                        }
                    }
                }
                t.insert(&key[..], (millis(expires_at), &sealed[..]))?;
            }
            tx.commit()?;
            Ok(())
        })
        .await
    }

    async fn take_login(&self, key: &StoreKey) -> Result<Option<Vec<u8>>, StoreError> {
        let key = *key.as_bytes();
        self.blocking(move |db| {
            let tx = db.begin_write()?;
            let taken = {
                let mut t = tx.open_table(LOGINS)?;
                let now = millis(SystemTime::now());
                t.remove(&key[..])?.and_then(|v| {
                    let (exp, sealed) = v.value();
                    (exp > now).then(|| sealed.to_vec())
                })
            };
            tx.commit()?;
            Ok(taken)
        })
        .await
    }

    async fn index(
        &self,
        owner: &StoreKey,
        session: &StoreKey,
        expires_at: SystemTime,
    ) -> Result<(), StoreError> {
        let mut entry = [0u8; 64];
        entry[..32].copy_from_slice(owner.as_bytes());
        entry[32..].copy_from_slice(session.as_bytes());
        self.blocking(move |db| {
            let tx = db.begin_write()?;
            {
                let mut t = tx.open_table(INDEX)?;
                let until = t
                    .get(&entry[..])?
                    .map_or(0, |v| v.value())
                    .max(millis(expires_at));
                t.insert(&entry[..], until)?;
            }
            tx.commit()?;
            Ok(())
        })
        .await
    }

    async fn indexed(&self, owner: &StoreKey) -> Result<Vec<StoreKey>, StoreError> {
        let (from, to) = owner_range(owner);
        self.blocking(move |db| {
            let tx = db.begin_read()?;
            let t = tx.open_table(INDEX)?;
            let mut out = Vec::new();
            for entry in t.range(&from[..]..=&to[..])? {
                let (k, _) = entry?;
                let mut session = [0u8; 32];
                session.copy_from_slice(&k.value()[32..]);
                out.push(StoreKey::from_bytes(session));
            }
            Ok(out)
        })
        .await
    }

    async fn forget(&self, owner: &StoreKey) -> Result<(), StoreError> {
        let (from, to) = owner_range(owner);
        self.blocking(move |db| {
            let tx = db.begin_write()?;
            {
                let mut t = tx.open_table(INDEX)?;
                let keys: Vec<Vec<u8>> = t
                    .range(&from[..]..=&to[..])?
                    .map(|e| e.map(|(k, _)| k.value().to_vec()))
                    .collect::<Result<_, _>>()?;
                for k in keys {
                    t.remove(&k[..])?;
                }
            }
            tx.commit()?;
            Ok(())
        })
        .await
    }

    async fn is_used(&self, key: &StoreKey) -> Result<bool, StoreError> {
        let key = *key.as_bytes();
        self.blocking(move |db| {
            let tx = db.begin_read()?;
            let used = tx
                .open_table(USED)?
                .get(&key[..])?
                .is_some_and(|v| v.value() > millis(SystemTime::now()));
            Ok(used)
        })
        .await
    }

    async fn first_use(&self, key: &StoreKey, expires_at: SystemTime) -> Result<bool, StoreError> {
        let key = *key.as_bytes();
        self.blocking(move |db| {
            let tx = db.begin_write()?;
            let first = {
                let mut t = tx.open_table(USED)?;
                let live = t
                    .get(&key[..])?
                    .is_some_and(|v| v.value() > millis(SystemTime::now()));
                if !live {
                    t.insert(&key[..], millis(expires_at))?;
                }
                !live
            };
            tx.commit()?;
            Ok(first)
        })
        .await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.blocking(|db| {
            db.begin_read()?;
            Ok(())
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::SessionStore;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    #[tokio::test]
    async fn passes_the_conformance_suite() {
        let dir = tempfile::tempdir().unwrap();
        let n = AtomicUsize::new(0);
        let base = dir.path().to_path_buf();
        crate::store::conformance::run(|max| {
            let path = base.join(format!("s{}.db", n.fetch_add(1, Ordering::Relaxed)));
            async move { FileStore::open(&path, max).unwrap() }
        })
        .await;
    }

    #[tokio::test]
    async fn sessions_survive_reopening_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nested/sessions.db");
        let key = StoreKey::hash(b"k");
        {
            let s = FileStore::open(&path, 10).unwrap();
            assert!(
                s.create(
                    &key,
                    bytes::Bytes::from_static(b"kept"),
                    SystemTime::now() + Duration::from_secs(60)
                )
                .await
                .unwrap()
            );
        }
        let s = FileStore::open(&path, 10).unwrap();
        assert_eq!(s.load(&key).await.unwrap().as_deref(), Some(&b"kept"[..]));
    }

    #[tokio::test]
    async fn sweep_deletes_expired_records() {
        let dir = tempfile::tempdir().unwrap();
        let s = FileStore::open(&dir.path().join("s.db"), 10).unwrap();
        let key = StoreKey::hash(b"k");
        s.create(
            &key,
            bytes::Bytes::from_static(b"old"),
            SystemTime::now() - Duration::from_secs(1),
        )
        .await
        .unwrap();
        s.sweep().await.unwrap();
        let count = s
            .blocking(|db| Ok(db.begin_read()?.open_table(SESSIONS)?.len()?))
            .await
            .unwrap();
        assert_eq!(count, 0);
    }
}
