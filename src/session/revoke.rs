//! Ending every session of one user, or of one provider session, on every instance sharing the
//! store (back-channel logout, `sessions revoke`).

use super::manager::Sessions;
use super::{StoreError, StoreKey};

/// Whose sessions to find: a user, or one session at the provider.
#[derive(Debug, Clone, Copy)]
pub enum Owner<'a> {
    /// Every session of the user with this `sub`.
    Subject(&'a str),
    /// Every session made from the provider session with this `sid`.
    ProviderSession(&'a str),
}

impl Owner<'_> {
    /// The index key: a hash, so a store dump does not list user ids.
    pub(super) fn key(self, provider: &str) -> StoreKey {
        let (kind, value) = match self {
            Owner::Subject(sub) => ("sub", sub),
            Owner::ProviderSession(sid) => ("sid", sid),
        };
        StoreKey::hash(format!("{kind}\0{provider}\0{value}").as_bytes())
    }
}

impl Sessions {
    /// Ends every session of `owner` at `provider`, on every instance sharing the store;
    /// returns how many were live.
    ///
    /// # Errors
    /// When the store fails.
    pub async fn revoke(&self, provider: &str, owner: Owner<'_>) -> Result<usize, StoreError> {
        let owner = owner.key(provider);
        let mut ended = 0;
        for key in self.store.indexed(&owner).await? {
            if self.store.load(&key).await?.is_some() {
                self.delete(&key).await?;
                ended += 1;
            }
        }
        self.store.forget(&owner).await?;
        Ok(ended)
    }
}
