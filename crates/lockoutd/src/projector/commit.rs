//! The commit stage: owns the store's commits. Commits folded batches one at a time, in
//! order, records their health and metrics, and hands them to the publish stage. Ends when
//! the fold stage is done (after the batches it already sent: a drain), or with
//! [`StoreFailed`] at the first refused commit, leaving that batch and the later ones
//! unacknowledged.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use lockout_store::{Commit, Store};
use tokio::sync::mpsc;

use super::fold::FoldedBatch;
use super::{FenceClosed, StoreFailed};
use crate::cluster::RunSet;
use crate::observe::RefusedLog;
use crate::Shared;

/// A committed batch on its way to the streams.
pub(super) struct Committed {
    /// `None` when the batch held only redeliveries.
    pub commit: Option<Arc<Commit>>,
    pub pending: u64,
    pub last: async_nats::jetstream::Message,
}

pub(super) async fn commit_loop(
    shared: Arc<Shared>,
    run: Arc<RunSet>,
    mut rx: mpsc::Receiver<FoldedBatch>,
    tx: mpsc::Sender<Committed>,
) -> anyhow::Result<()> {
    let mut refused = RefusedLog::default();
    while let Some(batch) = rx.recv().await {
        let FoldedBatch { commit, stats, span, pending, stream_last, last } = batch;
        let commit = match commit {
            Some(commit) => {
                if !shared.cluster.holds(&run) {
                    // A paused process that lost its leases must not write what it folded
                    // for them: another process folds them now.
                    tracing::warn!("A partition lease was lost; this run's folded work is dropped, not committed.");
                    return Err(FenceClosed.into());
                }
                let started = std::time::Instant::now();
                let commit = Arc::new(commit);
                in_place(&shared.store, &commit, span)
                    .await
                    .map_err(|e| anyhow::anyhow!("the store commit panicked: {e}"))?
                    .map_err(|e| {
                        shared.health.set_store_error(Some(e.to_string()));
                        StoreFailed(e)
                    })?;
                shared.metrics.batch_committed(&stats, started.elapsed());
                shared.health.last_commit_at.store(shared.clock.now_ms(), Relaxed);
                // Lag: the stream's last sequence as last seen minus the checkpoint.
                let lag = stream_last.saturating_sub(commit.checkpoint);
                shared.health.lag.store(lag, Relaxed);
                shared.metrics.consumer_lag(lag);
                shared.metrics.outbox(i64::try_from(commit.outbox.len()).unwrap_or(i64::MAX));
                refused.record(&stats, commit.checkpoint);
                Some(commit)
            }
            None => None,
        };
        if tx.send(Committed { commit, pending, last }).await.is_err() {
            if !shared.cluster.holds(&run) {
                // The publisher stopped because the leases are gone.
                return Err(FenceClosed.into());
            }
            anyhow::bail!("the publisher stopped");
        }
    }
    Ok(())
}

/// Commits `commit` into `store`, off the async code: on a multi-thread runtime (lockoutd's)
/// in place, on this thread (`block_in_place`: the runtime hands this worker's other tasks to
/// another thread meanwhile), so a `locked` notice's commit starts and ends without waiting
/// for another thread to be woken and given a CPU; elsewhere on a blocking thread.
async fn in_place(
    store: &Store,
    commit: &Arc<Commit>,
    span: tracing::Span,
) -> Result<lockout_store::Result<()>, tokio::task::JoinError> {
    use tokio::runtime::{Handle, RuntimeFlavor};
    if Handle::current().runtime_flavor() == RuntimeFlavor::MultiThread {
        return Ok(tokio::task::block_in_place(|| span.in_scope(|| store.commit(commit))));
    }
    let (store, c) = (store.clone(), commit.clone());
    tokio::task::spawn_blocking(move || span.in_scope(|| store.commit(&c))).await
}
