//! The store's disk, for `health`: its size and the free space of its filesystem, read every
//! [`EVERY`] rather than per request (`health` is polled), and a warning while little is free:
//! a flood of distinct users or of bad input must not fill the disk unnoticed.

use std::sync::Arc;
use std::time::Duration;

use lockout_proto::command::DiskUse;
use tokio::sync::watch;

use crate::Shared;

/// How often the disk is read.
pub const EVERY: Duration = Duration::from_secs(10);
/// Below this share of the filesystem free, lockoutd warns (at most every [`WARN_EVERY`]).
const WARN_FREE_PERCENT: u64 = 10;
const WARN_EVERY: Duration = Duration::from_secs(600);

/// Reads the disk every [`EVERY`] into `shared.health` until `stop`.
pub async fn run(shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut warned: Option<std::time::Instant> = None;
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            _ = tick.tick() => {}
        }
        let store = shared.store.clone();
        let read = tokio::task::spawn_blocking(move || (store.size_on_disk().ok(), store.filesystem_space())).await;
        let Ok((Some(store_bytes), Some((free_bytes, total_bytes)))) = read else { continue };
        let disk = DiskUse { store_bytes, free_bytes, total_bytes };
        *shared.health.disk.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(disk);
        let low = free_bytes.saturating_mul(100) < total_bytes.saturating_mul(WARN_FREE_PERCENT);
        if low && warned.is_none_or(|t| t.elapsed() >= WARN_EVERY) {
            tracing::warn!(
                store_bytes,
                free_bytes,
                total_bytes,
                "Less than {WARN_FREE_PERCENT}% of the store's filesystem is free. When it is full lockoutd stops folding (health: unhealthy) until space returns; nothing is lost, but no account locks meanwhile."
            );
            warned = Some(std::time::Instant::now());
        }
    }
}
