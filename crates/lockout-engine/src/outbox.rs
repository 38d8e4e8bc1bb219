//! What a commit queues for publishing: the outbox entries of notices and dead letters.
//!
//! Entries are committed with the states that caused them and published in (event seq,
//! index) order by lockoutd. [`Floors`] are what the streams already hold (read by lockoutd at
//! start): an entry at or below them was published by an earlier run and is not queued again,
//! which is how a rebuild from an empty store re-sends nothing.

use lockout_proto::codec::{self, Encoding};
use lockout_proto::subject::Subjects;
use lockout_proto::{Notice, Rejection};
use lockout_store::{OutboxEntry, OutboxStream};

use crate::Delivery;

/// What the folder does with the notices and dead letters it produces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutboxMode {
    /// Queue them in each commit's outbox, skipping what the streams already hold, notices
    /// encoded as `notices`.
    Publish { floors: Floors, notices: Encoding },
    /// Queue nothing: a rebuild (`lockoutctl replay`) that publishes nothing.
    Discard,
}

/// What the streams already hold.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Floors {
    /// (`Lockout-Event-Seq`, `Lockout-Notice-Index`) of the last notice.
    pub notices: Option<(u64, u32)>,
    /// `Lockout-Seq` of the last dead letter.
    pub dead: Option<u64>,
}

impl Floors {
    /// Whether the streams hold `e` already.
    pub fn covers(&self, e: &OutboxEntry) -> bool {
        match e.stream {
            OutboxStream::Notices => self.notices.is_some_and(|f| (e.event_seq, e.index) <= f),
            OutboxStream::Dead => self.dead.is_some_and(|f| e.event_seq <= f),
        }
    }
}

/// The dead letter of a refused message: its bytes and headers (but its `Nats-Msg-Id`), plus
/// `Lockout-Error`, `Lockout-Subject`, `Lockout-Seq` and `Nats-Msg-Id: dead-<seq>`.
pub fn dead_letter(subjects: &Subjects, m: &impl Delivery, r: &Rejection) -> OutboxEntry {
    let mut headers: Vec<(String, String)> =
        m.header_pairs().into_iter().filter(|(name, _)| !name.eq_ignore_ascii_case(codec::NATS_MSG_ID)).collect();
    if m.header(codec::CONTENT_TYPE).is_none() {
        // No header means postcard; say so, as everything the service publishes does.
        headers.push((codec::CONTENT_TYPE.into(), codec::POSTCARD.into()));
    }
    let seq = m.seq();
    headers.push((codec::LOCKOUT_ERROR.into(), r.message.replace(['\r', '\n'], " ")));
    headers.push((codec::LOCKOUT_SUBJECT.into(), m.subject().to_owned()));
    headers.push((codec::LOCKOUT_SEQ.into(), seq.to_string()));
    headers.push((codec::NATS_MSG_ID.into(), format!("dead-{seq}")));
    let tenant = subjects.event_tenant(m.subject());
    OutboxEntry {
        stream: OutboxStream::Dead,
        event_seq: seq,
        index: 0,
        subject: subjects.dead(tenant.as_ref(), r.reason),
        headers,
        payload: m.payload().to_vec(),
    }
}

/// `e` with the `Lockout-Partition` header when `part` is known (several processes).
pub fn with_partition(mut e: OutboxEntry, part: Option<u32>) -> OutboxEntry {
    if let Some(p) = part {
        e.headers.push((codec::PARTITION.to_owned(), p.to_string()));
    }
    e
}

/// The partition an entry's `Lockout-Partition` header names, if it has one.
pub fn partition_of(e: &OutboxEntry) -> Option<u32> {
    e.headers.iter().find(|(k, _)| k == codec::PARTITION).and_then(|(_, v)| v.parse().ok())
}

/// The outbox entry of notice `n`, the `index`-th of the event at `event_seq`. Trace headers
/// are the caller's to add (see lockoutd's telemetry).
pub fn notice_entry(subjects: &Subjects, encoding: Encoding, event_seq: u64, index: u32, n: &Notice) -> OutboxEntry {
    let headers = vec![
        (codec::CONTENT_TYPE.to_owned(), encoding.content_type().to_owned()),
        (codec::NATS_MSG_ID.to_owned(), n.id().to_string()),
        (codec::EVENT_SEQ.to_owned(), event_seq.to_string()),
        (codec::NOTICE_INDEX.to_owned(), index.to_string()),
    ];
    OutboxEntry {
        stream: OutboxStream::Notices,
        event_seq,
        index,
        subject: subjects.notice(n.tenant(), n.kind()),
        headers,
        payload: n.encode(encoding),
    }
}
