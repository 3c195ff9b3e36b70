//! The token broker: which token a service gets, and refreshing it before it expires — once
//! per session, however many requests arrive at the same time.
//!
//! Refresh is lock-then-re-read, on two levels. In one process, requests of a session queue on
//! an in-process lock, so one of them goes on. Across processes, that one takes the store's
//! lock (Redis `SET NX PX`, token-checked release); when another instance holds it, it polls
//! the session until that instance's refresh lands. Whoever holds the lock re-reads the session
//! first and refreshes only if it is still due, and writes the rotated refresh token before
//! releasing. The holder extends the lock while its refresh runs, so a slow provider never
//! lets a second instance redeem the same rotating refresh token (whose reuse the provider
//! punishes by revoking the grant); a holder that dies blocks nobody beyond the lock's TTL.
//! No sync lock is held across an await.
//!
//! Only `invalid_grant` ends a session: any other refusal (`429`, `invalid_client` during a
//! secret rotation, …) or an unreachable provider is `503`, and the session stays.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::oidc::id_token::Expectations;
use crate::oidc::{PROVIDER_TIMEOUT, Provider, TokenError};
use crate::secret::IdToken;
use crate::session::manager::{Loaded, Sessions};
use crate::session::{StoreError, StoreKey};

/// The most a refresh may take while holding the lock: discovery, the token request and a JWKS
/// fetch for a refreshed ID token (each bounded by [`PROVIDER_TIMEOUT`]), and the store write.
/// A refresh still running then is abandoned and the lock released.
pub const REFRESH_DEADLINE: Duration = Duration::from_secs(PROVIDER_TIMEOUT.as_secs() * 3 + 5);
/// How long the store's refresh lock lives unless its holder extends it (every third of it,
/// while the refresh runs): a holder that dies frees it this soon.
const LOCK_TTL: Duration = Duration::from_secs(15);
/// How often a waiting instance looks whether the lock holder's refresh has landed.
const POLL: Duration = Duration::from_millis(25);

/// Why no usable token could be had.
#[derive(Debug, thiserror::Error)]
pub enum TokenFailure {
    /// The provider refused the refresh, or the session ended meanwhile: log in again.
    #[error("session ended")]
    SessionEnded,
    /// The token expired and the provider cannot be reached to refresh it.
    #[error("token refresh failed")]
    ProviderUnavailable(#[source] TokenError),
    /// The session store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Extends the refresh lock every third of its lifetime, for as long as it is polled (the
/// refresh it guards runs beside it). Never returns.
async fn keep_locked(
    store: &dyn crate::session::SessionStore,
    key: &StoreKey,
    token: &str,
) -> std::convert::Infallible {
    loop {
        tokio::time::sleep(LOCK_TTL / 3).await;
        match store.extend_lock(key, token, LOCK_TTL).await {
            Ok(true) => {}
            Ok(false) => {
                tracing::warn!(session = ?key, "the refresh lock expired while held; another instance may refresh too");
                return std::future::pending().await;
            }
            Err(e) => {
                tracing::warn!(session = ?key, error = %e, "extending the refresh lock failed");
            }
        }
    }
}

/// The token a service with `mode` receives from `record`, if any.
pub fn token_for(
    record: &crate::session::SessionRecord,
    mode: crate::config::TokenMode,
) -> Option<&str> {
    use crate::config::TokenMode;
    match mode {
        TokenMode::User => Some(record.access_token.expose()),
        TokenMode::IdToken => Some(record.id_token.expose()),
        TokenMode::None => None,
    }
}

/// Refreshes tokens, one refresh per session at a time.
#[derive(Debug)]
pub struct Broker {
    refresh_before: Duration,
    locks: Mutex<HashMap<StoreKey, Arc<tokio::sync::Mutex<()>>>>,
}

impl Broker {
    /// A broker refreshing tokens that expire within `refresh_before`.
    pub fn new(refresh_before: Duration) -> Self {
        Self {
            refresh_before,
            locks: Mutex::default(),
        }
    }

    /// Whether the session's access token is due for a refresh at `now` (unix seconds).
    pub fn needs_refresh(&self, session: &Loaded, now: u64) -> bool {
        session
            .record
            .access_expires_at
            .is_some_and(|exp| exp <= now + self.refresh_before.as_secs())
    }

    /// Makes sure `session` holds an access token that is not about to expire, refreshing it
    /// at the provider if needed, and returns the current session.
    ///
    /// # Errors
    /// [`TokenFailure::SessionEnded`] when the refresh is refused (the session is deleted),
    /// [`TokenFailure::ProviderUnavailable`] when the token expired and the provider is down.
    pub async fn ensure_fresh(
        &self,
        sessions: &Sessions,
        provider: &Provider,
        session: Loaded,
    ) -> Result<Loaded, TokenFailure> {
        let now = sessions.clock().unix();
        if !self.needs_refresh(&session, now) {
            return Ok(session);
        }
        // The refresh path holds a provider call's state (kilobytes). Boxed, it stays out of
        // every proxied request's future, which axum moves several times per request.
        Box::pin(self.refresh_session(sessions, provider, session)).await
    }

    async fn refresh_session(
        &self,
        sessions: &Sessions,
        provider: &Provider,
        session: Loaded,
    ) -> Result<Loaded, TokenFailure> {
        let key = session.key;
        let lock = {
            let mut locks = self
                .locks
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            Arc::clone(locks.entry(key).or_default())
        };
        let result = {
            let _held = lock.lock().await;
            self.refresh_locked(sessions, provider, key).await
        };
        drop(lock);
        let mut locks = self
            .locks
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if locks.get(&key).is_some_and(|l| Arc::strong_count(l) == 1) {
            locks.remove(&key);
        }
        result
    }

    async fn refresh_locked(
        &self,
        sessions: &Sessions,
        provider: &Provider,
        key: StoreKey,
    ) -> Result<Loaded, TokenFailure> {
        let store = sessions.store();
        let deadline = Instant::now() + REFRESH_DEADLINE + Duration::from_secs(1);
        loop {
            if let Some(token) = store.try_lock(&key, LOCK_TTL).await? {
                let refresh = self.refresh_holding_lock(sessions, provider, key);
                let held = tokio::time::timeout(REFRESH_DEADLINE, async {
                    tokio::select! {
                        result = refresh => result,
                        never = keep_locked(store.as_ref(), &key, &token) => match never {},
                    }
                })
                .await;
                if let Err(e) = store.unlock(&key, &token).await {
                    tracing::warn!(session = ?key, error = %e, "releasing the refresh lock failed; it expires by itself");
                }
                return match held {
                    Ok(result) => result,
                    Err(_) => {
                        tracing::warn!(session = ?key, deadline = ?REFRESH_DEADLINE, "refresh abandoned: the provider is too slow");
                        self.current_or_unavailable(sessions, key, "the refresh took too long")
                            .await
                    }
                };
            }
            // Another instance is refreshing this session: use its result instead.
            tokio::time::sleep(POLL).await;
            let Some(record) = sessions.load(&key).await? else {
                return Err(TokenFailure::SessionEnded);
            };
            let current = Loaded { key, record };
            let now = sessions.clock().unix();
            if !self.needs_refresh(&current, now) {
                return Ok(current);
            }
            if Instant::now() > deadline {
                if current
                    .record
                    .access_expires_at
                    .is_some_and(|exp| exp > now)
                {
                    return Ok(current);
                }
                return Err(TokenFailure::ProviderUnavailable(TokenError::Unavailable(
                    "the refresh lock stayed held past its lifetime".into(),
                )));
            }
        }
    }

    async fn refresh_holding_lock(
        &self,
        sessions: &Sessions,
        provider: &Provider,
        key: StoreKey,
    ) -> Result<Loaded, TokenFailure> {
        // Another request may have refreshed while this one waited for the lock.
        let Some(mut record) = sessions.load(&key).await? else {
            return Err(TokenFailure::SessionEnded);
        };
        let now = sessions.clock().unix();
        let current = Loaded {
            key,
            record: Arc::clone(&record),
        };
        if !self.needs_refresh(&current, now) {
            return Ok(current);
        }
        let still_valid = record.access_expires_at.is_some_and(|exp| exp > now);
        let Some(refresh_token) = record.refresh_token.clone() else {
            if still_valid {
                return Ok(current);
            }
            sessions.delete(&key).await?;
            return Err(TokenFailure::SessionEnded);
        };
        match provider.refresh(&refresh_token).await {
            Ok(resp) => {
                // `current` shares the record: this makes the refreshed copy.
                let fresh = Arc::make_mut(&mut record);
                fresh.access_token = resp.access_token;
                fresh.access_expires_at = resp.expires_in.map(|s| now + s);
                if let Some(rotated) = resp.refresh_token {
                    fresh.refresh_token = Some(rotated);
                }
                if let Some(id_token) = resp.id_token {
                    self.accept_refreshed_id_token(provider, fresh, id_token, now)
                        .await;
                }
                if !sessions.save(&key, &record).await? {
                    return Err(TokenFailure::SessionEnded);
                }
                tracing::debug!(session = ?key, "access token refreshed");
                Ok(Loaded { key, record })
            }
            // RFC 6749 §5.2: the refresh token is invalid, expired or revoked. Nothing else
            // ends a session: a 429, or invalid_client while the client secret is rotated,
            // would otherwise log out every session due for a refresh at once.
            Err(TokenError::Refused { error }) if error == "invalid_grant" => {
                tracing::info!(session = ?key, %error, "refresh refused; ending the session");
                sessions.delete(&key).await?;
                Err(TokenFailure::SessionEnded)
            }
            Err(e) if still_valid => {
                tracing::warn!(session = ?key, error = %e, "refresh failed; using the current token until it expires");
                Ok(current)
            }
            Err(e) => Err(TokenFailure::ProviderUnavailable(e)),
        }
    }

    /// The session as the store holds it, if its access token is still valid; else
    /// [`TokenFailure::ProviderUnavailable`] with `why`.
    async fn current_or_unavailable(
        &self,
        sessions: &Sessions,
        key: StoreKey,
        why: &'static str,
    ) -> Result<Loaded, TokenFailure> {
        let Some(record) = sessions.load(&key).await? else {
            return Err(TokenFailure::SessionEnded);
        };
        let now = sessions.clock().unix();
        if record.access_expires_at.is_some_and(|exp| exp > now) {
            return Ok(Loaded { key, record });
        }
        Err(TokenFailure::ProviderUnavailable(TokenError::Unavailable(
            why.into(),
        )))
    }

    /// OIDC Core §12.2: a refreshed ID token must be valid and name the same subject; an
    /// invalid one is ignored (the old one stays) rather than ending the session.
    async fn accept_refreshed_id_token(
        &self,
        provider: &Provider,
        record: &mut crate::session::SessionRecord,
        id_token: IdToken,
        now: u64,
    ) {
        let cfg = provider.config();
        let expect = Expectations {
            issuer: &cfg.issuer,
            client_id: &cfg.client_id,
            nonce: None,
            access_token: Some(record.access_token.expose()),
            algorithms: &cfg.id_token_algs,
            now: now as i64,
            skew: cfg.clock_skew.as_secs() as i64,
            not_issued_before: record.created_at as i64,
        };
        match provider.validate_id_token(id_token.expose(), &expect).await {
            Ok(claims) if claims.sub == record.sub => record.id_token = id_token,
            Ok(_) => {
                tracing::warn!("refreshed ID token names another subject; keeping the old one")
            }
            Err(e) => tracing::warn!(error = ?e, "refreshed ID token invalid; keeping the old one"),
        }
    }
}
