//! Cryptographic randomness for ids, nonces and secrets, and cheap unique numbers for
//! references that are not secrets (correlation and trace ids).

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

/// A random number fixed for the life of the process (read from the OS once).
pub fn process_prefix() -> u64 {
    use std::sync::OnceLock;
    static PREFIX: OnceLock<u64> = OnceLock::new();
    *PREFIX.get_or_init(|| {
        let mut b = [0u8; 8];
        fill(&mut b);
        u64::from_le_bytes(b)
    })
}

/// 64 bits that never repeat within the process and spread evenly: a counter, offset by
/// [`process_prefix`], through splitmix64's finaliser (a bijection). For references and
/// sampling draws that need uniqueness, not secrecy, without a system call each (the load
/// benchmark showed one per request).
pub fn unique() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut z = COUNTER.fetch_add(1, Ordering::Relaxed) ^ process_prefix();
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}
