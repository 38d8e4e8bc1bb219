//! The receive stage: owns the consumer's message stream and gathers batches from it, so
//! that the next batch is received (and the next pull requested) while one folds.

use std::time::Duration;

use futures::{FutureExt as _, StreamExt as _};
use lockout_nats::Delivered;
use tokio::sync::mpsc;

/// How long a batch is gathered from a backlog at most.
const GATHER_WAIT: Duration = Duration::from_millis(5);

/// Whether a batch of `have` messages (of at most `batch`) should wait for more: only when the
/// server still holds enough to fill it (`pending`, as of the last message delivered).
fn worth_waiting(pending: u64, have: usize, batch: usize) -> bool {
    have < batch && pending >= (batch - have) as u64
}

/// The events the server still had for the consumer when it delivered `m`.
fn backlog(m: Option<&Delivered>) -> u64 {
    m.and_then(|m| m.msg.info().ok()).map_or(0, |i| i.pending)
}

/// Pulls messages and hands them over in batches of up to `batch`. A batch is whatever was
/// delivered when the first message came, topped up for a few milliseconds while the server
/// reports a backlog that would fill it (catching up, a rebuild): sled writes its log twice per
/// commit, so fewer, fuller commits cost much less; live traffic folds at once and keeps its
/// latency. Returns when the message stream ends or the fold stage is gone.
pub(super) async fn receive_loop(
    mut messages: async_nats::jetstream::consumer::pull::Stream,
    batch: usize,
    tx: mpsc::Sender<Vec<Delivered>>,
) {
    let mut next = messages.next().await;
    loop {
        let mut msgs = Vec::with_capacity(batch);
        let deadline = tokio::time::Instant::now() + GATHER_WAIT;
        loop {
            match next.take() {
                None => {
                    if !msgs.is_empty() {
                        let _ = tx.send(msgs).await;
                    }
                    return;
                }
                // A message without JetStream metadata cannot come from a consumer.
                Some(Ok(m)) => msgs.extend(Delivered::new(m)),
                Some(Err(e)) => tracing::warn!(error = %e, "Pulling events failed; retrying."),
            }
            if msgs.len() >= batch {
                break;
            }
            next = match messages.next().now_or_never() {
                Some(n) => n,
                None if worth_waiting(backlog(msgs.last()), msgs.len(), batch) => {
                    match tokio::time::timeout_at(deadline, messages.next()).await {
                        Ok(n) => n,
                        Err(_) => break,
                    }
                }
                None => break,
            };
        }
        if !msgs.is_empty() && tx.send(msgs).await.is_err() {
            return;
        }
        next = messages.next().await;
    }
}

#[cfg(test)]
mod tests {
    use super::worth_waiting;

    #[test]
    fn a_batch_waits_only_for_a_backlog_that_fills_it() {
        // (pending at the server, messages so far, batch) → wait?
        let cases = [
            (0, 1, 1000, false),         // live traffic: nothing more at the server
            (5, 1, 1000, false),         // a few behind: fold now, keep the latency
            (998, 1, 1000, false),       // one short of filling it
            (999, 1, 1000, true),        // exactly fills it
            (50_000, 1, 1000, true),     // catching up
            (50_000, 1000, 1000, false), // full already
            (1, 999, 1000, true),
            (0, 999, 1000, false),
            (10, 0, 1, true),
            (10, 1, 1, false),
        ];
        for (pending, have, batch, want) in cases {
            assert_eq!(worth_waiting(pending, have, batch), want, "pending {pending}, have {have}, batch {batch}");
        }
    }
}
