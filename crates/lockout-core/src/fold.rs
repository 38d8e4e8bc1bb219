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

use lockout_proto::event::{
    Account, Attempt, Event, Expired, Forget, Lock, MfaReset, Outcome, PasswordReset, PolicyChange, Unlock,
};
use lockout_proto::notice::{How, LockedNotice, MfaResetNotice, Notice, UnlockedNotice};
use lockout_proto::policy::ResetScope;
use lockout_proto::status::{LockReason, Scope};
use lockout_proto::CompactString;
use lockout_proto::{Millis, Policy};
use uuid::Uuid;

use crate::ids::{expired_event_id, notice_id, scoped_notice_id, NoticeKind};
use crate::message;
use crate::state::{
    familiar_key, ranked, BlockedSource, CountedCredential, FamiliarIp, KnownClient, LockState, ScopeCounter,
    StreakSource, Unlisted, UserState, BLOCKED_SOURCES_MAX, CREDENTIALS_MAX, FAMILIAR_MAX, KNOWN_CLIENTS_MAX,
    RECENT_LOCKS_MAX, STREAK_SOURCES_MAX,
};

mod admin;
mod why;

pub use why::{Effect, Folded, Forgot, NotCounted, StreakChange, Why, EXPIRED_EARLY_ALLOWANCE_MS};

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
    // A rejected attempt is recorded in the history and changes nothing, not even a lock that
    // ran out (contract v2; a v1 history never folded one: it was a dead letter then).
    if matches!(event, Event::Attempt(a) if a.outcome == Outcome::Rejected) {
        return (Vec::new(), Why { expired_first: None, effect: Effect::Rejected });
    }
    let mut f = Folder { policy, state, notices: Vec::new(), now, event_id: event.id() };
    let expired_first = f.expire_if_due(event.tenant(), user);
    let effect = match event {
        Event::Attempt(a) => f.attempt(a),
        Event::Unlock(u) => f.unlock(u),
        Event::Lock(l) => f.lock(l),
        Event::MfaReset(m) => f.mfa_reset(m),
        Event::Expired(x) => f.expired(x),
        Event::Forget(x) => f.forget(x),
        Event::PasswordReset(r) => f.password_reset(r),
        Event::Policy(_) | Event::IpBlock(_) | Event::IpUnblock(_) | Event::IpExpired(_) => Effect::TenantEvent,
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

/// Which counter a failure goes to, or which lock refuses an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Target {
    Account,
    Unfamiliar,
    /// Index into `UserState::clients`.
    Client(usize),
}

/// One counter, wherever its fields live (the account's are `UserState`'s own, from v1).
struct CounterMut<'a> {
    streak: &'a mut Vec<StreakSource>,
    unlisted: &'a mut Unlisted,
    credentials: &'a mut Vec<CountedCredential>,
    last_failure_at: &'a mut Option<Millis>,
}

impl CounterMut<'_> {
    fn failures(&self) -> u32 {
        let n = self.unlisted.password.saturating_add(self.unlisted.mfa);
        self.streak.iter().fold(n, |n, s| n.saturating_add(s.total()))
    }

    fn restart(&mut self) {
        self.streak.clear();
        *self.unlisted = Unlisted::default();
        self.credentials.clear();
    }

    /// Drops the failures from `ip` (`reset_scope: same_ip`).
    fn remove_ip(&mut self, ip: &str) {
        self.streak.retain(|s| s.ip != ip);
    }

    /// Drops the second-factor failures; returns how many.
    fn remove_mfa(&mut self) -> u32 {
        let before = self.failures();
        for s in self.streak.iter_mut() {
            s.mfa = 0;
        }
        self.unlisted.mfa = 0;
        self.streak.retain(|s| s.total() > 0);
        self.credentials.retain(|c| !c.mfa);
        before.saturating_sub(self.failures())
    }

    /// Adds one counted failure: to its source's entry, or, once [`STREAK_SOURCES_MAX`]
    /// sources are listed, to the unlisted count.
    fn count(&mut self, a: &Attempt, mfa: bool, now: Millis) {
        let (password_count, mfa_count) =
            match self.streak.iter_mut().position(|s| s.ip == a.source_ip && s.client == a.client) {
                Some(i) => {
                    let s = &mut self.streak[i];
                    (&mut s.password, &mut s.mfa)
                }
                None if self.streak.len() >= STREAK_SOURCES_MAX => {
                    (&mut self.unlisted.password, &mut self.unlisted.mfa)
                }
                None => {
                    self.streak.push(StreakSource {
                        ip: a.source_ip.clone(),
                        client: a.client.clone(),
                        password: 0,
                        mfa: 0,
                    });
                    let s = self.streak.last_mut().expect("just pushed");
                    (&mut s.password, &mut s.mfa)
                }
            };
        let counter = if mfa { mfa_count } else { password_count };
        *counter = counter.saturating_add(1);
        if let Some(fp) = &a.credential {
            if self.credentials.len() < CREDENTIALS_MAX && !self.credentials.iter().any(|c| c.fingerprint == fp) {
                self.credentials.push(CountedCredential { fingerprint: fp.clone(), mfa });
            }
        }
        *self.last_failure_at = Some(now);
    }
}

fn scope_counter(c: &mut ScopeCounter) -> CounterMut<'_> {
    CounterMut {
        streak: &mut c.streak,
        unlisted: &mut c.unlisted,
        credentials: &mut c.credentials,
        last_failure_at: &mut c.last_failure_at,
    }
}

impl Folder<'_> {
    fn counter(&mut self, t: Target) -> CounterMut<'_> {
        let st = &mut *self.state;
        match t {
            Target::Account => CounterMut {
                streak: &mut st.streak,
                unlisted: &mut st.unlisted,
                credentials: &mut st.credentials,
                last_failure_at: &mut st.last_failure_at,
            },
            Target::Unfamiliar => scope_counter(&mut st.unfamiliar),
            Target::Client(i) => scope_counter(&mut st.clients[i].counter),
        }
    }

    fn lock_of(&mut self, t: Target) -> &mut Option<Box<LockState>> {
        match t {
            Target::Account => &mut self.state.lock,
            Target::Unfamiliar => &mut self.state.unfamiliar.lock,
            Target::Client(i) => &mut self.state.clients[i].counter.lock,
        }
    }

    fn scope(&self, t: Target) -> (Scope, Option<CompactString>) {
        match t {
            Target::Account => (Scope::Account, None),
            Target::Unfamiliar => (Scope::Unfamiliar, None),
            Target::Client(i) => (Scope::Client, Some(self.state.clients[i].client.clone())),
        }
    }

    /// Every scope counter, in a fixed order: unfamiliar, then the clients in list order.
    fn scope_targets(&self) -> impl Iterator<Item = Target> {
        std::iter::once(Target::Unfamiliar).chain((0..self.state.clients.len()).map(Target::Client))
    }

    /// Ends the timed locks that ran out at or before `now`: the account's (returned, its
    /// `locked_until`), then each scope's.
    fn expire_if_due(&mut self, tenant: &str, user: &str) -> Option<Millis> {
        let now = self.now;
        let due = |l: &Option<Box<LockState>>| l.as_ref().and_then(|l| l.locked_until).filter(|&u| u <= now);
        let account = due(&self.state.lock).and_then(|until| self.end_by_expiry(tenant, user).map(|_| until));
        let scoped: Vec<Target> = self.scope_targets().collect();
        for t in scoped {
            if due(self.lock_of(t)).is_some() {
                self.end_scope(tenant, user, t, How::Expired, None, None);
            }
        }
        account
    }

    /// Ends the current account lock as an expiry: `unlocked_at` = `locked_until`, no actor.
    /// Returns when it ended, or `None` when no lock was in force.
    fn end_by_expiry(&mut self, tenant: &str, user: &str) -> Option<Millis> {
        let lock = self.state.lock.take()?;
        let until = lock.locked_until.unwrap_or(self.now);
        self.state.restart_streak();
        self.state.unlocked_at = Some(until);
        self.state.unlocked_by = None;
        self.state.unlocked_caller = None;
        self.unlocked_notice(tenant, user, Target::Account, &lock, How::Expired, None, None);
        Some(until)
    }

    /// Ends the lock of scope `t` (not the account), if one is in force, restarting its
    /// counter; the `unlocked` notice says `how`. Returns whether a lock ended.
    fn end_scope(
        &mut self,
        tenant: &str,
        user: &str,
        t: Target,
        how: How,
        actor: Option<&CompactString>,
        caller: Option<&CompactString>,
    ) -> bool {
        let Some(lock) = self.lock_of(t).take() else { return false };
        let mut c = self.counter(t);
        c.restart();
        *c.last_failure_at = None;
        self.unlocked_notice(tenant, user, t, &lock, how, actor, caller);
        true
    }

    /// The `unlocked` notice of `lock` (of scope `t`) ended `how`. An expiry is keyed by the
    /// lock's event and dated `locked_until`, so whichever event ends it, it is the same
    /// notice; any other end by the event folded now.
    #[allow(clippy::too_many_arguments)]
    fn unlocked_notice(
        &mut self,
        tenant: &str,
        user: &str,
        t: Target,
        lock: &LockState,
        how: How,
        actor: Option<&CompactString>,
        caller: Option<&CompactString>,
    ) {
        let (scope, client) = self.scope(t);
        let (kind, event_id, at) = match how {
            How::Expired => (NoticeKind::Expired, lock.event_id, lock.locked_until.unwrap_or(self.now)),
            How::Admin | How::PasswordReset => (NoticeKind::Unlocked, self.event_id, self.now),
        };
        self.notices.push(Notice::Unlocked(UnlockedNotice {
            id: scoped_notice_id(tenant, user, event_id, kind, scope.into(), client.as_deref()),
            event_id,
            tenant: tenant.into(),
            user: user.into(),
            at,
            how,
            actor: actor.cloned(),
            scope,
            client,
            caller: caller.cloned(),
        }));
    }

    /// The lock that refuses attempt `a`, if any: the account's, then the unfamiliar IPs',
    /// then its client's (contract v2, `blocked_by`'s order).
    fn blocked_by(&self, a: &Attempt) -> Option<Target> {
        let st = &*self.state;
        if st.lock.is_some() {
            return Some(Target::Account);
        }
        let familiar_days = self.policy.familiar_days;
        if st.unfamiliar.lock.is_some() && familiar_days > 0 && !st.is_familiar(&a.source_ip, familiar_days, self.now) {
            return Some(Target::Unfamiliar);
        }
        if a.account == Some(Account::Api) {
            if let Some(c) = &a.client {
                if let Some(i) = st.clients.iter().position(|k| k.client == c && k.counter.lock.is_some()) {
                    return Some(Target::Client(i));
                }
            }
        }
        None
    }

    /// The counter a failure from `a`'s source goes to: its known client's (under
    /// `api_client_scope`), else the unfamiliar IPs' (under `familiar_days`), else the account's.
    fn route(&self, a: &Attempt) -> Target {
        let st = &*self.state;
        if self.policy.api_client_scope && a.account == Some(Account::Api) {
            if let Some(i) = a.client.as_deref().and_then(|c| st.known_client(c, self.now)) {
                return Target::Client(i);
            }
        }
        if self.policy.familiar_days > 0 && !st.is_familiar(&a.source_ip, self.policy.familiar_days, self.now) {
            return Target::Unfamiliar;
        }
        Target::Account
    }

    fn attempt(&mut self, a: &Attempt) -> Effect {
        if let Some(t) = self.blocked_by(a) {
            let (scope, _) = self.scope(t);
            block(self.lock_of(t).as_mut().expect("a lock refuses it"), a);
            return Effect::Blocked { scope };
        }
        match a.outcome {
            Outcome::Success => self.success(a),
            Outcome::Failure => self.failure(a),
            // Rejected attempts never reach here (`fold_into`).
            Outcome::Rejected => Effect::Rejected,
        }
    }

    fn success(&mut self, a: &Attempt) -> Effect {
        let reenrolled = a.factor == lockout_proto::event::Factor::Mfa && self.state.mfa_reenrol;
        if reenrolled {
            self.state.mfa_reenrol = false;
        }
        let target = self.route(a);
        let reset = self.policy.reset_on_success;
        let same_ip = self.policy.reset_scope == ResetScope::SameIp;
        let mut c = self.counter(target);
        let failures = c.failures();
        if reset {
            if same_ip {
                c.remove_ip(&a.source_ip);
            } else {
                c.restart();
            }
        }
        if a.is_final {
            self.remember(a);
        }
        Effect::Succeeded { failures, reset, reenrolled }
    }

    /// A final success: its IP becomes familiar (under `familiar_days`), its API client known
    /// (under `api_client_scope`); the oldest is forgotten beyond the bounds.
    fn remember(&mut self, a: &Attempt) {
        let now = self.now;
        let st = &mut *self.state;
        if self.policy.familiar_days > 0 {
            let span = u64::from(self.policy.familiar_days) * 86_400_000;
            st.familiar.retain(|f| now.saturating_sub(f.at) < span);
            let key = familiar_key(&a.source_ip);
            match st.familiar.iter_mut().find(|f| f.ip == key) {
                Some(f) => f.at = now,
                None => {
                    if st.familiar.len() >= FAMILIAR_MAX {
                        let oldest = (0..st.familiar.len()).min_by_key(|&i| st.familiar[i].at).expect("not empty");
                        st.familiar.remove(oldest);
                    }
                    st.familiar.push(FamiliarIp { ip: key, at: now });
                }
            }
        }
        if self.policy.api_client_scope && a.account == Some(Account::Api) {
            if let Some(client) = &a.client {
                match st.clients.iter_mut().find(|c| c.client == client) {
                    Some(c) => c.at = now,
                    None => {
                        // Forget the least recently successful unlocked client beyond the bound.
                        if st.clients.len() >= KNOWN_CLIENTS_MAX {
                            let victim = (0..st.clients.len())
                                .filter(|&i| st.clients[i].counter.lock.is_none())
                                .min_by_key(|&i| st.clients[i].at);
                            match victim {
                                Some(i) => {
                                    st.clients.remove(i);
                                }
                                None => return,
                            }
                        }
                        st.clients.push(KnownClient {
                            client: client.clone(),
                            at: now,
                            counter: ScopeCounter::default(),
                        });
                    }
                }
            }
        }
    }

    fn failure(&mut self, a: &Attempt) -> Effect {
        let mfa = a.factor.is_mfa();
        if mfa && !self.policy.count_mfa_failures {
            return Effect::NotCounted(NotCounted::MfaNotCounted);
        }
        let target = self.route(a);
        let window_ms = u64::from(self.policy.window_seconds) * 1000;
        let dedupe = self.policy.dedupe_credential;
        let now = self.now;
        let mut c = self.counter(target);
        let mut new_streak = false;
        if let Some(last) = *c.last_failure_at {
            if window_ms > 0 && now.saturating_sub(last) >= window_ms {
                new_streak = c.failures() > 0;
                c.restart();
            }
        }
        if dedupe {
            if let Some(fp) = &a.credential {
                if c.credentials.iter().any(|x| x.fingerprint == fp) {
                    return Effect::NotCounted(NotCounted::CredentialAlreadyCounted);
                }
            }
        }
        c.count(a, mfa, now);
        let failures = c.failures();
        if target == Target::Account {
            self.state.last_source_ip = Some(a.source_ip.clone());
        }
        let locked = self.policy.max_failures > 0 && failures >= self.policy.max_failures;
        if locked {
            match target {
                Target::Account => self.auto_lock(a, failures),
                t => self.scope_lock(a, t, failures),
            }
        }
        let (counter, _) = self.scope(target);
        Effect::Counted { failures, new_streak, locked, counter }
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
        self.state.lock = Some(self.new_lock(LockReason::Failures, seconds, Some(&a.source_ip)));
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

    /// Locks scope `t` (unfamiliar IPs or one client) after the failure `a` reached
    /// `max_failures` on its counter: for `lock_seconds` (0: until unlocked); progressive and
    /// permanent locks concern the account only.
    fn scope_lock(&mut self, a: &Attempt, t: Target, failures: u32) {
        let seconds = (self.policy.lock_seconds > 0).then_some(u64::from(self.policy.lock_seconds));
        let lock = self.new_lock(LockReason::Failures, seconds, Some(&a.source_ip));
        *self.lock_of(t) = Some(lock);
        let (scope, client) = self.scope(t);
        let sources = ranked(self.counter(t).streak);
        let now = self.now;
        self.notices.push(Notice::Locked(LockedNotice {
            id: scoped_notice_id(
                &a.tenant,
                &a.user,
                self.event_id,
                NoticeKind::Locked,
                scope.into(),
                client.as_deref(),
            ),
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
            message: message::scope_locked(&a.user, scope, client.as_deref(), seconds, &sources),
            sources,
            actor: None,
            scope,
            caller: None,
        }));
    }

    fn new_lock(&self, reason: LockReason, seconds: Option<u64>, tripped_by: Option<&CompactString>) -> Box<LockState> {
        Box::new(LockState {
            tripped_by: tripped_by.cloned(),
            reason,
            locked_at: self.now,
            locked_until: seconds.map(|s| until(self.now, s)),
            event_id: self.event_id,
            blocked: 0,
            blocked_sources: Vec::new(),
        })
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
