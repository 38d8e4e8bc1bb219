//! The loop that keeps this process's membership and leases in line with the assignment.
//!
//! Every third of a lease it renews its member key and every lease it holds, reads the live
//! members, and works out which partitions rendezvous hashing gives it. It acquires those
//! that are free, and marks for release those it holds that another live member should own:
//! the projector stops folding such a partition, commits and publishes what it folded, and
//! calls [`Handle::drained`]; only then is the lease deleted, so the next owner starts from a
//! checkpoint that covers everything this one published. Between ticks it watches the
//! bucket, so a member joining or leaving and a lease given up are acted on at once rather
//! than at the next tick. It never decides anything the KV did not grant: two processes that
//! disagree about the members (one saw a key expire first) contend with KV creates, and only
//! one wins.

use std::collections::{BTreeMap, BTreeSet};

use async_nats::jetstream::kv;
use futures::StreamExt;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::lease::{Fence, LeaseError, Leases};
use crate::rendezvous;

/// What this process owns now.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Owned {
    /// Held leases by partition.
    pub fences: BTreeMap<u32, Fence>,
    /// Held partitions another live member should own: drain them, then [`Handle::drained`].
    pub releasing: BTreeSet<u32>,
    /// Live members, sorted.
    pub members: Vec<String>,
    /// The partitions rendezvous hashing gives this process among the live members.
    pub desired: BTreeSet<u32>,
}

impl Owned {
    /// Partitions this process may fold, commit and publish for now: held, fence open, and
    /// not being handed over.
    pub fn active(&self) -> impl Iterator<Item = u32> + '_ {
        self.fences.iter().filter(|(p, f)| f.is_open() && !self.releasing.contains(p)).map(|(p, _)| *p)
    }
}

/// Builds the loop.
pub struct Coordinator {
    leases: Leases,
    partitions: u32,
    auto_drain: bool,
    predecessor: Option<crate::lease::Holder>,
}

/// The running loop.
pub struct Handle {
    owned: watch::Receiver<Owned>,
    drained: mpsc::UnboundedSender<u32>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: JoinHandle<Result<(), LeaseError>>,
}

impl Coordinator {
    pub fn new(leases: Leases, partitions: u32) -> Coordinator {
        Coordinator { leases, partitions, auto_drain: false, predecessor: None }
    }

    /// Takes over the leases (and drops the member key) of `predecessor`, the earlier run of
    /// this process on the same store: see [`Leases::acquire_or_adopt`].
    pub fn adopting(mut self, predecessor: Option<crate::lease::Holder>) -> Coordinator {
        self.predecessor = predecessor;
        self
    }

    /// Releases partitions as soon as they are marked, without waiting for
    /// [`Handle::drained`]: for a process that holds no work between batches.
    pub fn auto_drain(mut self, yes: bool) -> Coordinator {
        self.auto_drain = yes;
        self
    }

    /// Joins the cluster and starts the loop.
    pub async fn spawn(self) -> Result<Handle, LeaseError> {
        if let Some(p) = &self.predecessor {
            self.leases.evict(p).await?;
        }
        let member_rev = self.leases.join().await?;
        let (owned_tx, owned) = watch::channel(Owned::default());
        let (drained, drained_rx) = mpsc::unbounded_channel();
        let (stop, stop_rx) = tokio::sync::oneshot::channel();
        let watcher = self.leases.watch().await?;
        let task = tokio::spawn(self.run(member_rev, owned_tx, drained_rx, stop_rx, watcher));
        Ok(Handle { owned, drained, stop: Some(stop), task })
    }

    async fn run(
        self,
        mut member_rev: u64,
        owned_tx: watch::Sender<Owned>,
        mut drained_rx: mpsc::UnboundedReceiver<u32>,
        mut stop_rx: tokio::sync::oneshot::Receiver<()>,
        mut watcher: kv::Watch,
    ) -> Result<(), LeaseError> {
        let tick = self.leases.lease() / 3;
        let mut state = Owned::default();
        let mut next_tick = tokio::time::Instant::now();
        loop {
            let full = tokio::time::Instant::now() >= next_tick;
            if full {
                next_tick = tokio::time::Instant::now() + tick;
                match self.leases.heartbeat(member_rev).await {
                    Ok(r) => member_rev = r,
                    Err(e @ LeaseError::DuplicateInstance { .. }) => return Err(e),
                    Err(e) => tracing::warn!(error = %e, "member heartbeat failed; retrying next tick"),
                }
                self.renew_all(&mut state).await;
            }
            if let Err(e) = self.rebalance(&mut state).await {
                tracing::warn!(error = %e, "reading the members failed; retrying next tick");
            }
            owned_tx.send_if_modified(|o| {
                let changed = *o != state;
                if changed {
                    *o = state.clone();
                }
                changed
            });
            // Wait for the next tick, a drained partition, a change worth acting on, or stop.
            loop {
                tokio::select! {
                    _ = tokio::time::sleep_until(next_tick) => break,
                    Some(p) = drained_rx.recv() => {
                        if state.releasing.remove(&p) {
                            if let Some(f) = state.fences.remove(&p) {
                                self.release(f).await;
                            }
                        }
                        break;
                    }
                    Some(entry) = watcher.next() => {
                        if entry.is_ok_and(|e| self.worth_acting_on(&e, &state)) {
                            break;
                        }
                    }
                    _ = &mut stop_rx => {
                        for (_, f) in std::mem::take(&mut state.fences) {
                            self.release(f).await;
                        }
                        state.releasing.clear();
                        owned_tx.send_replace(state);
                        return self.leases.leave().await;
                    }
                }
            }
        }
    }

    /// A member joining or leaving, or a lease given up; not the renewals of known keys.
    fn worth_acting_on(&self, e: &kv::Entry, state: &Owned) -> bool {
        let put = e.operation == kv::Operation::Put;
        match e.key.strip_prefix("member.") {
            Some(m) => put != state.members.iter().any(|k| k == m),
            None => !put,
        }
    }

    async fn renew_all(&self, state: &mut Owned) {
        let mut lost = Vec::new();
        for (p, f) in state.fences.iter_mut() {
            match self.leases.renew(f).await {
                Ok(Some(renewed)) => *f = renewed,
                Ok(None) => lost.push(*p),
                // The fence closes by itself if renewals keep failing.
                Err(e) => tracing::warn!(partition = p, error = %e, "lease renewal failed"),
            }
        }
        for p in lost {
            tracing::warn!(partition = p, "lease lost to another process");
            state.fences.remove(&p);
            state.releasing.remove(&p);
        }
        // A lease whose fence closed while renewals failed is as good as lost.
        state.fences.retain(|_, f| f.is_open());
    }

    async fn rebalance(&self, state: &mut Owned) -> Result<(), LeaseError> {
        let mut members = self.leases.members().await?;
        let me = self.leases.me().instance.as_str();
        if !members.iter().any(|m| m == me) {
            // Our member key expired while the server was out of reach: we are live all the
            // same (the next heartbeat writes it again).
            members.push(me.to_owned());
            members.sort();
        }
        let names: Vec<&str> = members.iter().map(String::as_str).collect();
        let desired: BTreeSet<u32> = rendezvous::assigned(&names, me, self.partitions).into_iter().collect();
        state.members = members;
        state.desired = desired.clone();
        state.releasing = state.fences.keys().copied().filter(|p| !desired.contains(p)).collect();
        if self.auto_drain {
            for p in std::mem::take(&mut state.releasing) {
                if let Some(f) = state.fences.remove(&p) {
                    self.release(f).await;
                }
            }
        }
        for p in desired {
            if state.fences.contains_key(&p) {
                continue;
            }
            match self.leases.acquire_or_adopt(p, self.predecessor.as_ref()).await {
                Ok(Some(f)) => {
                    tracing::info!(partition = p, revision = f.revision, "partition acquired");
                    state.fences.insert(p, f);
                }
                Ok(None) => {}
                Err(e) => tracing::warn!(partition = p, error = %e, "acquiring a partition failed"),
            }
        }
        Ok(())
    }

    async fn release(&self, f: Fence) {
        let p = f.partition;
        match self.leases.release(f).await {
            Ok(()) => tracing::info!(partition = p, "partition handed over"),
            // It expires by itself within a lease.
            Err(e) => tracing::warn!(partition = p, error = %e, "releasing a partition failed"),
        }
    }
}

impl Handle {
    /// What this process owns; changes whenever a lease is won, lost or marked for release.
    pub fn owned(&self) -> watch::Receiver<Owned> {
        self.owned.clone()
    }

    /// A sender for [`Handle::drained`] that outlives borrows of the handle.
    pub fn drainer(&self) -> mpsc::UnboundedSender<u32> {
        self.drained.clone()
    }

    /// The projector has committed and published everything it folded for `p`, which was
    /// marked for release: give the lease up now.
    pub fn drained(&self, p: u32) {
        let _ = self.drained.send(p);
    }

    /// Stops gracefully: releases every lease and leaves, so others take over at once. Call
    /// after the projector has committed and published what it folded.
    pub async fn stop(mut self) -> Result<(), LeaseError> {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        match (&mut self.task).await {
            Ok(r) => r,
            Err(e) => Err(LeaseError::Nats { op: "stop", key: String::new(), message: e.to_string() }),
        }
    }

    /// Stops without releasing anything, as a crash would: the leases expire by themselves.
    pub fn abort(self) {
        self.task.abort();
    }
}
