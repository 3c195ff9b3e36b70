//! The serde mirror of `sallyport.yaml`: every key the file may hold, with defaults declared once.
//!
//! Values stay close to text here; `validate` turns them into typed, checked values and reports
//! every problem with its key path.

use indexmap::IndexMap;
use serde::Deserialize;

/// Reads a string, also accepting a YAML number or boolean as its text: a client secret such as
/// `12345` or a client id such as `yes` must not fail as "wrong type".
fn scalar_string<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    Ok(match Option::<serde_json::Value>::deserialize(d)? {
        None | Some(serde_json::Value::Null) => None,
        Some(serde_json::Value::String(s)) => Some(s),
        Some(serde_json::Value::Number(n)) => Some(n.to_string()),
        Some(serde_json::Value::Bool(b)) => Some(b.to_string()),
        Some(_) => return Err(serde::de::Error::custom("invalid type: expected a string")),
    })
}

/// The whole file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawConfig {
    pub(crate) server: Option<RawServer>,
    pub(crate) providers: Option<IndexMap<String, RawProvider>>,
    #[serde(default)]
    pub(crate) session: RawSession,
    #[serde(default)]
    pub(crate) tokens: RawTokens,
    #[serde(default)]
    pub(crate) signing_keys: Vec<RawSigningKey>,
    #[serde(default)]
    pub(crate) services: IndexMap<String, RawService>,
    #[serde(default)]
    pub(crate) routes: Vec<RawRoute>,
    #[serde(rename = "static")]
    pub(crate) static_files: Option<RawStatic>,
    #[serde(default)]
    pub(crate) csrf: RawCsrf,
    #[serde(default)]
    pub(crate) cors: RawCors,
    #[serde(default)]
    pub(crate) authz: RawAuthz,
    #[serde(default)]
    pub(crate) telemetry: RawTelemetry,
    #[serde(default)]
    pub(crate) admin: RawAdmin,
}

/// `admin`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawAdmin {
    /// The bearer token of the admin API (from the environment).
    #[serde(default, deserialize_with = "scalar_string")]
    pub(crate) token: Option<String>,
}

/// `telemetry`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawTelemetry {
    /// `GET /metrics` on `server.admin_listen` (default true).
    pub(crate) metrics: Option<bool>,
    /// OpenTelemetry traces over OTLP/HTTP; off when absent.
    pub(crate) otlp: Option<RawOtlp>,
}

/// `telemetry.otlp`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawOtlp {
    /// The collector's OTLP/HTTP base URL (`/v1/traces` is added when it has no path).
    #[serde(default, deserialize_with = "scalar_string")]
    pub(crate) endpoint: Option<String>,
    /// The share of new traces recorded (default 1); an edge's sampling decision is followed.
    pub(crate) sample_ratio: Option<f64>,
    /// `service.name` of the spans (default `sallyport`).
    #[serde(default, deserialize_with = "scalar_string")]
    pub(crate) service_name: Option<String>,
}

/// One entry of `signing_keys`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawSigningKey {
    /// A PEM private key file (relative to the config file).
    pub(crate) file: Option<String>,
    #[serde(default, deserialize_with = "scalar_string")]
    pub(crate) kid: Option<String>,
}

/// `server`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawServer {
    /// Address the public listener binds, e.g. `127.0.0.1:8080`.
    pub(crate) listen: Option<String>,
    /// Browser-facing origin; the redirect URI is this plus `/auth/callback`.
    pub(crate) public_url: Option<String>,
    /// Optional admin listener (readiness, later metrics).
    pub(crate) admin_listen: Option<String>,
    /// CIDRs whose `X-Forwarded-*` headers are believed.
    #[serde(default)]
    pub(crate) trusted_proxies: Vec<String>,
    /// How long in-flight requests may finish after SIGTERM (default `10s`).
    pub(crate) shutdown_grace: Option<String>,
    /// How long a request head may take to arrive, and a connection may idle (default `30s`).
    pub(crate) header_read_timeout: Option<String>,
    /// Open connections per listener at most (default 10000).
    pub(crate) max_connections: Option<u32>,
    /// Per-client limit on failed login callbacks and refused client bearers.
    pub(crate) rate_limit: Option<RawRateLimit>,
    /// The forward-auth listener for an edge proxy.
    pub(crate) forward_auth: Option<RawForwardAuth>,
}

/// `server.forward_auth`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawForwardAuth {
    /// Address of the listener only the edge reaches, e.g. `127.0.0.1:8081`.
    pub(crate) listen: Option<String>,
    /// `nginx` | `traefik` | `caddy`: which headers describe the original request.
    pub(crate) edge: Option<String>,
}

/// `server.rate_limit`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRateLimit {
    /// Counted requests per window (default 60).
    pub(crate) limit: Option<u32>,
    /// Window length (default `1m`).
    pub(crate) window: Option<String>,
}

/// `providers.<name>.registration`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRegistration {
    /// The bearer for the registration endpoint (absent: open registration).
    #[serde(default, deserialize_with = "scalar_string")]
    pub(crate) initial_access_token: Option<String>,
}

/// `providers.<name>`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawProvider {
    pub(crate) issuer: Option<String>,
    #[serde(default, deserialize_with = "scalar_string")]
    pub(crate) client_id: Option<String>,
    #[serde(default, deserialize_with = "scalar_string")]
    pub(crate) client_secret: Option<String>,
    /// `client_secret_basic` (default) | `client_secret_post` | `private_key_jwt`.
    pub(crate) client_auth: Option<String>,
    /// `issuer` (default) | `token_endpoint`: a client assertion's `aud`.
    pub(crate) assertion_audience: Option<String>,
    /// Bind the session's tokens to a per-session key (RFC 9449 DPoP).
    pub(crate) dpop: Option<bool>,
    /// A preset: `fapi2` (FAPI 2.0 Security Profile).
    pub(crate) profile: Option<String>,
    /// Dynamic Client Registration at startup (RFC 7591), instead of `client_id`.
    pub(crate) registration: Option<RawRegistration>,
    /// `auto` (default) | `required` | `off`: pushed authorization requests (RFC 9126). A
    /// plain `off` reads as the boolean false in YAML.
    #[serde(default, deserialize_with = "scalar_string")]
    pub(crate) par: Option<String>,
    /// Default `[openid, profile, email, offline_access]`.
    pub(crate) scopes: Option<Vec<String>>,
    /// Query parameters `/auth/login` may pass on to the provider.
    #[serde(default)]
    pub(crate) login_params: Vec<String>,
    /// Fetch userinfo after login (default true when the provider has the endpoint).
    pub(crate) userinfo: Option<bool>,
    /// How long discovery and JWKS are cached (default `1h`).
    pub(crate) discovery_ttl: Option<String>,
    /// ID-token signature algorithms accepted (default: the asymmetric ones).
    pub(crate) id_token_algs: Option<Vec<String>>,
    /// Allowed clock difference with the provider (default `60s`).
    pub(crate) clock_skew: Option<String>,
    /// Audiences a client's bearer JWT must name on `session_or_bearer` routes (no default).
    #[serde(default)]
    pub(crate) bearer_audiences: Vec<String>,
    /// How long an opaque bearer's active introspection result is reused (default `30s`).
    pub(crate) introspection_cache: Option<String>,
}

/// `session`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawSession {
    /// `memory` (default) | `file` | `redis`.
    pub(crate) store: Option<String>,
    pub(crate) file: Option<RawFileStore>,
    pub(crate) redis: Option<RawRedis>,
    #[serde(default)]
    pub(crate) cookie: RawCookie,
    /// Default `30m`.
    pub(crate) idle_timeout: Option<String>,
    /// Default `8h`.
    pub(crate) absolute_timeout: Option<String>,
    /// How often open streams check their session (default `60s`, at most `60s`).
    pub(crate) stream_recheck: Option<String>,
    /// 32-byte keys, base64; the first encrypts, all decrypt.
    #[serde(default)]
    pub(crate) keys: Vec<String>,
    /// How many logins may be in progress at once (default 10000).
    pub(crate) max_pending_logins: Option<u64>,
}

/// `session.file`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawFileStore {
    pub(crate) path: Option<String>,
}

/// `session.redis`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRedis {
    /// `redis://[user:password@]host:port[/db]` or `rediss://` (TLS); default `redis://127.0.0.1:6379`.
    pub(crate) url: Option<String>,
    /// Redis Cluster: URLs of some of its nodes (the others are discovered); instead of `url`.
    pub(crate) cluster: Option<Vec<String>>,
    /// Redis Sentinel: the master's name and the Sentinels' URLs; `url` then only carries the
    /// master's user, password and database.
    pub(crate) sentinel: Option<RawSentinel>,
    /// Prefix of every key (default `sallyport:`).
    pub(crate) key_prefix: Option<String>,
    /// Bound on each Redis call, after which requests fail closed with `503` (default `1s`).
    pub(crate) timeout: Option<String>,
}

/// `session.redis.sentinel`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawSentinel {
    pub(crate) master: Option<String>,
    #[serde(default)]
    pub(crate) nodes: Vec<String>,
}

/// `session.cookie`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawCookie {
    pub(crate) name: Option<String>,
    /// `lax` (default) | `strict`.
    pub(crate) same_site: Option<String>,
}

/// `tokens`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawTokens {
    /// Default `60s`.
    pub(crate) refresh_before: Option<String>,
    /// Renew tokens of active sessions before they expire, without a request (default `true`).
    pub(crate) background_refresh: Option<bool>,
    /// When a provider gives an access token no lifetime (no `expires_in`, not a JWT with
    /// `exp`), treat it as expiring after this long (default `5m`).
    pub(crate) default_lifetime: Option<String>,
}

/// `services.<name>`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawService {
    pub(crate) url: Option<String>,
    /// `none` | `user` (default) | `id_token`, or a map for a brokered token.
    pub(crate) token: Option<RawToken>,
    /// Time allowed until the upstream's response headers (default `30s`).
    pub(crate) timeout: Option<String>,
    /// Identity headers: header name to claim (default `X-Auth-Request-User/-Email/-Issuer`).
    pub(crate) headers: Option<IndexMap<String, String>>,
    /// Misplaced: these belong in the `token` map (refused with a message saying so).
    pub(crate) audience: Option<serde_json::Value>,
    /// See `audience`.
    pub(crate) scopes: Option<serde_json::Value>,
    /// See `audience`.
    pub(crate) provider: Option<serde_json::Value>,
    /// See `audience`.
    pub(crate) resource: Option<serde_json::Value>,
    /// Send the user's DPoP-bound token with a proof (RFC 9449).
    pub(crate) dpop: Option<bool>,
}

/// `services.<name>.token`: a shorthand kind, or the map of a brokered token.
#[derive(Debug)]
pub(crate) enum RawToken {
    /// `none`, `user` or `id_token`.
    Kind(String),
    /// `{kind, provider, audience, resource, scopes, subject_token}`.
    Spec(RawTokenSpec),
}

/// `services.<name>.token` as a map.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawTokenSpec {
    /// `client_credentials` | `exchange` (or a shorthand kind).
    pub(crate) kind: Option<String>,
    /// The provider whose token endpoint issues it (default: the session's, or the first).
    pub(crate) provider: Option<String>,
    /// RFC 8693 `audience`.
    pub(crate) audience: Option<String>,
    /// RFC 8707 `resource`.
    pub(crate) resource: Option<String>,
    /// Requested scopes.
    pub(crate) scopes: Option<Vec<String>>,
    /// `access_token` (default) | `id_token`: what an exchange presents.
    pub(crate) subject_token: Option<String>,
}

impl<'de> Deserialize<'de> for RawToken {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = RawToken;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(
                    "none, user, id_token, or a map with kind: client_credentials or exchange",
                )
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<RawToken, E> {
                Ok(RawToken::Kind(v.to_owned()))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<RawToken, A::Error> {
                RawTokenSpec::deserialize(serde::de::value::MapAccessDeserializer::new(map))
                    .map(RawToken::Spec)
            }
        }
        d.deserialize_any(Visitor)
    }
}

/// One entry of `routes`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRoute {
    pub(crate) path: Option<String>,
    pub(crate) service: Option<String>,
    pub(crate) upstream_path: Option<String>,
    /// `session` (default) | `optional` | `none`.
    pub(crate) auth: Option<String>,
    /// Default: every method.
    pub(crate) methods: Option<Vec<String>>,
    /// Largest request body, e.g. `10MB` (default: no limit; bodies stream).
    pub(crate) max_body: Option<String>,
    /// Largest total of request headers (default `16KiB`).
    pub(crate) max_headers: Option<String>,
    /// What the session must hold to pass, without a policy.
    pub(crate) require: Option<RawRequire>,
    /// The policy decision the route asks for.
    pub(crate) authz: Option<RawRouteAuthz>,
    /// How strong and recent the session's login must be.
    pub(crate) step_up: Option<RawStepUp>,
}

/// `routes[].step_up`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawStepUp {
    pub(crate) acr: Option<Vec<String>>,
    pub(crate) max_age: Option<String>,
}

/// `routes[].authz`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRouteAuthz {
    /// A PDP under `authz.pdps`, or `embedded`.
    pub(crate) pdp: Option<String>,
    pub(crate) resource: Option<RawResource>,
    /// One action for every method, or a map from method to action.
    pub(crate) action: Option<RawAction>,
}

/// `routes[].authz.resource`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawResource {
    #[serde(rename = "type")]
    pub(crate) kind: Option<String>,
    /// May name the route's path segments: `"{id}"`.
    #[serde(default, deserialize_with = "scalar_string")]
    pub(crate) id: Option<String>,
}

/// `routes[].authz.action`.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(crate) enum RawAction {
    One(String),
    ByMethod(IndexMap<String, String>),
}

/// `authz`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawAuthz {
    #[serde(default)]
    pub(crate) pdps: IndexMap<String, RawPdp>,
    /// A Cedar policy file for `pdp: embedded`.
    pub(crate) policies: Option<String>,
    pub(crate) subject: Option<RawSubject>,
    /// Who answers the SPA's questions (`POST /api/auth/evaluations`).
    pub(crate) evaluations: Option<RawEvaluations>,
}

/// `authz.evaluations`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawEvaluations {
    pub(crate) pdp: Option<String>,
}

/// `authz.pdps.<name>`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawPdp {
    pub(crate) url: Option<String>,
    pub(crate) auth: Option<RawPdpAuth>,
    pub(crate) timeout: Option<String>,
    pub(crate) cache: Option<RawDecisionCache>,
}

/// `authz.pdps.<name>.auth`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawPdpAuth {
    #[serde(default, deserialize_with = "scalar_string")]
    pub(crate) bearer: Option<String>,
    pub(crate) token: Option<RawToken>,
}

/// `authz.pdps.<name>.cache`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawDecisionCache {
    pub(crate) ttl: Option<String>,
    pub(crate) deny_ttl: Option<String>,
    pub(crate) max_entries: Option<u64>,
}

/// `authz.subject`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawSubject {
    #[serde(rename = "type")]
    pub(crate) kind: Option<String>,
    pub(crate) id: Option<String>,
    pub(crate) properties: Option<Vec<String>>,
}

/// `routes[].require`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRequire {
    /// Claim name to accepted values (one of them must be held).
    #[serde(default)]
    pub(crate) claims: IndexMap<String, Vec<String>>,
}

/// `static`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawStatic {
    pub(crate) dir: Option<String>,
    pub(crate) spa_fallback: Option<String>,
    /// Who may frame the SPA: `self` (default), `none`, or origins.
    pub(crate) frame_ancestors: Option<Vec<String>>,
}

/// `csrf`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawCsrf {
    /// Default `X-CSRF-Token`.
    pub(crate) header: Option<String>,
}

/// `cors`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawCors {
    #[serde(default)]
    pub(crate) allowed_origins: Vec<String>,
}
