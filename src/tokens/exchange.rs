//! Token exchange (RFC 8693): the session's token exchanged for one meant for a service (its
//! audience, its scopes), kept in the sealed session and renewed before it expires — by its
//! own refresh token when the provider issued one, else by exchanging again.

use super::{Broker, Plan, TokenFailure};
use crate::config::SubjectToken;
use crate::oidc::{Provider, TokenError};
use crate::session::manager::{Loaded, Sessions};
use crate::session::{ServiceToken, SessionRecord, StoreKey};
use tracing::Instrument as _;

impl Broker {
    /// The session, holding a token for `service` (an `exchange` service) that is not about to
    /// expire: the cached one, or one exchanged now.
    ///
    /// # Errors
    /// [`TokenFailure::ExchangeDenied`] when the provider refuses this user that token (the
    /// session stays), [`TokenFailure::ProviderUnavailable`] when it cannot be reached, and
    /// what refreshing the session's own token may fail with.
    pub async fn exchanged(
        &self,
        sessions: &Sessions,
        providers: &[Provider],
        session: Loaded,
        service: usize,
    ) -> Result<Loaded, TokenFailure> {
        let plan = &self.plans[service];
        if self.usable(plan, &session.record, sessions.clock().unix()) {
            return Ok(session);
        }
        let span = tracing::debug_span!(
            target: crate::telemetry::trace::TARGET,
            "exchange",
            sallyport.service = %plan.name,
        );
        Box::pin(
            self.exchange(sessions, providers, session, plan)
                .instrument(span),
        )
        .await
    }

    /// Whether `record` holds a token for `plan`'s service that is not due for renewal.
    pub(super) fn usable(&self, plan: &Plan, record: &SessionRecord, now: u64) -> bool {
        record
            .service_tokens
            .get(&plan.name)
            .is_some_and(|t| t.spec == plan.digest && !self.due(t.expires_at, now))
    }

    async fn exchange(
        &self,
        sessions: &Sessions,
        providers: &[Provider],
        session: Loaded,
        plan: &Plan,
    ) -> Result<Loaded, TokenFailure> {
        let find = |name: &str| providers.iter().find(|p| p.config().name == name);
        let Some(own) = find(&session.record.provider) else {
            return Err(TokenFailure::SessionEnded);
        };
        let target = plan.spec.provider.as_deref().and_then(find).unwrap_or(own);
        // The subject token must be valid when the provider sees it: refreshed first, outside
        // the exchange's lock (the refresh has a flight of its own).
        let with_id = plan.spec.subject_token == SubjectToken::IdToken;
        let key = self
            .ensure_fresh(sessions, own, session, with_id)
            .await?
            .key;
        let work = self.exchange_holding_lock(sessions, target, key, plan);
        let landed = || async move {
            let record = super::current(sessions, key).await?;
            let now = sessions.clock().unix();
            Ok(self
                .usable(plan, &record, now)
                .then_some(Loaded { key, record }))
        };
        let lock = lock_key(&key, &plan.name);
        if let Some(session) = self
            .flights
            .run(sessions.store().as_ref(), lock, work, landed)
            .await?
        {
            return Ok(session);
        }
        // Stalled: a token that has not expired yet still does.
        let record = super::current(sessions, key).await?;
        let now = sessions.clock().unix();
        match record.service_tokens.get(&plan.name) {
            Some(t) if t.spec == plan.digest && t.expires_at > now => Ok(Loaded { key, record }),
            _ => Err(TokenFailure::ProviderUnavailable(TokenError::Unavailable(
                "the token exchange took too long".into(),
            ))),
        }
    }

    async fn exchange_holding_lock(
        &self,
        sessions: &Sessions,
        target: &Provider,
        key: StoreKey,
        plan: &Plan,
    ) -> Result<Loaded, TokenFailure> {
        // Another request (here or at another instance) may have exchanged meanwhile.
        let record = super::current(sessions, key).await?;
        let now = sessions.clock().unix();
        if self.usable(plan, &record, now) {
            return Ok(Loaded { key, record });
        }
        let own_refresh = record
            .service_tokens
            .get(&plan.name)
            .filter(|t| t.spec == plan.digest)
            .and_then(|t| t.refresh_token.clone());
        let refreshed = match own_refresh {
            Some(refresh_token) => match target.refresh(&refresh_token, None).await {
                Ok(resp) => Some(resp),
                Err(e) => {
                    tracing::debug!(service = %plan.name, error = %e, "refreshing an exchanged token failed; exchanging again");
                    None
                }
            },
            None => None,
        };
        let resp = match refreshed {
            Some(resp) => resp,
            None => {
                let subject = match plan.spec.subject_token {
                    SubjectToken::AccessToken => record.access_token.expose(),
                    SubjectToken::IdToken => record.id_token.expose(),
                };
                target
                    .exchange(subject, plan.spec.subject_token, &plan.spec)
                    .await
                    .map_err(|e| match e {
                        TokenError::Refused { error } => {
                            tracing::info!(service = %plan.name, %error, "token exchange refused for this user");
                            TokenFailure::ExchangeDenied {
                                service: plan.name.clone(),
                                error,
                            }
                        }
                        e => TokenFailure::ProviderUnavailable(e),
                    })?
            }
        };
        drop(record);
        let token = ServiceToken {
            spec: plan.digest.clone(),
            expires_at: resp.access_expires_at(now, self.default_lifetime),
            access_token: resp.access_token,
            refresh_token: resp.refresh_token,
        };
        // Applied to what the store holds now: a refresh or another service's exchange
        // written meanwhile stays.
        let written = sessions
            .modify(&key, |r| {
                r.service_tokens.insert(plan.name.clone(), token.clone());
            })
            .await?;
        let Some(record) = written else {
            return Err(TokenFailure::SessionEnded);
        };
        tracing::debug!(session = ?key, service = %plan.name, "token exchanged");
        Ok(Loaded { key, record })
    }
}

/// The lock of one session's exchange for one service.
fn lock_key(session: &StoreKey, service: &str) -> StoreKey {
    let mut name = Vec::with_capacity(32 + 10 + service.len());
    name.extend_from_slice(session.as_bytes());
    name.extend_from_slice(b"\0exchange\0");
    name.extend_from_slice(service.as_bytes());
    StoreKey::hash(&name)
}
