//! The oracle of the fault tests: what the store must hold after any run, computed from the
//! events stream with the core fold alone, and a load that publishes like many gateways.

use std::collections::{BTreeMap, HashSet};

use lockout_core::UserState;
use lockout_proto::codec::{self, Encoding};
use lockout_proto::event::{Attempt, Event, Factor, Outcome};
use lockout_proto::{Notice, Policy, Subjects};
use lockout_store::Store;
use uuid::Uuid;

use crate::support::Lockout;

/// Folds the whole events stream with the core alone: what every store must hold.
pub async fn expected_states(l: &Lockout) -> (BTreeMap<(String, String), UserState>, usize) {
    expected_from(&l.js).await
}

/// [`expected_states`] of the events stream `js` reaches (several lockoutd processes).
pub async fn expected_from(js: &async_nats::jetstream::Context) -> (BTreeMap<(String, String), UserState>, usize) {
    let subjects = Subjects::default();
    let mut states: BTreeMap<(String, String), UserState> = BTreeMap::new();
    let mut notices = 0;
    for m in crate::support::stream_messages(js, "LOCKOUT_EVENTS").await {
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

pub fn stored_states(dir: &std::path::Path) -> BTreeMap<(String, String), UserState> {
    let store = Store::open(dir, 16 << 20).unwrap();
    store.all_users().map(|r| r.unwrap()).map(|(t, u, s)| ((t, u), s)).collect()
}

pub fn assert_unique_ids(notices: &[(Notice, async_nats::HeaderMap)]) {
    let mut ids = HashSet::new();
    for (n, _) in notices {
        assert!(ids.insert(n.id()), "notice {} appears twice", n.id());
    }
}

pub fn load(n: usize, users: usize) -> Vec<Attempt> {
    (0..n)
        .map(|i| Attempt {
            id: Uuid::now_v7(),
            at: 1,
            tenant: if i % 3 == 0 { "globex".into() } else { "acme".into() },
            user: format!("user{}", (i * 7919) % users).into(),
            outcome: if i % 11 == 0 { Outcome::Success } else { Outcome::Failure },
            factor: Factor::Password,
            source_ip: format!("198.51.100.{}", i % 7).into(),
            client: Some(["IT Glue", "VSA", "Outlook"][i % 3].into()),
            credential: None,
            account: None,
            is_final: true,
        })
        .collect()
}

/// Publishes `events` as gateways do (postcard, `Nats-Msg-Id` = the event id), in windows of
/// awaited acks, retrying a window (the same ids: JetStream drops what it already has) until
/// the server takes it, through restarts and outages; returns the last stream sequence.
pub async fn publish(js: &async_nats::jetstream::Context, events: &[Attempt]) -> u64 {
    let mut last = 0;
    for window in events.chunks(500) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        last = loop {
            if let Some(seq) = publish_window(js, window).await {
                break seq;
            }
            assert!(std::time::Instant::now() < deadline, "nats-server took no events for 60 s");
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        };
    }
    last
}

async fn publish_window(js: &async_nats::jetstream::Context, window: &[Attempt]) -> Option<u64> {
    let mut acks = Vec::with_capacity(window.len());
    for a in window {
        let subject =
            format!("lockout.events.{}.u.{}.attempt", a.tenant, lockout_proto::UserId::parse(&a.user).unwrap().token());
        let mut h = async_nats::HeaderMap::new();
        h.insert(codec::NATS_MSG_ID, a.id.to_string().as_str());
        acks.push(js.publish_with_headers(subject, h, codec::encode(Encoding::Postcard, a).into()).await.ok()?);
    }
    let mut last = 0;
    for ack in acks {
        last = last.max(ack.await.ok()?.sequence);
    }
    Some(last)
}

/// After a run: the store equals the fold of every event, and every notice the fold implies
/// is in `LOCKOUT_NOTICES` exactly once. Stops lockoutd to read its store.
pub async fn assert_nothing_lost_nothing_twice(l: &mut Lockout) {
    let (expected, expected_notices) = expected_states(l).await;
    let notices = l.wait_notices(expected_notices).await;
    l.stop_daemon().await.unwrap();
    assert_eq!(notices.len(), expected_notices, "every notice exactly once");
    assert_unique_ids(&notices);
    let stored = stored_states(&l.config().data_dir);
    assert_eq!(stored.len(), expected.len(), "users with a state");
    assert!(stored == expected, "every user's state equals the fold of all events");
}
