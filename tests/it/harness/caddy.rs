//! A real Caddy (Debian package) on 127.0.0.1 running `examples/caddy/Caddyfile` with the
//! test's ports substituted, stopped by PID when dropped.

use std::process::{Child, Command, Stdio};

const RECIPE: &str = include_str!("../../../examples/caddy/Caddyfile");

/// A running Caddy.
pub struct Caddy {
    /// `http://localhost:PORT`.
    pub url: String,
    child: Child,
    dir: tempfile::TempDir,
}

impl Caddy {
    /// Starts Caddy with the recipe: Sallyport on `sallyport_port`, its forward-auth listener
    /// on `forward_auth_port`, the app at `app` (host:port).
    pub async fn start(sallyport_port: u16, forward_auth_port: u16, app: &str) -> Caddy {
        let dir = tempfile::tempdir().unwrap();
        let port = super::free_port();
        // Plain HTTP on a loopback port, any Host; no admin endpoint (tests run side by side).
        let site = RECIPE
            .replace(
                "app.example.com {",
                &format!("http://:{port} {{\n\tbind 127.0.0.1"),
            )
            .replace("127.0.0.1:8080", &format!("127.0.0.1:{sallyport_port}"))
            .replace("127.0.0.1:8081", &format!("127.0.0.1:{forward_auth_port}"))
            .replace("127.0.0.1:7000", app);
        assert!(
            !site.contains("app.example.com {") && !site.contains(":7000"),
            "the recipe's placeholders changed"
        );
        let config = dir.path().join("Caddyfile");
        std::fs::write(&config, format!("{{\n\tadmin off\n}}\n{site}")).unwrap();
        let log = std::fs::File::create(dir.path().join("caddy.log")).unwrap();
        let child = Command::new("caddy")
            .args(["run", "--adapter", "caddyfile", "--config"])
            .arg(&config)
            // Caddy keeps data and autosaved config under these: the test's own directory.
            .env("XDG_DATA_HOME", dir.path())
            .env("XDG_CONFIG_HOME", dir.path())
            .env("HOME", dir.path())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("caddy (apt-get install caddy)");
        let caddy = Caddy {
            url: format!("http://localhost:{port}"),
            child,
            dir,
        };
        if !super::listening(port).await {
            let log =
                std::fs::read_to_string(caddy.dir.path().join("caddy.log")).unwrap_or_default();
            panic!("caddy did not start:\n{log}");
        }
        caddy
    }
}

impl Drop for Caddy {
    fn drop(&mut self) {
        super::stop_process(&mut self.child);
    }
}
