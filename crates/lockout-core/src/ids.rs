//! Deterministic notice ids.
//!
//! A notice's id is a UUID v5 of the causing event's id and the notice kind, so a restart or
//! a replay never produces a second id for the same notice. For an expiry the causing event
//! is the event that started the lock, so whichever event ends a timed lock, the `unlocked`
//! notice has the same id.

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
}

impl NoticeKind {
    fn tag(self) -> &'static [u8] {
        match self {
            NoticeKind::Locked => b"locked",
            NoticeKind::Unlocked => b"unlocked",
            NoticeKind::Expired => b"expired",
            NoticeKind::MfaReset => b"mfa_reset",
        }
    }
}

/// The id of the notice of `kind` caused by the event `event_id`.
pub fn notice_id(event_id: Uuid, kind: NoticeKind) -> Uuid {
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
        assert_eq!(notice_id(e, NoticeKind::Locked), notice_id(e, NoticeKind::Locked));
        let all = [
            notice_id(e, NoticeKind::Locked),
            notice_id(e, NoticeKind::Unlocked),
            notice_id(e, NoticeKind::Expired),
            notice_id(e, NoticeKind::MfaReset),
            expired_event_id("acme", "alice", e),
            expired_event_id("acme", "bob", e),
            expired_event_id("other", "alice", e),
            // the separator keeps ("ab", "c") and ("a", "bc") apart
            expired_event_id("ab", "c", e),
            expired_event_id("a", "bc", e),
            expired_event_id_v1(e),
            notice_id(Uuid::from_u128(43), NoticeKind::Locked),
        ];
        for (i, a) in all.iter().enumerate() {
            assert_eq!(a.get_version_num(), 5);
            for b in &all[i + 1..] {
                assert_ne!(a, b);
            }
        }
    }
}
