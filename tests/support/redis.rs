//! Real Redis for tests, on 127.0.0.1: a server that can be stopped, frozen and resumed with
//! its data, a three-node Cluster, and a master with a replica watched by a Sentinel. Each
//! process is killed by PID when dropped.
//!
//! One file for every test that needs Redis: the store's unit tests (`src/store/redis.rs`) and
//! the integration harness (`tests/it/harness/redis.rs`) include it with `#[path]`, so there is
//! one launcher to keep right. Each includer uses a part of it.
#![allow(dead_code, unreachable_pub)]

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running (or stopped) `redis-server`.
pub struct RedisServer {
    /// `redis://127.0.0.1:PORT`.
    pub url: String,
    port: u16,
    /// Its own working folder: the append-only file, and a replica's `dump.rdb` after a full
    /// sync (every redis-server loads `dump.rdb` from its folder at start).
    dir: tempfile::TempDir,
    extra: Vec<String>,
    child: Option<Child>,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// One command's answer, or `None` when the server does not answer (yet).
pub async fn query<T: redis::FromRedisValue>(url: &str, cmd: &redis::Cmd) -> Option<T> {
    let client = redis::Client::open(url).ok()?;
    let mut conn = client.get_multiplexed_async_connection().await.ok()?;
    cmd.query_async(&mut conn).await.ok()
}

impl RedisServer {
    /// Starts a server on a free port, its data kept in an append-only file (so that
    /// [`RedisServer::stop`] then [`RedisServer::resume`] keeps it).
    pub async fn start() -> RedisServer {
        Self::start_with(&[]).await
    }

    /// [`RedisServer::start`] with more `redis-server` arguments (later ones win). Another test
    /// may grab the same port between choosing and binding it, so a server only counts once
    /// the one answering there is this child; otherwise another port is tried.
    pub async fn start_with(extra: &[&str]) -> RedisServer {
        for _ in 0..5 {
            let port = free_port();
            let mut server = RedisServer {
                url: format!("redis://127.0.0.1:{port}"),
                port,
                dir: tempfile::tempdir().unwrap(),
                extra: extra.iter().map(|s| (*s).to_owned()).collect(),
                child: None,
            };
            if server.launch().await {
                return server;
            }
            // `server` is dropped here, which kills and reaps its process.
        }
        panic!("redis-server did not start");
    }

    /// Starts the server again on the same port and data.
    pub async fn resume(&mut self) {
        assert!(
            self.launch().await,
            "redis-server did not start again on its port"
        );
    }

    /// Starts the child; true once the server answering on the port is this child.
    async fn launch(&mut self) -> bool {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args([
                "--save",
                "",
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
            ])
            .arg("--dir")
            .arg(self.dir.path())
            .args(&self.extra)
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server (apt-get install redis-server)");
        let pid = format!("process_id:{}", child.id());
        self.child = Some(child);
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(10) {
            let info: Option<String> = query(&self.url, redis::cmd("INFO").arg("server")).await;
            if let Some(info) = info {
                // Another test's server may hold this port.
                return info.lines().any(|l| l.trim() == pid);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        false
    }

    /// Stops the server (SIGTERM: it flushes its append-only file and exits).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
            let _ = child.wait();
        }
    }

    /// Freezes (`SIGSTOP`) or thaws (`SIGCONT`) the server: connections stay open, answers stop.
    pub fn freeze(&self, frozen: bool) {
        let child = self.child.as_ref().expect("running");
        let sig = if frozen { "-STOP" } else { "-CONT" };
        let _ = Command::new("kill")
            .args([sig, &child.id().to_string()])
            .status();
    }

    /// A connection for inspecting or arranging keys.
    pub async fn conn(&self) -> redis::aio::MultiplexedConnection {
        redis::Client::open(self.url.as_str())
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap()
    }

    /// The port, as text.
    pub fn port(&self) -> String {
        self.port.to_string()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A three-node Redis Cluster (no replicas, no persistence).
pub struct Cluster {
    nodes: Vec<RedisServer>,
    _dir: tempfile::TempDir,
}

impl Cluster {
    /// Starts the nodes, joins them, and waits for `cluster_state:ok` on each.
    pub async fn start() -> Cluster {
        let dir = tempfile::tempdir().unwrap();
        let mut nodes = Vec::new();
        for i in 0..3 {
            let conf = dir.path().join(format!("nodes-{i}.conf"));
            nodes.push(
                RedisServer::start_with(&[
                    "--appendonly",
                    "no",
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    conf.to_str().unwrap(),
                ])
                .await,
            );
        }
        let addrs: Vec<String> = nodes
            .iter()
            .map(|n| n.url.trim_start_matches("redis://").to_owned())
            .collect();
        let status = Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(&addrs)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .stdout(Stdio::null())
            .status()
            .expect("redis-cli (apt-get install redis-tools)");
        assert!(status.success(), "redis-cli --cluster create failed");
        let cluster = Cluster { nodes, _dir: dir };
        for _ in 0..100 {
            if cluster.is_ok().await {
                return cluster;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("the cluster never reached cluster_state:ok");
    }

    async fn is_ok(&self) -> bool {
        for node in &self.nodes {
            let info: Option<String> = query(&node.url, redis::cmd("CLUSTER").arg("INFO")).await;
            if !info.is_some_and(|i| i.contains("cluster_state:ok")) {
                return false;
            }
        }
        true
    }

    /// The nodes' URLs.
    pub fn urls(&self) -> Vec<&str> {
        self.nodes.iter().map(|n| n.url.as_str()).collect()
    }
}

/// A master, its replica and one Sentinel watching them as `main` (quorum 1, quick failover).
pub struct Sentinels {
    /// The master; set to `None` to kill it.
    pub master: Option<RedisServer>,
    /// The replica.
    pub replica: RedisServer,
    sentinel: Child,
    /// The Sentinel's URL.
    pub url: String,
    _dir: tempfile::TempDir,
}

impl Drop for Sentinels {
    fn drop(&mut self) {
        let _ = self.sentinel.kill();
        let _ = self.sentinel.wait();
    }
}

impl Sentinels {
    /// Starts the three, and waits until the replica has synced and the Sentinel sees it.
    pub async fn start() -> Sentinels {
        let master = RedisServer::start_with(&["--appendonly", "no"]).await;
        let replica = RedisServer::start_with(&[
            "--appendonly",
            "no",
            "--replicaof",
            "127.0.0.1",
            &master.port(),
        ])
        .await;
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let conf = dir.path().join("sentinel.conf");
        std::fs::write(
            &conf,
            format!(
                "port {port}\nbind 127.0.0.1\ndir {}\nsentinel monitor main 127.0.0.1 {} 1\n\
                 sentinel down-after-milliseconds main 500\nsentinel failover-timeout main 3000\n",
                dir.path().display(),
                master.port()
            ),
        )
        .unwrap();
        let sentinel = Command::new("redis-server")
            .arg(&conf)
            .arg("--sentinel")
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        let sentinels = Sentinels {
            master: Some(master),
            replica,
            sentinel,
            url: format!("redis://127.0.0.1:{port}"),
            _dir: dir,
        };
        // Ready once the Sentinel knows the master and its replica…
        for _ in 0..200 {
            let replicas: Option<Vec<redis::Value>> = query(
                &sentinels.url,
                redis::cmd("SENTINEL").arg("REPLICAS").arg("main"),
            )
            .await;
            // …and the replica's link to the master is up (its first sync has finished), so a
            // test's write replicates without racing the initial sync.
            let info: Option<String> = query(
                &sentinels.replica.url,
                redis::cmd("INFO").arg("replication"),
            )
            .await;
            if replicas.is_some_and(|r| !r.is_empty())
                && info.is_some_and(|i| i.contains("master_link_status:up"))
            {
                return sentinels;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("the Sentinel never saw the replica");
    }
}
