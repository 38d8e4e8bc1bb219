//! Telemetry end to end: lockoutd in-process against a real nats-server, with in-memory
//! OpenTelemetry exporters installed as the process-wide providers (hence this test binary
//! holds one test only).
//!
//! Proves: the fold span of an attempt continues the gateway's `traceparent`; the `locked`
//! notice carries that trace; a write command's request span continues the admin's trace and
//! so does the `unlocked` notice; the metrics move.

use std::time::Duration;

use async_nats::jetstream::{self, consumer};
use async_nats::HeaderMap;
use futures::StreamExt;
use nats_harness::NatsServer;
use opentelemetry::trace::{SpanId, TraceId};
use opentelemetry::KeyValue;
use opentelemetry_sdk::metrics::data::{AggregatedMetrics, MetricData, ResourceMetrics};
use opentelemetry_sdk::metrics::{InMemoryMetricExporter, PeriodicReader, SdkMeterProvider};
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider, SpanData};
use tracing_subscriber::layer::SubscriberExt as _;

const GATEWAY_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const GATEWAY_SPAN: &str = "00f067aa0ba902b7";
const ADMIN_TRACE: &str = "0af7651916cd43dd8448eb211c80319c";
const ADMIN_SPAN: &str = "b7ad6b7169203331";

fn attr(attrs: &[KeyValue], key: &str) -> Option<String> {
    attrs.iter().find(|kv| kv.key.as_str() == key).map(|kv| kv.value.to_string())
}

fn trace_id_of(traceparent: &str) -> &str {
    traceparent.split('-').nth(1).unwrap_or_default()
}

/// The cumulative value of a u64 counter's data point with `attrs`, from the last export.
fn counter(exports: &[ResourceMetrics], name: &str, attrs: &[(&str, &str)]) -> u64 {
    let mut value = 0;
    for rm in exports {
        for sm in rm.scope_metrics() {
            for m in sm.metrics().filter(|m| m.name() == name) {
                if let AggregatedMetrics::U64(MetricData::Sum(sum)) = m.data() {
                    for dp in sum.data_points() {
                        let kvs: Vec<KeyValue> = dp.attributes().cloned().collect();
                        if attrs.iter().all(|(k, v)| attr(&kvs, k).as_deref() == Some(*v)) {
                            value = dp.value();
                        }
                    }
                }
            }
        }
    }
    value
}

fn histogram_count(exports: &[ResourceMetrics], name: &str, attrs: &[(&str, &str)]) -> u64 {
    let mut count = 0;
    for rm in exports {
        for sm in rm.scope_metrics() {
            for m in sm.metrics().filter(|m| m.name() == name) {
                if let AggregatedMetrics::F64(MetricData::Histogram(h)) = m.data() {
                    for dp in h.data_points() {
                        let kvs: Vec<KeyValue> = dp.attributes().cloned().collect();
                        if attrs.iter().all(|(k, v)| attr(&kvs, k).as_deref() == Some(*v)) {
                            count = dp.count();
                        }
                    }
                }
            }
        }
    }
    count
}

fn json_headers(traceparent: Option<String>) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert("Content-Type", "application/json");
    if let Some(tp) = traceparent {
        h.insert("traceparent", tp.as_str());
        h.insert("tracestate", "gw=1");
    }
    h
}

/// Waits for the next notice of `kind` and returns its headers.
async fn next_notice(
    msgs: &mut (impl futures::Stream<Item = Result<jetstream::Message, impl std::fmt::Debug>> + Unpin),
    kind: &str,
) -> HeaderMap {
    loop {
        let m = tokio::time::timeout(Duration::from_secs(10), msgs.next())
            .await
            .unwrap_or_else(|_| panic!("no {kind} notice within 10 s"))
            .expect("notice stream ended")
            .expect("notice");
        m.ack().await.ok();
        if m.subject.as_str().ends_with(&format!(".{kind}")) {
            return m.headers.clone().expect("notice headers");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_follow_the_callers_trace_and_metrics_move() {
    // Process-wide providers: in-memory spans (simple processor, exported at span end) and a
    // meter provider whose reader we flush by hand.
    let spans = InMemorySpanExporter::default();
    let tracer_provider = SdkTracerProvider::builder().with_simple_exporter(spans.clone()).build();
    let tracer = opentelemetry::trace::TracerProvider::tracer(&tracer_provider, "lockoutd-test");
    let subscriber = tracing_subscriber::registry().with(tracing_opentelemetry::layer().with_tracer(tracer));
    tracing::subscriber::set_global_default(subscriber).expect("one subscriber per test binary");
    let metrics = InMemoryMetricExporter::default();
    let meter_provider =
        SdkMeterProvider::builder().with_reader(PeriodicReader::builder(metrics.clone()).build()).build();
    opentelemetry::global::set_meter_provider(meter_provider.clone());

    let nats = NatsServer::start();
    let data = tempfile::tempdir().unwrap();
    let config = lockoutd::Config::new(&nats.url(), data.path().join("store"));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let daemon = tokio::spawn(lockoutd::run(config, async move {
        let _ = stopped.await;
    }));

    let client = async_nats::connect(nats.url()).await.unwrap();
    let js = jetstream::new(client.clone());
    // Ready once the service answers.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let r = client.request_with_headers("lockout.svc.acme.health", json_headers(None), "{}".into()).await;
        if r.is_ok_and(|m| m.headers.as_ref().is_none_or(|h| h.get("Nats-Service-Error-Code").is_none())) {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "lockoutd did not become ready");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let notices = js.get_stream("LOCKOUT_NOTICES").await.unwrap();
    let consumer = notices
        .create_consumer(consumer::pull::Config { deliver_policy: consumer::DeliverPolicy::All, ..Default::default() })
        .await
        .unwrap();
    let mut notice_msgs = consumer.messages().await.unwrap();

    // Five failures (default policy locks at 5); the fifth, tripping one, carries the
    // gateway's trace.
    let user = "alice@acme.com";
    let utok = "YWxpY2VAYWNtZS5jb20";
    let mut tripping_id = String::new();
    for i in 0..5 {
        let id = uuid::Uuid::now_v7().to_string();
        let body = serde_json::json!({
            "id": id, "at": 0, "tenant": "acme", "user": user,
            "outcome": "failure", "source_ip": "203.0.113.7", "client": "IT Glue",
        });
        let tp = (i == 4).then(|| format!("00-{GATEWAY_TRACE}-{GATEWAY_SPAN}-01"));
        if i == 4 {
            tripping_id = id.clone();
        }
        js.publish_with_headers(
            format!("lockout.events.acme.u.{utok}.attempt"),
            json_headers(tp),
            serde_json::to_vec(&body).unwrap().into(),
        )
        .await
        .unwrap()
        .await
        .unwrap();
    }

    let locked = next_notice(&mut notice_msgs, "locked").await;
    let locked_tp = locked.get("traceparent").expect("locked notice has a traceparent").as_str().to_owned();
    assert_eq!(trace_id_of(&locked_tp), GATEWAY_TRACE, "locked notice continues the gateway's trace: {locked_tp}");
    assert_eq!(locked.get("tracestate").map(|v| v.as_str()), Some("gw=1"), "tracestate carried on");

    // An admin unlock with its own trace: request span → appended event → fold → notice.
    let unlock = client
        .request_with_headers(
            "lockout.svc.acme.unlock",
            json_headers(Some(format!("00-{ADMIN_TRACE}-{ADMIN_SPAN}-01"))),
            serde_json::to_vec(&serde_json::json!({"user": user, "actor": "admin7"})).unwrap().into(),
        )
        .await
        .unwrap();
    assert!(unlock.headers.as_ref().is_none_or(|h| h.get("Nats-Service-Error").is_none()), "unlock failed");
    let unlocked = next_notice(&mut notice_msgs, "unlocked").await;
    let unlocked_tp = unlocked.get("traceparent").expect("unlocked notice has a traceparent").as_str().to_owned();
    assert_eq!(trace_id_of(&unlocked_tp), ADMIN_TRACE, "unlocked notice continues the admin's trace");

    let _ = stop.send(());
    daemon.await.unwrap().unwrap();
    tracer_provider.force_flush().unwrap();
    meter_provider.force_flush().unwrap();

    // Spans.
    let finished: Vec<SpanData> = spans.get_finished_spans().unwrap();
    let gateway_trace = TraceId::from_hex(GATEWAY_TRACE).unwrap();
    let fold = finished
        .iter()
        .find(|s| is_fold_event(s) && s.span_context.trace_id() == gateway_trace)
        .unwrap_or_else(|| panic!("no fold_event span in the gateway's trace; spans: {:?}", names(&finished)));
    assert_eq!(fold.parent_span_id, SpanId::from_hex(GATEWAY_SPAN).unwrap(), "parent = the gateway's span");
    assert!(fold.parent_span_is_remote);
    assert_eq!(attr(&fold.attributes, "messaging.message.id").as_deref(), Some(tripping_id.as_str()));
    assert_eq!(attr(&fold.attributes, "messaging.system").as_deref(), Some("nats"));
    assert!(
        locked_tp.contains(&fold.span_context.span_id().to_string()),
        "the notice's parent is the fold span: {locked_tp}"
    );
    assert_eq!(attr(&fold.attributes, "messaging.destination.name").as_deref(), Some("LOCKOUT_EVENTS"));
    assert_eq!(attr(&fold.attributes, "messaging.operation.type").as_deref(), Some("process"));
    let batch = finished
        .iter()
        .find(|s| s.name == "process LOCKOUT_EVENTS" && attr(&s.attributes, "messaging.batch.message_count").is_some())
        .expect("a batch span named after the messaging conventions");
    assert_eq!(attr(&batch.attributes, "messaging.destination.name").as_deref(), Some("LOCKOUT_EVENTS"));
    assert_eq!(attr(&batch.attributes, "messaging.operation").as_deref(), Some("process"));
    assert!(attr(&batch.attributes, "messaging.batch.message_count").is_some());
    let admin_trace = TraceId::from_hex(ADMIN_TRACE).unwrap();
    let request = finished
        .iter()
        .find(|s| s.name == "lockout.request" && s.span_context.trace_id() == admin_trace)
        .expect("the unlock request span is in the admin's trace");
    assert_eq!(request.parent_span_id, SpanId::from_hex(ADMIN_SPAN).unwrap());
    assert_eq!(attr(&request.attributes, "lockout.op").as_deref(), Some("unlock"));
    assert!(
        finished.iter().any(|s| is_fold_event(s)
            && s.span_context.trace_id() == admin_trace
            && s.parent_span_id == request.span_context.span_id()),
        "the unlock event's fold span is a child of the request span"
    );
    // No user or tenant in any span attribute we set.
    for s in finished.iter().filter(|s| s.name.starts_with("lockout.") || s.name.starts_with("process ")) {
        for kv in &s.attributes {
            let v = kv.value.to_string();
            assert!(!v.contains(user) && v != "acme", "span {} attribute {} = {v}", s.name, kv.key);
        }
    }

    // Metrics.
    let exports = metrics.get_finished_metrics().unwrap();
    assert_eq!(counter(&exports, "lockout.events.folded", &[("type", "attempt"), ("outcome", "failure")]), 5);
    assert_eq!(counter(&exports, "lockout.events.folded", &[("type", "unlock")]), 1);
    assert_eq!(counter(&exports, "lockout.locks", &[("reason", "failures")]), 1);
    assert_eq!(counter(&exports, "lockout.unlocks", &[("how", "admin")]), 1);
    assert!(histogram_count(&exports, "lockout.batch.commit.duration", &[]) >= 1);
    assert_eq!(histogram_count(&exports, "lockout.request.duration", &[("op", "unlock"), ("code", "200")]), 1);
    for rm in &exports {
        for sm in rm.scope_metrics() {
            for m in sm.metrics() {
                let text = format!("{:?}", m.data());
                assert!(!text.contains(user) && !text.contains("\"acme\""), "metric {} has a user or tenant", m.name());
            }
        }
    }
}

/// A fold span of one event: `process <stream>` (the messaging conventions) with a message id.
fn is_fold_event(s: &SpanData) -> bool {
    s.name == "process LOCKOUT_EVENTS" && attr(&s.attributes, "messaging.message.id").is_some()
}

fn names(spans: &[SpanData]) -> Vec<String> {
    spans.iter().map(|s| format!("{} {}", s.name, s.span_context.trace_id())).collect()
}
