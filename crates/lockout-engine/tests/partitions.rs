//! Several processes, each folding its partitions: the union of what they fold is what one
//! process folding everything folds (contract v2, "Several lockoutd processes").

use lockout_engine::{BatchFolder, Floors, Incoming, OutboxMode};
use lockout_proto::codec::{self, Encoding};
use lockout_proto::event::{Attempt, Event, EventKind, Factor, IpBlock, IpUnblock, Outcome, PolicyChange};
use lockout_proto::partition::Set;
use lockout_proto::{Policy, Subjects, Tenant, UserId};
use lockout_store::{OutboxEntry, Store};
use proptest::prelude::*;
use uuid::Uuid;

/// One message of a generated stream: subject and body.
#[derive(Debug, Clone)]
struct Msg {
    subject: String,
    payload: Vec<u8>,
    content_type: Option<&'static str>,
}

const TENANTS: [&str; 2] = ["acme", "globex"];

fn user_subject(tenant: &str, user: &str, kind: EventKind) -> String {
    Subjects::default().user_event(&Tenant::parse(tenant).unwrap(), &UserId::parse(user).unwrap(), kind)
}

fn tenant_subject(tenant: &str, kind: EventKind) -> String {
    Subjects::default().tenant_event(&Tenant::parse(tenant).unwrap(), kind)
}

fn v2(subject: String, e: &Event) -> Msg {
    Msg { subject, payload: e.encode(Encoding::PostcardV2), content_type: Some(codec::POSTCARD_V2) }
}

/// What a generated step does.
#[derive(Debug, Clone)]
enum Step {
    Attempt { tenant: usize, user: u8, ip: u8, outcome: u8 },
    Policy { tenant: usize, max_failures: u32, ip_max_failures: u32 },
    IpBlock { tenant: usize, ip: u8, seconds: u64 },
    IpUnblock { tenant: usize, ip: u8 },
    Garbage { tenant: usize, user: Option<u8> },
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        12 => (0..2usize, 0..24u8, 0..6u8, 0..4u8)
            .prop_map(|(tenant, user, ip, outcome)| Step::Attempt { tenant, user, ip, outcome }),
        1 => (0..2usize, 2..5u32, 0..6u32)
            .prop_map(|(tenant, max_failures, ip_max_failures)| Step::Policy { tenant, max_failures, ip_max_failures }),
        1 => (0..2usize, 0..6u8, 0..3u64).prop_map(|(tenant, ip, seconds)| Step::IpBlock { tenant, ip, seconds }),
        1 => (0..2usize, 0..6u8).prop_map(|(tenant, ip)| Step::IpUnblock { tenant, ip }),
        1 => (0..2usize, proptest::option::of(0..24u8)).prop_map(|(tenant, user)| Step::Garbage { tenant, user }),
    ]
}

fn message(i: usize, s: &Step) -> Msg {
    let id = Uuid::from_u128(i as u128 + 1);
    let at = i as u64 * 1_000;
    let ip = |n: u8| format!("198.51.100.{n}");
    match *s {
        Step::Attempt { tenant, user, ip: n, outcome } => {
            let (t, u) = (TENANTS[tenant], format!("u{user}"));
            let outcome = [Outcome::Failure, Outcome::Failure, Outcome::Success, Outcome::Rejected][outcome as usize];
            let a = Attempt {
                id,
                at,
                tenant: t.into(),
                user: u.as_str().into(),
                outcome,
                factor: Factor::Password,
                source_ip: ip(n).into(),
                client: None,
                credential: None,
                account: None,
                is_final: true,
            };
            v2(user_subject(t, &u, EventKind::Attempt), &Event::Attempt(a))
        }
        Step::Policy { tenant, max_failures, ip_max_failures } => {
            let policy = Policy { max_failures, ip_max_failures, ip_window_seconds: 60, ..Policy::default() };
            let t = TENANTS[tenant];
            let e = Event::Policy(PolicyChange { id, at, tenant: t.into(), actor: "sec".into(), policy, caller: None });
            v2(tenant_subject(t, EventKind::Policy), &e)
        }
        Step::IpBlock { tenant, ip: n, seconds } => {
            let t = TENANTS[tenant];
            let e = Event::IpBlock(IpBlock {
                id,
                at,
                tenant: t.into(),
                ip: ip(n).into(),
                failures: 3,
                users: 2,
                sample_users: vec!["u1".into()],
                blocked_until: (seconds > 0).then_some(at + seconds * 2_000),
            });
            v2(tenant_subject(t, EventKind::IpBlock), &e)
        }
        Step::IpUnblock { tenant, ip: n } => {
            let t = TENANTS[tenant];
            let e = Event::IpUnblock(IpUnblock {
                id,
                at,
                tenant: t.into(),
                ip: ip(n).into(),
                actor: "help".into(),
                caller: None,
                reason: None,
            });
            v2(tenant_subject(t, EventKind::IpUnblock), &e)
        }
        Step::Garbage { tenant, user } => {
            let t = TENANTS[tenant];
            let subject = match user {
                Some(u) => user_subject(t, &format!("u{u}"), EventKind::Attempt),
                None => tenant_subject(t, EventKind::Policy),
            };
            Msg { subject, payload: vec![0xff, 0xfe, i as u8], content_type: None }
        }
    }
}

/// Everything a store holds that the split must reproduce.
#[derive(Debug, Default, PartialEq)]
struct Held {
    users: Vec<(String, String, Vec<u8>)>,
    ip_counts: Vec<(String, String, String)>,
    outbox: Vec<(u64, u32, String, Vec<u8>)>,
}

fn held(store: &Store) -> Held {
    let users =
        store.all_users().map(|r| r.unwrap()).map(|(t, u, s)| (t, u, lockout_store::state_codec::encode(&s))).collect();
    let ip_counts = store.all_ip_counts().map(|r| r.unwrap()).map(|(t, ip, c)| (t, ip, format!("{c:?}"))).collect();
    let outbox = store
        .outbox()
        .unwrap()
        .into_iter()
        .map(|e: OutboxEntry| (e.event_seq, e.index, e.subject, e.payload))
        .collect();
    Held { users, ip_counts, outbox }
}

fn blocks(store: &Store) -> Vec<String> {
    store.all_ip_blocks().map(|r| format!("{:?}", r.unwrap())).collect()
}

/// Folds `msgs` in batches of `batch` into a fresh store, folding only `owned` (all if `None`).
fn fold(msgs: &[Msg], batch: usize, owned: Option<Set>) -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), 8 << 20).unwrap();
    fold_into(&store, msgs, 0, batch, owned);
    (dir, store)
}

/// A publishing folder over `store` that folds `owned` (all if `None`).
fn folder(store: &Store, owned: Option<Set>) -> BatchFolder {
    let mode = OutboxMode::Publish { floors: Floors::default(), notices: Encoding::Json };
    let mut folder = BatchFolder::new(store.clone(), Subjects::default(), mode).unwrap();
    if let Some(o) = owned {
        folder.set_partitions(o);
    }
    folder
}

/// `msgs` as stream messages numbered from 1, one stored every second.
fn incoming(msgs: &[Msg]) -> Vec<Incoming<'_>> {
    msgs.iter()
        .enumerate()
        .map(|(i, m)| Incoming {
            seq: i as u64 + 1,
            subject: &m.subject,
            payload: &m.payload,
            time: i as u64 * 1_000 + 500,
            content_type: m.content_type,
        })
        .collect()
}

/// Folds `msgs[from..]` (numbered from 1 at `msgs[0]`) into `store` with a new folder.
fn fold_into(store: &Store, msgs: &[Msg], from: usize, batch: usize, owned: Option<Set>) {
    let mut folder = folder(store, owned);
    for b in incoming(msgs)[from..].chunks(batch) {
        if let Some(c) = folder.fold_batch(b).unwrap().commit {
            store.commit(&c).unwrap();
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    /// Three processes with a third of 8 partitions each hold between them exactly the user
    /// states, IP counts, notices and dead letters one process folding everything holds, each
    /// once; every one of them holds the same IP blocks.
    #[test]
    fn a_split_fold_holds_what_the_whole_fold_holds(
        steps in proptest::collection::vec(step(), 1..160),
        batch in 1..40usize,
    ) {
        let mut msgs = vec![
            message(1_000, &Step::Policy { tenant: 0, max_failures: 3, ip_max_failures: 4 }),
            message(1_001, &Step::Policy { tenant: 1, max_failures: 2, ip_max_failures: 3 }),
        ];
        msgs.extend(steps.iter().enumerate().map(|(i, s)| message(i, s)));
        let (_w, whole) = fold(&msgs, batch, None);
        prop_assert!(whole.partitions().unwrap().is_none(), "one process records no set");
        let parts: Vec<_> = (0..3u32)
            .map(|k| fold(&msgs, batch, Some(Set::of(8, (0..8).filter(|p| p % 3 == k)))))
            .collect();
        let want = held(&whole);
        let mut got = Held::default();
        for (_, store) in &parts {
            let h = held(store);
            got.users.extend(h.users);
            got.ip_counts.extend(h.ip_counts);
            got.outbox.extend(h.outbox);
            prop_assert_eq!(blocks(store), blocks(&whole));
            prop_assert_eq!(store.checkpoint().unwrap(), whole.checkpoint().unwrap());
        }
        got.users.sort();
        got.ip_counts.sort();
        got.outbox.sort();
        prop_assert_eq!(got, want);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    /// A process folds everything up to `half`, then only partitions A (it released B), then
    /// takes B back from a catch-up that folded B from the start: it holds what one process
    /// folding everything holds, and its stale B keys are gone.
    #[test]
    fn a_partition_taken_over_from_a_catch_up_is_complete(
        steps in proptest::collection::vec(step(), 1..160),
        batch in 1..40usize,
        half in 0..160usize,
    ) {
        let mut msgs = vec![message(1_000, &Step::Policy { tenant: 0, max_failures: 3, ip_max_failures: 4 })];
        msgs.extend(steps.iter().enumerate().map(|(i, s)| message(i, s)));
        let half = half.min(msgs.len());
        let (a, b) = (Set::of(8, [0, 1, 2, 5]), Set::of(8, [3, 4, 6, 7]));
        let (_w, whole) = fold(&msgs, batch, None);
        // Release B at `half`: B's states stay behind, stale.
        let msgs_half = &msgs[..half];
        let dir2 = tempfile::tempdir().unwrap();
        let early = Store::open(dir2.path(), 8 << 20).unwrap();
        fold_into(&early, msgs_half, 0, batch, None);
        early.set_partitions(&a).unwrap();
        for u in early.all_users() {
            let (t, u, _) = u.unwrap();
            prop_assert!(a.contains(lockout_proto::partition::of_user(&t, &u, 8)), "B's states are dropped");
        }
        fold_into(&early, &msgs, half, batch, Some(a.clone()));
        prop_assert_eq!(early.partitions().unwrap(), Some(a.clone()));
        let (_s, scratch) = fold(&msgs, batch, Some(b.clone()));
        early.take_partitions(&scratch, &a, &b).unwrap();
        prop_assert_eq!(early.partitions().unwrap(), Some(Set::all(8)));
        let (mut got, want) = (held(&early), held(&whole));
        // The outbox holds A's part (never published here) and B's from the catch-up.
        got.outbox.sort();
        prop_assert_eq!(got, want);
        prop_assert_eq!(blocks(&early), blocks(&whole));
    }
}

/// A process that owns no partition of a user folds none of its events and publishes none of
/// its notices or dead letters; the partition's owner does.
#[test]
fn only_the_owner_folds_a_user() {
    let msgs: Vec<Msg> = (0..6)
        .map(|i| message(i, &Step::Attempt { tenant: 0, user: 7, ip: 1, outcome: 0 }))
        .chain([message(6, &Step::Garbage { tenant: 0, user: Some(7) })])
        .collect();
    let p = lockout_proto::partition::of_tokens("acme", &UserId::parse("u7").unwrap().token(), 4);
    let (_a, owner) = fold(&msgs, 4, Some(Set::of(4, [p])));
    let (_b, other) = fold(&msgs, 4, Some(Set::of(4, (0..4).filter(|q| *q != p))));
    assert!(owner.user("acme", "u7").unwrap().unwrap().lock.is_some(), "5 failures lock u7");
    assert_eq!(owner.outbox().unwrap().len(), 2, "its locked notice and its dead letter");
    assert!(other.user("acme", "u7").unwrap().is_none());
    assert!(other.outbox().unwrap().is_empty());
    assert_eq!(other.checkpoint().unwrap(), 7, "the other process still moves past them");
}

/// With partitions set, every entry names its partition (`Lockout-Partition`), and each
/// partition's own floors decide what is queued again: a take-over re-sends nothing its
/// partition's last owner published.
#[test]
fn entries_name_their_partition_and_each_partition_has_its_floors() {
    let msgs: Vec<Msg> = (0..6)
        .map(|i| message(i, &Step::Attempt { tenant: 0, user: 7, ip: 1, outcome: 0 }))
        .chain([message(6, &Step::Garbage { tenant: 0, user: Some(7) })])
        .collect();
    let p = lockout_proto::partition::of_tokens("acme", &UserId::parse("u7").unwrap().token(), 4);
    let fold_with = |floors: Vec<Floors>| {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), 8 << 20).unwrap();
        let mut folder = folder(&store, Some(Set::all(4)));
        folder.set_partition_floors(floors);
        let commit = folder.fold_batch(&incoming(&msgs)).unwrap().commit.unwrap();
        commit.outbox
    };
    let all = fold_with(vec![Floors::default(); 4]);
    assert_eq!(all.len(), 2);
    for e in &all {
        assert_eq!(lockout_engine::outbox::partition_of(e), Some(p), "{:?}", e.headers);
    }
    // The locked notice is the 5th event's (seq 5); the dead letter is seq 7.
    let mut floors = vec![Floors { notices: Some((100, 0)), dead: Some(100) }; 4];
    floors[p as usize] = Floors { notices: Some((5, 0)), dead: None };
    let rest = fold_with(floors);
    assert_eq!(rest.len(), 1, "only the dead letter is above partition {p}'s floors");
    assert_eq!(rest[0].event_seq, 7);
}
