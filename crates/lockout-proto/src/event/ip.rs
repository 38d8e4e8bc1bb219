//! The tenant events of IP blocks (contract v2, "IP blocks"), and IP addresses in the
//! canonical form they are keyed and written in.

use std::net::IpAddr;

use compact_str::CompactString;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{check_admin, parse_ip, CALLER_MAX};
use crate::error::{check_len, RejectReason, Rejection};
use crate::ids::UserId;
use crate::Millis;

/// Most `sample_users` an `ip_block` event names.
pub const SAMPLE_USERS_MAX: usize = 10;

/// Contract v2: the service blocked `ip` for the tenant after `failures` failures against
/// `users` distinct users within `ip_window_seconds`; written by the service. A tenant event:
/// it applies to the events stored after it. A v2-only event: one postcard layout.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IpBlock {
    /// Derived from the failure that tripped the block (`lockout_core::ids::ip_block_event_id`),
    /// so a retried append collapses.
    #[serde(with = "crate::uuid16")]
    pub id: Uuid,
    pub at: Millis,
    pub tenant: CompactString,
    /// The blocked address, in canonical text form ([`canonical_ip`]).
    pub ip: CompactString,
    pub failures: u32,
    pub users: u32,
    /// Up to [`SAMPLE_USERS_MAX`] of the users it failed against, first seen first.
    pub sample_users: Vec<CompactString>,
    /// `None`: until an admin unblocks (`ip_block_seconds` 0).
    pub blocked_until: Option<Millis>,
}

/// Contract v2: an admin ended an IP block (`ip_unblock` op); written by the service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IpUnblock {
    #[serde(with = "crate::uuid16")]
    pub id: Uuid,
    pub at: Millis,
    pub tenant: CompactString,
    pub ip: CompactString,
    pub actor: CompactString,
    /// The authenticated caller the server vouched for, null where the deployment does not tell.
    pub caller: Option<CompactString>,
    pub reason: Option<CompactString>,
}

/// Contract v2: the IP block started by `block_event` ran out; written by the service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IpExpired {
    #[serde(with = "crate::uuid16")]
    pub id: Uuid,
    pub at: Millis,
    pub tenant: CompactString,
    pub ip: CompactString,
    #[serde(with = "crate::uuid16")]
    pub block_event: Uuid,
}

/// Checks an `ip_block` body's fields.
pub(super) fn check_block(e: &IpBlock) -> Result<(), Rejection> {
    check_canonical_ip("ip", &e.ip)?;
    if e.sample_users.len() > SAMPLE_USERS_MAX {
        return Err(Rejection::out_of_range(format!(
            "field `sample_users` lists {} users; at most {SAMPLE_USERS_MAX}",
            e.sample_users.len()
        )));
    }
    for u in &e.sample_users {
        UserId::check(u)?;
    }
    Ok(())
}

/// Checks an `ip_unblock` body's fields.
pub(super) fn check_unblock(e: &IpUnblock) -> Result<(), Rejection> {
    check_canonical_ip("ip", &e.ip)?;
    check_admin(&e.actor, e.reason.as_deref())?;
    check_len("caller", e.caller.as_deref(), 1, CALLER_MAX)
}

/// The canonical text of an address (IPv6 compressed and lower case, as Rust and RFC 5952
/// write it; an IPv4-mapped IPv6 address as its IPv4): what IP blocks and counts are keyed by,
/// so `2001:DB8::1` and `2001:db8:0::1` are one IP, and `::ffff:203.0.113.9` is
/// `203.0.113.9`.
pub fn canonical_ip(ip: &str) -> Option<CompactString> {
    let a = ip.parse::<IpAddr>().ok()?;
    let a = match a {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(a, IpAddr::V4),
        v4 => v4,
    };
    Some(compact_str::format_compact!("{a}"))
}

/// Checks that field `field` is an address in canonical text form (what the service writes).
pub(super) fn check_canonical_ip(field: &str, ip: &str) -> Result<(), Rejection> {
    parse_ip(field, ip)?;
    match canonical_ip(ip) {
        Some(c) if c == ip => Ok(()),
        c => Err(Rejection::new(
            RejectReason::BadIp,
            format!("field `{field}` {ip:?} is not in canonical form; write it as {}", c.unwrap_or_default()),
        )),
    }
}

#[cfg(test)]
mod ip_tests {
    use super::canonical_ip;

    #[test]
    fn canonical_ips_are_one_spelling_per_address() {
        for (given, want) in [
            ("203.0.113.9", "203.0.113.9"),
            ("::ffff:203.0.113.9", "203.0.113.9"),
            ("2001:DB8:0::1", "2001:db8::1"),
            ("::1", "::1"),
        ] {
            assert_eq!(canonical_ip(given).as_deref(), Some(want), "{given}");
        }
        assert_eq!(canonical_ip("203.0.113"), None);
    }
}
