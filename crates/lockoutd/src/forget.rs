//! State retention (`--state-ttl-days`): appends a `forget` event for each unlocked user whose
//! state recorded nothing for the configured time, so that the store does not grow without
//! bound under a flood of distinct users and a replay of the history drops the same states.
//!
//! Every `state_sweep_every` (an hour), once the projector has caught up with its backlog, the
//! store is scanned for unlocked states whose [`UserState::last_activity`] is older than the
//! TTL by the server's time; for each, a `forget` event naming that `last_activity` is
//! appended with an id derived from it ([`forget_event_id`]), so a repeat collapses in
//! JetStream's duplicate window and folds to nothing after it. The fold drops the state only
//! if the user is still unlocked and nothing changed it since: an attempt that lands between
//! the scan and the event wins. At most [`SWEEP_MAX`] events per sweep; the next follows at
//! once while there are more.
//!
//! [`UserState::last_activity`]: lockout_core::UserState::last_activity

use std::sync::Arc;
use std::time::Duration;

use async_nats::HeaderMap;
use lockout_core::ids::forget_event_id;
use lockout_proto::codec;
use lockout_proto::event::{EventKind, Forget};
use lockout_proto::{Tenant, UserId};
use tokio::sync::watch;

use crate::Shared;

/// Most `forget` events appended by one sweep.
pub const SWEEP_MAX: usize = 10_000;

/// An idle state found by a sweep.
struct Idle {
    tenant: String,
    user: String,
    last_activity: u64,
}

/// Sweeps for idle states until `stop`; returns at once when `--state-ttl-days` is off.
pub async fn run(shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    let ttl = shared.config.state_ttl;
    if ttl.is_zero() {
        return;
    }
    let every = shared.config.state_sweep_every;
    let mut wait = Duration::ZERO;
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            () = tokio::time::sleep(wait) => {}
        }
        wait = every;
        if !shared.health.caught_up.load(std::sync::atomic::Ordering::Acquire) {
            wait = Duration::from_secs(1).min(every);
            continue;
        }
        let before = shared.server_now_ms().saturating_sub(u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX));
        let scan = shared.clone();
        let idle = match tokio::task::spawn_blocking(move || idle_states(&scan, before)).await {
            Ok(Ok(idle)) => idle,
            Ok(Err(e)) => {
                tracing::error!(error = %e, "Looking for idle user states failed.");
                continue;
            }
            Err(e) => {
                tracing::error!(error = %e, "Looking for idle user states panicked.");
                continue;
            }
        };
        let mut appended = 0usize;
        for i in &idle {
            match append(&shared, i).await {
                Ok(()) => appended += 1,
                Err(e) => tracing::warn!(error = %e, "Appending a forget event failed; the next sweep retries."),
            }
        }
        if appended > 0 {
            tracing::info!(appended, "Appended forget events for user states idle longer than --state-ttl-days.");
        }
        if idle.len() == SWEEP_MAX {
            wait = Duration::from_secs(1).min(every);
        }
    }
}

/// Unlocked states whose last activity is at or before `before`, at most [`SWEEP_MAX`].
fn idle_states(shared: &Shared, before: u64) -> Result<Vec<Idle>, lockout_store::Error> {
    let mut idle = Vec::new();
    for item in shared.store.all_users() {
        let (tenant, user, state) = item?;
        if state.is_locked() {
            continue;
        }
        let last_activity = state.last_activity().unwrap_or(0);
        if last_activity <= before {
            idle.push(Idle { tenant, user, last_activity });
            if idle.len() == SWEEP_MAX {
                break;
            }
        }
    }
    Ok(idle)
}

/// Appends the `forget` event of one idle state and waits for its PubAck.
async fn append(shared: &Shared, i: &Idle) -> anyhow::Result<()> {
    let (tenant, user) = (Tenant::parse(&i.tenant)?, UserId::parse(&i.user)?);
    let id = forget_event_id(&i.tenant, &i.user, i.last_activity);
    let body = Forget {
        id,
        at: shared.clock.now_ms(),
        tenant: i.tenant.as_str().into(),
        user: i.user.as_str().into(),
        last_activity: i.last_activity,
    };
    let enc = shared.config.notice_encoding;
    let mut headers = HeaderMap::new();
    headers.insert(codec::CONTENT_TYPE, enc.content_type());
    headers.insert(codec::NATS_MSG_ID, id.to_string().as_str());
    let subject = shared.config.subjects.user_event(&tenant, &user, EventKind::Forget);
    shared.js.publish_with_headers(subject, headers, codec::encode(enc, &body).into()).await?.await?;
    Ok(())
}
