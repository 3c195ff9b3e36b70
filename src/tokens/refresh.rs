//! Refreshing a session's own tokens (RFC 6749 §6) before they expire: lock, re-read, refresh
//! only if still due, write the rotated refresh token before the lock is released.

use super::{Broker, TokenFailure};
use crate::oidc::id_token::Expectations;
use crate::oidc::{Provider, TokenError};
use crate::secret::IdToken;
use crate::session::manager::{Loaded, Sessions};
use crate::session::{SessionRecord, StoreKey};
use tracing::Instrument as _;

impl Broker {
    /// Whether the session's tokens are due for a refresh at `now` (unix seconds): its access
    /// token, and with `id_token` its ID token too (while the provider renews it).
    pub fn needs_refresh(&self, record: &SessionRecord, now: u64, id_token: bool) -> bool {
        record
            .access_expires_at
            .is_some_and(|exp| self.due(exp, now))
            || (id_token && record.id_expires_at.is_some_and(|exp| self.due(exp, now)))
    }

    /// Makes sure `session` holds an access token (and with `id_token` an ID token) that is
    /// not about to expire, refreshing at the provider if needed; returns the current session.
    ///
    /// # Errors
    /// [`TokenFailure::SessionEnded`] when the refresh is refused (the session is deleted),
    /// [`TokenFailure::ProviderUnavailable`] when the token expired and the provider is down.
    pub async fn ensure_fresh(
        &self,
        sessions: &Sessions,
        provider: &Provider,
        session: Loaded,
        id_token: bool,
    ) -> Result<Loaded, TokenFailure> {
        let now = sessions.clock().unix();
        if !self.needs_refresh(&session.record, now, id_token) {
            return Ok(session);
        }
        // The refresh path holds a provider call's state (kilobytes). Boxed, it stays out of
        // every proxied request's future, which axum moves several times per request.
        let span = tracing::debug_span!(
            target: crate::telemetry::trace::TARGET,
            "refresh",
            sallyport.provider = %provider.config().name,
        );
        Box::pin(
            self.refresh(sessions, provider, session.key, id_token)
                .instrument(span),
        )
        .await
    }

    async fn refresh(
        &self,
        sessions: &Sessions,
        provider: &Provider,
        key: StoreKey,
        id_token: bool,
    ) -> Result<Loaded, TokenFailure> {
        let work = self.refresh_holding_lock(sessions, provider, key, id_token);
        let landed = || async move {
            let record = super::current(sessions, key).await?;
            let now = sessions.clock().unix();
            Ok((!self.needs_refresh(&record, now, id_token)).then_some(Loaded { key, record }))
        };
        match self
            .flights
            .run(sessions.store().as_ref(), key, work, landed)
            .await?
        {
            Some(session) => Ok(session),
            None => self.current_or_unavailable(sessions, key).await,
        }
    }

    async fn refresh_holding_lock(
        &self,
        sessions: &Sessions,
        provider: &Provider,
        key: StoreKey,
        id_token: bool,
    ) -> Result<Loaded, TokenFailure> {
        // Another request may have refreshed while this one waited for the lock.
        let record = super::current(sessions, key).await?;
        let now = sessions.clock().unix();
        if !self.needs_refresh(&record, now, id_token) {
            return Ok(Loaded { key, record });
        }
        let still_valid = record.access_expires_at.is_some_and(|exp| exp > now);
        let Some(refresh_token) = record.refresh_token.clone() else {
            if still_valid {
                return Ok(Loaded { key, record });
            }
            sessions.delete(&key).await?;
            return Err(TokenFailure::SessionEnded);
        };
        match provider
            .refresh(&refresh_token, record.dpop_key.as_ref())
            .await
        {
            Ok(resp) => {
                let access_expires_at = resp.access_expires_at(now, self.default_lifetime);
                let id = match resp.id_token {
                    Some(id) => {
                        self.accept_refreshed_id_token(
                            provider,
                            &record,
                            &resp.access_token,
                            id,
                            now,
                        )
                        .await
                    }
                    None => None,
                };
                // Applied to what the store holds now: an exchange written meanwhile stays.
                let written = sessions
                    .modify(&key, |r| {
                        r.access_token = resp.access_token.clone();
                        r.access_expires_at = Some(access_expires_at);
                        if let Some(rotated) = &resp.refresh_token {
                            r.refresh_token = Some(rotated.clone());
                        }
                        match &id {
                            Some((token, exp)) => {
                                r.id_token = token.clone();
                                r.id_expires_at = Some(*exp);
                            }
                            // This provider does not renew ID tokens: the one held is
                            // the one there is, and its end is no reason to refresh.
                            None => r.id_expires_at = None,
                        }
                    })
                    .await?;
                let Some(record) = written else {
                    return Err(TokenFailure::SessionEnded);
                };
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
                Ok(Loaded { key, record })
            }
            Err(e) => Err(TokenFailure::ProviderUnavailable(e)),
        }
    }

    /// The session as the store holds it, if its access token is still valid; else
    /// [`TokenFailure::ProviderUnavailable`].
    async fn current_or_unavailable(
        &self,
        sessions: &Sessions,
        key: StoreKey,
    ) -> Result<Loaded, TokenFailure> {
        let record = super::current(sessions, key).await?;
        let now = sessions.clock().unix();
        if record.access_expires_at.is_some_and(|exp| exp > now) {
            return Ok(Loaded { key, record });
        }
        Err(TokenFailure::ProviderUnavailable(TokenError::Unavailable(
            "the refresh took too long".into(),
        )))
    }

    /// OIDC Core §12.2: a refreshed ID token must be valid and name the same subject; an
    /// invalid one is ignored (the old one stays) rather than ending the session. Returns the
    /// accepted token and its expiry.
    async fn accept_refreshed_id_token(
        &self,
        provider: &Provider,
        record: &SessionRecord,
        access_token: &crate::secret::AccessToken,
        id_token: IdToken,
        now: u64,
    ) -> Option<(IdToken, u64)> {
        let cfg = provider.config();
        let expect = Expectations {
            issuer: &cfg.issuer,
            client_id: cfg.client_id.as_str(),
            nonce: None,
            access_token: Some(access_token.expose()),
            algorithms: &cfg.id_token_algs,
            now: now as i64,
            skew: cfg.clock_skew.as_secs() as i64,
            not_issued_before: record.created_at as i64,
        };
        match provider.validate_id_token(id_token.expose(), &expect).await {
            Ok(claims) if claims.sub == record.sub => {
                Some((id_token, u64::try_from(claims.exp).unwrap_or(0)))
            }
            Ok(_) => {
                tracing::warn!("refreshed ID token names another subject; keeping the old one");
                None
            }
            Err(e) => {
                tracing::warn!(error = ?e, "refreshed ID token invalid; keeping the old one");
                None
            }
        }
    }
}
