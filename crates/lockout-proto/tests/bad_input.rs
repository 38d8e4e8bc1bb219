//! Bad input, table-driven: every refusal the projector can make, through the same calls it makes
//! (`Subjects::parse_event`, `Encoding::from_content_type`, `Event::decode_checked`), with the
//! dead-letter reason it must get and words its message must contain (the field, and the bad
//! value or the bound where there is one), in JSON and in postcard wherever the fault can be
//! written in both. A last table does the same for service requests.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde::Serialize;
use uuid::Uuid;

use lockout_proto::codec::{self, Encoding, MAX_PAYLOAD};
use lockout_proto::command::{
    decode_request, LockRequest, LockedRequest, PolicySetRequest, StatusRequest, UnlockRequest,
};
use lockout_proto::event::{
    check_admin, check_seconds, Account, Attempt, Event, Factor, Lock, MfaReset, Outcome, PolicyChange, Unlock,
};
use lockout_proto::{Policy, RejectReason, Rejection, Subjects, Tenant};

use RejectReason::{BadIp, BadSubject, Encoding as BadEncoding, Mismatch, OutOfRange, Undecodable, UnknownType};

const JSON: Option<&str> = Some("application/json");
const POSTCARD: Option<&str> = None;
const T0: u64 = 1_722_110_078_539;
/// alice@acme.com as a user token.
const ALICE_TOK: &str = "YWxpY2VAYWNtZS5jb20";

fn id() -> Uuid {
    Uuid::parse_str("0190f5c2-6e4b-7000-8000-000000000001").unwrap()
}

fn user_subject(kind: &str) -> String {
    format!("lockout.events.acme.u.{ALICE_TOK}.{kind}")
}

fn attempt() -> Attempt {
    Attempt {
        id: id(),
        at: T0,
        tenant: "acme".into(),
        user: "alice@acme.com".into(),
        outcome: Outcome::Failure,
        factor: Factor::Mfa,
        source_ip: "203.0.113.7".into(),
        client: Some("IT Glue".into()),
        credential: Some("hmac-sha256:4f1c9a0e".into()),
        account: Some(Account::Api),
        is_final: true,
    }
}

fn unlock() -> Unlock {
    Unlock {
        id: id(),
        at: T0,
        tenant: "acme".into(),
        user: "alice@acme.com".into(),
        actor: "admin@acme.com".into(),
        reason: None,
        caller: None,
        lock_event: None,
    }
}

fn lock() -> Lock {
    Lock {
        id: id(),
        at: T0,
        tenant: "acme".into(),
        user: "alice@acme.com".into(),
        actor: "admin@acme.com".into(),
        reason: Some("offboarding".into()),
        seconds: Some(60),
        caller: None,
    }
}

fn mfa_reset() -> MfaReset {
    MfaReset {
        id: id(),
        at: T0,
        tenant: "acme".into(),
        user: "alice@acme.com".into(),
        actor: "admin@acme.com".into(),
        reason: None,
        caller: None,
    }
}

fn policy_change() -> PolicyChange {
    PolicyChange {
        id: id(),
        at: T0,
        tenant: "acme".into(),
        actor: "admin@acme.com".into(),
        policy: Policy::default(),
        caller: None,
    }
}

/// What the projector does with one message.
fn project(subject: &str, content_type: Option<&str>, body: &[u8]) -> Result<Event, Rejection> {
    let subject = Subjects::default().parse_event(subject)?;
    let enc = Encoding::from_content_type(content_type)?;
    Event::decode_checked(&subject, enc, body)
}

struct Case {
    what: String,
    subject: String,
    content_type: Option<&'static str>,
    body: Vec<u8>,
    reason: RejectReason,
    /// Each must occur in the message.
    needles: Vec<String>,
}

#[derive(Default)]
struct Table(Vec<Case>);

impl Table {
    fn raw(
        &mut self,
        what: &str,
        subject: &str,
        content_type: Option<&'static str>,
        body: Vec<u8>,
        reason: RejectReason,
        needles: &[&str],
    ) {
        self.0.push(Case {
            what: what.to_owned(),
            subject: subject.to_owned(),
            content_type,
            body,
            reason,
            needles: needles.iter().map(|s| (*s).to_owned()).collect(),
        });
    }

    /// The same faulty value, once as JSON and once as postcard.
    fn both<T: Serialize>(&mut self, what: &str, subject: &str, value: &T, reason: RejectReason, needles: &[&str]) {
        for (enc, ct) in [(Encoding::Json, JSON), (Encoding::Postcard, POSTCARD)] {
            let what = format!("{what} ({})", enc.name());
            self.raw(&what, subject, ct, codec::encode(enc, value), reason, needles);
        }
    }

    fn json(&mut self, what: &str, subject: &str, body: serde_json::Value, reason: RejectReason, needles: &[&str]) {
        self.raw(&format!("{what} (json)"), subject, JSON, serde_json::to_vec(&body).unwrap(), reason, needles);
    }

    fn postcard(&mut self, what: &str, subject: &str, body: Vec<u8>, reason: RejectReason, needles: &[&str]) {
        self.raw(&format!("{what} (postcard)"), subject, POSTCARD, body, reason, needles);
    }
}

/// The attempt's JSON with one field replaced.
fn attempt_json_with(field: &str, value: serde_json::Value) -> serde_json::Value {
    let mut v = serde_json::to_value(attempt()).unwrap();
    v[field] = value;
    v
}

/// Offset of `outcome` in the attempt's postcard bytes: after id, at, tenant and user.
fn outcome_offset() -> usize {
    let a = attempt();
    codec::encode(Encoding::Postcard, &(a.id.as_bytes(), a.at, &a.tenant, &a.user)).len()
}

/// The attempt's postcard bytes with one byte replaced, after checking what it was.
fn attempt_postcard_patched(at: usize, was: u8, now: u8) -> Vec<u8> {
    let mut bytes = codec::encode(Encoding::Postcard, &attempt());
    assert_eq!(bytes[at], was, "layout of the attempt changed: byte {at}");
    bytes[at] = now;
    bytes
}

fn token(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

fn event_cases() -> Table {
    let mut t = Table::default();
    let attempt_subj = user_subject("attempt");
    let good_json = codec::encode(Encoding::Json, &attempt());

    // Size.
    let mut padded = good_json.clone();
    padded.resize(MAX_PAYLOAD + 1, b' ');
    t.raw("JSON payload of 64 KiB + 1", &attempt_subj, JSON, padded, OutOfRange, &["payload", "65537", "65536"]);
    let huge = Attempt { client: Some("x".repeat(70_000).into()), ..attempt() };
    t.postcard(
        "postcard payload over 64 KiB",
        &attempt_subj,
        codec::encode(Encoding::Postcard, &huge),
        OutOfRange,
        &["payload", "65536"],
    );

    // Subject: tenant token.
    for (what, tenant, needle) in [
        ("tenant with '!'", "ac!me".to_owned(), "\"ac!me\""),
        ("tenant with a non-ASCII letter", "acmé".to_owned(), "\"acmé\""),
        ("tenant of 65 characters", "a".repeat(65), "1 to 64 characters"),
        ("empty tenant", String::new(), "\"\""),
    ] {
        let subject = format!("lockout.events.{tenant}.u.{ALICE_TOK}.attempt");
        t.raw(what, &subject, JSON, good_json.clone(), BadSubject, &["tenant", needle]);
    }

    // Subject: user token.
    for (what, tok, needle) in [
        ("user token with padding", "YWxpY2U=".to_owned(), "not base64url"),
        ("user token in the standard alphabet", "a+b/".to_owned(), "not base64url"),
        ("user token with non-canonical trailing bits", "YR".to_owned(), "not base64url"),
        ("user token not UTF-8", token(&[0xff, 0xfe, 0x41]), "UTF-8"),
        ("user token of 257 bytes", token("x".repeat(257).as_bytes()), "257 bytes"),
    ] {
        let subject = format!("lockout.events.acme.u.{tok}.attempt");
        t.raw(what, &subject, JSON, good_json.clone(), BadSubject, &["user token", needle]);
    }
    t.raw(
        "subject without a user token",
        "lockout.events.acme.u.attempt",
        JSON,
        good_json.clone(),
        BadSubject,
        &["lockout.events.acme.u.attempt", "shape"],
    );

    // Subject: type.
    let frob = format!("lockout.events.acme.u.{ALICE_TOK}.frobnicate");
    t.raw("unknown event type", &frob, JSON, good_json.clone(), UnknownType, &["\"frobnicate\"", "attempt"]);
    t.raw(
        "user event type on a tenant subject",
        "lockout.events.acme.t.attempt",
        JSON,
        good_json.clone(),
        UnknownType,
        &["\"attempt\"", "tenant events are: policy"],
    );
    let policy_on_user = user_subject("policy");
    t.raw(
        "tenant event type on a user subject",
        &policy_on_user,
        JSON,
        good_json.clone(),
        UnknownType,
        &["\"policy\""],
    );

    // Encoding.
    for ct in ["text/plain", "application/xml", "application/json-seq", ""] {
        t.raw(
            &format!("Content-Type {ct:?}"),
            &attempt_subj,
            Some(ct),
            good_json.clone(),
            BadEncoding,
            &["Content-Type", &format!("{ct:?}")],
        );
    }

    // Body versus subject.
    let globex = format!("lockout.events.globex.u.{ALICE_TOK}.attempt");
    t.both(
        "body tenant differs from subject tenant",
        &globex,
        &attempt(),
        Mismatch,
        &["tenant", "\"acme\"", "\"globex\""],
    );
    let bob = format!("lockout.events.acme.u.{}.attempt", token(b"bob@acme.com"));
    t.both(
        "body user differs from subject user",
        &bob,
        &attempt(),
        Mismatch,
        &["user", "\"alice@acme.com\"", "\"bob@acme.com\""],
    );
    let case_differs = format!("lockout.events.acme.u.{}.attempt", token(b"Alice@acme.com"));
    t.both("user differs only in case", &case_differs, &attempt(), Mismatch, &["user", "\"Alice@acme.com\""]);
    let long_user = Attempt { user: "é".repeat(129).into(), ..attempt() };
    t.both("body user of 258 bytes", &attempt_subj, &long_user, OutOfRange, &["user", "258 bytes", "256"]);
    let policy_subj = "lockout.events.globex.t.policy";
    t.both("policy event for another tenant", policy_subj, &policy_change(), Mismatch, &["tenant", "\"globex\""]);

    // Fields.
    for ip in ["203.0.113.256", "localhost", "", "203.0.113.7:443", "fe80::1%eth0", " 203.0.113.7"] {
        let a = Attempt { source_ip: ip.into(), ..attempt() };
        t.both(&format!("source_ip {ip:?}"), &attempt_subj, &a, BadIp, &["source_ip", &format!("{ip:?}")]);
    }
    let a = Attempt { client: Some("c".repeat(201).into()), ..attempt() };
    t.both("client of 201 characters", &attempt_subj, &a, OutOfRange, &["client", "201 characters", "200"]);
    let a = Attempt { credential: Some("f".repeat(65).into()), ..attempt() };
    t.both("credential of 65 characters", &attempt_subj, &a, OutOfRange, &["credential", "65 characters", "64"]);
    for (kind, body) in [
        ("unlock", codec::encode(Encoding::Json, &Unlock { actor: String::new().into(), ..unlock() })),
        ("lock", codec::encode(Encoding::Json, &Lock { actor: String::new().into(), ..lock() })),
        ("mfa_reset", codec::encode(Encoding::Json, &MfaReset { actor: String::new().into(), ..mfa_reset() })),
    ] {
        t.raw(
            &format!("empty actor of {kind} (json)"),
            &user_subject(kind),
            JSON,
            body,
            OutOfRange,
            &["actor", "0 characters"],
        );
    }
    let empty_actor = PolicyChange { actor: String::new().into(), ..policy_change() };
    t.both(
        "empty actor of policy",
        "lockout.events.acme.t.policy",
        &empty_actor,
        OutOfRange,
        &["actor", "0 characters"],
    );
    let long_actor = Unlock { actor: "a".repeat(257).into(), ..unlock() };
    t.both("actor of 257 characters", &user_subject("unlock"), &long_actor, OutOfRange, &["actor", "257"]);
    let long_reason = MfaReset { reason: Some("r".repeat(1025).into()), ..mfa_reset() };
    t.both(
        "reason of 1025 characters",
        &user_subject("mfa_reset"),
        &long_reason,
        OutOfRange,
        &["reason", "1025", "1024"],
    );
    let zero = Lock { seconds: Some(0), ..lock() };
    t.both("lock seconds 0", &user_subject("lock"), &zero, OutOfRange, &["seconds", "is 0"]);
    let lock_empty_actor = Lock { actor: String::new().into(), ..lock() };
    t.both("empty actor of lock", &user_subject("lock"), &lock_empty_actor, OutOfRange, &["actor"]);
    let multiplier = PolicyChange { policy: Policy { lock_multiplier: 0, ..Policy::default() }, ..policy_change() };
    t.both(
        "policy lock_multiplier 0",
        "lockout.events.acme.t.policy",
        &multiplier,
        OutOfRange,
        &["lock_multiplier", "is 0"],
    );

    // Undecodable JSON. serde names the field for missing and unknown fields; for an unknown
    // enum value it names the value and the allowed values.
    for (field, value, needles) in [
        ("outcome", "maybe", ["`maybe`", "`success`, `failure`, `rejected`"]),
        ("factor", "sms", ["`sms`", "`password`, `mfa`, `recovery_code`"]),
        ("account", "robot", ["`robot`", "`user`, `api`, `portal`"]),
    ] {
        let body = attempt_json_with(field, value.into());
        t.json(&format!("unknown {field} value"), &attempt_subj, body, Undecodable, &needles);
    }
    let mut missing = serde_json::to_value(attempt()).unwrap();
    missing.as_object_mut().unwrap().remove("source_ip");
    t.json("missing source_ip", &attempt_subj, missing, Undecodable, &["missing field `source_ip`"]);
    t.json(
        "at as a string",
        &attempt_subj,
        attempt_json_with("at", "yesterday".into()),
        Undecodable,
        &["\"yesterday\"", "u64"],
    );
    t.json("at negative", &attempt_subj, attempt_json_with("at", (-1).into()), Undecodable, &["-1"]);
    t.json("id not a UUID", &attempt_subj, attempt_json_with("id", "42".into()), Undecodable, &["UUID"]);
    let mut pol = serde_json::to_value(policy_change()).unwrap();
    pol["policy"]["max_fialures"] = 3.into();
    t.json("unknown policy field", "lockout.events.acme.t.policy", pol, Undecodable, &["unknown field `max_fialures`"]);
    let mut pol = serde_json::to_value(policy_change()).unwrap();
    pol["policy"]["max_failures"] = serde_json::Value::Null;
    t.json("null policy field", "lockout.events.acme.t.policy", pol, Undecodable, &["null", "u32"]);
    let mut pol = serde_json::to_value(policy_change()).unwrap();
    pol["policy"]["max_failures"] = 4_294_967_296u64.into();
    t.json("policy max_failures over u32", "lockout.events.acme.t.policy", pol, Undecodable, &["4294967296"]);
    t.raw(
        "JSON with trailing characters",
        &attempt_subj,
        JSON,
        [good_json.as_slice(), b" {}"].concat(),
        Undecodable,
        &["trailing characters"],
    );
    t.raw("not JSON at all", &attempt_subj, JSON, b"attempt!".to_vec(), Undecodable, &["not valid JSON"]);
    t.raw("empty JSON body", &attempt_subj, JSON, Vec::new(), Undecodable, &["EOF"]);

    // Undecodable postcard.
    let off = outcome_offset();
    let layout = "schemas/postcard.md";
    t.postcard(
        "outcome index 3",
        &attempt_subj,
        attempt_postcard_patched(off, 1, 3),
        Undecodable,
        &["postcard", layout],
    );
    t.postcard(
        "factor index 3",
        &attempt_subj,
        attempt_postcard_patched(off + 1, 1, 3),
        Undecodable,
        &["postcard", layout],
    );
    let last = codec::encode(Encoding::Postcard, &attempt()).len() - 1;
    t.postcard(
        "account index 3",
        &attempt_subj,
        attempt_postcard_patched(last, 1, 3),
        Undecodable,
        &["postcard", layout],
    );
    t.postcard(
        "Option tag 2 for account",
        &attempt_subj,
        attempt_postcard_patched(last - 1, 1, 2),
        Undecodable,
        &["postcard"],
    );
    let good_postcard = codec::encode(Encoding::Postcard, &attempt());
    t.postcard(
        "one trailing byte",
        &attempt_subj,
        [good_postcard.as_slice(), &[0]].concat(),
        Undecodable,
        &["1 trailing bytes"],
    );
    t.postcard(
        "a second value after the first",
        &attempt_subj,
        [good_postcard.clone(), good_postcard.clone()].concat(),
        Undecodable,
        &["trailing bytes"],
    );
    t.postcard(
        "truncated body",
        &attempt_subj,
        good_postcard[..good_postcard.len() - 1].to_vec(),
        Undecodable,
        &["postcard"],
    );
    t.postcard("empty body", &attempt_subj, Vec::new(), Undecodable, &["postcard"]);
    t.postcard(
        "a UUID with a length prefix",
        &attempt_subj,
        [&[16u8][..], &good_postcard].concat(),
        Undecodable,
        &["postcard"],
    );
    // The tenant's 4 bytes "acme" end where the user (length byte and 14 bytes) begins.
    let tenant_at = off - 15 - 4;
    let mut bad_utf8 = good_postcard.clone();
    assert_eq!(&bad_utf8[tenant_at..tenant_at + 4], b"acme", "layout of the attempt changed");
    bad_utf8[tenant_at + 1] = 0xff;
    t.postcard("tenant not UTF-8", &attempt_subj, bad_utf8, Undecodable, &["postcard"]);
    let mut bad_bool = codec::encode(Encoding::Postcard, &policy_change());
    // The default policy is the last 15 bytes: 05, 88 0e, 00, then the three bools 01 01 00, ...
    let reset_at = bad_bool.len() - 11;
    assert_eq!(&bad_bool[reset_at - 4..reset_at + 3], &[5, 0x88, 0x0e, 0, 1, 1, 0], "layout of the policy changed");
    bad_bool[reset_at] = 2;
    t.postcard("bool 2 in a policy", "lockout.events.acme.t.policy", bad_bool, Undecodable, &["postcard"]);
    t.raw("JSON body sent as postcard", &attempt_subj, POSTCARD, good_json.clone(), Undecodable, &["postcard"]);
    t.raw("postcard body sent as JSON", &attempt_subj, JSON, good_postcard, Undecodable, &["JSON"]);
    t
}

#[test]
fn every_bad_event_is_refused_with_its_reason_and_a_message_naming_the_fault() {
    let cases = event_cases().0;
    let mut wrong = Vec::new();
    for c in &cases {
        match project(&c.subject, c.content_type, &c.body) {
            Ok(event) => wrong.push(format!("{}: accepted as {:?}", c.what, event.kind())),
            Err(e) => {
                if e.reason != c.reason {
                    wrong.push(format!("{}: reason {} instead of {} ({})", c.what, e.reason, c.reason, e.message));
                }
                for needle in &c.needles {
                    if !e.message.contains(needle.as_str()) {
                        wrong.push(format!("{}: message lacks {needle:?}: {}", c.what, e.message));
                    }
                }
            }
        }
    }
    assert!(wrong.is_empty(), "{} of {} cases wrong:\n{}", wrong.len(), cases.len(), wrong.join("\n"));
    // Every reason of the protocol (`docs/protocol.md`) is exercised; `msg_id_mismatch`
    // compares a header with the body, so lockout-engine's `accept` checks it (its tests and
    // tests/it/security.rs::reused_event_ids_*).
    for reason in RejectReason::all().filter(|r| *r != RejectReason::MsgIdMismatch) {
        assert!(cases.iter().any(|c| c.reason == reason), "no case for {reason}");
    }
}

/// The controls: the bodies the table breaks are accepted when intact, and the bounds are
/// inclusive, so each refusal above is caused by its one fault.
#[test]
fn the_unbroken_inputs_and_the_bounds_themselves_are_accepted() {
    let attempt_subj = user_subject("attempt");
    let mut ok: Vec<(String, String, Option<&str>, Vec<u8>)> = Vec::new();
    let mut add = |what: &str, subject: &str, value: &dyn Fn(Encoding) -> Vec<u8>| {
        for (enc, ct) in [(Encoding::Json, JSON), (Encoding::Postcard, POSTCARD)] {
            ok.push((format!("{what} ({})", enc.name()), subject.to_owned(), ct, value(enc)));
        }
    };
    add("attempt", &attempt_subj, &|e| codec::encode(e, &attempt()));
    add("unlock", &user_subject("unlock"), &|e| codec::encode(e, &unlock()));
    add("lock", &user_subject("lock"), &|e| codec::encode(e, &lock()));
    add("mfa_reset", &user_subject("mfa_reset"), &|e| codec::encode(e, &mfa_reset()));
    add("policy", "lockout.events.acme.t.policy", &|e| codec::encode(e, &policy_change()));
    add("client of 200 two-byte characters", &attempt_subj, &|e| {
        codec::encode(e, &Attempt { client: Some("é".repeat(200).into()), ..attempt() })
    });
    add("credential of 64 characters", &attempt_subj, &|e| {
        codec::encode(e, &Attempt { credential: Some("f".repeat(64).into()), ..attempt() })
    });
    add("IPv6 source_ip", &attempt_subj, &|e| {
        codec::encode(e, &Attempt { source_ip: "2001:db8::1".into(), ..attempt() })
    });
    add("IPv4-mapped IPv6 source_ip", &attempt_subj, &|e| {
        codec::encode(e, &Attempt { source_ip: "::ffff:203.0.113.7".into(), ..attempt() })
    });
    add("actor of 1 and reason of 1024", &user_subject("unlock"), &|e| {
        codec::encode(e, &Unlock { actor: "a".into(), reason: Some("r".repeat(1024).into()), ..unlock() })
    });
    add("actor of 256", &user_subject("lock"), &|e| {
        codec::encode(e, &Lock { actor: "a".repeat(256).into(), ..lock() })
    });
    add("lock seconds 1 and absent", &user_subject("lock"), &|e| {
        codec::encode(e, &Lock { seconds: Some(1), ..lock() })
    });
    add("lock without seconds", &user_subject("lock"), &|e| codec::encode(e, &Lock { seconds: None, ..lock() }));
    add("policy lock_multiplier 1", "lockout.events.acme.t.policy", &|e| {
        codec::encode(
            e,
            &PolicyChange { policy: Policy { lock_multiplier: 1, ..Policy::default() }, ..policy_change() },
        )
    });
    let user256 = "é".repeat(128);
    let subj256 = format!("lockout.events.acme.u.{}.attempt", token(user256.as_bytes()));
    add("user of 256 bytes", &subj256, &|e| codec::encode(e, &Attempt { user: user256.clone().into(), ..attempt() }));
    let tenant64 = "a".repeat(64);
    let subj64 = format!("lockout.events.{tenant64}.u.{ALICE_TOK}.attempt");
    add("tenant of 64 characters", &subj64, &|e| {
        codec::encode(e, &Attempt { tenant: tenant64.clone().into(), ..attempt() })
    });
    add(
        "tenant with every allowed kind of character",
        &format!("lockout.events.Acme_EU-1.u.{ALICE_TOK}.attempt"),
        &|e| codec::encode(e, &Attempt { tenant: "Acme_EU-1".into(), ..attempt() }),
    );

    let mut json_only = |what: &str, subject: &str, ct: Option<&'static str>, body: Vec<u8>| {
        ok.push((what.to_owned(), subject.to_owned(), ct, body));
    };
    let mut padded = codec::encode(Encoding::Json, &attempt());
    padded.resize(MAX_PAYLOAD, b' ');
    json_only("JSON payload of exactly 64 KiB", &attempt_subj, JSON, padded);
    let mut extra = serde_json::to_value(attempt()).unwrap();
    extra["added_later"] = serde_json::json!({"any": "thing"});
    json_only("unknown JSON field", &attempt_subj, JSON, serde_json::to_vec(&extra).unwrap());
    let minimal = serde_json::json!({
        "id": id().to_string(), "at": T0, "tenant": "acme", "user": "alice@acme.com",
        "outcome": "success", "source_ip": "203.0.113.7", "client": null,
    });
    json_only("only required fields, client null", &attempt_subj, JSON, serde_json::to_vec(&minimal).unwrap());
    let factor_null = attempt_json_with("factor", serde_json::Value::Null);
    json_only("factor null", &attempt_subj, JSON, serde_json::to_vec(&factor_null).unwrap());
    let ct_variants = ["application/json; charset=utf-8", "APPLICATION/JSON"];
    for ct in ct_variants {
        json_only(ct, &attempt_subj, Some(ct), codec::encode(Encoding::Json, &attempt()));
    }
    json_only(
        "explicit application/postcard",
        &attempt_subj,
        Some("application/postcard"),
        codec::encode(Encoding::Postcard, &attempt()),
    );

    let mut wrong = Vec::new();
    for (what, subject, ct, body) in &ok {
        if let Err(e) = project(subject, *ct, body) {
            wrong.push(format!("{what}: refused ({}): {}", e.reason, e.message));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

type Check = Box<dyn Fn(Encoding, &[u8], &Tenant) -> Result<(), Rejection>>;

/// What the service does with a request of each op before touching state.
fn op_status() -> Check {
    Box::new(|e, b, t| decode_request::<StatusRequest>(e, b, t).map(drop))
}

fn op_unlock() -> Check {
    Box::new(|e, b, t| {
        let r = decode_request::<UnlockRequest>(e, b, t)?;
        check_admin(&r.actor, r.reason.as_deref())
    })
}

fn op_lock() -> Check {
    Box::new(|e, b, t| {
        let r = decode_request::<LockRequest>(e, b, t)?;
        check_admin(&r.actor, r.reason.as_deref())?;
        check_seconds(r.seconds)
    })
}

fn op_locked() -> Check {
    Box::new(|e, b, t| decode_request::<LockedRequest>(e, b, t)?.page_size().map(drop))
}

fn op_policy_set() -> Check {
    Box::new(|e, b, t| {
        let r = decode_request::<PolicySetRequest>(e, b, t)?;
        check_admin(&r.actor, None)?;
        r.policy.validate()
    })
}

/// What, the op's checks, the encoding, the body, the reason and the words of the message.
type RequestCase = (&'static str, Check, Encoding, Vec<u8>, RejectReason, &'static [&'static str]);

fn pc<T: Serialize>(value: &T) -> Vec<u8> {
    codec::encode(Encoding::Postcard, value)
}

/// Service requests: a refusal becomes a 400 whose `Nats-Service-Error` is the message.
#[test]
fn bad_requests_are_refused_with_a_message_naming_the_field() {
    use Encoding::{Json as J, Postcard as P};
    let acme = Tenant::parse("acme").unwrap();
    let cases: Vec<RequestCase> = vec![
        (
            "tenant differs",
            op_status(),
            J,
            br#"{"tenant":"globex","user":"a"}"#.to_vec(),
            Mismatch,
            &["tenant", "\"globex\"", "\"acme\""],
        ),
        ("tenant not a string", op_status(), J, br#"{"tenant":5,"user":"a"}"#.to_vec(), Mismatch, &["tenant"]),
        ("status without user", op_status(), J, b"".to_vec(), Undecodable, &["missing field `user`"]),
        ("request not an object", op_status(), J, b"[]".to_vec(), Undecodable, &["JSON object"]),
        ("oversized request", op_unlock(), J, vec![b' '; MAX_PAYLOAD + 1], OutOfRange, &["payload", "65536"]),
        ("empty actor", op_unlock(), J, br#"{"user":"a","actor":""}"#.to_vec(), OutOfRange, &["actor"]),
        (
            "empty actor",
            op_unlock(),
            P,
            pc(&UnlockRequest { user: "a".into(), actor: "".into(), reason: None, lock_event: None }),
            OutOfRange,
            &["actor"],
        ),
        ("lock seconds 0", op_lock(), J, br#"{"user":"a","actor":"b","seconds":0}"#.to_vec(), OutOfRange, &["seconds"]),
        (
            "lock seconds 0",
            op_lock(),
            P,
            pc(&LockRequest { user: "a".into(), actor: "b".into(), reason: None, seconds: Some(0) }),
            OutOfRange,
            &["seconds"],
        ),
        ("locked limit 0", op_locked(), J, br#"{"limit":0}"#.to_vec(), OutOfRange, &["limit", "is 0", "1 to 1000"]),
        (
            "locked limit 1001",
            op_locked(),
            P,
            pc(&LockedRequest { limit: Some(1001), after: None }),
            OutOfRange,
            &["limit", "1001"],
        ),
        ("trailing postcard byte", op_locked(), P, vec![0, 0, 0], Undecodable, &["1 trailing bytes"]),
        (
            "policy unknown field",
            op_policy_set(),
            J,
            br#"{"actor":"a","policy":{"max_fialures":3}}"#.to_vec(),
            Undecodable,
            &["unknown field `max_fialures`"],
        ),
        (
            "policy null field",
            op_policy_set(),
            J,
            br#"{"actor":"a","policy":{"lock_seconds":null}}"#.to_vec(),
            Undecodable,
            &["null"],
        ),
        (
            "policy lock_multiplier 0",
            op_policy_set(),
            J,
            br#"{"actor":"a","policy":{"lock_multiplier":0}}"#.to_vec(),
            OutOfRange,
            &["lock_multiplier"],
        ),
        (
            "policy without actor",
            op_policy_set(),
            J,
            br#"{"policy":{}}"#.to_vec(),
            Undecodable,
            &["missing field `actor`"],
        ),
    ];
    let mut wrong = Vec::new();
    for (what, check, enc, body, reason, needles) in &cases {
        let what = format!("{what} ({})", enc.name());
        match check(*enc, body, &acme) {
            Ok(()) => wrong.push(format!("{what}: accepted")),
            Err(e) => {
                if e.reason != *reason {
                    wrong.push(format!("{what}: reason {} instead of {reason} ({})", e.reason, e.message));
                }
                for needle in *needles {
                    if !e.message.contains(needle) {
                        wrong.push(format!("{what}: message lacks {needle:?}: {}", e.message));
                    }
                }
            }
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));

    // Controls: the same ops accept good bodies, a matching or null `tenant`, and `{}` policies.
    let good: [(&str, Check, &[u8]); 5] = [
        ("matching tenant", op_status(), br#"{"tenant":"acme","user":"a"}"#),
        ("null tenant", op_status(), br#"{"tenant":null,"user":"a"}"#),
        ("empty locked body", op_locked(), b""),
        ("limit 1000", op_locked(), br#"{"limit":1000,"after":null}"#),
        ("empty policy", op_policy_set(), br#"{"actor":"a","policy":{},"extra":1}"#),
    ];
    for (what, check, body) in &good {
        check(Encoding::Json, body, &acme).unwrap_or_else(|e| panic!("{what}: {}", e.message));
    }
}
