//! Dynamic Client Registration (RFC 7591) and its management (RFC 7592): Sallyport registers
//! itself at a provider at startup, with `private_key_jwt` and its own JWKS, instead of being
//! given a client id and secret.
//!
//! The provider's answer (the client id, the registration access token and URI) is sealed into
//! the session store, so a restart and every other instance reuse it: one registration per
//! provider, also when several instances start at the same moment (they take the store's lock,
//! and the others wait for the holder's result). When what Sallyport would register changes
//! (its public URL, a grant a new service needs, the signing algorithm), the registration is
//! updated in place with the registration access token, keeping the client id.
//!
//! Hand-written over a small JSON POST/PUT: no maintained Rust crate does RFC 7591/7592 as a
//! client (the `openidconnect` crate's registration module has neither management nor our
//! client authentication), and the wire format is a handful of fields.

use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};
use sha2::Digest as _;

use super::{Provider, ProviderError};
use crate::config::{Config, InitialAccessToken, ProviderConfig, TokenKind};
use crate::secret::ClientSecret;
use crate::session::manager::Sessions;
use crate::session::{StoreError, StoreKey};

/// The most bytes read from a registration answer.
const MAX_ANSWER: usize = 64 * 1024;
/// How long a stored registration lives in the store: it is rewritten on every update, and a
/// registration does not expire by itself.
const KEEP: Duration = Duration::from_secs(10 * 365 * 24 * 3600);

/// What Sallyport asks to be registered as (RFC 7591 §2), derived from the config.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ClientMetadata {
    /// `public_url` + `/auth/callback`.
    pub redirect_uris: Vec<String>,
    /// `public_url` + `/` (the default `return_to` of a logout).
    pub post_logout_redirect_uris: Vec<String>,
    /// `public_url` + `/auth/backchannel-logout`.
    pub backchannel_logout_uri: String,
    /// `public_url` + `/.well-known/jwks.json`.
    pub jwks_uri: String,
    /// Always `private_key_jwt`.
    pub token_endpoint_auth_method: &'static str,
    /// The algorithm of the first signing key.
    pub token_endpoint_auth_signing_alg: String,
    /// `authorization_code`, `refresh_token`, and the broker's grants for this provider.
    pub grant_types: Vec<&'static str>,
    /// `code`.
    pub response_types: [&'static str; 1],
    /// `web`: a confidential client on a server.
    pub application_type: &'static str,
    /// `Sallyport`.
    pub client_name: &'static str,
    /// With `par: required`.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub require_pushed_authorization_requests: bool,
    /// With `profile: fapi2`: an ID token algorithm the profile allows (the common default,
    /// RS256, is not one).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id_token_signed_response_alg: Option<&'static str>,
    /// With `dpop: true` (RFC 9449 §5.2): the provider refuses token requests without a proof.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub dpop_bound_access_tokens: bool,
}

impl ClientMetadata {
    /// What `config` registers at `provider`.
    pub fn new(config: &Config, provider: &ProviderConfig) -> Self {
        let origin = &config.server.public_origin;
        let mut grant_types = vec!["authorization_code", "refresh_token"];
        let first = config.providers.first().map(|p| p.name.as_str());
        let specs: Vec<&crate::config::TokenSpec> = config
            .services
            .iter()
            .map(|s| &s.token)
            .chain(config.authz.pdps.iter().filter_map(|p| match &p.auth {
                crate::config::PdpAuth::Token(spec) => Some(spec),
                _ => None,
            }))
            .collect();
        let issues = |kind: TokenKind, default: Option<&str>| {
            specs.iter().any(|spec| {
                spec.kind == kind
                    && spec.provider.as_deref().or(default) == Some(provider.name.as_str())
            })
        };
        // An exchange without a provider uses the session's, which may be this one.
        if issues(TokenKind::Exchange, Some(provider.name.as_str())) {
            grant_types.push("urn:ietf:params:oauth:grant-type:token-exchange");
        }
        if issues(TokenKind::ClientCredentials, first) {
            grant_types.push("client_credentials");
        }
        Self {
            redirect_uris: vec![config.server.redirect_uri()],
            post_logout_redirect_uris: vec![format!("{origin}/")],
            backchannel_logout_uri: format!("{origin}/auth/backchannel-logout"),
            jwks_uri: format!("{origin}/.well-known/jwks.json"),
            token_endpoint_auth_method: "private_key_jwt",
            token_endpoint_auth_signing_alg: provider
                .signing_keys
                .signing_alg()
                .map(|a| format!("{a:?}"))
                .unwrap_or_default(),
            grant_types,
            response_types: ["code"],
            application_type: "web",
            client_name: "Sallyport",
            require_pushed_authorization_requests: provider.par == crate::config::Par::Required,
            // Chosen from discovery's algorithms by `ensure`.
            id_token_signed_response_alg: None,
            dpop_bound_access_tokens: provider.dpop,
        }
    }

    /// A digest of the metadata: a stored registration made with other metadata is updated.
    fn digest(&self) -> String {
        let json = serde_json::to_vec(self).expect("metadata serialises");
        let mut hex = String::with_capacity(64);
        crate::hex::push(&sha2::Sha256::digest(&json), &mut hex);
        hex
    }
}

/// A registration as kept (sealed) in the store.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Registered {
    client_id: String,
    /// RFC 7592: the bearer for reading and updating the registration.
    registration_access_token: Option<ClientSecret>,
    registration_client_uri: Option<String>,
    /// [`ClientMetadata::digest`] of what was registered.
    metadata: String,
}

/// The provider's answer to a registration or an update (RFC 7591 §3.2.1).
#[derive(Deserialize)]
struct Answer {
    client_id: String,
    #[serde(default)]
    registration_access_token: Option<ClientSecret>,
    #[serde(default)]
    registration_client_uri: Option<String>,
    #[serde(default)]
    token_endpoint_auth_method: Option<String>,
}

/// An RFC 7591 §3.2.2 error answer.
#[derive(Deserialize)]
struct ErrorAnswer {
    error: String,
    #[serde(default)]
    error_description: Option<String>,
}

/// Why Sallyport could not register (or update its registration).
#[derive(Debug, thiserror::Error)]
pub enum RegistrationError {
    /// The provider does not offer registration.
    #[error(
        "the provider's discovery has no registration_endpoint: it does not offer Dynamic Client Registration; register Sallyport by hand and set client_id"
    )]
    NoEndpoint,
    /// Nothing is stored, and the initial access token's variable is not set.
    #[error(
        "no registration is stored yet, and the initial access token's environment variable {0} is not set: set it for the first start (it may be removed once registered)"
    )]
    NoInitialAccessToken(String),
    /// The provider refused the initial access token.
    #[error(
        "the provider refused the initial access token ({0}): it is invalid, expired or already used; issue a new one at the provider and set it in providers.<name>.registration.initial_access_token"
    )]
    InitialAccessTokenRefused(String),
    /// The provider refused the registration access token of a stored registration.
    #[error(
        "the provider refused the stored registration's access token ({0}), so the registered client cannot be updated to the new settings (redirect URI, grants, signing algorithm): revert the change, or update the client at the provider by hand"
    )]
    RegistrationTokenRefused(String),
    /// The provider refused the metadata.
    #[error("the provider refused the registration: {0}")]
    Refused(String),
    /// A stored registration has no registration access token, and must change.
    #[error(
        "the registered client must change (its redirect URI, grants or signing algorithm), and the provider gave no registration access token to update it with: update the client at the provider"
    )]
    NotUpdatable,
    /// The provider answered something unusable, or could not be reached.
    #[error("the registration endpoint is unavailable")]
    Unavailable(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// Discovery failed.
    #[error(transparent)]
    Provider(#[from] ProviderError),
    /// The session store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Registers Sallyport at `provider` as `metadata` says, or reuses (and if needed updates) the
/// stored registration; then the provider knows its client id.
///
/// # Errors
/// See [`RegistrationError`]; the caller retries.
pub async fn ensure(
    provider: &Provider,
    sessions: &Sessions,
    metadata: &ClientMetadata,
) -> Result<(), RegistrationError> {
    let cfg = provider.config();
    let key =
        StoreKey::hash(format!("sallyport registration\0{}\0{}", cfg.name, cfg.issuer).as_bytes());
    let want = metadata.digest();
    let current = |r: Option<Registered>| r.filter(|r| r.metadata == want);
    let registered = match current(load(sessions, &key).await?) {
        Some(r) => r,
        None => {
            let work = async {
                match load(sessions, &key).await? {
                    Some(r) if r.metadata == want => Ok(r),
                    Some(r) => update(provider, sessions, &key, r, metadata, &want).await,
                    None => create(provider, sessions, &key, metadata, &want).await,
                }
            };
            let mut landed = || async { Ok(current(load(sessions, &key).await?)) };
            crate::store::flight::across_instances(
                sessions.store().as_ref(),
                key,
                work,
                &mut landed,
            )
            .await?
            .ok_or_else(|| {
                RegistrationError::Unavailable("the registration took too long".into())
            })?
        }
    };
    if !cfg.client_id.learn(&registered.client_id) {
        // Only if another instance registered anew while this one ran: not expected.
        return Err(RegistrationError::Unavailable(
            "the stored registration names another client id than this process uses; restart it"
                .into(),
        ));
    }
    tracing::info!(provider = %cfg.name, client_id = %registered.client_id, "registered at the provider");
    Ok(())
}

async fn load(sessions: &Sessions, key: &StoreKey) -> Result<Option<Registered>, StoreError> {
    sessions.load_value(key).await
}

async fn save(sessions: &Sessions, key: &StoreKey, r: &Registered) -> Result<(), StoreError> {
    sessions.put_value(key, r, SystemTime::now() + KEEP).await
}

/// RFC 7591 §3.1: a new registration.
async fn create(
    provider: &Provider,
    sessions: &Sessions,
    key: &StoreKey,
    metadata: &ClientMetadata,
    digest: &str,
) -> Result<Registered, RegistrationError> {
    let cfg = provider.config();
    let token = match &cfg.registration.as_ref().map(|r| &r.initial_access_token) {
        None | Some(InitialAccessToken::None) => None,
        Some(InitialAccessToken::Token(t)) => Some(t.expose()),
        Some(InitialAccessToken::Unset(name)) => {
            return Err(RegistrationError::NoInitialAccessToken(name.clone()));
        }
    };
    let endpoint = provider
        .discover()
        .await?
        .registration_endpoint
        .clone()
        .ok_or(RegistrationError::NoEndpoint)?;
    let mut req = provider.http.post(endpoint.as_str()).json(metadata);
    if let Some(token) = token {
        req = req.bearer_auth(token);
    }
    let answer = send(req, RegistrationError::InitialAccessTokenRefused).await?;
    let registered = accept(answer, digest)?;
    save(sessions, key, &registered).await?;
    Ok(registered)
}

/// RFC 7592 §2.2: the stored registration updated to `metadata`.
async fn update(
    provider: &Provider,
    sessions: &Sessions,
    key: &StoreKey,
    stored: Registered,
    metadata: &ClientMetadata,
    digest: &str,
) -> Result<Registered, RegistrationError> {
    let (Some(token), Some(uri)) = (
        &stored.registration_access_token,
        &stored.registration_client_uri,
    ) else {
        return Err(RegistrationError::NotUpdatable);
    };
    let mut body = serde_json::to_value(metadata).expect("metadata serialises");
    body["client_id"] = stored.client_id.clone().into();
    let req = provider
        .http
        .put(uri.as_str())
        .bearer_auth(token.expose())
        .json(&body);
    let answer = send(req, RegistrationError::RegistrationTokenRefused).await?;
    if answer.client_id != stored.client_id {
        return Err(RegistrationError::Refused(
            "the update answered another client id".into(),
        ));
    }
    let mut registered = accept(answer, digest)?;
    // A provider that does not rotate the token keeps the old one valid.
    if registered.registration_access_token.is_none() {
        registered.registration_access_token = stored.registration_access_token;
    }
    if registered.registration_client_uri.is_none() {
        registered.registration_client_uri = stored.registration_client_uri;
    }
    save(sessions, key, &registered).await?;
    tracing::info!(provider = %provider.config().name, "registration updated at the provider");
    Ok(registered)
}

/// Sends a registration request and reads the answer; `refused_token` names a refusal of the
/// request's bearer (`401`/`403`).
async fn send(
    req: reqwest::RequestBuilder,
    refused_token: fn(String) -> RegistrationError,
) -> Result<Answer, RegistrationError> {
    let resp = req
        .header(http::header::ACCEPT, "application/json")
        .timeout(super::PROVIDER_TIMEOUT)
        .send()
        .await
        .map_err(|e| RegistrationError::Unavailable(Box::new(e.without_url())))?;
    let status = resp.status();
    let body = super::read_limited(resp, MAX_ANSWER)
        .await
        .map_err(RegistrationError::Unavailable)?;
    if status.is_success() {
        return serde_json::from_slice(&body).map_err(|e| RegistrationError::Unavailable(e.into()));
    }
    let error = serde_json::from_slice::<ErrorAnswer>(&body).ok();
    let code = error
        .as_ref()
        .map(|e| printable(&e.error, 64))
        .unwrap_or_else(|| status.as_u16().to_string());
    if status == http::StatusCode::UNAUTHORIZED || status == http::StatusCode::FORBIDDEN {
        return Err(refused_token(code));
    }
    if status.is_client_error() {
        // The description says which metadata the provider did not take (a redirect URI's
        // scheme, a grant it does not allow): worth the operator's reading.
        let description = error
            .and_then(|e| e.error_description)
            .map(|d| format!(": {}", printable(&d, 300)))
            .unwrap_or_default();
        return Err(RegistrationError::Refused(format!("{code}{description}")));
    }
    Err(RegistrationError::Unavailable(
        format!("registration endpoint answered {status}").into(),
    ))
}

/// `text` cut to `max` characters of printable ASCII (a provider's text goes into a log line).
fn printable(text: &str, max: usize) -> String {
    text.chars()
        .filter(|c| c.is_ascii_graphic() || *c == ' ')
        .take(max)
        .collect()
}

/// The registration to keep from an answer, refusing one Sallyport could not use.
fn accept(answer: Answer, digest: &str) -> Result<Registered, RegistrationError> {
    if answer.client_id.is_empty() || answer.client_id.len() > 256 {
        return Err(RegistrationError::Unavailable(
            "the answer's client_id is unusable".into(),
        ));
    }
    if let Some(method) = &answer.token_endpoint_auth_method
        && method != "private_key_jwt"
    {
        return Err(RegistrationError::Refused(format!(
            "the provider registered token_endpoint_auth_method {}, not private_key_jwt",
            printable(method, 64)
        )));
    }
    Ok(Registered {
        client_id: answer.client_id,
        registration_access_token: answer.registration_access_token,
        registration_client_uri: answer.registration_client_uri,
        metadata: digest.to_owned(),
    })
}
