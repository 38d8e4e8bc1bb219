//! Publishing the outbox: notices and dead letters committed with the fold.
//!
//! Entries are published in (event seq, index) order, each with its `Nats-Msg-Id`, and
//! removed from the store once JetStream acknowledged them. The projector sends a batch's
//! entries ([`send`]) before the previous batch's acknowledgements are in ([`settle`]): one
//! connection keeps them in order, and a failed one is sent again with all after it. At start,
//! [`read_floors`] reads the last message of `LOCKOUT_NOTICES` and `LOCKOUT_DEAD`: anything at
//! or below them was published already (in-order publishing makes that true), so a rebuild
//! from an empty store or a lost store tail never publishes a notice twice.

use std::time::Duration;

use anyhow::Context as _;
use async_nats::jetstream;
use async_nats::HeaderMap;
use lockout_engine::Floors;
use lockout_proto::codec;
use lockout_proto::subject::Subjects;
use lockout_store::{OutboxEntry, Store};

/// What the streams already hold: the last notice's (`Lockout-Event-Seq`,
/// `Lockout-Notice-Index`) and the last dead letter's `Lockout-Seq`.
pub async fn read_floors(js: &jetstream::Context, subjects: &Subjects) -> anyhow::Result<Floors> {
    let notices = last_headers(js, &subjects.notices_stream(), &subjects.notices_all()).await?.and_then(|h| {
        let seq = h.get(codec::EVENT_SEQ)?.as_str().parse().ok()?;
        let idx = h.get(codec::NOTICE_INDEX).and_then(|v| v.as_str().parse().ok()).unwrap_or(u32::MAX);
        Some((seq, idx))
    });
    let dead = last_headers(js, &subjects.dead_stream(), &subjects.dead_all())
        .await?
        .and_then(|h| h.get(codec::LOCKOUT_SEQ)?.as_str().parse().ok());
    Ok(Floors { notices, dead })
}

async fn last_headers(js: &jetstream::Context, stream: &str, all: &str) -> anyhow::Result<Option<HeaderMap>> {
    let stream = js.get_stream(stream).await.with_context(|| format!("looking up stream {stream}"))?;
    match stream.get_last_raw_message_by_subject(all).await {
        Ok(m) => Ok(Some(m.headers)),
        Err(e) if e.kind() == jetstream::stream::LastRawMessageErrorKind::NoMessageFound => Ok(None),
        Err(e) => Err(anyhow::Error::new(e).context(format!("reading the last message of {all}"))),
    }
}

/// Publishes what an earlier run committed but did not publish, skipping what the streams
/// already hold: below `floors` (the streams' last messages) for entries without a partition
/// (written by a v1 lockoutd), below their partition's floor for the others. Entries of
/// partitions this run does not fold are dropped: their owner's catch-up queues them.
pub async fn drain(
    js: &jetstream::Context,
    store: &Store,
    floors: &Floors,
    partition_floors: &[Floors],
    run: &lockout_proto::partition::Set,
) -> anyhow::Result<()> {
    let (done, todo): (Vec<_>, Vec<_>) =
        store.outbox()?.into_iter().partition(|e| match lockout_engine::outbox::partition_of(e) {
            None => floors.covers(e),
            Some(p) => !run.contains(p) || partition_floors.get(p as usize).is_some_and(|f| f.covers(e)),
        });
    store.remove_outbox(&done)?;
    if !todo.is_empty() {
        tracing::info!(entries = todo.len(), "Publishing the outbox left by the previous run.");
    }
    publish(js, store, &todo).await;
    Ok(())
}

/// What each partition's published entries reach, as a run goes on.
#[derive(Debug, Default)]
pub struct PartitionFloors {
    floors: Vec<Floors>,
    /// Partitions whose floor moved since [`PartitionFloors::take`].
    moved: std::collections::BTreeSet<u32>,
}

impl PartitionFloors {
    /// Starting from the floors recorded when the run started.
    pub fn new(floors: Vec<Floors>) -> PartitionFloors {
        PartitionFloors { floors, moved: Default::default() }
    }

    /// Records `entries`, acknowledged, as published.
    pub fn published(&mut self, entries: &[OutboxEntry]) {
        for e in entries {
            let Some(p) = lockout_engine::outbox::partition_of(e) else { continue };
            let Some(f) = self.floors.get_mut(p as usize) else { continue };
            self.moved.insert(p);
            match e.stream {
                lockout_store::OutboxStream::Notices => {
                    f.notices = f.notices.max(Some((e.event_seq, e.index)));
                }
                lockout_store::OutboxStream::Dead => f.dead = f.dead.max(Some(e.event_seq)),
            }
        }
    }

    /// The floors that moved since the last call, by partition.
    pub fn take(&mut self) -> std::collections::BTreeMap<u32, Floors> {
        std::mem::take(&mut self.moved).into_iter().map(|p| (p, self.floors[p as usize])).collect()
    }
}

/// Entries published before their acknowledgements are awaited.
const WINDOW: usize = 256;

/// How long after sending an entry its acknowledgement may take (async-nats' own default).
const ACK_WAIT: Duration = Duration::from_secs(5);

/// Entries sent to JetStream whose acknowledgements are still to come, in order.
pub struct InFlight {
    acks: Vec<async_nats::jetstream::context::PublishAckFuture>,
    /// Whether every entry was handed to the connection (else some must be sent again).
    sent_all: bool,
    /// When the acknowledgements are given up on: [`ACK_WAIT`] after sending, not after
    /// `settle` starts to wait. (An ack future's own timeout starts when it is first polled,
    /// so awaiting lost acks one by one would take `ACK_WAIT` each: minutes for a window of
    /// notices lost in a reconnect.)
    deadline: tokio::time::Instant,
}

/// Publishes `entries` in order without waiting for JetStream's acknowledgements, so the
/// next batch's entries can follow at once; [`settle`] waits for them.
pub async fn send(js: &jetstream::Context, entries: &[OutboxEntry]) -> InFlight {
    let deadline = tokio::time::Instant::now() + ACK_WAIT;
    let mut acks = Vec::with_capacity(entries.len());
    for e in entries {
        match js.publish_with_headers(e.subject.clone(), headers(e), e.payload.clone().into()).await {
            Ok(ack) => acks.push(ack),
            Err(_) => return InFlight { acks, sent_all: false, deadline },
        }
    }
    InFlight { acks, sent_all: true, deadline }
}

/// Awaits `acks` in order until `deadline`; `false` at the first one that failed or is late
/// (the rest are not waited for: everything is sent again anyway).
async fn all_acked(
    acks: Vec<async_nats::jetstream::context::PublishAckFuture>,
    deadline: tokio::time::Instant,
) -> bool {
    for ack in acks {
        if !matches!(tokio::time::timeout_at(deadline, ack).await, Ok(Ok(_))) {
            return false;
        }
    }
    true
}

/// Waits until JetStream acknowledged every entry sent by [`send`]; when one was not, sends
/// them all again (duplicates are dropped by their `Nats-Msg-Id`) until they are. Then removes
/// them from the store.
pub async fn settle(js: &jetstream::Context, store: &Store, entries: &[OutboxEntry], inflight: InFlight) {
    let InFlight { acks, sent_all, deadline } = inflight;
    if !(sent_all && all_acked(acks, deadline).await) {
        publish_until_acked(js, entries).await;
    }
    if !entries.is_empty() {
        if let Err(err) = store.remove_outbox(entries) {
            tracing::warn!(error = %err, "Removing published outbox entries failed; the next start skips them by the stream floors.");
        }
    }
}

/// Publishes entries in order and removes them from the store once acknowledged.
pub async fn publish(js: &jetstream::Context, store: &Store, entries: &[OutboxEntry]) {
    let inflight = send(js, entries).await;
    settle(js, store, entries, inflight).await;
}

fn headers(e: &OutboxEntry) -> HeaderMap {
    let mut headers = HeaderMap::new();
    for (k, v) in &e.headers {
        headers.append(k.as_str(), v.as_str());
    }
    headers
}

/// Publishes entries in order, in pipelined windows, retrying from the first entry JetStream
/// did not acknowledge (entries after it that did get stored are dropped as duplicates by
/// their `Nats-Msg-Id`), until every one is acknowledged.
///
/// One connection keeps publish order, so the streams hold a prefix of the outbox. A crash
/// right after an entry failed while a later one was stored is the one gap the start-up
/// floors cannot see; it needs two faults at once.
async fn publish_until_acked(js: &jetstream::Context, entries: &[OutboxEntry]) {
    let mut done = 0;
    let mut delay = Duration::from_millis(50);
    while done < entries.len() {
        let window = &entries[done..(done + WINDOW).min(entries.len())];
        let deadline = tokio::time::Instant::now() + ACK_WAIT;
        let mut acks = Vec::with_capacity(window.len());
        let mut failure = None;
        for e in window {
            match js.publish_with_headers(e.subject.clone(), headers(e), e.payload.clone().into()).await {
                Ok(ack) => acks.push(ack),
                Err(err) => {
                    failure = Some(anyhow::Error::new(err));
                    break;
                }
            }
        }
        let mut acked = 0;
        for ack in acks {
            match tokio::time::timeout_at(deadline, ack).await {
                Ok(Ok(_)) => acked += 1,
                Ok(Err(err)) => {
                    failure = Some(anyhow::Error::new(err));
                    break;
                }
                Err(_) => {
                    failure = Some(anyhow::anyhow!("no acknowledgement within {} s", ACK_WAIT.as_secs()));
                    break;
                }
            }
        }
        done += acked;
        if let Some(err) = failure {
            tracing::warn!(error = %err, subject = %entries[done].subject, "Publishing from the outbox failed; retrying.");
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_secs(2));
        } else {
            delay = Duration::from_millis(50);
        }
    }
}
