//! The steady background load of live traffic and the clients that act as other processes: a
//! publisher of `--load-eps` successes a second spread over each millisecond ([`Load`]), on a
//! thread, runtime and NATS connection of its own ([`another_client`]), as are the latency
//! phases' requester and echo responder. Also `lockout-bench load SECONDS`: that load alone
//! into a lockoutd on an empty store, and what it costs each process in CPU.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use async_nats::jetstream;
use lockout_proto::codec::{self, Encoding};
use lockout_proto::event::{EventKind, Outcome};
use lockout_proto::{Subjects, Tenant, UserId};

use crate::daemons::{cpu_seconds, health_seq, Daemon, Nats, Recorder, Stream};
use crate::workload::attempt;
use crate::LoadArgs;

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
pub fn another_client<T: Send + 'static>(
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
pub async fn join<T: Send + 'static>(t: std::thread::JoinHandle<anyhow::Result<T>>) -> anyhow::Result<T> {
    tokio::task::spawn_blocking(move || t.join().map_err(|_| anyhow::anyhow!("a bench thread panicked"))).await??
}

/// The background load (see [`background_load`]) on a thread and connection of its own, as
/// from other processes: the latency probes share neither a runtime nor a socket with it.
pub struct Load {
    stop: Arc<AtomicBool>,
    sent: Arc<AtomicU64>,
    thread: std::thread::JoinHandle<anyhow::Result<()>>,
}

impl Load {
    /// Starts publishing under `subjects` and returns after a second of it (the warm-up).
    pub async fn start(url: &str, subjects: Subjects, eps: u64) -> anyhow::Result<Load> {
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
    pub fn sent(&self) -> u64 {
        self.sent.load(Ordering::Relaxed)
    }

    /// Stops publishing; the events published in all.
    pub async fn stop(self) -> anyhow::Result<u64> {
        self.stop.store(true, Ordering::Relaxed);
        join(self.thread).await?;
        Ok(self.sent.load(Ordering::Relaxed))
    }
}

/// `lockout-bench load SECONDS`: the background load (`--load-eps`) for SECONDS, after a second
/// of warm-up, into a lockoutd on an empty store; prints the CPU share of lockoutd, of
/// nats-server and of this process meanwhile (with `--perf FILE`, a profile of lockoutd over
/// the same seconds).
pub async fn load_only(a: &LoadArgs) -> anyhow::Result<()> {
    let nats = Nats::start().await?;
    let url = &nats.url;
    let stream = Stream { prefix: "lockout", last: 0, env: &[], cache_mb: a.cache_mb };
    let d = Daemon::spawn(url, &nats.dir("load"), &stream)?;
    let deadline = Instant::now() + Duration::from_secs(30);
    while health_seq(&nats.client, "lockout").await.is_none() {
        anyhow::ensure!(Instant::now() < deadline, "lockoutd did not answer health within 30 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let load = Load::start(url, Subjects::default(), a.load_eps).await?;
    let nats_pid = nats.server.pid().context("nats-server is not running")?;
    let pids = [d.pid(), nats_pid, std::process::id()];
    let before = (Instant::now(), load.sent(), pids.map(cpu_seconds));
    let perf = a.perf.as_deref().map(|out| Recorder::profile(&d, out)).transpose()?;
    tokio::time::sleep(Duration::from_secs(a.seconds)).await;
    let after = pids.map(cpu_seconds);
    let took = before.0.elapsed().as_secs_f64();
    let eps = (load.sent() - before.1) as f64 / took;
    if let Some(r) = perf {
        r.stop()?;
    }
    load.stop().await?;
    d.stop()?;
    for (name, (start, end)) in ["lockoutd", "nats_server", "bench"].iter().zip(before.2.iter().zip(after)) {
        println!("{name}_cpu_pct {:.1}", (end - start) / took * 100.0);
    }
    println!("background_load_eps {eps:.0}");
    Ok(())
}
