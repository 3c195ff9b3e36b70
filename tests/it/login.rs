//! Login, the session API, logout and the attacks on them, against the real provider.

use reqwest::{Method, StatusCode};
use sallyport::session::manager::Lookup;

use crate::harness::browser::{Browser, urlencode};
use crate::harness::gateway::{Gateway, GatewayOptions};
use crate::harness::provider::{Provider, ProviderOptions};
use crate::harness::reserve_port;
use crate::harness::upstream::{Upstream, fingerprint};

/// A provider, an upstream and a gateway, wired together.
pub struct Stack {
    pub provider: Provider,
    pub upstream: Upstream,
    pub gateway: Gateway,
    pub opts: GatewayOptions,
}

impl Stack {
    pub async fn start() -> Stack {
        Self::start_with(|_| {}, |_| {}).await
    }

    pub async fn start_with(
        provider: impl FnOnce(&mut ProviderOptions),
        gateway: impl FnOnce(&mut GatewayOptions),
    ) -> Stack {
        let reserved = reserve_port();
        let port = reserved.local_addr().unwrap().port();
        let mut popts = ProviderOptions::new(port);
        provider(&mut popts);
        let provider = Provider::start(popts).await;
        let upstream = Upstream::start().await;
        let mut opts = GatewayOptions::new(port, &provider.issuer, &upstream.url);
        gateway(&mut opts);
        let gateway = Gateway::start_on(&opts, Some(reserved)).await;
        Stack {
            provider,
            upstream,
            gateway,
            opts,
        }
    }

    pub fn browser(&self) -> Browser {
        Browser::new(&self.gateway.url)
    }

    /// The browser's session record, read from the gateway's store.
    pub async fn record_of(
        &self,
        b: &Browser,
    ) -> std::sync::Arc<sallyport::session::SessionRecord> {
        let cookie = b.cookie("sallyport").expect("a session cookie");
        let mut headers = http::HeaderMap::new();
        headers.insert("cookie", format!("sallyport={cookie}").parse().unwrap());
        match self
            .gateway
            .gateway
            .state()
            .sessions
            .lookup(&headers)
            .await
            .unwrap()
        {
            Lookup::Found(s) => s.record,
            other => panic!("no session: {other:?}"),
        }
    }

    /// The tokens of the browser's session, read from the gateway's store.
    pub async fn tokens_of(&self, b: &Browser) -> (String, String, Option<String>) {
        let record = self.record_of(b).await;
        (
            record.access_token.expose().to_owned(),
            record.id_token.expose().to_owned(),
            record.refresh_token.as_ref().map(|t| t.expose().to_owned()),
        )
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn login_api_call_and_logout_end_to_end() {
    let stack = Stack::start().await;
    let b = stack.browser();

    // Not logged in: the session API says so, and an API route answers 401 JSON.
    let session = b.fetch(Method::GET, "/api/auth/session").await;
    assert_eq!(session.status, StatusCode::UNAUTHORIZED);
    assert_eq!(session.json()["authenticated"], false);
    assert_eq!(session.json()["login_url"], "/auth/login");
    let api = b.fetch(Method::GET, "/api/echo/orders").await;
    assert_eq!(api.status, StatusCode::UNAUTHORIZED);
    assert_eq!(api.json()["error"], "not_authenticated");
    assert!(
        api.json()["correlation_id"]
            .as_str()
            .is_some_and(|c| !c.is_empty())
    );

    // Log in; the callback lands on the deep link with a session cookie.
    let callback = b.login("alice", "/app/orders?tab=open#top").await;
    assert_eq!(callback.status, StatusCode::FOUND);
    assert_eq!(
        callback.header("location"),
        Some("/app/orders?tab=open#top")
    );
    let set = callback.set_cookies().join("\n");
    assert!(
        set.contains("sallyport=") && set.contains("HttpOnly") && set.contains("SameSite=Lax"),
        "{set}"
    );
    let id = b.cookie("sallyport").unwrap();
    assert_eq!(id.len(), 43, "the cookie is only an opaque id");

    let session = b.fetch(Method::GET, "/api/auth/session").await;
    assert_eq!(session.status, StatusCode::OK);
    let s = session.json();
    assert_eq!(s["authenticated"], true);
    assert_eq!(s["user"]["sub"], "alice");
    assert_eq!(s["user"]["name"], "Alice Example");
    assert_eq!(s["user"]["email"], "alice@example.com");
    assert!(s["csrf_token"].as_str().unwrap().len() >= 32);
    assert_eq!(session.header("cache-control"), Some("no-store"));

    // The API call reaches the upstream with the bearer token and identity headers.
    let (access, id_token, refresh) = stack.tokens_of(&b).await;
    let api = b
        .fetch_with(
            Method::GET,
            "/api/echo/orders/7?x=1&y=%20z",
            &[("x-auth-request-user", "admin")],
        )
        .await;
    assert_eq!(api.status, StatusCode::OK, "{}", api.body);
    let seen = api.json();
    assert_eq!(seen["path"], "/echo/orders/7");
    assert_eq!(seen["query"], "x=1&y=%20z");
    assert_eq!(seen["headers"]["authorization"][0], fingerprint(&access));
    assert_eq!(
        stack.upstream.seen.lock().unwrap().last().unwrap(),
        &format!("Bearer {access}")
    );
    assert_eq!(
        seen["headers"]["x-auth-request-user"],
        serde_json::json!(["alice"]),
        "the spoofed value is gone"
    );
    assert_eq!(
        seen["headers"]["x-auth-request-email"][0],
        "alice@example.com"
    );
    assert!(
        seen["headers"].get("cookie").is_none(),
        "our cookies never reach the upstream"
    );
    assert_eq!(seen["headers"]["x-forwarded-proto"][0], "http");
    assert_eq!(
        seen["headers"]["x-forwarded-host"][0],
        stack.gateway.url.trim_start_matches("http://")
    );
    assert!(
        !seen["headers"]["x-correlation-id"][0]
            .as_str()
            .unwrap()
            .is_empty()
    );
    // The access token is a real one: the provider's userinfo accepts it.
    let userinfo = reqwest::Client::new()
        .get(format!("{}/me", stack.provider.issuer))
        .bearer_auth(&access)
        .send()
        .await
        .unwrap();
    assert_eq!(userinfo.status(), StatusCode::OK);

    // Logout needs the CSRF token.
    let refused = b
        .fetch_with(
            Method::POST,
            "/auth/logout",
            &[("origin", &stack.gateway.url)],
        )
        .await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);
    assert_eq!(refused.json()["error"], "csrf_failed");
    let csrf = b.csrf_token().await;
    let cross_site = b
        .fetch_with(
            Method::POST,
            "/auth/logout",
            &[("origin", "https://evil.example"), ("x-csrf-token", &csrf)],
        )
        .await;
    assert_eq!(
        cross_site.status,
        StatusCode::FORBIDDEN,
        "a foreign origin is refused even with the token"
    );

    let logout = b
        .fetch_with(
            Method::POST,
            "/auth/logout?return_to=/bye",
            &[("origin", &stack.gateway.url), ("x-csrf-token", &csrf)],
        )
        .await;
    assert_eq!(logout.status, StatusCode::OK, "{}", logout.body);
    // The body page JavaScript reads holds no JWT: a Sallyport URL, bound to this browser.
    assert!(!logout.body.contains(&id_token), "{}", logout.body);
    // A JWT's payload starts with `{"`, which base64url spells `eyJ` after the first dot.
    assert!(!logout.body.contains(".eyJ"), "{}", logout.body);
    let to = logout.json()["redirect_to"].as_str().unwrap().to_owned();
    assert!(
        to.starts_with(&format!("{}/auth/logout/continue?h=", stack.gateway.url)),
        "{to}"
    );
    // Worth nothing without the browser's logout cookie (an XSS sending it home, say).
    let elsewhere = Browser::new(&stack.gateway.url).get(&to).await;
    assert_eq!(elsewhere.status, StatusCode::BAD_REQUEST);
    assert!(elsewhere.header("location").is_none());
    let continued = b.get(&to).await;
    assert_eq!(continued.status, StatusCode::SEE_OTHER);
    let to = continued.header("location").unwrap().to_owned();
    assert!(
        to.starts_with(&format!("{}/session/end", stack.provider.issuer)),
        "{to}"
    );
    assert_eq!(
        b.get(&continued_url(&logout)).await.status,
        StatusCode::BAD_REQUEST,
        "single use"
    );
    let end_session = url::Url::parse(&to).unwrap();
    let q: std::collections::HashMap<_, _> = end_session.query_pairs().into_owned().collect();
    assert_eq!(q["id_token_hint"], id_token);
    assert_eq!(q["client_id"], "sallyport");
    assert_eq!(
        q["post_logout_redirect_uri"],
        format!("{}/bye", stack.gateway.url)
    );
    assert!(
        logout
            .set_cookies()
            .iter()
            .any(|c| c.starts_with("sallyport=;") && c.contains("Max-Age=0"))
    );
    // Following it ends the session at the provider: signing in again asks for the password.
    assert!(
        !b.provider_asks_for_password().await,
        "before: the provider session lets a login through without the password"
    );
    b.end_provider_session(&to).await;
    assert!(
        b.provider_asks_for_password().await,
        "after: the provider asks for the password again"
    );

    // The old cookie is refused after logout.
    let replay = Browser::new(&stack.gateway.url);
    let api = replay
        .fetch_with(
            Method::GET,
            "/api/echo/orders",
            &[("cookie", &format!("sallyport={id}"))],
        )
        .await;
    assert_eq!(api.status, StatusCode::UNAUTHORIZED);
    assert_eq!(api.json()["error"], "session_expired");

    // No access, refresh or ID token ever reached the browser.
    let refresh = refresh.expect("the provider issued a refresh token");
    for seen in b.seen.lock().unwrap().iter() {
        for (name, token) in [("access", &access), ("refresh", &refresh)] {
            assert!(
                !seen.body.contains(token.as_str()) && !seen.headers.contains(token.as_str()),
                "{name} token in {}",
                seen.url
            );
        }
        // The ID token appears only in the end-session redirect, which goes to the provider.
        if !seen.url.contains("/auth/logout/continue") {
            assert!(
                !seen.body.contains(&id_token) && !seen.headers.contains(&id_token),
                "ID token in {}",
                seen.url
            );
        }
    }
}

fn continued_url(logout: &crate::harness::browser::Page) -> String {
    logout.json()["redirect_to"].as_str().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn logout_by_form_post_redirects_and_a_second_logout_is_harmless() {
    let stack = Stack::start().await;
    let b = stack.browser();
    b.login("bob", "/").await;
    let csrf = b.csrf_token().await;
    let resp = b
        .http
        .post(b.url("/auth/logout"))
        .header("origin", &stack.gateway.url)
        .form(&[("csrf_token", csrf.as_str()), ("return_to", "/")])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    assert!(
        resp.headers()["location"]
            .to_str()
            .unwrap()
            .contains("/session/end?")
    );
    let again = b
        .fetch_with(
            Method::POST,
            "/auth/logout",
            &[("origin", &stack.gateway.url)],
        )
        .await;
    assert_eq!(
        again.status,
        StatusCode::OK,
        "logging out without a session just clears the cookie"
    );
    assert_eq!(again.json()["redirect_to"], "/");
}

#[tokio::test(flavor = "multi_thread")]
async fn tampered_random_and_garbage_cookies_are_refused() {
    let stack = Stack::start().await;
    let b = stack.browser();
    b.login("alice", "/").await;
    let id = b.cookie("sallyport").unwrap();
    let mut tampered = id.clone().into_bytes();
    tampered[10] = if tampered[10] == b'A' { b'B' } else { b'A' };
    let tampered = String::from_utf8(tampered).unwrap();
    let random = sallyport::random::token();
    for value in [
        tampered.as_str(),
        random.as_str(),
        "garbage",
        "",
        &format!("{id}x"),
        &"A".repeat(5000),
    ] {
        let other = Browser::new(&stack.gateway.url);
        let page = other
            .fetch_with(
                Method::GET,
                "/api/echo/x",
                &[("cookie", &format!("sallyport={value}"))],
            )
            .await;
        assert_eq!(page.status, StatusCode::UNAUTHORIZED, "cookie {value:.20}");
        let session = other
            .fetch_with(
                Method::GET,
                "/api/auth/session",
                &[("cookie", &format!("sallyport={value}"))],
            )
            .await;
        assert_eq!(session.status, StatusCode::UNAUTHORIZED);
    }
    // The real one still works.
    assert_eq!(
        b.fetch(Method::GET, "/api/echo/x").await.status,
        StatusCode::OK
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn state_tampering_missing_login_cookie_and_code_replay_are_refused() {
    let stack = Stack::start().await;

    // A tampered state: the callback's state is not one this browser started.
    let b = stack.browser();
    let to_provider = b.start_login("return_to=/").await;
    let callback = b.through_provider(&to_provider, "alice").await;
    let tampered = callback.replace("state=", "state=x");
    let page = b
        .fetch(Method::GET, tampered.trim_start_matches(&stack.gateway.url))
        .await;
    assert_eq!(page.status, StatusCode::BAD_REQUEST);
    assert_eq!(page.json()["error"], "invalid_state");

    // The genuine callback, replayed from another browser without the login cookie.
    let attacker = Browser::new(&stack.gateway.url);
    let page = attacker
        .fetch(Method::GET, callback.trim_start_matches(&stack.gateway.url))
        .await;
    assert_eq!(
        page.status,
        StatusCode::BAD_REQUEST,
        "login CSRF: a callback without the login cookie is refused"
    );
    assert_eq!(page.json()["error"], "invalid_state");
    assert!(attacker.cookie("sallyport").is_none());

    // The genuine callback in the right browser works once…
    let (name, value) = b.login_cookies().pop().unwrap();
    let page = b.get(&callback).await;
    assert_eq!(page.status, StatusCode::FOUND, "{}", page.body);
    assert!(b.login_cookies().is_empty(), "the login cookie is cleared");
    // …and a replay of the same code and state, even with the login cookie, does not.
    let replay = Browser::new(&stack.gateway.url);
    let page = replay
        .fetch_with(
            Method::GET,
            callback.trim_start_matches(&stack.gateway.url),
            &[("cookie", &format!("{name}={value}"))],
        )
        .await;
    assert_eq!(page.status, StatusCode::BAD_REQUEST);
    assert_eq!(page.json()["error"], "invalid_state");
    assert!(replay.cookie("sallyport").is_none());
}

#[tokio::test(flavor = "multi_thread")]
async fn return_to_must_stay_on_this_site() {
    let stack = Stack::start().await;
    let b = stack.browser();
    for bad in [
        "https://evil.example/",
        "//evil.example/",
        "/\\evil.example",
        "http://localhost:1/x",
        "/x\r\nSet-Cookie: a=b",
    ] {
        let page = b
            .fetch(
                Method::GET,
                &format!("/auth/login?return_to={}", urlencode(bad)),
            )
            .await;
        assert_eq!(page.status, StatusCode::BAD_REQUEST, "{bad:?}");
        assert_eq!(page.json()["error"], "invalid_return_to");
    }
    // An HTML navigation gets an error page instead of JSON.
    let page = b
        .get(&format!(
            "/auth/login?return_to={}",
            urlencode("//evil.example")
        ))
        .await;
    assert!(
        page.header("content-type")
            .unwrap()
            .starts_with("text/html")
    );
    assert!(page.body.contains("invalid_return_to"));
}

#[tokio::test(flavor = "multi_thread")]
async fn each_login_gets_a_new_session_id_and_ends_the_old_one() {
    let stack = Stack::start().await;
    let b = stack.browser();
    b.login("alice", "/").await;
    let first = b.cookie("sallyport").unwrap();
    // Logging in again (the provider remembers the user) replaces the session.
    b.login("alice", "/").await;
    let second = b.cookie("sallyport").unwrap();
    assert_ne!(first, second);
    let old = Browser::new(&stack.gateway.url);
    let page = old
        .fetch_with(
            Method::GET,
            "/api/auth/session",
            &[("cookie", &format!("sallyport={first}"))],
        )
        .await;
    assert_eq!(page.status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        b.fetch(Method::GET, "/api/auth/session").await.json()["user"]["sub"],
        "alice"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn client_secret_post_works() {
    let stack = Stack::start_with(
        |p| p.token_endpoint_auth_method = "client_secret_post",
        |g| g.client_auth = "client_secret_post",
    )
    .await;
    let b = stack.browser();
    b.login("alice", "/").await;
    assert_eq!(
        b.fetch(Method::GET, "/api/auth/session").await.status,
        StatusCode::OK
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn strict_same_site_still_lands_logged_in() {
    let stack = Stack::start_with(
        |_| {},
        |g| g.session_yaml = "  cookie: { same_site: strict }".into(),
    )
    .await;
    let b = stack.browser();
    let page = b.login("alice", "/app?x=1&y=2").await;
    // A same-site page moves on, so the Strict cookie is sent with the next navigation.
    assert_eq!(page.status, StatusCode::OK);
    assert!(
        page.body.contains("content=\"0;url=/app?x=1&amp;y=2\""),
        "{}",
        page.body
    );
    assert!(
        page.set_cookies()
            .iter()
            .any(|c| c.starts_with("sallyport=") && c.contains("SameSite=Strict"))
    );
    assert!(
        page.set_cookies()
            .iter()
            .any(|c| c.starts_with("sallyport-login-") && c.contains("SameSite=Lax"))
    );
    assert_eq!(
        b.fetch(Method::GET, "/api/auth/session").await.status,
        StatusCode::OK
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_idle_timeout_ends_unused_sessions() {
    let stack = Stack::start_with(
        |_| {},
        |g| g.session_yaml = "  idle_timeout: 10m\n  absolute_timeout: 1h".into(),
    )
    .await;
    let b = stack.browser();
    b.login("alice", "/").await;
    stack
        .gateway
        .clock
        .advance(std::time::Duration::from_secs(9 * 60));
    assert_eq!(
        b.fetch(Method::GET, "/api/auth/session").await.status,
        StatusCode::OK,
        "used within the idle timeout"
    );
    stack
        .gateway
        .clock
        .advance(std::time::Duration::from_secs(9 * 60));
    assert_eq!(
        b.fetch(Method::GET, "/api/auth/session").await.status,
        StatusCode::OK,
        "each use extends it"
    );
    stack
        .gateway
        .clock
        .advance(std::time::Duration::from_secs(11 * 60));
    let page = b.fetch(Method::GET, "/api/echo/x").await;
    assert_eq!(page.status, StatusCode::UNAUTHORIZED, "idle too long");
    assert_eq!(page.json()["error"], "session_expired");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_absolute_timeout_ends_even_active_sessions() {
    let stack = Stack::start_with(
        |_| {},
        |g| g.session_yaml = "  idle_timeout: 10m\n  absolute_timeout: 1h".into(),
    )
    .await;
    let b = stack.browser();
    b.login("alice", "/").await;
    for _ in 0..6 {
        stack
            .gateway
            .clock
            .advance(std::time::Duration::from_secs(9 * 60));
        assert_eq!(
            b.fetch(Method::GET, "/api/auth/session").await.status,
            StatusCode::OK
        );
    }
    stack
        .gateway
        .clock
        .advance(std::time::Duration::from_secs(9 * 60));
    assert_eq!(
        b.fetch(Method::GET, "/api/auth/session").await.status,
        StatusCode::UNAUTHORIZED,
        "past the absolute timeout even when active"
    );
}

/// The resident set size of this process, in bytes.
fn rss() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
    let pages: u64 = statm.split(' ').nth(1).unwrap().parse().unwrap();
    pages * 4096
}

#[tokio::test(flavor = "multi_thread")]
async fn a_flood_of_login_starts_costs_nothing_and_pushes_out_no_login() {
    // Defaults: no rate limit is involved. Logins in flight live in their browser's cookie.
    let stack = Stack::start().await;
    // Someone is typing their password while the flood runs.
    let typing = stack.browser();
    let to_provider = typing.start_login("return_to=/").await;
    let callback = typing.through_provider(&to_provider, "alice").await;

    let before = rss();
    let url = format!("http://127.0.0.1:{}/auth/login", stack.opts.port);
    let flood = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let workers = (0..16).map(|_| {
        let (flood, url) = (flood.clone(), url.clone());
        tokio::spawn(async move {
            for _ in 0..100_000 / 16 {
                let status = flood.get(&url).send().await.unwrap().status();
                assert_eq!(status, StatusCode::FOUND);
            }
        })
    });
    for w in futures_util::future::join_all(workers).await {
        w.unwrap();
    }
    let grown = rss().saturating_sub(before);
    assert!(
        grown < 48 << 20,
        "100,000 login starts grew the process by {} MiB",
        grown >> 20
    );
    // The login in flight before the flood completes…
    let page = typing.get(&callback).await;
    assert_eq!(page.status, StatusCode::FOUND, "{}", page.body);
    // …and another address logs in.
    let other = Browser::with_local_address(&stack.gateway.url, "127.0.0.2");
    other.login("bob", "/").await;
    assert_eq!(
        other.fetch(Method::GET, "/api/auth/session").await.status,
        StatusCode::OK
    );

    // A login in flight expires after ten minutes.
    let late = stack.browser();
    let to_provider = late.start_login("return_to=/").await;
    let callback = late.through_provider(&to_provider, "alice").await;
    stack
        .gateway
        .clock
        .advance(std::time::Duration::from_secs(11 * 60));
    let page = late.get(&callback).await;
    assert_eq!(page.status, StatusCode::BAD_REQUEST);
    assert!(page.body.contains("invalid_state"), "{}", page.body);
}

#[tokio::test(flavor = "multi_thread")]
async fn five_tabs_logging_in_at_once_all_succeed() {
    let stack = Stack::start().await;
    let b = stack.browser();
    // Five tabs start a login at the same moment; each then finishes at the provider.
    let starts = (0..5).map(|i| {
        let b = b.clone();
        async move { b.start_login(&format!("return_to=%2Ftab{i}")).await }
    });
    let to_provider = futures_util::future::join_all(starts).await;
    assert_eq!(b.login_cookies().len(), 5, "one login cookie per tab");
    let mut callbacks = Vec::new();
    for url in &to_provider {
        callbacks.push(b.through_provider(url, "alice").await);
    }
    let finishes = callbacks.iter().map(|c| {
        let b = b.clone();
        let c = c.clone();
        async move { b.get(&c).await }
    });
    let mut landed: Vec<String> = futures_util::future::join_all(finishes)
        .await
        .into_iter()
        .map(|page| {
            assert_eq!(page.status, StatusCode::FOUND, "{}", page.body);
            page.header("location").unwrap().to_owned()
        })
        .collect();
    landed.sort();
    assert_eq!(landed, ["/tab0", "/tab1", "/tab2", "/tab3", "/tab4"]);
    assert!(
        b.login_cookies().is_empty(),
        "no login cookie is left behind"
    );

    // A sixth login pushes out the oldest in flight: cookies never pile up.
    for i in 0..7 {
        b.start_login(&format!("return_to=%2Fmore{i}")).await;
    }
    assert_eq!(b.login_cookies().len(), 5);
}
