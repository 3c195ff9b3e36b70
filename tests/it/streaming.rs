//! 100 MB up and down through the built binary while its memory stays flat.

use std::process::Stdio;
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;

use crate::harness::upstream::Upstream;
use crate::harness::{SESSION_KEY, eventually, free_port};

const SIZE: u64 = 100 * 1024 * 1024;

fn rss_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

struct Process(std::process::Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn hundred_megabytes_stream_both_ways_with_flat_memory() {
    let upstream = Upstream::start().await;
    let port = free_port();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("sallyport.yaml");
    std::fs::write(
        &config,
        format!(
            r#"
server: {{ listen: "127.0.0.1:{port}", public_url: "http://localhost:{port}" }}
providers:
  main: {{ issuer: "http://127.0.0.1:{dead}", client_id: x, client_secret: y }}
session: {{ keys: ["{SESSION_KEY}"] }}
services:
  files: {{ url: "{up}", token: none }}
routes:
  - {{ path: /api/big, service: files, upstream_path: /big, auth: none }}
  - {{ path: /api/upload, service: files, upstream_path: /upload, auth: none }}
"#,
            dead = free_port(),
            up = upstream.url
        ),
    )
    .unwrap();
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_sallyport"))
        .arg("--config")
        .arg(&config)
        .env("RUST_LOG", "error")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let proc = Process(child);
    let pid = proc.0.id();
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    eventually(Duration::from_secs(10), || async {
        http.get(format!("{base}/auth/health"))
            .send()
            .await
            .ok()
            .map(|_| ())
    })
    .await
    .expect("sallyport starts");
    // Warm up the pool and buffers with a small transfer first.
    let warm = http
        .get(format!("{base}/api/big?bytes=1048576"))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(warm.len(), 1 << 20);
    let baseline = rss_kib(pid, "VmRSS:");

    let resp = http
        .get(format!("{base}/api/big?bytes={SIZE}"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let mut stream = resp.bytes_stream();
    let mut received: u64 = 0;
    while let Some(chunk) = stream.next().await {
        received += chunk.unwrap().len() as u64;
    }
    assert_eq!(received, SIZE);

    let chunk = Bytes::from(vec![b'u'; 64 * 1024]);
    let chunks = (SIZE / chunk.len() as u64) as usize;
    let body = futures_util::stream::iter(
        (0..chunks).map(move |_| Ok::<_, std::io::Error>(chunk.clone())),
    );
    let resp = http
        .post(format!("{base}/api/upload"))
        .body(reqwest::Body::wrap_stream(body))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let echoed: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(echoed["bytes"], SIZE);

    let peak = rss_kib(pid, "VmHWM:");
    let after = rss_kib(pid, "VmRSS:");
    println!(
        "streaming 100 MB each way: RSS baseline {baseline} KiB, after {after} KiB, peak {peak} KiB (growth {} KiB)",
        peak.saturating_sub(baseline)
    );
    assert!(
        peak < baseline + 16 * 1024,
        "memory grew by {} KiB while streaming",
        peak - baseline
    );
}
