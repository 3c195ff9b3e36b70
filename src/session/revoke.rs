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

/// A session as the admin API shows it: never its id, its store key or a token.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SessionInfo {
    /// A handle that names the session among its user's (a hash of its store key).
    pub handle: String,
    /// The provider it logged in at.
    pub provider: String,
    /// When it was created (unix seconds).
    pub created: u64,
    /// When it was last used (unix seconds).
    pub last_seen: u64,
    /// When it ends at the latest (unix seconds).
    pub expires: u64,
    /// The browser's address at login.
    pub client_address: Option<String>,
    /// The browser's `User-Agent` at login.
    pub user_agent: Option<String>,
}

/// The handle of the session under `key`: the first 16 hex digits of a hash of the key, so it
/// names a session among its user's without being anything a store or a cookie would take.
pub fn handle(key: &StoreKey) -> String {
    use sha2::Digest as _;
    let digest = sha2::Sha256::new()
        .chain_update(b"sallyport session handle\0")
        .chain_update(key.as_bytes())
        .finalize();
    let mut out = String::with_capacity(16);
    crate::hex::push(&digest[..8], &mut out);
    out
}

impl Sessions {
    /// The live sessions of `owner` at `provider`, oldest first (then by handle), with their
    /// store keys.
    ///
    /// # Errors
    /// When the store fails.
    pub async fn list(
        &self,
        provider: &str,
        owner: Owner<'_>,
    ) -> Result<Vec<(StoreKey, SessionInfo)>, StoreError> {
        let mut out = Vec::new();
        for key in self.store.indexed(&owner.key(provider)).await? {
            if let Some(record) = self.load(&key).await? {
                out.push((
                    key,
                    SessionInfo {
                        handle: handle(&key),
                        provider: record.provider.clone(),
                        created: record.created_at,
                        last_seen: record.last_seen,
                        expires: record.expires_at,
                        client_address: record.client_address.clone(),
                        user_agent: record.user_agent.clone(),
                    },
                ));
            }
        }
        out.sort_by(|(_, a), (_, b)| (a.created, &a.handle).cmp(&(b.created, &b.handle)));
        Ok(out)
    }

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
