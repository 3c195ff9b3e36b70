//! Step-up authentication: a route that needs a stronger (`acr`) or more recent (`max_age`)
//! login than the session has answers `401 step_up_required` with a `login_url` asking the
//! provider for it; an upstream may ask the same with an RFC 9470 challenge.

use std::time::Duration;

use serde_json::Value;

/// What a route (or an upstream's challenge) asks of the session's authentication.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepUp {
    /// Accepted `acr` values (any of them); empty: any.
    pub acr: Vec<String>,
    /// Longest time since the user authenticated.
    pub max_age: Option<Duration>,
}

impl StepUp {
    /// Whether a session with `claims` (its ID token's `acr` and `auth_time`) meets this at
    /// `now` (unix seconds). A session without the claim a requirement needs does not.
    pub fn is_met(&self, claims: &serde_json::Map<String, Value>, now: u64) -> bool {
        let acr_ok = self.acr.is_empty()
            || claims
                .get("acr")
                .and_then(Value::as_str)
                .is_some_and(|acr| self.acr.iter().any(|a| a == acr));
        let age_ok = self.max_age.is_none_or(|max| {
            claims
                .get("auth_time")
                .and_then(Value::as_u64)
                .is_some_and(|at| at.saturating_add(max.as_secs()) >= now)
        });
        acr_ok && age_ok
    }

    /// The login that gives a session what this asks: `/auth/login?acr_values=…&max_age=…`,
    /// and `return_to` when given.
    pub fn login_url(&self, return_to: Option<&str>) -> String {
        let mut query = url::form_urlencoded::Serializer::new(String::new());
        if !self.acr.is_empty() {
            query.append_pair("acr_values", &self.acr.join(" "));
        }
        if let Some(max) = self.max_age {
            query.append_pair("max_age", &max.as_secs().to_string());
        }
        if let Some(to) = return_to {
            query.append_pair("return_to", to);
        }
        format!("/auth/login?{}", query.finish())
    }

    /// The step-up an upstream asks for with RFC 9470
    /// `WWW-Authenticate: Bearer error="insufficient_user_authentication", acr_values="…",
    /// max_age=…` (at least one of them); `None` for any other challenge.
    pub fn from_challenge(www_authenticate: &str) -> Option<Self> {
        let params = bearer_params(www_authenticate)?;
        let get = |name: &str| {
            params
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.as_str())
        };
        if get("error")? != "insufficient_user_authentication" {
            return None;
        }
        let acr: Vec<String> = get("acr_values")
            .map(|v| {
                v.split(' ')
                    .filter(|s| !s.is_empty())
                    .filter(|s| is_acr(s))
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default();
        let max_age = get("max_age")
            .and_then(|v| v.parse::<u64>().ok())
            .map(Duration::from_secs);
        // A challenge that asks for nothing a login could give is passed on as it is.
        (!acr.is_empty() || max_age.is_some()).then_some(Self { acr, max_age })
    }
}

/// Whether `s` is a plausible `acr` value: printable ASCII without spaces or quotes, short.
pub fn is_acr(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 128
        && s.bytes()
            .all(|b| b.is_ascii_graphic() && b != b'"' && b != b'\\')
}

/// The auth-params of a `Bearer` challenge (RFC 9110 §11.2: `name=token` or
/// `name="quoted string"`, comma separated). Written out because no dependency here parses
/// challenges; only the first `Bearer` challenge of the header is read.
fn bearer_params(header: &str) -> Option<Vec<(String, String)>> {
    let start = header.to_ascii_lowercase().find("bearer")?;
    let mut rest = header[start + "bearer".len()..].trim_start();
    let mut params = Vec::new();
    while !rest.is_empty() {
        let eq = rest.find('=')?;
        let name = rest[..eq].trim().trim_start_matches(',').trim();
        if name.is_empty() || name.contains([' ', '"']) {
            // The next challenge (`Basic realm=…`) or garbage: stop here.
            break;
        }
        rest = rest[eq + 1..].trim_start();
        let value;
        if let Some(quoted) = rest.strip_prefix('"') {
            let mut out = String::new();
            let mut chars = quoted.char_indices();
            let mut end = None;
            while let Some((i, c)) = chars.next() {
                match c {
                    '\\' => {
                        if let Some((_, escaped)) = chars.next() {
                            out.push(escaped);
                        }
                    }
                    '"' => {
                        end = Some(i + 1);
                        break;
                    }
                    c => out.push(c),
                }
            }
            value = out;
            rest = &quoted[end?..];
        } else {
            let end = rest.find(',').unwrap_or(rest.len());
            value = rest[..end].trim().to_owned();
            rest = &rest[end..];
        }
        params.push((name.to_owned(), value));
        rest = rest.trim_start().trim_start_matches(',').trim_start();
    }
    Some(params)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn claims(v: Value) -> serde_json::Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => unreachable!("an object"),
        }
    }

    #[test]
    fn acr_and_age_must_both_hold() {
        let step = StepUp {
            acr: vec!["mfa".into(), "hwk".into()],
            max_age: Some(Duration::from_secs(600)),
        };
        let now = 10_000;
        assert!(step.is_met(&claims(json!({"acr": "mfa", "auth_time": 9_500})), now));
        assert!(!step.is_met(&claims(json!({"acr": "pwd", "auth_time": 9_500})), now));
        assert!(!step.is_met(&claims(json!({"acr": "mfa", "auth_time": 9_000})), now));
        assert!(
            !step.is_met(&claims(json!({"acr": "mfa"})), now),
            "no auth_time"
        );
        assert!(
            !step.is_met(&claims(json!({"auth_time": 9_500})), now),
            "no acr"
        );
        let any = StepUp {
            acr: Vec::new(),
            max_age: None,
        };
        assert!(any.is_met(&claims(json!({})), now));
    }

    #[test]
    fn the_login_url_asks_for_what_is_missing() {
        let step = StepUp {
            acr: vec!["mfa".into(), "urn:x:hwk".into()],
            max_age: Some(Duration::from_secs(900)),
        };
        assert_eq!(
            step.login_url(Some("/orders?x=1")),
            "/auth/login?acr_values=mfa+urn%3Ax%3Ahwk&max_age=900&return_to=%2Forders%3Fx%3D1"
        );
        let acr_only = StepUp {
            acr: vec!["mfa".into()],
            max_age: None,
        };
        assert_eq!(acr_only.login_url(None), "/auth/login?acr_values=mfa");
    }

    #[test]
    fn rfc_9470_challenges_are_read() {
        let step = StepUp::from_challenge(
            r#"Bearer error="insufficient_user_authentication", error_description="A different authentication level is required", acr_values="mfa  phr", max_age=300"#,
        )
        .unwrap();
        assert_eq!(step.acr, ["mfa", "phr"]);
        assert_eq!(step.max_age, Some(Duration::from_secs(300)));
        let step = StepUp::from_challenge(
            r#"Basic realm="x", Bearer realm="api", error=insufficient_user_authentication, max_age="60""#,
        )
        .unwrap();
        assert_eq!(step.max_age, Some(Duration::from_secs(60)));
        assert!(step.acr.is_empty());
        assert_eq!(
            StepUp::from_challenge(r#"Bearer error="invalid_token""#),
            None
        );
        assert_eq!(StepUp::from_challenge("Basic realm=\"x\""), None);
        assert_eq!(
            StepUp::from_challenge(r#"Bearer error="insufficient_user_authentication""#),
            None,
            "nothing to ask the provider for"
        );
        assert_eq!(
            StepUp::from_challenge(r#"Bearer error="insuff"#),
            None,
            "unclosed quote"
        );
        let quoted = StepUp::from_challenge(
            r#"Bearer error="insufficient_user_authentication", acr_values="a\"b c""#,
        )
        .unwrap();
        assert_eq!(quoted.acr, ["c"], "a value with a quote is not an acr");
    }
}
