//! A real nginx (Debian package) on 127.0.0.1 running `examples/nginx/sallyport.conf` with the
//! test's ports substituted, stopped by PID when dropped.

use std::process::{Child, Command, Stdio};

const RECIPE: &str = include_str!("../../../examples/nginx/sallyport.conf");

/// A running nginx.
pub struct Nginx {
    /// `http://localhost:PORT`.
    pub url: String,
    child: Child,
    _dir: tempfile::TempDir,
}

impl Nginx {
    /// Starts nginx with the recipe: Sallyport on `sallyport_port`, its forward-auth listener
    /// on `forward_auth_port`, the app at `app` (host:port).
    pub async fn start(sallyport_port: u16, forward_auth_port: u16, app: &str) -> Nginx {
        let dir = tempfile::tempdir().unwrap();
        let port = super::free_port();
        let site = RECIPE
            .replace("127.0.0.1:8080", &format!("127.0.0.1:{sallyport_port}"))
            .replace("127.0.0.1:8081", &format!("127.0.0.1:{forward_auth_port}"))
            .replace("127.0.0.1:7000", app)
            .replace("listen 8000;", &format!("listen 127.0.0.1:{port};"));
        assert_ne!(site, RECIPE, "the recipe's placeholders changed");
        let d = dir.path().display();
        std::fs::write(dir.path().join("site.conf"), site).unwrap();
        std::fs::write(
            dir.path().join("nginx.conf"),
            format!(
                "user root;\nworker_processes 1;\npid {d}/nginx.pid;\nerror_log {d}/error.log warn;\ndaemon off;\n\
                 events {{ worker_connections 64; }}\n\
                 http {{\n  access_log off;\n  client_body_temp_path {d}/body;\n  proxy_temp_path {d}/proxy;\n\
                 fastcgi_temp_path {d}/fastcgi;\n  uwsgi_temp_path {d}/uwsgi;\n  scgi_temp_path {d}/scgi;\n\
                 include {d}/site.conf;\n}}\n"
            ),
        )
        .unwrap();
        // Debian installs nginx in /usr/sbin, which is not on every user's PATH.
        let program = if std::path::Path::new("/usr/sbin/nginx").exists() {
            "/usr/sbin/nginx"
        } else {
            "nginx"
        };
        let child = Command::new(program)
            .arg("-p")
            .arg(dir.path())
            .arg("-c")
            .arg(dir.path().join("nginx.conf"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nginx (apt-get install nginx)");
        let nginx = Nginx {
            url: format!("http://localhost:{port}"),
            child,
            _dir: dir,
        };
        if !super::listening(port).await {
            let log =
                std::fs::read_to_string(nginx._dir.path().join("error.log")).unwrap_or_default();
            panic!("nginx did not start:\n{log}");
        }
        nginx
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        super::stop_process(&mut self.child);
    }
}
