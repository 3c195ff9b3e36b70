//! The validated configuration: typed values built once from `sallyport.yaml`.
//!
//! Loading has two stages: [`raw`] mirrors the YAML (after `${NAME}` interpolation, see [`env`]),
//! and [`validate`] turns it into [`Config`], collecting every problem as a [`ConfigError`] that
//! names the key path and the fix. No error ever echoes a configured value.

mod duration;
pub mod env;
mod raw;
mod size;
mod validate;
pub use validate::default_identity_headers;

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use http::{HeaderName, Method};
use url::Url;

pub use env::{EnvSource, ProcessEnv};

use crate::secret::{ClientSecret, SessionKey};

/// The header size limit of routes without `max_headers`, and of Sallyport's own endpoints
/// and static files: 16 KiB, well above what browsers send (a few KiB of cookies).
pub const DEFAULT_MAX_HEADERS: u64 = 16 * 1024;

/// Everything Sallyport needs to run, checked.
#[derive(Debug)]
pub struct Config {
    /// `server`.
    pub server: ServerConfig,
    /// `providers`, in file order; the first is the default.
    pub providers: Vec<ProviderConfig>,
    /// `session`.
    pub session: SessionConfig,
    /// `tokens`.
    pub tokens: TokensConfig,
    /// `services`, in file order; routes refer to them by index.
    pub services: Vec<ServiceConfig>,
    /// `routes`, in file order.
    pub routes: Vec<RouteConfig>,
    /// `static`.
    pub static_files: Option<StaticConfig>,
    /// `csrf`.
    pub csrf: CsrfConfig,
    /// `cors`.
    pub cors: CorsConfig,
    /// `authz`.
    pub authz: AuthzConfig,
    /// `signing_keys`: Sallyport's own keys, the first signs, all are published.
    pub signing_keys: std::sync::Arc<crate::keys::Keys>,
    /// `telemetry`.
    pub telemetry: TelemetryConfig,
    /// `admin.token`: the admin API's bearer token; without one the API is off.
    pub admin_token: Option<ClientSecret>,
    /// Settings that are valid but probably not what was meant (`check` prints them, `serve`
    /// logs them).
    pub warnings: Vec<ConfigError>,
}

/// `telemetry`.
#[derive(Debug, Clone)]
pub struct TelemetryConfig {
    /// Record metrics and serve them at `GET /metrics` on `server.admin_listen`.
    pub metrics: bool,
    /// Export traces over OTLP/HTTP; `None` leaves tracing off (and free).
    pub otlp: Option<OtlpConfig>,
}

/// `telemetry.otlp`.
#[derive(Debug, Clone, PartialEq)]
pub struct OtlpConfig {
    /// Where spans are posted: the collector's `/v1/traces`.
    pub traces_url: Url,
    /// The share of traces started here that are recorded, `0.0..=1.0`.
    pub sample_ratio: f64,
    /// The `service.name` resource attribute.
    pub service_name: String,
}

/// `server`.
#[derive(Debug)]
pub struct ServerConfig {
    /// The public listener's address.
    pub listen: SocketAddr,
    /// The browser-facing origin, e.g. `https://app.example.com`.
    pub public_url: Url,
    /// `public_url`'s origin serialised (`scheme://host[:port]`), for `Origin` comparisons.
    pub public_origin: String,
    /// The admin listener's address, if any.
    pub admin_listen: Option<SocketAddr>,
    /// Networks whose `X-Forwarded-*` headers are believed.
    pub trusted_proxies: Vec<(IpAddr, u8)>,
    /// How long in-flight requests may finish after a stop signal.
    pub shutdown_grace: Duration,
    /// How long a request head may take to arrive, and a connection may idle between
    /// requests.
    pub header_read_timeout: Duration,
    /// Open connections per listener at most; more wait in the kernel's backlog.
    pub max_connections: usize,
    /// Failed attempts (login callbacks, client bearers) allowed per client and window.
    pub rate_limit: (u32, Duration),
    /// The forward-auth listener, if an edge proxy asks Sallyport about its requests.
    pub forward_auth: Option<ForwardAuthConfig>,
}

/// `server.forward_auth`: where an edge proxy (nginx `auth_request`, Traefik ForwardAuth,
/// Caddy `forward_auth`) asks whether a request may pass, and gets the bearer token to add.
///
/// # Security
/// The answers carry the user's tokens, so they are served on a listener of their own that
/// only the edge reaches, never on the public port, where page JavaScript could ask.
#[derive(Debug, Clone)]
pub struct ForwardAuthConfig {
    /// The listener's address.
    pub listen: SocketAddr,
    /// Which edge calls, so that only the headers it sets are read.
    pub edge: Edge,
}

/// The kind of edge proxy calling forward-auth: it decides which headers describe the
/// original request, and whether a login redirect can be passed on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Edge {
    /// nginx `auth_request`: `X-Original-URI` and `X-Original-Method`; only `2xx`, `401` and
    /// `403` pass, so a login redirect is the recipe's `error_page 401`.
    Nginx,
    /// Traefik ForwardAuth: `X-Forwarded-Uri` and `X-Forwarded-Method`; answers other than
    /// `2xx` go back to the browser as they are, so navigations get the `302` to login.
    Traefik,
    /// Caddy `forward_auth`: the same headers and behaviour as Traefik.
    Caddy,
}

impl Edge {
    /// The headers holding the original request's URI and method.
    pub fn original_headers(self) -> (&'static str, &'static str) {
        match self {
            Edge::Nginx => ("x-original-uri", "x-original-method"),
            Edge::Traefik | Edge::Caddy => ("x-forwarded-uri", "x-forwarded-method"),
        }
    }

    /// Whether the edge passes a `302` answer on to the browser.
    pub fn passes_redirects(self) -> bool {
        !matches!(self, Edge::Nginx)
    }
}

impl ServerConfig {
    /// The redirect URI registered at the provider.
    pub fn redirect_uri(&self) -> String {
        format!("{}/auth/callback", self.public_origin)
    }

    /// Whether the browser reaches Sallyport over https.
    pub fn is_https(&self) -> bool {
        self.public_url.scheme() == "https"
    }
}

/// How Sallyport authenticates to a provider's token endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAuth {
    /// HTTP Basic with the client id and secret (RFC 6749 §2.3.1).
    ClientSecretBasic,
    /// Client id and secret in the form body.
    ClientSecretPost,
    /// A client assertion signed with Sallyport's first signing key (RFC 7523, OIDC Core §9).
    PrivateKeyJwt {
        /// The assertion's `aud`.
        audience: AssertionAudience,
    },
}

/// `providers.<name>.profile`: a preset of settings a security profile asks of a client.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Profile {
    /// No preset.
    #[default]
    None,
    /// FAPI 2.0 Security Profile: PAR required, `private_key_jwt` with the issuer as audience,
    /// DPoP, PS256/ES256/EdDSA only, and the `iss` authorization response parameter required.
    Fapi2,
}

/// Whether logins push their authorization request first (RFC 9126, `providers.<name>.par`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Par {
    /// When the provider's discovery offers it (the default), within the per-client budget of
    /// pushed requests; over it, a front-channel request unless the provider requires PAR.
    Auto,
    /// Always; a provider without it is not ready.
    Required,
    /// Never.
    Off,
}

/// What a client assertion names as its audience.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AssertionAudience {
    /// The provider's issuer identifier (RFC 7523 §3, the default).
    Issuer,
    /// The provider's token endpoint (for providers that want that).
    TokenEndpoint,
}

/// Sallyport's client id at a provider: from the config, or set once by Dynamic Client
/// Registration at startup (until then it is empty and the provider is not ready). Clones share
/// it, so every copy of the config learns the registered id.
#[derive(Debug, Clone, Default)]
pub struct ClientId(std::sync::Arc<std::sync::OnceLock<String>>);

impl ClientId {
    /// A configured client id.
    pub fn fixed(id: impl Into<String>) -> Self {
        let this = Self::default();
        this.0.set(id.into()).expect("a new cell is empty");
        this
    }

    /// The client id; empty while a registration is pending.
    pub fn as_str(&self) -> &str {
        self.0.get().map_or("", String::as_str)
    }

    /// Whether the client id is known (configured, or registered).
    pub fn is_known(&self) -> bool {
        self.0.get().is_some()
    }

    /// Learns the registered client id; `false` when another one is already known (a
    /// registration cannot change the client id).
    pub fn learn(&self, id: &str) -> bool {
        self.0.get_or_init(|| id.to_owned()) == id
    }
}

impl std::fmt::Display for ClientId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `providers.<name>.registration`: register Sallyport at startup (RFC 7591).
#[derive(Debug, Clone)]
pub struct RegistrationConfig {
    /// The initial access token, as a bearer for the registration endpoint.
    pub initial_access_token: InitialAccessToken,
}

/// Where the initial access token of a registration comes from.
#[derive(Debug, Clone)]
pub enum InitialAccessToken {
    /// The provider allows open registration: none is sent.
    None,
    /// The configured token.
    Token(ClientSecret),
    /// The config names an environment variable that is not set: fine once a registration is
    /// stored, a startup error (naming it) before.
    Unset(String),
}

/// `providers.<name>`.
#[derive(Debug, Clone)]
pub struct ProviderConfig {
    /// The key under `providers`.
    pub name: String,
    /// The issuer identifier exactly as configured; discovery must report the same string.
    pub issuer: String,
    /// Sallyport's client id at this provider: configured, or learned by registering.
    pub client_id: ClientId,
    /// Dynamic Client Registration at startup, when no client id is configured.
    pub registration: Option<RegistrationConfig>,
    /// The client secret (empty with `private_key_jwt`).
    pub client_secret: ClientSecret,
    /// Sallyport's signing keys, for `private_key_jwt`.
    pub signing_keys: std::sync::Arc<crate::keys::Keys>,
    /// Token endpoint client authentication.
    pub client_auth: ClientAuth,
    /// Pushed authorization requests.
    pub par: Par,
    /// Bind the session's tokens to a per-session DPoP key (RFC 9449).
    pub dpop: bool,
    /// The security profile the provider's settings follow.
    pub profile: Profile,
    /// Scopes requested at login.
    pub scopes: Vec<String>,
    /// Query parameters `/auth/login` passes on.
    pub login_params: Vec<String>,
    /// Whether to call userinfo after login.
    pub userinfo: bool,
    /// How long discovery metadata and JWKS are cached.
    pub discovery_ttl: Duration,
    /// Accepted ID-token signature algorithms (`none` is never accepted).
    pub id_token_algs: Vec<jsonwebtoken::Algorithm>,
    /// Allowed clock difference for `exp`/`iat`.
    pub clock_skew: Duration,
    /// Audiences a client's bearer JWT must name (`session_or_bearer` routes).
    pub bearer_audiences: Vec<String>,
    /// How long an opaque bearer's active introspection result is reused: a token revoked at
    /// the provider is refused at most this much later.
    pub introspection_cache: Duration,
}

/// `session`.
#[derive(Debug, Clone)]
pub struct SessionConfig {
    /// Which backend holds sessions.
    pub store: StoreConfig,
    /// The session and login cookies.
    pub cookie: CookieConfig,
    /// A session unused this long ends.
    pub idle_timeout: Duration,
    /// A session ends this long after login, used or not.
    pub absolute_timeout: Duration,
    /// Sealing keys; the first seals, all open.
    pub keys: Vec<SessionKey>,
    /// Upper bound on stored one-shot records (logout continuations).
    pub max_pending_logins: usize,
    /// How often an open stream (WebSocket, streamed response) checks that its session still
    /// exists; at most 60 s.
    pub stream_recheck: Duration,
}

/// Which session store to use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreConfig {
    /// In-process, lost on restart.
    Memory,
    /// Embedded, durable file.
    File {
        /// The database file.
        path: PathBuf,
    },
    /// Redis or Valkey, shared by many instances.
    Redis {
        /// The server URL (may hold a password); with `cluster`, unused.
        url: crate::secret::RedisUrl,
        /// Redis Cluster node URLs; empty for a single server.
        cluster: Vec<crate::secret::RedisUrl>,
        /// Redis Sentinel: the master's name and the Sentinels' URLs.
        sentinel: Option<(String, Vec<crate::secret::RedisUrl>)>,
        /// Prefix of every key.
        key_prefix: String,
        /// Bound on each call.
        timeout: Duration,
    },
}

impl StoreConfig {
    /// `memory`, `file`, `redis`, `redis-cluster` or `redis-sentinel`.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Memory => "memory",
            Self::File { .. } => "file",
            Self::Redis { cluster, .. } if !cluster.is_empty() => "redis-cluster",
            Self::Redis {
                sentinel: Some(_), ..
            } => "redis-sentinel",
            Self::Redis { .. } => "redis",
        }
    }
}

/// `SameSite` for the session cookie.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SameSite {
    /// Sent on top-level cross-site navigations.
    Lax,
    /// Never sent cross-site.
    Strict,
}

/// Cookie names and attributes, derived once.
#[derive(Debug, Clone)]
pub struct CookieConfig {
    /// The session cookie's name.
    pub name: String,
    /// The short-lived login cookie's name.
    pub login_name: String,
    /// The short-lived cookie that binds a JSON logout's continuation URL to this browser.
    pub logout_name: String,
    /// The session cookie's `SameSite`.
    pub same_site: SameSite,
    /// Whether cookies carry `Secure` (false only for http://localhost development).
    pub secure: bool,
}

/// `tokens`.
#[derive(Debug)]
pub struct TokensConfig {
    /// Refresh an access token that expires within this long.
    pub refresh_before: Duration,
    /// Renew the tokens of active sessions (and client-credentials tokens) before they
    /// expire, without waiting for a request.
    pub background_refresh: bool,
    /// The lifetime assumed for an access token whose provider does not say.
    pub default_lifetime: Duration,
}

/// Which kind of token a service receives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenKind {
    /// No `Authorization` header.
    None,
    /// The user's access token.
    User,
    /// The user's ID token.
    IdToken,
    /// Sallyport's own token (RFC 6749 §4.4), shared by all sessions.
    ClientCredentials,
    /// The session's token exchanged for one meant for this service (RFC 8693).
    Exchange,
}

/// What an exchange presents as its subject token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubjectToken {
    /// The session's access token.
    AccessToken,
    /// The session's ID token.
    IdToken,
}

/// `services.<name>.token`: the kind, and for brokered kinds what to ask for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenSpec {
    /// The kind.
    pub kind: TokenKind,
    /// The provider (key under `providers`) whose token endpoint issues it; `None`: the
    /// session's (exchange) or the first (client credentials).
    pub provider: Option<String>,
    /// RFC 8693 `audience`.
    pub audience: Option<String>,
    /// RFC 8707 `resource`.
    pub resource: Option<String>,
    /// Requested scopes (none: the provider's default).
    pub scopes: Vec<String>,
    /// What an exchange presents.
    pub subject_token: SubjectToken,
}

impl TokenSpec {
    /// A shorthand kind without parameters.
    pub fn of(kind: TokenKind) -> Self {
        Self {
            kind,
            provider: None,
            audience: None,
            resource: None,
            scopes: Vec::new(),
            subject_token: SubjectToken::AccessToken,
        }
    }

    /// Whether the broker obtains this token (client credentials, exchange).
    pub fn is_brokered(&self) -> bool {
        matches!(
            self.kind,
            TokenKind::ClientCredentials | TokenKind::Exchange
        )
    }
}

/// What an identity header carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// The user's `sub` at the provider that vouched for them.
    Sub,
    /// That provider's issuer identifier: `sub` is unique only together with it.
    Issuer,
    /// The user's email, only when the provider says it is verified (`email_verified`).
    VerifiedEmail,
    /// Any other claim of the session; arrays are joined with `,`.
    Named(String),
}

/// One identity header a service receives.
#[derive(Debug, Clone)]
pub struct IdentityHeader {
    /// The header.
    pub name: HeaderName,
    /// Its value's source.
    pub claim: Claim,
}

/// `services.<name>`.
#[derive(Debug)]
pub struct ServiceConfig {
    /// The key under `services`.
    pub name: String,
    /// Base URL of the upstream.
    pub url: Url,
    /// Which token it gets.
    pub token: TokenSpec,
    /// The identity headers it gets.
    pub headers: Vec<IdentityHeader>,
    /// Time allowed until response headers.
    pub timeout: Duration,
    /// Send the user's token as `Authorization: DPoP` with a proof for each request, when the
    /// session's tokens are DPoP-bound.
    pub dpop: bool,
}

/// Whether a route needs a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMode {
    /// A session is required (`401` without one).
    Session,
    /// A session is used when present.
    Optional,
    /// A session, or a bearer JWT the client sends itself (machine clients).
    SessionOrBearer,
    /// No session is read.
    None,
}

/// One entry of `routes`.
#[derive(Debug)]
pub struct RouteConfig {
    /// What the SPA calls; a trailing `/*` matches the prefix and everything below it.
    pub path: String,
    /// Index into [`Config::services`].
    pub service: usize,
    /// What the upstream receives; `None` keeps the client path.
    pub upstream_path: Option<String>,
    /// Session requirement.
    pub auth: AuthMode,
    /// Allowed methods; `None` allows all.
    pub methods: Option<Vec<Method>>,
    /// Largest request body in bytes (`None`: no limit).
    pub max_body: Option<u64>,
    /// Largest total size of the request headers in bytes.
    pub max_headers: u64,
    /// Claims the session must hold (`require`), checked without a policy.
    pub require: Option<crate::authz::Require>,
    /// The policy decision the route asks for (`authz`).
    pub authz: Option<crate::authz::RouteAuthz>,
    /// How strong and recent the session's login must be (`step_up`).
    pub step_up: Option<crate::authz::StepUp>,
}

/// `authz`: the policy decision points routes ask, and how the subject is described.
#[derive(Debug, Default)]
pub struct AuthzConfig {
    /// `authz.pdps`, in file order; routes refer to them by index.
    pub pdps: Vec<PdpConfig>,
    /// `authz.policies`: the Cedar policy file of the embedded engine, read and checked.
    pub policies: Option<PolicyFile>,
    /// `authz.subject`.
    pub subject: SubjectConfig,
    /// Who answers the SPA's questions (`POST /api/auth/evaluations`): `authz.evaluations.pdp`,
    /// by default the only decision point there is; `None` when there is none.
    pub evaluations: Option<PdpRef>,
}

/// A Cedar policy file, as read when the configuration was checked.
#[derive(Debug, Clone)]
pub struct PolicyFile {
    /// Where it was read from.
    pub path: PathBuf,
    /// Its text (parsed without errors).
    pub text: String,
}

/// `authz.pdps.<name>`: a remote OpenID AuthZEN 1.0 policy decision point.
#[derive(Debug)]
pub struct PdpConfig {
    /// The key under `authz.pdps`.
    pub name: String,
    /// The base URL; evaluations go to `{url}/access/v1/evaluation`.
    pub url: Url,
    /// How Sallyport authenticates to it.
    pub auth: PdpAuth,
    /// Time allowed for an answer; past it the request fails closed.
    pub timeout: Duration,
    /// The decision cache.
    pub cache: DecisionCacheConfig,
}

/// How Sallyport authenticates to a PDP.
#[derive(Debug)]
pub enum PdpAuth {
    /// Not at all (a PDP on a private network).
    None,
    /// A static bearer token (from the environment).
    Bearer(ClientSecret),
    /// A client-credentials token from the broker.
    Token(TokenSpec),
}

/// `authz.pdps.<name>.cache`.
#[derive(Debug, Clone, Copy)]
pub struct DecisionCacheConfig {
    /// How long a permit is reused.
    pub ttl: Duration,
    /// How long a denial is reused (shorter: a user just granted access waits less).
    pub deny_ttl: Duration,
    /// Decisions kept at most.
    pub max_entries: u64,
}

/// `authz.subject`: the AuthZEN subject built from the session.
#[derive(Debug, Clone)]
pub struct SubjectConfig {
    /// `subject.type` (default `user`).
    pub kind: String,
    /// The claim that gives `subject.id` (default `sub`).
    pub id: String,
    /// Claims sent as `subject.properties` (default `roles`, `groups`, `email`).
    pub properties: Vec<String>,
}

impl Default for SubjectConfig {
    fn default() -> Self {
        Self {
            kind: "user".into(),
            id: "sub".into(),
            properties: ["roles", "groups", "email"].map(String::from).into(),
        }
    }
}

/// Which decision point a route asks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PdpRef {
    /// The embedded Cedar engine (`authz.policies`).
    Embedded,
    /// A remote PDP: an index into [`AuthzConfig::pdps`].
    Remote(usize),
}

/// `static`.
#[derive(Debug)]
pub struct StaticConfig {
    /// Directory with the built SPA.
    pub dir: PathBuf,
    /// File served for navigations that match no file.
    pub spa_fallback: Option<String>,
    /// The CSP `frame-ancestors` sources of the SPA's answers (clickjacking), e.g.
    /// `["'self'"]`, always at least one.
    pub frame_ancestors: Vec<String>,
}

/// `csrf`.
#[derive(Debug)]
pub struct CsrfConfig {
    /// Header carrying the session's CSRF token.
    pub header: HeaderName,
}

/// `cors`.
#[derive(Debug)]
pub struct CorsConfig {
    /// Origins (`scheme://host[:port]`) allowed to call with credentials.
    pub allowed_origins: Vec<String>,
}

/// One problem in the config file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// Dotted key path, e.g. `session.keys[0]`; empty for the file as a whole.
    pub path: String,
    /// What is wrong and what is expected.
    pub message: String,
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.path.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

/// Every problem found in a config file, one per line when printed.
#[derive(Debug)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl std::fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

impl Config {
    /// Reads and validates the file at `path`; relative paths in it resolve against its folder.
    ///
    /// # Errors
    /// Every problem found, each naming its key.
    pub fn load(path: &Path, env: &dyn EnvSource) -> Result<Config, ConfigErrors> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            ConfigErrors(vec![ConfigError {
                path: String::new(),
                message: format!("cannot read config file {}: {e}", path.display()),
            }])
        })?;
        let base = path.parent().unwrap_or_else(|| Path::new("."));
        Self::parse(&text, base, env)
    }

    /// Validates YAML `text`; relative paths resolve against `base_dir`.
    ///
    /// # Errors
    /// Every problem found, each naming its key.
    pub fn parse(text: &str, base_dir: &Path, env: &dyn EnvSource) -> Result<Config, ConfigErrors> {
        validate::parse(text, base_dir, env)
    }

    /// The default provider (the first one).
    pub fn default_provider(&self) -> &ProviderConfig {
        &self.providers[0]
    }
}
