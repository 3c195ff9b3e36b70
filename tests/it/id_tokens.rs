//! Bad ID tokens from a misbehaving provider of our own, key rotation, and a provider that is
//! down when Sallyport starts.

use std::time::Duration;

use reqwest::{Method, StatusCode};

use crate::harness::bad_provider::{BadProvider, Flaw};
use crate::harness::browser::Browser;
use crate::harness::gateway::{Gateway, GatewayOptions};
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

    // Tokens with a kid nobody publishes: refused, and no JWKS fetch storm.
    provider.set_flaw(Flaw::UnpublishedKid);
    for _ in 0..5 {
        assert_eq!(login(&gateway).await.0, StatusCode::UNAUTHORIZED);
    }
    assert_eq!(
        provider.counts().1,
        2,
        "re-fetches after an unknown kid are rate-limited"
    );
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
    let reserved = crate::harness::reserve_port();
    let mut opts = GatewayOptions::new(
        reserved.local_addr().unwrap().port(),
        &provider.issuer,
        &upstream.url,
    );
    opts.provider_yaml = "    discovery_ttl: 1s".into();
    let gateway = Gateway::start_on(&opts, Some(reserved)).await;
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
