//! Scenario tests that read like the vendor help pages the service's behaviour comes from:
//! Kaseya BMS (policy defaults, the lock e-mail, MFA reset), Autotask PSA (stale integration
//! credentials, the source IP), a business system (Locked Date, Lock Reason, Unlocked by) and
//! a PMS/ORS product (auto-unlock time, a counter a success does not reset).
//!
//! Each test is given a policy, folds a script of events (`when`) and checks `status` at
//! chosen instants and the notices the fold produced (`then`). Every test names the product
//! whose behaviour it pins down, or the rule of the protocol it checks; `docs/protocol.md`,
//! sections "Policy", "Lockout semantics" and "Notices", is the judge.

use lockout_core::fold::fold_policy;
use lockout_core::ids::{expired_event_id, expired_event_id_v1, notice_id, NoticeKind};
use lockout_core::state::BlockedSource;
use lockout_core::{fold, status, UserState, EXPIRED_EARLY_ALLOWANCE_MS};
use lockout_proto::event::{Attempt, Event, Expired, Factor, Lock, MfaReset, Outcome, PolicyChange, Unlock};
use lockout_proto::notice::{How, LockedNotice, MfaResetNotice, Notice, Source, UnlockedNotice};
use lockout_proto::status::{LockReason, Scope};
use lockout_proto::{CompactString, Millis, Policy, Status};
use uuid::Uuid;

const TENANT: &str = "acme";
const USER: &str = "alice@acme.com";

/// 2024-05-06 00:00:00 UTC.
const DAY: Millis = 1_714_953_600_000;
const SEC: Millis = 1000;
const MIN: Millis = 60 * SEC;
const HOUR: Millis = 60 * MIN;

/// A wall-clock time on `DAY`.
fn hms(h: u64, m: u64, s: u64) -> Millis {
    DAY + h * HOUR + m * MIN + s * SEC
}

/// The deterministic id of script event number `n`.
fn id(n: u32) -> Uuid {
    Uuid::from_u128(0x5eed_0000_0000_7000_8000_0000_0000_0000 | u128::from(n))
}

// ---------------------------------------------------------------------------------------
// The one event helper
// ---------------------------------------------------------------------------------------

/// What an event of a script does.
#[derive(Clone, Copy)]
enum What<'a> {
    Attempt { outcome: Outcome, factor: Factor, ip: &'a str, client: Option<&'a str>, credential: Option<&'a str> },
    Unlock { actor: &'a str },
    Lock { actor: &'a str, seconds: Option<u32>, reason: Option<&'a str> },
    MfaReset { actor: &'a str },
    Expired { lock_event: Uuid },
}

/// A password failure from `ip` / `client`.
fn fail<'a>(ip: &'a str, client: Option<&'a str>) -> What<'a> {
    What::Attempt { outcome: Outcome::Failure, factor: Factor::Password, ip, client, credential: None }
}

/// A failure with a given factor and credential fingerprint.
fn fail_with<'a>(ip: &'a str, client: Option<&'a str>, factor: Factor, credential: Option<&'a str>) -> What<'a> {
    What::Attempt { outcome: Outcome::Failure, factor, ip, client, credential }
}

/// A successful attempt.
fn success<'a>(ip: &'a str, client: Option<&'a str>, factor: Factor) -> What<'a> {
    What::Attempt { outcome: Outcome::Success, factor, ip, client, credential: None }
}

/// One step of a script: the fold time (JetStream stored time) and the event.
type Step = (Millis, Event);

/// Event number `n` (id `id(n)`) of the script, folded at `time`, published with `at = time`.
fn ev(n: u32, time: Millis, what: What<'_>) -> Step {
    let (tenant, user, eid) = (CompactString::from(TENANT), CompactString::from(USER), id(n));
    let event = match what {
        What::Attempt { outcome, factor, ip, client, credential } => Event::Attempt(Attempt {
            id: eid,
            at: time,
            tenant,
            user,
            outcome,
            factor,
            source_ip: ip.into(),
            client: client.map(Into::into),
            credential: credential.map(Into::into),
            account: None,
            is_final: true,
        }),
        What::Unlock { actor } => Event::Unlock(Unlock {
            id: eid,
            at: time,
            tenant,
            user,
            actor: actor.into(),
            reason: None,
            caller: None,
            lock_event: None,
        }),
        What::Lock { actor, seconds, reason } => Event::Lock(Lock {
            id: eid,
            at: time,
            tenant,
            user,
            actor: actor.into(),
            reason: reason.map(Into::into),
            seconds,
            caller: None,
        }),
        What::MfaReset { actor } => Event::MfaReset(MfaReset {
            id: eid,
            at: time,
            tenant,
            user,
            actor: actor.into(),
            reason: None,
            caller: None,
        }),
        // The service writes `expired` events with an id derived from the lock's event.
        What::Expired { lock_event } => Event::Expired(Expired {
            id: expired_event_id(&tenant, &user, lock_event),
            at: time,
            tenant,
            user,
            lock_event,
        }),
    };
    (time, event)
}

/// Folds `steps` in order from `state` with `lockout_core::fold`, returning the final state
/// and every notice, in order.
fn run_from(policy: &Policy, mut state: UserState, steps: &[Step]) -> (UserState, Vec<Notice>) {
    let mut notices = Vec::new();
    for (time, event) in steps {
        let folded = fold(policy, state, event, *time);
        state = folded.state;
        notices.extend(folded.notices);
    }
    (state, notices)
}

/// Folds `steps` into a new user.
fn run(policy: &Policy, steps: &[Step]) -> (UserState, Vec<Notice>) {
    run_from(policy, UserState::default(), steps)
}

/// The user's `Status` at `now`.
fn st(policy: &Policy, state: &UserState, now: Millis) -> Status {
    status(TENANT, USER, policy, state, now)
}

fn locked(notices: &[Notice]) -> Vec<&LockedNotice> {
    notices.iter().filter_map(|n| if let Notice::Locked(l) = n { Some(l) } else { None }).collect()
}

fn unlocked(notices: &[Notice]) -> Vec<&UnlockedNotice> {
    notices.iter().filter_map(|n| if let Notice::Unlocked(u) = n { Some(u) } else { None }).collect()
}

fn kinds(notices: &[Notice]) -> Vec<&'static str> {
    notices.iter().map(Notice::kind).collect()
}

fn source(ip: &str, client: Option<&str>, failures: u32) -> Source {
    Source { ip: ip.into(), client: client.map(Into::into), failures }
}

/// One row of expected status fields at an instant.
#[derive(Debug, PartialEq, Eq)]
struct Row {
    locked: bool,
    reason: Option<LockReason>,
    locked_at: Option<Millis>,
    locked_until: Option<Millis>,
    failures: u32,
}

fn row(s: &Status) -> Row {
    Row {
        locked: s.locked,
        reason: s.reason,
        locked_at: s.locked_at,
        locked_until: s.locked_until,
        failures: s.failures,
    }
}

fn open(failures: u32) -> Row {
    Row { locked: false, reason: None, locked_at: None, locked_until: None, failures }
}

fn shut(reason: LockReason, at: Millis, until: Option<Millis>, failures: u32) -> Row {
    Row { locked: true, reason: Some(reason), locked_at: Some(at), locked_until: until, failures }
}

/// Checks a table of (instant, expected row) against the status of `state`.
fn expect_rows(policy: &Policy, state: &UserState, table: &[(Millis, Row)]) {
    for (now, want) in table {
        assert_eq!(&row(&st(policy, state, *now)), want, "status at {now} (DAY + {} ms)", now - DAY);
    }
}

/// The unlocked notice an expiry of the lock started by `lock_event` must produce.
fn expiry_notice(lock_event: Uuid, until: Millis) -> UnlockedNotice {
    UnlockedNotice {
        id: notice_id(TENANT, USER, lock_event, NoticeKind::Expired),
        event_id: lock_event,
        tenant: TENANT.into(),
        user: USER.into(),
        at: until,
        how: How::Expired,
        actor: None,
        scope: Scope::Account,
        client: None,
        caller: None,
    }
}

const IT_GLUE: Option<&str> = Some("IT Glue");
const VSA: Option<&str> = Some("VSA");
const IP: &str = "203.0.113.7";

// ---------------------------------------------------------------------------------------
// Kaseya BMS (a PSA): defaults, 5 failures, 30 minutes, the e-mail sentence.
// ---------------------------------------------------------------------------------------

/// Kaseya BMS: "The default number of failed login attempts is set to 5 ... The default
/// length of time to disable the account is set to 30 minutes", and the lock e-mail.
#[test]
fn bms_defaults_lock_after_five_failures_for_thirty_minutes() {
    // given: a tenant with no policy (the BMS defaults)
    let policy = Policy::default();
    assert_eq!((policy.max_failures, policy.lock_seconds), (5, 1800));
    // when: IT Glue holds a stale password and fails five times
    let t5 = hms(9, 0, 4);
    let steps: Vec<Step> = (1..=5).map(|n| ev(n, hms(9, 0, u64::from(n) - 1), fail(IP, IT_GLUE))).collect();
    let (after4, notices4) = run(&policy, &steps[..4]);
    let (state, notices) = run(&policy, &steps);
    // then: four failures do not lock ...
    assert!(notices4.is_empty(), "{notices4:?}");
    expect_rows(&policy, &after4, &[(hms(9, 0, 3), open(4))]);
    // ... the fifth locks until t + 30 minutes
    expect_rows(
        &policy,
        &state,
        &[
            (t5, shut(LockReason::Failures, t5, Some(t5 + 1_800_000), 5)),
            (t5 + 1_799_999, shut(LockReason::Failures, t5, Some(t5 + 1_800_000), 5)),
            (t5 + 1_800_000, open(0)),
        ],
    );
    let s = st(&policy, &state, t5);
    assert_eq!((s.lock_count, s.last_failure_at, s.last_source_ip.as_deref()), (1, Some(t5), Some(IP)));
    assert_eq!(s.max_failures, 5);
    // and the notice carries the e-mail's sentence with the source of the failures
    assert_eq!(
        notices,
        vec![Notice::Locked(LockedNotice {
            id: notice_id(TENANT, USER, id(5), NoticeKind::Locked),
            event_id: id(5),
            tenant: TENANT.into(),
            user: USER.into(),
            at: t5,
            reason: LockReason::Failures,
            locked_until: Some(t5 + 1_800_000),
            lock_seconds: Some(1800),
            failures: 5,
            source_ip: Some(IP.into()),
            client: Some("IT Glue".into()),
            sources: vec![source(IP, IT_GLUE, 5)],
            actor: None,
            message: "Your account has been locked for 30 minutes due to an excessive number of unsuccessful log in attempts from 203.0.113.7 (IT Glue).".to_owned(), scope: Scope::Account, caller: None,
        })]
    );
}

/// Kaseya BMS: "If you attempted five logins and they failed consecutively, you will be
/// locked out" — a success in between starts over (`reset_on_success` defaults to true), and
/// with `window_seconds` 0 failures never expire.
#[test]
fn bms_only_consecutive_failures_lock() {
    let policy = Policy::default();
    let f = |n: u32, t: Millis| ev(n, t, fail(IP, VSA));
    let ok = |n: u32, t: Millis| ev(n, t, success(IP, VSA, Factor::Password));
    // (name, when, then: locked?, counter)
    let table: Vec<(&str, Vec<Step>, bool, u32)> = vec![
        ("five in a row", (1..=5).map(|n| f(n, hms(8, 0, n.into()))).collect(), true, 5),
        (
            "four, a success, four",
            (1..=4)
                .map(|n| f(n, hms(8, 0, n.into())))
                .chain([ok(5, hms(8, 1, 0))])
                .chain((6..=9).map(|n| f(n, hms(8, 2, n.into()))))
                .collect(),
            false,
            4,
        ),
        (
            "five spread over five days (no window)",
            (1..=5).map(|n| f(n, DAY + u64::from(n) * 24 * HOUR)).collect(),
            true,
            5,
        ),
    ];
    for (name, steps, want_locked, want_failures) in table {
        let (state, notices) = run(&policy, &steps);
        let last = steps.last().expect("non-empty").0;
        let s = st(&policy, &state, last);
        assert_eq!((s.locked, s.failures), (want_locked, want_failures), "{name}");
        assert_eq!(kinds(&notices), if want_locked { vec!["locked"] } else { vec![] }, "{name}");
    }
}

/// `docs/protocol.md`: "The fold's clock is the JetStream stored timestamp of each event ...;
/// the publisher's `at` is kept for audit." A gateway with a wrong clock changes nothing.
#[test]
fn fold_time_is_the_stored_time_not_the_publishers_clock() {
    let policy = Policy::default();
    let mut steps: Vec<Step> = (1..=5).map(|n| ev(n, hms(9, 0, n.into()), fail(IP, IT_GLUE))).collect();
    for (_, e) in &mut steps {
        if let Event::Attempt(a) = e {
            a.at = 42; // the gateway's clock is at 1970
        }
    }
    let (state, notices) = run(&policy, &steps);
    let t5 = hms(9, 0, 5);
    expect_rows(&policy, &state, &[(t5, shut(LockReason::Failures, t5, Some(t5 + 30 * MIN), 5))]);
    assert_eq!(locked(&notices)[0].at, t5);
}

// ---------------------------------------------------------------------------------------
// A PMS/ORS product (auto-unlock setting): the worked example and the manual-only lock.
// ---------------------------------------------------------------------------------------

fn pms_policy() -> Policy {
    Policy { max_failures: 3, lock_seconds: 300, window_seconds: 300, reset_on_success: false, ..Policy::default() }
}

/// A PMS/ORS product's worked example (limit 3, unlock time 5 minutes; a success does not
/// reset the counter), as `docs/protocol.md`, section "Worked example", states it.
#[test]
fn pms_worked_example_counter_survives_a_success() {
    // given: Invalid Password Attempts 3, Default Time to Unlock Account 5 minutes, and a
    // success that does not reset the counter
    let policy = pms_policy();
    // when: "User MW01 makes 2 failed login attempts at 4:00 PM. On the third attempt he is
    // successful." ... "He logs out at 4:02 and makes one unsuccessful login attempt."
    let steps = vec![
        ev(1, hms(16, 0, 0), fail("10.0.0.5", Some("PMS"))),
        ev(2, hms(16, 0, 10), fail("10.0.0.5", Some("PMS"))),
        ev(3, hms(16, 0, 30), success("10.0.0.5", Some("PMS"), Factor::Password)),
        ev(4, hms(16, 2, 0), fail("10.0.0.5", Some("PMS"))),
    ];
    let (after_success, none) = run(&policy, &steps[..3]);
    assert!(none.is_empty());
    // then: "His invalid attempts counter is set at 2."
    expect_rows(&policy, &after_success, &[(hms(16, 0, 30), open(2))]);

    let (locked_state, notices) = run(&policy, &steps);
    // "The invalid attempts counter, still at 2, is incremented to 3; therefore, user MW01 is
    // locked out." — at 16:02 until 16:07
    let until = hms(16, 7, 0);
    expect_rows(
        &policy,
        &locked_state,
        &[
            (hms(16, 2, 0), shut(LockReason::Failures, hms(16, 2, 0), Some(until), 3)),
            (until - 1, shut(LockReason::Failures, hms(16, 2, 0), Some(until), 3)),
        ],
    );
    let l = locked(&notices);
    assert_eq!(l.len(), 1);
    assert_eq!(
        (l[0].event_id, l[0].at, l[0].locked_until, l[0].lock_seconds),
        (id(4), hms(16, 2, 0), Some(until), Some(300))
    );
    assert_eq!(
        l[0].message,
        "Your account has been locked for 5 minutes due to an excessive number of unsuccessful log in attempts from 10.0.0.5 (PMS)."
    );

    // when: at 16:07 the service's `expired` event is folded
    let (state, more) = run_from(&policy, locked_state, &[ev(5, until, What::Expired { lock_event: id(4) })]);
    // then: "After 5 minutes, user MW01's invalid attempts counter is reset to 0."
    assert_eq!(more, vec![Notice::Unlocked(expiry_notice(id(4), until))]);
    expect_rows(&policy, &state, &[(until, open(0))]);
    let s = st(&policy, &state, until);
    assert_eq!((s.unlocked_at, s.unlocked_by), (Some(until), None));
    assert_eq!(state.failures(), 0);

    // "He attempts to login with the correct user ID and password and is successful. His
    // invalid attempts counter remains at 0."
    let (state, none) =
        run_from(&policy, state, &[ev(6, hms(16, 7, 30), success("10.0.0.5", Some("PMS"), Factor::Password))]);
    assert!(none.is_empty());
    expect_rows(&policy, &state, &[(hms(16, 7, 30), open(0))]);
}

/// A PMS/ORS product: "If no Default Time to Unlock Account is specified, the account will
/// need to be re-activated from the Edit User screen by a user with supervisor privileges."
/// (`lock_seconds` 0 = locked until an admin unlocks.)
#[test]
fn pms_no_unlock_time_means_locked_until_a_supervisor_reactivates() {
    // given
    let policy = Policy { lock_seconds: 0, ..pms_policy() };
    let t3 = hms(16, 0, 20);
    let steps: Vec<Step> =
        (1..=3).map(|n| ev(n, hms(16, 0, u64::from(n - 1) * 10), fail("10.1.2.3", Some("PMS")))).collect();
    // when
    let (state, notices) = run(&policy, &steps);
    // then: locked with no end
    let year = 365 * 24 * HOUR;
    expect_rows(
        &policy,
        &state,
        &[(t3, shut(LockReason::Failures, t3, None, 3)), (t3 + year, shut(LockReason::Failures, t3, None, 3))],
    );
    let l = locked(&notices);
    assert_eq!((l.len(), l[0].locked_until, l[0].lock_seconds), (1, None, None));
    assert_eq!(
        l[0].message,
        "Your account has been locked until an administrator unlocks it due to an excessive number of unsuccessful log in attempts from 10.1.2.3 (PMS)."
    );

    // when: a year passes, the user tries again, and a stray `expired` names the lock
    let (state, none) = run_from(
        &policy,
        state,
        &[
            ev(4, t3 + year, success("10.1.2.3", Some("PMS"), Factor::Password)),
            ev(5, t3 + year + 1, What::Expired { lock_event: id(3) }),
        ],
    );
    // then: nothing ends it
    assert!(none.is_empty(), "{none:?}");
    expect_rows(&policy, &state, &[(t3 + year + 1, shut(LockReason::Failures, t3, None, 3))]);
    assert_eq!(state.lock.as_ref().map(|l| l.blocked), Some(1));

    // when: a supervisor re-activates the account
    let t = t3 + year + 2;
    let (state, notices) = run_from(&policy, state, &[ev(6, t, What::Unlock { actor: "supervisor" })]);
    // then
    expect_rows(&policy, &state, &[(t, open(0))]);
    let u = unlocked(&notices);
    assert_eq!((u.len(), u[0].how, u[0].actor.as_deref(), u[0].event_id), (1, How::Admin, Some("supervisor"), id(6)));
}

// ---------------------------------------------------------------------------------------
// A business system's lock record: Locked Date, Lock Reason, Unlocked by; admin unlock and lock.
// ---------------------------------------------------------------------------------------

/// Five failures at 10:00:01..05 from the BMS defaults.
fn locked_by_failures() -> (Policy, UserState, Vec<Notice>, Millis) {
    let policy = Policy::default();
    let steps: Vec<Step> = (1..=5).map(|n| ev(n, hms(10, 0, n.into()), fail(IP, IT_GLUE))).collect();
    let (state, notices) = run(&policy, &steps);
    (policy, state, notices, hms(10, 0, 5))
}

/// A business system: "Locked Date ... Lock Reason ('Failures' for example)" while locked;
/// "Once the account is unlocked, values in the Locked Date and Lock Reason fields are removed
/// and the Unlocked by field will show the User ID of the user who last unlocked the account."
#[test]
fn business_system_admin_unlock_records_unlocked_by() {
    // given: a user locked by failures
    let (policy, state, _, t5) = locked_by_failures();
    let s = st(&policy, &state, t5 + MIN);
    assert_eq!((s.locked, s.reason, s.locked_at), (true, Some(LockReason::Failures), Some(t5)));
    // when: an admin unlocks at 10:10
    let t = hms(10, 10, 0);
    let (state, notices) = run_from(&policy, state, &[ev(6, t, What::Unlock { actor: "admin.jones" })]);
    // then
    let s = st(&policy, &state, t);
    assert_eq!(row(&s), open(0));
    assert_eq!((s.unlocked_at, s.unlocked_by.as_deref()), (Some(t), Some("admin.jones")));
    assert_eq!(s.lock_count, 1);
    assert_eq!(
        notices,
        vec![Notice::Unlocked(UnlockedNotice {
            id: notice_id(TENANT, USER, id(6), NoticeKind::Unlocked),
            event_id: id(6),
            tenant: TENANT.into(),
            user: USER.into(),
            at: t,
            how: How::Admin,
            actor: Some("admin.jones".into()),
            scope: Scope::Account,
            client: None,
            caller: None,
        })]
    );
    // and when the old lock's time runs out, nothing more happens
    let (state, none) = run_from(
        &policy,
        state,
        &[ev(7, t5 + 30 * MIN, What::Expired { lock_event: id(5) }), ev(8, t5 + 31 * MIN, fail(IP, IT_GLUE))],
    );
    assert!(none.is_empty(), "{none:?}");
    let s = st(&policy, &state, t5 + 31 * MIN);
    assert_eq!((s.failures, s.unlocked_by.as_deref()), (1, Some("admin.jones")));
}

/// `docs/protocol.md`: "`unlock` of an unlocked user resets the counter and records
/// `unlocked_*`, with no notice."
#[test]
fn unlock_of_an_unlocked_user_resets_the_counter_without_notice() {
    let policy = Policy::default();
    let mut steps: Vec<Step> = (1..=3).map(|n| ev(n, hms(11, 0, n.into()), fail(IP, None))).collect();
    steps.push(ev(4, hms(11, 1, 0), What::Unlock { actor: "helpdesk" }));
    let (state, notices) = run(&policy, &steps);
    assert!(notices.is_empty(), "{notices:?}");
    let s = st(&policy, &state, hms(11, 1, 0));
    assert_eq!(row(&s), open(0));
    assert_eq!((s.unlocked_at, s.unlocked_by.as_deref()), (Some(hms(11, 1, 0)), Some("helpdesk")));
    // the counter really restarted: four more failures do not lock, the fifth does
    let more: Vec<Step> = (5..=9).map(|n| ev(n, hms(11, 2, n.into()), fail(IP, None))).collect();
    let (after4, n4) = run_from(&policy, state.clone(), &more[..4]);
    assert!(n4.is_empty());
    assert_eq!(st(&policy, &after4, hms(11, 2, 8)).failures, 4);
    let (_, n5) = run_from(&policy, state, &more);
    assert_eq!(kinds(&n5), ["locked"]);
}

/// `docs/protocol.md`: "`lock` of a locked user replaces the lock (reason `admin`) and
/// publishes a new `locked` notice." The first lock's expiry then never happens.
#[test]
fn admin_lock_of_a_locked_user_replaces_the_lock() {
    // given: a user locked by failures until 10:30:05
    let (policy, state, first, t5) = locked_by_failures();
    // when: an admin locks them for two hours at 10:05
    let t = hms(10, 5, 0);
    let lock = What::Lock { actor: "admin.jones", seconds: Some(7200), reason: Some("offboarding") };
    let (state, notices) = run_from(&policy, state, &[ev(6, t, lock)]);
    // then
    expect_rows(&policy, &state, &[(t, shut(LockReason::Admin, t, Some(t + 2 * HOUR), 5))]);
    assert_eq!(
        notices,
        vec![Notice::Locked(LockedNotice {
            id: notice_id(TENANT, USER, id(6), NoticeKind::Locked),
            event_id: id(6),
            tenant: TENANT.into(),
            user: USER.into(),
            at: t,
            reason: LockReason::Admin,
            locked_until: Some(t + 2 * HOUR),
            lock_seconds: Some(7200),
            failures: 5,
            source_ip: None,
            client: None,
            sources: locked(&first)[0].sources.clone(),
            actor: Some("admin.jones".into()),
            message: "Your account has been locked by an administrator for 2 hours (reason: offboarding).".to_owned(),
            scope: Scope::Account,
            caller: None,
        })]
    );
    assert_ne!(notices[0].id(), first[0].id());
    assert_eq!(st(&policy, &state, t).lock_count, 1, "an admin lock is not an automatic lock");

    // when: the first lock's time passes (with the service's `expired` for it), then the
    // admin lock's time passes
    let (state, none) = run_from(
        &policy,
        state,
        &[ev(7, t5 + 30 * MIN, What::Expired { lock_event: id(5) }), ev(8, t5 + 30 * MIN + 1, fail(IP, IT_GLUE))],
    );
    // then: still locked by the admin, the failure blocked
    assert!(none.is_empty(), "{none:?}");
    expect_rows(&policy, &state, &[(t5 + 30 * MIN + 1, shut(LockReason::Admin, t, Some(t + 2 * HOUR), 5))]);
    let (state, ended) = run_from(&policy, state, &[ev(9, t + 2 * HOUR, What::Expired { lock_event: id(6) })]);
    assert_eq!(ended, vec![Notice::Unlocked(expiry_notice(id(6), t + 2 * HOUR))]);
    expect_rows(&policy, &state, &[(t + 2 * HOUR, open(0))]);
}

/// `docs/protocol.md`: `lock` without `seconds` locks until an admin unlocks; an admin lock
/// of an unlocked user keeps the counter and names no tripping attempt.
#[test]
fn admin_lock_without_seconds_lasts_until_unlocked() {
    let policy = Policy::default();
    let t = hms(12, 0, 0);
    let (state, notices) = run(
        &policy,
        &[ev(1, t - MIN, fail(IP, None)), ev(2, t, What::Lock { actor: "sec-team", seconds: None, reason: None })],
    );
    expect_rows(
        &policy,
        &state,
        &[(t, shut(LockReason::Admin, t, None, 1)), (t + 400 * 24 * HOUR, shut(LockReason::Admin, t, None, 1))],
    );
    let l = locked(&notices);
    assert_eq!(l.len(), 1);
    assert_eq!((l[0].locked_until, l[0].lock_seconds, l[0].source_ip.as_deref()), (None, None, None));
    assert_eq!(l[0].sources, vec![source(IP, None, 1)]);
    assert_eq!(l[0].message, "Your account has been locked by an administrator until an administrator unlocks it.");
}

// ---------------------------------------------------------------------------------------
// MFA reset (a business system; Kaseya BMS MFA).
// ---------------------------------------------------------------------------------------

/// A business system and Kaseya BMS MFA: an admin resets a user's MFA; the user re-enrols at
/// next login. `docs/protocol.md`: "`mfa_reset` records actor and time, removes failures with
/// factor `mfa` or `recovery_code` from the counter and from `sources`, and sets
/// `mfa_reenrol` until a successful `mfa` attempt is folded; it does not unlock."
#[test]
fn bms_mfa_reset_removes_second_factor_failures_and_asks_for_reenrolment() {
    // given: defaults; two password failures from the office, a lost phone's MFA failures
    // from the user's home and a wrong recovery token from the office
    let policy = Policy::default();
    let (office, home) = ("198.51.100.20", "192.0.2.44");
    let steps = vec![
        ev(1, hms(8, 0, 0), fail(office, Some("browser"))),
        ev(2, hms(8, 0, 5), fail_with(home, Some("browser"), Factor::Mfa, Some("otp-1"))),
        ev(3, hms(8, 0, 10), fail(office, Some("browser"))),
        ev(4, hms(8, 0, 15), fail_with(office, Some("browser"), Factor::RecoveryCode, Some("rc-1"))),
    ];
    let (state, none) = run(&policy, &steps);
    assert!(none.is_empty());
    assert_eq!(st(&policy, &state, hms(8, 0, 15)).failures, 4);
    assert_eq!(state.ranked_sources(), vec![source(office, Some("browser"), 3), source(home, Some("browser"), 1)]);

    // when: the admin resets MFA at 08:05
    let t = hms(8, 5, 0);
    let (state, notices) = run_from(&policy, state, &[ev(5, t, What::MfaReset { actor: "admin.jones" })]);
    // then: only the password failures remain, and the home source is gone
    let s = st(&policy, &state, t);
    assert_eq!(row(&s), open(2));
    assert_eq!((s.mfa_reset_at, s.mfa_reset_by.as_deref(), s.mfa_reenrol), (Some(t), Some("admin.jones"), true));
    assert_eq!(state.ranked_sources(), vec![source(office, Some("browser"), 2)]);
    assert_eq!(
        notices,
        vec![Notice::MfaReset(MfaResetNotice {
            id: notice_id(TENANT, USER, id(5), NoticeKind::MfaReset),
            event_id: id(5),
            tenant: TENANT.into(),
            user: USER.into(),
            at: t,
            actor: "admin.jones".into(),
            caller: None,
        })]
    );

    // when: three more password failures lock; the notice's sources have no MFA source
    let more: Vec<Step> = (6..=8).map(|n| ev(n, hms(8, 6, n.into()), fail(home, Some("browser")))).collect();
    let (locked_state, notices) = run_from(&policy, state.clone(), &more);
    let l = locked(&notices);
    assert_eq!(l.len(), 1);
    assert_eq!(l[0].failures, 5);
    assert_eq!(l[0].sources, vec![source(home, Some("browser"), 3), source(office, Some("browser"), 2)]);
    assert!(st(&policy, &locked_state, hms(8, 6, 8)).mfa_reenrol, "a lock does not clear mfa_reenrol");

    // when: instead, the user logs in with the password, then with a new MFA code
    let (after_password, _) =
        run_from(&policy, state.clone(), &[ev(9, hms(8, 10, 0), success(office, None, Factor::Password))]);
    assert!(st(&policy, &after_password, hms(8, 10, 0)).mfa_reenrol, "a password success does not end re-enrolment");
    let (after_rc, _) = run_from(
        &policy,
        after_password.clone(),
        &[ev(10, hms(8, 10, 5), success(office, None, Factor::RecoveryCode))],
    );
    assert!(st(&policy, &after_rc, hms(8, 10, 5)).mfa_reenrol, "a recovery code is not an mfa enrolment");
    let (after_mfa, none) =
        run_from(&policy, after_password, &[ev(11, hms(8, 10, 10), success(office, None, Factor::Mfa))]);
    assert!(none.is_empty());
    let s = st(&policy, &after_mfa, hms(8, 10, 10));
    assert!(!s.mfa_reenrol);
    assert_eq!((s.mfa_reset_at, s.mfa_reset_by.as_deref()), (Some(t), Some("admin.jones")), "the reset stays recorded");
}

/// `docs/protocol.md`: `mfa_reset` "does not unlock".
#[test]
fn mfa_reset_does_not_unlock() {
    let (policy, state, _, t5) = locked_by_failures();
    let t = t5 + 5 * MIN;
    let (state, notices) = run_from(&policy, state, &[ev(6, t, What::MfaReset { actor: "admin.jones" })]);
    assert_eq!(kinds(&notices), ["mfa_reset"]);
    let s = st(&policy, &state, t);
    assert_eq!(
        (s.locked, s.reason, s.locked_at, s.locked_until),
        (true, Some(LockReason::Failures), Some(t5), Some(t5 + 30 * MIN))
    );
    assert!(s.mfa_reenrol);
}

/// `docs/protocol.md`: `count_mfa_failures` — "failed `mfa` / `recovery_code` attempts count
/// like password failures". Kaseya BMS MFA (mandatory MFA, single-use recovery token): a user
/// without their phone keeps typing codes.
#[test]
fn bms_mfa_count_mfa_failures_counts_wrong_codes_and_recovery_tokens() {
    // (count_mfa_failures, factor, then: locked?, counter)
    let table = [
        (true, Factor::Mfa, true, 5),
        (true, Factor::RecoveryCode, true, 5),
        (false, Factor::Mfa, false, 0),
        (false, Factor::RecoveryCode, false, 0),
        (false, Factor::Password, true, 5),
    ];
    for (count, factor, want_locked, want_failures) in table {
        let policy = Policy { count_mfa_failures: count, ..Policy::default() };
        let steps: Vec<Step> = (1..=7).map(|n| ev(n, hms(7, 0, n.into()), fail_with(IP, None, factor, None))).collect();
        let (state, notices) = run(&policy, &steps);
        let s = st(&policy, &state, hms(7, 0, 7));
        let case = format!("count_mfa_failures={count} factor={factor:?}");
        assert_eq!((s.locked, s.failures), (want_locked, want_failures), "{case}");
        assert_eq!(locked(&notices).len(), usize::from(want_locked), "{case}");
        if !want_locked {
            assert_eq!(s.last_failure_at, None, "{case}: an uncounted failure is not the last counted failure");
            assert_eq!(state, UserState::default(), "{case}");
        }
    }
}

// ---------------------------------------------------------------------------------------
// Kaseya BMS and Autotask PSA: the stale integration.
// ---------------------------------------------------------------------------------------

/// Kaseya BMS and Autotask PSA: "Lockouts can occur when a user changes their password and
/// an integration is attempting to connect by using the old credentials." With
/// `dedupe_credential` the same stale secret counts once; distinct wrong secrets still count.
#[test]
fn psa_stale_integration_with_and_without_credential_dedupe() {
    let aws = "52.94.236.248";
    let hammer: Vec<Step> = (1..=50)
        .map(|n| {
            ev(
                n,
                hms(3, 0, 0) + u64::from(n) * 30 * SEC,
                fail_with(aws, Some("ConnectBooster"), Factor::Password, Some("fp-old")),
            )
        })
        .collect();
    // (dedupe_credential, then: locked?, counter, blocked attempts, lock event)
    let table = [(true, false, 1, None, None), (false, true, 5, Some(45), Some(id(5)))];
    for (dedupe, want_locked, want_failures, want_blocked, want_lock_event) in table {
        let policy = Policy { dedupe_credential: dedupe, ..Policy::default() };
        let (state, notices) = run(&policy, &hammer);
        let end = hammer.last().expect("non-empty").0;
        let s = st(&policy, &state, end);
        let case = format!("dedupe_credential={dedupe}");
        assert_eq!((s.locked, s.failures), (want_locked, want_failures), "{case}");
        assert_eq!(state.lock.as_ref().map(|l| l.blocked), want_blocked, "{case}");
        assert_eq!(locked(&notices).first().map(|l| l.event_id), want_lock_event, "{case}");
        if let Some(l) = locked(&notices).first() {
            // Autotask PSA: the lock e-mail carries the source IP
            assert_eq!(l.source_ip.as_deref(), Some(aws), "{case}");
            assert_eq!(l.sources, vec![source(aws, Some("ConnectBooster"), 5)], "{case}");
            assert!(l.message.ends_with("from 52.94.236.248 (ConnectBooster)."), "{case}: {}", l.message);
            assert_eq!(
                state.lock.as_ref().map(|l| l.blocked_sources.clone()),
                Some(vec![BlockedSource { ip: aws.into(), client: Some("ConnectBooster".into()), attempts: 45 }]),
                "{case}"
            );
        }
    }

    // with dedupe on, the user's own four different typos still lock (1 + 4 = 5)
    let policy = Policy { dedupe_credential: true, ..Policy::default() };
    let (state, _) = run(&policy, &hammer);
    let typos: Vec<Step> = (51..=54)
        .map(|n| {
            ev(
                n,
                hms(4, 0, n.into()),
                fail_with(IP, Some("browser"), Factor::Password, Some(["a", "b", "c", "d"][(n - 51) as usize])),
            )
        })
        .collect();
    let (state, notices) = run_from(&policy, state, &typos);
    let l = locked(&notices);
    assert_eq!(l.len(), 1);
    assert_eq!(l[0].event_id, id(54));
    assert_eq!(l[0].sources, vec![source(IP, Some("browser"), 4), source(aws, Some("ConnectBooster"), 1)]);
    assert!(st(&policy, &state, hms(4, 0, 54)).locked);
}

/// `docs/protocol.md`: "`sources` of a streak: one entry per distinct (`ip`, `client`) of its
/// counted failures, most failures first, ties by first occurrence." Autotask PSA: support sees
/// only the IP, so the notice lists every source.
#[test]
fn psa_sources_most_failures_first_ties_by_first_occurrence() {
    let policy = Policy { max_failures: 7, ..Policy::default() };
    let a = ("198.51.100.1", Some("Acronis"));
    let b = ("198.51.100.2", Some("Datto"));
    let c = ("198.51.100.2", None); // same ip as b, other client: another source
    let d = ("2001:db8::7", Some("QuoteWerks"));
    let order = [a, b, c, c, b, d, a];
    let steps: Vec<Step> =
        order.iter().zip(1u32..).map(|(&(ip, client), n)| ev(n, hms(13, 0, n.into()), fail(ip, client))).collect();
    let (_, notices) = run(&policy, &steps);
    let l = locked(&notices);
    assert_eq!(l.len(), 1);
    // a 2 (first at 1), b 2 (first at 2), c 2 (first at 3), d 1
    assert_eq!(l[0].sources, vec![source(a.0, a.1, 2), source(b.0, b.1, 2), source(c.0, c.1, 2), source(d.0, d.1, 1)]);
    assert_eq!((l[0].source_ip.as_deref(), l[0].client.as_deref()), (Some(a.0), a.1), "the tripping attempt");
    assert_eq!(
        l[0].message,
        "Your account has been locked for 30 minutes due to an excessive number of unsuccessful log in attempts from 198.51.100.1 (Acronis) and 3 other sources."
    );

    // a clear winner comes first even when it showed up last
    let order = [a, b, d, d, d];
    let steps: Vec<Step> =
        order.iter().zip(1u32..).map(|(&(ip, client), n)| ev(n, hms(13, 0, n.into()), fail(ip, client))).collect();
    let (_, notices) = run(&Policy::default(), &steps);
    assert_eq!(locked(&notices)[0].sources, vec![source(d.0, d.1, 3), source(a.0, a.1, 1), source(b.0, b.1, 1)]);
}

/// `docs/protocol.md`: "While locked, attempts neither extend the lock nor change the counter;
/// they are remembered as blocked attempts with their sources."
#[test]
fn attempts_while_locked_are_blocked() {
    let (policy, state, _, t5) = locked_by_failures();
    let before = st(&policy, &state, t5);
    let steps = vec![
        ev(6, t5 + MIN, fail(IP, IT_GLUE)),
        ev(7, t5 + 2 * MIN, fail("192.0.2.9", VSA)),
        ev(8, t5 + 3 * MIN, success("192.0.2.9", VSA, Factor::Password)),
        ev(9, t5 + 4 * MIN, fail(IP, IT_GLUE)),
        ev(10, t5 + 5 * MIN, fail_with(IP, None, Factor::Mfa, None)),
    ];
    let (state, notices) = run_from(&policy, state, &steps);
    assert!(notices.is_empty(), "{notices:?}");
    let after = st(&policy, &state, t5 + 5 * MIN);
    assert_eq!(row(&after), row(&before));
    assert_eq!((after.last_failure_at, after.failures), (Some(t5), 5));
    let lock = state.lock.as_ref().expect("still locked");
    assert_eq!(lock.blocked, 5);
    assert_eq!(
        lock.blocked_sources,
        vec![
            BlockedSource { ip: IP.into(), client: Some("IT Glue".into()), attempts: 2 },
            BlockedSource { ip: "192.0.2.9".into(), client: Some("VSA".into()), attempts: 2 },
            BlockedSource { ip: IP.into(), client: None, attempts: 1 },
        ]
    );
    // ... and the lock ends at the original time
    expect_rows(&policy, &state, &[(t5 + 30 * MIN - 1, row(&before)), (t5 + 30 * MIN, open(0))]);
}

// ---------------------------------------------------------------------------------------
// A PMS/ORS product (the counter resets once the unlock time has passed): the window.
// ---------------------------------------------------------------------------------------

/// `docs/protocol.md`: "A failure at time t with t − (last counted failure) ≥
/// `window_seconds` × 1000 starts a new streak at 1." A PMS/ORS product: the counter resets
/// once the time has passed.
#[test]
fn pms_window_expiry_starts_a_new_streak() {
    let t = hms(14, 0, 0);
    // (window_seconds, gap between the two failures, then: counter, locked with max 2?)
    let table = [
        (60, 60_000, 1, false),
        (60, 59_999, 2, true),
        (60, 60_001, 1, false),
        (300, 299_999, 2, true),
        (300, 300_000, 1, false),
        (0, 30 * 24 * HOUR, 2, true),
    ];
    for (window, gap, want_failures, want_locked) in table {
        let case = format!("window {window} s, gap {gap} ms");
        let steps = [ev(1, t, fail(IP, None)), ev(2, t + gap, fail(IP, None))];
        let policy = Policy { window_seconds: window, max_failures: 3, ..Policy::default() };
        let (state, _) = run(&policy, &steps);
        assert_eq!(state.failures(), want_failures, "{case}");
        assert_eq!(st(&policy, &state, t + gap).failures, want_failures, "{case}");
        let policy = Policy { window_seconds: window, max_failures: 2, ..Policy::default() };
        let (state, notices) = run(&policy, &steps);
        assert_eq!(st(&policy, &state, t + gap).locked, want_locked, "{case}");
        assert_eq!(locked(&notices).len(), usize::from(want_locked), "{case}");
    }
}

/// Policy table: `window_seconds` — "the counter restarts when this long has passed since the
/// last counted failure"; Status `failures` is the current counter, so it reads 0 once the
/// window has passed even before another failure is folded.
#[test]
fn pms_status_counter_restarts_when_the_window_passes() {
    let policy = pms_policy();
    let (state, _) = run(&policy, &[ev(1, hms(16, 0, 0), fail(IP, None)), ev(2, hms(16, 0, 10), fail(IP, None))]);
    expect_rows(
        &policy,
        &state,
        &[
            (hms(16, 0, 10), open(2)),
            (hms(16, 5, 10) - 1, open(2)),
            (hms(16, 5, 10), open(0)),
            (hms(23, 0, 0), open(0)),
        ],
    );
    assert_eq!(st(&policy, &state, hms(16, 5, 10)).last_failure_at, Some(hms(16, 0, 10)));
    // with no window the counter never restarts by itself
    let no_window = Policy { window_seconds: 0, ..policy };
    expect_rows(&no_window, &state, &[(hms(23, 0, 0), open(2))]);
}

// ---------------------------------------------------------------------------------------
// Progressive and permanent locks.
// ---------------------------------------------------------------------------------------

/// Policy: "`lock_multiplier`: each further automatic lock within `history_seconds` lasts this
/// many times longer", "`max_lock_seconds`: cap for progressive locks".
#[test]
fn progressive_locks_double_up_to_the_cap_and_reset_after_history() {
    // given: every failure locks; 60 s, doubling, capped at 200 s, within one hour
    let policy = Policy {
        max_failures: 1,
        lock_seconds: 60,
        lock_multiplier: 2,
        max_lock_seconds: 200,
        history_seconds: 3600,
        ..Policy::default()
    };
    let t0 = hms(6, 0, 0);
    // when: a failure at each lock's end (which ends it and locks again)
    // (fold time, then: lock_seconds, earlier locks still in history)
    let table = [
        (t0, 60),
        (t0 + 60 * SEC, 120),
        (t0 + 180 * SEC, 200), // 240 capped
        (t0 + 380 * SEC, 200), // 480 capped
        // one hour after the first lock it drops out of the history: 3 earlier → still capped
        (t0 + HOUR, 200),
        // one hour after the last lock (at t0+1h) nothing is left: back to the first length
        (t0 + 2 * HOUR, 60),
        (t0 + 2 * HOUR + 60 * SEC, 120),
    ];
    let mut state = UserState::default();
    for (i, &(time, want_seconds)) in table.iter().enumerate() {
        let n = u32::try_from(i).expect("small") + 1;
        let (next, notices) = run_from(&policy, state, &[ev(n, time, fail(IP, None))]);
        state = next;
        let l = locked(&notices);
        assert_eq!(l.len(), 1, "lock {n}: {notices:?}");
        assert_eq!(
            (l[0].lock_seconds, l[0].locked_until),
            (Some(want_seconds), Some(time + want_seconds * SEC)),
            "lock {n}"
        );
        let s = st(&policy, &state, time);
        assert_eq!((s.locked_until, s.lock_count), (Some(time + want_seconds * SEC), n), "lock {n}");
        if i > 0 {
            // the failure first ended the previous lock
            assert_eq!(kinds(&notices), ["unlocked", "locked"], "lock {n}");
        }
    }
}

/// The cap never makes a progressive lock shorter than the first one (`max_lock_seconds`
/// below `lock_seconds`).
#[test]
fn progressive_cap_below_lock_seconds_keeps_lock_seconds() {
    let policy =
        Policy { max_failures: 1, lock_seconds: 600, lock_multiplier: 3, max_lock_seconds: 60, ..Policy::default() };
    let t = hms(6, 0, 0);
    let (_, notices) = run(&policy, &[ev(1, t, fail(IP, None)), ev(2, t + 600 * SEC, fail(IP, None))]);
    let l = locked(&notices);
    assert_eq!(l.iter().map(|l| l.lock_seconds).collect::<Vec<_>>(), [Some(600), Some(600)]);
}

/// Policy: "`permanent_after`: this many automatic locks within `history_seconds` make the next
/// one last until an admin unlocks".
#[test]
fn permanent_after_two_locks_the_third_lasts_until_unlocked() {
    let policy =
        Policy { max_failures: 1, lock_seconds: 60, permanent_after: 2, history_seconds: 3600, ..Policy::default() };
    let t0 = hms(6, 0, 0);
    let steps =
        vec![ev(1, t0, fail(IP, None)), ev(2, t0 + 60 * SEC, fail(IP, None)), ev(3, t0 + 120 * SEC, fail(IP, None))];
    let (state, notices) = run(&policy, &steps);
    let l = locked(&notices);
    assert_eq!(l.iter().map(|l| l.locked_until).collect::<Vec<_>>(), [Some(t0 + 60 * SEC), Some(t0 + 120 * SEC), None]);
    assert!(
        l[2].message.starts_with("Your account has been locked until an administrator unlocks it"),
        "{}",
        l[2].message
    );
    expect_rows(&policy, &state, &[(t0 + 30 * 24 * HOUR, shut(LockReason::Failures, t0 + 120 * SEC, None, 1))]);
    assert_eq!(st(&policy, &state, t0 + 120 * SEC).lock_count, 3);

    // an admin unlocks; the next lock inside the history is permanent again
    let (after_unlock, _) = run_from(&policy, state, &[ev(4, t0 + 10 * MIN, What::Unlock { actor: "admin" })]);
    let (_, n) = run_from(&policy, after_unlock.clone(), &[ev(5, t0 + 11 * MIN, fail(IP, None))]);
    assert_eq!(locked(&n)[0].locked_until, None);
    // ... but once the history has passed, it is timed again
    let later = t0 + 120 * SEC + HOUR;
    let (_, n) = run_from(&policy, after_unlock, &[ev(5, later, fail(IP, None))]);
    assert_eq!(locked(&n)[0].locked_until, Some(later + 60 * SEC));
}

// ---------------------------------------------------------------------------------------
// Expiry: one notice, whichever event ends the lock; status never past locked_until.
// ---------------------------------------------------------------------------------------

/// `docs/protocol.md`: "the first event folded at or after that time ends it — normally the
/// `expired` event ..., but any later event does too — and the `unlocked` notice
/// (`how: expired`) is the same notice, with the same id, whichever event ended it."
#[test]
fn expiry_notice_is_the_same_whichever_event_ends_the_lock() {
    let (policy, state, _, t5) = locked_by_failures();
    let until = t5 + 30 * MIN;
    let want = Notice::Unlocked(expiry_notice(id(5), until));
    // (ender, then: the notices after the expiry notice, locked afterwards?, counter)
    let table: Vec<(&str, Step, Vec<&str>, bool, u32)> = vec![
        ("expired event on time", ev(6, until, What::Expired { lock_event: id(5) }), vec![], false, 0),
        ("expired event 800 ms late", ev(6, until + 800, What::Expired { lock_event: id(5) }), vec![], false, 0),
        ("a failure 5 minutes later", ev(6, until + 5 * MIN, fail(IP, IT_GLUE)), vec![], false, 1),
        ("a success an hour later", ev(6, until + HOUR, success(IP, None, Factor::Password)), vec![], false, 0),
        ("an unlock (of an unlocked user)", ev(6, until + 10 * SEC, What::Unlock { actor: "admin" }), vec![], false, 0),
        ("an mfa_reset", ev(6, until + SEC, What::MfaReset { actor: "admin" }), vec!["mfa_reset"], false, 0),
        (
            "an admin lock",
            ev(6, until + 2 * SEC, What::Lock { actor: "admin", seconds: Some(60), reason: None }),
            vec!["locked"],
            true,
            0,
        ),
    ];
    for (name, ender, rest, want_locked, want_failures) in table {
        let time = ender.0;
        let (state, notices) = run_from(&policy, state.clone(), &[ender]);
        assert_eq!(notices.first(), Some(&want), "{name}");
        assert_eq!(kinds(&notices[1..]), rest, "{name}");
        let s = st(&policy, &state, time);
        assert_eq!((s.locked, s.failures, s.lock_count), (want_locked, want_failures, 1), "{name}");
        // a later `expired` event for the same lock changes nothing
        let (again, none) = run_from(&policy, state.clone(), &[ev(7, time + SEC, What::Expired { lock_event: id(5) })]);
        assert!(none.is_empty(), "{name}: {none:?}");
        assert_eq!(again, state, "{name}");
    }
}

/// `docs/protocol.md`: "A timed lock ends at `locked_until`": an `expired` event stored well
/// before that (the clock of lockoutd, which appends it, running ahead of the server's, which
/// stamps it) leaves the lock in force; one stored within the allowance ends it at
/// `locked_until`. The next event at or after `locked_until` still ends it, with the same notice.
#[test]
fn an_expired_event_stored_well_before_locked_until_does_not_end_the_lock() {
    let (policy, state, _, t5) = locked_by_failures();
    let until = t5 + 30 * MIN;
    let want = Notice::Unlocked(expiry_notice(id(5), until));
    let table = [
        ("a minute early", until - MIN, false),
        ("1 ms past the allowance", until - EXPIRED_EARLY_ALLOWANCE_MS - 1, false),
        ("at the allowance", until - EXPIRED_EARLY_ALLOWANCE_MS, true),
        ("on time", until, true),
    ];
    for (name, time, ends) in table {
        let (after, notices) = run_from(&policy, state.clone(), &[ev(6, time, What::Expired { lock_event: id(5) })]);
        if ends {
            assert_eq!(notices, vec![want.clone()], "{name}");
            assert!(!after.is_locked(), "{name}");
        } else {
            assert!(notices.is_empty(), "{name}: {notices:?}");
            assert_eq!(after, state, "{name}: the early expired event changed the state");
            assert!(st(&policy, &after, time).locked, "{name}");
            // the service's retry on time (or any later event) ends it, with the same notice
            let (_, later) = run_from(&policy, after, &[ev(7, until, What::Expired { lock_event: id(5) })]);
            assert_eq!(later, vec![want.clone()], "{name}");
        }
    }
    // History: an `expired` event lockoutd wrote before this rule (its id the v1 derivation)
    // still ends the lock it names a minute early, as it did when it was written.
    let early = until - MIN;
    let v1 = Event::Expired(Expired {
        id: expired_event_id_v1(id(5)),
        at: early,
        tenant: TENANT.into(),
        user: USER.into(),
        lock_event: id(5),
    });
    let folded = fold(&policy, state.clone(), &v1, early);
    assert_eq!(folded.notices, vec![want]);
    assert!(!folded.state.is_locked());
}

/// `docs/protocol.md`: "`status` never reports a lock past its `locked_until`." — even before
/// any event after that instant has been folded.
#[test]
fn status_past_locked_until_reports_unlocked_before_any_event() {
    let (policy, state, _, t5) = locked_by_failures();
    let until = t5 + 30 * MIN;
    assert!(state.is_locked(), "nothing was folded after the lock");
    let during = st(&policy, &state, until - 1);
    assert_eq!(row(&during), shut(LockReason::Failures, t5, Some(until), 5));
    for now in [until, until + 1, until + 365 * 24 * HOUR] {
        let s = st(&policy, &state, now);
        assert_eq!(row(&s), open(0), "at until + {} ms", now - until);
        assert_eq!((s.unlocked_at, s.unlocked_by), (Some(until), None));
        assert_eq!(s.lock_count, 1);
    }
    // and it is what folding the expiry gives
    let (folded, _) = run_from(&policy, state.clone(), &[ev(6, until, What::Expired { lock_event: id(5) })]);
    assert_eq!(st(&policy, &folded, until + 1), st(&policy, &state, until + 1));
}

// ---------------------------------------------------------------------------------------
// Policy changes (Kaseya BMS: tenant admins set the policy).
// ---------------------------------------------------------------------------------------

/// `docs/protocol.md`: "A new policy applies to events folded after it; by itself it never
/// locks, unlocks or shortens a lock."
#[test]
fn policy_change_by_itself_never_changes_state() {
    let (old, state, _, t5) = locked_by_failures();
    let until = t5 + 30 * MIN;
    let new = Policy { max_failures: 2, lock_seconds: 60, window_seconds: 10, ..Policy::default() };
    let change = PolicyChange {
        id: id(90),
        at: t5 + MIN,
        tenant: TENANT.into(),
        actor: "admin".into(),
        policy: new,
        caller: None,
    };
    // fold_policy gives the new policy, whatever the old one was
    assert_eq!(fold_policy(&old, &change), new);
    assert_eq!(fold_policy(&new, &change), new);
    // a `policy` event folded into a user state (even after the lock ran out) changes nothing
    for time in [t5 + MIN, until, until + HOUR] {
        let folded = fold(&old, state.clone(), &Event::Policy(change.clone()), time);
        assert_eq!(folded.state, state, "policy event at {time}");
        assert!(folded.notices.is_empty(), "policy event at {time}: {:?}", folded.notices);
    }
    // a shorter lock_seconds does not shorten the running lock
    expect_rows(&new, &state, &[(t5 + 2 * MIN, shut(LockReason::Failures, t5, Some(until), 5))]);

    // a lower max_failures does not lock by itself: 3 counted failures, max lowered to 2
    let steps: Vec<Step> = (1..=3).map(|n| ev(n, hms(9, 0, n.into()), fail(IP, None))).collect();
    let (state, _) = run(&old, &steps);
    let lower = Policy { max_failures: 2, ..old };
    let s = st(&lower, &state, hms(9, 0, 4));
    assert_eq!((s.locked, s.failures, s.max_failures), (false, 3, 2));
    // ... the next failure, folded under it, does
    let (state, notices) = run_from(&lower, state, &[ev(4, hms(9, 0, 5), fail(IP, None))]);
    assert_eq!(locked(&notices).iter().map(|l| l.failures).collect::<Vec<_>>(), [4]);
    assert!(st(&lower, &state, hms(9, 0, 5)).locked);

    // a higher max_failures does not unlock
    let higher = Policy { max_failures: 50, ..old };
    assert!(st(&higher, &state, hms(9, 0, 6)).locked);
}

// ---------------------------------------------------------------------------------------
// Bounds: a distributed attack on an account that never locks.
// ---------------------------------------------------------------------------------------

/// postmortem (found by reading while writing the fuzz targets): with `max_failures` 0 (never
/// lock), every failure from a new address added a listed source and every new credential a
/// fingerprint, so one account's state grew without bound under an attack from many
/// addresses, and every fold of it copied it all. Sources beyond the listed ones are now only
/// counted; the counter stays exact.
#[test]
fn a_streak_lists_at_most_64_sources_and_counts_the_rest() {
    use lockout_core::state::{CREDENTIALS_MAX, STREAK_SOURCES_MAX};
    let never = Policy { max_failures: 0, ..Policy::default() };
    let ips: Vec<String> = (0..1_000).map(|i| format!("198.51.{}.{}", i / 256, i % 256)).collect();
    let fps: Vec<String> = (0..1_000).map(|i| format!("fp{i}")).collect();
    let steps: Vec<Step> = (0..1_000u32)
        .map(|i| {
            let factor = if i % 10 == 0 { Factor::Mfa } else { Factor::Password };
            ev(i, DAY + u64::from(i) * SEC, fail_with(&ips[i as usize], VSA, factor, Some(&fps[i as usize])))
        })
        .collect();
    let (state, notices) = run(&never, &steps);
    assert!(notices.is_empty());
    assert_eq!(state.streak.len(), STREAK_SOURCES_MAX);
    assert_eq!(state.credentials.len(), CREDENTIALS_MAX);
    assert_eq!(state.failures(), 1_000, "the counter counts every failure");
    assert_eq!(st(&never, &state, DAY + 1_000 * SEC).failures, 1_000);
    // 100 of them were MFA failures: an MFA reset removes them, listed or not.
    let (state, _) = run_from(&never, state, &[ev(2_000, DAY + HOUR, What::MfaReset { actor: "admin" })]);
    assert_eq!(state.failures(), 900);

    // Under a policy that locks, the notice lists the first 64 sources and counts all.
    let hundred = Policy { max_failures: 100, ..Policy::default() };
    let (_, notices) = run(&hundred, &steps[..100]);
    let l = locked(&notices);
    assert_eq!(l.len(), 1);
    assert_eq!((l[0].failures, l[0].sources.len()), (100, STREAK_SOURCES_MAX));
}

/// Gateways choose event ids. One reused for another user (a gateway's bug, or someone who
/// read it) must not give that user's `locked` notice the first user's id, which JetStream
/// would drop as a duplicate: notice ids derive from the tenant and user too.
#[test]
fn an_event_id_reused_for_another_user_gives_that_users_notice_an_id_of_its_own() {
    let policy = Policy::default();
    let alice: Vec<Step> = (1..=policy.max_failures).map(|n| ev(n, hms(9, 0, n.into()), fail(IP, None))).collect();
    let bob: Vec<Step> = alice
        .iter()
        .cloned()
        .map(|(t, mut e)| {
            if let Event::Attempt(a) = &mut e {
                a.user = "bob@acme.com".into();
            }
            (t, e)
        })
        .collect();
    let (_, alice_notices) = run(&policy, &alice);
    let (_, bob_notices) = run(&policy, &bob);
    assert_eq!((alice_notices.len(), bob_notices.len()), (1, 1), "each is locked once");
    let (a, b) = (&alice_notices[0], &bob_notices[0]);
    assert_eq!(a.event_id(), b.event_id(), "caused by events with the same id");
    assert_ne!(a.id(), b.id(), "yet two notices");
    assert_eq!(b.id(), notice_id(TENANT, "bob@acme.com", b.event_id(), NoticeKind::Locked));
}

// ---------------------------------------------------------------------------------------
// forget (--state-ttl-days, an extension)
// ---------------------------------------------------------------------------------------

/// A `forget` event naming `last_activity`, as lockoutd writes it.
fn forget(time: Millis, last_activity: Millis) -> Step {
    let e = lockout_proto::event::Forget {
        id: lockout_core::ids::forget_event_id(TENANT, USER, last_activity),
        at: time,
        tenant: TENANT.into(),
        user: USER.into(),
        last_activity,
    };
    (time, Event::Forget(e))
}

/// Each row: the script before the `forget` (at DAY + 10 days, naming `named`), what the fold
/// reports, and whether the state is the default afterwards. The behaviour each pins is its
/// name.
#[test]
fn forget_drops_only_an_unlocked_state_unchanged_since_it_was_found_idle() {
    use lockout_core::{Effect, Forgot};
    let p = Policy::default();
    let day = 24 * HOUR;
    let t1 = DAY + MIN;
    let cases: Vec<(&str, Vec<Step>, Millis, Forgot, bool)> = vec![
        (
            "idle failures are dropped",
            vec![ev(1, t1, fail(IP, None)), ev(2, t1 + 1, fail(IP, IT_GLUE))],
            t1 + 1,
            Forgot::Dropped,
            true,
        ),
        ("nothing stored: no effect", vec![], 0, Forgot::Nothing, true),
        (
            "a failure after the scan keeps the state",
            vec![ev(1, t1, fail(IP, None)), ev(2, DAY + 9 * day, fail(IP, None))],
            t1,
            Forgot::ActiveSince(DAY + 9 * day),
            false,
        ),
        (
            "a locked user is never forgotten",
            vec![ev(1, t1, What::Lock { actor: "ops", seconds: None, reason: None })],
            t1,
            Forgot::Locked,
            false,
        ),
        (
            "an unlock, a lock history and an MFA reset are dropped once idle",
            vec![
                ev(1, t1, What::Lock { actor: "ops", seconds: None, reason: None }),
                ev(2, t1 + 1, What::Unlock { actor: "ops" }),
                ev(3, t1 + 2, What::MfaReset { actor: "ops" }),
            ],
            t1 + 2,
            Forgot::Dropped,
            true,
        ),
    ];
    for (name, script, named, want, dropped) in cases {
        let (state, _) = run(&p, &script);
        let (time, event) = forget(DAY + 10 * day, named);
        let folded = fold(&p, state.clone(), &event, time);
        assert_eq!(folded.why.effect, Effect::Forget(want), "{name}");
        assert_eq!(folded.state == UserState::default(), dropped, "{name}");
        if !dropped {
            assert_eq!(folded.state, state, "{name}: a kept state is unchanged");
        }
        assert!(folded.notices.is_empty(), "{name}: forgetting sends no notice");
    }
}

/// A timed lock that ran out before the `forget` is ended first (its `unlocked` notice goes
/// out as for any event), then the state is judged: idle since the expiry, it stays.
#[test]
fn forget_after_a_timed_lock_ran_out_ends_the_lock_and_keeps_the_fresh_unlock() {
    let p = Policy::default();
    let script: Vec<Step> = (1..=5).map(|n| ev(n, DAY + u64::from(n), fail(IP, None))).collect();
    let (state, _) = run(&p, &script);
    let until = state.lock.as_ref().unwrap().locked_until.unwrap();
    let (time, event) = forget(until + MIN, DAY + 5);
    let folded = fold(&p, state, &event, time);
    assert_eq!(unlocked(&folded.notices).len(), 1, "the lock's expiry notice");
    assert_eq!(folded.why.effect, lockout_core::Effect::Forget(lockout_core::Forgot::ActiveSince(until)));
    assert_eq!(folded.state.unlocked_at, Some(until));
}
