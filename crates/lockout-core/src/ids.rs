//! Deterministic notice ids.
//!
//! A notice's id is a UUID v5 of what it is about (tenant, user, scope, client), the causing
//! event's id and the notice kind, so a restart or a replay never produces a second id for
//! the same notice, and an event id reused for another user (gateways choose event ids) gives
//! that user's notices ids of their own. For an expiry the causing event is the event that
//! started the lock, so whichever event ends a timed lock, the `unlocked` notice has the same
//! id. The exact bytes are in `schemas/README.md`, "Notice ids".

use uuid::Uuid;

/// The namespace of all notice ids (a fixed, random UUID of this project).
pub const NOTICE_NAMESPACE: Uuid = Uuid::from_u128(0x6c0c_4f5e_9a51_4d2b_8f0e_2b7c_1d3a_9e44);

/// The kinds of notice a single event can cause; each gives a distinct id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoticeKind {
    Locked,
    /// An admin unlock.
    Unlocked,
    /// The end of a timed lock, keyed by the lock's event.
    Expired,
    MfaReset,
    /// Contract v2: an `ip_block` folded.
    IpBlocked,
    /// Contract v2: an admin ended an IP block.
    IpUnblocked,
    /// Contract v2: an IP block ran out, keyed by the block's event.
    IpExpired,
}

impl NoticeKind {
    fn tag(self) -> &'static [u8] {
        match self {
            NoticeKind::Locked => b"locked",
            NoticeKind::Unlocked => b"unlocked",
            NoticeKind::Expired => b"expired",
            NoticeKind::MfaReset => b"mfa_reset",
            NoticeKind::IpBlocked => b"ip_blocked",
            NoticeKind::IpUnblocked => b"ip_unblocked",
            NoticeKind::IpExpired => b"ip_expired",
        }
    }
}

/// The scope a user notice's lock is about; only the account exists so far.
pub const SCOPE_ACCOUNT: &str = "account";

/// The id of `tenant`/`user`'s account-wide notice of `kind` caused by the event `event_id`:
/// [`scoped_notice_id`] with scope [`SCOPE_ACCOUNT`] and no client.
pub fn notice_id(tenant: &str, user: &str, event_id: Uuid, kind: NoticeKind) -> Uuid {
    scoped_notice_id(tenant, user, event_id, kind, SCOPE_ACCOUNT, None)
}

/// The id of the notice of `kind` about `subject` (a user, or an IP for IP notices) of
/// `tenant`, for `scope` and `client`, caused by the event `event_id`.
///
/// UUID v5 in [`NOTICE_NAMESPACE`] of: `notice/v2`, then the tenant, the subject, the kind
/// tag and the scope, each followed by a zero byte, the event id's 16 bytes, and the client
/// (`0x00` when none, else `0x01` and its bytes). Every variable-length part is closed by a
/// separator or comes last, so no two different inputs share their bytes.
pub fn scoped_notice_id(
    tenant: &str,
    subject: &str,
    event_id: Uuid,
    kind: NoticeKind,
    scope: &str,
    client: Option<&str>,
) -> Uuid {
    let mut name = Vec::with_capacity(64 + tenant.len() + subject.len() + client.map_or(0, str::len));
    name.extend_from_slice(b"notice/v2\0");
    for part in [tenant.as_bytes(), subject.as_bytes(), kind.tag(), scope.as_bytes()] {
        name.extend_from_slice(part);
        name.push(0);
    }
    name.extend_from_slice(event_id.as_bytes());
    match client {
        None => name.push(0),
        Some(c) => {
            name.push(1);
            name.extend_from_slice(c.as_bytes());
        }
    }
    Uuid::new_v5(&NOTICE_NAMESPACE, &name)
}

/// The id lockoutd gave notices before [`notice_id`]: UUID v5 of the causing event's 16 id
/// bytes followed by the kind tag. Notices already published keep it (a rebuild publishes
/// nothing at or below the notices stream's floor); nothing computes it any more but tests.
pub fn notice_id_v1(event_id: Uuid, kind: NoticeKind) -> Uuid {
    let mut name = Vec::with_capacity(16 + 9);
    name.extend_from_slice(event_id.as_bytes());
    name.extend_from_slice(kind.tag());
    Uuid::new_v5(&NOTICE_NAMESPACE, &name)
}

/// The id of the `expired` event the service appends for `user`'s lock started by
/// `lock_event` in `tenant`; also its `Nats-Msg-Id`, so restarts and duplicates collapse.
///
/// UUID v5 in [`NOTICE_NAMESPACE`] of: the tenant's bytes, a zero byte, the user's bytes, a
/// zero byte, the lock event id's 16 bytes, `expired-event/v2`. The tenant and user are in it
/// so that an event id reused for another user gives that user's expiry an id of its own; the
/// fold knows an `expired` event written this way and holds it to the `locked_until` rule
/// (see [`crate::fold`]). lockoutd before it wrote [`expired_event_id_v1`].
pub fn expired_event_id(tenant: &str, user: &str, lock_event: Uuid) -> Uuid {
    let mut name = Vec::with_capacity(tenant.len() + user.len() + 2 + 16 + 16);
    name.extend_from_slice(tenant.as_bytes());
    name.push(0);
    name.extend_from_slice(user.as_bytes());
    name.push(0);
    name.extend_from_slice(lock_event.as_bytes());
    name.extend_from_slice(b"expired-event/v2");
    Uuid::new_v5(&NOTICE_NAMESPACE, &name)
}

/// The id of the `forget` event lockoutd appends to drop an idle state whose latest recorded
/// time is `last_activity` (`--state-ttl-days`): UUID v5 in [`NOTICE_NAMESPACE`] of the tenant's
/// bytes, a zero byte, the user's bytes, a zero byte, `last_activity` as 8 big-endian bytes,
/// `forget-event/v1`. The same idle state gives the same id however often it is found, so
/// repeats collapse in JetStream's duplicate window (and fold to nothing after it).
pub fn forget_event_id(tenant: &str, user: &str, last_activity: u64) -> Uuid {
    let mut name = Vec::with_capacity(tenant.len() + user.len() + 2 + 8 + 15);
    name.extend_from_slice(tenant.as_bytes());
    name.push(0);
    name.extend_from_slice(user.as_bytes());
    name.push(0);
    name.extend_from_slice(&last_activity.to_be_bytes());
    name.extend_from_slice(b"forget-event/v1");
    Uuid::new_v5(&NOTICE_NAMESPACE, &name)
}

/// The id of the `ip_block` event the service appends when the failure `cause` (an event id)
/// takes `ip` of `tenant` to `ip_max_failures`; also its `Nats-Msg-Id`.
///
/// UUID v5 in [`NOTICE_NAMESPACE`] of: the tenant's bytes, a zero byte, the IP's canonical
/// text, a zero byte, the cause's 16 bytes, `ip-block-event/v1`.
pub fn ip_block_event_id(tenant: &str, ip: &str, cause: Uuid) -> Uuid {
    derived_ip_event_id(tenant, ip, cause, b"ip-block-event/v1")
}

/// The id of the `ip_expired` event the service appends when the block started by
/// `block_event` runs out; as [`ip_block_event_id`] with `ip-expired-event/v1`.
pub fn ip_expired_event_id(tenant: &str, ip: &str, block_event: Uuid) -> Uuid {
    derived_ip_event_id(tenant, ip, block_event, b"ip-expired-event/v1")
}

fn derived_ip_event_id(tenant: &str, ip: &str, from: Uuid, tag: &[u8]) -> Uuid {
    let mut name = Vec::with_capacity(tenant.len() + ip.len() + 2 + 16 + tag.len());
    name.extend_from_slice(tenant.as_bytes());
    name.push(0);
    name.extend_from_slice(ip.as_bytes());
    name.push(0);
    name.extend_from_slice(from.as_bytes());
    name.extend_from_slice(tag);
    Uuid::new_v5(&NOTICE_NAMESPACE, &name)
}

/// The id lockoutd gave the `expired` events it appended before [`expired_event_id`]: UUID v5
/// of the lock event id's 16 bytes followed by `expired-event`. Such events in the stream fold
/// as they always did.
pub fn expired_event_id_v1(lock_event: Uuid) -> Uuid {
    let mut name = Vec::with_capacity(16 + 13);
    name.extend_from_slice(lock_event.as_bytes());
    name.extend_from_slice(b"expired-event");
    Uuid::new_v5(&NOTICE_NAMESPACE, &name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_deterministic_and_distinct() {
        let e = Uuid::from_u128(42);
        let n = |t, u, kind| notice_id(t, u, e, kind);
        assert_eq!(n("acme", "alice", NoticeKind::Locked), n("acme", "alice", NoticeKind::Locked));
        let all = [
            n("acme", "alice", NoticeKind::Locked),
            n("acme", "alice", NoticeKind::Unlocked),
            n("acme", "alice", NoticeKind::Expired),
            n("acme", "alice", NoticeKind::MfaReset),
            // the same event id for another user or tenant: another notice
            n("acme", "bob", NoticeKind::Locked),
            n("other", "alice", NoticeKind::Locked),
            // the separators keep ("ab", "c") and ("a", "bc") apart
            n("ab", "c", NoticeKind::Locked),
            n("a", "bc", NoticeKind::Locked),
            // one event's notices of several scopes and clients differ
            scoped_notice_id("acme", "alice", e, NoticeKind::Locked, "client", Some("IT Glue")),
            scoped_notice_id("acme", "alice", e, NoticeKind::Locked, "client", Some("")),
            scoped_notice_id("acme", "alice", e, NoticeKind::Locked, "client", None),
            scoped_notice_id("acme", "alice", e, NoticeKind::Locked, "unfamiliar", None),
            notice_id_v1(e, NoticeKind::Locked),
            expired_event_id("acme", "alice", e),
            expired_event_id("acme", "bob", e),
            expired_event_id("other", "alice", e),
            expired_event_id("ab", "c", e),
            expired_event_id("a", "bc", e),
            expired_event_id_v1(e),
            notice_id("acme", "alice", Uuid::from_u128(43), NoticeKind::Locked),
        ];
        for (i, a) in all.iter().enumerate() {
            assert_eq!(a.get_version_num(), 5);
            for b in &all[i + 1..] {
                assert_ne!(a, b);
            }
        }
    }

    /// The formulas of `schemas/README.md`, pinned: a change here changes the id of every
    /// notice from then on.
    #[test]
    fn ids_match_the_documented_bytes() {
        let e = Uuid::parse_str("0190f5c2-6e4b-7000-8000-000000000002").unwrap();
        let mut v2 = b"notice/v2\0acme\0alice@acme.com\0locked\0account\0".to_vec();
        v2.extend_from_slice(e.as_bytes());
        v2.push(0);
        assert_eq!(notice_id("acme", "alice@acme.com", e, NoticeKind::Locked), Uuid::new_v5(&NOTICE_NAMESPACE, &v2));
        let mut v1 = e.as_bytes().to_vec();
        v1.extend_from_slice(b"locked");
        assert_eq!(notice_id_v1(e, NoticeKind::Locked), Uuid::new_v5(&NOTICE_NAMESPACE, &v1));
        assert_eq!(
            notice_id("acme", "alice@acme.com", e, NoticeKind::Locked).to_string(),
            "7e53f537-0bb9-5124-be77-8d8fcdb5321c"
        );
    }
}
