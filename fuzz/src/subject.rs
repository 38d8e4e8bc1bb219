//! The string parsers in front of every body: event and service subjects, root prefixes,
//! tenant and user tokens, and `Content-Type`.
//!
//! The checks: no parser panics; an event subject is refused only with `bad_subject` or
//! `unknown_type`, and one that parses builds back to exactly the same subject (so a user has
//! one token and a subject one meaning); `event_tenant`, which names the dead-letter subject,
//! agrees with the parser; a token, prefix or media type that parses writes back to itself.

use lockout_proto::subject::Target;
use lockout_proto::{Encoding, RejectReason, Subjects, Tenant, UserId};

/// Root prefixes every input is parsed under: the default, one that is a strict prefix of it,
/// and one with every kind of character a prefix may have.
const PREFIXES: [&str; 3] = ["lockout", "l", "Lock-out_2"];

/// Checks one fuzz input as a subject, a prefix, tokens and a `Content-Type` value.
pub fn check(data: &[u8]) {
    // NATS subjects reach the service as `String`s.
    let Ok(s) = std::str::from_utf8(data) else { return };
    for prefix in PREFIXES {
        let subjects = Subjects::new(prefix).expect("valid prefix");
        check_event_subject(&subjects, s);
        check_svc_subject(&subjects, s);
    }
    check_prefix(s);
    for token in s.split('.') {
        check_token(token);
    }
    check_content_type(s);
}

fn check_event_subject(subjects: &Subjects, s: &str) {
    let tenant = subjects.event_tenant(s);
    match subjects.parse_event(s) {
        Ok(p) => {
            assert_eq!(p.kind.is_tenant_event(), p.target == Target::Tenant, "{s:?} parsed to {p:?}");
            let rebuilt = match &p.target {
                Target::User(user) => subjects.user_event(&p.tenant, user, p.kind),
                Target::Tenant => subjects.tenant_event(&p.tenant, p.kind),
            };
            assert_eq!(rebuilt, s, "a parsed subject must build back to itself");
            assert_eq!(tenant.as_ref(), Some(&p.tenant), "event_tenant disagrees with parse_event on {s:?}");
        }
        Err(r) => {
            assert!(
                matches!(r.reason, RejectReason::BadSubject | RejectReason::UnknownType),
                "{s:?} refused with {:?}: {}",
                r.reason,
                r.message
            );
            assert!(!r.message.is_empty());
            if r.reason == RejectReason::UnknownType {
                // The type is looked at only after the tenant (and user) token parsed.
                assert!(tenant.is_some(), "{s:?} has an unknown type but no valid tenant");
            }
        }
    }
}

fn check_svc_subject(subjects: &Subjects, s: &str) {
    match subjects.parse_svc(s) {
        Ok((tenant, op)) => assert_eq!(subjects.svc(&tenant, op), s, "a service subject must build back to itself"),
        Err(r) => assert_eq!(r.reason, RejectReason::BadSubject, "{s:?}: {}", r.message),
    }
}

fn check_prefix(s: &str) {
    let Ok(subjects) = Subjects::new(s) else { return };
    assert_eq!(subjects.prefix(), s);
    for stream in [subjects.events_stream(), subjects.notices_stream(), subjects.dead_stream()] {
        // Stream names may not contain subject characters.
        assert!(!stream.contains(['.', '*', '>', ' ']), "stream {stream:?}");
    }
    // Every subject built under a valid prefix parses back.
    let tenant = Tenant::parse("acme").expect("valid tenant");
    let user = UserId::parse("alice@acme.com").expect("valid user");
    for kind in lockout_proto::EventKind::all() {
        let built = if kind.is_tenant_event() {
            subjects.tenant_event(&tenant, kind)
        } else {
            subjects.user_event(&tenant, &user, kind)
        };
        assert_eq!(subjects.parse_event(&built).map(|p| p.kind), Ok(kind), "{built:?}");
    }
}

fn check_token(token: &str) {
    if let Ok(user) = UserId::from_token(token) {
        assert_eq!(user.token(), token, "a user has exactly one token");
        assert_eq!(UserId::parse(user.as_str()).as_ref(), Ok(&user));
    }
    if let Ok(user) = UserId::parse(token) {
        assert_eq!(UserId::from_token(&user.token()).as_ref(), Ok(&user));
    }
    if let Ok(tenant) = Tenant::parse(token) {
        assert_eq!(tenant.as_str(), token);
    }
}

fn check_content_type(s: &str) {
    match Encoding::from_content_type(Some(s)) {
        Ok(enc) => assert_eq!(Encoding::from_content_type(Some(enc.content_type())), Ok(enc)),
        Err(r) => assert_eq!(r.reason, RejectReason::Encoding, "{s:?}: {}", r.message),
    }
}
