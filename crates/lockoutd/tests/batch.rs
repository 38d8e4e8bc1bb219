//! The projector's batch fold against a real sled store, without NATS.

use lockout_proto::codec::{self, Encoding};
use lockout_proto::event::{Attempt, Factor, Outcome};
use lockout_proto::Subjects;
use lockout_store::Store;
use lockoutd::outbox::Floors;
use lockoutd::projector::{BatchFolder, Incoming};
use uuid::Uuid;

fn attempt(n: u128) -> Vec<u8> {
    codec::encode(
        Encoding::Postcard,
        &Attempt {
            id: Uuid::from_u128(n),
            at: 0,
            tenant: "acme".into(),
            user: "alice".into(),
            outcome: Outcome::Failure,
            factor: Factor::Password,
            source_ip: "192.0.2.1".into(),
            client: None,
            credential: None,
            account: None,
        },
    )
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
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), 8 << 20).unwrap();
    let mut folder =
        BatchFolder::new(store.clone(), Subjects::default(), Encoding::Postcard, Floors::default()).unwrap();
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
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), 8 << 20).unwrap();
    let mut folder =
        BatchFolder::new(store.clone(), Subjects::default(), Encoding::Postcard, Floors::default()).unwrap();
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
