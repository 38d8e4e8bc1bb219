//! Property tests of contract v2's source-aware locks over random event streams: v2 policies
//! (familiar IPs, client scope, same-IP reset, password resets), attempts from familiar and
//! unfamiliar IPs and known and unknown API clients, `final` and `rejected` attempts, admin
//! commands with and without `lock_event`, and the service's `expired` events for every
//! timed lock, account or scope; (h) checks the fold against a naive reference model of the
//! source-aware rules. `tests/properties.rs` keeps the v1 properties.

use std::collections::{HashMap, HashSet};

use lockout_core::ids::expired_event_id;
use lockout_core::state::{FAMILIAR_MAX, KNOWN_CLIENTS_MAX, STREAK_SOURCES_MAX};
use lockout_core::{fold, status_for, Effect, Probe, UserState};
use lockout_proto::event::{
    Account, Attempt, Event, Expired, Factor, Lock, MfaReset, Outcome, PasswordReset, ResetMethod, Unlock,
};
use lockout_proto::notice::Notice;
use lockout_proto::policy::ResetScope;
use lockout_proto::status::{BlockedBy, Scope};
use lockout_proto::{Millis, Policy};
use proptest::prelude::*;
use uuid::Uuid;

const TENANT: &str = "acme";
const USER: &str = "alice";
const T0: Millis = 1_714_953_600_000;
const IPS: [&str; 6] =
    ["198.51.100.7", "203.0.113.1", "203.0.113.2", "2001:db8:1:2::1", "2001:db8:1:2::99", "2001:db8:9::1"];
const CLIENTS: [Option<&str>; 4] = [None, Some("IT Glue"), Some("VSA"), Some("rotating")];

fn policy() -> impl Strategy<Value = Policy> {
    (0u32..=4, prop_oneof![Just(0u32), 1u32..=5, Just(600)], prop_oneof![Just(0u32), 1u32..=30], any::<bool>())
        .prop_flat_map(|(max_failures, lock_seconds, window_seconds, reset_on_success)| {
            (prop_oneof![Just(0u32), 1u32..=2], any::<bool>(), any::<bool>(), any::<bool>(), 0u32..=2).prop_map(
                move |(familiar_days, api_client_scope, same_ip, unlock_on_password_reset, permanent_after)| Policy {
                    max_failures,
                    lock_seconds,
                    window_seconds,
                    reset_on_success,
                    permanent_after,
                    familiar_days,
                    api_client_scope,
                    reset_scope: if same_ip { ResetScope::SameIp } else { ResetScope::All },
                    unlock_on_password_reset,
                    ..Policy::default()
                },
            )
        })
}

#[derive(Debug, Clone)]
enum Op {
    Attempt {
        outcome: u8,
        ip: usize,
        client: usize,
        api: bool,
        fin: bool,
        mfa: bool,
    },
    Unlock {
        guard: Option<usize>,
    },
    Lock,
    MfaReset,
    PasswordReset,
    /// The service's `expired` for the n-th timed lock in force, if any.
    Expire(usize),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        24 => (0u8..10, 0..IPS.len(), 0..CLIENTS.len(), any::<bool>(), prop::bool::weighted(0.8), prop::bool::weighted(0.15))
            .prop_map(|(outcome, ip, client, api, fin, mfa)| Op::Attempt { outcome, ip, client, api, fin, mfa }),
        2 => prop::option::of(0usize..4).prop_map(|guard| Op::Unlock { guard }),
        1 => Just(Op::Lock),
        1 => Just(Op::MfaReset),
        2 => Just(Op::PasswordReset),
        3 => (0usize..4).prop_map(Op::Expire),
    ]
}

fn delta() -> impl Strategy<Value = Millis> {
    prop_oneof![2 => Just(0u64), 4 => (1u64..=6).prop_map(|s| s * 1000), 2 => 1u64..=3_000, 1 => 60_000u64..=3 * 86_400_000]
}

fn script() -> impl Strategy<Value = (Policy, Vec<(Millis, Op)>)> {
    (policy(), prop::collection::vec((delta(), op()), 1..120))
}

/// Every lock in force: (scope, client, lock event, locked_until).
fn locks(s: &UserState) -> Vec<(Scope, Option<String>, Uuid, Option<Millis>)> {
    let mut out = Vec::new();
    if let Some(l) = &s.lock {
        out.push((Scope::Account, None, l.event_id, l.locked_until));
    }
    if let Some(l) = &s.unfamiliar.lock {
        out.push((Scope::Unfamiliar, None, l.event_id, l.locked_until));
    }
    for c in &s.clients {
        if let Some(l) = &c.counter.lock {
            out.push((Scope::Client, Some(c.client.to_string()), l.event_id, l.locked_until));
        }
    }
    out
}

/// Turns the script into events against the state as it folds (guards and expiries name
/// real locks), folding as it goes; returns (time, event, state before, effect, notices).
type Step = (Millis, Event, UserState, Effect, Vec<Notice>, UserState);

fn run(policy: &Policy, script: &[(Millis, Op)]) -> Vec<Step> {
    let mut state = UserState::default();
    let mut now = T0;
    let mut out = Vec::new();
    for (n, (d, op)) in script.iter().enumerate() {
        now += d;
        let id = Uuid::from_u128(0x7000_0000_0000_7000_8000_0000_0000_0000 | n as u128);
        let (tenant, user) = (TENANT.into(), USER.into());
        let event = match op {
            Op::Attempt { outcome, ip, client, api, fin, mfa } => Event::Attempt(Attempt {
                id,
                at: now,
                tenant,
                user,
                outcome: match outcome {
                    0..=2 => Outcome::Success,
                    3 => Outcome::Rejected,
                    _ => Outcome::Failure,
                },
                factor: if *mfa { Factor::Mfa } else { Factor::Password },
                source_ip: IPS[*ip].into(),
                client: CLIENTS[*client].map(|c| if c == "rotating" { format!("rot-{n}").into() } else { c.into() }),
                credential: None,
                account: Some(if *api { Account::Api } else { Account::User }),
                is_final: *fin,
            }),
            Op::Unlock { guard } => Event::Unlock(Unlock {
                id,
                at: now,
                tenant,
                user,
                actor: "helpdesk".into(),
                reason: None,
                caller: None,
                lock_event: guard.map(|g| locks(&state).get(g).map_or(Uuid::from_u128(7), |l| l.2)),
            }),
            Op::Lock => Event::Lock(Lock {
                id,
                at: now,
                tenant,
                user,
                actor: "sec".into(),
                reason: None,
                seconds: Some(5),
                caller: None,
            }),
            Op::MfaReset => Event::MfaReset(MfaReset {
                id,
                at: now,
                tenant,
                user,
                actor: "helpdesk".into(),
                reason: None,
                caller: None,
            }),
            Op::PasswordReset => Event::PasswordReset(PasswordReset {
                id,
                at: now,
                tenant,
                user,
                method: ResetMethod::SelfService,
                actor: None,
                caller: None,
            }),
            Op::Expire(k) => {
                let timed: Vec<_> = locks(&state).into_iter().filter(|l| l.3.is_some()).collect();
                match timed.get(*k) {
                    Some(l) => {
                        now = now.max(l.3.unwrap_or(now));
                        Event::Expired(Expired {
                            id: expired_event_id(TENANT, USER, l.2),
                            at: now,
                            tenant,
                            user,
                            lock_event: l.2,
                        })
                    }
                    None => continue,
                }
            }
        };
        let before = state.clone();
        let folded = fold(policy, state, &event, now);
        state = folded.state.clone();
        out.push((now, event, before, folded.why.effect, folded.notices, folded.state));
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    /// (a) The same events give the same states and notices.
    #[test]
    fn a_replay_gives_the_same_states_and_notices((policy, script) in script()) {
        let one = run(&policy, &script);
        let two = run(&policy, &script);
        prop_assert_eq!(one, two);
    }

    /// (b) Notice ids are unique; (c) an event ends each lock at most once, and only a lock
    /// that was in force; every lock that ends had a `locked` notice.
    #[test]
    fn b_c_each_lock_ends_once_and_notice_ids_are_unique((policy, script) in script()) {
        let mut ids = HashSet::new();
        let mut locked: HashSet<Uuid> = HashSet::new();
        for (now, event, before, _, notices, _) in run(&policy, &script) {
            let mut ended: HashMap<(Scope, Option<String>), u32> = HashMap::new();
            for n in &notices {
                prop_assert!(ids.insert(n.id()), "notice id {} twice", n.id());
                match n {
                    Notice::Locked(l) => { locked.insert(l.event_id); }
                    Notice::Unlocked(u) => {
                        let key = (u.scope, u.client.as_ref().map(ToString::to_string));
                        *ended.entry(key.clone()).or_default() += 1;
                        let was = locks(&before).into_iter().find(|l| (l.0, l.1.clone()) == key);
                        prop_assert!(was.is_some(), "{u:?} ended no lock in force before {event:?} at {now}");
                        prop_assert!(locked.contains(&was.unwrap().2), "an ended lock had no locked notice");
                    }
                    Notice::MfaReset(_) | Notice::IpBlocked(_) | Notice::IpUnblocked(_) => {}
                }
            }
            prop_assert!(ended.values().all(|&n| n == 1), "{ended:?}");
        }
    }

    /// (d) A rejected attempt changes nothing; (e) the gateway's `status` for an attempt's
    /// source agrees with what the fold does with it: refused by the same lock, or not at all.
    #[test]
    fn d_e_rejected_changes_nothing_and_status_agrees_with_the_fold((policy, script) in script()) {
        for (now, event, before, effect, notices, after) in run(&policy, &script) {
            let Event::Attempt(a) = &event else { continue };
            if a.outcome == Outcome::Rejected {
                prop_assert_eq!(effect, Effect::Rejected);
                prop_assert_eq!(&before, &after);
                prop_assert!(notices.is_empty());
                continue;
            }
            let probe = Probe { ip: Some(&a.source_ip), client: a.client.as_deref(), account: a.account, ip_blocked: false };
            let s = status_for(TENANT, USER, &policy, &before, now, &probe);
            let want = match s.blocked_by {
                None => None,
                Some(BlockedBy::Account) => Some(Scope::Account),
                Some(BlockedBy::Unfamiliar) => Some(Scope::Unfamiliar),
                Some(BlockedBy::Client) => Some(Scope::Client),
                Some(BlockedBy::Ip) => unreachable!("no IP blocks yet"),
            };
            let got = match effect { Effect::Blocked { scope } => Some(scope), _ => None };
            prop_assert_eq!(got, want, "status {:?} vs fold {:?} for {:?}", s, effect, a);
            prop_assert_eq!(s.allowed, want.is_none());
            if got == Some(Scope::Unfamiliar) {
                prop_assert!(!before.is_familiar(&a.source_ip, policy.familiar_days, now), "a familiar IP was refused");
            }
        }
    }

    /// (f) Everything stays bounded; (g) a locked scope's counter is frozen while its lock
    /// stays in force; nothing new is recorded under a v1 policy.
    #[test]
    fn f_g_bounded_and_frozen((policy, script) in script()) {
        for (_, _, before, _, _, after) in run(&policy, &script) {
            prop_assert!(after.familiar.len() <= FAMILIAR_MAX && after.clients.len() <= KNOWN_CLIENTS_MAX);
            prop_assert!(after.streak.len() <= STREAK_SOURCES_MAX && after.unfamiliar.streak.len() <= STREAK_SOURCES_MAX);
            if policy.familiar_days == 0 {
                prop_assert!(after.familiar.is_empty() && after.unfamiliar.is_default());
            }
            if !policy.api_client_scope {
                prop_assert!(after.clients.is_empty());
            }
            let same_lock = |a: &UserState, b: &UserState| {
                a.unfamiliar.lock.as_ref().map(|l| l.event_id) == b.unfamiliar.lock.as_ref().map(|l| l.event_id)
            };
            if before.unfamiliar.lock.is_some() && same_lock(&before, &after) {
                prop_assert!(after.unfamiliar.failures() <= before.unfamiliar.failures(), "frozen, or cleared by an MFA reset");
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// (h) A reference model of the source-aware rules
// ---------------------------------------------------------------------------------------

/// A naive model of one user's counters under a v2 policy (`docs/protocol.md`, "Source-aware
/// locks"): no credential dedupe, MFA counted, no progressive or permanent locks, pools small
/// enough that no bound is reached.
#[derive(Debug, Default)]
struct Model {
    /// Counted failures (time, ip) per counter: "account", "unfamiliar", or the client's name.
    counters: std::collections::BTreeMap<String, Vec<(Millis, String)>>,
    /// Locks per counter: (locked_at, locked_until, failures).
    locks: std::collections::BTreeMap<String, (Millis, Option<Millis>, usize)>,
    /// Familiarity key → last final success.
    familiar: HashMap<String, Millis>,
    /// Known client → last final success.
    clients: HashMap<String, Millis>,
    /// Per counter, when it last counted a failure: the window runs from it even when a
    /// `same_ip` success has since removed that failure.
    last: HashMap<String, Millis>,
}

/// A scope lock as `status` shows it: its counter ("unfamiliar" or the client), `locked_until`,
/// the frozen failures.
type ScopeView = (String, Option<Millis>, u32);

const ACCOUNT: &str = "account";
const UNFAMILIAR: &str = "unfamiliar";

/// `ip`'s familiarity key: IPv4 itself, IPv6 its /64.
fn key(ip: &str) -> String {
    match ip.parse::<std::net::IpAddr>().unwrap() {
        std::net::IpAddr::V4(a) => a.to_string(),
        std::net::IpAddr::V6(a) => std::net::Ipv6Addr::from(u128::from(a) >> 64 << 64).to_string(),
    }
}

impl Model {
    fn familiar(&self, p: &Policy, ip: &str, t: Millis) -> bool {
        p.familiar_days > 0
            && self.familiar.get(&key(ip)).is_some_and(|&at| t - at < u64::from(p.familiar_days) * 86_400_000)
    }

    /// The counter whose lock refuses an attempt, if any.
    fn blocked(&self, p: &Policy, a: &Attempt, t: Millis) -> Option<String> {
        if self.locks.contains_key(ACCOUNT) {
            return Some(ACCOUNT.into());
        }
        if p.familiar_days > 0 && !self.familiar(p, &a.source_ip, t) && self.locks.contains_key(UNFAMILIAR) {
            return Some(UNFAMILIAR.into());
        }
        match (&a.client, a.account) {
            (Some(c), Some(Account::Api)) if self.locks.contains_key(c.as_str()) => Some(c.to_string()),
            _ => None,
        }
    }

    fn route(&self, p: &Policy, a: &Attempt, t: Millis) -> String {
        if p.api_client_scope && a.account == Some(Account::Api) {
            if let Some(c) = &a.client {
                let known = self.clients.get(c.as_str()).is_some_and(|&at| t - at < 30 * 86_400_000);
                if known || self.locks.contains_key(c.as_str()) {
                    return c.to_string();
                }
            }
        }
        if p.familiar_days > 0 && !self.familiar(p, &a.source_ip, t) {
            return UNFAMILIAR.into();
        }
        ACCOUNT.into()
    }

    fn end(&mut self, counter: &str) {
        self.locks.remove(counter);
        self.counters.remove(counter);
    }

    /// Applies one event at `t`; returns (locks started, locks ended).
    fn apply(&mut self, p: &Policy, t: Millis, event: &Event) -> (usize, usize) {
        let due: Vec<String> =
            self.locks.iter().filter(|(_, l)| l.1.is_some_and(|u| u <= t)).map(|(k, _)| k.clone()).collect();
        if matches!(event, Event::Attempt(a) if a.outcome == Outcome::Rejected) {
            return (0, 0);
        }
        let mut ended = due.len();
        for k in &due {
            self.end(k);
        }
        let mut started = 0;
        match event {
            Event::Attempt(a) if self.blocked(p, a, t).is_some() => {}
            Event::Attempt(a) if a.outcome == Outcome::Failure => {
                let counter = self.route(p, a, t);
                let window = u64::from(p.window_seconds) * 1000;
                let list = self.counters.entry(counter.clone()).or_default();
                if window > 0 && self.last.get(&counter).is_some_and(|&last| t - last >= window) {
                    list.clear();
                }
                list.push((t, a.source_ip.to_string()));
                self.last.insert(counter.clone(), t);
                let n = list.len();
                if p.max_failures > 0 && n >= p.max_failures as usize {
                    let until = (p.lock_seconds > 0).then(|| t + u64::from(p.lock_seconds) * 1000);
                    self.locks.insert(counter, (t, until, n));
                    started += 1;
                }
            }
            Event::Attempt(a) => {
                let counter = self.route(p, a, t);
                if p.reset_on_success {
                    let list = self.counters.entry(counter.clone()).or_default();
                    match p.reset_scope {
                        ResetScope::SameIp => list.retain(|(_, ip)| ip != a.source_ip.as_str()),
                        ResetScope::All => list.clear(),
                    }
                }
                if a.is_final {
                    if p.familiar_days > 0 {
                        self.familiar.insert(key(&a.source_ip), t);
                    }
                    if let (true, Some(Account::Api), Some(c)) = (p.api_client_scope, a.account, &a.client) {
                        self.clients.insert(c.to_string(), t);
                    }
                }
            }
            Event::Unlock(_) => {
                ended += self.locks.len();
                self.locks.clear();
                self.counters.clear();
            }
            Event::PasswordReset(_) if p.unlock_on_password_reset => {
                ended += self.locks.len();
                self.locks.clear();
                self.counters.clear();
            }
            Event::PasswordReset(_) => {
                if self.locks.is_empty() {
                    self.counters.clear();
                }
            }
            // The script appends it at `locked_until`: the lock it names ended above.
            Event::Expired(_) => {}
            _ => unreachable!("the model's streams hold attempts, unlocks, password resets and expiries"),
        }
        (started, ended)
    }

    /// (unfamiliar failures, scope locks as (client or "unfamiliar", until, failures)) as
    /// `status` shows them at `t`, and the account counter.
    fn view(&self, p: &Policy, t: Millis) -> (u32, u32, Vec<ScopeView>) {
        let live = |k: &str| self.locks.get(k).filter(|l| l.1.is_none_or(|u| u > t));
        let window = u64::from(p.window_seconds) * 1000;
        let count = |k: &str| -> u32 {
            if let Some(l) = live(k) {
                return l.2 as u32;
            }
            if self.locks.contains_key(k) {
                return 0;
            }
            let list = self.counters.get(k).map_or(&[][..], |v| &v[..]);
            if window > 0 && self.last.get(k).is_some_and(|&last| t - last >= window) {
                0
            } else {
                list.len() as u32
            }
        };
        let mut scoped: Vec<ScopeView> = self
            .locks
            .iter()
            .filter(|(k, _)| k.as_str() != ACCOUNT && live(k).is_some())
            .map(|(k, l)| (k.clone(), l.1, l.2 as u32))
            .collect();
        scoped.sort();
        (count(ACCOUNT), count(UNFAMILIAR), scoped)
    }
}

/// Streams for the model: no MFA, no admin lock, no guarded unlock; expiries at `locked_until`.
fn model_script() -> impl Strategy<Value = (Policy, Vec<(Millis, Op)>)> {
    let op = prop_oneof![
        24 => (0u8..10, 0..IPS.len(), 0..3usize, any::<bool>(), prop::bool::weighted(0.8))
            .prop_map(|(outcome, ip, client, api, fin)| Op::Attempt { outcome, ip, client, api, fin, mfa: false }),
        2 => Just(Op::Unlock { guard: None }),
        2 => Just(Op::PasswordReset),
        3 => (0usize..4).prop_map(Op::Expire),
    ];
    (policy().prop_map(|p| Policy { permanent_after: 0, ..p }), prop::collection::vec((delta(), op), 1..120))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    /// (h) After every event the fold's status (account counter, unfamiliar counter, scope
    /// locks) and the locks it starts and ends agree with the naive model.
    #[test]
    fn h_fold_agrees_with_a_reference_model((policy, script) in model_script()) {
        let mut model = Model::default();
        for (time, event, _, _, notices, after) in run(&policy, &script) {
            let (started, ended) = model.apply(&policy, time, &event);
            let locked = notices.iter().filter(|n| matches!(n, Notice::Locked(_))).count();
            let unlocked = notices.iter().filter(|n| matches!(n, Notice::Unlocked(_))).count();
            prop_assert_eq!((locked, unlocked), (started, ended), "notices of {:?} at {}", event, time);
            let s = status_for(TENANT, USER, &policy, &after, time, &Probe::default());
            let mut scoped: Vec<ScopeView> = s
                .scope_locks
                .iter()
                .map(|l| (l.client.as_ref().map_or(UNFAMILIAR.to_owned(), ToString::to_string), l.locked_until, l.failures))
                .collect();
            scoped.sort();
            let (account, unfamiliar, want_scoped) = model.view(&policy, time);
            prop_assert_eq!(s.failures, account, "account counter after {:?}", event);
            prop_assert_eq!(s.unfamiliar_failures, unfamiliar, "unfamiliar counter after {:?}", event);
            prop_assert_eq!(scoped, want_scoped, "scope locks after {:?}", event);
            prop_assert_eq!(s.locked, model.locks.get(ACCOUNT).is_some_and(|l| l.1.is_none_or(|u| u > time)));
        }
    }
}
