//! Reloading the configuration of the running binary (SIGHUP and `sallyport reload`): routes,
//! services and CORS change under load without a failed request, requests in flight finish on
//! the configuration they started with, sessions survive, a broken file changes nothing, and
//! settings that need a restart are named.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};

use crate::harness::browser::Browser;
use crate::harness::gateway::GatewayOptions;
use crate::harness::provider::{Provider, ProviderOptions};
use crate::harness::upstream::Upstream;
use crate::harness::{CLIENT_SECRET, eventually, free_port};
use crate::process::Sallyport;

const TOKEN: &str = "admin-token-for-the-reload-tests-0123456789";

/// Configuration `n`: a route `/api/v{n}/*` to the echo, `/api/slow{n}` to the slow upstream
/// call (5 s), and `https://v{n}.example.com` as the CORS origin.
fn version(opts: &mut GatewayOptions, n: u32) {
    opts.extra_yaml = format!(
        "  - path: /api/v{n}/*\n    service: echo\n    upstream_path: /echo/*\n\
         \x20 - path: /api/slow{n}\n    service: public\n    upstream_path: /slow\n    auth: none\n\
         cors: {{ allowed_origins: [\"https://v{n}.example.com\"] }}\n\
         admin: {{ token: ${{TEST_ADMIN_TOKEN}} }}\n"
    );
}

/// `sallyport reload` against `sallyport`'s configuration file: exit code, stdout, stderr.
fn reload_command(sallyport: &Sallyport) -> (i32, String, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_sallyport"))
        .args(["reload", "--config"])
        .arg(sallyport.config_path())
        .env("TEST_CLIENT_SECRET", CLIENT_SECRET)
        .env("TEST_ADMIN_TOKEN", TOKEN)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn ten_reloads_under_load_fail_no_request_and_a_broken_file_changes_nothing() {
    let port = free_port();
    let admin_port = free_port();
    let provider = Provider::start(ProviderOptions::new(port)).await;
    let upstream = Upstream::start().await;
    let mut opts = GatewayOptions::new(port, &provider.issuer, &upstream.url);
    opts.server_yaml = format!("  admin_listen: 127.0.0.1:{admin_port}");
    opts.env.push(("TEST_ADMIN_TOKEN".into(), TOKEN.into()));
    version(&mut opts, 0);
    let mut sallyport = Sallyport::start(&opts, "info").await;
    let gateway = format!("http://localhost:{port}");
    let alice = Arc::new(Browser::new(&gateway));
    alice.login("alice", "/").await;

    // A request in flight on a route the first reload removes.
    let slow = {
        let b = Browser::new(&gateway);
        tokio::spawn(async move { b.fetch(Method::GET, "/api/slow0").await })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;

    // The load: 8 clients, proxied calls with alice's session and anonymous ones, bounded in
    // count and time.
    let stop = Arc::new(AtomicBool::new(false));
    let load: Vec<_> = (0..8)
        .map(|i| {
            let (alice, stop) = (Arc::clone(&alice), Arc::clone(&stop));
            tokio::spawn(async move {
                let (mut done, mut failed) = (0u32, Vec::new());
                let started = Instant::now();
                while !stop.load(Ordering::Relaxed)
                    && done < 20_000
                    && started.elapsed() < Duration::from_secs(60)
                {
                    let path = if (done + i) % 2 == 0 {
                        "/api/echo/load"
                    } else {
                        "/api/public/load"
                    };
                    let page = alice.fetch(Method::GET, path).await;
                    if page.status != StatusCode::OK {
                        failed.push(format!("{path}: {} {}", page.status, page.body));
                    }
                    done += 1;
                }
                (done, failed)
            })
        })
        .collect();

    let started = Instant::now();
    for n in 1..=10 {
        let mut next = opts.clone();
        version(&mut next, n);
        std::fs::write(sallyport.config_path(), next.yaml()).unwrap();
        if n % 2 == 1 {
            sallyport.signal("HUP");
            let serves = eventually(Duration::from_secs(10), || async {
                (alice
                    .fetch(Method::GET, &format!("/api/v{n}/x"))
                    .await
                    .status
                    == StatusCode::OK)
                    .then_some(())
            })
            .await;
            assert!(serves.is_some(), "SIGHUP {n}: the new route serves");
        } else {
            let (code, stdout, stderr) = reload_command(&sallyport);
            assert_eq!(code, 0, "reload {n}: {stdout}{stderr}");
            assert!(stdout.starts_with("reloaded: 1 provider(s)"), "{stdout}");
            // The command returns once the new configuration serves.
            let page = alice.fetch(Method::GET, &format!("/api/v{n}/x")).await;
            assert_eq!(page.status, StatusCode::OK, "reload {n}: {}", page.body);
        }
        // Let the load run on this configuration for a while.
        tokio::time::sleep(Duration::from_millis(150)).await;
        let gone = alice
            .fetch(Method::GET, &format!("/api/v{}/x", n - 1))
            .await;
        assert_eq!(
            gone.status,
            StatusCode::NOT_FOUND,
            "reload {n}: the old route is gone"
        );
    }
    let reloading = started.elapsed();
    let per_reload = sallyport
        .log()
        .lines()
        .filter(|l| l.contains("configuration reloaded"))
        .count();
    assert_eq!(per_reload, 10, "each reload is logged");
    stop.store(true, Ordering::Relaxed);
    let (mut total, mut failures) = (0, Vec::new());
    for task in load {
        let (done, failed) = task.await.unwrap();
        total += done;
        failures.extend(failed);
    }
    assert!(
        failures.is_empty(),
        "{} of {total} failed: {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
    assert!(
        total >= 200,
        "the load ran through the reloads: {total} requests"
    );
    println!("10 reloads in {reloading:?} under load: {total} requests, 0 failed");

    let slow = slow.await.unwrap();
    assert_eq!(
        slow.status,
        StatusCode::OK,
        "the request in flight finished on its route"
    );
    assert_eq!(slow.body, "late");

    // A signing key added by a reload is published at once (a key rotation without a
    // restart).
    let keys_dir = tempfile::tempdir().unwrap();
    let keys_yaml =
        crate::harness::signing_key(keys_dir.path(), sallyport::keys::NewKey::Es256, "reloaded");
    let mut keyed = opts.clone();
    version(&mut keyed, 10);
    keyed.extra_yaml.push_str(&keys_yaml);
    std::fs::write(sallyport.config_path(), keyed.yaml()).unwrap();
    let (code, stdout, stderr) = reload_command(&sallyport);
    assert_eq!(code, 0, "{stdout}{stderr}");
    let jwks: serde_json::Value =
        reqwest::get(format!("http://127.0.0.1:{port}/.well-known/jwks.json"))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
    assert_eq!(jwks["keys"][0]["kid"], "reloaded", "{jwks}");

    // CORS follows the file.
    let preflight = |origin: &'static str| {
        let http = reqwest::Client::new();
        let url = format!("http://127.0.0.1:{port}/api/v10/x");
        async move {
            http.request(Method::OPTIONS, url)
                .header("origin", origin)
                .header("access-control-request-method", "POST")
                .send()
                .await
                .unwrap()
                .status()
        }
    };
    assert!(preflight("https://v10.example.com").await.is_success());
    assert_eq!(
        preflight("https://v9.example.com").await,
        StatusCode::FORBIDDEN
    );

    // A broken file: refused with check's messages, by the command and on SIGHUP; nothing
    // changes.
    let mut broken = opts.clone();
    version(&mut broken, 11);
    let broken_yaml = broken.yaml().replace(
        "routes:\n",
        "routes:\n  - path: /api/nowhere/*\n    service: nowhere\n",
    );
    std::fs::write(sallyport.config_path(), broken_yaml).unwrap();
    let (code, stdout, stderr) = reload_command(&sallyport);
    assert_eq!(code, 2, "{stdout}{stderr}");
    assert!(stderr.contains("routes[0].service"), "{stderr}");
    // The admin API says the same to any client of its own.
    let refused = reqwest::Client::new()
        .post(format!("http://127.0.0.1:{admin_port}/admin/reload"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let body: serde_json::Value = refused.json().await.unwrap();
    assert_eq!(body["error"], "invalid_config");
    assert!(
        body["problems"][0]
            .as_str()
            .unwrap()
            .starts_with("routes[0].service"),
        "{body}"
    );
    let anonymous = reqwest::Client::new()
        .post(format!("http://127.0.0.1:{admin_port}/admin/reload"))
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);
    sallyport.signal("HUP");
    let log_says = eventually(Duration::from_secs(10), || async {
        sallyport
            .log()
            .contains("reload refused; the running configuration stays")
            .then_some(())
    })
    .await;
    assert!(log_says.is_some(), "{}", sallyport.log());
    let log = sallyport.log();
    assert!(log.contains("routes[0].service"), "the log names the key");
    assert_eq!(
        alice.fetch(Method::GET, "/api/v10/x").await.status,
        StatusCode::OK
    );
    assert_eq!(
        alice.fetch(Method::GET, "/api/v11/x").await.status,
        StatusCode::NOT_FOUND
    );

    // A provider that cannot be reached with the new file (a mistyped issuer): refused, so
    // that a reload never takes away a working login.
    let mut typo = opts.clone();
    version(&mut typo, 11);
    let dead = format!("http://127.0.0.1:{}", free_port());
    std::fs::write(
        sallyport.config_path(),
        typo.yaml().replace(&provider.issuer, &dead),
    )
    .unwrap();
    let (code, stdout, stderr) = reload_command(&sallyport);
    assert_eq!(code, 2, "{stdout}{stderr}");
    assert!(
        stderr.contains("providers.main: ready before the reload but not with the new file"),
        "{stderr}"
    );
    assert_eq!(
        alice.fetch(Method::GET, "/api/v11/x").await.status,
        StatusCode::NOT_FOUND
    );
    let fresh = Browser::new(&gateway);
    fresh.login("alice", "/").await;

    // A setting that needs a restart is named, keeps its running value, and the rest
    // reloads.
    let mut moved = opts.clone();
    version(&mut moved, 12);
    let other = free_port();
    let moved_yaml = moved.yaml().replace(
        &format!("listen: 127.0.0.1:{port}"),
        &format!("listen: 127.0.0.1:{other}"),
    );
    std::fs::write(sallyport.config_path(), moved_yaml).unwrap();
    let (code, stdout, stderr) = reload_command(&sallyport);
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(
        stdout.contains("server.listen: changed; takes effect at the next restart"),
        "{stdout}"
    );
    assert_eq!(
        alice.fetch(Method::GET, "/api/v12/x").await.status,
        StatusCode::OK,
        "still on the running port"
    );
    assert!(
        tokio::net::TcpStream::connect(("127.0.0.1", other))
            .await
            .is_err(),
        "nothing listens on the new port"
    );
    sallyport.stop();
    drop(provider);
}
