//! A remote policy decision point speaking OpenID AuthZEN 1.0 (`POST {url}/access/v1/evaluation`),
//! behind a decision cache.
//!
//! The cache is keyed by a SHA-256 digest of everything the question says (subject with its
//! properties, action, resource, context: `Question::digest`), so a cached decision is only
//! ever reused for the very question it answered; the context's time is to the minute for that reason. Permits
//! and denials have their own time to live; concurrent identical questions wait for one
//! evaluation (moka's `try_get_with`). Failures are not cached: the next request asks again.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use serde_json::Value;
use url::Url;

use super::{Decision, PdpError, Question};
use crate::config::{PdpAuth, PdpConfig};
use crate::secret::ClientSecret;
use crate::tokens::{SharedToken, TokenFailure};

/// Largest PDP answer read; an AuthZEN decision is a few hundred bytes.
const MAX_ANSWER: usize = 64 * 1024;
/// Longest `reason_user` text kept, and most languages.
const MAX_REASON: usize = 300;
const MAX_REASON_LANGUAGES: usize = 8;

/// How Sallyport authenticates to the PDP.
#[derive(Debug)]
enum Auth {
    None,
    Bearer(ClientSecret),
    /// A client-credentials token from the broker, under this plan index.
    Broker(usize),
}

/// One remote PDP.
#[derive(Debug)]
pub struct Pdp {
    /// The key under `authz.pdps`.
    pub name: String,
    endpoint: Url,
    auth: Auth,
    timeout: Duration,
    cache: moka::future::Cache<[u8; 32], Decision>,
    http: reqwest::Client,
}

/// Permits and denials live for their own time.
struct ByDecision {
    ttl: Duration,
    deny_ttl: Duration,
}

impl moka::Expiry<[u8; 32], Decision> for ByDecision {
    fn expire_after_create(
        &self,
        _key: &[u8; 32],
        value: &Decision,
        _created_at: std::time::Instant,
    ) -> Option<Duration> {
        Some(if value.permit {
            self.ttl
        } else {
            self.deny_ttl
        })
    }
}

/// An AuthZEN evaluation response.
#[derive(Deserialize)]
struct Answer {
    decision: bool,
    #[serde(default)]
    context: Option<Value>,
}

impl Pdp {
    /// A client for `config`; `plan` is the broker's index for its client-credentials token.
    pub fn new(config: &PdpConfig, plan: usize, http: reqwest::Client) -> Self {
        let mut endpoint = config.url.clone();
        endpoint
            .path_segments_mut()
            .expect("validated as an http(s) URL")
            .pop_if_empty()
            .extend(["access", "v1", "evaluation"]);
        Self {
            name: config.name.clone(),
            endpoint,
            auth: match &config.auth {
                PdpAuth::None => Auth::None,
                PdpAuth::Bearer(token) => Auth::Bearer(token.clone()),
                PdpAuth::Token(_) => Auth::Broker(plan),
            },
            timeout: config.timeout,
            cache: moka::future::Cache::builder()
                .max_capacity(config.cache.max_entries)
                .expire_after(ByDecision {
                    ttl: config.cache.ttl,
                    deny_ttl: config.cache.deny_ttl,
                })
                .build(),
            http,
        }
    }

    /// Whether the PDP answers at all (any HTTP answer below 500 to its AuthZEN discovery
    /// document, within its timeout), and how long it took, in milliseconds.
    pub async fn probe(&self) -> (bool, f64) {
        let mut url = self.endpoint.clone();
        url.set_path("/.well-known/authzen-configuration");
        let started = std::time::Instant::now();
        let answered = self
            .http
            .get(url)
            .timeout(self.timeout.max(Duration::from_secs(1)))
            .send()
            .await
            .is_ok_and(|r| !r.status().is_server_error());
        (answered, started.elapsed().as_secs_f64() * 1000.0)
    }

    /// The decision for `question`, from the cache or the PDP. `token` gives the broker's
    /// token of a plan (asked only when the PDP is called, and takes one).
    ///
    /// # Errors
    /// The PDP could not give a decision: the request must fail closed. The second part says
    /// whether the decision cache answered.
    pub async fn decide<F, Fut>(
        &self,
        question: &Question<'_>,
        token: F,
    ) -> (Result<Decision, Arc<PdpError>>, bool)
    where
        F: FnOnce(usize) -> Fut,
        Fut: Future<Output = Result<Arc<SharedToken>, TokenFailure>>,
    {
        let key = question.digest();
        // The common case first, without building the (large) future that asks the PDP.
        if let Some(decision) = self.cache.get(&key).await {
            return (Ok(decision), true);
        }
        let asked = Box::pin(self.cache.try_get_with(key, async {
            let body = serde_json::to_vec(question).expect("a question serialises");
            let shared = match self.auth {
                Auth::Broker(plan) => {
                    Some(token(plan).await.map_err(|cause| PdpError::NoToken {
                        pdp: self.name.clone(),
                        cause,
                    })?)
                }
                _ => None,
            };
            let bearer = match (&self.auth, &shared) {
                (Auth::Bearer(token), _) => Some(token.expose()),
                (_, Some(shared)) => Some(shared.access_token.expose()),
                _ => None,
            };
            self.ask(body, bearer).await
        }))
        .await;
        (asked, false)
    }

    /// Sends one evaluation request.
    async fn ask(&self, body: Vec<u8>, bearer: Option<&str>) -> Result<Decision, PdpError> {
        let unavailable = |why: String| PdpError::Unavailable {
            pdp: self.name.clone(),
            why,
        };
        let mut request = self
            .http
            .post(self.endpoint.clone())
            .timeout(self.timeout)
            .header(http::header::CONTENT_TYPE, "application/json")
            .header(http::header::ACCEPT, "application/json")
            .body(body);
        if let Some(bearer) = bearer {
            request = request.bearer_auth(bearer);
        }
        if crate::telemetry::trace::enabled() {
            // The decision point continues the request's trace.
            let mut headers = http::HeaderMap::new();
            crate::telemetry::trace::inject(&tracing::Span::current(), None, &mut headers);
            request = request.headers(headers);
        }
        let mut resp = request.send().await.map_err(|e| {
            unavailable(if e.is_timeout() {
                format!("no answer within {:?}", self.timeout)
            } else {
                format!("unreachable: {}", e.without_url())
            })
        })?;
        if resp.status() != reqwest::StatusCode::OK {
            return Err(unavailable(format!("answered HTTP {}", resp.status())));
        }
        let mut bytes = Vec::new();
        loop {
            match resp.chunk().await {
                Ok(Some(chunk)) if bytes.len() + chunk.len() <= MAX_ANSWER => {
                    bytes.extend_from_slice(&chunk);
                }
                Ok(Some(_)) => return Err(unavailable("answered more than 64 KiB".into())),
                Ok(None) => break,
                Err(e) if e.is_timeout() => {
                    return Err(unavailable(format!("no answer within {:?}", self.timeout)));
                }
                Err(e) => return Err(unavailable(format!("answer cut: {}", e.without_url()))),
            }
        }
        let answer: Answer = serde_json::from_slice(&bytes).map_err(|_| {
            unavailable("answered something that is not an AuthZEN decision".into())
        })?;
        let context = answer.context.as_ref();
        if !answer.decision
            && let Some(admin) = context.and_then(|c| c.get("reason_admin"))
        {
            let text: String = admin.to_string().chars().take(300).collect();
            tracing::info!(pdp = %self.name, reason_admin = %text, "the policy decision point denied a request");
        }
        Ok(Decision {
            permit: answer.decision,
            reason_user: context
                .and_then(|c| c.get("reason_user"))
                .and_then(reason_user)
                .map(Arc::new),
        })
    }
}

/// The PDP's `reason_user`, kept when it is short text: a string, or an object of strings
/// (AuthZEN gives one per language). Anything else is dropped.
fn reason_user(value: &Value) -> Option<Value> {
    let short = |v: &Value| {
        v.as_str()
            .filter(|s| s.chars().count() <= MAX_REASON && !s.chars().any(char::is_control))
            .map(|s| Value::String(s.to_owned()))
    };
    match value {
        Value::String(_) => short(value),
        Value::Object(map) => {
            let kept: serde_json::Map<String, Value> = map
                .iter()
                .filter(|(k, _)| k.len() <= 32)
                .filter_map(|(k, v)| Some((k.clone(), short(v)?)))
                .take(MAX_REASON_LANGUAGES)
                .collect();
            (!kept.is_empty()).then_some(Value::Object(kept))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn only_short_text_reasons_reach_the_user() {
        assert_eq!(reason_user(&json!("No.")), Some(json!("No.")));
        assert_eq!(
            reason_user(&json!({"en-403": "Ask your admin", "de": 3, "x": "a\u{0}b"})),
            Some(json!({"en-403": "Ask your admin"}))
        );
        assert_eq!(reason_user(&json!("x".repeat(301))), None);
        assert_eq!(reason_user(&json!({"de": 3})), None);
        assert_eq!(reason_user(&json!(["a"])), None);
    }
}
