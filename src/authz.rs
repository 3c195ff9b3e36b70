//! Authorization: whether a logged-in caller may do what a request asks (`403` when not).
//!
//! Two ways a route says who may pass, both asked by admission after the caller is known and
//! the request passed CSRF, and before any token is obtained for the service, so that a
//! refused request costs no provider call and never reaches the upstream:
//! - `require: { claims: … }` ([`Require`]): the session's claims, without a policy engine;
//! - `authz: { pdp, resource, action }` ([`RouteAuthz`]): a policy decision point, asked an
//!   OpenID AuthZEN 1.0 question ([`Question`]) built from the session (the subject), the
//!   route (resource and action) and the request (context). Remote PDPs ([`remote`]) are
//!   asked over HTTP through a decision cache; they fail closed (`503 pdp_unavailable`).
//!
//! The PDP never receives a token: the subject is the session's `sub` and configured claims.

mod embedded;
pub mod question;
pub mod remote;
mod require;
mod step_up;

use std::sync::Arc;

pub use embedded::Embedded;
pub use question::{Actions, Question, RouteAuthz, Subject, Template};
pub use require::Require;
pub use step_up::{StepUp, is_acr};

use crate::config::{Config, PdpRef};

/// A PDP's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// Whether the request may pass.
    pub permit: bool,
    /// The PDP's reason for the user (AuthZEN `context.reason_user`), checked to be short
    /// text: a string, or an object of strings by language. Its internal reason
    /// (`reason_admin`) is logged, never kept here.
    pub reason_user: Option<Arc<serde_json::Value>>,
}

impl Decision {
    /// The reason for the user as one text: the PDP's string, or of its texts by language
    /// (AuthZEN keys such as `en` or `en-403`) the first language `accept_language` lists,
    /// else English, else the first.
    pub fn reason_text(&self, accept_language: Option<&str>) -> Option<&str> {
        let reason = self.reason_user.as_deref()?;
        if let Some(text) = reason.as_str() {
            return Some(text);
        }
        let texts = reason.as_object()?;
        let of = |lang: &str| {
            texts.iter().find_map(|(key, text)| {
                let key_lang = key.split('-').next().unwrap_or(key);
                key_lang
                    .eq_ignore_ascii_case(lang)
                    .then(|| text.as_str())
                    .flatten()
            })
        };
        accept_language
            .into_iter()
            .flat_map(|header| header.split(','))
            .filter_map(|item| item.split(';').next())
            .map(|tag| tag.trim().split('-').next().unwrap_or(""))
            .filter(|lang| !lang.is_empty() && *lang != "*")
            .find_map(of)
            .or_else(|| of("en"))
            .or_else(|| texts.values().find_map(serde_json::Value::as_str))
    }
}

/// Why no decision could be had: the request fails closed.
#[derive(Debug, thiserror::Error)]
pub enum PdpError {
    /// The PDP could not be reached, timed out, or answered something that is not an AuthZEN
    /// decision.
    #[error("policy decision point {pdp}: {why}")]
    Unavailable {
        /// The PDP's name.
        pdp: String,
        /// What went wrong (no token, no request body).
        why: String,
    },
    /// The token Sallyport presents to the PDP could not be had.
    #[error("policy decision point {pdp}: no token for it: {cause}")]
    NoToken {
        /// The PDP's name.
        pdp: String,
        /// The broker's failure.
        cause: crate::tokens::TokenFailure,
    },
}

/// Embedded decisions kept at most (a minute's worth of distinct questions).
const EMBEDDED_CACHE_ENTRIES: u64 = 100_000;

/// The decision points routes ask.
#[derive(Debug)]
pub struct Authz {
    remote: Vec<remote::Pdp>,
    /// The embedded engine, when `authz.policies` is set.
    pub embedded: Option<Embedded>,
    /// Its decisions: a question (with its minute) always gets the same answer from the
    /// same policies, and a cached one costs a digest instead of a Cedar evaluation.
    embedded_cache: moka::future::Cache<[u8; 32], Decision>,
    /// How the subject is described.
    pub subject: crate::config::SubjectConfig,
    /// Decisions are counted here, by decision point (`embedded`, then the remote ones).
    metrics: Option<(Arc<crate::metrics::Metrics>, Vec<crate::metrics::Name>)>,
}

impl Authz {
    /// Counts decisions in `metrics`.
    #[must_use]
    pub fn with_metrics(mut self, metrics: Option<Arc<crate::metrics::Metrics>>) -> Self {
        self.metrics = metrics.map(|m| {
            let names = std::iter::once("embedded")
                .chain(self.remote.iter().map(|p| p.name.as_str()))
                .map(crate::metrics::Name::of)
                .collect();
            (m, names)
        });
        self
    }

    /// The configured decision points.
    pub fn new(config: &Config, http: &reqwest::Client) -> Self {
        Self {
            remote: config
                .authz
                .pdps
                .iter()
                .enumerate()
                .map(|(i, p)| remote::Pdp::new(p, config.services.len() + i, http.clone()))
                .collect(),
            embedded: config.authz.policies.as_ref().map(|file| {
                Embedded::parse(&file.text, &file.path.display().to_string())
                    .expect("config validation parsed the policies")
            }),
            embedded_cache: moka::future::Cache::builder()
                .max_capacity(EMBEDDED_CACHE_ENTRIES)
                .time_to_live(std::time::Duration::from_secs(60))
                .build(),
            subject: config.authz.subject.clone(),
            metrics: None,
        }
    }

    /// Each remote decision point's answer to a probe (`ready`, `ms`), and the embedded
    /// engine's (always ready when configured), by name.
    pub async fn probe(&self) -> serde_json::Map<String, serde_json::Value> {
        let mut out = serde_json::Map::new();
        if self.embedded.is_some() {
            out.insert(
                "embedded".into(),
                serde_json::json!({ "ready": true, "ms": 0.0 }),
            );
        }
        let probes = futures_util::future::join_all(self.remote.iter().map(|p| p.probe())).await;
        for (pdp, (ready, ms)) in self.remote.iter().zip(probes) {
            out.insert(
                pdp.name.clone(),
                serde_json::json!({ "ready": ready, "ms": ms }),
            );
        }
        out
    }

    /// The decision of `pdp` about `question`. `token` gives the broker's token of a plan,
    /// for a remote PDP called with one (asked only when the PDP is called).
    ///
    /// # Errors
    /// A remote PDP could not give a decision: the request must fail closed.
    pub async fn decide<F, Fut>(
        &self,
        pdp: PdpRef,
        question: &Question<'_>,
        token: F,
    ) -> Result<Decision, Arc<PdpError>>
    where
        F: FnOnce(usize) -> Fut,
        Fut: std::future::Future<
                Output = Result<Arc<crate::tokens::SharedToken>, crate::tokens::TokenFailure>,
            >,
    {
        let (result, cached, point) = match pdp {
            PdpRef::Embedded => {
                let engine = self
                    .embedded
                    .as_ref()
                    .expect("config validation checks that policies are configured");
                let key = question.digest();
                match self.embedded_cache.get(&key).await {
                    Some(decision) => (Ok(decision), true, 0),
                    None => (
                        Ok(self
                            .embedded_cache
                            .get_with(key, async { engine.decide(question) })
                            .await),
                        false,
                        0,
                    ),
                }
            }
            PdpRef::Remote(i) => {
                let (result, cached) = self.remote[i].decide(question, token).await;
                (result, cached, i + 1)
            }
        };
        if let Some((m, names)) = &self.metrics {
            let decision = match &result {
                Ok(d) if d.permit => "permit",
                Ok(_) => "deny",
                Err(_) => "error",
            };
            m.decision(&names[point], decision, cached);
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_reason_is_one_text_in_the_users_language() {
        let by_language = Decision {
            permit: false,
            reason_user: Some(Arc::new(
                json!({"de-403": "Nein", "en-403": "No", "fr": "Non"}),
            )),
        };
        assert_eq!(
            by_language.reason_text(Some("fr-CH, de;q=0.8")),
            Some("Non")
        );
        assert_eq!(
            by_language.reason_text(Some("de-DE,en;q=0.5")),
            Some("Nein")
        );
        assert_eq!(by_language.reason_text(Some("ja")), Some("No"), "English");
        assert_eq!(by_language.reason_text(None), Some("No"));
        let only = Decision {
            permit: false,
            reason_user: Some(Arc::new(json!({"es": "No es posible"}))),
        };
        assert_eq!(only.reason_text(None), Some("No es posible"), "the first");
        let text = Decision {
            permit: false,
            reason_user: Some(Arc::new(json!("Locked"))),
        };
        assert_eq!(text.reason_text(Some("de")), Some("Locked"));
    }
}
