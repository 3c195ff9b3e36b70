//! Refreshing tokens before they expire: once per session under concurrency, rotation kept,
//! and a refused refresh ending the session.

use std::collections::HashSet;
use std::time::Duration;

use reqwest::{Method, StatusCode};

use crate::login::Stack;

async fn expiring_stack() -> Stack {
    // Tokens live 120 s; Sallyport refreshes those expiring within 60 s.
    Stack::start_with(|p| p.access_token_ttl = 120, |g| g.refresh_before = "60s").await
}

#[tokio::test(flavor = "multi_thread")]
async fn fifty_concurrent_calls_cause_exactly_one_refresh() {
    let stack = expiring_stack().await;
    let b = stack.browser();
    b.login("alice", "/").await;
    let (old_access, _, old_refresh) = stack.tokens_of(&b).await;
    assert_eq!(
        b.fetch(Method::GET, "/api/echo/warm").await.status,
        StatusCode::OK
    );
    assert_eq!(
        stack.provider.grants("refresh_token").await,
        0,
        "a fresh token is not refreshed"
    );

    for round in 1..=2u64 {
        // 90 s later the token expires within 60 s: every call wants a refresh.
        stack.gateway.clock.advance(Duration::from_secs(90));
        stack.upstream.seen.lock().unwrap().clear();
        let calls: Vec<_> = (0..50)
            .map(|i| {
                let b = b.clone();
                tokio::spawn(async move {
                    b.fetch(Method::GET, &format!("/api/echo/item/{i}"))
                        .await
                        .status
                })
            })
            .collect();
        for call in calls {
            assert_eq!(call.await.unwrap(), StatusCode::OK);
        }
        assert_eq!(
            stack.provider.grants("refresh_token").await,
            round,
            "exactly one refresh per round"
        );
        assert_eq!(
            stack.provider.grant_errors("refresh_token").await,
            0,
            "no refresh token used twice"
        );
        let (access, _, refresh) = stack.tokens_of(&b).await;
        assert_ne!(access, old_access);
        assert_ne!(refresh, old_refresh, "the rotated refresh token is kept");
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
            "every call carried the new token"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_refused_refresh_ends_the_session() {
    let stack = expiring_stack().await;
    let b = stack.browser();
    b.login("alice", "/").await;
    let (_, _, refresh) = stack.tokens_of(&b).await;
    stack.provider.revoke(&refresh.unwrap()).await;
    stack.gateway.clock.advance(Duration::from_secs(90));
    let page = b.fetch(Method::GET, "/api/echo/x").await;
    assert_eq!(
        stack.provider.grant_errors("refresh_token").await,
        1,
        "the provider refused the refresh"
    );
    assert_eq!(page.status, StatusCode::UNAUTHORIZED);
    assert_eq!(page.json()["error"], "session_expired");
    assert!(
        page.set_cookies().iter().any(|c| c.contains("Max-Age=0")),
        "the dead cookie is cleared"
    );
    assert_eq!(
        b.fetch(Method::GET, "/api/auth/session").await.status,
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn only_invalid_grant_ends_a_session() {
    let stack = expiring_stack().await;
    let b = stack.browser();
    b.login("alice", "/").await;
    // The access token has expired: a refresh is needed, and nothing else will do.
    stack.gateway.clock.advance(Duration::from_secs(130));
    for (status, error) in [
        ("429", ""),
        ("429", "slow_down"),
        ("401", "invalid_client"),
        ("400", "invalid_request"),
        ("400", "unauthorized_client"),
        ("503", "temporarily_unavailable"),
    ] {
        stack
            .provider
            .set_faults(&[("token_status", status), ("token_error", error)])
            .await;
        let page = b.fetch(Method::GET, "/api/echo/x").await;
        assert_eq!(
            page.status,
            StatusCode::SERVICE_UNAVAILABLE,
            "{status} {error}: {}",
            page.body
        );
        assert_eq!(page.json()["error"], "provider_unavailable");
        assert!(
            page.set_cookies().is_empty(),
            "{status} {error}: the session cookie is kept"
        );
    }
    assert_eq!(stack.provider.faulted_token_requests().await, 6);
    // The provider is back: the same refresh token still works, the session goes on.
    stack.provider.set_faults(&[]).await;
    let page = b.fetch(Method::GET, "/api/echo/x").await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    assert_eq!(stack.provider.grants("refresh_token").await, 1);

    // invalid_grant, and only that, ends the session.
    stack.gateway.clock.advance(Duration::from_secs(130));
    stack
        .provider
        .set_faults(&[("token_status", "400"), ("token_error", "invalid_grant")])
        .await;
    let page = b.fetch(Method::GET, "/api/echo/x").await;
    assert_eq!(page.status, StatusCode::UNAUTHORIZED);
    assert_eq!(page.json()["error"], "session_expired");
}
