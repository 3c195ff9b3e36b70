//! Several Sallyport instances on one real redis-server: shared sessions, logout everywhere,
//! one refresh across instances, a lock holder that dies, and failing closed while Redis is
//! down.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use sallyport::session::SessionId;

use crate::harness::browser::Browser;
use crate::harness::eventually;
use crate::harness::gateway::Gateway;
use crate::harness::redis::Redis;
use crate::login::Stack;

/// Instance A (in the stack) and instance B, both on `redis`, each Redis call bounded by
/// `timeout`. Tests not about timeouts use a generous one: on a loaded 2-core machine, 200
/// concurrent calls can wait longer than 1 s for Redis, and Sallyport then fails closed (503).
async fn two_instances(redis: &Redis, timeout: &str) -> (Stack, Gateway) {
    two_instances_with(redis, timeout, |_| {}).await
}

/// [`two_instances`], with more gateway options.
async fn two_instances_with(
    redis: &Redis,
    timeout: &str,
    more: impl FnOnce(&mut crate::harness::gateway::GatewayOptions),
) -> (Stack, Gateway) {
    let session_yaml = format!(
        "  store: redis\n  redis: {{ url: \"{}\", key_prefix: \"it:\", timeout: {timeout} }}",
        redis.url
    );
    let stack = Stack::start_with(
        |p| p.access_token_ttl = 120,
        |g| {
            g.session_yaml = session_yaml;
            g.refresh_before = "60s";
            more(g);
        },
    )
    .await;
    let reserved = crate::harness::reserve_port();
    let mut opts = stack.opts.clone();
    opts.port = reserved.local_addr().unwrap().port();
    let b = Gateway::start_on(&opts, Some(reserved)).await;
    (stack, b)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_session_made_on_one_instance_works_on_another_and_logout_reaches_both() {
    let redis = Redis::start().await;
    let (stack, gw_b) = two_instances(&redis, "5s").await;
    let a = stack.browser();
    a.login("alice", "/").await;
    let b = Browser::with_jar(&gw_b.url, Arc::clone(&a.jar));
    let page = b.fetch(Method::GET, "/api/echo/on-b").await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    assert_eq!(page.json()["headers"]["x-auth-request-user"][0], "alice");

    let csrf = b.csrf_token().await;
    let logout = a
        .fetch_with(
            Method::POST,
            "/auth/logout",
            &[("origin", &stack.gateway.url), ("x-csrf-token", &csrf)],
        )
        .await;
    assert_eq!(
        logout.status,
        StatusCode::OK,
        "the CSRF token from B is the session's, valid on A"
    );
    // The very next request through B is refused.
    let page = b.fetch(Method::GET, "/api/echo/after-logout").await;
    assert_eq!(page.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test(flavor = "multi_thread")]
async fn two_hundred_calls_over_two_instances_cause_exactly_one_refresh() {
    let redis = Redis::start().await;
    let (stack, gw_b) = two_instances(&redis, "5s").await;
    let a = stack.browser();
    a.login("alice", "/").await;
    let b = Browser::with_jar(&gw_b.url, Arc::clone(&a.jar));
    let (old_access, _, _) = stack.tokens_of(&a).await;

    for round in 1..=2u64 {
        stack.gateway.clock.advance(Duration::from_secs(90));
        gw_b.clock.advance(Duration::from_secs(90));
        stack.upstream.seen.lock().unwrap().clear();
        let calls: Vec<_> = (0..200)
            .map(|i| {
                let browser = if i % 2 == 0 { a.clone() } else { b.clone() };
                tokio::spawn(async move {
                    let page = browser
                        .fetch(Method::GET, &format!("/api/echo/n/{i}"))
                        .await;
                    if page.status != StatusCode::OK {
                        eprintln!("call {i}: {} {}", page.status, page.body);
                    }
                    page.status
                })
            })
            .collect();
        let mut statuses = std::collections::BTreeMap::new();
        for call in calls {
            *statuses.entry(call.await.unwrap().as_u16()).or_insert(0) += 1;
        }
        assert_eq!(
            statuses.get(&200),
            Some(&200),
            "every call succeeds: {statuses:?}"
        );
        assert_eq!(
            stack.provider.grants("refresh_token").await,
            round,
            "one refresh per round across both instances"
        );
        assert_eq!(
            stack.provider.grant_errors("refresh_token").await,
            0,
            "no refresh token used twice"
        );
        let (access, _, _) = stack.tokens_of(&a).await;
        assert_ne!(access, old_access);
        let bearers: HashSet<String> = stack
            .upstream
            .seen
            .lock()
            .unwrap()
            .iter()
            .cloned()
            .collect();
        assert_eq!(
            bearers,
            HashSet::from([format!("Bearer {access}")]),
            "all 200 calls carried the new token"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_slow_provider_never_lets_two_instances_redeem_one_refresh_token() {
    let redis = Redis::start().await;
    // Discovery is fetched again inside the refresh (it lives 1 s), and every provider call
    // takes 8 s: the refresh holds the lock longer than the lock's own 15 s lifetime.
    let (stack, gw_b) = two_instances_with(&redis, "5s", |g| {
        g.provider_yaml = "    discovery_ttl: 1s".into();
    })
    .await;
    let a = stack.browser();
    a.login("alice", "/").await;
    let b = Browser::with_jar(&gw_b.url, Arc::clone(&a.jar));
    stack
        .provider
        .set_faults(&[("discovery_delay_ms", "8000"), ("token_delay_ms", "8000")])
        .await;
    stack.gateway.clock.advance(Duration::from_secs(90));
    gw_b.clock.advance(Duration::from_secs(90));

    let started = Instant::now();
    let on_a = tokio::spawn({
        let a = a.clone();
        async move { a.fetch(Method::GET, "/api/echo/a").await }
    });
    // B asks once A holds the lock, and keeps waiting for A's refresh.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let on_b = b.fetch(Method::GET, "/api/echo/b").await;
    let on_a = on_a.await.unwrap();
    let took = started.elapsed();
    stack.provider.set_faults(&[]).await;
    assert!(
        took > Duration::from_secs(15),
        "the refresh outlived the lock's first lifetime ({took:?})"
    );
    assert_eq!(on_a.status, StatusCode::OK, "{}", on_a.body);
    assert_eq!(on_b.status, StatusCode::OK, "{}", on_b.body);
    assert_eq!(stack.provider.grants("refresh_token").await, 1);
    assert_eq!(
        stack.provider.grant_errors("refresh_token").await,
        0,
        "the rotated refresh token was never redeemed twice"
    );
    assert_eq!(
        a.fetch(Method::GET, "/api/auth/session").await.status,
        StatusCode::OK,
        "the session lives"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_lock_left_by_a_dead_instance_delays_the_refresh_only_until_it_expires() {
    let redis = Redis::start().await;
    let (stack, gw_b) = two_instances(&redis, "5s").await;
    let a = stack.browser();
    a.login("alice", "/").await;
    // An instance took the refresh lock and died: the lock stays until its expiry.
    let id = SessionId::parse(&a.cookie("sallyport").unwrap()).unwrap();
    let hex = id.store_key().to_hex();
    let mut conn = redis.conn().await;
    let _: () = redis::cmd("SET")
        .arg(format!("it:lock:{hex}"))
        .arg("dead-instance")
        .arg("PX")
        .arg(1500)
        .query_async(&mut conn)
        .await
        .unwrap();
    stack.gateway.clock.advance(Duration::from_secs(130));
    gw_b.clock.advance(Duration::from_secs(130));
    let started = Instant::now();
    let page = a.fetch(Method::GET, "/api/echo/x").await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(1000) && waited < Duration::from_secs(5),
        "waited {waited:?}"
    );
    assert_eq!(stack.provider.grants("refresh_token").await, 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn while_redis_is_down_requests_fail_closed_and_sessions_return_with_it() {
    let mut redis = Redis::start().await;
    let (stack, _gw_b) = two_instances(&redis, "300ms").await;
    let a = stack.browser();
    a.login("alice", "/").await;
    assert_eq!(
        a.fetch(Method::GET, "/api/echo/x").await.status,
        StatusCode::OK
    );

    redis.stop();
    let started = Instant::now();
    let page = a.fetch(Method::GET, "/api/echo/x").await;
    let to_503 = started.elapsed();
    assert_eq!(
        page.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        page.body
    );
    assert_eq!(page.json()["error"], "store_unavailable");
    assert!(to_503 < Duration::from_secs(2), "503 after {to_503:?}");
    let session = a.fetch(Method::GET, "/api/auth/session").await;
    assert_eq!(
        session.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "no answer is taken for 'logged out'"
    );
    let ready = a.fetch(Method::GET, "/auth/ready").await;
    assert_eq!(ready.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(ready.json()["store"], false);
    assert_eq!(
        a.fetch(Method::GET, "/auth/health").await.status,
        StatusCode::OK,
        "the process itself is fine"
    );
    println!("redis down: 503 after {to_503:?}");

    redis.resume().await;
    let started = Instant::now();
    let back = eventually(Duration::from_secs(15), || async {
        (a.fetch(Method::GET, "/api/echo/again").await.status == StatusCode::OK).then_some(())
    })
    .await;
    assert!(back.is_some(), "Sallyport recovers by itself");
    println!(
        "redis back: sessions work again after {:?}",
        started.elapsed()
    );
    assert_eq!(
        a.fetch(Method::GET, "/auth/ready").await.status,
        StatusCode::OK
    );
    assert_eq!(
        a.fetch(Method::GET, "/api/auth/session").await.json()["user"]["sub"],
        "alice",
        "the session Redis kept is valid"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_redis_that_stops_answering_costs_at_most_the_configured_timeout() {
    let redis = Redis::start().await;
    let (stack, _gw_b) = two_instances(&redis, "300ms").await;
    let a = stack.browser();
    a.login("alice", "/").await;
    assert_eq!(
        a.fetch(Method::GET, "/api/echo/x").await.status,
        StatusCode::OK
    );

    redis.freeze(true);
    let started = Instant::now();
    let page = a.fetch(Method::GET, "/api/echo/x").await;
    let to_503 = started.elapsed();
    redis.freeze(false);
    assert_eq!(
        page.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        page.body
    );
    assert_eq!(page.json()["error"], "store_unavailable");
    assert!(
        to_503 < Duration::from_millis(1500),
        "a hung Redis held the request {to_503:?}"
    );
    println!("redis frozen: 503 after {to_503:?}");
    let back = eventually(Duration::from_secs(10), || async {
        (a.fetch(Method::GET, "/api/echo/y").await.status == StatusCode::OK).then_some(())
    })
    .await;
    assert!(back.is_some(), "answers again once Redis does");
}
