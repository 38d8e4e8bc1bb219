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

/// What a lock covers (contract v2, "Locks by scope"): the whole account (v1's only kind),
/// sign-ins from unfamiliar IPs, or one API client.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize, strum::IntoStaticStr)]
#[serde(rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
pub enum Scope {
    #[default]
    Account,
    Unfamiliar,
    Client,
}

/// What refuses the attempt a `status` request describes (contract v2, "Status additions"),
/// the first that applies in this order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, strum::IntoStaticStr)]
#[serde(rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
pub enum BlockedBy {
    Account,
    Ip,
    Unfamiliar,
    Client,
}

/// A lock of one scope other than the account (contract v2, `scope_locks`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScopeLock {
    pub scope: Scope,
    pub client: Option<CompactString>,
    pub locked_at: Millis,
    /// `None`: until unlocked.
    pub locked_until: Option<Millis>,
    pub failures: u32,
}

/// Declares a struct with the Status fields in protocol order (`docs/protocol.md`), then
/// `extra` fields, then the fields contract v2 added (absent from the v1 postcard layout, see
/// [`layout`](crate::layout)). One list of fields keeps `Status` and `WriteReply` identical
/// where they overlap, which the postcard layout requires.
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
            /// Contract v2: whether the attempt described may go ahead (without a source in
            /// the request: not locked). A v1 postcard body has no such field; it decodes as
            /// false there, so read `locked`.
            #[serde(default, with = "crate::layout::v2")]
            pub allowed: bool,
            /// Contract v2: what refuses it, null when allowed.
            #[serde(default, with = "crate::layout::v2")]
            pub blocked_by: Option<BlockedBy>,
            /// Contract v2: the counter of failures from unfamiliar IPs.
            #[serde(default, with = "crate::layout::v2")]
            pub unfamiliar_failures: u32,
            /// Contract v2: locks of a scope other than the account.
            #[serde(default, with = "crate::layout::v2")]
            pub scope_locks: Vec<ScopeLock>,
            /// Contract v2: the authenticated caller of the last unlock.
            #[serde(default, with = "crate::layout::v2")]
            pub unlocked_caller: Option<CompactString>,
            /// Contract v2: the authenticated caller of the last MFA reset.
            #[serde(default, with = "crate::layout::v2")]
            pub mfa_reset_caller: Option<CompactString>,
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
            allowed: true,
            blocked_by: None,
            unfamiliar_failures: 0,
            scope_locks: Vec::new(),
            unlocked_caller: None,
            mfa_reset_caller: None,
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
            allowed,
            blocked_by,
            unfamiliar_failures,
            scope_locks,
            unlocked_caller,
            mfa_reset_caller,
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
            allowed,
            blocked_by,
            unfamiliar_failures,
            scope_locks,
            unlocked_caller,
            mfa_reset_caller,
        }
    }
}
