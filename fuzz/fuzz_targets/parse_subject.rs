//! Any bytes as a subject (and as a prefix, token and `Content-Type`). See
//! `lockout_fuzz::subject`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| lockout_fuzz::subject::check(data));
