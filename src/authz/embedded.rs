//! The embedded policy engine: Cedar (`cedar-policy`), for `pdp: embedded` routes, so that a
//! single node needs no PDP server.
//!
//! The policy file is parsed once at startup; each decision builds a Cedar request from the
//! same AuthZEN question a remote PDP receives, mapped the same way as the test PDP
//! (`tests/pdp/server.mjs`) maps it:
//! - principal `<subject.type>::"<subject.id>"` with the subject's properties as attributes;
//! - action `Action::"<action.name>"`;
//! - resource `<resource.type>::"<resource.id>"`, no attributes;
//! - context: the question's context (`client_ip`, `time`, `acr`).
//!
//! JSON values become Cedar values: strings, booleans and integers as they are, arrays sets,
//! objects records; `null` and fractions are left out. A denial's reason for the user is the
//! `@reason_user("…")` annotation of a `forbid` policy that decided it.

use std::collections::{HashMap, HashSet};
use std::str::FromStr;
use std::sync::Arc;

use cedar_policy::{
    Authorizer, Context, Entities, Entity, EntityId, EntityTypeName, EntityUid, PolicySet, Request,
    RestrictedExpression,
};
use serde_json::Value;

use super::{Decision, Question};

/// A parsed policy file.
#[derive(Debug)]
pub struct Embedded {
    policies: PolicySet,
    authorizer: Authorizer,
}

impl Embedded {
    /// Parses `text` (the contents of `file`, named in errors).
    ///
    /// # Errors
    /// Every parse error as `file:line:column: message`.
    pub fn parse(text: &str, file: &str) -> Result<Self, Vec<String>> {
        let policies = PolicySet::from_str(text).map_err(|errors| {
            errors
                .iter()
                .map(|e| {
                    use miette::Diagnostic as _;
                    let offset = e
                        .labels()
                        .and_then(|mut labels| labels.next())
                        .map_or(0, |l| l.offset());
                    let (line, column) = line_column(text, offset);
                    format!("{file}:{line}:{column}: {e}")
                })
                .collect::<Vec<_>>()
        })?;
        Ok(Self {
            policies,
            authorizer: Authorizer::new(),
        })
    }

    /// How many policies the file holds.
    pub fn len(&self) -> usize {
        self.policies.policies().count()
    }

    /// Whether the file holds no policy (everything is denied).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The decision for `question`. A question Cedar cannot represent (a type name that is
    /// not one) is denied.
    pub fn decide(&self, question: &Question<'_>) -> Decision {
        let Some(request) = request(question) else {
            return Decision {
                permit: false,
                reason_user: None,
            };
        };
        let (request, entities) = request;
        let response = self
            .authorizer
            .is_authorized(&request, &self.policies, &entities);
        let permit = response.decision() == cedar_policy::Decision::Allow;
        // Of the policies that decided, the first in the file with a reason gives it (Cedar
        // reports them as a set; its ids are `policy0`, `policy1`, … in file order).
        let reason_user = (!permit)
            .then(|| {
                let mut ids: Vec<_> = response.diagnostics().reason().collect();
                ids.sort_by_key(|id| {
                    id.to_string()
                        .strip_prefix("policy")
                        .and_then(|n| n.parse::<usize>().ok())
                        .unwrap_or(usize::MAX)
                });
                ids.into_iter()
                    .find_map(|id| self.policies.annotation(id, "reason_user"))
            })
            .flatten()
            .map(|text| Arc::new(Value::String(text.to_owned())));
        if !permit {
            let errors: Vec<String> = response
                .diagnostics()
                .errors()
                .map(ToString::to_string)
                .collect();
            if !errors.is_empty() {
                tracing::info!(errors = ?errors, "policy evaluation errors; the request is denied");
            }
        }
        Decision {
            permit,
            reason_user,
        }
    }
}

/// The Cedar request and entities of `q`, or `None` when a type name is not a Cedar name.
fn request(q: &Question<'_>) -> Option<(Request, Entities)> {
    let uid = |kind: &str, id: &str| {
        Some(EntityUid::from_type_name_and_id(
            EntityTypeName::from_str(kind).ok()?,
            EntityId::new(id),
        ))
    };
    let principal = uid(q.subject.kind, q.subject.id)?;
    let action = uid("Action", &q.action.name)?;
    let resource = uid(&q.resource.kind, &q.resource.id)?;
    let attrs: HashMap<String, RestrictedExpression> = q
        .subject
        .properties
        .iter()
        .filter_map(|(k, v)| Some(((*k).to_owned(), expression(v)?)))
        .collect();
    let entities = Entities::from_entities(
        [
            Entity::new(principal.clone(), attrs, HashSet::new()).ok()?,
            Entity::new_no_attrs(resource.clone(), HashSet::new()),
        ],
        None,
    )
    .ok()?;
    // The same record as the question's JSON context.
    let mut context = vec![
        (
            "client_ip".to_owned(),
            RestrictedExpression::new_string(q.context.client_ip.to_string()),
        ),
        (
            "time".to_owned(),
            RestrictedExpression::new_string(q.context.time.as_str().to_owned()),
        ),
    ];
    if let Some(acr) = q.context.acr {
        context.push((
            "acr".to_owned(),
            RestrictedExpression::new_string(acr.to_owned()),
        ));
    }
    let context = Context::from_pairs(context).ok()?;
    let request = Request::new(principal, action, resource, context, None).ok()?;
    Some((request, entities))
}

/// A JSON value as a Cedar value, when it has one.
fn expression(v: &Value) -> Option<RestrictedExpression> {
    Some(match v {
        Value::String(s) => RestrictedExpression::new_string(s.clone()),
        Value::Bool(b) => RestrictedExpression::new_bool(*b),
        Value::Number(n) => RestrictedExpression::new_long(n.as_i64()?),
        Value::Array(items) => RestrictedExpression::new_set(items.iter().filter_map(expression)),
        Value::Object(map) => RestrictedExpression::new_record(
            map.iter()
                .filter_map(|(k, v)| Some((k.clone(), expression(v)?))),
        )
        .ok()?,
        Value::Null => return None,
    })
}

/// The 1-based line and column (in characters) of byte `offset` in `text`.
fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let (mut line, mut column) = (1, 1);
    // Characters that end by `offset` (an offset inside a character counts from its start).
    for (_, c) in text
        .char_indices()
        .take_while(|(i, c)| i + c.len_utf8() <= offset)
    {
        if c == '\n' {
            (line, column) = (line + 1, 1);
        } else {
            column += 1;
        }
    }
    (line, column)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_errors_name_the_line_and_column() {
        let text = "permit (principal, action, resource);\n\nforbid (principal, action, resource) when { principal.x == };\n";
        let errors = Embedded::parse(text, "policies.cedar").unwrap_err();
        assert!(errors[0].starts_with("policies.cedar:3:"), "{errors:?}");
        let ok = Embedded::parse("permit (principal, action, resource);", "p").unwrap();
        assert_eq!(ok.len(), 1);
    }

    #[test]
    fn lines_and_columns_count_characters() {
        assert_eq!(line_column("ab\ncé\nx", 7), (3, 1));
        assert_eq!(line_column("ab\ncé\nx", 4), (2, 2));
        assert_eq!(line_column("é", 1), (1, 1), "inside a character");
    }
}
