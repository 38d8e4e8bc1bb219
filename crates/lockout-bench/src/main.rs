//! `make bench`: the numbers behind the README's Performance table, in one run.
//!
//! Starts its own nats-server, pre-publishes N attempt events, then measures on the same
//! payloads and machine: the raw JetStream pull-consume ceiling, lockoutd folding and
//! committing them (a child process, so its RSS is its own), a rebuild from an empty store,
//! the publish → `locked` notice latency and `status` latency under a steady background
//! load, store size per user, and single-core decode + fold. Writes
//! `target/bench/results.json`. Ratios compare phases of the same run; each throughput is the
//! median of `--repeats` runs after a warm-up.
//!
//! That full suite runs when no subcommand is given; each subcommand runs one part alone and
//! prints its figures as `name value` lines. This file parses the command line and dispatches;
//! the work is in the modules: [`suite`] (the runs against nats-server, in order), [`phases`]
//! (the throughput, invalid-input, store-size and audit phases), [`probes`] (the latency
//! probes and their floors), [`load`] (the background load, and the `load` subcommand),
//! [`offline`] (the measurements without NATS), [`daemons`] (nats-server, lockoutd,
//! lockoutctl and perf processes), [`workload`] (the events) and [`report`] (percentiles,
//! results.json, the printed figures).

mod cluster;
mod daemons;
mod load;
mod offline;
mod partitions;
mod phases;
mod probes;
mod report;
mod suite;
mod workload;

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

// The allocator of lockoutd and lockoutctl, so the in-process fold figures are theirs.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser, Debug)]
#[command(
    about = "Benchmarks lockoutd against a real nats-server and writes target/bench/results.json",
    long_about = "Benchmarks lockoutd against a real nats-server and writes target/bench/results.json.\n\n\
                  Without a subcommand, runs the full suite (the options below are its options). \
                  Each subcommand runs one part alone and prints its figures; see `lockout-bench \
                  help <SUBCOMMAND>`.",
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(flatten)]
    suite: SuiteArgs,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// The latency phases alone.
    ///
    /// Pre-publishes the main workload, folds it with lockoutd, then runs only the latency
    /// phases; prints their figures.
    Latency(LatencyArgs),
    /// The background load alone, for SECONDS: what live traffic costs each process.
    ///
    /// The background load (`--load-eps`) for SECONDS, after a second of warm-up, into a
    /// lockoutd on an empty store; prints the CPU share of lockoutd, of nats-server and of this
    /// process meanwhile (with `--perf FILE`, a profile of lockoutd over the same seconds).
    Load(LoadArgs),
    /// The single-core decode + fold phase alone (no nats-server).
    ///
    /// Prints its figures.
    Fold(FoldArgs),
    /// lockoutd's batch folder and store alone, in this process (no NATS).
    ///
    /// Fold + commit of batches of 1000, one thread; prints events/s. For profiling the
    /// projector's own cost.
    Folder(FolderArgs),
    /// Password-spraying detection's cost: lockoutd's batch folder over failures from many IPs
    /// with `ip_max_failures` off and on (no NATS); the IP counts' stored bytes per IP.
    Spraying(SprayingArgs),
    /// Scale-out: what each way of giving three processes a third of `LOCKOUT_EVENTS` costs
    /// (a partitioning mirror with a subject transform, or each process filtering the whole
    /// stream), beside one consumer of everything; on its own nats-server.
    Partitions(PartitionsArgs),
    /// Scale-out: one lockoutd and then three sharing the partitions fold the main workload,
    /// interleaved; then one of the three is killed with SIGKILL and the take-over is timed.
    ///
    /// Prints throughput and CPU per event (lockoutd's, nats-server's) of one process and of
    /// three (medians), and `takeover_ms`: kill → the two others report every partition folded
    /// to the end.
    Cluster(ClusterArgs),
    /// The store-size phase alone, in this process (no NATS).
    ///
    /// lockoutd's batch folder folds the store-size workload (`--wide-users`) into a store with
    /// lockoutd's caches for `--cache-mb`, in batches of 1000; prints the store's size per
    /// user. For trying store layouts quickly.
    Disk(DiskArgs),
    /// sled reads while commits run, in this process (no NATS).
    ///
    /// A store of `--users` users (one failure each), then one thread reading users' states as
    /// `status` does, one every 300 µs (the latency phase's pace), while no commit runs and then
    /// while another thread commits `--commit-states` states every 5 ms (50: 10k events/s with
    /// commit lingering; 1000: a full batch, as when catching up); prints the reads' percentiles
    /// in µs for both.
    ReadsUnderCommits(ReadsArgs),
    /// Bad input alone: lockoutd on the main workload, then on it with 10,000 invalid events.
    ///
    /// Publishes the main workload and the mixed one (the same events with 10,000 distinct
    /// invalid ones among them), then folds each with a fresh lockoutd, alternating, `--repeats`
    /// times; prints the medians of valid events/s and their ratio
    /// (`valid_with_invalid_vs_projector`, from single runs rather than the suite's warmed one).
    Invalid(InvalidArgs),
}

/// The main workload's size.
#[derive(Args, Debug)]
pub struct Scale {
    /// Quick mode: 100k events, fewer samples (under a minute).
    #[arg(long)]
    pub quick: bool,
    /// Events to pre-publish (default 1,000,000; 100,000 with --quick).
    #[arg(long)]
    pub events: Option<usize>,
    /// Distinct users among them.
    #[arg(long, default_value_t = 100_000)]
    pub users: usize,
}

impl Scale {
    /// Events, and distinct users among them.
    pub fn sizes(&self) -> (usize, usize) {
        let n = self.events.unwrap_or(if self.quick { 100_000 } else { 1_000_000 });
        (n, self.users.min(n))
    }
}

/// The store-size workload: one failed attempt per user.
#[derive(Args, Debug)]
pub struct Wide {
    /// Users of the store-size and RSS phase (default 1,000,000; 100,000 with --quick).
    #[arg(long)]
    pub wide_users: Option<usize>,
    /// The store-size phase's users in sorted order (sled's worst case: leaves split in the
    /// middle stay half full) instead of scrambled.
    #[arg(long)]
    pub wide_sorted: bool,
}

impl Wide {
    /// Users, and whether in sorted order.
    pub fn sizes(&self, quick: bool) -> (usize, bool) {
        (self.wide_users.unwrap_or(if quick { 100_000 } else { 1_000_000 }), self.wide_sorted)
    }
}

/// The full suite.
#[derive(Args, Debug)]
pub struct SuiteArgs {
    #[command(flatten)]
    pub scale: Scale,
    /// Repeats of each throughput measurement (the median is reported).
    #[arg(long, default_value_t = 5)]
    pub repeats: usize,
    /// Interleaved runs of one process and of three in the cluster phase (medians reported).
    #[arg(long, default_value_t = 3)]
    pub cluster_repeats: usize,
    /// Background load for the latency phases, events/s.
    #[arg(long, default_value_t = 10_000)]
    pub load_eps: u64,
    /// Where to write the results.
    #[arg(long, default_value = "target/bench/results.json")]
    pub out: PathBuf,
    /// lockoutd's `--cache-mb` in every phase.
    #[arg(long, default_value_t = 256)]
    pub cache_mb: u64,
    #[command(flatten)]
    pub wide: Wide,
    /// Profile lockoutd during the first projector run with `perf record` (DWARF call
    /// graphs) into this file; read it with `perf report -i FILE`.
    #[arg(long, value_name = "FILE")]
    pub perf: Option<PathBuf>,
    /// Record the machine's scheduler events (`perf sched record -a`) while the `status`
    /// latencies are measured, into this file; read it with `benches/sched-delay.py FILE`.
    #[arg(long, value_name = "FILE")]
    pub sched: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub struct LatencyArgs {
    #[command(flatten)]
    pub scale: Scale,
    /// Background load for the latency phases, events/s.
    #[arg(long, default_value_t = 10_000)]
    pub load_eps: u64,
    /// lockoutd's `--cache-mb`.
    #[arg(long, default_value_t = 256)]
    pub cache_mb: u64,
    /// Record the machine's scheduler events (`perf sched record -a`) while the `status`
    /// latencies are measured, into this file; read it with `benches/sched-delay.py FILE`.
    #[arg(long, value_name = "FILE")]
    pub sched: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub struct LoadArgs {
    /// How long to measure, after the second of warm-up.
    #[arg(value_name = "SECONDS")]
    pub seconds: u64,
    /// Background load, events/s.
    #[arg(long, default_value_t = 10_000)]
    pub load_eps: u64,
    /// lockoutd's `--cache-mb`.
    #[arg(long, default_value_t = 256)]
    pub cache_mb: u64,
    /// Profile lockoutd over the measured seconds with `perf record` (DWARF call graphs) into
    /// this file; read it with `perf report -i FILE`.
    #[arg(long, value_name = "FILE")]
    pub perf: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub struct FoldArgs {
    #[command(flatten)]
    pub scale: Scale,
    /// Repeats of each measurement (the median is reported).
    #[arg(long, default_value_t = 5)]
    pub repeats: usize,
}

#[derive(Args, Debug)]
pub struct FolderArgs {
    #[command(flatten)]
    pub scale: Scale,
}

#[derive(Args, Debug)]
pub struct DiskArgs {
    /// Quick mode: 100,000 users unless `--wide-users` says otherwise.
    #[arg(long)]
    pub quick: bool,
    #[command(flatten)]
    pub wide: Wide,
    /// lockoutd's `--cache-mb`, which sets the store's caches.
    #[arg(long, default_value_t = 256)]
    pub cache_mb: u64,
}

#[derive(Args, Debug)]
pub struct InvalidArgs {
    #[command(flatten)]
    pub scale: Scale,
    /// Runs of each (the medians are reported).
    #[arg(long, default_value_t = 3)]
    pub repeats: usize,
    /// lockoutd's `--cache-mb`.
    #[arg(long, default_value_t = 256)]
    pub cache_mb: u64,
}

#[derive(Args, Debug)]
pub struct PartitionsArgs {
    #[command(flatten)]
    pub scale: Scale,
    /// Partitions (lockoutd's `--partitions`).
    #[arg(long, default_value_t = lockout_proto::partition::DEFAULT)]
    pub partitions: u32,
    /// Runs of each, interleaved (the medians are reported).
    #[arg(long, default_value_t = 3)]
    pub repeats: usize,
}

#[derive(Args, Debug)]
pub struct ClusterArgs {
    #[command(flatten)]
    pub scale: Scale,
    /// Runs of each, interleaved (the medians are reported).
    #[arg(long, default_value_t = 3)]
    pub repeats: usize,
    /// lockoutd's `--cache-mb`.
    #[arg(long, default_value_t = 256)]
    pub cache_mb: u64,
}

#[derive(Args, Debug)]
pub struct SprayingArgs {
    /// Events folded per run (the main workload's, and the worst case's failures).
    #[arg(long, default_value_t = 1_000_000)]
    pub events: usize,
    /// Users.
    #[arg(long, default_value_t = 100_000)]
    pub users: usize,
    /// Distinct source IPs of the worst case (a million IPs in the window: one failure each
    /// by default).
    #[arg(long, default_value_t = 1_000_000)]
    pub ips: usize,
    /// Runs of each, interleaved (the medians are reported).
    #[arg(long, default_value_t = 3)]
    pub repeats: usize,
}

#[derive(Args, Debug)]
pub struct ReadsArgs {
    /// Users in the store.
    #[arg(long, default_value_t = 100_000)]
    pub users: usize,
    /// States per commit.
    #[arg(long, default_value_t = 50)]
    pub commit_states: usize,
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        None => suite::full(&cli.suite).await,
        Some(Command::Latency(a)) => suite::latency(&a).await,
        Some(Command::Load(a)) => load::load_only(&a).await,
        Some(Command::Fold(a)) => {
            offline::fold_only(&a);
            Ok(())
        }
        Some(Command::Folder(a)) => offline::folder(&a),
        Some(Command::Spraying(a)) => offline::spraying(&a),
        Some(Command::Partitions(a)) => partitions::partitions(&a).await,
        Some(Command::Cluster(a)) => cluster::cluster_only(&a).await,
        Some(Command::Disk(a)) => offline::disk(&a),
        Some(Command::ReadsUnderCommits(a)) => offline::reads_under_commits(&a),
        Some(Command::Invalid(a)) => suite::invalid(&a).await,
    }
}
