//! The projector: `LOCKOUT_EVENTS` → the engine's fold → one sled commit → publish → ack.
//!
//! Four stages overlap, one batch waiting in each channel between them (batch N+3 is
//! received while N+2 folds, N+1 commits and N is published):
//!
//! | stage | file | owns |
//! |---|---|---|
//! | receive | [`receive`] | the consumer's message stream; gathering a batch |
//! | fold | [`fold`] | the engine's [`lockout_engine::BatchFolder`] and its telemetry; commit lingering |
//! | commit | [`commit`] | the sled commits, in order; health and metrics of each |
//! | publish | [`publish`] | the outbox's publishing, the `folded` watch, the acks |
//!
//! [`supervise`] starts a run from the store's checkpoint and starts it over, exactly as a
//! restart would, when the consumer stalls or the store refuses a commit. Events at or below
//! the checkpoint are redeliveries the engine skips, so every event is folded exactly once.

mod commit;
mod fold;
mod publish;
mod receive;
mod supervise;

use std::sync::Arc;

use async_nats::jetstream::consumer::PullConsumer;
use lockout_engine::Floors;
use lockout_proto::partition::Set;
use tokio::sync::{mpsc, watch};

pub use supervise::{prepare_until_ready, supervise};

use crate::cluster::RunSet;
use crate::Shared;
use anyhow::Context as _;

/// How long past a lease a run waits for the partitions assigned to this process before it
/// starts without those still held elsewhere.
const SETTLE_MARGIN: std::time::Duration = std::time::Duration::from_secs(5);

/// What a projector run starts from: the partitions it folds, the store's checkpoint, the
/// floors and a durable consumer positioned after the checkpoint.
pub struct Session {
    consumer: PullConsumer,
    consumer_name: String,
    floors: Floors,
    partition_floors: Vec<Floors>,
    run: RunSet,
}

impl Session {
    /// Settles the partitions (records those released and hands their leases over, catches up
    /// those gained), publishes what an earlier run committed but did not publish,
    /// (re)creates the consumer at the store's checkpoint, and holds the expiry timer until
    /// the backlog the stream holds now is folded.
    pub async fn prepare(shared: &Shared, stop: &mut watch::Receiver<bool>) -> anyhow::Result<Session> {
        let (js, cfg, cluster) = (&shared.js, &shared.config, &shared.cluster);
        let Some(run) = cluster.settled(cluster.lease + SETTLE_MARGIN, stop).await else {
            anyhow::bail!("stopping");
        };
        let n = cluster.n;
        let stored = shared.store.partitions()?.unwrap_or_else(|| Set::all(n));
        anyhow::ensure!(
            stored.count() == n,
            "the store in {} was folded with {} partitions and the deployment has {n}: start this process with an empty --data-dir",
            cfg.data_dir.display(),
            stored.count()
        );
        // What the store holds of a partition is kept only if nobody else claimed it since.
        let claims: std::collections::BTreeMap<u32, u64> = match shared.store.meta("claims")? {
            Some(b) => serde_json::from_slice(&b).context("reading the store's partition claims")?,
            None => Default::default(),
        };
        let kept = Set::of(n, stored.iter().filter(|p| run.store_is_current(*p, claims.get(p).copied())));
        if kept != stored {
            let dropped = shared.store.set_partitions(&kept)?;
            let released = Set::of(n, stored.iter().filter(|p| !kept.contains(*p)));
            tracing::info!(partitions = %released, keys = dropped, "Released partitions.");
        }
        for p in cluster.releasing() {
            if !kept.contains(p) {
                cluster.drained(p);
            }
        }
        let floors = crate::outbox::read_floors(js, &cfg.subjects).await?;
        let partition_floors = cluster.floors().await?;
        let gained = Set::of(n, run.set.iter().filter(|p| !kept.contains(*p)));
        if !gained.is_empty() {
            crate::catchup::catch_up(shared, &kept, &gained, partition_floors.clone()).await?;
        }
        let claims = serde_json::to_vec(&run.claims()).expect("claims serialize");
        shared.store.set_meta("claims", &claims)?;
        crate::outbox::drain(js, &shared.store, &floors, &partition_floors, &run.set).await?;
        let checkpoint = shared.store.checkpoint()?;
        let consumer_name = crate::streams::consumer_name(cfg, &run.set);
        let consumer = crate::streams::ensure_consumer(js, cfg, &consumer_name, checkpoint).await?;
        cluster.set_run_set(run.set.clone());
        shared.health.set_partitions(run.set.iter().collect());
        let backlog_end = crate::streams::last_event_seq(js, cfg).await?;
        shared.health.caught_up.store(checkpoint >= backlog_end, std::sync::atomic::Ordering::Release);
        Ok(Session { consumer, consumer_name, floors, partition_floors, run })
    }
}

/// The consumer stopped delivering although events wait (a pull lost in a reconnect), or its
/// message stream ended: the projector starts over from the store's checkpoint.
#[derive(Debug, thiserror::Error)]
#[error("the consumer stalled: {0}")]
pub struct ConsumerStalled(pub String);

/// A lease of the run's partitions was lost (or its fence closed: this process was paused or
/// cut off longer than a lease): nothing more is committed or published for them.
#[derive(Debug, thiserror::Error)]
#[error("a partition lease of this run was lost; nothing more is committed or published for it")]
pub struct FenceClosed;

/// The store refused a commit: sled stays failed until it is reopened.
#[derive(Debug, thiserror::Error)]
#[error("the store refused a commit: {0}")]
pub struct StoreFailed(#[source] pub lockout_store::Error);

/// One projector run: the fold stage here, the commit and publish stages as tasks. Returns
/// when `stop` turns true, after the batches already folded are committed (a drain), or with
/// the error that stopped it ([`StoreFailed`] when the store refused a commit).
async fn run(
    shared: Arc<Shared>,
    session: Session,
    folded: Arc<watch::Sender<u64>>,
    stop: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    // One batch waiting in each channel: the folder's cache never runs more than two commits
    // ahead of the store, and publishing never holds up a commit.
    let (tx, rx) = mpsc::channel(1);
    let (ptx, prx) = mpsc::channel(1);
    let run = Arc::new(session.run.clone());
    let committer = tokio::spawn(commit::commit_loop(shared.clone(), run.clone(), rx, ptx));
    let floors = session.partition_floors.clone();
    let publisher = tokio::spawn(publish::publish_loop(shared.clone(), run, floors, prx, folded));
    let folding = fold::fold_loop(&shared, session, tx, stop).await;
    let committing = committer.await.map_err(|e| anyhow::anyhow!("the committer panicked: {e}"))?;
    publisher.await.map_err(|e| anyhow::anyhow!("the publisher panicked: {e}"))?;
    // The committer's failure is the cause when both stopped.
    committing.and(folding)
}
