//! The `sallyport` binary: parse the command line, load the config, serve.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use sallyport::config::{Config, ProcessEnv};
use sallyport::telemetry::{self, LogFormat};

/// A Backend-for-Frontend authentication gateway: tokens stay on the server.
#[derive(Parser)]
#[command(version = sallyport::build::LONG_VERSION, about)]
struct Cli {
    /// The configuration file (YAML).
    #[arg(long, short, global = true, default_value = "sallyport.yaml")]
    config: PathBuf,
    /// Log line format on stderr (filter with RUST_LOG, default info).
    #[arg(long, value_enum, default_value_t = Format::Text, global = true)]
    log_format: Format,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Clone, Copy, ValueEnum)]
enum Format {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Validate the configuration, print every problem, and exit (0 valid, 2 invalid).
    Check,
    /// Operate on the sessions in the configured (file or redis) store.
    Sessions {
        #[command(subcommand)]
        action: SessionsAction,
    },
    /// Ask the running Sallyport to re-read its configuration (POST /admin/reload on
    /// server.admin_listen, with admin.token), and print the outcome. SIGHUP does the same.
    Reload,
    /// Sallyport's own signing keys (`signing_keys`).
    Keys {
        #[command(subcommand)]
        action: KeysAction,
    },
}

#[derive(Subcommand)]
enum KeysAction {
    /// Write a new private key (PKCS#8 PEM, mode 0600); it never overwrites a file.
    Generate {
        /// ES256 (EC P-256, the default), EdDSA (Ed25519) or PS256 (RSA, 3072 bits).
        #[arg(long, value_enum, default_value_t = KeyAlg::Es256)]
        alg: KeyAlg,
        /// The file to create.
        #[arg(long)]
        out: PathBuf,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum KeyAlg {
    #[value(name = "ES256")]
    Es256,
    #[value(name = "EdDSA")]
    EdDsa,
    #[value(name = "PS256")]
    Ps256,
}

#[derive(Subcommand)]
enum SessionsAction {
    /// End every session of a user (--sub) or of a provider session (--sid), on every instance.
    Revoke {
        /// The user's subject identifier at the provider.
        #[arg(long, conflicts_with = "sid", required_unless_present = "sid")]
        sub: Option<String>,
        /// The provider's session id.
        #[arg(long)]
        sid: Option<String>,
        /// The provider (a key under `providers`; default: the first).
        #[arg(long)]
        provider: Option<String>,
    },
}

/// `sallyport keys generate`: a new key in a file only its owner can read.
fn keys(action: KeysAction) -> ExitCode {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let KeysAction::Generate { alg, out } = action;
    let pem = match sallyport::keys::generate(match alg {
        KeyAlg::Es256 => sallyport::keys::NewKey::Es256,
        KeyAlg::EdDsa => sallyport::keys::NewKey::EdDsa,
        KeyAlg::Ps256 => sallyport::keys::NewKey::Ps256,
    }) {
        Ok(pem) => zeroize::Zeroizing::new(pem),
        Err(_) => {
            eprintln!("the system's random source failed; no key written");
            return ExitCode::FAILURE;
        }
    };
    let written = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&out)
        .and_then(|mut f| f.write_all(pem.as_bytes()).and_then(|()| f.sync_all()));
    match written {
        Ok(()) => {
            println!(
                "wrote {}; publish it with signing_keys: [{{ file: {}, kid: \"<a new id>\" }}]",
                out.display(),
                out.display()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("cannot create {}: {e}", out.display());
            ExitCode::from(2)
        }
    }
}

fn load(path: &std::path::Path) -> Result<Config, ExitCode> {
    Config::load(path, &ProcessEnv).map_err(|errors| {
        eprintln!("{}: {} problem(s):", path.display(), errors.0.len());
        for e in &errors.0 {
            eprintln!("  {e}");
        }
        ExitCode::from(2)
    })
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let format = match cli.log_format {
        Format::Text => LogFormat::Text,
        Format::Json => LogFormat::Json,
    };
    if let Some(Command::Keys { action }) = cli.command {
        telemetry::init(format, None);
        return keys(action);
    }
    let config = match load(&cli.config) {
        Ok(c) => c,
        Err(code) => return code,
    };
    if let Some(Command::Sessions { action }) = cli.command {
        telemetry::init(format, None);
        return sessions(&config, action);
    }
    if let Some(Command::Reload) = cli.command {
        return reload(&config);
    }
    if let Some(Command::Check) = cli.command {
        for w in &config.warnings {
            println!("warning: {w}");
        }
        println!(
            "{}: valid ({} provider(s), {} service(s), {} route(s), {} store)",
            cli.config.display(),
            config.providers.len(),
            config.services.len(),
            config.routes.len(),
            match config.session.store {
                sallyport::config::StoreConfig::Memory => "memory",
                sallyport::config::StoreConfig::File { .. } => "file",
                sallyport::config::StoreConfig::Redis { .. } => "redis",
            }
        );
        return ExitCode::SUCCESS;
    }
    // Before the runtime: the span exporter sends from a thread of its own.
    let spans = telemetry::init(format, config.telemetry.otlp.as_ref());
    let runtime = sallyport::runtime().expect("building the tokio runtime");
    let result = runtime.block_on(run(config, cli.config));
    drop(runtime);
    if let Some(spans) = spans {
        spans.shutdown();
    }
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let mut msg = e.to_string();
            let mut source = e.source();
            while let Some(s) = source {
                msg.push_str(&format!(": {s}"));
                source = s.source();
            }
            tracing::error!(error = %msg, "sallyport stopped");
            ExitCode::FAILURE
        }
    }
}

fn sessions(config: &Config, action: SessionsAction) -> ExitCode {
    let SessionsAction::Revoke { sub, sid, provider } = action;
    if config.session.store == sallyport::config::StoreConfig::Memory {
        eprintln!(
            "session.store: memory sessions live inside the running process; `sessions revoke` needs store: file or redis"
        );
        return ExitCode::from(2);
    }
    let provider = match provider {
        None => config.default_provider().name.clone(),
        Some(p) if config.providers.iter().any(|c| c.name == p) => p,
        Some(p) => {
            eprintln!("--provider: no provider named {p:?} under `providers`");
            return ExitCode::from(2);
        }
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("building the tokio runtime");
    let result = runtime.block_on(async {
        let store = sallyport::store::build(&config.session)?;
        let sessions =
            sallyport::session::manager::Sessions::new(store, &config.session, Default::default());
        let owner = match (&sub, &sid) {
            (Some(sub), _) => sallyport::session::revoke::Owner::Subject(sub),
            (None, Some(sid)) => sallyport::session::revoke::Owner::ProviderSession(sid),
            (None, None) => unreachable!("clap requires --sub or --sid"),
        };
        sessions.revoke(&provider, owner).await
    });
    match result {
        Ok(n) => {
            println!("revoked {n} session(s)");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!(
                "cannot reach the session store: {e} (a file store is locked while Sallyport runs; use redis to revoke live)"
            );
            ExitCode::FAILURE
        }
    }
}

async fn run(config: Config, path: PathBuf) -> Result<(), Box<dyn std::error::Error>> {
    let listen = config.server.listen;
    let admin_listen = config.server.admin_listen;
    let forward_auth = config.server.forward_auth.as_ref().map(|f| f.listen);
    for w in &config.warnings {
        tracing::warn!(key = %w.path, "{}", w.message);
    }
    let listeners = sallyport::Listeners::bind(&config).await?;
    let gateway = sallyport::Gateway::new(config)?;
    let reloads = tokio::spawn(reloads(gateway.clone(), path));
    let runtime = tokio::runtime::Handle::current();
    let flavor = match runtime.runtime_flavor() {
        tokio::runtime::RuntimeFlavor::CurrentThread => "current_thread",
        _ => "multi_thread",
    };
    let workers = runtime.metrics().num_workers();
    tracing::info!(%listen, admin = ?admin_listen, ?forward_auth, runtime = flavor, workers, "sallyport listening");
    sallyport::serve(gateway, listeners, shutdown_signal()).await?;
    reloads.abort();
    tracing::info!("sallyport stopped");
    Ok(())
}

/// Reloads the configuration file on SIGHUP and when the admin API asks, one at a time.
async fn reloads(gateway: sallyport::Gateway, path: PathBuf) {
    let mut asked = gateway.reload_requests().take();
    let mut hangup = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::warn!(error = %e, "SIGHUP cannot be caught; reload through the admin API only");
            None
        }
    };
    loop {
        let reply = tokio::select! {
            Some(()) = async { hangup.as_mut()?.recv().await } => None,
            asked = asked.recv() => match asked {
                Some(reply) => Some(reply),
                None => return,
            },
        };
        tracing::info!(config = %path.display(), by = if reply.is_some() { "admin API" } else { "SIGHUP" }, "reloading the configuration");
        let outcome = match Config::load(&path, &ProcessEnv) {
            Err(errors) => Err(sallyport::reload::Refused(
                errors.0.iter().map(ToString::to_string).collect(),
            )),
            Ok(config) => {
                for w in &config.warnings {
                    tracing::warn!(key = %w.path, "{}", w.message);
                }
                gateway.reload(config).await
            }
        };
        match &outcome {
            Ok(report) => {
                for key in &report.restart_required {
                    tracing::warn!(
                        key,
                        "changed in the file; takes effect at the next restart (the running value stays)"
                    );
                }
                tracing::info!(
                    providers = report.providers,
                    services = report.services,
                    routes = report.routes,
                    "configuration reloaded"
                );
            }
            Err(refused) => {
                for problem in &refused.0 {
                    tracing::error!(%problem, "configuration problem");
                }
                tracing::error!(
                    problems = refused.0.len(),
                    "reload refused; the running configuration stays"
                );
            }
        }
        if let Some(reply) = reply {
            let _ = reply.send(outcome);
        }
    }
}

/// `sallyport reload`: asks the running process through its admin port.
fn reload(config: &Config) -> ExitCode {
    let (Some(addr), Some(token)) = (config.server.admin_listen, &config.admin_token) else {
        eprintln!(
            "reload needs server.admin_listen and admin.token; or send SIGHUP to the process"
        );
        return ExitCode::from(2);
    };
    // An admin port bound to every address is reached on loopback.
    let host = match addr.ip() {
        std::net::IpAddr::V4(ip) if ip.is_unspecified() => std::net::Ipv4Addr::LOCALHOST.into(),
        std::net::IpAddr::V6(ip) if ip.is_unspecified() => std::net::Ipv6Addr::LOCALHOST.into(),
        ip => ip,
    };
    let url = format!(
        "http://{}/admin/reload",
        std::net::SocketAddr::new(host, addr.port())
    );
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("building the tokio runtime");
    let answer = runtime.block_on(async {
        let resp = reqwest::Client::new()
            .post(&url)
            .bearer_auth(token.expose())
            .timeout(std::time::Duration::from_secs(60))
            .send()
            .await?;
        let status = resp.status();
        Ok::<_, reqwest::Error>((status, resp.json::<serde_json::Value>().await.ok()))
    });
    match answer {
        Err(e) => {
            eprintln!("cannot reach the admin port at {url}: {e}");
            ExitCode::FAILURE
        }
        Ok((status, Some(body))) if status.is_success() => {
            let report = &body["report"];
            println!(
                "reloaded: {} provider(s), {} service(s), {} route(s)",
                report["providers"], report["services"], report["routes"]
            );
            for key in report["restart_required"].as_array().into_iter().flatten() {
                println!(
                    "  {}: changed; takes effect at the next restart",
                    key.as_str().unwrap_or_default()
                );
            }
            ExitCode::SUCCESS
        }
        Ok((status, Some(body))) if body["error"] == "invalid_config" => {
            eprintln!("reload refused ({status}); the running configuration stays:");
            for p in body["problems"].as_array().into_iter().flatten() {
                eprintln!("  {}", p.as_str().unwrap_or_default());
            }
            ExitCode::from(2)
        }
        Ok((status, body)) => {
            let why = body
                .as_ref()
                .and_then(|b| b["message"].as_str())
                .unwrap_or("no explanation");
            eprintln!("reload failed: {status}: {why}");
            ExitCode::FAILURE
        }
    }
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
    tracing::info!("stop signal received; finishing in-flight requests");
}
