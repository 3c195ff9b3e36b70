//! The AEAD envelope around stored records, with key rotation.
//!
//! Layout: `version (1) ‖ key id (4) ‖ nonce (12) ‖ ciphertext+tag`. The cipher is AES-256-GCM-SIV
//! (RFC 8452): misuse-resistant, so random 96-bit nonces stay safe at volume. The associated data
//! is `store key ‖ key id`, so a sealed record moved to another key in the store does not open.
//! Each configured key is stretched with HKDF-SHA256 into the cipher key and a 4-byte key id;
//! opening tries the key whose id matches first, so rotation costs nothing on the hot path.

use aes_gcm_siv::Aes256GcmSiv;
use aes_gcm_siv::aead::{Aead, KeyInit, Payload};
use hkdf::Hkdf;
use sha2::Sha256;

use crate::secret::SessionKey;

const VERSION: u8 = 1;
const HEADER: usize = 1 + 4 + 12;

/// Seals and opens records with the configured keys: the first seals, all open.
pub struct Sealer {
    keys: Vec<([u8; 4], Aes256GcmSiv)>,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sealer")
            .field("keys", &self.keys.len())
            .finish()
    }
}

impl Sealer {
    /// Derives the ciphers from `keys`.
    ///
    /// # Panics
    /// If `keys` is empty (config validation refuses that).
    pub fn new(keys: &[SessionKey]) -> Self {
        assert!(!keys.is_empty(), "at least one session key");
        let keys = keys
            .iter()
            .map(|key| {
                let hk = Hkdf::<Sha256>::new(Some(b"sallyport"), key.expose());
                let mut cipher_key = [0u8; 32];
                let mut id = [0u8; 4];
                hk.expand(b"session-seal v1", &mut cipher_key)
                    .expect("32 bytes is a valid HKDF-SHA256 length");
                hk.expand(b"session-key-id v1", &mut id)
                    .expect("4 bytes is a valid HKDF-SHA256 length");
                let cipher = Aes256GcmSiv::new(&cipher_key.into());
                zeroize::Zeroize::zeroize(&mut cipher_key);
                (id, cipher)
            })
            .collect();
        Self { keys }
    }

    /// Encrypts `plaintext` bound to `context` (the store key).
    pub fn seal(&self, context: &[u8; 32], plaintext: &[u8]) -> Vec<u8> {
        let (id, cipher) = &self.keys[0];
        let mut nonce = [0u8; 12];
        crate::random::fill(&mut nonce);
        let aad = aad(context, id);
        let ciphertext = cipher
            .encrypt(
                &nonce.into(),
                Payload {
                    msg: plaintext,
                    aad: &aad,
                },
            )
            .expect("AES-GCM-SIV encryption of an in-memory buffer cannot fail");
        let mut out = Vec::with_capacity(HEADER + ciphertext.len());
        out.push(VERSION);
        out.extend_from_slice(id);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&ciphertext);
        out
    }

    /// Decrypts a sealed record; `None` when it was tampered with, sealed for another context,
    /// or sealed with a key that is no longer configured.
    pub fn open(&self, context: &[u8; 32], sealed: &[u8]) -> Option<Vec<u8>> {
        if sealed.len() < HEADER + 16 || sealed[0] != VERSION {
            return None;
        }
        let id: [u8; 4] = sealed[1..5].try_into().ok()?;
        let nonce: [u8; 12] = sealed[5..HEADER].try_into().ok()?;
        let aad = aad(context, &id);
        let payload = || Payload {
            msg: &sealed[HEADER..],
            aad: &aad,
        };
        // The matching id first; ids are 32 bits, so on the rare collision try the others too.
        self.keys
            .iter()
            .filter(|(kid, _)| *kid == id)
            .chain(self.keys.iter().filter(|(kid, _)| *kid != id))
            .find_map(|(_, cipher)| cipher.decrypt(&nonce.into(), payload()).ok())
    }
}

/// `context ‖ key id`, on the stack: this runs on every request.
fn aad(context: &[u8; 32], id: &[u8; 4]) -> [u8; 36] {
    let mut aad = [0u8; 36];
    aad[..32].copy_from_slice(context);
    aad[32..].copy_from_slice(id);
    aad
}

#[cfg(test)]
mod tests {
    use super::*;

    const CTX: [u8; 32] = [1; 32];

    fn key(b: u8) -> SessionKey {
        SessionKey::new([b; 32])
    }

    #[test]
    fn round_trips_and_hides_the_plaintext() {
        let s = Sealer::new(&[key(1)]);
        let sealed = s.seal(&CTX, b"hello session");
        assert!(!sealed.windows(5).any(|w| w == b"hello"));
        assert_eq!(s.open(&CTX, &sealed).unwrap(), b"hello session");
    }

    #[test]
    fn tampering_or_another_context_fails() {
        let s = Sealer::new(&[key(1)]);
        let sealed = s.seal(&CTX, b"hello");
        assert!(s.open(&[9; 32], &sealed).is_none());
        for i in 0..sealed.len() {
            let mut bad = sealed.clone();
            bad[i] ^= 1;
            assert!(s.open(&CTX, &bad).is_none(), "flip at byte {i} accepted");
        }
        assert!(s.open(&CTX, &sealed[..10]).is_none());
    }

    #[test]
    fn rotation_old_keys_open_and_the_first_key_seals() {
        let old = Sealer::new(&[key(1)]);
        let sealed_with_old = old.seal(&CTX, b"kept across rotation");
        let rotated = Sealer::new(&[key(2), key(1)]);
        assert_eq!(
            rotated.open(&CTX, &sealed_with_old).unwrap(),
            b"kept across rotation"
        );
        let sealed_with_new = rotated.seal(&CTX, b"new");
        assert!(
            old.open(&CTX, &sealed_with_new).is_none(),
            "the new key seals"
        );
        let only_new = Sealer::new(&[key(2)]);
        assert_eq!(only_new.open(&CTX, &sealed_with_new).unwrap(), b"new");
        assert!(
            only_new.open(&CTX, &sealed_with_old).is_none(),
            "a removed key no longer opens"
        );
    }
}
