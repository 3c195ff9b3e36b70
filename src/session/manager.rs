//! Sessions on the request path: from the cookie to a live, opened record, written back to the
//! store only when it changed (timeouts enforced on the way).
//!
//! Opening a record (AES-GCM-SIV, then JSON) is most of a request's own work, so the records
//! of recently used sessions are kept opened (`Opened`). The store stays the only truth:
//! every request still loads the sealed bytes, and an opened record is reused only while the
//! store returns exactly the bytes it was opened from.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::HeaderMap;

use super::seal::Sealer;

pub use super::opened::OPENED_CAPACITY;
use super::opened::Opened;
use super::revoke::Owner;
use super::{SessionId, SessionRecord, SessionStore, StoreError, StoreKey, cookie, from_unix};
use crate::clock::Clock;
use crate::config::{CookieConfig, SessionConfig};

/// How a request's session turned out.
// Returned by value once per request; boxing `Found` would add an allocation to the hot path.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum Lookup {
    /// No session cookie was sent.
    NoCookie,
    /// A cookie was sent, but it names no live session (expired, logged out, forged).
    Ended,
    /// A live session.
    Found(Loaded),
}

/// A live session and the key it is stored under.
#[derive(Debug, Clone)]
pub struct Loaded {
    /// Where the record is stored.
    pub key: StoreKey,
    /// The opened record, shared with the cache of opened records (change it through
    /// [`Arc::make_mut`], then [`Sessions::save`]).
    pub record: Arc<SessionRecord>,
}

/// Loads, creates, saves and deletes sessions.
pub struct Sessions {
    pub(super) store: Arc<dyn SessionStore>,
    /// Open streams waiting for their session to end, by session: a delete here wakes them.
    pub(super) ending: Mutex<HashMap<StoreKey, tokio::sync::watch::Sender<()>>>,
    pub(super) stream_recheck: Duration,
    pub(super) opened: Opened,
    pub(super) sealer: Sealer,
    pub(super) clock: Clock,
    pub(super) idle: Duration,
    pub(super) absolute: Duration,
    pub(super) touch_every: u64,
    pub(super) cookie: CookieConfig,
}

impl std::fmt::Debug for Sessions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sessions")
            .field("idle", &self.idle)
            .field("absolute", &self.absolute)
            .finish()
    }
}

impl Sessions {
    /// Wraps `store` with the configured keys and timeouts.
    pub fn new(store: Arc<dyn SessionStore>, config: &SessionConfig, clock: Clock) -> Self {
        Self {
            store,
            ending: Mutex::default(),
            stream_recheck: config.stream_recheck,
            opened: Opened::default(),
            sealer: Sealer::new(&config.keys),
            clock,
            idle: config.idle_timeout,
            absolute: config.absolute_timeout,
            // Extending the idle timeout on every request would be a store write per request;
            // a tenth of it (at most a minute) is precise enough.
            touch_every: (config.idle_timeout.as_secs() / 10).clamp(1, 60),
            cookie: config.cookie.clone(),
        }
    }

    /// Drops the opened records of sessions that have timed out, so that their tokens leave
    /// memory even when no request comes for them again (a logout drops them at once); returns
    /// how many. Run every minute by `serve`.
    pub fn forget_ended(&self) -> usize {
        self.ending_streams()
            .retain(|_, tx| tx.receiver_count() > 0);
        let now = self.clock.unix();
        let idle = self.idle.as_secs();
        self.opened
            .forget(|r| now >= r.expires_at || now >= r.last_seen.saturating_add(idle))
    }

    /// The backend.
    pub fn store(&self) -> &Arc<dyn SessionStore> {
        &self.store
    }

    /// The clock expiry is judged by.
    pub fn clock(&self) -> &Clock {
        &self.clock
    }

    /// The cookie settings.
    pub fn cookie(&self) -> &CookieConfig {
        &self.cookie
    }

    /// The session of a request, extending its idle timeout when due.
    ///
    /// The extension (a "touch") is a compare-and-set on the bytes this request loaded: when
    /// another request changed the record meanwhile (a refresh rotating the refresh token), the
    /// touch is dropped rather than putting the old tokens back; a later request touches.
    ///
    /// # Errors
    /// Only when the store fails; every other problem is [`Lookup::Ended`].
    pub async fn lookup(&self, headers: &HeaderMap) -> Result<Lookup, StoreError> {
        let Some(value) = cookie::find(headers, &self.cookie.name) else {
            return Ok(Lookup::NoCookie);
        };
        let Some(id) = SessionId::parse(value) else {
            return Ok(Lookup::Ended);
        };
        let key = id.store_key();
        let Some((sealed, record)) = self.load_sealed(&key).await? else {
            return Ok(Lookup::Ended);
        };
        let now = self.clock.unix();
        if now.saturating_sub(record.last_seen) >= self.touch_every {
            let mut touched = (*record).clone();
            touched.last_seen = now;
            let touched = Arc::new(touched);
            let resealed = self.seal(&key, &touched);
            if self
                .store
                .replace(&key, &sealed, resealed.clone(), self.store_expiry(&touched))
                .await?
            {
                self.opened.put(key, resealed, Arc::clone(&touched));
                return Ok(Lookup::Found(Loaded {
                    key,
                    record: touched,
                }));
            }
            // Changed (or ended) since it was loaded: what the store holds now is the truth.
            return Ok(match self.load(&key).await? {
                Some(record) => Lookup::Found(Loaded { key, record }),
                None => Lookup::Ended,
            });
        }
        Ok(Lookup::Found(Loaded { key, record }))
    }

    /// Loads and opens the record under `key`; `None` when absent, unreadable or timed out
    /// (a timed-out record is deleted).
    ///
    /// # Errors
    /// When the store fails.
    pub async fn load(&self, key: &StoreKey) -> Result<Option<Arc<SessionRecord>>, StoreError> {
        Ok(self.load_sealed(key).await?.map(|(_, record)| record))
    }

    /// [`Sessions::load`], with the sealed bytes the record was opened from.
    async fn load_sealed(
        &self,
        key: &StoreKey,
    ) -> Result<Option<(Bytes, Arc<SessionRecord>)>, StoreError> {
        let Some(sealed) = self.store.load(key).await? else {
            self.opened.remove(key);
            return Ok(None);
        };
        let record = match self.opened.get(key, &sealed) {
            Some(record) => record,
            None => {
                let Some(record) = self.open(key, &sealed) else {
                    // Whatever was opened before under this key is not the store's record.
                    self.opened.remove(key);
                    return Ok(None);
                };
                let record = Arc::new(record);
                self.opened.put(*key, sealed.clone(), Arc::clone(&record));
                record
            }
        };
        let now = self.clock.unix();
        if now >= record.expires_at || now >= record.last_seen.saturating_add(self.idle.as_secs()) {
            self.delete(key).await?;
            return Ok(None);
        }
        Ok(Some((sealed, record)))
    }

    /// Decrypts and decodes a sealed record; `None` (logged) when it does not open.
    fn open(&self, key: &StoreKey, sealed: &[u8]) -> Option<SessionRecord> {
        self.open_value(key, sealed)
    }

    /// Decrypts and decodes a value sealed under `key` with [`Sessions::seal_value`]; `None`
    /// (logged) when it does not open.
    pub fn open_value<T: serde::de::DeserializeOwned>(
        &self,
        key: &StoreKey,
        sealed: &[u8],
    ) -> Option<T> {
        let Some(plain) = self.sealer.open(key.as_bytes(), sealed) else {
            tracing::warn!(key = ?key, "a stored record does not open with any configured key");
            return None;
        };
        // The plaintext holds tokens: wipe it once decoded.
        let plain = zeroize::Zeroizing::new(plain);
        match serde_json::from_slice(&plain) {
            Ok(r) => Some(r),
            Err(e) => {
                tracing::warn!(key = ?key, error = %e, "a stored record is unreadable");
                None
            }
        }
    }

    /// Seals `value` (JSON inside the AEAD envelope) for storing under `key`, with the session
    /// keys: what the store holds beside sessions (shared tokens) is as safe as they are.
    pub fn seal_value<T: serde::Serialize>(&self, key: &StoreKey, value: &T) -> Bytes {
        let plain = zeroize::Zeroizing::new(
            serde_json::to_vec(value).expect("stored records always serialise"),
        );
        Bytes::from(self.sealer.seal(key.as_bytes(), &plain))
    }

    /// A value kept beside the sessions (a shared token, a registration) under `key`, sealed
    /// with [`Sessions::seal_value`]; `None` when absent or when it does not open.
    ///
    /// # Errors
    /// When the store fails.
    pub async fn load_value<T: serde::de::DeserializeOwned>(
        &self,
        key: &StoreKey,
    ) -> Result<Option<T>, StoreError> {
        Ok(self
            .store
            .load(key)
            .await?
            .and_then(|sealed| self.open_value(key, &sealed)))
    }

    /// Seals `value` and stores it under `key` until `until`, replacing what is there.
    ///
    /// # Errors
    /// When the store fails.
    pub async fn put_value<T: serde::Serialize>(
        &self,
        key: &StoreKey,
        value: &T,
        until: std::time::SystemTime,
    ) -> Result<(), StoreError> {
        let sealed = self.seal_value(key, value);
        if !self.store.update(key, sealed.clone(), until).await? {
            self.store.create(key, sealed, until).await?;
        }
        Ok(())
    }

    fn store_expiry(&self, record: &SessionRecord) -> std::time::SystemTime {
        from_unix(
            record
                .expires_at
                .min(record.last_seen.saturating_add(self.idle.as_secs())),
        )
    }

    pub(super) fn seal(&self, key: &StoreKey, record: &SessionRecord) -> Bytes {
        self.seal_value(key, record)
    }

    /// Stores a new session under a fresh id (never one the browser brought).
    ///
    /// # Errors
    /// When the store fails.
    pub async fn create(&self, record: &SessionRecord) -> Result<SessionId, StoreError> {
        loop {
            let id = SessionId::generate();
            let key = id.store_key();
            if self
                .store
                .create(&key, self.seal(&key, record), self.store_expiry(record))
                .await?
            {
                let until = from_unix(record.expires_at);
                let sub = Owner::Subject(&record.sub).key(&record.provider);
                self.store.index(&sub, &key, until).await?;
                if let Some(sid) = &record.sid {
                    let sid = Owner::ProviderSession(sid).key(&record.provider);
                    self.store.index(&sid, &key, until).await?;
                }
                return Ok(id);
            }
            // 256-bit ids do not collide in practice; the loop keeps the contract honest.
        }
    }

    /// Writes back a changed record; `false` when the session ended meanwhile.
    ///
    /// # Errors
    /// When the store fails.
    pub async fn save(
        &self,
        key: &StoreKey,
        record: &Arc<SessionRecord>,
    ) -> Result<bool, StoreError> {
        let sealed = self.seal(key, record);
        let saved = self
            .store
            .update(key, sealed.clone(), self.store_expiry(record))
            .await?;
        if saved {
            // The next request loads these bytes: it finds the record already opened.
            self.opened.put(*key, sealed, Arc::clone(record));
        } else {
            self.opened.remove(key);
        }
        Ok(saved)
    }

    /// Applies `change` to the record as the store holds it now, by compare-and-set: when
    /// another writer (a refresh, an exchange for another service, a touch) got there first,
    /// `change` is applied again to what it wrote, so no writer's work is lost. `None` when
    /// the session ended.
    ///
    /// # Errors
    /// When the store fails, or keeps changing under this writer (16 attempts).
    pub async fn modify(
        &self,
        key: &StoreKey,
        mut change: impl FnMut(&mut SessionRecord),
    ) -> Result<Option<Arc<SessionRecord>>, StoreError> {
        for _ in 0..16 {
            let Some((sealed, current)) = self.load_sealed(key).await? else {
                return Ok(None);
            };
            let mut changed = (*current).clone();
            drop(current);
            change(&mut changed);
            let changed = Arc::new(changed);
            let resealed = self.seal(key, &changed);
            if self
                .store
                .replace(key, &sealed, resealed.clone(), self.store_expiry(&changed))
                .await?
            {
                self.opened.put(*key, resealed, Arc::clone(&changed));
                return Ok(Some(changed));
            }
        }
        Err(StoreError::Unavailable(
            "the session kept changing while it was written".into(),
        ))
    }

    /// Ends a session; its open streams here end at once.
    ///
    /// # Errors
    /// When the store fails.
    pub async fn delete(&self, key: &StoreKey) -> Result<(), StoreError> {
        self.opened.remove(key);
        let result = self.store.delete(key).await;
        if let Some(tx) = self.ending_streams().remove(key) {
            let _ = tx.send(());
        }
        result
    }

    /// A new record's timestamps: created and last seen now, ending after the absolute timeout.
    pub fn timestamps(&self) -> (u64, u64) {
        let now = self.clock.unix();
        (now, now + self.absolute.as_secs())
    }

    /// How long the session cookie should live.
    pub fn cookie_max_age(&self) -> Duration {
        self.absolute
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::path::Path;

    use super::*;
    use crate::config::Config;
    use std::time::SystemTime;

    use crate::secret::{AccessToken, IdToken};
    use crate::store::memory::MemoryStore;

    fn config() -> SessionConfig {
        let yaml = "server: { listen: 127.0.0.1:8080, public_url: https://app.example.com }\n\
            providers: { main: { issuer: https://id.example.com, client_id: app, client_secret: s } }\n\
            session: { keys: [\"MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=\"] }\n";
        Config::parse(yaml, Path::new("/"), &HashMap::<String, String>::new())
            .expect("a valid test config")
            .session
    }

    fn sessions(store: &Arc<MemoryStore>) -> Sessions {
        let yaml = "server: { listen: 127.0.0.1:8080, public_url: https://app.example.com }\n\
            providers: { main: { issuer: https://id.example.com, client_id: app, client_secret: s } }\n\
            session: { keys: [\"MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=\"] }\n";
        let config = Config::parse(yaml, Path::new("/"), &HashMap::<String, String>::new())
            .expect("a valid test config");
        Sessions::new(Arc::clone(store) as _, &config.session, Clock::default())
    }

    fn record(sessions: &Sessions, token: &str) -> SessionRecord {
        let (now, expires_at) = sessions.timestamps();
        SessionRecord {
            v: 1,
            provider: "main".into(),
            sub: "alice".into(),
            sid: None,
            claims: serde_json::Map::new(),
            id_token: IdToken::new("id".to_owned()),
            access_token: AccessToken::new(token.to_owned()),
            access_expires_at: None,
            refresh_token: None,
            id_expires_at: None,
            service_tokens: Default::default(),
            created_at: now,
            last_seen: now,
            expires_at,
            csrf_token: "csrf".into(),
            dpop_key: None,
            client_address: None,
            user_agent: None,
        }
    }

    fn cookie(sessions: &Sessions, id: &SessionId) -> HeaderMap {
        let mut h = HeaderMap::new();
        let value = format!("{}={}", sessions.cookie().name, id.encode());
        h.insert(http::header::COOKIE, value.parse().unwrap());
        h
    }

    async fn token(sessions: &Sessions, headers: &HeaderMap) -> Option<String> {
        match sessions.lookup(headers).await.unwrap() {
            Lookup::Found(s) => Some(s.record.access_token.expose().to_owned()),
            _ => None,
        }
    }

    #[tokio::test]
    async fn a_cached_record_is_reused_only_while_the_store_holds_its_bytes() {
        let store = Arc::new(MemoryStore::new(10));
        // Two instances sharing one store: `other` stands for another Sallyport.
        let (this, other) = (sessions(&store), sessions(&store));
        let id = this.create(&record(&this, "first")).await.unwrap();
        let headers = cookie(&this, &id);
        assert_eq!(token(&this, &headers).await.as_deref(), Some("first"));
        let a = this.load(&id.store_key()).await.unwrap().unwrap();
        let b = this.load(&id.store_key()).await.unwrap().unwrap();
        assert!(Arc::ptr_eq(&a, &b), "an unchanged record is opened once");

        // The other instance refreshes the token: this one must see it at once.
        let refreshed = Arc::new(record(&other, "second"));
        assert!(other.save(&id.store_key(), &refreshed).await.unwrap());
        assert_eq!(token(&this, &headers).await.as_deref(), Some("second"));

        // The other instance ends the session: this one must refuse it at once.
        other.delete(&id.store_key()).await.unwrap();
        assert!(matches!(
            this.lookup(&headers).await.unwrap(),
            Lookup::Ended
        ));
    }

    #[tokio::test]
    async fn opened_records_of_ended_sessions_leave_memory() {
        let store = Arc::new(MemoryStore::new(10));
        let s = sessions(&store);
        let id = s.create(&record(&s, "t")).await.unwrap();
        assert!(s.load(&id.store_key()).await.unwrap().is_some());
        assert_eq!(s.forget_ended(), 0, "a live session's record stays");
        assert_eq!(s.opened.lock().len(), 1);
        s.clock().advance(s.idle + Duration::from_secs(1));
        assert_eq!(s.forget_ended(), 1);
        assert!(s.opened.lock().is_empty());

        let id = s.create(&record(&s, "t2")).await.unwrap();
        assert!(s.load(&id.store_key()).await.unwrap().is_some());
        s.delete(&id.store_key()).await.unwrap();
        assert!(s.opened.lock().is_empty(), "a logout drops it at once");
    }

    #[tokio::test]
    async fn a_record_that_no_longer_opens_leaves_nothing_opened() {
        let store = Arc::new(MemoryStore::new(10));
        let s = sessions(&store);
        let id = s.create(&record(&s, "t")).await.unwrap();
        assert!(s.load(&id.store_key()).await.unwrap().is_some());
        let until = std::time::SystemTime::now() + Duration::from_secs(60);
        assert!(
            store
                .update(&id.store_key(), Bytes::from_static(b"not sealed"), until)
                .await
                .unwrap()
        );
        assert!(s.load(&id.store_key()).await.unwrap().is_none());
        assert!(s.opened.lock().is_empty(), "the old tokens are not kept");
    }

    #[tokio::test]
    async fn the_cache_of_opened_records_stays_bounded() {
        let store = Arc::new(MemoryStore::new(10));
        let s = sessions(&store);
        for i in 0..OPENED_CAPACITY + 100 {
            let id = s.create(&record(&s, &format!("t{i}"))).await.unwrap();
            assert!(s.load(&id.store_key()).await.unwrap().is_some());
        }
        let cached = s.opened.lock().len();
        assert!(cached <= OPENED_CAPACITY, "{cached} opened records kept");
        assert!(
            cached > OPENED_CAPACITY / 2,
            "evicting keeps most of the cache"
        );
    }

    /// A store where another instance's refresh lands between a request's read and its touch.
    struct RefreshBeforeTouch {
        inner: Arc<MemoryStore>,
        refresh: Mutex<Option<(StoreKey, Bytes)>>,
    }

    impl RefreshBeforeTouch {
        async fn refresh_lands(&self, t: SystemTime) -> Result<(), StoreError> {
            let refresh = self.refresh.lock().unwrap().take();
            if let Some((key, refreshed)) = refresh {
                assert!(self.inner.update(&key, refreshed, t).await?);
            }
            Ok(())
        }
    }

    #[async_trait::async_trait]
    impl SessionStore for RefreshBeforeTouch {
        async fn load(&self, k: &StoreKey) -> Result<Option<Bytes>, StoreError> {
            self.inner.load(k).await
        }
        async fn create(&self, k: &StoreKey, v: Bytes, t: SystemTime) -> Result<bool, StoreError> {
            self.inner.create(k, v, t).await
        }
        // The refresh lands just before the touch's write, whichever way it writes.
        async fn update(&self, k: &StoreKey, v: Bytes, t: SystemTime) -> Result<bool, StoreError> {
            self.refresh_lands(t).await?;
            self.inner.update(k, v, t).await
        }
        async fn replace(
            &self,
            k: &StoreKey,
            expected: &Bytes,
            v: Bytes,
            t: SystemTime,
        ) -> Result<bool, StoreError> {
            self.refresh_lands(t).await?;
            self.inner.replace(k, expected, v, t).await
        }
        async fn delete(&self, k: &StoreKey) -> Result<(), StoreError> {
            self.inner.delete(k).await
        }
        async fn put_login(
            &self,
            k: &StoreKey,
            v: Vec<u8>,
            t: SystemTime,
        ) -> Result<(), StoreError> {
            self.inner.put_login(k, v, t).await
        }
        async fn take_login(&self, k: &StoreKey) -> Result<Option<Vec<u8>>, StoreError> {
            self.inner.take_login(k).await
        }
        async fn ping(&self) -> Result<(), StoreError> {
            Ok(())
        }
        async fn index(&self, o: &StoreKey, k: &StoreKey, t: SystemTime) -> Result<(), StoreError> {
            self.inner.index(o, k, t).await
        }
        async fn indexed(&self, o: &StoreKey) -> Result<Vec<StoreKey>, StoreError> {
            self.inner.indexed(o).await
        }
        async fn forget(&self, o: &StoreKey) -> Result<(), StoreError> {
            self.inner.forget(o).await
        }
        async fn first_use(&self, k: &StoreKey, t: SystemTime) -> Result<bool, StoreError> {
            self.inner.first_use(k, t).await
        }
        async fn is_used(&self, k: &StoreKey) -> Result<bool, StoreError> {
            self.inner.is_used(k).await
        }
    }

    #[tokio::test]
    async fn a_touch_racing_a_refresh_never_puts_the_old_tokens_back() {
        let memory = Arc::new(MemoryStore::new(10));
        let racing = Arc::new(RefreshBeforeTouch {
            inner: Arc::clone(&memory),
            refresh: Mutex::default(),
        });
        let this = {
            let base = sessions(&memory);
            Sessions::new(
                Arc::clone(&racing) as Arc<dyn SessionStore>,
                &config(),
                base.clock,
            )
        };
        let other = sessions(&memory);
        let mut old = record(&this, "old-access");
        old.refresh_token = Some(crate::secret::RefreshToken::new("old-refresh".to_owned()));
        let id = this.create(&old).await.unwrap();
        let key = id.store_key();
        // Due for a touch; meanwhile the other instance refreshes and rotates the refresh token.
        this.clock().advance(Duration::from_secs(this.touch_every));
        let mut refreshed = old.clone();
        refreshed.access_token = AccessToken::new("new-access".to_owned());
        refreshed.refresh_token = Some(crate::secret::RefreshToken::new("new-refresh".to_owned()));
        *racing.refresh.lock().unwrap() = Some((key, other.seal(&key, &refreshed)));

        let seen = match this.lookup(&cookie(&this, &id)).await.unwrap() {
            Lookup::Found(s) => s.record,
            other => panic!("the session ended: {other:?}"),
        };
        assert_eq!(
            seen.access_token.expose(),
            "new-access",
            "the request sees the refresh"
        );
        let stored = other.load(&key).await.unwrap().unwrap();
        assert_eq!(
            stored.refresh_token.as_ref().unwrap().expose(),
            "new-refresh",
            "the rotated refresh token survived the touch"
        );
    }
}
