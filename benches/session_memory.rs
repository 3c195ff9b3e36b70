//! Memory per session in the memory store: RSS growth after creating sessions through the
//! real `Sessions::create` (sealing, both logout indexes), minus the token bytes they hold.
//!
//! Then it opens the first `OPENED_CAPACITY` of them as requests would, and reports what each
//! record kept opened costs on top (active sessions only; the cache is bounded).
//!
//! `cargo bench --bench session_memory` creates 100 000 sessions and prints one JSON line;
//! under `cargo test --all-targets` it creates 1 000, so it builds and runs in CI.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use sallyport::clock::Clock;
use sallyport::config::Config;
use sallyport::secret::{AccessToken, IdToken, RefreshToken};
use sallyport::session::SessionRecord;
use sallyport::session::manager::{OPENED_CAPACITY, Sessions};
use sallyport::store::memory::MemoryStore;

fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").expect("Linux /proc");
    let pages: u64 = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
    pages * 4096
}

fn record(i: usize) -> SessionRecord {
    // Token sizes as oidc-provider issues them: JWT access and ID tokens, opaque refresh token.
    let jwt = |len: usize| format!("eyJhbGciOiJFUzI1NiJ9.{}{i:08}.sig", "x".repeat(len));
    let claims = serde_json::json!({
        "sub": format!("user-{i}"), "name": "Jane Doe", "email": format!("user{i}@example.com"),
    });
    SessionRecord {
        v: 1,
        provider: "main".into(),
        sub: format!("user-{i}"),
        sid: Some(format!("sid-{i:012}")),
        claims: claims.as_object().unwrap().clone(),
        id_token: IdToken::new(jwt(700)),
        access_token: AccessToken::new(jwt(800)),
        access_expires_at: Some(4_000_000_000),
        refresh_token: Some(RefreshToken::new(format!("{}{i:08}", "r".repeat(35)))),
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

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let count = if full { 100_000 } else { 1_000 };
    let yaml = "server: { listen: 127.0.0.1:8080, public_url: https://app.example.com }\n\
        providers: { main: { issuer: https://id.example.com, client_id: app, client_secret: s } }\n\
        session: { keys: [\"MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=\"] }\n";
    let config = Config::parse(yaml, Path::new("/"), &HashMap::<String, String>::new())
        .expect("bench config is valid");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let store = Arc::new(MemoryStore::new(100));
    let sessions = Sessions::new(Arc::clone(&store) as _, &config.session, Clock::default());

    let records: Vec<SessionRecord> = (0..count).map(record).collect();
    let token_bytes: usize = records
        .iter()
        .map(|r| {
            r.access_token.expose().len()
                + r.id_token.expose().len()
                + r.refresh_token.as_ref().map_or(0, |t| t.expose().len())
        })
        .sum();
    let before = rss_bytes();
    let ids = rt.block_on(async {
        let mut ids = Vec::with_capacity(count);
        for r in &records {
            ids.push(sessions.create(r).await.unwrap());
        }
        ids
    });
    let after = rss_bytes();
    // Requests keep the records of recently used sessions opened: what each of those costs.
    let opened = count.min(OPENED_CAPACITY);
    let keys: Vec<_> = ids[..opened].iter().map(|id| id.store_key()).collect();
    drop(ids);
    let before_open = rss_bytes();
    rt.block_on(async {
        for key in &keys {
            assert!(sessions.load(key).await.unwrap().is_some());
        }
    });
    let per_opened = (rss_bytes() - before_open) as f64 / opened as f64;
    assert_eq!(store.len(), count);
    let per_session = (after - before) as f64 / count as f64;
    let tokens = token_bytes as f64 / count as f64;
    println!(
        "{{\"sessions\":{count},\"rss_growth_bytes\":{},\"per_session_bytes\":{per_session:.0},\"token_bytes_per_session\":{tokens:.0},\"overhead_per_session_bytes\":{:.0},\"opened_records\":{opened},\"per_opened_record_bytes\":{per_opened:.0}}}",
        after - before,
        per_session - tokens
    );
}
