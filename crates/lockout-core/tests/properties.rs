//! Property tests of the fold over random event streams.
//!
//! Streams mix a few users, ips, clients, credentials and factors, with non-decreasing fold
//! times and (where the property allows) tenant policy changes. The properties follow
//! `docs/protocol.md`, sections "Lockout semantics" and "Notices".

use std::collections::{BTreeMap, BTreeSet, HashMap};

use lockout_core::fold::fold_policy;
use lockout_core::ids::{expired_event_id, forget_event_id};
use lockout_core::{fold, status, UserState, EXPIRED_EARLY_ALLOWANCE_MS};
use lockout_proto::event::{Attempt, Event, Expired, Factor, Forget, Lock, MfaReset, Outcome, PolicyChange, Unlock};
use lockout_proto::notice::{How, Notice};
use lockout_proto::status::LockReason;
use lockout_proto::{CompactString, Millis, Policy};
use proptest::prelude::*;
use uuid::Uuid;

const TENANT: &str = "acme";
const T0: Millis = 1_714_953_600_000;
const USERS: [&str; 3] = ["alice", "bob", "carol@acme.com"];
const IPS: [&str; 4] = ["203.0.113.7", "198.51.100.2", "192.0.2.44", "2001:db8::1"];
const CLIENTS: [Option<&str>; 4] = [None, Some("IT Glue"), Some("VSA"), Some("Outlook")];
const CREDENTIALS: [Option<&str>; 4] = [None, Some("fp-1"), Some("fp-2"), Some("fp-3")];
const FACTORS: [Factor; 3] = [Factor::Password, Factor::Mfa, Factor::RecoveryCode];

// ---------------------------------------------------------------------------------------
// Strategies
// ---------------------------------------------------------------------------------------

/// Policies within sane ranges: small numbers so that locks, windows, progression and
/// history all happen within a stream.
fn policy() -> impl Strategy<Value = Policy> {
    (
        (0u32..=6, lock_seconds(), window_seconds()),
        (any::<bool>(), any::<bool>(), any::<bool>()),
        (1u32..=3, 0u64..=3600, 0u32..=7200, 0u32..=3),
    )
        .prop_map(
            |(
                (max_failures, lock_seconds, window_seconds),
                (reset_on_success, count_mfa_failures, dedupe_credential),
                (lock_multiplier, max_lock_seconds, history_seconds, permanent_after),
            )| Policy {
                max_failures,
                lock_seconds,
                window_seconds,
                reset_on_success,
                count_mfa_failures,
                dedupe_credential,
                lock_multiplier,
                max_lock_seconds,
                history_seconds,
                permanent_after,
                // v1 policies: `tests/scopes.rs` covers the fields contract v2 added.
                ..Policy::default()
            },
        )
}

/// `lock_seconds`: 0 (until unlocked) or a length, often a few seconds.
fn lock_seconds() -> impl Strategy<Value = u32> {
    prop_oneof![Just(0u32), 1u32..=10, 1u32..=600]
}

/// `window_seconds`: 0 (no expiry) or a length, often a few seconds.
fn window_seconds() -> impl Strategy<Value = u32> {
    prop_oneof![Just(0u32), 1u32..=10, 1u32..=300]
}

/// Time between two events: often simultaneous, often (whole) seconds, sometimes many minutes.
fn delta() -> impl Strategy<Value = Millis> {
    prop_oneof![
        2 => Just(0u64),
        // whole seconds, so that windows and lock lengths are hit exactly
        3 => (1u64..=10).prop_map(|s| s * 1000),
        3 => (1u64..=600).prop_map(|s| s * 1000),
        3 => 1u64..=2_000,
        4 => 1_000u64..=120_000,
        2 => 60_000u64..=900_000,
        1 => 900_000u64..=7_200_000,
    ]
}

/// An abstract operation; `Expire` is resolved against the state when the stream is built.
#[derive(Debug, Clone)]
enum Op {
    Attempt {
        user: usize,
        success: bool,
        ip: usize,
        client: usize,
        factor: usize,
        credential: usize,
    },
    Unlock {
        user: usize,
        actor: usize,
    },
    Lock {
        user: usize,
        seconds: Option<u32>,
    },
    MfaReset {
        user: usize,
        actor: usize,
    },
    /// The service's `expired` for the user's current timed lock, or (none) a stale one.
    Expire {
        user: usize,
        stale: usize,
    },
    /// The service's `forget` naming the user's last activity as it is now, or `earlier` ms
    /// before it (a state that changed after the sweep found it idle).
    Forget {
        user: usize,
        earlier: u64,
    },
    SetPolicy(Policy),
}

fn op(with_policy_changes: bool) -> BoxedStrategy<Op> {
    let u = 0..USERS.len();
    let attempt =
        (u.clone(), prop::bool::weighted(0.3), 0..IPS.len(), 0..CLIENTS.len(), 0..FACTORS.len(), 0..CREDENTIALS.len())
            .prop_map(|(user, success, ip, client, factor, credential)| Op::Attempt {
                user,
                success,
                ip,
                client,
                factor,
                credential,
            });
    let user_ops = prop_oneof![
        20 => attempt,
        2 => (u.clone(), 0..2usize).prop_map(|(user, actor)| Op::Unlock { user, actor }),
        1 => (u.clone(), prop::option::of(1u32..=900)).prop_map(|(user, seconds)| Op::Lock { user, seconds }),
        1 => (u.clone(), 0..2usize).prop_map(|(user, actor)| Op::MfaReset { user, actor }),
        3 => (u.clone(), any::<usize>()).prop_map(|(user, stale)| Op::Expire { user, stale }),
        1 => (u, prop_oneof![Just(0u64), 1u64..100_000]).prop_map(|(user, earlier)| Op::Forget { user, earlier }),
    ];
    if with_policy_changes {
        prop_oneof![27 => user_ops, 1 => policy().prop_map(Op::SetPolicy)].boxed()
    } else {
        user_ops.boxed()
    }
}

/// A stream: a starting policy and (delta, op) steps.
fn script(with_policy_changes: bool) -> impl Strategy<Value = (Policy, Vec<(Millis, Op)>)> {
    (policy(), prop::collection::vec((delta(), op(with_policy_changes)), 1..160))
}

// ---------------------------------------------------------------------------------------
// Building and folding streams
// ---------------------------------------------------------------------------------------

/// The stored state of a projector: the tenant's policy and every user's state.
#[derive(Debug, Clone, PartialEq, Eq)]
struct World {
    policy: Policy,
    users: BTreeMap<String, UserState>,
}

impl World {
    fn new(policy: Policy) -> World {
        World { policy, users: BTreeMap::new() }
    }

    /// Folds one event at `time`, returning (state before, state after, notices) for user
    /// events, and applying `fold_policy` for tenant events.
    fn apply(&mut self, event: &Event, time: Millis) -> (UserState, UserState, Vec<Notice>) {
        let Event::Policy(change) = event else {
            let user = event.user().expect("user event").to_owned();
            let before = self.users.remove(&user).unwrap_or_default();
            let folded = fold(&self.policy, before.clone(), event, time);
            self.users.insert(user, folded.state.clone());
            return (before, folded.state, folded.notices);
        };
        self.policy = fold_policy(&self.policy, change);
        (UserState::default(), UserState::default(), Vec::new())
    }

    /// The postcard bytes a projector would persist.
    fn encode(&self) -> Vec<u8> {
        postcard::to_allocvec(&(&self.policy, &self.users)).expect("state encodes")
    }

    fn decode(bytes: &[u8]) -> World {
        let (policy, users): (Policy, BTreeMap<String, UserState>) =
            postcard::from_bytes(bytes).expect("state decodes");
        World { policy, users }
    }
}

/// The authenticated caller of an admin event: some have one, some (v1 deployments) none.
fn caller(n: usize) -> Option<CompactString> {
    (n % 2 == 0).then(|| format!("ADMIN_ACME/admin-{n}").into())
}

fn event_id(i: usize) -> Uuid {
    Uuid::from_u128(0x0190_0000_0000_7000_8000_0000_0000_0000 | (i as u128 + 1))
}

/// Turns abstract steps into concrete (fold time, event) pairs with unique ids and
/// non-decreasing times. `Expire` names the user's current timed lock (as the service would)
/// when there is one, else a random earlier event (a stale `expired`).
fn materialize(policy: Policy, steps: &[(Millis, Op)]) -> Vec<(Millis, Event)> {
    let mut world = World::new(policy);
    let mut time = T0;
    let mut out: Vec<(Millis, Event)> = Vec::with_capacity(steps.len());
    for (i, (delta, op)) in steps.iter().enumerate() {
        time += delta;
        let id = event_id(i);
        let (tenant, at) = (CompactString::from(TENANT), time);
        let user = |u: usize| CompactString::from(USERS[u]);
        let event = match op {
            Op::Attempt { user: u, success, ip, client, factor, credential } => Event::Attempt(Attempt {
                id,
                at,
                tenant,
                user: user(*u),
                outcome: if *success { Outcome::Success } else { Outcome::Failure },
                factor: FACTORS[*factor],
                source_ip: IPS[*ip].into(),
                client: CLIENTS[*client].map(Into::into),
                credential: CREDENTIALS[*credential].map(Into::into),
                account: None,
                is_final: true,
            }),
            Op::Unlock { user: u, actor } => Event::Unlock(Unlock {
                id,
                at,
                tenant,
                user: user(*u),
                actor: format!("admin-{actor}").into(),
                reason: None,
                caller: caller(*actor),
                lock_event: None,
            }),
            Op::Lock { user: u, seconds } => Event::Lock(Lock {
                id,
                at,
                tenant,
                user: user(*u),
                actor: "sec".into(),
                reason: Some("test".into()),
                seconds: *seconds,
                caller: caller(i),
            }),
            Op::MfaReset { user: u, actor } => Event::MfaReset(MfaReset {
                id,
                at,
                tenant,
                user: user(*u),
                actor: format!("admin-{actor}").into(),
                reason: None,
                caller: caller(*actor),
            }),
            Op::Expire { user: u, stale } => {
                let current =
                    world.users.get(USERS[*u]).and_then(|s| s.lock.as_ref()).filter(|l| l.locked_until.is_some());
                let lock_event = match current {
                    Some(l) => l.event_id,
                    None if i > 0 => event_id(stale % i),
                    None => Uuid::from_u128(7),
                };
                Event::Expired(Expired { id, at, tenant, user: user(*u), lock_event })
            }
            Op::Forget { user: u, earlier } => {
                let last = world.users.get(USERS[*u]).and_then(UserState::last_activity).unwrap_or(0);
                let last_activity = last.saturating_sub(*earlier);
                let id = forget_event_id(TENANT, USERS[*u], last_activity);
                Event::Forget(Forget { id, at, tenant, user: user(*u), last_activity })
            }
            Op::SetPolicy(p) => {
                Event::Policy(PolicyChange { id, at, tenant, actor: "admin".into(), policy: *p, caller: caller(i) })
            }
        };
        world.apply(&event, time);
        out.push((time, event));
    }
    out
}

/// Folds a whole stream; returns the world and every notice in order.
fn fold_all(policy: Policy, events: &[(Millis, Event)]) -> (World, Vec<Notice>) {
    let mut world = World::new(policy);
    let mut notices = Vec::new();
    for (time, event) in events {
        notices.extend(world.apply(event, *time).2);
    }
    (world, notices)
}

fn notice_event_id(n: &Notice) -> Uuid {
    n.event_id()
}

fn config() -> ProptestConfig {
    ProptestConfig { cases: 256, ..ProptestConfig::default() }
}

// ---------------------------------------------------------------------------------------
// Properties
// ---------------------------------------------------------------------------------------

proptest! {
    #![proptest_config(config())]

    /// (a) `docs/protocol.md`: "Same events in the same order always give the same state."
    #[test]
    fn a_same_events_give_identical_state_bytes((policy, steps) in script(true)) {
        let events = materialize(policy, &steps);
        let (w1, n1) = fold_all(policy, &events);
        let (w2, n2) = fold_all(policy, &events);
        prop_assert_eq!(w1.encode(), w2.encode());
        for (user, state) in &w1.users {
            prop_assert_eq!(
                postcard::to_allocvec(state).expect("encodes"),
                postcard::to_allocvec(&w2.users[user]).expect("encodes")
            );
        }
        prop_assert_eq!(n1, n2);
    }

    /// (b) Folding all at once equals folding in chunks with the state persisted (postcard)
    /// and reloaded between chunks — a projector restart.
    #[test]
    fn b_chunks_with_restarts_equal_one_pass(
        (policy, steps) in script(true),
        cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..6),
    ) {
        let events = materialize(policy, &steps);
        let (whole, all_notices) = fold_all(policy, &events);

        let mut cut_at: Vec<usize> = cuts.iter().map(|c| c.index(events.len() + 1)).collect();
        cut_at.push(events.len());
        cut_at.sort_unstable();
        let mut bytes = World::new(policy).encode();
        let mut notices = Vec::new();
        let mut from = 0;
        for to in cut_at {
            let mut world = World::decode(&bytes);
            for (time, event) in &events[from..to] {
                notices.extend(world.apply(event, *time).2);
            }
            bytes = world.encode();
            from = to;
        }
        prop_assert_eq!(&bytes, &whole.encode());
        // Plain postcard leaves out the locks' tripping IPs (the store's codec keeps them).
        let mut whole = whole;
        for s in whole.users.values_mut() {
            *s = std::mem::take(s).without_trips();
        }
        prop_assert_eq!(World::decode(&bytes), whole);
        prop_assert_eq!(notices, all_notices);
    }

    /// (c) With a fixed policy, the counter never exceeds `max_failures` (when it is > 0).
    #[test]
    fn c_counter_never_exceeds_max_failures((policy, steps) in script(false)) {
        prop_assume!(policy.max_failures > 0);
        let events = materialize(policy, &steps);
        let mut world = World::new(policy);
        for (time, event) in &events {
            let (_, after, _) = world.apply(event, *time);
            prop_assert!(after.failures() <= policy.max_failures, "counter {} > max {}", after.failures(), policy.max_failures);
            let user = event.user().expect("no policy events");
            let s = status(TENANT, user, &policy, &after, *time);
            prop_assert!(s.failures <= policy.max_failures);
            // and a status never reports a lock past its locked_until
            prop_assert!(!s.locked || s.locked_until.is_none_or(|u| u > *time));
        }
    }

    /// (d) No notice without a state change. The one exception is a repeated `mfa_reset`: a
    /// command whose notice acknowledges the reset even when the state already recorded an
    /// identical one (same instant, same actor); then the state must show exactly that reset.
    #[test]
    fn d_no_notice_without_a_state_change((policy, steps) in script(true)) {
        let events = materialize(policy, &steps);
        let mut world = World::new(policy);
        for (time, event) in &events {
            let (before, after, notices) = world.apply(event, *time);
            if notices.is_empty() || before != after {
                continue;
            }
            let Event::MfaReset(m) = event else {
                return Err(TestCaseError::fail(format!("{event:?} at {time} gave {notices:?} without changing the state")));
            };
            prop_assert_eq!(notices.len(), 1);
            prop_assert_eq!(notices[0].kind(), "mfa_reset");
            prop_assert_eq!(
                (after.mfa_reset_at, after.mfa_reset_by.as_deref(), after.mfa_reenrol),
                (Some(*time), Some(m.actor.as_str()), true)
            );
        }
    }

    /// (e) At most one `unlocked` notice per lock; an expiry's `event_id` is the id of the
    /// event that produced the lock's `locked` notice; an admin unlock's is the unlock's.
    /// Whichever event ends a timed lock, the expiry notice (id included) is the one the
    /// service's `expired` event at `locked_until` would have produced.
    #[test]
    fn e_one_unlocked_notice_per_lock((policy, steps) in script(true)) {
        let events = materialize(policy, &steps);
        let mut world = World::new(policy);
        let mut locking_events: BTreeSet<Uuid> = BTreeSet::new();
        let mut ended: BTreeSet<Uuid> = BTreeSet::new();
        for (time, event) in &events {
            let (before, after, notices) = world.apply(event, *time);
            let unlocks: Vec<_> = notices.iter().filter_map(|n| if let Notice::Unlocked(u) = n { Some(u) } else { None }).collect();
            prop_assert!(unlocks.len() <= 1, "{notices:?}");
            if let Some(u) = unlocks.first() {
                let lock = before.lock.as_ref();
                prop_assert!(lock.is_some(), "unlocked notice for an unlocked user: {u:?}");
                let lock_id = lock.map(|l| l.event_id).unwrap_or_default();
                prop_assert!(locking_events.contains(&lock_id), "the ended lock had no locked notice");
                prop_assert!(ended.insert(lock_id), "second unlocked notice for the lock of {lock_id}");
                match u.how {
                    How::Expired => {
                        // the same notice as the service's `expired` event folded at locked_until
                        let until = lock.and_then(|l| l.locked_until).unwrap_or_default();
                        let user = event.user().expect("user event");
                        let service = Event::Expired(Expired {
                            id: expired_event_id(TENANT, user, lock_id),
                            at: until,
                            tenant: TENANT.into(),
                            user: user.into(),
                            lock_event: lock_id,
                        });
                        let by_service = fold(&world.policy, before.clone(), &service, until).notices;
                        prop_assert_eq!(by_service.first(), Some(&Notice::Unlocked((*u).clone())));
                        prop_assert_eq!(u.event_id, lock_id);
                        prop_assert_eq!(u.actor.as_deref(), None);
                        prop_assert_eq!(Some(u.at), lock.and_then(|l| l.locked_until));
                    }
                    How::Admin => {
                        prop_assert_eq!(u.event_id, event.id());
                        prop_assert!(matches!(event, Event::Unlock(_)));
                    }
                    How::PasswordReset => prop_assert!(false, "no password_reset in a v1 stream: {u:?}"),
                }
            }
            for n in &notices {
                if let Notice::Locked(l) = n {
                    prop_assert_eq!(l.event_id, event.id());
                    prop_assert_eq!(after.lock.as_ref().map(|x| x.event_id), Some(event.id()));
                    locking_events.insert(l.event_id);
                }
            }
        }
        // every expiry names an event that locked
        let (_, all) = fold_all(policy, &events);
        for n in &all {
            if let Notice::Unlocked(u) = n {
                if u.how == How::Expired {
                    prop_assert!(locking_events.contains(&u.event_id));
                }
            }
        }
    }

    /// (g) Notice ids are unique across a stream (events have unique ids).
    #[test]
    fn g_notice_ids_are_unique((policy, steps) in script(true)) {
        let events = materialize(policy, &steps);
        let (_, notices) = fold_all(policy, &events);
        let mut seen: HashMap<Uuid, &Notice> = HashMap::new();
        for n in &notices {
            if let Some(first) = seen.insert(n.id(), n) {
                return Err(TestCaseError::fail(format!("id {} twice: {first:?} and {n:?}", n.id())));
            }
            prop_assert!(events.iter().any(|(_, e)| e.id() == notice_event_id(n)), "notice names an unknown event");
        }
    }

    /// (i) A `forget` drops the state exactly when the user is unlocked (after any lock that
    /// ran out) and nothing was recorded after the time it names; otherwise it changes nothing
    /// but that expiry.
    #[test]
    fn i_forget_drops_exactly_the_idle_unlocked_states((policy, steps) in script(true)) {
        let events = materialize(policy, &steps);
        let mut world = World::new(policy);
        for (time, event) in &events {
            let (before, after, _) = world.apply(event, *time);
            let Event::Forget(x) = event else { continue };
            // the state as the forget saw it: any lock that ran out ended first
            let seen = fold(&world.policy, before, &Event::Expired(Expired {
                id: Uuid::nil(), at: *time, tenant: TENANT.into(), user: x.user.clone(), lock_event: Uuid::nil(),
            }), *time).state;
            let idle = !seen.is_locked() && seen.last_activity().is_none_or(|t| t <= x.last_activity);
            if idle {
                prop_assert_eq!(&after, &UserState::default());
            } else {
                prop_assert_eq!(&after, &seen);
            }
        }
    }

    /// (h) The authenticated caller of an admin event is on its notices and in the state, the
    /// typed actor beside it; what no admin did has no caller.
    #[test]
    fn h_callers_reach_notices_and_status((policy, steps) in script(true)) {
        let events = materialize(policy, &steps);
        let mut world = World::new(policy);
        for (time, event) in &events {
            let (_, after, notices) = world.apply(event, *time);
            let caller = match event {
                Event::Unlock(e) => {
                    prop_assert_eq!(&after.unlocked_caller, &e.caller);
                    prop_assert_eq!(after.unlocked_by.as_ref(), Some(&e.actor));
                    e.caller.clone()
                }
                Event::MfaReset(e) => {
                    prop_assert_eq!(&after.mfa_reset_caller, &e.caller);
                    e.caller.clone()
                }
                Event::Lock(e) => e.caller.clone(),
                _ => None,
            };
            for n in &notices {
                let (on_notice, by_admin) = match n {
                    Notice::Locked(l) => (&l.caller, l.actor.is_some()),
                    Notice::Unlocked(u) => (&u.caller, u.how == How::Admin),
                    Notice::MfaReset(m) => (&m.caller, true),
                    Notice::IpBlocked(_) | Notice::IpUnblocked(_) => unreachable!("the user fold makes no IP notice"),
                };
                let want = if by_admin { caller.clone() } else { None };
                prop_assert_eq!(on_notice, &want, "{:?} from {:?}", n, event);
            }
            if after.unlocked_by.is_none() {
                prop_assert_eq!(&after.unlocked_caller, &None, "an expiry leaves no caller");
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// (f) A reference model
// ---------------------------------------------------------------------------------------

/// The subset of the policy the model implements: no dedupe, no progression.
#[derive(Debug, Clone, Copy)]
struct Simple {
    max_failures: u32,
    lock_seconds: u32,
    window_seconds: u32,
    reset_on_success: bool,
}

impl Simple {
    fn policy(self) -> Policy {
        Policy {
            max_failures: self.max_failures,
            lock_seconds: self.lock_seconds,
            window_seconds: self.window_seconds,
            reset_on_success: self.reset_on_success,
            count_mfa_failures: true,
            dedupe_credential: false,
            lock_multiplier: 1,
            ..Policy::default()
        }
    }
}

/// A naive, obviously correct model of the protocol's rules (`docs/protocol.md`) for one user.
#[derive(Debug, Default)]
struct Model {
    /// Times of the counted failures of the current streak.
    counted: Vec<Millis>,
    /// (locked_at, locked_until, counter at locking).
    lock: Option<(Millis, Option<Millis>, usize)>,
}

/// What the model says a status shows.
#[derive(Debug, PartialEq, Eq)]
struct View {
    locked: bool,
    reason: Option<LockReason>,
    locked_at: Option<Millis>,
    locked_until: Option<Millis>,
    failures: u32,
}

impl Model {
    fn end_lock(&mut self) {
        self.lock = None;
        self.counted.clear();
    }

    /// Applies one step at `t`; returns the notice kinds it should produce.
    fn apply(&mut self, p: Simple, t: Millis, step: &MStep) -> Vec<&'static str> {
        let mut out = Vec::new();
        // a timed lock is over at locked_until
        if let Some((_, Some(until), _)) = self.lock {
            if until <= t {
                self.end_lock();
                out.push("unlocked:expired");
            }
        }
        let window = Millis::from(p.window_seconds) * 1000;
        match step {
            MStep::Fail { .. } if self.lock.is_none() => {
                if window > 0 && self.counted.last().is_some_and(|&last| t - last >= window) {
                    self.counted.clear();
                }
                self.counted.push(t);
                if p.max_failures > 0 && self.counted.len() >= p.max_failures as usize {
                    let until = (p.lock_seconds > 0).then(|| t + Millis::from(p.lock_seconds) * 1000);
                    self.lock = Some((t, until, self.counted.len()));
                    out.push("locked");
                }
            }
            MStep::Success { .. } if self.lock.is_none() && p.reset_on_success => self.counted.clear(),
            MStep::Fail { .. } | MStep::Success { .. } => {}
            MStep::Unlock => {
                if self.lock.is_some() {
                    out.push("unlocked:admin");
                }
                self.end_lock();
            }
            MStep::Expire | MStep::ExpireEarly => {
                // it ends the timed lock it names unless stored more than the allowance early
                if let Some((_, Some(until), _)) = self.lock {
                    if t + EXPIRED_EARLY_ALLOWANCE_MS >= until {
                        self.end_lock();
                        out.push("unlocked:expired");
                    }
                }
            }
        }
        out
    }

    fn view(&self, p: Simple, now: Millis) -> View {
        match self.lock {
            Some((at, until, n)) if until.is_none_or(|u| u > now) => View {
                locked: true,
                reason: Some(LockReason::Failures),
                locked_at: Some(at),
                locked_until: until,
                failures: n as u32,
            },
            Some(_) => View { locked: false, reason: None, locked_at: None, locked_until: None, failures: 0 },
            None => {
                let window = Millis::from(p.window_seconds) * 1000;
                let expired = window > 0 && self.counted.last().is_some_and(|&last| now - last >= window);
                let failures = if expired { 0 } else { self.counted.len() as u32 };
                View { locked: false, reason: None, locked_at: None, locked_until: None, failures }
            }
        }
    }
}

#[derive(Debug, Clone)]
enum MStep {
    Fail {
        ip: usize,
        factor: usize,
    },
    Success {
        ip: usize,
    },
    Unlock,
    /// The service's `expired` event for the current timed lock, folded at `locked_until`
    /// or later.
    Expire,
    /// The same, folded whenever the step comes (a clock running ahead: often before
    /// `locked_until`).
    ExpireEarly,
}

fn simple_policy() -> impl Strategy<Value = Simple> {
    (0u32..=5, lock_seconds(), window_seconds(), any::<bool>()).prop_map(
        |(max_failures, lock_seconds, window_seconds, reset_on_success)| Simple {
            max_failures,
            lock_seconds,
            window_seconds,
            reset_on_success,
        },
    )
}

fn mstep() -> impl Strategy<Value = MStep> {
    prop_oneof![
        12 => (0..IPS.len(), 0..FACTORS.len()).prop_map(|(ip, factor)| MStep::Fail { ip, factor }),
        4 => (0..IPS.len()).prop_map(|ip| MStep::Success { ip }),
        1 => Just(MStep::Unlock),
        2 => Just(MStep::Expire),
        1 => Just(MStep::ExpireEarly),
    ]
}

fn view_of(s: &lockout_proto::Status) -> View {
    View {
        locked: s.locked,
        reason: s.reason,
        locked_at: s.locked_at,
        locked_until: s.locked_until,
        failures: s.failures,
    }
}

fn fold_kinds(notices: &[Notice]) -> Vec<&'static str> {
    notices
        .iter()
        .map(|n| match n {
            Notice::Locked(_) => "locked",
            Notice::Unlocked(u) if u.how == How::Expired => "unlocked:expired",
            Notice::Unlocked(_) => "unlocked:admin",
            Notice::MfaReset(_) => "mfa_reset",
            Notice::IpBlocked(_) | Notice::IpUnblocked(_) => n.kind(),
        })
        .collect()
}

proptest! {
    #![proptest_config(config())]

    /// (f) The fold's `status` agrees with a naive model after every event (at the event's
    /// time) and at the next event's time before it is folded (the lazy view of expiries and
    /// windows); the notice kinds agree too.
    #[test]
    fn f_fold_agrees_with_a_reference_model(
        p in simple_policy(),
        steps in prop::collection::vec((delta(), mstep()), 1..200),
    ) {
        let policy = p.policy();
        let user = "alice";
        let mut model = Model::default();
        let mut state = UserState::default();
        let mut time = T0;
        for (i, (delta, step)) in steps.iter().enumerate() {
            time += delta;
            let id = event_id(i);
            let tenant = TENANT.to_owned();
            let attempt = |outcome, ip: usize, factor: Factor, at| Event::Attempt(Attempt {
                id,
                at,
                tenant: TENANT.into(),
                user: user.into(),
                outcome,
                factor,
                source_ip: IPS[ip].into(),
                client: CLIENTS[ip].map(Into::into),
                credential: None,
                account: None,
                is_final: true,
            });
            let event = match step {
                MStep::Fail { ip, factor } => attempt(Outcome::Failure, *ip, FACTORS[*factor], time),
                MStep::Success { ip } => attempt(Outcome::Success, *ip, Factor::Password, time),
                MStep::Unlock => Event::Unlock(Unlock { id, at: time, tenant: tenant.into(), user: user.into(), actor: "admin".into(), reason: None, caller: None, lock_event: None }),
                MStep::Expire | MStep::ExpireEarly => {
                    // the service appends it for the current timed lock, at or after
                    // locked_until (early: whenever it comes)
                    let lock_event = match state.lock.as_ref() {
                        Some(l) => {
                            if let (Some(until), MStep::Expire) = (l.locked_until, step) {
                                time = time.max(until);
                            }
                            l.event_id
                        }
                        None => Uuid::from_u128(99),
                    };
                    // with the service's id: held to locked_until
                    let id = expired_event_id(TENANT, user, lock_event);
                    Event::Expired(Expired { id, at: time, tenant: tenant.into(), user: user.into(), lock_event })
                }
            };

            // before folding: the lazy view at this instant
            let lazy = status(TENANT, user, &policy, &state, time);
            prop_assert_eq!(view_of(&lazy), model.view(p, time), "lazy view before step {} {:?} at +{}", i, step, time - T0);

            let want_kinds = model.apply(p, time, step);
            let folded = fold(&policy, state, &event, time);
            state = folded.state;
            prop_assert_eq!(fold_kinds(&folded.notices), want_kinds, "notices of step {} {:?}", i, step);

            let s = status(TENANT, user, &policy, &state, time);
            prop_assert_eq!(view_of(&s), model.view(p, time), "after step {} {:?} at +{}", i, step, time - T0);
            if model.lock.is_none() {
                prop_assert_eq!(state.failures() as usize, model.counted.len(), "stored counter after step {}", i);
            }
        }
    }
}
