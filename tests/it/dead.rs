//! `docs/protocol.md`, section "Bad input": every refusal reason is dead-lettered with its
//! reason and original bytes, changes no state and does not stop the projector.

use async_nats::HeaderMap;
use lockout_proto::codec::{self, Encoding};
use lockout_proto::event::{Attempt, Outcome};
use serde_json::json;

use crate::support::{attempt_body, Lockout};

fn attempt(tenant: &str, user: &str, ip: &str) -> Attempt {
    attempt_body(tenant, user, Outcome::Failure, ip)
}

fn json_headers(ct: &str) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(codec::CONTENT_TYPE, ct);
    h
}

#[tokio::test]
async fn every_refusal_reason_is_dead_lettered_and_changes_nothing() {
    let l = Lockout::start().await;
    let alice = "YWxpY2U"; // base64url("alice")
    let good = attempt("acme", "alice", "203.0.113.7");
    let js = |v: &serde_json::Value| serde_json::to_vec(v).unwrap();
    let good_json = serde_json::to_value(&good).unwrap();
    let mut other_user = good_json.clone();
    other_user["user"] = json!("mallory");
    let mut bad_ip = good_json.clone();
    bad_ip["source_ip"] = json!("999.1.1.1");
    let mut long_client = good_json.clone();
    long_client["client"] = json!("x".repeat(201));
    let mut trailing = codec::encode(Encoding::Postcard, &good);
    trailing.push(0);
    let cases: Vec<(String, HeaderMap, Vec<u8>, &str, &str)> = vec![
        (
            format!("lockout.events.acme.u.{alice}.attempt"),
            json_headers(codec::JSON),
            b"{not json".to_vec(),
            "acme",
            "undecodable",
        ),
        (format!("lockout.events.acme.u.{alice}.attempt"), HeaderMap::new(), trailing, "acme", "undecodable"),
        (
            format!("lockout.events.acme.u.{alice}.teleport"),
            json_headers(codec::JSON),
            js(&good_json),
            "acme",
            "unknown_type",
        ),
        (
            format!("lockout.events.acme.u.{alice}.attempt"),
            json_headers(codec::JSON),
            js(&other_user),
            "acme",
            "mismatch",
        ),
        (
            format!("lockout.events.other.u.{alice}.attempt"),
            json_headers(codec::JSON),
            js(&good_json),
            "other",
            "mismatch",
        ),
        (
            format!("lockout.events.acme.u.{alice}.attempt"),
            json_headers(codec::JSON),
            js(&long_client),
            "acme",
            "out_of_range",
        ),
        (
            format!("lockout.events.acme.u.{alice}.attempt"),
            json_headers(codec::JSON),
            vec![b' '; 70_000],
            "acme",
            "out_of_range",
        ),
        (format!("lockout.events.acme.u.{alice}.attempt"), json_headers(codec::JSON), js(&bad_ip), "acme", "bad_ip"),
        ("lockout.events.acme.u.YQ==.attempt".into(), json_headers(codec::JSON), js(&good_json), "acme", "bad_subject"),
        (
            format!("lockout.events.ac~me.u.{alice}.attempt"),
            json_headers(codec::JSON),
            js(&good_json),
            "_",
            "bad_subject",
        ),
        (
            format!("lockout.events.acme.u.{alice}.attempt"),
            json_headers("text/csv"),
            js(&good_json),
            "acme",
            "encoding",
        ),
    ];
    let mut seqs = Vec::new();
    for (subject, headers, payload, _, _) in &cases {
        seqs.push(l.publish_raw(subject, headers.clone(), payload.clone()).await);
    }
    // The projector goes on: a valid event after all of them is folded.
    let ok = l.publish_attempt(&good, Encoding::Postcard).await;
    l.wait_folded(ok).await;

    let dead = l.stream_messages("LOCKOUT_DEAD").await;
    assert_eq!(dead.len(), cases.len(), "one dead letter per refused event");
    for ((subject, _, payload, tenant, reason), (m, seq)) in cases.iter().zip(dead.iter().zip(&seqs)) {
        assert_eq!(m.subject.as_str(), format!("lockout.dead.{tenant}.{reason}"), "{subject}");
        assert_eq!(&m.payload[..], &payload[..], "original bytes are kept");
        let h = &m.headers;
        assert_eq!(h.get(codec::LOCKOUT_SUBJECT).unwrap().as_str(), subject);
        assert_eq!(h.get(codec::LOCKOUT_SEQ).unwrap().as_str(), seq.to_string());
        assert_eq!(h.get(codec::NATS_MSG_ID).unwrap().as_str(), format!("dead-{seq}"));
        assert!(h.get(codec::LOCKOUT_ERROR).unwrap().as_str().len() > 20, "a sentence a person can act on");
        assert!(h.get(codec::CONTENT_TYPE).is_some());
    }
    // Only the valid event counted.
    let s = l.status("acme", "alice").await;
    assert_eq!(s["failures"], 1);
    assert_eq!(l.status("acme", "mallory").await["failures"], 0);
    assert_eq!(l.status("other", "alice").await["failures"], 0);
}

/// 10,000 distinct invalid events among valid ones: every one dead-lettered under its reason,
/// none changes a state, and the valid ones around them fold as if they were alone.
#[tokio::test]
async fn ten_thousand_distinct_invalid_events_are_all_dead_lettered() {
    use lockout_bench::invalid::{invalid_event, REASONS};
    let l = Lockout::start().await;
    let mut last = 0;
    for window in 0..20 {
        let mut acks = Vec::new();
        for i in window * 500..(window + 1) * 500 {
            let bad = invalid_event("lockout", i);
            acks.push(l.js.publish_with_headers(bad.subject, bad.headers, bad.payload.into()).await.unwrap());
            if i % 10 == 0 {
                // One valid failure for every ten invalid events: 4 for each of 250 users.
                let a = attempt(&format!("t{}", i % 10), &format!("valid{}", (i / 10) % 250), "198.51.100.1");
                let subject = format!(
                    "lockout.events.{}.u.{}.attempt",
                    a.tenant,
                    lockout_proto::UserId::parse(&a.user).unwrap().token()
                );
                acks.push(l.js.publish(subject, codec::encode(Encoding::Postcard, &a).into()).await.unwrap());
            }
        }
        for ack in acks {
            last = ack.await.unwrap().sequence;
        }
    }
    l.wait_folded(last).await;

    // Folded means committed; the dead letters of the last batches are published right after.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let dead = loop {
        let n = l.js.get_stream("LOCKOUT_DEAD").await.unwrap().get_info().await.unwrap().state.messages;
        if n >= 10_000 || std::time::Instant::now() > deadline {
            break n;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    assert_eq!(dead, 10_000, "every invalid event is dead-lettered once");
    for reason in REASONS {
        let s = l.js.get_stream("LOCKOUT_DEAD").await.unwrap();
        let mut subjects = s.info_with_subjects(format!("lockout.dead.*.{reason}")).await.unwrap();
        let mut n = 0;
        while let Some(item) = futures::StreamExt::next(&mut subjects).await {
            n += item.unwrap().1;
        }
        let expected = (0..10_000).filter(|i| REASONS[i % REASONS.len()] == reason).count();
        assert_eq!(n, expected, "dead letters for {reason}");
    }
    // Only the valid events changed states: 250 users with 4 failures each, in t0.
    let digest = l.call("t0", "digest", json!({})).await.unwrap();
    assert_eq!(digest["users"], 250, "{digest}");
    for user in ["valid0", "valid123", "valid249"] {
        let s = l.status("t0", user).await;
        assert_eq!((s["failures"].as_u64(), s["locked"].as_bool()), (Some(4), Some(false)), "{user}: {s}");
    }
    for i in [0, 1, 2, 3] {
        assert_eq!(l.status("t0", &format!("user{i}")).await["failures"], 0, "an invalid event changed nothing");
    }
}
