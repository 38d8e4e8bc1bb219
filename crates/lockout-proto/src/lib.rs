//! The lockout service's wire protocol (`docs/protocol.md`) as Rust types.
//!
//! This crate is the only place that knows how messages look on NATS: every event body,
//! the tenant policy, the status and command replies, and the notices, plus the subjects
//! they travel on and the two encodings (JSON and postcard) chosen by `Content-Type`.
//! It does no I/O and knows nothing about NATS connections, sled or the fold.
//!
//! # Layout
//! - [`ids`]: `Tenant` and `UserId`, validated once, and the base64url user token.
//! - [`subject`]: building and parsing subjects for a root prefix.
//! - [`codec`]: `Encoding` from `Content-Type`, `encode` and `decode`, the header names.
//! - [`layout`]: the v1 and v2 postcard layouts of one type (fields contract v2 appended).
//! - [`event`]: the six event bodies, their validation against the subject.
//! - [`policy`]: the tenant `Policy` with its defaults and ranges.
//! - [`status`]: `Status`, the per-user answer, and `WriteReply`.
//! - [`command`]: the micro service requests and replies.
//! - [`notice`]: the three notices for notifier services.
//! - [`error`]: `Rejection`, a refusal of bad input with a reason and a sentence.
//!
//! Wire types follow postcard's rules: fields in protocol order, no `flatten`, no
//! `untagged`, no skipped fields; UUIDs travel as 16 raw bytes (see [`uuid16`]).

pub mod codec;
pub mod command;
pub mod error;
pub mod event;
pub mod ids;
pub mod layout;
pub mod notice;
pub mod partition;
pub mod policy;
pub mod status;
pub mod subject;
pub mod uuid16;

pub use codec::Encoding;
/// The text type of wire messages and stored states: up to 24 bytes stay inline, so decoding
/// a typical attempt (tenant, user, IP, client) allocates nothing for them. Serialized exactly
/// as a `String`.
pub use compact_str::CompactString;
pub use error::{RejectReason, Rejection};
pub use event::{Event, EventKind};
pub use ids::{Tenant, UserId};
pub use notice::Notice;
pub use policy::Policy;
pub use status::{Status, WriteReply};
pub use subject::Subjects;

/// Milliseconds since the Unix epoch, the protocol's unit for every time (`docs/protocol.md`).
pub type Millis = u64;
