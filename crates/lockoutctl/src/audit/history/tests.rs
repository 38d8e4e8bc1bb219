//! Snapshots of `history` and `explain` for histories made here (no NATS): each names the
//! behaviour it pins. Update them with `UPDATE_EXPECT=1 cargo test -p lockoutctl` and read
//! the diff.

use expect_test::{expect, Expect};
use lockout_proto::event::{Attempt, Event, Expired, Factor, Lock, MfaReset, Outcome, PolicyChange, Unlock};
use lockout_proto::{Millis, Policy, Rejection};
use uuid::Uuid;

use super::UserHistory;

/// 2025-06-01T16:00:00Z.
const T0: Millis = 1_748_793_600_000;
const MIN: Millis = 60_000;

fn attempt(n: u128, outcome: Outcome, ip: &str, client: Option<&str>) -> Attempt {
    Attempt {
        id: Uuid::from_u128(n),
        at: 0,
        tenant: "acme".into(),
        user: "alice@acme.com".into(),
        outcome,
        factor: Factor::Password,
        source_ip: ip.into(),
        client: client.map(Into::into),
        credential: None,
        account: None,
        is_final: true,
    }
}

fn fail(n: u128, ip: &str, client: Option<&str>) -> Event {
    Event::Attempt(attempt(n, Outcome::Failure, ip, client))
}

fn ok(n: u128, ip: &str) -> Event {
    Event::Attempt(attempt(n, Outcome::Success, ip, None))
}

fn policy(n: u128, policy: Policy) -> Event {
    Event::Policy(PolicyChange {
        id: Uuid::from_u128(n),
        at: 0,
        tenant: "acme".into(),
        actor: "sec-team".into(),
        policy,
        caller: None,
    })
}

/// Folds `(minutes after T0, event)` in order, with stored sequences 1, 2, …
fn fold(events: Vec<(f64, Result<Event, Rejection>)>) -> UserHistory {
    let mut h = UserHistory::new("acme", "alice@acme.com", true);
    for (i, (min, e)) in events.into_iter().enumerate() {
        let kind = e.as_ref().map_or("attempt", |e| e.kind().as_str());
        let subject = format!("lockout.events.acme.u.YWxpY2VAYWNtZS5jb20.{kind}");
        h.push(i as u64 + 1, &subject, T0 + (min * MIN as f64) as Millis, e);
    }
    h
}

fn check(h: &UserHistory, explain_at_min: f64, want_history: Expect, want_explain: Expect) {
    let mut out = Vec::new();
    h.history_text(None, &mut out).unwrap();
    want_history.assert_eq(&String::from_utf8(out).unwrap());
    let mut out = Vec::new();
    h.explain_text(T0 + (explain_at_min * MIN as f64) as Millis, &mut out).unwrap();
    want_explain.assert_eq(&String::from_utf8(out).unwrap());
}

/// A PMS keeps the counter across a successful login, and unlocks by itself when the lock
/// time has passed (its worked example: limit 3, 5 minutes).
#[test]
fn pms_counter_survives_a_success_then_the_lock_expires() {
    let pms = Policy {
        max_failures: 3,
        lock_seconds: 300,
        window_seconds: 300,
        reset_on_success: false,
        ..Policy::default()
    };
    let h = fold(vec![
        (0.0, Ok(policy(1, pms))),
        (0.0, Ok(fail(2, "203.0.113.7", Some("IT Glue")))),
        (0.1, Ok(fail(3, "203.0.113.7", Some("IT Glue")))),
        (0.5, Ok(ok(4, "203.0.113.7"))),
        (2.0, Ok(fail(5, "198.51.100.2", None))),
        (3.0, Ok(fail(6, "198.51.100.2", None))),
    ]);
    check(
        &h,
        3.0,
        expect![[r#"
            history of alice@acme.com in tenant acme (6 events shown; stored times, UTC)
            #1      2025-06-01T16:00:00.000Z  policy    policy set by sec-team: max_failures 5 -> 3, lock_seconds 1800 -> 300, window_seconds 0 -> 300, reset_on_success true -> false
                    state: unlocked, failures 0/3
            #2      2025-06-01T16:00:00.000Z  attempt   failure 1/3 from 203.0.113.7 (IT Glue)
                    state: unlocked, failures 1/3
            #3      2025-06-01T16:00:06.000Z  attempt   failure 2/3 from 203.0.113.7 (IT Glue)
                    state: unlocked, failures 2/3
            #4      2025-06-01T16:00:30.000Z  attempt   success from 203.0.113.7; counter kept at 2/3 (reset_on_success is off)
                    state: unlocked, failures 2/3
            #5      2025-06-01T16:02:00.000Z  attempt   failure 3/3 from 198.51.100.2 → LOCKED until 2025-06-01T16:07:00.000Z — 3 failures from 2 sources: 203.0.113.7 (IT Glue) ×2, 198.51.100.2 ×1 (automatic lock #1)
                    state: LOCKED (failures) since 2025-06-01T16:02:00.000Z until 2025-06-01T16:07:00.000Z, failures 3/3
            #6      2025-06-01T16:03:00.000Z  attempt   blocked while locked: failure from 198.51.100.2
                    state: LOCKED (failures) since 2025-06-01T16:02:00.000Z until 2025-06-01T16:07:00.000Z, failures 3/3
        "#]],
        expect![[r#"
            acme / alice@acme.com: LOCKED (failures) since 2025-06-01T16:02:00.000Z until 2025-06-01T16:07:00.000Z, failures 3/3
            Why: 3 counted failures reached max_failures 3; the lock was tripped by event #5 at 2025-06-01T16:02:00.000Z, a failure from 198.51.100.2.
            Counted failures:
              #2 2025-06-01T16:00:00.000Z password from 203.0.113.7 (IT Glue)
              #3 2025-06-01T16:00:06.000Z password from 203.0.113.7 (IT Glue)
              #5 2025-06-01T16:02:00.000Z password from 198.51.100.2
            Sources: 203.0.113.7 (IT Glue) ×2, 198.51.100.2 ×1
            Blocked while locked: 1 attempt(s) from 198.51.100.2 ×1
            Policy in force: max_failures=3 lock_seconds=300 window_seconds=300 reset_on_success=false count_mfa_failures=true dedupe_credential=false lock_multiplier=1 max_lock_seconds=86400 history_seconds=86400 permanent_after=0 (set by sec-team at 2025-06-01T16:00:00.000Z (event #1))
            From 5 event(s) of the user's history, folded with their stored times.
        "#]],
    );
    // After the lock's end an `expired` event arrives; explain tells how the last lock ended.
    let mut h = h;
    let lock_event = h.track.locks[0].seq;
    assert_eq!(lock_event, 5);
    h.push(
        7,
        "lockout.events.acme.u.YWxpY2VAYWNtZS5jb20.expired",
        T0 + 7 * MIN,
        Ok(Event::Expired(Expired {
            id: Uuid::from_u128(7),
            at: 0,
            tenant: "acme".into(),
            user: "alice@acme.com".into(),
            lock_event: Uuid::from_u128(5),
        })),
    );
    let mut out = Vec::new();
    h.explain_text(T0 + 8 * MIN, &mut out).unwrap();
    expect![[r#"
        acme / alice@acme.com: unlocked, failures 0/3
        Why not locked: no counted failures in the current streak.
        Last lock: automatic (failures) at 2025-06-01T16:02:00.000Z by event #5, expired at 2025-06-01T16:07:00.000Z.
        Policy in force: max_failures=3 lock_seconds=300 window_seconds=300 reset_on_success=false count_mfa_failures=true dedupe_credential=false lock_multiplier=1 max_lock_seconds=86400 history_seconds=86400 permanent_after=0 (set by sec-team at 2025-06-01T16:00:00.000Z (event #1))
        From 6 event(s) of the user's history, folded with their stored times.
    "#]].assert_eq(&String::from_utf8(out).unwrap());
}

/// A PSA's stale integration retries one old password: with `dedupe_credential` it counts
/// once; MFA failures do not count when the policy says so; attempts while locked are blocked;
/// an admin lock replaces the automatic one; an unlock and an MFA reset say what they did; an
/// event lockoutd refused changes nothing.
#[test]
fn psa_stale_integration_blocked_attempts_admin_lock_unlock_and_mfa_reset() {
    let p = Policy { max_failures: 2, dedupe_credential: true, count_mfa_failures: false, ..Policy::default() };
    let stale = |n: u128| {
        let mut a = attempt(n, Outcome::Failure, "192.0.2.10", Some("IT Glue"));
        a.credential = Some("hmac:old-password".into());
        Event::Attempt(a)
    };
    let mfa = |n: u128| {
        let mut a = attempt(n, Outcome::Failure, "192.0.2.20", None);
        a.factor = Factor::Mfa;
        Event::Attempt(a)
    };
    let admin = |n: u128| (Uuid::from_u128(n), 0, "acme".into(), "alice@acme.com".into(), "helpdesk-7".into());
    let (id, at, tenant, user, actor) = admin(9);
    let lock = Event::Lock(Lock {
        id,
        at,
        tenant,
        user,
        actor,
        reason: Some("investigating".into()),
        seconds: None,
        caller: None,
    });
    let (id, at, tenant, user, actor) = admin(10);
    let unlock = Event::Unlock(Unlock {
        id,
        at,
        tenant,
        user,
        actor,
        reason: None,
        caller: Some("ADMIN_ACME/helpdesk-7".into()),
        lock_event: None,
    });
    let (id, at, tenant, user, actor) = admin(11);
    let reset =
        Event::MfaReset(MfaReset { id, at, tenant, user, actor, reason: Some("new phone".into()), caller: None });
    let refused = Rejection::new(
        lockout_proto::error::RejectReason::BadIp,
        "`source_ip` \"nope\" is not an IPv4 or IPv6 address",
    );
    let h = fold(vec![
        (0.0, Ok(policy(1, p))),
        (1.0, Ok(stale(2))),
        (2.0, Ok(stale(3))),
        (3.0, Ok(mfa(4))),
        (4.0, Err(refused)),
        (5.0, Ok(fail(6, "198.51.100.9", None))),
        (6.0, Ok(stale(7))),
        (7.0, Ok(ok(8, "192.0.2.10"))),
        (8.0, Ok(lock)),
        (9.0, Ok(unlock)),
        (10.0, Ok(reset)),
    ]);
    check(
        &h,
        11.0,
        expect![[r#"
            history of alice@acme.com in tenant acme (11 events shown; stored times, UTC)
            #1      2025-06-01T16:00:00.000Z  policy    policy set by sec-team: max_failures 5 -> 2, count_mfa_failures true -> false, dedupe_credential false -> true
                    state: unlocked, failures 0/2
            #2      2025-06-01T16:01:00.000Z  attempt   failure 1/2 from 192.0.2.10 (IT Glue)
                    state: unlocked, failures 1/2
            #3      2025-06-01T16:02:00.000Z  attempt   failure from 192.0.2.10 (IT Glue) not counted: its credential was already counted in this streak (dedupe_credential)
                    state: unlocked, failures 1/2
            #4      2025-06-01T16:03:00.000Z  attempt   mfa failure from 192.0.2.20 not counted: count_mfa_failures is off
                    state: unlocked, failures 1/2
            #5      2025-06-01T16:04:00.000Z  attempt   refused by lockoutd (bad_ip), no effect: `source_ip` "nope" is not an IPv4 or IPv6 address
                    state: unlocked, failures 1/2
            #6      2025-06-01T16:05:00.000Z  attempt   failure 2/2 from 198.51.100.9 → LOCKED until 2025-06-01T16:35:00.000Z — 2 failures from 2 sources: 192.0.2.10 (IT Glue) ×1, 198.51.100.9 ×1 (automatic lock #1)
                    state: LOCKED (failures) since 2025-06-01T16:05:00.000Z until 2025-06-01T16:35:00.000Z, failures 2/2
            #7      2025-06-01T16:06:00.000Z  attempt   blocked while locked: failure from 192.0.2.10 (IT Glue)
                    state: LOCKED (failures) since 2025-06-01T16:05:00.000Z until 2025-06-01T16:35:00.000Z, failures 2/2
            #8      2025-06-01T16:07:00.000Z  attempt   blocked while locked: success from 192.0.2.10
                    state: LOCKED (failures) since 2025-06-01T16:05:00.000Z until 2025-06-01T16:35:00.000Z, failures 2/2
            #9      2025-06-01T16:08:00.000Z  lock      LOCKED by helpdesk-7 until an admin unlocks, replacing the lock in force (reason: investigating)
                    state: LOCKED (admin) since 2025-06-01T16:08:00.000Z until an admin unlocks, failures 2/2
            #10     2025-06-01T16:09:00.000Z  unlock    unlocked by helpdesk-7 [ADMIN_ACME/helpdesk-7]
                    state: unlocked, failures 0/2
            #11     2025-06-01T16:10:00.000Z  mfa_reset MFA reset by helpdesk-7: 0 MFA failure(s) removed, re-enrolment required (reason: new phone)
                    state: unlocked, failures 0/2, MFA re-enrolment pending
        "#]],
        expect![[r#"
        acme / alice@acme.com: unlocked, failures 0/2, MFA re-enrolment pending
        Why not locked: no counted failures in the current streak.
        Last lock: admin (admin) at 2025-06-01T16:08:00.000Z by event #9, unlocked by helpdesk-7 at 2025-06-01T16:09:00.000Z.
        Policy in force: max_failures=2 lock_seconds=1800 window_seconds=0 reset_on_success=true count_mfa_failures=false dedupe_credential=true lock_multiplier=1 max_lock_seconds=86400 history_seconds=86400 permanent_after=0 (set by sec-team at 2025-06-01T16:00:00.000Z (event #1))
        From 9 event(s) of the user's history, folded with their stored times.
    "#]],
    );
}
