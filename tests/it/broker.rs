//! The token broker against the real provider: each service gets only the token meant for it
//! (token exchange per session and service, Sallyport's own client-credentials token, from a
//! second issuer too), obtained once however many calls wait, renewed before it expires, in
//! the background too.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::harness::browser::Browser;
use crate::harness::gateway::{Gateway, GatewayOptions};
use crate::harness::provider::{Provider, ProviderOptions};
use crate::harness::upstream::fingerprint;
use crate::login::Stack;

const EXCHANGE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
const REPORTS: &str = "https://reports.example.com";

/// The provider side: Sallyport may exchange tokens for `billing-api` (not for `bob`) and
/// ask for its own tokens for the reports resource.
pub fn broker_provider(p: &mut ProviderOptions) {
    p.grant_types = vec!["client_credentials", EXCHANGE];
    p.config = json!({
        "resources": { REPORTS: { "scope": "reports reports.write" } },
        "exchange_audiences": { "billing-api": { "scope": "billing.read billing.write" } },
        "exchange_deny_subjects": ["bob"],
    });
}

/// The gateway side: `billing` exchanges, `reports` uses client credentials (also from a
/// public route), `profile` gets chosen claims as headers.
pub fn broker_gateway(g: &mut GatewayOptions) {
    broker_services(g, "");
}

/// [`broker_gateway`], the reports token asked for with `reports_provider` (`, provider: x`).
fn broker_services(g: &mut GatewayOptions, reports_provider: &str) {
    let upstream = &g.upstream;
    g.services_yaml = format!(
        "  billing:\n    url: {upstream}\n    token: {{ kind: exchange, audience: billing-api, scopes: [billing.read] }}\n\
         \x20 reports:\n    url: {upstream}\n    token: {{ kind: client_credentials, resource: \"{REPORTS}\", scopes: [reports]{reports_provider} }}\n\
         \x20 profile:\n    url: {upstream}\n    token: none\n    headers: {{ X-User-Id: sub, X-User-Name: name, X-Mail: email, X-Issuer: iss }}\n"
    );
    g.extra_yaml = "  - path: /api/billing/*\n    service: billing\n    upstream_path: /echo/*\n\
         \x20 - path: /api/reports/*\n    service: reports\n    upstream_path: /echo/*\n\
         \x20 - path: /api/public-reports/*\n    service: reports\n    upstream_path: /echo/*\n    auth: none\n\
         \x20 - path: /api/profile/*\n    service: profile\n    upstream_path: /echo/*\n"
        .to_owned();
}

/// The claims of a JWT, verified with the provider's keys.
async fn verified_claims(provider: &Provider, token: &str) -> Value {
    let header = jsonwebtoken::decode_header(token).expect("a JWT");
    let jwks: jsonwebtoken::jwk::JwkSet = serde_json::from_value(provider.jwks().await).unwrap();
    let jwk = jwks
        .find(header.kid.as_deref().expect("a kid"))
        .expect("signed by a key the provider publishes");
    let key = jsonwebtoken::DecodingKey::from_jwk(jwk).unwrap();
    let mut validation = jsonwebtoken::Validation::new(header.alg);
    validation.validate_aud = false;
    validation.set_issuer(&[&provider.issuer]);
    jsonwebtoken::decode::<Value>(token, &key, &validation)
        .expect("a valid signature")
        .claims
}

fn last_bearer(stack: &Stack) -> String {
    stack
        .upstream
        .seen
        .lock()
        .unwrap()
        .last()
        .expect("the upstream got a bearer")
        .strip_prefix("Bearer ")
        .unwrap()
        .to_owned()
}

/// The broker's stack, and alice, logged in, after her first call to the exchange service.
async fn alice_called_billing() -> (Stack, Browser) {
    let stack = Stack::start_with(broker_provider, broker_gateway).await;
    let b = stack.browser();
    b.login("alice", "/").await;
    assert_eq!(
        b.fetch(Method::GET, "/api/billing/1").await.status,
        StatusCode::OK
    );
    (stack, b)
}

fn all_ok(statuses: &[StatusCode]) {
    assert!(
        statuses.iter().all(|s| *s == StatusCode::OK),
        "{statuses:?}"
    );
}

fn audiences(claims: &Value) -> Vec<String> {
    match &claims["aud"] {
        Value::String(a) => vec![a.clone()],
        Value::Array(a) => a
            .iter()
            .filter_map(|v| v.as_str().map(str::to_owned))
            .collect(),
        _ => Vec::new(),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_exchange_service_gets_a_token_for_its_audience_and_never_the_users_own() {
    let stack = Stack::start_with(broker_provider, broker_gateway).await;
    let b = stack.browser();
    b.login("alice", "/").await;
    let (user_token, id_token, _) = stack.tokens_of(&b).await;

    let page = b.fetch(Method::GET, "/api/billing/invoices").await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    let sent = last_bearer(&stack);
    assert_ne!(
        sent, user_token,
        "the user's own token never reaches an exchange service"
    );
    assert_ne!(sent, id_token);
    let claims = verified_claims(&stack.provider, &sent).await;
    assert_eq!(audiences(&claims), ["billing-api"], "{claims}");
    assert_eq!(claims["sub"], "alice", "the user, on whose behalf");
    assert_eq!(claims["act"]["sub"], "sallyport", "and the gateway acting");
    assert_eq!(
        claims["scope"], "billing.read",
        "only the scopes the service asks for"
    );
    // What the page sees is the echo's redacted fingerprint, never the token.
    assert!(!page.body.contains(&sent));
    assert_eq!(
        page.json()["headers"]["authorization"][0],
        fingerprint(&sent)
    );

    // Cached in the session: the next calls send the same token without asking again.
    for _ in 0..3 {
        assert_eq!(
            b.fetch(Method::GET, "/api/billing/again").await.status,
            StatusCode::OK
        );
    }
    assert_eq!(last_bearer(&stack), sent);
    assert_eq!(stack.provider.grants(EXCHANGE).await, 1);

    // A user service still gets the user's token; the exchange did not replace it.
    assert_eq!(
        b.fetch(Method::GET, "/api/echo/x").await.status,
        StatusCode::OK
    );
    assert_eq!(last_bearer(&stack), user_token);
}

#[tokio::test(flavor = "multi_thread")]
async fn fifty_concurrent_calls_on_one_session_make_one_exchange() {
    let stack = Stack::start_with(broker_provider, broker_gateway).await;
    let b = stack.browser();
    b.login("alice", "/").await;
    let calls = (0..50).map(|i| {
        let b = &b;
        async move {
            b.fetch(Method::GET, &format!("/api/billing/{i}"))
                .await
                .status
        }
    });
    all_ok(&futures_util::future::join_all(calls).await);
    assert_eq!(
        stack.provider.grants(EXCHANGE).await,
        1,
        "one exchange for 50 calls"
    );
    let seen = stack.upstream.seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 50);
    assert!(
        seen.windows(2).all(|w| w[0] == w[1]),
        "all 50 carried the one exchanged token"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_expired_exchanged_token_is_exchanged_again_without_a_new_login() {
    let (stack, b) = alice_called_billing().await;
    let first = last_bearer(&stack);
    // Ten minutes later (the provider's tokens live five): due again, and so is the user's
    // own token, which is refreshed first so that the exchange presents a valid one.
    stack.gateway.clock.advance(Duration::from_secs(600));
    let page = b.fetch(Method::GET, "/api/billing/2").await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    assert_ne!(last_bearer(&stack), first, "a new token");
    assert_eq!(stack.provider.grants(EXCHANGE).await, 2);
    assert_eq!(stack.provider.grants("refresh_token").await, 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_refused_exchange_is_403_and_the_session_stays_usable() {
    let stack = Stack::start_with(broker_provider, broker_gateway).await;
    let b = stack.browser();
    b.login("bob", "/").await;
    let page = b.fetch(Method::GET, "/api/billing/invoices").await;
    assert_eq!(page.status, StatusCode::FORBIDDEN, "{}", page.body);
    assert_eq!(page.json()["error"], "token_exchange_denied");
    assert!(
        !page.body.contains("access_denied"),
        "the provider's answer stays in the log"
    );
    assert!(
        page.set_cookies().is_empty(),
        "the session cookie is not cleared"
    );
    assert!(
        stack.upstream.seen.lock().unwrap().is_empty(),
        "nothing reached the upstream"
    );
    assert_eq!(
        b.fetch(Method::GET, "/api/echo/still-in").await.status,
        StatusCode::OK
    );
    assert_eq!(
        b.fetch(Method::GET, "/api/auth/session").await.status,
        StatusCode::OK
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_credentials_service_gets_the_gateways_token_even_on_a_public_route() {
    let stack = Stack::start_with(broker_provider, broker_gateway).await;
    let anonymous = stack.browser();
    let page = anonymous
        .fetch(Method::GET, "/api/public-reports/daily")
        .await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    let sent = last_bearer(&stack);
    let claims = verified_claims(&stack.provider, &sent).await;
    assert_eq!(audiences(&claims), [REPORTS], "{claims}");
    assert_eq!(claims["client_id"], "sallyport");
    assert!(
        page.json()["headers"].get("x-auth-request-user").is_none(),
        "nobody's identity"
    );

    // A logged-in user's call to the same service gets the same shared token, not theirs.
    let b = stack.browser();
    b.login("alice", "/").await;
    let (user_token, _, _) = stack.tokens_of(&b).await;
    let page = b.fetch(Method::GET, "/api/reports/weekly").await;
    assert_eq!(page.status, StatusCode::OK);
    assert_eq!(last_bearer(&stack), sent);
    assert_ne!(last_bearer(&stack), user_token);
    assert_eq!(page.json()["headers"]["x-auth-request-user"][0], "alice");
    assert_eq!(
        stack.provider.grants("client_credentials").await,
        1,
        "one token for all"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_second_provider_issues_one_services_token_while_users_log_in_at_the_first() {
    let mut partner_opts = ProviderOptions::new(crate::harness::free_port());
    broker_provider(&mut partner_opts);
    let partner = Provider::start(partner_opts).await;
    let partner_issuer = partner.issuer.clone();
    let stack = Stack::start_with(broker_provider, |g| {
        g.provider_yaml = format!(
            "  partner:\n    issuer: {partner_issuer}\n    client_id: sallyport\n    client_secret: ${{TEST_CLIENT_SECRET}}\n"
        );
        broker_services(g, ", provider: partner");
    })
    .await;
    let b = stack.browser();
    b.login("alice", "/").await;
    let page = b.fetch(Method::GET, "/api/reports/weekly").await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    let claims = verified_claims(&partner, &last_bearer(&stack)).await;
    assert_eq!(
        claims["iss"],
        partner.issuer.as_str(),
        "issued by the partner"
    );
    assert_eq!(partner.grants("client_credentials").await, 1);
    assert_eq!(stack.provider.grants("client_credentials").await, 0);
    // The user's session is the first provider's.
    let session = b.fetch(Method::GET, "/api/profile/me").await;
    assert_eq!(
        session.json()["headers"]["x-issuer"][0],
        stack.provider.issuer.as_str()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn services_get_the_claims_they_ask_for_and_client_copies_are_dropped() {
    let stack = Stack::start_with(broker_provider, broker_gateway).await;
    let b = stack.browser();
    b.login("alice", "/").await;
    let page = b
        .fetch_with(
            Method::GET,
            "/api/profile/me",
            &[
                ("x-user-id", "admin"),
                ("x-mail", "root@example.com"),
                ("x-issuer", "forged"),
            ],
        )
        .await;
    let h = &page.json()["headers"];
    assert_eq!(h["x-user-id"], json!(["alice"]));
    assert_eq!(h["x-user-name"], json!(["Alice Example"]));
    assert_eq!(
        h["x-mail"],
        json!(["alice@example.com"]),
        "verified at the provider"
    );
    assert_eq!(h["x-issuer"], json!([stack.provider.issuer]));
    assert!(
        h.get("x-auth-request-user").is_none(),
        "only the headers it asked for"
    );
    assert!(h.get("authorization").is_none(), "token: none");

    // bob's email is not verified: no email header, and his forged one is gone.
    let bob = stack.browser();
    bob.login("bob", "/").await;
    let page = bob
        .fetch_with(
            Method::GET,
            "/api/profile/me",
            &[("x-mail", "alice@example.com")],
        )
        .await;
    assert!(
        page.json()["headers"].get("x-mail").is_none(),
        "{}",
        page.body
    );
    let page = bob.fetch(Method::GET, "/api/echo/me").await;
    let h = &page.json()["headers"];
    assert_eq!(h["x-auth-request-user"], json!(["bob"]));
    assert_eq!(h["x-auth-request-issuer"], json!([stack.provider.issuer]));
    assert!(h.get("x-auth-request-email").is_none(), "unverified");
}

#[tokio::test(flavor = "multi_thread")]
async fn background_refresh_renews_a_quiet_session_before_its_next_call() {
    let (stack, b) = alice_called_billing().await;
    let (before, _, _) = stack.tokens_of(&b).await;
    assert_eq!(
        b.fetch(Method::GET, "/api/reports/1").await.status,
        StatusCode::OK
    );
    // Four minutes and a half of quiet: the user's token, the exchanged one and the gateway's
    // own (five minutes each) are due within the minute before they expire.
    stack.gateway.clock.advance(Duration::from_secs(270));
    let renewed = crate::harness::eventually(Duration::from_secs(10), || async {
        let refreshed = stack.provider.grants("refresh_token").await;
        let exchanged = stack.provider.grants(EXCHANGE).await;
        let shared = stack.provider.grants("client_credentials").await;
        (refreshed == 1 && exchanged == 2 && shared == 2).then_some(())
    })
    .await;
    assert!(
        renewed.is_some(),
        "renewed in the background, with no request"
    );
    let (after, _, _) = stack.tokens_of(&b).await;
    assert_ne!(after, before);
    // The next calls pay no renewal: the provider sees nothing more.
    assert_eq!(
        b.fetch(Method::GET, "/api/billing/2").await.status,
        StatusCode::OK
    );
    assert_eq!(
        b.fetch(Method::GET, "/api/echo/3").await.status,
        StatusCode::OK
    );
    assert_eq!(last_bearer(&stack), after);
    assert_eq!(
        b.fetch(Method::GET, "/api/reports/4").await.status,
        StatusCode::OK
    );
    assert_eq!(stack.provider.grants("refresh_token").await, 1);
    assert_eq!(stack.provider.grants(EXCHANGE).await, 2);
    assert_eq!(stack.provider.grants("client_credentials").await, 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn forward_auth_hands_the_edge_exactly_what_the_proxy_would_send() {
    let stack = Stack::start_with(broker_provider, |g| {
        broker_gateway(g);
        g.forward_auth = Some("traefik");
    })
    .await;
    let b = stack.browser();
    b.login("alice", "/").await;
    let verify = |path: &'static str| {
        let b = &b;
        let url = stack.gateway.forward_url.clone().unwrap();
        async move {
            let forward = Browser::with_jar(&url, std::sync::Arc::clone(&b.jar));
            forward
                .fetch_with(
                    Method::GET,
                    "/auth/verify",
                    &[("x-forwarded-uri", path), ("x-forwarded-method", "GET")],
                )
                .await
        }
    };
    let answer = verify("/api/billing/x").await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    assert_eq!(
        b.fetch(Method::GET, "/api/billing/x").await.status,
        StatusCode::OK
    );
    let proxied = last_bearer(&stack);
    assert_eq!(
        answer.header("authorization"),
        Some(format!("Bearer {proxied}").as_str()),
        "the exchanged token, as the proxy sends it"
    );
    let answer = verify("/api/profile/me").await;
    assert_eq!(answer.header("x-user-id"), Some("alice"));
    assert_eq!(answer.header("x-mail"), Some("alice@example.com"));
    assert!(answer.header("authorization").is_none());
    assert!(answer.header("x-auth-request-user").is_none());
    let answer = verify("/api/public-reports/x").await;
    let claims = verified_claims(
        &stack.provider,
        answer
            .header("authorization")
            .unwrap()
            .strip_prefix("Bearer ")
            .unwrap(),
    )
    .await;
    assert_eq!(audiences(&claims), [REPORTS]);
    assert_eq!(stack.provider.grants(EXCHANGE).await, 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn two_instances_on_one_redis_exchange_once_and_share_one_client_credentials_token() {
    let redis = crate::harness::redis::Redis::start().await;
    let session_yaml = format!(
        "  store: redis\n  redis: {{ url: \"{}\", key_prefix: \"broker:\", timeout: 5s }}",
        redis.url
    );
    let stack = Stack::start_with(broker_provider, |g| {
        broker_gateway(g);
        g.session_yaml = session_yaml;
    })
    .await;
    let reserved = crate::harness::reserve_port();
    let mut opts = stack.opts.clone();
    opts.port = reserved.local_addr().unwrap().port();
    let other = Gateway::start_on(&opts, Some(reserved)).await;

    let a = stack.browser();
    a.login("alice", "/").await;
    let b = Browser::with_jar(&other.url, std::sync::Arc::clone(&a.jar));
    // 200 calls, half through each instance, half of them to each brokered service.
    let calls = (0..200).map(|i| {
        let (a, b) = (&a, &b);
        async move {
            let via = if i % 2 == 0 { a } else { b };
            let path = if i % 4 < 2 {
                "/api/billing/x"
            } else {
                "/api/reports/x"
            };
            via.fetch(Method::GET, path).await.status
        }
    });
    all_ok(&futures_util::future::join_all(calls).await);
    assert_eq!(
        stack.provider.grants(EXCHANGE).await,
        1,
        "one exchange across both instances"
    );
    assert_eq!(
        stack.provider.grants("client_credentials").await,
        1,
        "one client-credentials token across both instances"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_opaque_machine_token_passes_by_introspection_until_it_is_revoked() {
    const M2M: &str = "https://m2m.example.com";
    let stack = Stack::start_with(
        |p| {
            broker_provider(p);
            p.config["resources"][M2M] = json!({ "scope": "m2m", "format": "opaque" });
            p.clients = vec![json!({
                "client_id": "m2m", "client_secret": "m2m-secret", "redirect_uris": [],
                "grant_types": ["client_credentials"], "response_types": [],
                "token_endpoint_auth_method": "client_secret_basic",
            })];
        },
        |g| {
            g.provider_yaml = format!("    bearer_audiences: [\"{M2M}\"]\n    introspection_cache: 1s");
            g.extra_yaml = "  - path: /api/m2m/*\n    service: echo\n    upstream_path: /echo/*\n    auth: session_or_bearer\n".into();
        },
    )
    .await;
    let token = stack
        .provider
        .client_token("m2m", "m2m-secret", &[("resource", M2M), ("scope", "m2m")])
        .await;
    assert_eq!(token.matches('.').count(), 0, "an opaque token");
    let http = reqwest::Client::new();
    let call = |bearer: String| {
        let http = http.clone();
        let url = format!("{}/api/m2m/jobs", stack.gateway.url);
        async move { http.post(url).bearer_auth(bearer).send().await.unwrap() }
    };
    let resp = call(token.clone()).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let seen: Value = resp.json().await.unwrap();
    assert_eq!(
        seen["headers"]["x-auth-request-user"][0], "m2m",
        "the client it was issued to"
    );
    assert_eq!(
        seen["headers"]["x-auth-request-issuer"][0],
        stack.provider.issuer.as_str()
    );
    assert_eq!(last_bearer(&stack), token, "forwarded unchanged");

    // A token for another audience is refused, opaque or not.
    let other = stack
        .provider
        .client_token("m2m", "m2m-secret", &[("scope", "")])
        .await;
    assert_eq!(call(other).await.status(), StatusCode::UNAUTHORIZED);
    // A user's refresh token is active at the provider, but it is not an access token.
    let b = stack.browser();
    b.login("alice", "/").await;
    let (_, _, refresh) = stack.tokens_of(&b).await;
    let resp = call(refresh.expect("a refresh token")).await;
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);

    stack
        .provider
        .revoke_access_token("m2m", "m2m-secret", &token)
        .await;
    let refused = crate::harness::eventually(Duration::from_secs(5), || async {
        (call(token.clone()).await.status() == StatusCode::UNAUTHORIZED).then_some(())
    })
    .await;
    assert!(
        refused.is_some(),
        "refused once the cached answer (1 s) is gone"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_id_token_service_gets_a_fresh_id_token_not_an_expired_one() {
    let stack = Stack::start_with(
        |p| p.config = json!({ "id_token_ttl": 120 }),
        |g| g.session_yaml = "  idle_timeout: 8h".into(),
    )
    .await;
    let b = stack.browser();
    b.login("alice", "/").await;
    let (_, first, _) = stack.tokens_of(&b).await;
    assert_eq!(
        b.fetch(Method::GET, "/api/id/1").await.status,
        StatusCode::OK
    );
    assert_eq!(last_bearer(&stack), first);
    // The ID token lives two minutes, the access token five: at 90 s only the ID token is
    // due, and the service gets a new one rather than one about to expire.
    stack.gateway.clock.advance(Duration::from_secs(90));
    // The provider's clock is the real one: a second later its new ID token differs (same
    // claims within one second would sign to the same bytes).
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(
        b.fetch(Method::GET, "/api/id/2").await.status,
        StatusCode::OK
    );
    let renewed = last_bearer(&stack);
    assert_ne!(renewed, first);
    let claims = verified_claims(&stack.provider, &renewed).await;
    assert_eq!(claims["sub"], "alice");
    assert_eq!(claims["aud"], "sallyport");
    assert_eq!(stack.provider.grants("refresh_token").await, 1);
    // A user service does not care about the ID token: no refresh for it.
    assert_eq!(
        b.fetch(Method::GET, "/api/echo/3").await.status,
        StatusCode::OK
    );
    assert_eq!(stack.provider.grants("refresh_token").await, 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn provider_failures_answer_503_and_a_refused_gateway_token_502() {
    let stack = Stack::start_with(broker_provider, |g| {
        broker_gateway(g);
        g.services_yaml.push_str(&format!(
            "  unknown:\n    url: {}\n    token: {{ kind: client_credentials, resource: \"https://unknown.example.com\" }}\n",
            g.upstream
        ));
        g.extra_yaml.push_str(
            "  - path: /api/unknown/*\n    service: unknown\n    upstream_path: /echo/*\n    auth: none\n",
        );
    })
    .await;
    let b = stack.browser();
    b.login("alice", "/").await;
    // The provider refuses the gateway's own request: 502, the reason only in the log.
    let page = b.fetch(Method::GET, "/api/unknown/x").await;
    assert_eq!(page.status, StatusCode::BAD_GATEWAY, "{}", page.body);
    assert_eq!(page.json()["error"], "provider_error");
    assert!(!page.body.contains("invalid_target"));

    // The provider fails: 503, for the exchange and for client credentials, and the session stays.
    stack.provider.set_faults(&[("token_status", "500")]).await;
    for path in ["/api/billing/x", "/api/reports/x"] {
        let page = b.fetch(Method::GET, path).await;
        assert_eq!(
            page.status,
            StatusCode::SERVICE_UNAVAILABLE,
            "{path}: {}",
            page.body
        );
        assert_eq!(page.json()["error"], "provider_unavailable");
    }
    assert!(
        stack.upstream.seen.lock().unwrap().is_empty(),
        "nothing reached the upstream"
    );
    stack.provider.set_faults(&[]).await;
    assert_eq!(
        b.fetch(Method::GET, "/api/billing/x").await.status,
        StatusCode::OK
    );
    assert_eq!(
        b.fetch(Method::GET, "/api/reports/x").await.status,
        StatusCode::OK
    );
}
