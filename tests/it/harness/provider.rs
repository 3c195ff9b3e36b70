//! The certified OpenID provider from the npm package `oidc-provider`, run by node.

use std::process::Stdio;
use std::sync::Once;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

const DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/provider");

/// Installs the pinned provider once per test run when `npm ci` has not been run yet.
fn ensure_installed() {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        if std::path::Path::new(DIR)
            .join("node_modules/oidc-provider")
            .exists()
        {
            return;
        }
        let status = std::process::Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund", "--prefix", DIR])
            .status()
            .expect("npm is needed for the test provider (apt-get install nodejs npm)");
        assert!(status.success(), "npm ci in tests/provider failed");
    });
}

/// How to configure the provider.
#[derive(Debug, Clone)]
pub struct ProviderOptions {
    /// Where the gateway listens (for redirect URIs).
    pub gateway_port: u16,
    /// Access token lifetime, seconds.
    pub access_token_ttl: u64,
    /// Token endpoint client authentication the client is registered with.
    pub token_endpoint_auth_method: &'static str,
    /// Register the gateway's back-channel logout endpoint.
    pub backchannel: bool,
    /// More grant types for the `sallyport` client (client credentials, token exchange).
    pub grant_types: Vec<&'static str>,
    /// More keys of `PROVIDER_CONFIG` (`resources`, `exchange_audiences`, …; see server.mjs).
    pub config: Value,
    /// More clients besides `sallyport` (machine clients).
    pub clients: Vec<Value>,
    /// More metadata of the `sallyport` client (`jwks_uri`, …).
    pub client_metadata: Value,
}

impl ProviderOptions {
    /// Defaults for a gateway on `gateway_port`.
    pub fn new(gateway_port: u16) -> Self {
        Self {
            gateway_port,
            access_token_ttl: 300,
            token_endpoint_auth_method: "client_secret_basic",
            backchannel: false,
            grant_types: Vec::new(),
            config: json!({}),
            clients: Vec::new(),
            client_metadata: json!({}),
        }
    }
}

/// A running provider; killed when dropped.
pub struct Provider {
    /// `http://127.0.0.1:PORT`.
    pub issuer: String,
    child: Child,
    http: reqwest::Client,
}

impl Provider {
    /// Starts the provider with one client, `sallyport`, for a gateway on `opts.gateway_port`.
    pub async fn start(opts: ProviderOptions) -> Provider {
        ensure_installed();
        let gw = format!("http://localhost:{}", opts.gateway_port);
        let grant_types: Vec<&str> = ["authorization_code", "refresh_token"]
            .into_iter()
            .chain(opts.grant_types.iter().copied())
            .collect();
        let mut client = json!({
            "client_id": "sallyport",
            "client_secret": super::CLIENT_SECRET,
            "redirect_uris": [format!("{gw}/auth/callback")],
            "post_logout_redirect_uris": [format!("{gw}/"), format!("{gw}/bye")],
            "grant_types": grant_types,
            "response_types": ["code"],
            "token_endpoint_auth_method": opts.token_endpoint_auth_method,
        });
        if let (Some(client), Some(extra)) =
            (client.as_object_mut(), opts.client_metadata.as_object())
        {
            client.extend(extra.clone());
        }
        if opts.backchannel {
            client["backchannel_logout_uri"] = json!(format!("{gw}/auth/backchannel-logout"));
            client["backchannel_logout_session_required"] = json!(true);
        }
        let mut config = json!({
            "access_token_ttl": opts.access_token_ttl,
            "clients": std::iter::once(client).chain(opts.clients.iter().cloned()).collect::<Vec<_>>(),
        });
        if let (Some(config), Some(extra)) = (config.as_object_mut(), opts.config.as_object()) {
            config.extend(extra.clone());
        }
        // One stalled start (seen once on a loaded 2-core machine) must not fail the run: the
        // stalled process is killed and a second one started.
        let mut attempt = 0;
        let (child, line) = loop {
            attempt += 1;
            let mut child = Command::new("node")
                .arg("--dns-result-order=ipv4first")
                .arg(format!("{DIR}/server.mjs"))
                .env("PROVIDER_CONFIG", config.to_string())
                .stdout(Stdio::piped())
                .stderr(if std::env::var_os("PROVIDER_LOG").is_some() {
                    Stdio::inherit()
                } else {
                    Stdio::null()
                })
                .kill_on_drop(true)
                .spawn()
                .expect("starting node (apt-get install nodejs)");
            let stdout = child.stdout.take().expect("piped stdout");
            let mut lines = BufReader::new(stdout).lines();
            match tokio::time::timeout(Duration::from_secs(20), lines.next_line()).await {
                Ok(line) => {
                    let line = line
                        .expect("reading the provider's stdout")
                        .expect("the provider exited before it was ready");
                    // Keep reading: the provider prints notices to stdout later, and a closed
                    // pipe kills it.
                    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
                    break (child, line);
                }
                Err(_) if attempt < 2 => {
                    eprintln!("the test provider did not start within 20 s; starting another");
                    let _ = child.kill().await;
                }
                Err(_) => panic!("the test provider did not start within 20 s, twice"),
            }
        };
        let ready: Value = serde_json::from_str(&line).expect("the provider's ready line is JSON");
        let issuer = ready["issuer"]
            .as_str()
            .expect("issuer in the ready line")
            .to_owned();
        Provider {
            issuer,
            child,
            http: reqwest::Client::new(),
        }
    }

    /// The provider's test statistics (`/__test/stats`).
    pub async fn stats(&self) -> Value {
        let resp = self
            .http
            .get(format!("{}/__test/stats", self.issuer))
            .send()
            .await
            .unwrap();
        resp.json().await.unwrap()
    }

    /// The dynamically registered clients' metadata by client id (`/__test/clients`).
    pub async fn registered_clients(&self) -> serde_json::Map<String, Value> {
        let resp = self
            .http
            .get(format!("{}/__test/clients", self.issuer))
            .send()
            .await
            .unwrap();
        resp.json().await.unwrap()
    }

    /// How many grants of `grant_type` the token endpoint issued.
    pub async fn grants(&self, grant_type: &str) -> u64 {
        self.stats().await["grants"][grant_type]
            .as_u64()
            .unwrap_or(0)
    }

    /// Asks the token endpoint for a client-credentials token as client `id` (a machine
    /// client), with the form fields `params`; the token.
    pub async fn client_token(&self, id: &str, secret: &str, params: &[(&str, &str)]) -> String {
        let mut form = vec![("grant_type", "client_credentials")];
        form.extend_from_slice(params);
        let resp = self
            .http
            .post(format!("{}/token", self.issuer))
            .basic_auth(id, Some(secret))
            .form(&form)
            .send()
            .await
            .unwrap();
        let status = resp.status();
        let body: Value = resp.json().await.unwrap();
        assert!(status.is_success(), "client credentials refused: {body}");
        body["access_token"].as_str().unwrap().to_owned()
    }

    /// Revokes an access token at the provider (RFC 7009), as the client it was issued to.
    pub async fn revoke_access_token(&self, id: &str, secret: &str, token: &str) {
        self.revoke_as(id, secret, token, "access_token").await;
    }

    /// Revokes `token` (RFC 7009) as client `id`.
    async fn revoke_as(&self, id: &str, secret: &str, token: &str, hint: &str) {
        let resp = self
            .http
            .post(format!("{}/token/revocation", self.issuer))
            .basic_auth(id, Some(secret))
            .form(&[("token", token), ("token_type_hint", hint)])
            .send()
            .await
            .unwrap();
        assert!(
            resp.status().is_success(),
            "revocation failed: {}",
            resp.status()
        );
    }

    /// The provider's signing keys, to verify what it issued.
    pub async fn jwks(&self) -> Value {
        self.http
            .get(format!("{}/jwks", self.issuer))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    /// How many token requests of `grant_type` the provider refused.
    pub async fn grant_errors(&self, grant_type: &str) -> u64 {
        self.stats().await["grant_errors"][grant_type]
            .as_u64()
            .unwrap_or(0)
    }

    /// How many token requests the faults answered instead of the provider.
    pub async fn faulted_token_requests(&self) -> u64 {
        self.stats().await["faulted_token_requests"]
            .as_u64()
            .unwrap_or(0)
    }

    /// Plays a slow or refusing provider from now on: `faults` are form fields of
    /// `/__test/faults` (`discovery_delay_ms`, `token_delay_ms`, `token_status`,
    /// `token_error`); the ones left out are cleared.
    pub async fn set_faults(&self, faults: &[(&str, &str)]) {
        let resp = self
            .http
            .post(format!("{}/__test/faults", self.issuer))
            .form(faults)
            .send()
            .await
            .unwrap();
        assert!(resp.status().is_success());
    }

    /// Revokes a refresh token at the provider (RFC 7009), as an administrator would.
    pub async fn revoke(&self, refresh_token: &str) {
        self.revoke_as(
            "sallyport",
            super::CLIENT_SECRET,
            refresh_token,
            "refresh_token",
        )
        .await;
    }
}

impl Drop for Provider {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}
