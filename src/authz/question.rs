//! The question a route asks its PDP: an OpenID AuthZEN 1.0 evaluation request (subject,
//! action, resource, context), and the route settings it is built from.

use std::borrow::Cow;
use std::net::IpAddr;

use http::Method;
use serde::Serialize;
use serde_json::Value;

use crate::config::{PdpRef, SubjectConfig};
use crate::session::SessionRecord;

/// `routes[].authz`: which PDP the route asks, about which resource and action.
#[derive(Debug, Clone)]
pub struct RouteAuthz {
    /// The decision point.
    pub pdp: PdpRef,
    /// `resource.type`.
    pub resource_type: String,
    /// `resource.id`, which may take the route's named segments.
    pub resource_id: Template,
    /// The action of each method.
    pub action: Actions,
}

/// A text with `{name}` placeholders for the route's named path segments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template(Vec<Part>);

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Text(String),
    /// The value of the route's named segment with this index.
    Param(usize),
    /// The whole request path (the default id).
    Path,
}

impl Template {
    /// The request path itself: the id of a resource whose route names no segment.
    pub fn path() -> Self {
        Self(vec![Part::Path])
    }

    /// Parses `text`, whose placeholders must be among `names` (the route's named segments).
    ///
    /// # Errors
    /// A message naming the unknown placeholder or the unclosed brace.
    pub fn parse(text: &str, names: &[&str]) -> Result<Self, String> {
        let mut parts = Vec::new();
        let mut rest = text;
        while let Some(open) = rest.find('{') {
            if open > 0 {
                parts.push(Part::Text(rest[..open].to_owned()));
            }
            let Some(close) = rest[open..].find('}') else {
                return Err("has a { without }".into());
            };
            let name = &rest[open + 1..open + close];
            match names.iter().position(|n| *n == name) {
                Some(i) => parts.push(Part::Param(i)),
                None => {
                    return Err(format!(
                        "names {{{name}}}, which is not a segment of the route's path (segments: {})",
                        if names.is_empty() {
                            "none; write the path as /api/orders/{id}/*".to_owned()
                        } else {
                            names.join(", ")
                        }
                    ));
                }
            }
            rest = &rest[open + close + 1..];
        }
        if rest.contains('}') {
            return Err("has a } without {".into());
        }
        if !rest.is_empty() {
            parts.push(Part::Text(rest.to_owned()));
        }
        if parts.is_empty() {
            return Err("must not be empty".into());
        }
        Ok(Self(parts))
    }

    /// The text for a request to `path` whose named segments have the values `params`
    /// (percent-encoded, as in the path; decoded here when they are UTF-8).
    pub fn render<'a>(&'a self, path: &'a str, params: &'a [String]) -> Cow<'a, str> {
        let piece = |part: &'a Part| -> Cow<'a, str> {
            match part {
                Part::Text(t) => Cow::Borrowed(t),
                Part::Path => Cow::Borrowed(path),
                Part::Param(i) => {
                    let raw = params.get(*i).map_or("", String::as_str);
                    percent_encoding::percent_decode_str(raw)
                        .decode_utf8()
                        .unwrap_or(Cow::Borrowed(raw))
                }
            }
        };
        match &self.0[..] {
            [one] => piece(one),
            parts => Cow::Owned(parts.iter().map(piece).collect()),
        }
    }
}

/// The action a request asks for: by default `read` for `GET`/`HEAD`, `create` for `POST`,
/// `update` for `PUT`/`PATCH`, `delete` for `DELETE`, the method's name in lower case for
/// any other; a route may name one action for every method, or map methods.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Actions {
    /// One action for every method.
    pub fixed: Option<String>,
    /// Methods mapped to actions (others keep the default).
    pub by_method: Vec<(Method, String)>,
}

impl Actions {
    /// The action of `method`.
    pub fn of<'a>(&'a self, method: &Method) -> Cow<'a, str> {
        if let Some(fixed) = &self.fixed {
            return Cow::Borrowed(fixed);
        }
        if let Some((_, action)) = self.by_method.iter().find(|(m, _)| m == method) {
            return Cow::Borrowed(action);
        }
        Cow::Borrowed(match *method {
            Method::GET | Method::HEAD => "read",
            Method::POST => "create",
            Method::PUT | Method::PATCH => "update",
            Method::DELETE => "delete",
            _ => return Cow::Owned(method.as_str().to_ascii_lowercase()),
        })
    }
}

/// An AuthZEN evaluation request, serialised exactly as sent (and as the cache key).
#[derive(Debug, Serialize)]
pub struct Question<'a> {
    /// Who asks.
    pub subject: Subject<'a>,
    /// What they want to do.
    pub action: Named<'a>,
    /// To what.
    pub resource: Resource<'a>,
    /// The circumstances.
    pub context: Context<'a>,
}

/// AuthZEN `subject`: built from the session, never from what the client sends.
#[derive(Debug, Clone, Serialize)]
pub struct Subject<'a> {
    /// `type` (`authz.subject.type`).
    #[serde(rename = "type")]
    pub kind: &'a str,
    /// `id`: the session's `sub` (or the configured claim).
    pub id: &'a str,
    /// The configured claims the session holds.
    #[serde(skip_serializing_if = "Properties::is_empty")]
    pub properties: Properties<'a>,
}

/// Claims in the order configured, serialised as a JSON object.
#[derive(Debug, Default, Clone)]
pub struct Properties<'a>(Vec<(&'a str, &'a Value)>);

impl<'a> Properties<'a> {
    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The claims, in the order configured.
    pub fn iter(&self) -> impl Iterator<Item = &(&'a str, &'a Value)> {
        self.0.iter()
    }
}

impl Serialize for Properties<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(self.0.iter().map(|(k, v)| (k, v)))
    }
}

/// AuthZEN `action`.
#[derive(Debug, Serialize)]
pub struct Named<'a> {
    /// The action's name.
    pub name: Cow<'a, str>,
}

/// AuthZEN `resource`.
#[derive(Debug, Serialize)]
pub struct Resource<'a> {
    /// Its type.
    #[serde(rename = "type")]
    pub kind: Cow<'a, str>,
    /// Its id.
    pub id: Cow<'a, str>,
}

/// AuthZEN `context`: the client's address, the time (UTC, to the minute, so that decisions
/// can be cached) and how the user authenticated.
#[derive(Debug, Serialize)]
pub struct Context<'a> {
    /// The client's address (see `http::client`).
    pub client_ip: IpAddr,
    /// RFC 3339, UTC, seconds zeroed.
    pub time: Minute,
    /// The session's `acr`, when the provider gave one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub acr: Option<&'a str>,
}

impl<'a> Subject<'a> {
    /// The subject of a session: `None` when the session lacks the claim that gives its id.
    pub fn of(config: &'a SubjectConfig, record: &'a SessionRecord) -> Option<Self> {
        let id = match config.id.as_str() {
            "sub" => record.sub.as_str(),
            claim => record.claims.get(claim)?.as_str()?,
        };
        let properties = Properties(
            config
                .properties
                .iter()
                .filter_map(|name| Some((name.as_str(), record.claims.get(name)?)))
                .collect(),
        );
        Some(Self {
            kind: &config.kind,
            id,
            properties,
        })
    }
}

impl<'a> Context<'a> {
    /// The context of a request from `client_ip` at `now` (unix seconds) in `record`'s session.
    pub fn of(record: &'a SessionRecord, client_ip: IpAddr, now: u64) -> Self {
        Self {
            client_ip,
            time: Minute::of(now),
            acr: record.claims.get("acr").and_then(Value::as_str),
        }
    }
}

impl<'a> Question<'a> {
    /// The question whether `subject` may do `action` to the resource `kind`/`id`.
    pub fn new(
        subject: Subject<'a>,
        action: Cow<'a, str>,
        kind: Cow<'a, str>,
        id: Cow<'a, str>,
        context: Context<'a>,
    ) -> Self {
        Self {
            subject,
            action: Named { name: action },
            resource: Resource { kind, id },
            context,
        }
    }

    /// A digest of everything the question says, the decision cache's key: equal exactly when
    /// the questions are. Cheaper than hashing the JSON body (which is built only when a PDP
    /// is called): each part is hashed with its length, property values as JSON.
    pub fn digest(&self) -> [u8; 32] {
        use sha2::Digest as _;
        struct Hashing(sha2::Sha256);
        impl std::io::Write for Hashing {
            fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
                self.0.update(buf);
                Ok(buf.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let mut h = Hashing(sha2::Sha256::new());
        let part = |h: &mut Hashing, bytes: &[u8]| {
            h.0.update((bytes.len() as u64).to_le_bytes());
            h.0.update(bytes);
        };
        part(&mut h, self.subject.kind.as_bytes());
        part(&mut h, self.subject.id.as_bytes());
        for (name, value) in self.subject.properties.iter() {
            part(&mut h, name.as_bytes());
            // JSON is self-delimiting; a value that fails to serialise (none do) is marked.
            if serde_json::to_writer(&mut h, value).is_err() {
                h.0.update([0xff]);
            }
        }
        part(&mut h, b"");
        part(&mut h, self.action.name.as_bytes());
        part(&mut h, self.resource.kind.as_bytes());
        part(&mut h, self.resource.id.as_bytes());
        match self.context.client_ip {
            IpAddr::V4(ip) => part(&mut h, &ip.octets()),
            IpAddr::V6(ip) => part(&mut h, &ip.octets()),
        }
        part(&mut h, self.context.time.as_str().as_bytes());
        match self.context.acr {
            Some(acr) => part(&mut h, acr.as_bytes()),
            None => h.0.update([0xff]),
        }
        h.0.finalize().into()
    }
}

/// A time as RFC 3339 in UTC with the seconds zeroed, e.g. `2026-12-04T04:32:00Z`, kept in
/// place (no allocation per request).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Minute([u8; 20]);

impl Minute {
    /// The minute of `now` (unix seconds). Written out because no dependency here formats
    /// dates; the civil date is Howard Hinnant's `civil_from_days`.
    pub fn of(now: u64) -> Self {
        let days = (now / 86_400) as i64;
        let minutes = (now % 86_400) / 60;
        let z = days + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z.rem_euclid(146_097);
        let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let day = doy - (153 * mp + 2) / 5 + 1;
        let month = if mp < 10 { mp + 3 } else { mp - 9 };
        let year = (yoe + era * 400 + i64::from(month <= 2)).clamp(0, 9999) as u64;
        let mut out = *b"0000-00-00T00:00:00Z";
        let mut put = |at: usize, width: usize, mut n: u64| {
            for i in (at..at + width).rev() {
                out[i] = b'0' + (n % 10) as u8;
                n /= 10;
            }
        };
        put(0, 4, year);
        put(5, 2, month as u64);
        put(8, 2, day as u64);
        put(11, 2, minutes / 60);
        put(14, 2, minutes % 60);
        Self(out)
    }

    /// The text.
    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.0).expect("ASCII digits and separators")
    }
}

impl Serialize for Minute {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_is_utc_to_the_minute() {
        let at = |now| Minute::of(now).as_str().to_owned();
        assert_eq!(at(0), "1970-01-01T00:00:00Z");
        assert_eq!(at(951_782_459), "2000-02-29T00:00:00Z");
        assert_eq!(at(1_796_358_779), "2026-12-04T04:32:00Z");
        assert_eq!(at(4_102_444_799), "2099-12-31T23:59:00Z");
        assert_eq!(
            serde_json::to_string(&Minute::of(60)).unwrap(),
            "\"1970-01-01T00:01:00Z\""
        );
    }

    #[test]
    fn the_digest_tells_every_part_apart() {
        let config = SubjectConfig::default();
        let record = |claims: Value| SessionRecord {
            v: 1,
            provider: "main".into(),
            sub: "alice".into(),
            sid: None,
            claims: claims.as_object().unwrap().clone(),
            id_token: crate::secret::IdToken::new("id"),
            access_token: crate::secret::AccessToken::new("at"),
            access_expires_at: None,
            refresh_token: None,
            id_expires_at: None,
            service_tokens: Default::default(),
            created_at: 0,
            last_seen: 0,
            expires_at: 0,
            csrf_token: "csrf".into(),
            dpop_key: None,
            client_address: None,
            user_agent: None,
        };
        let alice = record(serde_json::json!({"roles": ["admin"]}));
        let ask = |r: &SessionRecord, action: &'static str, id: &'static str, ip: &str, now| {
            Question {
                subject: Subject::of(&config, r).unwrap(),
                action: Named {
                    name: Cow::Borrowed(action),
                },
                resource: Resource {
                    kind: Cow::Borrowed("order"),
                    id: Cow::Borrowed(id),
                },
                context: Context::of(r, ip.parse().unwrap(), now),
            }
            .digest()
        };
        let base = ask(&alice, "read", "42", "10.0.0.1", 600);
        assert_eq!(
            base,
            ask(&alice, "read", "42", "10.0.0.1", 659),
            "same minute"
        );
        let viewer = record(serde_json::json!({"roles": ["viewer"]}));
        let others = [
            ask(&alice, "read", "42", "10.0.0.1", 660),
            ask(&alice, "reads", "42", "10.0.0.1", 600),
            ask(&alice, "read", "421", "10.0.0.1", 600),
            ask(&alice, "read", "42", "10.0.0.2", 600),
            ask(&viewer, "read", "42", "10.0.0.1", 600),
            ask(
                &record(serde_json::json!({})),
                "read",
                "42",
                "10.0.0.1",
                600,
            ),
            ask(
                &record(serde_json::json!({"acr": "mfa", "roles": ["admin"]})),
                "read",
                "42",
                "10.0.0.1",
                600,
            ),
        ];
        for (i, other) in others.iter().enumerate() {
            assert_ne!(&base, other, "{i}");
        }
    }

    #[test]
    fn templates_take_named_segments_decoded() {
        let t = Template::parse("order-{id}", &["tenant", "id"]).unwrap();
        let params = ["acme".to_owned(), "caf%C3%A9".to_owned()];
        assert_eq!(t.render("/x", &params), "order-café");
        let raw = ["acme".to_owned(), "%FF".to_owned()];
        assert_eq!(t.render("/x", &raw), "order-%FF", "not UTF-8: kept encoded");
        assert_eq!(Template::path().render("/api/x", &[]), "/api/x");
        assert!(
            Template::parse("{nope}", &["id"])
                .unwrap_err()
                .contains("segments: id")
        );
        assert!(Template::parse("{id", &["id"]).is_err());
        assert!(Template::parse("id}", &["id"]).is_err());
        assert!(Template::parse("", &[]).is_err());
    }

    #[test]
    fn actions_default_from_the_method_and_can_be_mapped() {
        let default = Actions::default();
        for (m, a) in [
            (Method::GET, "read"),
            (Method::HEAD, "read"),
            (Method::POST, "create"),
            (Method::PUT, "update"),
            (Method::PATCH, "update"),
            (Method::DELETE, "delete"),
            (Method::OPTIONS, "options"),
        ] {
            assert_eq!(default.of(&m), a);
        }
        let mapped = Actions {
            fixed: None,
            by_method: vec![(Method::POST, "approve".into())],
        };
        assert_eq!(mapped.of(&Method::POST), "approve");
        assert_eq!(mapped.of(&Method::GET), "read");
        let fixed = Actions {
            fixed: Some("use".into()),
            by_method: Vec::new(),
        };
        assert_eq!(fixed.of(&Method::DELETE), "use");
    }
}
