//! Refusals of bad input.
//!
//! A refusal is a value, not a failure: the projector turns a [`Rejection`] into a dead
//! letter and the micro service into a 400 reply. Its `reason` is the dead-letter reason of
//! the protocol (`docs/protocol.md`) and its `message` a sentence a person can act on.

use std::fmt;

/// Why input was refused; each maps to a `lockout.dead.<tenant>.<reason>` subject token.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, strum::IntoStaticStr, strum::EnumIter)]
#[strum(serialize_all = "snake_case")]
pub enum RejectReason {
    /// The body is not valid JSON or postcard for its type, has trailing bytes, or names an
    /// unknown enum value.
    Undecodable,
    /// The subject's type token is not an event type of the protocol (`docs/protocol.md`).
    UnknownType,
    /// The body's `tenant` or `user` differs from the subject.
    Mismatch,
    /// A field is outside its allowed range or length, or the payload is too large.
    OutOfRange,
    /// `source_ip` is not an IPv4 or IPv6 address.
    BadIp,
    /// The subject does not have the protocol's shape, or its tenant or user token is malformed.
    BadSubject,
    /// The `Content-Type` header names an encoding the service does not speak.
    Encoding,
    /// The `Nats-Msg-Id` header is not the body's `id`: JetStream deduplicated it under
    /// another id than the one its notices would derive from.
    MsgIdMismatch,
}

impl RejectReason {
    /// Every reason, in declaration order.
    pub fn all() -> impl Iterator<Item = RejectReason> {
        <Self as strum::IntoEnumIterator>::iter()
    }

    /// The subject token used in `lockout.dead.<tenant>.<reason>`.
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

impl fmt::Display for RejectReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Input the service refuses, with the reason and a sentence naming the field and the fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct Rejection {
    pub reason: RejectReason,
    pub message: String,
}

impl Rejection {
    pub fn new(reason: RejectReason, message: impl Into<String>) -> Self {
        Rejection { reason, message: message.into() }
    }

    pub(crate) fn out_of_range(message: impl Into<String>) -> Self {
        Self::new(RejectReason::OutOfRange, message)
    }
}

/// Checks a text field's length in characters; `None` passes.
pub fn check_len(field: &str, value: Option<&str>, min: usize, max: usize) -> Result<(), Rejection> {
    let Some(value) = value else { return Ok(()) };
    let n = value.chars().count();
    if n < min || n > max {
        let bound = if min == 0 { format!("at most {max} characters") } else { format!("{min} to {max} characters") };
        return Err(Rejection::out_of_range(format!("field `{field}` has {n} characters; it must have {bound}")));
    }
    Ok(())
}
