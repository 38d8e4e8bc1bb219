//! The store against a real sled database in a temp dir.

use std::path::Path;

use lockout_core::{LockState, UserState};
use lockout_proto::status::LockReason;
use lockout_proto::Policy;
use lockout_store::{Commit, LockIndex, OutboxEntry, OutboxStream, StateChange, Store};
use uuid::Uuid;

mod support;

fn locked(until: Option<u64>, id: u128) -> UserState {
    UserState {
        lock: Some(Box::new(LockState {
            reason: LockReason::Failures,
            locked_at: 1,
            locked_until: until,
            event_id: Uuid::from_u128(id),
            blocked: 0,
            blocked_sources: vec![],
            tripped_by: Some("203.0.113.7".into()),
        })),
        ..UserState::default()
    }
}

fn change(tenant: &str, user: &str, before: Option<LockIndex>, state: UserState) -> StateChange {
    StateChange { tenant: tenant.into(), user: user.into(), before, before_scoped: Vec::new(), state }
}

fn open() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), 16 << 20).unwrap();
    (dir, store)
}

#[test]
fn commit_writes_states_indexes_outbox_and_checkpoint() {
    let (dir, store) = open();
    let entry = OutboxEntry {
        stream: OutboxStream::Notices,
        event_seq: 7,
        index: 0,
        subject: "lockout.notices.acme.locked".into(),
        headers: vec![("Nats-Msg-Id".into(), "x".into())],
        payload: vec![1, 2, 3],
    };
    store
        .commit(&Commit {
            states: vec![
                change("acme", "bob", None, locked(Some(5_000), 1)),
                change("acme", "alice", None, locked(None, 2)),
                change("acme", "carol", None, UserState::default()),
                change("other", "dave", None, locked(Some(1_000), 3)),
            ],
            policies: vec![("acme".into(), Policy { max_failures: 3, ..Policy::default() })],
            outbox: vec![entry.clone()],
            checkpoint: 7,
            checkpoint_time: 70,
            ..Commit::default()
        })
        .unwrap();
    assert_eq!(store.checkpoint_at().unwrap(), (7, 70));
    assert_eq!(store.policy("acme").unwrap().unwrap().max_failures, 3);
    assert_eq!(store.policy("other").unwrap(), None);
    assert_eq!(store.outbox().unwrap(), vec![entry.clone()]);
    let locked_users: Vec<String> = store.locked_after("acme", None).map(|r| r.unwrap().0).collect();
    assert_eq!(locked_users, ["alice", "bob"]);
    let after_alice: Vec<String> = store.locked_after("acme", Some("alice")).map(|r| r.unwrap().0).collect();
    assert_eq!(after_alice, ["bob"]);
    // Only timed locks are in the expiry index, earliest first.
    let due = store.due_expiries(10_000, 10).unwrap();
    assert_eq!(
        due.iter().map(|d| (d.user.as_str(), d.locked_until)).collect::<Vec<_>>(),
        [("dave", 1_000), ("bob", 5_000)]
    );
    assert_eq!(store.due_expiries(4_999, 10).unwrap().len(), 1);

    // Unlocking bob removes him from both indexes.
    let before = LockIndex::of(&store.user("acme", "bob").unwrap().unwrap());
    store
        .commit(&Commit {
            states: vec![change("acme", "bob", before, UserState::default())],
            checkpoint: 8,
            ..Commit::default()
        })
        .unwrap();
    let locked_users: Vec<String> = store.locked_after("acme", None).map(|r| r.unwrap().0).collect();
    assert_eq!(locked_users, ["alice"]);
    assert_eq!(store.due_expiries(10_000, 10).unwrap().len(), 1);
    store.remove_outbox(&[entry]).unwrap();
    assert!(store.outbox().unwrap().is_empty());

    // Everything survives a reopen.
    store.flush().unwrap();
    drop(store);
    let store = support::when_released(dir.path(), || Store::open(dir.path(), 16 << 20));
    assert_eq!(store.checkpoint().unwrap(), 8);
    assert_eq!(store.user("acme", "alice").unwrap(), Some(locked(None, 2)));
    // A state back at the default (bob's, here) is not stored, as for a user never seen.
    assert_eq!(store.user("acme", "bob").unwrap(), None);
    assert_eq!(store.all_users().count(), 2);
}

#[test]
fn digest_depends_on_states_only_and_per_tenant() {
    let (_d1, a) = open();
    let (_d2, b) = open();
    let states = |x: u128| {
        vec![change("acme", "u1", None, locked(Some(9), x)), change("zeta", "u2", None, UserState::default())]
    };
    a.commit(&Commit { states: states(1), checkpoint: 2, ..Commit::default() }).unwrap();
    b.commit(&Commit { states: states(1), checkpoint: 2, ..Commit::default() }).unwrap();
    assert_eq!(a.digest("acme").unwrap(), b.digest("acme").unwrap());
    assert_eq!(a.digest("acme").unwrap().0, 1);
    b.commit(&Commit { states: states(2), checkpoint: 3, ..Commit::default() }).unwrap();
    assert_ne!(a.digest("acme").unwrap(), b.digest("acme").unwrap());
    assert_eq!(a.digest("zeta").unwrap(), b.digest("zeta").unwrap());
    assert_eq!(a.digest("nobody").unwrap().0, 0);
    // Digests of disjoint sets of users combine into the digest of their union.
    let more = ["a1", "k2", "n3", "z4"].map(|u| change("acme", u, None, locked(Some(9), 3)));
    b.commit(&Commit { states: more.to_vec(), checkpoint: 4, ..Commit::default() }).unwrap();
    let (whole, low, high) = (
        b.digest("acme").unwrap(),
        b.digest_of("acme", |u| u < "m").unwrap(),
        b.digest_of("acme", |u| u >= "m").unwrap(),
    );
    assert_eq!((low.0, high.0, whole.0), (2, 3, 5));
    assert_eq!(lockout_store::xor_digests([low.1.as_str(), high.1.as_str()]), Some(whole.1.clone()));
}

#[test]
fn users_sort_by_utf8_bytes_and_prefix_tenants_do_not_mix() {
    let (_d, s) = open();
    let users = ["b", "a", "é", "Z", "ab"];
    let states = users
        .iter()
        .map(|u| change("t", u, None, locked(None, 1)))
        .chain([change("t2", "a", None, locked(None, 1))])
        .collect();
    s.commit(&Commit { states, checkpoint: 1, ..Commit::default() }).unwrap();
    let listed: Vec<String> = s.locked_after("t", None).map(|r| r.unwrap().0).collect();
    assert_eq!(listed, ["Z", "a", "ab", "b", "é"]);
}

#[test]
fn reopen_keeps_what_was_flushed_for_every_clone_and_waits_for_open_handles() {
    let (_dir, store) = open();
    let clone = store.clone();
    let commit = Commit {
        states: vec![change("acme", "alice", None, locked(Some(9), 1))],
        checkpoint: 3,
        checkpoint_time: 30,
        ..Commit::default()
    };
    store.commit(&commit).unwrap();
    store.flush().unwrap();

    // An iterator holds the old database open: sled's lock on its files refuses a second open.
    let mut users = clone.all_users();
    assert!(store.reopen().is_err(), "the files are still held");
    assert!(clone.checkpoint().is_err(), "a store that could not reopen refuses, it does not guess");
    assert_eq!(users.next().unwrap().unwrap().1, "alice", "the open iterator still reads the old one");
    drop(users);

    support::when_released(Path::new("the reopened store"), || store.reopen());
    assert_eq!(clone.checkpoint_at().unwrap(), (3, 30), "every clone sees the reopened store");
    assert_eq!(clone.user("acme", "alice").unwrap(), Some(locked(Some(9), 1)));
    store.check_writable().unwrap();
}

#[test]
fn a_store_made_with_another_segment_size_still_opens() {
    let dir = tempfile::tempdir().unwrap();
    // As sled's defaults made it (earlier versions of lockoutd).
    drop(support::raw_sled(dir.path(), 512 * 1024));
    let store = support::when_released(dir.path(), || Store::open(dir.path(), 16 << 20));
    store.check_writable().unwrap();
}

/// Everything a store holds, read through its API: states, policies, outbox, both lock
/// indexes and the checkpoint.
type Dump = (
    Vec<(String, String, UserState)>,
    Vec<(String, Policy)>,
    Vec<OutboxEntry>,
    Vec<(String, u64)>,
    Vec<String>,
    (u64, u64),
);

fn dump(s: &Store) -> Dump {
    let locked =
        ["a", "b"].iter().flat_map(|t| s.locked_after(t, None).map(move |r| format!("{t}/{}", r.unwrap().0))).collect();
    (
        s.all_users().map(Result::unwrap).collect(),
        s.all_policies().map(Result::unwrap).collect(),
        s.outbox().unwrap(),
        s.due_expiries(u64::MAX, usize::MAX).unwrap().into_iter().map(|d| (d.user, d.locked_until)).collect(),
        locked,
        s.checkpoint_at().unwrap(),
    )
}

mod absorb {
    use super::*;
    use proptest::prelude::*;

    const USERS: [(&str, &str); 4] = [("a", "u1"), ("a", "u2"), ("b", "u1"), ("b", "u3")];

    /// A state with or without a lock, timed or not.
    fn state() -> impl Strategy<Value = UserState> {
        prop_oneof![
            Just(UserState::default()),
            (1u64..4, 1u128..4).prop_map(|(t, id)| locked(Some(t * 1_000), id)),
            (1u128..4).prop_map(|id| locked(None, id)),
            (1u32..5).prop_map(|n| UserState { lock_count: n, ..UserState::default() }),
        ]
    }

    /// One commit's new states (a user at most once), policies and outbox entries, as
    /// `(user index, state)`, `(tenant "a"?, max_failures)` and a count.
    type Part = (Vec<(usize, UserState)>, Vec<(bool, u32)>, usize);

    fn part() -> impl Strategy<Value = Part> {
        (
            proptest::collection::btree_map(0..USERS.len(), state(), 0..=USERS.len())
                .prop_map(|m| m.into_iter().collect::<Vec<_>>()),
            proptest::collection::vec((any::<bool>(), 1u32..9), 0..3),
            0usize..3,
        )
    }

    /// The commit of `part` on top of `current` (the users' states so far), which it updates.
    fn commit_of((states, policies, outbox): Part, current: &mut [UserState; 4], seq: u64) -> Commit {
        Commit {
            states: states
                .into_iter()
                .map(|(i, s)| {
                    let before = LockIndex::of(&current[i]);
                    current[i] = s.clone();
                    change(USERS[i].0, USERS[i].1, before, s)
                })
                .collect(),
            policies: policies
                .into_iter()
                .map(|(a, n)| ((if a { "a" } else { "b" }).to_owned(), Policy { max_failures: n, ..Policy::default() }))
                .collect(),
            outbox: (0..outbox)
                .map(|i| OutboxEntry {
                    stream: OutboxStream::Notices,
                    event_seq: seq,
                    index: i as u32,
                    subject: format!("n.{seq}.{i}"),
                    headers: vec![],
                    payload: vec![i as u8],
                })
                .collect(),
            checkpoint: seq,
            checkpoint_time: seq * 10,
            ..Commit::default()
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        /// Committing `first.absorb(second)` leaves the store exactly as committing `first`
        /// and then `second` does, whatever the states and locks before and in between.
        #[test]
        fn one_absorbed_commit_equals_the_two_in_turn(start in part(), first in part(), second in part()) {
            let (_d1, one) = open();
            let (_d2, two) = open();
            let mut current: [UserState; 4] = Default::default();
            let base = commit_of(start, &mut current, 1);
            let first = commit_of(first, &mut current, 2);
            let second = commit_of(second, &mut current, 3);
            for s in [&one, &two] {
                s.commit(&base).unwrap();
            }
            one.commit(&first).unwrap();
            one.commit(&second).unwrap();
            let mut merged = first;
            merged.absorb(second);
            two.commit(&merged).unwrap();
            prop_assert_eq!(dump(&one), dump(&two));
        }
    }
}

/// A default state stored by a lockoutd from before default states were deleted digests as no
/// state at all: an upgraded store still verifies against a rebuild.
#[test]
fn a_stored_default_state_digests_as_none() {
    let old_dir = tempfile::tempdir().unwrap();
    {
        let db = support::raw_sled(old_dir.path(), lockout_store::SEGMENT_SIZE);
        let mut k = vec![b'u'];
        k.extend(lockout_store::user_key("acme", "ghost"));
        db.insert(k, lockout_store::state_codec::encode(&UserState::default())).unwrap();
        db.flush().unwrap();
    }
    let old = support::when_released(old_dir.path(), || Store::open(old_dir.path(), 16 << 20));
    let (_d, empty) = open();
    assert_eq!(old.all_users().count(), 1, "the key is there");
    assert_eq!(old.digest("acme").unwrap(), empty.digest("acme").unwrap());
}

/// IP blocks and counts (contract v2): a block is indexed by its end until it ends; a count
/// holding a decided block is listed as pending until the block is folded, also after the
/// store is reopened (a restart appends it then); an empty count is deleted; a merged commit
/// leaves the store as its parts in turn would.
#[test]
fn ip_blocks_and_counts_are_indexed_and_survive_a_reopen() {
    use lockout_core::ip::{IpBlockState, IpCount};
    use lockout_proto::event::IpBlock;
    use lockout_store::{IpBlockChange, IpCountChange};
    let (dir, store) = open();
    let decided = IpBlock {
        id: Uuid::from_u128(9),
        at: 1_000,
        tenant: "acme".into(),
        ip: "203.0.113.66".into(),
        failures: 3,
        users: 3,
        sample_users: vec!["a".into()],
        blocked_until: Some(61_000),
    };
    let count = |pending: bool| IpCount {
        failures: vec![(1_000, 7)],
        sample_users: vec!["a".into()],
        pending: pending.then(|| Box::new(decided.clone())),
    };
    let change =
        |was_pending, count| IpCountChange { tenant: "acme".into(), ip: "203.0.113.66".into(), was_pending, count };
    let block =
        IpBlockState { block_event: decided.id, blocked_at: 1_100, blocked_until: Some(61_000), failures: 3, users: 3 };
    let first = Commit {
        ip_counts: vec![change(false, count(true))],
        checkpoint: 1,
        checkpoint_time: 1_000,
        ..Commit::default()
    };
    store.commit(&first).unwrap();
    store.flush().unwrap();
    drop(store);
    let store = Store::open(dir.path(), 1 << 20).unwrap();
    assert_eq!(store.pending_ip_blocks(10).unwrap(), vec![decided.clone()], "the decision survives a restart");

    // The block's event folded, then (merged into one commit) the block ended.
    let mut folded = Commit {
        ip_blocks: vec![IpBlockChange {
            tenant: "acme".into(),
            ip: "203.0.113.66".into(),
            before: None,
            after: Some(block.clone()),
        }],
        ip_counts: vec![change(true, count(false))],
        checkpoint: 2,
        checkpoint_time: 1_100,
        ..Commit::default()
    };
    assert_eq!(store.due_ip_expiries(u64::MAX, 10).unwrap(), vec![]);
    store.commit(&folded).unwrap();
    assert!(store.pending_ip_blocks(10).unwrap().is_empty());
    assert_eq!(store.ip_block("acme", "203.0.113.66").unwrap(), Some(block.clone()));
    assert_eq!(
        store.due_ip_expiries(61_000, 10).unwrap(),
        vec![("acme".to_owned(), "203.0.113.66".to_owned(), 61_000, decided.id)]
    );
    assert_eq!(store.due_ip_expiries(60_999, 10).unwrap(), vec![], "not due before its end");
    let ended = Commit {
        ip_blocks: vec![IpBlockChange {
            tenant: "acme".into(),
            ip: "203.0.113.66".into(),
            before: Some(block),
            after: None,
        }],
        ip_counts: vec![change(false, IpCount::default())],
        checkpoint: 3,
        checkpoint_time: 61_000,
        ..Commit::default()
    };
    // Merged from before the block: as committing both in turn.
    let (dir2, merged_store) = open();
    merged_store.commit(&first).unwrap();
    folded.absorb(ended.clone());
    merged_store.commit(&folded).unwrap();
    store.commit(&ended).unwrap();
    for s in [&store, &merged_store] {
        assert_eq!(s.ip_block("acme", "203.0.113.66").unwrap(), None);
        assert_eq!(s.ip_count("acme", "203.0.113.66").unwrap(), None, "an empty count is deleted");
        assert_eq!(s.due_ip_expiries(u64::MAX, 10).unwrap(), vec![]);
        assert!(s.pending_ip_blocks(10).unwrap().is_empty());
        assert_eq!(s.ip_count_bytes().unwrap(), (0, 0));
    }
    drop(dir2);
}
