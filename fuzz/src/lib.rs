//! The checks behind the fuzz targets in `fuzz_targets/`.
//!
//! Each target is one line that hands libFuzzer's input to a module here, so the properties
//! live in ordinary Rust that reads like the crates' own tests:
//! - [`decode`]: the JSON and postcard decoders of every wire message never panic; an input
//!   either decodes to a value that re-encodes (both encodings) and decodes back to the same
//!   value, or is refused with a [`Rejection`](lockout_proto::Rejection) of the right reason.
//! - [`subject`]: the subject, token and `Content-Type` parsers never panic, refuse with
//!   `bad_subject` / `unknown_type` / `encoding`, and what they accept builds back to itself.
//! - [`fold`](mod@fold): any stream of checked events folds without a panic and keeps the state
//!   invariants of `crates/lockout-core/tests/properties.rs` that hold for every stream.
//!
//! This crate is its own workspace and builds only under `cargo fuzz` (see `make fuzz`); a
//! crash found here becomes a regression test in `crates/lockout-proto/tests/` or
//! `crates/lockout-core/tests/`, fixed where the bug is.

pub mod decode;
pub mod fold;
pub mod subject;
