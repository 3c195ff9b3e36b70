//! Ending sessions from outside: OIDC Back-Channel Logout from the real provider and from signed
//! tokens of our own, and `sallyport sessions revoke` for operators.

use std::process::Command;
use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::harness::bad_provider::BadProvider;
use crate::harness::browser::Browser;
use crate::harness::eventually;
use crate::harness::gateway::Gateway;
use crate::harness::redis::Redis;
use crate::harness::upstream::Upstream;
use crate::login::Stack;

#[tokio::test(flavor = "multi_thread")]
async fn the_providers_back_channel_logout_ends_that_session_only() {
    let stack = Stack::start_with(|p| p.backchannel = true, |_| {}).await;
    let (first, second, bob) = (stack.browser(), stack.browser(), stack.browser());
    first.login("alice", "/").await;
    second.login("alice", "/").await;
    bob.login("bob", "/").await;

    // Alice ends her first provider session at the provider itself (not through Sallyport).
    let page = first
        .http
        .get(format!("{}/session/end", stack.provider.issuer))
        .send()
        .await
        .unwrap();
    let html = page.text().await.unwrap();
    let xsrf = html
        .split("name=\"xsrf\" value=\"")
        .nth(1)
        .and_then(|s| s.split('"').next())
        .unwrap_or_else(|| panic!("no xsrf on the end-session page: {html}"));
    let confirm = first
        .http
        .post(format!("{}/session/end/confirm", stack.provider.issuer))
        .form(&[("xsrf", xsrf), ("logout", "yes")])
        .send()
        .await
        .unwrap();
    assert!(
        confirm.status().is_redirection() || confirm.status().is_success(),
        "{}",
        confirm.status()
    );

    let ended = eventually(Duration::from_secs(5), || async {
        (first.fetch(Method::GET, "/api/echo/x").await.status == StatusCode::UNAUTHORIZED)
            .then_some(())
    })
    .await;
    assert!(
        ended.is_some(),
        "the back-channel logout ended the session of that provider session"
    );
    assert_eq!(
        second.fetch(Method::GET, "/api/echo/x").await.status,
        StatusCode::OK,
        "another provider session of alice lives on"
    );
    assert_eq!(
        bob.fetch(Method::GET, "/api/echo/x").await.status,
        StatusCode::OK
    );
}

async fn post_logout_token(gateway: &Gateway, token: &str) -> StatusCode {
    reqwest::Client::new()
        .post(format!(
            "http://127.0.0.1:{}/auth/backchannel-logout",
            gateway.url.rsplit(':').next().unwrap()
        ))
        .form(&[("logout_token", token)])
        .send()
        .await
        .unwrap()
        .status()
}

#[tokio::test(flavor = "multi_thread")]
async fn logout_tokens_are_validated_and_single_use() {
    let provider = BadProvider::start().await;
    let upstream = Upstream::start().await;
    let gateway = Gateway::start_default(&provider.issuer, &upstream.url).await;
    let login = || async {
        let b = Browser::new(&gateway.url);
        let to_provider = b.start_login("return_to=/").await;
        let callback = b.through_provider(&to_provider, "unused").await;
        assert_eq!(b.get(&callback).await.status, StatusCode::FOUND);
        b
    };
    let (one, two) = (login().await, login().await);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let good = json!({
        "iss": provider.issuer, "aud": "sallyport", "iat": now, "jti": "logout-1",
        "sub": "mallory-test",
        "events": { "http://schemas.openid.net/event/backchannel-logout": {} },
    });
    let with = |field: &str, value: serde_json::Value| {
        let mut c = good.clone();
        c[field] = value;
        c
    };
    let without = |field: &str| {
        let mut c = good.clone();
        c.as_object_mut().unwrap().remove(field);
        c
    };
    for (what, token) in [
        ("forged signature", provider.forged(&good)),
        (
            "wrong audience",
            provider.sign(&with("aud", json!("another-client")), Some("logout+jwt")),
        ),
        (
            "wrong issuer",
            provider.sign(&with("iss", json!("http://127.0.0.1:1")), None),
        ),
        ("no event", provider.sign(&without("events"), None)),
        ("a nonce", provider.sign(&with("nonce", json!("n")), None)),
        ("no jti", provider.sign(&without("jti"), None)),
        ("neither sub nor sid", provider.sign(&without("sub"), None)),
        (
            "an hour old",
            provider.sign(&with("iat", json!(now - 3600)), None),
        ),
        ("an ID token type", provider.sign(&good, Some("JWT"))),
        ("not a JWT", "not-a-jwt".to_owned()),
    ] {
        assert_eq!(
            post_logout_token(&gateway, &token).await,
            StatusCode::BAD_REQUEST,
            "{what}"
        );
        assert_eq!(
            one.fetch(Method::GET, "/api/echo/x").await.status,
            StatusCode::OK,
            "{what} ended a session"
        );
    }

    let token = provider.sign(&good, Some("logout+jwt"));
    assert_eq!(post_logout_token(&gateway, &token).await, StatusCode::OK);
    for b in [&one, &two] {
        assert_eq!(
            b.fetch(Method::GET, "/api/echo/x").await.status,
            StatusCode::UNAUTHORIZED,
            "every session of the sub ends"
        );
    }
    assert_eq!(
        post_logout_token(&gateway, &token).await,
        StatusCode::BAD_REQUEST,
        "a replayed jti is refused"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn operators_revoke_a_users_sessions_on_every_instance() {
    let redis = Redis::start().await;
    let session_yaml = format!("  store: redis\n  redis: {{ url: \"{}\" }}", redis.url);
    let stack = Stack::start_with(|_| {}, |g| g.session_yaml = session_yaml).await;
    let (alice, bob) = (stack.browser(), stack.browser());
    alice.login("alice", "/").await;
    bob.login("bob", "/").await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("sallyport.yaml");
    std::fs::write(&config, stack.opts.yaml()).unwrap();
    let run = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_sallyport"))
            .args(["--config", config.to_str().unwrap(), "sessions", "revoke"])
            .args(args)
            .env("TEST_CLIENT_SECRET", crate::harness::CLIENT_SECRET)
            .output()
            .unwrap()
    };
    let out = run(&["--sub", "alice"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "revoked 1 session(s)"
    );
    assert_eq!(
        alice.fetch(Method::GET, "/api/echo/x").await.status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        bob.fetch(Method::GET, "/api/echo/x").await.status,
        StatusCode::OK
    );
    let out = run(&["--sub", "alice"]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "revoked 0 session(s)"
    );
    let out = run(&[]);
    assert!(!out.status.success(), "--sub or --sid is required");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_store_failure_while_ending_sessions_leaves_the_providers_retry_acceptable() {
    let redis = Redis::start().await;
    let provider = BadProvider::start().await;
    let upstream = Upstream::start().await;
    let (gateway, _) = Gateway::start_with(&provider.issuer, &upstream.url, |opts| {
        opts.session_yaml = format!("  store: redis\n  redis: {{ url: \"{}\" }}", redis.url);
    })
    .await;
    let b = Browser::new(&gateway.url);
    let to_provider = b.start_login("return_to=/").await;
    let callback = b.through_provider(&to_provider, "unused").await;
    assert_eq!(b.get(&callback).await.status, StatusCode::FOUND);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let token = provider.sign(
        &json!({
            "iss": provider.issuer, "aud": "sallyport", "iat": now, "jti": "retried-1",
            "sub": "mallory-test",
            "events": { "http://schemas.openid.net/event/backchannel-logout": {} },
        }),
        Some("logout+jwt"),
    );

    // Redis refuses to list the user's sessions: the logout cannot be carried out.
    let mut conn = redis.conn().await;
    let acl = |rule: &'static str| {
        redis::cmd("ACL")
            .arg("SETUSER")
            .arg("default")
            .arg(rule)
            .clone()
    };
    let _: () = acl("-smembers").query_async(&mut conn).await.unwrap();
    assert_eq!(
        post_logout_token(&gateway, &token).await,
        StatusCode::SERVICE_UNAVAILABLE
    );
    let _: () = acl("+smembers").query_async(&mut conn).await.unwrap();
    // The provider retries the same token: it is carried out, not refused as a replay.
    assert_eq!(post_logout_token(&gateway, &token).await, StatusCode::OK);
    assert_eq!(
        b.fetch(Method::GET, "/api/echo/x").await.status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        post_logout_token(&gateway, &token).await,
        StatusCode::BAD_REQUEST,
        "once carried out, the same jti is a replay"
    );
}
