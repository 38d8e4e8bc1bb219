//! Expiry: appends an `expired` event for each timed lock that ran out.
//!
//! Every 250 ms the store's expiry index is read up to the server's time as lockoutd knows
//! it (`Shared::server_now_ms`: its clock corrected by the skew seen in live events' stored
//! times; an `expired` event stored more than a second before its lock's `locked_until` does
//! not end the lock, so a clock running ahead must not decide). For each due lock, an `expired`
//! event is published whose id and `Nats-Msg-Id` derive from the lock's event id, so
//! restarts and repeats collapse in JetStream's duplicate window and the fold ignores any
//! later copy. Locks that ran out while lockoutd was down are due once the projector has
//! folded the backlog it found at start: before that the store may hold locks whose
//! `expired` events are already in the stream (a rebuild, or a tail lost to a crash), and
//! appending them again after the duplicate window would store a second copy.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::HeaderMap;
use lockout_core::ids::expired_event_id;
use lockout_proto::codec;
use lockout_proto::event::{EventKind, Expired};
use lockout_proto::{Tenant, UserId};
use tokio::sync::watch;
use uuid::Uuid;

use crate::Shared;

const TICK: Duration = Duration::from_millis(250);
/// How often the server's time is asked for (the skew estimate's window).
const SKEW_SAMPLE_EVERY: Duration = Duration::from_millis(lockout_nats::clock::SkewEstimate::WINDOW_MS);
/// How long to wait for a published `expired` event to be folded before publishing it again.
const RETRY_AFTER: Duration = Duration::from_secs(10);

/// Appends `expired` events every [`TICK`] until `stop`, while the projector is caught up
/// with the `LOCKOUT_EVENTS` backlog it found at its (re)start ([`crate::Health::caught_up`]).
pub async fn run(shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    let mut sent: HashMap<Uuid, Instant> = HashMap::new();
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let events_stream = shared.config.subjects.events_stream();
    let mut sampled: Option<Instant> = None;
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            _ = tick.tick() => {}
        }
        // The server's time, once per skew window, so expiries are decided by it even when
        // no live event comes.
        if sampled.is_none_or(|t| t.elapsed() >= SKEW_SAMPLE_EVERY) {
            if let Some(server) = lockout_nats::server_time_ms(&shared.js, &events_stream).await {
                shared.health.clock_skew.observe(shared.clock.now_ms(), server);
            }
            sampled = Some(Instant::now());
        }
        if !shared.health.caught_up.load(std::sync::atomic::Ordering::Acquire) {
            continue;
        }
        let due = match shared.store.due_expiries(shared.server_now_ms(), 1000) {
            Ok(d) => d,
            Err(e) => {
                tracing::error!(error = %e, "Reading due lock expiries failed.");
                continue;
            }
        };
        sent.retain(|id, at| at.elapsed() < RETRY_AFTER && due.iter().any(|d| d.lock_event == *id));
        for d in due {
            if sent.contains_key(&d.lock_event) {
                continue;
            }
            let (Ok(tenant), Ok(user)) = (Tenant::parse(&d.tenant), UserId::parse(&d.user)) else {
                continue;
            };
            let id = expired_event_id(&d.tenant, &d.user, d.lock_event);
            let body = Expired {
                id,
                at: shared.clock.now_ms(),
                tenant: d.tenant.as_str().into(),
                user: d.user.as_str().into(),
                lock_event: d.lock_event,
            };
            let enc = shared.config.notice_encoding;
            let mut headers = HeaderMap::new();
            headers.insert(codec::CONTENT_TYPE, enc.content_type());
            headers.insert(codec::NATS_MSG_ID, id.to_string().as_str());
            let subject = shared.config.subjects.user_event(&tenant, &user, EventKind::Expired);
            let payload = codec::encode(enc, &body);
            match shared.js.publish_with_headers(subject, headers, payload.into()).await {
                Ok(ack) => match ack.await {
                    Ok(_) => {
                        sent.insert(d.lock_event, Instant::now());
                    }
                    Err(e) => tracing::warn!(error = %e, "Appending an expired event failed; retrying."),
                },
                Err(e) => tracing::warn!(error = %e, "Appending an expired event failed; retrying."),
            }
        }
    }
}
