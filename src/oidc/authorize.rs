//! The authorization request (OIDC Core §3.1.2.1) with PKCE S256 (RFC 7636 §4) and the
//! RP-initiated logout URL (OpenID Connect RP-Initiated Logout 1.0 §2).

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest, Sha256};
use url::Url;

/// The S256 code challenge for `verifier` (RFC 7636 §4.2).
pub fn pkce_challenge(verifier: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()))
}

/// What goes into one authorization request.
#[derive(Debug)]
pub struct AuthorizationRequest<'a> {
    /// The provider's `authorization_endpoint`.
    pub endpoint: &'a Url,
    /// Our client id.
    pub client_id: &'a str,
    /// `public_url` + `/auth/callback`.
    pub redirect_uri: &'a str,
    /// Requested scopes.
    pub scopes: &'a [String],
    /// Single-use state, bound to the browser by the login cookie.
    pub state: &'a str,
    /// Single-use nonce, checked in the ID token.
    pub nonce: &'a str,
    /// The PKCE verifier (only its challenge is sent).
    pub code_verifier: &'a str,
    /// Allow-listed pass-through parameters (`prompt`, `login_hint`, …).
    pub extra: &'a [(String, String)],
}

impl AuthorizationRequest<'_> {
    /// Every parameter of the request, in the order sent.
    pub fn params(&self) -> Vec<(String, String)> {
        let mut params: Vec<(String, String)> = [
            ("response_type", "code".to_owned()),
            ("client_id", self.client_id.to_owned()),
            ("redirect_uri", self.redirect_uri.to_owned()),
            ("scope", self.scopes.join(" ")),
            ("state", self.state.to_owned()),
            ("nonce", self.nonce.to_owned()),
            ("code_challenge", pkce_challenge(self.code_verifier)),
            ("code_challenge_method", "S256".to_owned()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        params.extend(self.extra.iter().cloned());
        params
    }

    /// The URL to redirect the browser to, with every parameter in it.
    pub fn url(&self) -> String {
        let mut url = self.endpoint.clone();
        url.query_pairs_mut().extend_pairs(self.params());
        url.into()
    }

    /// The URL to redirect the browser to after the request was pushed (RFC 9126 §4): only
    /// `client_id` and the `request_uri`.
    pub fn pushed_url(&self, request_uri: &str) -> String {
        let mut url = self.endpoint.clone();
        url.query_pairs_mut()
            .append_pair("client_id", self.client_id)
            .append_pair("request_uri", request_uri);
        url.into()
    }
}

/// The provider's end-session URL with `id_token_hint`, `client_id` and
/// `post_logout_redirect_uri`.
pub fn end_session_url(
    endpoint: &Url,
    id_token: &str,
    client_id: &str,
    post_logout_redirect_uri: &str,
) -> String {
    let mut url = endpoint.clone();
    url.query_pairs_mut()
        .append_pair("id_token_hint", id_token)
        .append_pair("client_id", client_id)
        .append_pair("post_logout_redirect_uri", post_logout_redirect_uri);
    url.into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pkce_matches_the_rfc_7636_example() {
        // RFC 7636 Appendix B.
        assert_eq!(
            pkce_challenge("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"),
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        );
    }

    #[test]
    fn the_url_keeps_the_endpoints_query_and_adds_every_parameter() {
        let endpoint = Url::parse("https://idp.example/authorize?tenant=a").unwrap();
        let scopes = vec!["openid".to_owned(), "email".to_owned()];
        let extra = vec![("prompt".to_owned(), "login".to_owned())];
        let url = AuthorizationRequest {
            endpoint: &endpoint,
            client_id: "app",
            redirect_uri: "https://app.example/auth/callback",
            scopes: &scopes,
            state: "st",
            nonce: "no",
            code_verifier: "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk",
            extra: &extra,
        }
        .url();
        let parsed = Url::parse(&url).unwrap();
        let q: std::collections::HashMap<_, _> = parsed.query_pairs().into_owned().collect();
        assert_eq!(q["tenant"], "a");
        assert_eq!(q["response_type"], "code");
        assert_eq!(q["scope"], "openid email");
        assert_eq!(q["code_challenge_method"], "S256");
        assert_eq!(
            q["code_challenge"],
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        );
        assert_eq!(q["prompt"], "login");
        assert!(
            !url.contains("dBjftJeZ"),
            "the verifier itself never leaves"
        );
    }
}
