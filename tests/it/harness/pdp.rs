//! The test policy decision point: OpenID AuthZEN 1.0 on Cedar (`tests/pdp/server.mjs`, npm
//! `@cedar-policy/cedar-wasm`), run by node. It counts what it evaluates, records what it was
//! asked, and can be slowed, garbled or stopped.

use std::path::Path;
use std::process::Stdio;
use std::sync::Once;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

const DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/pdp");

/// Installs the pinned engine once per test run when `npm ci` has not been run yet.
fn ensure_installed() {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        if Path::new(DIR)
            .join("node_modules/@cedar-policy/cedar-wasm")
            .exists()
        {
            return;
        }
        let status = std::process::Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund", "--prefix", DIR])
            .status()
            .expect("npm is needed for the test PDP (apt-get install nodejs npm)");
        assert!(status.success(), "npm ci in tests/pdp failed");
    });
}

/// How to run the PDP.
#[derive(Debug, Clone, Default)]
pub struct PdpOptions {
    /// The bearer token callers must present (`401` without it).
    pub bearer: Option<String>,
}

/// A running PDP; killed when dropped.
pub struct Pdp {
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    child: Child,
    http: reqwest::Client,
}

impl Pdp {
    /// Starts the PDP on the Cedar policies in `policies`.
    pub async fn start(policies: &Path, opts: PdpOptions) -> Pdp {
        ensure_installed();
        let mut cmd = Command::new("node");
        cmd.arg(format!("{DIR}/server.mjs"))
            .env("PDP_POLICIES", policies)
            .stdout(Stdio::piped())
            .stderr(if std::env::var_os("PDP_LOG").is_some() {
                Stdio::inherit()
            } else {
                Stdio::null()
            })
            .kill_on_drop(true);
        if let Some(bearer) = &opts.bearer {
            cmd.env("PDP_BEARER", bearer);
        }
        let mut child = cmd.spawn().expect("starting node (apt-get install nodejs)");
        let stdout = child.stdout.take().expect("piped stdout");
        let mut lines = BufReader::new(stdout).lines();
        let line = tokio::time::timeout(Duration::from_secs(20), lines.next_line())
            .await
            .expect("the test PDP did not start within 20 s")
            .expect("reading the PDP's stdout")
            .expect("the PDP exited before it was ready");
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        let ready: Value = serde_json::from_str(&line).expect("the PDP's ready line is JSON");
        Pdp {
            url: ready["url"]
                .as_str()
                .expect("url in the ready line")
                .to_owned(),
            child,
            http: reqwest::Client::new(),
        }
    }

    async fn stats(&self) -> Value {
        let resp = self
            .http
            .get(format!("{}/__test/stats", self.url))
            .send()
            .await
            .unwrap();
        resp.json().await.unwrap()
    }

    async fn control(&self, what: &str, body: Value) {
        let resp = self
            .http
            .post(format!("{}/__test/{what}", self.url))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert!(resp.status().is_success(), "PDP control {what}");
    }

    /// How many evaluations it answered.
    pub async fn evaluations(&self) -> u64 {
        self.stats().await["evaluations"].as_u64().unwrap()
    }

    /// The AuthZEN request bodies it received (the last 200).
    pub async fn requests(&self) -> Vec<Value> {
        self.stats().await["requests"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// The `Authorization` header of each request it received (`""` when none).
    pub async fn authorizations(&self) -> Vec<String> {
        self.stats().await["authorizations"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|a| a.as_str().unwrap_or_default().to_owned())
            .collect()
    }

    /// Delays every later answer by `ms`.
    pub async fn set_delay(&self, ms: u64) {
        self.control("delay", json!({ "ms": ms })).await;
    }

    /// Makes the AuthZEN endpoints answer garbage (`200`, not JSON).
    pub async fn set_garbage(&self, on: bool) {
        self.control("garbage", json!({ "on": on })).await;
    }

    /// Forgets what it counted and recorded.
    pub async fn reset(&self) {
        self.control("reset", json!({})).await;
    }

    /// Stops it (its port then refuses connections).
    pub async fn stop(&mut self) {
        let _ = self.child.kill().await;
    }
}
