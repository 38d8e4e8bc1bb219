//! The runs against the benchmark's own nats-server: the full suite (`lockout-bench` without a
//! subcommand; what `make bench` runs), which publishes the main workload and then runs every
//! phase in a fixed order, and `lockout-bench latency`, the latency phases alone after folding
//! the same workload.

use std::time::Instant;

use crate::daemons::{fold_run, Nats, Stream};
use crate::probes::{latencies, Plan};
use crate::report::{self, median, Figures};
use crate::workload::{mixed_workload, publish_all, publish_on, workload};
use crate::{offline, phases, InvalidArgs, LatencyArgs, SuiteArgs};

/// The full suite; writes `a.out` and prints it as a table.
pub async fn full(a: &SuiteArgs) -> anyhow::Result<()> {
    let (n, users) = a.scale.sizes();
    let nats = Nats::start().await?;
    eprintln!("publishing {n} events for {users} users …");
    let events = workload("lockout", n, users);
    let t = Instant::now();
    let last = publish_all(&nats.js, &events).await?;
    eprintln!("published in {:.1} s", t.elapsed().as_secs_f64());

    eprintln!("raw consume, projector (with and without OTLP export), replay ×{} …", a.repeats);
    let (throughput, daemon) = phases::throughput(&nats, last, a.repeats, a.cache_mb, a.perf.as_deref()).await?;

    eprintln!("projector with 10,000 invalid events among the valid ones …");
    let invalid = phases::invalid(&nats, n, users, a.cache_mb).await?;

    eprintln!("latency under {} events/s …", a.load_eps);
    let plan = Plan { quick: a.scale.quick, load_eps: a.load_eps, sched: a.sched.as_deref(), users };
    let latency = latencies(&nats.url, &nats.client, &nats.js, &plan).await?;
    if let Some(d) = daemon {
        d.stop()?;
    }

    eprintln!("one process and three sharing the partitions ×{}, then a take-over …", a.cluster_repeats);
    let cluster = crate::cluster::cluster(&nats, "lockout", last, a.cluster_repeats, a.cache_mb).await?;

    let (wide_users, wide_sorted) = a.wide.sizes(a.scale.quick);
    eprintln!("store size and RSS at {wide_users} users …");
    let wide = phases::wide(&nats, wide_users, wide_sorted, a.cache_mb).await?;

    eprintln!("lockoutctl history and explain of a user with 10,000 events …");
    let audit = phases::audit(&nats, a.repeats).await?;

    let fold = offline::fold_figures(&events, a.repeats);

    eprintln!("password-spraying detection: {n} failures from {n} IPs, off and on …");
    let spraying = offline::spraying_figures(n, users, n, 3)?;

    let results = report::results(&Figures {
        events: n,
        users,
        cache_mb: a.cache_mb,
        throughput: &throughput,
        invalid: &invalid,
        latency: &latency,
        wide: &wide,
        audit: &audit,
        fold: &fold,
        spraying: &spraying,
        cluster: &cluster,
    });
    report::write(&a.out, &results)
}

/// `lockout-bench latency`: folds the main workload with lockoutd, then runs the latency
/// phases against it; prints their figures.
pub async fn latency(a: &LatencyArgs) -> anyhow::Result<()> {
    let (n, users) = a.scale.sizes();
    let nats = Nats::start().await?;
    eprintln!("publishing {n} events for {users} users, folding them …");
    let last = publish_all(&nats.js, &workload("lockout", n, users)).await?;
    let plain = Stream { prefix: "lockout", last, env: &[], cache_mb: a.cache_mb };
    let (_, d) = fold_run(&nats.client, &nats.url, &nats.dir("lat"), &plain, None).await?;
    eprintln!("latency under {} events/s …", a.load_eps);
    let plan = Plan { quick: a.scale.quick, load_eps: a.load_eps, sched: a.sched.as_deref(), users };
    let lat = latencies(&nats.url, &nats.client, &nats.js, &plan).await?;
    d.stop()?;
    report::print_latencies(&lat);
    Ok(())
}

/// `lockout-bench invalid`: the main workload and the mixed one (10,000 invalid events among
/// the same valid ones), each folded by a fresh lockoutd, alternating; prints the medians.
/// Every run publishes all its notices and dead letters (their streams are purged before it;
/// the server drops the copies of later runs as duplicates by id, after their acks).
pub async fn invalid(a: &InvalidArgs) -> anyhow::Result<()> {
    let (n, users) = a.scale.sizes();
    let nats = Nats::start().await?;
    eprintln!("publishing {n} events for {users} users, and them with 10,000 invalid ones …");
    let valid = workload("lockout", n, users);
    let last = publish_all(&nats.js, &valid).await?;
    let mixed = mixed_workload("mixed", workload("mixed", n, users));
    let mixed_last = publish_on(&nats.js, &nats.url, "mixed", &mixed).await?;
    let (mut plain_eps, mut mixed_eps) = (Vec::new(), Vec::new());
    for r in 0..a.repeats {
        for (prefix, last, len, out) in
            [("lockout", last, valid.len(), &mut plain_eps), ("mixed", mixed_last, mixed.len(), &mut mixed_eps)]
        {
            for stream in ["NOTICES", "DEAD"] {
                let name = format!("{}_{stream}", prefix.to_uppercase());
                if let Ok(s) = nats.js.get_stream(&name).await {
                    s.purge().await?;
                }
            }
            let stream = Stream { prefix, last, env: &[], cache_mb: a.cache_mb };
            let (eps, d) =
                fold_run(&nats.client, &nats.url, &nats.dir(&format!("{prefix}-{r}")), &stream, None).await?;
            d.stop()?;
            if r == 0 && prefix == "mixed" {
                // Later runs publish the same dead letters again, dropped as duplicates by id.
                let dead = nats.js.get_stream("MIXED_DEAD").await?.get_info().await?.state.messages;
                anyhow::ensure!(dead == 10_000, "the mixed stream's 10,000 invalid events gave {dead} dead letters");
            }
            let valid_eps = eps * n as f64 / len as f64;
            eprintln!("run {r}: {prefix} {valid_eps:.0} valid events/s");
            out.push(valid_eps);
        }
    }
    let (plain, mixed) = (median(plain_eps), median(mixed_eps));
    println!("projector_eps {plain:.0}");
    println!("valid_with_invalid_eps {mixed:.0}");
    println!("valid_with_invalid_vs_projector {:.3}", mixed / plain);
    Ok(())
}
