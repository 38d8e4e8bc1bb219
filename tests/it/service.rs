//! The service, notices and expiry of `docs/protocol.md`, end to end.

use async_nats::HeaderMap;
use lockout_proto::codec::{self, Encoding};
use lockout_proto::command::{LockRequest, StatusRequest};
use lockout_proto::event::Outcome::{Failure, Success};
use lockout_proto::notice::How;
use lockout_proto::status::LockReason;
use lockout_proto::{Notice, Status, WriteReply};
use serde_json::json;
use uuid::Uuid;

use crate::support::{next_notice, Lockout};

const ALICE: &str = "alice@acme.com";

/// Kaseya BMS (defaults: 5 failures, 30 minutes) and a business system (admin unlock records
/// who).
#[tokio::test]
async fn bms_five_failures_lock_with_a_notice_and_an_admin_unlocks() {
    let l = Lockout::start().await;
    let mut live = l.notice_consumer().await;
    let mut last = 0;
    for _ in 0..5 {
        last = l.attempt("acme", ALICE, Failure, "203.0.113.7", Some("IT Glue")).await;
    }
    let (notice, h) = next_notice(&mut live, 10).await;
    let Notice::Locked(n) = notice else { panic!("expected locked, got {notice:?}") };
    assert_eq!(n.reason, LockReason::Failures);
    assert_eq!(n.failures, 5);
    assert_eq!(n.lock_seconds, Some(1800));
    assert_eq!(n.locked_until, Some(n.at + 1_800_000));
    assert_eq!(n.source_ip.as_deref(), Some("203.0.113.7"));
    assert_eq!(n.client.as_deref(), Some("IT Glue"));
    assert_eq!(n.sources.len(), 1);
    assert_eq!(
        n.message,
        "Your account has been locked for 30 minutes due to an excessive number of unsuccessful log in attempts from 203.0.113.7 (IT Glue)."
    );
    assert_eq!(h.get(codec::NATS_MSG_ID).unwrap().as_str(), n.id.to_string());
    assert_eq!(h.get(codec::EVENT_SEQ).unwrap().as_str(), last.to_string());
    assert_eq!(h.get(codec::CONTENT_TYPE).unwrap().as_str(), codec::POSTCARD);

    let s = l.status("acme", ALICE).await;
    assert_eq!(s["locked"], true);
    assert_eq!(s["reason"], "failures");
    assert_eq!(s["failures"], 5);
    assert_eq!(s["max_failures"], 5);
    assert_eq!(s["lock_count"], 1);
    assert_eq!(s["last_source_ip"], "203.0.113.7");
    assert_eq!(s["locked_at"].as_u64().unwrap(), n.at);

    let r =
        l.call("acme", "unlock", json!({"user": ALICE, "actor": "admin7", "reason": "called support"})).await.unwrap();
    assert_eq!(r["locked"], false);
    assert_eq!(r["unlocked_by"], "admin7");
    assert_eq!(r["failures"], 0);
    assert!(r["reason"].is_null() && r["locked_at"].is_null() && r["locked_until"].is_null());
    let event_id: Uuid = r["event_id"].as_str().unwrap().parse().unwrap();
    let (notice, _) = next_notice(&mut live, 10).await;
    let Notice::Unlocked(u) = notice else { panic!("expected unlocked, got {notice:?}") };
    assert_eq!((u.how, u.actor.as_deref(), u.event_id), (How::Admin, Some("admin7"), event_id));
}

/// A PMS/ORS product's worked example with seconds instead of minutes: the counter survives a
/// success, the lock expires by itself, and the counter restarts at 0.
#[tokio::test]
async fn pms_timed_lock_expires_with_an_expired_event_and_notice() {
    let l = Lockout::start().await;
    let p = l
        .call(
            "pms",
            "policy_set",
            json!({"actor": "sup", "policy": {"max_failures": 3, "lock_seconds": 1, "window_seconds": 300, "reset_on_success": false}}),
        )
        .await
        .unwrap();
    assert_eq!(p["max_failures"], 3);
    assert_eq!(p["max_lock_seconds"], 86400, "replies list every field");
    let mut live = l.notice_consumer().await;
    l.attempt("pms", "MW01", Failure, "198.51.100.4", None).await;
    l.attempt("pms", "MW01", Failure, "198.51.100.4", None).await;
    l.attempt("pms", "MW01", Success, "198.51.100.4", None).await;
    l.attempt("pms", "MW01", Failure, "198.51.100.4", None).await;
    let (Notice::Locked(locked), _) = next_notice(&mut live, 10).await else { panic!("expected locked") };
    assert_eq!(locked.failures, 3);
    let (Notice::Unlocked(unlocked), _) = next_notice(&mut live, 10).await else { panic!("expected unlocked") };
    assert_eq!(unlocked.how, How::Expired);
    assert_eq!(unlocked.actor, None);
    assert_eq!(unlocked.event_id, locked.event_id, "an expiry names the event that started the lock");
    assert_eq!(Some(unlocked.at), locked.locked_until);
    let s = l.status("pms", "MW01").await;
    assert_eq!((s["locked"].as_bool(), s["failures"].as_u64()), (Some(false), Some(0)));
    assert_eq!(s["unlocked_at"].as_u64(), locked.locked_until);
    assert!(s["unlocked_by"].is_null());
    // The service appended exactly one `expired` event naming the lock.
    let expired: Vec<_> =
        l.stream_messages("LOCKOUT_EVENTS").await.into_iter().filter(|m| m.subject.ends_with(".expired")).collect();
    assert_eq!(expired.len(), 1);
}

#[tokio::test]
async fn admin_lock_mfa_reset_and_idempotent_retries() {
    let l = Lockout::start().await;
    let mut live = l.notice_consumer().await;
    let id = Uuid::now_v7();
    let mut h = HeaderMap::new();
    h.insert(codec::NATS_MSG_ID, id.to_string().as_str());
    let body =
        serde_json::to_vec(&json!({"user": "bob", "actor": "root", "reason": "offboarding", "seconds": 7200})).unwrap();
    let first = l.call_raw("acme", "lock", Encoding::Json, body.clone(), h.clone()).await.unwrap();
    let again = l.call_raw("acme", "lock", Encoding::Json, body, h).await.unwrap();
    let first: WriteReply = codec::decode(Encoding::Json, &first, "reply").unwrap();
    let again: WriteReply = codec::decode(Encoding::Json, &again, "reply").unwrap();
    assert_eq!(first.event_id, id, "the request's Nats-Msg-Id becomes the event id");
    assert_eq!(first, again, "a retried command is not applied twice");
    assert_eq!((first.locked, first.reason), (true, Some(LockReason::Admin)));
    assert_eq!(first.locked_until, first.locked_at.map(|t| t + 7_200_000));
    let (Notice::Locked(n), _) = next_notice(&mut live, 10).await else { panic!("expected locked") };
    assert_eq!((n.actor.as_deref(), n.source_ip.as_deref(), n.event_id), (Some("root"), None, id));
    assert_eq!(n.message, "Your account has been locked by an administrator for 2 hours (reason: offboarding).");

    let r = l.call("acme", "mfa_reset", json!({"user": "bob", "actor": "root"})).await.unwrap();
    assert_eq!(
        (r["mfa_reenrol"].as_bool(), r["mfa_reset_by"].as_str(), r["locked"].as_bool()),
        (Some(true), Some("root"), Some(true))
    );
    let (Notice::MfaReset(m), _) = next_notice(&mut live, 10).await else { panic!("expected mfa_reset") };
    assert_eq!(m.actor, "root");
    let locked_notices = l.notices().await.iter().filter(|(n, _)| matches!(n, Notice::Locked(_))).count();
    assert_eq!(locked_notices, 1);
}

#[tokio::test]
async fn postcard_requests_get_postcard_replies() {
    let l = Lockout::start().await;
    let lock = LockRequest { user: "carol".into(), actor: "ops".into(), reason: None, seconds: None };
    let w: WriteReply = l.call_typed("acme", "lock", Encoding::Postcard, &lock).await.unwrap();
    assert!(w.locked && w.locked_until.is_none(), "no seconds = until an admin unlocks");
    let s: Status = l
        .call_typed("acme", "status", Encoding::Postcard, &StatusRequest { user: "carol".into(), ..Default::default() })
        .await
        .unwrap();
    assert!(s.locked);
    assert_eq!(s.reason, Some(LockReason::Admin));
    let unknown: Status = l
        .call_typed(
            "acme",
            "status",
            Encoding::Postcard,
            &StatusRequest { user: "nobody".into(), ..Default::default() },
        )
        .await
        .unwrap();
    // A v1 reply has no `allowed` (the Rust type reads it as false there: schemas/README.md).
    assert_eq!(unknown, Status { allowed: false, ..Status::unknown("acme", "nobody", 5) });

    // A v2 request gets a v2 reply, contract v2's fields included.
    let unknown: Status = l
        .call_typed(
            "acme",
            "status",
            Encoding::PostcardV2,
            &StatusRequest { user: "nobody".into(), ..Default::default() },
        )
        .await
        .unwrap();
    assert_eq!(unknown, Status::unknown("acme", "nobody", 5));
    let s: Status = l
        .call_typed(
            "acme",
            "status",
            Encoding::PostcardV2,
            &StatusRequest { user: "carol".into(), ..Default::default() },
        )
        .await
        .unwrap();
    assert_eq!((s.allowed, s.blocked_by), (false, Some(lockout_proto::status::BlockedBy::Account)));
}

#[tokio::test]
async fn locked_pages_in_byte_order_with_cursors() {
    let l = Lockout::start().await;
    for u in ["e", "a", "d", "b", "c"] {
        l.call("acme", "lock", json!({"user": u, "actor": "ops"})).await.unwrap();
    }
    l.call("other", "lock", json!({"user": "zz", "actor": "ops"})).await.unwrap();
    let mut seen = Vec::new();
    let mut after = serde_json::Value::Null;
    let mut pages = 0;
    loop {
        let r = l.call("acme", "locked", json!({"limit": 2, "after": after})).await.unwrap();
        pages += 1;
        for s in r["users"].as_array().unwrap() {
            assert_eq!(s["locked"], true);
            seen.push(s["user"].as_str().unwrap().to_owned());
        }
        if r["next"].is_null() {
            break;
        }
        after = r["next"].clone();
    }
    assert_eq!(seen, ["a", "b", "c", "d", "e"]);
    assert_eq!(pages, 3);
    let all = l.call("acme", "locked", json!({})).await.unwrap();
    assert_eq!(all["users"].as_array().unwrap().len(), 5);
    assert!(all["next"].is_null());
}

#[tokio::test]
async fn bad_requests_get_400_and_change_nothing() {
    let l = Lockout::start().await;
    let cases = [
        ("status", json!({"user": ""}), "user"),
        ("status", json!({}), "user"),
        ("locked", json!({"limit": 0}), "limit"),
        ("locked", json!({"limit": 1001}), "limit"),
        ("locked", json!({"after": "!!"}), "after"),
        ("unlock", json!({"user": "a", "actor": ""}), "actor"),
        ("lock", json!({"user": "a", "actor": "x", "seconds": 0}), "seconds"),
        ("status", json!({"tenant": "other", "user": "a"}), "tenant"),
        ("policy_set", json!({"actor": "x", "policy": {"max_failures": null}}), "null"),
        ("policy_set", json!({"actor": "x", "policy": {"max_fail": 3}}), "unknown field"),
        ("policy_set", json!({"actor": "x", "policy": {"lock_multiplier": 0}}), "lock_multiplier"),
        ("policy_set", json!({"actor": "x", "policy": {"max_failures": -1}}), "-1"),
    ];
    for (op, body, needle) in cases {
        let e = l.call("acme", op, body.clone()).await.unwrap_err();
        assert_eq!(e.code, 400, "{op} {body}: {e:?}");
        assert!(e.message.contains(needle), "{op} {body}: {:?} should mention {needle}", e.message);
    }
    let mut h = HeaderMap::new();
    h.insert(codec::NATS_MSG_ID, "not-a-uuid");
    let body = serde_json::to_vec(&json!({"user": "a", "actor": "x"})).unwrap();
    let e = l.call_raw("acme", "unlock", Encoding::Json, body, h).await.unwrap_err();
    assert_eq!(e.code, 400);
    assert!(e.message.contains("Nats-Msg-Id"));
    // An unknown Content-Type is a 400 too.
    let reply = l
        .client
        .request_with_headers(
            "lockout.svc.acme.status",
            {
                let mut h = HeaderMap::new();
                h.insert(codec::CONTENT_TYPE, "text/plain");
                h
            },
            "user=a".into(),
        )
        .await
        .unwrap();
    assert_eq!(reply.headers.unwrap().get(codec::SERVICE_ERROR_CODE).unwrap().as_str(), "400");
    // Nothing was written: the policy is still the default and no event was appended.
    assert_eq!(l.call("acme", "policy_get", json!({})).await.unwrap()["max_failures"], 5);
    assert_eq!(l.folded_seq().await, 0);
}

#[tokio::test]
async fn micro_service_discovery_answers_ping_and_lists_every_op() {
    let l = Lockout::start().await;
    let ping = l.client.request("$SRV.PING.lockout", "".into()).await.unwrap();
    let ping: serde_json::Value = serde_json::from_slice(&ping.payload).unwrap();
    assert_eq!(ping["name"], "lockout");
    let info = l.client.request("$SRV.INFO.lockout", "".into()).await.unwrap();
    let info: serde_json::Value = serde_json::from_slice(&info.payload).unwrap();
    assert_eq!(info["name"], "lockout");
    let subjects: Vec<&str> =
        info["endpoints"].as_array().unwrap().iter().map(|e| e["subject"].as_str().unwrap()).collect();
    for op in lockout_proto::command::OPS {
        assert!(subjects.contains(&format!("lockout.svc.*.{op}").as_str()), "{op} missing from {subjects:?}");
    }
}

/// Extension: `health` and `$SRV.STATS` report the folded sequence, lag and last commit.
#[tokio::test]
async fn health_and_stats_report_progress() {
    let l = Lockout::start().await;
    let h = l.call("acme", "health", json!({})).await.unwrap();
    assert_eq!(
        (h["status"].as_str(), h["seq"].as_u64(), h["last_commit_at"].is_null()),
        (Some("ready"), Some(0), true)
    );
    let seq = l.attempt("acme", "ivan", lockout_proto::event::Outcome::Failure, "192.0.2.9", None).await;
    l.wait_folded(seq).await;
    let h = l.call("acme", "health", json!({})).await.unwrap();
    assert_eq!((h["status"].as_str(), h["seq"].as_u64(), h["lag"].as_u64()), (Some("ready"), Some(seq), Some(0)));
    assert!(h["last_commit_at"].as_u64().unwrap() > 0);
    let stats = l.client.request("$SRV.STATS.lockout", "".into()).await.unwrap();
    let stats: serde_json::Value = serde_json::from_slice(&stats.payload).unwrap();
    let data = &stats["endpoints"][0]["data"];
    assert_eq!(data["seq"].as_u64(), Some(seq), "{stats}");
    assert_eq!(data["status"], "ready");
    // Contract v2: every reply names the process that gave it (`--instance`; by default the
    // host name and the process id).
    let instance = lockoutd::config::default_instance();
    assert_eq!(h["instance"], instance.as_str(), "{h}");
    let parts: Vec<u64> = h["partitions"].as_array().unwrap().iter().map(|p| p.as_u64().unwrap()).collect();
    assert_eq!(parts, (0..64).collect::<Vec<u64>>(), "one process folds every partition: {h}");
    // STATS names it in each endpoint's data (async-nats puts no metadata in STATS replies).
    assert_eq!(data["instance"], instance.as_str(), "{stats}");
    for probe in ["$SRV.PING.lockout", "$SRV.INFO.lockout"] {
        let r = l.client.request(probe, "".into()).await.unwrap();
        let r: serde_json::Value = serde_json::from_slice(&r.payload).unwrap();
        assert_eq!(r["metadata"]["instance"], instance.as_str(), "{probe}: {r}");
    }
}

/// Rows of `docs/protocol.md` the other tests leave out: `unlock` of an unlocked user resets
/// the counter with no notice; `lock` of a locked user replaces the lock with a new notice;
/// a policy with `lock_seconds` 0 locks until an admin unlocks (a PMS/ORS product's
/// manual-only lock).
#[tokio::test]
async fn unlock_of_unlocked_lock_replacing_lock_and_manual_only_locks() {
    let l = Lockout::start().await;
    let mut live = l.notice_consumer().await;

    l.attempt("acme", "carol", Failure, "192.0.2.3", None).await;
    let seq = l.attempt("acme", "carol", Failure, "192.0.2.3", None).await;
    l.wait_folded(seq).await;
    let r = l.call("acme", "unlock", json!({"user": "carol", "actor": "ops"})).await.unwrap();
    assert_eq!(
        (r["locked"].as_bool(), r["failures"].as_u64(), r["unlocked_by"].as_str()),
        (Some(false), Some(0), Some("ops"))
    );

    let first = l.call("acme", "lock", json!({"user": "carol", "actor": "ops", "seconds": 60})).await.unwrap();
    let second = l.call("acme", "lock", json!({"user": "carol", "actor": "sec", "reason": "incident"})).await.unwrap();
    assert_eq!((second["locked"].as_bool(), second["reason"].as_str()), (Some(true), Some("admin")));
    assert!(second["locked_until"].is_null(), "the new lock replaced the timed one: {second}");
    assert_ne!(first["event_id"], second["event_id"]);
    let (Notice::Locked(a), _) = next_notice(&mut live, 10).await else { panic!("expected locked") };
    let (Notice::Locked(b), _) = next_notice(&mut live, 10).await else { panic!("expected a second locked") };
    assert_eq!((a.actor.as_deref(), b.actor.as_deref()), (Some("ops"), Some("sec")));
    assert_eq!((a.lock_seconds, b.lock_seconds), (Some(60), None));
    assert!(
        l.notices().await.iter().all(|(n, _)| !matches!(n, Notice::Unlocked(_))),
        "no notice for the unlock of an unlocked user"
    );

    // A PMS/ORS product: no unlock time set means locked until a supervisor re-activates the
    // account.
    l.call("pms", "policy_set", json!({"actor": "sup", "policy": {"max_failures": 2, "lock_seconds": 0}}))
        .await
        .unwrap();
    l.attempt("pms", "MW02", Failure, "198.51.100.4", None).await;
    l.attempt("pms", "MW02", Failure, "198.51.100.4", None).await;
    let (Notice::Locked(n), _) = next_notice(&mut live, 10).await else { panic!("expected locked") };
    assert_eq!((n.locked_until, n.lock_seconds), (None, None));
    assert!(n.message.contains("until an administrator unlocks it"), "{}", n.message);
    let s = l.status("pms", "MW02").await;
    assert_eq!((s["locked"].as_bool(), s["locked_until"].is_null()), (Some(true), true));
}

/// `--prefix`: every subject and stream under another root.
#[tokio::test]
async fn another_prefix_moves_every_subject_and_stream() {
    let nats = nats_harness::NatsServer::start();
    let data = tempfile::tempdir().unwrap();
    let mut config = lockoutd::Config::new(&nats.url(), data.path().join("store"));
    config.subjects = lockout_proto::Subjects::new("acme-lock").unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let daemon = tokio::spawn(lockoutd::run(config, async move {
        let _ = stopped.await;
    }));
    let client = async_nats::connect(nats.url()).await.unwrap();
    let js = async_nats::jetstream::new(client.clone());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while client.request("acme-lock.svc.t.health", "".into()).await.is_err() {
        assert!(std::time::Instant::now() < deadline, "lockoutd did not answer under acme-lock");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    for stream in ["ACME-LOCK_EVENTS", "ACME-LOCK_NOTICES", "ACME-LOCK_DEAD"] {
        js.get_stream(stream).await.unwrap_or_else(|e| panic!("{stream}: {e}"));
    }
    assert!(js.get_stream("LOCKOUT_EVENTS").await.is_err(), "nothing under the default root");
    let mut notices = client.subscribe("acme-lock.notices.t.locked").await.unwrap();
    let mut h = HeaderMap::new();
    h.insert(codec::CONTENT_TYPE, codec::JSON);
    let body = br#"{"user":"u","actor":"ops"}"#.as_slice().into();
    let r = client.request_with_headers("acme-lock.svc.t.lock", h, body).await.unwrap();
    let reply: WriteReply = codec::decode(Encoding::Json, &r.payload, "reply").unwrap();
    assert!(reply.locked);
    let n = tokio::time::timeout(std::time::Duration::from_secs(10), futures::StreamExt::next(&mut notices))
        .await
        .unwrap()
        .unwrap();
    assert!(n.headers.unwrap().get(codec::NATS_MSG_ID).is_some(), "a notice carries its id");
    js.get_stream("ACME-LOCK_NOTICES").await.unwrap().get_raw_message(1).await.expect("the notice is stored");
    let _ = stop.send(());
    daemon.await.unwrap().unwrap();
}

/// Contract v2: the partition count (and lease length) is fixed when the deployment is first
/// set up; a process started later with another value is refused at start, saying how to
/// change it, and one with the same values starts.
#[tokio::test]
async fn a_different_partition_count_is_refused_at_start() {
    let mut l = Lockout::start().await;
    l.stop_daemon().await.unwrap();
    let mut other = l.config();
    other.partitions = 32;
    let refused =
        tokio::time::timeout(std::time::Duration::from_secs(30), lockoutd::run(other, std::future::pending()))
            .await
            .expect("refused at start, not left running");
    let e = format!("{:#}", refused.expect_err("a different --partitions must be refused"));
    assert!(e.contains("set up with --partitions 64 --lease-seconds 10"), "{e}");
    assert!(e.contains("started with --partitions 32"), "{e}");
    assert!(e.contains("replaying the history"), "{e}");
    l.start_daemon().await;
    assert_eq!(l.call("acme", "health", json!({})).await.unwrap()["partitions"].as_array().map(Vec::len), Some(64));
}
