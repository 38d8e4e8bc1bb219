//! The runs against the benchmark's own nats-server: the full suite (`lockout-bench` without a
//! subcommand; what `make bench` runs), which publishes the main workload and then runs every
//! phase in a fixed order, and `lockout-bench latency`, the latency phases alone after folding
//! the same workload.

use std::time::Instant;

use crate::daemons::{fold_run, Nats, Stream};
use crate::probes::{latencies, Plan};
use crate::report::{self, Figures};
use crate::workload::{publish_all, workload};
use crate::{offline, phases, LatencyArgs, SuiteArgs};

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

    let (wide_users, wide_sorted) = a.wide.sizes(a.scale.quick);
    eprintln!("store size and RSS at {wide_users} users …");
    let wide = phases::wide(&nats, wide_users, wide_sorted, a.cache_mb).await?;

    eprintln!("lockoutctl history and explain of a user with 10,000 events …");
    let audit = phases::audit(&nats, a.repeats).await?;

    let fold = offline::fold_figures(&events, a.repeats);

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
