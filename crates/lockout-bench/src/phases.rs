//! The full suite's phases against nats-server, each returning its figures: the throughput
//! repeats (the raw JetStream consume ceiling, lockoutd folding with and without OTLP export to
//! a stand-in collector, `lockoutctl replay`), lockoutd on a stream with 10,000 invalid events
//! among the valid ones, store size and peak RSS with many users, and `lockoutctl history` and
//! `explain` of one busy user.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context as _;
use async_nats::jetstream::{self, consumer};
use futures::StreamExt;

use crate::daemons::{ctl_ms, fold_run, replay_run, Daemon, Nats, Stream};
use crate::offline::dir_size;
use crate::report::median;
use crate::workload::{audit_workload, mixed_workload, publish_all, publish_on, wide_workload, workload};

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

/// A stand-in OTLP/HTTP collector on loopback, on a thread of its own: answers every request
/// `200` with an empty (valid) protobuf response and counts the body bytes it received.
/// Returns its URL.
pub fn otlp_sink() -> anyhow::Result<(String, Arc<AtomicU64>)> {
    let server = tiny_http::Server::http("127.0.0.1:0").map_err(|e| anyhow::anyhow!("the OTLP stand-in: {e}"))?;
    let addr = server.server_addr().to_ip().context("the OTLP stand-in listens on no IP address")?;
    let received = Arc::new(AtomicU64::new(0));
    let counter = received.clone();
    let protobuf = tiny_http::Header::from_bytes("content-type", "application/x-protobuf")
        .map_err(|()| anyhow::anyhow!("a bad header"))?;
    std::thread::Builder::new().name("bench-otlp".into()).spawn(move || {
        for mut request in server.incoming_requests() {
            let body = std::io::copy(request.as_reader(), &mut std::io::sink()).unwrap_or(0);
            counter.fetch_add(body, Ordering::Relaxed);
            let _ = request.respond(tiny_http::Response::empty(200).with_header(protobuf.clone()));
        }
    })?;
    Ok((format!("http://{addr}"), received))
}

/// The throughput repeats' medians.
pub struct Throughput {
    pub raw_eps: f64,
    pub projector_eps: f64,
    pub projector_vs_raw: f64,
    pub projector_cpu_us: f64,
    pub export_eps: f64,
    pub otlp_loss: f64,
    pub replay_eps: f64,
    pub replay_vs_raw: f64,
}

/// Each repeat measures, back to back so they share the machine's conditions: the raw consume
/// ceiling, lockoutd folding the stream (prefix `lockout`, up to `last`) with OTLP export (to a
/// stand-in collector: every metric and the default share of spans) and without, and
/// `lockoutctl replay`. The ratios are taken within a repeat; each figure is the median over
/// the repeats. With `perf`, a profile of the first repeat's lockoutd without export. The last
/// lockoutd without export stays up, returned for the latency phases.
pub async fn throughput(
    nats: &Nats,
    last: u64,
    repeats: usize,
    cache_mb: u64,
    perf: Option<&std::path::Path>,
) -> anyhow::Result<(Throughput, Option<Daemon>)> {
    let (js, client, url) = (&nats.js, &nats.client, &nats.url);
    raw_consume(js, "LOCKOUT_EVENTS", last.min(50_000)).await?;
    let mut raw = Vec::new();
    let mut replays = Vec::new();
    let (otlp_url, otlp_bytes) = otlp_sink()?;
    let export_env = [
        ("OTEL_EXPORTER_OTLP_ENDPOINT".to_owned(), otlp_url),
        ("OTEL_METRIC_EXPORT_INTERVAL".to_owned(), "1000".to_owned()),
    ];
    let plain = Stream { prefix: "lockout", last, env: &[], cache_mb };
    let exporting = Stream { prefix: "lockout", last, env: &export_env, cache_mb };
    let mut proj = Vec::new();
    let mut cpu = Vec::new();
    let mut export = Vec::new();
    let mut daemon: Option<Daemon> = None;
    for r in 0..repeats {
        raw.push(raw_consume(js, "LOCKOUT_EVENTS", last).await?);
        // One lockoutd at a time (they share the durable consumer); the last one stays up
        // for the latency phases.
        if let Some(old) = daemon.take() {
            old.stop()?;
        }
        let dir = nats.dir(&format!("export{r}"));
        let (eps, d) = fold_run(client, url, &dir, &exporting, None).await?;
        d.stop()?;
        export.push(eps);
        let dir = nats.dir(&format!("proj{r}"));
        let perf = if r == 0 { perf } else { None };
        let (eps, d) = fold_run(client, url, &dir, &plain, perf).await?;
        cpu.push(d.cpu_seconds() * 1e6 / last as f64);
        daemon = Some(d);
        proj.push(eps);
        replays.push(replay_run(url, &nats.dir(&format!("replay{r}")), last)?);
    }
    let raw_eps = median(raw.clone());
    let ratio = |xs: &[f64]| median(xs.iter().zip(&raw).map(|(x, r)| x / r).collect());
    let (projector_vs_raw, replay_vs_raw) = (ratio(&proj), ratio(&replays));
    let otlp_loss = median(export.iter().zip(&proj).map(|(e, p)| 1.0 - e / p).collect());
    let t = Throughput {
        raw_eps,
        projector_vs_raw,
        replay_vs_raw,
        otlp_loss,
        replay_eps: median(replays),
        projector_eps: median(proj),
        projector_cpu_us: median(cpu),
        export_eps: median(export),
    };
    anyhow::ensure!(otlp_bytes.load(Ordering::Relaxed) > 0, "lockoutd exported nothing to the OTLP stand-in");
    Ok((t, daemon))
}

/// lockoutd on a stream with invalid events among the valid ones.
pub struct Invalid {
    /// Valid events folded per second.
    pub valid_eps: f64,
}

/// Bad input costs no more than good: the same valid events (`n` over `users`) with 10,000
/// distinct invalid ones among them, on a stream of their own (prefix `mixed`); valid events/s.
pub async fn invalid(nats: &Nats, n: usize, users: usize, cache_mb: u64) -> anyhow::Result<Invalid> {
    let mixed = mixed_workload("mixed", workload("mixed", n, users));
    let mixed_last = publish_on(&nats.js, &nats.url, "mixed", &mixed).await?;
    let mixed_stream = Stream { prefix: "mixed", last: mixed_last, env: &[], cache_mb };
    let (mixed_eps, d) = fold_run(&nats.client, &nats.url, &nats.dir("mixed"), &mixed_stream, None).await?;
    d.stop()?;
    let dead = nats.js.get_stream("MIXED_DEAD").await?.get_info().await?.state.messages;
    anyhow::ensure!(dead == 10_000, "the mixed stream's 10,000 invalid events gave {dead} dead letters");
    Ok(Invalid { valid_eps: mixed_eps * n as f64 / mixed.len() as f64 })
}

/// Store size and memory with many users.
pub struct Wide {
    pub tracked: usize,
    /// Bytes of the store directory.
    pub disk: u64,
    /// lockoutd's peak RSS, bytes.
    pub rss: u64,
}

/// A stream of its own (prefix `wide`) with one failed attempt per user of `users` (in sorted
/// order with `sorted`), folded by a fresh lockoutd with `--cache-mb cache_mb`.
pub async fn wide(nats: &Nats, users: usize, sorted: bool, cache_mb: u64) -> anyhow::Result<Wide> {
    let wide_last = publish_on(&nats.js, &nats.url, "wide", &wide_workload("wide", users, sorted)).await?;
    let wide_dir = nats.dir("wide");
    let stream = Stream { prefix: "wide", last: wide_last, env: &[], cache_mb };
    let (_, d) = fold_run(&nats.client, &nats.url, &wide_dir, &stream, None).await?;
    let rss = d.peak_rss();
    d.stop()?;
    let disk = dir_size(&wide_dir);
    let tracked = lockout_store::Store::open(&wide_dir, 16 << 20)?.all_users().count();
    Ok(Wide { tracked, disk, rss })
}

/// `lockoutctl history` and `explain` of one busy user, medians of the repeats, in ms.
pub struct Audit {
    pub history_ms: f64,
    pub explain_ms: f64,
}

/// The auditor's questions about one busy account: 10,000 events of one user (tenant
/// `audit`), then `lockoutctl history` and `explain`, each timed as a whole command.
pub async fn audit(nats: &Nats, repeats: usize) -> anyhow::Result<Audit> {
    publish_all(&nats.js, &audit_workload()).await?;
    let mut history_ms = Vec::new();
    let mut explain_ms = Vec::new();
    for _ in 0..repeats {
        history_ms.push(ctl_ms(&nats.url, &["history", "audit", "busy@example.com"])?);
        explain_ms.push(ctl_ms(&nats.url, &["explain", "audit", "busy@example.com"])?);
    }
    Ok(Audit { history_ms: median(history_ms), explain_ms: median(explain_ms) })
}

#[cfg(test)]
mod tests {
    use std::io::{Read as _, Write as _};

    use super::*;

    /// The stand-in answers each POST of a kept-alive connection `200` with an empty body and
    /// counts the bodies' bytes.
    #[test]
    fn otlp_sink_answers_200_empty_and_counts_bytes() {
        let (url, received) = otlp_sink().unwrap();
        let mut sock = std::net::TcpStream::connect(url.strip_prefix("http://").unwrap()).unwrap();
        let mut buf = [0u8; 1024];
        for body in [&b"0123456789"[..], &[7u8; 5][..]] {
            let head = format!(
                "POST /v1/metrics HTTP/1.1\r\nhost: x\r\ncontent-type: application/x-protobuf\r\n\
                 content-length: {}\r\n\r\n",
                body.len()
            );
            sock.write_all(head.as_bytes()).unwrap();
            sock.write_all(body).unwrap();
            let mut reply = Vec::new();
            while !reply.ends_with(b"\r\n\r\n") {
                let n = sock.read(&mut buf).unwrap();
                assert!(n > 0, "the connection closed");
                reply.extend_from_slice(&buf[..n]);
            }
            let reply = String::from_utf8_lossy(&reply).to_ascii_lowercase();
            assert!(reply.starts_with("http/1.1 200"), "{reply}");
            assert!(reply.contains("content-length: 0\r\n"), "{reply}");
            assert!(reply.contains("content-type: application/x-protobuf\r\n"), "{reply}");
        }
        assert_eq!(received.load(Ordering::Relaxed), 15);
    }
}
