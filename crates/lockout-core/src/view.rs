//! The user-facing view of a state.

use lockout_proto::event::Account;
use lockout_proto::status::{BlockedBy, Scope, ScopeLock};
use lockout_proto::{Millis, Policy, Status};

use crate::state::{LockState, ScopeCounter, UserState};

/// The source of the attempt a `status` request asks about (contract v2, "Status additions").
#[derive(Debug, Clone, Copy, Default)]
pub struct Probe<'a> {
    pub ip: Option<&'a str>,
    pub client: Option<&'a str>,
    pub account: Option<Account>,
    /// Whether the tenant has a block in force for `ip` (contract v2, "IP blocks"): tenant
    /// state the caller looks up (see [`crate::ip`]).
    pub ip_blocked: bool,
}

/// [`status`] for an attempt from `probe`: `allowed` and `blocked_by` consider the locks that
/// cover that source (the account's; the unfamiliar IPs' when `ip` is given and unfamiliar;
/// the client's when `account` is `api` and `client` is the locked one), in the contract's
/// order; an IP block when the probe says its `ip` is blocked.
pub fn status_for(
    tenant: &str,
    user: &str,
    policy: &Policy,
    state: &UserState,
    now: Millis,
    probe: &Probe<'_>,
) -> Status {
    let mut s = status(tenant, user, policy, state, now);
    if s.blocked_by.is_some() {
        return s;
    }
    let in_force = |l: &Option<Box<LockState>>| l.as_ref().is_some_and(|l| l.locked_until.is_none_or(|u| u > now));
    let unfamiliar = probe.ip.is_some_and(|ip| {
        policy.familiar_days > 0
            && in_force(&state.unfamiliar.lock)
            && !state.is_familiar(ip, policy.familiar_days, now)
    });
    let client = probe.account == Some(Account::Api)
        && probe.client.is_some_and(|c| state.clients.iter().any(|k| k.client == c && in_force(&k.counter.lock)));
    let by = if probe.ip.is_some() && probe.ip_blocked {
        Some(BlockedBy::Ip)
    } else if unfamiliar {
        Some(BlockedBy::Unfamiliar)
    } else if client {
        Some(BlockedBy::Client)
    } else {
        None
    };
    s.allowed = by.is_none();
    s.blocked_by = by;
    s
}

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
            if window_passed(policy, state.last_failure_at, now) {
                s.failures = 0;
            }
        }
    }
    s.unfamiliar_failures = scope_failures(policy, &state.unfamiliar, now);
    let scoped = std::iter::once((Scope::Unfamiliar, None, &state.unfamiliar))
        .chain(state.clients.iter().map(|c| (Scope::Client, Some(&c.client), &c.counter)));
    for (scope, client, counter) in scoped {
        if let Some(lock) = counter.lock.as_ref().filter(|l| l.locked_until.is_none_or(|u| u > now)) {
            s.scope_locks.push(ScopeLock {
                scope,
                client: client.cloned(),
                locked_at: lock.locked_at,
                locked_until: lock.locked_until,
                failures: counter.failures(),
            });
        }
    }
    s
}

fn window_passed(policy: &Policy, last_failure_at: Option<Millis>, now: Millis) -> bool {
    let window_ms = u64::from(policy.window_seconds) * 1000;
    window_ms > 0 && last_failure_at.is_some_and(|last| now.saturating_sub(last) >= window_ms)
}

/// A scope counter as `status` reports it: 0 once its lock ran out or its window passed.
fn scope_failures(policy: &Policy, c: &ScopeCounter, now: Millis) -> u32 {
    match &c.lock {
        Some(l) if l.locked_until.is_some_and(|u| u <= now) => 0,
        Some(_) => c.failures(),
        None if window_passed(policy, c.last_failure_at, now) => 0,
        None => c.failures(),
    }
}
