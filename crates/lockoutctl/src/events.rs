//! Reading `LOCKOUT_EVENTS` (and `LOCKOUT_NOTICES`) with ordered consumers.
//!
//! [`read`] snapshots the stream's last sequence, creates an ordered pull consumer with the
//! given filters and calls back with every message up to that sequence, in order, with its
//! JetStream stored time (the fold's clock). [`accept`] decodes and checks an event exactly
//! as lockoutd does, so refused events are skipped here as they are there.

use std::time::Duration;

use anyhow::Context as _;
use async_nats::jetstream::consumer::{pull, DeliverPolicy};
use futures::StreamExt;
use lockout_proto::event::Event;
use lockout_proto::{Millis, Rejection, Subjects};

use crate::ctx::Ctx;

/// One stored message, with its sequence and stored time.
pub type Raw = lockout_nats::Delivered;

/// Where a read starts and stops.
#[derive(Debug, Clone, Copy)]
pub struct Range {
    /// First sequence to read (1 = the start).
    pub from_seq: u64,
    /// Start at the first message stored at or after this time instead (overrides `from_seq`).
    pub from_time: Option<Millis>,
    /// Last sequence to read; capped at the stream's last sequence when the read starts.
    pub to_seq: u64,
}

impl Default for Range {
    fn default() -> Self {
        Range { from_seq: 1, from_time: None, to_seq: u64::MAX }
    }
}

/// What a read knows when it starts, for progress bars.
#[derive(Debug, Clone, Copy)]
pub struct Plan {
    /// Messages matching the filters from the start position (as the consumer counted them).
    pub pending: u64,
    /// The last sequence the read will deliver at most.
    pub end: u64,
    /// Consumers started over because the one reading stopped delivering (see [`read`]).
    pub restarts: u32,
}

/// Reads the messages of `stream` matching `filters` within `range`, in order, calling
/// `each` per message; `each` returns false to stop early. With `progress`, shows a progress
/// bar with that label on standard error (hidden when it is not a terminal).
///
/// A read survives a consumer that stops delivering (a pull lost, a server that hung for a
/// while): after an idle period (3 × `--timeout`, at least 15 s) it starts a new consumer
/// after the last message delivered and reads on, each message still once and in order; it
/// gives up after [`IDLE_PERIODS`] idle periods in a row.
pub async fn read(
    ctx: &Ctx,
    stream: &str,
    filters: Vec<String>,
    range: Range,
    progress: Option<&str>,
    mut each: impl AsyncFnMut(Raw) -> anyhow::Result<bool>,
) -> anyhow::Result<Plan> {
    let s = ctx.js.get_stream(stream).await.with_context(|| {
        format!("looking up stream {stream}: is this the right --prefix, and has lockoutd ever started?")
    })?;
    let last = s.get_info().await.with_context(|| format!("reading the info of stream {stream}"))?.state.last_sequence;
    let end = last.min(range.to_seq);
    if end == 0 || end < range.from_seq {
        return Ok(Plan { pending: 0, end, restarts: 0 });
    }
    let deliver_policy = match (range.from_time, range.from_seq) {
        (Some(t), _) => DeliverPolicy::ByStartTime {
            start_time: time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(t) * 1_000_000)
                .unwrap_or(time::OffsetDateTime::UNIX_EPOCH),
        },
        (None, 0 | 1) => DeliverPolicy::All,
        (None, n) => DeliverPolicy::ByStartSequence { start_sequence: n },
    };
    let reader = Reader { stream: s, name: stream, filters, start: deliver_policy };
    let consumer = reader.consumer(reader.start).await?;
    let pending = consumer.cached_info().num_pending;
    let mut plan = Plan { pending, end, restarts: 0 };
    if pending == 0 {
        return Ok(plan);
    }
    let bar = progress.map(|what| progress_bar(pending.min(end.saturating_sub(range.from_seq) + 1), what));
    let r = read_loop(ctx, &reader, consumer, end, bar.as_ref(), &mut plan.restarts, &mut each).await;
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    r.map(|()| plan)
}

/// A progress bar on standard error: hidden when that is not a terminal.
pub fn progress_bar(len: u64, what: &str) -> indicatif::ProgressBar {
    let pb = indicatif::ProgressBar::with_draw_target(Some(len), indicatif::ProgressDrawTarget::stderr());
    if let Ok(style) = indicatif::ProgressStyle::with_template(&format!(
        "{what} [{{bar:30}}] {{human_pos}}/{{human_len}} events, {{per_sec}}, ETA {{eta}}"
    )) {
        pb.set_style(style.progress_chars("=> "));
    }
    pb
}

/// The stream and filters of a read: makes its ordered consumers.
struct Reader<'a> {
    stream: async_nats::jetstream::stream::Stream,
    name: &'a str,
    filters: Vec<String>,
    /// Where the read starts.
    start: DeliverPolicy,
}

type Ordered = async_nats::jetstream::consumer::Consumer<pull::OrderedConfig>;

impl Reader<'_> {
    async fn consumer(&self, deliver_policy: DeliverPolicy) -> anyhow::Result<Ordered> {
        let (filter_subject, filter_subjects) = if self.filters.len() == 1 {
            (self.filters[0].clone(), Vec::new())
        } else {
            (String::new(), self.filters.clone())
        };
        self.stream
            .create_consumer(pull::OrderedConfig {
                description: Some("lockoutctl read".to_owned()),
                filter_subject,
                filter_subjects,
                deliver_policy,
                ..Default::default()
            })
            .await
            .with_context(|| format!("creating an ordered consumer on {}", self.name))
    }
}

/// Consecutive idle periods (each 3 × `--timeout`, at least 15 s) after which a read that
/// still expects messages gives up; after each but the last it starts a new consumer after the
/// last message delivered (keeping the old one when that fails).
const IDLE_PERIODS: u32 = 3;

async fn read_loop(
    ctx: &Ctx,
    reader: &Reader<'_>,
    consumer: Ordered,
    end: u64,
    bar: Option<&indicatif::ProgressBar>,
    restarts: &mut u32,
    each: &mut impl AsyncFnMut(Raw) -> anyhow::Result<bool>,
) -> anyhow::Result<()> {
    let stream = reader.name;
    let mut messages = consumer.messages().await.with_context(|| format!("reading {stream}"))?;
    let idle = ctx.timeout.max(Duration::from_secs(5)) * 3;
    let mut last: Option<u64> = None;
    let mut idle_periods = 0;
    loop {
        let Ok(next) = tokio::time::timeout(idle, messages.next()).await else {
            // The ordered consumer stopped delivering (async-nats recreates one only after
            // two missed 15 s heartbeats): start a new one after the last message delivered.
            idle_periods += 1;
            let at = last.map_or_else(|| "the start".to_owned(), |l| format!("sequence {l}"));
            anyhow::ensure!(
                idle_periods < IDLE_PERIODS,
                "reading {stream}: no message within {} s, {IDLE_PERIODS} times in a row, although more were pending (stopped after {at}); is nats-server up?",
                idle.as_secs()
            );
            let from = last.map_or_else(|| reader.start, |l| DeliverPolicy::ByStartSequence { start_sequence: l + 1 });
            match reader.consumer(from).await {
                Ok(c) => match c.messages().await {
                    Ok(m) => {
                        eprintln!("lockoutctl: reading {stream}: no message within {} s after {at}; reading on with a new consumer.", idle.as_secs());
                        messages = m;
                        *restarts += 1;
                    }
                    Err(e) => eprintln!("lockoutctl: reading {stream}: no message within {} s after {at}; a new consumer failed too ({e}); waiting on.", idle.as_secs()),
                },
                Err(e) => eprintln!("lockoutctl: reading {stream}: no message within {} s after {at}; a new consumer failed too ({e:#}); waiting on.", idle.as_secs()),
            }
            continue;
        };
        let m = match next {
            None => return Ok(()),
            Some(Err(e)) => return Err(anyhow::Error::new(e).context(format!("reading {stream}"))),
            Some(Ok(m)) => m,
        };
        let left = m.info().map_err(|e| anyhow::anyhow!("reading {stream}: bad message metadata: {e}"))?.pending;
        let raw = Raw::new(m).context("a stored message without JetStream metadata")?;
        let seq = raw.seq;
        if seq > end {
            return Ok(());
        }
        if last.is_some_and(|l| seq <= l) {
            // Already delivered (a consumer started over): never twice.
            continue;
        }
        (last, idle_periods) = (Some(seq), 0);
        if let Some(b) = bar {
            b.inc(1);
        }
        if !each(raw).await? || seq >= end || left == 0 {
            return Ok(());
        }
    }
}

/// Decodes and checks an event as lockoutd does (the engine's [`lockout_engine::accept`]);
/// `Err` is why lockoutd refused it.
pub fn accept(subjects: &Subjects, raw: &Raw) -> Result<Event, Rejection> {
    lockout_engine::accept(subjects, raw).map(|(_, e)| e)
}

/// The type token of an event subject (its last token), whatever the subject's shape.
pub fn subject_type(subject: &str) -> &str {
    subject.rsplit('.').next().unwrap_or("")
}
