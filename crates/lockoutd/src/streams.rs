//! The three streams and the durable consumer, created or updated idempotently at start.

use std::time::Duration;

use anyhow::Context as _;
use async_nats::jetstream::{self, consumer, stream};

use crate::config::Config;

/// Name of the durable pull consumer on `LOCKOUT_EVENTS` (the contract's): the one of the
/// process that folds partition 0, so a process alone always uses it.
pub const CONSUMER: &str = "lockoutd";

/// How long the server keeps an unused consumer of a process without partition 0 (several
/// processes: each needs a consumer of its own; one that died leaves it behind).
pub const INSTANCE_CONSUMER_INACTIVE: Duration = Duration::from_secs(3_600);

/// The durable consumer of a run folding `set`: [`CONSUMER`] with partition 0, else
/// `lockoutd-<instance>`.
pub fn consumer_name(config: &Config, set: &lockout_proto::partition::Set) -> String {
    if set.contains(0) {
        CONSUMER.to_owned()
    } else {
        format!("{CONSUMER}-{}", config.instance)
    }
}
/// JetStream's duplicate window on every stream.
pub const DUPLICATE_WINDOW: Duration = Duration::from_secs(120);

fn stream_config(name: String, subjects: String, description: &str, replicas: usize) -> stream::Config {
    stream::Config {
        name,
        subjects: vec![subjects],
        description: Some(description.to_owned()),
        storage: stream::StorageType::File,
        retention: stream::RetentionPolicy::Limits,
        max_age: Duration::ZERO,
        duplicate_window: DUPLICATE_WINDOW,
        num_replicas: replicas,
        allow_direct: true,
        ..Default::default()
    }
}

/// A limit of the stream config: 0 is no bound (JetStream's -1).
fn limit(n: u64) -> i64 {
    if n == 0 {
        -1
    } else {
        i64::try_from(n).unwrap_or(i64::MAX)
    }
}

/// Creates or updates `<P>_EVENTS`, `<P>_NOTICES` and `<P>_DEAD` (with `config.limits`: the
/// events stream keeps its history forever unless told otherwise; the dead letters are bounded,
/// the oldest dropped).
pub async fn ensure_streams(js: &jetstream::Context, config: &Config) -> anyhow::Result<()> {
    let s = &config.subjects;
    let limits = config.limits;
    let events = stream::Config {
        max_age: limits.events_max_age,
        max_bytes: limit(limits.events_max_bytes),
        discard: stream::DiscardPolicy::Old,
        ..stream_config(
            s.events_stream(),
            s.events_all(),
            "Lockout event history: the source of truth.",
            config.replicas,
        )
    };
    let dead = stream::Config {
        max_messages: limit(limits.dead_max_messages),
        discard: stream::DiscardPolicy::Old,
        ..stream_config(
            s.dead_stream(),
            s.dead_all(),
            "Messages lockoutd could not accept, with the reason.",
            config.replicas,
        )
    };
    for cfg in [
        events,
        stream_config(s.notices_stream(), s.notices_all(), "Lockout notices for notifier services.", config.replicas),
        dead,
    ] {
        let name = cfg.name.clone();
        js.create_or_update_stream(cfg).await.with_context(|| format!("creating or updating stream {name}"))?;
    }
    Ok(())
}

/// The last sequence of the events stream now (0 when it is empty).
pub async fn last_event_seq(js: &jetstream::Context, config: &Config) -> anyhow::Result<u64> {
    let mut stream = js.get_stream(config.subjects.events_stream()).await.context("looking up the events stream")?;
    Ok(stream.info().await.context("reading the events stream's state")?.state.last_sequence)
}

/// (Re)creates the durable consumer to deliver from `checkpoint + 1`.
///
/// The store's checkpoint is the truth, not the consumer's ack floor: a commit that sled had
/// not yet flushed when the process died is lost together with its checkpoint, and its
/// events must be delivered again even if they were acknowledged.
pub async fn ensure_consumer(
    js: &jetstream::Context,
    config: &Config,
    name: &str,
    checkpoint: u64,
) -> anyhow::Result<consumer::PullConsumer> {
    let stream = js.get_stream(config.subjects.events_stream()).await.context("looking up the events stream")?;
    match stream.delete_consumer(name).await {
        Ok(_) => {}
        Err(e) if e.to_string().contains("not found") => {}
        Err(e) => return Err(anyhow::Error::new(e).context("replacing the durable consumer")),
    }
    let filter = config.subjects.events_all();
    let cfg = consumer::pull::Config {
        durable_name: Some(name.to_owned()),
        inactive_threshold: if name == CONSUMER { Duration::ZERO } else { INSTANCE_CONSUMER_INACTIVE },
        description: Some("lockoutd's projector; positioned from the store's checkpoint at each start".to_owned()),
        deliver_policy: consumer::DeliverPolicy::ByStartSequence { start_sequence: checkpoint + 1 },
        ack_policy: consumer::AckPolicy::All,
        ack_wait: Duration::from_secs(60),
        max_ack_pending: 100_000,
        filter_subject: filter.clone(),
        ..Default::default()
    };
    let created = stream.create_consumer(cfg).await.context("creating the durable consumer")?;
    if let Some(wrong) = foreign_change(&created.cached_info().config, name, &filter) {
        anyhow::bail!(
            "the durable consumer {name} is not as lockoutd created it ({wrong}): another client changed it; only lockoutd may create, change or delete it (deploy/nats/lockout.conf)"
        );
    }
    Ok(created)
}

/// How the consumer's configuration differs from lockoutd's, if it does. Someone else's change
/// (a narrower filter, another ack policy) would make the projector fold a part of the events
/// without noticing, so lockoutd checks at every (re)creation and while idle, and recreates it
/// at its checkpoint.
pub fn foreign_change(c: &consumer::Config, name: &str, filter: &str) -> Option<String> {
    let mut wrong = Vec::new();
    if c.filter_subject != filter || !c.filter_subjects.is_empty() {
        wrong.push(format!("filter {:?} {:?} instead of {filter:?}", c.filter_subject, c.filter_subjects));
    }
    if c.ack_policy != consumer::AckPolicy::All {
        wrong.push(format!("ack policy {:?} instead of all", c.ack_policy));
    }
    if c.durable_name.as_deref() != Some(name) {
        wrong.push(format!("durable name {:?}", c.durable_name));
    }
    (!wrong.is_empty()).then(|| wrong.join(", "))
}

/// Records the deployment's partition count and lease length in `<PREFIX>_CLUSTER` when it is
/// first set up, and refuses to start with other values (contract v2, "Several lockoutd
/// processes"). A KV error (a cluster electing a leader) is retried for a minute.
pub async fn ensure_cluster_config(
    js: &jetstream::Context,
    config: &Config,
) -> anyhow::Result<lockout_cluster::Buckets> {
    use lockout_cluster::{setup, ClusterConfig, SetupError};
    let wanted = ClusterConfig { partitions: config.partitions, lease_seconds: config.lease_seconds };
    let prefix = config.subjects.prefix().to_uppercase();
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(60);
    let mut delay = std::time::Duration::from_millis(200);
    loop {
        match setup::open(js, &prefix, wanted, config.replicas).await {
            Ok(b) => return Ok(b),
            Err(e @ SetupError::Mismatch { .. }) => return Err(anyhow::Error::new(e)),
            Err(e) if tokio::time::Instant::now() >= deadline => {
                return Err(anyhow::Error::new(e).context("setting up the cluster's KV buckets"))
            }
            Err(e) => tracing::warn!(error = %e, "Setting up the cluster's KV buckets failed; retrying."),
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(std::time::Duration::from_secs(5));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_consumer_changed_by_someone_else_is_told_apart() {
        let ours = consumer::Config {
            durable_name: Some(CONSUMER.into()),
            ack_policy: consumer::AckPolicy::All,
            filter_subject: "lockout.events.>".into(),
            ..Default::default()
        };
        assert_eq!(foreign_change(&ours, CONSUMER, "lockout.events.>"), None);
        let narrower = consumer::Config { filter_subject: "lockout.events.acme.>".into(), ..ours.clone() };
        assert!(foreign_change(&narrower, CONSUMER, "lockout.events.>")
            .is_some_and(|w| w.contains("lockout.events.acme.>")));
        let several = consumer::Config { filter_subjects: vec!["lockout.events.acme.>".into()], ..ours.clone() };
        assert!(foreign_change(&several, CONSUMER, "lockout.events.>").is_some());
        let explicit = consumer::Config { ack_policy: consumer::AckPolicy::Explicit, ..ours };
        assert!(foreign_change(&explicit, CONSUMER, "lockout.events.>").is_some_and(|w| w.contains("ack policy")));
    }
}
