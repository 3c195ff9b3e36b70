//! Token endpoint calls (RFC 6749 §4.1.3 code exchange, §6 refresh) with client authentication.
//!
//! A small form-POST module rather than the `oauth2` crate: we need the raw response
//! (`expires_in`, rotated refresh tokens, a refreshed `id_token`), our own error split
//! (refused vs. unavailable) and later grants (token exchange, client credentials,
//! `private_key_jwt`) that `oauth2` does not cover.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};
use serde::Deserialize;

use crate::config::{AssertionAudience, ClientAuth, ProviderConfig};
use crate::secret::{AccessToken, IdToken, RefreshToken};

/// The most bytes read from a token endpoint answer: tokens are a few KiB; a provider that
/// sends more is refused rather than buffered.
const MAX_TOKEN_RESPONSE: usize = 64 * 1024;

/// A successful token response (RFC 6749 §5.1).
#[derive(Debug, Deserialize)]
pub struct TokenResponse {
    /// The access token.
    pub access_token: AccessToken,
    /// Usually `Bearer`.
    #[serde(default)]
    pub token_type: String,
    /// Lifetime in seconds; some providers send it as a string.
    #[serde(default, deserialize_with = "lenient_u64")]
    pub expires_in: Option<u64>,
    /// A (possibly rotated) refresh token.
    #[serde(default)]
    pub refresh_token: Option<RefreshToken>,
    /// The ID token (always on code exchange; sometimes on refresh).
    #[serde(default)]
    pub id_token: Option<IdToken>,
    /// Granted scope, when it differs from the request.
    #[serde(default)]
    pub scope: Option<String>,
}

impl TokenResponse {
    /// When the access token expires (unix seconds): `expires_in` when given, else the `exp`
    /// of an access token that is a JWT, else `default` from `now`. A token without a known
    /// end is still renewed, rather than sent until the upstream refuses it.
    pub fn access_expires_at(&self, now: u64, default: std::time::Duration) -> u64 {
        self.known_expiry(now).unwrap_or(now + default.as_secs())
    }

    /// When the access token expires, if the provider says: `expires_in`, or the `exp` of an
    /// access token that is a JWT.
    pub fn known_expiry(&self, now: u64) -> Option<u64> {
        self.expires_in
            .map(|s| now.saturating_add(s))
            .or_else(|| jwt_exp(self.access_token.expose()))
    }
}

/// The `exp` of a JWT, read without verifying it: only to schedule a renewal of a token that
/// came straight from the provider's token endpoint, never to trust a client's token.
pub fn jwt_exp(token: &str) -> Option<u64> {
    #[derive(Deserialize)]
    struct Exp {
        exp: Option<u64>,
    }
    let payload = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    serde_json::from_slice::<Exp>(&bytes).ok()?.exp
}

/// The form parameters that ask for a token for `spec`'s target: `scope` (space-separated),
/// RFC 8707 `resource` and RFC 8693 `audience`.
pub(crate) fn target_params<'a>(
    spec: &'a crate::config::TokenSpec,
    scope: &'a str,
    form: &mut Vec<(&'static str, &'a str)>,
) {
    if !scope.is_empty() {
        form.push(("scope", scope));
    }
    if let Some(resource) = &spec.resource {
        form.push(("resource", resource));
    }
    if let Some(audience) = &spec.audience {
        form.push(("audience", audience));
    }
}

fn lenient_u64<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum NumOrText {
        Num(f64),
        Text(String),
    }
    Ok(match Option::<NumOrText>::deserialize(d)? {
        Some(NumOrText::Num(n)) if n >= 0.0 => Some(n as u64),
        Some(NumOrText::Text(t)) => t.trim().parse().ok(),
        _ => None,
    })
}

/// Why a token request failed.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// The provider answered with an OAuth error (`invalid_grant`, …): the grant is not usable.
    #[error("token request refused by the provider: {error}")]
    Refused {
        /// The OAuth `error` code (never the description, which may echo input).
        error: String,
    },
    /// The provider could not be reached or answered something unusable: try again later.
    #[error("token endpoint unavailable")]
    Unavailable(#[source] Box<dyn std::error::Error + Send + Sync>),
}

#[derive(Deserialize)]
struct OAuthError {
    error: String,
}

/// A DPoP key to prove possession of at the provider, with the provider's latest nonce.
#[derive(Clone, Copy)]
pub(crate) struct Dpop<'a> {
    /// The session's key.
    pub key: &'a super::dpop::DpopKey,
    /// The nonce the provider last sent (`DPoP-Nonce`), shared by its endpoints.
    pub nonce: &'a std::sync::Mutex<Option<String>>,
}

impl Dpop<'_> {
    /// A proof for `htm` `url`, with the current nonce.
    pub(crate) fn proof(&self, htm: &str, url: &url::Url, access_token: Option<&str>) -> String {
        let nonce = self.nonce();
        self.key.proof(
            htm,
            &super::dpop::htu(url),
            access_token,
            nonce.as_deref(),
            super::dpop::now(),
        )
    }

    fn nonce(&self) -> Option<String> {
        self.nonce
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Keeps the nonce an answer carries; `true` when it is new.
    pub(crate) fn learn_nonce(&self, headers: &http::HeaderMap) -> bool {
        let Some(nonce) = headers
            .get("dpop-nonce")
            .and_then(|v| v.to_str().ok())
            .filter(|n| !n.is_empty() && n.len() <= 512)
        else {
            return false;
        };
        let mut current = self
            .nonce
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if current.as_deref() == Some(nonce) {
            return false;
        }
        *current = Some(nonce.to_owned());
        true
    }
}

/// POSTs a grant to `endpoint`, authenticating as configured (and proving possession of
/// `dpop`'s key, when given).
pub(crate) async fn request(
    http: &reqwest::Client,
    endpoint: &url::Url,
    provider: &ProviderConfig,
    form: Vec<(&'static str, &str)>,
    dpop: Option<Dpop<'_>>,
) -> Result<TokenResponse, TokenError> {
    post(http, endpoint, provider, endpoint, form, dpop).await
}

/// Adds `client_id` to a form that does not carry it yet (a pushed authorization request
/// does): a parameter sent twice is refused.
fn push_client_id<'a>(form: &mut Vec<(&'a str, &'a str)>, client_id: &'a str) {
    if !form.iter().any(|(k, _)| *k == "client_id") {
        form.push(("client_id", client_id));
    }
}

/// POSTs a form to one of the provider's endpoints that authenticate the client (token,
/// introspection, PAR), and reads its JSON answer. With `dpop`, the request carries a proof;
/// a provider that answers `use_dpop_nonce` (RFC 9449 §8) gets the request once more with the
/// nonce it sent.
pub(crate) async fn post<'a, T: serde::de::DeserializeOwned>(
    http: &reqwest::Client,
    endpoint: &url::Url,
    provider: &'a ProviderConfig,
    token_endpoint: &url::Url,
    form: Vec<(&'a str, &'a str)>,
    dpop: Option<Dpop<'_>>,
) -> Result<T, TokenError> {
    let body = post_raw(http, endpoint, provider, token_endpoint, form, dpop).await?;
    serde_json::from_slice(&body).map_err(|e| TokenError::Unavailable(Box::new(e)))
}

/// [`post`] to an endpoint whose success has no body to read (RFC 7009 revocation answers
/// `200` with an empty one).
pub(crate) async fn post_without_answer<'a>(
    http: &reqwest::Client,
    endpoint: &url::Url,
    provider: &'a ProviderConfig,
    token_endpoint: &url::Url,
    form: Vec<(&'a str, &'a str)>,
) -> Result<(), TokenError> {
    post_raw(http, endpoint, provider, token_endpoint, form, None)
        .await
        .map(drop)
}

/// The body of a successful answer; an OAuth error answer is `Refused` (after one retry with a
/// new DPoP nonce, when the provider asks for one), anything else `Unavailable`.
async fn post_raw<'a>(
    http: &reqwest::Client,
    endpoint: &url::Url,
    provider: &'a ProviderConfig,
    token_endpoint: &url::Url,
    form: Vec<(&'a str, &'a str)>,
    dpop: Option<Dpop<'_>>,
) -> Result<Vec<u8>, TokenError> {
    let mut retried = false;
    loop {
        let (status, headers, body) =
            send(http, endpoint, provider, token_endpoint, form.clone(), dpop).await?;
        let nonce_is_new = dpop.is_some_and(|d| d.learn_nonce(&headers));
        if status.is_success() {
            return Ok(body);
        }
        if status.is_client_error()
            && let Ok(err) = serde_json::from_slice::<OAuthError>(&body)
        {
            if err.error == "use_dpop_nonce" && nonce_is_new && !retried {
                retried = true;
                continue;
            }
            let error = if err.error.len() <= 64 && err.error.bytes().all(|b| b.is_ascii_graphic())
            {
                err.error
            } else {
                "invalid_response".to_owned()
            };
            return Err(TokenError::Refused { error });
        }
        return Err(TokenError::Unavailable(
            format!("the provider answered {status}").into(),
        ));
    }
}

/// One authenticated POST: a fresh client assertion (its `jti` is single-use) and DPoP proof.
async fn send<'a>(
    http: &reqwest::Client,
    endpoint: &url::Url,
    provider: &'a ProviderConfig,
    token_endpoint: &url::Url,
    mut form: Vec<(&'a str, &'a str)>,
    dpop: Option<Dpop<'_>>,
) -> Result<(http::StatusCode, http::HeaderMap, Vec<u8>), TokenError> {
    let assertion;
    let mut req = http
        .post(endpoint.as_str())
        .header(http::header::ACCEPT, "application/json");
    match provider.client_auth {
        ClientAuth::ClientSecretBasic => {
            // RFC 6749 §2.3.1: both parts are form-urlencoded before Base64.
            let user =
                utf8_percent_encode(provider.client_id.as_str(), NON_ALPHANUMERIC).to_string();
            let pass =
                utf8_percent_encode(provider.client_secret.expose(), NON_ALPHANUMERIC).to_string();
            let basic = STANDARD.encode(format!("{user}:{pass}"));
            req = req.header(http::header::AUTHORIZATION, format!("Basic {basic}"));
        }
        ClientAuth::ClientSecretPost => {
            push_client_id(&mut form, provider.client_id.as_str());
            form.push(("client_secret", provider.client_secret.expose()));
        }
        ClientAuth::PrivateKeyJwt { audience } => {
            let audience = match audience {
                AssertionAudience::Issuer => provider.issuer.as_str(),
                AssertionAudience::TokenEndpoint => token_endpoint.as_str(),
            };
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            assertion = provider
                .signing_keys
                .client_assertion(provider.client_id.as_str(), audience, now)
                .map_err(|e| TokenError::Unavailable(Box::new(e)))?;
            push_client_id(&mut form, provider.client_id.as_str());
            form.push((
                "client_assertion_type",
                "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
            ));
            form.push(("client_assertion", &assertion));
        }
    }
    if let Some(dpop) = dpop {
        req = req.header("dpop", dpop.proof("POST", endpoint, None));
    }
    let resp = req
        .form(&form)
        .timeout(super::PROVIDER_TIMEOUT)
        .send()
        .await
        .map_err(|e| TokenError::Unavailable(Box::new(e.without_url())))?;
    let status = resp.status();
    let headers = resp.headers().clone();
    let body = super::read_limited(resp, MAX_TOKEN_RESPONSE)
        .await
        .map_err(TokenError::Unavailable)?;
    Ok((status, headers, body))
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use std::time::Duration;

    fn response(access_token: &str, expires_in: Option<u64>) -> TokenResponse {
        TokenResponse {
            access_token: AccessToken::new(access_token),
            token_type: "Bearer".into(),
            expires_in,
            refresh_token: None,
            id_token: None,
            scope: None,
        }
    }

    #[test]
    fn a_token_without_a_stated_lifetime_still_expires() {
        let default = Duration::from_secs(300);
        assert_eq!(
            response("opaque", Some(60)).access_expires_at(1_000, default),
            1_060
        );
        let payload = URL_SAFE_NO_PAD.encode(br#"{"exp":5000,"sub":"x"}"#);
        let jwt = format!("eyJhbGciOiJSUzI1NiJ9.{payload}.sig");
        assert_eq!(response(&jwt, None).known_expiry(1_000), Some(5_000));
        assert_eq!(
            response(&jwt, Some(60)).known_expiry(1_000),
            Some(1_060),
            "expires_in first"
        );
        assert_eq!(response("opaque", None).known_expiry(1_000), None);
        assert_eq!(
            response("opaque", None).access_expires_at(1_000, default),
            1_300
        );
        assert_eq!(
            response("a.b%.c", None).known_expiry(1_000),
            None,
            "not base64: no exp"
        );
    }
}
