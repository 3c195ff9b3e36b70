//! The `server` section: listeners, the public URL, trusted proxies, limits and timeouts.

use super::*;

/// `server.shutdown_grace`: how long in-flight requests and WebSockets get to finish.
const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(10);
/// `server.header_read_timeout`: a request head must arrive within it (slowloris).
const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// `server.max_connections`: open connections per listener.
const DEFAULT_MAX_CONNECTIONS: usize = 10_000;
/// `server.rate_limit.limit`: counted failures per client and window.
const DEFAULT_RATE_LIMIT: u32 = 60;
/// `server.rate_limit.window`.
const DEFAULT_RATE_LIMIT_WINDOW: Duration = Duration::from_secs(60);

impl Validator {
    pub(super) fn server(&mut self, raw: Option<raw::RawServer>) -> Option<ServerConfig> {
        let Some(raw) = raw else {
            self.err(
                "server",
                "is required (at least server.listen and server.public_url)",
            );
            return None;
        };
        let listen = self
            .required("server.listen", raw.listen.as_ref())
            .and_then(|l| self.socket_addr("server.listen", l));
        let listen_addr = listen;
        let admin_listen = raw
            .admin_listen
            .as_deref()
            .and_then(|l| self.socket_addr("server.admin_listen", l));
        let public_url = self
            .required("server.public_url", raw.public_url.as_ref())
            .and_then(|text| self.public_url(text));
        let mut trusted_proxies = Vec::new();
        for (i, cidr) in raw.trusted_proxies.iter().enumerate() {
            match parse_cidr(cidr) {
                Some(net) => trusted_proxies.push(net),
                None => self.err(
                    &format!("server.trusted_proxies[{i}]"),
                    "expected an IP address or CIDR such as 10.0.0.0/8",
                ),
            }
        }
        let shutdown_grace = self.duration(
            "server.shutdown_grace",
            raw.shutdown_grace.as_ref(),
            DEFAULT_SHUTDOWN_GRACE,
        );
        let header_read_timeout = self.positive_duration(
            "server.header_read_timeout",
            raw.header_read_timeout.as_ref(),
            DEFAULT_HEADER_READ_TIMEOUT,
        );
        let max_connections = match raw.max_connections {
            Some(0) => {
                self.err("server.max_connections", "must be at least 1");
                DEFAULT_MAX_CONNECTIONS
            }
            Some(n) => n as usize,
            None => DEFAULT_MAX_CONNECTIONS,
        };
        let rate_limit = (
            match raw.rate_limit.as_ref().and_then(|r| r.limit) {
                Some(0) => {
                    self.err("server.rate_limit.limit", "must be at least 1");
                    DEFAULT_RATE_LIMIT
                }
                Some(n) => n,
                None => DEFAULT_RATE_LIMIT,
            },
            self.positive_duration(
                "server.rate_limit.window",
                raw.rate_limit.as_ref().and_then(|r| r.window.as_ref()),
                DEFAULT_RATE_LIMIT_WINDOW,
            ),
        );
        let forward_auth = raw.forward_auth.and_then(|f| {
            let listen = self
                .required("server.forward_auth.listen", f.listen.as_ref())
                .and_then(|l| self.socket_addr("server.forward_auth.listen", l));
            let edge = match f.edge.as_deref() {
                Some("nginx") => Some(Edge::Nginx),
                Some("traefik") => Some(Edge::Traefik),
                Some("caddy") => Some(Edge::Caddy),
                _ => {
                    self.err(
                        "server.forward_auth.edge",
                        "expected nginx, traefik or caddy: the edge proxy that calls /auth/verify",
                    );
                    None
                }
            };
            if listen.is_some() && listen == listen_addr {
                self.err(
                    "server.forward_auth.listen",
                    "must differ from server.listen: browsers must not reach forward-auth answers, which carry tokens",
                );
                return None;
            }
            Some(ForwardAuthConfig {
                listen: listen?,
                edge: edge?,
            })
        });
        let public_url = public_url?;
        if public_url.scheme() == "https" && trusted_proxies.is_empty() {
            self.warn(
                "server.trusted_proxies",
                "empty while public_url is https: if a TLS terminator or load balancer is in front of Sallyport, every browser arrives from its address (one rate-limit bucket for everyone, its address in X-Forwarded-For); list its address or network here",
            );
        }
        Some(ServerConfig {
            header_read_timeout,
            max_connections,
            forward_auth,
            rate_limit,
            listen: listen?,
            public_origin: public_url.origin().ascii_serialization(),
            public_url,
            admin_listen,
            trusted_proxies,
            shutdown_grace,
        })
    }

    fn public_url(&mut self, text: &str) -> Option<Url> {
        const KEY: &str = "server.public_url";
        let Ok(url) = Url::parse(text) else {
            self.err(
                KEY,
                "expected an absolute URL such as https://app.example.com",
            );
            return None;
        };
        if url.path() != "/" || url.query().is_some() || url.fragment().is_some() {
            self.err(
                KEY,
                "expected an origin without path, query or fragment (Sallyport serves at the root)",
            );
            return None;
        }
        match url.scheme() {
            "https" => Some(url),
            "http" if is_localhost(&url) => Some(url),
            "http" => {
                self.err(
                    KEY,
                    "plain http is only allowed for localhost development; use an https URL (cookies must be Secure)",
                );
                None
            }
            _ => {
                self.err(KEY, "expected an http(s) URL");
                None
            }
        }
    }
}

fn parse_cidr(text: &str) -> Option<(IpAddr, u8)> {
    let (addr, prefix) = match text.split_once('/') {
        Some((a, p)) => (a.parse::<IpAddr>().ok()?, Some(p.parse::<u8>().ok()?)),
        None => (text.parse::<IpAddr>().ok()?, None),
    };
    let max = if addr.is_ipv4() { 32 } else { 128 };
    let prefix = prefix.unwrap_or(max);
    (prefix <= max).then_some((addr, prefix))
}
