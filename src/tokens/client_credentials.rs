//! Sallyport's own tokens (RFC 6749 §4.4 client credentials, RFC 8707 resources): one per
//! provider and target, shared by every session, kept in memory for the request path and
//! sealed in the store, so that every instance (and a restart) uses the same token until it is
//! due, and one request renews it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tracing::Instrument as _;

use serde::{Deserialize, Serialize};

use super::{Broker, TokenFailure};
use crate::config::TokenSpec;
use crate::oidc::{Provider, TokenError};
use crate::secret::AccessToken;
use crate::session::StoreKey;
use crate::session::manager::Sessions;

/// A token Sallyport holds for itself.
#[derive(Debug, Serialize, Deserialize)]
pub struct SharedToken {
    /// The token.
    pub access_token: AccessToken,
    /// When it expires (unix seconds).
    pub expires_at: u64,
}

/// One shared token: what to ask for, where it is stored, the current one.
#[derive(Debug)]
pub(super) struct Entry {
    /// The first service that uses it (for logs and errors).
    service: String,
    /// Its index under `services` (background renewal names the entry by it).
    index: usize,
    /// Whether a request used it since it was last obtained (background renewal renews only
    /// tokens in use).
    used: std::sync::atomic::AtomicBool,
    spec: TokenSpec,
    /// Where it is stored sealed, and the name of its lock.
    key: StoreKey,
    current: Mutex<Option<Arc<SharedToken>>>,
}

impl Entry {
    /// Whether a request used the token since the last call.
    pub(super) fn take_used(&self) -> bool {
        self.used.swap(false, std::sync::atomic::Ordering::Relaxed)
    }

    /// The provider that issues it.
    pub(super) fn provider<'p>(&self, providers: &'p [Provider]) -> &'p Provider {
        match &self.spec.provider {
            Some(name) => providers.iter().find(|p| &p.config().name == name),
            None => providers.first(),
        }
        .expect("config validation checks that the provider exists")
    }

    fn current(&self) -> Option<Arc<SharedToken>> {
        self.current
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    fn set(&self, token: &Arc<SharedToken>) {
        *self
            .current
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(Arc::clone(token));
    }
}

/// The entries by digest of their settings: services asking for the same token share one.
#[derive(Debug, Default)]
pub(super) struct Entries(HashMap<String, Arc<Entry>>);

impl Entries {
    pub(super) fn entry(
        &mut self,
        index: usize,
        service: &str,
        spec: &TokenSpec,
        digest: &str,
    ) -> Arc<Entry> {
        let entry = self.0.entry(digest.to_owned()).or_insert_with(|| {
            Arc::new(Entry {
                service: service.to_owned(),
                index,
                used: std::sync::atomic::AtomicBool::new(false),
                spec: spec.clone(),
                key: StoreKey::hash(format!("sallyport client_credentials\0{digest}").as_bytes()),
                current: Mutex::new(None),
            })
        });
        Arc::clone(entry)
    }
}

impl Broker {
    /// Sallyport's own token for `service` (a `client_credentials` service), renewed when due.
    ///
    /// # Errors
    /// [`TokenFailure::ClientCredentialsRefused`] when the provider refuses it,
    /// [`TokenFailure::ProviderUnavailable`] when it cannot be reached and the current token
    /// has expired.
    pub async fn client_credentials(
        &self,
        sessions: &Sessions,
        providers: &[Provider],
        service: usize,
    ) -> Result<Arc<SharedToken>, TokenFailure> {
        let entry = self.plans[service]
            .shared
            .as_ref()
            .expect("a client_credentials service has a shared entry");
        entry.used.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(token) = entry.current()
            && !self.due(token.expires_at, sessions.clock().unix())
        {
            return Ok(token);
        }
        let span = tracing::debug_span!(
            target: crate::telemetry::trace::TARGET,
            "client_credentials",
            sallyport.service = %self.plans[service].name,
        );
        Box::pin(
            self.renew_shared(sessions, providers, entry)
                .instrument(span),
        )
        .await
    }

    async fn renew_shared(
        &self,
        sessions: &Sessions,
        providers: &[Provider],
        entry: &Entry,
    ) -> Result<Arc<SharedToken>, TokenFailure> {
        let provider = entry.provider(providers);
        let work = self.request_shared(sessions, provider, entry);
        let landed = || async move {
            let now = sessions.clock().unix();
            Ok(load(sessions, entry)
                .await?
                .filter(|t| !self.due(t.expires_at, now)))
        };
        if let Some(token) = self
            .flights
            .run(sessions.store().as_ref(), entry.key, work, landed)
            .await?
        {
            entry.set(&token);
            self.watch_shared(entry.index, token.expires_at);
            return Ok(token);
        }
        // Stalled: a token that has not expired yet still does.
        match entry.current() {
            Some(token) if token.expires_at > sessions.clock().unix() => Ok(token),
            _ => Err(TokenFailure::ProviderUnavailable(TokenError::Unavailable(
                "the client-credentials request took too long".into(),
            ))),
        }
    }

    async fn request_shared(
        &self,
        sessions: &Sessions,
        provider: &Provider,
        entry: &Entry,
    ) -> Result<Arc<SharedToken>, TokenFailure> {
        let now = sessions.clock().unix();
        // Renewed meanwhile, by a request queued before this one or by another instance.
        if let Some(token) = entry.current()
            && !self.due(token.expires_at, now)
        {
            return Ok(token);
        }
        if let Some(token) = load(sessions, entry).await?
            && !self.due(token.expires_at, now)
        {
            return Ok(token);
        }
        let resp = provider
            .client_credentials(&entry.spec)
            .await
            .map_err(|e| match e {
                TokenError::Refused { error } => {
                    tracing::warn!(service = %entry.service, provider = %provider.config().name, %error, "client-credentials request refused");
                    TokenFailure::ClientCredentialsRefused {
                        service: entry.service.clone(),
                        error,
                    }
                }
                e => TokenFailure::ProviderUnavailable(e),
            })?;
        let token = Arc::new(SharedToken {
            expires_at: resp.access_expires_at(now, self.default_lifetime),
            access_token: resp.access_token,
        });
        let until = crate::session::from_unix(token.expires_at);
        sessions.put_value(&entry.key, &*token, until).await?;
        tracing::debug!(service = %entry.service, "client-credentials token obtained");
        Ok(token)
    }
}

/// The token as the store holds it (another instance's, or this one's before a restart).
async fn load(
    sessions: &Sessions,
    entry: &Entry,
) -> Result<Option<Arc<SharedToken>>, TokenFailure> {
    Ok(sessions
        .load_value::<SharedToken>(&entry.key)
        .await?
        .map(Arc::new))
}
