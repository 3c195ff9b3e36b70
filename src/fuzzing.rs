//! Entry points for the fuzz targets in `fuzz/`, kept in the library so that the committed
//! corpora also run as ordinary tests (`tests/it/fuzz_corpus.rs`) and the targets cannot rot.
//!
//! Each function takes arbitrary bytes from an untrusted source — a `Cookie` header, a store
//! entry, a request path, a config file, a token and a JWKS from the provider — and must never
//! panic. Beyond "no crash", each asserts the property a user relies on: a parsed session id
//! round-trips, an envelope never opens under the wrong key or context, a mapped upstream path
//! never climbs out of its prefix, a config error never echoes an environment value, an ID
//! token that passes the claim checks really carries the expected claims.

use std::collections::HashMap;
use std::path::Path;
use std::sync::OnceLock;

use http::{HeaderMap, HeaderValue, Method, header};
use jsonwebtoken::Algorithm;
use percent_encoding::percent_decode_str;

use crate::config::Config;
use crate::oidc::id_token::{self, Expectations, IdTokenClaims};
use crate::proxy::routes::RouteTable;
use crate::session::seal::Sealer;
use crate::session::{SessionId, SessionRecord, StoreKey, cookie};

/// A value that only the environment holds; no config error may ever show it.
const SECRET: &str = "fuzz-secret-7f3a9c";
const KEY_A: &str = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=";
const KEY_B: &str = "ZmVkY2JhOTg3NjU0MzIxMGZlZGNiYTk4NzY1NDMyMTA=";

/// The config every target that needs one starts from: two services and the route shapes
/// users write (exact, wildcard, rewritten, nested, root-mapped).
const BASE: &str = r#"
server:
  listen: 127.0.0.1:8080
  public_url: https://app.example.com
providers:
  main:
    issuer: https://id.example.com
    client_id: sallyport
    client_secret: ${CLIENT_SECRET}
session:
  keys: ["${KEY_A}", "${KEY_B}"]
services:
  orders:
    url: http://127.0.0.1:7000
  users:
    url: http://127.0.0.1:7001/base
routes:
  - path: /api/orders/*
    service: orders
    upstream_path: /v1/orders/*
  - path: /api/orders/special
    service: orders
    upstream_path: /internal/special
  - path: /api/orders/admin/*
    service: orders
    methods: [GET]
  - path: /api/users/*
    service: users
    upstream_path: /*
  - path: /api/health
    service: users
    auth: none
"#;

fn env() -> HashMap<String, String> {
    HashMap::from([
        ("CLIENT_SECRET".to_owned(), SECRET.to_owned()),
        ("KEY_A".to_owned(), KEY_A.to_owned()),
        ("KEY_B".to_owned(), KEY_B.to_owned()),
        ("OTHER".to_owned(), SECRET.to_owned()),
    ])
}

fn base() -> &'static Config {
    static CONFIG: OnceLock<Config> = OnceLock::new();
    CONFIG.get_or_init(|| {
        Config::parse(BASE, Path::new("/nonexistent"), &env()).expect("the fuzz config is valid")
    })
}

/// A `Cookie` header: finding our cookies, parsing the session id and login states, and
/// stripping ours before a request goes upstream.
pub fn cookie(data: &[u8]) {
    let Ok(value) = HeaderValue::from_bytes(data) else {
        return;
    };
    let names = &base().session.cookie;
    let mut headers = HeaderMap::new();
    headers.append(header::COOKIE, value);
    if let Some(raw) = cookie::find(&headers, &names.name)
        && let Some(id) = SessionId::parse(raw)
    {
        assert_eq!(id.encode(), raw, "a session id has exactly one encoding");
        let _: StoreKey = id.store_key();
    }
    let logins = cookie::logins(&headers, names);
    for (i, (name, _)) in logins.iter().enumerate() {
        assert!(name.starts_with(&names.login_name), "{name}");
        assert!(!logins[..i].iter().any(|(n, _)| n == name), "{name} twice");
    }
    cookie::strip(&mut headers, &[&names.name, &names.login_name]);
    assert!(
        cookie::find(&headers, &names.name).is_none(),
        "session cookie left for upstream"
    );
    assert!(
        cookie::logins(&headers, names).is_empty(),
        "login cookie left for upstream"
    );
}

/// A sealed store entry: the first 32 bytes are the context (store key), the rest the
/// envelope. Arbitrary bytes never open; whatever is sealed opens only under its own context,
/// and not once a byte is flipped.
pub fn envelope(data: &[u8]) {
    static SEALERS: OnceLock<(Sealer, Sealer)> = OnceLock::new();
    let (both, other) = SEALERS.get_or_init(|| {
        let cfg = base();
        (
            Sealer::new(&cfg.session.keys),
            Sealer::new(&cfg.session.keys[1..]),
        )
    });
    let (context, body) = if data.len() >= 32 {
        let (c, b) = data.split_at(32);
        (<[u8; 32]>::try_from(c).expect("32 bytes"), b)
    } else {
        ([0u8; 32], data)
    };
    assert!(
        both.open(&context, body).is_none(),
        "forged envelope opened"
    );

    let sealed = both.seal(&context, body);
    assert_eq!(both.open(&context, &sealed).as_deref(), Some(body));
    assert!(
        other.open(&context, &sealed).is_none(),
        "opened without the sealing key"
    );
    let mut moved = context;
    moved[0] ^= 1;
    assert!(
        both.open(&moved, &sealed).is_none(),
        "opened under another store key"
    );
    let mut tampered = sealed;
    let at = usize::from(data.first().copied().unwrap_or(0)) % tampered.len();
    tampered[at] ^= 0x80;
    assert!(
        both.open(&context, &tampered).is_none(),
        "tampered envelope opened"
    );

    // What `Sessions::load` does with an opened plaintext.
    if let Ok(record) = serde_json::from_slice::<SessionRecord>(body) {
        let again = serde_json::to_vec(&record).expect("a record serialises");
        let back: SessionRecord = serde_json::from_slice(&again).expect("and parses back");
        assert_eq!(back.sub, record.sub);
        assert_eq!(back.expires_at, record.expires_at);
    }
}

/// A request path (as hyper hands it over, still percent-encoded): the matched route, and the
/// upstream path, which must stay below the route's `upstream_path`.
pub fn route(data: &[u8]) {
    static TABLE: OnceLock<RouteTable> = OnceLock::new();
    let table = TABLE.get_or_init(|| RouteTable::new(&base().routes));
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(pq) = text.parse::<http::uri::PathAndQuery>() else {
        return;
    };
    let path = pq.path();
    let Ok(found) = table.find(path) else {
        return;
    };
    // What is refused has no normal form; what passes is its own normal form.
    let normal = crate::proxy::routes::normalize(path).expect("find accepted it");
    assert_eq!(
        crate::proxy::routes::normalize(&normal).as_deref(),
        Ok(normal.as_ref()),
        "normalising is idempotent"
    );
    assert!(!normal.contains(';'), "{normal}");
    let Some(m) = found else {
        return;
    };
    let _ = m.route.allows(&Method::DELETE);
    let up = m.upstream_path.as_str();
    match m.route.path.as_str() {
        "/api/orders/*" => assert!(up == "/v1/orders" || up.starts_with("/v1/orders/"), "{up}"),
        "/api/orders/special" => assert_eq!(up, "/internal/special"),
        "/api/orders/admin/*" => assert!(up.starts_with("/api/orders/admin"), "{up}"),
        "/api/users/*" => assert!(up.starts_with('/'), "{up}"),
        "/api/health" => assert_eq!(up, "/api/health"),
        other => panic!("unexpected route {other}"),
    }
    // However the upstream decodes it (once or twice), no segment climbs.
    let once = percent_decode_str(up).decode_utf8_lossy().into_owned();
    let twice = percent_decode_str(&once).decode_utf8_lossy().into_owned();
    for decoded in [&once, &twice] {
        assert!(
            decoded.split('/').all(|s| s != ".." && s != "."),
            "dot segment in upstream path {up:?}"
        );
        assert!(!decoded.contains('\\'), "backslash in upstream path {up:?}");
    }
}

/// A config file: never panics, and no error message shows a value that only the environment
/// held.
pub fn config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if text.contains(SECRET) {
        // The file itself holds the value; echoing the file's own keys is fine.
        return;
    }
    if let Err(errors) = Config::parse(text, Path::new("/nonexistent"), &env()) {
        for e in &errors.0 {
            let shown = e.to_string();
            assert!(
                !shown.contains(SECRET),
                "config error leaks a secret: {shown}"
            );
        }
    }
}

/// A JWKS document and a compact JWS, separated by the first newline: parsing the key set,
/// reading the header, choosing a key and checking the signature. Arbitrary input never
/// verifies.
pub fn jwt(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (jwks, token) = text.split_once('\n').unwrap_or(("", text));
    let keys = serde_json::from_str::<serde_json::Value>(jwks)
        .map(|doc| crate::oidc::parse_jwks(&doc))
        .unwrap_or_default();
    let _ = crate::oidc::unverified_issuer(token);
    let allowed = [
        Algorithm::RS256,
        Algorithm::PS256,
        Algorithm::ES256,
        Algorithm::ES384,
        Algorithm::EdDSA,
    ];
    let Ok(hint) = id_token::key_hint(token, &allowed) else {
        return;
    };
    assert!(allowed.contains(&hint.alg));
    if let Some(key) = id_token::select_key(&keys, &hint) {
        let decoded = id_token::decode::<serde_json::Value>(token, key, &hint);
        assert!(
            decoded.is_err(),
            "a fuzzed token verified against a fuzzed key"
        );
    }
}

/// The claims of a signature-verified ID token: whatever passes the checks was issued by the
/// configured issuer, for us, now, for this login.
pub fn id_token_claims(data: &[u8]) {
    let Ok(claims) = serde_json::from_slice::<IdTokenClaims>(data) else {
        return;
    };
    let now = 1_800_000_000;
    let hint = id_token::KeyHint {
        kid: None,
        alg: Algorithm::ES256,
        typ: None,
    };
    let expect = Expectations {
        issuer: "https://id.example.com",
        client_id: "sallyport",
        nonce: Some("n-0S6_WzA2Mj"),
        access_token: Some("an-access-token"),
        algorithms: &[Algorithm::ES256],
        now,
        skew: 60,
        not_issued_before: now - 300,
    };
    if let Ok(ok) = id_token::check(claims, &hint, &expect) {
        assert_eq!(ok.iss, expect.issuer);
        assert!(ok.aud.iter().any(|a| a == "sallyport"));
        assert!(ok.aud.len() == 1 || ok.azp.as_deref() == Some("sallyport"));
        assert!(ok.exp > now - 60);
        assert!(ok.iat <= now + 60 && ok.iat >= now - 360);
        assert_eq!(ok.nonce.as_deref(), Some("n-0S6_WzA2Mj"));
    }
}

/// A `return_to` value: whatever is accepted stays on our origin and cannot inject a header.
pub fn return_to(data: &[u8]) {
    static PUBLIC: OnceLock<url::Url> = OnceLock::new();
    let public = PUBLIC.get_or_init(|| base().server.public_url.clone());
    let Ok(raw) = std::str::from_utf8(data) else {
        return;
    };
    let Some(safe) = crate::http::auth::safe_return_to(raw, public) else {
        return;
    };
    assert!(safe.starts_with('/') && !safe.starts_with("//"), "{safe:?}");
    assert!(!safe.contains('\\'), "{safe:?}");
    assert!(
        HeaderValue::from_str(&safe).is_ok(),
        "{safe:?} is not header-safe"
    );
    let joined = public.join(&safe).expect("a relative path joins");
    assert_eq!(
        joined.origin(),
        public.origin(),
        "{safe:?} leaves the origin"
    );
}
