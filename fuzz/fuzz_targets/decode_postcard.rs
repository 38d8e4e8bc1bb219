//! Any bytes as a postcard body of any wire message: the first byte picks the message (a line
//! of `messages.txt`), the rest is the body. See `lockout_fuzz::decode`.
#![no_main]

use lockout_proto::Encoding;

libfuzzer_sys::fuzz_target!(|data: &[u8]| lockout_fuzz::decode::check_input(Encoding::Postcard, data));
