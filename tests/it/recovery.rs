//! Restarts, kill -9, nats-server restarts and rebuilds: nothing lost, nothing twice.

use lockout_proto::codec::{self, Encoding};
use lockout_proto::event::Outcome;
use lockout_proto::event::Outcome::Failure;
use lockout_proto::Subjects;
use serde_json::json;
use uuid::Uuid;

use crate::oracle::{expected_states, stored_states};
use crate::support::{attempt_body, Lockout};

/// Rebuild: an empty data dir against the existing stream folds everything again, to the
/// same digest, and publishes no notice twice.
#[tokio::test]
async fn empty_data_dir_rebuilds_the_same_state_and_resends_nothing() {
    let mut l = Lockout::start().await;
    for _ in 0..5 {
        l.attempt("acme", "alice", Failure, "203.0.113.7", Some("IT Glue")).await;
    }
    l.attempt("acme", "bob", Failure, "203.0.113.8", None).await;
    l.call("acme", "lock", json!({"user": "carol", "actor": "ops", "seconds": 3600})).await.unwrap();
    l.call("acme", "unlock", json!({"user": "alice", "actor": "ops"})).await.unwrap();
    let bad = l.publish_raw("lockout.events.acme.u.YQ==.attempt", Default::default(), vec![1, 2, 3]).await;
    l.wait_folded(bad).await;
    // alice locked, carol locked, alice unlocked.
    let notices_before = l.wait_notices(3).await;
    assert_eq!(notices_before.len(), 3);
    let dead_before = l.stream_messages("LOCKOUT_DEAD").await.len();
    assert_eq!(dead_before, 1);
    let digest = l.call("acme", "digest", json!({})).await.unwrap();
    l.stop_daemon().await.unwrap();

    std::fs::remove_dir_all(l.config().data_dir).unwrap();
    l.start_daemon().await;
    l.wait_folded(bad).await;
    assert_eq!(l.call("acme", "digest", json!({})).await.unwrap(), digest, "byte-identical states");
    let s = l.status("acme", "carol").await;
    assert_eq!(s["locked"], true);
    l.stop_daemon().await.unwrap();
    assert_eq!(l.notices().await, notices_before, "no notice re-sent");
    assert_eq!(l.stream_messages("LOCKOUT_DEAD").await.len(), 1, "no dead letter re-sent");
}

/// Publishes one failed attempt for dave, retrying until the (restarting) server acks it.
async fn publish_until_acked(l: &Lockout) -> u64 {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let a = attempt_body("acme", "dave", Failure, "192.0.2.1");
    loop {
        // The same Nats-Msg-Id on every try: a retry after a lost ack is not stored twice.
        let mut h = async_nats::HeaderMap::new();
        h.insert(codec::NATS_MSG_ID, a.id.to_string().as_str());
        let payload = codec::encode(Encoding::Postcard, &a);
        if let Ok(f) = l.js.publish_with_headers("lockout.events.acme.u.ZGF2ZQ.attempt", h, payload.into()).await {
            if let Ok(ack) = f.await {
                return ack.sequence;
            }
        }
        assert!(std::time::Instant::now() < deadline, "nats-server did not come back");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// A nats-server restart while lockoutd runs: it reconnects and continues, nothing lost.
#[tokio::test]
async fn nats_server_restart_while_running_loses_nothing() {
    let mut l = Lockout::start().await;
    for _ in 0..3 {
        l.attempt("acme", "dave", Failure, "192.0.2.1", None).await;
    }
    l.nats.one().restart();
    publish_until_acked(&l).await;
    let seq = publish_until_acked(&l).await;
    l.wait_ready().await;
    l.wait_folded(seq).await;
    let s = l.status("acme", "dave").await;
    assert_eq!((s["locked"].as_bool(), s["failures"].as_u64()), (Some(true), Some(5)));
}

/// postmortem: a SIGKILLed nats-server may lose acknowledged events and reuse their
/// sequences; lockoutd once skipped the new events as redeliveries. Whatever the stream holds
/// afterwards, the store must equal its fold.
#[tokio::test]
async fn nats_server_kill_9_while_running_skips_no_event() {
    let mut l = Lockout::start().await;
    for _ in 0..3 {
        l.attempt("acme", "dave", Failure, "192.0.2.1", None).await;
    }
    l.wait_folded(3).await;
    l.nats.one().kill_and_restart();
    publish_until_acked(&l).await;
    let seq = publish_until_acked(&l).await;
    l.wait_ready().await;
    l.wait_folded(seq).await;
    let stream_failures = l.stream_messages("LOCKOUT_EVENTS").await.len() as u64;
    let (expected, _) = expected_states(&l).await;
    l.stop_daemon().await.unwrap();
    let stored = stored_states(&l.config().data_dir);
    // lockoutd folded 3 events before the kill and 2 after it, whatever the server lost or
    // renumbered: dave is locked with 5 failures.
    let dave = &stored[&("acme".to_owned(), "dave".to_owned())];
    assert_eq!((dave.is_locked(), dave.failures()), (true, 5));
    if stream_failures == 5 {
        assert!(stored == expected, "with nothing lost, the store equals the fold of the stream");
    }
}

/// Messages of `LOCKOUT_EVENTS` on subjects matching `filter`.
async fn count_events(l: &Lockout, filter: &str) -> usize {
    use futures::StreamExt as _;
    let s = l.js.get_stream("LOCKOUT_EVENTS").await.unwrap();
    let mut subjects = s.info_with_subjects(filter).await.unwrap();
    let mut n = 0;
    while let Some(item) = subjects.next().await {
        n += item.unwrap().1;
    }
    n
}

/// postmortem: on a rebuild the expiry timer ran while the backlog was still being folded,
/// saw a lock whose `expired` event was further down the stream, and appended a second one
/// (JetStream's duplicate window only hides that within two minutes of the first).
#[tokio::test]
async fn a_rebuild_appends_no_expired_event_the_history_already_has() {
    let mut l = Lockout::start().await;
    l.stop_daemon().await.unwrap();
    let subjects = Subjects::default();
    let (acme, carol) = (lockout_proto::Tenant::parse("acme").unwrap(), lockout_proto::UserId::parse("carol").unwrap());
    // The history: carol locked for a minute, a backlog of other users' attempts, then the
    // `expired` event that ended the lock (written with an id of its own, so that a second
    // one appended by the timer would not be dropped as a duplicate).
    let lock = lockout_proto::event::Lock {
        id: Uuid::now_v7(),
        at: lockout_nats::clock::now_ms(),
        tenant: "acme".into(),
        user: "carol".into(),
        actor: "ops".into(),
        reason: None,
        seconds: Some(60),
        caller: None,
    };
    let mut h = async_nats::HeaderMap::new();
    h.insert(codec::NATS_MSG_ID, lock.id.to_string().as_str());
    let lock_subject = subjects.user_event(&acme, &carol, lockout_proto::event::EventKind::Lock);
    l.publish_raw(&lock_subject, h, codec::encode(Encoding::Postcard, &lock)).await;
    // In windows: async-nats holds back publishes while too many acks are outstanding.
    for window in 0..20 {
        let mut acks = Vec::new();
        for i in 0..1_000 {
            let user = format!("filler{}", (window * 1_000 + i) % 2_000);
            let a = attempt_body("acme", &user, Outcome::Success, "192.0.2.1");
            let subject = subjects.user_event(
                &acme,
                &lockout_proto::UserId::parse(&a.user).unwrap(),
                lockout_proto::event::EventKind::Attempt,
            );
            acks.push(l.js.publish(subject, codec::encode(Encoding::Postcard, &a).into()).await.unwrap());
        }
        for ack in acks {
            ack.await.unwrap();
        }
    }
    let expired = lockout_proto::event::Expired {
        id: Uuid::now_v7(),
        at: lockout_nats::clock::now_ms(),
        tenant: "acme".into(),
        user: "carol".into(),
        lock_event: lock.id,
    };
    let expired_subject = subjects.user_event(&acme, &carol, lockout_proto::event::EventKind::Expired);
    let last = l.publish_raw(&expired_subject, Default::default(), codec::encode(Encoding::Postcard, &expired)).await;

    // Rebuild from an empty data dir, a minute later: the lock is due from the first batch on.
    l.advance_clock(61_000);
    l.start_daemon().await;
    l.wait_folded(last).await;
    assert_eq!(l.status("acme", "carol").await["locked"], false);
    assert_eq!(count_events(&l, "lockout.events.*.u.*.expired").await, 1, "no second expired event");
}
