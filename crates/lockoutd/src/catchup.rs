//! Catching up partitions this process gained (ARCHITECTURE.md, "State per partition"): the
//! stream from its start up to the store's checkpoint, folded with only the gained partitions
//! into a scratch store under the data dir, then taken over by the store in one batch.
//!
//! Tenant state (policies, IP blocks) is rebuilt in the scratch store on the way, so each event
//! meets the policy and blocks of its time; the store keeps its own, folded from the same
//! events up to the same checkpoint. Notices and dead letters above each partition's publish
//! floor are queued in the scratch store's outbox and published by the next run: what the
//! previous owner had not published yet. A crash half-way leaves the store's partition set as
//! it was, and the next start catches up again from scratch.

use std::time::Duration;

use anyhow::Context as _;
use async_nats::jetstream::consumer::{pull, DeliverPolicy};
use futures::StreamExt;
use lockout_engine::{BatchFolder, Floors, OutboxMode};
use lockout_nats::Delivered;
use lockout_proto::partition::Set;
use lockout_store::Store;

use crate::Shared;

/// How long the read may go without a message while more are expected.
const IDLE: Duration = Duration::from_secs(10);

/// The scratch store's page cache.
const SCRATCH_CACHE_BYTES: u64 = 32 << 20;

/// Folds `gained` up to the store's checkpoint and adds them to the store's partitions (which
/// are `kept` now). Returns the events read.
pub async fn catch_up(shared: &Shared, kept: &Set, gained: &Set, floors: Vec<Floors>) -> anyhow::Result<u64> {
    let cfg = &shared.config;
    let upto = shared.store.checkpoint()?;
    if upto == 0 {
        // Nothing folded yet: every partition is complete at 0.
        let mut all = kept.clone();
        gained.iter().for_each(|p| all.insert(p));
        shared.store.set_partitions(&all)?;
        return Ok(0);
    }
    let started = std::time::Instant::now();
    let dir = cfg.data_dir.join("catch-up");
    if dir.exists() {
        std::fs::remove_dir_all(&dir).with_context(|| format!("removing the old catch-up store {}", dir.display()))?;
    }
    let scratch = Store::open(&dir, SCRATCH_CACHE_BYTES).context("opening the catch-up store")?;
    let mode = OutboxMode::Publish { floors: Floors::default(), notices: cfg.notice_encoding };
    let mut folder = BatchFolder::new(scratch.clone(), cfg.subjects.clone(), mode)?;
    folder.set_partitions(gained.clone());
    folder.set_partition_floors(floors);
    let read = fold_stream(shared, &scratch, &mut folder, upto).await?;
    let moved = blocking(|| shared.store.take_partitions(&scratch, kept, gained))?;
    drop(folder);
    drop(scratch);
    if let Err(e) = std::fs::remove_dir_all(&dir) {
        tracing::warn!(error = %e, dir = %dir.display(), "Removing the catch-up store failed; the next catch-up does.");
    }
    tracing::info!(
        partitions = %gained,
        events = read,
        keys = moved,
        ms = started.elapsed().as_millis() as u64,
        "Caught up the partitions gained."
    );
    Ok(read)
}

/// Reads `LOCKOUT_EVENTS` from its start up to `upto` with an ordered consumer and folds it
/// into `scratch`, a batch at a time.
async fn fold_stream(shared: &Shared, scratch: &Store, folder: &mut BatchFolder, upto: u64) -> anyhow::Result<u64> {
    let cfg = &shared.config;
    let stream = shared.js.get_stream(cfg.subjects.events_stream()).await.context("looking up the events stream")?;
    let consumer = stream
        .create_consumer(pull::OrderedConfig {
            description: Some(format!("lockoutd {} catch-up", cfg.instance)),
            filter_subject: cfg.subjects.events_all(),
            deliver_policy: DeliverPolicy::All,
            ..Default::default()
        })
        .await
        .context("creating a consumer to catch up")?;
    // Not trusting a pending count of 0 here either: `upto` > 0 was folded, so the stream
    // holds it (the read below ends at it, or finds the stream really ends before).
    let mut read = 0u64;
    let mut messages = consumer.messages().await.context("reading the stream to catch up")?;
    let mut batch: Vec<Delivered> = Vec::with_capacity(cfg.batch);
    let mut fold = |batch: &mut Vec<Delivered>| -> anyhow::Result<()> {
        read += batch.len() as u64;
        if let Some(commit) = blocking(|| folder.fold_batch(batch))?.commit {
            blocking(|| scratch.commit(&commit))?;
        }
        batch.clear();
        Ok(())
    };
    let mut seen = 0;
    loop {
        let msg = match tokio::time::timeout(IDLE, messages.next()).await {
            Ok(Some(Ok(m))) => m,
            Ok(Some(Err(e))) => return Err(anyhow::Error::new(e).context("reading the stream to catch up")),
            Ok(None) | Err(_) => {
                // Nothing more came: complete only if the stream really ends before `upto`
                // (a pending count of 0 seen during a leader change is not proof).
                let last = stream.get_info().await.map(|i| i.state.last_sequence).unwrap_or(u64::MAX);
                anyhow::ensure!(last <= seen, "catching up: no event for {} s after {seen} of {upto}", IDLE.as_secs());
                break;
            }
        };
        let Some(d) = Delivered::new(msg) else { continue };
        if d.seq > upto {
            break;
        }
        seen = d.seq;
        let last = d.seq == upto;
        batch.push(d);
        if last {
            break;
        }
        if batch.len() >= cfg.batch {
            fold(&mut batch)?;
        }
    }
    fold(&mut batch)?;
    Ok(read)
}

/// Runs blocking store work in place: on a multi-thread runtime without holding up its other
/// tasks (`block_in_place`), elsewhere (tests' current-thread runtimes) simply.
fn blocking<T>(f: impl FnOnce() -> T) -> T {
    use tokio::runtime::{Handle, RuntimeFlavor};
    if Handle::current().runtime_flavor() == RuntimeFlavor::MultiThread {
        tokio::task::block_in_place(f)
    } else {
        f()
    }
}
