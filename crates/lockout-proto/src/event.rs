//! The six event bodies of `LOCKOUT_EVENTS`.
//!
//! The subject gives the type ([`EventKind`]); the body is that type's struct. Every body
//! has `id`, `at` and `tenant`, and user events `user`; [`Event::check`] verifies those
//! against the subject and every field's range, so a checked event is safe to fold.

use std::net::IpAddr;

use compact_str::CompactString;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::codec::{decode, encode, Encoding};
use crate::error::{check_len, RejectReason, Rejection};
use crate::ids::UserId;
use crate::policy::Policy;
use crate::subject::{EventSubject, Target};
use crate::Millis;

mod ip;

use ip::check_canonical_ip;
pub use ip::{canonical_ip, IpBlock, IpExpired, IpUnblock, SAMPLE_USERS_MAX};

/// Longest `client`, in characters.
pub const CLIENT_MAX: usize = 200;
/// Longest `credential` fingerprint, in characters.
pub const CREDENTIAL_MAX: usize = 64;
/// Longest `caller`, in characters (an extension: `<account>/<user>` as nats-server names them).
pub const CALLER_MAX: usize = 256;
/// Longest `actor`, in characters (an extension: `docs/protocol.md` sets no bound).
pub const ACTOR_MAX: usize = 256;
/// Longest `reason`, in characters (an extension: `docs/protocol.md` sets no bound).
pub const REASON_MAX: usize = 1024;

/// An event type, the last token of an event subject.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, strum::IntoStaticStr, strum::EnumString, strum::EnumIter,
)]
#[strum(serialize_all = "snake_case")]
pub enum EventKind {
    Attempt,
    Unlock,
    Lock,
    MfaReset,
    Expired,
    Policy,
    /// Contract v2: the identity provider verified a password change (`password_reset` op).
    PasswordReset,
    /// An extension: the service drops an idle user's state (`--state-ttl-days`).
    Forget,
    /// Contract v2: the service blocked an IP for the tenant (password spraying).
    IpBlock,
    /// Contract v2: an admin ended an IP block (`ip_unblock` op).
    IpUnblock,
    /// Contract v2: an IP block ran out; written by the service.
    IpExpired,
}

impl EventKind {
    /// Every event type, in the protocol's order.
    pub fn all() -> impl Iterator<Item = EventKind> {
        <Self as strum::IntoEnumIterator>::iter()
    }

    /// The subject token.
    pub fn as_str(self) -> &'static str {
        self.into()
    }

    pub fn parse(s: &str) -> Option<EventKind> {
        s.parse().ok()
    }

    /// "the `<type>` event body", for error messages (static: decoding formats nothing unless
    /// it fails).
    fn body_name(self) -> &'static str {
        match self {
            Self::Attempt => "the `attempt` event body",
            Self::Unlock => "the `unlock` event body",
            Self::Lock => "the `lock` event body",
            Self::MfaReset => "the `mfa_reset` event body",
            Self::Expired => "the `expired` event body",
            Self::Policy => "the `policy` event body",
            Self::Forget => "the `forget` event body",
            Self::PasswordReset => "the `password_reset` event body",
            Self::IpBlock => "the `ip_block` event body",
            Self::IpUnblock => "the `ip_unblock` event body",
            Self::IpExpired => "the `ip_expired` event body",
        }
    }

    /// True for the types written under `.t.` (tenant events) rather than `.u.<utok>.`.
    pub fn is_tenant_event(self) -> bool {
        matches!(self, Self::Policy | Self::IpBlock | Self::IpUnblock | Self::IpExpired)
    }
}

/// `success`, `failure` or (contract v2) `rejected`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, strum::IntoStaticStr)]
#[serde(rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
pub enum Outcome {
    Success,
    Failure,
    /// Contract v2: the gateway refused the attempt before checking any secret, because
    /// `status` said it was not allowed. Recorded, counted on no counter.
    Rejected,
}

/// Which secret the attempt presented.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize, strum::IntoStaticStr)]
#[serde(rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
pub enum Factor {
    #[default]
    Password,
    Mfa,
    RecoveryCode,
}

impl Factor {
    /// True for the second-factor kinds that `mfa_reset` removes from the counter.
    pub fn is_mfa(self) -> bool {
        matches!(self, Factor::Mfa | Factor::RecoveryCode)
    }
}

/// What kind of account the gateway saw.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, strum::IntoStaticStr)]
#[serde(rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
pub enum Account {
    User,
    Api,
    Portal,
}

/// A login attempt, published by auth gateways.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attempt {
    #[serde(with = "crate::uuid16")]
    pub id: Uuid,
    pub at: Millis,
    pub tenant: CompactString,
    pub user: CompactString,
    pub outcome: Outcome,
    /// Absent or `null` in JSON means `password`.
    #[serde(default, deserialize_with = "factor_or_default")]
    pub factor: Factor,
    pub source_ip: CompactString,
    pub client: Option<CompactString>,
    pub credential: Option<CompactString>,
    pub account: Option<Account>,
    /// Contract v2: this success completes a sign-in (false: a password step MFA still
    /// follows). Only a final success makes an IP familiar or a client known.
    #[serde(rename = "final", default = "crate::layout::yes", with = "crate::layout::v2_true")]
    pub is_final: bool,
}

/// Reads `factor`: in JSON, `null` means the default like an absent field does
/// (`docs/protocol.md`: "absent optional fields and `null` mean the same"); postcard always
/// carries the variant index.
fn factor_or_default<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Factor, D::Error> {
    if d.is_human_readable() {
        Ok(Option::<Factor>::deserialize(d)?.unwrap_or_default())
    } else {
        Factor::deserialize(d)
    }
}

/// An admin unlock, written by the service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Unlock {
    #[serde(with = "crate::uuid16")]
    pub id: Uuid,
    pub at: Millis,
    pub tenant: CompactString,
    pub user: CompactString,
    pub actor: CompactString,
    pub reason: Option<CompactString>,
    /// Contract v2: the authenticated caller (`<account>/<user>`) the server vouched for
    /// (`Nats-Request-Info`), null where the deployment does not tell (v1 layout: absent).
    #[serde(default, with = "crate::layout::v2")]
    pub caller: Option<CompactString>,
    /// An extension (the `unlock` op's `lock_event`): end the locks only if the lock in force
    /// was started by this event; otherwise the unlock changes nothing. Null: unconditional.
    #[serde(default, with = "crate::layout::v2_uuid")]
    pub lock_event: Option<Uuid>,
}

/// An admin lock, written by the service; `seconds` absent = until unlocked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lock {
    #[serde(with = "crate::uuid16")]
    pub id: Uuid,
    pub at: Millis,
    pub tenant: CompactString,
    pub user: CompactString,
    pub actor: CompactString,
    pub reason: Option<CompactString>,
    pub seconds: Option<u32>,
    /// Contract v2: the authenticated caller (`<account>/<user>`) the server vouched for
    /// (`Nats-Request-Info`), null where the deployment does not tell (v1 layout: absent).
    #[serde(default, with = "crate::layout::v2")]
    pub caller: Option<CompactString>,
}

/// An admin MFA reset, written by the service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MfaReset {
    #[serde(with = "crate::uuid16")]
    pub id: Uuid,
    pub at: Millis,
    pub tenant: CompactString,
    pub user: CompactString,
    pub actor: CompactString,
    pub reason: Option<CompactString>,
    /// Contract v2: the authenticated caller (`<account>/<user>`) the server vouched for
    /// (`Nats-Request-Info`), null where the deployment does not tell (v1 layout: absent).
    #[serde(default, with = "crate::layout::v2")]
    pub caller: Option<CompactString>,
}

/// A timed lock ran out; written by the service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Expired {
    #[serde(with = "crate::uuid16")]
    pub id: Uuid,
    pub at: Millis,
    pub tenant: CompactString,
    pub user: CompactString,
    /// The id of the event that started the lock.
    #[serde(with = "crate::uuid16")]
    pub lock_event: Uuid,
}

/// An idle user's state is dropped (`lockoutd --state-ttl-days`, an extension); written by the
/// service. The fold drops it only if the user is not locked and nothing changed the state
/// after `last_activity`, so replay agrees with live whatever came in between.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Forget {
    #[serde(with = "crate::uuid16")]
    pub id: Uuid,
    pub at: Millis,
    pub tenant: CompactString,
    pub user: CompactString,
    /// The latest time the state recorded (a failure, a lock, an unlock, an MFA reset) when
    /// the service decided to drop it.
    pub last_activity: Millis,
}

/// Who started a password reset (`password_reset` op).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, strum::IntoStaticStr)]
#[serde(rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
pub enum ResetMethod {
    SelfService,
    Admin,
}

/// Contract v2: the user proved who they are and changed their password; written by the
/// service for the identity provider (`password_reset` op). A v2-only event: its postcard
/// body has one layout.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PasswordReset {
    #[serde(with = "crate::uuid16")]
    pub id: Uuid,
    pub at: Millis,
    pub tenant: CompactString,
    pub user: CompactString,
    pub method: ResetMethod,
    pub actor: Option<CompactString>,
    /// The authenticated caller the server vouched for, null where the deployment does not tell.
    pub caller: Option<CompactString>,
}

/// A tenant's new policy; written by the service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyChange {
    #[serde(with = "crate::uuid16")]
    pub id: Uuid,
    pub at: Millis,
    pub tenant: CompactString,
    pub actor: CompactString,
    pub policy: Policy,
    /// Contract v2: the authenticated caller (`<account>/<user>`) the server vouched for
    /// (`Nats-Request-Info`), null where the deployment does not tell (v1 layout: absent).
    #[serde(default, with = "crate::layout::v2")]
    pub caller: Option<CompactString>,
}

/// Any event body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    Attempt(Attempt),
    Unlock(Unlock),
    Lock(Lock),
    MfaReset(MfaReset),
    Expired(Expired),
    Policy(PolicyChange),
    Forget(Forget),
    PasswordReset(PasswordReset),
    IpBlock(IpBlock),
    IpUnblock(IpUnblock),
    IpExpired(IpExpired),
}

/// Evaluates `$body` with `$e` bound to the body of `$event`, whatever its type: one place
/// that lists every event type for what all bodies have in common.
macro_rules! with_body {
    ($event:expr, $e:ident => $body:expr) => {
        match $event {
            Event::Attempt($e) => $body,
            Event::Unlock($e) => $body,
            Event::Lock($e) => $body,
            Event::MfaReset($e) => $body,
            Event::Expired($e) => $body,
            Event::Policy($e) => $body,
            Event::Forget($e) => $body,
            Event::PasswordReset($e) => $body,
            Event::IpBlock($e) => $body,
            Event::IpUnblock($e) => $body,
            Event::IpExpired($e) => $body,
        }
    };
}

impl Event {
    pub fn kind(&self) -> EventKind {
        match self {
            Event::Attempt(_) => EventKind::Attempt,
            Event::Unlock(_) => EventKind::Unlock,
            Event::Lock(_) => EventKind::Lock,
            Event::MfaReset(_) => EventKind::MfaReset,
            Event::Expired(_) => EventKind::Expired,
            Event::Policy(_) => EventKind::Policy,
            Event::Forget(_) => EventKind::Forget,
            Event::PasswordReset(_) => EventKind::PasswordReset,
            Event::IpBlock(_) => EventKind::IpBlock,
            Event::IpUnblock(_) => EventKind::IpUnblock,
            Event::IpExpired(_) => EventKind::IpExpired,
        }
    }

    pub fn id(&self) -> Uuid {
        with_body!(self, e => e.id)
    }

    pub fn at(&self) -> Millis {
        with_body!(self, e => e.at)
    }

    pub fn tenant(&self) -> &str {
        with_body!(self, e => &e.tenant)
    }

    /// The body's `user`, `None` for tenant events.
    pub fn user(&self) -> Option<&str> {
        match self {
            Event::Attempt(e) => Some(&e.user),
            Event::Unlock(e) => Some(&e.user),
            Event::Lock(e) => Some(&e.user),
            Event::MfaReset(e) => Some(&e.user),
            Event::Expired(e) => Some(&e.user),
            Event::Forget(e) => Some(&e.user),
            Event::PasswordReset(e) => Some(&e.user),
            Event::Policy(_) | Event::IpBlock(_) | Event::IpUnblock(_) | Event::IpExpired(_) => None,
        }
    }

    /// Decodes the body of an event of type `kind`.
    pub fn decode(kind: EventKind, enc: Encoding, bytes: &[u8]) -> Result<Event, Rejection> {
        let what = kind.body_name();
        Ok(match kind {
            EventKind::Attempt => Event::Attempt(decode(enc, bytes, what)?),
            EventKind::Unlock => Event::Unlock(decode(enc, bytes, what)?),
            EventKind::Lock => Event::Lock(decode(enc, bytes, what)?),
            EventKind::MfaReset => Event::MfaReset(decode(enc, bytes, what)?),
            EventKind::Expired => Event::Expired(decode(enc, bytes, what)?),
            EventKind::Policy => Event::Policy(decode(enc, bytes, what)?),
            EventKind::Forget => Event::Forget(decode(enc, bytes, what)?),
            EventKind::PasswordReset => Event::PasswordReset(decode(enc, bytes, what)?),
            EventKind::IpBlock => Event::IpBlock(decode(enc, bytes, what)?),
            EventKind::IpUnblock => Event::IpUnblock(decode(enc, bytes, what)?),
            EventKind::IpExpired => Event::IpExpired(decode(enc, bytes, what)?),
        })
    }

    pub fn encode(&self, enc: Encoding) -> Vec<u8> {
        with_body!(self, e => encode(enc, e))
    }

    /// The body as a JSON value (its JSON encoding, UUIDs as strings), whatever its type.
    pub fn body_json(&self) -> serde_json::Value {
        with_body!(self, e => serde_json::to_value(e).expect("event bodies always encode"))
    }

    /// Decodes and checks an event against its parsed subject: the one call the projector makes.
    pub fn decode_checked(subject: &EventSubject, enc: Encoding, bytes: &[u8]) -> Result<Event, Rejection> {
        let event = Event::decode(subject.kind, enc, bytes)?;
        event.check(subject)?;
        Ok(event)
    }

    /// Checks that tenant and user match the subject and every field is in range.
    pub fn check(&self, subject: &EventSubject) -> Result<(), Rejection> {
        if self.kind() != subject.kind {
            return Err(Rejection::new(
                RejectReason::Mismatch,
                format!("a `{}` body was sent on a `{}` subject", self.kind().as_str(), subject.kind.as_str()),
            ));
        }
        if self.tenant() != subject.tenant.as_str() {
            return Err(Rejection::new(
                RejectReason::Mismatch,
                format!(
                    "body tenant {:?} differs from subject tenant {:?}; publish on the body's tenant or fix the body",
                    self.tenant(),
                    subject.tenant.as_str()
                ),
            ));
        }
        if let (Some(user), Target::User(expected)) = (self.user(), &subject.target) {
            UserId::check(user)?;
            if user != expected.as_str() {
                return Err(Rejection::new(
                    RejectReason::Mismatch,
                    format!(
                        "body user {user:?} differs from the subject's user token, which decodes to {:?}; the token must be base64url (no padding) of the body's user",
                        expected.as_str()
                    ),
                ));
            }
        }
        match self {
            Event::Attempt(a) => {
                check_len("client", a.client.as_deref(), 0, CLIENT_MAX)?;
                check_len("credential", a.credential.as_deref(), 0, CREDENTIAL_MAX)?;
                check_ip(&a.source_ip)?;
            }
            Event::Unlock(e) => {
                check_admin(&e.actor, e.reason.as_deref())?;
                check_len("caller", e.caller.as_deref(), 1, CALLER_MAX)?;
            }
            Event::MfaReset(e) => {
                check_admin(&e.actor, e.reason.as_deref())?;
                check_len("caller", e.caller.as_deref(), 1, CALLER_MAX)?;
            }
            Event::Lock(e) => {
                check_admin(&e.actor, e.reason.as_deref())?;
                check_len("caller", e.caller.as_deref(), 1, CALLER_MAX)?;
                check_seconds(e.seconds)?;
            }
            Event::PasswordReset(e) => {
                check_len("actor", e.actor.as_deref(), 1, ACTOR_MAX)?;
                check_len("caller", e.caller.as_deref(), 1, CALLER_MAX)?;
            }
            Event::Expired(_) | Event::Forget(_) => {}
            Event::IpBlock(e) => ip::check_block(e)?,
            Event::IpUnblock(e) => ip::check_unblock(e)?,
            Event::IpExpired(e) => check_canonical_ip("ip", &e.ip)?,
            Event::Policy(p) => {
                check_len("actor", Some(&p.actor), 1, ACTOR_MAX)?;
                check_len("caller", p.caller.as_deref(), 1, CALLER_MAX)?;
                p.policy.validate()?;
            }
        }
        Ok(())
    }
}

/// Checks `actor` (1–256 characters) and `reason` (≤ 1024 characters) of an admin action.
pub fn check_admin(actor: &str, reason: Option<&str>) -> Result<(), Rejection> {
    check_len("actor", Some(actor), 1, ACTOR_MAX)?;
    check_len("reason", reason, 0, REASON_MAX)
}

/// Checks a lock's `seconds`, which when given is at least 1.
pub fn check_seconds(seconds: Option<u32>) -> Result<(), Rejection> {
    if seconds == Some(0) {
        return Err(Rejection::out_of_range(
            "field `seconds` is 0; give at least 1, or leave it out to lock until an admin unlocks",
        ));
    }
    Ok(())
}

/// Checks that `source_ip` is IPv4 or IPv6 text.
pub fn check_ip(ip: &str) -> Result<IpAddr, Rejection> {
    parse_ip("source_ip", ip)
}

/// Parses field `field` as IPv4 or IPv6 text.
pub fn parse_ip(field: &str, ip: &str) -> Result<IpAddr, Rejection> {
    ip.parse::<IpAddr>().map_err(|_| {
        Rejection::new(
            RejectReason::BadIp,
            format!("field `{field}` {ip:?} is not an IPv4 or IPv6 address; send the client's address as text, e.g. 203.0.113.7 or 2001:db8::1"),
        )
    })
}
