//! Supervision: owns the projector's runs. Starts each from the store's checkpoint and starts
//! it over, exactly as a restart would (so nothing is lost or folded twice), when its consumer
//! stalls or when the store refuses a commit (a full disk): then it stops consuming, reports
//! `unhealthy` and reopens the store until it takes writes again. A run also ends when the
//! partitions this process holds change (a lease won, lost or to hand over): the next one
//! settles them first ([`Session::prepare`]).

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use super::{ConsumerStalled, FenceClosed, Session, StoreFailed};
use crate::Shared;

/// Runs the projector and starts it over from the store's checkpoint, exactly as a restart
/// would (so nothing is lost or folded twice), when its consumer stalls or when the store
/// refuses a commit (a full disk): then it stops consuming, reports `unhealthy` and reopens
/// the store until it takes writes again. Returns on `stop`, or with any other error.
pub async fn supervise(
    shared: Arc<Shared>,
    mut session: Session,
    folded: watch::Sender<u64>,
    mut stop: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let folded = Arc::new(folded);
    loop {
        let run_stop = run_stop(&shared, &session, stop.clone());
        // The requests other processes forward for this run's partitions are answered while
        // it runs (the partitions are caught up by now).
        let serving = tokio::spawn(crate::service::route::serve_partitions(shared.clone(), session.run.set.clone()));
        let result = super::run(shared.clone(), session, folded.clone(), run_stop).await;
        serving.abort();
        if *stop.borrow() {
            return result;
        }
        let e = match result {
            Ok(()) => {
                tracing::info!("The partitions held changed; settling them before the next run.");
                match prepare_until_ready(&shared, &mut stop).await? {
                    Some(s) => session = s,
                    None => return Ok(()),
                }
                continue;
            }
            Err(e) => e,
        };
        shared.health.caught_up.store(false, std::sync::atomic::Ordering::Release);
        if e.downcast_ref::<FenceClosed>().is_some() {
            match prepare_until_ready(&shared, &mut stop).await? {
                Some(s) => session = s,
                None => return Ok(()),
            }
            continue;
        }
        if let Some(stalled) = e.downcast_ref::<ConsumerStalled>() {
            tracing::warn!(error = %stalled, "Recreating the consumer at the store's checkpoint.");
            match prepare_until_ready(&shared, &mut stop).await? {
                Some(s) => session = s,
                None => return Ok(()),
            }
            continue;
        }
        let Some(failed) = e.downcast_ref::<StoreFailed>() else { return Err(e) };
        tracing::error!(error = %failed, "The store refused a commit; stopped consuming until it takes writes again.");
        let mut delay = Duration::from_secs(1);
        loop {
            tokio::select! {
                _ = stop.changed() => return Ok(()),
                () = tokio::time::sleep(delay) => {}
            }
            let store = shared.store.clone();
            let r = tokio::task::spawn_blocking(move || store.reopen().and_then(|()| store.check_writable()))
                .await
                .map_err(|e| anyhow::anyhow!("reopening the store panicked: {e}"))?;
            match r {
                Ok(()) => break,
                Err(e) => {
                    shared.health.set_store_error(Some(e.to_string()));
                    tracing::warn!(error = %e, "The store does not take writes yet; retrying.");
                    delay = (delay * 2).min(Duration::from_secs(10));
                }
            }
        }
        tracing::info!("The store takes writes again; resuming from its checkpoint.");
        match prepare_until_ready(&shared, &mut stop).await? {
            Some(s) => session = s,
            None => return Ok(()),
        }
        shared.health.set_store_error(None);
    }
}

/// A stop for one run: set when `stop` is, or when what this process holds differs from what
/// the run folds.
fn run_stop(shared: &Arc<Shared>, session: &Session, mut stop: watch::Receiver<bool>) -> watch::Receiver<bool> {
    let (tx, rx) = watch::channel(false);
    let (cluster, run) = (shared.cluster.clone(), session.run.clone());
    let mut changes = cluster.changes();
    tokio::spawn(async move {
        loop {
            if *stop.borrow() || cluster.active() != run {
                break;
            }
            tokio::select! {
                r = stop.changed() => if r.is_err() { break },
                r = changes.changed() => if r.is_err() { break },
                () = tx.closed() => return,
            }
        }
        let _ = tx.send(true);
    });
    rx
}

/// [`Session::prepare`], retried while NATS or the store cannot answer yet (a cluster that
/// elects a leader answers nothing for seconds); `None` on `stop`.
pub async fn prepare_until_ready(shared: &Shared, stop: &mut watch::Receiver<bool>) -> anyhow::Result<Option<Session>> {
    let mut delay = Duration::from_millis(200);
    loop {
        match Session::prepare(shared, &mut stop.clone()).await {
            Ok(s) => return Ok(Some(s)),
            Err(e) => tracing::warn!(error = %e, "Preparing the projector failed; retrying."),
        }
        tokio::select! {
            _ = stop.changed() => return Ok(None),
            () = tokio::time::sleep(delay) => {}
        }
        delay = (delay * 2).min(Duration::from_secs(5));
    }
}
