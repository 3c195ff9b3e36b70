//! Bearer tokens that machine clients send themselves (`auth: session_or_bearer` routes):
//! JWTs checked against the provider's JWKS with the same key choice and algorithm allow-list
//! as ID tokens, and opaque tokens checked by introspection (RFC 7662) with the same claim
//! checks.

use serde::Deserialize;

use super::id_token::IdTokenError;

/// The claims Sallyport reads from a client's bearer token (a JWT's, or an introspection
/// answer's).
#[derive(Debug, Deserialize)]
pub struct BearerClaims {
    /// Issuer.
    pub iss: String,
    /// Audience(s).
    #[serde(default, deserialize_with = "super::id_token::one_or_many")]
    pub aud: Vec<String>,
    /// Expiry (required).
    pub exp: i64,
    /// Not before.
    #[serde(default)]
    pub nbf: Option<i64>,
    /// The client or user the token stands for.
    #[serde(default)]
    pub sub: Option<String>,
    /// Present in ID tokens, never in access tokens.
    #[serde(default)]
    pub nonce: Option<serde_json::Value>,
    /// ID tokens' hashes of the access token and code: never in an access token.
    #[serde(default)]
    pub at_hash: Option<serde_json::Value>,
    /// See `at_hash`.
    #[serde(default)]
    pub c_hash: Option<serde_json::Value>,
    /// Logout tokens and other security event tokens carry `events`.
    #[serde(default)]
    pub events: Option<serde_json::Value>,
}

/// Why a bearer token was refused (all of them answer `401 invalid_token`).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BearerError {
    /// Signature, algorithm or key problems.
    #[error(transparent)]
    Token(#[from] IdTokenError),
    /// Issued by no configured provider.
    #[error("bearer token from an unknown issuer")]
    UnknownIssuer,
    /// Names none of the configured audiences.
    #[error("bearer token audience mismatch")]
    AudienceMismatch,
    /// Expired, or not yet valid.
    #[error("bearer token outside its validity")]
    NotValidNow,
    /// An ID token (it carries a nonce or a token hash) offered as an API token.
    #[error("an ID token is not an access token")]
    IdToken,
    /// Another kind of JWT (a logout token, a security event, a DPoP proof) by its `typ` or
    /// claims, or an introspected token that is not an access token (a refresh token).
    #[error("not an access token")]
    NotAnAccessToken,
    /// The provider says the token is not active (revoked, expired, unknown).
    #[error("bearer token not active at the provider")]
    Inactive,
}

/// JWT `typ` headers an access token may carry: RFC 9068's, and the plain `JWT` many providers
/// put on every token. Anything else (`logout+jwt`, `secevent+jwt`, `dpop+jwt`, …) is not one.
const ACCESS_TOKEN_TYPES: [&str; 3] = ["at+jwt", "application/at+jwt", "jwt"];

/// Checks the claims of a signature-verified bearer JWT with header `typ`.
///
/// # Errors
/// The first check that fails.
pub fn check(
    claims: &BearerClaims,
    typ: Option<&str>,
    issuer: &str,
    audiences: &[String],
    now: i64,
    skew: i64,
) -> Result<(), BearerError> {
    if typ.is_some_and(|t| {
        !ACCESS_TOKEN_TYPES
            .iter()
            .any(|allowed| t.eq_ignore_ascii_case(allowed))
    }) || claims.events.is_some()
    {
        return Err(BearerError::NotAnAccessToken);
    }
    check_claims(claims, issuer, audiences, now, skew)
}

fn check_claims(
    claims: &BearerClaims,
    issuer: &str,
    audiences: &[String],
    now: i64,
    skew: i64,
) -> Result<(), BearerError> {
    if claims.iss != issuer {
        return Err(BearerError::UnknownIssuer);
    }
    if !claims.aud.iter().any(|a| audiences.contains(a)) {
        return Err(BearerError::AudienceMismatch);
    }
    if claims.exp <= now - skew || claims.nbf.is_some_and(|nbf| nbf > now + skew) {
        return Err(BearerError::NotValidNow);
    }
    if claims.nonce.is_some() || claims.at_hash.is_some() || claims.c_hash.is_some() {
        return Err(BearerError::IdToken);
    }
    Ok(())
}

/// An introspection answer (RFC 7662 §2.2).
#[derive(Debug, Deserialize)]
pub struct Introspection {
    /// Whether the token is active.
    pub active: bool,
    /// Issuer, when the provider says.
    #[serde(default)]
    pub iss: Option<String>,
    /// Audience(s).
    #[serde(default, deserialize_with = "super::id_token::one_or_many")]
    pub aud: Vec<String>,
    /// Expiry.
    #[serde(default)]
    pub exp: Option<i64>,
    /// Not before.
    #[serde(default)]
    pub nbf: Option<i64>,
    /// Subject.
    #[serde(default)]
    pub sub: Option<String>,
    /// The client the token was issued to.
    #[serde(default)]
    pub client_id: Option<String>,
    /// What the token is: an access token must not be confused with a refresh token.
    #[serde(default)]
    pub token_type: Option<String>,
}

/// Checks an introspection answer as a bearer JWT's claims are checked, and gives them.
/// A token without `exp` is trusted for `max_age` from `now` (the provider said it is active).
///
/// # Errors
/// The first check that fails.
pub fn check_introspected(
    answer: Introspection,
    issuer: &str,
    audiences: &[String],
    now: i64,
    skew: i64,
    max_age: i64,
) -> Result<BearerClaims, BearerError> {
    if !answer.active {
        return Err(BearerError::Inactive);
    }
    // oidc-provider and others introspect refresh tokens too: only access tokens pass.
    if answer.token_type.as_deref().is_some_and(|t| {
        !t.eq_ignore_ascii_case("access_token") && !t.eq_ignore_ascii_case("bearer")
    }) {
        return Err(BearerError::NotAnAccessToken);
    }
    let claims = BearerClaims {
        iss: answer.iss.unwrap_or_else(|| issuer.to_owned()),
        aud: answer.aud,
        exp: answer.exp.unwrap_or(now + max_age),
        nbf: answer.nbf,
        sub: answer.sub.or(answer.client_id),
        nonce: None,
        at_hash: None,
        c_hash: None,
        events: None,
    };
    check_claims(&claims, issuer, audiences, now, skew)?;
    Ok(claims)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ISS: &str = "https://id.example.com";

    fn audiences() -> Vec<String> {
        vec!["orders-api".to_owned()]
    }

    fn claims(extra: serde_json::Value) -> BearerClaims {
        let mut c =
            serde_json::json!({"iss": ISS, "aud": "orders-api", "exp": 2_000, "sub": "svc"});
        if let serde_json::Value::Object(extra) = extra {
            c.as_object_mut().unwrap().extend(extra);
        }
        serde_json::from_value(c).unwrap()
    }

    #[test]
    fn other_kinds_of_jwt_are_not_access_tokens() {
        let ok = claims(serde_json::json!({}));
        for typ in [
            None,
            Some("at+jwt"),
            Some("application/at+JWT"),
            Some("JWT"),
        ] {
            assert_eq!(
                check(&ok, typ, ISS, &audiences(), 1_000, 0),
                Ok(()),
                "{typ:?}"
            );
        }
        for typ in ["logout+jwt", "secevent+jwt", "dpop+jwt", "id_token+jwt"] {
            assert_eq!(
                check(&ok, Some(typ), ISS, &audiences(), 1_000, 0),
                Err(BearerError::NotAnAccessToken),
                "{typ}"
            );
        }
        let logout = claims(
            serde_json::json!({"events": {"http://schemas.openid.net/event/backchannel-logout": {}}}),
        );
        assert_eq!(
            check(&logout, None, ISS, &audiences(), 1_000, 0),
            Err(BearerError::NotAnAccessToken)
        );
        for id_claim in ["nonce", "at_hash", "c_hash"] {
            let id = claims(serde_json::json!({ id_claim: "x" }));
            assert_eq!(
                check(&id, None, ISS, &audiences(), 1_000, 0),
                Err(BearerError::IdToken),
                "{id_claim}"
            );
        }
    }

    fn answer(v: serde_json::Value) -> Introspection {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn introspection_answers_get_the_same_checks() {
        let good = serde_json::json!({"active": true, "aud": ["orders-api"], "exp": 2_000, "client_id": "m2m", "token_type": "access_token"});
        let c = check_introspected(answer(good.clone()), ISS, &audiences(), 1_000, 0, 300).unwrap();
        assert_eq!(
            c.sub.as_deref(),
            Some("m2m"),
            "a client's own token stands for the client"
        );
        assert_eq!(c.iss, ISS);
        let with = |k: &str, v: serde_json::Value| {
            let mut a = good.clone();
            a[k] = v;
            answer(a)
        };
        let refused = [
            (with("active", false.into()), BearerError::Inactive),
            (
                with("token_type", "refresh_token".into()),
                BearerError::NotAnAccessToken,
            ),
            (
                with("aud", "billing-api".into()),
                BearerError::AudienceMismatch,
            ),
            (with("exp", 999.into()), BearerError::NotValidNow),
            (
                with("iss", "https://evil.example".into()),
                BearerError::UnknownIssuer,
            ),
        ];
        for (a, expected) in refused {
            assert_eq!(
                check_introspected(a, ISS, &audiences(), 1_000, 0, 300).unwrap_err(),
                expected
            );
        }
        let no_aud = answer(serde_json::json!({"active": true, "exp": 2_000}));
        assert_eq!(
            check_introspected(no_aud, ISS, &audiences(), 1_000, 0, 300).unwrap_err(),
            BearerError::AudienceMismatch,
            "a token that names no audience is not for this API"
        );
    }
}
