//! A real Prometheus (Debian package) on 127.0.0.1 scraping one target every second, with
//! its data in a temporary folder; stopped by PID when dropped.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A running Prometheus.
pub struct Prometheus {
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    child: Child,
    dir: tempfile::TempDir,
    http: reqwest::Client,
}

impl Prometheus {
    /// Starts Prometheus scraping `target` (`host:port`, path `/metrics`) every second.
    pub async fn start(target: &str) -> Prometheus {
        let dir = tempfile::tempdir().unwrap();
        let port = super::free_port();
        let config = dir.path().join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global: {{ scrape_interval: 1s, evaluation_interval: 1s }}\n\
                 scrape_configs:\n  - job_name: sallyport\n    static_configs: [{{ targets: ['{target}'] }}]\n"
            ),
        )
        .unwrap();
        let log = std::fs::File::create(dir.path().join("prometheus.log")).unwrap();
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("prometheus (apt-get install prometheus)");
        let prometheus = Prometheus {
            url: format!("http://127.0.0.1:{port}"),
            child,
            dir,
            http: reqwest::Client::new(),
        };
        let ready = super::eventually(Duration::from_secs(20), || async {
            let r = prometheus
                .http
                .get(format!("{}/-/ready", prometheus.url))
                .send()
                .await
                .ok()?;
            r.status().is_success().then_some(())
        })
        .await;
        if ready.is_none() {
            let log = std::fs::read_to_string(prometheus.dir.path().join("prometheus.log"))
                .unwrap_or_default();
            panic!("prometheus did not start:\n{log}");
        }
        prometheus
    }

    /// The value of the PromQL `query` (an instant vector with one sample), if it has one.
    pub async fn value(&self, query: &str) -> Option<f64> {
        let req = self
            .http
            .post(format!("{}/api/v1/query", self.url))
            .form(&[("query", query)]);
        let answer: serde_json::Value = req.send().await.ok()?.json().await.ok()?;
        answer["data"]["result"][0]["value"][1]
            .as_str()?
            .parse()
            .ok()
    }

    /// The scrape target's health as Prometheus sees it (`up`, `down`, `unknown`).
    pub async fn target_health(&self) -> Option<String> {
        let req = self.http.get(format!("{}/api/v1/targets", self.url));
        let answer: serde_json::Value = req.send().await.ok()?.json().await.ok()?;
        answer["data"]["activeTargets"][0]["health"]
            .as_str()
            .map(str::to_owned)
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        super::stop_process(&mut self.child);
    }
}
