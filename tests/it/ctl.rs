//! lockoutctl against a real nats-server and lockoutd, called in-process through
//! `lockoutctl::run_io` (the binary is a thin wrapper around it).

use std::time::{Duration, Instant};

use async_nats::HeaderMap;
use lockout_proto::codec::{self, Encoding};
use lockout_store::{Commit, StateChange, Store};
use serde_json::Value;

use expect_test::expect;

use crate::support::Lockout;

/// Runs lockoutctl against `l`; returns (exit code, stdout, stderr).
pub(crate) async fn ctl(l: &Lockout, args: &[&str]) -> (i32, String, String) {
    crate::support::lockoutctl(&l.nats.url(), args).await
}

/// Runs lockoutctl and expects exit 0; returns stdout.
async fn ok(l: &Lockout, args: &[&str]) -> String {
    let (code, out, err) = ctl(l, args).await;
    assert_eq!(code, 0, "lockoutctl {args:?} exited {code}\nstdout:\n{out}\nstderr:\n{err}");
    out
}

async fn json(l: &Lockout, args: &[&str]) -> Value {
    let mut a = vec!["--json"];
    a.extend_from_slice(args);
    serde_json::from_str(&ok(l, &a).await).unwrap()
}

/// A PMS/ORS product's worked example (limit 3, unlock time 5 minutes, a success does not
/// reset the counter) through lockoutctl: policy, attempts, then the auditor's view of them.
#[tokio::test]
async fn pms_policy_attempts_history_state_at_explain_tail() {
    let l = Lockout::start().await;
    let out = ok(
        &l,
        &[
            "policy",
            "set",
            "acme",
            "--actor",
            "sec-team",
            "--max-failures",
            "3",
            "--lock-seconds",
            "300",
            "--window-seconds",
            "300",
            "--reset-on-success",
            "false",
        ],
    )
    .await;
    assert!(out.contains("max_failures: 5 -> 3"), "{out}");
    assert!(out.contains("reset_on_success: true -> false"), "{out}");
    assert!(!out.contains("lock_multiplier"), "unchanged fields are not listed: {out}");
    // Fields not given keep the current values.
    let out = ok(&l, &["policy", "set", "acme", "--actor", "sec-team", "--lock-seconds", "300"]).await;
    assert!(out.contains("unchanged"), "{out}");
    let p = json(&l, &["policy", "get", "acme"]).await;
    assert_eq!((p["max_failures"].as_u64(), p["window_seconds"].as_u64()), (Some(3), Some(300)));

    let user = "alice@acme.com";
    let out =
        ok(&l, &["attempt", "acme", user, "--fail", "--ip", "203.0.113.7", "--client", "IT Glue", "--count", "2"])
            .await;
    assert_eq!(out.lines().count(), 2, "{out}");
    ok(&l, &["attempt", "acme", user, "--ok", "--ip", "203.0.113.7", "--client", "IT Glue", "--wait"]).await;
    ok(&l, &["attempt", "acme", user, "--fail", "--ip", "198.51.100.2", "--wait"]).await;

    let status = ok(&l, &["status", "acme", user]).await;
    assert!(status.contains("LOCKED (failures)"), "{status}");

    let history = ok(&l, &["history", "acme", user]).await;
    expect![[r#"
        history of alice@acme.com in tenant acme (5 events shown; stored times, UTC)
        #1      <time>  policy    policy set by sec-team: max_failures 5 -> 3, lock_seconds 1800 -> 300, window_seconds 0 -> 300, reset_on_success true -> false
                state: unlocked, failures 0/3
        #2      <time>  attempt   failure 1/3 from 203.0.113.7 (IT Glue)
                state: unlocked, failures 1/3
        #3      <time>  attempt   failure 2/3 from 203.0.113.7 (IT Glue)
                state: unlocked, failures 2/3
        #4      <time>  attempt   success from 203.0.113.7 (IT Glue); counter kept at 2/3 (reset_on_success is off)
                state: unlocked, failures 2/3
        #5      <time>  attempt   failure 3/3 from 198.51.100.2 → LOCKED until <time> — 3 failures from 2 sources: 203.0.113.7 (IT Glue) ×2, 198.51.100.2 ×1 (automatic lock #1)
                state: LOCKED (failures) since <time> until <time>, failures 3/3
    "#]].assert_eq(&redact_times(&history));
    let h = json(&l, &["history", "acme", user]).await;
    let events = h["events"].as_array().unwrap();
    assert_eq!(events.len(), 5, "policy + 4 attempts: {h}");
    assert_eq!(events[4]["status"]["locked"], true);
    assert_eq!(events[3]["status"]["locked"], false);
    let lock_time = events[4]["time"].as_u64().unwrap();
    // --since hides earlier events but still folds them.
    let h = json(&l, &["history", "acme", user, "--since", &lock_time.to_string()]).await;
    assert_eq!(h["events"].as_array().unwrap().len(), 1);
    assert_eq!(h["events"][0]["status"]["failures"], 3);

    // Time travel: at the success before the lock, at the lock, and after it ran out (300 s later).
    let before_lock = events[3]["time"].as_u64().unwrap();
    assert!(before_lock < lock_time);
    let s = ok(&l, &["state-at", "acme", user, &before_lock.to_string()]).await;
    assert!(s.contains("unlocked, failures 2/3"), "{s}");
    let at = lockout_time(lock_time);
    let s = ok(&l, &["state-at", "acme", user, &at]).await;
    assert!(s.contains("LOCKED (failures)"), "{s}");
    let s = json(&l, &["state-at", "acme", user, &(lock_time + 300_000).to_string()]).await;
    assert_eq!(s["status"]["locked"], false);
    assert_eq!(s["status"]["failures"], 0);

    let e = ok(&l, &["explain", "acme", user]).await;
    expect![[r#"
        acme / alice@acme.com: LOCKED (failures) since <time> until <time>, failures 3/3
        Why: 3 counted failures reached max_failures 3; the lock was tripped by event #5 at <time>, a failure from 198.51.100.2.
        Counted failures:
          #2 <time> password from 203.0.113.7 (IT Glue)
          #3 <time> password from 203.0.113.7 (IT Glue)
          #5 <time> password from 198.51.100.2
        Sources: 203.0.113.7 (IT Glue) ×2, 198.51.100.2 ×1
        Policy in force: max_failures=3 lock_seconds=300 window_seconds=300 reset_on_success=false count_mfa_failures=true dedupe_credential=false lock_multiplier=1 max_lock_seconds=86400 history_seconds=86400 permanent_after=0 (set by sec-team at <time> (event #1))
        From 4 event(s) of the user's history, folded with their stored times.
    "#]].assert_eq(&redact_times(&e));

    let locked = ok(&l, &["locked", "acme", "--page", "1"]).await;
    assert!(locked.contains(user) && locked.contains("1 locked user(s)"), "{locked}");

    // The notice, for a person.
    let t = ok(&l, &["tail", "acme", "--all", "--count", "1"]).await;
    expect![[r#"
        <time>  acme / alice@acme.com  LOCKED (failures) until <time>: Your account has been locked for 5 minutes due to an excessive number of unsuccessful log in attempts from 203.0.113.7 (IT Glue) and 1 other source.
            sources: 203.0.113.7 (IT Glue) ×2, 198.51.100.2 ×1
    "#]].assert_eq(&redact_times(&t));

    let out = ok(&l, &["unlock", "acme", user, "--actor", "admin7", "--reason", "called the help desk"]).await;
    assert!(out.contains("unlocked, failures 0/3"), "{out}");
    let history = ok(&l, &["history", "acme", user, "--since", &lock_time.to_string()]).await;
    expect![[r#"
        history of alice@acme.com in tenant acme (2 events shown; stored times, UTC)
        #5      <time>  attempt   failure 3/3 from 198.51.100.2 → LOCKED until <time> — 3 failures from 2 sources: 203.0.113.7 (IT Glue) ×2, 198.51.100.2 ×1 (automatic lock #1)
                state: LOCKED (failures) since <time> until <time>, failures 3/3
        #6      <time>  unlock    unlocked by admin7 (reason: called the help desk)
                state: unlocked, failures 0/3
    "#]].assert_eq(&redact_times(&history));
    let e = ok(&l, &["explain", "acme", user]).await;
    expect![[r#"
        acme / alice@acme.com: unlocked, failures 0/3
        Why not locked: no counted failures in the current streak.
        Last lock: automatic (failures) at <time> by event #5, unlocked by admin7 at <time>.
        Policy in force: max_failures=3 lock_seconds=300 window_seconds=300 reset_on_success=false count_mfa_failures=true dedupe_credential=false lock_multiplier=1 max_lock_seconds=86400 history_seconds=86400 permanent_after=0 (set by sec-team at <time> (event #1))
        From 5 event(s) of the user's history, folded with their stored times.
    "#]].assert_eq(&redact_times(&e));
}

/// `text` with every RFC 3339 time (`2025-06-01T16:00:00.000Z`, the stored times of this
/// run) replaced by `<time>`, and every UUID by `<uuid>`, for snapshots.
fn redact_times(text: &str) -> String {
    let is_time = |w: &[u8]| {
        w.len() == 24
            && w.iter().enumerate().all(|(i, &b)| match i {
                4 | 7 => b == b'-',
                10 => b == b'T',
                13 | 16 => b == b':',
                19 => b == b'.',
                23 => b == b'Z',
                _ => b.is_ascii_digit(),
            })
    };
    let is_uuid = |w: &[u8]| {
        w.len() == 36
            && w.iter().enumerate().all(|(i, &b)| match i {
                8 | 13 | 18 | 23 => b == b'-',
                _ => b.is_ascii_hexdigit(),
            })
    };
    let b = text.as_bytes();
    let (mut out, mut i) = (String::new(), 0);
    while i < b.len() {
        if b.get(i..i + 24).is_some_and(is_time) {
            out.push_str("<time>");
            i += 24;
        } else if b.get(i..i + 36).is_some_and(is_uuid) {
            out.push_str("<uuid>");
            i += 36;
        } else {
            let c = text[i..].chars().next().expect("inside the text");
            out.push(c);
            i += c.len_utf8();
        }
    }
    out
}

fn lockout_time(ms: u64) -> String {
    // RFC 3339 input, as a person types it.
    lockoutctl::fmt::time(ms)
}

/// lock / mfa-reset change state; a timed admin lock shows its expiry in the history.
#[tokio::test]
async fn admin_commands_and_expiry_in_history() {
    let l = Lockout::start().await;
    let out = ok(&l, &["lock", "acme", "bob", "--actor", "admin7", "--seconds", "2", "--reason", "offboarding"]).await;
    assert!(out.contains("LOCKED (admin)"), "{out}");
    let out = ok(&l, &["mfa-reset", "acme", "bob", "--actor", "admin7"]).await;
    assert!(out.contains("MFA re-enrolment pending") && out.contains("MFA reset:"), "{out}");
    let t = ok(&l, &["tail", "acme", "--all", "--count", "2"]).await;
    expect![[r#"
        <time>  acme / bob  LOCKED (admin) until <time>: Your account has been locked by an administrator for 2 seconds (reason: offboarding).
            by admin7
        <time>  acme / bob  MFA reset by admin7
    "#]].assert_eq(&redact_times(&t));
    // The lock runs out by the server's clock; lockoutd appends its `expired` event.
    let deadline = Instant::now() + Duration::from_secs(20);
    let history = loop {
        let h = ok(&l, &["history", "acme", "bob"]).await;
        if h.contains(" expired ") {
            break h;
        }
        assert!(Instant::now() < deadline, "no expired event within 20 s:\n{h}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    expect![[r#"
        history of bob in tenant acme (3 events shown; stored times, UTC)
        #1      <time>  lock      LOCKED by admin7 until <time> (reason: offboarding)
                state: LOCKED (admin) since <time> until <time>, failures 0/5
        #2      <time>  mfa_reset MFA reset by admin7: 0 MFA failure(s) removed, re-enrolment required
                state: LOCKED (admin) since <time> until <time>, failures 0/5, MFA re-enrolment pending
        #3      <time>  expired   expired: the lock ended at <time>
                state: unlocked, failures 0/5, MFA re-enrolment pending
    "#]]
    .assert_eq(&redact_times(&history));
    let s = json(&l, &["status", "acme", "bob"]).await;
    assert_eq!(s["locked"], false);
    assert_eq!(s["mfa_reenrol"], true);
}

/// replay rebuilds the live digest and publishes nothing; verify agrees (0) and then finds a
/// tampered state (5); export has one line per event.
#[tokio::test]
async fn replay_verify_export() {
    let mut l = Lockout::start().await;
    for (tenant, user, n) in [("acme", "alice", 6), ("acme", "bob", 2), ("globex", "carol", 3)] {
        ok(&l, &["attempt", tenant, user, "--fail", "--ip", "203.0.113.7", "--count", &n.to_string()]).await;
    }
    // A refused event: dead-lettered by lockoutd, skipped the same way by the replay.
    let mut h = HeaderMap::new();
    h.insert(codec::CONTENT_TYPE, Encoding::Json.content_type());
    let bad = br#"{"id":"0190a0a0-0000-7000-8000-000000000001","at":0,"tenant":"acme","user":"alice","outcome":"failure","source_ip":"not-an-ip"}"#;
    let last = l.publish_raw("lockout.events.acme.u.YWxpY2U.attempt", h, bad.to_vec()).await;
    ok(&l, &["unlock", "acme", "alice", "--actor", "admin7"]).await;
    l.wait_folded(last).await;
    let total = l.js.get_stream("LOCKOUT_EVENTS").await.unwrap().get_info().await.unwrap().state.messages;

    let out = ok(&l, &["verify"]).await;
    println!("{out}");
    assert!(out.contains("tenant acme: equal at seq"), "{out}");
    assert!(out.contains("tenant globex: equal at seq"), "{out}");
    assert!(out.contains("verified 2 tenant(s)"), "{out}");

    let notices_before = l.notices().await.len();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("replay");
    let r = json(&l, &["replay", "--data-dir", data.to_str().unwrap(), "--batch", "3"]).await;
    assert_eq!(r["events"].as_u64(), Some(total), "{r}");
    let live = l.call("acme", "digest", serde_json::json!({})).await.unwrap();
    {
        let store = Store::open(&data, 1 << 20).unwrap();
        let (users, digest) = store.digest("acme").unwrap();
        assert_eq!(Some(users), live["users"].as_u64());
        assert_eq!(Some(digest.as_str()), live["digest"].as_str());
        assert_eq!(store.checkpoint().unwrap(), live["seq"].as_u64().unwrap());
        assert!(store.outbox().unwrap().is_empty(), "a replay queues nothing");
    }
    // --until SEQ: a partial replay.
    let partial = dir.path().join("partial");
    let r = json(&l, &["replay", "--data-dir", partial.to_str().unwrap(), "--until", "3"]).await;
    assert_eq!((r["events"].as_u64(), r["checkpoint"].as_u64()), (Some(3), Some(3)), "{r}");
    // The commands have exited: whatever they published is in the streams by now.
    assert_eq!(l.notices().await.len(), notices_before, "replay and verify publish nothing");

    let lines = ok(&l, &["export", "--jsonl"]).await;
    assert_eq!(lines.lines().count() as u64, total, "{lines}");
    let parsed: Vec<Value> = lines.lines().map(|x| serde_json::from_str(x).unwrap()).collect();
    assert!(parsed.iter().all(|v| v["seq"].is_u64() && v["time"].is_u64() && v["subject"].is_string()));
    assert_eq!(parsed[0]["type"], "attempt");
    assert_eq!(parsed[0]["body"]["source_ip"], "203.0.113.7");
    let refused: Vec<&Value> = parsed.iter().filter(|v| v["error"].is_string()).collect();
    assert_eq!(refused.len(), 1, "the bad-ip event is exported with its error");
    assert!(refused[0]["error"].as_str().unwrap().starts_with("bad_ip"), "{}", refused[0]);
    let globex = ok(&l, &["export", "globex", "--jsonl"]).await;
    assert_eq!(globex.lines().count(), 3, "{globex}");

    // Tamper with the live store: verify must notice and exit 5.
    l.stop_daemon().await.unwrap();
    {
        let store = Store::open(&l.config().data_dir, 1 << 20).unwrap();
        let mut state = store.user("globex", "carol").unwrap().unwrap();
        state.streak.clear();
        let checkpoint = store.checkpoint_at().unwrap();
        store
            .commit(&Commit {
                states: vec![StateChange {
                    tenant: "globex".into(),
                    user: "carol".into(),
                    before: None,
                    before_scoped: Vec::new(),
                    state,
                }],
                checkpoint: checkpoint.0,
                checkpoint_time: checkpoint.1,
                ..Commit::default()
            })
            .unwrap();
        store.flush().unwrap();
    }
    l.start_daemon().await;
    let (code, out, err) = ctl(&l, &["verify"]).await;
    println!("{out}{err}");
    assert_eq!(code, 5, "{out}{err}");
    assert!(out.contains("tenant acme: equal"), "{out}");
    assert!(out.contains("tenant globex: DIFFERENT"), "{out}");
    assert!(out.contains("carol: failures: live 0 replay 3"), "{out}");
}

/// simulate: a stricter policy would have locked bob; a laxer one would have spared carol.
#[tokio::test]
async fn simulate_reports_what_a_policy_would_change() {
    let l = Lockout::start().await;
    ok(&l, &["attempt", "acme", "bob", "--fail", "--ip", "203.0.113.7", "--client", "IT Glue", "--count", "3"]).await;
    ok(&l, &["attempt", "acme", "carol", "--fail", "--ip", "198.51.100.2", "--count", "5", "--wait"]).await;
    let dir = tempfile::tempdir().unwrap();
    let strict = dir.path().join("strict.json");
    std::fs::write(&strict, r#"{"max_failures":3}"#).unwrap();
    let out = ok(&l, &["simulate", "acme", "--policy", strict.to_str().unwrap()]).await;
    println!("{out}");
    assert!(out.contains("would have been locked (were not):"), "{out}");
    assert!(out.contains("  bob  1 lock(s)"), "{out}");
    assert!(out.contains("tripped by 203.0.113.7 (IT Glue)"), "{out}");
    let v = json(&l, &["simulate", "acme", "--policy", strict.to_str().unwrap()]).await;
    assert_eq!(v["actual"]["users_locked"], 1);
    assert_eq!(v["simulated"]["users_locked"], 2);
    assert_eq!(v["would_be_locked"][0]["user"], "bob");
    assert_eq!(v["would_not_be_locked"].as_array().unwrap().len(), 0);

    let lax = dir.path().join("lax.json");
    std::fs::write(&lax, r#"{"max_failures":10}"#).unwrap();
    let v = json(&l, &["simulate", "acme", "--policy", lax.to_str().unwrap()]).await;
    assert_eq!(v["would_not_be_locked"][0]["user"], "carol", "{v}");
    assert_eq!(v["simulated"]["locks"], 0);
    assert!(v["actual"]["lock_minutes"].as_f64().unwrap() >= 0.0);

    let bad = dir.path().join("bad.json");
    std::fs::write(&bad, r#"{"max_fialures":3}"#).unwrap();
    let (code, _, err) = ctl(&l, &["simulate", "acme", "--policy", bad.to_str().unwrap()]).await;
    assert_eq!(code, 4, "{err}");
    assert!(err.contains("unknown field"), "{err}");
}

/// Exit codes mean something.
#[tokio::test]
async fn exit_codes() {
    let mut l = Lockout::start().await;
    let (code, out, _) = ctl(&l, &["--help"]).await;
    assert_eq!(code, 0);
    assert!(out.contains("Exit codes:") && out.contains("history"), "{out}");
    let (code, _, err) = ctl(&l, &["frobnicate"]).await;
    assert_eq!(code, 2, "{err}");
    let (code, _, err) = ctl(&l, &["attempt", "acme", "bob", "--ip", "203.0.113.7"]).await;
    assert_eq!(code, 2, "--fail or --ok is required: {err}");
    let (code, _, err) = ctl(&l, &["state-at", "acme", "bob", "yesterday"]).await;
    assert_eq!(code, 2, "{err}");

    // 400 from the service, with its message.
    let long = "x".repeat(300);
    let (code, _, err) = ctl(&l, &["status", "acme", &long]).await;
    assert_eq!(code, 4, "{err}");
    assert!(err.contains("status failed (400)"), "{err}");
    let (code, _, err) = ctl(&l, &["lock", "acme", "bob", "--actor", "a", "--seconds", "0"]).await;
    assert_eq!(code, 4, "{err}");
    assert!(err.contains("seconds"), "{err}");
    let (code, _, err) = ctl(&l, &["status", "ac.me", "bob"]).await;
    assert_eq!(code, 4, "{err}");
    let (code, _, err) = ctl(&l, &["attempt", "acme", "bob", "--fail", "--ip", "999.1.1.1"]).await;
    assert_eq!(code, 4, "{err}");
    let (code, _, err) = ctl(&l, &["policy", "set", "acme", "--actor", "a", "--lock-multiplier", "0"]).await;
    assert_eq!(code, 4, "{err}");

    // Not found.
    let (code, _, err) = ctl(&l, &["history", "acme", "nobody"]).await;
    assert_eq!(code, 3, "{err}");
    let (code, _, err) = ctl(&l, &["explain", "acme", "nobody"]).await;
    assert_eq!(code, 3, "{err}");

    // No lockoutd: 503-like.
    l.stop_daemon().await.unwrap();
    let (code, _, err) = ctl(&l, &["--timeout", "2", "status", "acme", "bob"]).await;
    assert_eq!(code, 6, "{err}");
    // No NATS at all: infrastructure failure.
    let (mut out, mut e) = (Vec::new(), Vec::new());
    let code = lockoutctl::run_io(
        ["lockoutctl", "--nats-url", "nats://127.0.0.1:1", "--timeout", "2", "status", "acme", "bob"],
        &mut out,
        &mut e,
    )
    .await;
    assert_eq!(code, 1, "{}", String::from_utf8_lossy(&e));
}

/// The options the other tests leave out: `policy set --file`, `attempt --factor
/// --credential`, `history --until`, `locked` across pages, `tail` of every tenant,
/// `export`/`simulate --since/--until`, `replay --until TIME`.
#[tokio::test]
async fn the_remaining_options() {
    let l = Lockout::start().await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("policy.json");
    std::fs::write(&file, r#"{"max_failures": 2, "dedupe_credential": true}"#).unwrap();
    let out = ok(&l, &["policy", "set", "acme", "--actor", "sec", "--file", file.to_str().unwrap()]).await;
    assert!(out.contains("max_failures: 5 -> 2") && out.contains("dedupe_credential: false -> true"), "{out}");

    // The same credential counts once; an MFA failure with another one counts too.
    let cred = ["--ip", "192.0.2.1", "--credential", "fp:stale"];
    ok(&l, &[&["attempt", "acme", "dave", "--fail", "--count", "3", "--wait"][..], &cred].concat()).await;
    let s = json(&l, &["status", "acme", "dave"]).await;
    assert_eq!((s["failures"].as_u64(), s["locked"].as_bool()), (Some(1), Some(false)), "{s}");
    let mfa = ["attempt", "acme", "dave", "--fail", "--ip", "192.0.2.1", "--factor", "mfa", "--credential", "fp:2"];
    ok(&l, &[&mfa[..], &["--wait"]].concat()).await;
    let s = json(&l, &["status", "acme", "dave"]).await;
    assert_eq!((s["failures"].as_u64(), s["locked"].as_bool()), (Some(2), Some(true)), "{s}");
    let h = json(&l, &["history", "acme", "dave"]).await;
    let events = h["events"].as_array().unwrap();
    assert_eq!(events.len(), 5, "the policy event and 4 attempts: {h}");
    let second = events[2]["time"].as_u64().unwrap();
    // Events stored in the same millisecond share a time: count what --until must include.
    let upto = events.iter().filter(|e| e["time"].as_u64().unwrap() <= second).count();
    assert!(upto >= 3);
    let h = json(&l, &["history", "acme", "dave", "--until", &second.to_string()]).await;
    assert_eq!(h["events"].as_array().unwrap().len(), upto, "--until stops after the second attempt's time: {h}");

    // Five locked users, listed two to a page: the cursor is followed to the end.
    for user in ["u1", "u2", "u3", "u4"] {
        ok(&l, &["lock", "acme", user, "--actor", "ops"]).await;
    }
    let locked = ok(&l, &["locked", "acme", "--page", "2"]).await;
    assert!(locked.contains("5 locked user(s)"), "{locked}");
    for user in ["dave", "u1", "u2", "u3", "u4"] {
        assert!(locked.contains(user), "{user}: {locked}");
    }

    // Notices of every tenant.
    ok(&l, &["lock", "globex", "erin", "--actor", "ops"]).await;
    let t = ok(&l, &["tail", "--all", "--count", "6"]).await;
    assert!(t.contains("acme") && t.contains("globex"), "{t}");

    // Time windows on export, simulate and replay.
    let all = ok(&l, &["export", "acme", "--jsonl"]).await;
    let times: Vec<u64> =
        all.lines().map(|x| serde_json::from_str::<Value>(x).unwrap()["time"].as_u64().unwrap()).collect();
    assert!(times.len() > 5);
    let window =
        ok(&l, &["export", "acme", "--jsonl", "--since", &second.to_string(), "--until", &second.to_string()]).await;
    assert_eq!(window.lines().count(), times.iter().filter(|t| **t == second).count(), "{window}");
    // Up to the second attempt, dave had one counted failure (dedupe); without dedupe the two
    // failures with the same credential would have locked him under max_failures 2.
    let no_dedupe = dir.path().join("no-dedupe.json");
    std::fs::write(&no_dedupe, r#"{"max_failures": 2}"#).unwrap();
    let sim =
        json(&l, &["simulate", "acme", "--policy", no_dedupe.to_str().unwrap(), "--until", &second.to_string()]).await;
    assert_eq!((sim["actual"]["locks"].as_u64(), sim["simulated"]["locks"].as_u64()), (Some(0), Some(1)), "{sim}");
    assert!(sim["would_be_locked"].to_string().contains("dave"), "{sim}");
    let r =
        json(&l, &["replay", "--data-dir", dir.path().join("r").to_str().unwrap(), "--until", &lockout_time(second)])
            .await;
    let upto_all = times.iter().filter(|t| **t <= second).count() as u64;
    assert_eq!(r["events"].as_u64(), Some(upto_all), "every event stored up to then: {r}");
}

/// A read whose consumer stops delivering mid-read — nats-server hangs (SIGSTOP) for longer
/// than the read's idle period (3 × `--timeout`, here 15 s) — starts a new consumer after the
/// last message it got and reads on: every message once, in order.
#[tokio::test]
async fn a_read_survives_a_server_that_hangs_longer_than_its_idle_period() {
    let l = Lockout::start().await;
    let last = crate::oracle::publish(&l.js, &crate::oracle::load(3_000, 50)).await;
    let timeout = Duration::from_secs(5);
    let client = async_nats::ConnectOptions::new().request_timeout(Some(timeout)).connect(l.nats.url()).await.unwrap();
    let mut js = async_nats::jetstream::new(client.clone());
    js.set_timeout(timeout);
    let api = lockout_client::Client::new(client.clone()).with_timeout(timeout);
    let ctx = lockoutctl::Ctx { client, js, subjects: lockout_proto::Subjects::default(), json: false, timeout, api };
    let (mut seen, mut paused) = (Vec::new(), None);
    let plan = lockoutctl::events::read(
        &ctx,
        "LOCKOUT_EVENTS",
        vec!["lockout.events.>".into()],
        lockoutctl::events::Range::default(),
        None,
        async |raw: lockoutctl::events::Raw| {
            if raw.seq == 10 {
                // Resumes 2 s after the idle period ends, while the new consumer is created.
                paused = Some(l.nats.pause_for(Duration::from_secs(17)));
            }
            seen.push(raw.seq);
            Ok(true)
        },
    )
    .await
    .expect("the read goes on after the server hung");
    paused.expect("the server was paused").join().unwrap();
    assert!(plan.restarts >= 1, "the read never started a new consumer: {plan:?}");
    assert_eq!(seen, (1..=last).collect::<Vec<_>>(), "every message once, in order");
}

/// Source-aware locks from the command line: `simulate` shows what `familiar_days` would have
/// done to the history, `status --ip` answers for a source, `password-reset` ends the locks
/// and `unlock --lock-event` refuses a stale lock.
#[tokio::test]
async fn source_aware_commands() {
    let l = Lockout::start().await;
    ok(&l, &["attempt", "acme", "hana", "--ok", "--ip", "198.51.100.7"]).await;
    for ip in ["203.0.113.1", "203.0.113.2", "203.0.113.3", "203.0.113.4", "203.0.113.5"] {
        ok(&l, &["attempt", "acme", "hana", "--fail", "--ip", ip]).await;
    }
    ok(&l, &["attempt", "acme", "hana", "--rejected", "--ip", "203.0.113.1", "--wait"]).await;
    let dir = tempfile::tempdir().unwrap();
    let familiar = dir.path().join("familiar.json");
    std::fs::write(&familiar, r#"{"familiar_days":30}"#).unwrap();
    let out = ok(&l, &["simulate", "acme", "--policy", familiar.to_str().unwrap()]).await;
    println!("{out}");
    assert!(out.contains("would not have been locked (were):"), "{out}");
    assert!(out.contains("  hana  1 lock(s)"), "{out}");
    let v = json(&l, &["simulate", "acme", "--policy", familiar.to_str().unwrap()]).await;
    assert_eq!(
        (v["actual"]["locks"].clone(), v["simulated"]["locks"].clone()),
        (serde_json::json!(1), serde_json::json!(0))
    );
    assert_eq!(v["scope_locks"]["simulated"], 1, "{v}");

    // Turn it on; the same attack now locks only unfamiliar IPs.
    ok(&l, &["password-reset", "acme", "hana"]).await;
    ok(&l, &["policy", "set", "acme", "--actor", "sec", "--familiar-days", "30"]).await;
    ok(&l, &["attempt", "acme", "hana", "--ok", "--ip", "198.51.100.7"]).await;
    for ip in ["203.0.113.1", "203.0.113.2", "203.0.113.3", "203.0.113.4", "203.0.113.5"] {
        ok(&l, &["attempt", "acme", "hana", "--fail", "--ip", ip, "--wait"]).await;
    }
    let away = ok(&l, &["status", "acme", "hana", "--ip", "192.0.2.1"]).await;
    assert!(away.contains("not allowed (blocked by the unfamiliar lock)"), "{away}");
    assert!(away.contains("sign-ins from unfamiliar IPs: LOCKED"), "{away}");
    let home = json(&l, &["status", "acme", "hana", "--ip", "198.51.100.7"]).await;
    assert_eq!(home["allowed"], true, "{home}");
    let history = ok(&l, &["history", "acme", "hana"]).await;
    assert!(history.contains("on the unfamiliar counter"), "{history}");
    assert!(history.contains("rejected by the gateway"), "{history}");

    let (code, _, err) =
        ctl(&l, &["unlock", "acme", "hana", "--actor", "hd", "--lock-event", &uuid::Uuid::nil().to_string()]).await;
    assert_eq!(code, 7, "{err}");
    assert!(err.contains("no lock in force was started by event"), "{err}");
    let reset = ok(&l, &["password-reset", "acme", "hana", "--method", "admin", "--actor", "hd"]).await;
    assert!(reset.contains("password reset recorded for acme / hana"), "{reset}");
    assert_eq!(json(&l, &["status", "acme", "hana", "--ip", "192.0.2.1"]).await["allowed"], true);
}

/// Password spraying through lockoutctl: `policy set --ip-max-failures`, `ip status`, `status
/// --ip` of a blocked IP, `unlock-many --dry-run` then for real, a replay that reproduces the
/// block and every state, and `ip unblock`.
#[tokio::test]
async fn spraying_commands() {
    let l = Lockout::start_with(Encoding::PostcardV2).await;
    ok(&l, &["policy", "set", "acme", "--actor", "sec", "--max-failures", "1", "--ip-max-failures", "4"]).await;
    let sprayer = "203.0.113.66";
    let start = lockout_time(
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64 - 1000,
    );
    for u in ["u0", "u1", "u2", "u3"] {
        ok(&l, &["attempt", "acme", u, "--fail", "--ip", sprayer, "--wait"]).await;
    }
    ok(&l, &["attempt", "acme", "other", "--fail", "--ip", "198.51.100.9", "--wait"]).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        let s = ok(&l, &["ip", "status", "acme", sprayer]).await;
        if s.contains("BLOCKED") || Instant::now() > deadline {
            break s;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(status.contains("acme / IP 203.0.113.66: BLOCKED until "), "{status}");
    assert!(status.contains("4 failure(s) against 4 user(s) in the window"), "{status}");
    let gate = ok(&l, &["status", "acme", "u9", "--ip", sprayer]).await;
    assert!(gate.contains("not allowed (its IP is blocked for the tenant: password spraying)"), "{gate}");
    // A failure the gateway let through from the blocked IP: counted for the user only.
    ok(&l, &["attempt", "acme", "u9", "--fail", "--ip", sprayer, "--wait"]).await;
    let why = ok(&l, &["explain", "acme", "u9"]).await;
    assert!(why.contains("Not counted towards IP blocks: #"), "{why}");
    let history = ok(&l, &["history", "acme", "u9"]).await;
    assert!(history.contains("IP 203.0.113.66 blocked for the tenant until "), "{history}");

    let list = ok(&l, &["ip", "list", "acme"]).await;
    assert!(list.starts_with("acme / IP 203.0.113.66: BLOCKED until "), "{list}");
    assert!(list.ends_with("\n1 blocked IP(s) in tenant acme\n"), "{list}");
    // The replayed history holds the same block and the same states.
    let verify = ok(&l, &["verify"]).await;
    assert!(verify.contains("tenant acme: equal at seq"), "{verify}");
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("replay");
    ok(&l, &["replay", "--data-dir", data.to_str().unwrap()]).await;
    let live = json(&l, &["ip", "status", "acme", sprayer]).await;
    {
        let store = Store::open(&data, 1 << 20).unwrap();
        let block = store.ip_block("acme", sprayer).unwrap().expect("the replay holds the block");
        assert_eq!(Some(block.block_event.to_string().as_str()), live["block_event"].as_str());
    }

    // What a stricter policy would have blocked: the sprayer and the other IP's one failure.
    let stricter = dir.path().join("ip.json");
    std::fs::write(&stricter, r#"{"ip_max_failures":1}"#).unwrap();
    let sim = json(&l, &["simulate", "acme", "--policy", stricter.to_str().unwrap()]).await;
    assert_eq!(sim["ip_blocks"], serde_json::json!({ "actual": 1, "simulated": 2 }), "{sim}");
    assert_eq!(sim["users"], 6, "IP events name no user: {sim}");
    let text = ok(&l, &["simulate", "acme", "--policy", stricter.to_str().unwrap()]).await;
    assert!(text.contains("IPs blocked (password spraying):\n  IPs                 1          2\n"), "{text}");
    let args = ["unlock-many", "acme", "--actor", "sec", "--cidr", "203.0.113.0/24", "--since", &start];
    let mut dry = args.to_vec();
    dry.push("--dry-run");
    let out = ok(&l, &dry).await;
    assert_eq!(out, "u0\nu1\nu2\nu3\nu9\n5 user(s) of tenant acme would be unlocked (dry run: nothing changed)\n");
    assert_eq!(json(&l, &["status", "acme", "u0"]).await["locked"], true);
    let out = ok(&l, &args).await;
    assert!(out.ends_with("5 user(s) of tenant acme unlocked\n"), "{out}");
    assert_eq!(json(&l, &["status", "acme", "u0"]).await["locked"], false);
    assert_eq!(json(&l, &["status", "acme", "other"]).await["locked"], true, "another IP's lock stays");

    let out = ok(&l, &["ip", "unblock", "acme", sprayer, "--actor", "sec", "--reason", "office NAT"]).await;
    assert_eq!(out, "acme / IP 203.0.113.66: not blocked, 0 failure(s) against 0 user(s) in the window\n");
    let (code, _, err) =
        ctl(&l, &["unlock-many", "acme", "--actor", "sec", "--cidr", "203.0.113.7/24", "--since", &start]).await;
    assert_eq!(code, 4, "{err}");
    assert!(err.contains("host bits set; did you mean 203.0.113.0/24?"), "{err}");
}
