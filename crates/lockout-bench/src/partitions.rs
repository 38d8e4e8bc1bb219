//! `lockout-bench partitions`: what each way of giving several lockoutd processes their share
//! of `LOCKOUT_EVENTS` costs (issue 19, "Partitions": measure, then choose).
//!
//! On one nats-server with the main workload published, three ways are measured, each as
//! consume rate and the CPU it took (nats-server's and this process's):
//! - `raw`: one consumer of the whole stream (today's single process, the ceiling);
//! - `mirror`: a `<PREFIX>_PARTS` mirror whose subject transform puts
//!   `{{partition(N,1,3)}}` into the subject (what ARCHITECTURE.md designs), its catch-up
//!   time, then one consumer filtered to the partitions of one of three processes (plus the
//!   tenant lane), as each process would read;
//! - `filter`: one consumer of the whole stream that computes each event's partition and
//!   keeps a third (each of three processes reading everything).

use std::time::Instant;

use anyhow::Context as _;
use async_nats::jetstream::{self, consumer, stream};
use futures::StreamExt;

use crate::daemons::{cpu_seconds, Nats};
use crate::report::median;
use crate::workload::{publish_all, workload};
use crate::PartitionsArgs;

/// What one way of reading a share cost.
#[derive(Debug, Clone, Copy, Default)]
struct Read {
    /// Messages delivered per second.
    eps: f64,
    /// Events of the whole stream covered per second (what a process's share stands for).
    kept: u64,
    server_cpu_s: f64,
    client_cpu_s: f64,
}

fn own_cpu() -> f64 {
    cpu_seconds(std::process::id())
}

/// Reads `n` messages with a consumer of `stream` filtered to `filters` (all when empty),
/// counting those `keep` keeps.
async fn read(
    nats: &Nats,
    stream: &str,
    filters: Vec<String>,
    n: u64,
    keep: impl Fn(&str) -> bool,
) -> anyhow::Result<Read> {
    let server = nats.server.pid().context("nats-server pid")?;
    let s = nats.js.get_stream(stream).await?;
    let c: consumer::PullConsumer = s
        .create_consumer(consumer::pull::Config {
            ack_policy: consumer::AckPolicy::None,
            deliver_policy: consumer::DeliverPolicy::All,
            filter_subjects: filters,
            ..Default::default()
        })
        .await?;
    let (cpu0, own0) = (cpu_seconds(server), own_cpu());
    let start = Instant::now();
    let mut msgs = c.stream().max_messages_per_batch(1_000).messages().await?;
    let (mut got, mut kept) = (0u64, 0u64);
    while got < n {
        let m = msgs.next().await.context("consumer ended")??;
        if keep(m.subject.as_str()) {
            kept += 1;
        }
        std::hint::black_box(&m.payload);
        got += 1;
    }
    let secs = start.elapsed().as_secs_f64();
    Ok(Read { eps: n as f64 / secs, kept, server_cpu_s: cpu_seconds(server) - cpu0, client_cpu_s: own_cpu() - own0 })
}

/// Partition of an event subject `lockout.events.<tenant>.u.<utok>.<type>`; `None` for others.
fn partition_of(subject: &str, n: u32) -> Option<u32> {
    let mut t = subject.split('.');
    let (_, _, tenant, kind, utok) = (t.next()?, t.next()?, t.next()?, t.next()?, t.next()?);
    (kind == "u").then(|| lockout_proto::partition::of_tokens(tenant, utok, n))
}

pub async fn partitions(a: &PartitionsArgs) -> anyhow::Result<()> {
    let nats = Nats::start().await?;
    let (n, users) = a.scale.sizes();
    eprintln!("publishing {n} events for {users} users …");
    let last = publish_all(&nats.js, &workload("lockout", n, users)).await?;
    let server = nats.server.pid().context("nats-server pid")?;
    let parts = a.partitions;
    // Process 0's share of three: partitions p with p % 3 == 0, and the tenant lane.
    let mine: Vec<u32> = (0..parts).filter(|p| p % 3 == 0).collect();
    let (mut raw, mut mirror, mut filter, mut catch_up) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for r in 0..a.repeats {
        raw.push(read(&nats, "LOCKOUT_EVENTS", Vec::new(), last, |_| true).await?);
        let name = format!("LOCKOUT_PARTS{r}");
        let transform = |src: &str, dest: String| stream::SubjectTransform { source: src.into(), destination: dest };
        let cpu0 = cpu_seconds(server);
        let start = Instant::now();
        nats.js
            .create_stream(stream::Config {
                name: name.clone(),
                mirror: Some(stream::Source {
                    name: "LOCKOUT_EVENTS".into(),
                    subject_transforms: vec![
                        transform(
                            "lockout.events.*.*.*.*",
                            format!(
                                "lockout.parts{r}.{{{{partition({parts},1,3)}}}}.{{{{wildcard(1)}}}}.{{{{wildcard(2)}}}}.{{{{wildcard(3)}}}}.{{{{wildcard(4)}}}}"
                            ),
                        ),
                        transform(
                            "lockout.events.*.*.*",
                            format!("lockout.parts{r}.t.{{{{wildcard(1)}}}}.{{{{wildcard(2)}}}}.{{{{wildcard(3)}}}}"),
                        ),
                    ],
                    ..Default::default()
                }),
                ..Default::default()
            })
            .await?;
        let mut s = nats.js.get_stream(&name).await?;
        while s.info().await?.state.last_sequence < last {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        catch_up.push((last as f64 / start.elapsed().as_secs_f64(), cpu_seconds(server) - cpu0));
        let filters: Vec<String> = mine
            .iter()
            .map(|p| format!("lockout.parts{r}.{p}.>"))
            .chain(std::iter::once(format!("lockout.parts{r}.t.>")))
            .collect();
        let share = s.info().await?.state.messages;
        let count = consumer_count(&nats.js, &name, &filters).await?.min(share);
        mirror.push(read(&nats, &name, filters, count, |_| true).await?);
        nats.js.delete_stream(&name).await?;
        filter.push(
            read(&nats, "LOCKOUT_EVENTS", Vec::new(), last, |s| partition_of(s, parts).is_none_or(|p| p % 3 == 0))
                .await?,
        );
    }
    let med = |xs: &[Read], f: &dyn Fn(&Read) -> f64| median(xs.iter().map(f).collect());
    // CPU (nats-server's and the reader's) per event of the whole stream.
    let cpu = |r: &Read| (r.server_cpu_s + r.client_cpu_s) * 1e6 / last as f64;
    println!("partitions_events {last}");
    println!("partitions_raw_eps {:.0}", med(&raw, &|r| r.eps));
    println!("partitions_raw_cpu_us_per_event {:.2}", med(&raw, &cpu));
    println!("partitions_mirror_catch_up_eps {:.0}", median(catch_up.iter().map(|c| c.0).collect()));
    println!(
        "partitions_mirror_catch_up_server_cpu_us_per_event {:.2}",
        median(catch_up.iter().map(|c| c.1 * 1e6 / last as f64).collect())
    );
    println!("partitions_mirror_share_eps {:.0}", med(&mirror, &|r| r.eps));
    println!("partitions_mirror_share_events {:.0}", med(&mirror, &|r| r.kept as f64));
    println!("partitions_mirror_share_cpu_us_per_event {:.2}", med(&mirror, &cpu));
    println!("partitions_filter_eps {:.0}", med(&filter, &|r| r.eps));
    println!("partitions_filter_share_events {:.0}", med(&filter, &|r| r.kept as f64));
    println!("partitions_filter_cpu_us_per_event {:.2}", med(&filter, &cpu));
    Ok(())
}

/// How many messages a consumer of `stream` filtered to `filters` would deliver.
async fn consumer_count(js: &jetstream::Context, stream: &str, filters: &[String]) -> anyhow::Result<u64> {
    let s = js.get_stream(stream).await?;
    let mut c: consumer::PullConsumer = s
        .create_consumer(consumer::pull::Config {
            ack_policy: consumer::AckPolicy::None,
            deliver_policy: consumer::DeliverPolicy::All,
            filter_subjects: filters.to_vec(),
            ..Default::default()
        })
        .await?;
    Ok(c.info().await?.num_pending)
}
