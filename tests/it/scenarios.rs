//! Scenarios from the vendor help pages the service started from (Kaseya BMS, Autotask PSA, a
//! business system), end to end, that the service tests do not already cover.

use std::time::Duration;

use lockout_proto::codec::{self, Encoding};
use lockout_proto::event::{Attempt, Factor, Outcome};
use lockout_proto::notice::How;
use lockout_proto::Notice;
use serde_json::json;

use crate::support::{attempt_body, next_notice, Lockout};

fn attempt(
    tenant: &str,
    user: &str,
    outcome: Outcome,
    factor: Factor,
    client: &str,
    credential: Option<&str>,
) -> Attempt {
    Attempt {
        factor,
        client: Some(client.into()),
        credential: credential.map(Into::into),
        ..attempt_body(tenant, user, outcome, "192.0.2.10")
    }
}

/// Issue 3: locks that ran out while lockoutd was down expire right after start.
#[tokio::test]
async fn a_lock_that_ran_out_while_down_expires_right_after_start() {
    let mut l = Lockout::start().await;
    let r = l.call("acme", "lock", json!({"user": "erin", "actor": "ops", "seconds": 1})).await.unwrap();
    let until = r["locked_until"].as_u64().unwrap();
    l.stop_daemon().await.unwrap();
    // The second passes while lockoutd is down (by the server's clock, which ends locks).
    let left = until.saturating_sub(lockout_nats::clock::now_ms());
    tokio::time::sleep(Duration::from_millis(left + 200)).await;
    let mut live = l.notice_consumer().await;
    l.start_daemon().await;
    let (Notice::Unlocked(u), _) = next_notice(&mut live, 10).await else { panic!("expected unlocked") };
    assert_eq!((u.how, u.at, u.user.as_str()), (How::Expired, until, "erin"));
    assert_eq!(l.status("acme", "erin").await["locked"], false);
}

/// A business system and Kaseya BMS MFA: MFA failures count, an admin MFA reset removes them
/// and requires re-enrolment until a successful `mfa` attempt; notices in JSON when so
/// configured.
#[tokio::test]
async fn bms_mfa_reset_removes_mfa_failures_and_requires_reenrolment() {
    let l = Lockout::start_with(Encoding::Json).await;
    let mut live = l.notice_consumer().await;
    for factor in [Factor::Mfa, Factor::RecoveryCode, Factor::Password] {
        l.publish_attempt(&attempt("bms", "frank", Outcome::Failure, factor, "BMS web", None), Encoding::Postcard)
            .await;
    }
    let seq = l
        .publish_attempt(&attempt("bms", "frank", Outcome::Failure, Factor::Mfa, "BMS web", None), Encoding::Json)
        .await;
    l.wait_folded(seq).await;
    assert_eq!(l.status("bms", "frank").await["failures"], 4);
    let r =
        l.call("bms", "mfa_reset", json!({"user": "frank", "actor": "admin1", "reason": "lost phone"})).await.unwrap();
    assert_eq!((r["failures"].as_u64(), r["mfa_reenrol"].as_bool()), (Some(1), Some(true)));
    let (Notice::MfaReset(n), h) = next_notice(&mut live, 10).await else { panic!("expected mfa_reset") };
    assert_eq!(n.actor, "admin1");
    assert_eq!(h.get(codec::CONTENT_TYPE).unwrap().as_str(), codec::JSON);
    // The raw notice is JSON with the field names of `docs/protocol.md`.
    let raw = l.stream_messages("LOCKOUT_NOTICES").await;
    let v: serde_json::Value = serde_json::from_slice(&raw[0].payload).unwrap();
    assert_eq!(v["actor"], "admin1");
    assert_eq!(v["event_id"], r["event_id"]);
    let seq = l
        .publish_attempt(&attempt("bms", "frank", Outcome::Success, Factor::Mfa, "BMS web", None), Encoding::Json)
        .await;
    l.wait_folded(seq).await;
    let s = l.status("bms", "frank").await;
    assert_eq!((s["mfa_reenrol"].as_bool(), s["failures"].as_u64()), (Some(false), Some(0)));
}

/// Kaseya BMS and Autotask PSA: an integration keeps retrying one stale password. With
/// `dedupe_credential` the same fingerprint counts once and never locks the account; without
/// it the account locks after 5 and the notice names the integration.
#[tokio::test]
async fn psa_stale_integration_with_and_without_dedupe_credential() {
    let l = Lockout::start().await;
    l.call("deduped", "policy_set", json!({"actor": "admin", "policy": {"dedupe_credential": true}})).await.unwrap();
    let mut last = 0;
    for tenant in ["deduped", "plain"] {
        for _ in 0..8 {
            let a = attempt(tenant, "grace", Outcome::Failure, Factor::Password, "Autotask sync", Some("fp:0d6c1e"));
            last = l.publish_attempt(&a, Encoding::Json).await;
        }
    }
    l.wait_folded(last).await;
    let deduped = l.status("deduped", "grace").await;
    assert_eq!((deduped["locked"].as_bool(), deduped["failures"].as_u64()), (Some(false), Some(1)));
    let plain = l.status("plain", "grace").await;
    assert_eq!((plain["locked"].as_bool(), plain["failures"].as_u64()), (Some(true), Some(5)));
    let notices = l.wait_notices(1).await;
    assert_eq!(notices.len(), 1);
    let Notice::Locked(n) = &notices[0].0 else { panic!("expected locked") };
    assert_eq!(n.tenant, "plain");
    // Untraced events still give their notices a traceparent: the trace id is the event's id.
    let tp = notices[0].1.get("traceparent").expect("a traceparent on every notice").as_str().to_owned();
    assert_eq!(tp.split('-').nth(1), Some(n.event_id.simple().to_string().as_str()), "{tp}");
    assert_eq!(n.client.as_deref(), Some("Autotask sync"));
    assert!(n.message.ends_with("from 192.0.2.10 (Autotask sync)."), "{}", n.message);
}

/// Issue 3: SIGTERM drains and exits 0; the next start continues where it stopped.
#[tokio::test]
async fn sigterm_drains_and_exits_zero() {
    let mut l = Lockout::start_process().await;
    let mut last = 0;
    for _ in 0..3 {
        last = l
            .publish_attempt(&attempt("acme", "heidi", Outcome::Failure, Factor::Password, "VPN", None), Encoding::Json)
            .await;
    }
    l.wait_folded(last).await;
    l.stop_daemon().await.expect("lockoutd exits 0 on SIGTERM");
    l.spawn_daemon().await;
    assert_eq!(l.status("acme", "heidi").await["failures"], 3);
}

/// Lockout-DoS: attempts while locked neither extend a timed lock nor count, so however hard
/// an attacker keeps trying, the lock ends at its `locked_until` and the next one takes a
/// full `max_failures` again. The attempts stay visible as blocked attempts.
#[tokio::test]
async fn an_attacker_cannot_extend_a_timed_lock() {
    let l = Lockout::start().await;
    let policy = json!({"actor": "sec", "policy": {"max_failures": 3, "lock_seconds": 3}});
    l.call("acme", "policy_set", policy).await.unwrap();
    let mut live = l.notice_consumer().await;
    async fn hammer(l: &Lockout, n: usize) -> u64 {
        let mut last = 0;
        for _ in 0..n {
            let a = attempt("acme", "ivan", Outcome::Failure, Factor::Password, "botnet", None);
            last = l.publish_attempt(&a, Encoding::Postcard).await;
        }
        last
    }
    hammer(&l, 3).await;
    let (Notice::Locked(locked), _) = next_notice(&mut live, 10).await else { panic!("expected locked") };
    let until = locked.locked_until.expect("a timed lock");
    // Keep trying while locked, until a second before the lock runs out (a margin for slow
    // machines: an attempt folded after `locked_until` would rightly end the lock).
    let mut tries = 0;
    while lockout_nats::clock::now_ms() + 1_000 < until {
        let seq = hammer(&l, 5).await;
        tries += 5;
        l.wait_folded(seq).await;
    }
    let s = l.status("acme", "ivan").await;
    assert_eq!((s["locked_until"].as_u64(), s["failures"].as_u64()), (Some(until), Some(3)), "{s}");
    assert!(tries > 0);
    let (Notice::Unlocked(u), _) = next_notice(&mut live, 10).await else { panic!("expected unlocked") };
    assert_eq!((u.how, u.at), (How::Expired, until), "it ends when it said it would");
    let s = l.status("acme", "ivan").await;
    assert_eq!((s["locked"].as_bool(), s["failures"].as_u64()), (Some(false), Some(0)), "{s}");
}
