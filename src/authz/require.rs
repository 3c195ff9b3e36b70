//! `routes[].require`: claims the session must hold, checked without a policy engine.

use serde_json::Value;

/// `routes[].require`: every listed claim must hold one of its accepted values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Require {
    /// Claim name, and the values of which the session's claim must hold at least one.
    pub claims: Vec<(String, Vec<String>)>,
}

impl Require {
    /// The claims a session must keep for this check.
    pub fn claim_names(&self) -> impl Iterator<Item = &str> {
        self.claims.iter().map(|(name, _)| name.as_str())
    }

    /// Whether `claims` meet the requirement: for each listed claim, the session's value (a
    /// string, or an array of strings) is, or contains, one of the accepted values. A missing
    /// claim, or one of another type, does not.
    pub fn is_met(&self, claims: &serde_json::Map<String, Value>) -> bool {
        self.claims.iter().all(|(name, accepted)| {
            let held = |v: &str| accepted.iter().any(|a| a == v);
            match claims.get(name) {
                Some(Value::String(s)) => held(s),
                Some(Value::Array(items)) => items.iter().filter_map(Value::as_str).any(held),
                _ => false,
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn require(claims: &[(&str, &[&str])]) -> Require {
        Require {
            claims: claims
                .iter()
                .map(|(n, v)| ((*n).to_owned(), v.iter().map(|s| (*s).to_owned()).collect()))
                .collect(),
        }
    }

    fn claims(v: Value) -> serde_json::Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => unreachable!("an object"),
        }
    }

    #[test]
    fn every_claim_must_hold_one_of_its_values() {
        let admin = require(&[("roles", &["admin", "owner"])]);
        assert!(admin.is_met(&claims(serde_json::json!({"roles": ["viewer", "owner"]}))));
        assert!(admin.is_met(&claims(serde_json::json!({"roles": "admin"}))));
        assert!(!admin.is_met(&claims(serde_json::json!({"roles": ["viewer"]}))));
        assert!(
            !admin.is_met(&claims(serde_json::json!({"roles": "administrator"}))),
            "whole values only"
        );
        assert!(!admin.is_met(&claims(serde_json::json!({}))), "missing");
        assert!(
            !admin.is_met(&claims(serde_json::json!({"roles": {"admin": true}}))),
            "another type"
        );
        assert!(
            !admin.is_met(&claims(serde_json::json!({"roles": [["admin"]]}))),
            "nested"
        );
        let both = require(&[("roles", &["admin"]), ("groups", &["ops"])]);
        assert!(both.is_met(&claims(
            serde_json::json!({"roles": ["admin"], "groups": ["ops"]})
        )));
        assert!(!both.is_met(&claims(
            serde_json::json!({"roles": ["admin"], "groups": ["dev"]})
        )));
    }
}
