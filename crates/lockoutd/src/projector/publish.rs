//! The publish stage: owns publishing the committed outboxes, the `folded` watch that write
//! commands wait on, and the acknowledgements. Sends the entries of every batch that is ready
//! before awaiting the oldest one's acknowledgements, so a round trip to JetStream per batch
//! does not bound throughput. Ends when the commit stage is done.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use tokio::sync::{mpsc, watch};

use super::commit::Committed;
use crate::outbox::{self, InFlight};
use crate::Shared;

/// Most committed batches whose outbox is sent but not yet acknowledged.
const PUBLISH_AHEAD: usize = 16;

pub(super) async fn publish_loop(
    shared: Arc<Shared>,
    mut rx: mpsc::Receiver<Committed>,
    folded: Arc<watch::Sender<u64>>,
) {
    let mut queue: VecDeque<(Committed, InFlight)> = VecDeque::new();
    let mut open = true;
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
            let inflight = outbox::send(&shared.js, entries).await;
            queue.push_back((c, inflight));
        }
        let Some((Committed { commit, pending, last }, inflight)) = queue.pop_front() else { return };
        if let Some(commit) = commit {
            outbox::settle(&shared.js, &shared.store, &commit.outbox, inflight).await;
            shared.metrics.outbox(-i64::try_from(commit.outbox.len()).unwrap_or(i64::MAX));
            folded.send_replace(commit.checkpoint);
        }
        if pending == 0 {
            shared.health.caught_up.store(true, Ordering::Release);
        }
        if let Err(e) = last.ack().await {
            tracing::warn!(error = %e, "Acknowledging a batch failed; it will be redelivered and skipped.");
        }
    }
}
