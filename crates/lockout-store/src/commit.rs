//! What one folded batch changes ([`Commit`]): user states with their lock indexes, policies,
//! IP blocks and counts, outbox entries and the checkpoint; and how two commits merge.

use lockout_core::UserState;
use lockout_proto::{CompactString, Millis, Policy};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::{IpBlockChange, IpCountChange};

/// Which stream an outbox entry goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum OutboxStream {
    Notices,
    Dead,
}

/// A message committed with the fold that produced it, published after the commit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutboxEntry {
    pub stream: OutboxStream,
    /// `LOCKOUT_EVENTS` sequence of the causing (or refused) event.
    pub event_seq: u64,
    /// Position among the entries of that event.
    pub index: u32,
    pub subject: String,
    pub headers: Vec<(String, String)>,
    pub payload: Vec<u8>,
}

impl OutboxEntry {
    pub(crate) fn key(&self) -> [u8; 13] {
        let mut k = [0u8; 13];
        k[0] = b'o';
        k[1..9].copy_from_slice(&self.event_seq.to_be_bytes());
        k[9..13].copy_from_slice(&self.index.to_be_bytes());
        k
    }
}

/// The part of a user's lock the indexes depend on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LockIndex {
    pub locked_until: Option<Millis>,
    pub event_id: Uuid,
}

impl LockIndex {
    pub fn of(state: &UserState) -> Option<LockIndex> {
        state.lock.as_ref().map(|l| LockIndex { locked_until: l.locked_until, event_id: l.event_id })
    }
}

/// The timed scope locks of a state (contract v2): `locked_until` and lock event, what the
/// `y` index holds.
pub fn scope_expiries(state: &UserState) -> Vec<(Millis, Uuid)> {
    std::iter::once(&state.unfamiliar)
        .chain(state.clients.iter().map(|c| &c.counter))
        .filter_map(|c| c.lock.as_ref().and_then(|l| l.locked_until.map(|u| (u, l.event_id))))
        .collect()
}

/// A changed user state, with its lock as it was before the commit's events.
#[derive(Debug, Clone)]
pub struct StateChange {
    pub tenant: CompactString,
    pub user: CompactString,
    pub before: Option<LockIndex>,
    /// [`scope_expiries`] of the state before the commit's events.
    pub before_scoped: Vec<(Millis, Uuid)>,
    pub state: UserState,
}

/// Everything one fetched batch changes, written atomically.
#[derive(Debug, Clone, Default)]
pub struct Commit {
    pub states: Vec<StateChange>,
    pub policies: Vec<(String, Policy)>,
    /// IP blocks started or ended.
    pub ip_blocks: Vec<IpBlockChange>,
    /// IP counts changed; an empty count is removed.
    pub ip_counts: Vec<IpCountChange>,
    pub outbox: Vec<OutboxEntry>,
    /// The last `LOCKOUT_EVENTS` sequence folded by this commit.
    pub checkpoint: u64,
    /// That event's JetStream stored time (tells redeliveries from reused sequences).
    pub checkpoint_time: Millis,
}

impl Commit {
    /// Folds `later` (the commit of the events right after this one's) into this commit, so
    /// that committing the result leaves the store as committing both in turn would: a user in
    /// both keeps this commit's `before` and takes `later`'s state, a tenant's later policy
    /// replaces its earlier one, the outboxes are sent in order, the checkpoint is `later`'s.
    pub fn absorb(&mut self, later: Commit) {
        use std::collections::hash_map::Entry;
        let mut at: std::collections::HashMap<(CompactString, CompactString), usize> =
            self.states.iter().enumerate().map(|(i, s)| ((s.tenant.clone(), s.user.clone()), i)).collect();
        for s in later.states {
            match at.entry((s.tenant.clone(), s.user.clone())) {
                Entry::Occupied(o) => self.states[*o.get()].state = s.state,
                Entry::Vacant(v) => {
                    v.insert(self.states.len());
                    self.states.push(s);
                }
            }
        }
        for (tenant, policy) in later.policies {
            self.policies.retain(|(t, _)| *t != tenant);
            self.policies.push((tenant, policy));
        }
        for b in later.ip_blocks {
            match self.ip_blocks.iter_mut().find(|e| e.tenant == b.tenant && e.ip == b.ip) {
                Some(e) => e.after = b.after,
                None => self.ip_blocks.push(b),
            }
        }
        for c in later.ip_counts {
            match self.ip_counts.iter_mut().find(|e| e.tenant == c.tenant && e.ip == c.ip) {
                Some(e) => e.count = c.count,
                None => self.ip_counts.push(c),
            }
        }
        self.outbox.extend(later.outbox);
        self.checkpoint = later.checkpoint;
        self.checkpoint_time = later.checkpoint_time;
    }
}
