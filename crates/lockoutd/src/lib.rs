//! `lockoutd`, the glue between NATS, the fold and the store.
//!
//! The binary is thin: it parses [`config`], then calls [`run`] with a shutdown future.
//! Everything that talks to NATS lives here; the rules live in `lockout-core` and the
//! storage in `lockout-store`.
//!
//! # Layout
//! - [`config`]: flags with environment fallbacks, validated into `Config`.
//! - [`streams`]: creates or updates the three streams and the durable consumer.
//! - [`projector`]: one fetched batch → the engine's fold → one sled commit with the outbox,
//!   pipelined in stages: the next batch folds while the last one commits.
//! - [`observe`]: the engine's reports of a folded batch → spans, logs, metric counts.
//! - [`outbox`]: publishes committed notices and dead letters exactly once by id.
//! - [`explain`]: the `explain` op, the user's history folded by `lockout_core::explain`.
//! - [`expiry`]: appends `expired` events for timed locks that ran out.
//! - [`service`]: the micro service `lockout` (status, commands, policy, digest).
//! - [`telemetry`]: OpenTelemetry metrics, trace context over NATS headers, OTLP setup.

pub use lockout_nats::clock;
pub mod bulk;
pub mod caller;
pub mod catchup;
pub mod cluster;
pub mod config;
pub mod disk;
pub mod expiry;
pub mod explain;
pub mod forget;
pub mod observe;
pub mod outbox;
pub mod projector;
pub mod service;
pub mod streams;
pub mod telemetry;

use std::future::Future;
use std::sync::Arc;

use anyhow::Context as _;
use lockout_store::Store;
use tokio::sync::watch;

pub use config::Config;

/// What the projector reports about itself, read by `health` and `$SRV.STATS`.
#[derive(Debug, Default)]
pub struct Health {
    /// The stream's last sequence (as of the last fetched batch) minus the checkpoint.
    pub lag: std::sync::atomic::AtomicU64,
    /// When the last batch was committed (ms), 0 before the first.
    pub last_commit_at: std::sync::atomic::AtomicU64,
    /// The store's error while commits fail.
    pub store_error: std::sync::Mutex<Option<String>>,
    /// Whether the projector has committed the backlog `LOCKOUT_EVENTS` held when it last
    /// (re)started; until then the expiry timer waits, as the store may hold locks whose
    /// `expired` events are still to be folded.
    pub caught_up: std::sync::atomic::AtomicBool,
    /// How far the clock runs ahead of the server's, from live events' stored times.
    pub clock_skew: clock::SkewEstimate,
    /// The store's disk as `disk::run` last read it.
    pub disk: std::sync::Mutex<Option<lockout_proto::command::DiskUse>>,
    /// What the streams keep (lockoutd's flags).
    pub retention: lockout_proto::command::Retention,
    /// `--instance`.
    pub instance: String,
    /// The partitions the projector folds now (all of them while this process is alone).
    pub partitions: std::sync::Mutex<Vec<u32>>,
}

impl Health {
    /// The `health` reply for the last folded sequence `seq`.
    pub fn reply(&self, seq: u64) -> lockout_proto::command::HealthReply {
        use lockout_proto::command::{HealthStatus, LAGGING_AFTER};
        use std::sync::atomic::Ordering::Relaxed;
        let error = self.store_error.lock().map(|e| e.clone()).unwrap_or_else(|p| p.into_inner().clone());
        let lag = self.lag.load(Relaxed);
        let status = match (&error, lag > LAGGING_AFTER) {
            (Some(_), _) => HealthStatus::Unhealthy,
            (None, true) => HealthStatus::Lagging,
            (None, false) => HealthStatus::Ready,
        };
        let last = self.last_commit_at.load(Relaxed);
        lockout_proto::command::HealthReply {
            status,
            seq,
            lag,
            last_commit_at: (last > 0).then_some(last),
            error,
            clock_skew_ms: self.clock_skew.skew_ms(),
            disk: *self.disk.lock().unwrap_or_else(std::sync::PoisonError::into_inner),
            retention: Some(self.retention),
            instance: Some(self.instance.clone()),
            partitions: Some(self.partitions.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone()),
        }
    }

    pub(crate) fn set_partitions(&self, ps: Vec<u32>) {
        *self.partitions.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = ps;
    }

    pub(crate) fn set_store_error(&self, e: Option<String>) {
        match self.store_error.lock() {
            Ok(mut g) => *g = e,
            Err(p) => *p.into_inner() = e,
        }
    }
}

/// What the running parts share.
pub struct Shared {
    pub config: Config,
    pub store: Store,
    pub js: async_nats::jetstream::Context,
    pub client: async_nats::Client,
    /// The last folded and published `LOCKOUT_EVENTS` sequence.
    pub folded: watch::Receiver<u64>,
    pub health: Arc<Health>,
    /// Metrics, from the global meter provider at start (no-ops when none is installed).
    pub metrics: Arc<telemetry::Metrics>,
    /// The wall clock: `at` of the events the service writes; corrected by the skew
    /// estimate, due expiries and `status` now ([`Shared::server_now_ms`]).
    pub clock: Arc<dyn clock::Clock>,
    /// This process's share of the partitions.
    pub cluster: Arc<cluster::Cluster>,
}

impl Shared {
    /// The server's time now, as near as lockoutd knows it: its clock corrected by the skew
    /// it has seen in live events' stored times. The fold's clock is the server's, so this is
    /// what a lock's `locked_until` is compared with: when an `expired` event is due, and
    /// whether `status` still reports a lock.
    pub fn server_now_ms(&self) -> u64 {
        self.health.clock_skew.server_now_ms(self.clock.as_ref())
    }
}

/// Connects to NATS with the configured options.
pub async fn connect(config: &Config) -> anyhow::Result<async_nats::Client> {
    connect_as(config, "lockoutd").await
}

/// [`connect`] under a connection name of its own (what the server's monitoring shows).
pub async fn connect_as(config: &Config, name: &str) -> anyhow::Result<async_nats::Client> {
    let opts = async_nats::ConnectOptions::new().name(name).retry_on_initial_connect().max_reconnects(None);
    config.nats.connect(opts).await
}

/// Runs lockoutd until `shutdown` completes; then drains in-flight work and returns.
pub async fn run(config: Config, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    run_with_clock(config, Arc::new(clock::SystemClock), shutdown).await
}

/// [`run`] with a clock of the caller's (tests move time on without sleeping).
pub async fn run_with_clock(
    config: Config,
    clock: Arc<dyn clock::Clock>,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let store = Store::open(&config.data_dir, config.sled_cache_bytes())
        .with_context(|| format!("opening the store in {}", config.data_dir.display()))?;
    let client = connect(&config).await?;
    let js = async_nats::jetstream::new(client.clone());
    // Several processes starting at once against a cluster that is still electing its
    // leaders see JetStream requests time out for a while: retry for a minute.
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(60);
    while let Err(e) = streams::ensure_streams(&js, &config).await {
        if tokio::time::Instant::now() >= deadline {
            return Err(e);
        }
        tracing::warn!(error = %e, "Creating the streams failed; retrying.");
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
    let buckets = streams::ensure_cluster_config(&js, &config).await?;
    if config.require_caller {
        caller::check_server_version(&client.server_info().version).map_err(anyhow::Error::msg)?;
    }

    let checkpoint = store.checkpoint()?;
    let (folded_tx, folded) = watch::channel(checkpoint);
    let metrics = Arc::new(telemetry::Metrics::new());
    let limits = config.limits;
    let retention = lockout_proto::command::Retention {
        events_max_age_days: limits.events_max_age.as_secs() / 86_400,
        events_max_bytes: limits.events_max_bytes,
        dead_max_messages: limits.dead_max_messages,
        state_ttl_days: config.state_ttl.as_secs() / 86_400,
    };
    let health = Arc::new(Health { retention, instance: config.instance.clone(), ..Health::default() });
    let cluster = cluster::Cluster::start(&js, &config, buckets, &store).await?;
    let shared = Arc::new(Shared { config, store, js, client, folded, health, metrics, clock, cluster });
    let (stop_tx, stop_rx) = watch::channel(false);

    // Publish what an earlier run committed but did not publish, then start folding.
    tokio::pin!(shutdown);
    let mut prepare_stop = stop_rx.clone();
    let session = tokio::select! {
        () = &mut shutdown => return Ok(()),
        s = projector::prepare_until_ready(&shared, &mut prepare_stop) => match s? {
            Some(s) => s,
            None => return Ok(()),
        },
    };
    let projector = tokio::spawn(projector::supervise(shared.clone(), session, folded_tx, stop_rx.clone()));
    let expiry = tokio::spawn(expiry::run(shared.clone(), stop_rx.clone()));
    let forget = tokio::spawn(forget::run(shared.clone(), stop_rx.clone()));
    let disk = tokio::spawn(disk::run(shared.clone(), stop_rx.clone()));
    let service = service::start(shared.clone()).await?;

    tracing::info!(
        config = %shared.config,
        checkpoint,
        "lockoutd ready: streams, consumer and store exist; serving {}.svc.<tenant>.<op>",
        shared.config.subjects.prefix()
    );

    let mut projector = projector;
    let result = tokio::select! {
        () = &mut shutdown => Ok(()),
        r = &mut projector => Err(match r {
            Ok(Err(e)) => e.context("the projector stopped"),
            Ok(Ok(())) => anyhow::anyhow!("the projector stopped unexpectedly"),
            Err(e) => anyhow::anyhow!("the projector panicked: {e}"),
        }),
    };
    tracing::info!("lockoutd draining");
    let _ = stop_tx.send(true);
    service.stop().await;
    if !projector.is_finished() {
        match projector.await {
            Ok(Err(e)) => tracing::error!(error = %e, "The projector failed while draining."),
            Err(e) => tracing::error!(error = %e, "The projector panicked while draining."),
            Ok(Ok(())) => {}
        }
    }
    let _ = expiry.await;
    let _ = forget.await;
    let _ = disk.await;
    // Everything folded is committed and published: hand the partitions over at once.
    shared.cluster.stop().await;
    shared.store.flush()?;
    shared.client.flush().await.ok();
    tracing::info!("lockoutd stopped");
    result
}
