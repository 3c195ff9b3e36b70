//! Builds the configured session backend; the backends live in `store/`, with the single
//! flight (one holder of a piece of work across instances) built on their locks.

pub mod file;
pub mod flight;
pub mod memory;
pub mod metered;
pub mod redis;

#[cfg(test)]
mod conformance;

use std::sync::{Arc, Weak};
use std::time::Duration;

use crate::config::{SessionConfig, StoreConfig};
use crate::session::{SessionStore, StoreError};

/// How often expired records are swept out of the embedded stores.
const SWEEP_EVERY: Duration = Duration::from_secs(60);

/// Opens the store named in `session.store` and starts its expiry sweeper.
///
/// # Errors
/// When the file store cannot be opened (path, permissions, a lock held by another process).
pub fn build(config: &SessionConfig) -> Result<Arc<dyn SessionStore>, StoreError> {
    match &config.store {
        StoreConfig::Memory => {
            let store = Arc::new(memory::MemoryStore::new(config.max_pending_logins));
            spawn_sweeper(Arc::downgrade(&store), |s| {
                s.sweep();
                async {}
            });
            Ok(store)
        }
        StoreConfig::File { path } => {
            let store = Arc::new(file::FileStore::open(path, config.max_pending_logins)?);
            spawn_sweeper(Arc::downgrade(&store), |s| async move {
                if let Err(e) = s.sweep().await {
                    tracing::warn!(error = %e, "sweeping expired sessions failed");
                }
            });
            Ok(store)
        }
        StoreConfig::Redis {
            url,
            cluster,
            sentinel,
            key_prefix,
            timeout,
        } => {
            let max = config.max_pending_logins;
            let store = match sentinel {
                Some((master, nodes)) => {
                    let nodes: Vec<&str> = nodes.iter().map(|u| u.expose()).collect();
                    redis::RedisStore::sentinel(
                        &nodes,
                        master,
                        Some(url.expose()),
                        key_prefix,
                        max,
                        *timeout,
                    )?
                }
                None if !cluster.is_empty() => {
                    let nodes: Vec<&str> = cluster.iter().map(|u| u.expose()).collect();
                    redis::RedisStore::cluster(&nodes, key_prefix, max, *timeout)?
                }
                None => redis::RedisStore::new(url.expose(), key_prefix, max, *timeout)?,
            };
            Ok(Arc::new(store))
        }
    }
}

/// Runs `sweep` every [`SWEEP_EVERY`] until the store is dropped.
fn spawn_sweeper<S, F, Fut>(store: Weak<S>, sweep: F)
where
    S: Send + Sync + 'static,
    F: Fn(Arc<S>) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    if tokio::runtime::Handle::try_current().is_err() {
        return;
    }
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(SWEEP_EVERY);
        tick.tick().await;
        loop {
            tick.tick().await;
            let Some(store) = store.upgrade() else { return };
            sweep(store).await;
        }
    });
}
