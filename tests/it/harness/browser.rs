//! A browser-like HTTP client: a cookie jar, redirects followed by hand, the provider's login
//! form filled in, and every response from the gateway recorded (to prove no token leaks).

use std::sync::{Arc, Mutex};

use reqwest::cookie::{CookieStore, Jar};
use reqwest::{Method, Response, StatusCode};

/// One response the browser received from the gateway: status, headers and body as text.
#[derive(Debug, Clone)]
pub struct Seen {
    /// The URL requested.
    pub url: String,
    /// Every header, `name: value`.
    pub headers: String,
    /// The body.
    pub body: String,
}

/// The browser.
#[derive(Clone)]
pub struct Browser {
    /// The client (no redirects, cookie jar).
    pub http: reqwest::Client,
    /// The cookie jar.
    pub jar: Arc<Jar>,
    gateway: String,
    /// What the gateway sent back.
    pub seen: Arc<Mutex<Vec<Seen>>>,
}

/// A response with its body read.
#[derive(Debug)]
pub struct Page {
    /// Status.
    pub status: StatusCode,
    /// Headers.
    pub headers: reqwest::header::HeaderMap,
    /// Body text.
    pub body: String,
}

impl Page {
    /// The body as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|_| panic!("not JSON ({}): {}", self.status, self.body))
    }

    /// A header as text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// Every `Set-Cookie`.
    pub fn set_cookies(&self) -> Vec<String> {
        self.headers
            .get_all("set-cookie")
            .iter()
            .map(|v| v.to_str().unwrap().to_owned())
            .collect()
    }
}

impl Browser {
    /// A fresh browser for the gateway at `gateway` (`http://localhost:PORT`).
    pub fn new(gateway: &str) -> Browser {
        Self::with_jar(gateway, Arc::new(Jar::default()))
    }

    /// The same browser (cookies) talking to another gateway on `localhost`: cookies ignore
    /// ports, as a load balancer in front of several instances would make them.
    pub fn with_jar(gateway: &str, jar: Arc<Jar>) -> Browser {
        Self::build(gateway, jar, None)
    }

    /// A fresh browser whose connections come from `ip` (another address of 127.0.0.0/8).
    pub fn with_local_address(gateway: &str, ip: &str) -> Browser {
        Self::build(gateway, Arc::new(Jar::default()), Some(ip.parse().unwrap()))
    }

    fn build(gateway: &str, jar: Arc<Jar>, local: Option<std::net::IpAddr>) -> Browser {
        let port: u16 = gateway.rsplit(':').next().unwrap().parse().unwrap();
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .cookie_provider(Arc::clone(&jar))
            .resolve("localhost", ([127, 0, 0, 1], port).into())
            .local_address(local)
            .no_proxy()
            .build()
            .unwrap();
        Browser {
            http,
            jar,
            gateway: gateway.to_owned(),
            seen: Arc::default(),
        }
    }

    /// The gateway's URL for `path`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.gateway)
    }

    async fn read(&self, url: &str, resp: Response) -> Page {
        let status = resp.status();
        let headers = resp.headers().clone();
        let body = resp.text().await.unwrap_or_default();
        if url.starts_with(&self.gateway) {
            let headers_text = headers
                .iter()
                .map(|(k, v)| format!("{k}: {}", String::from_utf8_lossy(v.as_bytes())))
                .collect::<Vec<_>>()
                .join("\n");
            self.seen.lock().unwrap().push(Seen {
                url: url.to_owned(),
                headers: headers_text,
                body: body.clone(),
            });
        }
        Page {
            status,
            headers,
            body,
        }
    }

    /// GET `url` (absolute, or a path on the gateway) as a navigation.
    pub async fn get(&self, url: &str) -> Page {
        let url = if url.starts_with('/') {
            self.url(url)
        } else {
            url.to_owned()
        };
        let resp = self
            .http
            .get(&url)
            .header("accept", "text/html")
            .send()
            .await
            .unwrap();
        self.read(&url, resp).await
    }

    /// A `fetch()`-style call on the gateway: JSON accepted, same-origin.
    pub async fn fetch(&self, method: Method, path: &str) -> Page {
        self.fetch_with(method, path, &[]).await
    }

    /// A `fetch()`-style call with extra headers.
    pub async fn fetch_with(&self, method: Method, path: &str, headers: &[(&str, &str)]) -> Page {
        let url = self.url(path);
        let mut req = self
            .http
            .request(method, &url)
            .header("accept", "application/json")
            .header("sec-fetch-site", "same-origin");
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let resp = req.send().await.unwrap();
        self.read(&url, resp).await
    }

    /// The value of the gateway cookie `name`, if the jar holds it.
    pub fn cookie(&self, name: &str) -> Option<String> {
        let url = self.gateway.parse().unwrap();
        let header = self.jar.cookies(&url)?;
        header
            .to_str()
            .ok()?
            .split("; ")
            .find_map(|p| p.strip_prefix(&format!("{name}=")).map(str::to_owned))
    }

    /// The login cookies (one per login in flight) the jar holds, as `(name, value)`.
    pub fn login_cookies(&self) -> Vec<(String, String)> {
        let url = self.gateway.parse().unwrap();
        let Some(header) = self.jar.cookies(&url) else {
            return Vec::new();
        };
        header
            .to_str()
            .unwrap()
            .split("; ")
            .filter_map(|p| p.split_once('='))
            .filter(|(k, _)| k.starts_with("sallyport-login-"))
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect()
    }

    /// Starts a login at `/auth/login?{query}` and returns the provider URL it redirects to.
    pub async fn start_login(&self, query: &str) -> String {
        let page = self.get(&format!("/auth/login?{query}")).await;
        assert_eq!(page.status, StatusCode::FOUND, "login start: {}", page.body);
        page.header("location").unwrap().to_owned()
    }

    /// Walks the provider's pages from `url` — filling in the login form as `user` — until the
    /// provider redirects back to the gateway; returns that callback URL (not yet followed).
    pub async fn through_provider(&self, url: &str, user: &str) -> String {
        self.through_provider_with(url, user, None).await
    }

    /// [`Browser::through_provider`], entering the one-time code `otp` (a multi-factor login)
    /// when given.
    pub async fn through_provider_with(&self, url: &str, user: &str, otp: Option<&str>) -> String {
        let mut url = url.to_owned();
        for _ in 0..20 {
            if url.starts_with(&self.gateway) {
                return url;
            }
            let resp = self.http.get(&url).send().await.unwrap();
            let status = resp.status();
            let base = reqwest::Url::parse(&url).unwrap();
            if status.is_redirection() {
                let loc = resp.headers()["location"].to_str().unwrap();
                url = base.join(loc).unwrap().to_string();
                continue;
            }
            let body = resp.text().await.unwrap();
            assert_eq!(status, StatusCode::OK, "provider page {url}: {body}");
            let action = body
                .split("action=\"")
                .nth(1)
                .and_then(|s| s.split('"').next())
                .unwrap_or_else(|| panic!("no form on provider page {url}: {body}"));
            let action = base.join(&action.replace("&amp;", "&")).unwrap();
            let resp = self
                .http
                .request(Method::POST, action.clone())
                .form(&[
                    ("login", user),
                    ("password", "secret"),
                    ("otp", otp.unwrap_or("")),
                ])
                .send()
                .await
                .unwrap();
            assert!(
                resp.status().is_redirection(),
                "login form answered {}",
                resp.status()
            );
            url = action
                .join(resp.headers()["location"].to_str().unwrap())
                .unwrap()
                .to_string();
        }
        panic!("the provider never redirected back to the gateway");
    }

    /// Whether a new login from this browser makes the provider ask for the password (`false`:
    /// the provider's session let it straight back to the gateway). Starts a login at the
    /// gateway and walks the provider's redirects, filling in nothing.
    pub async fn provider_asks_for_password(&self) -> bool {
        let mut url = self.start_login("return_to=%2F").await;
        for _ in 0..20 {
            if url.starts_with(&self.gateway) {
                return false;
            }
            let resp = self.http.get(&url).send().await.unwrap();
            if resp.status().is_redirection() {
                let base = reqwest::Url::parse(&url).unwrap();
                let loc = resp.headers()["location"].to_str().unwrap();
                url = base.join(loc).unwrap().to_string();
                continue;
            }
            let body = resp.text().await.unwrap();
            return body.contains("type=\"password\"");
        }
        panic!("the provider never answered with a page or a redirect to the gateway");
    }

    /// Opens the provider's end-session `url` and confirms the sign-out on its page, as a user
    /// would; panics unless the provider then sends the browser back.
    pub async fn end_provider_session(&self, url: &str) {
        let resp = self.http.get(url).send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK, "end-session page {url}");
        let body = resp.text().await.unwrap();
        let attr = |name: &str| {
            body.split(&format!("{name}=\""))
                .nth(1)
                .and_then(|s| s.split('"').next())
                .unwrap_or_else(|| panic!("no {name} on the end-session page: {body}"))
                .replace("&amp;", "&")
        };
        let action = reqwest::Url::parse(url)
            .unwrap()
            .join(&attr("action"))
            .unwrap();
        let xsrf = body
            .split("name=\"xsrf\" value=\"")
            .nth(1)
            .and_then(|s| s.split('"').next())
            .unwrap_or_else(|| panic!("no xsrf on the end-session page: {body}"))
            .to_owned();
        let resp = self
            .http
            .post(action)
            .form(&[("xsrf", xsrf.as_str()), ("logout", "yes")])
            .send()
            .await
            .unwrap();
        assert!(
            resp.status().is_redirection(),
            "confirming the sign-out answered {}",
            resp.status()
        );
    }

    /// A whole login as `user`, landing on `return_to`; returns the callback response.
    pub async fn login(&self, user: &str, return_to: &str) -> Page {
        let to_provider = self
            .start_login(&format!("return_to={}", urlencode(return_to)))
            .await;
        let callback = self.through_provider(&to_provider, user).await;
        let page = self.get(&callback).await;
        assert!(
            page.status == StatusCode::FOUND || page.status == StatusCode::OK,
            "callback failed: {} {}",
            page.status,
            page.body
        );
        page
    }

    /// The CSRF token from `/api/auth/session`.
    pub async fn csrf_token(&self) -> String {
        let page = self.fetch(Method::GET, "/api/auth/session").await;
        assert_eq!(page.status, StatusCode::OK, "{}", page.body);
        page.json()["csrf_token"].as_str().unwrap().to_owned()
    }
}

/// Percent-encodes a query value.
pub fn urlencode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}
