#![no_main]
//! See `sallyport::fuzzing::id_token_claims` for what this target feeds and asserts.

libfuzzer_sys::fuzz_target!(|data: &[u8]| sallyport::fuzzing::id_token_claims(data));
