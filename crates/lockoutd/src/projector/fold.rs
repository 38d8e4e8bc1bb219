//! The fold stage: owns the engine's [`BatchFolder`] (and so the cache of recent user
//! states), folds each gathered batch, turns the engine's reports into telemetry
//! ([`crate::observe`]) and holds batches nobody waits for ([`Linger`]) before handing them
//! to the commit stage. It also watches for a consumer that stopped delivering.

use std::time::Duration;

use async_nats::jetstream::consumer::PullConsumer;
use lockout_engine::linger::{Linger, Lingering};
use lockout_engine::{BatchFolder, OutboxMode};
use lockout_nats::Delivered;
use lockout_proto::EventKind;
use lockout_store::Commit;
use tokio::sync::{mpsc, watch};

use super::ConsumerStalled;
use crate::observe::{FoldObserver, FoldStats, Stat};
use crate::Shared;

/// How long the projector waits for events before it checks that its consumer still delivers
/// and is still configured as lockoutd created it.
const STALL_CHECK_AFTER: Duration = Duration::from_secs(10);

/// A folded batch on its way to the store and the streams.
pub(super) struct FoldedBatch {
    /// `None` when the batch held only redeliveries.
    pub commit: Option<Commit>,
    pub stats: FoldStats,
    pub span: tracing::Span,
    /// Events the consumer still had after this batch's last one.
    pub pending: u64,
    /// The stream's last sequence as of this batch (its last event's plus `pending`).
    pub stream_last: u64,
    /// The batch's last message: acknowledging it acknowledges the batch (`AckPolicy::All`).
    pub last: async_nats::jetstream::Message,
}

impl Lingering for FoldedBatch {
    /// A notice or dead letter to publish, a policy, or an event other than an attempt (the
    /// service's writes and the expiry wait until their events are folded).
    fn urgent(&self) -> bool {
        self.commit.as_ref().is_some_and(|c| !c.outbox.is_empty() || !c.policies.is_empty())
            || self
                .stats
                .counts
                .iter()
                .any(|(s, _)| matches!(s, Stat::Folded { kind, .. } if *kind != EventKind::Attempt.as_str()))
    }

    /// One commit for both; acknowledging `later`'s last message acknowledges both. The
    /// commit is recorded in `later`'s batch span.
    fn absorb(&mut self, later: FoldedBatch) {
        self.commit = match (self.commit.take(), later.commit) {
            (Some(mut c), Some(l)) => {
                c.absorb(l);
                Some(c)
            }
            (c, l) => c.or(l),
        };
        self.stats.absorb(&later.stats);
        self.span = later.span;
        self.pending = later.pending;
        self.stream_last = later.stream_last;
        self.last = later.last;
    }
}

pub(super) async fn fold_loop(
    shared: &Shared,
    session: super::Session,
    tx: mpsc::Sender<FoldedBatch>,
    mut stop: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let cfg = &shared.config;
    let super::Session { consumer, consumer_name, floors, partition_floors, run } = session;
    let outbox = OutboxMode::Publish { floors, notices: cfg.notice_encoding };
    let mut folder = BatchFolder::new(shared.store.clone(), cfg.subjects.clone(), outbox)?;
    folder.set_state_cache_bytes(cfg.state_cache_bytes());
    folder.set_partitions(run.set.clone());
    folder.set_partition_floors(partition_floors);
    let observer = FoldObserver::new(&cfg.subjects, cfg.trace_events_ratio);
    let messages =
        consumer.stream().max_messages_per_batch(cfg.batch).heartbeat(Duration::from_secs(5)).messages().await?;
    // One batch waits while the next is received and another folds.
    let (gtx, mut gathered) = mpsc::channel::<Vec<Delivered>>(1);
    // A `JoinSet` aborts its tasks when dropped: the receiver ends with this loop.
    let mut receiver = tokio::task::JoinSet::new();
    receiver.spawn(super::receive::receive_loop(messages, cfg.batch, gtx));
    let mut linger = Linger::new(cfg.commit_linger, cfg.batch);
    let mut next_delivery = None;
    let mut folded_to = shared.store.checkpoint()?;
    let mut skew_warned = None;
    loop {
        let due = linger.due();
        let batch = tokio::select! {
            biased;
            _ = stop.changed() => {
                // What was folded is committed before the projector stops.
                let _ = send_held(&mut linger, &tx).await;
                return Ok(());
            }
            m = gathered.recv() => m,
            () = until(due) => {
                send_held(&mut linger, &tx).await?;
                continue;
            }
            () = tokio::time::sleep(STALL_CHECK_AFTER) => {
                check_delivering(&consumer, &consumer_name, &cfg.subjects.events_all()).await?;
                continue;
            }
        };
        let Some(mut batch) = batch else {
            // What was folded is still committed; the next run starts after it.
            let _ = send_held(&mut linger, &tx).await;
            return Err(ConsumerStalled("the consumer's message stream ended".into()).into());
        };
        let lost = lost_deliveries(&mut next_delivery, &mut batch);
        if batch.is_empty() {
            let _ = send_held(&mut linger, &tx).await;
            return Err(lost.expect("an empty batch lost deliveries").into());
        }
        for seq in skipped(&mut folded_to, batch.iter().map(|m| m.seq)) {
            if let Err(e) = check_skipped(shared, seq).await {
                // Folded so far is committed; the next run starts after it, with a consumer
                // lockoutd created.
                send_held(&mut linger, &tx).await?;
                return Err(e);
            }
        }
        let Some(last) = batch.last() else { continue };
        let (pending, stream_last) =
            last.msg.info().map_or((u64::MAX, 0), |i| (i.pending, i.stream_sequence.saturating_add(i.pending)));
        if pending == 0 {
            watch_skew(shared, last.time, &mut skew_warned);
        }
        let span = observer.batch_span(batch.len());
        // A failing store (disk full) must not lose or skip events: retry the same batch.
        let mut fold = loop {
            match span.in_scope(|| folder.fold_batch(&batch)) {
                Ok(f) => break f,
                Err(e) => {
                    shared.health.set_store_error(Some(e.to_string()));
                    if tx.is_closed() {
                        // The committer stopped on a refused commit: the run ends, and the
                        // supervisor reopens the store and starts over from its checkpoint.
                        let _ = send_held(&mut linger, &tx).await;
                        anyhow::bail!("the committer stopped; folding failed meanwhile: {e}");
                    }
                    tracing::error!(error = %e, "Folding a batch failed; retrying in 1 s without acknowledging.");
                    tokio::select! {
                        _ = stop.changed() => return Ok(()),
                        () = tokio::time::sleep(Duration::from_secs(1)) => {}
                    }
                }
            }
        };
        let stats = span.in_scope(|| observer.observe(&batch, &fold.events, fold.commit.as_mut()));
        let events = batch.len();
        let last = batch.pop().expect("a batch has a last message").msg;
        drop(batch);
        let folded = FoldedBatch { commit: fold.commit.take(), stats, span, pending, stream_last, last };
        if let Some(folded) = linger.offer(folded, events, std::time::Instant::now()) {
            if tx.send(folded).await.is_err() {
                anyhow::bail!("the committer stopped");
            }
        }
        if let Some(lost) = lost {
            // What came before the jump is folded and committed; the next run starts after it.
            send_held(&mut linger, &tx).await?;
            return Err(lost.into());
        }
    }
}

/// Cuts `batch` before the first message whose delivery sequence is not the one expected.
///
/// A consumer numbers its deliveries; deliveries lost on the way (a pull's messages in flight
/// when the connection dropped, or a consumer leader that died before it replicated what it
/// had sent) leave a jump, and the messages after it arrive before the lost ones are
/// redelivered. Folding on would fold them out of order and then skip the lost ones as
/// redeliveries, so the projector folds up to the jump and starts over from its checkpoint.
fn lost_deliveries(next: &mut Option<u64>, batch: &mut Vec<Delivered>) -> Option<ConsumerStalled> {
    let (i, expected) = first_jump(next, batch.iter().map(|m| m.delivery))?;
    let lost = ConsumerStalled(format!(
        "deliveries lost: the consumer's delivery {} came after {} (stream sequence {})",
        batch[i].delivery,
        expected - 1,
        batch[i].seq
    ));
    batch.truncate(i);
    Some(lost)
}

/// The index of the first delivery sequence that is not one more than the one before (the
/// first of a run may be anything), with the one expected there; advances `next`.
fn first_jump(next: &mut Option<u64>, deliveries: impl Iterator<Item = u64>) -> Option<(usize, u64)> {
    for (i, d) in deliveries.enumerate() {
        match *next {
            Some(expected) if d != expected => return Some((i, expected)),
            _ => *next = Some(d + 1),
        }
    }
    None
}

/// The stream sequences a batch passes over: for each jump past the next expected sequence,
/// the first one missing. Advances `folded_to`; redeliveries at or below it are no jump.
fn skipped(folded_to: &mut u64, seqs: impl Iterator<Item = u64>) -> Vec<u64> {
    let mut missing = Vec::new();
    for seq in seqs {
        if seq > *folded_to + 1 {
            missing.push(*folded_to + 1);
        }
        *folded_to = (*folded_to).max(seq);
    }
    missing
}

/// A sequence the consumer passed over must be gone from the stream (deleted, purged, dropped
/// by a limit). One the stream still holds means the consumer no longer delivers every event
/// (another client narrowed its filter): the projector starts over, before folding past it,
/// with a consumer it creates.
async fn check_skipped(shared: &Shared, seq: u64) -> anyhow::Result<()> {
    use async_nats::jetstream::stream::RawMessageErrorKind;
    let stream = shared.js.get_stream_no_info(shared.config.subjects.events_stream()).await?;
    match stream.get_raw_message(seq).await {
        Err(e) if e.kind() == RawMessageErrorKind::NoMessageFound => Ok(()),
        Ok(_) => Err(ConsumerStalled(format!(
            "the consumer passed over event {seq}, which the stream holds: another client changed its configuration"
        ))
        .into()),
        Err(e) => Err(ConsumerStalled(format!("checking event {seq}, which the consumer passed over: {e}")).into()),
    }
}

/// After a quiet spell: fine when the consumer has nothing more and is configured as lockoutd
/// created it; a pull that stopped after a reconnect (its events wait or sit unacknowledged
/// at the server) or a configuration someone else changed otherwise.
async fn check_delivering(consumer: &PullConsumer, name: &str, filter: &str) -> anyhow::Result<()> {
    let info = consumer.get_info().await;
    if let Some(wrong) = info.as_ref().ok().and_then(|i| crate::streams::foreign_change(&i.config, name, filter)) {
        return Err(ConsumerStalled(format!("another client changed the consumer's configuration: {wrong}")).into());
    }
    match info {
        Ok(i) if i.num_pending > 0 || i.num_ack_pending > 0 => Err(ConsumerStalled(format!(
            "nothing delivered for {} s while {} events wait and {} are unacknowledged",
            STALL_CHECK_AFTER.as_secs(),
            i.num_pending,
            i.num_ack_pending
        ))
        .into()),
        Ok(_) => Ok(()),
        Err(e) => {
            tracing::debug!(error = %e, "Reading the consumer's state failed; checking again later.");
            Ok(())
        }
    }
}

/// Completes at `due`; never when there is none.
async fn until(due: Option<std::time::Instant>) {
    match due {
        Some(d) => tokio::time::sleep_until(d.into()).await,
        None => std::future::pending().await,
    }
}

/// Hands the batch the linger holds, if any, to the committer.
async fn send_held(linger: &mut Linger<FoldedBatch>, tx: &mpsc::Sender<FoldedBatch>) -> anyhow::Result<()> {
    match linger.take() {
        Some(held) => tx.send(held).await.map_err(|_| anyhow::anyhow!("the committer stopped")),
        None => Ok(()),
    }
}

/// Skew above which lockoutd warns: half of what an `expired` event may be early.
const SKEW_WARN_MS: i64 = (lockout_core::EXPIRED_EARLY_ALLOWANCE_MS / 2) as i64;
/// How often at most the skew warning is repeated.
const SKEW_WARN_EVERY: Duration = Duration::from_secs(600);

/// Offers the stored time of a batch's last event, delivered live (nothing pending behind it),
/// to the clock-skew estimate; records the metric and warns while the skew is large.
fn watch_skew(shared: &Shared, stored: u64, warned: &mut Option<std::time::Instant>) {
    let skew = &shared.health.clock_skew;
    skew.observe(shared.clock.now_ms(), stored);
    let Some(ms) = skew.skew_ms() else { return };
    shared.metrics.clock_skew(ms);
    if ms.abs() > SKEW_WARN_MS && warned.is_none_or(|t| t.elapsed() >= SKEW_WARN_EVERY) {
        tracing::warn!(
            skew_ms = ms,
            "lockoutd's clock is {} ms {} the NATS server's (from live events' stored times). Locks end by the server's clock: lockoutd corrects for it when it appends `expired` events and answers `status`, but the `at` of the events it writes carries its own clock. Check NTP on both machines.",
            ms.abs(),
            if ms > 0 { "ahead of" } else { "behind" }
        );
        *warned = Some(std::time::Instant::now());
    }
}

#[cfg(test)]
mod tests {
    use super::{first_jump, skipped};

    #[test]
    fn passed_over_sequences_are_the_first_of_each_jump() {
        let mut at = 4;
        assert_eq!(skipped(&mut at, [3, 4, 5, 6].into_iter()), Vec::<u64>::new(), "redeliveries, then in order");
        assert_eq!(skipped(&mut at, [9, 10, 12].into_iter()), vec![7, 11]);
        assert_eq!(at, 12);
        assert_eq!(skipped(&mut at, [13].into_iter()), Vec::<u64>::new(), "across batches");
    }

    #[test]
    fn a_jump_in_delivery_sequences_is_found_where_it_happens() {
        let mut next = None;
        assert_eq!(first_jump(&mut next, [7, 8, 9].into_iter()), None, "a run may start anywhere");
        assert_eq!(next, Some(10));
        assert_eq!(first_jump(&mut next, [10, 11].into_iter()), None, "across batches");
        assert_eq!(first_jump(&mut next, [12, 14, 15].into_iter()), Some((1, 13)));
        let mut next = Some(3);
        assert_eq!(first_jump(&mut next, [5].into_iter()), Some((0, 3)), "at a batch's start");
        assert_eq!(first_jump(&mut next, [2].into_iter()), Some((0, 3)), "backwards is a jump too");
    }
}
