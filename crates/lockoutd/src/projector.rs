//! The projector: one fetched batch → decode, fold → one sled commit → publish → ack.
//!
//! [`BatchFolder`] holds the logic without NATS: it turns the messages of a batch into a
//! [`Commit`] (changed states, policies, the outbox of notices and dead letters, and the
//! checkpoint). [`run`] is the pipeline around it: while one batch is being committed and
//! its outbox published, the next one is pulled and folded against the folder's cache of the
//! latest states ([`crate::cache`]). Commits land strictly in order, one at a time. Events at
//! or below the store's checkpoint are redeliveries and are skipped, so every event is folded
//! exactly once.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::consumer::PullConsumer;
use async_nats::HeaderMap;
use futures::{FutureExt as _, StreamExt};
use lockout_core::UserState;
use lockout_proto::codec::{self, Encoding};
use lockout_proto::event::{Event, Outcome};
use lockout_proto::subject::{EventSubject, Subjects, Target};
use lockout_proto::{Millis, Notice, Policy, Rejection};
use lockout_store::{Commit, LockIndex, OutboxEntry, OutboxStream, StateChange, Store};
use tokio::sync::{mpsc, watch};

use crate::cache::{HashMap, StateCache, UserKey};
use crate::linger::Linger;
use crate::outbox::Floors;
use crate::telemetry::{self, FoldStats, Stat};
use crate::Shared;

/// One message of `LOCKOUT_EVENTS` as the projector sees it.
pub struct Incoming<'a> {
    pub seq: u64,
    pub subject: &'a str,
    pub headers: Option<&'a HeaderMap>,
    pub payload: &'a [u8],
    /// JetStream's stored time: the fold's clock.
    pub time: Millis,
}

/// Folds batches into commits; keeps the tenants' policies cached between batches.
pub struct BatchFolder {
    store: Store,
    subjects: Subjects,
    notice_encoding: Encoding,
    policies: HashMap<String, Policy>,
    floors: Floors,
    checkpoint: u64,
    checkpoint_time: Millis,
    trace_events_ratio: f64,
    stats: FoldStats,
    /// The latest state of recently folded users (the store's, or newer while in flight).
    cache: StateCache,
    /// `process <events stream>`: the exported name of the fold spans (messaging conventions).
    span_name: String,
    events_stream: String,
    /// The cache holds every user state the store has: the store had none when this folder
    /// started and no generation was dropped since. A miss is then a new user, no read needed
    /// (what makes rebuilds from an empty store fast).
    cache_is_complete: bool,
}

/// Default budget of the state cache.
pub const DEFAULT_STATE_CACHE_BYTES: usize = 64 << 20;

/// A user's state within a batch: as it was before the batch, and as folded so far.
struct Pending {
    original: Box<UserState>,
    state: Box<UserState>,
}

fn header<'a>(h: Option<&'a HeaderMap>, name: &str) -> Option<&'a str> {
    h.and_then(|h| h.get(name)).map(|v| v.as_str())
}

/// The headers the fold reads from every event, found in one pass over the map: each
/// `HeaderMap::get` builds a `HeaderName` (allocating one for a non-standard name) and hashes
/// it with SipHash, which cost more than the rest of the header handling together. Names match
/// exactly, as `get` matches them.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct EventHeaders<'a> {
    content_type: Option<&'a str>,
    traceparent: Option<&'a str>,
}

impl<'a> EventHeaders<'a> {
    fn of(h: Option<&'a HeaderMap>) -> Self {
        let mut found = EventHeaders::default();
        for (name, values) in h.into_iter().flat_map(HeaderMap::iter) {
            let slot = match AsRef::<str>::as_ref(name) {
                codec::CONTENT_TYPE => &mut found.content_type,
                codec::TRACEPARENT => &mut found.traceparent,
                _ => continue,
            };
            *slot = values.first().map(|v| v.as_str());
        }
        found
    }
}

impl BatchFolder {
    pub fn new(store: Store, subjects: Subjects, notice_encoding: Encoding, floors: Floors) -> anyhow::Result<Self> {
        let (checkpoint, checkpoint_time) = store.checkpoint_at()?;
        let cache_is_complete = store.all_users().next().is_none();
        let events_stream = subjects.events_stream();
        Ok(BatchFolder {
            store,
            subjects,
            notice_encoding,
            policies: HashMap::default(),
            floors,
            checkpoint,
            checkpoint_time,
            trace_events_ratio: crate::config::DEFAULT_TRACE_EVENTS_RATIO,
            stats: FoldStats::default(),
            cache: StateCache::new(DEFAULT_STATE_CACHE_BYTES),
            span_name: format!("process {events_stream}"),
            events_stream,
            cache_is_complete,
        })
    }

    /// Bounds the cache of recent user states (default [`DEFAULT_STATE_CACHE_BYTES`]).
    pub fn set_state_cache_bytes(&mut self, bytes: usize) {
        self.cache = StateCache::new(bytes);
    }

    /// Share of the events without a `traceparent` (0 to 1) that get their own
    /// `lockout.fold_event` span (default [`crate::config::DEFAULT_TRACE_EVENTS_RATIO`]).
    pub fn set_trace_events_ratio(&mut self, ratio: f64) {
        self.trace_events_ratio = ratio;
    }

    /// What the last [`BatchFolder::fold_batch`] counted: events by type and outcome, dead
    /// letters, locks and unlocks. Record it once the batch is committed.
    pub fn stats(&self) -> &FoldStats {
        &self.stats
    }

    /// The span of one fetched batch of `count` messages (the event spans' parent).
    pub fn batch_span(&self, count: usize) -> tracing::Span {
        tracing::debug_span!(
            "lockout.fold_batch",
            otel.name = %self.span_name,
            otel.kind = "consumer",
            messaging.system = "nats",
            messaging.destination.name = %self.events_stream,
            messaging.operation = "process",
            messaging.operation.type = "process",
            messaging.operation.name = "process",
            messaging.batch.message_count = count,
        )
    }

    pub fn checkpoint(&self) -> u64 {
        self.checkpoint
    }

    fn policy(&mut self, tenant: &str) -> Result<Policy, lockout_store::Error> {
        if let Some(p) = self.policies.get(tenant) {
            return Ok(*p);
        }
        let p = self.store.policy_or_default(tenant)?;
        self.policies.insert(tenant.to_owned(), p);
        Ok(p)
    }

    /// Folds a batch into a commit. Returns `None` when every message was a redelivery.
    ///
    /// Commits must land in the order they are returned, each before the store is read by
    /// anyone expecting its states. On error nothing is committed, the caches are as before
    /// the batch and the policy cache is dropped, so a retry starts clean.
    pub fn fold_batch(&mut self, msgs: &[Incoming<'_>]) -> Result<Option<Commit>, lockout_store::Error> {
        if self.cache.wants_rotation() && self.store.checkpoint_at()? == (self.checkpoint, self.checkpoint_time) {
            // Everything folded so far has landed: the oldest generation may go.
            self.cache.rotate();
            self.cache_is_complete = false;
        }
        let mut users: HashMap<UserKey, Pending> = HashMap::with_capacity_and_hasher(msgs.len(), Default::default());
        let r = self.fold_inner(msgs, &mut users);
        match &r {
            Ok(_) => {
                for (key, p) in users {
                    self.cache.put(key, p.state);
                }
            }
            Err(_) => {
                for (key, p) in users {
                    self.cache.put(key, p.original);
                }
                self.policies.clear();
            }
        }
        r
    }

    fn fold_inner(
        &mut self,
        msgs: &[Incoming<'_>],
        users: &mut HashMap<UserKey, Pending>,
    ) -> Result<Option<Commit>, lockout_store::Error> {
        let mut commit = Commit::default();
        let (mut last, mut last_time) = (self.checkpoint, self.checkpoint_time);
        let mut folded_any = false;
        self.stats.clear();
        for m in msgs {
            if m.seq <= last {
                if m.time <= last_time {
                    // A redelivery of an event already folded.
                    continue;
                }
                // Stored after the checkpoint yet numbered at or below it: the server lost
                // acknowledged messages (e.g. killed before syncing) and reuses sequences.
                tracing::error!(
                    seq = m.seq,
                    checkpoint = last,
                    "LOCKOUT_EVENTS reuses a sequence at or below the checkpoint: the server lost acknowledged events. Folding the new event; the lost ones stay folded."
                );
            }
            (last, last_time) = (m.seq, m.time);
            folded_any = true;
            // The event's span: a child of the publisher's trace when it sent a traceparent
            // (always: the publisher decided; its sampled flag still applies), else of the
            // batch span for a deterministic share of events. Disabled (free) unless a tracing
            // layer wants it.
            let headers = EventHeaders::of(m.headers);
            let traced = headers.traceparent.is_some();
            let span = if traced || telemetry::sample_event(m.seq, self.trace_events_ratio) {
                let span = tracing::debug_span!(
                    "lockout.fold_event",
                    otel.name = %self.span_name,
                    otel.kind = "consumer",
                    messaging.system = "nats",
                    messaging.destination.name = %self.events_stream,
                    messaging.operation = "process",
                    messaging.operation.type = "process",
                    messaging.operation.name = "process",
                    messaging.message.id = tracing::field::Empty,
                    messaging.nats.stream_sequence = m.seq,
                    lockout.event.type = tracing::field::Empty,
                );
                telemetry::link_parent(&span, m.headers);
                span
            } else {
                tracing::Span::none()
            };
            let _entered = span.enter();
            let (subject, event) = match self.accept(m, headers.content_type) {
                Ok(accepted) => accepted,
                Err(r) => {
                    self.stats.bump(Stat::Dead { reason: r.reason.as_str() });
                    self.dead_letter(m, &r, &mut commit);
                    continue;
                }
            };
            if !span.is_disabled() {
                span.record("messaging.message.id", tracing::field::display(event.id()));
                span.record("lockout.event.type", event.kind().as_str());
            }
            let outcome = match &event {
                Event::Attempt(a) => Some(match a.outcome {
                    Outcome::Success => "success",
                    Outcome::Failure => "failure",
                }),
                _ => None,
            };
            self.stats.bump(Stat::Folded { kind: event.kind().as_str(), outcome });
            let policy = self.policy(event.tenant())?;
            // The key reuses the strings the subject was parsed into (they equal the body's).
            let tenant = subject.tenant.into_inner();
            let Target::User(user) = subject.target else {
                if let Event::Policy(change) = &event {
                    let p = lockout_core::fold::fold_policy(&policy, change);
                    self.policies.insert(tenant.to_string(), p);
                    commit.policies.retain(|(t, _)| *t != tenant);
                    commit.policies.push((tenant.to_string(), p));
                }
                continue;
            };
            let key = (tenant, user.into_inner());
            let pending = match users.entry(key) {
                std::collections::hash_map::Entry::Occupied(o) => o.into_mut(),
                std::collections::hash_map::Entry::Vacant(v) => {
                    let original = match self.cache.take(v.key()) {
                        Some(s) => s,
                        None if self.cache_is_complete => Box::default(),
                        None => Box::new(self.store.user(&v.key().0, &v.key().1)?.unwrap_or_default()),
                    };
                    v.insert(Pending { state: original.clone(), original })
                }
            };
            let notices = lockout_core::fold_into(&policy, &mut pending.state, &event, m.time);
            self.queue_notices(m, notices, &span, &mut commit);
        }
        if !folded_any {
            return Ok(None);
        }
        commit.checkpoint = last;
        commit.checkpoint_time = last_time;
        // Only states that changed are written; the cache keeps every one.
        commit.states = users
            .iter()
            .filter(|(_, p)| p.state != p.original)
            .map(|((tenant, user), p)| StateChange {
                tenant: tenant.clone(),
                user: user.clone(),
                before: LockIndex::of(&p.original),
                state: (*p.state).clone(),
            })
            .collect();
        (self.checkpoint, self.checkpoint_time) = (last, last_time);
        Ok(Some(commit))
    }

    /// Decodes and checks one message, or says why it is refused.
    fn accept(&self, m: &Incoming<'_>, content_type: Option<&str>) -> Result<(EventSubject, Event), Rejection> {
        codec::check_size(m.payload)?;
        let subject = self.subjects.parse_event(m.subject)?;
        let enc = Encoding::from_content_type(content_type)?;
        let event = Event::decode_checked(&subject, enc, m.payload)?;
        Ok((subject, event))
    }

    fn dead_letter(&self, m: &Incoming<'_>, r: &Rejection, commit: &mut Commit) {
        // One line per event only at DEBUG: a flood of bad input must not flood the logs too
        // (the committer sums them up, see `telemetry::RefusedLog`).
        tracing::debug!(seq = m.seq, subject = m.subject, reason = %r.reason, error = %r.message, "Refused an event; copied it to the dead-letter stream.");
        if self.floors.dead.is_some_and(|f| m.seq <= f) {
            return;
        }
        let mut headers: Vec<(String, String)> = Vec::new();
        if let Some(h) = m.headers {
            for (name, values) in h.iter() {
                let name = name.to_string();
                if name.eq_ignore_ascii_case(codec::NATS_MSG_ID) {
                    continue;
                }
                for v in values {
                    headers.push((name.clone(), v.as_str().to_owned()));
                }
            }
        }
        if header(m.headers, codec::CONTENT_TYPE).is_none() {
            // No header means postcard; say so, as everything the service publishes does.
            headers.push((codec::CONTENT_TYPE.into(), codec::POSTCARD.into()));
        }
        headers.push((codec::LOCKOUT_ERROR.into(), r.message.replace(['\r', '\n'], " ")));
        headers.push((codec::LOCKOUT_SUBJECT.into(), m.subject.to_owned()));
        headers.push((codec::LOCKOUT_SEQ.into(), m.seq.to_string()));
        headers.push((codec::NATS_MSG_ID.into(), format!("dead-{}", m.seq)));
        let tenant = self.subjects.event_tenant(m.subject);
        commit.outbox.push(OutboxEntry {
            stream: OutboxStream::Dead,
            event_seq: m.seq,
            index: 0,
            subject: self.subjects.dead(tenant.as_ref(), r.reason),
            headers,
            payload: m.payload.to_vec(),
        });
    }

    fn queue_notices(&mut self, m: &Incoming<'_>, notices: Vec<Notice>, span: &tracing::Span, commit: &mut Commit) {
        if notices.is_empty() {
            return;
        }
        // Notices continue the causing event's trace: its span's context when it is traced,
        // else the event's own trace headers as they came, else a synthetic one.
        let trace: Vec<(String, String)> = telemetry::trace_headers(span).unwrap_or_else(|| {
            [codec::TRACEPARENT, codec::TRACESTATE]
                .into_iter()
                .filter_map(|name| header(m.headers, name).map(|v| (name.to_owned(), v.to_owned())))
                .collect()
        });
        for (i, n) in notices.into_iter().enumerate() {
            let synthetic = (!trace.iter().any(|(k, _)| k == codec::TRACEPARENT))
                .then(|| (codec::TRACEPARENT.to_owned(), telemetry::synthetic_traceparent(n.event_id(), n.id())));
            match &n {
                Notice::Locked(l) => self.stats.bump(Stat::Lock {
                    reason: match l.reason {
                        lockout_proto::status::LockReason::Failures => "failures",
                        lockout_proto::status::LockReason::Admin => "admin",
                    },
                }),
                Notice::Unlocked(u) => self.stats.bump(Stat::Unlock {
                    how: match u.how {
                        lockout_proto::notice::How::Admin => "admin",
                        lockout_proto::notice::How::Expired => "expired",
                    },
                }),
                Notice::MfaReset(_) => {}
            }
            let index = u32::try_from(i).unwrap_or(u32::MAX);
            if self.floors.notices.is_some_and(|f| (m.seq, index) <= f) {
                continue;
            }
            let mut headers = vec![
                (codec::CONTENT_TYPE.to_owned(), self.notice_encoding.content_type().to_owned()),
                (codec::NATS_MSG_ID.to_owned(), n.id().to_string()),
                (codec::EVENT_SEQ.to_owned(), m.seq.to_string()),
                (crate::outbox::NOTICE_INDEX.to_owned(), index.to_string()),
            ];
            headers.extend(trace.iter().cloned().chain(synthetic));
            commit.outbox.push(OutboxEntry {
                stream: OutboxStream::Notices,
                event_seq: m.seq,
                index,
                subject: self.subjects.notice(n.tenant(), n.kind()),
                headers,
                payload: n.encode(self.notice_encoding),
            });
        }
    }
}

fn stored_time(info: &async_nats::jetstream::message::Info<'_>) -> Millis {
    u64::try_from(info.published.unix_timestamp_nanos() / 1_000_000).unwrap_or(0)
}

/// A folded batch on its way to the store and the streams.
struct FoldedBatch {
    /// `None` when the batch held only redeliveries.
    commit: Option<Commit>,
    stats: FoldStats,
    span: tracing::Span,
    /// Events the consumer still had after this batch's last one.
    pending: u64,
    /// The stream's last sequence as of this batch (its last event's plus `pending`).
    stream_last: u64,
    /// The batch's last message: acknowledging it acknowledges the batch (`AckPolicy::All`).
    last: async_nats::jetstream::Message,
}

/// What a projector run starts from: the store's checkpoint, the streams' floors and a
/// durable consumer positioned after the checkpoint.
pub struct Session {
    consumer: PullConsumer,
    floors: Floors,
}

impl Session {
    /// Publishes what an earlier run committed but did not publish, (re)creates the consumer
    /// at the store's checkpoint, and holds the expiry timer until the backlog the stream
    /// holds now is folded.
    pub async fn prepare(shared: &Shared) -> anyhow::Result<Session> {
        let (js, cfg) = (&shared.js, &shared.config);
        let floors = Floors::read(js, &cfg.subjects).await?;
        crate::outbox::drain(js, &shared.store, &floors).await?;
        let checkpoint = shared.store.checkpoint()?;
        let consumer = crate::streams::ensure_consumer(js, cfg, checkpoint).await?;
        let backlog_end = crate::streams::last_event_seq(js, cfg).await?;
        shared.health.caught_up.store(checkpoint >= backlog_end, std::sync::atomic::Ordering::Release);
        Ok(Session { consumer, floors })
    }
}

/// How long the projector waits for events before it checks that its consumer still delivers.
const STALL_CHECK_AFTER: Duration = Duration::from_secs(10);

/// How long the receiving task gathers a backlog into one batch at most.
const GATHER_WAIT: Duration = Duration::from_millis(5);

/// Whether a batch of `have` messages (of at most `batch`) should wait for more: only when the
/// server still holds enough to fill it (`pending`, as of the last message delivered).
fn worth_waiting(pending: u64, have: usize, batch: usize) -> bool {
    have < batch && pending >= (batch - have) as u64
}

/// The events the server still had for the consumer when it delivered `m`.
fn backlog(m: Option<&async_nats::jetstream::Message>) -> u64 {
    m.and_then(|m| m.info().ok()).map_or(0, |i| i.pending)
}

/// The consumer stopped delivering although events wait (a pull lost in a reconnect), or its
/// message stream ended: the projector starts over from the store's checkpoint.
#[derive(Debug, thiserror::Error)]
#[error("the consumer stalled: {0}")]
pub struct ConsumerStalled(pub String);

/// The store refused a commit: sled stays failed until it is reopened.
#[derive(Debug, thiserror::Error)]
#[error("the store refused a commit: {0}")]
pub struct StoreFailed(#[source] pub lockout_store::Error);

/// Runs the projector and starts it over from the store's checkpoint, exactly as a restart
/// would (so nothing is lost or folded twice), when its consumer stalls or when the store
/// refuses a commit (a full disk): then it stops consuming, reports `unhealthy` and reopens
/// the store until it takes writes again. Returns on `stop`, or with any other error.
pub async fn supervise(
    shared: Arc<Shared>,
    mut session: Session,
    folded: watch::Sender<u64>,
    mut stop: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let folded = Arc::new(folded);
    loop {
        let Err(e) = run(shared.clone(), session, folded.clone(), stop.clone()).await else { return Ok(()) };
        shared.health.caught_up.store(false, std::sync::atomic::Ordering::Release);
        if let Some(stalled) = e.downcast_ref::<ConsumerStalled>() {
            tracing::warn!(error = %stalled, "Recreating the consumer at the store's checkpoint.");
            match prepare_until_ready(&shared, &mut stop).await? {
                Some(s) => session = s,
                None => return Ok(()),
            }
            continue;
        }
        let Some(failed) = e.downcast_ref::<StoreFailed>() else { return Err(e) };
        tracing::error!(error = %failed, "The store refused a commit; stopped consuming until it takes writes again.");
        let mut delay = Duration::from_secs(1);
        loop {
            tokio::select! {
                _ = stop.changed() => return Ok(()),
                () = tokio::time::sleep(delay) => {}
            }
            let store = shared.store.clone();
            let r = tokio::task::spawn_blocking(move || store.reopen().and_then(|()| store.check_writable()))
                .await
                .map_err(|e| anyhow::anyhow!("reopening the store panicked: {e}"))?;
            match r {
                Ok(()) => break,
                Err(e) => {
                    shared.health.set_store_error(Some(e.to_string()));
                    tracing::warn!(error = %e, "The store does not take writes yet; retrying.");
                    delay = (delay * 2).min(Duration::from_secs(10));
                }
            }
        }
        tracing::info!("The store takes writes again; resuming from its checkpoint.");
        match prepare_until_ready(&shared, &mut stop).await? {
            Some(s) => session = s,
            None => return Ok(()),
        }
        shared.health.set_store_error(None);
    }
}

/// [`Session::prepare`], retried while NATS or the store cannot answer yet; `None` on `stop`.
async fn prepare_until_ready(shared: &Shared, stop: &mut watch::Receiver<bool>) -> anyhow::Result<Option<Session>> {
    let mut delay = Duration::from_millis(200);
    loop {
        match Session::prepare(shared).await {
            Ok(s) => return Ok(Some(s)),
            Err(e) => tracing::warn!(error = %e, "Preparing the projector failed; retrying."),
        }
        tokio::select! {
            _ = stop.changed() => return Ok(None),
            () = tokio::time::sleep(delay) => {}
        }
        delay = (delay * 2).min(Duration::from_secs(5));
    }
}

/// The projector: pulls and folds batches, while [`commit_loop`] commits the previous one
/// and [`publish_loop`] publishes and acknowledges those before. Returns when `stop` turns
/// true, after the batches already folded are committed (a drain), or with the error that
/// stopped it ([`StoreFailed`] when the store refused a commit).
async fn run(
    shared: Arc<Shared>,
    session: Session,
    folded: Arc<watch::Sender<u64>>,
    stop: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    // Three stages with one batch waiting in each channel: the folder's cache never runs more
    // than two commits ahead of the store, and publishing never holds up a commit.
    let (tx, rx) = mpsc::channel::<FoldedBatch>(1);
    let (ptx, prx) = mpsc::channel::<Committed>(1);
    let committer = tokio::spawn(commit_loop(shared.clone(), rx, ptx));
    let publisher = tokio::spawn(publish_loop(shared.clone(), prx, folded));
    let folding = fold_loop(&shared, session.consumer, session.floors, tx, stop).await;
    let committing = committer.await.map_err(|e| anyhow::anyhow!("the committer panicked: {e}"))?;
    publisher.await.map_err(|e| anyhow::anyhow!("the publisher panicked: {e}"))?;
    // The committer's failure is the cause when both stopped.
    committing.and(folding)
}

impl crate::linger::Lingering for FoldedBatch {
    /// A notice or dead letter to publish, a policy, or an event other than an attempt (the
    /// service's writes and the expiry wait until their events are folded).
    fn urgent(&self) -> bool {
        self.commit.as_ref().is_some_and(|c| !c.outbox.is_empty() || !c.policies.is_empty())
            || self.stats.counts.iter().any(
                |(s, _)| matches!(s, Stat::Folded { kind, .. } if *kind != lockout_proto::EventKind::Attempt.as_str()),
            )
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

/// What the receiving task hands the fold stage: the messages of one batch, in order.
type Gathered = Vec<async_nats::jetstream::Message>;

/// Pulls messages and hands them over in batches of up to `batch`, so that the next batch is
/// received (and the next pull requested) while one folds. A batch is whatever was delivered
/// when the first message came, topped up for a few milliseconds while the server reports a
/// backlog that would fill it (catching up, a rebuild): sled writes its log twice per commit,
/// so fewer, fuller commits cost much less; live traffic folds at once and keeps its latency.
/// Returns when the message stream ends or the fold stage is gone.
async fn receive_loop(
    mut messages: async_nats::jetstream::consumer::pull::Stream,
    batch: usize,
    tx: mpsc::Sender<Gathered>,
) {
    let mut next = messages.next().await;
    loop {
        let mut msgs = Vec::with_capacity(batch);
        let deadline = tokio::time::Instant::now() + GATHER_WAIT;
        loop {
            match next.take() {
                None => {
                    if !msgs.is_empty() {
                        let _ = tx.send(msgs).await;
                    }
                    return;
                }
                Some(Ok(m)) => msgs.push(m),
                Some(Err(e)) => tracing::warn!(error = %e, "Pulling events failed; retrying."),
            }
            if msgs.len() >= batch {
                break;
            }
            next = match messages.next().now_or_never() {
                Some(n) => n,
                None if worth_waiting(backlog(msgs.last()), msgs.len(), batch) => {
                    match tokio::time::timeout_at(deadline, messages.next()).await {
                        Ok(n) => n,
                        Err(_) => break,
                    }
                }
                None => break,
            };
        }
        if !msgs.is_empty() && tx.send(msgs).await.is_err() {
            return;
        }
        next = messages.next().await;
    }
}

async fn fold_loop(
    shared: &Shared,
    consumer: PullConsumer,
    floors: Floors,
    tx: mpsc::Sender<FoldedBatch>,
    mut stop: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let cfg = &shared.config;
    let mut folder = BatchFolder::new(shared.store.clone(), cfg.subjects.clone(), cfg.notice_encoding, floors)?;
    folder.set_trace_events_ratio(cfg.trace_events_ratio);
    folder.set_state_cache_bytes(cfg.state_cache_bytes());
    let messages =
        consumer.stream().max_messages_per_batch(cfg.batch).heartbeat(Duration::from_secs(5)).messages().await?;
    // One batch waits while the next is received and another folds.
    let (gtx, mut gathered) = mpsc::channel::<Gathered>(1);
    // A `JoinSet` aborts its tasks when dropped: the receiver ends with this loop.
    let mut receiver = tokio::task::JoinSet::new();
    receiver.spawn(receive_loop(messages, cfg.batch, gtx));
    let mut linger = Linger::new(cfg.commit_linger, cfg.batch);
    loop {
        let due = linger.due();
        let msgs = tokio::select! {
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
                // Idle. Fine when the consumer has nothing more; a pull that stopped after a
                // reconnect otherwise (its events wait or sit unacknowledged at the server).
                match consumer.get_info().await {
                    Ok(i) if i.num_pending > 0 || i.num_ack_pending > 0 => {
                        return Err(ConsumerStalled(format!(
                            "nothing delivered for {} s while {} events wait and {} are unacknowledged",
                            STALL_CHECK_AFTER.as_secs(),
                            i.num_pending,
                            i.num_ack_pending
                        ))
                        .into())
                    }
                    Ok(_) => {}
                    Err(e) => tracing::debug!(error = %e, "Reading the consumer's state failed; checking again later."),
                }
                continue;
            }
        };
        let Some(mut msgs) = msgs else {
            // What was folded is still committed; the next run starts after it.
            let _ = send_held(&mut linger, &tx).await;
            return Err(ConsumerStalled("the consumer's message stream ended".into()).into());
        };
        let Some(last_msg) = msgs.pop() else { continue };
        let (pending, stream_last) =
            last_msg.info().map_or((u64::MAX, 0), |i| (i.pending, i.stream_sequence.saturating_add(i.pending)));
        let batch_span = folder.batch_span(msgs.len() + 1);
        let incoming: Vec<Incoming<'_>> = msgs
            .iter()
            .chain(std::iter::once(&last_msg))
            .filter_map(|m| {
                let info = m.info().ok()?;
                Some(Incoming {
                    seq: info.stream_sequence,
                    subject: m.subject.as_str(),
                    headers: m.headers.as_ref(),
                    payload: &m.payload,
                    time: stored_time(&info),
                })
            })
            .collect();
        // A failing store (disk full) must not lose or skip events: retry the same batch.
        let commit = loop {
            match batch_span.in_scope(|| folder.fold_batch(&incoming)) {
                Ok(c) => break c,
                Err(e) => {
                    shared.health.set_store_error(Some(e.to_string()));
                    tracing::error!(error = %e, "Folding a batch failed; retrying in 1 s without acknowledging.");
                    tokio::select! {
                        _ = stop.changed() => return Ok(()),
                        () = tokio::time::sleep(Duration::from_secs(1)) => {}
                    }
                }
            }
        };
        drop(incoming);
        let events = msgs.len() + 1;
        drop(msgs);
        let batch = FoldedBatch {
            commit,
            stats: folder.stats().clone(),
            span: batch_span,
            pending,
            stream_last,
            last: last_msg,
        };
        if let Some(batch) = linger.offer(batch, events, std::time::Instant::now()) {
            if tx.send(batch).await.is_err() {
                anyhow::bail!("the committer stopped");
            }
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

async fn ack(last: &async_nats::jetstream::Message) {
    if let Err(e) = last.ack().await {
        tracing::warn!(error = %e, "Acknowledging a batch failed; it will be redelivered and skipped.");
    }
}

/// A committed batch on its way to the streams.
struct Committed {
    /// `None` when the batch held only redeliveries.
    commit: Option<Arc<Commit>>,
    pending: u64,
    last: async_nats::jetstream::Message,
}

/// Commits folded batches in order (off the async code, see [`blocking`]) and hands them to
/// [`publish_loop`]. Ends when the fold loop is done (after the batches it already sent: a
/// drain), or with [`StoreFailed`] at the first refused commit, leaving that batch and the
/// later ones unacknowledged.
async fn commit_loop(
    shared: Arc<Shared>,
    mut rx: mpsc::Receiver<FoldedBatch>,
    tx: mpsc::Sender<Committed>,
) -> anyhow::Result<()> {
    let mut refused = crate::telemetry::RefusedLog::default();
    while let Some(batch) = rx.recv().await {
        let FoldedBatch { commit, stats, span, pending, stream_last, last } = batch;
        let commit = match commit {
            Some(commit) => {
                let started = std::time::Instant::now();
                let commit = Arc::new(commit);
                blocking(&shared.store, &commit, span)
                    .await
                    .map_err(|e| anyhow::anyhow!("the store commit panicked: {e}"))?
                    .map_err(|e| {
                        shared.health.set_store_error(Some(e.to_string()));
                        StoreFailed(e)
                    })?;
                shared.metrics.batch_committed(&stats, started.elapsed());
                shared.health.last_commit_at.store(crate::now_ms(), std::sync::atomic::Ordering::Relaxed);
                // Lag: the stream's last sequence as last seen minus the checkpoint.
                let lag = stream_last.saturating_sub(commit.checkpoint);
                shared.health.lag.store(lag, std::sync::atomic::Ordering::Relaxed);
                shared.metrics.consumer_lag(lag);
                shared.metrics.outbox(i64::try_from(commit.outbox.len()).unwrap_or(i64::MAX));
                refused.record(&stats, commit.checkpoint);
                Some(commit)
            }
            None => None,
        };
        if tx.send(Committed { commit, pending, last }).await.is_err() {
            anyhow::bail!("the publisher stopped");
        }
    }
    Ok(())
}

/// Commits `commit` into `store`, off the async code: on a multi-thread runtime (lockoutd's)
/// in place, on this thread (`block_in_place`: the runtime hands this worker's other tasks to
/// another thread meanwhile), so a `locked` notice's commit starts and ends without waiting
/// for another thread to be woken and given a CPU; elsewhere on a blocking thread.
async fn blocking(
    store: &lockout_store::Store,
    commit: &Arc<Commit>,
    span: tracing::Span,
) -> Result<lockout_store::Result<()>, tokio::task::JoinError> {
    use tokio::runtime::{Handle, RuntimeFlavor};
    if Handle::current().runtime_flavor() == RuntimeFlavor::MultiThread {
        return Ok(tokio::task::block_in_place(|| span.in_scope(|| store.commit(commit))));
    }
    let (store, c) = (store.clone(), commit.clone());
    tokio::task::spawn_blocking(move || span.in_scope(|| store.commit(&c))).await
}

/// Most committed batches whose outbox is sent but not yet acknowledged.
const PUBLISH_AHEAD: usize = 16;

/// Publishes the outbox of committed batches in order, advances `folded` (what write
/// commands wait for) and acknowledges the batches. Sends the entries of every batch that is
/// ready before awaiting the oldest one's acknowledgements, so a round trip to JetStream per
/// batch does not bound throughput. Ends when the committer is done.
async fn publish_loop(shared: Arc<Shared>, mut rx: mpsc::Receiver<Committed>, folded: Arc<watch::Sender<u64>>) {
    let mut queue: std::collections::VecDeque<(Committed, crate::outbox::InFlight)> = Default::default();
    let mut open = true;
    loop {
        while open && queue.len() < PUBLISH_AHEAD {
            let next = if queue.is_empty() {
                rx.recv().await
            } else {
                match rx.try_recv() {
                    Ok(c) => Some(c),
                    Err(mpsc::error::TryRecvError::Empty) => break,
                    Err(mpsc::error::TryRecvError::Disconnected) => None,
                }
            };
            let Some(c) = next else {
                open = false;
                break;
            };
            let entries = c.commit.as_ref().map_or(&[][..], |c| &c.outbox[..]);
            let inflight = crate::outbox::send(&shared.js, entries).await;
            queue.push_back((c, inflight));
        }
        let Some((Committed { commit, pending, last }, inflight)) = queue.pop_front() else { return };
        if let Some(commit) = commit {
            crate::outbox::settle(&shared.js, &shared.store, &commit.outbox, inflight).await;
            shared.metrics.outbox(-i64::try_from(commit.outbox.len()).unwrap_or(i64::MAX));
            folded.send_replace(commit.checkpoint);
        }
        if pending == 0 {
            shared.health.caught_up.store(true, std::sync::atomic::Ordering::Release);
        }
        ack(&last).await;
    }
}

#[cfg(test)]
mod tests {
    use super::{header, worth_waiting, EventHeaders};
    use async_nats::HeaderMap;
    use lockout_proto::codec;

    #[test]
    fn one_pass_over_the_headers_finds_what_get_finds() {
        let map = |pairs: &[(&str, &str)]| {
            let mut h = HeaderMap::new();
            for (k, v) in pairs {
                h.append(*k, *v);
            }
            h
        };
        let maps = [
            map(&[]),
            map(&[(codec::NATS_MSG_ID, "x")]),
            map(&[(codec::CONTENT_TYPE, codec::JSON), (codec::NATS_MSG_ID, "x")]),
            map(&[(codec::TRACEPARENT, "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")]),
            // Names match exactly, as `HeaderMap::get` matches them.
            map(&[("content-type", codec::JSON), ("Traceparent", "t")]),
            // The first of repeated values, as `get` gives.
            map(&[
                (codec::CONTENT_TYPE, codec::JSON),
                (codec::CONTENT_TYPE, codec::POSTCARD),
                (codec::TRACEPARENT, "t"),
            ]),
        ];
        for h in &maps {
            let want = EventHeaders {
                content_type: header(Some(h), codec::CONTENT_TYPE),
                traceparent: header(Some(h), codec::TRACEPARENT),
            };
            assert_eq!(EventHeaders::of(Some(h)), want, "{h:?}");
        }
        assert_eq!(EventHeaders::of(None), EventHeaders::default());
        assert_eq!(EventHeaders::of(Some(&maps[5])).content_type, Some(codec::JSON));
        assert_eq!(EventHeaders::of(Some(&maps[3])).traceparent.map(str::len), Some(55));
    }

    #[test]
    fn a_batch_waits_only_for_a_backlog_that_fills_it() {
        // (pending at the server, messages so far, batch) → wait?
        let cases = [
            (0, 1, 1000, false),         // live traffic: nothing more at the server
            (5, 1, 1000, false),         // a few behind: fold now, keep the latency
            (998, 1, 1000, false),       // one short of filling it
            (999, 1, 1000, true),        // exactly fills it
            (50_000, 1, 1000, true),     // catching up
            (50_000, 1000, 1000, false), // full already
            (1, 999, 1000, true),
            (0, 999, 1000, false),
            (10, 0, 1, true),
            (10, 1, 1, false),
        ];
        for (pending, have, batch, want) in cases {
            assert_eq!(worth_waiting(pending, have, batch), want, "pending {pending}, have {have}, batch {batch}");
        }
    }
}
