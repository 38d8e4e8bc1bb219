//! The fold: how one event changes one user's state.
//!
//! [`fold`] applies `docs/protocol.md`, section "Lockout semantics", in this order:
//! 1. a timed lock whose `locked_until` is at or before the event time ends first, with the
//!    `unlocked` (`how: expired`) notice keyed by the lock's event — whichever event does it;
//! 2. then the event itself: an attempt counts, is ignored or is blocked; an admin command
//!    locks, unlocks or resets MFA; an `expired` event ends the lock it names.
//!
//! Policy events are tenant events: the caller replaces the tenant's policy with
//! [`fold_policy`]; a policy change never touches a user state by itself.

use lockout_proto::event::{Attempt, Event, Expired, Forget, Lock, MfaReset, Outcome, PolicyChange, Unlock};
use lockout_proto::notice::{How, LockedNotice, MfaResetNotice, Notice, UnlockedNotice};
use lockout_proto::status::{LockReason, Scope};
use lockout_proto::{Millis, Policy};
use uuid::Uuid;

use crate::ids::{expired_event_id, notice_id, NoticeKind};
use crate::message;
use crate::state::{
    BlockedSource, CountedCredential, LockState, StreakSource, UserState, BLOCKED_SOURCES_MAX, CREDENTIALS_MAX,
    RECENT_LOCKS_MAX, STREAK_SOURCES_MAX,
};

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
    Counted { failures: u32, new_streak: bool, locked: bool },
    /// A failure the policy does not count.
    NotCounted(NotCounted),
    /// An attempt while locked: remembered as blocked; it neither counts nor extends the lock.
    Blocked,
    /// A success. `failures` were on the counter before it; `reset`: it cleared them
    /// (`reset_on_success`); `reenrolled`: an MFA success ended `mfa_reenrol`.
    Succeeded { failures: u32, reset: bool, reenrolled: bool },
    /// An admin unlock; it restarts the counter either way.
    Unlocked { was_locked: bool },
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
            Effect::Succeeded { reset: true, .. } | Effect::Unlocked { .. } | Effect::Expired { ended: Some(_) } => {
                StreakChange::Cleared
            }
            Effect::MfaReset { .. } => StreakChange::MfaRemoved,
            Effect::TenantEvent
            | Effect::NotCounted(_)
            | Effect::Blocked
            | Effect::Succeeded { reset: false, .. }
            | Effect::Locked { .. }
            | Effect::Expired { ended: None }
            | Effect::ExpiredEarly { .. }
            | Effect::Forget(Forgot::Nothing | Forgot::Locked | Forgot::ActiveSince(_)) => StreakChange::Kept,
            Effect::Forget(Forgot::Dropped) => StreakChange::Cleared,
        }
    }
}

/// Folds one user event at fold time `now` (the event's JetStream stored time).
///
/// `tenant` and `user` come from the event; `policy` is the tenant's policy at this point
/// of the stream. A `policy` event leaves the user state as it is.
pub fn fold(policy: &Policy, mut state: UserState, event: &Event, now: Millis) -> Folded {
    let (notices, why) = fold_into(policy, &mut state, event, now);
    Folded { state, notices, why }
}

/// [`fold`] on a state the caller keeps: `state` becomes the new state, the notices are
/// returned. The same function (`fold` calls this one); what the projector uses, so a state
/// of a few hundred bytes is not copied in and out for every event.
pub fn fold_into(policy: &Policy, state: &mut UserState, event: &Event, now: Millis) -> (Vec<Notice>, Why) {
    // A tenant event is not a user event: it neither ends a lock that ran out nor touches
    // the state ("by itself it never locks, unlocks or shortens a lock").
    let Some(user) = event.user() else {
        return (Vec::new(), Why { expired_first: None, effect: Effect::TenantEvent });
    };
    let mut f = Folder { policy, state, notices: Vec::new(), now, event_id: event.id() };
    let expired_first = f.expire_if_due(event.tenant(), user);
    let effect = match event {
        Event::Attempt(a) => f.attempt(a),
        Event::Unlock(u) => f.unlock(u),
        Event::Lock(l) => f.lock(l),
        Event::MfaReset(m) => f.mfa_reset(m),
        Event::Expired(x) => f.expired(x),
        Event::Forget(x) => f.forget(x),
        Event::Policy(_) => Effect::TenantEvent,
    };
    (f.notices, Why { expired_first, effect })
}

/// A tenant's policy after a `policy` event: the new one, applied to events folded after it.
pub fn fold_policy(_current: &Policy, change: &PolicyChange) -> Policy {
    change.policy
}

/// The working set of one fold step.
struct Folder<'a> {
    policy: &'a Policy,
    state: &'a mut UserState,
    notices: Vec<Notice>,
    now: Millis,
    event_id: Uuid,
}

impl Folder<'_> {
    /// Ends a timed lock that ran out at or before `now`; returns its `locked_until`.
    fn expire_if_due(&mut self, tenant: &str, user: &str) -> Option<Millis> {
        let until = self.state.lock.as_ref().and_then(|l| l.locked_until).filter(|&u| u <= self.now)?;
        self.end_by_expiry(tenant, user)?;
        Some(until)
    }

    /// Ends the current lock as an expiry: `unlocked_at` = `locked_until`, no actor. Returns
    /// when it ended, or `None` when no lock was in force.
    fn end_by_expiry(&mut self, tenant: &str, user: &str) -> Option<Millis> {
        let lock = self.state.lock.take()?;
        let until = lock.locked_until.unwrap_or(self.now);
        self.state.restart_streak();
        self.state.unlocked_at = Some(until);
        self.state.unlocked_by = None;
        self.state.unlocked_caller = None;
        self.notices.push(Notice::Unlocked(UnlockedNotice {
            id: notice_id(tenant, user, lock.event_id, NoticeKind::Expired),
            event_id: lock.event_id,
            tenant: tenant.into(),
            user: user.into(),
            at: until,
            how: How::Expired,
            actor: None,
            scope: Scope::Account,
            client: None,
            caller: None,
        }));
        Some(until)
    }

    fn attempt(&mut self, a: &Attempt) -> Effect {
        if let Some(lock) = &mut self.state.lock {
            block(lock, a);
            return Effect::Blocked;
        }
        match a.outcome {
            Outcome::Success => {
                let reenrolled = a.factor == lockout_proto::event::Factor::Mfa && self.state.mfa_reenrol;
                if reenrolled {
                    self.state.mfa_reenrol = false;
                }
                let failures = self.state.failures();
                let reset = self.policy.reset_on_success;
                if reset {
                    self.state.restart_streak();
                }
                Effect::Succeeded { failures, reset, reenrolled }
            }
            Outcome::Failure => self.failure(a),
        }
    }

    fn failure(&mut self, a: &Attempt) -> Effect {
        let mfa = a.factor.is_mfa();
        if mfa && !self.policy.count_mfa_failures {
            return Effect::NotCounted(NotCounted::MfaNotCounted);
        }
        let window_ms = u64::from(self.policy.window_seconds) * 1000;
        let mut new_streak = false;
        if let Some(last) = self.state.last_failure_at {
            if window_ms > 0 && self.now.saturating_sub(last) >= window_ms {
                new_streak = self.state.failures() > 0;
                self.state.restart_streak();
            }
        }
        if self.policy.dedupe_credential {
            if let Some(fp) = &a.credential {
                if self.state.credentials.iter().any(|c| c.fingerprint == fp) {
                    return Effect::NotCounted(NotCounted::CredentialAlreadyCounted);
                }
            }
        }
        self.count(a, mfa);
        let failures = self.state.failures();
        let locked = self.policy.max_failures > 0 && failures >= self.policy.max_failures;
        if locked {
            self.auto_lock(a, failures);
        }
        Effect::Counted { failures, new_streak, locked }
    }

    /// Adds one counted failure to the streak: to its source's entry, or, once
    /// [`STREAK_SOURCES_MAX`] sources are listed, to the unlisted count.
    fn count(&mut self, a: &Attempt, mfa: bool) {
        let st = &mut self.state;
        let (password_count, mfa_count) = match st
            .streak
            .iter_mut()
            .position(|s| s.ip == a.source_ip && s.client == a.client)
        {
            Some(i) => {
                let s = &mut st.streak[i];
                (&mut s.password, &mut s.mfa)
            }
            None if st.streak.len() >= STREAK_SOURCES_MAX => (&mut st.unlisted.password, &mut st.unlisted.mfa),
            None => {
                st.streak.push(StreakSource { ip: a.source_ip.clone(), client: a.client.clone(), password: 0, mfa: 0 });
                let s = st.streak.last_mut().expect("just pushed");
                (&mut s.password, &mut s.mfa)
            }
        };
        let counter = if mfa { mfa_count } else { password_count };
        *counter = counter.saturating_add(1);
        if let Some(fp) = &a.credential {
            if st.credentials.len() < CREDENTIALS_MAX && !st.credentials.iter().any(|c| c.fingerprint == fp) {
                st.credentials.push(CountedCredential { fingerprint: fp.clone(), mfa });
            }
        }
        st.last_failure_at = Some(self.now);
        st.last_source_ip = Some(a.source_ip.clone());
    }

    /// Locks after the failure `a` reached `max_failures`.
    fn auto_lock(&mut self, a: &Attempt, failures: u32) {
        let p = self.policy;
        let history_ms = u64::from(p.history_seconds) * 1000;
        let now = self.now;
        let st = &mut self.state;
        st.recent_locks.retain(|&t| t <= now && now - t < history_ms);
        let earlier = u32::try_from(st.recent_locks.len()).unwrap_or(u32::MAX);
        let seconds = lock_length(p, earlier);
        st.recent_locks.push(now);
        if st.recent_locks.len() > RECENT_LOCKS_MAX {
            st.recent_locks.remove(0);
        }
        st.lock_count = st.lock_count.saturating_add(1);
        let sources = st.ranked_sources();
        let text = message::auto_locked(seconds, &sources);
        self.start_lock(LockReason::Failures, seconds);
        self.notices.push(Notice::Locked(LockedNotice {
            id: notice_id(&a.tenant, &a.user, self.event_id, NoticeKind::Locked),
            event_id: self.event_id,
            tenant: a.tenant.clone(),
            user: a.user.clone(),
            at: now,
            reason: LockReason::Failures,
            locked_until: seconds.map(|s| until(now, s)),
            lock_seconds: seconds,
            failures,
            source_ip: Some(a.source_ip.clone()),
            client: a.client.clone(),
            sources,
            actor: None,
            message: text,
            scope: Scope::Account,
            caller: None,
        }));
    }

    fn start_lock(&mut self, reason: LockReason, seconds: Option<u64>) {
        self.state.lock = Some(Box::new(LockState {
            reason,
            locked_at: self.now,
            locked_until: seconds.map(|s| until(self.now, s)),
            event_id: self.event_id,
            blocked: 0,
            blocked_sources: Vec::new(),
        }));
    }

    fn lock(&mut self, l: &Lock) -> Effect {
        let replaced = self.state.lock.is_some();
        let seconds = l.seconds.map(u64::from);
        self.start_lock(LockReason::Admin, seconds);
        let sources = self.state.ranked_sources();
        self.notices.push(Notice::Locked(LockedNotice {
            id: notice_id(&l.tenant, &l.user, self.event_id, NoticeKind::Locked),
            event_id: self.event_id,
            tenant: l.tenant.clone(),
            user: l.user.clone(),
            at: self.now,
            reason: LockReason::Admin,
            locked_until: seconds.map(|s| until(self.now, s)),
            lock_seconds: seconds,
            failures: self.state.failures(),
            source_ip: None,
            client: None,
            sources,
            actor: Some(l.actor.clone()),
            message: message::admin_locked(seconds, l.reason.as_deref()),
            scope: Scope::Account,
            caller: l.caller.clone(),
        }));
        Effect::Locked { replaced }
    }

    fn unlock(&mut self, u: &Unlock) -> Effect {
        let was_locked = self.state.lock.take().is_some();
        self.state.restart_streak();
        self.state.unlocked_at = Some(self.now);
        self.state.unlocked_by = Some(u.actor.clone());
        self.state.unlocked_caller = u.caller.clone();
        if was_locked {
            self.notices.push(Notice::Unlocked(UnlockedNotice {
                id: notice_id(&u.tenant, &u.user, self.event_id, NoticeKind::Unlocked),
                event_id: self.event_id,
                tenant: u.tenant.clone(),
                user: u.user.clone(),
                at: self.now,
                how: How::Admin,
                actor: Some(u.actor.clone()),
                scope: Scope::Account,
                client: None,
                caller: u.caller.clone(),
            }));
        }
        Effect::Unlocked { was_locked }
    }

    fn mfa_reset(&mut self, m: &MfaReset) -> Effect {
        let st = &mut self.state;
        let before = st.failures();
        for s in &mut st.streak {
            s.mfa = 0;
        }
        st.unlisted.mfa = 0;
        st.streak.retain(|s| s.total() > 0);
        st.credentials.retain(|c| !c.mfa);
        let removed = before.saturating_sub(st.failures());
        st.mfa_reset_at = Some(self.now);
        st.mfa_reset_by = Some(m.actor.clone());
        st.mfa_reset_caller = m.caller.clone();
        st.mfa_reenrol = true;
        self.notices.push(Notice::MfaReset(MfaResetNotice {
            id: notice_id(&m.tenant, &m.user, self.event_id, NoticeKind::MfaReset),
            event_id: self.event_id,
            tenant: m.tenant.clone(),
            user: m.user.clone(),
            at: self.now,
            actor: m.actor.clone(),
            caller: m.caller.clone(),
        }));
        Effect::MfaReset { removed }
    }

    /// A `forget` event drops the state unless the user is locked or the state recorded
    /// something after the event's `last_activity` (see [`UserState::last_activity`]).
    fn forget(&mut self, x: &Forget) -> Effect {
        let forgot = if self.state.lock.is_some() {
            Forgot::Locked
        } else {
            match self.state.last_activity() {
                Some(t) if t > x.last_activity => Forgot::ActiveSince(t),
                _ if *self.state == UserState::default() => Forgot::Nothing,
                _ => {
                    *self.state = UserState::default();
                    Forgot::Dropped
                }
            }
        };
        Effect::Forget(forgot)
    }

    /// An `expired` event ends the timed lock it names, even when folded a little (up to
    /// [`EXPIRED_EARLY_ALLOWANCE_MS`]) before `locked_until`; one stored earlier than that
    /// (lockoutd's clock running ahead of the server's) leaves the lock in force. Otherwise it
    /// does nothing. An `expired` event whose id is not [`expired_event_id`]'s (those written
    /// before it, with [`crate::ids::expired_event_id_v1`]) ends the lock it names whenever it
    /// is folded, as it always did: stored history folds the same.
    fn expired(&mut self, x: &Expired) -> Effect {
        let until = self.state.lock.as_ref().filter(|l| l.event_id == x.lock_event).and_then(|l| l.locked_until);
        let held_to_until = || x.id == expired_event_id(&x.tenant, &x.user, x.lock_event);
        match until {
            Some(until) if self.now.saturating_add(EXPIRED_EARLY_ALLOWANCE_MS) < until && held_to_until() => {
                Effect::ExpiredEarly { until }
            }
            Some(_) => Effect::Expired { ended: self.end_by_expiry(&x.tenant, &x.user) },
            None => Effect::Expired { ended: None },
        }
    }
}

/// Remembers an attempt made while locked; it neither extends the lock nor counts.
fn block(lock: &mut LockState, a: &Attempt) {
    lock.blocked = lock.blocked.saturating_add(1);
    if let Some(s) = lock.blocked_sources.iter_mut().find(|s| s.ip == a.source_ip && s.client == a.client) {
        s.attempts = s.attempts.saturating_add(1);
    } else if lock.blocked_sources.len() < BLOCKED_SOURCES_MAX {
        lock.blocked_sources.push(BlockedSource { ip: a.source_ip.clone(), client: a.client.clone(), attempts: 1 });
    }
}

/// The length in seconds of an automatic lock after `earlier` automatic locks within
/// `history_seconds`; `None` = until an admin unlocks.
///
/// The first lock lasts `lock_seconds`; each further one `lock_multiplier` times the one
/// before, capped at `max_lock_seconds` (the cap never shortens a lock below `lock_seconds`).
pub fn lock_length(p: &Policy, earlier: u32) -> Option<u64> {
    if p.lock_seconds == 0 || (p.permanent_after > 0 && earlier >= p.permanent_after) {
        return None;
    }
    let base = u64::from(p.lock_seconds);
    if earlier == 0 {
        return Some(base);
    }
    let factor = u64::from(p.lock_multiplier).saturating_pow(earlier);
    Some(base.saturating_mul(factor).min(p.max_lock_seconds.max(base)))
}

fn until(now: Millis, seconds: u64) -> Millis {
    now.saturating_add(seconds.saturating_mul(1000))
}
