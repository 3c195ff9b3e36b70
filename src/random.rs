//! Cryptographic randomness for ids, nonces and secrets.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// Fills `buf` from the operating system's CSPRNG.
///
/// # Panics
/// If the OS has no randomness to give, which leaves nothing safe to do.
pub fn fill(buf: &mut [u8]) {
    getrandom::fill(buf).expect("the operating system's random source failed");
}

/// 256 random bits, base64url without padding (43 characters).
pub fn token() -> String {
    let mut bytes = [0u8; 32];
    fill(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}
