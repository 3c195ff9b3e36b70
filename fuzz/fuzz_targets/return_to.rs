#![no_main]
//! See `sallyport::fuzzing::return_to` for what this target feeds and asserts.

libfuzzer_sys::fuzz_target!(|data: &[u8]| sallyport::fuzzing::return_to(data));
