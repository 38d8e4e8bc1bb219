//! One stored message of `LOCKOUT_EVENTS` as the engine reads it, and how it is accepted.
//!
//! The engine does not know NATS: `lockout-nats` implements [`Delivery`] for a JetStream
//! message, and [`Incoming`] gives one field by field (tests, benchmarks).

use lockout_proto::codec::{self, Encoding};
use lockout_proto::event::Event;
use lockout_proto::subject::{EventSubject, Subjects};
use lockout_proto::{Millis, RejectReason, Rejection};

/// A message of the events stream.
pub trait Delivery {
    /// Its `LOCKOUT_EVENTS` sequence.
    fn seq(&self) -> u64;
    fn subject(&self) -> &str;
    fn payload(&self) -> &[u8];
    /// JetStream's stored time, ms: the fold's clock.
    fn stored_time(&self) -> Millis;
    /// The first value of `name` (exact name), if the message has that header.
    fn header(&self, name: &str) -> Option<&str>;
    /// Every header as it came, in order: only read to copy a refused message into its dead
    /// letter.
    fn header_pairs(&self) -> Vec<(String, String)>;
}

/// A message given field by field, with no headers but an optional `Content-Type`.
#[derive(Debug, Clone, Copy)]
pub struct Incoming<'a> {
    pub seq: u64,
    pub subject: &'a str,
    pub payload: &'a [u8],
    pub time: Millis,
    pub content_type: Option<&'a str>,
}

impl Delivery for Incoming<'_> {
    fn seq(&self) -> u64 {
        self.seq
    }
    fn subject(&self) -> &str {
        self.subject
    }
    fn payload(&self) -> &[u8] {
        self.payload
    }
    fn stored_time(&self) -> Millis {
        self.time
    }
    fn header(&self, name: &str) -> Option<&str> {
        (name == codec::CONTENT_TYPE).then_some(self.content_type).flatten()
    }
    fn header_pairs(&self) -> Vec<(String, String)> {
        self.content_type.map(|c| (codec::CONTENT_TYPE.to_owned(), c.to_owned())).into_iter().collect()
    }
}

/// Decodes and checks one message exactly as lockoutd folds it, or says why it is refused
/// (the refusal lockoutd dead-letters).
pub fn accept(subjects: &Subjects, m: &impl Delivery) -> Result<(EventSubject, Event), Rejection> {
    codec::check_size(m.payload())?;
    let subject = subjects.parse_event(m.subject())?;
    let enc = Encoding::from_content_type(m.header(codec::CONTENT_TYPE))?;
    let event = Event::decode_checked(&subject, enc, m.payload())?;
    check_msg_id(m.header(codec::NATS_MSG_ID), event.id())?;
    Ok((subject, event))
}

/// An event's `Nats-Msg-Id`, when it has one, must be its body's `id` (any UUID spelling):
/// JetStream deduplicates by the header and the service derives notice ids from the body, so
/// two different values would let one event's id stand in for another's. No header is
/// accepted (JetStream then does not deduplicate it).
fn check_msg_id(header: Option<&str>, id: uuid::Uuid) -> Result<(), Rejection> {
    match header {
        Some(h) if uuid::Uuid::parse_str(h.trim()).ok() != Some(id) => Err(Rejection::new(
            RejectReason::MsgIdMismatch,
            format!("header Nats-Msg-Id {h:?} is not the event's id {id}: publish each event with Nats-Msg-Id set to its id"),
        )),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use uuid::Uuid;

    #[test]
    fn a_msg_id_other_than_the_body_id_is_refused() {
        let id = Uuid::from_u128(0x0190_f5c2_6e4b_7000_8000_0000_0000_0002);
        for same in [None, Some(id.to_string()), Some(id.to_string().to_uppercase()), Some(id.simple().to_string())] {
            assert_eq!(check_msg_id(same.as_deref(), id), Ok(()), "{same:?}");
        }
        for other in [Uuid::from_u128(3).to_string(), "m1".to_owned(), String::new()] {
            let r = check_msg_id(Some(&other), id).unwrap_err();
            assert_eq!(r.reason, RejectReason::MsgIdMismatch, "{other:?}");
            assert!(r.message.contains("Nats-Msg-Id") && r.message.contains(&id.to_string()), "{}", r.message);
        }
    }
}
