//! Commit lingering (`--commit-linger-ms`): a batch nobody waits for is held, unacknowledged,
//! and committed with the next one; a notice, a service write or a stop commits it at once.
//! The linger here is a minute, so "not yet committed" cannot be a race.

use std::time::{Duration, Instant};

use lockout_proto::event::Outcome;
use lockout_proto::Notice;
use serde_json::json;

use crate::support::Lockout;

const A_MINUTE: Duration = Duration::from_secs(60);

/// Waits until lockoutd's consumer has had every event delivered and holds `n` of them
/// unacknowledged (folded, their commit held).
async fn wait_held(l: &Lockout, n: u64) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut c: async_nats::jetstream::consumer::PullConsumer =
            l.js.get_stream("LOCKOUT_EVENTS").await.unwrap().get_consumer("lockoutd").await.unwrap();
        let info = c.info().await.unwrap();
        if info.num_pending == 0 && info.num_ack_pending == n as usize {
            return;
        }
        assert!(Instant::now() < deadline, "expected {n} held events, consumer: {info:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn quiet_batches_linger_until_a_notice_a_write_or_a_stop_commits_them() {
    let mut l = Lockout::start_lingering(A_MINUTE).await;
    let start = l.folded_seq().await;

    // Four failures: no notice, nobody waits; folded, held, not committed.
    let mut last = 0;
    for i in 1..=4 {
        last = l.attempt("acme", "bob", Outcome::Failure, "192.0.2.7", Some("PSA sync")).await;
        wait_held(&l, i).await;
    }
    assert_eq!(l.folded_seq().await, start, "nothing committed while the batches linger");
    assert_eq!(l.status("acme", "bob").await["failures"], 0);

    // The fifth locks: the `locked` notice goes out with all five committed at once.
    let fifth = l.attempt("acme", "bob", Outcome::Failure, "192.0.2.7", Some("PSA sync")).await;
    let notices = l.wait_notices(1).await;
    let Notice::Locked(n) = &notices[0].0 else { panic!("expected locked, got {:?}", notices[0].0) };
    assert_eq!((n.user.as_str(), n.failures), ("bob", 5));
    assert_eq!(l.folded_seq().await, fifth);
    assert!(fifth > last);
    wait_held(&l, 0).await;

    // A success for carol lingers; a service write (which waits for its event) commits both.
    l.attempt("acme", "carol", Outcome::Success, "192.0.2.8", None).await;
    wait_held(&l, 1).await;
    let r = l.call("acme", "unlock", json!({"user": "bob", "actor": "ops"})).await.unwrap();
    assert_eq!(r["locked"], false);
    wait_held(&l, 0).await;

    // A stop commits what lingers: after a restart it is folded, not redelivered.
    let dave = l.attempt("acme", "dave", Outcome::Failure, "192.0.2.9", None).await;
    wait_held(&l, 1).await;
    l.stop_daemon().await.unwrap();
    l.start_daemon().await;
    assert_eq!(l.folded_seq().await, dave);
    assert_eq!(l.status("acme", "dave").await["failures"], 1);
}
