//! Subjects and stream names for a root prefix.
//!
//! Events: `<p>.events.<tenant>.u.<utok>.<type>` and `<p>.events.<tenant>.t.<type>`;
//! notices: `<p>.notices.<tenant>.<kind>`; dead letters: `<p>.dead.<tenant or _>.<reason>`;
//! service: `<p>.svc.<tenant>.<op>`. Streams: `<P>_EVENTS`, `<P>_NOTICES`, `<P>_DEAD`.

use crate::error::{RejectReason, Rejection};
use crate::event::EventKind;
use crate::ids::{is_token, Tenant, UserId};

/// Longest root prefix, in characters.
pub const PREFIX_MAX: usize = 32;

/// Builds and parses every subject for one root prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subjects {
    prefix: String,
}

/// Whom an event is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    User(UserId),
    Tenant,
}

/// A parsed event subject.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventSubject {
    pub tenant: Tenant,
    pub target: Target,
    pub kind: EventKind,
}

impl Default for Subjects {
    fn default() -> Self {
        Subjects { prefix: "lockout".into() }
    }
}

impl Subjects {
    /// A prefix is one subject token of `[A-Za-z0-9_-]`, so it also makes valid stream names.
    pub fn new(prefix: &str) -> Result<Subjects, String> {
        if is_token(prefix, PREFIX_MAX) {
            Ok(Subjects { prefix: prefix.to_owned() })
        } else {
            Err(format!(
                "prefix {prefix:?} is invalid: use 1 to {PREFIX_MAX} characters of A-Z, a-z, 0-9, '_' and '-' (it becomes a subject token and part of stream names)"
            ))
        }
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    fn stream(&self, suffix: &str) -> String {
        format!("{}_{suffix}", self.prefix.to_uppercase())
    }

    pub fn events_stream(&self) -> String {
        self.stream("EVENTS")
    }
    pub fn notices_stream(&self) -> String {
        self.stream("NOTICES")
    }
    pub fn dead_stream(&self) -> String {
        self.stream("DEAD")
    }

    /// `<p>.events.>`
    pub fn events_all(&self) -> String {
        format!("{}.events.>", self.prefix)
    }
    /// `<p>.notices.>`
    pub fn notices_all(&self) -> String {
        format!("{}.notices.>", self.prefix)
    }
    /// `<p>.dead.>`
    pub fn dead_all(&self) -> String {
        format!("{}.dead.>", self.prefix)
    }

    /// `<p>.events.<tenant>.u.<utok>.<type>`
    pub fn user_event(&self, tenant: &Tenant, user: &UserId, kind: EventKind) -> String {
        format!("{}.events.{}.u.{}.{}", self.prefix, tenant, user.token(), kind.as_str())
    }

    /// `<p>.events.<tenant>.u.<utok>.*`: every event of one user.
    pub fn user_events_filter(&self, tenant: &Tenant, user: &UserId) -> String {
        format!("{}.events.{}.u.{}.*", self.prefix, tenant, user.token())
    }

    /// `<p>.events.<tenant>.t.<type>`
    pub fn tenant_event(&self, tenant: &Tenant, kind: EventKind) -> String {
        format!("{}.events.{}.t.{}", self.prefix, tenant, kind.as_str())
    }

    /// `<p>.notices.<tenant>.<kind>`
    pub fn notice(&self, tenant: &str, kind: &str) -> String {
        format!("{}.notices.{}.{}", self.prefix, tenant, kind)
    }

    /// `<p>.dead.<tenant or _>.<reason>`
    pub fn dead(&self, tenant: Option<&Tenant>, reason: RejectReason) -> String {
        let tenant = tenant.map_or("_", Tenant::as_str);
        format!("{}.dead.{}.{}", self.prefix, tenant, reason.as_str())
    }

    /// `<p>.svc.<tenant>.<op>`
    pub fn svc(&self, tenant: &Tenant, op: &str) -> String {
        format!("{}.svc.{}.{}", self.prefix, tenant, op)
    }

    /// The tenant of an event subject when its tenant token is valid (for dead-letter subjects).
    pub fn event_tenant(&self, subject: &str) -> Option<Tenant> {
        let rest = subject.strip_prefix(&self.prefix)?.strip_prefix(".events.")?;
        Tenant::parse(rest.split('.').next()?).ok()
    }

    /// The tenant and user tokens of a subject of a user event's shape
    /// (`<p>.events.<tenant>.u.<utok>.<type>`), valid or not: what decides the partition of a
    /// message, even one refused, before it is decoded.
    pub fn user_tokens<'a>(&self, subject: &'a str) -> Option<(&'a str, &'a str)> {
        let rest = subject.strip_prefix(&self.prefix)?.strip_prefix(".events.")?;
        match split_dots::<4>(rest) {
            Some(([tenant, "u", utok, _], 4)) => Some((tenant, utok)),
            _ => None,
        }
    }

    /// Parses an event subject, refusing malformed ones (`bad_subject`) and unknown types
    /// (`unknown_type`).
    pub fn parse_event(&self, subject: &str) -> Result<EventSubject, Rejection> {
        let bad = |why: &str| {
            Rejection::new(
                RejectReason::BadSubject,
                format!(
                    "subject {subject:?} {why}; events go to {p}.events.<tenant>.u.<user token>.<type> or {p}.events.<tenant>.t.<type>",
                    p = self.prefix
                ),
            )
        };
        let rest = subject
            .strip_prefix(&self.prefix)
            .and_then(|r| r.strip_prefix(".events."))
            .ok_or_else(|| bad("is not under the events root"))?;
        let (tenant, target, kind) = match split_dots::<4>(rest) {
            Some(([tenant, "u", utok, kind], 4)) => (tenant, Some(utok), kind),
            Some(([tenant, "t", kind, _], 3)) => (tenant, None, kind),
            _ => return Err(bad("does not have the shape of an event subject")),
        };
        let tenant = Tenant::parse(tenant)?;
        let target = match target {
            Some(utok) => Target::User(UserId::from_token(utok)?),
            None => Target::Tenant,
        };
        let kind =
            EventKind::parse(kind).filter(|k| k.is_tenant_event() == (target == Target::Tenant)).ok_or_else(|| {
                let known: Vec<&str> = EventKind::all()
                    .filter(|k| k.is_tenant_event() == (target == Target::Tenant))
                    .map(|k| k.as_str())
                    .collect();
                Rejection::new(
                    RejectReason::UnknownType,
                    format!(
                        "event type {kind:?} in subject {subject:?} is unknown here; {} events are: {}",
                        if target == Target::Tenant { "tenant" } else { "user" },
                        known.join(", ")
                    ),
                )
            })?;
        Ok(EventSubject { tenant, target, kind })
    }

    /// Parses `<p>.svc.<tenant>.<op>` into the tenant and op.
    pub fn parse_svc<'a>(&self, subject: &'a str) -> Result<(Tenant, &'a str), Rejection> {
        let rest = subject.strip_prefix(&self.prefix).and_then(|r| r.strip_prefix(".svc.")).ok_or_else(|| {
            Rejection::new(RejectReason::BadSubject, format!("subject {subject:?} is not a service subject"))
        })?;
        let (tenant, op) = rest
            .split_once('.')
            .ok_or_else(|| Rejection::new(RejectReason::BadSubject, format!("subject {subject:?} lacks an op")))?;
        Ok((Tenant::parse(tenant)?, op))
    }
}

/// The tokens of `s` between its dots, at most `N` of them (the rest of the array empty) and
/// how many there are; `None` when there are more. A plain byte scan: `str::split` took about
/// 600 instructions per event subject (callgrind), 40% of parsing it.
fn split_dots<const N: usize>(s: &str) -> Option<([&str; N], usize)> {
    let mut tokens = [""; N];
    let (mut n, mut rest) = (0, s);
    loop {
        let end = rest.bytes().position(|b| b == b'.');
        *tokens.get_mut(n)? = &rest[..end.unwrap_or(rest.len())];
        n += 1;
        match end {
            Some(dot) => rest = &rest[dot + 1..],
            None => return Some((tokens, n)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s() -> Subjects {
        Subjects::default()
    }

    #[test]
    fn stream_names_and_roots() {
        let s = Subjects::new("acme-lock").unwrap();
        assert_eq!(s.events_stream(), "ACME-LOCK_EVENTS");
        assert_eq!(s.notices_all(), "acme-lock.notices.>");
        assert!(Subjects::new("a.b").is_err());
        assert!(Subjects::new("").is_err());
    }

    #[test]
    fn parse_user_and_tenant_events() {
        let p = s().parse_event("lockout.events.acme.u.YWxpY2VAYWNtZS5jb20.attempt").unwrap();
        assert_eq!(p.tenant.as_str(), "acme");
        assert_eq!(p.target, Target::User(UserId::parse("alice@acme.com").unwrap()));
        assert_eq!(p.kind, EventKind::Attempt);
        let t = s().parse_event("lockout.events.acme.t.policy").unwrap();
        assert_eq!(t.target, Target::Tenant);
        // Building and parsing agree.
        let u = UserId::parse("bob").unwrap();
        for k in EventKind::all().filter(|k| !k.is_tenant_event()) {
            let subj = s().user_event(&p.tenant, &u, k);
            assert_eq!(s().parse_event(&subj).unwrap().kind, k);
        }
    }

    #[test]
    fn subject_refusals() {
        let cases = [
            ("lockout.events.acme.u.YWxpY2U.frobnicate", RejectReason::UnknownType),
            ("lockout.events.acme.t.attempt", RejectReason::UnknownType),
            ("lockout.events.acme.u.YWxpY2U.policy", RejectReason::UnknownType),
            ("lockout.events.ac*me.u.YWxpY2U.attempt", RejectReason::BadSubject),
            ("lockout.events.acme.u.YQ==.attempt", RejectReason::BadSubject),
            ("lockout.events.acme.x.YWxpY2U.attempt", RejectReason::BadSubject),
            ("lockout.events.acme.u.attempt", RejectReason::BadSubject),
            ("other.events.acme.u.YWxpY2U.attempt", RejectReason::BadSubject),
        ];
        for (subj, reason) in cases {
            assert_eq!(s().parse_event(subj).unwrap_err().reason, reason, "{subj}");
        }
        assert_eq!(s().event_tenant("lockout.events.acme.u.YQ==.attempt").unwrap().as_str(), "acme");
        assert_eq!(s().event_tenant("lockout.events.a*b.t.policy"), None);
    }

    #[test]
    fn split_dots_agrees_with_str_split() {
        for s in ["", ".", "a", "a.b", "a..b", ".a.", "a.b.c.d", "a.b.c.d.e", "é.ü.x", "...."] {
            let want: Vec<&str> = s.split('.').collect();
            match split_dots::<4>(s) {
                Some((tokens, n)) => {
                    assert_eq!(&tokens[..n], &want[..], "{s:?}");
                    assert!(tokens[n..].iter().all(|t| t.is_empty()), "{s:?}");
                }
                None => assert!(want.len() > 4, "{s:?} has {} tokens", want.len()),
            }
        }
    }

    proptest::proptest! {
        #[test]
        fn split_dots_agrees_with_str_split_on_any_text(s in "[a.é]{0,12}") {
            let want: Vec<&str> = s.split('.').collect();
            match split_dots::<4>(&s) {
                Some((tokens, n)) => proptest::prop_assert_eq!(&tokens[..n], &want[..]),
                None => proptest::prop_assert!(want.len() > 4),
            }
        }
    }

    #[test]
    fn svc_subjects() {
        let (t, op) = s().parse_svc("lockout.svc.acme.status").unwrap();
        assert_eq!((t.as_str(), op), ("acme", "status"));
        assert_eq!(s().dead(None, RejectReason::BadIp), "lockout.dead._.bad_ip");
    }
}
