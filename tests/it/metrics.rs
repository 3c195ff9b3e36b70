//! Prometheus metrics on the admin port, scraped by a real Prometheus.

use std::time::Duration;

use reqwest::{Method, StatusCode};

use crate::harness::eventually;
use crate::harness::prometheus::Prometheus;
use crate::login::Stack;

async fn stack_with_admin() -> (Stack, String) {
    let admin = crate::harness::free_port();
    let stack = Stack::start_with(
        |_| {},
        move |g| g.server_yaml = format!("  admin_listen: 127.0.0.1:{admin}"),
    )
    .await;
    let url = stack.gateway.admin_url.clone().expect("an admin listener");
    (stack, url)
}

#[tokio::test(flavor = "multi_thread")]
async fn metrics_are_served_on_the_admin_port_only_and_count_what_happened() {
    let (stack, admin) = stack_with_admin().await;
    let b = stack.browser();
    b.login("alice", "/").await;
    for _ in 0..3 {
        assert_eq!(
            b.fetch(Method::GET, "/api/echo/orders/42").await.status,
            StatusCode::OK
        );
    }
    // A refusal: a POST without the CSRF header.
    assert_eq!(
        b.fetch(Method::POST, "/api/echo/orders").await.status,
        StatusCode::FORBIDDEN
    );
    // Not on the public port.
    assert_eq!(
        b.fetch(Method::GET, "/metrics").await.status,
        StatusCode::NOT_FOUND
    );

    let resp = reqwest::get(format!("{admin}/metrics")).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(
        resp.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/openmetrics-text")
    );
    let text = resp.text().await.unwrap();
    let has = |line: &str| {
        assert!(
            text.lines().any(|l| l.starts_with(line)),
            "no line starting {line:?} in:\n{text}"
        );
    };
    // The route is named by its configured path, never the request's.
    has(
        r#"sallyport_http_request_duration_seconds_count{listener="public",route="/api/echo/*",method="read",status="200"} 3"#,
    );
    assert!(!text.contains("/api/echo/orders/42"), "no raw path");
    has(
        r#"sallyport_http_request_duration_seconds_count{listener="public",route="/api/echo/*",method="write",status="403"} 1"#,
    );
    has(r#"sallyport_refusals_total{code="csrf_failed"} 1"#);
    has(r#"sallyport_logins_total{event="started",reason=""} 1"#);
    has(r#"sallyport_logins_total{event="completed",reason=""} 1"#);
    has(r#"sallyport_upstream_duration_seconds_count{service="echo"} 3"#);
    has(r#"sallyport_provider_fetches_total{provider="main",document="discovery",outcome="ok"}"#);
    has(r#"sallyport_provider_fetches_total{provider="main",document="jwks",outcome="ok"}"#);
    has(r#"sallyport_store_operations_total{op="create",outcome="ok"}"#);
    has("sallyport_sessions 1");
    has(r#"sallyport_build_info{version=""#);
    assert!(text.trim_end().ends_with("# EOF"));
    // No token, cookie or secret.
    let (access, id, _) = stack.tokens_of(&b).await;
    let cookie = b.cookie("sallyport").unwrap();
    for secret in [access.as_str(), id.as_str(), cookie.as_str()] {
        assert!(!text.contains(secret));
    }

    // A refused login callback and an upstream that is down.
    assert_eq!(
        b.get("/auth/callback?state=forged&code=x").await.status,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        b.fetch(Method::GET, "/api/dead/x").await.status,
        StatusCode::BAD_GATEWAY
    );
    let text = reqwest::get(format!("{admin}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        text.contains(r#"sallyport_logins_total{event="failed",reason="invalid_state"} 1"#),
        "{text}"
    );
    assert!(
        text.contains(r#"sallyport_upstream_errors_total{service="dead",kind="connect"} 1"#),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_real_prometheus_scrapes_sallyport_and_answers_a_query() {
    let (stack, admin) = stack_with_admin().await;
    let prometheus = Prometheus::start(admin.trim_start_matches("http://")).await;
    let b = stack.browser();
    b.login("alice", "/").await;
    for _ in 0..5 {
        assert_eq!(
            b.fetch(Method::GET, "/api/echo/x").await.status,
            StatusCode::OK
        );
    }
    let query =
        r#"sum(sallyport_http_request_duration_seconds_count{route="/api/echo/*",status="200"})"#;
    let seen = eventually(Duration::from_secs(20), || async {
        prometheus.value(query).await.filter(|v| *v >= 5.0)
    })
    .await;
    assert_eq!(
        seen,
        Some(5.0),
        "Prometheus sees the 5 requests (target {:?})",
        prometheus.target_health().await
    );
    assert_eq!(prometheus.target_health().await.as_deref(), Some("up"));
    let logins = prometheus
        .value(r#"sallyport_logins_total{event="completed"}"#)
        .await;
    assert_eq!(logins, Some(1.0));
}
