//! A small OpenID provider of our own that signs bad ID tokens on purpose: wrong signature,
//! `alg: none`, wrong `iss`/`aud`, expired, wrong `nonce`, an unpublished `kid`, and key
//! rotation. It also counts discovery and JWKS fetches.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair};
use axum::Router;
use axum::extract::{Query, State};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::json;

/// What is wrong with the next ID token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flaw {
    /// Nothing.
    None,
    /// Signed by a key that is not the published one (same `kid`).
    WrongSignature,
    /// `alg: none`, no signature.
    AlgNone,
    /// `iss` of another provider.
    WrongIssuer,
    /// `aud` of another client.
    WrongAudience,
    /// `exp` an hour ago.
    Expired,
    /// A nonce that was not sent.
    WrongNonce,
    /// Signed with a key whose `kid` is never published.
    UnpublishedKid,
    /// A valid ID token, but userinfo names another subject.
    UserinfoOtherSubject,
    /// The authorization response lacks the `iss` parameter that discovery promises
    /// (RFC 9207 `authorization_response_iss_parameter_supported`).
    NoIssParameter,
}

struct Key {
    kid: String,
    enc: EncodingKey,
    jwk: Jwk,
}

fn new_key(kid: &str) -> Key {
    let pair = EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING).unwrap();
    let enc = EncodingKey::from_ec_der(pair.to_pkcs8v1().unwrap().as_ref());
    let mut jwk = Jwk::from_encoding_key(&enc, Algorithm::ES256).unwrap();
    jwk.common.key_id = Some(kid.to_owned());
    Key {
        kid: kid.to_owned(),
        enc,
        jwk,
    }
}

struct Inner {
    issuer: String,
    flaw: Flaw,
    /// When set, discovery answers `503` after this delay.
    discovery_failing: Option<std::time::Duration>,
    published: Vec<Key>,
    signing: usize,
    nonces: HashMap<String, String>,
}

/// Counters of what the gateway fetched.
#[derive(Default)]
pub struct Counts {
    /// Discovery documents served.
    pub discovery: AtomicU64,
    /// JWKS documents served.
    pub jwks: AtomicU64,
}

#[derive(Clone)]
struct Shared {
    inner: Arc<Mutex<Inner>>,
    counts: Arc<Counts>,
}

/// A running bad provider; stopped when dropped.
pub struct BadProvider {
    /// `http://127.0.0.1:PORT`.
    pub issuer: String,
    shared: Shared,
    task: tokio::task::JoinHandle<()>,
}

impl BadProvider {
    /// Starts on a free port.
    pub async fn start() -> BadProvider {
        Self::start_on(0).await
    }

    /// Starts on `port` (0: any).
    pub async fn start_on(port: u16) -> BadProvider {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
            .await
            .unwrap();
        let issuer = format!("http://{}", listener.local_addr().unwrap());
        let shared = Shared {
            inner: Arc::new(Mutex::new(Inner {
                issuer: issuer.clone(),
                flaw: Flaw::None,
                discovery_failing: None,
                published: vec![new_key("k1")],
                signing: 0,
                nonces: HashMap::new(),
            })),
            counts: Arc::default(),
        };
        let app = Router::new()
            .route("/.well-known/openid-configuration", get(discovery))
            .route("/jwks", get(jwks))
            .route("/authorize", get(authorize))
            .route("/token", post(token))
            .route("/userinfo", get(userinfo))
            .with_state(shared.clone());
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        BadProvider {
            issuer,
            shared,
            task,
        }
    }

    /// Makes the next ID tokens carry `flaw`.
    pub fn set_flaw(&self, flaw: Flaw) {
        self.shared.inner.lock().unwrap().flaw = flaw;
    }

    /// Makes discovery answer `503` after `delay` (a provider that hangs, then fails), or
    /// work again with `None`.
    pub fn set_discovery_failing(&self, delay: Option<std::time::Duration>) {
        self.shared.inner.lock().unwrap().discovery_failing = delay;
    }

    /// A JWT with `claims` under a `kid` that is never published (signed by a key of its own).
    pub fn sign_with_unknown_kid(&self, claims: &serde_json::Value, kid: &str) -> String {
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(kid.to_owned());
        jsonwebtoken::encode(&header, claims, &new_key(kid).enc).unwrap()
    }

    /// Publishes a new key `kid` beside the old ones and signs with it from now on.
    pub fn rotate(&self, kid: &str) {
        let mut inner = self.shared.inner.lock().unwrap();
        inner.published.push(new_key(kid));
        inner.signing = inner.published.len() - 1;
    }

    /// A JWT (logout token, access token…) with `claims`, signed with the current key.
    pub fn sign(&self, claims: &serde_json::Value, typ: Option<&str>) -> String {
        let inner = self.shared.inner.lock().unwrap();
        let key = &inner.published[inner.signing];
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(key.kid.clone());
        header.typ = typ.map(str::to_owned);
        jsonwebtoken::encode(&header, claims, &key.enc).unwrap()
    }

    /// A JWT signed by a key that is not the provider's.
    pub fn forged(&self, claims: &serde_json::Value) -> String {
        let kid = self.shared.inner.lock().unwrap().published[0].kid.clone();
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(kid);
        jsonwebtoken::encode(&header, claims, &new_key("forger").enc).unwrap()
    }

    /// Discovery and JWKS fetch counts.
    pub fn counts(&self) -> (u64, u64) {
        (
            self.shared.counts.discovery.load(Ordering::SeqCst),
            self.shared.counts.jwks.load(Ordering::SeqCst),
        )
    }
}

impl Drop for BadProvider {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn discovery(State(s): State<Shared>) -> Response {
    s.counts.discovery.fetch_add(1, Ordering::SeqCst);
    let (issuer, failing) = {
        let inner = s.inner.lock().unwrap();
        (inner.issuer.clone(), inner.discovery_failing)
    };
    if let Some(delay) = failing {
        tokio::time::sleep(delay).await;
        return http::StatusCode::SERVICE_UNAVAILABLE.into_response();
    }
    axum::Json(json!({
        "issuer": issuer,
        "authorization_endpoint": format!("{issuer}/authorize"),
        "token_endpoint": format!("{issuer}/token"),
        "jwks_uri": format!("{issuer}/jwks"),
        "userinfo_endpoint": format!("{issuer}/userinfo"),
        "response_types_supported": ["code"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["ES256"],
        "authorization_response_iss_parameter_supported": true,
    }))
    .into_response()
}

async fn jwks(State(s): State<Shared>) -> Response {
    s.counts.jwks.fetch_add(1, Ordering::SeqCst);
    let keys = s
        .inner
        .lock()
        .unwrap()
        .published
        .iter()
        .map(|k| k.jwk.clone())
        .collect();
    axum::Json(JwkSet { keys }).into_response()
}

async fn userinfo(State(s): State<Shared>) -> Response {
    let sub = match s.inner.lock().unwrap().flaw {
        Flaw::UserinfoOtherSubject => "someone-else",
        _ => "mallory-test",
    };
    axum::Json(json!({ "sub": sub, "email": "test@example.com" })).into_response()
}

async fn authorize(State(s): State<Shared>, Query(q): Query<HashMap<String, String>>) -> Response {
    let code = format!("code-{}", uuid::Uuid::new_v4().simple());
    let (issuer, flaw) = {
        let mut inner = s.inner.lock().unwrap();
        inner.nonces.insert(code.clone(), q["nonce"].clone());
        (inner.issuer.clone(), inner.flaw)
    };
    let mut back = url::Url::parse(&q["redirect_uri"]).unwrap();
    back.query_pairs_mut()
        .append_pair("code", &code)
        .append_pair("state", &q["state"]);
    if flaw != Flaw::NoIssParameter {
        back.query_pairs_mut().append_pair("iss", &issuer);
    }
    Redirect::to(back.as_str()).into_response()
}

async fn token(
    State(s): State<Shared>,
    axum::Form(form): axum::Form<HashMap<String, String>>,
) -> Response {
    let inner = s.inner.lock().unwrap();
    let Some(nonce) = inner.nonces.get(&form["code"]).cloned() else {
        return (
            http::StatusCode::BAD_REQUEST,
            axum::Json(json!({"error": "invalid_grant"})),
        )
            .into_response();
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let mut claims = json!({
        "iss": inner.issuer, "sub": "mallory-test", "aud": "sallyport",
        "exp": now + 300, "iat": now, "nonce": nonce, "name": "Test User",
    });
    let key = &inner.published[inner.signing];
    let mut header = Header::new(Algorithm::ES256);
    header.kid = Some(key.kid.clone());
    let id_token = match inner.flaw {
        Flaw::None | Flaw::UserinfoOtherSubject | Flaw::NoIssParameter => {
            jsonwebtoken::encode(&header, &claims, &key.enc).unwrap()
        }
        Flaw::WrongSignature => jsonwebtoken::encode(&header, &claims, &new_key("x").enc).unwrap(),
        Flaw::AlgNone => {
            let h = URL_SAFE_NO_PAD.encode(json!({"alg": "none", "kid": key.kid}).to_string());
            let c = URL_SAFE_NO_PAD.encode(claims.to_string());
            format!("{h}.{c}.")
        }
        Flaw::WrongIssuer => {
            claims["iss"] = json!("http://127.0.0.1:1/evil");
            jsonwebtoken::encode(&header, &claims, &key.enc).unwrap()
        }
        Flaw::WrongAudience => {
            claims["aud"] = json!("another-client");
            jsonwebtoken::encode(&header, &claims, &key.enc).unwrap()
        }
        Flaw::Expired => {
            claims["exp"] = json!(now - 3600);
            claims["iat"] = json!(now - 7200);
            jsonwebtoken::encode(&header, &claims, &key.enc).unwrap()
        }
        Flaw::WrongNonce => {
            claims["nonce"] = json!("a-nonce-that-was-never-sent");
            jsonwebtoken::encode(&header, &claims, &key.enc).unwrap()
        }
        Flaw::UnpublishedKid => {
            let hidden = new_key("never-published");
            let mut h = Header::new(Algorithm::ES256);
            h.kid = Some(hidden.kid.clone());
            jsonwebtoken::encode(&h, &claims, &hidden.enc).unwrap()
        }
    };
    axum::Json(json!({
        "access_token": format!("at-{}", uuid::Uuid::new_v4().simple()),
        "token_type": "Bearer",
        "expires_in": 300,
        "id_token": id_token,
    }))
    .into_response()
}
