//! The cluster's KV buckets, created by the first process and checked by every later one.

use std::time::Duration;

use async_nats::jetstream::{self, kv};
use serde::{Deserialize, Serialize};

/// What every process of a deployment must agree on; fixed by the first one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterConfig {
    /// User partitions (`--partitions`).
    pub partitions: u32,
    /// Lease length in seconds (`--lease-seconds`): the leases bucket's `max_age`.
    pub lease_seconds: u64,
}

/// The two buckets, opened.
#[derive(Clone)]
pub struct Buckets {
    /// `<PREFIX>_CLUSTER`: `config`, `floor.<p>`.
    pub cluster: kv::Store,
    /// `<PREFIX>_LEASES`: `member.<instance>`, `part.<p>`; entries live `lease_seconds`.
    pub leases: kv::Store,
    pub config: ClusterConfig,
}

#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error(
        "this deployment was set up with {stored} (in KV bucket {bucket}, key `config`) and this process was started with {given}: start it with the deployment's values (changing the partition count means setting up a new deployment and replaying the history into it)"
    )]
    Mismatch { bucket: String, stored: String, given: String },
    #[error("KV bucket {bucket}: {message}")]
    Nats { bucket: String, message: String },
}

fn nats_err(bucket: &str, e: impl std::fmt::Display) -> SetupError {
    SetupError::Nats { bucket: bucket.to_owned(), message: e.to_string() }
}

fn describe(c: &ClusterConfig) -> String {
    format!("--partitions {} --lease-seconds {}", c.partitions, c.lease_seconds)
}

/// Opens (creating when absent) `<PREFIX>_CLUSTER` and `<PREFIX>_LEASES` with `replicas`
/// copies each, records `wanted` as the deployment's configuration if none is recorded, and
/// refuses a process whose configuration differs from the recorded one.
pub async fn open(
    js: &jetstream::Context,
    prefix_upper: &str,
    wanted: ClusterConfig,
    replicas: usize,
) -> Result<Buckets, SetupError> {
    let cluster_name = format!("{prefix_upper}_CLUSTER");
    let cluster = get_or_create(
        js,
        kv::Config {
            bucket: cluster_name.clone(),
            description: "lockoutd: partition count, lease length, publish floors per partition".into(),
            history: 1,
            num_replicas: replicas,
            ..Default::default()
        },
    )
    .await?;
    let body = serde_json::to_vec(&wanted).expect("a config serializes");
    let config = match cluster.create("config", body.into()).await {
        Ok(_) => wanted,
        Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => {
            let stored = cluster.get("config").await.map_err(|e| nats_err(&cluster_name, e))?;
            let stored = stored.ok_or_else(|| nats_err(&cluster_name, "the key `config` vanished"))?;
            let stored: ClusterConfig = serde_json::from_slice(&stored)
                .map_err(|e| nats_err(&cluster_name, format!("the key `config` is not a configuration: {e}")))?;
            if stored != wanted {
                return Err(SetupError::Mismatch {
                    bucket: cluster_name,
                    stored: describe(&stored),
                    given: describe(&wanted),
                });
            }
            stored
        }
        Err(e) => return Err(nats_err(&cluster_name, e)),
    };
    let lease = Duration::from_secs(config.lease_seconds);
    let leases_config = kv::Config {
        bucket: format!("{prefix_upper}_LEASES"),
        description: "lockoutd: live members and partition leases; an entry lives one lease".into(),
        history: 1,
        max_age: lease,
        num_replicas: replicas,
        limit_markers: Some(lease),
        ..Default::default()
    };
    let leases = match get_or_create(js, leases_config.clone()).await {
        Ok(leases) => leases,
        // A server older than 2.11 has no delete markers: expiries are then seen on the
        // next renewal tick.
        Err(_) => get_or_create(js, kv::Config { limit_markers: None, ..leases_config }).await?,
    };
    mark_expiries(js, &format!("{prefix_upper}_LEASES"), lease).await;
    Ok(Buckets { cluster, leases, config })
}

/// Has the server write a delete marker when a lease runs out (nats-server ≥ 2.11), so every
/// process's watch sees a dead process's leases end the moment they do, instead of on its
/// next renewal tick. A bucket created before this version is updated in place; a server that
/// refuses leaves it as it was.
async fn mark_expiries(js: &jetstream::Context, bucket: &str, lease: Duration) {
    let Ok(mut stream) = js.get_stream(format!("KV_{bucket}")).await else { return };
    let Ok(info) = stream.info().await else { return };
    if info.config.subject_delete_marker_ttl.is_some() {
        return;
    }
    let mut config = info.config.clone();
    config.allow_message_ttl = true;
    config.subject_delete_marker_ttl = Some(lease);
    if let Err(e) = js.update_stream(config).await {
        tracing::debug!(bucket, error = %e, "The server keeps no delete markers; lease expiries are seen on renewal ticks.");
    }
}

async fn get_or_create(js: &jetstream::Context, config: kv::Config) -> Result<kv::Store, SetupError> {
    let bucket = config.bucket.clone();
    if let Ok(store) = js.get_key_value(&bucket).await {
        return Ok(store);
    }
    match js.create_key_value(config).await {
        Ok(store) => Ok(store),
        // Another process created it meanwhile.
        Err(create) => js.get_key_value(&bucket).await.map_err(|_| nats_err(&bucket, create)),
    }
}
