#![no_main]
//! See `sallyport::fuzzing::envelope` for what this target feeds and asserts.

libfuzzer_sys::fuzz_target!(|data: &[u8]| sallyport::fuzzing::envelope(data));
