//! Criterion micro-benchmarks of the per-request pieces of the proxy path: cookie → session id
//! → store key, opening a sealed session, the whole memory-store lookup, route matching over
//! 200 routes, rewriting a browser's headers for the upstream, and authorization: one
//! embedded Cedar decision, and building the AuthZEN question and the digest that keys the
//! decision caches.
//!
//! `cargo bench --bench hot_path`; `cargo test --all-targets` runs each once, so they build.

use std::collections::HashMap;
use std::hint::black_box;
use std::path::Path;
use std::sync::Arc;

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use http::{HeaderMap, HeaderValue};
use sallyport::clock::Clock;
use sallyport::config::Config;
use sallyport::proxy::headers::{Claims, IdentityHeaders, Injected, to_upstream};
use sallyport::proxy::routes::RouteTable;
use sallyport::session::manager::{Lookup, Sessions};
use sallyport::session::seal::Sealer;
use sallyport::session::{SessionId, SessionRecord, cookie};
use sallyport::store::memory::MemoryStore;

const KEY: &str = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=";

/// A config with 200 routes over 20 services, as a large deployment might have.
fn config() -> Config {
    let mut yaml = String::from(
        "server: { listen: 127.0.0.1:8080, public_url: https://app.example.com }\n\
         providers: { main: { issuer: https://id.example.com, client_id: app, client_secret: s } }\n\
         session: { keys: [\"${KEY}\"] }\nservices:\n",
    );
    for s in 0..20 {
        yaml.push_str(&format!(
            "  svc{s}: {{ url: http://127.0.0.1:{} }}\n",
            7000 + s
        ));
    }
    yaml.push_str("routes:\n");
    for r in 0..200 {
        yaml.push_str(&format!(
            "  - {{ path: /api/area{r}/items/*, service: svc{}, upstream_path: /v1/items/* }}\n",
            r % 20
        ));
    }
    let env = HashMap::from([("KEY".to_owned(), KEY.to_owned())]);
    Config::parse(&yaml, Path::new("/"), &env).expect("bench config is valid")
}

/// A session as a real login leaves it: JWT-sized tokens, a few profile claims.
fn record() -> SessionRecord {
    let jwt = |len: usize| format!("eyJhbGciOiJFUzI1NiJ9.{}.sig", "x".repeat(len));
    let claims = serde_json::json!({
        "sub": "248289761001", "name": "Jane Doe", "email": "jane@example.com",
        "preferred_username": "jane", "email_verified": true
    });
    SessionRecord {
        v: 1,
        provider: "main".into(),
        sub: "248289761001".into(),
        sid: Some("08a5019c-17e1-4977-8f42-65a12843ea02".into()),
        claims: claims.as_object().unwrap().clone(),
        id_token: sallyport::secret::IdToken::new(jwt(700)),
        access_token: sallyport::secret::AccessToken::new(jwt(800)),
        access_expires_at: Some(4_000_000_000),
        refresh_token: Some(sallyport::secret::RefreshToken::new("r".repeat(43))),
        id_expires_at: None,
        service_tokens: Default::default(),
        created_at: 1_800_000_000,
        last_seen: 4_000_000_000,
        expires_at: 4_000_000_000,
        csrf_token: "k".repeat(43),
        dpop_key: None,
        client_address: None,
        user_agent: None,
    }
}

/// The headers a browser sends with a `fetch()` to the API.
fn browser_headers(cookie_value: &str) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (k, v) in [
        ("host", "app.example.com"),
        (
            "user-agent",
            "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/148.0 Safari/537.36",
        ),
        ("accept", "application/json"),
        ("accept-language", "en-GB,en;q=0.9"),
        ("accept-encoding", "gzip, deflate, br, zstd"),
        ("referer", "https://app.example.com/orders"),
        ("sec-fetch-site", "same-origin"),
        ("sec-fetch-mode", "cors"),
        ("sec-fetch-dest", "empty"),
        (
            "sec-ch-ua",
            "\"Chromium\";v=\"148\", \"Not.A/Brand\";v=\"24\"",
        ),
        ("sec-ch-ua-mobile", "?0"),
        ("sec-ch-ua-platform", "\"Linux\""),
        ("connection", "keep-alive"),
    ] {
        h.insert(k, HeaderValue::from_static(v));
    }
    h.insert(
        "cookie",
        HeaderValue::from_str(&format!(
            "_ga=GA1.1.1234567890.1700000000; theme=dark; __Host-sallyport={cookie_value}; lang=en"
        ))
        .unwrap(),
    );
    h
}

fn benches(c: &mut Criterion) {
    let cfg = config();
    let id = SessionId::generate();
    let headers = browser_headers(&id.encode());

    c.bench_function("cookie_to_store_key", |b| {
        b.iter(|| {
            let value = cookie::find(black_box(&headers), "__Host-sallyport").unwrap();
            SessionId::parse(value).unwrap().store_key()
        });
    });

    let sealer = Sealer::new(&cfg.session.keys);
    let key = id.store_key();
    let plain = serde_json::to_vec(&record()).unwrap();
    let sealed = sealer.seal(key.as_bytes(), &plain);
    c.bench_function("unseal_session", |b| {
        b.iter(|| {
            let plain = sealer.open(key.as_bytes(), black_box(&sealed)).unwrap();
            serde_json::from_slice::<SessionRecord>(&plain).unwrap()
        });
    });

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let store = Arc::new(MemoryStore::new(100));
    let sessions = Sessions::new(store, &cfg.session, Clock::default());
    let live = rt.block_on(sessions.create(&record())).unwrap();
    let live_headers = browser_headers(&live.encode());
    c.bench_function("session_lookup_memory", |b| {
        b.to_async(&rt).iter(|| async {
            match sessions.lookup(black_box(&live_headers)).await.unwrap() {
                Lookup::Found(s) => s,
                other => panic!("{other:?}"),
            }
        });
    });

    let table = RouteTable::new(&cfg.routes);
    c.bench_function("route_match_200_last", |b| {
        b.iter(|| {
            table
                .find(black_box("/api/area199/items/42/lines"))
                .unwrap()
                .unwrap()
        });
    });
    c.bench_function("route_match_200_miss", |b| {
        b.iter(|| table.find(black_box("/api/unknown/x")).unwrap().is_none());
    });

    let host = HeaderValue::from_static("app.example.com");
    let upstream_host = HeaderValue::from_static("orders.internal:7000");
    let correlation_id = HeaderValue::from_static("0193f1d27c4e7a519b8e1c2d3e4f5a6b");
    let token = "t".repeat(900);
    let identity_headers = sallyport::config::default_identity_headers();
    let claims = serde_json::json!({"email": "jane@example.com", "email_verified": true});
    c.bench_function("header_rewrite", |b| {
        b.iter_batched(
            || headers.clone(),
            |mut h| {
                to_upstream(
                    &mut h,
                    &["__Host-sallyport", "__Host-sallyport-login"],
                    false,
                    &Injected {
                        bearer: Some(&token),
                        dpop: None,
                        identity: Some(IdentityHeaders {
                            headers: &identity_headers,
                            claims: Claims {
                                sub: "248289761001",
                                issuer: "https://login.example.com",
                                claims: claims.as_object(),
                            },
                        }),
                        strip: &[],
                        correlation_id: &correlation_id,
                        client_ip: "203.0.113.7".parse().unwrap(),
                        proto: "https",
                        host: &host,
                        upstream_host: &upstream_host,
                    },
                );
                h
            },
            BatchSize::SmallInput,
        );
    });
}

/// The question a route asks about `record`'s user, built as admission builds it.
fn question<'a>(
    subject: &'a sallyport::config::SubjectConfig,
    record: &'a SessionRecord,
    action: &'a str,
    id: &'a str,
) -> sallyport::authz::Question<'a> {
    use sallyport::authz::question::{Context, Named, Resource};
    use std::borrow::Cow;
    sallyport::authz::Question {
        subject: sallyport::authz::Subject::of(subject, record).expect("a sub"),
        action: Named {
            name: Cow::Borrowed(action),
        },
        resource: Resource {
            kind: Cow::Borrowed("order"),
            id: Cow::Borrowed(id),
        },
        context: Context::of(record, "203.0.113.7".parse().unwrap(), 1_800_000_000),
    }
}

fn authz(c: &mut Criterion) {
    let policies = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/pdp/policies.cedar"
    ))
    .expect("the test policies");
    let engine = sallyport::authz::Embedded::parse(&policies, "policies.cedar").unwrap();
    let subject = sallyport::config::SubjectConfig::default();
    let mut record = record();
    record
        .claims
        .insert("roles".into(), serde_json::json!(["viewer", "billing"]));
    c.bench_function("cedar_decision", |b| {
        b.iter(|| {
            let q = question(&subject, &record, black_box("delete"), "42");
            engine.decide(&q).permit
        });
    });
    c.bench_function("authz_question_digest", |b| {
        b.iter(|| question(&subject, &record, black_box("read"), "42").digest());
    });
}

/// What a `dpop: true` service adds to each request: a proof signed with the session's key
/// (the key comes out of the opened, cached session record; loading it is counted too, as a
/// record opened anew does).
fn dpop(c: &mut Criterion) {
    use sallyport::oidc::dpop::DpopKey;
    let key = DpopKey::generate();
    let token = "a".repeat(43);
    c.bench_function("dpop_proof", |b| {
        b.iter(|| {
            key.proof(
                "GET",
                black_box("http://127.0.0.1:7000/v1/orders/42"),
                Some(&token),
                None,
                1_800_000_000,
            )
        });
    });
    let stored = serde_json::to_string(&key).unwrap();
    c.bench_function("dpop_key_load", |b| {
        b.iter(|| serde_json::from_str::<DpopKey>(black_box(&stored)).unwrap());
    });
}

criterion_group!(hot_path, benches, authz, dpop);
criterion_main!(hot_path);
