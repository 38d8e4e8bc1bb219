//! Distinct invalid events, each refused for a known dead-letter reason: the bad input of
//! the fault suite and of the benchmark's mixed stream.

use async_nats::HeaderMap;
use lockout_proto::codec::{self, Encoding};
use lockout_proto::event::{Attempt, Factor, Outcome};
use lockout_proto::UserId;
use uuid::Uuid;

/// An event lockoutd must refuse, with where its dead letter goes.
#[derive(Debug, Clone)]
pub struct InvalidEvent {
    pub subject: String,
    pub headers: HeaderMap,
    pub payload: Vec<u8>,
    /// The tenant token of its dead-letter subject.
    pub dead_tenant: String,
    /// Its dead-letter reason.
    pub reason: &'static str,
}

/// The reasons, in the order [`invalid_event`] cycles through them.
pub const REASONS: [&str; 7] =
    ["undecodable", "unknown_type", "mismatch", "out_of_range", "bad_ip", "bad_subject", "encoding"];

fn json_headers(content_type: &str) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(codec::CONTENT_TYPE, content_type);
    h
}

/// The `i`-th invalid event under `prefix`: reasons in turn ([`REASONS`]), every one with
/// bytes of its own (tenant `t0`…`t9`, user `user<i>`).
pub fn invalid_event(prefix: &str, i: usize) -> InvalidEvent {
    let tenant = format!("t{}", i % 10);
    let user = format!("user{i}");
    let token = UserId::parse(&user).expect("a valid user id").token();
    let mut a = Attempt {
        id: Uuid::from_u128(i as u128 + 1),
        at: i as u64,
        tenant: tenant.as_str().into(),
        user: user.as_str().into(),
        outcome: Outcome::Failure,
        factor: Factor::Password,
        source_ip: "192.0.2.1".into(),
        client: None,
        credential: None,
        account: None,
        is_final: true,
    };
    let subject = |token: &str, kind: &str| format!("{prefix}.events.{tenant}.u.{token}.{kind}");
    let reason = REASONS[i % REASONS.len()];
    let (subject, headers, payload) = match reason {
        // Too short for an attempt's 16-byte id: postcard runs out of input.
        "undecodable" => {
            let mut p = (i as u64).to_le_bytes().to_vec();
            p.push(0xff);
            (subject(&token, "attempt"), HeaderMap::new(), p)
        }
        "unknown_type" => (subject(&token, "teleport"), json_headers(codec::JSON), codec::encode(Encoding::Json, &a)),
        "mismatch" => {
            a.user = format!("other{i}").into();
            (subject(&token, "attempt"), json_headers(codec::JSON), codec::encode(Encoding::Json, &a))
        }
        "out_of_range" => {
            a.client = Some("x".repeat(201 + i % 50).into());
            (subject(&token, "attempt"), json_headers(codec::JSON), codec::encode(Encoding::Json, &a))
        }
        "bad_ip" => {
            a.source_ip = format!("300.0.{}.{}", (i / 256) % 256, i % 256).into();
            (subject(&token, "attempt"), HeaderMap::new(), codec::encode(Encoding::Postcard, &a))
        }
        // `=` is not base64url: the user token does not decode.
        "bad_subject" => {
            (subject(&format!("{token}="), "attempt"), HeaderMap::new(), codec::encode(Encoding::Postcard, &a))
        }
        _ => (
            subject(&token, "attempt"),
            json_headers(&format!("text/x-lockout-{i}")),
            codec::encode(Encoding::Json, &a),
        ),
    };
    InvalidEvent { subject, headers, payload, dead_tenant: tenant, reason }
}
