//! The figures and how they come out: latency samples ([`Samples`], an HDR histogram read in
//! ms or µs), the median of repeats, the full suite's `results.json` (every key the README
//! cites) with its table on stdout, and the `name value` lines the single-part subcommands
//! print.

use std::path::Path;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde_json::json;

use crate::cluster::ClusterFigures;
use crate::offline::{FoldFigures, SprayingFigures};
use crate::phases::{Audit, Invalid, Throughput, Wide};
use crate::probes::Latencies;

/// Durations recorded in nanoseconds to 3 significant figures (0.1%), from 1 ns to a minute
/// (longer ones count as a minute).
pub struct Samples(Histogram<u64>);

impl Default for Samples {
    fn default() -> Samples {
        // Fixed bounds: an auto-resizing histogram would clamp what `saturating_record` records
        // to its initial range instead of growing.
        Samples(Histogram::new_with_bounds(1, 60_000_000_000, 3).expect("bounds and precision in range"))
    }
}

impl Samples {
    pub fn record(&mut self, d: Duration) {
        self.0.saturating_record(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
    }

    /// The value at quantile `q` (0.5 for p50, 1.0 for the maximum), in ms.
    pub fn ms(&self, q: f64) -> f64 {
        self.0.value_at_quantile(q) as f64 / 1e6
    }

    /// The value at quantile `q`, in µs.
    pub fn us(&self, q: f64) -> f64 {
        self.0.value_at_quantile(q) as f64 / 1e3
    }
}

/// The median of repeated measurements (the upper one of an even count).
pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// What `lockout-bench latency` prints: the latency figures of `results.json`.
pub fn print_latencies(lat: &Latencies) {
    for (name, s) in [
        ("e2e_lock_notice", &lat.lock_ms),
        ("e2e_lock_notice_bare", &lat.bare_lock_ms),
        ("status", &lat.status_ms),
        ("status_source", &lat.status_source_ms),
        ("service_ping", &lat.ping_ms),
        ("nats_echo", &lat.echo_ms),
        ("nats_echo_bare", &lat.bare_echo_ms),
    ] {
        println!("{name}_p50_ms {:.3}", s.ms(0.50));
        println!("{name}_p99_ms {:.3}", s.ms(0.99));
    }
    println!("status_qps {:.0}\nbackground_load_eps {:.0}", lat.status_qps, lat.achieved_load);
}

/// Everything the full suite measured.
pub struct Figures<'a> {
    pub events: usize,
    pub users: usize,
    pub cache_mb: u64,
    pub throughput: &'a Throughput,
    pub invalid: &'a Invalid,
    pub latency: &'a Latencies,
    pub wide: &'a Wide,
    pub audit: &'a Audit,
    pub fold: &'a FoldFigures,
    pub spraying: &'a SprayingFigures,
    pub cluster: &'a ClusterFigures,
}

/// The contents of `results.json`.
pub fn results(f: &Figures) -> serde_json::Value {
    let (t, lat) = (f.throughput, f.latency);
    let mut v = json!({
        "events": f.events,
        "users": f.users,
        "nats_server_version": crate::daemons::nats_version(),
        "cores": std::thread::available_parallelism().map_or(0, |c| c.get()),
        "raw_consume_eps": t.raw_eps,
        "projector_eps": t.projector_eps,
        "projector_vs_raw_consume": t.projector_vs_raw,
        "projector_cpu_us_per_event": t.projector_cpu_us,
        "projector_otlp_export_eps": t.export_eps,
        "otlp_export_throughput_loss": t.otlp_loss,
        "valid_eps_with_10k_invalid": f.invalid.valid_eps,
        "valid_with_invalid_vs_projector": f.invalid.valid_eps / t.projector_eps,
        "replay_eps": t.replay_eps,
        "replay_vs_raw_consume": t.replay_vs_raw,
        "background_load_eps": lat.achieved_load,
        "e2e_lock_notice_p50_ms": lat.lock_ms.ms(0.50),
        "e2e_lock_notice_p99_ms": lat.lock_ms.ms(0.99),
        "e2e_lock_notice_bare_p50_ms": lat.bare_lock_ms.ms(0.50),
        "e2e_lock_notice_bare_p99_ms": lat.bare_lock_ms.ms(0.99),
        "status_p50_ms": lat.status_ms.ms(0.50),
        "status_p99_ms": lat.status_ms.ms(0.99),
        "status_source_p50_ms": lat.status_source_ms.ms(0.50),
        "status_source_p99_ms": lat.status_source_ms.ms(0.99),
        // Contract v2's target: a status with a source within 1.2x a plain one, same run.
        "status_source_vs_status_p99": lat.status_source_ms.ms(0.99) / lat.status_ms.ms(0.99),
        "status_qps": lat.status_qps,
        "service_ping_p50_ms": lat.ping_ms.ms(0.50),
        "service_ping_p99_ms": lat.ping_ms.ms(0.99),
        "nats_echo_p50_ms": lat.echo_ms.ms(0.50),
        "nats_echo_p99_ms": lat.echo_ms.ms(0.99),
        "nats_echo_bare_p50_ms": lat.bare_echo_ms.ms(0.50),
        "nats_echo_bare_p99_ms": lat.bare_echo_ms.ms(0.99),
        "tracked_users": f.wide.tracked,
        "disk_bytes_per_user": f.wide.disk as f64 / f.wide.tracked.max(1) as f64,
        "rss_bytes": f.wide.rss,
        "cache_mb": f.cache_mb,
        "fold_postcard_eps": f.fold.postcard,
        "fold_json_eps": f.fold.json,
        "fold_checked_postcard_eps": f.fold.checked_postcard,
        "fold_checked_json_eps": f.fold.checked_json,
        "history_10k_events_ms": f.audit.history_ms,
        "explain_10k_events_ms": f.audit.explain_ms,
    });
    // Issue 22's targets: ≤ 64 bytes per IP counted, detection on ≥ 0.8x off (same run).
    // (A second object: one `json!` this long exceeds the macro's recursion limit.)
    let spraying = json!({
        "spraying_ips": f.spraying.ips,
        "spraying_off_fold_eps": f.spraying.off_eps,
        "spraying_on_fold_eps": f.spraying.on_eps,
        "spraying_on_vs_off": f.spraying.on_eps / f.spraying.off_eps,
        "spraying_worst_off_fold_eps": f.spraying.worst_off_eps,
        "spraying_worst_on_fold_eps": f.spraying.worst_on_eps,
        "spraying_worst_on_vs_off": f.spraying.worst_on_eps / f.spraying.worst_off_eps,
        "ip_state_bytes_per_ip": f.spraying.ip_state_bytes_per_ip,
    });
    if let (Some(all), serde_json::Value::Object(more)) = (v.as_object_mut(), spraying) {
        all.extend(more);
    }
    // Issue 19: three processes beside one (CPU per event to grow ≤ 15%), and the take-over
    // within the lease plus 5 s.
    if let Some(all) = v.as_object_mut() {
        all.extend(f.cluster.pairs().into_iter().map(|(k, x)| (k, json!(x))));
    }
    v
}

/// Writes `results` to `out` and prints them as a Markdown table.
pub fn write(out: &Path, results: &serde_json::Value) -> anyhow::Result<()> {
    if let Some(dir) = out.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(out, serde_json::to_string_pretty(results)? + "\n")?;
    println!("| key | value |\n|---|---|");
    for (k, v) in results.as_object().expect("an object") {
        match v.as_f64() {
            Some(f) if f.fract() != 0.0 => println!("| {k} | {f:.3} |"),
            _ => println!("| {k} | {v} |"),
        }
    }
    println!("\nwritten to {}", out.display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_give_percentiles_in_ms_and_us() {
        let mut s = Samples::default();
        for us in 1..=1_000u64 {
            s.record(Duration::from_micros(us));
        }
        let close = |got: f64, want: f64| (got - want).abs() <= want * 0.001;
        assert!(close(s.ms(0.50), 0.500), "{}", s.ms(0.50));
        assert!(close(s.ms(0.99), 0.990), "{}", s.ms(0.99));
        assert!(close(s.us(1.0), 1_000.0), "{}", s.us(1.0));
        s.record(Duration::from_secs(3_600));
        assert!(close(s.ms(1.0), 60_000.0), "{}", s.ms(1.0));
    }
}
