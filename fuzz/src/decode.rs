//! The decoders of every wire message, through the entry points the service uses.
//!
//! A fuzz input is one selector byte, an index into `messages.txt` (the golden vector names,
//! also read by `seed_corpus.py`), then the body. For every message the checks are:
//! - decoding never panics, and a refusal is a `Rejection` with a message and the reason the
//!   entry point documents (`out_of_range` exactly when the payload is over the limit);
//! - a decoded value encodes in both encodings without a panic, and each encoding decodes
//!   back to the same value (through the entry point while it fits the payload limit, through
//!   plain serde beyond it);
//! - an event body whose tenant and user are valid decodes under the subject built from them
//!   unless a field is out of range or the IP is bad, is refused with `mismatch` under another
//!   tenant's subject, and a checked event folds without a panic.

use std::fmt::Debug;
use std::sync::OnceLock;

use lockout_core::{fold, UserState};
use lockout_proto::codec::{decode, encode, MAX_PAYLOAD};
use lockout_proto::command::{
    decode_request, DigestReply, DigestRequest, ExplainReply, ExplainRequest, HealthReply, HealthRequest,
    IpBlocksReply, IpBlocksRequest, IpStatusReply, IpStatusRequest, IpUnblockRequest, LockRequest, LockedReply, LockedRequest, MfaResetRequest,
    PasswordResetRequest, PolicyGetRequest, PolicySetRequest, StatusRequest, UnlockManyReply, UnlockManyRequest,
    UnlockRequest,
};
use lockout_proto::event::{
    Attempt, Event, EventKind, Expired, Forget, IpBlock, IpExpired, IpUnblock, Lock, MfaReset, PasswordReset,
    PolicyChange, Unlock,
};
use lockout_proto::notice::{
    IpBlockedNotice, IpUnblockedNotice, LockedNotice, MfaResetNotice, Notice, Source, UnlockedNotice,
};
use lockout_proto::subject::{EventSubject, Target};
use lockout_proto::{Encoding, Policy, RejectReason, Rejection, Status, Subjects, Tenant, UserId, WriteReply};
use serde::de::DeserializeOwned;
use serde::Serialize;

/// The message names in selector order, one a line.
pub const MESSAGES: &str = include_str!("../messages.txt");

const TENANT: &str = "acme";
/// The encodings that carry every field (the v1 postcard layout leaves contract v2's out, so a
/// value with them does not round-trip through it).
const ENCODINGS: [Encoding; 2] = [Encoding::Json, Encoding::PostcardV2];

/// The lines of `messages.txt`.
pub fn message_names() -> &'static [&'static str] {
    static NAMES: OnceLock<Vec<&'static str>> = OnceLock::new();
    NAMES.get_or_init(|| MESSAGES.lines().map(str::trim).filter(|l| !l.is_empty()).collect())
}

/// Checks one fuzz input: a selector byte, then a body in `enc`.
pub fn check_input(enc: Encoding, data: &[u8]) {
    let Some((&selector, body)) = data.split_first() else { return };
    let names = message_names();
    check_message(names[usize::from(selector) % names.len()], enc, body);
}

/// Checks `body` as the message `name` (a line of `messages.txt`) in `enc`.
pub fn check_message(name: &str, enc: Encoding, body: &[u8]) {
    match name {
        "event.attempt" => check_event(EventKind::Attempt, enc, body),
        "event.unlock" => check_event(EventKind::Unlock, enc, body),
        "event.lock" => check_event(EventKind::Lock, enc, body),
        "event.mfa_reset" => check_event(EventKind::MfaReset, enc, body),
        "event.expired" => check_event(EventKind::Expired, enc, body),
        "event.policy" => check_event(EventKind::Policy, enc, body),
        "event.forget" => check_event(EventKind::Forget, enc, body),
        "event.password_reset" => check_event(EventKind::PasswordReset, enc, body),
        "event.ip_block" => check_event(EventKind::IpBlock, enc, body),
        "event.ip_unblock" => check_event(EventKind::IpUnblock, enc, body),
        "event.ip_expired" => check_event(EventKind::IpExpired, enc, body),
        "notice.ip_blocked" => check_notice("ip_blocked", enc, body),
        "notice.ip_unblocked" => check_notice("ip_unblocked", enc, body),
        "request.ip_status" => drop(check_request::<IpStatusRequest>(enc, body)),
        "request.ip_unblock" => drop(check_request::<IpUnblockRequest>(enc, body)),
        "request.unlock_many" => drop(check_request::<UnlockManyRequest>(enc, body)),
        "reply.ip_status" | "reply.ip_unblock" => drop(check_plain::<IpStatusReply>(enc, body)),
        "reply.unlock_many" => drop(check_plain::<UnlockManyReply>(enc, body)),
        "request.ip_blocks" => {
            if let Some(r) = check_request::<IpBlocksRequest>(enc, body) {
                if let Err(e) = r.page_size() {
                    expect_reason(&e, &[RejectReason::OutOfRange]);
                }
            }
        }
        "reply.ip_blocks" => drop(check_plain::<IpBlocksReply>(enc, body)),
        "policy" | "reply.policy_get" | "reply.policy_set" => {
            if let Some(p) = check_plain::<Policy>(enc, body) {
                // Validation is a refusal, never a panic.
                if let Err(r) = p.validate() {
                    expect_reason(&r, &[RejectReason::OutOfRange]);
                }
            }
        }
        "source" => drop(check_plain::<Source>(enc, body)),
        "status" | "reply.status" => drop(check_plain::<Status>(enc, body)),
        "write_reply" | "reply.unlock" | "reply.lock" | "reply.mfa_reset" | "reply.password_reset" => {
            drop(check_plain::<WriteReply>(enc, body))
        }
        "reply.locked" => drop(check_plain::<LockedReply>(enc, body)),
        "reply.digest" => drop(check_plain::<DigestReply>(enc, body)),
        "reply.health" => drop(check_plain::<HealthReply>(enc, body)),
        "notice.locked" => check_notice("locked", enc, body),
        "notice.unlocked" => check_notice("unlocked", enc, body),
        "notice.mfa_reset" => check_notice("mfa_reset", enc, body),
        "request.status" => drop(check_request::<StatusRequest>(enc, body)),
        "request.locked" => {
            if let Some(r) = check_request::<LockedRequest>(enc, body) {
                if let Err(e) = r.page_size() {
                    expect_reason(&e, &[RejectReason::OutOfRange]);
                }
            }
        }
        "request.unlock" => drop(check_request::<UnlockRequest>(enc, body)),
        "request.lock" => drop(check_request::<LockRequest>(enc, body)),
        "request.mfa_reset" => drop(check_request::<MfaResetRequest>(enc, body)),
        "request.policy_get" => drop(check_request::<PolicyGetRequest>(enc, body)),
        "request.policy_set" => {
            if let Some(r) = check_request::<PolicySetRequest>(enc, body) {
                if let Err(e) = r.policy.validate() {
                    expect_reason(&e, &[RejectReason::OutOfRange]);
                }
            }
        }
        "request.digest" => drop(check_request::<DigestRequest>(enc, body)),
        "request.password_reset" => drop(check_request::<PasswordResetRequest>(enc, body)),
        "request.explain" => drop(check_request::<ExplainRequest>(enc, body)),
        "reply.explain" => drop(check_plain::<ExplainReply>(enc, body)),
        "request.health" => drop(check_request::<HealthRequest>(enc, body)),
        other => panic!("messages.txt names {other:?}, which has no decoder in fuzz/src/decode.rs"),
    }
}

/// A refusal has one of the `allowed` reasons and a sentence.
fn expect_reason(r: &Rejection, allowed: &[RejectReason]) {
    assert!(allowed.contains(&r.reason), "unexpected reason {:?} (allowed {allowed:?}): {}", r.reason, r.message);
    assert!(!r.message.is_empty(), "a rejection without a message: {r:?}");
}

/// A refusal of the plain codec: `out_of_range` exactly when the payload is too large.
fn expect_codec_refusal(r: &Rejection, body: &[u8]) {
    if body.len() > MAX_PAYLOAD {
        expect_reason(r, &[RejectReason::OutOfRange]);
    } else {
        expect_reason(r, &[RejectReason::Undecodable]);
    }
}

/// Plain serde, without the payload limit: how a re-encoding beyond the limit is read back.
fn decode_unbounded<T: DeserializeOwned>(enc: Encoding, bytes: &[u8]) -> Result<T, String> {
    match enc {
        Encoding::Json => serde_json::from_slice(bytes).map_err(|e| e.to_string()),
        Encoding::Postcard | Encoding::PostcardV2 => {
            let layout = enc.layout().unwrap_or_default();
            lockout_proto::layout::with(layout, || postcard::from_bytes(bytes)).map_err(|e| e.to_string())
        }
    }
}

/// Encodes `value` in both encodings and reads each back with `read` (the entry point) while
/// it fits the payload limit, with `read_unbounded` beyond it; both must give `value`.
fn round_trip<T: PartialEq + Debug>(
    value: &T,
    write: impl Fn(Encoding) -> Vec<u8>,
    read: impl Fn(Encoding, &[u8]) -> Result<T, Rejection>,
    read_unbounded: impl Fn(Encoding, &[u8]) -> Result<T, String>,
) {
    for enc in ENCODINGS {
        let bytes = write(enc);
        if bytes.len() <= MAX_PAYLOAD {
            match read(enc, &bytes) {
                Ok(again) => assert_eq!(&again, value, "{} re-encoding decodes to another value", enc.name()),
                Err(r) => panic!("{} re-encoding of {value:?} is refused: {r:?}", enc.name()),
            }
        } else {
            let r = read(enc, &bytes).expect_err("an oversized payload must be refused");
            expect_reason(&r, &[RejectReason::OutOfRange]);
            match read_unbounded(enc, &bytes) {
                Ok(again) => assert_eq!(&again, value, "{} re-encoding decodes to another value", enc.name()),
                Err(e) => panic!("{} re-encoding of {value:?} does not decode: {e}", enc.name()),
            }
        }
    }
}

/// A message read with the plain codec (`codec::decode`), as replies and policies are.
fn check_plain<T>(enc: Encoding, body: &[u8]) -> Option<T>
where
    T: Serialize + DeserializeOwned + PartialEq + Debug,
{
    match decode::<T>(enc, body, "the body") {
        Ok(value) => {
            round_trip(&value, |e| encode(e, &value), |e, b| decode::<T>(e, b, "the body"), decode_unbounded::<T>);
            Some(value)
        }
        Err(r) => {
            expect_codec_refusal(&r, body);
            None
        }
    }
}

/// A service request, read as the service does (`decode_request` for tenant `acme`).
fn check_request<T>(enc: Encoding, body: &[u8]) -> Option<T>
where
    T: Serialize + DeserializeOwned + PartialEq + Debug,
{
    let acme = Tenant::parse(TENANT).expect("valid tenant");
    match decode_request::<T>(enc, body, &acme) {
        Ok(value) => {
            round_trip(&value, |e| encode(e, &value), |e, b| decode_request::<T>(e, b, &acme), decode_unbounded::<T>);
            Some(value)
        }
        Err(r) => {
            let mut allowed = vec![RejectReason::Undecodable, RejectReason::OutOfRange];
            if enc == Encoding::Json {
                allowed.push(RejectReason::Mismatch);
            }
            expect_reason(&r, &allowed);
            assert_eq!(r.reason == RejectReason::OutOfRange, body.len() > MAX_PAYLOAD, "{r:?}");
            None
        }
    }
}

/// A notice, read as notifiers and `lockoutctl tail` do (`Notice::decode`).
fn check_notice(kind: &str, enc: Encoding, body: &[u8]) {
    match Notice::decode(kind, enc, body) {
        Ok(notice) => {
            assert_eq!(notice.kind(), kind);
            round_trip(
                &notice,
                |e| notice.encode(e),
                |e, b| Notice::decode(kind, e, b),
                |e, b| notice_unbounded(kind, e, b),
            );
        }
        Err(r) => expect_codec_refusal(&r, body),
    }
}

fn notice_unbounded(kind: &str, enc: Encoding, bytes: &[u8]) -> Result<Notice, String> {
    Ok(match kind {
        "locked" => Notice::Locked(decode_unbounded::<LockedNotice>(enc, bytes)?),
        "unlocked" => Notice::Unlocked(decode_unbounded::<UnlockedNotice>(enc, bytes)?),
        "ip_blocked" => Notice::IpBlocked(decode_unbounded::<IpBlockedNotice>(enc, bytes)?),
        "ip_unblocked" => Notice::IpUnblocked(decode_unbounded::<IpUnblockedNotice>(enc, bytes)?),
        _ => Notice::MfaReset(decode_unbounded::<MfaResetNotice>(enc, bytes)?),
    })
}

fn event_unbounded(kind: EventKind, enc: Encoding, bytes: &[u8]) -> Result<Event, String> {
    Ok(match kind {
        EventKind::Attempt => Event::Attempt(decode_unbounded::<Attempt>(enc, bytes)?),
        EventKind::Unlock => Event::Unlock(decode_unbounded::<Unlock>(enc, bytes)?),
        EventKind::Lock => Event::Lock(decode_unbounded::<Lock>(enc, bytes)?),
        EventKind::MfaReset => Event::MfaReset(decode_unbounded::<MfaReset>(enc, bytes)?),
        EventKind::Expired => Event::Expired(decode_unbounded::<Expired>(enc, bytes)?),
        EventKind::Policy => Event::Policy(decode_unbounded::<PolicyChange>(enc, bytes)?),
        EventKind::Forget => Event::Forget(decode_unbounded::<Forget>(enc, bytes)?),
        EventKind::PasswordReset => Event::PasswordReset(decode_unbounded::<PasswordReset>(enc, bytes)?),
        EventKind::IpBlock => Event::IpBlock(decode_unbounded::<IpBlock>(enc, bytes)?),
        EventKind::IpUnblock => Event::IpUnblock(decode_unbounded::<IpUnblock>(enc, bytes)?),
        EventKind::IpExpired => Event::IpExpired(decode_unbounded::<IpExpired>(enc, bytes)?),
    })
}

/// The subject of an event of `kind` for `tenant` and (user events) `user`.
fn subject_of(kind: EventKind, tenant: &Tenant, user: &UserId) -> String {
    let subjects = Subjects::default();
    if kind.is_tenant_event() {
        subjects.tenant_event(tenant, kind)
    } else {
        subjects.user_event(tenant, user, kind)
    }
}

/// An event body, read as the projector does: `Event::decode_checked` under a subject.
fn check_event(kind: EventKind, enc: Encoding, body: &[u8]) {
    let subjects = Subjects::default();
    let acme = Tenant::parse(TENANT).expect("valid tenant");
    let alice = UserId::parse("alice@acme.com").expect("valid user");
    let fixed = subjects.parse_event(&subject_of(kind, &acme, &alice)).expect("built subjects parse");

    let event = match Event::decode(kind, enc, body) {
        Ok(event) => event,
        Err(r) => {
            expect_codec_refusal(&r, body);
            // The checked entry point refuses it the same way, whatever the subject.
            assert_eq!(Event::decode_checked(&fixed, enc, body), Err(r));
            return;
        }
    };
    assert_eq!(event.kind(), kind);
    assert_eq!(event.user().is_none(), kind.is_tenant_event());
    round_trip(&event, |e| event.encode(e), |e, b| Event::decode(kind, e, b), |e, b| event_unbounded(kind, e, b));

    // The subject the body's own tenant and user give, when they are valid.
    let tenant = Tenant::parse(event.tenant());
    let user = event.user().map_or(Ok(alice.clone()), UserId::parse);
    let (Ok(tenant), Ok(user)) = (tenant, user) else {
        // An invalid tenant never equals a valid subject tenant; an invalid user is refused.
        let r = Event::decode_checked(&fixed, enc, body).expect_err("an invalid tenant or user must be refused");
        expect_reason(&r, &[RejectReason::Mismatch, RejectReason::OutOfRange]);
        return;
    };
    let own = subjects.parse_event(&subject_of(kind, &tenant, &user)).expect("built subjects parse");
    assert_eq!((&own.tenant, own.kind), (&tenant, kind));
    match Event::decode_checked(&own, enc, body) {
        Ok(checked) => {
            assert_eq!(checked, event);
            round_trip(
                &checked,
                |e| checked.encode(e),
                |e, b| Event::decode_checked(&own, e, b),
                |e, b| event_unbounded(kind, e, b),
            );
            fold_checked(&checked);
        }
        Err(r) => expect_reason(&r, &[RejectReason::OutOfRange, RejectReason::BadIp]),
    }

    // Under another tenant's subject it is a mismatch, before any range check.
    let other = Tenant::parse(if tenant.as_str() == "zz" { "yy" } else { "zz" }).expect("valid tenant");
    let elsewhere = EventSubject { tenant: other, target: own.target.clone(), kind };
    let r = Event::decode_checked(&elsewhere, enc, body).expect_err("another tenant's subject must be refused");
    expect_reason(&r, &[RejectReason::Mismatch]);
    if let Target::User(_) = own.target {
        let bob = UserId::parse(if user.as_str() == "bob" { "carol" } else { "bob" }).expect("valid user");
        let elsewhere = EventSubject { tenant: own.tenant.clone(), target: Target::User(bob), kind };
        let r = Event::decode_checked(&elsewhere, enc, body).expect_err("another user's subject must be refused");
        expect_reason(&r, &[RejectReason::Mismatch]);
    }
}

/// "A checked event is safe to fold": fold it into a new state, then again into the result,
/// at its own `at` and at the latest time the stored clock can show.
fn fold_checked(event: &Event) {
    let policy = Policy::default();
    for now in [event.at(), crate::fold::MAX_TIME] {
        let once = fold(&policy, UserState::default(), event, now);
        let twice = fold(&policy, once.state.clone(), event, now);
        for n in once.notices.iter().chain(&twice.notices) {
            round_trip(
                n,
                |e| n.encode(e),
                |e, b| Notice::decode(n.kind(), e, b),
                |e, b| notice_unbounded(n.kind(), e, b),
            );
        }
        let bytes = postcard::to_allocvec(&twice.state).expect("states encode");
        assert_eq!(postcard::from_bytes::<UserState>(&bytes).expect("states decode"), twice.state.clone().without_trips());
        // A tenant's IP event folds into its IP's block and count without a panic, and its
        // notices round-trip.
        let (mut block, mut count) = (None, lockout_core::ip::IpCount::default());
        for _ in 0..2 {
            for n in lockout_core::ip::fold_ip_event(&mut block, &mut count, event, now) {
                round_trip(
                    &n,
                    |e| n.encode(e),
                    |e, b| Notice::decode(n.kind(), e, b),
                    |e, b| notice_unbounded(n.kind(), e, b),
                );
            }
        }
    }
}
