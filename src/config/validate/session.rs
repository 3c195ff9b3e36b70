//! The `session` section: the store, sealing keys, the cookie and the timeouts.

use super::*;

/// `session.file.path`.
const DEFAULT_FILE_PATH: &str = "./data/sessions.db";
/// `session.redis.url`.
const DEFAULT_REDIS_URL: &str = "redis://127.0.0.1:6379";
/// `session.redis.key_prefix`.
const DEFAULT_REDIS_PREFIX: &str = "sallyport:";
/// `session.redis.timeout`: per command; past it a request fails closed (`503`).
const DEFAULT_REDIS_TIMEOUT: Duration = Duration::from_secs(1);
/// `session.idle_timeout`.
const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(30 * 60);
/// `session.absolute_timeout`.
const DEFAULT_ABSOLUTE_TIMEOUT: Duration = Duration::from_secs(8 * 3600);
/// `session.stream_recheck`, which is also its largest value.
const MAX_STREAM_RECHECK: Duration = Duration::from_secs(60);
/// `session.max_pending_logins`.
const DEFAULT_MAX_PENDING_LOGINS: usize = 10_000;

impl Validator {
    pub(super) fn session(
        &mut self,
        raw: &raw::RawSession,
        server: Option<&ServerConfig>,
        base_dir: &Path,
    ) -> Option<SessionConfig> {
        let store = match raw.store.as_deref().unwrap_or("memory") {
            "memory" => Some(StoreConfig::Memory),
            "file" => {
                let path = raw
                    .file
                    .as_ref()
                    .and_then(|f| f.path.as_deref())
                    .unwrap_or(DEFAULT_FILE_PATH);
                Some(StoreConfig::File {
                    path: base_dir.join(path),
                })
            }
            "redis" => {
                let r = raw.redis.as_ref();
                let redis_url = |text: &str| {
                    url::Url::parse(text).is_ok_and(|u| {
                        matches!(u.scheme(), "redis" | "rediss" | "valkey" | "valkeys")
                            && u.has_host()
                    })
                };
                const EXPECTED: &str = "expected a redis:// or rediss:// URL such as redis://127.0.0.1:6379 (user and password may go before the host)";
                let cluster: Vec<String> = r.and_then(|r| r.cluster.clone()).unwrap_or_default();
                let mut valid = true;
                for (i, node) in cluster.iter().enumerate() {
                    if !redis_url(node) {
                        self.err(&format!("session.redis.cluster[{i}]"), EXPECTED);
                        valid = false;
                    }
                }
                if !cluster.is_empty() && r.is_some_and(|r| r.url.is_some()) {
                    self.err(
                        "session.redis",
                        "set either url (one server) or cluster (Redis Cluster nodes), not both",
                    );
                    valid = false;
                }
                let mut sentinel = None;
                if let Some(s) = r.and_then(|r| r.sentinel.as_ref()) {
                    if !cluster.is_empty() {
                        self.err("session.redis", "set either cluster or sentinel, not both");
                        valid = false;
                    }
                    let master = s.master.clone().filter(|m| !m.is_empty());
                    if master.is_none() {
                        self.err(
                            "session.redis.sentinel.master",
                            "is required: the name the Sentinels monitor the master by",
                        );
                        valid = false;
                    }
                    if s.nodes.is_empty() {
                        self.err(
                            "session.redis.sentinel.nodes",
                            "at least one Sentinel URL is required, such as redis://10.0.0.1:26379",
                        );
                        valid = false;
                    }
                    for (i, node) in s.nodes.iter().enumerate() {
                        if !redis_url(node) {
                            self.err(&format!("session.redis.sentinel.nodes[{i}]"), EXPECTED);
                            valid = false;
                        }
                    }
                    let nodes = s
                        .nodes
                        .iter()
                        .cloned()
                        .map(crate::secret::RedisUrl::new)
                        .collect();
                    sentinel = master.map(|m| (m, nodes));
                }
                let url = r
                    .and_then(|r| r.url.clone())
                    .unwrap_or_else(|| DEFAULT_REDIS_URL.into());
                if cluster.is_empty() && !redis_url(&url) {
                    self.err("session.redis.url", EXPECTED);
                    valid = false;
                }
                let timeout = self.positive_duration(
                    "session.redis.timeout",
                    r.and_then(|r| r.timeout.as_ref()),
                    DEFAULT_REDIS_TIMEOUT,
                );
                let key_prefix = r
                    .and_then(|r| r.key_prefix.clone())
                    .unwrap_or_else(|| DEFAULT_REDIS_PREFIX.into());
                valid.then(|| StoreConfig::Redis {
                    url: crate::secret::RedisUrl::new(url),
                    cluster: cluster
                        .into_iter()
                        .map(crate::secret::RedisUrl::new)
                        .collect(),
                    sentinel,
                    key_prefix,
                    timeout,
                })
            }
            _ => {
                self.err("session.store", "expected one of memory, file, redis");
                None
            }
        };
        let secure = server.is_none_or(ServerConfig::is_https);
        let same_site = match raw.cookie.same_site.as_deref().unwrap_or("lax") {
            "lax" | "Lax" => Some(SameSite::Lax),
            "strict" | "Strict" => Some(SameSite::Strict),
            "none" | "None" => {
                self.err(
                    "session.cookie.same_site",
                    "none would send the session cookie on cross-site requests; use lax or strict",
                );
                None
            }
            _ => {
                self.err("session.cookie.same_site", "expected lax or strict");
                None
            }
        };
        let default_name = if secure {
            "__Host-sallyport"
        } else {
            "sallyport"
        };
        let name = raw
            .cookie
            .name
            .clone()
            .unwrap_or_else(|| default_name.to_owned());
        if name.is_empty()
            || !name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        {
            self.err(
                "session.cookie.name",
                "expected letters, digits, '-', '_' or '.'",
            );
        } else if name.starts_with("__Host-") && !secure {
            self.err(
                "session.cookie.name",
                "a __Host- cookie needs https; with an http://localhost public_url use a name without the prefix (default: sallyport)",
            );
        } else if secure && !name.starts_with("__Host-") {
            // Allowed (some deployments share the cookie across paths), but weaker: say so.
            self.warn(
                "session.cookie.name",
                "without the __Host- prefix, a sibling subdomain can plant a cookie of this name; keep the default unless you must",
            );
        }
        let login_name = format!("{name}-login");
        let logout_name = format!("{name}-logout");
        let idle_timeout = self.positive_duration(
            "session.idle_timeout",
            raw.idle_timeout.as_ref(),
            DEFAULT_IDLE_TIMEOUT,
        );
        let absolute_timeout = self.positive_duration(
            "session.absolute_timeout",
            raw.absolute_timeout.as_ref(),
            DEFAULT_ABSOLUTE_TIMEOUT,
        );
        let stream_recheck = self.positive_duration(
            "session.stream_recheck",
            raw.stream_recheck.as_ref(),
            MAX_STREAM_RECHECK,
        );
        if stream_recheck > MAX_STREAM_RECHECK {
            self.err(
                "session.stream_recheck",
                "at most 60s: an open WebSocket must not outlive its session by longer",
            );
        }
        let mut keys = Vec::new();
        if raw.keys.is_empty() {
            self.err(
                "session.keys",
                "at least one 32-byte key is required; generate one with `openssl rand -base64 32` and pass it as ${SALLYPORT_SESSION_KEY}",
            );
        }
        for (i, key) in raw.keys.iter().enumerate() {
            match decode_key(key) {
                Ok(k) => keys.push(k),
                Err(len) => self.err(
                    &format!("session.keys[{i}]"),
                    match len {
                        Some(n) => format!(
                            "expected 32 bytes, base64-encoded, but it decodes to {n} bytes; generate one with `openssl rand -base64 32`"
                        ),
                        None => "expected 32 bytes, base64-encoded (standard or URL-safe); generate one with `openssl rand -base64 32`".to_owned(),
                    },
                ),
            }
        }
        let max_pending_logins = match raw.max_pending_logins {
            None => DEFAULT_MAX_PENDING_LOGINS,
            Some(0) => {
                self.err("session.max_pending_logins", "must be at least 1");
                DEFAULT_MAX_PENDING_LOGINS
            }
            Some(n) => n.min(10_000_000) as usize,
        };
        Some(SessionConfig {
            store: store?,
            cookie: CookieConfig {
                name,
                login_name,
                logout_name,
                same_site: same_site?,
                secure,
            },
            idle_timeout,
            absolute_timeout,
            keys,
            max_pending_logins,
            stream_recheck: stream_recheck.min(MAX_STREAM_RECHECK),
        })
    }
}

fn decode_key(text: &str) -> Result<SessionKey, Option<usize>> {
    use base64::engine::general_purpose::{STANDARD_NO_PAD, URL_SAFE_NO_PAD};
    let trimmed = text.trim().trim_end_matches('=');
    let bytes = STANDARD_NO_PAD
        .decode(trimmed)
        .or_else(|_| URL_SAFE_NO_PAD.decode(trimmed))
        .map_err(|_| None)?;
    let len = bytes.len();
    let array: [u8; 32] = bytes.try_into().map_err(|_| Some(len))?;
    Ok(SessionKey::new(array))
}
