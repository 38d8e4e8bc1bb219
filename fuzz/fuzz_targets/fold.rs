//! Any stream of checked events for a few users of one tenant, policy changes and clock steps
//! backwards included. See `lockout_fuzz::fold`.
#![no_main]

libfuzzer_sys::fuzz_target!(|script: lockout_fuzz::fold::Script| lockout_fuzz::fold::check(&script));
