//! Rebuilding a store from the stream: a fold thread and a commit thread behind a reader.
//!
//! The same stages as lockoutd's projector, without publishing: one thread folds the
//! batches read (while the next one is read), the other commits them in order (while the next
//! one folds), one batch waiting between each; the folder's state cache covers the commits in
//! flight. Used by `lockoutctl replay`/`verify` and the benchmark's in-process modes.

use lockout_store::{Commit, Store};

use crate::{BatchFolder, Delivery};

/// Why a rebuild stopped.
#[derive(Debug, thiserror::Error)]
pub enum RebuildError {
    #[error("the store refused a commit: {0}")]
    Store(#[from] lockout_store::Error),
    #[error("the rebuild's {0} thread panicked")]
    Panicked(&'static str),
}

/// The rebuild's threads stopped early; [`Rebuild::finish`] says why.
#[derive(Debug, thiserror::Error)]
#[error("the rebuild stopped early")]
pub struct Stopped;

/// A fold thread and a commit thread working through the batches [`Rebuild::send`] gives.
pub struct Rebuild<D> {
    /// Awaited by the reader (a full queue parks its task, not a runtime thread).
    tx: tokio::sync::mpsc::Sender<Vec<D>>,
    folding: std::thread::JoinHandle<Result<BatchFolder, RebuildError>>,
    committing: std::thread::JoinHandle<Result<(), RebuildError>>,
}

impl<D: Delivery + Send + 'static> Rebuild<D> {
    /// Starts the threads. `folder` must publish nothing ([`crate::OutboxMode::Discard`]).
    pub fn start(store: Store, mut folder: BatchFolder) -> Rebuild<D> {
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Vec<D>>(1);
        let (ctx, crx) = std::sync::mpsc::sync_channel::<Commit>(1);
        let committing = std::thread::Builder::new()
            .name("rebuild-commit".into())
            .spawn(move || {
                for commit in crx {
                    debug_assert!(commit.outbox.is_empty(), "a rebuild queues nothing to publish");
                    store.commit(&commit)?;
                }
                Ok(())
            })
            .expect("spawning the rebuild's commit thread");
        let folding = std::thread::Builder::new()
            .name("rebuild-fold".into())
            .spawn(move || {
                while let Some(batch) = rx.blocking_recv() {
                    if let Some(commit) = folder.fold_batch(&batch)?.commit {
                        if ctx.send(commit).is_err() {
                            // The commit thread stopped on a store error; `finish` reports it.
                            break;
                        }
                    }
                }
                Ok(folder)
            })
            .expect("spawning the rebuild's fold thread");
        Rebuild { tx, folding, committing }
    }

    /// Queues a batch; `Err` when a thread stopped on an error ([`Rebuild::finish`] says
    /// which).
    pub async fn send(&self, batch: Vec<D>) -> Result<(), Stopped> {
        self.tx.send(batch).await.map_err(|_| Stopped)
    }

    /// Waits until every queued batch is folded and committed (blocking: call it off the
    /// runtime); returns the folder. The commit thread's error is the cause when both stopped.
    pub fn finish(self) -> Result<BatchFolder, RebuildError> {
        drop(self.tx);
        let folded = self.folding.join().map_err(|_| RebuildError::Panicked("fold")).and_then(|r| r);
        let committed = self.committing.join().map_err(|_| RebuildError::Panicked("commit")).and_then(|r| r);
        committed?;
        folded
    }
}
