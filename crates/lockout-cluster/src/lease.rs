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
    /// The partition's claim (see [`Leases::with_claims`]) this lease was taken under, kept
    /// through renewals and through a lease lost and won back while nobody else claimed the
    /// partition: work folded under one tenure is never committed under another (someone
    /// else may have folded the partition in between). Without claims, the lease's first
    /// revision.
    pub tenure: u64,
    /// Who had claimed the partition before this lease was won.
    pub prior: Prior,
    deadline: Instant,
}

/// Who had claimed a partition when a lease on it was won.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Prior {
    /// Nobody (or claims are not kept).
    Nobody,
    /// This process's store: nobody else folded the partition since it last did.
    Ours,
    /// Another store: what this one holds of the partition is stale.
    Foreign,
}

/// What a claim key holds: the store that folds the partition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claim {
    /// The store's own id (kept in the store, so it survives restarts).
    pub store: String,
    /// The instance that claimed it (for operators).
    pub instance: String,
}

/// Key of partition `p`'s claim.
pub fn claim_key(p: u32) -> String {
    format!("claim.{p}")
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
    /// The bucket of the claims and this store's claim.
    claims: Option<(kv::Store, Claim)>,
}

impl Leases {
    pub fn new(kv: kv::Store, lease: Duration, instance: &str) -> Leases {
        let me = Holder { instance: instance.to_owned(), run: uuid::Uuid::now_v7().to_string() };
        let body = serde_json::to_vec(&me).expect("a holder serializes").into();
        // The fence closes a margin before the server may drop the key: a second, or a third
        // of very short (test) leases.
        let margin = Duration::from_secs(1).min(lease / 3);
        Leases { kv, lease, margin, me, body, claims: None }
    }

    /// Keeps claims in `bucket` (one that outlives leases: `<PREFIX>_CLUSTER`): a process that
    /// wins a lease then claims the partition for `store`, unless the claim names it already.
    /// The claim's revision is the lease's [`Fence::tenure`], and [`Fence::prior`] says whether
    /// another store folded the partition since this one did.
    pub fn with_claims(mut self, bucket: kv::Store, store: &str) -> Leases {
        self.claims = Some((bucket, Claim { store: store.to_owned(), instance: self.me.instance.clone() }));
        self
    }

    pub fn me(&self) -> &Holder {
        &self.me
    }

    pub fn lease(&self) -> Duration {
        self.lease
    }

    fn fence(&self, partition: u32, revision: u64, (tenure, prior): (u64, Prior), sent: Instant) -> Fence {
        Fence { partition, revision, tenure, prior, deadline: sent + self.lease - self.margin }
    }

    /// Claims partition `p` (after winning its lease at `revision`): (tenure, prior).
    async fn claim(&self, p: u32, revision: u64) -> Result<(u64, Prior), LeaseError> {
        let Some((bucket, mine)) = &self.claims else { return Ok((revision, Prior::Nobody)) };
        let key = claim_key(p);
        let body: bytes::Bytes = serde_json::to_vec(mine).expect("a claim serializes").into();
        for _ in 0..3 {
            let entry = bucket.entry(&key).await.map_err(|e| nats("get", &key, e))?;
            match entry.filter(|e| e.operation == kv::Operation::Put) {
                None => match bucket.create(&key, body.clone()).await {
                    Ok(r) => return Ok((r, Prior::Nobody)),
                    Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => continue,
                    Err(e) => return Err(nats("create", &key, e)),
                },
                Some(e) if serde_json::from_slice::<Claim>(&e.value).is_ok_and(|c| c.store == mine.store) => {
                    return Ok((e.revision, Prior::Ours))
                }
                Some(e) => match bucket.update(&key, body.clone(), e.revision).await {
                    Ok(r) => return Ok((r, Prior::Foreign)),
                    Err(e) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => continue,
                    Err(e) => return Err(nats("update", &key, e)),
                },
            }
        }
        Err(nats("claim", &key, "the claim kept changing"))
    }

    /// [`Leases::claim`] for a lease just won; gives the lease up again when that fails.
    async fn claimed(&self, p: u32, revision: u64, sent: Instant) -> Result<Option<Fence>, LeaseError> {
        match self.claim(p, revision).await {
            Ok(t) => Ok(Some(self.fence(p, revision, t, sent))),
            Err(e) => {
                let _ = self.kv.delete_expect_revision(part_key(p), Some(revision)).await;
                Err(e)
            }
        }
    }

    /// Takes partition `p` if nobody holds it; `None` when somebody does.
    pub async fn acquire(&self, p: u32) -> Result<Option<Fence>, LeaseError> {
        self.acquire_or_adopt(p, None).await
    }

    /// [`Leases::acquire`], also taking the lease over (compare-and-set on its revision) when
    /// it is this run's own (a write whose acknowledgement was lost) or `predecessor`'s: the
    /// earlier run of this process on the same store, known dead because this one opened the
    /// store (sled locks it), so its partitions need not wait for their leases to expire after
    /// a restart.
    pub async fn acquire_or_adopt(&self, p: u32, predecessor: Option<&Holder>) -> Result<Option<Fence>, LeaseError> {
        let key = part_key(p);
        let sent = Instant::now();
        match self.kv.create(&key, self.body.clone()).await {
            Ok(revision) => return self.claimed(p, revision, sent).await,
            Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => {}
            Err(e) => return Err(nats("create", &key, e)),
        }
        match self.holder(p).await? {
            Some((h, revision)) if h == self.me || Some(&h) == predecessor => {
                let sent = Instant::now();
                match self.kv.update(&key, self.body.clone(), revision).await {
                    Ok(r) => self.claimed(p, r, sent).await,
                    Err(e) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => Ok(None),
                    Err(e) => Err(nats("update", &key, e)),
                }
            }
            _ => Ok(None),
        }
    }

    /// Removes the member key of `predecessor` (the earlier run on this store, dead) unless
    /// another run wrote it since, so the others stop counting it as live at once.
    pub async fn evict(&self, predecessor: &Holder) -> Result<(), LeaseError> {
        if predecessor.instance == self.me.instance {
            return Ok(()); // `join` overwrites it.
        }
        let key = member_key(&predecessor.instance);
        let entry = self.kv.entry(&key).await.map_err(|e| nats("get", &key, e))?;
        let Some(entry) = entry.filter(|e| e.operation == kv::Operation::Put) else { return Ok(()) };
        if serde_json::from_slice::<Holder>(&entry.value).ok().as_ref() != Some(predecessor) {
            return Ok(());
        }
        match self.kv.delete_expect_revision(&key, Some(entry.revision)).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == kv::DeleteErrorKind::WrongLastRevision => Ok(()),
            Err(e) => Err(nats("delete", &key, e)),
        }
    }

    /// Renews a held lease; `None` when it was lost (expired and taken, or deleted).
    pub async fn renew(&self, f: &Fence) -> Result<Option<Fence>, LeaseError> {
        let key = part_key(f.partition);
        let sent = Instant::now();
        let tenure = (f.tenure, f.prior);
        match self.kv.update(&key, self.body.clone(), f.revision).await {
            Ok(revision) => Ok(Some(self.fence(f.partition, revision, tenure, sent))),
            Err(e) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => {
                // Our own renewal whose acknowledgement was lost (a reconnect) moved the
                // revision on: carry on from it. Anyone else's: lost.
                match self.holder(f.partition).await? {
                    Some((h, revision)) if h == self.me => {
                        match self.kv.update(&key, self.body.clone(), revision).await {
                            Ok(r) => Ok(Some(self.fence(f.partition, r, tenure, sent))),
                            Err(e) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => Ok(None),
                            Err(e) => Err(nats("update", &key, e)),
                        }
                    }
                    _ => Ok(None),
                }
            }
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
                if other.as_ref().is_none_or(|e| e.operation != kv::Operation::Put) {
                    // Expired while the server was out of reach (or after a pause): join again.
                    return self.join().await;
                }
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
