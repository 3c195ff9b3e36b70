//! Routes asking a policy decision point: a real OpenID AuthZEN PDP (Cedar, `tests/pdp`)
//! decides; `403` with its reason for the user when it denies, `503 pdp_unavailable` when it
//! cannot answer; the upstream sees only permitted requests; decisions are cached.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::harness::browser::Browser;
use crate::harness::pdp::{Pdp, PdpOptions};
use crate::login::Stack;

/// The policy both the test PDP and the embedded engine evaluate.
pub const POLICIES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/pdp/policies.cedar");

/// Routes under `/api/orders/{id}` asking PDP `main` about `order` resources.
fn routes(pdp: &str) -> String {
    format!(
        "  - path: /api/orders/{{id}}/*\n    service: echo\n    upstream_path: /echo/orders/{{id}}/*\n    authz: {{ pdp: {pdp}, resource: {{ type: order, id: \"{{id}}\" }} }}\n\
         \x20 - path: /api/orders/{{id}}/approve\n    service: echo\n    upstream_path: /echo/approve/{{id}}\n    authz: {{ pdp: {pdp}, resource: {{ type: order, id: \"{{id}}\" }}, action: {{ POST: approve }} }}\n"
    )
}

/// `authz:` with PDP `main` at `url`.
fn pdp_yaml(url: &str, extra: &str) -> String {
    format!(
        "authz:\n  pdps:\n    main:\n      url: {url}\n      timeout: 300ms\n      cache: {{ ttl: 60s, deny_ttl: 1s }}\n{extra}"
    )
}

async fn stack(pdp: &Pdp, extra: &str) -> Stack {
    let yaml = format!("{}{}", routes("main"), pdp_yaml(&pdp.url, extra));
    Stack::start_with(
        |_| {},
        move |g| {
            g.extra_yaml = yaml;
            g.forward_auth = Some("traefik");
        },
    )
    .await
}

fn seen(stack: &Stack) -> usize {
    stack.upstream.seen.lock().unwrap().len()
}

async fn unsafe_call(
    b: &Browser,
    stack: &Stack,
    method: Method,
    path: &str,
) -> crate::harness::browser::Page {
    let csrf = b.csrf_token().await;
    b.fetch_with(
        method,
        path,
        &[("origin", &stack.gateway.url), ("x-csrf-token", &csrf)],
    )
    .await
}

/// Waits until the wall clock is not in the last 5 s of a minute: the time sent to the PDP is
/// to the minute, and a cache test must not see it change.
async fn away_from_a_minute_boundary() {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    if secs % 60 >= 50 {
        tokio::time::sleep(Duration::from_secs(61 - secs % 60)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_pdp_decides_about_the_sessions_user_and_never_sees_a_token() {
    let pdp = Pdp::start(
        POLICIES.as_ref(),
        PdpOptions {
            bearer: Some("pdp-static-secret".into()),
        },
    )
    .await;
    let stack = stack(&pdp, "      auth: { bearer: pdp-static-secret }\n").await;

    let stranger = stack.browser();
    let page = stranger.fetch(Method::GET, "/api/orders/42/items").await;
    assert_eq!(page.status, StatusCode::UNAUTHORIZED);
    assert_eq!(pdp.evaluations().await, 0, "no session: no question");

    let alice = stack.browser();
    alice.login("alice", "/").await;
    let page = alice.fetch(Method::GET, "/api/orders/42/items").await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    assert_eq!(page.json()["path"], "/echo/orders/42/items");
    let (alice_token, _, _) = stack.tokens_of(&alice).await;

    let bob = stack.browser();
    bob.login("bob", "/").await;
    let before = seen(&stack);
    let page = bob.fetch(Method::GET, "/api/orders/42/items").await;
    assert_eq!(
        page.status,
        StatusCode::OK,
        "a viewer may read: {}",
        page.body
    );
    let page = unsafe_call(&bob, &stack, Method::DELETE, "/api/orders/42/x").await;
    assert_eq!(page.status, StatusCode::FORBIDDEN, "{}", page.body);
    assert_eq!(page.json()["error"], "access_denied");
    assert_eq!(
        page.json()["reason_user"],
        "Only administrators may delete orders",
        "the PDP's reason for the user"
    );
    assert!(
        page.json().get("reason_admin").is_none() && !page.body.contains("policy"),
        "never its internal one: {}",
        page.body
    );
    assert!(page.set_cookies().is_empty(), "the session stays");
    let page = unsafe_call(&bob, &stack, Method::POST, "/api/orders/42/approve").await;
    assert_eq!(page.status, StatusCode::FORBIDDEN);
    assert!(page.json().get("reason_user").is_none(), "no reason given");
    assert_eq!(
        seen(&stack),
        before + 1,
        "only the permitted read went upstream"
    );
    let page = unsafe_call(&alice, &stack, Method::POST, "/api/orders/42/approve").await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    assert_eq!(page.json()["path"], "/echo/approve/42");
    let page = alice.fetch(Method::GET, "/api/orders/13/items").await;
    assert_eq!(page.status, StatusCode::FORBIDDEN);
    assert_eq!(page.json()["reason_user"], "This order is locked");

    // What the PDP was told: the session's subject, the route's resource and action, the
    // context; and never a token.
    let requests = pdp.requests().await;
    let approve = requests
        .iter()
        .find(|r| r["action"]["name"] == "approve" && r["subject"]["id"] == "alice")
        .expect("alice's approval was asked about");
    assert_eq!(approve["subject"]["type"], "user");
    assert_eq!(
        approve["subject"]["properties"]["roles"],
        json!(["admin", "billing"])
    );
    assert_eq!(
        approve["subject"]["properties"]["email"],
        "alice@example.com"
    );
    assert_eq!(approve["resource"], json!({"type": "order", "id": "42"}));
    assert_eq!(approve["context"]["client_ip"], "127.0.0.1");
    let time = approve["context"]["time"].as_str().unwrap();
    assert!(time.ends_with(":00Z") && time.len() == 20, "{time}");
    let all = serde_json::to_string(&requests).unwrap();
    assert!(
        !all.contains(&alice_token),
        "the PDP never receives a token"
    );
    assert!(!all.contains("eyJ"), "no JWT of any kind");
    assert!(
        pdp.authorizations()
            .await
            .iter()
            .all(|a| a == "Bearer pdp-static-secret"),
        "Sallyport authenticates with the configured bearer"
    );

    // The edge gets the same answers (an unsafe method with the CSRF token, as the browser
    // sends it through the edge).
    let bob_csrf = bob.csrf_token().await;
    let verify = |b: &Browser, method: &'static str, csrf: Option<String>| {
        let forward = Browser::with_jar(
            stack.gateway.forward_url.as_deref().unwrap(),
            std::sync::Arc::clone(&b.jar),
        );
        let origin = stack.gateway.url.clone();
        async move {
            let mut headers = vec![
                ("x-forwarded-uri", "/api/orders/7/x".to_owned()),
                ("x-forwarded-method", method.to_owned()),
            ];
            if let Some(csrf) = csrf {
                headers.push(("origin", origin));
                headers.push(("x-csrf-token", csrf));
            }
            let headers: Vec<(&str, &str)> =
                headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
            forward
                .fetch_with(Method::GET, "/auth/verify", &headers)
                .await
        }
    };
    assert_eq!(verify(&alice, "GET", None).await.status, StatusCode::OK);
    assert_eq!(verify(&bob, "GET", None).await.status, StatusCode::OK);
    let refused = verify(&bob, "DELETE", Some(bob_csrf)).await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);
    assert_eq!(refused.header("x-sallyport-error"), Some("access_denied"));
    assert_eq!(
        verify(&stranger, "GET", None).await.status,
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn decisions_are_cached_and_denials_expire_sooner() {
    let pdp = Pdp::start(POLICIES.as_ref(), PdpOptions::default()).await;
    let stack = stack(&pdp, "").await;
    let alice = stack.browser();
    alice.login("alice", "/").await;
    let bob = stack.browser();
    bob.login("bob", "/").await;
    away_from_a_minute_boundary().await;
    pdp.reset().await;

    // 100 identical calls, ten at a time: one evaluation.
    for _ in 0..10 {
        let calls = (0..10).map(|_| alice.fetch(Method::GET, "/api/orders/5/items"));
        for page in futures_util::future::join_all(calls).await {
            assert_eq!(page.status, StatusCode::OK);
        }
    }
    assert_eq!(
        pdp.evaluations().await,
        1,
        "100 identical calls, 1 evaluation"
    );
    let page = alice.fetch(Method::GET, "/api/orders/6/items").await;
    assert_eq!(page.status, StatusCode::OK);
    assert_eq!(
        pdp.evaluations().await,
        2,
        "another resource is another question"
    );

    // A denial is reused for `deny_ttl` (1 s), a permit for `ttl` (60 s).
    for _ in 0..3 {
        let page = unsafe_call(&bob, &stack, Method::DELETE, "/api/orders/5/x").await;
        assert_eq!(page.status, StatusCode::FORBIDDEN);
    }
    assert_eq!(pdp.evaluations().await, 3);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let page = unsafe_call(&bob, &stack, Method::DELETE, "/api/orders/5/x").await;
    assert_eq!(page.status, StatusCode::FORBIDDEN);
    assert_eq!(pdp.evaluations().await, 4, "the denial expired");
    let page = alice.fetch(Method::GET, "/api/orders/5/items").await;
    assert_eq!(page.status, StatusCode::OK);
    assert_eq!(pdp.evaluations().await, 4, "the permit did not");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_slow_garbled_or_stopped_pdp_fails_closed() {
    let mut pdp = Pdp::start(POLICIES.as_ref(), PdpOptions::default()).await;
    let stack = stack(&pdp, "").await;
    let alice = stack.browser();
    alice.login("alice", "/").await;
    let before = seen(&stack);

    pdp.set_delay(1500).await;
    let started = std::time::Instant::now();
    let page = alice.fetch(Method::GET, "/api/orders/1/items").await;
    assert_eq!(
        page.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        page.body
    );
    assert_eq!(page.json()["error"], "pdp_unavailable");
    assert!(
        started.elapsed() < Duration::from_millis(1400),
        "answered after the 300 ms timeout, not after the PDP: {:?}",
        started.elapsed()
    );
    pdp.set_delay(0).await;
    pdp.set_garbage(true).await;
    let page = alice.fetch(Method::GET, "/api/orders/2/items").await;
    assert_eq!(page.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(page.json()["error"], "pdp_unavailable");
    pdp.set_garbage(false).await;
    let page = alice.fetch(Method::GET, "/api/orders/2/items").await;
    assert_eq!(page.status, StatusCode::OK, "a failure is not cached");

    pdp.stop().await;
    let page = alice.fetch(Method::GET, "/api/orders/3/items").await;
    assert_eq!(page.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(page.json()["error"], "pdp_unavailable");
    let page = unsafe_call(&alice, &stack, Method::POST, "/api/orders/3/approve").await;
    assert_eq!(page.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        seen(&stack),
        before + 1,
        "nothing but the one permitted request reached the upstream"
    );
    let page = alice.fetch(Method::GET, "/api/orders/2/items").await;
    assert_eq!(page.status, StatusCode::OK, "a cached permit still stands");
    let _: Value = page.json();
}

/// Routes asking the embedded engine (`/api/local/orders/{id}/*`) next to the PDP's.
fn both_engines(pdp: &Pdp) -> String {
    format!(
        "{}  - path: /api/local/orders/{{id}}/*\n    service: echo\n    upstream_path: /echo/orders/{{id}}/*\n    authz: {{ pdp: embedded, resource: {{ type: order, id: \"{{id}}\" }} }}\n{}  policies: {POLICIES}\n  evaluations: {{ pdp: main }}\n",
        routes("main"),
        pdp_yaml(&pdp.url, ""),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn the_embedded_engine_decides_like_the_pdp_on_the_same_policy() {
    let pdp = Pdp::start(POLICIES.as_ref(), PdpOptions::default()).await;
    let yaml = both_engines(&pdp);
    let stack = Stack::start_with(|_| {}, move |g| g.extra_yaml = yaml).await;
    let mut decided = 0;
    for user in ["alice", "bob"] {
        let b = stack.browser();
        b.login(user, "/").await;
        for id in ["42", "13", "caf%C3%A9"] {
            for method in [Method::GET, Method::POST, Method::PUT, Method::DELETE] {
                let ask = |prefix: &'static str| {
                    let (b, stack, method) = (&b, &stack, method.clone());
                    let path = format!("{prefix}/orders/{id}/x");
                    async move {
                        let page = unsafe_call(b, stack, method, &path).await;
                        (page.status, page.json().get("reason_user").cloned())
                    }
                };
                let remote = ask("/api").await;
                let embedded = ask("/api/local").await;
                assert_eq!(remote, embedded, "{user} {method} order {id}");
                decided += 1;
            }
        }
    }
    assert_eq!(decided, 24);
    assert_eq!(
        pdp.evaluations().await,
        24,
        "every remote question reached the PDP"
    );
    let page = stack.browser();
    page.login("bob", "/").await;
    let denied = unsafe_call(&page, &stack, Method::DELETE, "/api/local/orders/1/x").await;
    assert_eq!(denied.status, StatusCode::FORBIDDEN);
    assert_eq!(
        denied.json()["reason_user"],
        "Only administrators may delete orders"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_spa_asks_about_its_own_user_through_the_same_cache() {
    let pdp = Pdp::start(POLICIES.as_ref(), PdpOptions::default()).await;
    let stack = stack(&pdp, "").await;
    let ask = |b: &Browser, body: Value, csrf: Option<String>| {
        let url = b.url("/api/auth/evaluations");
        let origin = stack.gateway.url.clone();
        let http = b.http.clone();
        async move {
            let mut req = http.post(url).header("origin", origin).json(&body);
            if let Some(csrf) = csrf {
                req = req.header("x-csrf-token", csrf);
            }
            let resp = req.send().await.unwrap();
            let status = resp.status();
            (status, resp.json::<Value>().await.unwrap_or(Value::Null))
        }
    };
    let questions = json!({
        "subject": {"type": "user", "id": "alice", "properties": {"roles": ["admin"]}},
        "resource": {"type": "order", "id": "42"},
        "evaluations": [
            {"action": {"name": "read"}},
            {"action": {"name": "delete"}},
            {"action": {"name": "read"}, "resource": {"type": "order", "id": "13"}},
        ]
    });
    let stranger = stack.browser();
    let (status, _) = ask(&stranger, questions.clone(), None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    let bob = stack.browser();
    bob.login("bob", "/").await;
    let (status, body) = ask(&bob, questions.clone(), None).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(body["error"], "csrf_failed");
    away_from_a_minute_boundary().await;
    // The route asks first; the SPA's identical question is answered from the cache.
    assert_eq!(
        bob.fetch(Method::GET, "/api/orders/42/x").await.status,
        StatusCode::OK
    );
    let before = pdp.evaluations().await;
    let csrf = bob.csrf_token().await;
    let (status, body) = ask(&bob, questions.clone(), Some(csrf.clone())).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        body,
        json!({"evaluations": [
            {"decision": true},
            {"decision": false, "context": {"reason_user": "Only administrators may delete orders"}},
            {"decision": false, "context": {"reason_user": "This order is locked"}},
        ]}),
        "bob's answers, although the body names alice"
    );
    assert_eq!(
        pdp.evaluations().await,
        before + 2,
        "the read of order 42 came from the route's cached decision"
    );
    let sent = pdp.requests().await;
    assert!(
        sent.iter().all(|r| r["subject"]["id"] == "bob"),
        "the PDP was only ever asked about the session's user: {sent:?}"
    );

    let too_many = json!({
        "action": {"name": "read"},
        "evaluations": (0..21).map(|i| json!({"resource": {"type": "order", "id": i.to_string()}})).collect::<Vec<_>>(),
    });
    let (status, body) = ask(&bob, too_many, Some(csrf.clone())).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let (status, _) = ask(
        &bob,
        json!({"evaluations": [{"action": {"name": "read"}}]}),
        Some(csrf),
    )
    .await;
    assert_eq!(
        status,
        StatusCode::BAD_REQUEST,
        "a question without a resource"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_pdp_can_be_called_with_sallyports_client_credentials_token() {
    const PDP_RESOURCE: &str = "https://pdp.example.com";
    let pdp = Pdp::start(POLICIES.as_ref(), PdpOptions::default()).await;
    let yaml = format!(
        "{}{}",
        routes("main"),
        pdp_yaml(
            &pdp.url,
            &format!(
                "      auth: {{ token: {{ kind: client_credentials, resource: \"{PDP_RESOURCE}\", scopes: [authz] }} }}\n"
            )
        )
    );
    let stack = Stack::start_with(
        |p| {
            p.grant_types = vec!["client_credentials"];
            p.config = json!({ "resources": { PDP_RESOURCE: { "scope": "authz" } } });
        },
        move |g| g.extra_yaml = yaml,
    )
    .await;
    let alice = stack.browser();
    alice.login("alice", "/").await;
    for id in 0..5 {
        let page = alice
            .fetch(Method::GET, &format!("/api/orders/{id}/x"))
            .await;
        assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    }
    let authorizations = pdp.authorizations().await;
    assert_eq!(authorizations.len(), 5);
    assert!(
        authorizations
            .iter()
            .all(|a| a.starts_with("Bearer eyJ") && *a == authorizations[0]),
        "one token of Sallyport's own for every call: {authorizations:?}"
    );
    assert_eq!(stack.provider.grants("client_credentials").await, 1);
    let (user_token, _, _) = stack.tokens_of(&alice).await;
    assert!(
        !authorizations[0].contains(&user_token),
        "never the user's token"
    );
}
