//! Source-aware locks end to end (contract v2, issue 21), against a real nats-server: what a
//! gateway sees through `status` with a source, what notifiers receive, and the
//! `password_reset`, `unlock` with `lock_event` and `explain` ops.

use lockout_proto::event::{Account, Outcome};
use lockout_proto::notice::{How, Notice};
use lockout_proto::status::Scope;
use lockout_proto::Encoding;
use serde_json::{json, Value};

use crate::support::{attempt_body, Lockout};

const HOME: &str = "198.51.100.7";
const ATTACKER: [&str; 5] = ["203.0.113.1", "203.0.113.2", "203.0.113.3", "203.0.113.4", "203.0.113.5"];

impl Lockout {
    async fn set_policy(&self, tenant: &str, policy: Value) {
        self.call(tenant, "policy_set", json!({ "actor": "sec", "policy": policy })).await.unwrap();
    }

    /// Publishes an attempt with the fields source-aware locks read; returns its sequence.
    async fn source_attempt(
        &self,
        user: &str,
        outcome: Outcome,
        ip: &str,
        client: Option<&str>,
        account: Account,
    ) -> u64 {
        let a = lockout_proto::event::Attempt {
            client: client.map(Into::into),
            account: Some(account),
            ..attempt_body("acme", user, outcome, ip)
        };
        self.publish_attempt(&a, Encoding::Json).await
    }

    /// `status` for an attempt from a source.
    async fn status_from(&self, user: &str, ip: &str, client: Option<&str>, account: &str) -> Value {
        let body = json!({ "user": user, "ip": ip, "client": client, "account": account });
        self.call("acme", "status", body).await.unwrap()
    }
}

/// Locked and unlocked notices of `user`, in order.
fn user_notices(all: &[(Notice, async_nats::HeaderMap)], user: &str) -> Vec<Notice> {
    all.iter()
        .map(|(n, _)| n.clone())
        .filter(|n| match n {
            Notice::Locked(l) => l.user == user,
            Notice::Unlocked(u) => u.user == user,
            Notice::MfaReset(m) => m.user == user,
            Notice::IpBlocked(_) | Notice::IpUnblocked(_) => false,
        })
        .collect()
}

/// An attacker from new IPs locks only sign-ins from unfamiliar IPs: the user at home is
/// still allowed and signs in, and a gateway that asked `status` records its refusals as
/// `rejected`, which lock no one.
#[tokio::test]
async fn an_attacker_from_new_ips_cannot_lock_out_the_user_at_home() {
    let l = Lockout::start_with(Encoding::PostcardV2).await;
    l.set_policy("acme", json!({ "familiar_days": 30 })).await;
    l.source_attempt("alice", Outcome::Success, HOME, None, Account::User).await;
    for ip in ATTACKER {
        l.source_attempt("alice", Outcome::Failure, ip, None, Account::User).await;
    }
    let notices = user_notices(&l.wait_notices(1).await, "alice");
    let Notice::Locked(locked) = &notices[0] else { panic!("{notices:?}") };
    assert_eq!((locked.scope, locked.failures), (Scope::Unfamiliar, 5));
    assert!(locked.message.contains("from unfamiliar locations are blocked"), "{}", locked.message);

    let away = l.status_from("alice", "192.0.2.50", None, "user").await;
    assert_eq!((away["allowed"].clone(), away["blocked_by"].clone()), (json!(false), json!("unfamiliar")));
    let home = l.status_from("alice", HOME, None, "user").await;
    assert_eq!((home["allowed"].clone(), home["locked"].clone()), (json!(true), json!(false)), "{home}");
    assert_eq!(home["scope_locks"][0]["scope"], "unfamiliar");

    // The gateway refuses the attacker without checking a password and says so.
    for _ in 0..3 {
        l.source_attempt("alice", Outcome::Rejected, ATTACKER[0], None, Account::User).await;
    }
    let seq = l.source_attempt("alice", Outcome::Success, HOME, None, Account::User).await;
    l.wait_folded(seq).await;
    let s = l.status("acme", "alice").await;
    assert_eq!((s["locked"].clone(), s["unfamiliar_failures"].clone()), (json!(false), json!(5)), "{s}");
    assert_eq!(user_notices(&l.notices().await, "alice").len(), 1, "rejected attempts lock no one");
}

/// An integration with a stale password ("IT Glue") locks only itself; the person signs in.
#[tokio::test]
async fn a_stale_integration_locks_only_itself() {
    let l = Lockout::start_with(Encoding::PostcardV2).await;
    l.set_policy("acme", json!({ "api_client_scope": true })).await;
    l.source_attempt("bob", Outcome::Success, HOME, Some("IT Glue"), Account::Api).await;
    for _ in 0..5 {
        l.source_attempt("bob", Outcome::Failure, "192.0.2.10", Some("IT Glue"), Account::Api).await;
    }
    let notices = user_notices(&l.wait_notices(1).await, "bob");
    let Notice::Locked(locked) = &notices[0] else { panic!("{notices:?}") };
    assert_eq!((locked.scope, locked.client.as_deref()), (Scope::Client, Some("IT Glue")));
    assert!(
        locked.message.starts_with("Sign-ins to bob from IT Glue are blocked for 30 minutes"),
        "{}",
        locked.message
    );

    let glue = l.status_from("bob", "192.0.2.10", Some("IT Glue"), "api").await;
    assert_eq!(glue["blocked_by"], "client");
    let person = l.status_from("bob", HOME, None, "user").await;
    assert_eq!(person["allowed"], true, "{person}");
    let seq = l.source_attempt("bob", Outcome::Success, HOME, None, Account::User).await;
    l.wait_folded(seq).await;
    assert_eq!(l.status("acme", "bob").await["scope_locks"][0]["client"], "IT Glue");
}

/// Rotating API client names gains an attacker nothing: unknown clients count for the
/// account, which locks as before.
#[tokio::test]
async fn rotating_api_client_names_locks_the_account() {
    let l = Lockout::start_with(Encoding::PostcardV2).await;
    l.set_policy("acme", json!({ "api_client_scope": true })).await;
    for i in 0..5 {
        l.source_attempt("carol", Outcome::Failure, "203.0.113.9", Some(&format!("client-{i}")), Account::Api).await;
    }
    let notices = user_notices(&l.wait_notices(1).await, "carol");
    let Notice::Locked(locked) = &notices[0] else { panic!("{notices:?}") };
    assert_eq!(locked.scope, Scope::Account);
    assert_eq!(l.status("acme", "carol").await["locked"], true);
}

/// NIST SP 800-63B: a success from one IP leaves another IP's failures counted (`same_ip`),
/// and `explain` lists them with the counter they went to.
#[tokio::test]
async fn a_success_from_one_ip_leaves_another_ips_failures_counted() {
    let l = Lockout::start_with(Encoding::PostcardV2).await;
    l.set_policy("acme", json!({ "reset_scope": "same_ip" })).await;
    for ip in [ATTACKER[0], ATTACKER[0], HOME] {
        l.source_attempt("dave", Outcome::Failure, ip, None, Account::User).await;
    }
    let seq = l.source_attempt("dave", Outcome::Success, HOME, None, Account::User).await;
    l.wait_folded(seq).await;
    let s = l.status("acme", "dave").await;
    assert_eq!(s["failures"], 2, "{s}");
    let e = l.call("acme", "explain", json!({ "user": "dave" })).await.unwrap();
    let counted = e["counted"].as_array().unwrap();
    assert_eq!(counted.len(), 2, "{e}");
    assert!(counted.iter().all(|c| c["ip"] == ATTACKER[0] && c["counter"] == "account"), "{e}");
    assert!(counted[0]["seq"].as_u64().unwrap() < counted[1]["seq"].as_u64().unwrap());
    assert_eq!(e["sources"][0]["ip"], ATTACKER[0]);
    assert_eq!(e["status"]["failures"], 2);
    assert!(e["reason"].as_str().unwrap().starts_with("Not locked: 2 of 5 failures"), "{e}");
}

/// A verified password change ends the failure lock and the scope locks, each exactly once
/// with its notice, but never an admin lock.
#[tokio::test]
async fn a_password_reset_ends_failure_and_scope_locks_not_an_admin_lock() {
    let l = Lockout::start_with(Encoding::PostcardV2).await;
    l.set_policy("acme", json!({ "familiar_days": 30 })).await;
    l.source_attempt("erin", Outcome::Success, HOME, None, Account::User).await;
    for ip in ATTACKER {
        l.source_attempt("erin", Outcome::Failure, ip, None, Account::User).await;
    }
    for _ in 0..5 {
        l.source_attempt("erin", Outcome::Failure, HOME, None, Account::User).await;
    }
    l.wait_notices(2).await;
    let reply = l.call("acme", "password_reset", json!({ "user": "erin", "method": "self_service" })).await.unwrap();
    assert_eq!((reply["locked"].clone(), reply["scope_locks"].clone()), (json!(false), json!([])), "{reply}");
    let event_id = reply["event_id"].as_str().unwrap().to_owned();
    let notices = user_notices(&l.wait_notices(4).await, "erin");
    let ends: Vec<_> =
        notices.iter().filter_map(|n| if let Notice::Unlocked(u) = n { Some(u) } else { None }).collect();
    assert_eq!(ends.len(), 2, "{notices:?}");
    assert!(ends.iter().all(|u| u.how == How::PasswordReset && u.event_id.to_string() == event_id));
    assert_eq!(ends.iter().map(|u| u.scope).collect::<Vec<_>>(), [Scope::Account, Scope::Unfamiliar]);
    // A retry with the same Nats-Msg-Id changes nothing more; an admin lock stays.
    l.call("acme", "lock", json!({ "user": "erin", "actor": "sec" })).await.unwrap();
    let after =
        l.call("acme", "password_reset", json!({ "user": "erin", "method": "admin", "actor": "helpdesk" })).await;
    assert_eq!(after.unwrap()["reason"], "admin");
    let notices = user_notices(&l.notices().await, "erin");
    assert_eq!(notices.iter().filter(|n| matches!(n, Notice::Unlocked(_))).count(), 2);
    let (code, out, err) = crate::ctl::ctl(&l, &["verify"]).await;
    assert_eq!(code, 0, "a replay agrees with the live states: {out}{err}");
}

/// `unlock` with `lock_event`: a help-desk page opened on an older lock cannot end a newer
/// one (409); naming the lock in force unlocks.
#[tokio::test]
async fn an_unlock_naming_a_stale_lock_is_refused() {
    let l = Lockout::start_with(Encoding::PostcardV2).await;
    let first = l.call("acme", "lock", json!({ "user": "frank", "actor": "sec", "seconds": 3600 })).await.unwrap();
    l.call("acme", "unlock", json!({ "user": "frank", "actor": "sec" })).await.unwrap();
    let second = l.call("acme", "lock", json!({ "user": "frank", "actor": "sec" })).await.unwrap();
    let stale = l
        .call("acme", "unlock", json!({ "user": "frank", "actor": "helpdesk", "lock_event": first["event_id"] }))
        .await
        .unwrap_err();
    assert_eq!(stale.code, 409, "{stale:?}");
    assert!(stale.message.contains("no lock in force was started by event"), "{}", stale.message);
    assert_eq!(l.status("acme", "frank").await["locked"], true);
    let ok = l
        .call("acme", "unlock", json!({ "user": "frank", "actor": "helpdesk", "lock_event": second["event_id"] }))
        .await
        .unwrap();
    assert_eq!(ok["locked"], false);
}

/// Under `--wire-version 1` nothing contract v2 added is lost: a policy with v2 fields is
/// written as JSON (the v1 postcard layout has no place for them), and a scope lock's notice
/// reads as a v1 `locked` notice whose message names the scope.
#[tokio::test]
async fn wire_version_1_loses_no_v2_field_and_names_the_scope_in_the_message() {
    let l = Lockout::start_with(Encoding::Postcard).await;
    l.set_policy("acme", json!({ "familiar_days": 30 })).await;
    assert_eq!(l.call("acme", "policy_get", json!({})).await.unwrap()["familiar_days"], 30);
    let events = l.stream_messages("LOCKOUT_EVENTS").await;
    let policy = events.iter().find(|m| m.subject.ends_with(".t.policy")).expect("the policy event");
    assert_eq!(policy.headers.get("Content-Type").map(|v| v.as_str()), Some("application/json"));
    for ip in ATTACKER {
        l.source_attempt("gina", Outcome::Failure, ip, None, Account::User).await;
    }
    let notices = user_notices(&l.wait_notices(1).await, "gina");
    let Notice::Locked(locked) = &notices[0] else { panic!("{notices:?}") };
    assert_eq!(locked.scope, Scope::Account, "a v1 body has no scope");
    assert!(locked.message.contains("from unfamiliar locations"), "{}", locked.message);
}

/// A timed scope lock ends by lockoutd's own `expired` event (the expiry index holds scope
/// locks too), exactly once, and a replay of the history agrees.
#[tokio::test]
async fn a_scope_lock_expires_by_lockoutds_expired_event_once() {
    let l = Lockout::start_with(Encoding::PostcardV2).await;
    l.set_policy("acme", json!({ "familiar_days": 30, "lock_seconds": 1 })).await;
    l.source_attempt("ivan", Outcome::Success, HOME, None, Account::User).await;
    for ip in ATTACKER {
        l.source_attempt("ivan", Outcome::Failure, ip, None, Account::User).await;
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let ends = loop {
        let ends: Vec<_> = user_notices(&l.notices().await, "ivan")
            .into_iter()
            .filter_map(|n| if let Notice::Unlocked(u) = n { Some(u) } else { None })
            .collect();
        if !ends.is_empty() {
            break ends;
        }
        assert!(std::time::Instant::now() < deadline, "the scope lock did not expire within 30 s");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    assert_eq!(ends.len(), 1, "{ends:?}");
    assert_eq!((ends[0].how, ends[0].scope), (How::Expired, Scope::Unfamiliar));
    let events = l.stream_messages("LOCKOUT_EVENTS").await;
    let expired: Vec<_> = events.iter().filter(|m| m.subject.ends_with(".expired")).collect();
    assert_eq!(expired.len(), 1, "one expired event for the scope lock");
    let s = l.status_from("ivan", "192.0.2.1", None, "user").await;
    assert_eq!((s["allowed"].clone(), s["scope_locks"].clone()), (json!(true), json!([])), "{s}");
    let (code, out, err) = crate::ctl::ctl(&l, &["verify"]).await;
    assert_eq!(code, 0, "a replay agrees with the live states: {out}{err}");
}
