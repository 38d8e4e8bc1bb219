//! Restarts, kill -9, nats-server restarts and rebuilds: nothing lost, nothing twice.

use std::collections::{BTreeMap, HashSet};

use lockout_core::UserState;
use lockout_proto::codec::{self, Encoding};
use lockout_proto::event::Outcome::Failure;
use lockout_proto::event::{Attempt, Event, Factor, Outcome};
use lockout_proto::{Notice, Policy, Subjects};
use lockout_store::Store;
use serde_json::json;
use uuid::Uuid;

use crate::support::{attempt_body, Lockout};

/// Folds the whole events stream with the core alone: what every store must hold.
async fn expected_states(l: &Lockout) -> (BTreeMap<(String, String), UserState>, usize) {
    let subjects = Subjects::default();
    let mut states: BTreeMap<(String, String), UserState> = BTreeMap::new();
    let mut notices = 0;
    for m in l.stream_messages("LOCKOUT_EVENTS").await {
        let subject = subjects.parse_event(&m.subject).unwrap();
        let enc = Encoding::from_content_type(m.headers.get(codec::CONTENT_TYPE).map(|v| v.as_str())).unwrap();
        let event = Event::decode_checked(&subject, enc, &m.payload).unwrap();
        let time = u64::try_from(m.time.unix_timestamp_nanos() / 1_000_000).unwrap();
        let key = (event.tenant().to_owned(), event.user().unwrap().to_owned());
        let state = states.remove(&key).unwrap_or_default();
        let f = lockout_core::fold(&Policy::default(), state, &event, time);
        notices += f.notices.len();
        states.insert(key, f.state);
    }
    // A user whose events left the default state (only successes, say) is not stored.
    states.retain(|_, s| *s != UserState::default());
    (states, notices)
}

fn stored_states(dir: &std::path::Path) -> BTreeMap<(String, String), UserState> {
    let store = Store::open(dir, 16 << 20).unwrap();
    store.all_users().map(|r| r.unwrap()).map(|(t, u, s)| ((t, u), s)).collect()
}

fn assert_unique_ids(notices: &[(Notice, async_nats::HeaderMap)]) {
    let mut ids = HashSet::new();
    for (n, _) in notices {
        assert!(ids.insert(n.id()), "notice {} appears twice", n.id());
    }
}

fn load(n: usize, users: usize) -> Vec<Attempt> {
    (0..n)
        .map(|i| Attempt {
            id: Uuid::now_v7(),
            at: 1,
            tenant: if i % 3 == 0 { "globex".into() } else { "acme".into() },
            user: format!("user{}", (i * 7919) % users),
            outcome: if i % 11 == 0 { Outcome::Success } else { Outcome::Failure },
            factor: Factor::Password,
            source_ip: format!("198.51.100.{}", i % 7),
            client: Some(["IT Glue", "VSA", "Outlook"][i % 3].into()),
            credential: None,
            account: None,
        })
        .collect()
}

/// kill -9 at several points of a 10k-event run: every event folded exactly once, every
/// notice exactly once by id.
#[tokio::test]
async fn kill_9_during_a_10k_event_run_loses_nothing() {
    let mut l = Lockout::start_process().await;
    let events = load(10_000, 300);
    let mut last = 0;
    for (i, chunk) in events.chunks(2_500).enumerate() {
        let mut acks = Vec::with_capacity(chunk.len());
        for a in chunk {
            let subject = format!(
                "lockout.events.{}.u.{}.attempt",
                a.tenant,
                lockout_proto::UserId::parse(&a.user).unwrap().token()
            );
            let mut h = async_nats::HeaderMap::new();
            h.insert(codec::NATS_MSG_ID, a.id.to_string().as_str());
            acks.push(
                l.js.publish_with_headers(subject, h, codec::encode(Encoding::Postcard, a).into()).await.unwrap(),
            );
        }
        for ack in acks {
            last = ack.await.unwrap().sequence;
        }
        if i < 3 {
            // Let it get partway, then pull the plug.
            let target = last - 1_000;
            while l.folded_seq().await < target {
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            }
            l.kill_daemon();
            l.spawn_daemon().await;
        }
    }
    l.wait_folded(last).await;
    // Give the outbox of the last batch a moment, then stop cleanly to read the store.
    let (expected, expected_notices) = expected_states(&l).await;
    let notices = l.wait_notices(expected_notices).await;
    l.stop_daemon().await.unwrap();
    assert_eq!(notices.len(), expected_notices, "every notice exactly once");
    assert_unique_ids(&notices);
    let stored = stored_states(&l.config().data_dir);
    assert_eq!(stored.len(), expected.len());
    assert!(stored == expected, "every user's state equals the fold of all events");
}

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
    l.nats.restart();
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
    l.nats.kill_and_restart();
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
    // The history: carol locked for 1 s, a backlog of other users' attempts, then the
    // `expired` event that ended the lock (written with an id of its own, so that a second
    // one appended by the timer would not be dropped as a duplicate).
    let lock = lockout_proto::event::Lock {
        id: Uuid::now_v7(),
        at: lockoutd::now_ms(),
        tenant: "acme".into(),
        user: "carol".into(),
        actor: "ops".into(),
        reason: None,
        seconds: Some(1),
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
        at: lockoutd::now_ms(),
        tenant: "acme".into(),
        user: "carol".into(),
        lock_event: lock.id,
    };
    let expired_subject = subjects.user_event(&acme, &carol, lockout_proto::event::EventKind::Expired);
    tokio::time::sleep(std::time::Duration::from_millis(1_100)).await; // the lock has run out
    let last = l.publish_raw(&expired_subject, Default::default(), codec::encode(Encoding::Postcard, &expired)).await;

    // Rebuild from an empty data dir: the lock is due from the first batch on.
    l.start_daemon().await;
    l.wait_folded(last).await;
    assert_eq!(l.status("acme", "carol").await["locked"], false);
    assert_eq!(count_events(&l, "lockout.events.*.u.*.expired").await, 1, "no second expired event");
}
