//! The latency probes and their floors, under the background load with lockoutd running:
//! publish → `locked` notice, `status` round trips each paired with a `$SRV.PING` round trip to
//! lockoutd and an echo round trip to a minimal responder ([`echo`]), `status` throughput; and
//! the bare floor, the same probes with a minimal consumer ([`minimal_consumer`]) following the
//! load in lockoutd's place. Round trips are recorded in [`Samples`].

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use async_nats::jetstream::{self, consumer};
use async_nats::HeaderMap;
use futures::{FutureExt as _, StreamExt};
use lockout_proto::codec::{self, Encoding};
use lockout_proto::event::{EventKind, Outcome};
use lockout_proto::{Subjects, Tenant, UserId};
use serde_json::json;
use uuid::Uuid;

use crate::daemons::Recorder;
use crate::load::{another_client, join, Load};
use crate::report::Samples;
use crate::workload::attempt;

/// What the latency phase measured.
pub struct Latencies {
    pub lock_ms: Samples,
    pub status_ms: Samples,
    /// `status` with a source (`ip`, `client`, `account`: contract v2), interleaved with the
    /// plain ones under the same load.
    pub status_source_ms: Samples,
    pub ping_ms: Samples,
    pub echo_ms: Samples,
    /// The same probes with the load consumed by a minimal consumer instead of lockoutd.
    pub bare_lock_ms: Samples,
    pub bare_echo_ms: Samples,
    pub status_qps: f64,
    pub achieved_load: f64,
}

/// How the latency phase runs.
pub struct Plan<'a> {
    /// Fewer samples: 30 lock notices and 300 `status` requests instead of 1,000 and 2,000,
    /// and 2 s of `status` throughput instead of 5.
    pub quick: bool,
    /// The background load, events/s.
    pub load_eps: u64,
    /// Where to record the machine's scheduler events while the `status` latencies are measured.
    pub sched: Option<&'a Path>,
    /// The users of the pre-published workload, whose states `status` asks for.
    pub users: usize,
}

/// Publish → `locked` notice and `status` latencies, and `status` throughput, while a thread
/// of its own publishes the background load; lockoutd must be running. First the same probes
/// without lockoutd's work ([`bare_latencies`]).
pub async fn latencies(
    url: &str,
    client: &async_nats::Client,
    js: &jetstream::Context,
    plan: &Plan<'_>,
) -> anyhow::Result<Latencies> {
    let users = plan.users;
    let (lat_samples, status_samples) = if plan.quick { (30, 300) } else { (1_000, 2_000) };
    // The echo responder (a thread, runtime and connection of its own) is the floor without
    // lockoutd; it answers in both parts below.
    let (ready_tx, ready) = tokio::sync::oneshot::channel();
    let echo = another_client("bench-echo", url, async move |client| echo(client, ready_tx).await)?;
    ready.await.context("the echo responder did not start")?;
    let measured = async {
        let (bare_lock_ms, bare_echo_ms) =
            bare_latencies(url, client, js, plan.load_eps, (lat_samples, status_samples)).await?;
        let load = Load::start(url, Subjects::default(), plan.load_eps).await?;
        let load_start = (Instant::now(), load.sent());
        let lock_ms = lock_latencies(client, js, lat_samples, "lockout").await?;
        // The requester too: its replies are read and awaited on one thread, not handed
        // between this runtime's workers.
        let sched = plan.sched.map(|out| Recorder::start(&["sched", "record", "-a"], out)).transpose()?;
        let requester = another_client("bench-requester", url, async move |client| {
            status_latencies(&client, status_samples, users).await
        })?;
        // The recording stops whether or not the requester succeeded.
        let measured = join(requester).await;
        if let Some(r) = sched {
            r.stop()?;
        }
        let (status_ms, status_source_ms, ping_ms, echo_ms) = measured?;
        let status_qps = status_qps(client, users, if plan.quick { 2 } else { 5 }).await;
        let achieved_load = (load.sent() - load_start.1) as f64 / load_start.0.elapsed().as_secs_f64();
        load.stop().await?;
        Ok(Latencies {
            lock_ms,
            bare_lock_ms,
            status_ms,
            status_source_ms,
            ping_ms,
            echo_ms,
            bare_echo_ms,
            status_qps,
            achieved_load,
        })
    }
    .await;
    // The responder stops whether or not the measurements succeeded.
    client.publish(ECHO, Default::default()).await?;
    join(echo).await?;
    measured
}

/// The prefix of the bare phase's streams; lockoutd (prefix `lockout`) never reads them.
const BARE: &str = "bare";

/// The latency probes under the same background load with lockoutd out of the way: the load
/// goes to streams of their own (prefix [`BARE`]), which a minimal consumer follows in
/// lockoutd's place ([`minimal_consumer`]); lockoutd runs but has nothing to do. What
/// nats-server storing and delivering the load, the load's publisher and the machine leave of
/// each probe before lockoutd does any work: the floors under `e2e_lock_notice_*` (publish →
/// the consumer's stand-in notice) and `nats_echo_*` (an echo round trip).
async fn bare_latencies(
    url: &str,
    client: &async_nats::Client,
    js: &jetstream::Context,
    eps: u64,
    (lat_samples, samples): (usize, usize),
) -> anyhow::Result<(Samples, Samples)> {
    let subjects = Subjects::new(BARE).map_err(anyhow::Error::msg)?;
    let cfg = lockoutd::Config { subjects: subjects.clone(), ..lockoutd::Config::new(url, PathBuf::from("unused")) };
    lockoutd::streams::ensure_streams(js, &cfg).await?;
    let (halt, halted) = tokio::sync::watch::channel(false);
    let consumer = another_client("bench-consumer", url, {
        let subjects = subjects.clone();
        async move |client| minimal_consumer(jetstream::new(client), &subjects, halted).await
    })?;
    let load = Load::start(url, subjects, eps).await?;
    let measured = async {
        let lock_ms = lock_latencies(client, js, lat_samples, BARE).await?;
        let requester = another_client("bench-requester", url, async move |client| {
            let mut echo = Samples::default();
            for _ in 0..samples {
                echo.record(round_trip(&client, false).await?);
            }
            Ok(echo)
        })?;
        Ok::<_, anyhow::Error>((lock_ms, join(requester).await?))
    }
    .await;
    // The load and the consumer stop whether or not the probes succeeded.
    let sent = load.stop().await?;
    let _ = halt.send(true);
    let consumed = join(consumer).await?;
    // It kept up with the load (a batch or so behind at most when it was halted).
    anyhow::ensure!(consumed + 1_000 >= sent, "the minimal consumer took {consumed} of {sent} events");
    measured
}

/// lockoutd's part of the traffic without its work: pulls the events stream of `subjects` as
/// lockoutd's consumer does (acknowledge-all, batches of up to 1000) and acknowledges the last
/// message of what each wake-up delivered; a message marked [`TRIP`] it sends back at once as
/// the `locked` notice of tenant `probe`. Returns how many messages it received when `halted`
/// turns true.
async fn minimal_consumer(
    js: jetstream::Context,
    subjects: &Subjects,
    mut halted: tokio::sync::watch::Receiver<bool>,
) -> anyhow::Result<u64> {
    let c: consumer::PullConsumer = js
        .get_stream(subjects.events_stream())
        .await?
        .create_consumer(consumer::pull::Config {
            ack_policy: consumer::AckPolicy::All,
            deliver_policy: consumer::DeliverPolicy::All,
            ..Default::default()
        })
        .await?;
    let notice = format!("{}.notices.probe.locked", subjects.prefix());
    let mut msgs = c.stream().max_messages_per_batch(1_000).heartbeat(Duration::from_secs(5)).messages().await?;
    let mut got = 0u64;
    loop {
        let mut next = Some(tokio::select! {
            _ = halted.changed() => return Ok(got),
            m = msgs.next() => m.context("the consumer's message stream ended")?,
        });
        let mut last = None;
        while let Some(m) = next {
            let m = m?;
            got += 1;
            if m.headers.as_ref().is_some_and(|h| h.get(TRIP).is_some()) {
                // Its acknowledgement is awaited off this loop, as lockoutd's outbox does.
                tokio::spawn(std::future::IntoFuture::into_future(
                    js.publish(notice.clone(), m.payload.clone()).await?,
                ));
            }
            last = Some(m);
            next = msgs.next().now_or_never().flatten();
        }
        if let Some(m) = last {
            m.ack().await.map_err(|e| anyhow::anyhow!("acknowledging: {e}"))?;
        }
    }
}

/// The echo responder's subject.
const ECHO: &str = "bench.echo";

/// Answers each request on [`ECHO`] with its payload, until a message without a reply subject:
/// a NATS request–reply to a minimal responder, the floor on this machine without lockoutd.
async fn echo(client: async_nats::Client, ready: tokio::sync::oneshot::Sender<()>) -> anyhow::Result<()> {
    let mut sub = client.subscribe(ECHO).await?;
    // Its own first message back means the server has the subscription.
    client.publish(ECHO, Default::default()).await?;
    sub.next().await.context("the echo subscription ended")?;
    let _ = ready.send(());
    while let Some(m) = sub.next().await {
        let Some(reply) = m.reply else { break };
        client.publish(reply, m.payload).await?;
    }
    Ok(())
}

/// The header that marks a probe's tripping attempt: the bare phase's minimal consumer
/// answers it with a stand-in notice; lockoutd ignores it, as any header it does not read.
const TRIP: &str = "Bench-Trip";

/// Publish of the tripping attempt → `locked` notice received, in ms: four failures of a new
/// user, each awaited, then the fifth, timed from its publish (awaiting its PubAck, as a
/// gateway does) until the notice arrives on `<prefix>.notices.probe.locked`. Under lockoutd's
/// prefix the notice is lockoutd's; under [`BARE`] the minimal consumer sends the fifth
/// attempt's own bytes back as the notice, with no fold, commit or outbox in between.
async fn lock_latencies(
    client: &async_nats::Client,
    js: &jetstream::Context,
    samples: usize,
    prefix: &str,
) -> anyhow::Result<Samples> {
    let subjects = Subjects::new(prefix).map_err(anyhow::Error::msg)?;
    let bare = prefix == BARE;
    let mut sub = client.subscribe(format!("{prefix}.notices.probe.locked")).await?;
    let tenant = Tenant::parse("probe").unwrap();
    let mut trip = HeaderMap::new();
    trip.insert(TRIP, "1");
    let mut out = Samples::default();
    for s in 0..samples {
        let user = format!("probe{s:05}-{}", Uuid::now_v7().simple());
        let subject = subjects.user_event(&tenant, &UserId::parse(&user).unwrap(), EventKind::Attempt);
        let mk = |i| {
            let mut a = attempt(user.clone(), Outcome::Failure, i);
            a.tenant = "probe".into();
            codec::encode(Encoding::Postcard, &a)
        };
        for i in 0..4 {
            js.publish(subject.clone(), mk(i).into()).await?.await?;
        }
        let tripping = mk(4);
        let t = Instant::now();
        js.publish_with_headers(subject.clone(), trip.clone(), tripping.clone().into()).await?.await?;
        loop {
            let m = tokio::time::timeout(Duration::from_secs(10), sub.next()).await?.context("subscription ended")?;
            let ours = if bare {
                m.payload[..] == tripping[..]
            } else {
                // The notice's own Content-Type (lockoutd's --wire-version picks the layout).
                let ct = m.headers.as_ref().and_then(|h| h.get(codec::CONTENT_TYPE)).map(|v| v.as_str().to_owned());
                let enc = Encoding::from_content_type(ct.as_deref()).map_err(|r| anyhow::anyhow!(r.message))?;
                let n: lockout_proto::notice::LockedNotice = codec::decode(enc, &m.payload, "notice")?;
                n.user == user
            };
            if ours {
                break;
            }
        }
        out.record(t.elapsed());
    }
    Ok(out)
}

/// `status` round trips, each paired with a `$SRV.PING.lockout` round trip and an echo round
/// trip taken right before or after it (in turn), and every other one also asked with a
/// source (`ip`, `client`, `account`), right before or after it (in turn). The ping is answered by the same thread,
/// runtime and connection of lockoutd without touching the store: the floor a `status` request
/// sees in lockoutd. The echo is answered by [`echo`], not lockoutd: the floor of a request–reply
/// through nats-server on this machine under the same load.
async fn status_latencies(
    client: &async_nats::Client,
    samples: usize,
    users: usize,
) -> anyhow::Result<(Samples, Samples, Samples, Samples)> {
    let (mut status, mut ping, mut echo) = (Samples::default(), Samples::default(), Samples::default());
    let mut with_source = Samples::default();
    let mut h = HeaderMap::new();
    h.insert(codec::CONTENT_TYPE, codec::JSON);
    let ask = async |body: Vec<u8>| -> anyhow::Result<Duration> {
        let t = Instant::now();
        let r = client.request_with_headers("lockout.svc.bench.status", h.clone(), body.into()).await?;
        let took = t.elapsed();
        anyhow::ensure!(r.headers.as_ref().and_then(|h| h.get(codec::SERVICE_ERROR_CODE)).is_none(), "status failed");
        Ok(took)
    };
    for s in 0..samples {
        let user = format!("user{:06}@example.com", (s * 104_729) % users);
        let body = serde_json::to_vec(&json!({ "user": user }))?;
        let sourced = serde_json::to_vec(&json!({
            "user": user, "ip": "198.51.100.7", "client": "IT Glue", "account": "api",
        }))?;
        let ping_first = s % 2 == 0;
        let first = round_trip(client, ping_first).await?;
        if s % 2 == 1 && s % 4 == 1 {
            with_source.record(ask(sourced.clone()).await?);
        }
        status.record(ask(body).await?);
        if s % 2 == 1 && s % 4 == 3 {
            with_source.record(ask(sourced).await?);
        }
        let second = round_trip(client, !ping_first).await?;
        let (p, e) = if ping_first { (first, second) } else { (second, first) };
        ping.record(p);
        echo.record(e);
    }
    Ok((status, with_source, ping, echo))
}

/// One `$SRV.PING.lockout` round trip (`ping`) or one echo round trip.
async fn round_trip(client: &async_nats::Client, ping: bool) -> anyhow::Result<Duration> {
    let (subject, body) = if ping { ("$SRV.PING.lockout", "") } else { (ECHO, "{}") };
    let t = Instant::now();
    let r = client.request(subject, body.into()).await?;
    let took = t.elapsed();
    anyhow::ensure!(r.payload.starts_with(b"{"), "the {subject} reply is not JSON");
    Ok(took)
}

async fn status_qps(client: &async_nats::Client, users: usize, secs: u64) -> f64 {
    let done = Arc::new(AtomicU64::new(0));
    let end = Instant::now() + Duration::from_secs(secs);
    let mut tasks = Vec::new();
    for w in 0..8usize {
        let (client, done) = (client.clone(), done.clone());
        tasks.push(tokio::spawn(async move {
            let mut h = HeaderMap::new();
            h.insert(codec::CONTENT_TYPE, codec::JSON);
            let mut i = w;
            while Instant::now() < end {
                let body =
                    serde_json::to_vec(&json!({"user": format!("user{:06}@example.com", (i * 7) % users)})).unwrap();
                if client.request_with_headers("lockout.svc.bench.status", h.clone(), body.into()).await.is_ok() {
                    done.fetch_add(1, Ordering::Relaxed);
                }
                i += 8;
            }
        }));
    }
    let start = Instant::now();
    for t in tasks {
        let _ = t.await;
    }
    done.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64()
}
