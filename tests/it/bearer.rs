//! Machine clients on `auth: session_or_bearer` routes: their own JWT, checked against the
//! provider's JWKS and forwarded unchanged.

use reqwest::StatusCode;
use serde_json::json;

use crate::harness::bad_provider::BadProvider;
use crate::harness::gateway::Gateway;
use crate::harness::upstream::Upstream;

const M2M_ROUTE: &str = "  - path: /api/m2m/*\n    service: echo\n    upstream_path: /echo/*\n    auth: session_or_bearer\n";

#[tokio::test(flavor = "multi_thread")]
async fn bearer_jwts_are_validated_and_forwarded_unchanged() {
    let provider = BadProvider::start().await;
    let upstream = Upstream::start().await;
    let (gateway, opts) = Gateway::start_with(&provider.issuer, &upstream.url, |opts| {
        opts.provider_yaml = "    bearer_audiences: [orders-api]".into();
        opts.extra_yaml = M2M_ROUTE.into();
    })
    .await;
    let http = reqwest::Client::new();
    let url = |path: &str| format!("http://127.0.0.1:{}{path}", opts.port);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let good = json!({"iss": provider.issuer, "aud": "orders-api", "sub": "svc-reporting", "exp": now + 300, "iat": now});
    let with = |field: &str, value: serde_json::Value| {
        let mut c = good.clone();
        c[field] = value;
        c
    };

    let token = provider.sign(&good, Some("at+jwt"));
    // A machine client POSTs with no cookie and no CSRF token: nothing for CSRF to ride on.
    let resp = http
        .post(url("/api/m2m/reports"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let seen: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(seen["headers"]["x-auth-request-user"][0], "svc-reporting");
    assert_eq!(
        upstream.seen.lock().unwrap().last().unwrap(),
        &format!("Bearer {token}"),
        "forwarded unchanged"
    );

    let cases = [
        (
            "wrong audience",
            provider.sign(&with("aud", json!("billing-api")), None),
        ),
        (
            "expired",
            provider.sign(&with("exp", json!(now - 3600)), None),
        ),
        (
            "not yet valid",
            provider.sign(&with("nbf", json!(now + 3600)), None),
        ),
        (
            "an ID token",
            provider.sign(&with("nonce", json!("n")), None),
        ),
        (
            "another issuer",
            provider.sign(&with("iss", json!("http://127.0.0.1:1")), None),
        ),
        ("forged signature", provider.forged(&good)),
        ("alg none", {
            use base64::Engine as _;
            let b64 = |v: serde_json::Value| {
                base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
            };
            format!("{}.{}.", b64(json!({"alg": "none"})), b64(good.clone()))
        }),
        ("garbage", "not-a-jwt".to_owned()),
    ];
    for (what, bad) in cases {
        let resp = http
            .get(url("/api/m2m/reports"))
            .bearer_auth(&bad)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED, "{what}");
        assert_eq!(
            resp.headers()["www-authenticate"],
            "Bearer error=\"invalid_token\"",
            "{what}"
        );
        let body: serde_json::Value = resp.json().await.unwrap();
        assert_eq!(body["error"], "invalid_token", "{what}");
    }
    assert_eq!(
        upstream.seen.lock().unwrap().len(),
        1,
        "no refused token reached the upstream"
    );

    // Without a bearer, the route needs a session like any other.
    let resp = http.get(url("/api/m2m/reports")).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    // Session routes ignore a client's bearer: a valid token does not open them.
    let resp = http
        .get(url("/api/echo/orders"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    drop(gateway);
}
