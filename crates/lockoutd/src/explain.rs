//! The `explain` op: the user's history read from `LOCKOUT_EVENTS` (their events and the
//! tenant's events: policies and IP blocks, up to the stream's last sequence when the request came) and
//! folded by `lockout_core::explain`, the same fold `lockoutctl explain` runs.

use std::time::Duration;

use async_nats::jetstream::consumer::{pull, DeliverPolicy};
use futures::StreamExt;
use lockout_core::explain::Explainer;
use lockout_nats::Delivered;
use lockout_proto::command::ExplainReply;
use lockout_proto::event::EventKind;
use lockout_proto::{Tenant, UserId};

use crate::service::Fail;
use crate::Shared;

/// How long the read may go without a message while more are expected.
const IDLE: Duration = Duration::from_secs(5);

fn unavailable(what: &str, e: impl std::fmt::Display) -> Fail {
    Fail { code: 503, message: format!("{what} failed ({e}); retry shortly") }
}

/// Folds the user's history into the `explain` reply.
pub async fn explain(shared: &Shared, tenant: &Tenant, user: &UserId) -> Result<ExplainReply, Fail> {
    let subjects = &shared.config.subjects;
    let name = subjects.events_stream();
    let mut stream = shared.js.get_stream(&name).await.map_err(|e| unavailable("looking up the events stream", e))?;
    let last = stream.info().await.map_err(|e| unavailable("reading the events stream's info", e))?.state.last_sequence;
    let mut explainer = Explainer::new(tenant.as_str(), user.as_str());
    if last > 0 {
        let consumer = stream
            .create_consumer(pull::OrderedConfig {
                description: Some("lockoutd explain".to_owned()),
                filter_subjects: std::iter::once(subjects.user_events_filter(tenant, user))
                    .chain(EventKind::all().filter(|k| k.is_tenant_event()).map(|k| subjects.tenant_event(tenant, k)))
                    .collect(),
                deliver_policy: DeliverPolicy::All,
                ..Default::default()
            })
            .await
            .map_err(|e| unavailable("creating a consumer to read the history", e))?;
        let mut pending = consumer.cached_info().num_pending;
        if pending > 0 {
            let mut messages = consumer.messages().await.map_err(|e| unavailable("reading the history", e))?;
            while pending > 0 {
                let msg = match tokio::time::timeout(IDLE, messages.next()).await {
                    Ok(Some(Ok(m))) => m,
                    Ok(Some(Err(e))) => return Err(unavailable("reading the history", e)),
                    Ok(None) | Err(_) => return Err(unavailable("reading the history", "no message for 5 s")),
                };
                pending = msg.info().map(|i| i.pending).unwrap_or(0);
                let Some(d) = Delivered::new(msg) else { continue };
                if d.seq > last {
                    break;
                }
                // Refused events are skipped, as the projector dead-letters them.
                if let Ok((_, event)) = lockout_engine::accept(subjects, &d) {
                    explainer.push(d.seq, d.time, &event);
                }
                if d.seq == last {
                    break;
                }
            }
        }
    }
    Ok(explainer.finish(shared.server_now_ms()))
}
