//! The projector's batch fold against a real sled store, without NATS.

use lockout_proto::codec::{self, Encoding};
use lockout_proto::event::{Attempt, Factor, Outcome};
use lockout_proto::Subjects;
use lockout_store::Store;
use lockoutd::outbox::Floors;
use lockoutd::projector::{BatchFolder, Incoming};
use uuid::Uuid;

fn attempt(n: u128) -> Vec<u8> {
    attempt_of(n, "alice", Outcome::Failure)
}

/// A folder over a fresh store in a temp dir (kept alive by the returned guard).
fn fresh() -> (tempfile::TempDir, Store, BatchFolder) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), 8 << 20).unwrap();
    let folder = BatchFolder::new(store.clone(), Subjects::default(), Encoding::Postcard, Floors::default()).unwrap();
    (dir, store, folder)
}

const SUBJECT: &str = "lockout.events.acme.u.YWxpY2U.attempt";

fn msg(seq: u64, time: u64, payload: &[u8]) -> Incoming<'_> {
    Incoming { seq, subject: SUBJECT, headers: None, payload, time }
}

fn failures(store: &Store) -> u32 {
    store.user("acme", "alice").unwrap().unwrap_or_default().failures()
}

#[test]
fn redeliveries_are_skipped_but_reused_sequences_are_folded() {
    let (_dir, store, mut folder) = fresh();
    let (a, b, c) = (attempt(1), attempt(2), attempt(3));
    let commit = folder.fold_batch(&[msg(1, 1_000, &a), msg(2, 2_000, &b)]).unwrap().unwrap();
    store.commit(&commit).unwrap();
    assert_eq!((failures(&store), store.checkpoint_at().unwrap()), (2, (2, 2_000)));

    // A redelivery of seq 2 (same stored time) changes nothing.
    assert!(folder.fold_batch(&[msg(2, 2_000, &b)]).unwrap().is_none());

    // postmortem: a nats-server killed before syncing lost seq 2 and reused it for a new
    // event, stored later; skipping it by sequence alone lost that event.
    let commit = folder.fold_batch(&[msg(2, 5_000, &c)]).unwrap().unwrap();
    store.commit(&commit).unwrap();
    assert_eq!((failures(&store), store.checkpoint_at().unwrap()), (3, (2, 5_000)));

    // A fresh folder resumes from the stored checkpoint and time.
    let mut again =
        BatchFolder::new(store.clone(), Subjects::default(), Encoding::Postcard, Floors::default()).unwrap();
    assert!(again.fold_batch(&[msg(1, 1_000, &a), msg(2, 5_000, &c)]).unwrap().is_none());
}

#[test]
fn refused_events_go_to_the_outbox_as_dead_letters_and_advance_the_checkpoint() {
    let (_dir, _, mut folder) = fresh();
    let commit = folder.fold_batch(&[msg(1, 1_000, b"\xff\xff")]).unwrap().unwrap();
    assert_eq!(commit.checkpoint, 1);
    assert!(commit.states.is_empty());
    assert_eq!(commit.outbox.len(), 1);
    assert_eq!(commit.outbox[0].subject, "lockout.dead.acme.undecodable");
    // With a dead-letter floor at or above the sequence (already published), nothing is queued.
    let dir2 = tempfile::tempdir().unwrap();
    let store2 = Store::open(dir2.path(), 8 << 20).unwrap();
    let floors = Floors { notices: None, dead: Some(1) };
    let mut folder2 = BatchFolder::new(store2, Subjects::default(), Encoding::Postcard, floors).unwrap();
    assert!(folder2.fold_batch(&[msg(1, 1_000, b"\xff\xff")]).unwrap().unwrap().outbox.is_empty());
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
        .map(|(s, seq, p)| Incoming { seq: *seq, subject: s, headers: None, payload: p, time: *seq * 1_000 })
        .collect()
}

#[test]
fn the_next_batch_folds_against_states_not_yet_committed() {
    let (_dir, store, mut folder) = fresh();
    let (a, b, c) = (attempt(1), attempt(2), attempt(3));
    // Batch 1 is folded but its commit has not landed when batch 2 is folded (the pipeline).
    let first = folder.fold_batch(&[msg(1, 1_000, &a), msg(2, 2_000, &b)]).unwrap().unwrap();
    let second = folder.fold_batch(&[msg(3, 3_000, &c)]).unwrap().unwrap();
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
        .fold_batch(&[Incoming { seq: 1, subject: &subject, headers: None, payload: &ok, time: 1_000 }])
        .unwrap()
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
        pending.push(folder.fold_batch(&incoming(&msgs)).unwrap().unwrap());
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
        let c = folder.fold_batch(&incoming(&msgs)).unwrap().unwrap();
        store.commit(&c).unwrap();
    }
    for u in users {
        let s = store.user("acme", u).unwrap().unwrap();
        assert!(s.is_locked(), "{u}: five failures lock with the default policy");
        assert_eq!(s.failures(), 5);
    }
}
