//! Serving the SPA from the same origin, and CORS for a second (development) origin.

use reqwest::{Method, StatusCode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::harness::browser::Browser;
use crate::login::Stack;

const INDEX: &str = "<!doctype html><title>spa-index-marker</title><script type=module src=/assets/index-BkX9_3aQ.js></script>";
const SCRIPT_LINE: &str =
    "console.log('a fingerprinted bundle, long enough to be worth compressing');\n";

/// A built SPA in a temporary folder, with a secret file beside it (outside the served folder).
fn spa() -> tempfile::TempDir {
    let root = tempfile::tempdir().unwrap();
    let dist = root.path().join("dist");
    std::fs::create_dir_all(dist.join("assets")).unwrap();
    std::fs::write(dist.join("index.html"), INDEX).unwrap();
    std::fs::write(
        dist.join("assets/index-BkX9_3aQ.js"),
        SCRIPT_LINE.repeat(50),
    )
    .unwrap();
    std::fs::write(dist.join("robots.txt"), "User-agent: *").unwrap();
    std::fs::write(root.path().join("secret.txt"), "top-secret-outside-dist").unwrap();
    root
}

async fn spa_stack(root: &tempfile::TempDir) -> Stack {
    let extra = format!(
        "static: {{ dir: {}, spa_fallback: index.html }}\ncors: {{ allowed_origins: [\"http://localhost:5173\"] }}",
        root.path().join("dist").display()
    );
    Stack::start_with(|_| {}, |g| g.extra_yaml = extra).await
}

#[tokio::test(flavor = "multi_thread")]
async fn the_spa_is_served_with_types_caching_compression_and_navigation_fallback() {
    let root = spa();
    let stack = spa_stack(&root).await;
    let b = stack.browser();

    let index = b.get("/").await;
    assert_eq!(index.status, StatusCode::OK);
    assert!(
        index
            .header("content-type")
            .unwrap()
            .starts_with("text/html")
    );
    assert_eq!(index.header("cache-control"), Some("no-cache"));
    assert!(index.body.contains("spa-index-marker"));
    // Only this origin may frame the SPA (clickjacking), by default.
    assert_eq!(
        index.header("content-security-policy"),
        Some("frame-ancestors 'self'")
    );
    assert_eq!(index.header("x-frame-options"), Some("SAMEORIGIN"));

    let get = |path: &'static str, headers: Vec<(&'static str, &'static str)>| {
        let b = b.clone();
        async move {
            let mut req = b.http.get(b.url(path));
            for (k, v) in headers {
                req = req.header(k, v);
            }
            req.send().await.unwrap()
        }
    };
    let js = get("/assets/index-BkX9_3aQ.js", vec![("accept", "*/*")]).await;
    assert_eq!(js.status(), StatusCode::OK);
    assert_eq!(js.headers()["content-type"], "text/javascript");
    assert_eq!(
        js.headers()["cache-control"],
        "public, max-age=31536000, immutable"
    );
    assert_eq!(js.headers()["x-content-type-options"], "nosniff");
    let robots = get("/robots.txt", vec![]).await;
    assert_eq!(
        robots.headers()["cache-control"],
        "no-cache",
        "unhashed files are revalidated"
    );

    for (encoding, expected) in [("br", "br"), ("gzip", "gzip"), ("gzip, deflate, br", "br")] {
        let resp = get(
            "/assets/index-BkX9_3aQ.js",
            vec![("accept-encoding", encoding)],
        )
        .await;
        assert_eq!(
            resp.headers()
                .get("content-encoding")
                .map(|v| v.to_str().unwrap()),
            Some(expected),
            "{encoding}"
        );
        let compressed = resp.bytes().await.unwrap();
        assert!(
            compressed.len() < SCRIPT_LINE.len() * 50 / 4,
            "{encoding}: {} bytes",
            compressed.len()
        );
    }
    let plain = get("/assets/index-BkX9_3aQ.js", vec![]).await;
    assert!(plain.headers().get("content-encoding").is_none());

    // A navigation to an app route gets index.html; a missing asset or API path does not.
    let deep = b.get("/orders/42?tab=items").await;
    assert_eq!(deep.status, StatusCode::OK);
    assert!(deep.body.contains("spa-index-marker"));
    assert_eq!(deep.header("cache-control"), Some("no-cache"));
    let nav = get(
        "/orders/42",
        vec![("sec-fetch-mode", "navigate"), ("accept", "*/*")],
    )
    .await;
    assert_eq!(
        nav.status(),
        StatusCode::OK,
        "Sec-Fetch-Mode: navigate is a navigation"
    );
    let missing_asset = get(
        "/assets/missing-Ab12Cd34.js",
        vec![("accept", "*/*"), ("sec-fetch-mode", "no-cors")],
    )
    .await;
    assert_eq!(missing_asset.status(), StatusCode::NOT_FOUND);
    let script_fetch = get(
        "/orders/42",
        vec![("accept", "text/html"), ("sec-fetch-mode", "cors")],
    )
    .await;
    assert_eq!(
        script_fetch.status(),
        StatusCode::NOT_FOUND,
        "a fetch() is not a navigation"
    );
    for ours in ["/api/nothing", "/auth/nothing", "/api"] {
        let page = b.get(ours).await;
        assert_eq!(page.status, StatusCode::NOT_FOUND, "{ours}");
        assert!(
            !page.body.contains("spa-index-marker"),
            "{ours} must not fall back to the SPA"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn who_may_frame_the_spa_is_configurable() {
    let root = spa();
    let extra = format!(
        "static: {{ dir: {}, spa_fallback: index.html, frame_ancestors: [self, \"https://portal.example.com\"] }}",
        root.path().join("dist").display()
    );
    let stack = Stack::start_with(|_| {}, |g| g.extra_yaml = extra).await;
    let b = stack.browser();
    for path in ["/", "/deep/link", "/assets/index-BkX9_3aQ.js"] {
        let page = b.get(path).await;
        assert_eq!(page.status, StatusCode::OK, "{path}");
        assert_eq!(
            page.header("content-security-policy"),
            Some("frame-ancestors 'self' https://portal.example.com"),
            "{path}"
        );
        assert!(
            page.header("x-frame-options").is_none(),
            "X-Frame-Options cannot name another origin"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn static_paths_cannot_leave_the_folder() {
    let root = spa();
    let stack = spa_stack(&root).await;
    for evil in [
        "/../secret.txt",
        "/%2e%2e/secret.txt",
        "/%2E%2E/secret.txt",
        "/assets/..%2f..%2fsecret.txt",
        "/%252e%252e/secret.txt",
        "/..%5csecret.txt",
        "/assets/../../secret.txt",
        "//secret.txt",
    ] {
        let mut tcp = tokio::net::TcpStream::connect(("127.0.0.1", stack.opts.port))
            .await
            .unwrap();
        let req = format!(
            "GET {evil} HTTP/1.1\r\nHost: localhost\r\nAccept: */*\r\nConnection: close\r\n\r\n"
        );
        tcp.write_all(req.as_bytes()).await.unwrap();
        let mut out = String::new();
        tcp.read_to_string(&mut out).await.unwrap();
        assert!(
            !out.contains("top-secret-outside-dist"),
            "{evil} escaped the static folder:\n{out}"
        );
        let status: u16 = out.split(' ').nth(1).unwrap().parse().unwrap();
        assert!(status == 400 || status == 404, "{evil}: {status}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn cors_lets_the_allowed_dev_origin_in_with_credentials_and_no_one_else() {
    let root = spa();
    let stack = spa_stack(&root).await;
    let b = stack.browser();
    b.login("alice", "/").await;
    let dev = "http://localhost:5173";

    // Preflight from the allowed origin: the route's methods, our CSRF header, a max-age.
    let pre = b
        .fetch_with(
            Method::OPTIONS,
            "/api/echo/orders",
            &[
                ("origin", dev),
                ("access-control-request-method", "POST"),
                (
                    "access-control-request-headers",
                    "content-type, x-csrf-token",
                ),
            ],
        )
        .await;
    assert_eq!(pre.status, StatusCode::NO_CONTENT, "{}", pre.body);
    assert_eq!(pre.header("access-control-allow-origin"), Some(dev));
    assert_eq!(pre.header("access-control-allow-credentials"), Some("true"));
    assert!(
        pre.header("access-control-allow-methods")
            .unwrap()
            .contains("POST")
    );
    assert!(
        pre.header("access-control-allow-headers")
            .unwrap()
            .to_lowercase()
            .contains("x-csrf-token")
    );
    assert_eq!(pre.header("access-control-max-age"), Some("600"));
    assert!(pre.header("vary").unwrap().contains("Origin"));
    let seen_before = stack.upstream.seen.lock().unwrap().len();
    // A method the route does not allow is not pre-approved.
    let pre = b
        .fetch_with(
            Method::OPTIONS,
            "/api/readonly/x",
            &[("origin", dev), ("access-control-request-method", "DELETE")],
        )
        .await;
    assert_eq!(pre.status, StatusCode::METHOD_NOT_ALLOWED);
    assert!(pre.header("access-control-allow-origin").is_none());
    // The SPA's permission questions are a POST of Sallyport's own.
    let pre = b
        .fetch_with(
            Method::OPTIONS,
            "/api/auth/evaluations",
            &[
                ("origin", dev),
                ("access-control-request-method", "POST"),
                (
                    "access-control-request-headers",
                    "content-type, x-csrf-token",
                ),
            ],
        )
        .await;
    assert_eq!(pre.status, StatusCode::NO_CONTENT, "{}", pre.body);
    assert_eq!(pre.header("access-control-allow-methods"), Some("POST"));

    // The real requests: credentialed, with the exact origin echoed, never `*`.
    let session = b
        .fetch_with(Method::GET, "/api/auth/session", &[("origin", dev)])
        .await;
    assert_eq!(session.status, StatusCode::OK);
    assert_eq!(session.header("access-control-allow-origin"), Some(dev));
    assert_eq!(
        session.header("access-control-allow-credentials"),
        Some("true")
    );
    let csrf = session.json()["csrf_token"].as_str().unwrap().to_owned();
    let post = b
        .fetch_with(
            Method::POST,
            "/api/echo/orders",
            &[
                ("origin", dev),
                ("x-csrf-token", &csrf),
                ("content-type", "application/json"),
            ],
        )
        .await;
    assert_eq!(post.status, StatusCode::OK, "{}", post.body);
    assert_eq!(post.header("access-control-allow-origin"), Some(dev));
    assert_eq!(
        stack.upstream.seen.lock().unwrap().len(),
        seen_before + 1,
        "preflights never reach the upstream"
    );

    // Any other origin: no CORS headers, preflight refused, unsafe requests refused.
    for evil in ["https://evil.example", "http://localhost:5174", "null"] {
        let pre = b
            .fetch_with(
                Method::OPTIONS,
                "/api/echo/orders",
                &[("origin", evil), ("access-control-request-method", "POST")],
            )
            .await;
        assert_eq!(pre.status, StatusCode::FORBIDDEN, "{evil}");
        assert!(
            pre.header("access-control-allow-origin").is_none(),
            "{evil}"
        );
        let get = b
            .fetch_with(Method::GET, "/api/auth/session", &[("origin", evil)])
            .await;
        assert!(
            get.header("access-control-allow-origin").is_none(),
            "{evil}"
        );
        assert!(
            get.header("access-control-allow-credentials").is_none(),
            "{evil}"
        );
        let post = b
            .fetch_with(
                Method::POST,
                "/api/echo/orders",
                &[("origin", evil), ("x-csrf-token", &csrf)],
            )
            .await;
        assert_eq!(post.status, StatusCode::FORBIDDEN, "{evil}");
    }

    // An upstream's own `Access-Control-Allow-Origin: *` never reaches the browser.
    let page = b
        .fetch_with(Method::GET, "/api/set-cookie", &[("origin", dev)])
        .await;
    assert_eq!(page.header("access-control-allow-origin"), Some(dev));
    let other = Browser::new(&stack.gateway.url);
    let page = other
        .fetch_with(
            Method::GET,
            "/api/public/x",
            &[("origin", "https://evil.example")],
        )
        .await;
    assert!(page.header("access-control-allow-origin").is_none());
}
