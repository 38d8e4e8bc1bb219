//! `unlock_many` (contract v2): which users one request unlocks after an attack.
//!
//! A user is selected when an automatic lock in force (the account's `failures` lock or a
//! scope lock) was tripped by an attempt from one of the request's IPs or CIDR blocks (any IP
//! when none are given) and started within [`since`, `until`]. A user with an admin lock in
//! force is never selected: the unlock would end it too. Selection reads the tenant's stored
//! states in user order; each selected user gets one `unlock` event naming the lock it
//! matched (`lock_event`, so a lock that changed meanwhile is left alone) with an id derived
//! from the request's id and the user, so a retried request unlocks no one twice.

use std::net::IpAddr;

use ipnet::IpNet;
use lockout_core::UserState;
use lockout_proto::command::{UnlockManyRequest, UNLOCK_MANY_MAX, UNLOCK_MANY_PAGE};
use lockout_proto::status::LockReason;
use lockout_proto::Millis;
use uuid::Uuid;

use crate::service::Fail;

/// What to select: parsed and checked from a request.
#[derive(Debug, Clone)]
pub struct Selector {
    /// `None`: every IP.
    nets: Option<Vec<IpNet>>,
    since: Millis,
    until: Millis,
}

impl Selector {
    /// Checks the request (a bad IP or CIDR, host bits set, `until` before `since` are 400s).
    pub fn new(r: &UnlockManyRequest, now: Millis) -> Result<Selector, Fail> {
        let until = r.until.unwrap_or(now);
        if until < r.since {
            return Err(Fail::new(
                400,
                format!(
                    "field `until` ({until}) is before `since` ({}); give a window that ends after it starts",
                    r.since
                ),
            ));
        }
        let nets = match &r.ips {
            None => None,
            Some(ips) => Some(ips.iter().map(|s| parse_net(s)).collect::<Result<Vec<_>, Fail>>()?),
        };
        Ok(Selector { nets, since: r.since, until })
    }

    /// The lock of `state` that selects its user at `now`, as its event id, if any.
    pub fn selects(&self, state: &UserState, now: Millis) -> Option<Uuid> {
        let in_force = |l: &lockout_core::LockState| l.locked_until.is_none_or(|u| u > now);
        if state.lock.as_ref().is_some_and(|l| l.reason == LockReason::Admin && in_force(l)) {
            return None;
        }
        state.lock_slots().flatten().find_map(|l| {
            let tripped = l.tripped_by.as_deref().and_then(|ip| ip.parse::<IpAddr>().ok())?;
            let matches = l.reason == LockReason::Failures
                && in_force(l)
                && (self.since..=self.until).contains(&l.locked_at)
                && self.nets.as_ref().is_none_or(|nets| nets.iter().any(|n| n.contains(&tripped)));
            matches.then_some(l.event_id)
        })
    }
}

/// An IP (a /32 or /128) or a CIDR block without host bits.
fn parse_net(s: &str) -> Result<IpNet, Fail> {
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Ok(IpNet::from(ip));
    }
    let net: IpNet = s.parse().map_err(|_| {
        Fail::new(400, format!("`ips` entry {s:?} is not an IP address or CIDR block; write e.g. 203.0.113.7, 203.0.113.0/24 or 2001:db8::/32"))
    })?;
    if net.trunc() != net {
        return Err(Fail::new(400, format!("`ips` entry {s:?} has host bits set; did you mean {}?", net.trunc())));
    }
    Ok(net)
}

/// The page size a request asks for.
pub fn page_size(r: &UnlockManyRequest) -> Result<usize, Fail> {
    match r.limit {
        None => Ok(UNLOCK_MANY_PAGE as usize),
        Some(n) if (1..=UNLOCK_MANY_PAGE).contains(&n) => Ok(n as usize),
        Some(n) => Err(Fail::new(400, format!("field `limit` {n} is out of range: use 1 to {UNLOCK_MANY_PAGE}"))),
    }
}

/// More users selected than one request may unlock.
pub fn too_many(selected: usize) -> Fail {
    Fail::new(
        400,
        format!(
            "the request selects more than {UNLOCK_MANY_MAX} users ({selected} so far); narrow it with `since`, `until` or `ips`"
        ),
    )
}

/// The id of the `unlock` event for `user` of `tenant` within the `unlock_many` request
/// `request` (its `Nats-Msg-Id`, or a new id): UUID v5 in the notice namespace of the request
/// id's 16 bytes, the tenant, `0x00`, the user, `unlock-many/v1`.
pub fn unlock_event_id(request: Uuid, tenant: &str, user: &str) -> Uuid {
    let mut name = Vec::with_capacity(16 + tenant.len() + user.len() + 16);
    name.extend_from_slice(request.as_bytes());
    name.extend_from_slice(tenant.as_bytes());
    name.push(0);
    name.extend_from_slice(user.as_bytes());
    name.extend_from_slice(b"unlock-many/v1");
    Uuid::new_v5(&lockout_core::ids::NOTICE_NAMESPACE, &name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use lockout_core::LockState;

    fn req(ips: Option<&[&str]>, since: Millis, until: Option<Millis>) -> UnlockManyRequest {
        UnlockManyRequest {
            actor: "sec".into(),
            reason: None,
            since,
            until,
            ips: ips.map(|v| v.iter().map(|s| (*s).into()).collect()),
            dry_run: false,
            limit: None,
            after: None,
        }
    }

    fn lock(
        reason: LockReason,
        at: Millis,
        until: Option<Millis>,
        ip: Option<&str>,
        id: u128,
    ) -> Option<Box<LockState>> {
        Some(Box::new(LockState {
            reason,
            locked_at: at,
            locked_until: until,
            event_id: Uuid::from_u128(id),
            blocked: 0,
            blocked_sources: vec![],
            tripped_by: ip.map(Into::into),
        }))
    }

    #[test]
    fn bad_ips_and_windows_are_400_with_the_fix() {
        for (ips, want) in [
            (vec!["203.0.113.0/33"], "not an IP address or CIDR block"),
            (vec!["nope"], "not an IP address or CIDR block"),
            (vec!["203.0.113.7/24"], "host bits set; did you mean 203.0.113.0/24?"),
        ] {
            let e = Selector::new(&req(Some(&ips), 0, None), 10).unwrap_err();
            assert_eq!(e.code, 400);
            assert!(e.message.contains(want), "{}", e.message);
        }
        let e = Selector::new(&req(None, 10, Some(5)), 10).unwrap_err();
        assert!(e.message.contains("before `since`"), "{}", e.message);
    }

    #[test]
    fn selects_automatic_locks_in_force_by_tripping_ip_and_time() {
        let sel = Selector::new(&req(Some(&["203.0.113.0/24", "2001:db8::1"]), 100, Some(200)), 1000).unwrap();
        let account = |at, ip| UserState { lock: lock(LockReason::Failures, at, None, ip, 1), ..UserState::default() };
        assert_eq!(sel.selects(&account(150, Some("203.0.113.9")), 1000), Some(Uuid::from_u128(1)));
        assert_eq!(sel.selects(&account(100, Some("2001:db8::1")), 1000), Some(Uuid::from_u128(1)), "inclusive");
        assert_eq!(sel.selects(&account(200, Some("203.0.113.9")), 1000), Some(Uuid::from_u128(1)), "inclusive");
        assert_eq!(sel.selects(&account(201, Some("203.0.113.9")), 1000), None, "after the window");
        assert_eq!(sel.selects(&account(150, Some("198.51.100.1")), 1000), None, "another IP");
        assert_eq!(sel.selects(&account(150, None), 1000), None, "tripping IP unknown");
        let ended = UserState {
            lock: lock(LockReason::Failures, 150, Some(900), Some("203.0.113.9"), 1),
            ..UserState::default()
        };
        assert_eq!(sel.selects(&ended, 1000), None, "a lock that ran out");
        let mut scoped = UserState::default();
        scoped.unfamiliar.lock = lock(LockReason::Failures, 150, Some(5000), Some("203.0.113.9"), 2);
        assert_eq!(sel.selects(&scoped, 1000), Some(Uuid::from_u128(2)), "a scope lock");
        let mut admin = scoped.clone();
        admin.lock = lock(LockReason::Admin, 150, None, None, 3);
        assert_eq!(sel.selects(&admin, 1000), None, "an admin lock is never touched");
        let every_ip = Selector::new(&req(None, 0, None), 1000).unwrap();
        assert_eq!(every_ip.selects(&account(150, Some("198.51.100.1")), 1000), Some(Uuid::from_u128(1)));
    }

    #[test]
    fn event_ids_differ_by_request_and_user() {
        let (a, b) = (Uuid::from_u128(1), Uuid::from_u128(2));
        assert_eq!(unlock_event_id(a, "acme", "alice"), unlock_event_id(a, "acme", "alice"));
        assert_ne!(unlock_event_id(a, "acme", "alice"), unlock_event_id(b, "acme", "alice"));
        assert_ne!(unlock_event_id(a, "acme", "alice"), unlock_event_id(a, "acme", "bob"));
        assert_ne!(unlock_event_id(a, "acm", "ealice"), unlock_event_id(a, "acme", "alice"));
    }
}
