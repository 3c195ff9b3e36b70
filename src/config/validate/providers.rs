//! The `providers` section: issuers, client credentials, scopes and ID token algorithms.

use super::*;

/// `providers.<name>.discovery_ttl`: how long discovery metadata is kept.
const DEFAULT_DISCOVERY_TTL: Duration = Duration::from_secs(3600);
/// `providers.<name>.clock_skew`: tolerance for `iat`/`exp`/`nbf`.
const DEFAULT_CLOCK_SKEW: Duration = Duration::from_secs(60);
/// `providers.<name>.introspection_cache`: how long an active introspection result is reused.
const DEFAULT_INTROSPECTION_CACHE: Duration = Duration::from_secs(30);
/// `providers.<name>.client_auth`.
const DEFAULT_CLIENT_AUTH: &str = "client_secret_basic";

const DEFAULT_SCOPES: [&str; 4] = ["openid", "profile", "email", "offline_access"];
/// FAPI 2.0 Security Profile §5.4.1: the only signature algorithms it allows.
const FAPI2_ALGS: [jsonwebtoken::Algorithm; 3] = [
    jsonwebtoken::Algorithm::PS256,
    jsonwebtoken::Algorithm::ES256,
    jsonwebtoken::Algorithm::EdDSA,
];
const DEFAULT_ALGS: [jsonwebtoken::Algorithm; 9] = [
    jsonwebtoken::Algorithm::RS256,
    jsonwebtoken::Algorithm::RS384,
    jsonwebtoken::Algorithm::RS512,
    jsonwebtoken::Algorithm::PS256,
    jsonwebtoken::Algorithm::PS384,
    jsonwebtoken::Algorithm::PS512,
    jsonwebtoken::Algorithm::ES256,
    jsonwebtoken::Algorithm::ES384,
    jsonwebtoken::Algorithm::EdDSA,
];

impl Validator {
    pub(super) fn providers(
        &mut self,
        raw: Option<indexmap::IndexMap<String, RawProvider>>,
        signing_keys: &std::sync::Arc<crate::keys::Keys>,
    ) -> Option<Vec<ProviderConfig>> {
        let raw = match raw {
            Some(raw) if !raw.is_empty() => raw,
            _ => {
                self.err(
                    "providers",
                    "at least one provider is required (issuer, client_id, client_secret)",
                );
                return None;
            }
        };
        let mut out = Vec::new();
        for (name, p) in raw {
            let key = |field: &str| format!("providers.{name}.{field}");
            let issuer = self
                .required(&key("issuer"), p.issuer.as_ref())
                .and_then(|issuer| match Url::parse(issuer) {
                    Ok(u) if u.scheme() == "https" || (u.scheme() == "http" && is_loopback(&u)) => {
                        if u.query().is_some() || u.fragment().is_some() {
                            self.err(&key("issuer"), "an issuer has no query or fragment");
                            None
                        } else {
                            Some(issuer.to_owned())
                        }
                    }
                    Ok(_) => {
                        self.err(
                            &key("issuer"),
                            "expected an https URL (plain http only for a provider on localhost)",
                        );
                        None
                    }
                    Err(_) => {
                        self.err(
                            &key("issuer"),
                            "expected a URL such as https://login.example.com/realms/app",
                        );
                        None
                    }
                });
            let registration = p.registration.map(|r| RegistrationConfig {
                initial_access_token: match r.initial_access_token {
                    None => InitialAccessToken::None,
                    Some(t) => match t.strip_prefix(super::UNSET_MARK) {
                        Some(name) => InitialAccessToken::Unset(name.to_owned()),
                        None if t.is_empty() => {
                            self.err(
                                &key("registration.initial_access_token"),
                                "is empty; give the token the provider issued for registering clients, or remove the key for open registration",
                            );
                            InitialAccessToken::None
                        }
                        None => InitialAccessToken::Token(ClientSecret::new(t)),
                    },
                },
            });
            let client_id = match (&p.client_id, &registration) {
                (Some(_), Some(_)) => {
                    self.err(
                        &key("client_id"),
                        "registration registers Sallyport and learns its client id: remove client_id (and client_secret), or remove registration to use the client registered as client_id",
                    );
                    None
                }
                (Some(id), None) => Some(ClientId::fixed(id.as_str())),
                (None, Some(_)) => Some(ClientId::default()),
                (None, None) => {
                    self.err(
                        &key("client_id"),
                        "is required: the client id registered for Sallyport at the provider (or let Sallyport register itself: registration: { initial_access_token: ${DCR_IAT} }, with client_auth: private_key_jwt and signing_keys)",
                    );
                    None
                }
            };
            let audience = match p.assertion_audience.as_deref() {
                None | Some("issuer") => Some(AssertionAudience::Issuer),
                Some("token_endpoint") => Some(AssertionAudience::TokenEndpoint),
                Some(_) => {
                    self.err(
                        &key("assertion_audience"),
                        "expected issuer (the default) or token_endpoint",
                    );
                    None
                }
            };
            let profile = match p.profile.as_deref() {
                None => Profile::None,
                Some("fapi2") => Profile::Fapi2,
                Some(_) => {
                    self.err(
                        &key("profile"),
                        "expected fapi2 (FAPI 2.0 Security Profile), or no profile",
                    );
                    Profile::None
                }
            };
            let fapi2 = profile == Profile::Fapi2;
            // What the profile asks for, a setting that says otherwise is refused: the
            // profile is a promise to the provider (and the auditor), not a default.
            let mut contradicts = |field: &str, set: bool, asked: &str| {
                if fapi2 && set {
                    self.err(
                        &key(field),
                        format!("profile: fapi2 asks for {asked}; remove {field} (the profile sets it) or the profile"),
                    );
                }
            };
            contradicts(
                "client_auth",
                p.client_auth
                    .as_deref()
                    .is_some_and(|a| a != "private_key_jwt"),
                "client_auth: private_key_jwt",
            );
            contradicts(
                "assertion_audience",
                p.assertion_audience
                    .as_deref()
                    .is_some_and(|a| a != "issuer"),
                "the issuer as the client assertion's audience",
            );
            contradicts(
                "par",
                p.par.as_deref().is_some_and(|v| v != "required"),
                "pushed authorization requests (par: required)",
            );
            contradicts(
                "dpop",
                p.dpop == Some(false),
                "sender-constrained tokens (dpop: true)",
            );
            // A registered client authenticates with Sallyport's keys: no secret to store.
            let default_auth = if registration.is_some() || fapi2 {
                "private_key_jwt"
            } else {
                DEFAULT_CLIENT_AUTH
            };
            if registration.is_some()
                && p.client_auth
                    .as_deref()
                    .is_some_and(|a| a != "private_key_jwt")
            {
                self.err(
                    &key("client_auth"),
                    "a registered client authenticates with private_key_jwt (its jwks_uri is Sallyport's /.well-known/jwks.json): remove client_auth or set it to private_key_jwt",
                );
            }
            let client_auth = match p.client_auth.as_deref().unwrap_or(default_auth) {
                "client_secret_basic" => Some(ClientAuth::ClientSecretBasic),
                "client_secret_post" => Some(ClientAuth::ClientSecretPost),
                "private_key_jwt" if !signing_keys.can_sign() => {
                    self.err(
                        &key("client_auth"),
                        "private_key_jwt signs with Sallyport's first signing key, and signing_keys lists none; add one: signing_keys: [{ file: ./keys/sallyport.pem, kid: \"1\" }] (sallyport keys generate --alg ES256 --out ./keys/sallyport.pem)",
                    );
                    None
                }
                "private_key_jwt" => {
                    audience.map(|audience| ClientAuth::PrivateKeyJwt { audience })
                }
                _ => {
                    self.err(
                        &key("client_auth"),
                        "expected one of client_secret_basic, client_secret_post, private_key_jwt",
                    );
                    None
                }
            };
            if p.assertion_audience.is_some()
                && !matches!(client_auth, Some(ClientAuth::PrivateKeyJwt { .. }))
            {
                self.err(
                    &key("assertion_audience"),
                    "applies only to client_auth: private_key_jwt; remove it",
                );
            }
            let par = match p.par.as_deref() {
                None if fapi2 => Par::Required,
                None | Some("auto") => Par::Auto,
                Some("required") => Par::Required,
                Some("off" | "false") => Par::Off,
                Some(_) => {
                    self.err(&key("par"), "expected auto (the default), required or off");
                    Par::Auto
                }
            };
            let client_secret = match client_auth {
                // No secret: the key is the credential.
                Some(ClientAuth::PrivateKeyJwt { .. }) => {
                    if p.client_secret.is_some() {
                        self.warn(
                            &key("client_secret"),
                            "is not used with private_key_jwt; remove it from the config and the environment",
                        );
                    }
                    Some(ClientSecret::new(""))
                }
                _ => self
                    .required(&key("client_secret"), p.client_secret.as_ref())
                    .map(ClientSecret::new),
            };
            let scopes: Vec<String> = p
                .scopes
                .unwrap_or_else(|| DEFAULT_SCOPES.iter().map(|s| s.to_string()).collect());
            if !scopes.iter().any(|s| s == "openid") {
                self.err(&key("scopes"), "must include openid");
            }
            for (i, param) in p.login_params.iter().enumerate() {
                const RESERVED: [&str; 9] = [
                    "client_id",
                    "redirect_uri",
                    "response_type",
                    "scope",
                    "state",
                    "nonce",
                    "code_challenge",
                    "code_challenge_method",
                    "return_to",
                ];
                if RESERVED.contains(&param.as_str()) {
                    self.err(
                        &format!("providers.{name}.login_params[{i}]"),
                        "this parameter is set by Sallyport itself and cannot be passed through",
                    );
                }
            }
            let mut id_token_algs = Vec::new();
            match p.id_token_algs {
                None if fapi2 => id_token_algs.extend(FAPI2_ALGS),
                None => id_token_algs.extend(DEFAULT_ALGS),
                Some(algs) => {
                    for (i, alg) in algs.iter().enumerate() {
                        match alg.parse::<jsonwebtoken::Algorithm>() {
                            Ok(a) if fapi2 && !FAPI2_ALGS.contains(&a) => self.err(
                                &format!("providers.{name}.id_token_algs[{i}]"),
                                "profile: fapi2 allows only PS256, ES256 and EdDSA",
                            ),
                            Ok(a) if DEFAULT_ALGS.contains(&a) => id_token_algs.push(a),
                            _ => self.err(
                                &format!("providers.{name}.id_token_algs[{i}]"),
                                "expected an asymmetric JWS algorithm: RS256, RS384, RS512, PS256, PS384, PS512, ES256, ES384 or EdDSA",
                            ),
                        }
                    }
                }
            }
            let discovery_ttl = self.positive_duration(
                &key("discovery_ttl"),
                p.discovery_ttl.as_ref(),
                DEFAULT_DISCOVERY_TTL,
            );
            let clock_skew = self.duration(
                &key("clock_skew"),
                p.clock_skew.as_ref(),
                DEFAULT_CLOCK_SKEW,
            );
            let introspection_cache = self.positive_duration(
                &key("introspection_cache"),
                p.introspection_cache.as_ref(),
                DEFAULT_INTROSPECTION_CACHE,
            );
            if let (Some(issuer), Some(client_id), Some(client_secret), Some(client_auth)) =
                (issuer, client_id, client_secret, client_auth)
            {
                out.push(ProviderConfig {
                    name,
                    issuer,
                    client_id,
                    registration,
                    client_secret,
                    signing_keys: std::sync::Arc::clone(signing_keys),
                    client_auth,
                    par,
                    dpop: p.dpop.unwrap_or(fapi2),
                    profile,
                    scopes,
                    login_params: p.login_params,
                    userinfo: p.userinfo.unwrap_or(true),
                    discovery_ttl,
                    id_token_algs,
                    clock_skew,
                    bearer_audiences: p.bearer_audiences,
                    introspection_cache,
                });
            }
        }
        // An ID token's audience is the client id: a bearer audience equal to any client id
        // would let an ID token (the SPA's, or Sallyport's) pass as an API access token — the
        // common setup where an API and its client share one registration.
        for p in &out {
            for (i, audience) in p.bearer_audiences.iter().enumerate() {
                if let Some(client) = out.iter().find(|c| c.client_id.as_str() == audience) {
                    self.err(
                        &format!("providers.{}.bearer_audiences[{i}]", p.name),
                        format!(
                            "is the client id of provider {}: ID tokens carry it as their audience, so they would pass as access tokens. Give the API its own audience (an application ID URI, a resource) at the provider",
                            client.name
                        ),
                    );
                }
            }
        }
        Some(out)
    }
}
