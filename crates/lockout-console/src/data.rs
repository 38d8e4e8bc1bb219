//! What the pages read from JetStream beside the service's ops: a user's recent events, the
//! event that started a lock, and the live notices of a tenant.

use std::time::Duration;

use async_nats::jetstream::consumer::{pull, Consumer, DeliverPolicy};
use futures::{Stream, StreamExt};
use lockout_client::Client;
use lockout_proto::codec::{self, Encoding};
use lockout_proto::{Event, Notice, Tenant, UserId};
use uuid::Uuid;

/// One event of a user's history as a page shows it.
#[derive(Debug, Clone)]
pub struct Row {
    /// When the stream stored it, ms.
    pub at: u64,
    pub kind: String,
    /// The body's fields a person reads: outcome, source, client, actor, reason …
    pub body: serde_json::Value,
}

/// A name for an ordered consumer: with a name and one filter subject, a client puts the
/// filter into the API subject, where the deployment's permissions pin it to the tenant.
fn consumer_name() -> String {
    format!("console_{}", uuid::Uuid::now_v7().simple())
}

/// How far back a user page's history goes, and how many events it shows at most.
const HISTORY_DAYS: i64 = 30;
const HISTORY_ROWS: usize = 20;
const READ_MAX: usize = 5_000;
const IDLE: Duration = Duration::from_millis(500);

fn decode(m: &async_nats::jetstream::Message) -> Option<Event> {
    let kind = m.subject.as_str().rsplit('.').next()?;
    let kind = lockout_proto::EventKind::parse(kind)?;
    let enc =
        Encoding::from_content_type(m.headers.as_ref().and_then(|h| h.get(codec::CONTENT_TYPE)).map(|v| v.as_str()))
            .ok()?;
    Event::decode(kind, enc, &m.payload).ok()
}

fn stored_ms(m: &async_nats::jetstream::Message) -> u64 {
    m.info().map_or(0, |i| (i.published.unix_timestamp_nanos() / 1_000_000) as u64)
}

/// An ordered consumer of the user's events from `start` on, and how many it will deliver.
async fn consumer(
    client: &Client,
    tenant: &Tenant,
    user: &UserId,
    start: time::OffsetDateTime,
) -> anyhow::Result<(Consumer<pull::OrderedConfig>, u64)> {
    let subjects = client.subjects();
    let stream = client.jetstream().get_stream(subjects.events_stream()).await?;
    let consumer = stream
        .create_consumer(pull::OrderedConfig {
            name: Some(consumer_name()),
            filter_subject: subjects.user_events_filter(tenant, user),
            deliver_policy: DeliverPolicy::ByStartTime { start_time: start },
            ..Default::default()
        })
        .await?;
    let pending = consumer.cached_info().num_pending;
    Ok((consumer, pending))
}

/// Reads the user's events from `start` on, at most `READ_MAX`, until the stream has no more.
async fn read(
    client: &Client,
    tenant: &Tenant,
    user: &UserId,
    start: time::OffsetDateTime,
    keep_going: impl FnMut(u64, Event) -> bool,
) -> anyhow::Result<()> {
    let (consumer, pending) = consumer(client, tenant, user, start).await?;
    read_from(consumer, pending, keep_going).await
}

async fn read_from(
    consumer: Consumer<pull::OrderedConfig>,
    pending: u64,
    mut keep_going: impl FnMut(u64, Event) -> bool,
) -> anyhow::Result<()> {
    if pending == 0 {
        return Ok(());
    }
    let mut messages = consumer.messages().await?;
    for _ in 0..READ_MAX {
        let Ok(Some(Ok(m))) = tokio::time::timeout(IDLE, messages.next()).await else { break };
        let pending = m.info().map_or(0, |i| i.pending);
        if let Some(e) = decode(&m) {
            if !keep_going(stored_ms(&m), e) {
                break;
            }
        }
        if pending == 0 {
            break;
        }
    }
    Ok(())
}

/// The user's last events of the past 30 days, newest first. A user with more than
/// `READ_MAX` events in that time (an attack) gets a shorter window, halved until it holds at
/// most that many, so the rows are the latest.
pub async fn history(client: &Client, tenant: &Tenant, user: &UserId) -> anyhow::Result<Vec<Row>> {
    let now = time::OffsetDateTime::now_utc();
    let mut window = time::Duration::days(HISTORY_DAYS);
    let (consumer, pending) = loop {
        let (c, pending) = consumer(client, tenant, user, now - window).await?;
        if pending as usize <= READ_MAX || window < time::Duration::minutes(1) {
            break (c, pending);
        }
        window /= 2;
    };
    let mut rows = std::collections::VecDeque::with_capacity(HISTORY_ROWS + 1);
    read_from(consumer, pending, |at, e| {
        rows.push_back(Row { at, kind: e.kind().as_str().to_owned(), body: e.body_json() });
        if rows.len() > HISTORY_ROWS {
            rows.pop_front();
        }
        true
    })
    .await?;
    Ok(rows.into_iter().rev().collect())
}

/// The id of the event that started the lock in force since `locked_at` (ms): the first
/// failed attempt or `lock` the stream stored at that millisecond. What an unlock names
/// (`lock_event`) so a page seen before a newer lock cannot end that one.
pub async fn lock_event(
    client: &Client,
    tenant: &Tenant,
    user: &UserId,
    locked_at: u64,
) -> anyhow::Result<Option<Uuid>> {
    let start = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(locked_at) * 1_000_000)?;
    let mut found = None;
    read(client, tenant, user, start, |at, e| {
        if at > locked_at {
            return false;
        }
        let starts = match &e {
            Event::Attempt(a) => a.outcome == lockout_proto::event::Outcome::Failure,
            Event::Lock(_) => true,
            _ => false,
        };
        if starts {
            found = Some(e.id());
        }
        true
    })
    .await?;
    Ok(found)
}

/// The tenant's `locked` and `unlocked` notices from now on, as they are published. One
/// filter subject (the tenant's notices), so a client puts it in the consumer-create API
/// subject, where a deployment's permissions can pin it to the tenant.
pub async fn live(client: &Client, tenant: &Tenant) -> anyhow::Result<impl Stream<Item = Notice> + use<>> {
    let subjects = client.subjects();
    let stream = client.jetstream().get_stream(subjects.notices_stream()).await?;
    let consumer = stream
        .create_consumer(pull::OrderedConfig {
            name: Some(consumer_name()),
            filter_subject: subjects.notice(tenant.as_str(), "*"),
            deliver_policy: DeliverPolicy::New,
            ..Default::default()
        })
        .await?;
    let messages = consumer.messages().await?;
    Ok(messages.filter_map(|m| async move {
        let m = m.ok()?;
        let kind = m.subject.as_str().rsplit('.').next().filter(|k| ["locked", "unlocked"].contains(k))?;
        let enc = Encoding::from_content_type(
            m.headers.as_ref().and_then(|h| h.get(codec::CONTENT_TYPE)).map(|v| v.as_str()),
        )
        .ok()?;
        Notice::decode(kind, enc, &m.payload).ok()
    }))
}
