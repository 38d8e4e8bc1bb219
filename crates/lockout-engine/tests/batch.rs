//! The engine's batch fold against a real sled store, without NATS.

use lockout_engine::{BatchFolder, Floors, Handling, Incoming, OutboxMode};
use lockout_proto::codec::{self, Encoding};
use lockout_proto::event::{Attempt, Factor, Outcome};
use lockout_proto::Subjects;
use lockout_store::Store;
use uuid::Uuid;

fn attempt(n: u128) -> Vec<u8> {
    attempt_of(n, "alice", Outcome::Failure)
}

/// A folder over a fresh store in a temp dir (kept alive by the returned guard).
fn fresh() -> (tempfile::TempDir, Store, BatchFolder) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), 8 << 20).unwrap();
    let folder = BatchFolder::new(store.clone(), Subjects::default(), publish(Floors::default())).unwrap();
    (dir, store, folder)
}

fn publish(floors: Floors) -> OutboxMode {
    OutboxMode::Publish { floors, notices: Encoding::Postcard }
}

const SUBJECT: &str = "lockout.events.acme.u.YWxpY2U.attempt";

fn msg(seq: u64, time: u64, payload: &[u8]) -> Incoming<'_> {
    Incoming { seq, subject: SUBJECT, payload, time, content_type: None }
}

fn failures(store: &Store) -> u32 {
    store.user("acme", "alice").unwrap().unwrap_or_default().failures()
}

#[test]
fn redeliveries_are_skipped_but_reused_sequences_are_folded() {
    let (_dir, store, mut folder) = fresh();
    let (a, b, c) = (attempt(1), attempt(2), attempt(3));
    let commit = folder.fold_batch(&[msg(1, 1_000, &a), msg(2, 2_000, &b)]).unwrap().commit.unwrap();
    store.commit(&commit).unwrap();
    assert_eq!((failures(&store), store.checkpoint_at().unwrap()), (2, (2, 2_000)));

    // A redelivery of seq 2 (same stored time) changes nothing.
    assert!(folder.fold_batch(&[msg(2, 2_000, &b)]).unwrap().commit.is_none());

    // postmortem: a nats-server killed before syncing lost seq 2 and reused it for a new
    // event, stored later; skipping it by sequence alone lost that event.
    let commit = folder.fold_batch(&[msg(2, 5_000, &c)]).unwrap().commit.unwrap();
    store.commit(&commit).unwrap();
    assert_eq!((failures(&store), store.checkpoint_at().unwrap()), (3, (2, 5_000)));

    // A fresh folder resumes from the stored checkpoint and time.
    let mut again = BatchFolder::new(store.clone(), Subjects::default(), publish(Floors::default())).unwrap();
    assert!(again.fold_batch(&[msg(1, 1_000, &a), msg(2, 5_000, &c)]).unwrap().commit.is_none());
}

#[test]
fn refused_events_go_to_the_outbox_as_dead_letters_and_advance_the_checkpoint() {
    let (_dir, _, mut folder) = fresh();
    let commit = folder.fold_batch(&[msg(1, 1_000, b"\xff\xff")]).unwrap().commit.unwrap();
    assert_eq!(commit.checkpoint, 1);
    assert!(commit.states.is_empty());
    assert_eq!(commit.outbox.len(), 1);
    assert_eq!(commit.outbox[0].subject, "lockout.dead.acme.undecodable");
    // With a dead-letter floor at or above the sequence (already published), nothing is queued.
    let dir2 = tempfile::tempdir().unwrap();
    let store2 = Store::open(dir2.path(), 8 << 20).unwrap();
    let floors = Floors { notices: None, dead: Some(1) };
    let mut folder2 = BatchFolder::new(store2, Subjects::default(), publish(floors)).unwrap();
    assert!(folder2.fold_batch(&[msg(1, 1_000, b"\xff\xff")]).unwrap().commit.unwrap().outbox.is_empty());
}

fn attempt_of(n: u128, user: &str, outcome: Outcome) -> Vec<u8> {
    codec::encode(
        Encoding::Postcard,
        &Attempt {
            id: Uuid::from_u128(n),
            at: 0,
            tenant: "acme".into(),
            user: user.into(),
            outcome,
            factor: Factor::Password,
            source_ip: "192.0.2.1".into(),
            client: None,
            credential: None,
            account: None,
            is_final: true,
        },
    )
}

fn subject_of(user: &str) -> String {
    let tenant = lockout_proto::Tenant::parse("acme").unwrap();
    let user = lockout_proto::UserId::parse(user).unwrap();
    Subjects::default().user_event(&tenant, &user, lockout_proto::event::EventKind::Attempt)
}

/// One failed attempt for each of `users`, from sequence `first` on.
fn failures_for(users: &[String], first: u64) -> Vec<(String, u64, Vec<u8>)> {
    users
        .iter()
        .enumerate()
        .map(|(i, u)| (subject_of(u), first + i as u64, attempt_of(u128::from(first) + i as u128, u, Outcome::Failure)))
        .collect()
}

fn incoming(msgs: &[(String, u64, Vec<u8>)]) -> Vec<Incoming<'_>> {
    msgs.iter()
        .map(|(s, seq, p)| Incoming { seq: *seq, subject: s, payload: p, time: *seq * 1_000, content_type: None })
        .collect()
}

#[test]
fn the_next_batch_folds_against_states_not_yet_committed() {
    let (_dir, store, mut folder) = fresh();
    let (a, b, c) = (attempt(1), attempt(2), attempt(3));
    // Batch 1 is folded but its commit has not landed when batch 2 is folded (the pipeline).
    let first = folder.fold_batch(&[msg(1, 1_000, &a), msg(2, 2_000, &b)]).unwrap().commit.unwrap();
    let second = folder.fold_batch(&[msg(3, 3_000, &c)]).unwrap().commit.unwrap();
    assert_eq!(second.states[0].state.failures(), 3, "batch 2 saw batch 1's state");
    store.commit(&first).unwrap();
    store.commit(&second).unwrap();
    assert_eq!((failures(&store), store.checkpoint().unwrap()), (3, 3));
}

#[test]
fn unchanged_states_are_not_written() {
    let (_dir, _, mut folder) = fresh();
    let ok = attempt_of(1, "bob", Outcome::Success);
    let subject = subject_of("bob");
    let commit = folder
        .fold_batch(&[Incoming { seq: 1, subject: &subject, payload: &ok, time: 1_000, content_type: None }])
        .unwrap()
        .commit
        .unwrap();
    assert!(commit.states.is_empty(), "a success leaves a new user's state as it was");
    assert_eq!(commit.checkpoint, 1, "the checkpoint still moves");
}

/// postmortem-style guard: a cache generation may only be dropped once its states are in
/// the store, else a later miss would read an older state from sled.
#[test]
fn a_full_cache_keeps_states_whose_commit_has_not_landed() {
    let (_dir, store, mut folder) = fresh();
    folder.set_state_cache_bytes(1); // always over budget
                                     // Three disjoint sets of users, then the first again: its states are two rotations old.
    let sets: Vec<Vec<String>> = (0..3).map(|k| (0..50).map(|i| format!("user{k}-{i}")).collect()).collect();
    let mut pending = Vec::new();
    for (round, users) in sets.iter().chain(std::iter::once(&sets[0])).enumerate() {
        let msgs = failures_for(users, 1 + round as u64 * 100);
        pending.push(folder.fold_batch(&incoming(&msgs)).unwrap().commit.unwrap());
    }
    let last = pending.last().unwrap();
    assert!(last.states.iter().all(|s| s.state.failures() == 2), "no uncommitted state was dropped");
    for c in &pending {
        store.commit(c).unwrap();
    }
    // Everything has landed: rotation may drop states now, and misses read the store.
    let users = &sets[0];
    for round in 4..7u64 {
        let msgs = failures_for(users, 1 + round * 100);
        let c = folder.fold_batch(&incoming(&msgs)).unwrap().commit.unwrap();
        store.commit(&c).unwrap();
    }
    for u in users {
        let s = store.user("acme", u).unwrap().unwrap();
        assert!(s.is_locked(), "{u}: five failures lock with the default policy");
        assert_eq!(s.failures(), 5);
    }
}

#[test]
fn every_message_gets_a_report_of_what_became_of_it() {
    let (_dir, store, mut folder) = fresh();
    let first = folder.fold_batch(&[msg(1, 1_000, &attempt(1))]).unwrap().commit.unwrap();
    store.commit(&first).unwrap();
    // A redelivery, a refusal, four failures (the last locks: one notice), in one batch.
    let payloads: Vec<Vec<u8>> = (2..=5).map(attempt).collect();
    let again = attempt(1);
    let mut batch = vec![msg(1, 1_000, &again), msg(2, 2_000, b"\xff")];
    batch.extend(payloads.iter().enumerate().map(|(i, p)| msg(3 + i as u64, 3_000 + i as u64, p)));
    let fold = folder.fold_batch(&batch).unwrap();
    let commit = fold.commit.unwrap();
    let handled: Vec<(usize, u64, &str)> = fold
        .events
        .iter()
        .map(|e| {
            let h = match &e.handling {
                Handling::Redelivered => "redelivered",
                Handling::Elsewhere => "elsewhere",
                Handling::Refused { rejection, outbox: Some(0) } if rejection.reason.as_str() == "undecodable" => {
                    "refused"
                }
                Handling::Folded { notices, .. } if notices.is_empty() => "folded",
                Handling::Folded { notices, .. } if notices[0].outbox == Some(1) => "folded+notice",
                other => panic!("unexpected {other:?}"),
            };
            (e.index, e.seq, h)
        })
        .collect();
    assert_eq!(
        handled,
        [
            (0, 1, "redelivered"),
            (1, 2, "refused"),
            (2, 3, "folded"),
            (3, 4, "folded"),
            (4, 5, "folded"),
            (5, 6, "folded+notice")
        ]
    );
    assert_eq!(commit.outbox.len(), 2, "the dead letter, then the locked notice");
    assert_eq!(commit.outbox[1].subject, "lockout.notices.acme.locked");
}

#[test]
fn a_rebuild_queues_nothing_to_publish() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), 8 << 20).unwrap();
    let mut folder = BatchFolder::new(store, Subjects::default(), OutboxMode::Discard).unwrap();
    let payloads: Vec<Vec<u8>> = (1..=5).map(attempt).collect();
    let mut batch: Vec<Incoming<'_>> = payloads.iter().enumerate().map(|(i, p)| msg(1 + i as u64, 1_000, p)).collect();
    batch.push(msg(6, 1_000, b"\xff"));
    let fold = folder.fold_batch(&batch).unwrap();
    let commit = fold.commit.unwrap();
    assert!(commit.outbox.is_empty());
    assert!(commit.states[0].state.is_locked());
    let Handling::Folded { notices, .. } = &fold.events[4].handling else { panic!("{:?}", fold.events[4]) };
    assert_eq!((notices.len(), notices[0].outbox), (1, None), "the notice is reported, not queued");
}

/// Hole 7 of issue 20: events for ever new tenants (made-up tenant tokens) must not grow the
/// policies held in memory without bound, and a tenant's own policy still applies after the
/// set of default-policy tenants started over.
#[test]
fn the_policies_held_in_memory_are_bounded() {
    use lockout_engine::DEFAULT_POLICY_TENANTS_MAX;
    use lockout_proto::event::{EventKind, PolicyChange};
    use lockout_proto::{Policy, Tenant, UserId};
    let (_dir, store, mut folder) = fresh();
    let subjects = Subjects::default();
    let own = Policy { max_failures: 1, ..Policy::default() };
    let change = PolicyChange {
        id: Uuid::from_u128(1),
        at: 0,
        tenant: "acme".into(),
        actor: "ops".into(),
        policy: own,
        caller: None,
    };
    let policy_msg = (
        subjects.tenant_event(&Tenant::parse("acme").unwrap(), EventKind::Policy),
        1,
        codec::encode(Encoding::Postcard, &change),
    );
    let mut seq = 2;
    let mut msgs = vec![policy_msg];
    for t in 0..DEFAULT_POLICY_TENANTS_MAX + 100 {
        let tenant = format!("t{t}");
        let mut a: Attempt =
            codec::decode(Encoding::Postcard, &attempt_of(u128::from(seq), "alice", Outcome::Failure), "attempt")
                .unwrap();
        a.tenant = tenant.as_str().into();
        let subject =
            subjects.user_event(&Tenant::parse(&tenant).unwrap(), &UserId::parse("alice").unwrap(), EventKind::Attempt);
        msgs.push((subject, seq, codec::encode(Encoding::Postcard, &a)));
        seq += 1;
    }
    for chunk in msgs.chunks(1000) {
        let commit = folder.fold_batch(&incoming(chunk)).unwrap().commit.unwrap();
        store.commit(&commit).unwrap();
    }
    let (own_held, default_held) = folder.policies_held();
    assert_eq!(own_held, 1, "acme's own policy");
    assert!(default_held <= DEFAULT_POLICY_TENANTS_MAX, "{default_held} default-policy tenants held");
    assert!(default_held < 1000, "the set started over once: {default_held}");
    // acme's policy (one failure locks) still applies.
    let fail = (subject_of("bob"), seq, attempt_of(u128::from(seq), "bob", Outcome::Failure));
    let commit = folder.fold_batch(&incoming(&[fail])).unwrap().commit.unwrap();
    store.commit(&commit).unwrap();
    assert!(store.user("acme", "bob").unwrap().unwrap().lock.is_some(), "locked by acme's policy");
}

/// IP counts (password spraying) whose failures all left the window (and the sweep's 7-day
/// horizon) are swept from the store by later batches, a slice at a time, so IPs never seen
/// again do not stay forever; a count still in its window stays.
#[test]
fn stale_ip_counts_are_swept() {
    use lockout_proto::event::{Event, EventKind, PolicyChange};
    let (_dir, store, mut folder) = fresh();
    let policy = lockout_proto::Policy { ip_max_failures: 1_000, ip_window_seconds: 60, ..Default::default() };
    let change = Event::Policy(PolicyChange {
        id: Uuid::from_u128(1),
        at: 0,
        tenant: "acme".into(),
        actor: "sec".into(),
        policy,
        caller: None,
    })
    .encode(Encoding::PostcardV2);
    let tenant = lockout_proto::Tenant::parse("acme").unwrap();
    let policy_subject = Subjects::default().tenant_event(&tenant, EventKind::Policy);
    let set = Incoming {
        seq: 1,
        subject: &policy_subject,
        payload: &change,
        time: 1_000,
        content_type: Some(codec::POSTCARD_V2),
    };
    store.commit(&folder.fold_batch(&[set]).unwrap().commit.unwrap()).unwrap();
    // 150 IPs fail once at t = 2 s .. 2.15 s (more than one sweep slice).
    let users: Vec<String> = (0..150).map(|i| format!("u{i}")).collect();
    let msgs: Vec<(String, u64, Vec<u8>)> = users
        .iter()
        .enumerate()
        .map(|(i, u)| {
            let a = Attempt {
                source_ip: format!("198.51.100.{i}").into(),
                ..codec::decode::<Attempt>(Encoding::Postcard, &attempt_of(100 + i as u128, u, Outcome::Failure), "a")
                    .unwrap()
            };
            (subject_of(u), 2 + i as u64, codec::encode(Encoding::Postcard, &a))
        })
        .collect();
    let batch: Vec<Incoming<'_>> = msgs
        .iter()
        .map(|(s, seq, p)| Incoming { seq: *seq, subject: s, payload: p, time: 2_000 + *seq, content_type: None })
        .collect();
    store.commit(&folder.fold_batch(&batch).unwrap().commit.unwrap()).unwrap();
    assert_eq!(store.ip_count_bytes().unwrap().1, 150);
    // Within the window: nothing goes.
    let mut seq = 200;
    let at = |seq: u64, time: u64, store: &Store, folder: &mut BatchFolder| {
        let a = attempt_of(u128::from(seq), "late", Outcome::Success);
        let s = subject_of("late");
        let m = Incoming { seq, subject: &s, payload: &a, time, content_type: None };
        store.commit(&folder.fold_batch(&[m]).unwrap().commit.unwrap()).unwrap();
    };
    for _ in 0..4 {
        seq += 1;
        at(seq, 30_000, &store, &mut folder);
    }
    assert_eq!(store.ip_count_bytes().unwrap().1, 150, "still in the window");
    let horizon = lockout_core::ip::SWEEP_HORIZON_MS;
    for _ in 0..4 {
        seq += 1;
        at(seq, horizon, &store, &mut folder);
    }
    assert_eq!(store.ip_count_bytes().unwrap().1, 150, "out of the window, not yet past the horizon");
    // One failure from one of the IPs, then the horizon passes for the others.
    let again = codec::encode(
        Encoding::Postcard,
        &Attempt {
            source_ip: "198.51.100.7".into(),
            ..codec::decode::<Attempt>(Encoding::Postcard, &attempt_of(999, "u7", Outcome::Failure), "a").unwrap()
        },
    );
    let s7 = subject_of("u7");
    seq += 1;
    let m = Incoming { seq, subject: &s7, payload: &again, time: horizon + 1_000, content_type: None };
    store.commit(&folder.fold_batch(&[m]).unwrap().commit.unwrap()).unwrap();
    for _ in 0..4 {
        seq += 1;
        at(seq, horizon + 2_200, &store, &mut folder);
    }
    let left: Vec<String> = store.all_ip_counts().map(|c| c.unwrap().1).collect();
    assert_eq!(left, vec!["198.51.100.7".to_owned()], "only the IP with a failure in the window stays");
}
