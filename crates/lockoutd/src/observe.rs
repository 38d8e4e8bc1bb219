//! The fold's telemetry, around the fold: turns the engine's reports of a folded batch into
//! spans, log lines and the counts its metrics are recorded from (as Vector's
//! `internal_events` do), so the engine itself knows nothing of tracing or metrics.
//!
//! - [`FoldObserver::batch_span`]: the span of one fetched batch.
//! - [`FoldObserver::observe`]: after a batch is folded, the span of each traced or sampled
//!   event (a child of the event's `traceparent`, else of the batch span), the trace headers
//!   of the notices it caused, one DEBUG line per refused event and an ERROR line per reused
//!   sequence; returns the batch's [`FoldStats`].
//! - [`RefusedLog`]: refusals summed up at WARN, at most one line every 10 s.

use std::time::Duration;

use lockout_engine::{EventReport, Handling, NoticeWhat};
use lockout_nats::Delivered;
use lockout_proto::codec;
use lockout_proto::subject::Subjects;
use lockout_store::Commit;

use crate::telemetry;

/// One counted thing of a folded batch (see [`FoldStats`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stat {
    /// An event folded: its type and, for attempts, `success` / `failure`.
    Folded { kind: &'static str, outcome: Option<&'static str> },
    /// A message refused into the dead-letter stream, by reason.
    Dead { reason: &'static str },
    /// A `locked` notice, by reason (`failures` / `admin`).
    Lock { reason: &'static str },
    /// An `unlocked` notice, by how (`admin` / `expired`).
    Unlock { how: &'static str },
}

/// What one folded batch did, counted while folding and recorded only once the batch is
/// committed (a batch folded again after a failed commit is not counted twice).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FoldStats {
    pub counts: Vec<(Stat, u64)>,
}

impl FoldStats {
    pub fn bump(&mut self, stat: Stat) {
        self.add(stat, 1);
    }

    fn add(&mut self, stat: Stat, n: u64) {
        match self.counts.iter_mut().find(|(s, _)| *s == stat) {
            Some((_, m)) => *m += n,
            None => self.counts.push((stat, n)),
        }
    }

    /// Adds what `other` counted.
    pub fn absorb(&mut self, other: &FoldStats) {
        for &(stat, n) in &other.counts {
            self.add(stat, n);
        }
    }

    pub fn get(&self, stat: Stat) -> u64 {
        self.counts.iter().find(|(s, _)| *s == stat).map_or(0, |(_, n)| *n)
    }

    /// The dead letters by reason.
    pub fn dead_letters(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        self.counts.iter().filter_map(|&(s, n)| match s {
            Stat::Dead { reason } => Some((reason, n)),
            _ => None,
        })
    }

    pub fn clear(&mut self) {
        self.counts.clear();
    }
}

/// How often at most [`RefusedLog`] writes a line.
pub const REFUSED_LOG_EVERY: Duration = Duration::from_secs(10);

/// Dead letters summed up for the log: a flood of bad input must not flood the logs too. One
/// WARN line at the first refusal, then at most one every [`REFUSED_LOG_EVERY`] with the counts
/// by reason since the last line (each event is logged at DEBUG; the metric counts them all).
#[derive(Debug, Default)]
pub struct RefusedLog {
    counts: Vec<(&'static str, u64)>,
    last_line: Option<std::time::Instant>,
}

impl RefusedLog {
    /// Adds a committed batch's dead letters; logs when a line is due.
    pub fn record(&mut self, stats: &FoldStats, checkpoint: u64) {
        for (reason, n) in stats.dead_letters() {
            match self.counts.iter_mut().find(|(r, _)| *r == reason) {
                Some((_, total)) => *total += n,
                None => self.counts.push((reason, n)),
            }
        }
        if self.counts.is_empty() || self.last_line.is_some_and(|t| t.elapsed() < REFUSED_LOG_EVERY) {
            return;
        }
        let refused: Vec<String> = self.counts.drain(..).map(|(r, n)| format!("{r}={n}")).collect();
        tracing::warn!(checkpoint, refused = %refused.join(", "), "Refused events; copied them to the dead-letter stream with their reasons (RUST_LOG=lockoutd=debug logs each; at most one such line every 10 s).");
        self.last_line = Some(std::time::Instant::now());
    }
}

/// Turns the engine's reports into telemetry (see the module docs).
#[derive(Debug, Clone)]
pub struct FoldObserver {
    /// `process <events stream>`: the exported name of the fold spans (messaging conventions).
    span_name: String,
    events_stream: String,
    /// Share of untraced events that get a span of their own.
    trace_events_ratio: f64,
}

impl FoldObserver {
    pub fn new(subjects: &Subjects, trace_events_ratio: f64) -> FoldObserver {
        let events_stream = subjects.events_stream();
        FoldObserver { span_name: format!("process {events_stream}"), events_stream, trace_events_ratio }
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

    /// The span of one folded event: a child of the publisher's trace when it sent a
    /// `traceparent` (always: the publisher decided; its sampled flag still applies), else of
    /// the current (batch) span for a deterministic share of events. Disabled (free) unless a
    /// tracing layer wants it.
    fn event_span(&self, m: &Delivered, traceparent: bool, id: uuid::Uuid, kind: &'static str) -> tracing::Span {
        if !traceparent && !telemetry::sample_event(m.seq, self.trace_events_ratio) {
            return tracing::Span::none();
        }
        let span = tracing::debug_span!(
            "lockout.fold_event",
            otel.name = %self.span_name,
            otel.kind = "consumer",
            messaging.system = "nats",
            messaging.destination.name = %self.events_stream,
            messaging.operation = "process",
            messaging.operation.type = "process",
            messaging.operation.name = "process",
            messaging.message.id = %id,
            messaging.nats.stream_sequence = m.seq,
            lockout.event.type = kind,
        );
        telemetry::link_parent(&span, m.headers());
        span
    }

    /// What the engine reported of `batch` (call inside the batch span): spans, trace headers
    /// on the notices queued in `commit`, log lines; returns the counts.
    pub fn observe(&self, batch: &[Delivered], events: &[EventReport], mut commit: Option<&mut Commit>) -> FoldStats {
        let mut stats = FoldStats::default();
        for e in events {
            let m = &batch[e.index];
            if e.reused_sequence {
                tracing::error!(
                    seq = e.seq,
                    "LOCKOUT_EVENTS reuses a sequence at or below the checkpoint: the server lost acknowledged events. Folding the new event; the lost ones stay folded."
                );
            }
            match &e.handling {
                Handling::Redelivered | Handling::Elsewhere => {}
                Handling::Refused { rejection: r, .. } => {
                    // One line per event only at DEBUG: a flood of bad input must not flood the
                    // logs too (the committer sums them up, see `RefusedLog`).
                    tracing::debug!(seq = e.seq, subject = m.subject(), reason = %r.reason, error = %r.message, "Refused an event; copied it to the dead-letter stream.");
                    stats.bump(Stat::Dead { reason: r.reason.as_str() });
                }
                Handling::Folded { id, kind, attempt, notices } => {
                    stats.bump(Stat::Folded { kind: kind.as_str(), outcome: attempt.map(Into::into) });
                    for n in notices {
                        match n.what {
                            NoticeWhat::Locked(reason) => stats.bump(Stat::Lock { reason: reason.into() }),
                            NoticeWhat::Unlocked(how) => stats.bump(Stat::Unlock { how: how.into() }),
                            // IP notices are counted by their events' type (`ip_block`, …).
                            NoticeWhat::MfaReset | NoticeWhat::IpBlocked | NoticeWhat::IpUnblocked(_) => {}
                        }
                    }
                    let traceparent = lockout_nats::first_header(m.headers(), codec::TRACEPARENT);
                    let span = self.event_span(m, traceparent.is_some(), *id, kind.as_str());
                    let Some(commit) = commit.as_deref_mut() else { continue };
                    if notices.iter().all(|n| n.outbox.is_none()) {
                        continue;
                    }
                    // Notices continue the causing event's trace: its span's context when it
                    // is traced, else the event's own trace headers as they came, else a
                    // synthetic one.
                    let trace: Vec<(String, String)> = telemetry::trace_headers(&span).unwrap_or_else(|| {
                        [codec::TRACEPARENT, codec::TRACESTATE]
                            .into_iter()
                            .filter_map(|name| {
                                lockout_nats::first_header(m.headers(), name).map(|v| (name.to_owned(), v.to_owned()))
                            })
                            .collect()
                    });
                    let has_parent = trace.iter().any(|(k, _)| k == codec::TRACEPARENT);
                    for n in notices {
                        let Some(i) = n.outbox else { continue };
                        let headers = &mut commit.outbox[i].headers;
                        headers.extend(trace.iter().cloned());
                        if !has_parent {
                            headers.push((
                                codec::TRACEPARENT.to_owned(),
                                telemetry::synthetic_traceparent(n.event_id, n.id),
                            ));
                        }
                    }
                }
            }
        }
        stats
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stats_count_by_kind() {
        let mut s = FoldStats::default();
        let f = Stat::Folded { kind: "attempt", outcome: Some("failure") };
        s.bump(f);
        s.bump(f);
        s.bump(Stat::Dead { reason: "bad_ip" });
        assert_eq!(s.get(f), 2);
        assert_eq!(s.get(Stat::Dead { reason: "bad_ip" }), 1);
        assert_eq!(s.dead_letters().collect::<Vec<_>>(), [("bad_ip", 1)]);
        assert_eq!(s.get(Stat::Lock { reason: "admin" }), 0);
    }
}
