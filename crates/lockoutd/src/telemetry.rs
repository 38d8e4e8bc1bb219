//! Telemetry: OpenTelemetry metrics, trace-context propagation over NATS headers, and the
//! process-wide setup (logs + optional OTLP export) that `main` calls.
//!
//! Every metric lockoutd records goes through [`Metrics`], created from the *global* meter
//! provider: when nothing is installed (no OTLP endpoint, or a test that installs nothing)
//! every call is a no-op that costs a few nanoseconds. Attributes are low-cardinality only
//! (event type, outcome, reason, op, code): never a tenant or a user.
//!
//! Spans are `tracing` spans at DEBUG level with target `lockoutd`; the `tracing-opentelemetry`
//! layer that [`init`] installs (only when exporting) turns them into OpenTelemetry spans. The
//! log layer keeps its own `RUST_LOG` filter, so logs look the same with or without export.
//!
//! | span | when | parent |
//! |---|---|---|
//! | `lockout.fold_batch` | every fetched batch | none (a root) |
//! | `lockout.fold_event` | each folded event, sampled by `--trace-events-ratio` | the event's `traceparent`, else the batch span |
//! | `lockout.request` | every micro-service request | the request's `traceparent` |

use std::time::Duration;

use async_nats::HeaderMap;
use lockout_proto::codec;
use opentelemetry::metrics::{Counter, Gauge, Histogram, UpDownCounter};
use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::TraceContextExt as _;
use opentelemetry::KeyValue;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

use crate::config::LogFormat;
use crate::observe::{FoldStats, Stat};

/// Instrumentation scope of every lockoutd metric and span.
pub const SCOPE: &str = "lockoutd";

/// lockoutd's instruments.
pub struct Metrics {
    events_folded: Counter<u64>,
    dead_letters: Counter<u64>,
    locks: Counter<u64>,
    unlocks: Counter<u64>,
    consumer_lag: Gauge<u64>,
    clock_skew: Gauge<i64>,
    batch_commit: Histogram<f64>,
    outbox_depth: UpDownCounter<i64>,
    request_duration: Histogram<f64>,
}

/// Seconds buckets from 100 µs to 10 s.
const SECONDS_BUCKETS: [f64; 15] =
    [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0];

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Instruments from the global meter provider as it is now (install a provider first).
    pub fn new() -> Metrics {
        let m = opentelemetry::global::meter(SCOPE);
        Metrics {
            events_folded: m
                .u64_counter("lockout.events.folded")
                .with_description("Events folded into the store, by type and (attempts) outcome.")
                .with_unit("{event}")
                .build(),
            dead_letters: m
                .u64_counter("lockout.dead_letters")
                .with_description("Messages refused into the dead-letter stream, by reason.")
                .with_unit("{message}")
                .build(),
            locks: m
                .u64_counter("lockout.locks")
                .with_description("Accounts locked (locked notices), by reason.")
                .with_unit("{lock}")
                .build(),
            unlocks: m
                .u64_counter("lockout.unlocks")
                .with_description("Locks ended (unlocked notices), by how.")
                .with_unit("{lock}")
                .build(),
            consumer_lag: m
                .u64_gauge("lockout.consumer.lag")
                .with_description("Events pending for the durable consumer after the last fetched batch.")
                .with_unit("{event}")
                .build(),
            clock_skew: m
                .i64_gauge("lockout.clock.skew")
                .with_description("How far lockoutd's clock runs ahead of the NATS server's (negative: behind), from live events' stored times.")
                .with_unit("ms")
                .build(),
            batch_commit: m
                .f64_histogram("lockout.batch.commit.duration")
                .with_description("Time of one sled commit of a folded batch.")
                .with_unit("s")
                .with_boundaries(SECONDS_BUCKETS.to_vec())
                .build(),
            outbox_depth: m
                .i64_up_down_counter("lockout.outbox.depth")
                .with_description("Committed notices and dead letters not yet acknowledged by JetStream.")
                .with_unit("{message}")
                .build(),
            request_duration: m
                .f64_histogram("lockout.request.duration")
                .with_description("Micro-service requests from receipt to reply, by op and code.")
                .with_unit("s")
                .with_boundaries(SECONDS_BUCKETS.to_vec())
                .build(),
        }
    }

    /// Records a committed batch: its counts and the commit's duration.
    pub fn batch_committed(&self, stats: &FoldStats, commit: Duration) {
        self.batch_commit.record(commit.as_secs_f64(), &[]);
        for &(stat, n) in &stats.counts {
            match stat {
                Stat::Folded { kind, outcome: Some(o) } => {
                    self.events_folded.add(n, &[KeyValue::new("type", kind), KeyValue::new("outcome", o)]);
                }
                Stat::Folded { kind, outcome: None } => self.events_folded.add(n, &[KeyValue::new("type", kind)]),
                Stat::Dead { reason } => self.dead_letters.add(n, &[KeyValue::new("reason", reason)]),
                Stat::Lock { reason } => self.locks.add(n, &[KeyValue::new("reason", reason)]),
                Stat::Unlock { how } => self.unlocks.add(n, &[KeyValue::new("how", how)]),
            }
        }
    }

    pub fn clock_skew(&self, ms: i64) {
        self.clock_skew.record(ms, &[]);
    }

    pub fn consumer_lag(&self, lag: u64) {
        self.consumer_lag.record(lag, &[]);
    }

    /// `n` outbox entries committed (positive) or published (negative).
    pub fn outbox(&self, n: i64) {
        if n != 0 {
            self.outbox_depth.add(n, &[]);
        }
    }

    pub fn request(&self, op: &'static str, code: u16, took: Duration) {
        self.request_duration
            .record(took.as_secs_f64(), &[KeyValue::new("op", op), KeyValue::new("code", i64::from(code))]);
    }
}

/// W3C trace context over NATS headers.
struct HeaderExtractor<'a>(&'a HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(|v| v.as_str())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.iter().map(|(k, _)| k.as_ref()).collect()
    }
}

struct PairInjector(Vec<(String, String)>);

impl Injector for PairInjector {
    fn set(&mut self, key: &str, value: String) {
        self.0.push((key.to_owned(), value));
    }
}

/// The remote parent carried by `traceparent` / `tracestate`, or `None` without a valid one.
pub fn remote_parent(headers: Option<&HeaderMap>) -> Option<opentelemetry::Context> {
    let h = headers?;
    h.get(codec::TRACEPARENT)?;
    let cx = TraceContextPropagator::new().extract(&HeaderExtractor(h));
    cx.span().span_context().is_valid().then_some(cx)
}

/// Makes `span`'s OpenTelemetry parent the remote context in `headers`, if any.
pub fn link_parent(span: &tracing::Span, headers: Option<&HeaderMap>) {
    if span.is_disabled() {
        return;
    }
    if let Some(cx) = remote_parent(headers) {
        let _ = span.set_parent(cx);
    }
}

/// `traceparent` (and `tracestate` when not empty) of `span`, when it is a recorded
/// OpenTelemetry span; `None` otherwise (no span, or no tracing-opentelemetry layer).
pub fn trace_headers(span: &tracing::Span) -> Option<Vec<(String, String)>> {
    if span.is_disabled() {
        return None;
    }
    let cx = span.context();
    if !cx.span().span_context().is_valid() {
        return None;
    }
    let mut inj = PairInjector(Vec::with_capacity(2));
    TraceContextPropagator::new().inject_context(&cx, &mut inj);
    inj.0.retain(|(k, v)| !(k == codec::TRACESTATE && v.is_empty()));
    (!inj.0.is_empty()).then_some(inj.0)
}

/// A `traceparent` for a notice whose causing event carried no trace and was not traced
/// here: the trace id is the id of the event the notice is about (so a lock's notices share
/// one), the span id comes from the notice's id, and the sampled flag is off. Deterministic,
/// like the notice itself.
pub fn synthetic_traceparent(event_id: uuid::Uuid, notice_id: uuid::Uuid) -> String {
    let mut span = [0u8; 8];
    span.copy_from_slice(&notice_id.as_bytes()[..8]);
    if span == [0; 8] {
        span[7] = 1;
    }
    let trace = if event_id.is_nil() { uuid::Uuid::from_u128(1) } else { event_id };
    format!("00-{}-{}-00", trace.simple(), hex_bytes(&span))
}

fn hex_bytes(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Whether the event at `seq` gets its own span, for a ratio in 0..=1 (deterministic per seq,
/// so a replay samples the same events).
pub fn sample_event(seq: u64, ratio: f64) -> bool {
    if ratio >= 1.0 {
        return true;
    }
    if ratio <= 0.0 {
        return false;
    }
    // Fibonacci hashing spreads consecutive sequences over [0, 1).
    let h = seq.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 11;
    (h as f64) / ((1u64 << 53) as f64) < ratio
}

/// What [`init`] installed; dropping it flushes and shuts the exporters down.
#[must_use = "dropping the guard shuts telemetry export down"]
pub struct Guard {
    tracer: Option<opentelemetry_sdk::trace::SdkTracerProvider>,
    meter: Option<opentelemetry_sdk::metrics::SdkMeterProvider>,
}

impl Guard {
    /// Whether traces or metrics are exported.
    pub fn exporting(&self) -> (bool, bool) {
        (self.tracer.is_some(), self.meter.is_some())
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        if let Some(t) = self.tracer.take() {
            if let Err(e) = t.shutdown() {
                eprintln!("lockoutd: flushing traces failed: {e}");
            }
        }
        if let Some(m) = self.meter.take() {
            if let Err(e) = m.shutdown() {
                eprintln!("lockoutd: flushing metrics failed: {e}");
            }
        }
    }
}

fn env_set(name: &str) -> bool {
    std::env::var_os(name).is_some_and(|v| !v.is_empty())
}

/// Sets up logs (format and `RUST_LOG`) and, only when `OTEL_EXPORTER_OTLP_ENDPOINT` (or the
/// `_TRACES_` / `_METRICS_` variant) is set, OTLP/HTTP export of traces and/or metrics.
/// Without an endpoint nothing OpenTelemetry is installed. Call once, from `main`.
pub fn init(format: LogFormat) -> anyhow::Result<Guard> {
    use opentelemetry::trace::TracerProvider as _;
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;
    use tracing_subscriber::Layer as _;

    let any = env_set("OTEL_EXPORTER_OTLP_ENDPOINT");
    let traces = any || env_set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT");
    let metrics = any || env_set("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT");
    let resource = || {
        opentelemetry_sdk::Resource::builder()
            .with_service_name(std::env::var("OTEL_SERVICE_NAME").unwrap_or_else(|_| "lockoutd".into()))
            .with_attribute(KeyValue::new("service.version", env!("CARGO_PKG_VERSION")))
            .build()
    };

    let tracer = if traces {
        let exporter = opentelemetry_otlp::SpanExporter::builder().with_http().build()?;
        Some(
            opentelemetry_sdk::trace::SdkTracerProvider::builder()
                .with_batch_exporter(exporter)
                .with_resource(resource())
                .build(),
        )
    } else {
        None
    };
    let meter = if metrics {
        let exporter = opentelemetry_otlp::MetricExporter::builder().with_http().build()?;
        let provider = opentelemetry_sdk::metrics::SdkMeterProvider::builder()
            .with_periodic_exporter(exporter)
            .with_resource(resource())
            .build();
        opentelemetry::global::set_meter_provider(provider.clone());
        Some(provider)
    } else {
        None
    };
    if tracer.is_some() {
        opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    }

    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    let fmt = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let fmt = match format {
        LogFormat::Human => fmt.boxed(),
        LogFormat::Json => fmt.json().boxed(),
    };
    // The exported spans: lockoutd's own (DEBUG and up), others' at INFO and up.
    let otel = tracer.as_ref().map(|p| {
        tracing_opentelemetry::layer().with_tracer(p.tracer(SCOPE)).with_filter(
            tracing_subscriber::filter::Targets::new()
                .with_target("lockoutd", tracing::Level::DEBUG)
                .with_default(tracing::Level::INFO),
        )
    });
    tracing_subscriber::registry().with(fmt.with_filter(filter)).with(otel).try_init()?;
    Ok(Guard { tracer, meter })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_sampling_follows_the_ratio_and_is_deterministic() {
        assert!((0..1000).all(|s| sample_event(s, 1.0)));
        assert!((0..1000).all(|s| !sample_event(s, 0.0)));
        let n = (0..100_000u64).filter(|&s| sample_event(s, 0.1)).count();
        assert!((9_000..11_000).contains(&n), "{n} of 100000 sampled at 0.1");
        assert_eq!(sample_event(12345, 0.5), sample_event(12345, 0.5));
    }

    #[test]
    fn remote_parent_needs_a_valid_traceparent() {
        let mut h = HeaderMap::new();
        assert!(remote_parent(Some(&h)).is_none());
        h.insert(codec::TRACEPARENT, "garbage");
        assert!(remote_parent(Some(&h)).is_none());
        let mut h = HeaderMap::new();
        h.insert(codec::TRACEPARENT, "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01");
        let cx = remote_parent(Some(&h)).expect("valid");
        assert_eq!(cx.span().span_context().trace_id().to_string(), "4bf92f3577b34da6a3ce929d0e0e4736");
    }

    #[test]
    fn synthetic_traceparents_are_valid_and_deterministic() {
        let (e, n) = (uuid::Uuid::from_u128(0x0190_aaaa), uuid::Uuid::from_u128(7 << 64));
        let tp = synthetic_traceparent(e, n);
        assert_eq!(tp, synthetic_traceparent(e, n));
        let mut h = HeaderMap::new();
        h.insert(codec::TRACEPARENT, tp.as_str());
        let cx = remote_parent(Some(&h)).expect("a valid traceparent");
        assert_eq!(cx.span().span_context().trace_id().to_string(), e.simple().to_string());
        assert!(!cx.span().span_context().is_sampled());
        assert!(
            remote_parent(Some(&{
                let mut h = HeaderMap::new();
                h.insert(codec::TRACEPARENT, synthetic_traceparent(uuid::Uuid::nil(), uuid::Uuid::nil()).as_str());
                h
            }))
            .is_some(),
            "never an all-zero id"
        );
    }

    #[test]
    fn no_span_no_trace_headers() {
        assert!(trace_headers(&tracing::Span::none()).is_none());
    }
}
