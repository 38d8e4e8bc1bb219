//! The fold over any stream of checked events.
//!
//! A [`Script`] is a starting policy and steps for three users of one tenant: attempts from
//! pooled or arbitrary addresses, clients and credentials, bursts of attempts (to reach the
//! bounds of the state in a short input), admin commands, `expired` events
//! (for the current lock, a stale one or a random id), policy changes and clock steps, forwards
//! or backwards (the stored clock of a server that lost acknowledged messages, or was set back).
//! Every event is one `Event::check` would accept; invalid policies are skipped, as the
//! projector dead-letters them. Event ids are unique, as in the stream.
//!
//! After every event the invariants of `crates/lockout-core/tests/properties.rs` that hold for
//! any stream are checked:
//! - (a) the fold is deterministic, and (b) a state round-trips through postcard, as the store
//!   keeps it;
//! - (c) the counter never exceeds `max_failures` while the policy is fixed, and under any
//!   policy a failure that made the counter grow to `max_failures` locked the account; a status
//!   never reports a lock past its `locked_until`, and the fold leaves none behind;
//! - (d) no notice without a state change, except a repeated identical `mfa_reset`;
//! - (e) at most one `unlocked` notice per lock, only for a lock that had a `locked` notice,
//!   and an expiry's notice is the one the service's `expired` event at `locked_until` gives;
//! - (g) notice ids are unique, every notice names its event, tenant and user, and encodes
//!   and decodes in both encodings;
//! - and the state's own shape: each streak source has failures and is distinct, counted
//!   credentials never outnumber the failures of their kind, the bounded lists stay bounded,
//!   attempts while locked neither count nor extend the lock, `lock_count` grows by one per
//!   automatic lock, a lock lasts at least `lock_seconds` and at most the cap, and a `locked`
//!   notice's sources add up to its failures;
//! - the lazy `status` of a state equals the status after folding an event that changes
//!   nothing by itself (due expiries and windows apply at read as at fold).

use std::collections::{BTreeMap, HashSet};
use std::net::{Ipv4Addr, Ipv6Addr};

use arbitrary::Arbitrary;
use lockout_core::fold::fold_policy;
use lockout_core::ids::expired_event_id;
use lockout_core::state::{BLOCKED_SOURCES_MAX, CREDENTIALS_MAX, RECENT_LOCKS_MAX, STREAK_SOURCES_MAX};
use lockout_core::state::{FAMILIAR_MAX, KNOWN_CLIENTS_MAX};
use lockout_core::{fold, status, UserState};
use lockout_core::{status_for, Probe};
use lockout_proto::codec::MAX_PAYLOAD;
use lockout_proto::event::{
    Account, Attempt, Event, Expired, Factor, Lock, MfaReset, Outcome, PasswordReset, PolicyChange, ResetMethod,
    Unlock, ACTOR_MAX, CLIENT_MAX, CREDENTIAL_MAX, REASON_MAX,
};
use lockout_proto::notice::{How, Notice};
use lockout_proto::policy::ResetScope;
use lockout_proto::status::LockReason;
use lockout_proto::status::Scope;
use lockout_proto::subject::EventSubject;
use lockout_proto::{CompactString, Encoding, Millis, Policy, Subjects, Tenant, UserId};
use uuid::Uuid;

/// The latest fold time: JetStream stores times as nanoseconds in an `i64`.
pub const MAX_TIME: Millis = (i64::MAX / 1_000_000) as Millis;

const TENANT: &str = "acme";
const USERS: [&str; 3] = ["alice", "bob", "carol@acme.com"];
const IPS: [&str; 4] = ["203.0.113.7", "198.51.100.2", "192.0.2.44", "2001:db8::1"];
const CLIENTS: [&str; 3] = ["IT Glue", "VSA", "Outlook"];
const CREDENTIALS: [&str; 3] = ["fp-1", "fp-2", "fp-3"];
const T0: Millis = 1_714_953_600_000;
/// Events folded per input at most, so that a run stays fast whatever the input.
const MAX_EVENTS: usize = 1024;
/// Attempts in one burst at most: more than the state's smallest bound (blocked sources).
const BURST_MAX: u16 = 64;

/// A fuzz input: the tenant's policy, where the clock starts, and the steps.
#[derive(Debug, Arbitrary)]
pub struct Script {
    pub policy: ArbPolicy,
    pub start: Start,
    pub steps: Vec<Step>,
}

/// Where the clock starts: near today, or anywhere the stored clock can show.
#[derive(Debug, Clone, Copy, Arbitrary)]
pub enum Start {
    Today,
    At(u64),
}

/// A number that is usually small, so that locks, windows and expiries happen.
#[derive(Debug, Clone, Copy, Arbitrary)]
pub enum Num {
    Small(u8),
    Any(u32),
}

impl Num {
    fn get(self) -> u32 {
        match self {
            Num::Small(n) => u32::from(n % 16),
            Num::Any(n) => n,
        }
    }
}

#[derive(Debug, Clone, Copy, Arbitrary)]
pub struct ArbPolicy {
    pub max_failures: Num,
    pub lock_seconds: Num,
    pub window_seconds: Num,
    pub reset_on_success: bool,
    pub count_mfa_failures: bool,
    pub dedupe_credential: bool,
    pub lock_multiplier: Num,
    pub max_lock_seconds: Option<u64>,
    pub history_seconds: Num,
    pub permanent_after: Num,
    /// Contract v2's source-aware fields; `None`: a v1 policy.
    pub v2: Option<ArbV2>,
}

#[derive(Debug, Clone, Copy, Arbitrary)]
pub struct ArbV2 {
    pub familiar_days: u8,
    pub api_client_scope: bool,
    pub same_ip: bool,
    pub unlock_on_password_reset: bool,
}

impl ArbPolicy {
    fn get(self) -> Policy {
        Policy {
            max_failures: self.max_failures.get(),
            lock_seconds: self.lock_seconds.get(),
            window_seconds: self.window_seconds.get(),
            reset_on_success: self.reset_on_success,
            count_mfa_failures: self.count_mfa_failures,
            dedupe_credential: self.dedupe_credential,
            lock_multiplier: self.lock_multiplier.get(),
            max_lock_seconds: self.max_lock_seconds.unwrap_or(86_400),
            history_seconds: self.history_seconds.get(),
            permanent_after: self.permanent_after.get(),
            ..match self.v2 {
                None => Policy::default(),
                Some(v) => Policy {
                    familiar_days: u32::from(v.familiar_days % 4),
                    api_client_scope: v.api_client_scope,
                    reset_scope: if v.same_ip { ResetScope::SameIp } else { ResetScope::All },
                    unlock_on_password_reset: v.unlock_on_password_reset,
                    ..Policy::default()
                },
            }
        }
    }
}

/// How far the clock moves before a step.
#[derive(Debug, Clone, Copy, Arbitrary)]
pub enum Delta {
    Same,
    Millis(u16),
    Seconds(u8),
    Minutes(u16),
    /// The stored clock going back.
    Back(u32),
}

#[derive(Debug, Arbitrary)]
pub struct Step {
    pub delta: Delta,
    pub op: Op,
}

#[derive(Debug, Arbitrary)]
pub enum Ip {
    Pool(u8),
    V4([u8; 4]),
    V6([u16; 8]),
}

/// A short text from a pool, or any text (cut to the field's limit).
#[derive(Debug, Arbitrary)]
pub enum Text {
    Pool(u8),
    Any(String),
}

impl Text {
    fn get(&self, pool: &[&str], max: usize) -> String {
        match self {
            Text::Pool(i) => pool[usize::from(*i) % pool.len()].to_owned(),
            Text::Any(s) => s.chars().take(max).collect(),
        }
    }
}

#[derive(Debug, Arbitrary)]
pub enum Which {
    /// The user's current timed lock, as the service appends it.
    Current,
    /// The id of some earlier event.
    Stale(u16),
    Random(u128),
}

#[derive(Debug, Arbitrary)]
pub enum Op {
    Attempt {
        user: u8,
        success: bool,
        factor: u8,
        ip: Ip,
        client: Option<Text>,
        credential: Option<Text>,
        account: Option<u8>,
        /// Contract v2: a `rejected` attempt instead.
        rejected: bool,
        /// Contract v2: `final: false`.
        not_final: bool,
    },
    /// Contract v2: a verified password change.
    PasswordReset {
        user: u8,
        actor: Option<Text>,
    },
    Unlock {
        user: u8,
        actor: Text,
        reason: Option<Text>,
    },
    Lock {
        user: u8,
        actor: Text,
        reason: Option<Text>,
        seconds: Option<Num>,
    },
    MfaReset {
        user: u8,
        actor: Text,
    },
    Expire {
        user: u8,
        which: Which,
    },
    SetPolicy(ArbPolicy),
    /// 1 to 64 password attempts at one instant, from one address or each from its own,
    /// each followed by an admin unlock if `unlock_between`: reaches the bounds of the state.
    Burst {
        user: u8,
        count: u8,
        failure: bool,
        distinct: bool,
        unlock_between: bool,
    },
}

/// What the checks remember across the stream.
#[derive(Default)]
struct Seen {
    /// Events that produced a `locked` notice.
    locking: HashSet<Uuid>,
    /// Locks that an `unlocked` notice ended.
    ended: HashSet<Uuid>,
    notice_ids: HashSet<Uuid>,
    /// Whether a policy event has changed the policy.
    policy_changed: bool,
    /// Whether a v2 policy, a `rejected` attempt or a password reset has been folded: from
    /// then on the source-aware invariants ([`check_v2`]) replace the v1 ones.
    v2: bool,
}

fn user_of(i: u8) -> &'static str {
    USERS[usize::from(i) % USERS.len()]
}

/// The authenticated caller of an admin event: the first pooled actor has one, others none.
fn caller(t: &Text) -> Option<CompactString> {
    (actor(t) == "admin-0").then(|| "ADMIN_ACME/admin_acme_0".into())
}

fn actor(t: &Text) -> String {
    let a = t.get(&["admin-0", "admin-1"], ACTOR_MAX);
    if a.is_empty() {
        "admin".to_owned()
    } else {
        a
    }
}

fn event_id(i: usize) -> Uuid {
    Uuid::from_u128(0x0190_0000_0000_7000_8000_0000_0000_0000 | (i as u128 + 1))
}

/// The projector's view of one tenant while a script folds.
struct Stream {
    policy: Policy,
    users: BTreeMap<&'static str, UserState>,
    seen: Seen,
    /// Events built so far; the next event's id is `event_id(seq)`.
    seq: usize,
}

/// Folds the script, checking every invariant after every event.
pub fn check(script: &Script) {
    let mut policy = script.policy.get();
    policy.lock_multiplier = policy.lock_multiplier.max(1);
    let mut stream = Stream { policy, users: BTreeMap::new(), seen: Seen::default(), seq: 0 };
    let mut time = match script.start {
        Start::Today => T0,
        Start::At(t) => t % (MAX_TIME + 1),
    };
    for step in &script.steps {
        if stream.seq >= MAX_EVENTS {
            break;
        }
        time = match step.delta {
            Delta::Same => time,
            Delta::Millis(ms) => time + Millis::from(ms),
            Delta::Seconds(s) => time + Millis::from(s) * 1000,
            Delta::Minutes(m) => time + Millis::from(m) * 60_000,
            Delta::Back(ms) => time.saturating_sub(Millis::from(ms)),
        }
        .min(MAX_TIME);
        if let Op::Burst { user, count, failure, distinct, unlock_between } = step.op {
            for k in 0..=u16::from(count) % BURST_MAX {
                let ip = if distinct { Ipv4Addr::from(0x0a00_0000 | u32::from(k)) } else { Ipv4Addr::new(10, 0, 0, 1) };
                let attempt = Event::Attempt(Attempt {
                    id: event_id(stream.seq),
                    at: time,
                    tenant: TENANT.into(),
                    user: user_of(user).into(),
                    outcome: if failure { Outcome::Failure } else { Outcome::Success },
                    factor: Factor::Password,
                    source_ip: ip.to_string().into(),
                    client: None,
                    credential: None,
                    account: None,
                    is_final: true,
                });
                stream.apply(attempt, time);
                if unlock_between {
                    let unlock = Op::Unlock { user, actor: Text::Pool(0), reason: None };
                    let event = materialize(stream.seq, time, &unlock, &stream.users).expect("an unlock");
                    stream.apply(event, time);
                }
            }
        } else if let Some(event) = materialize(stream.seq, time, &step.op, &stream.users) {
            stream.apply(event, time);
        }
    }
}

impl Stream {
    /// Folds one event at `time` as the projector would, and checks the result.
    fn apply(&mut self, event: Event, time: Millis) {
        self.seq += 1;
        // Only events the projector folds: checked against their own subject.
        let subjects = Subjects::default();
        let tenant = Tenant::parse(TENANT).expect("valid tenant");
        let subject = match event.user() {
            Some(user) => subjects.user_event(&tenant, &UserId::parse(user).expect("valid user"), event.kind()),
            None => subjects.tenant_event(&tenant, event.kind()),
        };
        let subject: EventSubject = subjects.parse_event(&subject).expect("built subjects parse");
        if event.check(&subject).is_err() {
            assert!(matches!(event, Event::Policy(_)), "the script built an invalid event: {event:?}");
            return;
        }

        let Some(user) = event.user() else {
            let Event::Policy(change) = &event else { unreachable!("only policy events are tenant events") };
            // A policy event never touches a user state by itself.
            for state in self.users.values() {
                let folded = fold(&self.policy, state.clone(), &event, time);
                assert_eq!(&folded.state, state);
                assert!(folded.notices.is_empty());
            }
            let next = fold_policy(&self.policy, change);
            self.seen.policy_changed |= next != self.policy;
            self.policy = next;
            return;
        };
        let user = USERS.into_iter().find(|u| *u == user).expect("a scripted user");
        let before = self.users.remove(user).unwrap_or_default();
        let folded = fold(&self.policy, before.clone(), &event, time);
        assert_eq!(fold(&self.policy, before.clone(), &event, time), folded, "(a) the fold is not deterministic");
        self.seen.v2 |= self.policy != self.policy_v1()
            || matches!(&event, Event::PasswordReset(_))
            || matches!(&event, Event::Attempt(a) if a.outcome == Outcome::Rejected);
        if self.seen.v2 {
            check_v2(&self.policy, &before, &folded, &event, time, &mut self.seen);
        } else {
            check_step(&self.policy, &before, &folded.state, &folded.notices, &event, time, &mut self.seen);
        }
        self.users.insert(user, folded.state);
    }
}

/// Builds the event of one step, `None` when there is nothing to build.
fn materialize(i: usize, at: Millis, op: &Op, users: &BTreeMap<&'static str, UserState>) -> Option<Event> {
    let id = event_id(i);
    let tenant = TENANT.to_owned();
    Some(match op {
        Op::Attempt { user, success, factor, ip, client, credential, account, rejected, not_final } => {
            Event::Attempt(Attempt {
                id,
                at,
                tenant: tenant.into(),
                user: user_of(*user).into(),
                outcome: match (rejected, success) {
                    (true, _) => Outcome::Rejected,
                    (false, true) => Outcome::Success,
                    (false, false) => Outcome::Failure,
                },
                is_final: !*not_final,
                factor: [Factor::Password, Factor::Mfa, Factor::RecoveryCode][usize::from(*factor) % 3],
                source_ip: match ip {
                    Ip::Pool(i) => IPS[usize::from(*i) % IPS.len()].into(),
                    Ip::V4(o) => Ipv4Addr::from(*o).to_string().into(),
                    Ip::V6(s) => Ipv6Addr::from(*s).to_string().into(),
                },
                client: client.as_ref().map(|c| c.get(&CLIENTS, CLIENT_MAX).into()),
                credential: credential.as_ref().map(|c| c.get(&CREDENTIALS, CREDENTIAL_MAX).into()),
                account: account.map(|a| [Account::User, Account::Api, Account::Portal][usize::from(a) % 3]),
            })
        }
        Op::Unlock { user, actor: a, reason } => Event::Unlock(Unlock {
            id,
            at,
            tenant: tenant.into(),
            user: user_of(*user).into(),
            actor: actor(a).into(),
            reason: reason.as_ref().map(|r| r.get(&["called the help desk"], REASON_MAX).into()),
            caller: caller(a),
            lock_event: None,
        }),
        Op::PasswordReset { user, actor: a } => Event::PasswordReset(PasswordReset {
            id,
            at,
            tenant: tenant.into(),
            user: user_of(*user).into(),
            method: if a.is_some() { ResetMethod::Admin } else { ResetMethod::SelfService },
            actor: a.as_ref().map(|a| actor(a).into()),
            caller: None,
        }),
        Op::Lock { user, actor: a, reason, seconds } => Event::Lock(Lock {
            id,
            at,
            tenant: tenant.into(),
            user: user_of(*user).into(),
            actor: actor(a).into(),
            reason: reason.as_ref().map(|r| r.get(&["offboarding"], REASON_MAX).into()),
            seconds: seconds.map(|s| s.get().max(1)),
            caller: caller(a),
        }),
        Op::MfaReset { user, actor: a } => Event::MfaReset(MfaReset {
            id,
            at,
            tenant: tenant.into(),
            user: user_of(*user).into(),
            actor: actor(a).into(),
            reason: None,
            caller: caller(a),
        }),
        Op::Expire { user, which } => {
            let user = user_of(*user);
            let current = users.get(user).and_then(|s| s.lock.as_ref()).filter(|l| l.locked_until.is_some());
            let lock_event = match (which, current) {
                (Which::Current, Some(lock)) => lock.event_id,
                (Which::Current, None) => return None,
                (Which::Stale(n), _) if i > 0 => event_id(usize::from(*n) % i),
                (Which::Stale(_), _) => return None,
                (Which::Random(n), _) => Uuid::from_u128(*n),
            };
            let id = if matches!(which, Which::Current) { expired_event_id(&tenant, user, lock_event) } else { id };
            Event::Expired(Expired { id, at, tenant: tenant.into(), user: user.into(), lock_event })
        }
        Op::SetPolicy(p) => Event::Policy(PolicyChange {
            id,
            at,
            tenant: tenant.into(),
            actor: "admin".into(),
            policy: p.get(),
            caller: None,
        }),
        Op::Burst { .. } => unreachable!("bursts are expanded by `check`"),
    })
}

impl Stream {
    /// The policy with contract v2's fields at their defaults.
    fn policy_v1(&self) -> Policy {
        let d = Policy::default();
        Policy {
            familiar_days: d.familiar_days,
            api_client_scope: d.api_client_scope,
            reset_scope: d.reset_scope,
            unlock_on_password_reset: d.unlock_on_password_reset,
            ..self.policy
        }
    }
}

/// The invariants of source-aware locks (contract v2) for one folded user event: the state
/// round trip and bounds, notice ids and round trips, a `rejected` attempt changing nothing,
/// `status` for the attempt's source agreeing with what the fold did, and every `unlocked`
/// notice ending a lock of its scope that was in force.
fn check_v2(
    policy: &Policy,
    before: &UserState,
    folded: &lockout_core::Folded,
    event: &Event,
    now: Millis,
    seen: &mut Seen,
) {
    let after = &folded.state;
    let bytes = postcard::to_allocvec(after).expect("states encode");
    // Plain postcard leaves out the locks' tripping IPs; the store's codec keeps them
    // (round-tripped by crates/lockout-store/tests/state_codec.rs).
    let plain = after.clone().without_trips();
    assert_eq!(postcard::from_bytes::<UserState>(&bytes).expect("states decode"), plain, "(b) state round trip");
    assert!(after.familiar.len() <= FAMILIAR_MAX && after.clients.len() <= KNOWN_CLIENTS_MAX, "unbounded: {after:?}");
    for counter in std::iter::once(&after.unfamiliar).chain(after.clients.iter().map(|c| &c.counter)) {
        assert!(counter.streak.len() <= STREAK_SOURCES_MAX);
        if let Some(until) = counter.lock.as_ref().and_then(|l| l.locked_until) {
            assert!(until > now, "a scope lock that ended at {until} is still in force at {now}");
        }
    }
    for n in &folded.notices {
        assert!(seen.notice_ids.insert(n.id()), "(g) notice id {} twice", n.id());
        for enc in [Encoding::Json, Encoding::PostcardV2] {
            let bytes = n.encode(enc);
            if bytes.len() <= MAX_PAYLOAD {
                assert_eq!(Notice::decode(n.kind(), enc, &bytes).as_ref(), Ok(n), "(g) notice round trip");
            }
        }
        if let Notice::Unlocked(u) = n {
            let in_force = match u.scope {
                Scope::Account => before.lock.is_some(),
                Scope::Unfamiliar => before.unfamiliar.lock.is_some(),
                Scope::Client => {
                    before.clients.iter().any(|c| Some(&c.client) == u.client.as_ref() && c.counter.lock.is_some())
                }
            };
            assert!(in_force, "(e) {u:?} ended no lock in force");
        }
    }
    let Event::Attempt(a) = event else { return };
    if a.outcome == Outcome::Rejected {
        assert_eq!((before, folded.notices.len()), (after, 0), "a rejected attempt changed something");
        return;
    }
    let probe = Probe { ip: Some(&a.source_ip), client: a.client.as_deref(), account: a.account, ip_blocked: false };
    let s = status_for(TENANT, &a.user, policy, before, now, &probe);
    let blocked = matches!(folded.why.effect, lockout_core::Effect::Blocked { .. });
    assert_eq!(s.allowed, !blocked, "status {s:?} disagrees with the fold's {:?}", folded.why.effect);
}

/// Every invariant of one folded user event.
fn check_step(
    policy: &Policy,
    before: &UserState,
    after: &UserState,
    notices: &[Notice],
    event: &Event,
    now: Millis,
    seen: &mut Seen,
) {
    let user = event.user().expect("a user event");

    // (b) States survive serialization.
    let bytes = postcard::to_allocvec(after).expect("states encode");
    // Plain postcard leaves out the locks' tripping IPs; the store's codec keeps them
    // (round-tripped by crates/lockout-store/tests/state_codec.rs).
    let plain = after.clone().without_trips();
    assert_eq!(postcard::from_bytes::<UserState>(&bytes).expect("states decode"), plain, "(b) state round trip");

    check_shape(after);

    // (c) The counter.
    let max = policy.max_failures;
    if max > 0 && !seen.policy_changed {
        assert!(after.failures() <= max, "(c) counter {} > max_failures {max}", after.failures());
    }
    if max > 0 && after.lock.is_none() && after.failures() >= max {
        assert!(after.failures() <= before.failures(), "(c) the counter grew to {} without a lock", after.failures());
    }
    if let Some(until) = after.lock.as_ref().and_then(|l| l.locked_until) {
        assert!(until > now, "(c) the fold left a lock that ended at {until}, at {now}");
    }
    let s = status(TENANT, user, policy, after, now);
    assert!(!s.locked || s.locked_until.is_none_or(|u| u > now), "(c) status shows a lock past its end");
    if max > 0 && !seen.policy_changed {
        assert!(s.failures <= max, "(c) status counter {} > {max}", s.failures);
    }

    // `status` applies due expiries and windows at read: an event that changes nothing by
    // itself (an `expired` naming another lock) shows what the lazy view showed before it.
    if let Event::Expired(x) = event {
        if before.lock.as_ref().is_none_or(|l| l.event_id != x.lock_event || l.locked_until.is_none()) {
            assert_eq!(status(TENANT, user, policy, before, now), s, "the lazy status differs from the folded one");
        }
    }

    // While locked (and not ended by this event's time), an attempt neither counts nor
    // extends the lock.
    let still_locked = before.lock.as_ref().filter(|l| l.locked_until.is_none_or(|u| u > now));
    if let (Some(lock), Event::Attempt(_)) = (still_locked, event) {
        let now_lock = after.lock.as_ref().expect("an attempt never unlocks");
        assert_eq!((now_lock.event_id, now_lock.locked_until), (lock.event_id, lock.locked_until));
        assert_eq!(after.failures(), before.failures(), "an attempt while locked changed the counter");
        assert_eq!(now_lock.blocked, lock.blocked.saturating_add(1));
        assert!(notices.is_empty());
    }

    // lock_count grows by one per automatic lock.
    let auto_locks = notices.iter().filter(|n| matches!(n, Notice::Locked(l) if l.reason == LockReason::Failures));
    assert_eq!(after.lock_count, before.lock_count.saturating_add(auto_locks.count() as u32));

    // (d) No notice without a state change, but a repeated identical `mfa_reset`.
    if !notices.is_empty() && before == after {
        let Event::MfaReset(m) = event else {
            panic!("(d) {event:?} at {now} gave {notices:?} without a state change")
        };
        assert_eq!(notices.len(), 1);
        assert_eq!(
            (after.mfa_reset_at, after.mfa_reset_by.as_deref(), after.mfa_reenrol),
            (Some(now), Some(m.actor.as_str()), true)
        );
    }

    check_notices(policy, before, after, notices, event, now, seen);
}

/// The state's own shape, whatever the stream.
fn check_shape(s: &UserState) {
    let mut sources = HashSet::new();
    for src in &s.streak {
        assert!(src.total() > 0, "a streak source without failures: {src:?}");
        assert!(sources.insert((&src.ip, &src.client)), "a streak source twice: {src:?}");
    }
    let mut fingerprints = HashSet::new();
    for c in &s.credentials {
        assert!(fingerprints.insert(&c.fingerprint), "a credential twice: {c:?}");
    }
    let (mfa_creds, password_creds) =
        s.credentials.iter().fold((0u64, 0u64), |(m, p), c| (m + u64::from(c.mfa), p + u64::from(!c.mfa)));
    assert!(s.streak.len() <= STREAK_SOURCES_MAX && s.credentials.len() <= CREDENTIALS_MAX, "unbounded: {s:?}");
    let mfa: u64 = s.streak.iter().map(|x| u64::from(x.mfa)).sum::<u64>() + u64::from(s.unlisted.mfa);
    let password: u64 = s.streak.iter().map(|x| u64::from(x.password)).sum::<u64>() + u64::from(s.unlisted.password);
    assert!(mfa_creds <= mfa && password_creds <= password, "more counted credentials than failures: {s:?}");
    assert!(s.recent_locks.len() <= RECENT_LOCKS_MAX);
    assert!(s.recent_locks.windows(2).all(|w| w[0] <= w[1]), "recent locks out of order: {:?}", s.recent_locks);
    if let Some(lock) = &s.lock {
        assert!(lock.locked_until.is_none_or(|u| u >= lock.locked_at));
        assert!(lock.blocked_sources.len() <= BLOCKED_SOURCES_MAX);
        let mut blocked = HashSet::new();
        for b in &lock.blocked_sources {
            assert!(
                b.attempts > 0 && blocked.insert((&b.ip, &b.client)),
                "blocked sources: {:?}",
                lock.blocked_sources
            );
        }
        let listed: u64 = lock.blocked_sources.iter().map(|b| u64::from(b.attempts)).sum();
        assert!(listed <= u64::from(lock.blocked), "blocked {} < listed {listed}", lock.blocked);
    }
}

/// (e) and (g): the notices of one event.
fn check_notices(
    policy: &Policy,
    before: &UserState,
    after: &UserState,
    notices: &[Notice],
    event: &Event,
    now: Millis,
    seen: &mut Seen,
) {
    let user = event.user().expect("a user event");
    let unlocks = notices.iter().filter(|n| matches!(n, Notice::Unlocked(_))).count();
    assert!(unlocks <= 1 && notices.len() <= 2, "{notices:?}");
    for n in notices {
        assert!(seen.notice_ids.insert(n.id()), "(g) notice id {} twice", n.id());
        assert_eq!(n.tenant(), TENANT);
        for enc in [Encoding::Json, Encoding::PostcardV2] {
            let bytes = n.encode(enc);
            if bytes.len() <= MAX_PAYLOAD {
                assert_eq!(Notice::decode(n.kind(), enc, &bytes).as_ref(), Ok(n), "(g) notice round trip");
            }
        }
        match n {
            Notice::Locked(l) => {
                assert_eq!((l.event_id, l.user.as_str(), l.at), (event.id(), user, now));
                let lock = after.lock.as_ref().expect("locked notice without a lock");
                assert_eq!((lock.event_id, lock.locked_until, lock.reason), (event.id(), l.locked_until, l.reason));
                assert_eq!(l.locked_until, l.lock_seconds.map(|s| now.saturating_add(s.saturating_mul(1000))));
                assert!(l.sources.windows(2).all(|w| w[0].failures >= w[1].failures), "sources not ranked");
                // `failures` = the listed sources' plus those from sources beyond the 64 listed
                // (schemas/README.md): they add up exactly. postmortem: this check required the
                // listed ones alone to add up, which fails from the 65th source on; CI's smoke
                // run found it (fuzz/regressions/fold/).
                let unlisted = u64::from(after.unlisted.password) + u64::from(after.unlisted.mfa);
                assert!(l.sources.len() <= STREAK_SOURCES_MAX, "{} sources listed", l.sources.len());
                assert_eq!(
                    l.sources.iter().map(|x| u64::from(x.failures)).sum::<u64>() + unlisted,
                    u64::from(l.failures)
                );
                assert_eq!((l.failures, &l.sources), (after.failures(), &after.ranked_sources()));
                match l.reason {
                    LockReason::Failures => {
                        assert!(l.failures >= policy.max_failures && policy.max_failures > 0);
                        if let Some(secs) = l.lock_seconds {
                            let base = u64::from(policy.lock_seconds);
                            assert!(secs >= base && secs <= policy.max_lock_seconds.max(base), "lock of {secs}s");
                        }
                    }
                    LockReason::Admin => {
                        let Event::Lock(cmd) = event else { panic!("admin lock by {event:?}") };
                        assert_eq!(l.lock_seconds, cmd.seconds.map(u64::from));
                    }
                }
                seen.locking.insert(l.event_id);
            }
            Notice::Unlocked(u) => {
                let lock = before.lock.as_ref().expect("(e) unlocked notice for an unlocked user");
                assert!(seen.locking.contains(&lock.event_id), "(e) the ended lock had no locked notice");
                assert!(
                    seen.ended.insert(lock.event_id),
                    "(e) second unlocked notice for the lock of {}",
                    lock.event_id
                );
                assert_eq!(u.user, user);
                match u.how {
                    How::Expired => {
                        let until = lock.locked_until.expect("(e) an untimed lock expired");
                        assert_eq!((u.event_id, u.at, u.actor.as_deref()), (lock.event_id, until, None));
                        // The same notice as the service's `expired` event folded at locked_until.
                        let service = Event::Expired(Expired {
                            id: expired_event_id(TENANT, user, lock.event_id),
                            at: until,
                            tenant: TENANT.into(),
                            user: user.into(),
                            lock_event: lock.event_id,
                        });
                        let by_service = fold(policy, before.clone(), &service, until).notices;
                        assert_eq!(by_service.first(), Some(n), "(e) expiry notice differs from the service's");
                    }
                    How::Admin => {
                        assert!(matches!(event, Event::Unlock(_)));
                        assert_eq!((u.event_id, u.at), (event.id(), now));
                    }
                    How::PasswordReset => panic!("a password reset in a v1 stream: {u:?}"),
                }
            }
            Notice::MfaReset(m) => {
                assert!(matches!(event, Event::MfaReset(_)));
                assert_eq!((m.event_id, m.user.as_str(), m.at), (event.id(), user, now));
            }
            Notice::IpBlocked(_) | Notice::IpUnblocked(_) => panic!("the user fold made an IP notice: {n:?}"),
        }
    }
}
