//! The publish stage: owns publishing the committed outboxes, the `folded` watch that write
//! commands wait on, and the acknowledgements. Sends the entries of every batch that is ready
//! before awaiting the oldest one's acknowledgements, so a round trip to JetStream per batch
//! does not bound throughput. Ends when the commit stage is done.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use tokio::sync::{mpsc, watch};

use super::commit::Committed;
use crate::cluster::RunSet;
use crate::outbox::{self, InFlight, PartitionFloors};
use crate::Shared;

/// Most committed batches whose outbox is sent but not yet acknowledged.
const PUBLISH_AHEAD: usize = 16;

/// How often at most the partitions' publish floors are recorded while publishing (and once
/// more when the run ends).
const RECORD_FLOORS_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

pub(super) async fn publish_loop(
    shared: Arc<Shared>,
    run: Arc<RunSet>,
    floors: Vec<lockout_engine::Floors>,
    rx: mpsc::Receiver<Committed>,
    folded: Arc<watch::Sender<u64>>,
) {
    let mut floors = PartitionFloors::new(floors);
    publish_batches(&shared, &run, rx, &folded, &mut floors).await;
    // What this run published is recorded for the next owner (unless the leases are gone:
    // then the next owner's floors are not this run's to write).
    if shared.cluster.holds(&run) {
        shared.cluster.record_floors(&floors.take()).await;
    }
}

async fn publish_batches(
    shared: &Shared,
    run: &RunSet,
    mut rx: mpsc::Receiver<Committed>,
    folded: &watch::Sender<u64>,
    floors: &mut PartitionFloors,
) {
    let mut queue: VecDeque<(Committed, InFlight)> = VecDeque::new();
    let mut open = true;
    let mut recorded = std::time::Instant::now();
    loop {
        while open && queue.len() < PUBLISH_AHEAD {
            let next = if queue.is_empty() {
                rx.recv().await
            } else {
                match rx.try_recv() {
                    Ok(c) => Some(c),
                    Err(mpsc::error::TryRecvError::Empty) => break,
                    Err(mpsc::error::TryRecvError::Disconnected) => None,
                }
            };
            let Some(c) = next else {
                open = false;
                break;
            };
            let entries = c.commit.as_ref().map_or(&[][..], |c| &c.outbox[..]);
            if !entries.is_empty() && !shared.cluster.holds(run) {
                // Another process owns these partitions now; it publishes what was not.
                tracing::warn!("A partition lease was lost; this run publishes nothing more.");
                return;
            }
            let inflight = outbox::send(&shared.js, entries).await;
            queue.push_back((c, inflight));
        }
        let Some((Committed { commit, pending, last }, inflight)) = queue.pop_front() else { return };
        if let Some(commit) = commit {
            outbox::settle(&shared.js, &shared.store, &commit.outbox, inflight).await;
            shared.metrics.outbox(-i64::try_from(commit.outbox.len()).unwrap_or(i64::MAX));
            folded.send_replace(commit.checkpoint);
            floors.published(&commit.outbox);
            if recorded.elapsed() >= RECORD_FLOORS_EVERY && shared.cluster.holds(run) {
                shared.cluster.record_floors(&floors.take()).await;
                recorded = std::time::Instant::now();
            }
        }
        if pending == 0 {
            shared.health.caught_up.store(true, Ordering::Release);
        }
        if let Err(e) = last.ack().await {
            tracing::warn!(error = %e, "Acknowledging a batch failed; it will be redelivered and skipped.");
        }
    }
}
