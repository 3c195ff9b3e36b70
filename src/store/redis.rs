//! The Redis store (Redis, Valkey): sessions shared by many Sallyport instances.
//!
//! Key layout, under `session.redis.key_prefix` (default `sallyport:`), where `<key>` is the hex
//! of the session's store key (SHA-256 of its id):
//! - `<prefix>s:<key>`: a sealed session; its Redis expiry is the session's idle/absolute end.
//!   The token broker keeps Sallyport's shared client-credentials tokens here too, sealed the
//!   same way, `<key>` being a hash of what the token is for; they expire with the token.
//! - `<prefix>l:<key>`: a pending login (10 minutes), taken once with `GETDEL`.
//! - `<prefix>logins`: a sorted set of pending-login keys by expiry, to bound their number.
//! - `<prefix>lock:<key>`: a token lock (a session's refresh, a session's exchange for one
//!   service, a shared token's renewal), `SET NX PX` with a random token.
//! - `<prefix>u:<owner>`: the set of session keys of a user (`sub`) or provider session
//!   (`sid`), `<owner>` being a hash of it; it expires with the longest-lived of them.
//! - `<prefix>j:<key>`: a one-time marker (a logout token's `jti`), until that token expires.
//!
//! Writes set the expiry in the same command (`SET … NX|XX PXAT`), so no key outlives its
//! session. The connection is made on first use and re-made by the connection manager after a
//! failure; every call is bounded by `session.redis.timeout`, so a lost Redis answers `503`
//! quickly instead of hanging requests.

use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use bytes::Bytes;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::sentinel::{SentinelClient, SentinelNodeConnectionInfo, SentinelServerType};

use crate::session::{SessionStore, StoreError, StoreKey};

/// Releases a lock only if it still holds our token (another holder's lock stays).
const UNLOCK: &str = r"if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) else return 0 end";
/// Extends a lock if the token still holds it.
const EXTEND: &str = r"if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) else return 0 end";
/// Compare-and-set of a session: writes only while the key holds the expected bytes.
const REPLACE: &str = r"if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('SET', KEYS[1], ARGV[2], 'PXAT', ARGV[3]) return 1 else return 0 end";

/// Where the data lives: one server (or a proxy in front of several), or a Redis Cluster.
enum Target {
    Single(redis::Client, ConnectionManagerConfig),
    Cluster(ClusterClient),
    /// The master that Sentinel names; asked again after every connection failure, since a
    /// connection does not follow a failover by itself (redis-rs#1438).
    Sentinel(tokio::sync::Mutex<SentinelClient>),
}

/// A connection to either, shared by clone. Both reconnect by themselves after a failure.
#[derive(Clone)]
enum Conn {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
    Sentinel(redis::aio::MultiplexedConnection),
}

impl redis::aio::ConnectionLike for Conn {
    fn req_packed_command<'a>(
        &'a mut self,
        cmd: &'a redis::Cmd,
    ) -> redis::RedisFuture<'a, redis::Value> {
        match self {
            Conn::Single(c) => c.req_packed_command(cmd),
            Conn::Cluster(c) => c.req_packed_command(cmd),
            Conn::Sentinel(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> redis::RedisFuture<'a, Vec<redis::Value>> {
        match self {
            Conn::Single(c) => c.req_packed_commands(pipeline, offset, count),
            Conn::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
            Conn::Sentinel(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Single(c) => c.get_db(),
            Conn::Cluster(c) => c.get_db(),
            Conn::Sentinel(c) => c.get_db(),
        }
    }
}

/// Sessions, pending logins and refresh locks in Redis.
pub struct RedisStore {
    target: Target,
    /// The current connection; `None` until first use, and again after a Sentinel failover.
    conn: std::sync::Mutex<Option<Conn>>,
    /// Serialises connecting, so that a cold start makes one connection, not one per caller.
    connecting: tokio::sync::Mutex<()>,
    prefix: String,
    max_logins: usize,
    timeout: Duration,
    unlock: redis::Script,
    extend: redis::Script,
    replace: redis::Script,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

fn unavailable(e: impl std::error::Error + Send + Sync + 'static) -> StoreError {
    StoreError::Unavailable(Box::new(e))
}

fn millis(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH).map_or(1, |d| {
        u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1)
    })
}

#[derive(Debug, thiserror::Error)]
#[error("redis did not answer within {0:?}")]
struct TimedOut(Duration);

impl RedisStore {
    /// A store for `url` (`redis://`, `rediss://`, with user and password if any); nothing is
    /// connected yet.
    ///
    /// # Errors
    /// When the URL is not usable.
    pub fn new(
        url: &str,
        prefix: &str,
        max_logins: usize,
        timeout: Duration,
    ) -> Result<Self, StoreError> {
        let client = redis::Client::open(url).map_err(unavailable)?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_secs(2));
        Ok(Self::with_target(
            Target::Single(client, config),
            prefix,
            max_logins,
            timeout,
        ))
    }

    /// A store on the Redis Cluster reached through `nodes` (any of its nodes; the rest are
    /// discovered); nothing is connected yet.
    ///
    /// # Errors
    /// When a URL is not usable.
    pub fn cluster(
        nodes: &[&str],
        prefix: &str,
        max_logins: usize,
        timeout: Duration,
    ) -> Result<Self, StoreError> {
        let client = ClusterClient::builder(nodes.iter().copied())
            .connection_timeout(timeout)
            .response_timeout(timeout)
            .retries(1)
            .build()
            .map_err(unavailable)?;
        Ok(Self::with_target(
            Target::Cluster(client),
            prefix,
            max_logins,
            timeout,
        ))
    }

    /// A store on the master that the Sentinels at `sentinels` name `master`; `auth` (a URL whose
    /// user, password and database are used, its host ignored) logs in to that master.
    ///
    /// # Errors
    /// When a URL is not usable.
    pub fn sentinel(
        sentinels: &[&str],
        master: &str,
        auth: Option<&str>,
        prefix: &str,
        max_logins: usize,
        timeout: Duration,
    ) -> Result<Self, StoreError> {
        let mut node = SentinelNodeConnectionInfo::default();
        if let Some(auth) = auth {
            let info =
                redis::IntoConnectionInfo::into_connection_info(auth).map_err(unavailable)?;
            node = node.set_redis_connection_info(info.redis_settings().clone());
        }
        let client = SentinelClient::build(
            sentinels.to_vec(),
            master,
            Some(node),
            SentinelServerType::Master,
        )
        .map_err(unavailable)?;
        Ok(Self::with_target(
            Target::Sentinel(tokio::sync::Mutex::new(client)),
            prefix,
            max_logins,
            timeout,
        ))
    }

    fn with_target(target: Target, prefix: &str, max_logins: usize, timeout: Duration) -> Self {
        Self {
            target,
            conn: std::sync::Mutex::new(None),
            connecting: tokio::sync::Mutex::new(()),
            prefix: prefix.to_owned(),
            max_logins: max_logins.max(1),
            timeout,
            unlock: redis::Script::new(UNLOCK),
            extend: redis::Script::new(EXTEND),
            replace: redis::Script::new(REPLACE),
        }
    }

    fn cached(&self) -> Option<Conn> {
        self.conn
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    async fn conn(&self) -> Result<Conn, StoreError> {
        if let Some(conn) = self.cached() {
            return Ok(conn);
        }
        let _connecting = self.connecting.lock().await;
        if let Some(conn) = self.cached() {
            return Ok(conn);
        }
        let connect = async {
            match &self.target {
                Target::Single(client, config) => client
                    .get_connection_manager_with_config(config.clone())
                    .await
                    .map(Conn::Single),
                Target::Cluster(client) => client.get_async_connection().await.map(Conn::Cluster),
                Target::Sentinel(client) => {
                    let config = redis::AsyncConnectionConfig::new()
                        .set_connection_timeout(Some(self.timeout))
                        .set_response_timeout(Some(self.timeout));
                    let mut client = client.lock().await;
                    client
                        .get_async_connection_with_config(&config)
                        .await
                        .map(Conn::Sentinel)
                }
            }
        };
        let conn = match tokio::time::timeout(self.timeout, connect).await {
            Ok(Ok(c)) => c,
            Ok(Err(e)) => return Err(unavailable(e)),
            Err(_) => return Err(unavailable(TimedOut(self.timeout))),
        };
        *self
            .conn
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(conn.clone());
        Ok(conn)
    }

    /// After a failure, a Sentinel connection is dropped, so the next call asks the Sentinels
    /// for the master again (it may have failed over). `None` is a timeout.
    fn failed(&self, error: Option<&redis::RedisError>) {
        if !matches!(self.target, Target::Sentinel(_)) {
            return;
        }
        let connection_lost = error.is_none_or(|e| {
            e.is_io_error()
                || e.is_connection_dropped()
                || e.is_connection_refusal()
                || e.code() == Some("READONLY")
        });
        if connection_lost {
            *self
                .conn
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner) = None;
        }
    }

    /// Runs `cmd`, bounded by the timeout.
    async fn query<T: redis::FromRedisValue>(&self, cmd: &redis::Cmd) -> Result<T, StoreError> {
        let mut conn = self.conn().await?;
        let result = tokio::time::timeout(self.timeout, cmd.query_async(&mut conn)).await;
        self.settle(result)
    }

    /// Maps a bounded call's outcome, noting connection failures.
    fn settle<T>(
        &self,
        result: Result<redis::RedisResult<T>, tokio::time::error::Elapsed>,
    ) -> Result<T, StoreError> {
        match result {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => {
                self.failed(Some(&e));
                Err(unavailable(e))
            }
            Err(_) => {
                self.failed(None);
                Err(unavailable(TimedOut(self.timeout)))
            }
        }
    }

    fn key(&self, kind: &str, key: &StoreKey) -> String {
        let mut name = String::with_capacity(self.prefix.len() + kind.len() + 65);
        name.push_str(&self.prefix);
        name.push_str(kind);
        name.push(':');
        key.push_hex(&mut name);
        name
    }

    fn logins_index(&self) -> String {
        format!("{}logins", self.prefix)
    }

    /// Runs a Lua script (loaded on first use, by `EVALSHA` after), within the timeout.
    async fn script(&self, invocation: &redis::ScriptInvocation<'_>) -> Result<i64, StoreError> {
        let mut conn = self.conn().await?;
        let result =
            tokio::time::timeout(self.timeout, invocation.invoke_async::<i64>(&mut conn)).await;
        self.settle(result)
    }

    async fn set(
        &self,
        key: String,
        value: &[u8],
        condition: &str,
        expires_at: SystemTime,
    ) -> Result<bool, StoreError> {
        let mut cmd = redis::cmd("SET");
        cmd.arg(key).arg(value);
        if !condition.is_empty() {
            cmd.arg(condition);
        }
        cmd.arg("PXAT").arg(millis(expires_at));
        let reply: Option<String> = self.query(&cmd).await?;
        Ok(reply.is_some())
    }
}

#[async_trait]
impl SessionStore for RedisStore {
    async fn load(&self, key: &StoreKey) -> Result<Option<Bytes>, StoreError> {
        let sealed: Option<Vec<u8>> = self
            .query(redis::cmd("GET").arg(self.key("s", key)))
            .await?;
        Ok(sealed.map(Bytes::from))
    }

    async fn create(
        &self,
        key: &StoreKey,
        sealed: Bytes,
        expires_at: SystemTime,
    ) -> Result<bool, StoreError> {
        self.set(self.key("s", key), &sealed, "NX", expires_at)
            .await
    }

    async fn update(
        &self,
        key: &StoreKey,
        sealed: Bytes,
        expires_at: SystemTime,
    ) -> Result<bool, StoreError> {
        self.set(self.key("s", key), &sealed, "XX", expires_at)
            .await
    }

    async fn replace(
        &self,
        key: &StoreKey,
        expected: &Bytes,
        sealed: Bytes,
        expires_at: SystemTime,
    ) -> Result<bool, StoreError> {
        let mut invocation = self.replace.key(self.key("s", key));
        invocation
            .arg(&expected[..])
            .arg(&sealed[..])
            .arg(millis(expires_at));
        self.script(&invocation).await.map(|n| n == 1)
    }

    async fn delete(&self, key: &StoreKey) -> Result<(), StoreError> {
        self.query::<i64>(redis::cmd("DEL").arg(self.key("s", key)))
            .await
            .map(drop)
    }

    async fn put_login(
        &self,
        key: &StoreKey,
        sealed: Vec<u8>,
        expires_at: SystemTime,
    ) -> Result<(), StoreError> {
        let login_key = self.key("l", key);
        let index = self.logins_index();
        let now = millis(SystemTime::now());
        self.set(login_key.clone(), &sealed, "", expires_at).await?;
        // Separate commands rather than one transaction: the index and the login live in
        // different hash slots on Redis Cluster. A crash in between leaves at most an index
        // entry whose login expired, which the next trim removes.
        self.query::<i64>(
            redis::cmd("ZADD")
                .arg(&index)
                .arg(millis(expires_at))
                .arg(&login_key),
        )
        .await?;
        self.query::<i64>(
            redis::cmd("ZREMRANGEBYSCORE")
                .arg(&index)
                .arg("-inf")
                .arg(now),
        )
        .await?;
        let count: usize = self.query(redis::cmd("ZCARD").arg(&index)).await?;
        if count > self.max_logins {
            // A flood of live logins: drop the tenth closest to expiry.
            let drop = (self.max_logins / 10).max(count - self.max_logins);
            let popped: Vec<(String, f64)> = self
                .query(redis::cmd("ZPOPMIN").arg(&index).arg(drop))
                .await?;
            // One DEL each: on Redis Cluster the keys live in different slots.
            for (login, _) in popped {
                self.query::<i64>(redis::cmd("DEL").arg(login)).await?;
            }
        }
        Ok(())
    }

    async fn take_login(&self, key: &StoreKey) -> Result<Option<Vec<u8>>, StoreError> {
        let login_key = self.key("l", key);
        let taken: Option<Vec<u8>> = self.query(redis::cmd("GETDEL").arg(&login_key)).await?;
        if taken.is_some() {
            self.query::<i64>(redis::cmd("ZREM").arg(self.logins_index()).arg(&login_key))
                .await?;
        }
        Ok(taken)
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.query::<String>(&redis::cmd("PING")).await.map(drop)
    }

    async fn index(
        &self,
        owner: &StoreKey,
        session: &StoreKey,
        expires_at: SystemTime,
    ) -> Result<(), StoreError> {
        let set = self.key("u", owner);
        self.query::<i64>(
            redis::cmd("SADD")
                .arg(&set)
                .arg(session.as_bytes().as_slice()),
        )
        .await?;
        // Extend the set's expiry, never shorten it: NX for a new set, GT for a longer session.
        let at = millis(expires_at);
        self.query::<i64>(redis::cmd("PEXPIREAT").arg(&set).arg(at).arg("NX"))
            .await?;
        self.query::<i64>(redis::cmd("PEXPIREAT").arg(&set).arg(at).arg("GT"))
            .await?;
        Ok(())
    }

    async fn indexed(&self, owner: &StoreKey) -> Result<Vec<StoreKey>, StoreError> {
        let members: Vec<Vec<u8>> = self
            .query(redis::cmd("SMEMBERS").arg(self.key("u", owner)))
            .await?;
        Ok(members
            .into_iter()
            .filter_map(|m| {
                <[u8; 32]>::try_from(m.as_slice())
                    .ok()
                    .map(StoreKey::from_bytes)
            })
            .collect())
    }

    async fn forget(&self, owner: &StoreKey) -> Result<(), StoreError> {
        self.query::<i64>(redis::cmd("DEL").arg(self.key("u", owner)))
            .await
            .map(drop)
    }

    async fn is_used(&self, key: &StoreKey) -> Result<bool, StoreError> {
        let n: i64 = self
            .query(redis::cmd("EXISTS").arg(self.key("j", key)))
            .await?;
        Ok(n == 1)
    }

    async fn first_use(&self, key: &StoreKey, expires_at: SystemTime) -> Result<bool, StoreError> {
        self.set(self.key("j", key), b"1", "NX", expires_at).await
    }

    async fn try_lock(&self, key: &StoreKey, ttl: Duration) -> Result<Option<String>, StoreError> {
        let token = crate::random::token();
        let ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1);
        let reply: Option<String> = self
            .query(
                redis::cmd("SET")
                    .arg(self.key("lock", key))
                    .arg(&token)
                    .arg("NX")
                    .arg("PX")
                    .arg(ms),
            )
            .await?;
        Ok(reply.map(|_| token))
    }

    async fn extend_lock(
        &self,
        key: &StoreKey,
        token: &str,
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        let ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1);
        let mut invocation = self.extend.key(self.key("lock", key));
        invocation.arg(token).arg(ms);
        self.script(&invocation).await.map(|n| n == 1)
    }

    async fn unlock(&self, key: &StoreKey, token: &str) -> Result<(), StoreError> {
        let mut invocation = self.unlock.key(self.key("lock", key));
        invocation.arg(token);
        self.script(&invocation).await.map(drop)
    }
}

/// The Redis launchers shared with the integration harness.
#[cfg(test)]
#[path = "../../tests/support/redis.rs"]
mod test_redis;

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::test_redis::{Cluster, RedisServer, Sentinels, query};
    use super::*;

    /// A server without persistence.
    async fn server() -> RedisServer {
        RedisServer::start_with(&["--appendonly", "no"]).await
    }

    #[tokio::test]
    async fn a_redis_cluster_passes_the_conformance_suite_and_locks() {
        let cluster = Cluster::start().await;
        let n = AtomicUsize::new(0);
        let urls = cluster.urls();
        crate::store::conformance::run(|max| {
            let prefix = format!("c{}:", n.fetch_add(1, Ordering::Relaxed));
            let store = RedisStore::cluster(&urls, &prefix, max, Duration::from_secs(1)).unwrap();
            async move { store }
        })
        .await;
        // Only the first node is given: the others are discovered.
        let store = RedisStore::cluster(&urls[..1], "p:", 10, Duration::from_secs(1)).unwrap();
        let keys: Vec<StoreKey> = (0..20u8).map(|i| StoreKey::hash(&[i])).collect();
        for key in &keys {
            let token = store
                .try_lock(key, Duration::from_secs(5))
                .await
                .unwrap()
                .expect("free");
            assert!(
                store
                    .try_lock(key, Duration::from_secs(5))
                    .await
                    .unwrap()
                    .is_none()
            );
            store.unlock(key, &token).await.unwrap();
            assert!(
                store
                    .try_lock(key, Duration::from_secs(5))
                    .await
                    .unwrap()
                    .is_some(),
                "released on every node"
            );
        }
    }

    #[tokio::test]
    async fn sentinel_finds_the_master_and_follows_a_failover() {
        let mut sentinels = Sentinels::start().await;
        let n = AtomicUsize::new(0);
        let url = sentinels.url.clone();
        crate::store::conformance::run(|max| {
            let prefix = format!("s{}:", n.fetch_add(1, Ordering::Relaxed));
            let store = RedisStore::sentinel(
                &[url.as_str()],
                "main",
                None,
                &prefix,
                max,
                Duration::from_secs(1),
            )
            .unwrap();
            async move { store }
        })
        .await;

        let store = RedisStore::sentinel(
            &[url.as_str()],
            "main",
            None,
            "f:",
            10,
            Duration::from_millis(500),
        )
        .unwrap();
        let key = StoreKey::hash(b"survives failover");
        assert!(
            store
                .create(
                    &key,
                    bytes::Bytes::from_static(b"kept"),
                    SystemTime::now() + Duration::from_secs(600)
                )
                .await
                .unwrap()
        );
        let hex = key.to_hex();
        let replica_url = sentinels.replica.url.clone();
        let mut replicated = false;
        // Generous: the whole suite runs in parallel on two CPUs.
        for _ in 0..300 {
            let exists: Option<i64> =
                query(&replica_url, redis::cmd("EXISTS").arg(format!("f:s:{hex}"))).await;
            if exists == Some(1) {
                replicated = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(replicated, "the write reached the replica");

        sentinels.master = None; // killed
        let started = std::time::Instant::now();
        loop {
            if let Ok(Some(v)) = store.load(&key).await {
                assert_eq!(&v[..], b"kept");
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "the store never found the new master"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        println!(
            "sentinel failover: the store answered from the new master after {:?}",
            started.elapsed()
        );
        assert!(
            store
                .update(
                    &key,
                    bytes::Bytes::from_static(b"written to the new master"),
                    SystemTime::now() + Duration::from_secs(600)
                )
                .await
                .unwrap()
        );
    }

    #[tokio::test]
    async fn passes_the_conformance_suite() {
        let server = server().await;
        let n = AtomicUsize::new(0);
        crate::store::conformance::run(|max| {
            let prefix = format!("t{}:", n.fetch_add(1, Ordering::Relaxed));
            let url = server.url.clone();
            async move { RedisStore::new(&url, &prefix, max, Duration::from_secs(1)).unwrap() }
        })
        .await;
    }

    #[tokio::test]
    async fn keys_expire_with_their_session_and_follow_the_documented_layout() {
        let server = server().await;
        let store = RedisStore::new(&server.url, "app:", 10, Duration::from_secs(1)).unwrap();
        let key = StoreKey::hash(b"k");
        let expires = SystemTime::now() + Duration::from_secs(90);
        assert!(
            store
                .create(&key, bytes::Bytes::from_static(b"v"), expires)
                .await
                .unwrap()
        );
        let hex = key.to_hex();
        let pttl: i64 = store
            .query(redis::cmd("PTTL").arg(format!("app:s:{hex}")))
            .await
            .unwrap();
        assert!(
            (85_000..=90_000).contains(&pttl),
            "the Redis expiry is the session's: {pttl} ms"
        );
        store
            .put_login(
                &key,
                b"l".to_vec(),
                SystemTime::now() + Duration::from_secs(600),
            )
            .await
            .unwrap();
        let keys: Vec<String> = store.query(redis::cmd("KEYS").arg("app:*")).await.unwrap();
        let mut keys = keys;
        keys.sort();
        assert_eq!(
            keys,
            [
                format!("app:l:{hex}"),
                "app:logins".to_owned(),
                format!("app:s:{hex}")
            ]
        );
        assert!(store.take_login(&key).await.unwrap().is_some());
        store.delete(&key).await.unwrap();
        let left: Vec<String> = store.query(redis::cmd("KEYS").arg("app:*")).await.unwrap();
        assert!(left.is_empty(), "no orphaned keys: {left:?}");
    }

    #[tokio::test]
    async fn locks_are_exclusive_token_checked_and_expire() {
        let server = server().await;
        let a = RedisStore::new(&server.url, "p:", 10, Duration::from_secs(1)).unwrap();
        let b = RedisStore::new(&server.url, "p:", 10, Duration::from_secs(1)).unwrap();
        let key = StoreKey::hash(b"session");
        let token = a
            .try_lock(&key, Duration::from_millis(400))
            .await
            .unwrap()
            .expect("free lock");
        assert!(
            b.try_lock(&key, Duration::from_secs(5))
                .await
                .unwrap()
                .is_none(),
            "held by a"
        );
        b.unlock(&key, "not-the-token").await.unwrap();
        assert!(
            b.try_lock(&key, Duration::from_secs(5))
                .await
                .unwrap()
                .is_none(),
            "a wrong token releases nothing"
        );
        assert!(
            !b.extend_lock(&key, "not-the-token", Duration::from_secs(5))
                .await
                .unwrap(),
            "a wrong token extends nothing"
        );
        // The holder extends its lock past the first lifetime: still held after it.
        assert!(
            a.extend_lock(&key, &token, Duration::from_secs(2))
                .await
                .unwrap()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert!(
            b.try_lock(&key, Duration::from_secs(5))
                .await
                .unwrap()
                .is_none(),
            "extended beyond its first 400 ms"
        );
        a.unlock(&key, &token).await.unwrap();
        let token_b = b
            .try_lock(&key, Duration::from_millis(300))
            .await
            .unwrap()
            .expect("released");
        a.unlock(&key, &token).await.unwrap();
        assert!(
            a.try_lock(&key, Duration::from_secs(5))
                .await
                .unwrap()
                .is_none(),
            "a stale token cannot free b's lock"
        );
        // b "dies" holding the lock: it expires by itself.
        let _ = token_b;
        tokio::time::sleep(Duration::from_millis(400)).await;
        assert!(
            a.try_lock(&key, Duration::from_secs(5))
                .await
                .unwrap()
                .is_some(),
            "an expired lock is free"
        );
    }

    #[tokio::test]
    async fn an_unreachable_server_fails_fast() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let store = RedisStore::new(
            &format!("redis://127.0.0.1:{port}"),
            "p:",
            10,
            Duration::from_millis(300),
        )
        .unwrap();
        let started = std::time::Instant::now();
        assert!(store.load(&StoreKey::hash(b"k")).await.is_err());
        assert!(store.ping().await.is_err());
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "took {:?}",
            started.elapsed()
        );
    }
}
