//! Sallyport itself, run in-process through `sallyport::serve` with a config written as YAML.

use std::collections::HashMap;
use std::path::PathBuf;

use sallyport::clock::Clock;
use sallyport::config::Config;

/// How to configure a gateway for a test.
#[derive(Debug, Clone)]
pub struct GatewayOptions {
    /// The port to serve on (known before the provider starts).
    pub port: u16,
    /// The provider's issuer.
    pub issuer: String,
    /// The upstream's base URL.
    pub upstream: String,
    /// Extra YAML under `session:` (store, cookie, timeouts…).
    pub session_yaml: String,
    /// The session keys, base64.
    pub keys: Vec<String>,
    /// `tokens.refresh_before`.
    pub refresh_before: &'static str,
    /// `providers.main.client_auth`.
    pub client_auth: &'static str,
    /// Extra provider YAML lines.
    pub provider_yaml: String,
    /// A service pointing at a closed port, for `502` tests.
    pub dead_upstream: String,
    /// Extra top-level YAML (`static:`, `cors:`…), or more routes (it follows `routes:`).
    pub extra_yaml: String,
    /// More services (YAML under `services:`).
    pub services_yaml: String,
    /// `server.trusted_proxies`.
    pub trusted_proxies: &'static str,
    /// Extra YAML lines under `server:`.
    pub server_yaml: String,
    /// `server.forward_auth.edge`, with a listener on `forward_auth_port`, when set.
    pub forward_auth: Option<&'static str>,
    /// The forward-auth listener's port.
    pub forward_auth_port: u16,
    /// `providers.main.registration` (flow YAML) instead of a client id and secret.
    pub registration: Option<String>,
    /// More environment variables for `${…}` references.
    pub env: Vec<(String, String)>,
    /// The port in `server.public_url` when it is not `port` (instances behind one address).
    pub public_port: Option<u16>,
}

impl GatewayOptions {
    /// Defaults for a gateway on `port` in front of `upstream`, logging in at `issuer`.
    pub fn new(port: u16, issuer: &str, upstream: &str) -> Self {
        Self {
            port,
            issuer: issuer.to_owned(),
            upstream: upstream.to_owned(),
            session_yaml: String::new(),
            keys: vec![super::SESSION_KEY.to_owned()],
            refresh_before: "60s",
            client_auth: "client_secret_basic",
            provider_yaml: String::new(),
            dead_upstream: format!("http://127.0.0.1:{}", super::free_port()),
            extra_yaml: String::new(),
            services_yaml: String::new(),
            trusted_proxies: "[]",
            server_yaml: String::new(),
            forward_auth: None,
            forward_auth_port: super::free_port(),
            registration: None,
            env: Vec::new(),
            public_port: None,
        }
    }

    /// The YAML config these options describe.
    pub fn yaml(&self) -> String {
        let keys = self
            .keys
            .iter()
            .map(|k| format!("\"{k}\""))
            .collect::<Vec<_>>()
            .join(", ");
        let forward_auth = match self.forward_auth {
            Some(edge) => format!(
                "  forward_auth: {{ listen: 127.0.0.1:{}, edge: {edge} }}\n",
                self.forward_auth_port
            ),
            None => String::new(),
        };
        let client = match &self.registration {
            Some(registration) => format!("    registration: {registration}"),
            None => format!(
                "    client_id: sallyport\n    client_secret: ${{TEST_CLIENT_SECRET}}\n    client_auth: {}",
                self.client_auth
            ),
        };
        format!(
            r#"
server:
{forward_auth}
  listen: 127.0.0.1:{port}
  public_url: http://localhost:{public_port}
  shutdown_grace: 2s
  trusted_proxies: {trusted_proxies}
{server_yaml}
providers:
  main:
    issuer: {issuer}
{client}
    scopes: [openid, profile, email, offline_access]
    login_params: [login_hint]
{provider_yaml}
session:
  keys: [{keys}]
{session_yaml}
tokens:
  refresh_before: {refresh_before}
services:
  echo:
    url: {upstream}
    token: user
    timeout: 2s
  echo_id:
    url: {upstream}
    token: id_token
  public:
    url: {upstream}
    token: none
  dead:
    url: {dead}
{services_yaml}
routes:
  - path: /api/echo/*
    service: echo
    upstream_path: /echo/*
  - path: /api/id/*
    service: echo_id
    upstream_path: /echo/*
  - path: /api/readonly/*
    service: echo
    upstream_path: /echo/*
    methods: [GET]
  - path: /api/optional/*
    service: echo
    upstream_path: /echo/*
    auth: optional
  - path: /api/public/*
    service: public
    upstream_path: /echo/*
    auth: none
  - path: /api/public/private/*
    service: echo
    upstream_path: /echo/private/*
  - path: /api/slow
    service: echo
    upstream_path: /slow
  - path: /api/ws
    service: echo
    upstream_path: /ws
  - path: /api/events
    service: echo
    upstream_path: /events
  - path: /api/set-cookie
    service: echo
    upstream_path: /set-cookie
  - path: /api/dead/*
    service: dead
    upstream_path: /*
{extra_yaml}
"#,
            port = self.port,
            public_port = self.public_port.unwrap_or(self.port),
            issuer = self.issuer,
            provider_yaml = self.provider_yaml,
            keys = keys,
            session_yaml = self.session_yaml,
            refresh_before = self.refresh_before,
            upstream = self.upstream,
            dead = self.dead_upstream,
            extra_yaml = self.extra_yaml,
            services_yaml = self.services_yaml,
            trusted_proxies = self.trusted_proxies,
            server_yaml = self.server_yaml,
        )
    }

    /// The validated config.
    pub fn config(&self) -> Config {
        let mut env = HashMap::from([(
            "TEST_CLIENT_SECRET".to_owned(),
            super::CLIENT_SECRET.to_owned(),
        )]);
        env.extend(self.env.iter().cloned());
        Config::parse(&self.yaml(), &PathBuf::from("."), &env)
            .unwrap_or_else(|e| panic!("test config invalid:\n{e}"))
    }
}

/// A gateway serving in this test's runtime; stopped when dropped.
pub struct Gateway {
    /// `http://localhost:PORT`.
    pub url: String,
    /// `http://localhost:PORT` of the forward-auth listener, when configured (the browser's
    /// localhost cookies go along, as the edge passes them on).
    pub forward_url: Option<String>,
    /// `http://127.0.0.1:PORT` of the admin listener, when configured.
    pub admin_url: Option<String>,
    /// The clock the gateway judges expiry by.
    pub clock: Clock,
    /// The gateway's state, for inspecting sessions.
    pub gateway: sallyport::Gateway,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
}

impl Gateway {
    /// Starts a gateway with default options on a port reserved for it.
    pub async fn start_default(issuer: &str, upstream: &str) -> Gateway {
        let reserved = super::reserve_port();
        let opts = GatewayOptions::new(reserved.local_addr().unwrap().port(), issuer, upstream);
        Self::start_on(&opts, Some(reserved)).await
    }

    /// Starts a gateway in front of `upstream`, logging in at `issuer`, with the default
    /// options as `configure` changes them; returns it with its options.
    pub async fn start_with(
        issuer: &str,
        upstream: &str,
        configure: impl FnOnce(&mut GatewayOptions),
    ) -> (Gateway, GatewayOptions) {
        let reserved = super::reserve_port();
        let mut opts = GatewayOptions::new(reserved.local_addr().unwrap().port(), issuer, upstream);
        configure(&mut opts);
        (Self::start_on(&opts, Some(reserved)).await, opts)
    }

    /// Starts a gateway with `opts`, binding `opts.port`.
    pub async fn start(opts: &GatewayOptions) -> Gateway {
        Self::start_on(opts, None).await
    }

    /// Starts a gateway with `opts` on an already-bound listener for `opts.port`.
    pub async fn start_on(
        opts: &GatewayOptions,
        reserved: Option<std::net::TcpListener>,
    ) -> Gateway {
        let clock = Clock::default();
        // A file store may still be held by a gateway that just stopped while a WebSocket
        // relay finishes its last frame after the grace period.
        let config = opts.config();
        let forward_auth = config.server.forward_auth.as_ref().map(|f| f.listen);
        let admin = config.server.admin_listen;
        let last_error = std::sync::Mutex::new(String::new());
        let gateway = super::eventually(std::time::Duration::from_secs(5), || async {
            sallyport::Gateway::with_clock(opts.config(), clock.clone())
                .map_err(|e| *last_error.lock().unwrap() = e.to_string())
                .ok()
        })
        .await
        .unwrap_or_else(|| panic!("gateway starts: {}", last_error.lock().unwrap()));
        let listener = match reserved {
            Some(l) => {
                l.set_nonblocking(true).unwrap();
                tokio::net::TcpListener::from_std(l).unwrap()
            }
            None => tokio::net::TcpListener::bind(("127.0.0.1", opts.port))
                .await
                .expect("gateway port free"),
        };
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let forward_listener = match forward_auth {
            Some(addr) => Some(
                tokio::net::TcpListener::bind(addr)
                    .await
                    .expect("forward-auth port free"),
            ),
            None => None,
        };
        let admin_listener = match admin {
            Some(addr) => Some(
                tokio::net::TcpListener::bind(addr)
                    .await
                    .expect("admin port free"),
            ),
            None => None,
        };
        let listeners = sallyport::Listeners {
            public: listener,
            admin: admin_listener,
            forward_auth: forward_listener,
        };
        let task = tokio::spawn(sallyport::serve(gateway.clone(), listeners, async {
            let _ = stopped.await;
        }));
        Gateway {
            url: format!("http://localhost:{}", opts.port),
            forward_url: forward_auth.map(|a| format!("http://localhost:{}", a.port())),
            admin_url: admin.map(|a| format!("http://127.0.0.1:{}", a.port())),
            clock,
            gateway,
            stop: Some(stop),
            task: Some(task),
        }
    }

    /// Stops serving and waits until the listener is closed.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}
