//! Sharing the partitions with the other lockoutd processes of the deployment (contract v2,
//! "Several lockoutd processes"; ARCHITECTURE.md, "Several processes").
//!
//! Every lockoutd is a member: [`Cluster::start`] joins through `lockout-cluster`'s
//! coordinator, which holds the partitions' leases; a process alone holds them all and folds
//! exactly as v1 did. Each projector run folds the partitions held when it started
//! ([`RunSet`]); it commits and publishes only while every one of their leases is still held
//! under the same tenure ([`Cluster::holds`]), and ends when what this process holds changes,
//! so the next run releases and catches up partitions between runs.
//!
//! Each partition's publish floor (what its notices and dead letters already published
//! reach) is kept in `<PREFIX>_CLUSTER` as `floor.<p>`: written by the owner after its
//! publishes are acknowledged (at most once a second, and at the end of each run), read by the
//! next owner's catch-up so it re-sends nothing its predecessor published. The first process
//! of a deployment writes v1's floors (the streams' last messages: valid while there was one
//! publisher) into every partition's before anything is published.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use async_nats::jetstream::kv;
use lockout_cluster::{Coordinator, Handle, Holder, Leases, Owned, Prior};
use lockout_engine::Floors;
use lockout_proto::partition::Set;
use lockout_store::Store;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::Config;

/// The partitions of one projector run, with the tenure of each lease and who had claimed the
/// partition before.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunSet {
    pub set: Set,
    tenures: BTreeMap<u32, (u64, Prior)>,
}

impl RunSet {
    /// Whether what the store holds of `p` (folded under the claim `stored_tenure`, if
    /// recorded) is still complete: nobody else claimed it since.
    pub fn store_is_current(&self, p: u32, stored_tenure: Option<u64>) -> bool {
        match (self.tenures.get(&p), stored_tenure) {
            (Some((t, _)), Some(s)) => *t == s,
            (Some((_, prior)), None) => *prior != Prior::Foreign,
            (None, _) => false,
        }
    }

    /// The claims to record with the store once every partition of the run is current.
    pub fn claims(&self) -> BTreeMap<u32, u64> {
        self.tenures.iter().map(|(p, (t, _))| (*p, *t)).collect()
    }
}

/// This process's membership: what it holds, and the floors.
pub struct Cluster {
    /// The deployment's partition count.
    pub n: u32,
    /// The deployment's lease length.
    pub lease: Duration,
    owned: watch::Receiver<Owned>,
    drainer: tokio::sync::mpsc::UnboundedSender<u32>,
    handle: tokio::sync::Mutex<Option<Handle>>,
    kv: kv::Store,
    /// The partitions the projector folds now (what the expiry timer, the sweep and `health`
    /// go by).
    run: std::sync::RwLock<Set>,
}

/// A partition's floor as stored in `floor.<p>`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
struct StoredFloor {
    notices: Option<(u64, u32)>,
    dead: Option<u64>,
}

impl From<Floors> for StoredFloor {
    fn from(f: Floors) -> Self {
        StoredFloor { notices: f.notices, dead: f.dead }
    }
}

impl From<StoredFloor> for Floors {
    fn from(f: StoredFloor) -> Self {
        Floors { notices: f.notices, dead: f.dead }
    }
}

fn floor_key(p: u32) -> String {
    format!("floor.{p}")
}

/// How long a start waits for the first assignment (a KV that answers nothing yet: a cluster
/// electing its leaders).
const FIRST_ASSIGNMENT: Duration = Duration::from_secs(60);

impl Cluster {
    /// Joins the deployment: takes over the leases of the earlier run on this store (it is
    /// dead: this process opened the store), writes the first floors if nobody has, and waits
    /// for the first assignment.
    pub async fn start(
        js: &async_nats::jetstream::Context,
        config: &Config,
        buckets: lockout_cluster::Buckets,
        store: &Store,
    ) -> anyhow::Result<Arc<Cluster>> {
        let n = buckets.config.partitions;
        let store_id = match store.meta("id")? {
            Some(id) => String::from_utf8_lossy(&id).into_owned(),
            None => {
                let id = uuid::Uuid::now_v7().to_string();
                store.set_meta("id", id.as_bytes())?;
                id
            }
        };
        let lease = Duration::from_secs(buckets.config.lease_seconds);
        let leases =
            Leases::new(buckets.leases, lease, &config.instance).with_claims(buckets.cluster.clone(), &store_id);
        let predecessor = store.meta("holder")?.and_then(|b| serde_json::from_slice::<Holder>(&b).ok());
        store.set_meta("holder", &serde_json::to_vec(leases.me()).expect("a holder serializes"))?;
        ensure_floors(js, config, &buckets.cluster, n).await?;
        let handle = Coordinator::new(leases, n).adopting(predecessor).spawn().await?;
        let mut owned = handle.owned();
        tokio::time::timeout(FIRST_ASSIGNMENT, owned.wait_for(|o| !o.members.is_empty()))
            .await
            .context("no partition assignment within 60 s: the leases bucket does not answer")?
            .context("the partition coordinator stopped")?;
        let drainer = handle.drainer();
        Ok(Arc::new(Cluster {
            n,
            lease,
            owned,
            drainer,
            handle: tokio::sync::Mutex::new(Some(handle)),
            kv: buckets.cluster,
            run: std::sync::RwLock::new(Set::none(n)),
        }))
    }

    /// What a run started now would fold: the leases held with an open fence and not being
    /// handed over.
    pub fn active(&self) -> RunSet {
        let owned = self.owned.borrow();
        let tenures: BTreeMap<u32, (u64, Prior)> =
            owned.active().map(|p| (p, (owned.fences[&p].tenure, owned.fences[&p].prior))).collect();
        RunSet { set: Set::of(self.n, tenures.keys().copied()), tenures }
    }

    /// [`Cluster::active`] once every partition assigned to this process is held (a lease
    /// lost in an outage won back, a partition being handed over by its last owner), or after
    /// `wait` with what is held then; `None` on `stop`. A run never starts without a partition
    /// it could have, so the store keeps it current instead of dropping it.
    pub async fn settled(&self, wait: Duration, stop: &mut watch::Receiver<bool>) -> Option<RunSet> {
        let mut changes = self.owned.clone();
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            {
                let o = changes.borrow_and_update();
                let held: std::collections::BTreeSet<u32> = o.active().collect();
                if o.desired.is_subset(&held) {
                    break;
                }
            }
            tokio::select! {
                _ = stop.changed() => return None,
                r = changes.changed() => if r.is_err() { break },
                () = tokio::time::sleep_until(deadline) => break,
            }
        }
        Some(self.active())
    }

    /// Whether `run`'s partitions are all still held, under the same tenure, with an open
    /// fence: what every commit and publish of the run checks first.
    pub fn holds(&self, run: &RunSet) -> bool {
        let owned = self.owned.borrow();
        run.tenures.iter().all(|(p, (t, _))| owned.fences.get(p).is_some_and(|f| f.tenure == *t && f.is_open()))
    }

    /// Changes of what this process holds.
    pub fn changes(&self) -> watch::Receiver<Owned> {
        self.owned.clone()
    }

    /// Partitions marked for handing over.
    pub fn releasing(&self) -> Vec<u32> {
        self.owned.borrow().releasing.iter().copied().collect()
    }

    /// `p`, marked for handing over, is committed and published: its lease may go.
    pub fn drained(&self, p: u32) {
        let _ = self.drainer.send(p);
    }

    /// `f` of the partitions the projector folds now (no copy: asked on every request).
    pub fn with_run_set<T>(&self, f: impl FnOnce(&Set) -> T) -> T {
        f(&self.run.read().unwrap_or_else(std::sync::PoisonError::into_inner))
    }

    pub(crate) fn set_run_set(&self, set: Set) {
        *self.run.write().unwrap_or_else(std::sync::PoisonError::into_inner) = set;
    }

    /// Whether this process keeps the count (and appends the events) of `ip` of `tenant` now.
    pub fn folds_ip(&self, tenant: &str, ip: &str) -> bool {
        self.with_run_set(|r| r.has_ip(tenant, ip))
    }

    /// Every partition's floor, by partition number (none recorded: nothing published).
    pub async fn floors(&self) -> anyhow::Result<Vec<Floors>> {
        let mut floors = vec![Floors::default(); self.n as usize];
        for (p, f) in floors.iter_mut().enumerate() {
            let key = floor_key(p as u32);
            if let Some(v) = self.kv.get(&key).await.with_context(|| format!("reading {key}"))? {
                *f = serde_json::from_slice::<StoredFloor>(&v).with_context(|| format!("decoding {key}"))?.into();
            }
        }
        Ok(floors)
    }

    /// Records the floors of partitions this process published for.
    pub async fn record_floors(&self, floors: &BTreeMap<u32, Floors>) {
        for (p, f) in floors {
            let key = floor_key(*p);
            let body = serde_json::to_vec(&StoredFloor::from(*f)).expect("a floor serializes");
            if let Err(e) = self.kv.put(&key, body.into()).await {
                // The next owner then re-sends what came after the last recorded floor; the
                // streams drop it by `Nats-Msg-Id` within their duplicate window.
                tracing::warn!(partition = p, error = %e, "Recording a publish floor failed.");
            }
        }
    }

    /// Leaves the deployment: every lease is given up at once, so the others take over
    /// without waiting for them to expire. Call once the projector has stopped.
    pub async fn stop(&self) {
        if let Some(h) = self.handle.lock().await.take() {
            if let Err(e) = h.stop().await {
                tracing::warn!(error = %e, "Leaving the cluster failed; the leases expire by themselves.");
            }
        }
    }
}

/// Writes the first floors: v1's (the streams' last messages) into every partition with none.
/// Done by every process before its first publish, so a floor missing means nothing was
/// published since v1's single publisher stopped.
async fn ensure_floors(
    js: &async_nats::jetstream::Context,
    config: &Config,
    kv: &kv::Store,
    n: u32,
) -> anyhow::Result<()> {
    // Written in order: the last one present means all are.
    if kv.get(floor_key(n - 1)).await.context("reading the publish floors")?.is_some() {
        return Ok(());
    }
    let v1 = crate::outbox::read_floors(js, &config.subjects).await?;
    let body: bytes::Bytes = serde_json::to_vec(&StoredFloor::from(v1)).expect("a floor serializes").into();
    for p in 0..n {
        match kv.create(floor_key(p), body.clone()).await {
            Ok(_) => {}
            Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => {}
            Err(e) => return Err(anyhow::Error::new(e).context("writing the first publish floors")),
        }
    }
    Ok(())
}
