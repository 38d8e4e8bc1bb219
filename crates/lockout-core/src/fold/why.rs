//! What a fold reports: the new state and notices ([`Folded`]) and why each event did what it
//! did ([`Why`], [`Effect`]), what audits explain from.

use super::*;

/// The result of folding one event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Folded {
    pub state: UserState,
    /// Notices to publish, in order. Empty for most events.
    pub notices: Vec<Notice>,
    /// Why the state changed as it did, in the fold's own terms.
    pub why: Why,
}

/// What one folded event did, as the fold decided it: audits explain an event from this
/// alone, so the rules are written once, here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Why {
    /// A timed lock that had run out (its `locked_until`) was ended before the event itself
    /// was applied, clearing the counter.
    pub expired_first: Option<Millis>,
    pub effect: Effect,
}

/// What the event itself did (after any [`Why::expired_first`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Effect {
    /// A tenant event: no user state changes.
    TenantEvent,
    /// A failure counted: the counter is now `failures`. `new_streak`: `window_seconds`
    /// had passed since the last counted failure, so the count restarted at 1. `locked`: it
    /// reached `max_failures` and locked the account.
    /// `counter`: which counter it went to (contract v2; `account` under a v1 policy).
    Counted { failures: u32, new_streak: bool, locked: bool, counter: Scope },
    /// A failure the policy does not count.
    NotCounted(NotCounted),
    /// An attempt while a lock that covers it is in force (the account's, or the scope's
    /// its source falls in): remembered as blocked; it neither counts nor extends the lock.
    Blocked { scope: Scope },
    /// A `rejected` attempt (contract v2): recorded in the history, changes nothing.
    Rejected,
    /// A success. `failures` were on the counter before it; `reset`: it cleared them
    /// (`reset_on_success`); `reenrolled`: an MFA success ended `mfa_reenrol`.
    Succeeded { failures: u32, reset: bool, reenrolled: bool },
    /// An admin unlock; it ends every lock and restarts every counter either way.
    /// `was_locked`: some lock was in force.
    Unlocked { was_locked: bool },
    /// An admin unlock naming a `lock_event` that started no lock in force: nothing changed.
    UnlockRefused,
    /// A `password_reset` (contract v2): `ended` locks ended; `kept`: a lock stayed (an admin
    /// or permanent account lock, or any lock without `unlock_on_password_reset`).
    PasswordReset { ended: u32, kept: bool },
    /// An admin lock; `replaced`: a lock was in force and this one replaced it.
    Locked { replaced: bool },
    /// An MFA reset removed `removed` second-factor failures from the counter.
    MfaReset { removed: u32 },
    /// An `expired` event: it ended the timed lock it names (at that lock's `locked_until`),
    /// or `None`: that lock had already ended.
    Expired { ended: Option<Millis> },
    /// An `expired` event (with the id [`expired_event_id`] gives) stored more than
    /// [`EXPIRED_EARLY_ALLOWANCE_MS`] before the `locked_until` of the lock it names: the clock
    /// of whoever wrote it ran ahead of the server's, and the lock stays in force until then.
    ExpiredEarly { until: Millis },
    /// A `forget` event (`--state-ttl-days`): the idle state was dropped, or kept and why.
    Forget(Forgot),
}

/// What a `forget` event did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Forgot {
    /// The state was dropped (it is the default state now).
    Dropped,
    /// Nothing was stored: nothing to drop.
    Nothing,
    /// Kept: the user is locked.
    Locked,
    /// Kept: the state recorded something after the event's `last_activity`.
    ActiveSince(Millis),
}

/// How long before a lock's `locked_until` an `expired` event naming it may be stored and
/// still end it (at `locked_until`): the skew allowed between lockoutd's clock, which decides
/// when to append it, and the server's, which stamps it.
pub const EXPIRED_EARLY_ALLOWANCE_MS: Millis = 1_000;

/// Why a failure was not counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotCounted {
    /// An `mfa` / `recovery_code` failure while `count_mfa_failures` is off.
    MfaNotCounted,
    /// Its credential was already counted in this streak (`dedupe_credential`).
    CredentialAlreadyCounted,
}

/// What happened to the counted failures of the current streak.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreakChange {
    Kept,
    /// This failure was added to them.
    Added,
    /// They were dropped and this failure started a new streak.
    Restarted,
    /// They were dropped.
    Cleared,
    /// The second-factor ones were dropped.
    MfaRemoved,
}

impl Effect {
    /// What the effect did to the streak's counted failures.
    pub fn streak(self) -> StreakChange {
        match self {
            Effect::Counted { new_streak: true, .. } => StreakChange::Restarted,
            Effect::Counted { .. } => StreakChange::Added,
            Effect::Succeeded { reset: true, .. }
            | Effect::Unlocked { .. }
            | Effect::Expired { ended: Some(_) }
            | Effect::PasswordReset { kept: false, .. } => StreakChange::Cleared,
            Effect::MfaReset { .. } => StreakChange::MfaRemoved,
            Effect::TenantEvent
            | Effect::NotCounted(_)
            | Effect::Blocked { .. }
            | Effect::Rejected
            | Effect::UnlockRefused
            | Effect::PasswordReset { kept: true, .. }
            | Effect::Succeeded { reset: false, .. }
            | Effect::Locked { .. }
            | Effect::Expired { ended: None }
            | Effect::ExpiredEarly { .. }
            | Effect::Forget(Forgot::Nothing | Forgot::Locked | Forgot::ActiveSince(_)) => StreakChange::Kept,
            Effect::Forget(Forgot::Dropped) => StreakChange::Cleared,
        }
    }
}
