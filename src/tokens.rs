//! The token broker: which token each service gets, obtained and renewed before it expires —
//! once, however many requests (and instances) need it at the same time.
//!
//! - `user` / `id_token`: the session's own tokens, refreshed with its refresh token
//!   ([`refresh`]).
//! - `exchange`: the session's token exchanged (RFC 8693) for one meant for the service, kept
//!   in the sealed session beside the user's own ([`exchange`]); a cached one costs nothing
//!   more than the session read the request makes anyway.
//! - `client_credentials`: Sallyport's own token for the service (RFC 6749 §4.4), shared by
//!   all sessions and, sealed in the store, by all instances ([`client_credentials`]).
//!
//! Every renewal runs as a single flight ([`flight`]): one holder per session (refresh), per
//! session and service (exchange) or per token (client credentials), in-process and across
//! instances through the store's lock.
//!
//! Only `invalid_grant` on a refresh ends a session: any other refusal (`429`,
//! `invalid_client` during a secret rotation, …) or an unreachable provider is `503`, and the
//! session stays. A refused exchange is `403` for that service only.

pub mod background;
mod client_credentials;
mod exchange;
mod refresh;

use std::time::Duration;

use sha2::{Digest, Sha256};

pub use crate::store::flight::DEADLINE as REFRESH_DEADLINE;
pub use client_credentials::SharedToken;

use crate::config::{Config, TokenKind, TokenSpec};
use crate::oidc::TokenError;
use crate::session::{SessionRecord, StoreError};

/// Why no usable token could be had.
#[derive(Debug, thiserror::Error)]
pub enum TokenFailure {
    /// The provider refused the refresh, or the session ended meanwhile: log in again.
    #[error("session ended")]
    SessionEnded,
    /// The token expired and the provider cannot be reached to renew it.
    #[error("token request failed")]
    ProviderUnavailable(#[source] TokenError),
    /// The provider refused to exchange this user's token for the service's.
    #[error("token exchange for service {service} refused by the provider: {error}")]
    ExchangeDenied {
        /// The service.
        service: String,
        /// The OAuth error code.
        error: String,
    },
    /// The provider refused Sallyport's client-credentials request.
    #[error("client credentials for service {service} refused by the provider: {error}")]
    ClientCredentialsRefused {
        /// The service.
        service: String,
        /// The OAuth error code.
        error: String,
    },
    /// The session store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What the broker knows about one service.
#[derive(Debug)]
struct Plan {
    /// The key under `services`.
    name: String,
    /// Its token settings.
    spec: TokenSpec,
    /// A digest of `spec`: a token obtained under other settings is never sent.
    digest: String,
    /// The shared token, for `client_credentials`.
    shared: Option<std::sync::Arc<client_credentials::Entry>>,
}

/// Obtains and renews the tokens services receive.
#[derive(Debug)]
pub struct Broker {
    refresh_before: Duration,
    default_lifetime: Duration,
    flights: crate::store::flight::Flights,
    plans: Vec<Plan>,
    /// Whether tokens are renewed in the background (`tokens.background_refresh`).
    background: bool,
    schedule: background::Schedule,
    /// Background renewals toward each provider, capped.
    provider_caps:
        std::sync::Mutex<std::collections::HashMap<String, std::sync::Arc<tokio::sync::Semaphore>>>,
}

impl Broker {
    /// A broker for the configured services.
    pub fn new(config: &Config) -> Self {
        let mut shared = client_credentials::Entries::default();
        // One plan per service, then one per PDP (`authz.pdps`, Sallyport's token for it),
        // so that `services.len() + i` names PDP `i`.
        let none = TokenSpec::of(TokenKind::None);
        let pdps = config.authz.pdps.iter().map(|p| {
            let spec = match &p.auth {
                crate::config::PdpAuth::Token(spec) => spec,
                _ => &none,
            };
            (format!("pdp {}", p.name), spec)
        });
        let plans = config
            .services
            .iter()
            .map(|s| (s.name.clone(), &s.token))
            .chain(pdps)
            .enumerate()
            .map(|(i, (name, spec))| {
                let digest = digest(spec);
                Plan {
                    shared: (spec.kind == TokenKind::ClientCredentials)
                        .then(|| shared.entry(i, &name, spec, &digest)),
                    name,
                    spec: spec.clone(),
                    digest,
                }
            })
            .collect();
        Self {
            refresh_before: config.tokens.refresh_before,
            default_lifetime: config.tokens.default_lifetime,
            flights: crate::store::flight::Flights::default(),
            plans,
            background: config.tokens.background_refresh,
            schedule: background::Schedule::default(),
            provider_caps: std::sync::Mutex::default(),
        }
    }

    /// Whether a token that expires at `expires_at` (unix seconds) is due for renewal at `now`.
    fn due(&self, expires_at: u64, now: u64) -> bool {
        expires_at <= now + self.refresh_before.as_secs()
    }

    /// The kind of token service `service` (an index into `services`) receives.
    pub fn kind(&self, service: usize) -> TokenKind {
        self.plans[service].spec.kind
    }

    /// The token service `service` receives from a session `record`, if any (`user`,
    /// `id_token`, or a cached exchange; a `client_credentials` token is not the session's).
    pub fn session_token<'r>(&self, record: &'r SessionRecord, service: usize) -> Option<&'r str> {
        let plan = &self.plans[service];
        match plan.spec.kind {
            TokenKind::User => Some(record.access_token.expose()),
            TokenKind::IdToken => Some(record.id_token.expose()),
            TokenKind::Exchange => record
                .service_tokens
                .get(&plan.name)
                .filter(|t| t.spec == plan.digest)
                .map(|t| t.access_token.expose()),
            TokenKind::None | TokenKind::ClientCredentials => None,
        }
    }
}

/// The session under `key` as the store holds it now; [`TokenFailure::SessionEnded`] when it
/// is gone.
async fn current(
    sessions: &crate::session::manager::Sessions,
    key: crate::session::StoreKey,
) -> Result<std::sync::Arc<SessionRecord>, TokenFailure> {
    sessions.load(&key).await?.ok_or(TokenFailure::SessionEnded)
}

/// A digest of a service's token settings: stable across instances and versions, so that a
/// token obtained under other settings (another audience, more scopes) is recognised as such.
fn digest(spec: &TokenSpec) -> String {
    let mut h = Sha256::new();
    for part in [
        spec.provider.as_deref().unwrap_or(""),
        spec.audience.as_deref().unwrap_or(""),
        spec.resource.as_deref().unwrap_or(""),
        &spec.scopes.join(" "),
        match spec.subject_token {
            crate::config::SubjectToken::AccessToken => "access_token",
            crate::config::SubjectToken::IdToken => "id_token",
        },
    ] {
        h.update(part.as_bytes());
        h.update([0]);
    }
    let mut out = String::with_capacity(32);
    crate::hex::push(&h.finalize()[..16], &mut out);
    out
}
