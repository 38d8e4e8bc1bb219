//! The lockout engine: folds batches of `LOCKOUT_EVENTS` messages against the store.
//!
//! A batch of stream messages goes in; a [`lockout_store::Commit`] comes out (the changed
//! user states, policies, the outbox of notices and dead letters, and the checkpoint), with a
//! typed report of what became of each message ([`EventReport`]). The engine decides
//! everything that must be the same in `lockoutd`, `lockoutctl replay`/`verify` and the
//! benchmark: which messages are redeliveries, how a message is decoded and checked
//! ([`accept`]), what a refusal's dead letter holds, which notices a commit publishes.
//!
//! It knows nothing about NATS, spans, logs or metrics: its callers hand it messages through
//! the [`Delivery`] trait and turn its reports into telemetry around the fold, not inside it.
//!
//! # Layout
//! - [`delivery`]: [`Delivery`], one stored message as the engine reads it; [`accept`].
//! - [`folder`]: [`BatchFolder`], a batch → a commit and its report.
//! - [`outbox`]: [`OutboxMode`] and [`Floors`]: what a commit queues for publishing.
//! - [`cache`]: the folder's cache of recent user states, in front of the store.
//! - [`linger`]: holding folded batches nobody waits for, to commit them together.
//! - [`rebuild`]: a fold thread and a commit thread for rebuilding a store (replay).

pub mod cache;
pub mod delivery;
pub mod folder;
pub mod linger;
pub mod outbox;
pub mod rebuild;

pub use delivery::{accept, Delivery, Incoming};
pub use folder::{
    BatchFold, BatchFolder, EventReport, Handling, NoticeReport, NoticeWhat, DEFAULT_POLICY_TENANTS_MAX,
    DEFAULT_STATE_CACHE_BYTES,
};
pub use outbox::{Floors, OutboxMode};
