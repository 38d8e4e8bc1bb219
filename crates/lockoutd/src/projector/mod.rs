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
use tokio::sync::{mpsc, watch};

pub use supervise::{prepare_until_ready, supervise};

use crate::Shared;

/// What a projector run starts from: the store's checkpoint, the streams' floors and a
/// durable consumer positioned after the checkpoint.
pub struct Session {
    consumer: PullConsumer,
    floors: Floors,
}

impl Session {
    /// Publishes what an earlier run committed but did not publish, (re)creates the consumer
    /// at the store's checkpoint, and holds the expiry timer until the backlog the stream
    /// holds now is folded.
    pub async fn prepare(shared: &Shared) -> anyhow::Result<Session> {
        let (js, cfg) = (&shared.js, &shared.config);
        let floors = crate::outbox::read_floors(js, &cfg.subjects).await?;
        crate::outbox::drain(js, &shared.store, &floors).await?;
        let checkpoint = shared.store.checkpoint()?;
        let consumer = crate::streams::ensure_consumer(js, cfg, checkpoint).await?;
        let backlog_end = crate::streams::last_event_seq(js, cfg).await?;
        shared.health.caught_up.store(checkpoint >= backlog_end, std::sync::atomic::Ordering::Release);
        Ok(Session { consumer, floors })
    }
}

/// The consumer stopped delivering although events wait (a pull lost in a reconnect), or its
/// message stream ended: the projector starts over from the store's checkpoint.
#[derive(Debug, thiserror::Error)]
#[error("the consumer stalled: {0}")]
pub struct ConsumerStalled(pub String);

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
    let committer = tokio::spawn(commit::commit_loop(shared.clone(), rx, ptx));
    let publisher = tokio::spawn(publish::publish_loop(shared.clone(), prx, folded));
    let folding = fold::fold_loop(&shared, session.consumer, session.floors, tx, stop).await;
    let committing = committer.await.map_err(|e| anyhow::anyhow!("the committer panicked: {e}"))?;
    publisher.await.map_err(|e| anyhow::anyhow!("the publisher panicked: {e}"))?;
    // The committer's failure is the cause when both stopped.
    committing.and(folding)
}
