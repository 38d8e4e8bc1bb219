//! The user-facing view of a state.

use lockout_proto::status::BlockedBy;
use lockout_proto::{Millis, Policy, Status};

use crate::state::UserState;

/// The `Status` of `state` at the instant `now`.
///
/// A timed lock whose `locked_until` has passed is reported as ended (counter 0,
/// `unlocked_at` = `locked_until`) even before the `expired` event is folded, so a status
/// never reports a lock past its `locked_until`; likewise an unlocked user's counter reads 0
/// once `window_seconds` have passed since the last counted failure.
pub fn status(tenant: &str, user: &str, policy: &Policy, state: &UserState, now: Millis) -> Status {
    let mut s = Status::unknown(tenant, user, policy.max_failures);
    s.failures = state.failures();
    s.last_failure_at = state.last_failure_at;
    s.last_source_ip = state.last_source_ip.clone();
    s.unlocked_at = state.unlocked_at;
    s.unlocked_by = state.unlocked_by.clone();
    s.unlocked_caller = state.unlocked_caller.clone();
    s.mfa_reset_at = state.mfa_reset_at;
    s.mfa_reset_by = state.mfa_reset_by.clone();
    s.mfa_reset_caller = state.mfa_reset_caller.clone();
    s.mfa_reenrol = state.mfa_reenrol;
    s.lock_count = state.lock_count;
    match &state.lock {
        Some(lock) if lock.locked_until.is_some_and(|u| u <= now) => {
            s.failures = 0;
            s.unlocked_at = lock.locked_until;
            s.unlocked_by = None;
            s.unlocked_caller = None;
        }
        Some(lock) => {
            s.locked = true;
            s.allowed = false;
            s.blocked_by = Some(BlockedBy::Account);
            s.reason = Some(lock.reason);
            s.locked_at = Some(lock.locked_at);
            s.locked_until = lock.locked_until;
        }
        None => {
            // The counter restarts once `window_seconds` have passed since the last counted
            // failure, whether or not a failure has been folded since.
            let window_ms = u64::from(policy.window_seconds) * 1000;
            let since_last = state.last_failure_at.map(|last| now.saturating_sub(last));
            if window_ms > 0 && since_last.is_some_and(|d| d >= window_ms) {
                s.failures = 0;
            }
        }
    }
    s
}
