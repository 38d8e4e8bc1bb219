//! The notices of `LOCKOUT_NOTICES`, for notifier services.
//!
//! Every notice has `id` (deterministic from the causing event), `event_id`, `tenant`, `user`
//! and `at`, then its kind's fields. Subject: `<p>.notices.<tenant>.<kind>`.

use compact_str::CompactString;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::codec::{encode, Encoding};
use crate::status::{LockReason, Scope};
use crate::Millis;

/// One source of counted failures: an (`ip`, `client`) pair and how many failures it sent.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Source {
    pub ip: CompactString,
    pub client: Option<CompactString>,
    pub failures: u32,
}

/// How a lock ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, strum::IntoStaticStr)]
#[serde(rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
pub enum How {
    Expired,
    Admin,
    /// Contract v2: a verified password change (`password_reset`) ended it.
    PasswordReset,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockedNotice {
    #[serde(with = "crate::uuid16")]
    pub id: Uuid,
    #[serde(with = "crate::uuid16")]
    pub event_id: Uuid,
    pub tenant: CompactString,
    pub user: CompactString,
    pub at: Millis,
    pub reason: LockReason,
    /// `None` = until an admin unlocks.
    pub locked_until: Option<Millis>,
    /// `None` likewise.
    pub lock_seconds: Option<u64>,
    pub failures: u32,
    /// The tripping attempt's address; `None` for an admin lock.
    pub source_ip: Option<CompactString>,
    /// The tripping attempt's client; `None` for an admin lock or when the gateway sent none.
    pub client: Option<CompactString>,
    /// Every source of the counted failures, most failures first, ties by first occurrence.
    pub sources: Vec<Source>,
    /// The admin, for admin locks.
    pub actor: Option<CompactString>,
    /// One sentence for a person.
    pub message: String,
    /// Contract v2: what the lock covers.
    #[serde(default, with = "crate::layout::v2")]
    pub scope: Scope,
    /// Contract v2: the authenticated caller of the admin action, null otherwise.
    #[serde(default, with = "crate::layout::v2")]
    pub caller: Option<CompactString>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnlockedNotice {
    #[serde(with = "crate::uuid16")]
    pub id: Uuid,
    #[serde(with = "crate::uuid16")]
    pub event_id: Uuid,
    pub tenant: CompactString,
    pub user: CompactString,
    pub at: Millis,
    pub how: How,
    /// `None` when the lock expired.
    pub actor: Option<CompactString>,
    /// Contract v2: what the lock covers.
    #[serde(default, with = "crate::layout::v2")]
    pub scope: Scope,
    /// Contract v2: the client of a client-scope lock.
    #[serde(default, with = "crate::layout::v2")]
    pub client: Option<CompactString>,
    /// Contract v2: the authenticated caller of the admin action, null otherwise.
    #[serde(default, with = "crate::layout::v2")]
    pub caller: Option<CompactString>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MfaResetNotice {
    #[serde(with = "crate::uuid16")]
    pub id: Uuid,
    #[serde(with = "crate::uuid16")]
    pub event_id: Uuid,
    pub tenant: CompactString,
    pub user: CompactString,
    pub at: Millis,
    pub actor: CompactString,
    /// Contract v2: the authenticated caller of the admin action, null otherwise.
    #[serde(default, with = "crate::layout::v2")]
    pub caller: Option<CompactString>,
}

/// Contract v2: an IP was blocked for the tenant (an `ip_block` event was folded). A v2-only
/// notice: one postcard layout.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IpBlockedNotice {
    #[serde(with = "crate::uuid16")]
    pub id: Uuid,
    /// The `ip_block` event.
    #[serde(with = "crate::uuid16")]
    pub event_id: Uuid,
    pub tenant: CompactString,
    pub at: Millis,
    pub ip: CompactString,
    pub failures: u32,
    pub users: u32,
    pub sample_users: Vec<CompactString>,
    /// `None` = until an admin unblocks.
    pub blocked_until: Option<Millis>,
    /// One sentence for a person.
    pub message: String,
}

/// Contract v2: an IP block ended, exactly once whichever event ended it. A v2-only notice.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IpUnblockedNotice {
    #[serde(with = "crate::uuid16")]
    pub id: Uuid,
    /// The `ip_unblock` event (`how: admin`), or the `ip_block` event that started the block
    /// (`how: expired`).
    #[serde(with = "crate::uuid16")]
    pub event_id: Uuid,
    pub tenant: CompactString,
    pub at: Millis,
    pub ip: CompactString,
    /// `expired` or `admin`.
    pub how: How,
    /// The admin; `None` when the block expired.
    pub actor: Option<CompactString>,
    /// An extension: the authenticated caller of the admin action, null otherwise.
    pub caller: Option<CompactString>,
}

/// Any notice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notice {
    Locked(LockedNotice),
    Unlocked(UnlockedNotice),
    MfaReset(MfaResetNotice),
    IpBlocked(IpBlockedNotice),
    IpUnblocked(IpUnblockedNotice),
}

/// Every notice kind, the last token of a notice subject.
pub const KINDS: [&str; 5] = ["locked", "unlocked", "mfa_reset", "ip_blocked", "ip_unblocked"];

/// Evaluates `$body` with `$n` bound to the body of `$notice`, whatever its kind.
macro_rules! with_notice {
    ($notice:expr, $n:ident => $body:expr) => {
        match $notice {
            Notice::Locked($n) => $body,
            Notice::Unlocked($n) => $body,
            Notice::MfaReset($n) => $body,
            Notice::IpBlocked($n) => $body,
            Notice::IpUnblocked($n) => $body,
        }
    };
}

impl Notice {
    /// The kind token of the notice subject (one of [`KINDS`]).
    pub fn kind(&self) -> &'static str {
        match self {
            Notice::Locked(_) => "locked",
            Notice::Unlocked(_) => "unlocked",
            Notice::MfaReset(_) => "mfa_reset",
            Notice::IpBlocked(_) => "ip_blocked",
            Notice::IpUnblocked(_) => "ip_unblocked",
        }
    }

    pub fn id(&self) -> Uuid {
        with_notice!(self, n => n.id)
    }

    /// The event the notice is about (for an expiry, the one that started the lock).
    pub fn event_id(&self) -> Uuid {
        with_notice!(self, n => n.event_id)
    }

    pub fn tenant(&self) -> &str {
        with_notice!(self, n => &n.tenant)
    }

    pub fn encode(&self, enc: Encoding) -> Vec<u8> {
        with_notice!(self, n => encode(enc, n))
    }

    /// The notice as a JSON value (its JSON encoding), whatever its kind.
    pub fn to_json(&self) -> serde_json::Value {
        with_notice!(self, n => serde_json::to_value(n).expect("notices always encode"))
    }

    /// Decodes a notice of the given subject kind.
    pub fn decode(kind: &str, enc: Encoding, bytes: &[u8]) -> Result<Notice, crate::Rejection> {
        use crate::codec::decode;
        match kind {
            "locked" => Ok(Notice::Locked(decode(enc, bytes, "the `locked` notice")?)),
            "unlocked" => Ok(Notice::Unlocked(decode(enc, bytes, "the `unlocked` notice")?)),
            "mfa_reset" => Ok(Notice::MfaReset(decode(enc, bytes, "the `mfa_reset` notice")?)),
            "ip_blocked" => Ok(Notice::IpBlocked(decode(enc, bytes, "the `ip_blocked` notice")?)),
            "ip_unblocked" => Ok(Notice::IpUnblocked(decode(enc, bytes, "the `ip_unblocked` notice")?)),
            other => Err(crate::Rejection::new(
                crate::RejectReason::UnknownType,
                format!("notice kind {other:?} is unknown: expected one of {}", KINDS.join(", ")),
            )),
        }
    }
}
