//! An OpenID provider as Sallyport sees it: discovery and JWKS (cached with a TTL), the
//! authorization request, token endpoint calls, userinfo, and ID token validation.
//!
//! # Re-fetching keys
//! A token signed with a `kid` the cached JWKS lacks may mean the provider rotated its key, so
//! the JWKS is fetched again, on a budget that depends on where the token came from:
//! - an ID token from the token endpoint (an authenticated back-channel answer, which nobody
//!   else can inject) always gets a JWKS fetched after it arrived: it joins a fetch in flight
//!   or starts one, unless such a fetch completed within the last second;
//! - tokens presented by clients (bearers, logout tokens), which anyone can forge with random
//!   `kid`s, share one re-fetch per [`CLIENT_REFETCH_INTERVAL`], and a `kid` still unknown after
//!   a re-fetch is remembered as unknown for [`UNKNOWN_KID_TTL`] (at most
//!   [`MAX_UNKNOWN_KIDS`] of them).
//!
//! So a flood of forged tokens can never use up the fetch a login after a rotation needs.
//! A failed discovery or JWKS fetch is shared by every caller that waited for it, and the next
//! attempt waits out a backoff (1 s, doubling to 30 s): a provider that hangs costs each request
//! at most one timeout, not one per caller in the queue.

pub mod authorize;
pub mod bearer;
pub mod dpop;
pub mod id_token;
pub mod logout_token;
pub mod registration;
pub mod token;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::Jwk;
use serde::Deserialize;
use url::Url;

use crate::config::ProviderConfig;
use crate::secret::{AccessToken, RefreshToken};
pub use id_token::{IdTokenClaims, IdTokenError};
pub use token::{TokenError, TokenResponse};

/// Tokens presented by clients may make the JWKS be fetched again at most this often (a stream
/// of forged tokens must not turn into a stream of JWKS requests).
pub const CLIENT_REFETCH_INTERVAL: Duration = Duration::from_secs(30);
/// ID tokens from the token endpoint make the JWKS be fetched again at most this often.
const TOKEN_ENDPOINT_REFETCH_INTERVAL: Duration = Duration::from_secs(1);
/// How long a `kid` that a re-fetch did not find is refused without another fetch.
pub const UNKNOWN_KID_TTL: Duration = Duration::from_secs(300);
/// How many unknown `kid`s are remembered at most.
pub const MAX_UNKNOWN_KIDS: usize = 1024;
/// The first wait after a failed discovery or JWKS fetch; it doubles up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
/// The longest wait between attempts at a failing provider.
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// How long any one call to a provider (discovery, JWKS, the token endpoint, userinfo) may
/// take before it counts as unavailable. The refresh lock's lifetime is derived from it
/// (`tokens`).
pub const PROVIDER_TIMEOUT: Duration = Duration::from_secs(10);
/// The most introspection answers kept per provider.
const MAX_INTROSPECTED: u64 = 10_000;
/// The most bytes read from a discovery, JWKS or userinfo response.
const MAX_DOCUMENT: usize = 512 * 1024;

/// The provider metadata Sallyport uses (OpenID Connect Discovery 1.0 §3).
#[derive(Debug, Clone, Deserialize)]
pub struct Metadata {
    /// Must equal the configured issuer exactly (Discovery §4.3).
    pub issuer: String,
    /// Where the browser is sent to log in.
    pub authorization_endpoint: Url,
    /// Where codes and refresh tokens are redeemed.
    pub token_endpoint: Url,
    /// The provider's signing keys.
    pub jwks_uri: Url,
    /// Userinfo, if offered.
    #[serde(default)]
    pub userinfo_endpoint: Option<Url>,
    /// RP-initiated logout, if offered.
    #[serde(default)]
    pub end_session_endpoint: Option<Url>,
    /// Supported PKCE methods, if advertised.
    #[serde(default)]
    pub code_challenge_methods_supported: Option<Vec<String>>,
    /// Token introspection (RFC 7662), if offered.
    #[serde(default)]
    pub introspection_endpoint: Option<Url>,
    /// RFC 9207 §3: the provider always sends `iss` with the authorization response.
    #[serde(default)]
    pub authorization_response_iss_parameter_supported: bool,
    /// RFC 9126: where authorization requests can be pushed, if offered.
    #[serde(default)]
    pub pushed_authorization_request_endpoint: Option<Url>,
    /// Token revocation (RFC 7009), if offered.
    #[serde(default)]
    pub revocation_endpoint: Option<Url>,
    /// The algorithms the provider can sign ID tokens with.
    #[serde(default)]
    pub id_token_signing_alg_values_supported: Vec<String>,
    /// RFC 7591: where clients register, if the provider lets them.
    #[serde(default)]
    pub registration_endpoint: Option<Url>,
    /// RFC 9126 §5: the provider accepts only pushed authorization requests.
    #[serde(default)]
    pub require_pushed_authorization_requests: bool,
}

/// Why the provider could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ProviderError {
    /// Discovery or JWKS could not be fetched or parsed, and nothing is cached.
    #[error("provider {provider} unavailable")]
    Unavailable {
        /// The provider's name.
        provider: String,
        /// What failed.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// Discovery names another issuer than the configured one.
    #[error(
        "provider {provider}: discovery names issuer {found:?}, expected the configured {expected:?}"
    )]
    IssuerMismatch {
        /// The provider's name.
        provider: String,
        /// What discovery said.
        found: String,
        /// What the config says.
        expected: String,
    },
}

/// Where a token to verify came from, which decides how much it may cost in JWKS fetches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeySource {
    /// The token endpoint's answer to Sallyport itself (ID tokens).
    TokenEndpoint,
    /// A client of Sallyport (bearer JWTs, logout tokens): possibly forged.
    Client,
}

/// A JWKS as fetched.
struct Keys {
    keys: Arc<Vec<Jwk>>,
    /// When the fetch that got them started: a token that arrived before saw these keys.
    started: Instant,
    fetched: Instant,
}

/// A failed fetch, shared with every caller until its backoff is over.
#[derive(Clone)]
struct Failure {
    at: Instant,
    backoff: Duration,
    message: Arc<str>,
}

impl Failure {
    fn after(previous: Option<&Failure>, error: &dyn std::fmt::Display) -> Self {
        let backoff = previous.map_or(FIRST_BACKOFF, |f| (f.backoff * 2).min(MAX_BACKOFF));
        Self {
            at: Instant::now(),
            backoff,
            message: error.to_string().into(),
        }
    }

    /// Whether a caller that started waiting at `asked` should take this failure as its own
    /// answer: it happened while the caller waited, or its backoff is not over.
    fn applies(&self, asked: Instant) -> bool {
        self.at >= asked || self.at.elapsed() < self.backoff
    }
}

#[derive(Default)]
struct Cache {
    metadata: Option<(Arc<Metadata>, Instant)>,
    metadata_failure: Option<Failure>,
    jwks: Option<Keys>,
    jwks_failure: Option<Failure>,
    /// When an ID token from the token endpoint last made the JWKS be fetched.
    token_endpoint_refetch: Option<Instant>,
    /// When a client's token last made the JWKS be fetched.
    client_refetch: Option<Instant>,
    /// `kid`s that a re-fetch did not find, with when.
    unknown_kids: std::collections::HashMap<String, Instant>,
}

impl Cache {
    fn remember_unknown(&mut self, kid: String) {
        if self.unknown_kids.len() >= MAX_UNKNOWN_KIDS {
            self.unknown_kids
                .retain(|_, at| at.elapsed() < UNKNOWN_KID_TTL);
            if self.unknown_kids.len() >= MAX_UNKNOWN_KIDS {
                // Still full of fresh forgeries: start over rather than grow.
                self.unknown_kids.clear();
            }
        }
        self.unknown_kids.insert(kid, Instant::now());
    }

    fn is_known_unknown(&self, kid: &str) -> bool {
        self.unknown_kids
            .get(kid)
            .is_some_and(|at| at.elapsed() < UNKNOWN_KID_TTL)
    }
}

/// One configured provider with its caches.
pub struct Provider {
    config: ProviderConfig,
    redirect_uri: String,
    http: reqwest::Client,
    cache: Mutex<Cache>,
    /// Serialises fetches, so that a cold cache under load makes one request, not one per caller.
    fetch: tokio::sync::Mutex<()>,
    /// Active introspection answers by SHA-256 of the token.
    introspected: moka::future::Cache<[u8; 32], Arc<bearer::BearerClaims>>,
    /// The provider's latest DPoP nonce (RFC 9449 §8), for the next proof.
    dpop_nonce: Mutex<Option<String>>,
    /// Where fetches and token requests are counted, when metrics are on.
    metrics: Option<Arc<crate::metrics::Metrics>>,
}

impl std::fmt::Debug for Provider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Provider")
            .field("name", &self.config.name)
            .finish()
    }
}

impl Provider {
    /// A provider with empty caches; nothing is fetched yet.
    pub fn new(config: ProviderConfig, redirect_uri: String, http: reqwest::Client) -> Self {
        Self {
            redirect_uri,
            http,
            introspected: moka::future::Cache::builder()
                .max_capacity(MAX_INTROSPECTED)
                .time_to_live(config.introspection_cache)
                .build(),
            cache: Mutex::default(),
            fetch: tokio::sync::Mutex::new(()),
            dpop_nonce: Mutex::default(),
            metrics: None,
            config,
        }
    }

    /// Counts this provider's fetches in `metrics`.
    #[must_use]
    pub fn with_metrics(mut self, metrics: Option<Arc<crate::metrics::Metrics>>) -> Self {
        self.metrics = metrics;
        self
    }

    /// Counts a token request of the broker (`grant`) that ended as `result` did.
    fn count_token(
        &self,
        grant: crate::metrics::TokenGrant,
        result: &Result<TokenResponse, TokenError>,
    ) {
        if let Some(m) = &self.metrics {
            let outcome = match result {
                Ok(_) => crate::metrics::Outcome::ok,
                Err(TokenError::Refused { .. }) => crate::metrics::Outcome::refused,
                Err(TokenError::Unavailable(_)) => crate::metrics::Outcome::unavailable,
            };
            m.token(&self.config.name, grant, outcome);
        }
    }

    /// The configuration of this provider.
    pub fn config(&self) -> &ProviderConfig {
        &self.config
    }

    /// Our redirect URI.
    pub fn redirect_uri(&self) -> &str {
        &self.redirect_uri
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, Cache> {
        self.cache
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Whether discovery and the keys have been loaded at least once.
    pub fn is_warm(&self) -> bool {
        let cache = self.cache();
        cache.metadata.is_some() && cache.jwks.is_some()
    }

    /// Whether the provider can serve logins: its client id is known and its discovery
    /// document loaded.
    pub fn is_ready(&self) -> bool {
        self.config.client_id.is_known() && self.cache().metadata.is_some()
    }

    fn unavailable(
        &self,
        source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> ProviderError {
        ProviderError::Unavailable {
            provider: self.config.name.clone(),
            source: source.into(),
        }
    }

    /// The provider metadata: cached for `discovery_ttl`; a stale copy is used while a
    /// re-fetch fails.
    ///
    /// # Errors
    /// When nothing is cached and discovery fails (now, or recently: see the module docs), or
    /// the issuer does not match.
    pub async fn metadata(&self) -> Result<Arc<Metadata>, ProviderError> {
        if !self.config.client_id.is_known() {
            return Err(self.unavailable(
                "Sallyport is not registered at this provider yet (providers.<name>.registration)",
            ));
        }
        self.discover().await
    }

    /// [`Provider::metadata`], also before Sallyport is registered (to register).
    ///
    /// # Errors
    /// As [`Provider::metadata`].
    pub async fn discover(&self) -> Result<Arc<Metadata>, ProviderError> {
        let ttl = self.config.discovery_ttl;
        if let Some((m, at)) = &self.cache().metadata
            && at.elapsed() < ttl
        {
            return Ok(Arc::clone(m));
        }
        let asked = Instant::now();
        let _guard = self.fetch.lock().await;
        let stale = {
            let cache = self.cache();
            match &cache.metadata {
                // Fresh, or fetched by another caller while this one waited.
                Some((m, at)) if at.elapsed() < ttl || *at >= asked => {
                    return Ok(Arc::clone(m));
                }
                other => other.as_ref().map(|(m, _)| Arc::clone(m)),
            }
        };
        if let Some(failure) = self.cache().metadata_failure.clone()
            && failure.applies(asked)
        {
            return stale.ok_or_else(|| self.unavailable(failure.message.to_string()));
        }
        let url = format!(
            "{}/.well-known/openid-configuration",
            self.config.issuer.trim_end_matches('/')
        );
        match self.get_json::<Metadata>(&url, "discovery").await {
            Ok(m) if m.issuer != self.config.issuer => Err(ProviderError::IssuerMismatch {
                provider: self.config.name.clone(),
                found: m.issuer,
                expected: self.config.issuer.clone(),
            }),
            Ok(m)
                if self.config.par == crate::config::Par::Required
                    && m.pushed_authorization_request_endpoint.is_none() =>
            {
                Err(self.unavailable(
                    "par: required, and the provider's discovery has no pushed_authorization_request_endpoint",
                ))
            }
            Ok(m) => {
                let m = Arc::new(m);
                let mut cache = self.cache();
                cache.metadata = Some((Arc::clone(&m), Instant::now()));
                cache.metadata_failure = None;
                drop(cache);
                tracing::info!(provider = %self.config.name, "provider metadata loaded");
                Ok(m)
            }
            Err(e) => self.fetch_failed(|c| &mut c.metadata_failure, "discovery", e, stale),
        }
    }

    /// The JWKS: the cached one while it is younger than `discovery_ttl`, or — with
    /// `started_after` — one whose fetch started after that instant (joining a fetch in flight).
    async fn jwks(&self, started_after: Option<Instant>) -> Result<Arc<Vec<Jwk>>, ProviderError> {
        let ttl = self.config.discovery_ttl;
        let usable = |cache: &Cache, asked: Option<Instant>| -> Option<Arc<Vec<Jwk>>> {
            let k = cache.jwks.as_ref()?;
            let ok = match started_after {
                Some(t) => k.started >= t,
                None => k.fetched.elapsed() < ttl || asked.is_some_and(|a| k.fetched >= a),
            };
            ok.then(|| Arc::clone(&k.keys))
        };
        if let Some(keys) = usable(&self.cache(), None) {
            return Ok(keys);
        }
        let metadata = self.discover().await?;
        let asked = Instant::now();
        let _guard = self.fetch.lock().await;
        let stale = {
            let cache = self.cache();
            // Another caller may have fetched while this one waited for the lock.
            if let Some(keys) = usable(&cache, Some(asked)) {
                return Ok(keys);
            }
            cache.jwks.as_ref().map(|k| Arc::clone(&k.keys))
        };
        if let Some(failure) = self.cache().jwks_failure.clone()
            && failure.applies(asked)
        {
            return stale.ok_or_else(|| self.unavailable(failure.message.to_string()));
        }
        let started = Instant::now();
        match self
            .get_json::<serde_json::Value>(metadata.jwks_uri.as_str(), "jwks")
            .await
        {
            Ok(doc) => {
                let keys = Arc::new(parse_jwks(&doc));
                tracing::info!(provider = %self.config.name, keys = keys.len(), "provider keys loaded");
                let mut cache = self.cache();
                cache.unknown_kids.retain(|kid, _| {
                    !keys
                        .iter()
                        .any(|k| k.common.key_id.as_deref() == Some(kid.as_str()))
                });
                cache.jwks = Some(Keys {
                    keys: Arc::clone(&keys),
                    started,
                    fetched: Instant::now(),
                });
                cache.jwks_failure = None;
                Ok(keys)
            }
            Err(e) => self.fetch_failed(|c| &mut c.jwks_failure, "JWKS", e, stale),
        }
    }

    /// Records a failed `what` fetch in the slot `failure` picks (starting or lengthening its
    /// backoff), then answers with the `stale` copy, or the failure when there is none.
    fn fetch_failed<T>(
        &self,
        failure: impl FnOnce(&mut Cache) -> &mut Option<Failure>,
        what: &'static str,
        error: Box<dyn std::error::Error + Send + Sync>,
        stale: Option<T>,
    ) -> Result<T, ProviderError> {
        {
            let mut cache = self.cache();
            let slot = failure(&mut cache);
            let next = Failure::after(slot.as_ref(), &error);
            tracing::warn!(provider = %self.config.name, error = %error, retry_in = ?next.backoff, "{what} fetch failed");
            *slot = Some(next);
        }
        stale.ok_or_else(|| self.unavailable(error))
    }

    async fn get_json<T: serde::de::DeserializeOwned>(
        &self,
        url: &str,
        document: &'static str,
    ) -> Result<T, Box<dyn std::error::Error + Send + Sync>> {
        let result = async {
            let resp = self
                .http
                .get(url)
                .header(http::header::ACCEPT, "application/json")
                .timeout(PROVIDER_TIMEOUT)
                .send()
                .await
                .map_err(reqwest::Error::without_url)?;
            if !resp.status().is_success() {
                return Err(format!("{url} answered {}", resp.status()).into());
            }
            let body = read_limited(resp, MAX_DOCUMENT).await?;
            Ok(serde_json::from_slice(&body)?)
        }
        .await;
        if let Some(m) = &self.metrics {
            let outcome = match &result {
                Ok(_) => crate::metrics::Outcome::ok,
                Err(_) => crate::metrics::Outcome::unavailable,
            };
            m.fetch(&self.config.name, document, outcome);
        }
        result
    }

    /// Loads discovery and the JWKS, so that the first login does not wait for them.
    ///
    /// # Errors
    /// When the provider cannot be reached or its metadata is unusable.
    pub async fn warm_up(&self) -> Result<(), ProviderError> {
        self.discover().await?;
        self.jwks(None).await?;
        Ok(())
    }

    /// Verifies a JWT's signature with a key from the JWKS — fetching the JWKS again when the
    /// `kid` is unknown, on the budget of `source` (see the module docs) — and decodes its
    /// claims (checking none).
    ///
    /// # Errors
    /// `Err(Ok(reason))` when the token is refused, `Err(Err(_))` when the keys are unavailable.
    async fn verified<T: serde::de::DeserializeOwned>(
        &self,
        token: &str,
        source: KeySource,
    ) -> Result<(T, id_token::KeyHint), Result<IdTokenError, ProviderError>> {
        let hint = id_token::key_hint(token, &self.config.id_token_algs).map_err(Ok)?;
        // Any JWKS fetched from now on was fetched after the token existed.
        let arrived = Instant::now();
        let keys = self.jwks(None).await.map_err(Err)?;
        let key = match id_token::select_key(&keys, &hint) {
            Some(k) => k.clone(),
            None => {
                let Some(after) = self.refetch_after(&hint, source, arrived) else {
                    return Err(Ok(IdTokenError::UnknownKey));
                };
                let keys = self.jwks(Some(after)).await.map_err(Err)?;
                match id_token::select_key(&keys, &hint) {
                    Some(k) => k.clone(),
                    None => {
                        if source == KeySource::Client {
                            self.cache()
                                .remember_unknown(hint.kid.clone().unwrap_or_default());
                        }
                        return Err(Ok(IdTokenError::UnknownKey));
                    }
                }
            }
        };
        let claims = id_token::decode(token, &key, &hint).map_err(Ok)?;
        Ok((claims, hint))
    }

    /// For a token from `source` that arrived at `arrived` with a `kid` the cached JWKS lacks:
    /// the instant after which a JWKS fetch must have started to settle it — joining the
    /// source's recent or in-flight re-fetch, or a new one (taking the budget) — or `None`
    /// when the token is to be refused without a fetch.
    fn refetch_after(
        &self,
        hint: &id_token::KeyHint,
        source: KeySource,
        arrived: Instant,
    ) -> Option<Instant> {
        let mut cache = self.cache();
        if cache.jwks.as_ref().is_some_and(|k| k.started >= arrived) {
            // Fetched since the token arrived, and the key is still not there.
            return None;
        }
        let (last, interval) = match source {
            KeySource::TokenEndpoint => (
                &mut cache.token_endpoint_refetch,
                TOKEN_ENDPOINT_REFETCH_INTERVAL,
            ),
            KeySource::Client => {
                if cache.is_known_unknown(hint.kid.as_deref().unwrap_or_default()) {
                    return None;
                }
                (&mut cache.client_refetch, CLIENT_REFETCH_INTERVAL)
            }
        };
        match *last {
            // Within the budget's interval: share that re-fetch (in flight or done), never
            // start another.
            Some(t) if t.elapsed() < interval => Some(t),
            _ => {
                *last = Some(arrived);
                Some(arrived)
            }
        }
    }

    /// Validates an ID token: signature by a JWKS key and the claims of OIDC Core §3.1.3.7.
    ///
    /// # Errors
    /// `Err(Ok(reason))` when the token is refused, `Err(Err(_))` when the keys are unavailable.
    pub async fn validate_id_token(
        &self,
        token: &str,
        expect: &id_token::Expectations<'_>,
    ) -> Result<IdTokenClaims, Result<IdTokenError, ProviderError>> {
        let (claims, hint) = self.verified(token, KeySource::TokenEndpoint).await?;
        id_token::check(claims, &hint, expect).map_err(Ok)
    }

    /// Validates a logout token (Back-Channel Logout 1.0 §2.6), except `jti` replay, which
    /// needs the shared store.
    ///
    /// # Errors
    /// `Err(Ok(reason))` when the token is refused, `Err(Err(_))` when the keys are unavailable.
    pub async fn validate_logout_token(
        &self,
        token: &str,
        now: i64,
    ) -> Result<logout_token::LogoutClaims, Result<logout_token::LogoutTokenError, ProviderError>>
    {
        let (claims, hint) = self
            .verified(token, KeySource::Client)
            .await
            .map_err(|e| e.map(Into::into))?;
        let skew = self.config.clock_skew.as_secs() as i64;
        logout_token::check(
            &claims,
            &hint,
            &self.config.issuer,
            self.config.client_id.as_str(),
            now,
            skew,
        )
        .map_err(Ok)?;
        Ok(claims)
    }

    /// Validates a bearer JWT a client sent itself: signature by a JWKS key, `iss`, `aud`
    /// among `bearer_audiences`, `exp`, `nbf`, and not an ID token.
    ///
    /// # Errors
    /// `Err(Ok(reason))` when the token is refused, `Err(Err(_))` when the keys are unavailable.
    pub async fn validate_bearer(
        &self,
        token: &str,
        now: i64,
    ) -> Result<bearer::BearerClaims, Result<bearer::BearerError, ProviderError>> {
        let (claims, hint) = self
            .verified::<bearer::BearerClaims>(token, KeySource::Client)
            .await
            .map_err(|e| e.map(Into::into))?;
        let skew = self.config.clock_skew.as_secs() as i64;
        bearer::check(
            &claims,
            hint.typ.as_deref(),
            &self.config.issuer,
            &self.config.bearer_audiences,
            now,
            skew,
        )
        .map_err(Ok)?;
        Ok(claims)
    }

    /// `key` with this provider's nonce, for a proof.
    fn dpop<'a>(&'a self, key: Option<&'a dpop::DpopKey>) -> Option<token::Dpop<'a>> {
        key.map(|key| token::Dpop {
            key,
            nonce: &self.dpop_nonce,
        })
    }

    /// Redeems an authorization code (RFC 6749 §4.1.3, with the PKCE verifier); with `dpop`,
    /// the tokens are bound to that key (and must come back as `token_type: DPoP`).
    ///
    /// # Errors
    /// Refused by the provider, or the provider unavailable.
    pub async fn exchange_code(
        &self,
        code: &str,
        code_verifier: &str,
        dpop: Option<&dpop::DpopKey>,
    ) -> Result<TokenResponse, TokenError> {
        let form = vec![
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", self.redirect_uri.as_str()),
            ("code_verifier", code_verifier),
        ];
        bound(self.token_request(form, self.dpop(dpop)).await, dpop)
    }

    /// Redeems a refresh token (RFC 6749 §6), proving possession of the session's `dpop` key
    /// when it has one. No `scope` is sent, so the provider keeps the granted one (some drop
    /// `offline_access` and would refuse it).
    ///
    /// # Errors
    /// Refused by the provider (the session is over), or the provider unavailable.
    pub async fn refresh(
        &self,
        refresh_token: &RefreshToken,
        dpop: Option<&dpop::DpopKey>,
    ) -> Result<TokenResponse, TokenError> {
        let form = vec![
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh_token.expose()),
        ];
        let result = bound(self.token_request(form, self.dpop(dpop)).await, dpop);
        self.count_token(crate::metrics::TokenGrant::refresh, &result);
        result
    }

    /// Asks for Sallyport's own token for `spec`'s target (RFC 6749 §4.4, client
    /// credentials; RFC 8707 `resource`, `audience`, `scope`).
    ///
    /// # Errors
    /// Refused by the provider, or the provider unavailable.
    pub async fn client_credentials(
        &self,
        spec: &crate::config::TokenSpec,
    ) -> Result<TokenResponse, TokenError> {
        let result = self
            .target_request(vec![("grant_type", "client_credentials")], spec)
            .await;
        self.count_token(crate::metrics::TokenGrant::client_credentials, &result);
        result
    }

    /// Exchanges a user's token for one meant for `spec`'s target (RFC 8693 §2.1).
    ///
    /// # Errors
    /// Refused by the provider (this user may not have that token), or the provider
    /// unavailable.
    pub async fn exchange(
        &self,
        subject_token: &str,
        subject: crate::config::SubjectToken,
        spec: &crate::config::TokenSpec,
    ) -> Result<TokenResponse, TokenError> {
        let subject_type = match subject {
            crate::config::SubjectToken::AccessToken => {
                "urn:ietf:params:oauth:token-type:access_token"
            }
            crate::config::SubjectToken::IdToken => "urn:ietf:params:oauth:token-type:id_token",
        };
        let form = vec![
            (
                "grant_type",
                "urn:ietf:params:oauth:grant-type:token-exchange",
            ),
            ("subject_token", subject_token),
            ("subject_token_type", subject_type),
            (
                "requested_token_type",
                "urn:ietf:params:oauth:token-type:access_token",
            ),
        ];
        let result = self.target_request(form, spec).await;
        self.count_token(crate::metrics::TokenGrant::exchange, &result);
        result
    }

    /// POSTs a grant to the token endpoint.
    async fn token_request(
        &self,
        form: Vec<(&'static str, &str)>,
        dpop: Option<token::Dpop<'_>>,
    ) -> Result<TokenResponse, TokenError> {
        let metadata = self
            .metadata()
            .await
            .map_err(|e| TokenError::Unavailable(Box::new(e)))?;
        token::request(
            &self.http,
            &metadata.token_endpoint,
            &self.config,
            form,
            dpop,
        )
        .await
    }

    /// POSTs a grant for `spec`'s target (`scope`, `resource`, `audience`) to the token
    /// endpoint.
    async fn target_request(
        &self,
        form: Vec<(&'static str, &str)>,
        spec: &crate::config::TokenSpec,
    ) -> Result<TokenResponse, TokenError> {
        let scope = spec.scopes.join(" ");
        let mut form = form;
        token::target_params(spec, &scope, &mut form);
        self.token_request(form, None).await
    }

    /// Pushes an authorization request (RFC 9126 §2), authenticating as configured; the
    /// `request_uri` the browser's redirect carries instead of the parameters.
    ///
    /// # Errors
    /// Refused (`TokenError::Refused`) or the provider cannot be reached.
    pub async fn push_authorization_request(
        &self,
        endpoint: &Url,
        token_endpoint: &Url,
        params: Vec<(&str, &str)>,
    ) -> Result<String, TokenError> {
        #[derive(Deserialize)]
        struct Pushed {
            request_uri: String,
        }
        let pushed: Pushed = token::post(
            &self.http,
            endpoint,
            &self.config,
            token_endpoint,
            params,
            None,
        )
        .await?;
        Ok(pushed.request_uri)
    }

    /// Revokes a session's grant at the provider (RFC 7009), authenticating as configured: its
    /// refresh token (which ends the grant's access tokens too at most providers), else its
    /// access token. Nothing to do where the provider offers no revocation.
    ///
    /// # Errors
    /// Refused by the provider, or the provider unavailable.
    pub async fn revoke(&self, record: &crate::session::SessionRecord) -> Result<(), TokenError> {
        let metadata = self
            .metadata()
            .await
            .map_err(|e| TokenError::Unavailable(Box::new(e)))?;
        let Some(endpoint) = &metadata.revocation_endpoint else {
            return Ok(());
        };
        let (token, hint) = match &record.refresh_token {
            Some(refresh) => (refresh.expose(), "refresh_token"),
            None => (record.access_token.expose(), "access_token"),
        };
        token::post_without_answer(
            &self.http,
            endpoint,
            &self.config,
            &metadata.token_endpoint,
            vec![("token", token), ("token_type_hint", hint)],
        )
        .await
    }

    /// Validates an opaque bearer a client sent itself by introspection (RFC 7662, Sallyport
    /// authenticating as itself), with the same checks as a bearer JWT. Active answers are
    /// reused for `introspection_cache` (keyed by a hash of the token, never the token), so a
    /// token revoked at the provider is refused at most that much later.
    ///
    /// # Errors
    /// `Err(Ok(reason))` when the token is refused, `Err(Err(_))` when the provider cannot be
    /// asked.
    pub async fn validate_opaque_bearer(
        &self,
        token: &str,
        now: i64,
    ) -> Result<Arc<bearer::BearerClaims>, Result<bearer::BearerError, TokenError>> {
        use sha2::Digest as _;
        let key: [u8; 32] = sha2::Sha256::digest(token.as_bytes()).into();
        let skew = self.config.clock_skew.as_secs() as i64;
        if let Some(claims) = self.introspected.get(&key).await {
            // The answer said until when the token is valid; the cache does not outlive it.
            if claims.exp > now - skew {
                return Ok(claims);
            }
            self.introspected.invalidate(&key).await;
        }
        let metadata = self
            .metadata()
            .await
            .map_err(|e| Err(TokenError::Unavailable(Box::new(e))))?;
        let Some(endpoint) = &metadata.introspection_endpoint else {
            return Err(Ok(bearer::BearerError::UnknownIssuer));
        };
        let form = vec![("token", token), ("token_type_hint", "access_token")];
        let answer: bearer::Introspection = token::post(
            &self.http,
            endpoint,
            &self.config,
            &metadata.token_endpoint,
            form,
            None,
        )
        .await
        .map_err(Err)?;
        let claims = bearer::check_introspected(
            answer,
            &self.config.issuer,
            &self.config.bearer_audiences,
            now,
            skew,
            self.config.introspection_cache.as_secs() as i64,
        )
        .map_err(Ok)?;
        let claims = Arc::new(claims);
        self.introspected.insert(key, Arc::clone(&claims)).await;
        Ok(claims)
    }

    /// Calls userinfo (OIDC Core §5.3) with the access token; a DPoP-bound one goes with a
    /// proof of `dpop` (once more with the nonce the provider asks for).
    ///
    /// # Errors
    /// The provider unavailable, or an answer that is not a JSON object.
    pub async fn userinfo(
        &self,
        endpoint: &Url,
        access_token: &AccessToken,
        dpop: Option<&dpop::DpopKey>,
    ) -> Result<serde_json::Map<String, serde_json::Value>, ProviderError> {
        let dpop = self.dpop(dpop);
        let mut retried = false;
        let resp = loop {
            let mut req = self
                .http
                .get(endpoint.as_str())
                .header(http::header::ACCEPT, "application/json")
                .timeout(PROVIDER_TIMEOUT);
            req = match dpop {
                Some(d) => req
                    .header(
                        http::header::AUTHORIZATION,
                        format!("DPoP {}", access_token.expose()),
                    )
                    .header(
                        "dpop",
                        d.proof("GET", endpoint, Some(access_token.expose())),
                    ),
                None => req.bearer_auth(access_token.expose()),
            };
            let resp = req
                .send()
                .await
                .map_err(|e| self.unavailable(e.without_url()))?;
            let nonce_is_new = dpop.is_some_and(|d| d.learn_nonce(resp.headers()));
            if resp.status() == http::StatusCode::UNAUTHORIZED && nonce_is_new && !retried {
                retried = true;
                continue;
            }
            break resp;
        };
        if !resp.status().is_success() {
            return Err(self.unavailable(format!("userinfo answered {}", resp.status())));
        }
        let body = read_limited(resp, MAX_DOCUMENT)
            .await
            .map_err(|e| self.unavailable(e))?;
        serde_json::from_slice(&body).map_err(|e| self.unavailable(e))
    }
}

/// A token response for a request that proved possession of `dpop`: the provider must have
/// bound the tokens (`token_type: DPoP`), or they would travel as plain bearer tokens
/// although the operator asked for sender-constrained ones.
fn bound(
    answer: Result<TokenResponse, TokenError>,
    dpop: Option<&dpop::DpopKey>,
) -> Result<TokenResponse, TokenError> {
    match answer {
        Ok(t) if dpop.is_some() && !t.token_type.eq_ignore_ascii_case("dpop") => {
            Err(TokenError::Refused {
                error: "unbound_token".into(),
            })
        }
        other => other,
    }
}

/// Reads a provider's response body, refusing one longer than `max` bytes (a misbehaving
/// provider must not make Sallyport buffer without bound).
pub(crate) async fn read_limited(
    mut resp: reqwest::Response,
    max: usize,
) -> Result<Vec<u8>, Box<dyn std::error::Error + Send + Sync>> {
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(reqwest::Error::without_url)? {
        if body.len() + chunk.len() > max {
            return Err(format!("provider response longer than {max} bytes").into());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// The `iss` of a JWT, read without verifying anything: only to choose which provider's keys
/// then verify it.
pub fn unverified_issuer(token: &str) -> Option<String> {
    use base64::Engine as _;
    let payload = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .ok()?;
    let claims: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    claims.get("iss")?.as_str().map(str::to_owned)
}

/// Reads the keys of a JWKS, skipping ones this build cannot use (an unknown `kty` must not
/// make the whole set unusable) and duplicates (some providers publish a key twice).
pub fn parse_jwks(doc: &serde_json::Value) -> Vec<Jwk> {
    let mut keys: Vec<Jwk> = Vec::new();
    for raw in doc
        .get("keys")
        .and_then(|k| k.as_array())
        .into_iter()
        .flatten()
    {
        if let Ok(key) = serde_json::from_value::<Jwk>(raw.clone())
            && !keys.contains(&key)
        {
            keys.push(key);
        }
    }
    keys
}

/// A control-plane HTTP client for provider calls: no redirects (they would open SSRF), no
/// proxy from the environment, rustls.
pub fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .connect_timeout(Duration::from_secs(5))
        .user_agent(concat!("sallyport/", env!("CARGO_PKG_VERSION")))
        .build()
        .expect("static reqwest configuration")
}
