//! Sessions: ids and store keys, the sealed record, and the [`SessionStore`] contract.
//!
//! The browser holds only a [`SessionId`] (256 random bits) in its cookie. Stores never see it:
//! they are keyed by its SHA-256 [`StoreKey`], and hold the record sealed (see [`seal`]), so a
//! dump of the store yields neither a usable cookie nor a token.

pub mod cookie;
mod ending;
mod login_cookie;
mod logout_handle;
pub mod manager;
mod opened;
pub mod revoke;
pub mod seal;

use std::time::SystemTime;

use async_trait::async_trait;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::secret::{AccessToken, IdToken, RefreshToken};

/// The opaque id in the session cookie.
#[derive(Clone, PartialEq, Eq)]
pub struct SessionId([u8; 32]);

impl SessionId {
    /// A fresh random id.
    pub fn generate() -> Self {
        let mut bytes = [0u8; 32];
        crate::random::fill(&mut bytes);
        Self(bytes)
    }

    /// Parses a cookie value; `None` unless it is exactly 43 base64url characters.
    pub fn parse(text: &str) -> Option<Self> {
        if text.len() != 43 {
            return None;
        }
        let mut bytes = [0u8; 32];
        let n = URL_SAFE_NO_PAD.decode_slice(text, &mut bytes).ok()?;
        (n == 32).then_some(Self(bytes))
    }

    /// The cookie value.
    pub fn encode(&self) -> String {
        URL_SAFE_NO_PAD.encode(self.0)
    }

    /// The key this session is stored under.
    pub fn store_key(&self) -> StoreKey {
        StoreKey::hash(&self.0)
    }
}

impl std::fmt::Debug for SessionId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SessionId([redacted])")
    }
}

/// SHA-256 of a secret id: what stores are keyed by, safe to log in part.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StoreKey([u8; 32]);

impl StoreKey {
    /// Hashes a secret (a session id, a login state).
    pub fn hash(secret: &[u8]) -> Self {
        Self(Sha256::digest(secret).into())
    }

    /// Wraps stored key bytes.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// The key bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// The key as 64 lower-case hex digits (how the Redis store names keys).
    pub fn to_hex(&self) -> String {
        let mut s = String::with_capacity(64);
        self.push_hex(&mut s);
        s
    }

    /// Appends the key's 64 lower-case hex digits to `out` (a key name being built).
    pub fn push_hex(&self, out: &mut String) {
        crate::hex::push(&self.0, out);
    }
}

impl std::fmt::Debug for StoreKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "StoreKey({:02x}{:02x}{:02x}{:02x}…)",
            self.0[0], self.0[1], self.0[2], self.0[3]
        )
    }
}

/// What a session holds. Serialised as JSON inside the sealed envelope, so named fields survive
/// rolling upgrades of instances that share a store.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SessionRecord {
    /// Record format version.
    pub v: u8,
    /// The provider (key under `providers`) that authenticated the user.
    pub provider: String,
    /// The user's subject identifier at that provider.
    pub sub: String,
    /// The provider's session id (`sid` claim), for back-channel logout.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sid: Option<String>,
    /// Profile claims shown by `/api/auth/session` (from the ID token and userinfo).
    pub claims: serde_json::Map<String, serde_json::Value>,
    /// The ID token (for `id_token_hint` at logout and `token: id_token` services).
    pub id_token: IdToken,
    /// The current access token.
    pub access_token: AccessToken,
    /// When the access token expires (unix seconds), when the provider said.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_expires_at: Option<u64>,
    /// The current refresh token; rotated ones replace it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh_token: Option<RefreshToken>,
    /// When the ID token expires (unix seconds), while a refresh can renew it; `None` once a
    /// refresh came back without one (the provider does not renew ID tokens).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id_expires_at: Option<u64>,
    /// Tokens the broker obtained for services (`exchange`), by service name.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub service_tokens: std::collections::BTreeMap<String, ServiceToken>,
    /// Login time (unix seconds).
    pub created_at: u64,
    /// Last use (unix seconds), for the idle timeout.
    pub last_seen: u64,
    /// Absolute end (unix seconds).
    pub expires_at: u64,
    /// The CSRF token the SPA echoes in a header on unsafe requests.
    pub csrf_token: String,
    /// The key the session's tokens are bound to (DPoP, RFC 9449), when its provider binds
    /// them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dpop_key: Option<crate::oidc::dpop::DpopKey>,
    /// The browser's address at login (for the admin API's list of a user's sessions).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_address: Option<String>,
    /// The browser's `User-Agent` at login, cut to 200 characters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_agent: Option<String>,
}

/// A token obtained for one service (a token exchange), kept in the sealed session.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ServiceToken {
    /// Which request it answers (a digest of the service's token settings): a token obtained
    /// for another audience or scope is never sent after the configuration changed.
    pub spec: String,
    /// The token.
    pub access_token: AccessToken,
    /// When it expires (unix seconds).
    pub expires_at: u64,
    /// Its own refresh token, when the provider issued one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh_token: Option<RefreshToken>,
}

/// The pre-login record: what the callback needs to finish a login started by this browser.
/// It travels sealed in the browser's login cookie, so a login in flight costs the server
/// nothing (a flood of login starts fills no table and pushes out no one's login).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LoginRecord {
    /// The OAuth `state` sent with the authorization request; the callback must bring it back.
    pub state: String,
    /// The provider logged in at.
    pub provider: String,
    /// The OIDC nonce sent in the authorization request.
    pub nonce: String,
    /// The PKCE code verifier (RFC 7636).
    pub code_verifier: String,
    /// Where to go after login: a same-origin relative path.
    pub return_to: String,
    /// When the login started (unix seconds); ID tokens issued before are stale.
    pub started_at: u64,
    /// The `acr` values asked for (step-up); the ID token's `acr` must be one of them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub acr_values: Vec<String>,
    /// The `max_age` asked for (seconds); the ID token's `auth_time` must be that recent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_age: Option<u64>,
    /// Whether a fresh login was asked for (`prompt=login`); the ID token's `auth_time` must
    /// not be older than the login.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub fresh: bool,
    /// The DPoP key the authorization code is bound to (`dpop_jkt`, RFC 9449 §10), which the
    /// session keeps: its provider binds tokens. Sealed like the rest; the cookie is
    /// `HttpOnly` and useless without the session keys.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dpop_key: Option<crate::oidc::dpop::DpopKey>,
}

/// Why a store call failed. A store that fails makes requests fail closed (`503`).
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The backend could not be reached or answered with an error.
    #[error("session store unavailable")]
    Unavailable(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// The backend holds data this version cannot read.
    #[error("session store holds a corrupt entry")]
    Corrupt,
}

/// A session backend: holds sealed records by [`StoreKey`], each with an expiry.
///
/// Session records travel as [`Bytes`], so an in-process store hands out the copy it holds
/// without copying it, and the request path can tell an unchanged record by its bytes.
///
/// The contract every implementation passes (see the conformance suite in `store`):
/// - An expired record is absent: `load` returns `None` once `expires_at` has passed, whether
///   or not it was swept yet.
/// - `create` is atomic: it stores nothing and returns `false` when the key exists.
/// - `update` never resurrects: it returns `false` and stores nothing when the key is absent
///   (deleted by a logout meanwhile), so a late write cannot undo a logout.
/// - Login records are single-use: `take_login` returns a record at most once.
/// - Login records are bounded: a store keeps at most its configured number, dropping the ones
///   closest to expiry first, so a flood of logins cannot grow memory without limit.
/// - `replace` is compare-and-set: it stores only while the key holds exactly the expected
///   bytes, so a write based on an old read (a touch racing a refresh) never puts back what a
///   concurrent writer replaced.
/// - A lock taken with `try_lock` is held by one caller until `unlock` with its token or until
///   its `ttl` passes (so a holder that dies blocks nobody for longer); `unlock` with a token
///   that no longer holds the lock leaves the current holder's lock alone, and so does
///   `extend_lock`, which gives the holder `ttl` more from now.
#[async_trait]
pub trait SessionStore: Send + Sync + 'static {
    /// The sealed session stored under `key`; `None` when absent or expired.
    async fn load(&self, key: &StoreKey) -> Result<Option<Bytes>, StoreError>;
    /// Stores a new session; `false` (nothing stored) when `key` is taken.
    async fn create(
        &self,
        key: &StoreKey,
        sealed: Bytes,
        expires_at: SystemTime,
    ) -> Result<bool, StoreError>;
    /// Replaces an existing session; `false` (nothing stored) when it is absent.
    async fn update(
        &self,
        key: &StoreKey,
        sealed: Bytes,
        expires_at: SystemTime,
    ) -> Result<bool, StoreError>;
    /// Replaces the session under `key` only while it holds exactly `expected`; `false`
    /// (nothing stored) when it changed meanwhile or is absent.
    async fn replace(
        &self,
        key: &StoreKey,
        expected: &Bytes,
        sealed: Bytes,
        expires_at: SystemTime,
    ) -> Result<bool, StoreError>;
    /// Removes a session; removing an absent one is not an error.
    async fn delete(&self, key: &StoreKey) -> Result<(), StoreError>;
    /// Stores a pending login, replacing any under the same key.
    async fn put_login(
        &self,
        key: &StoreKey,
        sealed: Vec<u8>,
        expires_at: SystemTime,
    ) -> Result<(), StoreError>;
    /// Removes and returns a pending login; `None` when absent, expired or already taken.
    async fn take_login(&self, key: &StoreKey) -> Result<Option<Vec<u8>>, StoreError>;
    /// Checks that the backend answers (for readiness).
    async fn ping(&self) -> Result<(), StoreError>;
    /// Adds `session` to the sessions of `owner` (the hash of a user's `sub` or a provider
    /// session's `sid`), keeping the entry at least until `expires_at`.
    async fn index(
        &self,
        owner: &StoreKey,
        session: &StoreKey,
        expires_at: SystemTime,
    ) -> Result<(), StoreError>;
    /// The sessions indexed under `owner`; some may have ended since (callers check).
    async fn indexed(&self, owner: &StoreKey) -> Result<Vec<StoreKey>, StoreError>;
    /// Forgets everything indexed under `owner`.
    async fn forget(&self, owner: &StoreKey) -> Result<(), StoreError>;
    /// Marks `key` as used until `expires_at`: `true` the first time, `false` while it is
    /// still marked (replay detection for logout tokens' `jti`).
    async fn first_use(&self, key: &StoreKey, expires_at: SystemTime) -> Result<bool, StoreError>;
    /// Whether `key` is marked by [`SessionStore::first_use`] (and the mark has not expired).
    async fn is_used(&self, key: &StoreKey) -> Result<bool, StoreError>;
    /// Takes the lock named by `key` for at most `ttl`: `Some(token)` when taken, `None` while
    /// another holder has it. A store used by one process only grants it at once: the token
    /// broker's in-process single-flight already serialises refreshes there.
    async fn try_lock(
        &self,
        _key: &StoreKey,
        _ttl: std::time::Duration,
    ) -> Result<Option<String>, StoreError> {
        Ok(Some(String::new()))
    }
    /// Extends a lock taken with `try_lock` to `ttl` from now, if `token` still holds it;
    /// `false` when it does not (it expired and may have another holder).
    async fn extend_lock(
        &self,
        _key: &StoreKey,
        _token: &str,
        _ttl: std::time::Duration,
    ) -> Result<bool, StoreError> {
        Ok(true)
    }
    /// Releases a lock taken with `try_lock`, if `token` still holds it.
    async fn unlock(&self, _key: &StoreKey, _token: &str) -> Result<(), StoreError> {
        Ok(())
    }
    /// How many records the session table holds (sessions, and the broker's shared records),
    /// where the store can say cheaply (the embedded ones); for metrics.
    async fn count(&self) -> Option<u64> {
        None
    }
}

/// Seconds since the unix epoch.
pub fn unix(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The time `secs` seconds after the unix epoch.
pub fn from_unix(secs: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(secs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip_and_reject_malformed_values() {
        let id = SessionId::generate();
        let text = id.encode();
        assert_eq!(text.len(), 43);
        assert_eq!(SessionId::parse(&text), Some(id.clone()));
        assert_ne!(SessionId::generate(), id);
        for bad in [
            "",
            "short",
            &format!("{text}A"),
            &text.replace(|_: char| true, "+"),
            &format!("{}=", &text[..42]),
        ] {
            assert!(SessionId::parse(bad).is_none(), "{bad:?}");
        }
    }

    #[test]
    fn store_keys_print_as_lower_case_hex() {
        let key = StoreKey::from_bytes(std::array::from_fn(|i| (i * 37 % 256) as u8));
        let expected: String = key.as_bytes().iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(key.to_hex(), expected);
        let mut prefixed = String::from("p:s:");
        key.push_hex(&mut prefixed);
        assert_eq!(prefixed, format!("p:s:{expected}"));
    }

    #[test]
    fn the_store_key_is_a_hash_not_the_id() {
        let id = SessionId::generate();
        let key = id.store_key();
        assert_ne!(key.as_bytes(), &id.0);
        assert_eq!(key, id.store_key());
        assert!(!format!("{key:?} {id:?}").contains(&id.encode()));
    }
}
