//! Sessions as the request path uses them: find the cookie, load and open the record, enforce
//! the idle and absolute timeouts, and write back only when something changed.

use std::sync::Arc;
use std::time::Duration;

use http::HeaderMap;

use super::seal::Sealer;
use super::{
    LoginRecord, SessionId, SessionRecord, SessionStore, StoreError, StoreKey, cookie, from_unix,
};
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

/// Whose sessions to find: a user, or one session at the provider.
#[derive(Debug, Clone, Copy)]
pub enum Owner<'a> {
    /// Every session of the user with this `sub`.
    Subject(&'a str),
    /// Every session made from the provider session with this `sid`.
    ProviderSession(&'a str),
}

impl Owner<'_> {
    /// The index key: a hash, so a store dump does not list user ids.
    fn key(self, provider: &str) -> StoreKey {
        let (kind, value) = match self {
            Owner::Subject(sub) => ("sub", sub),
            Owner::ProviderSession(sid) => ("sid", sid),
        };
        StoreKey::hash(format!("{kind}\0{provider}\0{value}").as_bytes())
    }
}

/// A live session and the key it is stored under.
#[derive(Debug, Clone)]
pub struct Loaded {
    /// Where the record is stored.
    pub key: StoreKey,
    /// The opened record.
    pub record: SessionRecord,
}

/// Loads, creates, saves and ends sessions and pending logins.
pub struct Sessions {
    store: Arc<dyn SessionStore>,
    sealer: Sealer,
    clock: Clock,
    idle: Duration,
    absolute: Duration,
    touch_every: u64,
    cookie: CookieConfig,
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
        let Some(mut record) = self.load(&key).await? else {
            return Ok(Lookup::Ended);
        };
        let now = self.clock.unix();
        if now.saturating_sub(record.last_seen) >= self.touch_every {
            record.last_seen = now;
            if !self.save(&key, &record).await? {
                return Ok(Lookup::Ended);
            }
        }
        Ok(Lookup::Found(Loaded { key, record }))
    }

    /// Loads and opens the record under `key`; `None` when absent, unreadable or timed out
    /// (a timed-out record is deleted).
    ///
    /// # Errors
    /// When the store fails.
    pub async fn load(&self, key: &StoreKey) -> Result<Option<SessionRecord>, StoreError> {
        let Some(sealed) = self.store.load(key).await? else {
            return Ok(None);
        };
        let Some(plain) = self.sealer.open(key.as_bytes(), &sealed) else {
            tracing::warn!(session = ?key, "session record does not open with any configured key");
            return Ok(None);
        };
        let record: SessionRecord = match serde_json::from_slice(&plain) {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(session = ?key, error = %e, "session record unreadable");
                return Ok(None);
            }
        };
        let now = self.clock.unix();
        if now >= record.expires_at || now >= record.last_seen.saturating_add(self.idle.as_secs()) {
            self.store.delete(key).await?;
            return Ok(None);
        }
        Ok(Some(record))
    }

    fn store_expiry(&self, record: &SessionRecord) -> std::time::SystemTime {
        from_unix(
            record
                .expires_at
                .min(record.last_seen.saturating_add(self.idle.as_secs())),
        )
    }

    fn seal(&self, key: &StoreKey, record: &SessionRecord) -> Vec<u8> {
        let plain = serde_json::to_vec(record).expect("a session record always serialises");
        self.sealer.seal(key.as_bytes(), &plain)
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
    pub async fn save(&self, key: &StoreKey, record: &SessionRecord) -> Result<bool, StoreError> {
        self.store
            .update(key, self.seal(key, record), self.store_expiry(record))
            .await
    }

    /// Ends a session.
    ///
    /// # Errors
    /// When the store fails.
    pub async fn delete(&self, key: &StoreKey) -> Result<(), StoreError> {
        self.store.delete(key).await
    }

    /// Ends every session of `owner` at `provider`, on every instance sharing the store;
    /// returns how many were live.
    ///
    /// # Errors
    /// When the store fails.
    pub async fn revoke(&self, provider: &str, owner: Owner<'_>) -> Result<usize, StoreError> {
        let owner = owner.key(provider);
        let mut ended = 0;
        for key in self.store.indexed(&owner).await? {
            if self.store.load(&key).await?.is_some() {
                self.store.delete(&key).await?;
                ended += 1;
            }
        }
        self.store.forget(&owner).await?;
        Ok(ended)
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

    /// Stores a pending login under the hash of its `state`.
    ///
    /// # Errors
    /// When the store fails.
    pub async fn put_login(
        &self,
        state: &str,
        record: &LoginRecord,
        ttl: Duration,
    ) -> Result<(), StoreError> {
        let key = StoreKey::hash(state.as_bytes());
        let plain = serde_json::to_vec(record).expect("a login record always serialises");
        let sealed = self.sealer.seal(key.as_bytes(), &plain);
        self.store
            .put_login(&key, sealed, self.clock.now() + ttl)
            .await
    }

    /// Takes (once) the pending login for `state`.
    ///
    /// # Errors
    /// When the store fails.
    pub async fn take_login(&self, state: &str) -> Result<Option<LoginRecord>, StoreError> {
        let key = StoreKey::hash(state.as_bytes());
        let Some(sealed) = self.store.take_login(&key).await? else {
            return Ok(None);
        };
        Ok(self
            .sealer
            .open(key.as_bytes(), &sealed)
            .and_then(|plain| serde_json::from_slice(&plain).ok()))
    }
}
