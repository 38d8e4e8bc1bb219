//! `Status`, the per-user answer of the service, and `WriteReply`, a Status plus the id of
//! the event a write command appended.

use compact_str::CompactString;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::Millis;

/// Why an account is locked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, strum::IntoStaticStr)]
#[serde(rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
pub enum LockReason {
    /// Too many counted failures.
    Failures,
    /// An admin `lock` command.
    Admin,
}

/// Declares a struct with the Status fields in protocol order (`docs/protocol.md`), followed by
/// `extra` fields.
/// One list of fields keeps `Status` and `WriteReply` identical where they overlap, which the
/// postcard layout requires.
macro_rules! status_struct {
    ($(#[$meta:meta])* $name:ident { $($(#[$fmeta:meta])* $field:ident : $ty:ty),* $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
        pub struct $name {
            pub tenant: CompactString,
            pub user: CompactString,
            pub locked: bool,
            pub reason: Option<LockReason>,
            pub locked_at: Option<Millis>,
            /// `None` while locked means until an admin unlocks.
            pub locked_until: Option<Millis>,
            /// The current counter; while locked, the counter at the moment of locking.
            pub failures: u32,
            pub max_failures: u32,
            pub last_failure_at: Option<Millis>,
            pub last_source_ip: Option<CompactString>,
            pub unlocked_at: Option<Millis>,
            pub unlocked_by: Option<CompactString>,
            pub mfa_reset_at: Option<Millis>,
            pub mfa_reset_by: Option<CompactString>,
            pub mfa_reenrol: bool,
            /// Automatic locks so far.
            pub lock_count: u32,
            $($(#[$fmeta])* pub $field: $ty,)*
        }
    };
}

status_struct!(
    /// A user's lockout state as the service reports it.
    Status {}
);

status_struct!(
    /// The reply of a write command: the new Status, then the appended event's id.
    WriteReply {
        #[serde(with = "crate::uuid16")]
        event_id: Uuid,
    }
);

impl Status {
    /// An unlocked, zeroed status: what unknown users get.
    pub fn unknown(tenant: &str, user: &str, max_failures: u32) -> Status {
        Status {
            tenant: tenant.into(),
            user: user.into(),
            locked: false,
            reason: None,
            locked_at: None,
            locked_until: None,
            failures: 0,
            max_failures,
            last_failure_at: None,
            last_source_ip: None,
            unlocked_at: None,
            unlocked_by: None,
            mfa_reset_at: None,
            mfa_reset_by: None,
            mfa_reenrol: false,
            lock_count: 0,
        }
    }

    pub fn with_event(self, event_id: Uuid) -> WriteReply {
        let Status {
            tenant,
            user,
            locked,
            reason,
            locked_at,
            locked_until,
            failures,
            max_failures,
            last_failure_at,
            last_source_ip,
            unlocked_at,
            unlocked_by,
            mfa_reset_at,
            mfa_reset_by,
            mfa_reenrol,
            lock_count,
        } = self;
        WriteReply {
            tenant,
            user,
            locked,
            reason,
            locked_at,
            locked_until,
            failures,
            max_failures,
            last_failure_at,
            last_source_ip,
            unlocked_at,
            unlocked_by,
            mfa_reset_at,
            mfa_reset_by,
            mfa_reenrol,
            lock_count,
            event_id,
        }
    }
}
