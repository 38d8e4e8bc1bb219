//! Members and partition leases in `<PREFIX>_LEASES`, and the fences they give.
//!
//! A key lives as long as the bucket's `max_age` (the lease) after its last write. A process
//! acquires `part.<p>` with a KV *create* (only one can), renews it with a compare-and-set
//! on the revision it holds, and releases it by deleting that revision. Its [`Fence`] is the
//! revision plus a deadline counted from when the last renewal was *sent*, shortened by a
//! margin, so the fence closes before the server can drop the key: a process paused past its
//! lease wakes with closed fences, and its next renewal fails because another process holds
//! the key under a new revision.

use std::time::{Duration, Instant};

use async_nats::jetstream::kv;
use futures::TryStreamExt;
use serde::{Deserialize, Serialize};

/// Permission to commit and publish for one partition, while [`Fence::is_open`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fence {
    pub partition: u32,
    /// The KV revision of the lease: a later holder always has a higher one.
    pub revision: u64,
    deadline: Instant,
}

impl Fence {
    /// Whether the lease is still surely held: the deadline has not passed.
    pub fn is_open(&self) -> bool {
        Instant::now() < self.deadline
    }

    pub fn deadline(&self) -> Instant {
        self.deadline
    }
}

/// What a member or lease key holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Holder {
    /// `--instance`: stable across restarts of the same process (same data dir).
    pub instance: String,
    /// This run of it: a random id per start.
    pub run: String,
}

#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    #[error("another process runs as instance {instance:?} (run {other_run}): give each lockoutd its own --instance")]
    DuplicateInstance { instance: String, other_run: String },
    #[error("KV {op} {key}: {message}")]
    Nats { op: &'static str, key: String, message: String },
}

fn nats(op: &'static str, key: &str, e: impl std::fmt::Display) -> LeaseError {
    LeaseError::Nats { op, key: key.to_owned(), message: e.to_string() }
}

/// Key of partition `p`'s lease.
pub fn part_key(p: u32) -> String {
    format!("part.{p}")
}

/// Key of a member.
pub fn member_key(instance: &str) -> String {
    format!("member.{instance}")
}

/// This process's view of the leases bucket.
#[derive(Clone)]
pub struct Leases {
    kv: kv::Store,
    lease: Duration,
    margin: Duration,
    me: Holder,
    body: bytes::Bytes,
}

impl Leases {
    pub fn new(kv: kv::Store, lease: Duration, instance: &str) -> Leases {
        let me = Holder { instance: instance.to_owned(), run: uuid::Uuid::now_v7().to_string() };
        let body = serde_json::to_vec(&me).expect("a holder serializes").into();
        // The fence closes a margin before the server may drop the key: a second, or a third
        // of very short (test) leases.
        let margin = Duration::from_secs(1).min(lease / 3);
        Leases { kv, lease, margin, me, body }
    }

    pub fn me(&self) -> &Holder {
        &self.me
    }

    pub fn lease(&self) -> Duration {
        self.lease
    }

    fn fence(&self, partition: u32, revision: u64, sent: Instant) -> Fence {
        Fence { partition, revision, deadline: sent + self.lease - self.margin }
    }

    /// Takes partition `p` if nobody holds it; `None` when somebody does.
    pub async fn acquire(&self, p: u32) -> Result<Option<Fence>, LeaseError> {
        let key = part_key(p);
        let sent = Instant::now();
        match self.kv.create(&key, self.body.clone()).await {
            Ok(revision) => Ok(Some(self.fence(p, revision, sent))),
            Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => Ok(None),
            Err(e) => Err(nats("create", &key, e)),
        }
    }

    /// Renews a held lease; `None` when it was lost (expired and taken, or deleted).
    pub async fn renew(&self, f: &Fence) -> Result<Option<Fence>, LeaseError> {
        let key = part_key(f.partition);
        let sent = Instant::now();
        match self.kv.update(&key, self.body.clone(), f.revision).await {
            Ok(revision) => Ok(Some(self.fence(f.partition, revision, sent))),
            Err(e) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => Ok(None),
            Err(e) => Err(nats("update", &key, e)),
        }
    }

    /// Gives a held lease up at once, so the next owner need not wait for it to expire.
    /// A lease lost meanwhile is left alone.
    pub async fn release(&self, f: Fence) -> Result<(), LeaseError> {
        let key = part_key(f.partition);
        match self.kv.delete_expect_revision(&key, Some(f.revision)).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == kv::DeleteErrorKind::WrongLastRevision => Ok(()),
            Err(e) => Err(nats("delete", &key, e)),
        }
    }

    /// Who holds partition `p`'s lease, with its revision.
    pub async fn holder(&self, p: u32) -> Result<Option<(Holder, u64)>, LeaseError> {
        let key = part_key(p);
        let entry = self.kv.entry(&key).await.map_err(|e| nats("get", &key, e))?;
        Ok(entry.filter(|e| e.operation == kv::Operation::Put).and_then(|e| {
            let h: Holder = serde_json::from_slice(&e.value).ok()?;
            Some((h, e.revision))
        }))
    }

    /// Writes this process's member key (joining, or coming back after a restart of the
    /// same instance); returns its revision for [`Leases::heartbeat`].
    pub async fn join(&self) -> Result<u64, LeaseError> {
        let key = member_key(&self.me.instance);
        self.kv.put(&key, self.body.clone()).await.map_err(|e| nats("put", &key, e))
    }

    /// Renews the member key written at `revision`. Fails when another process wrote it
    /// since: two processes with the same `--instance`.
    pub async fn heartbeat(&self, revision: u64) -> Result<u64, LeaseError> {
        let key = member_key(&self.me.instance);
        match self.kv.update(&key, self.body.clone(), revision).await {
            Ok(r) => Ok(r),
            Err(e) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => {
                let other = self.kv.entry(&key).await.ok().flatten();
                let other_run = other
                    .and_then(|e| serde_json::from_slice::<Holder>(&e.value).ok())
                    .map_or_else(|| "unknown".to_owned(), |h| h.run);
                if other_run == self.me.run {
                    // Our own write whose acknowledgement was lost: carry on from it.
                    return self.join().await;
                }
                Err(LeaseError::DuplicateInstance { instance: self.me.instance.clone(), other_run })
            }
            Err(e) => Err(nats("update", &key, e)),
        }
    }

    /// Removes this process's member key (a graceful stop).
    pub async fn leave(&self) -> Result<(), LeaseError> {
        let key = member_key(&self.me.instance);
        self.kv.delete(&key).await.map_err(|e| nats("delete", &key, e))
    }

    /// Every change to the bucket from now on (not its current keys).
    pub async fn watch(&self) -> Result<kv::Watch, LeaseError> {
        self.kv.watch_all().await.map_err(|e| nats("watch", ">", e))
    }

    /// The instances with a live member key, sorted.
    pub async fn members(&self) -> Result<Vec<String>, LeaseError> {
        let keys = self.kv.keys().await.map_err(|e| nats("keys", "member.*", e))?;
        let mut members: Vec<String> = keys
            .try_filter_map(|k| async move { Ok(k.strip_prefix("member.").map(str::to_owned)) })
            .try_collect()
            .await
            .map_err(|e| nats("keys", "member.*", e))?;
        members.sort();
        Ok(members)
    }
}
