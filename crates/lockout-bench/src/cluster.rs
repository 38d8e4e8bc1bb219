//! Scale-out (issue 19): three lockoutd processes sharing the 64 partitions on one
//! nats-server, against one process, on the same stream; then the take-over after a `kill -9`.
//!
//! Each repeat runs one process and then three on fresh stores (the lease and claim buckets
//! and the stream's consumers deleted first, so every run starts as a new deployment would),
//! timing each from its first commit until every partition is folded to the stream's last
//! event, and taking the CPU of lockoutd (all its processes) and of nats-server per event. The
//! last three processes stay up: one is killed with SIGKILL, and the take-over is timed from
//! the kill until the two others report every partition folded to the end (what `status` of
//! its users needs), which includes the lease running out.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use futures::StreamExt;
use lockout_proto::partition;

use crate::daemons::{cpu_seconds, fold_run, Daemon, Nats, Stream};
use crate::report::median;
use crate::ClusterArgs;

/// Processes of the cluster runs.
const PROCESSES: usize = 3;

/// What the cluster phase measured (medians of the repeats).
pub struct ClusterFigures {
    pub processes: usize,
    /// One process folding the stream, events/s.
    pub single_eps: f64,
    /// Three processes folding the stream together, events/s of the stream.
    pub cluster_eps: f64,
    /// lockoutd CPU (one process) per event of the stream, µs.
    pub single_cpu_us: f64,
    /// lockoutd CPU (the three together) per event of the stream, µs.
    pub cluster_cpu_us: f64,
    /// nats-server CPU per event of the stream while one process folded, µs.
    pub single_server_cpu_us: f64,
    /// … while three did, µs.
    pub cluster_server_cpu_us: f64,
    /// `kill -9` of one of three → every partition folded to the end again, ms.
    pub takeover_ms: f64,
    /// What the take-over must stay within: the lease plus 5 s, ms.
    pub takeover_limit_ms: f64,
}

/// Process counts the projection is given for.
const PROJECTED: [usize; 4] = [2, 4, 8, 16];

impl ClusterFigures {
    /// The per-process costs behind the projection, µs per event of the stream: what every
    /// process pays to read and skip the whole stream (`read`), what the fold of all the
    /// partitions costs once (`fold`, shared among the processes), and nats-server's base cost
    /// and its cost per reader. From `single = read + fold` and `cluster = 3 read + fold`.
    pub fn model(&self) -> (f64, f64, f64, f64) {
        let extra = (self.processes - 1) as f64;
        let read = (self.cluster_cpu_us - self.single_cpu_us) / extra;
        let per_reader = (self.cluster_server_cpu_us - self.single_server_cpu_us) / extra;
        (read, self.single_cpu_us - read, self.single_server_cpu_us - per_reader, per_reader)
    }

    /// A projection, not a measurement: events/s of `n` processes each on a core of its own
    /// (the slowest process's share of work), and the nats-server cores that rate needs.
    pub fn projection(&self, n: usize) -> (f64, f64) {
        let (read, fold, base, per_reader) = self.model();
        let eps = 1e6 / (read + fold / n as f64);
        (eps, eps * (base + per_reader * n as f64) / 1e6)
    }

    /// The `name value` lines (and the `results.json` keys).
    pub fn pairs(&self) -> Vec<(String, f64)> {
        let (read, fold, base, per_reader) = self.model();
        let mut v: Vec<(String, f64)> = [
            ("cluster_processes", self.processes as f64),
            ("cluster_single_eps", self.single_eps),
            ("cluster_eps", self.cluster_eps),
            ("cluster_single_cpu_us_per_event", self.single_cpu_us),
            ("cluster_cpu_us_per_event", self.cluster_cpu_us),
            ("cluster_cpu_vs_single", self.cluster_cpu_us / self.single_cpu_us),
            ("cluster_single_server_cpu_us_per_event", self.single_server_cpu_us),
            ("cluster_server_cpu_us_per_event", self.cluster_server_cpu_us),
            ("takeover_ms", self.takeover_ms),
            ("takeover_limit_ms", self.takeover_limit_ms),
            ("cluster_read_cpu_us_per_event", read),
            ("cluster_fold_cpu_us_per_event", fold),
            ("cluster_server_base_cpu_us_per_event", base),
            ("cluster_server_reader_cpu_us_per_event", per_reader),
        ]
        .into_iter()
        .map(|(k, x)| (k.to_owned(), x))
        .collect();
        for n in PROJECTED {
            let (eps, server_cores) = self.projection(n);
            v.push((format!("projected_cluster_eps_{n}_processes"), eps));
            v.push((format!("projected_server_cores_{n}_processes"), server_cores));
        }
        v
    }
}

/// Each process's `health` (the replies to `$SRV.STATS.<prefix>`), by instance; returns once
/// `expect` processes answered, or after 300 ms with those that did.
async fn healths(client: &async_nats::Client, prefix: &str, expect: usize) -> BTreeMap<String, serde_json::Value> {
    let mut out = BTreeMap::new();
    let inbox = client.new_inbox();
    let Ok(mut sub) = client.subscribe(inbox.clone()).await else { return out };
    if client.publish_with_reply(format!("$SRV.STATS.{prefix}"), inbox, bytes::Bytes::new()).await.is_err() {
        return out;
    }
    let deadline = tokio::time::Instant::now() + Duration::from_millis(300);
    while out.len() < expect {
        let Ok(Some(m)) = tokio::time::timeout_at(deadline, sub.next()).await else { break };
        let v: serde_json::Value = serde_json::from_slice(&m.payload).unwrap_or_default();
        let health = v["endpoints"].as_array().and_then(|e| e.first()).map(|e| e["data"].clone());
        if let Some(h) = health {
            if let Some(i) = h["instance"].as_str() {
                out.insert(i.to_owned(), h.clone());
            }
        }
    }
    out
}

/// Whether `instances` together report every partition once, each folded to `last`; and the
/// highest checkpoint any of them reports.
async fn folded(client: &async_nats::Client, prefix: &str, instances: &[String], last: u64) -> (bool, u64) {
    let h = healths(client, prefix, instances.len()).await;
    let top = h.values().filter_map(|v| v["seq"].as_u64()).max().unwrap_or(0);
    let mut held = Vec::new();
    for i in instances {
        let Some(v) = h.get(i) else { return (false, top) };
        if v["seq"].as_u64().unwrap_or(0) < last {
            return (false, top);
        }
        held.extend(v["partitions"].as_array().into_iter().flatten().filter_map(serde_json::Value::as_u64));
    }
    held.sort_unstable();
    (held == (0..u64::from(partition::DEFAULT)).collect::<Vec<_>>(), top)
}

/// Forgets the deployment of `prefix`: its lease and claim buckets and the events stream's
/// consumers (no lockoutd may be running).
async fn reset(nats: &Nats, prefix: &str) -> anyhow::Result<()> {
    let upper = prefix.to_uppercase();
    for bucket in [format!("{upper}_LEASES"), format!("{upper}_CLUSTER")] {
        let _ = nats.js.delete_key_value(&bucket).await;
    }
    let stream = nats.js.get_stream(format!("{upper}_EVENTS")).await?;
    let names: Vec<String> = stream.consumer_names().filter_map(|n| async { n.ok() }).collect().await;
    for name in names {
        stream.delete_consumer(&name).await?;
    }
    Ok(())
}

/// One cluster run's figures, and its processes (still running).
struct Run {
    eps: f64,
    cpu_us: f64,
    server_cpu_us: f64,
    procs: Vec<(String, Daemon)>,
}

/// Starts `PROCESSES` lockoutd on fresh stores and waits until together they folded `last`.
async fn run_cluster(nats: &Nats, stream: &Stream<'_>, round: usize) -> anyhow::Result<Run> {
    let server = nats.server.pid().context("nats-server is not running")?;
    let server_cpu = cpu_seconds(server);
    let mut procs = Vec::new();
    for i in 0..PROCESSES {
        let instance = format!("bench-{round}-{i}");
        let dir = nats.dir(&format!("cluster-{round}-{i}"));
        procs.push((instance.clone(), Daemon::spawn_with(&nats.url, &dir, stream, &["--instance", &instance])?));
    }
    let instances: Vec<String> = procs.iter().map(|(i, _)| i.clone()).collect();
    let deadline = Instant::now() + Duration::from_secs(1_800);
    let mut first: Option<(u64, Instant)> = None;
    loop {
        let (done, top) = folded(&nats.client, stream.prefix, &instances, stream.last).await;
        if top > 0 && first.is_none() {
            first = Some((top, Instant::now()));
        }
        if done {
            break;
        }
        anyhow::ensure!(Instant::now() < deadline, "three lockoutd did not fold to {}", stream.last);
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let (first_seq, first_at) = first.context("no process reported a checkpoint")?;
    let eps = (stream.last - first_seq) as f64 / first_at.elapsed().as_secs_f64().max(1e-9);
    let cpu: f64 = procs.iter().map(|(_, d)| d.cpu_seconds()).sum();
    let per_event = |s: f64| s * 1e6 / stream.last as f64;
    Ok(Run { eps, cpu_us: per_event(cpu), server_cpu_us: per_event(cpu_seconds(server) - server_cpu), procs })
}

/// Kills the last of `run`'s processes with SIGKILL and times until the others report every
/// partition folded to `last` again; ms. Stops the others.
async fn takeover(nats: &Nats, prefix: &str, mut run: Run, last: u64) -> anyhow::Result<f64> {
    let (_, victim) = run.procs.pop().context("no process")?;
    let live: Vec<String> = run.procs.iter().map(|(i, _)| i.clone()).collect();
    let start = Instant::now();
    drop(victim); // SIGKILL, and reaped
    let deadline = start + Duration::from_secs(600);
    while !folded(&nats.client, prefix, &live, last).await.0 {
        anyhow::ensure!(Instant::now() < deadline, "the take-over did not finish within 10 minutes");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let took = start.elapsed().as_secs_f64() * 1e3;
    for (_, d) in run.procs {
        d.stop()?;
    }
    Ok(took)
}

/// The cluster phase on the stream of `prefix` (up to `last`, already published): `repeats`
/// interleaved single and three-process runs, then the take-over.
pub async fn cluster(
    nats: &Nats,
    prefix: &str,
    last: u64,
    repeats: usize,
    cache_mb: u64,
) -> anyhow::Result<ClusterFigures> {
    let stream = Stream { prefix, last, env: &[], cache_mb };
    let server = nats.server.pid().context("nats-server is not running")?;
    let (mut single, mut many) = (Vec::new(), Vec::new());
    let mut kept = None;
    for r in 0..repeats {
        reset(nats, prefix).await?;
        let server_cpu = cpu_seconds(server);
        let (eps, d) = fold_run(&nats.client, &nats.url, &nats.dir(&format!("single-{r}")), &stream, None).await?;
        let per_event = |s: f64| s * 1e6 / last as f64;
        single.push((eps, per_event(d.cpu_seconds()), per_event(cpu_seconds(server) - server_cpu)));
        d.stop()?;
        reset(nats, prefix).await?;
        let run = run_cluster(nats, &stream, r).await?;
        eprintln!(
            "run {r}: one process {eps:.0} events/s, {} µs/event; three {:.0} events/s, {:.2} µs/event",
            single[r].1, run.eps, run.cpu_us
        );
        many.push((run.eps, run.cpu_us, run.server_cpu_us));
        if r + 1 == repeats {
            kept = Some(run);
        } else {
            for (_, d) in run.procs {
                d.stop()?;
            }
        }
    }
    let run = kept.context("no repeats")?;
    let takeover_ms = takeover(nats, prefix, run, last).await?;
    let lease = lockoutd::Config::new(&nats.url, nats.dir("unused")).lease_seconds;
    let col = |v: &[(f64, f64, f64)], f: fn(&(f64, f64, f64)) -> f64| median(v.iter().map(f).collect());
    Ok(ClusterFigures {
        processes: PROCESSES,
        single_eps: col(&single, |x| x.0),
        cluster_eps: col(&many, |x| x.0),
        single_cpu_us: col(&single, |x| x.1),
        cluster_cpu_us: col(&many, |x| x.1),
        single_server_cpu_us: col(&single, |x| x.2),
        cluster_server_cpu_us: col(&many, |x| x.2),
        takeover_ms,
        takeover_limit_ms: (lease as f64 + 5.0) * 1e3,
    })
}

/// `lockout-bench cluster`: publishes the main workload, runs the cluster phase, prints its
/// figures.
pub async fn cluster_only(a: &ClusterArgs) -> anyhow::Result<()> {
    let (n, users) = a.scale.sizes();
    let nats = Nats::start().await?;
    eprintln!("publishing {n} events for {users} users …");
    let last = crate::workload::publish_all(&nats.js, &crate::workload::workload("lockout", n, users)).await?;
    let f = cluster(&nats, "lockout", last, a.repeats, a.cache_mb).await?;
    for (k, v) in f.pairs() {
        println!("{k} {v:.3}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn figures(single: f64, cluster: f64, single_server: f64, cluster_server: f64) -> ClusterFigures {
        ClusterFigures {
            processes: 3,
            single_eps: 0.0,
            cluster_eps: 0.0,
            single_cpu_us: single,
            cluster_cpu_us: cluster,
            single_server_cpu_us: single_server,
            cluster_server_cpu_us: cluster_server,
            takeover_ms: 0.0,
            takeover_limit_ms: 0.0,
        }
    }

    /// read + fold = one process; 3 read + fold = three; the projection divides the fold only.
    #[test]
    fn the_model_splits_reading_from_folding_and_projects_from_it() {
        // read 3, fold 2; server base 1, per reader 3.
        let f = figures(5.0, 11.0, 4.0, 10.0);
        assert_eq!(f.model(), (3.0, 2.0, 1.0, 3.0));
        let (eps, cores) = f.projection(4);
        assert!((eps - 1e6 / 3.5).abs() < 1e-6, "{eps}");
        assert!((cores - eps * 13.0 / 1e6).abs() < 1e-9, "{cores}");
        // No reading cost: the fold divides perfectly.
        let (eps, _) = figures(4.0, 4.0, 1.0, 1.0).projection(8);
        assert!((eps - 2e6).abs() < 1e-6, "{eps}");
        let keys: Vec<String> = f.pairs().into_iter().map(|(k, _)| k).collect();
        for k in ["cluster_eps", "cluster_cpu_us_per_event", "takeover_ms", "projected_cluster_eps_16_processes"] {
            assert!(keys.iter().any(|x| x == k), "{k} missing from {keys:?}");
        }
    }
}
