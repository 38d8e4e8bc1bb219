//! `make bench`: the numbers behind the README's Performance table, in one run.
//!
//! Starts its own nats-server, pre-publishes N attempt events, then measures on the same
//! payloads and machine: the raw JetStream pull-consume ceiling, lockoutd folding and
//! committing them (a child process, so its RSS is its own), a rebuild from an empty store,
//! the publish → `locked` notice latency and `status` latency under a steady background
//! load, store size per user, and single-core decode + fold. Writes
//! `target/bench/results.json`. Ratios compare phases of the same run; each throughput is the
//! median of `--repeats` runs after a warm-up.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use async_nats::jetstream::{self, consumer};
use async_nats::HeaderMap;
use clap::Parser;
use futures::{FutureExt as _, StreamExt};
use lockout_core::UserState;
use lockout_proto::codec::{self, Encoding};
use lockout_proto::event::{Attempt, Event, EventKind, Factor, Outcome};
use lockout_proto::{CompactString, Policy, Subjects, Tenant, UserId};
use nats_harness::NatsServer;
use serde_json::json;
use uuid::Uuid;

#[derive(Parser, Debug)]
#[command(about = "Benchmarks lockoutd against a real nats-server and writes target/bench/results.json")]
struct Args {
    /// Quick mode: 100k events, fewer samples (under a minute).
    #[arg(long)]
    quick: bool,
    /// Events to pre-publish (default 1,000,000; 100,000 with --quick).
    #[arg(long)]
    events: Option<usize>,
    /// Distinct users among them.
    #[arg(long, default_value_t = 100_000)]
    users: usize,
    /// Repeats of each throughput measurement (the median is reported).
    #[arg(long, default_value_t = 5)]
    repeats: usize,
    /// Background load for the latency phases, events/s.
    #[arg(long, default_value_t = 10_000)]
    load_eps: u64,
    /// Where to write the results.
    #[arg(long, default_value = "target/bench/results.json")]
    out: PathBuf,
    /// lockoutd's `--cache-mb` in every phase.
    #[arg(long, default_value_t = 256)]
    cache_mb: u64,
    /// Only the single-core decode + fold phase (no nats-server); prints its figures.
    #[arg(long)]
    fold_only: bool,
    /// Only lockoutd's batch folder and store, in this process without NATS (fold + commit of
    /// batches of 1000, one thread); prints events/s. For profiling the projector's own cost.
    #[arg(long)]
    folder_only: bool,
    /// Users of the store-size and RSS phase (default 1,000,000; 100,000 with --quick).
    #[arg(long)]
    wide_users: Option<usize>,
    /// The store-size phase's users in sorted order (sled's worst case: leaves split in the
    /// middle stay half full) instead of scrambled.
    #[arg(long)]
    wide_sorted: bool,
    /// Only the store-size phase without NATS: lockoutd's batch folder folds the store-size
    /// workload (`--wide-users`) into a store with lockoutd's default caches, in batches of
    /// 1000; prints the store's size per user. For trying store layouts quickly.
    #[arg(long)]
    disk_only: bool,
    /// Only sled reads against commits, in this process without NATS: a store of `--users`
    /// users (one failure each), then one thread reading users' states as `status` does, one
    /// every 300 µs (the latency phase's pace), while no commit runs and then while another
    /// thread commits `--commit-states` states every 5 ms (50: 10k events/s with commit
    /// lingering; 1000: a full batch, as when catching up); prints the reads' percentiles in µs
    /// for both.
    #[arg(long)]
    reads_under_commits: bool,
    /// States per commit of `--reads-under-commits`.
    #[arg(long, default_value_t = 50)]
    commit_states: usize,
    /// Only the latency phases (after folding the pre-published events); prints their figures.
    #[arg(long)]
    latency_only: bool,
    /// Only the background load (`--load-eps`) for this many seconds, after a second of
    /// warm-up, into a lockoutd on an empty store; prints the CPU share of lockoutd, of
    /// nats-server and of this process meanwhile (with `--perf FILE`, a profile of lockoutd
    /// over the same seconds). What live traffic costs each process.
    #[arg(long, value_name = "SECONDS")]
    load_only: Option<u64>,
    /// Profile lockoutd during the first projector run with `perf record` (DWARF call
    /// graphs) into this file; read it with `perf report -i FILE`.
    #[arg(long)]
    perf: Option<PathBuf>,
    /// Record the machine's scheduler events (`perf sched record -a`) while the `status`
    /// latencies are measured, into this file; read it with `benches/sched-delay.py FILE`.
    #[arg(long)]
    sched: Option<PathBuf>,
}

const TENANT: &str = "bench";

// The allocator of lockoutd and lockoutctl, so the in-process fold figures are theirs.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn attempt(user: String, outcome: Outcome, i: usize) -> Attempt {
    Attempt {
        id: Uuid::now_v7(),
        at: lockout_nats::clock::now_ms(),
        tenant: TENANT.into(),
        user: user.into(),
        outcome,
        factor: Factor::Password,
        source_ip: format!("198.51.{}.{}", (i / 256) % 256, i % 256).into(),
        client: Some(["Outlook", "IT Glue", "VSA sync", "Mozilla/5.0 (X11; Linux x86_64)"][i % 4].into()),
        credential: None,
        account: None,
    }
}

/// A message to publish: subject, headers, payload.
type Msg = (String, HeaderMap, Vec<u8>);

/// An attempt as a gateway publishes it: postcard, `Nats-Msg-Id` = its id.
fn gateway_msg(subjects: &Subjects, a: &Attempt) -> Msg {
    let tenant = Tenant::parse(&a.tenant).unwrap();
    let subject = subjects.user_event(&tenant, &UserId::parse(&a.user).unwrap(), EventKind::Attempt);
    let mut h = HeaderMap::new();
    h.insert(codec::NATS_MSG_ID, a.id.to_string().as_str());
    (subject, h, codec::encode(Encoding::Postcard, a))
}

/// The workload under `prefix`: 90% successes and 10% failures over `users`, plus 1% of users
/// hammered by a stale integration (every attempt fails, so they lock).
fn workload(prefix: &str, n: usize, users: usize) -> Vec<Msg> {
    let subjects = Subjects::new(prefix).unwrap();
    (0..n)
        .map(|i| {
            let u = (i.wrapping_mul(7919)) % users;
            let hammered = u % 100 == 0;
            let outcome = if hammered || i % 10 == 0 { Outcome::Failure } else { Outcome::Success };
            gateway_msg(&subjects, &attempt(format!("user{u:06}@example.com"), outcome, i))
        })
        .collect()
}

async fn publish_all(js: &jetstream::Context, events: &[Msg]) -> anyhow::Result<u64> {
    let mut last = 0;
    for chunk in events.chunks(2_000) {
        let mut acks = Vec::with_capacity(chunk.len());
        for (subject, h, payload) in chunk {
            acks.push(js.publish_with_headers(subject.clone(), h.clone(), payload.clone().into()).await?);
        }
        for a in acks {
            last = a.await?.sequence;
        }
    }
    Ok(last)
}

/// Pull-consumes the whole events stream with no processing; events/s.
async fn raw_consume(js: &jetstream::Context, stream: &str, n: u64) -> anyhow::Result<f64> {
    let s = js.get_stream(stream).await?;
    let c: consumer::PullConsumer = s
        .create_consumer(consumer::pull::Config {
            ack_policy: consumer::AckPolicy::None,
            deliver_policy: consumer::DeliverPolicy::All,
            ..Default::default()
        })
        .await?;
    let start = Instant::now();
    let mut msgs = c.stream().max_messages_per_batch(1_000).messages().await?;
    let mut got = 0u64;
    while got < n {
        let m = msgs.next().await.context("consumer ended")??;
        std::hint::black_box(&m.payload);
        got += 1;
    }
    Ok(n as f64 / start.elapsed().as_secs_f64())
}

struct Daemon {
    child: Child,
}

/// A binary built next to this one (`cargo build --release -p <name>`).
fn sibling(name: &str) -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let bin = exe.parent().context("exe dir")?.join(name);
    anyhow::ensure!(bin.exists(), "{} missing: run `cargo build --release -p {name}`", bin.display());
    Ok(bin)
}

impl Daemon {
    fn spawn(url: &str, dir: &Path, stream: &Stream) -> anyhow::Result<Daemon> {
        let child = Command::new(sibling("lockoutd")?)
            .args([
                "--nats-url",
                url,
                "--prefix",
                stream.prefix,
                "--cache-mb",
                &stream.cache_mb.to_string(),
                "--data-dir",
            ])
            .arg(dir)
            .env("RUST_LOG", "warn")
            .envs(stream.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()?;
        Ok(Daemon { child })
    }

    /// CPU time (user + system) the process used so far, in seconds.
    fn cpu_seconds(&self) -> f64 {
        cpu_seconds(self.child.id())
    }

    /// Peak resident set size (VmHWM) in bytes.
    fn peak_rss(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .map_or(0, |kb| kb * 1024)
    }

    fn stop(mut self) -> anyhow::Result<()> {
        Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status()?;
        let status = self.child.wait()?;
        anyhow::ensure!(status.success(), "lockoutd exited with {status}");
        Ok(())
    }
}

/// CPU time (user + system) process `pid` used so far, in seconds (0 once it is gone).
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which is in parentheses): utime and stime are the
    // 12th and 13th, in clock ticks of 1/100 s on Linux.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<f64> = rest.split_whitespace().map(|x| x.parse().unwrap_or(0.0)).collect();
    (f.get(11).unwrap_or(&0.0) + f.get(12).unwrap_or(&0.0)) / 100.0
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn health_seq(client: &async_nats::Client, prefix: &str) -> Option<u64> {
    let mut h = HeaderMap::new();
    h.insert(codec::CONTENT_TYPE, codec::JSON);
    let r = tokio::time::timeout(
        Duration::from_secs(1),
        client.request_with_headers(format!("{prefix}.svc.bench.health"), h, "{}".into()),
    )
    .await
    .ok()?
    .ok()?;
    let v: serde_json::Value = serde_json::from_slice(&r.payload).ok()?;
    v["seq"].as_u64()
}

/// What a lockoutd run folds: the stream of `prefix` up to `last`, with `env` set.
struct Stream<'a> {
    prefix: &'a str,
    last: u64,
    env: &'a [(String, String)],
    cache_mb: u64,
}

/// Starts lockoutd on an empty store and times first commit → checkpoint at `stream.last`;
/// with `perf`, records a profile of lockoutd meanwhile.
async fn fold_run(
    client: &async_nats::Client,
    url: &str,
    dir: &Path,
    stream: &Stream<'_>,
    perf: Option<&Path>,
) -> anyhow::Result<(f64, Daemon)> {
    let d = Daemon::spawn(url, dir, stream)?;
    let recorder = perf.map(|out| Recorder::profile(&d, out)).transpose()?;
    let result = wait_folded(client, stream.prefix, stream.last).await;
    if let Some(r) = recorder {
        r.stop()?;
    }
    Ok((result?, d))
}

/// A `perf` recording, from `start` until `stop`.
struct Recorder(Child);

impl Recorder {
    /// Runs `perf ARGS -o OUT`.
    fn start(args: &[&str], out: &Path) -> anyhow::Result<Recorder> {
        Command::new("perf")
            .args(args)
            .arg("-o")
            .arg(out)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .map(Recorder)
            .context("starting `perf` (Debian package linux-perf)")
    }

    /// A profile of lockoutd `d` with DWARF call graphs (`perf report -i OUT`).
    fn profile(d: &Daemon, out: &Path) -> anyhow::Result<Recorder> {
        Recorder::start(&["record", "-F", "999", "--call-graph", "dwarf,16384", "-p", &d.child.id().to_string()], out)
    }

    /// Stops the recording as Ctrl-C would, so `perf` writes its file out whole.
    fn stop(mut self) -> anyhow::Result<()> {
        Command::new("kill").args(["-INT", &self.0.id().to_string()]).status()?;
        self.0.wait()?;
        Ok(())
    }
}

/// Polls `health` until lockoutd folded `last`; events/s from its first commit.
async fn wait_folded(client: &async_nats::Client, prefix: &str, last: u64) -> anyhow::Result<f64> {
    let deadline = Instant::now() + Duration::from_secs(1_800);
    let (mut first_seq, mut first_at) = (0, Instant::now());
    loop {
        let seq = health_seq(client, prefix).await.unwrap_or(0);
        if seq > 0 && first_seq == 0 {
            (first_seq, first_at) = (seq, Instant::now());
        }
        if seq >= last {
            return Ok((last - first_seq) as f64 / first_at.elapsed().as_secs_f64().max(1e-9));
        }
        anyhow::ensure!(Instant::now() < deadline, "lockoutd did not reach {last}");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

fn dir_size(p: &Path) -> u64 {
    std::fs::read_dir(p).map_or(0, |rd| {
        rd.filter_map(Result::ok)
            .map(|e| {
                let md = e.metadata().ok();
                match md {
                    Some(m) if m.is_dir() => dir_size(&e.path()),
                    Some(m) => m.len(),
                    None => 0,
                }
            })
            .sum()
    })
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn percentile(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

/// Publishes `eps` events/s of successes for the load tenant under `subjects` until `stop`,
/// spread evenly: a share every millisecond (many gateways' attempts arrive as a stream, not
/// in bursts).
async fn background_load(
    js: jetstream::Context,
    subjects: Subjects,
    eps: u64,
    stop: Arc<AtomicBool>,
    sent: Arc<AtomicU64>,
) {
    let tenant = Tenant::parse("load").unwrap();
    let per_tick = (eps / 1_000).max(1) as usize;
    let mut tick = tokio::time::interval(Duration::from_millis(1));
    let mut i = 0usize;
    while !stop.load(Ordering::Relaxed) {
        tick.tick().await;
        let mut acks = Vec::with_capacity(per_tick);
        for _ in 0..per_tick {
            i += 1;
            let mut a = attempt(format!("load{:05}", i % 50_000), Outcome::Success, i);
            a.tenant = "load".into();
            let subject = subjects.user_event(&tenant, &UserId::parse(&a.user).unwrap(), EventKind::Attempt);
            if let Ok(ack) = js.publish(subject, codec::encode(Encoding::Postcard, &a).into()).await {
                acks.push(ack);
            }
        }
        for a in acks {
            if a.await.is_ok() {
                sent.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// Runs `f` on a thread named `name` with a runtime and NATS connection of its own, as another
/// process on the machine would (the latency phases' load generator, requester and echo
/// responder); the names tell the threads apart in `perf sched` recordings.
fn another_client<T: Send + 'static>(
    name: &str,
    url: &str,
    f: impl AsyncFnOnce(async_nats::Client) -> anyhow::Result<T> + Send + 'static,
) -> anyhow::Result<std::thread::JoinHandle<anyhow::Result<T>>> {
    let url = url.to_owned();
    Ok(std::thread::Builder::new().name(name.into()).spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        rt.block_on(async { f(async_nats::connect(&url).await?).await })
    })?)
}

/// Waits, off the runtime's workers, for a thread of `another_client`.
async fn join<T: Send + 'static>(t: std::thread::JoinHandle<anyhow::Result<T>>) -> anyhow::Result<T> {
    tokio::task::spawn_blocking(move || t.join().map_err(|_| anyhow::anyhow!("a bench thread panicked"))).await??
}

/// What the latency phase measured.
struct Latencies {
    lock_ms: Vec<f64>,
    status_ms: Vec<f64>,
    ping_ms: Vec<f64>,
    echo_ms: Vec<f64>,
    /// The same probes with the load consumed by a minimal consumer instead of lockoutd.
    bare_lock_ms: Vec<f64>,
    bare_echo_ms: Vec<f64>,
    status_qps: f64,
    achieved_load: f64,
}

/// The background load (see [`background_load`]) on a thread and connection of its own, as
/// from other processes: the latency probes share neither a runtime nor a socket with it.
struct Load {
    stop: Arc<AtomicBool>,
    sent: Arc<AtomicU64>,
    thread: std::thread::JoinHandle<anyhow::Result<()>>,
}

impl Load {
    /// Starts publishing under `subjects` and returns after a second of it (the warm-up).
    async fn start(url: &str, subjects: Subjects, eps: u64) -> anyhow::Result<Load> {
        let (stop, sent) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicU64::new(0)));
        let thread = another_client("bench-load", url, {
            let (stop, sent) = (stop.clone(), sent.clone());
            async move |client| {
                background_load(jetstream::new(client), subjects, eps, stop, sent).await;
                Ok(())
            }
        })?;
        tokio::time::sleep(Duration::from_secs(1)).await;
        Ok(Load { stop, sent, thread })
    }

    /// Events published so far.
    fn sent(&self) -> u64 {
        self.sent.load(Ordering::Relaxed)
    }

    /// Stops publishing; the events published in all.
    async fn stop(self) -> anyhow::Result<u64> {
        self.stop.store(true, Ordering::Relaxed);
        join(self.thread).await?;
        Ok(self.sent.load(Ordering::Relaxed))
    }
}

/// Publish → `locked` notice and `status` latencies, and `status` throughput, while a thread
/// of its own publishes the background load; lockoutd must be running. First the same probes
/// without lockoutd's work ([`bare_latencies`]).
async fn latencies(
    url: &str,
    client: &async_nats::Client,
    js: &jetstream::Context,
    a: &Args,
    users: usize,
) -> anyhow::Result<Latencies> {
    let (lat_samples, status_samples) = if a.quick { (30, 300) } else { (1_000, 2_000) };
    // The echo responder (a thread, runtime and connection of its own) is the floor without
    // lockoutd; it answers in both parts below.
    let (ready_tx, ready) = tokio::sync::oneshot::channel();
    let echo = another_client("bench-echo", url, async move |client| echo(client, ready_tx).await)?;
    ready.await.context("the echo responder did not start")?;
    let measured = async {
        let (bare_lock_ms, bare_echo_ms) =
            bare_latencies(url, client, js, a.load_eps, (lat_samples, status_samples)).await?;
        let load = Load::start(url, Subjects::default(), a.load_eps).await?;
        let load_start = (Instant::now(), load.sent());
        let lock_ms = lock_latencies(client, js, lat_samples, "lockout").await?;
        // The requester too: its replies are read and awaited on one thread, not handed
        // between this runtime's workers.
        let sched = a.sched.as_deref().map(|out| Recorder::start(&["sched", "record", "-a"], out)).transpose()?;
        let requester = another_client("bench-requester", url, async move |client| {
            status_latencies(&client, status_samples, users).await
        })?;
        // The recording stops whether or not the requester succeeded.
        let measured = join(requester).await;
        if let Some(r) = sched {
            r.stop()?;
        }
        let (status_ms, ping_ms, echo_ms) = measured?;
        let status_qps = status_qps(client, users, if a.quick { 2 } else { 5 }).await;
        let achieved_load = (load.sent() - load_start.1) as f64 / load_start.0.elapsed().as_secs_f64();
        load.stop().await?;
        Ok(Latencies { lock_ms, bare_lock_ms, status_ms, ping_ms, echo_ms, bare_echo_ms, status_qps, achieved_load })
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
) -> anyhow::Result<(Vec<f64>, Vec<f64>)> {
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
            let mut ms = Vec::with_capacity(samples);
            for _ in 0..samples {
                ms.push(round_trip_ms(&client, false).await?);
            }
            Ok(ms)
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
) -> anyhow::Result<Vec<f64>> {
    let subjects = Subjects::new(prefix).map_err(anyhow::Error::msg)?;
    let bare = prefix == BARE;
    let mut sub = client.subscribe(format!("{prefix}.notices.probe.locked")).await?;
    let tenant = Tenant::parse("probe").unwrap();
    let mut trip = HeaderMap::new();
    trip.insert(TRIP, "1");
    let mut out = Vec::with_capacity(samples);
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
                let n: lockout_proto::notice::LockedNotice = codec::decode(Encoding::Postcard, &m.payload, "notice")?;
                n.user == user
            };
            if ours {
                break;
            }
        }
        out.push(t.elapsed().as_secs_f64() * 1e3);
    }
    Ok(out)
}

/// `status` round trips, each paired with a `$SRV.PING.lockout` round trip and an echo round
/// trip taken right before or after it (in turn). The ping is answered by the same thread,
/// runtime and connection of lockoutd without touching the store: the floor a `status` request
/// sees in lockoutd. The echo is answered by [`echo`], not lockoutd: the floor of a request–reply
/// through nats-server on this machine under the same load.
async fn status_latencies(
    client: &async_nats::Client,
    samples: usize,
    users: usize,
) -> anyhow::Result<(Vec<f64>, Vec<f64>, Vec<f64>)> {
    let mut status = Vec::with_capacity(samples);
    let mut ping = Vec::with_capacity(samples);
    let mut echo = Vec::with_capacity(samples);
    let mut h = HeaderMap::new();
    h.insert(codec::CONTENT_TYPE, codec::JSON);
    for s in 0..samples {
        let body = serde_json::to_vec(&json!({"user": format!("user{:06}@example.com", (s * 104_729) % users)}))?;
        let ping_first = s % 2 == 0;
        let first = round_trip_ms(client, ping_first).await?;
        let t = Instant::now();
        let r = client.request_with_headers("lockout.svc.bench.status", h.clone(), body.into()).await?;
        status.push(t.elapsed().as_secs_f64() * 1e3);
        anyhow::ensure!(r.headers.as_ref().and_then(|h| h.get(codec::SERVICE_ERROR_CODE)).is_none(), "status failed");
        let second = round_trip_ms(client, !ping_first).await?;
        let (p, e) = if ping_first { (first, second) } else { (second, first) };
        ping.push(p);
        echo.push(e);
    }
    Ok((status, ping, echo))
}

/// One `$SRV.PING.lockout` round trip (`ping`) or one echo round trip, in ms.
async fn round_trip_ms(client: &async_nats::Client, ping: bool) -> anyhow::Result<f64> {
    let (subject, body) = if ping { ("$SRV.PING.lockout", "") } else { (ECHO, "{}") };
    let t = Instant::now();
    let r = client.request(subject, body.into()).await?;
    let ms = t.elapsed().as_secs_f64() * 1e3;
    anyhow::ensure!(r.payload.starts_with(b"{"), "the {subject} reply is not JSON");
    Ok(ms)
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

/// How much of the projector's per-event work a fold measurement includes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FoldWork {
    /// Decode the body and fold it (what `make bench-fold` measures).
    DecodeFold,
    /// Parse the subject, decode and check the body, fold: the projector's per-event work
    /// minus the store and NATS.
    Projector,
}

/// Single-core fold of pre-encoded attempts into a map of states; events/s.
fn fold_eps(events: &[Msg], enc: Encoding, work: FoldWork) -> f64 {
    let subjects = Subjects::default();
    let encoded: Vec<(&str, Vec<u8>)> = events
        .iter()
        .map(|(subject, _, p)| match enc {
            Encoding::Postcard => (subject.as_str(), p.clone()),
            Encoding::Json => {
                let e = Event::decode(EventKind::Attempt, Encoding::Postcard, p).unwrap();
                (subject.as_str(), e.encode(Encoding::Json))
            }
        })
        .collect();
    let policy = Policy::default();
    let start = Instant::now();
    // States as the projector's cache holds them: boxed, in its map type (foldhash, not
    // std's SipHash), grown as users appear; folded in place, as the projector folds.
    let mut states: lockout_engine::cache::HashMap<CompactString, Box<UserState>> = Default::default();
    for (i, (subject, bytes)) in encoded.iter().enumerate() {
        let e = match work {
            FoldWork::DecodeFold => Event::decode(EventKind::Attempt, enc, bytes).unwrap(),
            FoldWork::Projector => Event::decode_checked(&subjects.parse_event(subject).unwrap(), enc, bytes).unwrap(),
        };
        let user = e.user().unwrap();
        let slot = match states.get_mut(user) {
            Some(s) => s,
            None => states.entry(user.into()).or_default(),
        };
        let notices = lockout_core::fold_into(&policy, slot, &e, i as u64);
        std::hint::black_box(&notices);
    }
    std::hint::black_box(&states);
    encoded.len() as f64 / start.elapsed().as_secs_f64()
}

/// A stand-in OTLP/HTTP collector on loopback: answers every request `200` with an empty
/// (valid) protobuf response and counts the body bytes it received. Returns its URL.
async fn otlp_sink() -> anyhow::Result<(String, Arc<AtomicU64>)> {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", listener.local_addr()?);
    let received = Arc::new(AtomicU64::new(0));
    let counter = received.clone();
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            let counter = counter.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 16 * 1024];
                loop {
                    // One request: headers up to a blank line, then Content-Length bytes.
                    let request_len = loop {
                        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
                            let body = head
                                .lines()
                                .find_map(|l| l.strip_prefix("content-length:"))
                                .and_then(|v| v.trim().parse::<usize>().ok())
                                .unwrap_or(0);
                            if buf.len() >= end + 4 + body {
                                counter.fetch_add(body as u64, Ordering::Relaxed);
                                break end + 4 + body;
                            }
                        }
                        match sock.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    };
                    buf.drain(..request_len);
                    let ok = b"HTTP/1.1 200 OK\r\ncontent-type: application/x-protobuf\r\ncontent-length: 0\r\n\r\n";
                    if sock.write_all(ok).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    Ok((url, received))
}

/// Runs `lockoutctl --json ARGS` to completion; milliseconds, start to exit.
fn ctl_ms(url: &str, args: &[&str]) -> anyhow::Result<f64> {
    let start = Instant::now();
    let out = Command::new(sibling("lockoutctl")?)
        .args(["--nats-url", url, "--json"])
        .args(args)
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()?;
    let took = start.elapsed().as_secs_f64() * 1e3;
    anyhow::ensure!(out.status.success(), "lockoutctl {args:?} exited with {}", out.status);
    Ok(took)
}

/// `lockoutctl replay` into an empty directory: the whole command, start to exit; events/s.
fn replay_run(url: &str, dir: &Path, last: u64) -> anyhow::Result<f64> {
    let start = Instant::now();
    let out = Command::new(sibling("lockoutctl")?)
        .args(["--nats-url", url, "--json", "replay", "--data-dir"])
        .arg(dir)
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()?;
    let took = start.elapsed().as_secs_f64();
    anyhow::ensure!(out.status.success(), "lockoutctl replay exited with {}", out.status);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    anyhow::ensure!(v["checkpoint"].as_u64() == Some(last), "lockoutctl replay stopped at {}", v["checkpoint"]);
    Ok(last as f64 / took)
}

/// One failed attempt for each of `users` distinct users under `prefix`: every one of them
/// ends up with a stored state. Users come in a scrambled order, as in [`workload`] (people
/// do not log in sorted by name; `--wide-sorted` for the sorted order).
fn wide_workload(prefix: &str, users: usize, sorted: bool) -> Vec<Msg> {
    let subjects = Subjects::new(prefix).unwrap();
    (0..users)
        .map(|i| {
            // 7919 is prime and divides no power of ten: i ↦ i·7919 mod users is a permutation
            // for the round user counts used here (each user once).
            let u = if sorted { i } else { i.wrapping_mul(7919) % users };
            gateway_msg(&subjects, &attempt(format!("wide{u:07}@example.com"), Outcome::Failure, i))
        })
        .collect()
}

/// `valid` with the 10,000 distinct invalid events of the fault suite spread evenly among them.
fn mixed_workload(prefix: &str, valid: Vec<Msg>) -> Vec<Msg> {
    const INVALID: usize = 10_000;
    let every = (valid.len() / INVALID).max(1);
    let mut out = Vec::with_capacity(valid.len() + INVALID);
    let mut bad = (0..INVALID).map(|i| lockout_bench::invalid::invalid_event(prefix, i));
    for (i, m) in valid.into_iter().enumerate() {
        out.push(m);
        if i % every == 0 {
            out.extend(bad.next().map(|b| (b.subject, b.headers, b.payload)));
        }
    }
    out.extend(bad.map(|b| (b.subject, b.headers, b.payload)));
    out
}

/// Creates the streams of `prefix` (as lockoutd would) and publishes `msgs`; the last sequence.
async fn publish_on(js: &jetstream::Context, url: &str, prefix: &str, msgs: &[Msg]) -> anyhow::Result<u64> {
    let subjects = Subjects::new(prefix).map_err(anyhow::Error::msg)?;
    let cfg = lockoutd::Config { subjects, ..lockoutd::Config::new(url, PathBuf::from("unused")) };
    lockoutd::streams::ensure_streams(js, &cfg).await?;
    publish_all(js, msgs).await
}

/// Folds `events` (subjects under `prefix`) with lockoutd's batch folder in this process, in
/// batches of 1000, committing each into the store in `dir`; closes the store.
fn fold_in_process(
    events: &[Msg],
    dir: &Path,
    prefix: &str,
    sled_cache_bytes: u64,
    state_cache_bytes: usize,
) -> anyhow::Result<()> {
    let store = lockout_store::Store::open(dir, sled_cache_bytes)?;
    let outbox = lockout_engine::OutboxMode::Publish { floors: Default::default(), notices: Encoding::Postcard };
    let mut folder =
        lockout_engine::BatchFolder::new(store.clone(), Subjects::new(prefix).map_err(anyhow::Error::msg)?, outbox)?;
    folder.set_state_cache_bytes(state_cache_bytes);
    for (b, chunk) in events.chunks(1_000).enumerate() {
        let incoming: Vec<_> = chunk
            .iter()
            .enumerate()
            .map(|(i, (subject, _, payload))| {
                let seq = (b * 1_000 + i + 1) as u64;
                lockout_engine::Incoming { seq, subject, payload, time: seq, content_type: None }
            })
            .collect();
        if let Some(c) = folder.fold_batch(&incoming)?.commit {
            store.commit(&c)?;
        }
    }
    drop(folder);
    store.flush()?;
    Ok(())
}

/// See `Args::reads_under_commits`. sled 0.34 guards every tree with one process-wide
/// reader-writer lock that each commit (`apply_batch`) holds for writing and each read for
/// reading, so a read that comes during a commit waits for it.
fn reads_under_commits(users: usize, per_commit: usize) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let cfg = lockoutd::Config::new("unused", dir.path().into());
    fold_in_process(
        &wide_workload("wide", users, false),
        dir.path(),
        "wide",
        cfg.sled_cache_bytes(),
        cfg.state_cache_bytes(),
    )?;
    let store = lockout_store::Store::open(dir.path(), cfg.sled_cache_bytes())?;
    let keys = store.all_users().map(|r| r.map(|(t, u, _)| (t, u))).collect::<Result<Vec<_>, _>>()?;
    anyhow::ensure!(keys.len() == users, "{} users stored of {users}", keys.len());
    let reads = |n: usize, offset: usize| -> anyhow::Result<Vec<f64>> {
        let mut us = Vec::with_capacity(n);
        for i in 0..n {
            std::thread::sleep(Duration::from_micros(300));
            let (tenant, user) = &keys[(offset + i).wrapping_mul(104_729) % keys.len()];
            let t = Instant::now();
            anyhow::ensure!(store.user(tenant, user)?.is_some(), "{user} not stored");
            us.push(t.elapsed().as_secs_f64() * 1e6);
        }
        Ok(us)
    };
    let report = |name: &str, mut us: Vec<f64>| {
        for (p, label) in [(0.50, "p50"), (0.99, "p99"), (0.999, "p999"), (1.0, "max")] {
            println!("store_read_{name}_{label}_us {:.0}", percentile(&mut us, p));
        }
    };
    report("idle", reads(5_000, 0)?);
    let stop = AtomicBool::new(false);
    let under_commits = std::thread::scope(|s| {
        let committer = s.spawn(|| -> anyhow::Result<u64> {
            let (mut seq, mut commits) = (store.checkpoint()?, 0u64);
            while !stop.load(Ordering::Relaxed) {
                let states = (0..per_commit)
                    .map(|_| {
                        seq += 1;
                        let (tenant, user) = &keys[(seq as usize).wrapping_mul(7_919) % keys.len()];
                        let state = UserState { last_failure_at: Some(seq), ..UserState::default() };
                        lockout_store::StateChange { tenant: tenant.into(), user: user.into(), before: None, state }
                    })
                    .collect();
                store.commit(&lockout_store::Commit { states, checkpoint: seq, ..Default::default() })?;
                commits += 1;
                std::thread::sleep(Duration::from_millis(5));
            }
            Ok(commits)
        });
        let r = reads(5_000, 5_000);
        stop.store(true, Ordering::Relaxed);
        let commits = committer.join().map_err(|_| anyhow::anyhow!("the committer panicked"))??;
        anyhow::ensure!(commits > 0, "nothing was committed");
        r
    })?;
    report("committing", under_commits);
    Ok(())
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let a = Args::parse();
    let n = a.events.unwrap_or(if a.quick { 100_000 } else { 1_000_000 });
    let users = a.users.min(n);
    if a.folder_only {
        let events = workload("lockout", n, users);
        let dir = tempfile::tempdir()?;
        let start = Instant::now();
        fold_in_process(&events, dir.path(), "lockout", 128 << 20, lockout_engine::DEFAULT_STATE_CACHE_BYTES)?;
        println!("folder_eps {:.0}", events.len() as f64 / start.elapsed().as_secs_f64());
        return Ok(());
    }
    if a.disk_only {
        let wide_users = a.wide_users.unwrap_or(if a.quick { 100_000 } else { 1_000_000 });
        let events = wide_workload("wide", wide_users, a.wide_sorted);
        let dir = tempfile::tempdir()?;
        let cfg =
            lockoutd::Config { cache_bytes: a.cache_mb << 20, ..lockoutd::Config::new("unused", dir.path().into()) };
        fold_in_process(&events, dir.path(), "wide", cfg.sled_cache_bytes(), cfg.state_cache_bytes())?;
        // What is stored per user: the key and the state in the store's encoding, and the same
        // state as plain postcard (the store's earlier format), on average.
        let (mut tracked, mut key, mut state, mut postcard) = (0usize, 0usize, 0usize, 0usize);
        for r in lockout_store::Store::open(dir.path(), 16 << 20)?.all_users() {
            let (tenant, user, s) = r?;
            tracked += 1;
            key += 1 + lockout_store::user_key(&tenant, &user).len();
            state += lockout_store::state_codec::encode(&s).len();
            postcard += postcard::to_allocvec(&s)?.len();
        }
        let per_user = |x: usize| x as f64 / tracked.max(1) as f64;
        println!("disk_bytes_per_user {:.0}", per_user(dir_size(dir.path()) as usize));
        println!("key_bytes_per_user {:.1}", per_user(key));
        println!("state_bytes_per_user {:.1}", per_user(state));
        println!("postcard_state_bytes_per_user {:.1}", per_user(postcard));
        return Ok(());
    }
    if a.reads_under_commits {
        return reads_under_commits(users, a.commit_states);
    }
    if a.fold_only {
        let events = workload("lockout", n, users);
        let sample = &events[..events.len().min(200_000)];
        for enc in [Encoding::Postcard, Encoding::Json] {
            for (work, name) in [(FoldWork::DecodeFold, "fold"), (FoldWork::Projector, "fold_checked")] {
                let eps = median((0..a.repeats).map(|_| fold_eps(sample, enc, work)).collect());
                println!("{name}_{}_eps {eps:.0}", enc.name());
            }
        }
        return Ok(());
    }
    let nats = NatsServer::start();
    let url = nats.url();
    let client = async_nats::connect(&url).await?;
    let js = jetstream::new(client.clone());
    let work = tempfile::tempdir()?;
    lockoutd::streams::ensure_streams(&js, &lockoutd::Config::new(&url, work.path().join("unused"))).await?;

    if let Some(secs) = a.load_only {
        return load_only(&nats, &client, &work.path().join("load"), &a, secs).await;
    }
    if a.latency_only {
        eprintln!("publishing {n} events for {users} users, folding them …");
        let last = publish_all(&js, &workload("lockout", n, users)).await?;
        let plain = Stream { prefix: "lockout", last, env: &[], cache_mb: a.cache_mb };
        let (_, d) = fold_run(&client, &url, &work.path().join("lat"), &plain, None).await?;
        eprintln!("latency under {} events/s …", a.load_eps);
        let mut lat = latencies(&url, &client, &js, &a, users).await?;
        d.stop()?;
        for (name, v) in [
            ("e2e_lock_notice", &mut lat.lock_ms),
            ("e2e_lock_notice_bare", &mut lat.bare_lock_ms),
            ("status", &mut lat.status_ms),
            ("service_ping", &mut lat.ping_ms),
            ("nats_echo", &mut lat.echo_ms),
            ("nats_echo_bare", &mut lat.bare_echo_ms),
        ] {
            println!("{name}_p50_ms {:.3}", percentile(v, 0.50));
            println!("{name}_p99_ms {:.3}", percentile(v, 0.99));
        }
        println!("status_qps {:.0}\nbackground_load_eps {:.0}", lat.status_qps, lat.achieved_load);
        return Ok(());
    }
    eprintln!("publishing {n} events for {users} users …");
    let events = workload("lockout", n, users);
    let t = Instant::now();
    let last = publish_all(&js, &events).await?;
    eprintln!("published in {:.1} s", t.elapsed().as_secs_f64());

    // Each repeat measures, back to back so they share the machine's conditions: the raw
    // consume ceiling, lockoutd folding the stream with OTLP export (to a stand-in collector:
    // every metric and the default share of spans) and without, and `lockoutctl replay`. The
    // ratios are taken within a repeat; each figure is the median over the repeats.
    eprintln!("raw consume, projector (with and without OTLP export), replay ×{} …", a.repeats);
    raw_consume(&js, "LOCKOUT_EVENTS", last.min(50_000)).await?;
    let mut raw = Vec::new();
    let mut replays = Vec::new();
    let (otlp_url, otlp_bytes) = otlp_sink().await?;
    let export_env = [
        ("OTEL_EXPORTER_OTLP_ENDPOINT".to_owned(), otlp_url),
        ("OTEL_METRIC_EXPORT_INTERVAL".to_owned(), "1000".to_owned()),
    ];
    let plain = Stream { prefix: "lockout", last, env: &[], cache_mb: a.cache_mb };
    let exporting = Stream { prefix: "lockout", last, env: &export_env, cache_mb: a.cache_mb };
    let mut proj = Vec::new();
    let mut cpu = Vec::new();
    let mut export = Vec::new();
    let mut daemon: Option<Daemon> = None;
    for r in 0..a.repeats {
        raw.push(raw_consume(&js, "LOCKOUT_EVENTS", last).await?);
        // One lockoutd at a time (they share the durable consumer); the last one stays up
        // for the latency phases.
        if let Some(old) = daemon.take() {
            old.stop()?;
        }
        let dir = work.path().join(format!("export{r}"));
        let (eps, d) = fold_run(&client, &url, &dir, &exporting, None).await?;
        d.stop()?;
        export.push(eps);
        let dir = work.path().join(format!("proj{r}"));
        let perf = if r == 0 { a.perf.as_deref() } else { None };
        let (eps, d) = fold_run(&client, &url, &dir, &plain, perf).await?;
        cpu.push(d.cpu_seconds() * 1e6 / last as f64);
        daemon = Some(d);
        proj.push(eps);
        replays.push(replay_run(&url, &work.path().join(format!("replay{r}")), last)?);
    }
    let raw_eps = median(raw.clone());
    let ratio = |xs: &[f64]| median(xs.iter().zip(&raw).map(|(x, r)| x / r).collect());
    let (projector_vs_raw, replay_vs_raw) = (ratio(&proj), ratio(&replays));
    let otlp_loss = median(export.iter().zip(&proj).map(|(e, p)| 1.0 - e / p).collect());
    let replay_eps = median(replays);
    let projector_eps = median(proj);
    let projector_cpu_us = median(cpu);
    let export_eps = median(export);
    anyhow::ensure!(otlp_bytes.load(Ordering::Relaxed) > 0, "lockoutd exported nothing to the OTLP stand-in");

    // Bad input costs no more than good: the same valid events with 10,000 distinct invalid
    // ones among them, on a stream of their own; valid events/s against the projector's.
    eprintln!("projector with 10,000 invalid events among the valid ones …");
    let mixed = mixed_workload("mixed", workload("mixed", n, users));
    let mixed_last = publish_on(&js, &url, "mixed", &mixed).await?;
    let mixed_stream = Stream { prefix: "mixed", last: mixed_last, env: &[], cache_mb: a.cache_mb };
    let (mixed_eps, d) = fold_run(&client, &url, &work.path().join("mixed"), &mixed_stream, None).await?;
    d.stop()?;
    let dead = js.get_stream("MIXED_DEAD").await?.get_info().await?.state.messages;
    anyhow::ensure!(dead == 10_000, "the mixed stream's 10,000 invalid events gave {dead} dead letters");
    let valid_eps_with_invalid = mixed_eps * n as f64 / mixed.len() as f64;

    eprintln!("latency under {} events/s …", a.load_eps);
    let mut lat = latencies(&url, &client, &js, &a, users).await?;
    if let Some(d) = daemon {
        d.stop()?;
    }

    // Store size and memory with many users: a stream of its own (prefix `wide`) with one
    // failed attempt per user, folded by a fresh lockoutd with the default `--cache-mb`.
    let wide_users = a.wide_users.unwrap_or(if a.quick { 100_000 } else { 1_000_000 });
    eprintln!("store size and RSS at {wide_users} users …");
    let wide_last = publish_on(&js, &url, "wide", &wide_workload("wide", wide_users, a.wide_sorted)).await?;
    let wide_dir = work.path().join("wide");
    let (_, d) = fold_run(
        &client,
        &url,
        &wide_dir,
        &Stream { prefix: "wide", last: wide_last, env: &[], cache_mb: a.cache_mb },
        None,
    )
    .await?;
    let rss = d.peak_rss();
    d.stop()?;
    let disk = dir_size(&wide_dir);
    let tracked = lockout_store::Store::open(&wide_dir, 16 << 20)?.all_users().count();

    // The auditor's questions about one busy account: 10,000 events of one user (tenant
    // `audit`), then `lockoutctl history` and `explain`, each timed as a whole command.
    eprintln!("lockoutctl history and explain of a user with 10,000 events …");
    let audit_subjects = Subjects::default();
    let audit: Vec<Msg> = (0..10_000)
        .map(|i| {
            let outcome = if i % 3 == 0 { Outcome::Success } else { Outcome::Failure };
            let mut a = attempt("busy@example.com".into(), outcome, i);
            a.tenant = "audit".into();
            gateway_msg(&audit_subjects, &a)
        })
        .collect();
    publish_all(&js, &audit).await?;
    let mut history_ms = Vec::new();
    let mut explain_ms = Vec::new();
    for _ in 0..a.repeats {
        history_ms.push(ctl_ms(&url, &["history", "audit", "busy@example.com"])?);
        explain_ms.push(ctl_ms(&url, &["explain", "audit", "busy@example.com"])?);
    }

    let fold_sample = &events[..events.len().min(200_000)];
    let fold = |enc, work| median((0..a.repeats).map(|_| fold_eps(fold_sample, enc, work)).collect());
    let fold_postcard = fold(Encoding::Postcard, FoldWork::DecodeFold);
    let fold_json = fold(Encoding::Json, FoldWork::DecodeFold);
    let fold_checked_postcard = fold(Encoding::Postcard, FoldWork::Projector);
    let fold_checked_json = fold(Encoding::Json, FoldWork::Projector);

    let results = json!({
        "events": n,
        "users": users,
        "nats_server_version": nats_version(),
        "cores": std::thread::available_parallelism().map_or(0, |c| c.get()),
        "raw_consume_eps": raw_eps,
        "projector_eps": projector_eps,
        "projector_vs_raw_consume": projector_vs_raw,
        "projector_cpu_us_per_event": projector_cpu_us,
        "projector_otlp_export_eps": export_eps,
        "otlp_export_throughput_loss": otlp_loss,
        "valid_eps_with_10k_invalid": valid_eps_with_invalid,
        "valid_with_invalid_vs_projector": valid_eps_with_invalid / projector_eps,
        "replay_eps": replay_eps,
        "replay_vs_raw_consume": replay_vs_raw,
        "background_load_eps": lat.achieved_load,
        "e2e_lock_notice_p50_ms": percentile(&mut lat.lock_ms, 0.50),
        "e2e_lock_notice_p99_ms": percentile(&mut lat.lock_ms, 0.99),
        "e2e_lock_notice_bare_p50_ms": percentile(&mut lat.bare_lock_ms, 0.50),
        "e2e_lock_notice_bare_p99_ms": percentile(&mut lat.bare_lock_ms, 0.99),
        "status_p50_ms": percentile(&mut lat.status_ms, 0.50),
        "status_p99_ms": percentile(&mut lat.status_ms, 0.99),
        "status_qps": lat.status_qps,
        "service_ping_p50_ms": percentile(&mut lat.ping_ms, 0.50),
        "service_ping_p99_ms": percentile(&mut lat.ping_ms, 0.99),
        "nats_echo_p50_ms": percentile(&mut lat.echo_ms, 0.50),
        "nats_echo_p99_ms": percentile(&mut lat.echo_ms, 0.99),
        "nats_echo_bare_p50_ms": percentile(&mut lat.bare_echo_ms, 0.50),
        "nats_echo_bare_p99_ms": percentile(&mut lat.bare_echo_ms, 0.99),
        "tracked_users": tracked,
        "disk_bytes_per_user": disk as f64 / tracked.max(1) as f64,
        "rss_bytes": rss,
        "cache_mb": a.cache_mb,
        "fold_postcard_eps": fold_postcard,
        "fold_json_eps": fold_json,
        "fold_checked_postcard_eps": fold_checked_postcard,
        "fold_checked_json_eps": fold_checked_json,
        "history_10k_events_ms": median(history_ms),
        "explain_10k_events_ms": median(explain_ms),
    });
    if let Some(dir) = a.out.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(&a.out, serde_json::to_string_pretty(&results)? + "\n")?;
    println!("| key | value |\n|---|---|");
    for (k, v) in results.as_object().unwrap() {
        match v.as_f64() {
            Some(f) if f.fract() != 0.0 => println!("| {k} | {f:.3} |"),
            _ => println!("| {k} | {v} |"),
        }
    }
    println!("\nwritten to {}", a.out.display());
    Ok(())
}

/// See `Args::load_only`.
async fn load_only(
    nats: &NatsServer,
    client: &async_nats::Client,
    dir: &Path,
    a: &Args,
    secs: u64,
) -> anyhow::Result<()> {
    let url = nats.url();
    let d = Daemon::spawn(&url, dir, &Stream { prefix: "lockout", last: 0, env: &[], cache_mb: a.cache_mb })?;
    let deadline = Instant::now() + Duration::from_secs(30);
    while health_seq(client, "lockout").await.is_none() {
        anyhow::ensure!(Instant::now() < deadline, "lockoutd did not answer health within 30 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let load = Load::start(&url, Subjects::default(), a.load_eps).await?;
    let nats_pid = nats.pid().context("nats-server is not running")?;
    let pids = [d.child.id(), nats_pid, std::process::id()];
    let before = (Instant::now(), load.sent(), pids.map(cpu_seconds));
    let perf = a.perf.as_deref().map(|out| Recorder::profile(&d, out)).transpose()?;
    tokio::time::sleep(Duration::from_secs(secs)).await;
    let after = pids.map(cpu_seconds);
    let took = before.0.elapsed().as_secs_f64();
    let eps = (load.sent() - before.1) as f64 / took;
    if let Some(r) = perf {
        r.stop()?;
    }
    load.stop().await?;
    d.stop()?;
    for (name, (b, a)) in ["lockoutd", "nats_server", "bench"].iter().zip(before.2.iter().zip(after)) {
        println!("{name}_cpu_pct {:.1}", (a - b) / took * 100.0);
    }
    println!("background_load_eps {eps:.0}");
    Ok(())
}

fn nats_version() -> String {
    Command::new(nats_harness::binary())
        .arg("--version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default()
}
