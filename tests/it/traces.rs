//! OpenTelemetry traces from the built binary to a real OTLP/HTTP receiver: one span tree per
//! request, the edge's trace continued, the upstream's `traceparent`, the trace id in the
//! logs, and nothing secret in any span.

use std::time::Duration;

use reqwest::{Method, StatusCode};

use crate::harness::browser::Browser;
use crate::harness::gateway::GatewayOptions;
use crate::harness::otlp::{Otlp, Received};
use crate::harness::provider::{Provider, ProviderOptions};
use crate::harness::upstream::Upstream;
use crate::harness::{CLIENT_SECRET, eventually, free_port};
use crate::process::Sallyport;

/// A W3C trace context as an edge sends it (sampled).
const EDGE_TRACE: &str = "0af7651916cd43dd8448eb211c80319c";
const EDGE_SPAN: &str = "b7ad6b7169203331";

fn edge_traceparent() -> String {
    format!("00-{EDGE_TRACE}-{EDGE_SPAN}-01")
}

/// Provider, upstream and binary with traces sent to `otlp`; every API call refreshes (120 s
/// tokens refreshed 200 s early), `/api/billing/*` exchanges, `/api/orders/*` asks the
/// embedded policy engine.
async fn traced(
    otlp: &Otlp,
    trusted_proxies: &'static str,
    sample_ratio: &str,
) -> (u16, Provider, Upstream, Sallyport) {
    let port = free_port();
    let mut popts = ProviderOptions::new(port);
    crate::broker::broker_provider(&mut popts);
    popts.access_token_ttl = 120;
    let provider = Provider::start(popts).await;
    let upstream = Upstream::start().await;
    let mut opts = GatewayOptions::new(port, &provider.issuer, &upstream.url);
    opts.refresh_before = "200s";
    crate::broker::broker_gateway(&mut opts);
    opts.trusted_proxies = trusted_proxies;
    opts.extra_yaml.push_str(&format!(
        "  - path: /api/orders/{{id}}/*\n    service: echo\n    upstream_path: /echo/orders/{{id}}/*\n    authz: {{ pdp: embedded, resource: {{ type: order, id: \"{{id}}\" }} }}\n\
         authz:\n  policies: {}\n\
         telemetry:\n  otlp: {{ endpoint: {}, sample_ratio: {sample_ratio}, service_name: gateway-under-test }}\n",
        crate::pdp::POLICIES,
        otlp.url
    ));
    // Batches leave every 100 ms rather than every 5 s.
    opts.env
        .push(("OTEL_BSP_SCHEDULE_DELAY".into(), "100".into()));
    let sallyport = Sallyport::start(&opts, "info").await;
    (port, provider, upstream, sallyport)
}

/// The `traceparent` the upstream received, from its echo.
fn upstream_traceparent(echo: &serde_json::Value) -> String {
    echo["headers"]["traceparent"][0]
        .as_str()
        .expect("the upstream got a traceparent")
        .to_owned()
}

/// The spans of `trace` once its request span (the root of what Sallyport sent) is in.
async fn spans_of(otlp: &Otlp, trace: &str) -> Vec<Received> {
    eventually(Duration::from_secs(10), || async {
        let spans = otlp.trace(trace);
        spans
            .iter()
            .any(|s| s.span.name.starts_with("GET /api/"))
            .then_some(spans)
    })
    .await
    .unwrap_or_else(|| panic!("the spans of trace {trace} arrive: {:#?}", otlp.spans()))
}

/// `GET /api/echo/x` with the edge's trace context and `more` headers.
async fn with_edge_context(b: &Browser, more: &[(&str, &str)]) -> crate::harness::browser::Page {
    let traceparent = edge_traceparent();
    let mut headers = vec![("traceparent", traceparent.as_str())];
    headers.extend_from_slice(more);
    b.fetch_with(Method::GET, "/api/echo/x", &headers).await
}

fn named<'a>(spans: &'a [Received], name: &str) -> &'a Received {
    spans
        .iter()
        .find(|s| s.span.name == name)
        .unwrap_or_else(|| {
            panic!(
                "a span {name}: {:?}",
                spans.iter().map(|s| &s.span.name).collect::<Vec<_>>()
            )
        })
}

#[tokio::test(flavor = "multi_thread")]
async fn a_request_is_one_span_tree_continued_from_the_edge_and_passed_to_the_upstream() {
    use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
    let otlp = Otlp::start().await;
    let (port, _provider, upstream, mut sallyport) = traced(&otlp, "[\"127.0.0.1/32\"]", "1").await;
    let b = Browser::new(&format!("http://localhost:{port}"));
    b.login("alice", "/").await;

    // The edge (a trusted proxy) sent its trace context: the request continues it.
    let page = with_edge_context(&b, &[]).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    let sent = upstream_traceparent(&page.json());
    let parts: Vec<&str> = sent.split('-').collect();
    assert_eq!(parts.len(), 4, "{sent}");
    assert_eq!(
        parts[1], EDGE_TRACE,
        "the upstream continues the edge's trace"
    );
    assert_ne!(parts[2], EDGE_SPAN, "under a span of Sallyport's");
    assert_eq!(parts[3], "01", "sampled, as the edge decided");

    let spans = spans_of(&otlp, EDGE_TRACE).await;
    for s in &spans {
        println!(
            "{} {} parent={} {:?}",
            s.id(),
            s.span.name,
            s.parent(),
            s.everything()
        );
    }
    assert!(spans.iter().all(|s| s.service == "gateway-under-test"));
    let root = named(&spans, "GET /api/echo/*");
    assert_eq!(root.parent(), EDGE_SPAN, "the edge's span is the parent");
    assert_eq!(root.span.kind, SpanKind::Server as i32);
    assert_eq!(root.attr("http.route").as_deref(), Some("/api/echo/*"));
    assert_eq!(root.attr("url.path").as_deref(), Some("/api/echo/x"));
    assert_eq!(root.attr("http.request.method").as_deref(), Some("GET"));
    assert_eq!(
        root.attr("http.response.status_code").as_deref(),
        Some("200")
    );
    for child in ["session", "refresh", "upstream"] {
        assert_eq!(
            named(&spans, child).parent(),
            root.id(),
            "{child} is a child of the request"
        );
    }
    let call = named(&spans, "upstream");
    assert_eq!(call.span.kind, SpanKind::Client as i32);
    assert_eq!(
        call.id(),
        parts[2],
        "the upstream's parent is the upstream call"
    );
    assert_eq!(call.attr("sallyport.service").as_deref(), Some("echo"));
    assert_eq!(
        call.attr("http.response.status_code").as_deref(),
        Some("200")
    );
    assert_eq!(
        named(&spans, "refresh")
            .attr("sallyport.provider")
            .as_deref(),
        Some("main")
    );

    // The login's callback: the token endpoint call is a child of its request.
    let all = otlp.spans();
    let exchange = named(&all, "code_exchange");
    let callback = all
        .iter()
        .find(|s| s.id() == exchange.parent())
        .expect("its parent");
    assert_eq!(callback.span.name, "GET /auth/callback");
    assert_eq!(exchange.attr("sallyport.provider").as_deref(), Some("main"));

    // Without an edge's context: a trace of its own, with the exchange and the decision.
    let page = b.fetch(Method::GET, "/api/billing/x").await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    let billing_trace = upstream_traceparent(&page.json())
        .split('-')
        .nth(1)
        .unwrap()
        .to_owned();
    assert_ne!(billing_trace, EDGE_TRACE);
    let spans = spans_of(&otlp, &billing_trace).await;
    let root = named(&spans, "GET /api/billing/*");
    assert!(root.parent().is_empty(), "a new trace starts at Sallyport");
    let exchange = named(&spans, "exchange");
    assert_eq!(exchange.parent(), root.id());
    assert_eq!(
        exchange.attr("sallyport.service").as_deref(),
        Some("billing")
    );

    let page = b.fetch(Method::GET, "/api/orders/7/lines").await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    let orders_trace = upstream_traceparent(&page.json())
        .split('-')
        .nth(1)
        .unwrap()
        .to_owned();
    let spans = spans_of(&otlp, &orders_trace).await;
    let pdp = named(&spans, "pdp");
    assert_eq!(pdp.parent(), named(&spans, "GET /api/orders/{id}/*").id());
    assert_eq!(pdp.attr("sallyport.decision").as_deref(), Some("permit"));

    // A refusal: the span says which.
    let stranger = Browser::new(&format!("http://localhost:{port}"));
    let page = stranger
        .fetch_with(
            Method::GET,
            "/api/echo/y",
            &[(
                "traceparent",
                &format!("00-{}-{EDGE_SPAN}-01", "1".repeat(32)),
            )],
        )
        .await;
    assert_eq!(page.status, StatusCode::UNAUTHORIZED);
    let refused = spans_of(&otlp, &"1".repeat(32)).await;
    let root = named(&refused, "GET /api/echo/*");
    assert_eq!(
        root.attr("error.type").as_deref(),
        Some("not_authenticated")
    );
    assert_eq!(
        root.attr("http.response.status_code").as_deref(),
        Some("401")
    );

    // No span holds a token, the cookie, the CSRF token or the client secret.
    let mut secrets = vec![
        ("client secret", CLIENT_SECRET.to_owned()),
        ("session cookie", b.cookie("sallyport").unwrap()),
        ("csrf token", b.csrf_token().await),
    ];
    for bearer in upstream.seen.lock().unwrap().iter() {
        secrets.push((
            "access token",
            bearer.trim_start_matches("Bearer ").to_owned(),
        ));
    }
    let everything = otlp
        .spans()
        .iter()
        .flat_map(Received::everything)
        .collect::<Vec<_>>()
        .join("\n");
    for (what, secret) in &secrets {
        assert!(
            !everything.contains(secret.as_str()),
            "a span holds the {what}"
        );
    }
    assert!(!everything.to_ascii_lowercase().contains("cookie"));

    // The log lines of a traced request carry its trace id.
    sallyport.stop();
    let log = sallyport.log();
    let access = log
        .lines()
        .find(|l| l.contains("\"path\":\"/api/echo/x\""))
        .expect("the access line");
    assert!(
        access.contains(&format!("\"trace_id\":\"{EDGE_TRACE}\"")),
        "{access}"
    );
    let secrets_in_log = secrets
        .iter()
        .filter(|(_, s)| log.contains(s.as_str()))
        .count();
    assert_eq!(secrets_in_log, 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_that_is_not_a_trusted_edge_cannot_pick_the_trace_or_force_sampling() {
    let otlp = Otlp::start().await;
    // Nobody is trusted, and no trace started here is recorded.
    let (port, _provider, _upstream, mut sallyport) = traced(&otlp, "[]", "0").await;
    let b = Browser::new(&format!("http://localhost:{port}"));
    b.login("alice", "/").await;
    let page = with_edge_context(&b, &[("tracestate", "edge=1")]).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    let echo = page.json();
    let sent = upstream_traceparent(&echo);
    let parts: Vec<&str> = sent.split('-').collect();
    assert_ne!(parts[1], EDGE_TRACE, "a new trace, not the client's");
    assert_eq!(
        parts[3], "00",
        "not sampled: the client's flag does not count"
    );
    assert!(
        echo["headers"].get("tracestate").is_none(),
        "the client's tracestate is not passed on: {echo}"
    );
    sallyport.stop();
    // Stopping sends whatever was buffered: nothing was recorded.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(otlp.spans().is_empty(), "{:#?}", otlp.spans());
}

#[tokio::test(flavor = "multi_thread")]
async fn without_otlp_the_trace_context_passes_through_untouched() {
    let stack = crate::login::Stack::start().await;
    let b = stack.browser();
    b.login("alice", "/").await;
    let page = b
        .fetch_with(
            Method::GET,
            "/api/echo/x",
            &[("traceparent", &edge_traceparent())],
        )
        .await;
    assert_eq!(page.status, StatusCode::OK);
    assert_eq!(upstream_traceparent(&page.json()), edge_traceparent());
}
