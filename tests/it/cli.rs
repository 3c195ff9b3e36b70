//! The `sallyport` binary: `check` reports every config problem by key, exit code 2, and never
//! prints a secret.

use std::process::Command;

const SECRET: &str = "do-not-print-this-secret";

fn config(replace: &[(&str, &str)]) -> String {
    let mut yaml = r#"
server:
  listen: 127.0.0.1:18080
  public_url: http://localhost:18080
providers:
  main:
    issuer: http://127.0.0.1:9000
    client_id: sallyport
    client_secret: ${CLIENT_SECRET}
session:
  keys: [${SESSION_KEY}]
services:
  orders:
    url: http://127.0.0.1:7000
    timeout: 30s
routes:
  - path: /api/orders/*
    service: orders
    upstream_path: /v1/orders/*
"#
    .to_owned();
    for (from, to) in replace {
        assert!(yaml.contains(from), "{from}");
        yaml = yaml.replace(from, to);
    }
    yaml
}

fn check(yaml: &str, session_key: &str) -> (i32, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sallyport.yaml");
    std::fs::write(&path, yaml).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_sallyport"))
        .args(["check", "--config"])
        .arg(&path)
        .env("CLIENT_SECRET", SECRET)
        .env("SESSION_KEY", session_key)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!text.contains(SECRET), "a secret was printed:\n{text}");
    assert!(
        !text.contains(crate::harness::SESSION_KEY),
        "a key was printed:\n{text}"
    );
    (out.status.code().unwrap(), text)
}

#[test]
fn a_valid_config_checks_out() {
    let (code, text) = check(&config(&[]), crate::harness::SESSION_KEY);
    assert_eq!(code, 0, "{text}");
    assert!(
        text.contains("valid (1 provider(s), 1 service(s), 1 route(s), memory store)"),
        "{text}"
    );
}

#[test]
fn https_behind_an_unlisted_proxy_is_valid_with_a_warning() {
    let yaml = config(&[(
        "public_url: http://localhost:18080",
        "public_url: https://app.example.com",
    )]);
    let (code, text) = check(&yaml, crate::harness::SESSION_KEY);
    assert_eq!(code, 0, "{text}");
    assert!(
        text.lines()
            .any(|l| l
                .starts_with("warning: server.trusted_proxies: empty while public_url is https")),
        "{text}"
    );
}

#[test]
fn each_invalid_value_is_one_line_naming_its_key() {
    let key = crate::harness::SESSION_KEY;
    // (replacements in the file, the session key, the line `check` must print)
    type Case<'a> = (&'a [(&'a str, &'a str)], &'a str, &'a str);
    let cases: [Case<'_>; 6] = [
        (
            &[("    issuer: http://127.0.0.1:9000\n", "")],
            key,
            "  providers.main.issuer: is required",
        ),
        (
            &[("    timeout: 30s", "    timeout: 30 seconds")],
            key,
            "  services.orders.timeout: expected a duration",
        ),
        (
            &[("session:\n", "session:\n  store: postgres\n")],
            key,
            "  session.store: expected one of memory, file, redis",
        ),
        (
            &[("    service: orders", "    service: billing")],
            key,
            "  routes[0].service: names no service",
        ),
        (
            &[],
            "c2hvcnQ=",
            "  session.keys[0]: expected 32 bytes, base64-encoded, but it decodes to 5 bytes",
        ),
        (
            &[("/v1/orders/*", "https://evil.example/*")],
            key,
            "  routes[0].upstream_path: expected a relative path",
        ),
    ];
    for (replace, session_key, expected) in cases {
        let (code, text) = check(&config(replace), session_key);
        assert_eq!(code, 2, "{text}");
        assert!(
            text.lines().any(|l| l.starts_with(expected)),
            "expected a line starting {expected:?} in:\n{text}"
        );
        assert_eq!(
            text.lines().filter(|l| l.starts_with("  ")).count(),
            1,
            "exactly one problem line:\n{text}"
        );
    }
}

#[test]
fn an_unset_variable_and_a_secret_in_a_bad_place_are_reported_without_the_value() {
    let (code, text) = check(
        &config(&[("${CLIENT_SECRET}", "${MISSING_SECRET}")]),
        crate::harness::SESSION_KEY,
    );
    assert_eq!(code, 2);
    assert!(
        text.contains(
            "providers.main.client_secret: environment variable MISSING_SECRET is not set"
        ),
        "{text}"
    );
    let (code, text) = check(
        &config(&[("    timeout: 30s", "    timeout: ${CLIENT_SECRET}")]),
        crate::harness::SESSION_KEY,
    );
    assert_eq!(code, 2, "{text}");
    assert!(
        text.contains("services.orders.timeout: expected a duration"),
        "{text}"
    );
}

#[test]
fn a_broken_policy_file_is_reported_with_its_line_and_column() {
    let dir = tempfile::tempdir().unwrap();
    let policies = dir.path().join("policies.cedar");
    std::fs::write(
        &policies,
        "// orders\npermit (principal, action, resource is order);\n\nforbid (principal, action == Action::\"delete\", resource)\nunless { principal.roles.contains(\"admin\") ;\n",
    )
    .unwrap();
    let yaml = config(&[(
        "    upstream_path: /v1/orders/*\n",
        &format!(
            "    upstream_path: /v1/orders/*\n    authz: {{ pdp: embedded, resource: {{ type: order }} }}\nauthz:\n  policies: {}\n",
            policies.display()
        ),
    )]);
    let (code, text) = check(&yaml, crate::harness::SESSION_KEY);
    assert_eq!(code, 2, "{text}");
    let line = format!("authz.policies: {}:5:", policies.display());
    assert!(
        text.contains(&line),
        "the error names the file, line and column:\n{text}"
    );

    std::fs::write(
        &policies,
        "permit (principal, action, resource is order);\n",
    )
    .unwrap();
    let (code, text) = check(&yaml, crate::harness::SESSION_KEY);
    assert_eq!(code, 0, "{text}");
}

#[test]
fn keys_generate_writes_a_private_file_it_never_overwrites() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("k.pem");
    let run = |alg: &str| {
        Command::new(env!("CARGO_BIN_EXE_sallyport"))
            .args(["keys", "generate", "--alg", alg, "--out"])
            .arg(&out)
            .output()
            .unwrap()
    };
    let first = run("ES256");
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    let mode = std::fs::metadata(&out).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let pem = std::fs::read(&out).unwrap();
    assert!(sallyport::keys::SigningKey::from_pem("k", &pem).is_ok());
    let again = run("EdDSA");
    assert_eq!(again.status.code(), Some(2), "an existing file is kept");
    assert_eq!(std::fs::read(&out).unwrap(), pem);
    let yaml = config(&[(
        "session:",
        &format!(
            "signing_keys:\n  - {{ file: {}, kid: k1 }}\nsession:",
            out.display()
        ),
    )]);
    let (code, text) = check(&yaml, crate::harness::SESSION_KEY);
    assert_eq!(code, 0, "{text}");
}

#[test]
fn version_names_the_build() {
    let out = Command::new(env!("CARGO_BIN_EXE_sallyport"))
        .arg("--version")
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    let expected = format!(
        "sallyport {} (commit {}, rustc {}, {}, {})\n",
        env!("CARGO_PKG_VERSION"),
        sallyport::build::COMMIT,
        sallyport::build::RUSTC,
        sallyport::build::TARGET,
        sallyport::build::PROFILE
    );
    assert_eq!(text, expected);
    // Built from a checkout that git can read, the commit is that checkout's.
    let head = Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8(o.stdout).unwrap().trim().to_owned());
    match head {
        Some(head) => assert_eq!(sallyport::build::COMMIT, head),
        None => assert_eq!(sallyport::build::COMMIT, "unknown"),
    }
}

/// The hardened unit of `examples/systemd`, as `systemd-analyze verify` sees it (with the
/// binary where the unit expects it: here, the one just built).
#[test]
fn the_systemd_unit_verifies() {
    let unit = include_str!("../../examples/systemd/sallyport.service");
    assert!(unit.contains("ExecStart=/usr/local/bin/sallyport "));
    for hardening in [
        "DynamicUser=yes",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "CapabilityBoundingSet=\n",
        "SystemCallFilter=@system-service",
    ] {
        assert!(unit.contains(hardening), "{hardening}");
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sallyport.service");
    std::fs::write(
        &path,
        unit.replace("/usr/local/bin/sallyport", env!("CARGO_BIN_EXE_sallyport")),
    )
    .unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
        .expect("systemd-analyze (apt-get install systemd)");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        !stderr.contains("sallyport.service"),
        "no complaint about the unit: {stderr}"
    );
}
