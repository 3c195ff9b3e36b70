//! The admin API on the admin port, across two instances sharing Redis: a user's sessions
//! listed, one ended, all ended, readiness details; nothing without the admin bearer.

use reqwest::{Method, StatusCode};

use crate::harness::browser::Browser;
use crate::harness::redis::Redis;
use crate::login::Stack;

const TOKEN: &str = "admin-token-for-the-tests-0123456789abcdef";

/// The admin API of the instance at `admin` (base URL), as an operator's client.
struct Admin {
    base: String,
    http: reqwest::Client,
}

impl Admin {
    async fn call(&self, method: Method, path: &str, token: Option<&str>) -> (StatusCode, String) {
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let resp = req.send().await.unwrap();
        (resp.status(), resp.text().await.unwrap())
    }

    async fn json(&self, method: Method, path: &str) -> serde_json::Value {
        let (status, body) = self.call(method, path, Some(TOKEN)).await;
        assert!(status.is_success(), "{path}: {status} {body}");
        serde_json::from_str(&body).unwrap()
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_operator_lists_and_ends_a_users_sessions_on_any_instance() {
    let mut redis = Redis::start().await;
    let (admin_a, admin_b) = (crate::harness::free_port(), crate::harness::free_port());
    let session_yaml = format!(
        "  store: redis\n  redis: {{ url: \"{}\", key_prefix: \"admin:\", timeout: 2s }}",
        redis.url
    );
    let stack = Stack::start_with(
        |_| {},
        move |g| {
            g.session_yaml = session_yaml;
            g.server_yaml = format!("  admin_listen: 127.0.0.1:{admin_a}");
            g.extra_yaml = "admin: { token: ${TEST_ADMIN_TOKEN} }\n".into();
            g.env = vec![("TEST_ADMIN_TOKEN".into(), TOKEN.into())];
        },
    )
    .await;
    // A second instance on the same Redis, with its own ports.
    let mut opts_b = stack.opts.clone();
    let reserved = crate::harness::reserve_port();
    opts_b.port = reserved.local_addr().unwrap().port();
    opts_b.server_yaml = format!("  admin_listen: 127.0.0.1:{admin_b}");
    let gw_b = crate::harness::gateway::Gateway::start_on(&opts_b, Some(reserved)).await;
    let a = Admin {
        base: stack.gateway.admin_url.clone().unwrap(),
        http: reqwest::Client::new(),
    };
    let b = Admin {
        base: gw_b.admin_url.clone().unwrap(),
        http: reqwest::Client::new(),
    };

    // Alice logs in from two places on instance A, bob once.
    let laptop = Browser::with_local_address(&stack.gateway.url, "127.0.0.2");
    laptop.login("alice", "/").await;
    let phone = Browser::with_local_address(&stack.gateway.url, "127.0.0.3");
    phone.login("alice", "/").await;
    let bob = stack.browser();
    bob.login("bob", "/").await;

    // Nothing without the bearer, or with another one; and nothing on the public port.
    for token in [None, Some("wrong"), Some("")] {
        let (status, _) = b
            .call(Method::GET, "/admin/sessions?sub=alice", token)
            .await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{token:?}");
        let (status, _) = b
            .call(Method::DELETE, "/admin/sessions?sub=alice", token)
            .await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{token:?}");
    }
    assert_eq!(
        laptop
            .fetch(Method::GET, "/admin/sessions?sub=alice")
            .await
            .status,
        StatusCode::NOT_FOUND
    );

    // Instance B lists what A made: created, last seen, address; never an id or a token.
    let listed = b.json(Method::GET, "/admin/sessions?sub=alice").await;
    let sessions = listed["sessions"].as_array().unwrap();
    assert_eq!(sessions.len(), 2, "{listed}");
    let mut addresses: Vec<&str> = sessions
        .iter()
        .map(|s| s["client_address"].as_str().unwrap())
        .collect();
    addresses.sort_unstable();
    assert_eq!(addresses, ["127.0.0.2", "127.0.0.3"]);
    for s in sessions {
        assert_eq!(s["provider"], "main");
        assert!(s["created"].as_u64().unwrap() > 0 && s["last_seen"].as_u64().unwrap() > 0);
        assert_eq!(s["handle"].as_str().unwrap().len(), 16);
    }
    let text = listed.to_string();
    for browser in [&laptop, &phone] {
        assert!(!text.contains(&browser.cookie("sallyport").unwrap()));
        let (access, id, refresh) = stack.tokens_of(browser).await;
        assert!(!text.contains(&access) && !text.contains(&id));
        assert!(!text.contains(&refresh.unwrap()));
    }

    // B ends the phone's session: A refuses it at once; the laptop's goes on.
    let phone_handle = sessions
        .iter()
        .find(|s| s["client_address"] == "127.0.0.3")
        .unwrap()["handle"]
        .as_str()
        .unwrap();
    let (status, _) = b
        .call(
            Method::DELETE,
            &format!("/admin/sessions/{phone_handle}?sub=alice"),
            Some(TOKEN),
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_eq!(
        phone.fetch(Method::GET, "/api/echo/x").await.status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        laptop.fetch(Method::GET, "/api/echo/x").await.status,
        StatusCode::OK
    );
    let (status, _) = b
        .call(
            Method::DELETE,
            &format!("/admin/sessions/{phone_handle}?sub=bob"),
            Some(TOKEN),
        )
        .await;
    assert_eq!(
        status,
        StatusCode::NOT_FOUND,
        "a handle names a session of its user only"
    );

    // A ends all of alice's sessions; bob's stays.
    let ended = a.json(Method::DELETE, "/admin/sessions?sub=alice").await;
    assert_eq!(ended["ended"], 1);
    assert_eq!(
        laptop.fetch(Method::GET, "/api/echo/x").await.status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        bob.fetch(Method::GET, "/api/echo/x").await.status,
        StatusCode::OK
    );
    assert_eq!(
        b.json(Method::GET, "/admin/sessions?sub=alice").await["sessions"],
        serde_json::json!([])
    );

    // Readiness in detail.
    let ready = b.json(Method::GET, "/admin/ready").await;
    assert_eq!(ready["ready"], true, "{ready}");
    assert_eq!(ready["providers"]["main"]["ready"], true);
    assert_eq!(ready["store"]["kind"], "redis");
    assert_eq!(ready["store"]["ready"], true);
    redis.stop();
    let (status, body) = b.call(Method::GET, "/admin/ready", Some(TOKEN)).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    let body: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(body["store"]["ready"], false);
    redis.resume().await;
}
