//! Logins in flight, sealed into a cookie of their own (state, nonce, PKCE verifier,
//! `return_to`), so that starting a login writes nothing to the store.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use super::manager::Sessions;
use super::{LoginRecord, StoreKey};

impl Sessions {
    /// Seals a pending login for the login cookie `cookie_name` (base64url).
    pub fn seal_login(&self, cookie_name: &str, record: &LoginRecord) -> String {
        let plain = zeroize::Zeroizing::new(
            serde_json::to_vec(record).expect("a login record always serialises"),
        );
        let context = StoreKey::hash(cookie_name.as_bytes());
        URL_SAFE_NO_PAD.encode(self.sealer.seal(context.as_bytes(), &plain))
    }

    /// Opens the login cookie `cookie_name`; `None` when it was not sealed by us for that
    /// name (forged, moved to another name, or sealed with a key no longer configured).
    pub fn open_login(&self, cookie_name: &str, value: &str) -> Option<LoginRecord> {
        let sealed = URL_SAFE_NO_PAD.decode(value).ok()?;
        let context = StoreKey::hash(cookie_name.as_bytes());
        let plain = zeroize::Zeroizing::new(self.sealer.open(context.as_bytes(), &sealed)?);
        serde_json::from_slice(&plain).ok()
    }
}
