//! A session store that counts its operations (`sallyport_store_operations_total`) and
//! delegates every call to the configured backend.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use bytes::Bytes;

use crate::metrics::Metrics;
use crate::session::{SessionStore, StoreError, StoreKey};

/// `inner`, counted in `metrics`.
pub struct Metered {
    inner: Arc<dyn SessionStore>,
    metrics: Arc<Metrics>,
}

impl Metered {
    /// Counts `inner`'s operations in `metrics`.
    pub fn new(inner: Arc<dyn SessionStore>, metrics: Arc<Metrics>) -> Self {
        Self { inner, metrics }
    }

    fn counted<T>(&self, op: &'static str, result: Result<T, StoreError>) -> Result<T, StoreError> {
        self.metrics.store_op(op, result.is_ok());
        result
    }
}

#[async_trait]
impl SessionStore for Metered {
    async fn load(&self, key: &StoreKey) -> Result<Option<Bytes>, StoreError> {
        self.counted("load", self.inner.load(key).await)
    }
    async fn create(
        &self,
        key: &StoreKey,
        sealed: Bytes,
        at: SystemTime,
    ) -> Result<bool, StoreError> {
        self.counted("create", self.inner.create(key, sealed, at).await)
    }
    async fn update(
        &self,
        key: &StoreKey,
        sealed: Bytes,
        at: SystemTime,
    ) -> Result<bool, StoreError> {
        self.counted("update", self.inner.update(key, sealed, at).await)
    }
    async fn replace(
        &self,
        key: &StoreKey,
        expected: &Bytes,
        sealed: Bytes,
        at: SystemTime,
    ) -> Result<bool, StoreError> {
        self.counted(
            "replace",
            self.inner.replace(key, expected, sealed, at).await,
        )
    }
    async fn delete(&self, key: &StoreKey) -> Result<(), StoreError> {
        self.counted("delete", self.inner.delete(key).await)
    }
    async fn put_login(
        &self,
        key: &StoreKey,
        sealed: Vec<u8>,
        at: SystemTime,
    ) -> Result<(), StoreError> {
        self.counted("put_login", self.inner.put_login(key, sealed, at).await)
    }
    async fn take_login(&self, key: &StoreKey) -> Result<Option<Vec<u8>>, StoreError> {
        self.counted("take_login", self.inner.take_login(key).await)
    }
    async fn ping(&self) -> Result<(), StoreError> {
        self.counted("ping", self.inner.ping().await)
    }
    async fn index(
        &self,
        owner: &StoreKey,
        session: &StoreKey,
        at: SystemTime,
    ) -> Result<(), StoreError> {
        self.counted("index", self.inner.index(owner, session, at).await)
    }
    async fn indexed(&self, owner: &StoreKey) -> Result<Vec<StoreKey>, StoreError> {
        self.counted("indexed", self.inner.indexed(owner).await)
    }
    async fn forget(&self, owner: &StoreKey) -> Result<(), StoreError> {
        self.counted("forget", self.inner.forget(owner).await)
    }
    async fn first_use(&self, key: &StoreKey, at: SystemTime) -> Result<bool, StoreError> {
        self.counted("first_use", self.inner.first_use(key, at).await)
    }
    async fn is_used(&self, key: &StoreKey) -> Result<bool, StoreError> {
        self.counted("is_used", self.inner.is_used(key).await)
    }
    async fn try_lock(&self, key: &StoreKey, ttl: Duration) -> Result<Option<String>, StoreError> {
        self.counted("lock", self.inner.try_lock(key, ttl).await)
    }
    async fn extend_lock(
        &self,
        key: &StoreKey,
        token: &str,
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        self.counted("extend_lock", self.inner.extend_lock(key, token, ttl).await)
    }
    async fn unlock(&self, key: &StoreKey, token: &str) -> Result<(), StoreError> {
        self.counted("unlock", self.inner.unlock(key, token).await)
    }
    async fn count(&self) -> Option<u64> {
        self.inner.count().await
    }
}
