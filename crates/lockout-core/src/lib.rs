//! The lockout fold.
//!
//! This crate decides what every event does to a user: [`fold`] is a pure function of
//! (policy, user state, event, event time) → (new state, notices). It does no I/O, reads no
//! clock, draws no random numbers and cannot fail; the caller passes in time and policy.
//! It must never depend on tokio, async-nats or sled — keep it that way, so the same code
//! runs in the projector, in `lockoutctl`'s time travel and in property tests.
//!
//! # Layout
//! - [`state`]: `UserState`, what the store keeps per user, and `LockState`.
//! - [`fold`](mod@fold): the rules of `docs/protocol.md`, section "Lockout semantics".
//! - [`view`]: `status`, the user-facing `Status` of a state at a given instant.
//! - [`message`]: the one-sentence texts of `locked` notices.
//! - [`explain`]: one user's history folded into the `explain` op's answer.
//! - [`ip`]: per-IP counting, blocks and their notices (password spraying).
//! - [`ids`]: deterministic notice ids (UUID v5 of the causing event and the notice kind).

pub mod explain;
pub mod fold;
pub mod ids;
pub mod ip;
pub mod message;
pub mod state;
pub mod view;

pub use fold::{fold, fold_into, Effect, Folded, Forgot, NotCounted, StreakChange, Why, EXPIRED_EARLY_ALLOWANCE_MS};
pub use state::{LockState, UserState};
pub use view::{status, status_for, Probe};
