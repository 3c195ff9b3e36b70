//! Bad ID tokens from a misbehaving provider of our own, key rotation, and a provider that is
//! down when Sallyport starts.

use std::time::Duration;

use reqwest::{Method, StatusCode};

use crate::harness::bad_provider::{BadProvider, Flaw};
use crate::harness::browser::Browser;
use crate::harness::gateway::Gateway;
use crate::harness::upstream::Upstream;
use crate::harness::{eventually, free_port};

async fn login(gateway: &Gateway) -> (StatusCode, serde_json::Value, Browser) {
    let b = Browser::new(&gateway.url);
    let to_provider = b.start_login("return_to=/").await;
    let callback = b.through_provider(&to_provider, "unused").await;
    let page = b
        .fetch(Method::GET, callback.trim_start_matches(&gateway.url))
        .await;
    let body = if page.status == StatusCode::FOUND {
        serde_json::Value::Null
    } else {
        page.json()
    };
    (page.status, body, b)
}

#[tokio::test(flavor = "multi_thread")]
async fn every_kind_of_bad_id_token_is_refused() {
    let provider = BadProvider::start().await;
    let upstream = Upstream::start().await;
    let gateway = Gateway::start_default(&provider.issuer, &upstream.url).await;

    let (status, _, b) = login(&gateway).await;
    assert_eq!(status, StatusCode::FOUND, "a good token logs in");
    let session = b.fetch(Method::GET, "/api/auth/session").await.json();
    assert_eq!(session["user"]["sub"], "mallory-test");
    assert_eq!(
        session["user"]["email"], "test@example.com",
        "userinfo claims are merged"
    );

    // RFC 9207: discovery promises `iss` in the authorization response, so one without it is
    // refused before the code is redeemed (a mix-up attack would leave it out).
    provider.set_flaw(Flaw::NoIssParameter);
    let (status, body, b) = login(&gateway).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["error"], "invalid_issuer");
    assert!(b.cookie("sallyport").is_none());

    for flaw in [
        Flaw::WrongSignature,
        Flaw::AlgNone,
        Flaw::WrongIssuer,
        Flaw::WrongAudience,
        Flaw::Expired,
        Flaw::WrongNonce,
        Flaw::UnpublishedKid,
    ] {
        provider.set_flaw(flaw);
        let (status, body, b) = login(&gateway).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{flaw:?}: {body}");
        assert_eq!(body["error"], "invalid_id_token", "{flaw:?}");
        assert!(
            b.cookie("sallyport").is_none(),
            "{flaw:?} created a session"
        );
        assert_eq!(
            b.fetch(Method::GET, "/api/auth/session").await.status,
            StatusCode::UNAUTHORIZED
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rotated_key_is_fetched_once_and_unknown_kids_do_not_hammer_the_provider() {
    let provider = BadProvider::start().await;
    let upstream = Upstream::start().await;
    let gateway = Gateway::start_default(&provider.issuer, &upstream.url).await;
    assert_eq!(login(&gateway).await.0, StatusCode::FOUND);
    assert_eq!(login(&gateway).await.0, StatusCode::FOUND);
    let (discovery, jwks) = provider.counts();
    assert_eq!((discovery, jwks), (1, 1), "discovery and JWKS are cached");

    // The provider rotates: the cached JWKS lacks the new kid, so it is fetched once more.
    provider.rotate("k2");
    assert_eq!(
        login(&gateway).await.0,
        StatusCode::FOUND,
        "a token signed with the rotated key is accepted"
    );
    assert_eq!(provider.counts().1, 2);
    assert_eq!(login(&gateway).await.0, StatusCode::FOUND);
    assert_eq!(provider.counts().1, 2, "the new key is cached");

    // ID tokens with a kid nobody publishes (a misbehaving provider): refused, and at most
    // one JWKS fetch per second for them.
    provider.set_flaw(Flaw::UnpublishedKid);
    let started = std::time::Instant::now();
    for _ in 0..10 {
        assert_eq!(login(&gateway).await.0, StatusCode::UNAUTHORIZED);
    }
    let fetched = provider.counts().1 - 2;
    let allowed = started.elapsed().as_secs() + 1;
    assert!(
        fetched <= allowed,
        "{fetched} re-fetches in {:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn forged_kids_cannot_use_up_the_fetch_a_login_after_a_rotation_needs() {
    let provider = BadProvider::start().await;
    let upstream = Upstream::start().await;
    let (gateway, _) = Gateway::start_with(&provider.issuer, &upstream.url, |opts| {
        opts.provider_yaml = "    bearer_audiences: [orders-api]".into();
        // Every forged token reaches the key lookup: no rate limit stops them first.
        opts.server_yaml = "  rate_limit: { limit: 100000, window: 1m }".into();
        opts.extra_yaml = "  - path: /api/m2m/*\n    service: echo\n    upstream_path: /echo/*\n    auth: session_or_bearer\n".into();
    })
    .await;
    assert_eq!(login(&gateway).await.0, StatusCode::FOUND);
    let before = provider.counts().1;

    // 1,000 bearers and logout tokens with random kids, 50 at a time, from anyone.
    let http = reqwest::Client::new();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let claims = serde_json::json!({"iss": provider.issuer, "aud": "orders-api", "sub": "x", "exp": now + 300, "iat": now});
    let forged: Vec<String> = (0..1000)
        .map(|i| provider.sign_with_unknown_kid(&claims, &format!("forged-{i}")))
        .collect();
    for chunk in forged.chunks(50) {
        let calls = chunk.iter().enumerate().map(|(i, token)| {
            let req = if i % 2 == 0 {
                http.get(format!("{}/api/m2m/x", gateway.url))
                    .bearer_auth(token)
            } else {
                http.post(format!("{}/auth/backchannel-logout", gateway.url))
                    .form(&[("logout_token", token.as_str())])
            };
            async move { req.send().await.unwrap().status() }
        });
        for status in futures_util::future::join_all(calls).await {
            assert!(
                status == StatusCode::UNAUTHORIZED || status == StatusCode::BAD_REQUEST,
                "{status}"
            );
        }
    }
    let spent = provider.counts().1 - before;
    assert!(spent <= 2, "1,000 forged kids cost {spent} JWKS fetches");

    // The provider rotates its key 200 ms later: the next login still gets its fetch.
    tokio::time::sleep(Duration::from_millis(200)).await;
    provider.rotate("rotated");
    let (status, body, _) = login(&gateway).await;
    assert_eq!(status, StatusCode::FOUND, "{body}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_hanging_provider_costs_each_request_one_wait_not_one_per_caller() {
    let provider = BadProvider::start().await;
    // Discovery hangs for 2 s, then fails: nothing is cached yet.
    provider.set_discovery_failing(Some(Duration::from_secs(2)));
    let upstream = Upstream::start().await;
    let gateway = Gateway::start_default(&provider.issuer, &upstream.url).await;
    let started = std::time::Instant::now();
    let logins = (0..20).map(|_| {
        let b = Browser::new(&gateway.url);
        async move { b.fetch(Method::GET, "/auth/login").await }
    });
    for page in futures_util::future::join_all(logins).await {
        assert_eq!(
            page.status,
            StatusCode::SERVICE_UNAVAILABLE,
            "{}",
            page.body
        );
        assert_eq!(page.json()["error"], "provider_unavailable");
    }
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(6),
        "20 callers waited {took:?}: the failure was not shared"
    );
    assert!(
        provider.counts().0 <= 3,
        "{} discovery requests for 20 callers",
        provider.counts().0
    );
    // Back up: after the backoff, logins work again.
    provider.set_discovery_failing(None);
    let back = eventually(Duration::from_secs(40), || async {
        let page = Browser::new(&gateway.url)
            .fetch(Method::GET, "/auth/login")
            .await;
        (page.status == StatusCode::FOUND).then_some(())
    })
    .await;
    assert!(back.is_some(), "logins work once the provider is back");
}

#[tokio::test(flavor = "multi_thread")]
async fn sallyport_starts_while_the_provider_is_down_and_becomes_ready() {
    let provider_port = free_port();
    let upstream = Upstream::start().await;
    let gateway =
        Gateway::start_default(&format!("http://127.0.0.1:{provider_port}"), &upstream.url).await;
    let b = Browser::new(&gateway.url);

    let health = b.fetch(Method::GET, "/auth/health").await;
    assert_eq!(health.status, StatusCode::OK);
    let ready = b.fetch(Method::GET, "/auth/ready").await;
    assert_eq!(ready.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(ready.json()["providers"]["main"], false);
    let login = b.fetch(Method::GET, "/auth/login").await;
    assert_eq!(login.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(login.json()["error"], "provider_unavailable");

    let _provider = BadProvider::start_on(provider_port).await;
    let became_ready = eventually(Duration::from_secs(10), || async {
        (b.fetch(Method::GET, "/auth/ready").await.status == StatusCode::OK).then_some(())
    })
    .await;
    assert!(became_ready.is_some(), "ready once the provider answers");
    assert_eq!(
        b.fetch(Method::GET, "/auth/login").await.status,
        StatusCode::FOUND
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_userinfo_subject_that_differs_from_the_id_token_is_refused() {
    let provider = BadProvider::start().await;
    let upstream = Upstream::start().await;
    let gateway = Gateway::start_default(&provider.issuer, &upstream.url).await;
    provider.set_flaw(Flaw::UserinfoOtherSubject);
    let (status, body, b) = login(&gateway).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["error"], "userinfo_mismatch");
    assert!(b.cookie("sallyport").is_none());
}

#[tokio::test(flavor = "multi_thread")]
async fn discovery_and_keys_are_fetched_again_after_their_ttl() {
    let provider = BadProvider::start().await;
    let upstream = Upstream::start().await;
    let (gateway, _) = Gateway::start_with(&provider.issuer, &upstream.url, |opts| {
        opts.provider_yaml = "    discovery_ttl: 1s".into();
    })
    .await;
    assert_eq!(login(&gateway).await.0, StatusCode::FOUND);
    assert_eq!(provider.counts(), (1, 1));
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(login(&gateway).await.0, StatusCode::FOUND);
    assert_eq!(
        provider.counts(),
        (2, 2),
        "both caches expired and were refilled once"
    );
}
