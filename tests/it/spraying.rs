//! IP blocks against password spraying end to end (contract v2, "IP blocks"; issue 22),
//! against a real nats-server: the block decided from failures across a tenant's users, what
//! a gateway sees through `status`, `ip_status`/`ip_unblock`, the block's expiry, and a rebuild
//! that reproduces every block without appending one twice.

use std::time::{Duration, Instant};

use lockout_proto::event::{Account, Attempt, Outcome};
use lockout_proto::notice::{How, Notice};
use lockout_proto::Encoding;
use serde_json::{json, Value};

use crate::support::{attempt_body, Lockout};

const SPRAYER: &str = "203.0.113.66";
const HOME: &str = "198.51.100.7";

fn user(i: usize) -> String {
    format!("user{i:02}@acme.com")
}

/// The IP notices so far, in order.
async fn ip_notices(l: &Lockout) -> Vec<Notice> {
    l.notices()
        .await
        .into_iter()
        .map(|(n, _)| n)
        .filter(|n| matches!(n, Notice::IpBlocked(_) | Notice::IpUnblocked(_)))
        .collect()
}

/// Waits until `n` IP notices were published and returns them.
async fn wait_ip_notices(l: &Lockout, n: usize) -> Vec<Notice> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let got = ip_notices(l).await;
        if got.len() >= n {
            return got;
        }
        assert!(Instant::now() < deadline, "expected {n} IP notices within 30 s, have {got:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Events of `kind` (the subject's last token) in `LOCKOUT_EVENTS`.
async fn events_of(l: &Lockout, kind: &str) -> usize {
    l.stream_messages("LOCKOUT_EVENTS").await.iter().filter(|m| m.subject.ends_with(&format!(".t.{kind}"))).count()
}

async fn fail(l: &Lockout, user: &str, ip: &str, outcome: Outcome) -> u64 {
    let a = Attempt { account: Some(Account::User), ..attempt_body("acme", user, outcome, ip) };
    l.publish_attempt(&a, Encoding::Json).await
}

async fn ip_status(l: &Lockout, ip: &str) -> Value {
    l.call("acme", "ip_status", json!({ "ip": ip })).await.unwrap()
}

/// One IP failing once against each of 50 users is blocked for the tenant: one `ip_block`
/// event, one `ip_blocked` notice naming the attack; a gateway asking `status` from that IP
/// gets `blocked_by: "ip"` and its `rejected` attempts lock no one; failures still count on
/// the users' counters; an admin unblock ends it with one notice; a rebuild from an empty
/// store reproduces the block and every state and appends nothing.
#[tokio::test]
async fn one_ip_failing_against_50_users_is_blocked_for_the_tenant() {
    let mut l = Lockout::start_with(Encoding::PostcardV2).await;
    let policy =
        json!({ "max_failures": 3, "ip_max_failures": 50, "ip_window_seconds": 3600, "ip_block_seconds": 3600 });
    l.call("acme", "policy_set", json!({ "actor": "sec", "policy": policy })).await.unwrap();
    for i in 0..49 {
        fail(&l, &user(i), SPRAYER, Outcome::Failure).await;
    }
    let before = fail(&l, "other@acme.com", HOME, Outcome::Failure).await;
    l.wait_folded(before).await;
    let s = ip_status(&l, SPRAYER).await;
    assert_eq!((s["blocked"].clone(), s["failures"].clone(), s["users"].clone()), (json!(false), json!(49), json!(49)));
    fail(&l, &user(49), SPRAYER, Outcome::Failure).await;

    let notices = wait_ip_notices(&l, 1).await;
    let Notice::IpBlocked(b) = &notices[0] else { panic!("{notices:?}") };
    assert_eq!((b.ip.as_str(), b.failures, b.users, b.sample_users.len()), (SPRAYER, 50, 50, 10));
    assert_eq!(b.sample_users[0], user(0));
    assert!(b.message.contains("Sign-ins from 203.0.113.66 are blocked for 1 hour"), "{}", b.message);
    // An hour from the tripping failure, which was stored just before the block.
    let until = b.blocked_until.expect("ip_block_seconds > 0: a timed block");
    assert!(until > b.at && until <= b.at + 3_600_000, "{until} vs {}", b.at);
    let s = ip_status(&l, SPRAYER).await;
    assert_eq!(
        (s["blocked"].clone(), s["failures"].clone(), s["users"].clone()),
        (json!(true), json!(50), json!(50)),
        "{s}"
    );
    assert_eq!(s["blocked_until"], json!(b.blocked_until));

    // A gateway asks before checking a password: the sprayer is refused, a user at home is not.
    let from_sprayer = l.call("acme", "status", json!({ "user": user(3), "ip": SPRAYER })).await.unwrap();
    assert_eq!((from_sprayer["allowed"].clone(), from_sprayer["blocked_by"].clone()), (json!(false), json!("ip")));
    let other_tenant = l.call("globex", "status", json!({ "user": user(3), "ip": SPRAYER })).await.unwrap();
    assert_eq!(other_tenant["allowed"], true, "a block is the tenant's own");
    let from_home = l.call("acme", "status", json!({ "user": user(3), "ip": HOME })).await.unwrap();
    assert_eq!((from_home["allowed"].clone(), from_home["blocked_by"].clone()), (json!(true), Value::Null));
    // Without an IP only the account-wide lock is considered.
    let no_ip = l.call("acme", "status", json!({ "user": user(3) })).await.unwrap();
    assert_eq!(no_ip["allowed"], true);

    // The refused attempts are recorded as `rejected`: they lock no one.
    let mut last = 0;
    for i in 0..10 {
        for _ in 0..5 {
            last = fail(&l, &user(i), SPRAYER, Outcome::Rejected).await;
        }
    }
    // A failure from a blocked IP still counts for the user (a gateway that does not ask
    // gets no hole), but not for the IP.
    last = last.max(fail(&l, &user(10), SPRAYER, Outcome::Failure).await);
    l.wait_folded(last).await;
    for i in 0..10 {
        let s = l.status("acme", &user(i)).await;
        assert_eq!((s["locked"].clone(), s["failures"].clone()), (json!(false), json!(1)), "{}: {s}", user(i));
    }
    assert_eq!(l.status("acme", &user(10)).await["failures"], 2);
    let why = l.call("acme", "explain", json!({ "user": user(10) })).await.unwrap();
    assert_eq!(why["counted"].as_array().unwrap().len(), 2, "{why}");
    assert!(
        why["reason"].as_str().unwrap().contains("1 of the counted failures came from an IP blocked for the tenant"),
        "{why}"
    );
    assert_eq!(ip_status(&l, SPRAYER).await["failures"], 50, "not counted while blocked");
    assert_eq!(events_of(&l, "ip_block").await, 1);

    // An admin ends the block: one `ip_unblocked`, and the IP's count starts over.
    let s =
        l.call("acme", "ip_unblock", json!({ "ip": SPRAYER, "actor": "sec", "reason": "office NAT" })).await.unwrap();
    assert_eq!((s["blocked"].clone(), s["failures"].clone()), (json!(false), json!(0)), "{s}");
    let notices = wait_ip_notices(&l, 2).await;
    let Notice::IpUnblocked(u) = &notices[1] else { panic!("{notices:?}") };
    assert_eq!((u.ip.as_str(), u.how, u.actor.as_deref()), (SPRAYER, How::Admin, Some("sec")));
    let again = l.call("acme", "ip_unblock", json!({ "ip": SPRAYER, "actor": "sec" })).await.unwrap();
    assert_eq!(again["blocked"], false);
    let digest = l.call("acme", "digest", json!({})).await.unwrap();
    let seq = digest["seq"].as_u64().unwrap();
    let notices_before = l.notices().await;
    assert_eq!(ip_notices(&l).await.len(), 2, "a second unblock ends nothing");

    // A rebuild from an empty store decides the same block from the same failures, finds
    // it in the history, and appends and publishes nothing.
    l.stop_daemon().await.unwrap();
    std::fs::remove_dir_all(l.config().data_dir).unwrap();
    l.start_daemon().await;
    l.wait_folded(seq).await;
    assert_eq!(l.call("acme", "digest", json!({})).await.unwrap(), digest, "the same user states");
    assert_eq!(ip_status(&l, SPRAYER).await["blocked"], false);
    // Long enough for the appender's ticks (250 ms) to have appended a block it wrongly held.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(events_of(&l, "ip_block").await, 1, "no block appended twice");
    assert_eq!(l.notices().await, notices_before, "no notice re-sent");
}

/// A timed block ends by itself with exactly one `ip_unblocked` (`how: expired`), and the
/// IP's count starts over from 0.
#[tokio::test]
async fn an_ip_block_expires_with_one_notice() {
    let l = Lockout::start_with(Encoding::PostcardV2).await;
    let policy = json!({ "ip_max_failures": 3, "ip_window_seconds": 60, "ip_block_seconds": 1 });
    l.call("acme", "policy_set", json!({ "actor": "sec", "policy": policy })).await.unwrap();
    for i in 0..3 {
        fail(&l, &user(i), SPRAYER, Outcome::Failure).await;
    }
    let notices = wait_ip_notices(&l, 2).await;
    let (Notice::IpBlocked(b), Notice::IpUnblocked(u)) = (&notices[0], &notices[1]) else { panic!("{notices:?}") };
    assert_eq!((u.how, u.event_id, u.actor.clone()), (How::Expired, b.event_id, None), "keyed by the block's event");
    assert!(u.at >= b.blocked_until.unwrap(), "ends at or after blocked_until");
    let s = ip_status(&l, SPRAYER).await;
    assert_eq!((s["blocked"].clone(), s["failures"].clone()), (json!(false), json!(0)), "{s}");
    let seq = fail(&l, &user(7), SPRAYER, Outcome::Failure).await;
    l.wait_folded(seq).await;
    assert_eq!(ip_status(&l, SPRAYER).await["failures"], 1, "counting starts over");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(ip_notices(&l).await.len(), 2, "one notice per block");
    assert_eq!(events_of(&l, "ip_expired").await, 1);
}

/// A bad IP in an IP op is a 400 that says what to send; nothing is appended.
#[tokio::test]
async fn a_bad_ip_is_refused_with_a_clear_error() {
    let l = Lockout::start_with(Encoding::PostcardV2).await;
    for (op, body) in [
        ("ip_status", json!({ "ip": "203.0.113" })),
        ("ip_unblock", json!({ "ip": "not an ip", "actor": "sec" })),
        ("status", json!({ "user": "alice", "ip": "::g" })),
    ] {
        let e = l.call("acme", op, body).await.unwrap_err();
        assert_eq!(e.code, 400, "{op}: {e:?}");
        assert!(e.message.contains("is not an IPv4 or IPv6 address"), "{op}: {}", e.message);
    }
    assert_eq!(events_of(&l, "ip_unblock").await, 0);
}

/// `unlock_many` with `ips` and `since`, as JSON with a `Nats-Msg-Id`.
async fn unlock_many(l: &Lockout, msg_id: uuid::Uuid, body: Value) -> Result<Value, crate::support::SvcError> {
    let mut h = async_nats::HeaderMap::new();
    h.insert(lockout_proto::codec::NATS_MSG_ID, msg_id.to_string().as_str());
    let bytes = l.call_raw("acme", "unlock_many", Encoding::Json, serde_json::to_vec(&body).unwrap(), h).await?;
    Ok(serde_json::from_slice(&bytes).unwrap())
}

fn names(v: &Value) -> Vec<String> {
    v["users"].as_array().unwrap().iter().map(|u| u.as_str().unwrap().to_owned()).collect()
}

/// After an attack from one /24, `unlock_many` with that block and the attack's start unlocks
/// exactly its victims: not a user locked by another IP, not one locked by the attack before
/// `since`, never an admin lock; `dry_run` lists them and changes nothing; replies are paged;
/// the same request again unlocks no one twice; a bad CIDR is a 400.
#[tokio::test]
async fn unlock_many_unlocks_exactly_the_attacks_victims() {
    let l = Lockout::start_with(Encoding::PostcardV2).await;
    l.call("acme", "policy_set", json!({ "actor": "sec", "policy": { "max_failures": 2, "lock_seconds": 0 } }))
        .await
        .unwrap();
    let lock_from = |user: String, ip: &'static str| {
        let l = &l;
        async move {
            fail(l, &user, ip, Outcome::Failure).await;
            fail(l, &user, ip, Outcome::Failure).await
        }
    };
    // Locked by the attack's IPs before the window the admin names.
    let early = lock_from("early@acme.com".into(), "203.0.113.10").await;
    l.wait_folded(early).await;
    let since = l.status("acme", "early@acme.com").await["locked_at"].as_u64().unwrap() + 1;
    tokio::time::sleep(Duration::from_millis(5)).await;
    let victims: Vec<String> = (0..7).map(|i| format!("victim{i}@acme.com")).collect();
    for (i, v) in victims.iter().enumerate() {
        lock_from(v.clone(), if i % 2 == 0 { "203.0.113.10" } else { "203.0.113.200" }).await;
    }
    lock_from("bystander@acme.com".into(), "198.51.100.5").await;
    // A victim an admin then locked on purpose: never touched.
    lock_from("held@acme.com".into(), "203.0.113.10").await;
    l.call("acme", "lock", json!({ "user": "held@acme.com", "actor": "sec", "reason": "investigating" }))
        .await
        .unwrap();
    let before = l.stream_messages("LOCKOUT_EVENTS").await.len();

    let body = |extra: Value| {
        let mut b = json!({ "actor": "sec", "reason": "spraying from 203.0.113.0/24", "since": since, "ips": ["203.0.113.0/24"] });
        b.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        b
    };
    let dry = unlock_many(&l, uuid::Uuid::now_v7(), body(json!({ "dry_run": true }))).await.unwrap();
    assert_eq!(names(&dry), victims, "exactly the victims, in user order");
    assert_eq!(l.stream_messages("LOCKOUT_EVENTS").await.len(), before, "a dry run appends nothing");
    assert_eq!(l.status("acme", &victims[0]).await["locked"], true);

    let request = uuid::Uuid::now_v7();
    let first = unlock_many(&l, request, body(json!({ "limit": 4 }))).await.unwrap();
    assert_eq!((first["unlocked"].clone(), names(&first)), (json!(4), victims[..4].to_vec()));
    let next = first["next"].as_str().expect("more to come").to_owned();
    let rest = unlock_many(&l, request, body(json!({ "limit": 4, "after": next }))).await.unwrap();
    assert_eq!((names(&rest), rest["next"].clone()), (victims[4..].to_vec(), Value::Null));
    for v in &victims {
        let s = l.status("acme", v).await;
        assert_eq!((s["locked"].clone(), s["unlocked_by"].clone()), (json!(false), json!("sec")), "{v}");
    }
    for (user, reason) in
        [("early@acme.com", "failures"), ("bystander@acme.com", "failures"), ("held@acme.com", "admin")]
    {
        let s = l.status("acme", user).await;
        assert_eq!((s["locked"].clone(), s["reason"].clone()), (json!(true), json!(reason)), "{user}");
    }
    let unlocked: Vec<String> = l
        .notices()
        .await
        .into_iter()
        .filter_map(|(n, _)| match n {
            Notice::Unlocked(u) => Some(u.user.to_string()),
            _ => None,
        })
        .collect();
    assert_eq!(unlocked, victims, "one unlocked notice per victim");
    let again = unlock_many(&l, request, body(json!({}))).await.unwrap();
    assert_eq!(again["unlocked"], 0, "the same request again unlocks no one");

    for bad in ["203.0.113.7/24", "203.0.113.0/40", "not-an-ip"] {
        let e = unlock_many(&l, uuid::Uuid::now_v7(), body(json!({ "ips": [bad] }))).await.unwrap_err();
        assert_eq!(e.code, 400, "{bad}: {e:?}");
    }
    let e = l.call("acme", "unlock_many", json!({ "actor": "sec" })).await.unwrap_err();
    assert!(e.code == 400 && e.message.contains("since"), "since is required: {e:?}");
}
