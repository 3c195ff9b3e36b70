//! Logout continuations: the provider's end-session URL, sealed in the store for one use under
//! a handle the browser holds half of.

use std::time::Duration;

use super::manager::Sessions;
use super::{StoreError, StoreKey};

impl Sessions {
    /// Stores the end-session URL of a logout for [`Sessions::take_logout`], under the hash of
    /// `handle` (in the continuation URL) and `binder` (in the browser's logout cookie).
    ///
    /// # Errors
    /// When the store fails.
    pub async fn put_logout(
        &self,
        handle: &str,
        binder: &str,
        end_session_url: &str,
        ttl: Duration,
    ) -> Result<(), StoreError> {
        let key = logout_key(handle, binder);
        let sealed = self.sealer.seal(key.as_bytes(), end_session_url.as_bytes());
        self.store
            .put_login(&key, sealed, self.clock.now() + ttl)
            .await
    }

    /// Takes (once) the end-session URL stored by [`Sessions::put_logout`].
    ///
    /// # Errors
    /// When the store fails.
    pub async fn take_logout(
        &self,
        handle: &str,
        binder: &str,
    ) -> Result<Option<String>, StoreError> {
        let key = logout_key(handle, binder);
        let Some(sealed) = self.store.take_login(&key).await? else {
            return Ok(None);
        };
        Ok(self
            .sealer
            .open(key.as_bytes(), &sealed)
            .and_then(|plain| String::from_utf8(plain).ok()))
    }
}

/// Where a logout continuation is stored: both halves are needed to find it.
fn logout_key(handle: &str, binder: &str) -> StoreKey {
    StoreKey::hash(format!("logout\0{handle}\0{binder}").as_bytes())
}
