//! [`BatchFolder`]: a batch of stream messages → one commit and a report per message.
//!
//! Messages at or below the store's checkpoint are redeliveries and are skipped, so every
//! event is folded exactly once. Every other message is accepted ([`crate::accept`]) or
//! refused into a dead letter, and accepted events are folded with `lockout-core` against
//! the latest state of their user: from the folder's cache, else from the store. The
//! folder's commits must land in the order it returns them; its cache covers the ones in
//! flight.
//!
//! With several processes ([`BatchFolder::set_partitions`]) a folder folds only the events of
//! the users of its partitions, counts only the failures of the IPs of its partitions
//! (`lockout_proto::partition::of_ip`) and publishes only their notices and dead letters
//! (messages that name no user belong to partition 0); tenant events (policies, IP blocks)
//! it folds whole, so every process applies the same tenant state to the events after them.

use lockout_core::ip::{IpBlockState, IpCount};
use lockout_core::UserState;
use lockout_proto::event::{self, Event, EventKind};
use lockout_proto::notice::How;
use lockout_proto::partition;
use lockout_proto::status::LockReason;
use lockout_proto::subject::{Subjects, Target};
use lockout_proto::CompactString;
use lockout_proto::{Millis, Notice, Policy, Rejection};
use lockout_store::{Commit, IpBlockChange, IpCountChange, LockIndex, StateChange, Store};
use uuid::Uuid;

use crate::cache::{HashMap, StateCache, UserKey};

mod ip;
use crate::outbox::{self, Floors, OutboxMode};
use crate::Delivery;
use ip::ip_of;

/// Default budget of the state cache.
pub const DEFAULT_STATE_CACHE_BYTES: usize = 64 << 20;

/// Most tenants remembered as using the default policy (about 4 MB); beyond it the set starts
/// over. Events for ever new tenants (a flood of made-up tenant tokens) so never grow memory
/// without bound; tenants with a policy of their own are all held (admins set those).
pub const DEFAULT_POLICY_TENANTS_MAX: usize = 65_536;

/// IP counts held in memory before the folder drops them (once everything folded has landed;
/// the store is the truth again): about 10 MB of one-failure counts.
pub const IP_COUNTS_HELD_MAX: usize = 100_000;

/// Stored IP counts each batch looks at for being stale (every failure out of its tenant's
/// window): a sweep over the whole store, a slice per batch, so counts of IPs never seen again
/// do not stay forever.
pub const IP_COUNTS_SWEPT_PER_BATCH: usize = 64;

/// (tenant, canonical IP).
type IpKey = (CompactString, CompactString);

/// An IP's block and count before a batch touched them (to build the commit, or to restore
/// the folder's memory when the batch fails).
struct IpOriginal {
    block: Option<IpBlockState>,
    count: IpCount,
}

/// Folds batches into commits; keeps the tenants' policies and recent user states between
/// batches.
pub struct BatchFolder {
    store: Store,
    subjects: Subjects,
    outbox: OutboxMode,
    /// Every tenant's policy other than the default that this folder has read or folded
    /// (including those whose commit has not landed: never evicted).
    policies: HashMap<String, Policy>,
    /// Tenants the store had no policy (or the default) for; bounded by
    /// [`DEFAULT_POLICY_TENANTS_MAX`], safe to forget since a policy folded since is in
    /// `policies`, which is asked first.
    default_policy: std::collections::HashSet<String>,
    checkpoint: u64,
    checkpoint_time: Millis,
    /// The latest state of recently folded users (the store's, or newer while in flight).
    cache: StateCache,
    /// The cache holds every user state the store has: the store had none when this folder
    /// started and no generation was dropped since. A miss is then a new user, no read needed
    /// (what makes rebuilds from an empty store fast).
    cache_is_complete: bool,
    /// Every IP block the store holds or a commit in flight will hold (few: each took
    /// `ip_max_failures` failures).
    ip_blocks: HashMap<IpKey, IpBlockState>,
    /// Recent IP counts (the store's, or newer while in flight); dropped when over
    /// [`IP_COUNTS_HELD_MAX`] once everything folded has landed.
    ip_counts: HashMap<IpKey, IpCount>,
    /// `ip_counts` holds every IP count the store has (it had none when this folder started
    /// and none were dropped since): a miss is an IP never counted, no read needed.
    ip_counts_complete: bool,
    /// Where the sweep of stale IP counts goes on (the last key it looked at).
    sweep_after: Option<Vec<u8>>,
    /// The partitions folded here; `None`: all of them, and no `Lockout-Partition` header
    /// (a rebuild, a test).
    owned: Option<partition::Set>,
    /// What each partition's notices and dead letters already published reach (instead of
    /// the outbox mode's floors, which several publishers make meaningless).
    partition_floors: Option<Vec<Floors>>,
}

/// What [`BatchFolder::fold_batch`] made of a batch.
#[derive(Debug)]
pub struct BatchFold {
    /// `None` when every message was a redelivery.
    pub commit: Option<Commit>,
    /// One report per message of the batch, in order.
    pub events: Vec<EventReport>,
}

/// What became of one message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventReport {
    /// Its position in the batch.
    pub index: usize,
    pub seq: u64,
    /// Numbered at or below the checkpoint yet stored after it: the server lost acknowledged
    /// messages (e.g. killed before syncing) and reuses sequences. Folded, not skipped.
    pub reused_sequence: bool,
    pub handling: Handling,
}

/// How a message was handled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Handling {
    /// A redelivery of an event folded already: skipped.
    Redelivered,
    /// The event of a user of another process's partition: not folded here (its failure may
    /// still have counted for an IP of this process's partitions).
    Elsewhere,
    /// Refused. `outbox`: its dead letter's position in the commit's outbox (`None` when the
    /// stream holds it already, or nothing is published).
    Refused { rejection: Rejection, outbox: Option<usize> },
    /// Folded.
    Folded {
        id: Uuid,
        kind: EventKind,
        /// An attempt's outcome.
        attempt: Option<event::Outcome>,
        notices: Vec<NoticeReport>,
    },
}

/// A notice the fold produced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NoticeReport {
    pub id: Uuid,
    /// The notice's `event_id` (for an expiry, the event that started the lock).
    pub event_id: Uuid,
    pub what: NoticeWhat,
    /// Its position in the commit's outbox (`None` when the stream holds it already, or
    /// nothing is published).
    pub outbox: Option<usize>,
}

/// What a notice says, for counting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoticeWhat {
    Locked(LockReason),
    Unlocked(How),
    MfaReset,
    IpBlocked,
    IpUnblocked(How),
}

impl NoticeWhat {
    fn of(n: &Notice) -> NoticeWhat {
        match n {
            Notice::Locked(l) => NoticeWhat::Locked(l.reason),
            Notice::Unlocked(u) => NoticeWhat::Unlocked(u.how),
            Notice::MfaReset(_) => NoticeWhat::MfaReset,
            Notice::IpBlocked(_) => NoticeWhat::IpBlocked,
            Notice::IpUnblocked(u) => NoticeWhat::IpUnblocked(u.how),
        }
    }
}

/// A user's state within a batch: as it was before the batch, and as folded so far.
struct Pending {
    original: Box<UserState>,
    state: Box<UserState>,
}

impl BatchFolder {
    /// A folder resuming from `store`'s checkpoint.
    pub fn new(store: Store, subjects: Subjects, outbox: OutboxMode) -> Result<Self, lockout_store::Error> {
        let (checkpoint, checkpoint_time) = store.checkpoint_at()?;
        let cache_is_complete = store.all_users().next().is_none();
        let ip_counts_complete = store.all_ip_counts().next().is_none();
        let mut ip_blocks = HashMap::default();
        for b in store.all_ip_blocks() {
            let (tenant, ip, block) = b?;
            ip_blocks.insert((tenant.into(), ip.into()), block);
        }
        Ok(BatchFolder {
            ip_blocks,
            ip_counts: HashMap::default(),
            ip_counts_complete,
            sweep_after: None,
            store,
            subjects,
            outbox,
            policies: HashMap::default(),
            default_policy: Default::default(),
            checkpoint,
            checkpoint_time,
            cache: StateCache::new(DEFAULT_STATE_CACHE_BYTES),
            cache_is_complete,
            owned: None,
            partition_floors: None,
        })
    }

    /// Folds only the partitions in `owned` (every one unless set); call it before the first
    /// batch. The store's states of the others are left as they are: another process folds
    /// them.
    ///
    /// Every notice and dead letter then carries the `Lockout-Partition` header.
    pub fn set_partitions(&mut self, owned: partition::Set) {
        self.owned = Some(owned);
    }

    /// Skips the notices and dead letters at or below their partition's floor (one per
    /// partition, by partition number) instead of the outbox mode's floors.
    pub fn set_partition_floors(&mut self, floors: Vec<Floors>) {
        self.partition_floors = Some(floors);
    }

    /// The partition an outbox entry of a message belongs to: its user's, an IP event's IP's,
    /// else 0; `None` without [`BatchFolder::set_partitions`].
    fn entry_partition(&self, user_tokens: Option<(&str, &str)>, event: Option<&Event>) -> Option<u32> {
        let n = self.owned.as_ref()?.count();
        Some(match (user_tokens, event.and_then(ip_of)) {
            (Some((tenant, utok)), _) => partition::of_tokens(tenant, utok, n),
            (None, Some(ip)) => partition::of_ip(event.map_or("", |e| e.tenant()), ip, n),
            (None, None) => 0,
        })
    }

    /// What the streams already hold of partition `p`'s entries; `None`: nothing is queued.
    fn floors_of(&self, p: Option<u32>) -> Option<(Floors, lockout_proto::codec::Encoding)> {
        let OutboxMode::Publish { floors, notices } = self.outbox else { return None };
        let own = p.and_then(|p| self.partition_floors.as_ref()?.get(p as usize).copied());
        Some((own.unwrap_or(floors), notices))
    }

    /// Whether the user with subject tokens `tenant`, `utok` is folded here.
    fn owns_user(&self, tenant: &str, utok: &str) -> bool {
        self.owned.as_ref().is_none_or(|o| o.has_user_tokens(tenant, utok))
    }

    /// Whether the count of (tenant, canonical IP) is kept here.
    fn owns_ip(&self, tenant: &str, ip: &str) -> bool {
        self.owned.as_ref().is_none_or(|o| o.has_ip(tenant, ip))
    }

    /// Whether messages that name no user (tenant events' dead letters) are published here.
    fn owns_partition_0(&self) -> bool {
        self.owned.as_ref().is_none_or(|o| o.contains(0))
    }

    /// Bounds the cache of recent user states (default [`DEFAULT_STATE_CACHE_BYTES`]).
    pub fn set_state_cache_bytes(&mut self, bytes: usize) {
        self.cache = StateCache::new(bytes);
    }

    /// The last sequence folded (committed or in flight).
    pub fn checkpoint(&self) -> u64 {
        self.checkpoint
    }

    /// How many tenants' policies are held in memory: (own policies, tenants known to use the
    /// default).
    pub fn policies_held(&self) -> (usize, usize) {
        (self.policies.len(), self.default_policy.len())
    }

    fn policy(&mut self, tenant: &str) -> Result<Policy, lockout_store::Error> {
        if let Some(p) = self.policies.get(tenant) {
            return Ok(*p);
        }
        if self.default_policy.contains(tenant) {
            return Ok(Policy::default());
        }
        let p = self.store.policy_or_default(tenant)?;
        if p == Policy::default() {
            if self.default_policy.len() >= DEFAULT_POLICY_TENANTS_MAX {
                self.default_policy.clear();
            }
            self.default_policy.insert(tenant.to_owned());
        } else {
            self.policies.insert(tenant.to_owned(), p);
        }
        Ok(p)
    }

    /// Folds a batch into a commit and says what became of each message.
    ///
    /// Commits must land in the order they are returned, each before the store is read by
    /// anyone expecting its states. On error nothing is committed, the caches are as before
    /// the batch and the policy cache is dropped, so a retry starts clean.
    pub fn fold_batch<D: Delivery>(&mut self, msgs: &[D]) -> Result<BatchFold, lockout_store::Error> {
        if self.cache.wants_rotation() && self.store.checkpoint_at()? == (self.checkpoint, self.checkpoint_time) {
            // Everything folded so far has landed: the oldest generation may go.
            self.cache.rotate();
            self.cache_is_complete = false;
        }
        if self.ip_counts.len() > IP_COUNTS_HELD_MAX
            && self.store.checkpoint_at()? == (self.checkpoint, self.checkpoint_time)
        {
            self.ip_counts.clear();
            self.ip_counts_complete = false;
        }
        let mut users: HashMap<UserKey, Pending> = HashMap::with_capacity_and_hasher(msgs.len(), Default::default());
        let mut ips: HashMap<IpKey, IpOriginal> = HashMap::default();
        let r = self.fold_inner(msgs, &mut users, &mut ips);
        match &r {
            Ok(_) => {
                for (key, p) in users {
                    self.cache.put(key, p.state);
                }
            }
            Err(_) => {
                for (key, p) in users {
                    self.cache.put(key, p.original);
                }
                for (key, o) in ips {
                    match o.block {
                        Some(b) => self.ip_blocks.insert(key.clone(), b),
                        None => self.ip_blocks.remove(&key),
                    };
                    self.ip_counts.insert(key, o.count);
                }
                self.policies.clear();
                self.default_policy.clear();
            }
        }
        r
    }

    fn fold_inner<D: Delivery>(
        &mut self,
        msgs: &[D],
        users: &mut HashMap<UserKey, Pending>,
        ips: &mut HashMap<IpKey, IpOriginal>,
    ) -> Result<BatchFold, lockout_store::Error> {
        let mut commit = Commit::default();
        let mut events = Vec::with_capacity(msgs.len());
        let (mut last, mut last_time) = (self.checkpoint, self.checkpoint_time);
        let mut folded_any = false;
        for (index, m) in msgs.iter().enumerate() {
            let (seq, time) = (m.seq(), m.stored_time());
            let reused_sequence = seq <= last;
            if reused_sequence && time <= last_time {
                events.push(EventReport { index, seq, reused_sequence: false, handling: Handling::Redelivered });
                continue;
            }
            (last, last_time) = (seq, time);
            folded_any = true;
            // Only a partitioned folder needs the user's partition (the same tokens a valid
            // subject parses into; read before the body, since a refused message has one too).
            let user_tokens = self.owned.as_ref().and_then(|_| self.subjects.user_tokens(m.subject()));
            if let Some((tenant, _)) = user_tokens.filter(|(t, u)| !self.owns_user(t, u)) {
                // Another process folds this user; only an IP count of ours may need it.
                if m.subject().ends_with(".attempt") && self.policy(tenant)?.ip_max_failures > 0 {
                    if let Ok((_, Event::Attempt(a))) = crate::accept(&self.subjects, m) {
                        if a.outcome == event::Outcome::Failure {
                            let policy = self.policy(&a.tenant)?;
                            self.count_ip_failure(ips, &policy, &a, time)?;
                        }
                    }
                }
                events.push(EventReport { index, seq, reused_sequence, handling: Handling::Elsewhere });
                continue;
            }
            let handling = match crate::accept(&self.subjects, m) {
                Err(rejection) => {
                    let ours = user_tokens.is_some() || self.owns_partition_0();
                    let part = self.entry_partition(user_tokens, None);
                    let outbox = if ours { self.queue_dead_letter(m, &rejection, &mut commit, part) } else { None };
                    Handling::Refused { rejection, outbox }
                }
                Ok((subject, event)) => {
                    let policy = self.policy(event.tenant())?;
                    let notices = match subject.target {
                        Target::User(user) => {
                            // The key reuses the strings the subject was parsed into (they
                            // equal the body's).
                            let state = self.pending(users, (subject.tenant.into_inner(), user.into_inner()))?;
                            let notices = lockout_core::fold_into(&policy, state, &event, time).0;
                            if let Event::Attempt(a) = &event {
                                if a.outcome == event::Outcome::Failure && policy.ip_max_failures > 0 {
                                    self.count_ip_failure(ips, &policy, a, time)?;
                                }
                            }
                            notices
                        }
                        Target::Tenant => match &event {
                            Event::Policy(change) => {
                                let p = lockout_core::fold::fold_policy(&policy, change);
                                let tenant = subject.tenant.into_inner().to_string();
                                self.policies.insert(tenant.clone(), p);
                                commit.policies.retain(|(t, _)| *t != tenant);
                                commit.policies.push((tenant, p));
                                Vec::new()
                            }
                            Event::IpBlock(_) | Event::IpUnblock(_) | Event::IpExpired(_) => {
                                self.fold_ip_event(ips, &event, time)?
                            }
                            _ => Vec::new(),
                        },
                    };
                    let attempt = match &event {
                        Event::Attempt(a) => Some(a.outcome),
                        _ => None,
                    };
                    let part = self.entry_partition(user_tokens, Some(&event));
                    let notices = self.queue_notices(seq, notices, &mut commit, part);
                    Handling::Folded { id: event.id(), kind: event.kind(), attempt, notices }
                }
            };
            events.push(EventReport { index, seq, reused_sequence, handling });
        }
        if !folded_any {
            return Ok(BatchFold { commit: None, events });
        }
        self.sweep_ip_counts(ips, last_time)?;
        commit.checkpoint = last;
        commit.checkpoint_time = last_time;
        // Only states that changed are written; the cache keeps every one.
        commit.states = users
            .iter()
            .filter(|(_, p)| p.state != p.original)
            .map(|((tenant, user), p)| StateChange {
                tenant: tenant.clone(),
                user: user.clone(),
                before: LockIndex::of(&p.original),
                before_scoped: lockout_store::scope_expiries(&p.original),
                state: (*p.state).clone(),
            })
            .collect();
        for (key, o) in ips.iter() {
            let block = self.ip_blocks.get(key);
            if o.block.as_ref() != block {
                commit.ip_blocks.push(IpBlockChange {
                    tenant: key.0.clone(),
                    ip: key.1.clone(),
                    before: o.block.clone(),
                    after: block.cloned(),
                });
            }
            let count = self.ip_counts.get(key).cloned().unwrap_or_default();
            if o.count != count {
                commit.ip_counts.push(IpCountChange {
                    tenant: key.0.clone(),
                    ip: key.1.clone(),
                    was_pending: o.count.pending.is_some(),
                    count,
                });
            }
        }
        (self.checkpoint, self.checkpoint_time) = (last, last_time);
        Ok(BatchFold { commit: Some(commit), events })
    }

    /// The state of `key` as folded so far in this batch, from the cache or the store.
    fn pending<'u>(
        &mut self,
        users: &'u mut HashMap<UserKey, Pending>,
        key: UserKey,
    ) -> Result<&'u mut UserState, lockout_store::Error> {
        let pending = match users.entry(key) {
            std::collections::hash_map::Entry::Occupied(o) => o.into_mut(),
            std::collections::hash_map::Entry::Vacant(v) => {
                let original = match self.cache.take(v.key()) {
                    Some(s) => s,
                    None if self.cache_is_complete => Box::default(),
                    None => Box::new(self.store.user(&v.key().0, &v.key().1)?.unwrap_or_default()),
                };
                v.insert(Pending { state: original.clone(), original })
            }
        };
        Ok(&mut pending.state)
    }

    fn queue_dead_letter(
        &self,
        m: &impl Delivery,
        r: &Rejection,
        commit: &mut Commit,
        part: Option<u32>,
    ) -> Option<usize> {
        let (floors, _) = self.floors_of(part)?;
        if floors.dead.is_some_and(|f| m.seq() <= f) {
            return None;
        }
        commit.outbox.push(outbox::with_partition(outbox::dead_letter(&self.subjects, m, r), part));
        Some(commit.outbox.len() - 1)
    }

    fn queue_notices(
        &self,
        seq: u64,
        notices: Vec<Notice>,
        commit: &mut Commit,
        part: Option<u32>,
    ) -> Vec<NoticeReport> {
        let floors = self.floors_of(part);
        notices
            .iter()
            .enumerate()
            .map(|(i, n)| {
                let index = u32::try_from(i).unwrap_or(u32::MAX);
                let outbox = match floors {
                    Some((floors, encoding)) if floors.notices.is_none_or(|f| (seq, index) > f) => {
                        let entry = outbox::notice_entry(&self.subjects, encoding, seq, index, n);
                        commit.outbox.push(outbox::with_partition(entry, part));
                        Some(commit.outbox.len() - 1)
                    }
                    _ => None,
                };
                NoticeReport { id: n.id(), event_id: n.event_id(), what: NoticeWhat::of(n), outbox }
            })
            .collect()
    }
}
