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
//!
//! The same loop appends the tenant events of IP blocks (contract v2): an `ip_expired` event
//! for each timed block that ran out (id from the block's event), and each `ip_block` event
//! the projector decided and committed but has not folded yet (the IP's count holds it as
//! pending; id from the tripping failure). Both wait for the backlog for the same reason: a
//! rebuild decides again the blocks the history already holds, and folds them before the
//! backlog ends.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::HeaderMap;
use lockout_core::ids::{expired_event_id, ip_expired_event_id};
use lockout_proto::codec;
use lockout_proto::event::{Event, EventKind, Expired, IpExpired};
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
        let ip_due = match shared.store.due_ip_expiries(shared.server_now_ms(), 1000) {
            // Every process holds every block; the IP's owner appends its end.
            Ok(d) => d.into_iter().filter(|(t, ip, _, _)| shared.cluster.folds_ip(t, ip)).collect::<Vec<_>>(),
            Err(e) => {
                tracing::error!(error = %e, "Reading due IP block expiries failed.");
                continue;
            }
        };
        let ip_blocks = match shared.store.pending_ip_blocks(1000) {
            Ok(d) => d,
            Err(e) => {
                tracing::error!(error = %e, "Reading decided IP blocks failed.");
                continue;
            }
        };
        // What is still due: a user lock by its event, an IP expiry by its block's, a block by
        // its own id.
        let wanted: std::collections::HashSet<Uuid> = due
            .iter()
            .map(|d| d.lock_event)
            .chain(ip_due.iter().map(|(t, ip, _, block)| ip_expired_event_id(t, ip, *block)))
            .chain(ip_blocks.iter().map(|b| b.id))
            .collect();
        sent.retain(|id, at| at.elapsed() < RETRY_AFTER && wanted.contains(id));
        let enc = shared.config.notice_encoding;
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
            let subject = shared.config.subjects.user_event(&tenant, &user, EventKind::Expired);
            if append(&shared, subject, id, codec::encode(enc, &body)).await {
                sent.insert(d.lock_event, Instant::now());
            }
        }
        for (tenant, ip, _, block_event) in ip_due {
            // Keyed by its own id: the block's event id is also the `ip_block` append's key.
            let id = ip_expired_event_id(&tenant, &ip, block_event);
            if sent.contains_key(&id) {
                continue;
            }
            let Ok(t) = Tenant::parse(&tenant) else { continue };
            let body = IpExpired { id, at: shared.clock.now_ms(), tenant: tenant.into(), ip: ip.into(), block_event };
            let subject = shared.config.subjects.tenant_event(&t, EventKind::IpExpired);
            if append(&shared, subject, id, codec::encode(enc, &body)).await {
                sent.insert(id, Instant::now());
            }
        }
        for block in ip_blocks {
            if sent.contains_key(&block.id) {
                continue;
            }
            let Ok(t) = Tenant::parse(&block.tenant) else { continue };
            let id = block.id;
            let subject = shared.config.subjects.tenant_event(&t, EventKind::IpBlock);
            if append(&shared, subject, id, Event::IpBlock(block).encode(enc)).await {
                sent.insert(id, Instant::now());
            }
        }
    }
}

/// Appends an event the service writes, with `Nats-Msg-Id` = its id; true once stored.
async fn append(shared: &Shared, subject: String, id: Uuid, payload: Vec<u8>) -> bool {
    let mut headers = HeaderMap::new();
    headers.insert(codec::CONTENT_TYPE, shared.config.notice_encoding.content_type());
    headers.insert(codec::NATS_MSG_ID, id.to_string().as_str());
    match shared.js.publish_with_headers(subject, headers, payload.into()).await {
        Ok(ack) => match ack.await {
            Ok(_) => true,
            Err(e) => {
                tracing::warn!(error = %e, "Appending an event the service writes failed; retrying.");
                false
            }
        },
        Err(e) => {
            tracing::warn!(error = %e, "Appending an event the service writes failed; retrying.");
            false
        }
    }
}
