//! The built binary as operators run it: logs that never hold a secret, and a graceful stop.

use std::io::Read;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use reqwest::{Method, StatusCode};

use crate::harness::browser::Browser;
use crate::harness::gateway::GatewayOptions;
use crate::harness::provider::{Provider, ProviderOptions};
use crate::harness::upstream::Upstream;
use crate::harness::{CLIENT_SECRET, eventually, free_port};

/// The binary, stopped by PID when dropped.
pub(crate) struct Sallyport {
    child: Child,
    config: std::path::PathBuf,
    log: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl Sallyport {
    pub(crate) async fn start(opts: &GatewayOptions, rust_log: &str) -> Sallyport {
        Self::start_on(opts, rust_log, None).await
    }

    /// Starts the binary, pinned to the CPUs `cpus` (a `taskset` list) when given.
    async fn start_on(opts: &GatewayOptions, rust_log: &str, cpus: Option<&str>) -> Sallyport {
        let sallyport = Self::spawn(opts, rust_log, cpus);
        let url = format!("http://127.0.0.1:{}/auth/ready", opts.port);
        eventually(Duration::from_secs(15), || async {
            let r = reqwest::get(&url).await.ok()?;
            (r.status() == StatusCode::OK).then_some(())
        })
        .await
        .expect("sallyport becomes ready");
        sallyport
    }

    /// Starts the binary without waiting for it to be ready.
    fn spawn(opts: &GatewayOptions, rust_log: &str, cpus: Option<&str>) -> Sallyport {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("sallyport.yaml");
        std::fs::write(&config, opts.yaml()).unwrap();
        let log = dir.path().join("stderr.log");
        let mut command = match cpus {
            // taskset execs the binary, so the child's PID stays the binary's.
            Some(cpus) => {
                let mut c = Command::new("taskset");
                c.args(["-c", cpus, env!("CARGO_BIN_EXE_sallyport")]);
                c
            }
            None => Command::new(env!("CARGO_BIN_EXE_sallyport")),
        };
        let child = command
            .args(["--log-format", "json", "--config"])
            .arg(&config)
            .env("TEST_CLIENT_SECRET", CLIENT_SECRET)
            .env("RUST_LOG", rust_log)
            .envs(opts.env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        Sallyport {
            child,
            config,
            log,
            _dir: dir,
        }
    }

    /// The configuration file it runs with (a test may rewrite it and reload).
    pub(crate) fn config_path(&self) -> &std::path::Path {
        &self.config
    }

    /// Sends the process `signal` (a `kill` name, e.g. `HUP`).
    pub(crate) fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([&format!("-{signal}"), &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Stops the process by SIGTERM, as its operator would (it finishes what it was doing).
    pub(crate) fn stop(&mut self) {
        crate::harness::stop_process(&mut self.child);
    }

    pub(crate) fn log(&self) -> String {
        let mut s = String::new();
        std::fs::File::open(&self.log)
            .unwrap()
            .read_to_string(&mut s)
            .unwrap();
        s
    }
}

impl Drop for Sallyport {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A provider, an upstream, and options whose tokens are always due for a refresh (120 s
/// tokens, refreshed 200 s before they expire).
pub(crate) async fn refreshing_stack() -> (u16, Provider, Upstream, GatewayOptions) {
    let port = free_port();
    let mut popts = ProviderOptions::new(port);
    popts.access_token_ttl = 120;
    let provider = Provider::start(popts).await;
    let upstream = Upstream::start().await;
    let mut opts = GatewayOptions::new(port, &provider.issuer, &upstream.url);
    opts.refresh_before = "200s";
    (port, provider, upstream, opts)
}

#[tokio::test(flavor = "multi_thread")]
async fn debug_logs_of_a_whole_session_hold_no_secret() {
    // Every API call refreshes: the refresh path is in the log too.
    let (port, provider, upstream, opts) = refreshing_stack().await;
    let sallyport = Sallyport::start(&opts, "debug").await;

    let b = Browser::new(&format!("http://localhost:{port}"));
    let to_provider = b.start_login("return_to=/").await;
    let callback = b.through_provider(&to_provider, "alice").await;
    let param = |name: &str| {
        url::Url::parse(&callback)
            .unwrap()
            .query_pairs()
            .find(|(k, _)| k == name)
            .unwrap()
            .1
            .into_owned()
    };
    let (state, code) = (param("state"), param("code"));
    assert_eq!(b.get(&callback).await.status, StatusCode::FOUND);
    for _ in 0..2 {
        assert_eq!(
            b.fetch(Method::GET, "/api/echo/x").await.status,
            StatusCode::OK
        );
    }
    assert!(
        provider.grants("refresh_token").await >= 1,
        "the log covers a refresh"
    );
    let session_id = b.cookie("sallyport").unwrap();
    let csrf = b.csrf_token().await;
    let logout = b
        .fetch_with(
            Method::POST,
            "/auth/logout",
            &[
                ("origin", &format!("http://localhost:{port}")),
                ("x-csrf-token", &csrf),
            ],
        )
        .await;
    let continuation = logout.json()["redirect_to"].as_str().unwrap().to_owned();
    let continued = b.get(&continuation).await;
    let redirect = continued.header("location").unwrap().to_owned();
    let id_token = url::Url::parse(&redirect)
        .unwrap()
        .query_pairs()
        .find(|(k, _)| k == "id_token_hint")
        .unwrap()
        .1
        .into_owned();

    let log = sallyport.log();
    assert!(
        log.contains("login completed") && log.contains("logged out"),
        "the log is there:\n{log}"
    );
    let mut secrets = vec![
        ("client secret", CLIENT_SECRET.to_owned()),
        ("session id", session_id),
        ("state", state),
        ("code", code),
        ("csrf token", csrf),
        ("id token", id_token),
    ];
    for bearer in upstream.seen.lock().unwrap().iter() {
        secrets.push((
            "access token",
            bearer.trim_start_matches("Bearer ").to_owned(),
        ));
    }
    for (what, secret) in secrets {
        assert!(!log.contains(&secret), "the {what} is in the log");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn on_one_cpu_it_serves_everything_on_one_thread() {
    // Every API call refreshes: the token broker's waits run on the one thread too.
    let (port, provider, _upstream, opts) = refreshing_stack().await;
    let mut sallyport = Sallyport::start_on(&opts, "info", Some("0")).await;
    let log = sallyport.log();
    assert!(
        log.contains("\"runtime\":\"current_thread\"") && log.contains("\"workers\":1"),
        "a process pinned to one CPU serves on one thread:\n{log}"
    );

    let b = Browser::new(&format!("http://localhost:{port}"));
    b.login("alice", "/").await;
    let calls = (0..20).map(|i| {
        let b = &b;
        async move { b.fetch(Method::GET, &format!("/api/echo/{i}")).await.status }
    });
    for status in futures_util::future::join_all(calls).await {
        assert_eq!(status, StatusCode::OK);
    }
    assert!(provider.grants("refresh_token").await >= 1, "refreshes ran");

    let kill = Command::new("kill")
        .args(["-TERM", &sallyport.child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let mut status = None;
    for _ in 0..100 {
        status = sallyport.child.try_wait().unwrap();
        if status.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(status.expect("it stops on SIGTERM").code(), Some(0));
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_lets_in_flight_requests_finish_and_exits_zero() {
    let upstream = Upstream::start().await;
    let port = free_port();
    let opts = GatewayOptions::new(
        port,
        &format!("http://127.0.0.1:{}", free_port()),
        &upstream.url,
    );
    // The 5 s upstream endpoint without login, within the service timeout and the grace period.
    let yaml = opts
        .yaml()
        .replace("shutdown_grace: 2s", "shutdown_grace: 10s")
        .replace("timeout: 2s", "timeout: 8s")
        .replace(
            "  - path: /api/slow\n    service: echo\n",
            "  - path: /api/slow\n    service: public\n    auth: none\n",
        );
    assert!(yaml.contains("service: public\n    auth: none\n    upstream_path: /slow"));
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("sallyport.yaml");
    std::fs::write(&config, yaml).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_sallyport"))
        .arg("--config")
        .arg(&config)
        .env("TEST_CLIENT_SECRET", CLIENT_SECRET)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let base = format!("http://127.0.0.1:{port}");
    eventually(Duration::from_secs(10), || async {
        reqwest::get(format!("{base}/auth/health"))
            .await
            .ok()
            .map(|_| ())
    })
    .await
    .expect("sallyport starts (while its provider is down)");

    let in_flight = tokio::spawn(reqwest::get(format!("{base}/api/slow")));
    tokio::time::sleep(Duration::from_millis(500)).await;
    let kill = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err(),
        "no new connections after SIGTERM"
    );
    let resp = in_flight
        .await
        .unwrap()
        .expect("the in-flight request completes");
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.text().await.unwrap(), "late");
    let status = tokio::task::spawn_blocking(move || child.wait())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(status.code(), Some(0));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_refused_initial_access_token_is_a_clear_startup_error_without_the_token() {
    let port = free_port();
    let mut popts = ProviderOptions::new(port);
    popts.config =
        serde_json::json!({ "registration": { "initial_access_token": "the-right-one" } });
    let provider = Provider::start(popts).await;
    let upstream = Upstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let mut opts = GatewayOptions::new(port, &provider.issuer, &upstream.url);
    let wrong = "expired-initial-access-token-0123456789";
    opts.registration = Some("{ initial_access_token: ${TEST_DCR_IAT} }".into());
    opts.env = vec![("TEST_DCR_IAT".into(), wrong.into())];
    opts.extra_yaml = crate::harness::signing_key(dir.path(), sallyport::keys::NewKey::Es256, "1");
    opts.session_yaml = format!(
        "  store: file\n  file: {{ path: {} }}",
        dir.path().join("sessions.redb").display()
    );
    let sallyport = Sallyport::spawn(&opts, "info", None);
    let line = eventually(Duration::from_secs(10), || async {
        sallyport
            .log()
            .lines()
            .find(|l| l.contains("registration at the provider failed"))
            .map(str::to_owned)
    })
    .await
    .expect("the failure is logged");
    assert!(
        line.contains("refused the initial access token (invalid_token)")
            && line.contains("providers.<name>.registration.initial_access_token"),
        "the error names the cause and the key to fix: {line}"
    );
    assert!(line.contains(r#""provider":"main""#), "{line}");
    let ready = reqwest::get(format!("http://127.0.0.1:{port}/auth/ready"))
        .await
        .unwrap();
    assert_eq!(ready.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(!sallyport.log().contains(wrong), "the token is in the log");
}
