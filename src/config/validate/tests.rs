use std::collections::HashMap;
use std::path::Path;

use super::super::*;

const KEY: &str = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="; // 32 bytes

fn env() -> HashMap<String, String> {
    HashMap::from([
        ("CLIENT_SECRET".to_owned(), "very-secret-value".to_owned()),
        ("SESSION_KEY".to_owned(), KEY.to_owned()),
    ])
}

fn base() -> String {
    r#"
server:
  listen: 127.0.0.1:8080
  public_url: http://localhost:8080
providers:
  main:
    issuer: http://127.0.0.1:9000
    client_id: sallyport
    client_secret: ${CLIENT_SECRET}
session:
  keys: ["${SESSION_KEY}"]
services:
  orders:
    url: http://127.0.0.1:7000
routes:
  - path: /api/orders/*
    service: orders
    upstream_path: /v1/orders/*
"#
    .to_owned()
}

fn errors(yaml: &str) -> Vec<String> {
    match Config::parse(yaml, Path::new("/etc/sallyport"), &env()) {
        Ok(_) => panic!("config should be refused"),
        Err(e) => e.0.iter().map(ToString::to_string).collect(),
    }
}

fn has(errors: &[String], prefix: &str) -> bool {
    errors.iter().any(|e| e.starts_with(prefix))
}

#[test]
fn a_complete_config_loads_with_defaults() {
    let c = Config::parse(&base(), Path::new("/etc/sallyport"), &env()).unwrap();
    assert_eq!(c.server.public_origin, "http://localhost:8080");
    assert_eq!(
        c.server.redirect_uri(),
        "http://localhost:8080/auth/callback"
    );
    assert_eq!(
        c.default_provider().client_secret.expose(),
        "very-secret-value"
    );
    assert_eq!(
        c.default_provider().client_auth,
        ClientAuth::ClientSecretBasic
    );
    assert_eq!(c.session.store, StoreConfig::Memory);
    assert_eq!(
        c.session.cookie.name, "sallyport",
        "no __Host- prefix on http://localhost"
    );
    assert!(!c.session.cookie.secure);
    assert_eq!(c.session.cookie.same_site, SameSite::Lax);
    assert_eq!(c.session.idle_timeout.as_secs(), 1800);
    assert_eq!(c.session.absolute_timeout.as_secs(), 8 * 3600);
    assert_eq!(c.tokens.refresh_before.as_secs(), 60);
    assert_eq!(c.routes[0].auth, AuthMode::Session);
    assert_eq!(c.services[0].token, TokenSpec::of(TokenKind::User));
    assert_eq!(c.csrf.header.as_str(), "x-csrf-token");
}

#[test]
fn https_gets_secure_host_prefixed_cookies() {
    let yaml = base().replace("http://localhost:8080", "https://app.example.com");
    let c = Config::parse(&yaml, Path::new("."), &env()).unwrap();
    assert_eq!(c.session.cookie.name, "__Host-sallyport");
    assert!(c.session.cookie.secure);
}

#[test]
fn plain_http_is_refused_outside_localhost() {
    let e = errors(&base().replace("http://localhost:8080", "http://app.example.com"));
    assert!(
        has(
            &e,
            "server.public_url: plain http is only allowed for localhost"
        ),
        "{e:?}"
    );
}

#[test]
fn missing_issuer_names_the_key() {
    let e = errors(&base().replace("    issuer: http://127.0.0.1:9000\n", ""));
    assert_eq!(e, ["providers.main.issuer: is required"]);
}

#[test]
fn bad_duration_names_the_key_and_the_format() {
    let e = errors(&base().replace("session:\n", "session:\n  idle_timeout: 30 minutes\n"));
    assert_eq!(
        e,
        ["session.idle_timeout: expected a duration such as 90s, 30m or 8h (units ms, s, m, h, d)"]
    );
}

#[test]
fn unknown_store_kind_is_refused() {
    let e = errors(&base().replace("session:\n", "session:\n  store: mongo\n"));
    assert_eq!(e, ["session.store: expected one of memory, file, redis"]);
}

#[test]
fn route_naming_an_unknown_service_is_refused() {
    let e = errors(&base().replace("    service: orders", "    service: billing"));
    assert_eq!(
        e,
        ["routes[0].service: names no service under `services` (known: orders)"]
    );
}

#[test]
fn session_key_of_the_wrong_length_is_refused_without_echoing_it() {
    let mut env = env();
    env.insert("SESSION_KEY".into(), "c2hvcnQta2V5".into()); // "short-key", 9 bytes
    let e = match Config::parse(&base(), Path::new("."), &env) {
        Err(e) => e.to_string(),
        Ok(_) => panic!("short key accepted"),
    };
    assert_eq!(
        e,
        "session.keys[0]: expected 32 bytes, base64-encoded, but it decodes to 9 bytes; generate one with `openssl rand -base64 32`"
    );
    assert!(!e.contains("c2hvcnQta2V5"));
}

#[test]
fn session_keys_accept_url_safe_and_unpadded_base64() {
    let mut env = env();
    env.insert(
        "SESSION_KEY".into(),
        "_-_-_-_-_-_-_-_-_-_-_-_-_-_-_-_-_-_-_-_-_-8".into(),
    );
    Config::parse(&base(), Path::new("."), &env).unwrap();
}

#[test]
fn non_relative_upstream_paths_are_refused() {
    for bad in [
        "http://evil.example/x",
        "//evil.example/x",
        "v1/orders",
        "/v1/../admin/*",
        "/v1/%2e%2e/*",
        "/v1\\x",
    ] {
        let e = errors(&base().replace("/v1/orders/*", bad));
        assert!(has(&e, "routes[0].upstream_path: expected"), "{bad}: {e:?}");
    }
}

#[test]
fn every_error_is_reported_at_once() {
    let yaml = base()
        .replace("    issuer: http://127.0.0.1:9000\n", "")
        .replace(
            "session:\n",
            "session:\n  store: mongo\n  absolute_timeout: forever\n",
        )
        .replace("    service: orders", "    service: billing");
    let e = errors(&yaml);
    assert_eq!(e.len(), 4, "{e:?}");
}

#[test]
fn a_typo_in_a_key_is_an_error_that_names_it() {
    let e = errors(&base().replace("session:\n", "session:\n  idle_timout: 30m\n"));
    assert_eq!(e.len(), 1, "{e:?}");
    assert!(
        e[0].starts_with("session.idle_timout: unknown key `idle_timout`; expected one of"),
        "{e:?}"
    );
}

#[test]
fn an_unset_variable_names_the_key_and_the_variable() {
    let e = match Config::parse(&base(), Path::new("."), &HashMap::new()) {
        Err(e) => e.0.iter().map(ToString::to_string).collect::<Vec<_>>(),
        Ok(_) => panic!(),
    };
    assert!(e.contains(&"providers.main.client_secret: environment variable CLIENT_SECRET is not set; export it or remove the reference".to_owned()), "{e:?}");
    assert!(
        e.iter()
            .any(|l| l.starts_with("session.keys[0]: environment variable SESSION_KEY"))
    );
}

#[test]
fn errors_never_echo_secret_values() {
    let yaml = base()
        .replace(
            "    client_secret: ${CLIENT_SECRET}",
            "    client_secret: [very-secret-value]",
        )
        .replace(
            "session:\n",
            "session:\n  idle_timeout: very-secret-value\n",
        );
    let e = match Config::parse(&yaml, Path::new("."), &env()) {
        Err(e) => e.to_string(),
        Ok(_) => panic!(),
    };
    assert!(!e.contains("very-secret-value"), "{e}");
}

#[test]
fn yaml_syntax_errors_do_not_quote_the_file() {
    let yaml = "server:\n  listen: [very-secret-value\n";
    let e = match Config::parse(yaml, Path::new("."), &env()) {
        Err(e) => e.to_string(),
        Ok(_) => panic!(),
    };
    assert!(e.starts_with("invalid YAML"), "{e}");
    assert!(!e.contains("very-secret-value"), "{e}");
}

#[test]
fn relative_paths_resolve_against_the_config_folder() {
    let yaml = base().replace(
        "session:\n",
        "session:\n  store: file\n  file: { path: ./data/s.db }\n",
    );
    let c = Config::parse(&yaml, Path::new("/etc/sallyport"), &env()).unwrap();
    assert_eq!(
        c.session.store,
        StoreConfig::File {
            path: Path::new("/etc/sallyport/./data/s.db").to_path_buf()
        }
    );
}

#[test]
fn wildcards_only_at_the_end_and_upstream_wildcards_need_route_wildcards() {
    let e = errors(&base().replace(
        "    upstream_path: /v1/orders/*",
        "    upstream_path: /v1/*/x",
    ));
    assert!(
        has(&e, "routes[0].upstream_path: * is only allowed"),
        "{e:?}"
    );
    let e = errors(&base().replace("  - path: /api/orders/*", "  - path: /api/orders"));
    assert!(has(&e, "routes[0].upstream_path: ends with /*"), "{e:?}");
}

#[test]
fn unquoted_references_in_flow_sequences_work_as_in_the_docs() {
    let yaml = base().replace(r#"keys: ["${SESSION_KEY}"]"#, "keys: [${SESSION_KEY}]");
    let c = Config::parse(&yaml, Path::new("."), &env()).unwrap();
    assert_eq!(c.session.keys.len(), 1);
}

#[test]
fn redis_urls_are_checked_and_never_echoed() {
    let yaml = base().replace(
        "session:\n",
        "session:\n  store: redis\n  redis: { url: \"rediss://app:pw-secret@redis.internal:6380/2\", key_prefix: \"app:\", timeout: 500ms }\n",
    );
    let c = Config::parse(&yaml, Path::new("."), &env()).unwrap();
    match &c.session.store {
        StoreConfig::Redis {
            url,
            key_prefix,
            timeout,
            ..
        } => {
            assert_eq!(url.expose(), "rediss://app:pw-secret@redis.internal:6380/2");
            assert_eq!(key_prefix, "app:");
            assert_eq!(timeout.as_millis(), 500);
        }
        other => panic!("{other:?}"),
    }
    assert!(
        !format!("{c:?}").contains("pw-secret"),
        "Debug of the config hides the password"
    );
    let e = errors(&base().replace(
        "session:\n",
        "session:\n  store: redis\n  redis: { url: \"http://pw-secret@host\" }\n",
    ));
    assert_eq!(e.len(), 1);
    assert!(
        e[0].starts_with("session.redis.url: expected a redis:// or rediss:// URL"),
        "{e:?}"
    );
    assert!(!e[0].contains("pw-secret"));
}

#[test]
fn redis_cluster_nodes_are_checked() {
    let yaml = base().replace(
        "session:\n",
        "session:\n  store: redis\n  redis: { cluster: [\"redis://10.0.0.1:7000\", \"redis://:pw@10.0.0.2:7000\"] }\n",
    );
    match Config::parse(&yaml, Path::new("."), &env())
        .unwrap()
        .session
        .store
    {
        StoreConfig::Redis { cluster, .. } => assert_eq!(cluster.len(), 2),
        other => panic!("{other:?}"),
    }
    let e = errors(&base().replace(
        "session:\n",
        "session:\n  store: redis\n  redis: { url: \"redis://a:1\", cluster: [\"redis://b:1\", \"b:2\"] }\n",
    ));
    assert_eq!(e.len(), 2, "{e:?}");
    assert!(
        e[0].starts_with("session.redis.cluster[1]: expected a redis://"),
        "{e:?}"
    );
    assert!(e[1].starts_with("session.redis: set either url"), "{e:?}");
}

#[test]
fn redis_sentinel_needs_a_master_name_and_nodes() {
    let yaml = base().replace(
        "session:\n",
        "session:\n  store: redis\n  redis: { url: \"redis://:pw@ignored/1\", sentinel: { master: main, nodes: [\"redis://10.0.0.1:26379\"] } }\n",
    );
    match Config::parse(&yaml, Path::new("."), &env())
        .unwrap()
        .session
        .store
    {
        StoreConfig::Redis {
            sentinel: Some((master, nodes)),
            ..
        } => {
            assert_eq!(master, "main");
            assert_eq!(nodes.len(), 1);
        }
        other => panic!("{other:?}"),
    }
    let e = errors(&base().replace(
        "session:\n",
        "session:\n  store: redis\n  redis: { sentinel: { nodes: [] } }\n",
    ));
    assert_eq!(
        e,
        [
            "session.redis.sentinel.master: is required: the name the Sentinels monitor the master by",
            "session.redis.sentinel.nodes: at least one Sentinel URL is required, such as redis://10.0.0.1:26379",
        ]
    );
}

#[test]
fn bearer_routes_need_declared_audiences() {
    let yaml = base().replace(
        "    upstream_path: /v1/orders/*",
        "    upstream_path: /v1/orders/*\n    auth: session_or_bearer",
    );
    let e = errors(&yaml);
    assert_eq!(e.len(), 1, "{e:?}");
    assert!(
        e[0].starts_with(
            "routes[0].auth: session_or_bearer needs providers.<name>.bearer_audiences"
        ),
        "{e:?}"
    );
    let ok = yaml.replace(
        "    client_secret: ${CLIENT_SECRET}",
        "    client_secret: ${CLIENT_SECRET}\n    bearer_audiences: [orders-api]",
    );
    let c = Config::parse(&ok, Path::new("."), &env()).unwrap();
    assert_eq!(c.routes[0].auth, AuthMode::SessionOrBearer);
    assert_eq!(c.providers[0].introspection_cache.as_secs(), 30);

    // The API sharing the client's registration: ID tokens would pass as access tokens.
    let shared = yaml.replace(
        "    client_secret: ${CLIENT_SECRET}",
        "    client_secret: ${CLIENT_SECRET}\n    bearer_audiences: [orders-api, sallyport]",
    );
    let e = errors(&shared);
    assert!(
        has(
            &e,
            "providers.main.bearer_audiences[1]: is the client id of provider main: ID tokens carry it"
        ),
        "{e:?}"
    );
}

#[test]
fn route_size_limits_take_units() {
    let yaml = base().replace(
        "    upstream_path: /v1/orders/*",
        "    upstream_path: /v1/orders/*\n    max_body: 10MB\n    max_headers: 8KiB",
    );
    let c = Config::parse(&yaml, Path::new("."), &env()).unwrap();
    assert_eq!(
        (c.routes[0].max_body, c.routes[0].max_headers),
        (Some(10_000_000), 8192)
    );
    let e = errors(&base().replace(
        "    upstream_path: /v1/orders/*",
        "    upstream_path: /v1/orders/*\n    max_body: 10 MB",
    ));
    assert_eq!(
        e,
        [
            "routes[0].max_body: expected a size such as 512KiB, 10MB or 1GiB (units B, KB, MB, GB, KiB, MiB, GiB)"
        ]
    );
}

#[test]
fn forward_auth_needs_its_own_listener_and_a_known_edge() {
    let with = |block: &str| {
        base().replace(
            "  public_url: http://localhost:8080\n",
            &format!("  public_url: http://localhost:8080\n  forward_auth: {block}\n"),
        )
    };
    let c = Config::parse(
        &with("{ listen: 127.0.0.1:8081, edge: caddy }"),
        Path::new("/"),
        &env(),
    )
    .unwrap();
    let f = c.server.forward_auth.unwrap();
    assert_eq!(f.listen, "127.0.0.1:8081".parse().unwrap());
    assert_eq!(f.edge, Edge::Caddy);
    assert_eq!(f.edge.original_headers().0, "x-forwarded-uri");

    let e = errors(&with("{ listen: 127.0.0.1:8080, edge: nginx }"));
    assert_eq!(
        e,
        [
            "server.forward_auth.listen: must differ from server.listen: browsers must not reach forward-auth answers, which carry tokens"
        ]
    );
    let e = errors(&with("{ listen: 127.0.0.1:8081, edge: envoy }"));
    assert_eq!(
        e,
        [
            "server.forward_auth.edge: expected nginx, traefik or caddy: the edge proxy that calls /auth/verify"
        ]
    );
    let e = errors(&with("{ edge: nginx }"));
    assert_eq!(e, ["server.forward_auth.listen: is required"]);
}

#[test]
fn https_without_trusted_proxies_is_valid_but_warned_about() {
    let https = base().replace(
        "  public_url: http://localhost:8080\n",
        "  public_url: https://app.example.com\n",
    );
    let c = Config::parse(&https, Path::new("/"), &env()).unwrap();
    assert_eq!(c.warnings.len(), 1, "{:?}", c.warnings);
    assert_eq!(c.warnings[0].path, "server.trusted_proxies");
    assert!(c.warnings[0].message.contains("TLS terminator"));
    let behind = https.replace(
        "  public_url: https://app.example.com\n",
        "  public_url: https://app.example.com\n  trusted_proxies: [10.0.0.0/8]\n",
    );
    let c = Config::parse(&behind, Path::new("/"), &env()).unwrap();
    assert!(c.warnings.is_empty(), "{:?}", c.warnings);
    let local = Config::parse(&base(), Path::new("/"), &env()).unwrap();
    assert!(
        local.warnings.is_empty(),
        "localhost development needs no proxy"
    );
}

#[test]
fn frame_ancestors_default_to_self_and_take_origins() {
    let with = |list: &str| format!("{}static: {{ dir: ./dist{list} }}\n", base());
    let c = Config::parse(&with(""), Path::new("/"), &env()).unwrap();
    assert_eq!(c.static_files.unwrap().frame_ancestors, ["'self'"]);
    let c = Config::parse(
        &with(", frame_ancestors: [self, \"https://portal.example.com\"]"),
        Path::new("/"),
        &env(),
    )
    .unwrap();
    assert_eq!(
        c.static_files.unwrap().frame_ancestors,
        ["'self'", "https://portal.example.com"]
    );
    let c = Config::parse(
        &with(", frame_ancestors: [\"'none'\"]"),
        Path::new("/"),
        &env(),
    )
    .unwrap();
    assert_eq!(c.static_files.unwrap().frame_ancestors, ["'none'"]);
    for bad in [
        "[\"https://x.example/path\"]",
        "[\"*\"]",
        "[\"https://a.example; script-src *\"]",
        "[]",
        "[none, self]",
    ] {
        let e = errors(&with(&format!(", frame_ancestors: {bad}")));
        assert!(
            e.iter().all(|e| e.starts_with("static.frame_ancestors")) && !e.is_empty(),
            "{bad}: {e:?}"
        );
    }
}

#[test]
fn open_streams_recheck_their_session_at_least_every_minute() {
    let c = Config::parse(&base(), Path::new("/"), &env()).unwrap();
    assert_eq!(c.session.stream_recheck, std::time::Duration::from_secs(60));
    let e = errors(&base().replace("session:\n", "session:\n  stream_recheck: 5m\n"));
    assert_eq!(
        e,
        [
            "session.stream_recheck: at most 60s: an open WebSocket must not outlive its session by longer"
        ]
    );
}

/// `base()` with `services` replaced by `services` and a second provider `partner`.
fn with_services(services: &str, routes: &str) -> String {
    let yaml = base().replace(
        "services:\n  orders:\n    url: http://127.0.0.1:7000\n",
        &format!("services:\n{services}"),
    );
    let yaml = yaml.replace(
        "session:\n",
        "  partner:\n    issuer: http://127.0.0.1:9100\n    client_id: gw\n    client_secret: s\nsession:\n",
    );
    format!("{yaml}{routes}")
}

#[test]
fn brokered_tokens_are_read_as_users_write_them() {
    let yaml = with_services(
        "  orders:\n    url: http://127.0.0.1:7000\n    token: id_token\n  billing:\n    url: http://127.0.0.1:7001\n    token: { kind: exchange, audience: billing-api, scopes: [billing.read], subject_token: id_token }\n    headers: { X-User-Id: sub, X-User-Roles: roles, X-Mail: email }\n  reports:\n    url: http://127.0.0.1:7002\n    token: { kind: client_credentials, provider: partner, resource: https://reports.example.com, scopes: [reports] }\n  plain:\n    url: http://127.0.0.1:7003\n    token: client_credentials\n",
        "  - path: /api/billing/*\n    service: billing\n  - path: /api/reports/*\n    service: reports\n    auth: none\n",
    );
    let c = Config::parse(&yaml, Path::new("/"), &env()).unwrap();
    assert_eq!(c.services[0].token.kind, TokenKind::IdToken);
    let billing = &c.services[1].token;
    assert_eq!(billing.kind, TokenKind::Exchange);
    assert_eq!(billing.audience.as_deref(), Some("billing-api"));
    assert_eq!(billing.scopes, ["billing.read"]);
    assert_eq!(billing.subject_token, SubjectToken::IdToken);
    assert_eq!(billing.provider, None, "the session's provider");
    let headers: Vec<(&str, &Claim)> = c.services[1]
        .headers
        .iter()
        .map(|h| (h.name.as_str(), &h.claim))
        .collect();
    assert_eq!(
        headers,
        [
            ("x-user-id", &Claim::Sub),
            ("x-user-roles", &Claim::Named("roles".into())),
            ("x-mail", &Claim::VerifiedEmail)
        ]
    );
    let reports = &c.services[2].token;
    assert_eq!(reports.kind, TokenKind::ClientCredentials);
    assert_eq!(reports.provider.as_deref(), Some("partner"));
    assert_eq!(
        reports.resource.as_deref(),
        Some("https://reports.example.com")
    );
    assert_eq!(
        c.services[3].token,
        TokenSpec::of(TokenKind::ClientCredentials)
    );
    let defaults: Vec<&str> = c.services[0]
        .headers
        .iter()
        .map(|h| h.name.as_str())
        .collect();
    assert_eq!(
        defaults,
        [
            "x-auth-request-user",
            "x-auth-request-issuer",
            "x-auth-request-email"
        ]
    );
    assert!(c.tokens.background_refresh, "on by default");
    assert_eq!(c.tokens.default_lifetime.as_secs(), 300);
}

#[test]
fn token_settings_that_cannot_work_are_refused_with_the_fix() {
    let e = errors(&with_services(
        "  orders:\n    url: http://127.0.0.1:7000\n    token: exchange\n  a:\n    url: http://127.0.0.1:7001\n    token: { kind: exchange, scopes: [x] }\n  b:\n    url: http://127.0.0.1:7002\n    token: { kind: client_credentials, provider: nowhere }\n  c:\n    url: http://127.0.0.1:7003\n    token: { kind: user, audience: x }\n  d:\n    url: http://127.0.0.1:7004\n    token: { kind: client_credentials, subject_token: id_token, resource: 'not a uri', scopes: ['two words'] }\n  e:\n    url: http://127.0.0.1:7005\n    token: { kind: magic }\n",
        "",
    ));
    assert!(
        has(&e, "services.orders.token: an exchange needs its target"),
        "{e:?}"
    );
    assert!(
        has(
            &e,
            "services.a.token: an exchange needs audience: or resource:"
        ),
        "{e:?}"
    );
    assert!(
        has(
            &e,
            "services.b.token.provider: names no provider under `providers` (known: main, partner)"
        ),
        "{e:?}"
    );
    assert!(
        has(
            &e,
            "services.c.token.audience: applies only to kind: client_credentials or exchange"
        ),
        "{e:?}"
    );
    assert!(
        has(
            &e,
            "services.d.token.subject_token: applies only to kind: exchange"
        ),
        "{e:?}"
    );
    assert!(
        has(&e, "services.d.token.resource: expected an absolute URI"),
        "{e:?}"
    );
    assert!(
        has(&e, "services.d.token.scopes[0]: expected one scope token"),
        "{e:?}"
    );
    assert!(
        has(
            &e,
            "services.e.token.kind: expected client_credentials or exchange"
        ),
        "{e:?}"
    );
    // A typo inside the map is named (it stops the parse, so it is checked on its own).
    let e = errors(&with_services(
        "  orders:\n    url: http://127.0.0.1:7000\n    token: { kind: exchange, audience: f-api, colour: blue }\n",
        "",
    ));
    assert!(
        has(
            &e,
            "services.orders.token.colour: unknown key `colour`; expected one of kind, provider"
        ),
        "{e:?}"
    );
}

#[test]
fn token_settings_on_the_service_itself_point_to_the_token_map() {
    let e = errors(&with_services(
        "  orders:\n    url: http://127.0.0.1:7000\n    audience: orders-api\n    scopes: [a]\n",
        "",
    ));
    assert!(
        has(
            &e,
            "services.orders.audience: belongs in the token map: token: { kind: exchange"
        ),
        "{e:?}"
    );
    assert!(
        has(&e, "services.orders.scopes: belongs in the token map"),
        "{e:?}"
    );
}

#[test]
fn identity_headers_may_not_overwrite_credentials_or_framing() {
    for name in [
        "Authorization",
        "Cookie",
        "Connection",
        "Transfer-Encoding",
        "Host",
        "X-Forwarded-For",
        "X-Correlation-ID",
    ] {
        let e = errors(&with_services(
            &format!("  orders:\n    url: http://127.0.0.1:7000\n    headers: {{ {name}: sub }}\n"),
            "",
        ));
        assert!(
            has(
                &e,
                &format!("services.orders.headers.{name}: this header carries credentials")
            ),
            "{name}: {e:?}"
        );
    }
    let e = errors(&with_services(
        "  orders:\n    url: http://127.0.0.1:7000\n    headers: { X-User: sub, x-user: email, 'bad name': sub, X-Empty: '' }\n",
        "",
    ));
    assert!(
        has(&e, "services.orders.headers.x-user: named twice"),
        "{e:?}"
    );
    assert!(
        has(
            &e,
            "services.orders.headers.bad name: expected a valid HTTP header name"
        ),
        "{e:?}"
    );
    assert!(
        has(&e, "services.orders.headers.X-Empty: expected a claim name"),
        "{e:?}"
    );
}

#[test]
fn exchange_services_need_a_session_route() {
    let services = "  orders:\n    url: http://127.0.0.1:7000\n    token: { kind: exchange, audience: orders-api }\n";
    let e = errors(&with_services(
        services,
        "  - path: /api/public/*\n    service: orders\n    auth: none\n",
    ));
    assert!(
        has(
            &e,
            "routes[1].auth: service orders exchanges the session's token, and auth: none reads no session"
        ),
        "{e:?}"
    );
    let e = errors(&with_services(
        services,
        "  - path: /api/m2m/*\n    service: orders\n    auth: session_or_bearer\n",
    ));
    assert!(
        has(
            &e,
            "routes[1].auth: service orders exchanges the session's token; a machine client's bearer is not exchanged"
        ),
        "{e:?}"
    );
}

#[test]
fn route_requirements_name_claims_and_need_a_session() {
    let routes = |auth: &str, require: &str| {
        base().replace(
            "    upstream_path: /v1/orders/*",
            &format!("    upstream_path: /v1/orders/*\n    auth: {auth}\n    require: {require}"),
        )
    };
    let c = Config::parse(
        &routes(
            "session",
            "{ claims: { roles: [admin, owner], groups: [ops] } }",
        ),
        Path::new("/"),
        &env(),
    )
    .unwrap();
    let require = c.routes[0].require.as_ref().unwrap();
    assert_eq!(
        require.claims,
        [
            (
                "roles".to_owned(),
                vec!["admin".to_owned(), "owner".to_owned()]
            ),
            ("groups".to_owned(), vec!["ops".to_owned()])
        ]
    );
    let e = errors(&routes("none", "{ claims: { roles: [admin] } }"));
    assert!(
        has(
            &e,
            "routes[0].require: checks the session's claims, and auth: none reads no session"
        ),
        "{e:?}"
    );
    let e = errors(&routes("session", "{ claims: { roles: [] } }"));
    assert!(
        has(
            &e,
            "routes[0].require.claims.roles: expected a claim name and a non-empty list"
        ),
        "{e:?}"
    );
    let e = errors(&routes("session", "{ claims: {} }"));
    assert!(has(&e, "routes[0].require: expected claims:"), "{e:?}");
    let e = errors(&routes("session", "{ roles: [admin] }"));
    assert!(has(&e, "routes[0].require.roles: unknown key"), "{e:?}");
}

fn with_authz(authz: &str, route: &str) -> String {
    base().replace(
        "routes:\n  - path: /api/orders/*\n    service: orders\n    upstream_path: /v1/orders/*\n",
        &format!("authz:\n{authz}\nroutes:\n{route}"),
    )
}

const PDP: &str = "  pdps:\n    main:\n      url: http://127.0.0.1:8181\n";

#[test]
fn a_route_asks_a_pdp_about_a_resource_named_by_its_path() {
    let c = Config::parse(
        &with_authz(
            &format!(
                "{PDP}      auth: {{ bearer: ${{CLIENT_SECRET}} }}\n      timeout: 250ms\n      cache: {{ ttl: 10s, deny_ttl: 2s, max_entries: 50 }}\n  subject: {{ properties: [roles] }}"
            ),
            "  - path: /api/tenants/{tenant}/orders/{id}/*\n    service: orders\n    upstream_path: /v1/{tenant}/orders/{id}/*\n    authz: { resource: { type: order, id: \"{tenant}/{id}\" }, action: { POST: approve } }\n",
        ),
        Path::new("/"),
        &env(),
    )
    .unwrap();
    let pdp = &c.authz.pdps[0];
    assert_eq!(pdp.timeout, Duration::from_millis(250));
    assert_eq!(pdp.cache.ttl, Duration::from_secs(10));
    assert_eq!(pdp.cache.deny_ttl, Duration::from_secs(2));
    assert_eq!(pdp.cache.max_entries, 50);
    assert!(matches!(&pdp.auth, PdpAuth::Bearer(b) if b.expose() == "very-secret-value"));
    assert_eq!(c.authz.subject.properties, ["roles"]);
    assert_eq!(c.authz.subject.id, "sub");
    let authz = c.routes[0].authz.as_ref().unwrap();
    assert_eq!(authz.pdp, PdpRef::Remote(0), "the only PDP is the default");
    assert_eq!(authz.resource_type, "order");
    assert_eq!(
        authz
            .resource_id
            .render("/x", &["acme".into(), "42".into()]),
        "acme/42"
    );
    assert_eq!(authz.action.of(&Method::POST), "approve");
    assert_eq!(authz.action.of(&Method::GET), "read");
}

#[test]
fn authz_mistakes_name_the_key_and_the_fix() {
    let route = |authz: &str| {
        format!("  - path: /api/orders/{{id}}\n    service: orders\n    authz: {authz}\n")
    };
    let e = errors(&with_authz(
        PDP,
        &route("{ resource: { type: order, id: \"{oid}\" } }"),
    ));
    assert!(
        has(
            &e,
            "routes[0].authz.resource.id: names {oid}, which is not a segment of the route's path (segments: id)"
        ),
        "{e:?}"
    );
    let e = errors(&with_authz(
        PDP,
        &route("{ pdp: other, resource: { type: order } }"),
    ));
    assert!(
        has(
            &e,
            "routes[0].authz.pdp: names no PDP under authz.pdps (known: main)"
        ),
        "{e:?}"
    );
    let e = errors(&with_authz(PDP, &route("{ resource: { id: \"{id}\" } }")));
    assert!(
        has(&e, "routes[0].authz.resource.type: is required"),
        "{e:?}"
    );
    let e = errors(&with_authz(
        PDP,
        &route("{ resource: { type: \"order item\" } }"),
    ));
    assert!(
        has(&e, "routes[0].authz.resource.type: expected a type name"),
        "{e:?}"
    );
    let e = errors(&with_authz(
        PDP,
        &route("{ resource: { type: order }, action: { FETCH GET: read } }"),
    ));
    assert!(
        has(
            &e,
            "routes[0].authz.action.FETCH GET: expected an HTTP method"
        ),
        "{e:?}"
    );
    let e = errors(&with_authz(
        PDP,
        "  - path: /api/orders/*\n    service: orders\n    auth: none\n    authz: { resource: { type: order } }\n",
    ));
    assert!(
        has(
            &e,
            "routes[0].authz: asks about the session's user, and auth: none"
        ),
        "{e:?}"
    );
    let e = errors(&with_authz(
        "  pdps:\n    main:\n      url: http://127.0.0.1:8181?x=1\n      auth: { bearer: a, token: { kind: client_credentials } }\n",
        &route("{ resource: { type: order } }"),
    ));
    assert!(
        has(&e, "authz.pdps.main.url: expected the PDP's base URL"),
        "{e:?}"
    );
    assert!(
        has(&e, "authz.pdps.main.auth: expected one of bearer"),
        "{e:?}"
    );
    let e = errors(&with_authz(
        &format!("{PDP}      auth: {{ token: {{ kind: exchange, audience: pdp }} }}\n"),
        &route("{ resource: { type: order } }"),
    ));
    assert!(
        has(
            &e,
            "authz.pdps.main.auth.token.kind: a PDP is called with Sallyport's own token"
        ),
        "{e:?}"
    );
    let e = errors(&with_authz(
        PDP,
        &route("{ pdp: embedded, resource: { type: order } }"),
    ));
    assert!(
        has(
            &e,
            "routes[0].authz.pdp: embedded needs a policy file: authz.policies"
        ),
        "{e:?}"
    );
    let e = errors(&with_authz(
        &format!("{PDP}  policies: ./missing.cedar\n"),
        &route("{ pdp: embedded, resource: { type: order } }"),
    ));
    assert!(
        has(
            &e,
            "authz.policies: cannot read /etc/sallyport/./missing.cedar"
        ),
        "{e:?}"
    );
    for (path, why) in [
        ("/api/{a}/x/{a}", "names a segment twice"),
        ("/api/x{id}", "a named segment is a whole segment"),
        ("/api/{}/x", "a named segment is a whole segment"),
    ] {
        let e = errors(&with_authz(
            PDP,
            &format!("  - path: {path}\n    service: orders\n"),
        ));
        assert!(has(&e, &format!("routes[0].path: {why}")), "{path}: {e:?}");
    }
    let e = errors(&with_authz(
        PDP,
        "  - path: /api/orders/{id}\n    service: orders\n    upstream_path: /v1/{oid}\n",
    ));
    assert!(
        has(
            &e,
            "routes[0].upstream_path: a {name} segment must be a whole segment naming one of the route path's"
        ),
        "{e:?}"
    );
}

#[test]
fn embedded_policies_are_parsed_by_check_with_line_numbers() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("policies.cedar");
    let route = "  - path: /api/orders/{id}\n    service: orders\n    authz: { resource: { type: order, id: \"{id}\" } }\n";
    std::fs::write(&file, "permit (principal, action, resource);\n").unwrap();
    let yaml = with_authz("  policies: ./policies.cedar\n", route);
    let c = Config::parse(&yaml, dir.path(), &env()).unwrap();
    assert_eq!(
        c.routes[0].authz.as_ref().unwrap().pdp,
        PdpRef::Embedded,
        "the only engine is the default"
    );
    std::fs::write(
        &file,
        "permit (principal, action, resource);\n// fine\npermit (principal action, resource);\n",
    )
    .unwrap();
    let e = match Config::parse(&yaml, dir.path(), &env()) {
        Ok(_) => panic!("a broken policy file is refused"),
        Err(e) => e.0.iter().map(ToString::to_string).collect::<Vec<_>>(),
    };
    let prefix = format!(
        "authz.policies: {}:3:19: unexpected token",
        dir.path().join("./policies.cedar").display()
    );
    assert!(has(&e, &prefix), "{e:?}");
    assert_eq!(e.len(), 1, "no second error on the route: {e:?}");
    let both = with_authz(&format!("{PDP}  policies: ./policies.cedar\n"), route);
    std::fs::write(&file, "permit (principal, action, resource);\n").unwrap();
    let e = match Config::parse(&both, dir.path(), &env()) {
        Ok(_) => panic!("two engines, no choice"),
        Err(e) => e.0.iter().map(ToString::to_string).collect::<Vec<_>>(),
    };
    assert!(
        has(&e, "routes[0].authz.pdp: is required: embedded"),
        "{e:?}"
    );
}

#[test]
fn signing_keys_are_read_and_checked_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.pem");
    std::fs::write(
        &good,
        crate::keys::generate(crate::keys::NewKey::Es256).unwrap(),
    )
    .unwrap();
    std::fs::write(dir.path().join("junk.pem"), "not a key").unwrap();
    let with_keys = |keys: &str, provider: &str| {
        base()
            .replace("    client_secret: ${CLIENT_SECRET}\n", provider)
            .replace("session:", &format!("signing_keys:\n{keys}session:"))
    };
    let parse = |yaml: &str| Config::parse(yaml, dir.path(), &env());
    let jwt = "    client_auth: private_key_jwt\n";
    let c = parse(&with_keys("  - { file: good.pem, kid: k1 }\n", jwt)).unwrap();
    assert!(c.signing_keys.can_sign());
    assert_eq!(
        c.providers[0].client_auth,
        ClientAuth::PrivateKeyJwt {
            audience: AssertionAudience::Issuer
        }
    );
    let errors = |yaml: &str| match parse(yaml) {
        Ok(_) => panic!("refused"),
        Err(e) => e.0.iter().map(ToString::to_string).collect::<Vec<_>>(),
    };
    let e = errors(&with_keys(
        "  - { file: good.pem, kid: k1 }\n  - { file: junk.pem, kid: k1 }\n  - { file: gone.pem, kid: k3 }\n",
        jwt,
    ));
    assert!(
        has(
            &e,
            "signing_keys[1].kid: another signing key has the same kid"
        ),
        "{e:?}"
    );
    assert!(
        has(
            &e,
            &format!(
                "signing_keys[2].file: cannot read {}",
                dir.path().join("gone.pem").display()
            )
        ),
        "{e:?}"
    );
    let e = errors(&with_keys("  - { file: junk.pem, kid: k2 }\n", jwt));
    assert!(
        has(
            &e,
            &format!(
                "signing_keys[0].file: {} is not a PEM private key",
                dir.path().join("junk.pem").display()
            )
        ),
        "{e:?}"
    );
    let e = errors(&base().replace(
        "    client_secret: ${CLIENT_SECRET}\n",
        "    client_secret: ${CLIENT_SECRET}\n    client_auth: private_key_jwt\n",
    ));
    assert!(
        has(
            &e,
            "providers.main.client_auth: private_key_jwt signs with Sallyport's first signing key, and signing_keys lists none"
        ),
        "{e:?}"
    );
    let e = errors(&base().replace(
        "    client_secret: ${CLIENT_SECRET}\n",
        "    client_secret: ${CLIENT_SECRET}\n    assertion_audience: token_endpoint\n",
    ));
    assert!(
        has(
            &e,
            "providers.main.assertion_audience: applies only to client_auth: private_key_jwt"
        ),
        "{e:?}"
    );
}

#[test]
fn pushed_authorization_requests_are_automatic_by_default_and_off_reads_as_off() {
    let par = |line: &str| {
        let yaml = base().replace(
            "    client_secret: ${CLIENT_SECRET}\n",
            &format!("    client_secret: ${{CLIENT_SECRET}}\n{line}"),
        );
        Config::parse(&yaml, Path::new("."), &env()).map(|c| c.default_provider().par)
    };
    assert_eq!(par("").unwrap(), Par::Auto);
    assert_eq!(par("    par: required\n").unwrap(), Par::Required);
    // Unquoted, YAML reads `off` as a boolean.
    assert_eq!(par("    par: off\n").unwrap(), Par::Off);
    assert_eq!(par("    par: \"off\"\n").unwrap(), Par::Off);
    let e = par("    par: yes\n").unwrap_err();
    assert!(
        has(
            &e.0.iter().map(ToString::to_string).collect::<Vec<_>>(),
            "providers.main.par: expected auto (the default), required or off"
        ),
        "{e:?}"
    );
}

#[test]
fn a_registering_provider_needs_no_client_id_a_key_and_a_durable_store() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("k.pem"),
        crate::keys::generate(crate::keys::NewKey::Es256).unwrap(),
    )
    .unwrap();
    let yaml = |provider: &str, store: &str| {
        base()
            .replace(
                "    client_id: sallyport\n    client_secret: ${CLIENT_SECRET}\n",
                provider,
            )
            .replace(
                "session:\n",
                &format!("signing_keys:\n  - {{ file: k.pem, kid: k1 }}\nsession:\n{store}"),
            )
    };
    let file = "  store: file\n  file: { path: ./sessions.redb }\n";
    let parse = |yaml: &str, env: &HashMap<String, String>| Config::parse(yaml, dir.path(), env);
    let mut with_iat = env();
    with_iat.insert("DCR_IAT".into(), "iat-value".into());
    let registering = "    registration: { initial_access_token: ${DCR_IAT} }\n";

    let c = parse(&yaml(registering, file), &with_iat).unwrap();
    let p = c.default_provider();
    assert!(!p.client_id.is_known(), "learned at startup");
    assert!(
        matches!(p.client_auth, ClientAuth::PrivateKeyJwt { .. }),
        "the default"
    );
    assert!(matches!(
        &p.registration.as_ref().unwrap().initial_access_token,
        InitialAccessToken::Token(t) if t.expose() == "iat-value"
    ));
    // Once registered, the token may leave the environment.
    let c = parse(&yaml(registering, file), &env()).unwrap();
    assert!(matches!(
        &c.default_provider().registration.as_ref().unwrap().initial_access_token,
        InitialAccessToken::Unset(name) if name == "DCR_IAT"
    ));
    // Open registration.
    let c = parse(&yaml("    registration: {}\n", file), &env()).unwrap();
    assert!(matches!(
        c.default_provider()
            .registration
            .as_ref()
            .unwrap()
            .initial_access_token,
        InitialAccessToken::None
    ));

    let refused = |yaml: &str| match parse(yaml, &with_iat) {
        Ok(_) => panic!("should be refused"),
        Err(e) => e.0.iter().map(ToString::to_string).collect::<Vec<_>>(),
    };
    let e = refused(&yaml(registering, ""));
    assert!(
        has(
            &e,
            "providers.main.registration: the registration is kept in the session store, and the memory store forgets it"
        ),
        "{e:?}"
    );
    let e = refused(&yaml(
        &format!("    client_id: sallyport\n{registering}"),
        file,
    ));
    assert!(
        has(
            &e,
            "providers.main.client_id: registration registers Sallyport and learns its client id"
        ),
        "{e:?}"
    );
    let e = refused(&yaml(
        &format!("{registering}    client_auth: client_secret_basic\n"),
        file,
    ));
    assert!(
        has(
            &e,
            "providers.main.client_auth: a registered client authenticates with private_key_jwt"
        ),
        "{e:?}"
    );
    let e = refused(&yaml("", file));
    assert!(
        has(&e, "providers.main.client_id: is required")
            && e.iter()
                .any(|m| m.contains("registration: { initial_access_token")),
        "the fix names both ways: {e:?}"
    );
    let e = refused(&yaml(
        "    registration: { initial_access_token: \"\" }\n",
        file,
    ));
    assert!(
        has(
            &e,
            "providers.main.registration.initial_access_token: is empty"
        ),
        "{e:?}"
    );
    // Another variable that is not set is still an error.
    let e = refused(&yaml(
        "    registration: { initial_access_token: ${DCR_IAT} }\n    login_params: [\"${NOPE}\"]\n",
        file,
    ));
    assert!(e.iter().any(|m| m.contains("NOPE is not set")), "{e:?}");
}

#[test]
fn dpop_services_need_the_users_token_from_a_binding_provider() {
    let with = |provider: &str, service: &str| {
        base()
            .replace(
                "    client_secret: ${CLIENT_SECRET}\n",
                &format!("    client_secret: ${{CLIENT_SECRET}}\n{provider}"),
            )
            .replace(
                "    url: http://127.0.0.1:7000\n",
                &format!("    url: http://127.0.0.1:7000\n{service}"),
            )
    };
    let c = Config::parse(
        &with("    dpop: true\n", "    dpop: true\n"),
        Path::new("."),
        &env(),
    )
    .unwrap();
    assert!(c.default_provider().dpop && c.services[0].dpop);
    let c = Config::parse(&with("    dpop: true\n", ""), Path::new("."), &env()).unwrap();
    assert!(
        c.warnings.iter().any(|w| w.to_string().starts_with(
            "services.orders.dpop: this service gets DPoP-bound user tokens as plain bearer tokens"
        )),
        "{:?}",
        c.warnings
    );
    let e = errors(&with("", "    dpop: true\n"));
    assert!(
        has(
            &e,
            "services.orders.dpop: no provider binds tokens to a key"
        ),
        "{e:?}"
    );
    let e = errors(&with(
        "    dpop: true\n",
        "    dpop: true\n    token: id_token\n",
    ));
    assert!(
        has(
            &e,
            "services.orders.dpop: DPoP proofs go with the user's own token"
        ),
        "{e:?}"
    );
}

#[test]
fn the_fapi2_profile_sets_what_it_asks_for_and_refuses_what_contradicts_it() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("k.pem"),
        crate::keys::generate(crate::keys::NewKey::Es256).unwrap(),
    )
    .unwrap();
    let yaml = |provider: &str| {
        base()
            .replace(
                "    client_secret: ${CLIENT_SECRET}\n",
                &format!("    profile: fapi2\n{provider}"),
            )
            .replace(
                "session:\n",
                "signing_keys:\n  - { file: k.pem, kid: k1 }\nsession:\n",
            )
    };
    let c = Config::parse(&yaml(""), dir.path(), &env()).unwrap();
    let p = c.default_provider();
    assert_eq!(p.profile, Profile::Fapi2);
    assert!(matches!(
        p.client_auth,
        ClientAuth::PrivateKeyJwt {
            audience: AssertionAudience::Issuer
        }
    ));
    assert_eq!(p.par, Par::Required);
    assert!(p.dpop);
    assert_eq!(
        p.id_token_algs,
        [
            jsonwebtoken::Algorithm::PS256,
            jsonwebtoken::Algorithm::ES256,
            jsonwebtoken::Algorithm::EdDSA
        ]
    );
    // Saying the same again is fine.
    Config::parse(
        &yaml("    par: required\n    dpop: true\n    client_auth: private_key_jwt\n"),
        dir.path(),
        &env(),
    )
    .unwrap();
    let refused = |provider: &str| match Config::parse(&yaml(provider), dir.path(), &env()) {
        Ok(_) => panic!("should be refused: {provider}"),
        Err(e) => e.0.iter().map(ToString::to_string).collect::<Vec<_>>(),
    };
    for (line, message) in [
        (
            "    client_secret: ${CLIENT_SECRET}\n    client_auth: client_secret_basic\n",
            "providers.main.client_auth: profile: fapi2 asks for client_auth: private_key_jwt",
        ),
        (
            "    par: auto\n",
            "providers.main.par: profile: fapi2 asks for pushed authorization requests",
        ),
        (
            "    dpop: false\n",
            "providers.main.dpop: profile: fapi2 asks for sender-constrained tokens",
        ),
        (
            "    assertion_audience: token_endpoint\n",
            "providers.main.assertion_audience: profile: fapi2 asks for the issuer",
        ),
        (
            "    id_token_algs: [ES256, RS256]\n",
            "providers.main.id_token_algs[1]: profile: fapi2 allows only PS256, ES256 and EdDSA",
        ),
    ] {
        let e = refused(line);
        assert!(has(&e, message), "{line}: {e:?}");
    }
    let e = errors(&base().replace(
        "    client_secret: ${CLIENT_SECRET}\n",
        "    client_secret: ${CLIENT_SECRET}\n    profile: fapi1\n",
    ));
    assert!(has(&e, "providers.main.profile: expected fapi2"), "{e:?}");
}

#[test]
fn the_admin_token_must_be_long_and_is_kept_secret() {
    let with = |token: &str| {
        format!("{}admin: {{ token: \"{token}\" }}\n", base()).replace(
            "server:\n  listen: 127.0.0.1:8080\n",
            "server:\n  listen: 127.0.0.1:8080\n  admin_listen: 127.0.0.1:9090\n",
        )
    };
    let long = "a".repeat(40);
    let c = Config::parse(&with(&long), Path::new("."), &env()).unwrap();
    assert_eq!(c.admin_token.as_ref().unwrap().expose(), long);
    assert!(!format!("{c:?}").contains(&long), "Debug redacts it");
    let e = errors(&with("short"));
    assert!(
        has(&e, "admin.token: is shorter than 32 characters"),
        "{e:?}"
    );
    assert!(!e.iter().any(|m| m.contains("short\"")), "{e:?}");
    // Without an admin port the API has nowhere to be served.
    let c = Config::parse(
        &format!("{}admin: {{ token: \"{long}\" }}\n", base()),
        Path::new("."),
        &env(),
    )
    .unwrap();
    assert!(
        c.warnings.iter().any(|w| w
            .to_string()
            .starts_with("admin.token: the admin API is served on server.admin_listen")),
        "{:?}",
        c.warnings
    );
}

#[test]
fn otlp_traces_take_a_collector_url_and_a_share_to_sample() {
    let with = |otlp: &str| format!("{}telemetry:\n  otlp: {otlp}\n", base());
    let c = Config::parse(
        &with("{ endpoint: http://127.0.0.1:4318 }"),
        Path::new("."),
        &env(),
    )
    .unwrap();
    let otlp = c.telemetry.otlp.unwrap();
    assert_eq!(otlp.traces_url.as_str(), "http://127.0.0.1:4318/v1/traces");
    assert!((otlp.sample_ratio - 1.0).abs() < f64::EPSILON);
    assert_eq!(otlp.service_name, "sallyport");
    let c = Config::parse(
        &with("{ endpoint: \"https://otel.example.com/custom/path\", sample_ratio: 0.25, service_name: edge }"),
        Path::new("."),
        &env(),
    )
    .unwrap();
    let otlp = c.telemetry.otlp.unwrap();
    assert_eq!(
        otlp.traces_url.as_str(),
        "https://otel.example.com/custom/path"
    );
    assert!((otlp.sample_ratio - 0.25).abs() < f64::EPSILON);
    assert_eq!(otlp.service_name, "edge");
    assert!(
        Config::parse(&base(), Path::new("."), &env())
            .unwrap()
            .telemetry
            .otlp
            .is_none(),
        "off by default"
    );
    let e = errors(&with(
        "{ endpoint: http://127.0.0.1:4318, sample_ratio: 1.5 }",
    ));
    assert!(has(&e, "telemetry.otlp.sample_ratio: is 1.5"), "{e:?}");
    let e = errors(&with("{ endpoint: \"127.0.0.1:4318\" }"));
    assert!(
        has(&e, "telemetry.otlp.endpoint: is not an http(s) URL"),
        "{e:?}"
    );
    let e = errors(&with("{ sample_ratio: 0.5 }"));
    assert!(has(&e, "telemetry.otlp.endpoint: is required"), "{e:?}");
}
