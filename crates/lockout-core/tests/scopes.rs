//! Source-aware locks (contract v2, "Locks by scope"): familiar IPs, per-integration locks,
//! same-IP reset, `rejected` attempts and unlock by password reset. Each test names the
//! behaviour it pins; `docs/protocol.md`, "Source-aware locks", is the judge.
//!
//! The anchors: Entra keeps familiar and unfamiliar counters, Auth0 counts per user+IP,
//! NIST SP 800-63B §5.2.2 resets only the succeeding IP's failures, Entra and Auth0 end a
//! lock on a verified password change; nobody locks a single integration.

use lockout_core::ids::{expired_event_id, notice_id, scoped_notice_id, NoticeKind};
use lockout_core::{fold, status_for, Effect, Probe, UserState};
use lockout_proto::event::{
    Account, Attempt, Event, Expired, Factor, Lock, MfaReset, Outcome, PasswordReset, ResetMethod, Unlock,
};
use lockout_proto::notice::{How, LockedNotice, Notice, UnlockedNotice};
use lockout_proto::policy::ResetScope;
use lockout_proto::status::{BlockedBy, Scope};
use lockout_proto::{Millis, Policy, Status};
use uuid::Uuid;

const TENANT: &str = "acme";
const USER: &str = "alice@acme.com";
const T0: Millis = 1_714_953_600_000;
const SEC: Millis = 1000;
const MIN: Millis = 60 * SEC;
const DAY: Millis = 86_400 * SEC;

const HOME: &str = "198.51.100.7";
const ATTACKER: [&str; 5] = ["203.0.113.1", "203.0.113.2", "203.0.113.3", "203.0.113.4", "203.0.113.5"];

/// A user who folds events one at a time, keeping every notice and effect.
struct User {
    policy: Policy,
    state: UserState,
    notices: Vec<Notice>,
    effects: Vec<Effect>,
    n: u128,
    now: Millis,
}

impl User {
    fn new(policy: Policy) -> User {
        User { policy, state: UserState::default(), notices: Vec::new(), effects: Vec::new(), n: 0, now: T0 }
    }

    fn next_id(&mut self) -> Uuid {
        self.n += 1;
        Uuid::from_u128(0x5c09_0000_0000_7000_8000_0000_0000_0000 | self.n)
    }

    /// Folds `event` at `now` (moved on by `after` first); returns its notices.
    fn apply(&mut self, after: Millis, event: Event) -> Vec<Notice> {
        self.now += after;
        let folded = fold(&self.policy, std::mem::take(&mut self.state), &event, self.now);
        self.state = folded.state;
        self.effects.push(folded.why.effect);
        self.notices.extend(folded.notices.clone());
        folded.notices
    }

    fn attempt(
        &mut self,
        outcome: Outcome,
        ip: &str,
        client: Option<&str>,
        account: Option<Account>,
        fin: bool,
    ) -> Uuid {
        let id = self.next_id();
        self.apply(
            SEC,
            Event::Attempt(Attempt {
                id,
                at: self.now,
                tenant: TENANT.into(),
                user: USER.into(),
                outcome,
                factor: Factor::Password,
                source_ip: ip.into(),
                client: client.map(Into::into),
                credential: None,
                account,
                is_final: fin,
            }),
        );
        id
    }

    fn fail(&mut self, ip: &str) -> Uuid {
        self.attempt(Outcome::Failure, ip, None, Some(Account::User), true)
    }

    fn ok(&mut self, ip: &str) -> Uuid {
        self.attempt(Outcome::Success, ip, None, Some(Account::User), true)
    }

    fn api_fail(&mut self, ip: &str, client: &str) -> Uuid {
        self.attempt(Outcome::Failure, ip, Some(client), Some(Account::Api), true)
    }

    fn api_ok(&mut self, ip: &str, client: &str) -> Uuid {
        self.attempt(Outcome::Success, ip, Some(client), Some(Account::Api), true)
    }

    fn password_reset(&mut self) -> Uuid {
        let id = self.next_id();
        let e = PasswordReset {
            id,
            at: self.now,
            tenant: TENANT.into(),
            user: USER.into(),
            method: ResetMethod::SelfService,
            actor: None,
            caller: Some("IDP_ACME/idp".into()),
        };
        self.apply(SEC, Event::PasswordReset(e));
        id
    }

    fn unlock(&mut self, lock_event: Option<Uuid>) -> Uuid {
        let id = self.next_id();
        let e = Unlock {
            id,
            at: self.now,
            tenant: TENANT.into(),
            user: USER.into(),
            actor: "helpdesk".into(),
            reason: None,
            caller: None,
            lock_event,
        };
        self.apply(SEC, Event::Unlock(e));
        id
    }

    fn admin_lock(&mut self) -> Uuid {
        let id = self.next_id();
        let e = Lock {
            id,
            at: self.now,
            tenant: TENANT.into(),
            user: USER.into(),
            actor: "sec".into(),
            reason: None,
            seconds: None,
            caller: None,
        };
        self.apply(SEC, Event::Lock(e));
        id
    }

    fn status(&self, ip: Option<&str>, client: Option<&str>, account: Option<Account>) -> Status {
        status_for(TENANT, USER, &self.policy, &self.state, self.now, &Probe { ip, client, account, ip_blocked: false })
    }

    fn locked(&self) -> Vec<&LockedNotice> {
        self.notices.iter().filter_map(|n| if let Notice::Locked(l) = n { Some(l) } else { None }).collect()
    }

    fn unlocked(&self) -> Vec<&UnlockedNotice> {
        self.notices.iter().filter_map(|n| if let Notice::Unlocked(u) = n { Some(u) } else { None }).collect()
    }

    fn last_effect(&self) -> Effect {
        *self.effects.last().expect("an event was folded")
    }
}

fn familiar_policy() -> Policy {
    Policy { familiar_days: 30, ..Policy::default() }
}

fn api_policy() -> Policy {
    Policy { api_client_scope: true, ..Policy::default() }
}

/// Entra's familiar/unfamiliar counters: an attacker from new IPs locks sign-ins from
/// unfamiliar IPs only; the user still signs in from home, and `status` says so per source.
#[test]
fn an_attacker_from_new_ips_cannot_lock_out_the_user_at_home() {
    let mut u = User::new(familiar_policy());
    u.ok(HOME);
    for ip in ATTACKER {
        u.fail(ip);
    }
    let locked = u.locked();
    assert_eq!(locked.len(), 1);
    let l = locked[0];
    assert_eq!((l.scope, l.failures, l.source_ip.as_deref()), (Scope::Unfamiliar, 5, Some(ATTACKER[4])));
    assert_eq!(l.id, scoped_notice_id(TENANT, USER, l.event_id, NoticeKind::Locked, "unfamiliar", None));
    assert!(l.message.contains("from unfamiliar locations are blocked for 30 minutes"), "{}", l.message);
    assert!(l.message.contains("sign-ins from familiar locations still work"), "{}", l.message);
    assert_eq!(l.sources.len(), 5);

    let s = u.status(None, None, None);
    assert!(!s.locked && s.allowed && s.blocked_by.is_none(), "without ip only the account lock counts: {s:?}");
    assert_eq!((s.failures, s.unfamiliar_failures, s.scope_locks.len()), (0, 5, 1));
    assert_eq!(s.scope_locks[0].scope, Scope::Unfamiliar);
    let home = u.status(Some(HOME), None, None);
    assert!(home.allowed, "{home:?}");
    let away = u.status(Some("192.0.2.99"), None, None);
    assert_eq!((away.allowed, away.blocked_by), (false, Some(BlockedBy::Unfamiliar)));

    // More attacker failures are blocked, not counted; the user signs in from home.
    u.fail(ATTACKER[0]);
    assert_eq!(u.last_effect(), Effect::Blocked { scope: Scope::Unfamiliar });
    u.ok(HOME);
    assert!(matches!(u.last_effect(), Effect::Succeeded { .. }), "{:?}", u.last_effect());
    assert_eq!(u.state.unfamiliar.failures(), 5, "the scope's counter is frozen while locked");
}

/// Failures from a familiar IP still count, on the account counter, and lock the account.
#[test]
fn failures_from_a_familiar_ip_lock_the_account() {
    let mut u = User::new(familiar_policy());
    u.ok(HOME);
    for _ in 0..5 {
        u.fail(HOME);
    }
    let l = u.locked();
    assert_eq!((l.len(), l[0].scope), (1, Scope::Account));
    assert_eq!(l[0].id, notice_id(TENANT, USER, l[0].event_id, NoticeKind::Locked), "an account lock keeps its v1 id");
    assert_eq!(u.status(Some(HOME), None, None).blocked_by, Some(BlockedBy::Account));
}

/// Only a final success makes an IP familiar; IPv6 is compared by /64; familiarity lapses
/// after `familiar_days`.
#[test]
fn familiarity_needs_a_final_success_counts_ipv6_by_64_and_lapses() {
    let mut u = User::new(familiar_policy());
    u.attempt(Outcome::Success, HOME, None, None, false);
    u.fail(HOME);
    assert!(matches!(u.last_effect(), Effect::Counted { counter: Scope::Unfamiliar, .. }), "{:?}", u.last_effect());

    u.ok("2001:db8:1:2::10");
    u.fail("2001:db8:1:2:ffff::1");
    assert!(matches!(u.last_effect(), Effect::Counted { counter: Scope::Account, .. }), "same /64");
    u.fail("2001:db8:1:3::10");
    assert!(matches!(u.last_effect(), Effect::Counted { counter: Scope::Unfamiliar, .. }), "another /64");

    u.now += 30 * DAY;
    u.fail("2001:db8:1:2::10");
    assert!(matches!(u.last_effect(), Effect::Counted { counter: Scope::Unfamiliar, .. }), "lapsed after 30 days");
}

/// Familiar IPs are bounded: the 33rd forgets the least recent.
#[test]
fn familiar_ips_are_bounded() {
    let mut u = User::new(familiar_policy());
    for i in 0..40 {
        u.ok(&format!("192.0.2.{i}"));
    }
    assert_eq!(u.state.familiar.len(), lockout_core::state::FAMILIAR_MAX);
    assert!(!u.state.is_familiar("192.0.2.0", 30, u.now));
    assert!(u.state.is_familiar("192.0.2.39", 30, u.now));
}

/// A stale integration ("IT Glue" with an old password) locks only itself: the person signs in.
#[test]
fn a_stale_integration_locks_only_itself() {
    let mut u = User::new(api_policy());
    u.api_ok(HOME, "IT Glue");
    for _ in 0..5 {
        u.api_fail("192.0.2.10", "IT Glue");
    }
    let l = u.locked();
    assert_eq!(l.len(), 1);
    assert_eq!((l[0].scope, l[0].client.as_deref()), (Scope::Client, Some("IT Glue")));
    assert_eq!(l[0].id, scoped_notice_id(TENANT, USER, l[0].event_id, NoticeKind::Locked, "client", Some("IT Glue")));
    assert!(
        l[0].message.starts_with("Sign-ins to alice@acme.com from IT Glue are blocked for 30 minutes"),
        "{}",
        l[0].message
    );

    let glue = u.status(Some("192.0.2.10"), Some("IT Glue"), Some(Account::Api));
    assert_eq!((glue.allowed, glue.blocked_by), (false, Some(BlockedBy::Client)));
    let person = u.status(Some(HOME), None, Some(Account::User));
    assert!(person.allowed && !person.locked, "{person:?}");
    u.ok(HOME);
    assert!(matches!(u.last_effect(), Effect::Succeeded { .. }));
    u.api_fail("192.0.2.10", "IT Glue");
    assert_eq!(u.last_effect(), Effect::Blocked { scope: Scope::Client });
    assert_eq!(u.status(None, None, None).scope_locks[0].failures, 5);
}

/// Unknown clients count for the account, so rotating client names gains an attacker nothing.
#[test]
fn rotating_api_client_names_locks_the_account() {
    let mut u = User::new(api_policy());
    u.api_ok(HOME, "IT Glue");
    for i in 0..5 {
        u.api_fail("203.0.113.9", &format!("client-{i}"));
    }
    let l = u.locked();
    assert_eq!((l.len(), l[0].scope), (1, Scope::Account));
    assert!(u.state.clients.iter().all(|c| c.client == "IT Glue"), "failures make no client known");
}

/// At most 16 known clients; a client stays known for 30 days after its last final success.
#[test]
fn known_clients_are_bounded_and_lapse() {
    let mut u = User::new(api_policy());
    for i in 0..20 {
        u.api_ok(HOME, &format!("c{i}"));
    }
    assert_eq!(u.state.clients.len(), lockout_core::state::KNOWN_CLIENTS_MAX);
    assert!(u.state.known_client("c0", u.now).is_none() && u.state.known_client("c19", u.now).is_some());
    u.now += 30 * DAY;
    u.api_fail(HOME, "c19");
    assert!(
        matches!(u.last_effect(), Effect::Counted { counter: Scope::Account, .. }),
        "lapsed: counts for the account"
    );
}

/// NIST SP 800-63B §5.2.2: a success resets only its own IP's failures (`same_ip`).
#[test]
fn a_success_from_one_ip_leaves_another_ips_failures_counted() {
    let mut u = User::new(Policy { reset_scope: ResetScope::SameIp, ..Policy::default() });
    u.fail(ATTACKER[0]);
    u.fail(ATTACKER[0]);
    u.fail(HOME);
    u.ok(HOME);
    assert_eq!(u.state.failures(), 2);
    assert_eq!(u.state.streak.len(), 1);
    assert_eq!(u.state.streak[0].ip, ATTACKER[0]);
    // `all` (v1) clears everything.
    let mut v = User::new(Policy::default());
    v.fail(ATTACKER[0]);
    v.ok(HOME);
    assert_eq!(v.state.failures(), 0);
}

/// `rejected` attempts are recorded and change nothing: no counter, no lock, not even a lock
/// that ran out.
#[test]
fn rejected_attempts_change_nothing() {
    let mut u = User::new(Policy { max_failures: 1, lock_seconds: 60, ..familiar_policy() });
    let before = u.state.clone();
    u.attempt(Outcome::Rejected, ATTACKER[0], None, None, true);
    assert_eq!((u.last_effect(), &u.state), (Effect::Rejected, &before));
    u.fail(ATTACKER[0]);
    let locked = u.state.clone();
    u.now += 2 * MIN;
    u.attempt(Outcome::Rejected, ATTACKER[0], None, None, true);
    assert_eq!(u.state, locked, "a lock that ran out is ended by the next other event, not a rejected one");
    assert!(u.unlocked().is_empty());
}

/// Entra and Auth0: a verified password change ends the failure and scope locks, each once
/// with its notice (`how: password_reset`), and clears every counter.
#[test]
fn a_password_reset_ends_failure_and_scope_locks_each_once() {
    let mut u = User::new(Policy { familiar_days: 30, api_client_scope: true, ..Policy::default() });
    u.ok(HOME);
    u.api_ok(HOME, "IT Glue");
    for ip in ATTACKER {
        u.fail(ip);
    }
    for _ in 0..5 {
        u.api_fail(HOME, "IT Glue");
    }
    for _ in 0..5 {
        u.fail(HOME);
    }
    assert_eq!(
        u.locked().iter().map(|l| l.scope).collect::<Vec<_>>(),
        [Scope::Unfamiliar, Scope::Client, Scope::Account]
    );
    let reset = u.password_reset();
    assert_eq!(u.last_effect(), Effect::PasswordReset { ended: 3, kept: false });
    let ends = u.unlocked();
    assert_eq!(ends.iter().map(|n| n.scope).collect::<Vec<_>>(), [Scope::Account, Scope::Unfamiliar, Scope::Client]);
    for n in &ends {
        assert_eq!((n.how, n.event_id, n.caller.as_deref()), (How::PasswordReset, reset, Some("IDP_ACME/idp")));
    }
    let ids: std::collections::BTreeSet<Uuid> = ends.iter().map(|n| n.id).collect();
    assert_eq!(ids.len(), 3, "each notice has an id of its own");
    let s = u.status(Some(ATTACKER[0]), Some("IT Glue"), Some(Account::Api));
    assert!(s.allowed && s.scope_locks.is_empty() && s.failures == 0 && s.unfamiliar_failures == 0, "{s:?}");
    // A second reset ends nothing more.
    u.password_reset();
    assert_eq!(u.last_effect(), Effect::PasswordReset { ended: 0, kept: false });
    assert_eq!(u.unlocked().len(), 3);
}

/// A password reset never ends an admin lock or a permanent one (but clears the counters of
/// scopes that are not locked); with `unlock_on_password_reset: false` it changes nothing
/// while locked and clears the counters otherwise.
#[test]
fn a_password_reset_keeps_admin_and_permanent_locks() {
    let mut u = User::new(familiar_policy());
    u.fail(ATTACKER[0]);
    u.admin_lock();
    u.password_reset();
    assert_eq!(u.last_effect(), Effect::PasswordReset { ended: 0, kept: true });
    assert!(u.state.lock.is_some() && u.state.unfamiliar.failures() == 0);

    let mut p = User::new(Policy { max_failures: 1, permanent_after: 1, history_seconds: 3600, ..Policy::default() });
    p.fail(HOME);
    p.now += 31 * MIN;
    p.fail(HOME);
    assert!(p.state.lock.as_ref().is_some_and(|l| l.locked_until.is_none()));
    p.password_reset();
    assert_eq!(p.last_effect(), Effect::PasswordReset { ended: 0, kept: true });

    // lock_seconds 0 is not permanent: a password reset ends it.
    let mut z = User::new(Policy { max_failures: 1, lock_seconds: 0, ..Policy::default() });
    z.fail(HOME);
    z.password_reset();
    assert_eq!(z.last_effect(), Effect::PasswordReset { ended: 1, kept: false });

    let mut off = User::new(Policy { unlock_on_password_reset: false, ..Policy::default() });
    off.fail(HOME);
    off.password_reset();
    assert_eq!((off.last_effect(), off.state.failures()), (Effect::PasswordReset { ended: 0, kept: false }, 0));
    for _ in 0..5 {
        off.fail(HOME);
    }
    off.password_reset();
    assert_eq!(off.last_effect(), Effect::PasswordReset { ended: 0, kept: true });
    assert!(off.state.lock.is_some());
}

/// Timed scope locks end exactly like account locks: once, with the same notice id whether
/// the service's `expired` event or any later event ends them.
#[test]
fn a_scope_lock_expires_once_with_the_same_notice_whichever_event_ends_it() {
    let mut a = User::new(familiar_policy());
    for ip in ATTACKER {
        a.fail(ip);
    }
    let lock_event = a.state.unfamiliar.lock.as_ref().unwrap().event_id;
    let until = a.state.unfamiliar.lock.as_ref().unwrap().locked_until.unwrap();
    let mut b = User { notices: Vec::new(), effects: Vec::new(), ..User::new(a.policy) };
    b.state = a.state.clone();
    b.now = a.now;
    b.n = a.n;

    // a: the service's expired event at locked_until.
    a.now = until;
    let expired = Event::Expired(Expired {
        id: expired_event_id(TENANT, USER, lock_event),
        at: until,
        tenant: TENANT.into(),
        user: USER.into(),
        lock_event,
    });
    a.apply(0, expired.clone());
    // At `locked_until` the lock has run out before the event itself applies (as for an
    // account lock: `Why::expired_first`); either way it ends here, once.
    assert!(matches!(a.last_effect(), Effect::Expired { .. }), "{:?}", a.last_effect());
    // b: a later failure ends it first.
    b.now = until + 5 * MIN;
    b.fail(ATTACKER[0]);
    let (na, nb) = (a.unlocked(), b.unlocked());
    assert_eq!((na.len(), nb.len()), (1, 1));
    assert_eq!(na[0], nb[0]);
    assert_eq!(
        (na[0].how, na[0].scope, na[0].at, na[0].event_id),
        (How::Expired, Scope::Unfamiliar, until, lock_event)
    );
    // The late expired event then ends nothing.
    b.apply(SEC, expired);
    assert_eq!((b.last_effect(), b.unlocked().len()), (Effect::Expired { ended: None }, 1));
    assert_eq!(b.state.unfamiliar.failures(), 1, "the counter restarted at 0 when the lock ended");
}

/// An admin unlock ends every lock, each with its notice; with `lock_event` it ends them only
/// when that event started a lock in force.
#[test]
fn an_admin_unlock_ends_every_lock_and_lock_event_guards_it() {
    let mut u = User::new(Policy { familiar_days: 30, api_client_scope: true, ..Policy::default() });
    u.api_ok(HOME, "IT Glue");
    for _ in 0..5 {
        u.api_fail(HOME, "IT Glue");
    }
    let client_lock = u.state.clients[0].counter.lock.as_ref().unwrap().event_id;
    for ip in ATTACKER {
        u.fail(ip);
    }
    let before = u.state.clone();
    u.unlock(Some(Uuid::from_u128(42)));
    assert_eq!((u.last_effect(), &u.state), (Effect::UnlockRefused, &before));
    let unlock = u.unlock(Some(client_lock));
    assert_eq!(u.last_effect(), Effect::Unlocked { was_locked: true });
    let ends = u.unlocked();
    assert_eq!(
        ends.iter().map(|n| (n.scope, n.how, n.event_id)).collect::<Vec<_>>(),
        [(Scope::Unfamiliar, How::Admin, unlock), (Scope::Client, How::Admin, unlock)]
    );
    assert!(!u.state.any_lock());
    u.unlock(Some(client_lock));
    assert_eq!(u.last_effect(), Effect::UnlockRefused, "a stale page cannot unlock again");
}

/// An MFA reset removes second-factor failures from the scope counters too.
#[test]
fn an_mfa_reset_clears_mfa_failures_on_scope_counters() {
    let mut u = User::new(familiar_policy());
    let id = u.next_id();
    u.apply(
        SEC,
        Event::Attempt(Attempt {
            id,
            at: u.now,
            tenant: TENANT.into(),
            user: USER.into(),
            outcome: Outcome::Failure,
            factor: Factor::Mfa,
            source_ip: ATTACKER[0].into(),
            client: None,
            credential: None,
            account: None,
            is_final: true,
        }),
    );
    assert_eq!(u.state.unfamiliar.failures(), 1);
    let id = u.next_id();
    let m = MfaReset {
        id,
        at: u.now,
        tenant: TENANT.into(),
        user: USER.into(),
        actor: "helpdesk".into(),
        reason: None,
        caller: None,
    };
    u.apply(SEC, Event::MfaReset(m));
    assert_eq!((u.last_effect(), u.state.unfamiliar.failures()), (Effect::MfaReset { removed: 1 }, 0));
}

/// A v1 policy never records familiar IPs or known clients: a v1 history folds to the same
/// states as before contract v2.
#[test]
fn a_v1_policy_records_nothing_new() {
    let mut u = User::new(Policy::default());
    u.ok(HOME);
    u.api_ok(HOME, "IT Glue");
    u.api_fail(HOME, "IT Glue");
    assert!(u.state.familiar.is_empty() && u.state.clients.is_empty() && u.state.unfamiliar.is_default());
    assert!(matches!(u.last_effect(), Effect::Counted { counter: Scope::Account, .. }));
}
