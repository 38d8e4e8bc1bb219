//! What the store keeps per user.
//!
//! The counter is not stored: it is the sum of the current streak's sources (and of the
//! failures from sources beyond the listed ones), so the two can never disagree. Everything
//! here is bounded, whatever the policy (`max_failures` 0 never locks, so only these bounds
//! hold a streak in): listed sources by [`STREAK_SOURCES_MAX`], remembered credentials by
//! [`CREDENTIALS_MAX`], blocked sources by [`BLOCKED_SOURCES_MAX`], recent locks by
//! [`RECENT_LOCKS_MAX`].

use lockout_proto::notice::Source;
use lockout_proto::status::LockReason;
use lockout_proto::{CompactString, Millis};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Distinct (`ip`, `client`) sources listed per streak; failures from further ones are counted
/// in [`UserState::unlisted`] (and in the counter) but not listed in `sources`.
pub const STREAK_SOURCES_MAX: usize = 64;
/// Credential fingerprints remembered per streak for `dedupe_credential`; a failure with a
/// fingerprint beyond them counts (the conservative side).
pub const CREDENTIALS_MAX: usize = 64;
/// Distinct sources of blocked attempts remembered per lock; further ones are only counted.
pub const BLOCKED_SOURCES_MAX: usize = 32;
/// Automatic lock times remembered for progressive and permanent locks.
pub const RECENT_LOCKS_MAX: usize = 256;
/// Familiar IPs (IPv6 by /64) remembered per user under `familiar_days`; a final success from
/// a further one forgets the one whose last success is oldest.
pub const FAMILIAR_MAX: usize = 32;
/// Known API clients per user under `api_client_scope` (contract v2: the 16 most recently
/// successful stay known).
pub const KNOWN_CLIENTS_MAX: usize = 16;
/// How long a client stays known after its last final success (contract v2: 30 days).
pub const KNOWN_CLIENT_MS: Millis = 30 * 86_400_000;

/// One (`ip`, `client`) pair of the current streak with its counted failures, split by
/// factor so that `mfa_reset` can remove second-factor failures.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreakSource {
    pub ip: CompactString,
    pub client: Option<CompactString>,
    pub password: u32,
    pub mfa: u32,
}

impl StreakSource {
    pub fn total(&self) -> u32 {
        self.password.saturating_add(self.mfa)
    }
}

/// Counted failures of the current streak from sources beyond [`STREAK_SOURCES_MAX`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Unlisted {
    pub password: u32,
    pub mfa: u32,
}

/// A credential fingerprint counted in the current streak.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CountedCredential {
    pub fingerprint: CompactString,
    pub mfa: bool,
}

/// Attempts from one (`ip`, `client`) while the account was locked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlockedSource {
    pub ip: CompactString,
    pub client: Option<CompactString>,
    pub attempts: u32,
}

/// An active lock.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockState {
    pub reason: LockReason,
    pub locked_at: Millis,
    /// `None` = until an admin unlocks.
    pub locked_until: Option<Millis>,
    /// The event that started the lock; the expiry notice's `event_id`.
    pub event_id: Uuid,
    /// Attempts folded while locked.
    pub blocked: u32,
    /// Their sources, first occurrence first, at most [`BLOCKED_SOURCES_MAX`].
    pub blocked_sources: Vec<BlockedSource>,
    /// The address of the attempt that tripped an automatic lock (`None` for an admin lock,
    /// and for locks stored before it was recorded): what `unlock_many` selects by. Stored by
    /// the store's codec beside the lock (a presence flag of its own), not in this struct's
    /// postcard, so states stored before it read unchanged.
    #[serde(skip)]
    pub tripped_by: Option<CompactString>,
}

/// A counter of its own (contract v2, "Locks by scope"): the failures from unfamiliar IPs, or
/// those of one known API client, with the lock they lead to. While locked it is frozen at the
/// value that locked it; it restarts at 0 when the lock ends.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScopeCounter {
    /// Sources of its counted failures, at most [`STREAK_SOURCES_MAX`].
    pub streak: Vec<StreakSource>,
    pub unlisted: Unlisted,
    pub credentials: Vec<CountedCredential>,
    pub last_failure_at: Option<Millis>,
    pub lock: Option<Box<LockState>>,
}

impl ScopeCounter {
    pub fn failures(&self) -> u32 {
        failures_of(&self.streak, &self.unlisted)
    }

    pub fn is_default(&self) -> bool {
        *self == ScopeCounter::default()
    }
}

/// An IP the user had a final success from (`familiar_days`); IPv6 addresses by their /64.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FamiliarIp {
    /// [`crate::familiar_key`] of the address.
    pub ip: CompactString,
    /// The last final success from it.
    pub at: Millis,
}

/// An API client the user had a final success with (`api_client_scope`), and its counter.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KnownClient {
    pub client: CompactString,
    /// The last final success with it.
    pub at: Millis,
    pub counter: ScopeCounter,
}

/// A user's lockout state.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserState {
    /// Sources of the current streak's counted failures, in order of first occurrence, at
    /// most [`STREAK_SOURCES_MAX`].
    pub streak: Vec<StreakSource>,
    /// The streak's counted failures from sources not listed in `streak`.
    pub unlisted: Unlisted,
    /// Credentials counted in the current streak (for `dedupe_credential`).
    pub credentials: Vec<CountedCredential>,
    /// Fold time of the last counted failure.
    pub last_failure_at: Option<Millis>,
    pub last_source_ip: Option<CompactString>,
    /// Boxed (the same bytes in postcard): most states are unlocked, and a smaller state is
    /// cheaper to move through the fold.
    pub lock: Option<Box<LockState>>,
    pub unlocked_at: Option<Millis>,
    pub unlocked_by: Option<CompactString>,
    pub mfa_reset_at: Option<Millis>,
    pub mfa_reset_by: Option<CompactString>,
    pub mfa_reenrol: bool,
    /// Automatic locks so far.
    pub lock_count: u32,
    /// Times of recent automatic locks, oldest first (for progressive and permanent locks).
    pub recent_locks: Vec<Millis>,
    /// The authenticated caller of the last unlock (contract v2, "Who the caller is"). Not in
    /// the plain-postcard state of store format 1, which predates it.
    #[serde(default, with = "lockout_proto::layout::v2")]
    pub unlocked_caller: Option<CompactString>,
    /// The authenticated caller of the last MFA reset.
    #[serde(default, with = "lockout_proto::layout::v2")]
    pub mfa_reset_caller: Option<CompactString>,
    /// Familiar IPs, only under `familiar_days` > 0, at most [`FAMILIAR_MAX`].
    #[serde(default, with = "lockout_proto::layout::v2")]
    pub familiar: Vec<FamiliarIp>,
    /// The counter of failures from unfamiliar IPs and its lock (scope `unfamiliar`).
    #[serde(default, with = "lockout_proto::layout::v2")]
    pub unfamiliar: ScopeCounter,
    /// Known API clients with their counters, only under `api_client_scope`, at most
    /// [`KNOWN_CLIENTS_MAX`].
    #[serde(default, with = "lockout_proto::layout::v2")]
    pub clients: Vec<KnownClient>,
}

impl UserState {
    /// The failure counter: the counted failures of the current streak.
    pub fn failures(&self) -> u32 {
        failures_of(&self.streak, &self.unlisted)
    }

    /// Whether any lock is in force: the account's or a scope's.
    pub fn any_lock(&self) -> bool {
        self.lock.is_some() || self.unfamiliar.lock.is_some() || self.clients.iter().any(|c| c.counter.lock.is_some())
    }

    pub fn is_locked(&self) -> bool {
        self.lock.is_some()
    }

    /// The latest time the state recorded: a counted failure, a lock (automatic or admin), an
    /// unlock or expiry, an MFA reset. `None` for a state that recorded none (the default).
    /// What `--state-ttl-days` measures idleness by: an attempt that changes nothing does not
    /// renew it.
    pub fn last_activity(&self) -> Option<Millis> {
        let scoped = std::iter::once(&self.unfamiliar).chain(self.clients.iter().map(|c| &c.counter));
        let scoped = scoped.flat_map(|c| [c.last_failure_at, c.lock.as_ref().map(|l| l.locked_at)]);
        [
            self.last_failure_at,
            self.lock.as_ref().map(|l| l.locked_at),
            self.unlocked_at,
            self.mfa_reset_at,
            self.recent_locks.last().copied(),
        ]
        .into_iter()
        .chain(scoped)
        .chain(self.familiar.iter().map(|f| Some(f.at)))
        .chain(self.clients.iter().map(|c| Some(c.at)))
        .flatten()
        .max()
    }

    /// Every lock slot of the state: the account's, the unfamiliar IPs', each known client's.
    pub fn lock_slots(&self) -> impl Iterator<Item = &Option<Box<LockState>>> {
        std::iter::once(&self.lock)
            .chain(std::iter::once(&self.unfamiliar.lock))
            .chain(self.clients.iter().map(|c| &c.counter.lock))
    }

    /// The state without its locks' tripping IPs ([`LockState::tripped_by`]): what plain
    /// postcard of a state keeps (the store's codec keeps them), and what digests hash.
    pub fn without_trips(mut self) -> UserState {
        for l in self.lock_slots_mut().flatten() {
            l.tripped_by = None;
        }
        self
    }

    /// [`UserState::lock_slots`], mutable.
    pub fn lock_slots_mut(&mut self) -> impl Iterator<Item = &mut Option<Box<LockState>>> {
        std::iter::once(&mut self.lock)
            .chain(std::iter::once(&mut self.unfamiliar.lock))
            .chain(self.clients.iter_mut().map(|c| &mut c.counter.lock))
    }

    /// The streak's sources ranked as the protocol (`docs/protocol.md`) wants: most failures
    /// first, ties by first occurrence.
    pub fn ranked_sources(&self) -> Vec<Source> {
        ranked(&self.streak)
    }

    /// An estimate of the bytes this state occupies in memory (for bounded caches).
    pub fn approx_bytes(&self) -> usize {
        fn opt(s: &Option<CompactString>) -> usize {
            s.as_ref().map_or(0, heap_bytes)
        }
        let streak: usize = self.streak.iter().map(|s| heap_bytes(&s.ip) + opt(&s.client)).sum();
        let credentials: usize = self.credentials.iter().map(|c| heap_bytes(&c.fingerprint)).sum();
        let lock = self.lock.as_ref().map_or(0, |l| {
            std::mem::size_of::<LockState>()
                + l.blocked_sources.capacity() * std::mem::size_of::<BlockedSource>()
                + l.blocked_sources.iter().map(|b| heap_bytes(&b.ip) + opt(&b.client)).sum::<usize>()
        });
        std::mem::size_of::<UserState>()
            + self.streak.capacity() * std::mem::size_of::<StreakSource>()
            + streak
            + self.credentials.capacity() * std::mem::size_of::<CountedCredential>()
            + credentials
            + opt(&self.last_source_ip)
            + lock
            + opt(&self.unlocked_by)
            + opt(&self.mfa_reset_by)
            + self.recent_locks.capacity() * std::mem::size_of::<Millis>()
            + self.familiar.capacity() * std::mem::size_of::<FamiliarIp>()
            + self.familiar.iter().map(|f| heap_bytes(&f.ip)).sum::<usize>()
            + counter_bytes(&self.unfamiliar)
            + self.clients.capacity() * std::mem::size_of::<KnownClient>()
            + self.clients.iter().map(|c| heap_bytes(&c.client) + counter_bytes(&c.counter)).sum::<usize>()
    }

    /// Clears the counter and everything that belongs to the streak.
    pub(crate) fn restart_streak(&mut self) {
        self.streak.clear();
        self.unlisted = Unlisted::default();
        self.credentials.clear();
    }
}

/// The heap bytes of a scope counter beyond its struct (an estimate, like `approx_bytes`).
fn counter_bytes(c: &ScopeCounter) -> usize {
    c.streak.capacity() * std::mem::size_of::<StreakSource>()
        + c.credentials.capacity() * std::mem::size_of::<CountedCredential>()
        + c.lock.as_ref().map_or(0, |l| {
            std::mem::size_of::<LockState>() + l.blocked_sources.capacity() * std::mem::size_of::<BlockedSource>()
        })
}

fn failures_of(streak: &[StreakSource], unlisted: &Unlisted) -> u32 {
    let n = unlisted.password.saturating_add(unlisted.mfa);
    streak.iter().fold(n, |n, s| n.saturating_add(s.total()))
}

/// Ranks sources as the protocol wants: most failures first, ties by first occurrence.
pub fn ranked(streak: &[StreakSource]) -> Vec<Source> {
    let mut ranked: Vec<Source> = streak
        .iter()
        .filter(|s| s.total() > 0)
        .map(|s| Source { ip: s.ip.clone(), client: s.client.clone(), failures: s.total() })
        .collect();
    // A stable sort keeps first-occurrence order among equal counts.
    ranked.sort_by_key(|s| std::cmp::Reverse(s.failures));
    ranked
}

/// How an IP is compared for familiarity: IPv4 as itself (an IPv4-mapped IPv6 address too),
/// IPv6 by its /64 network, both in canonical text.
pub fn familiar_key(ip: &str) -> CompactString {
    let text = match ip.parse::<std::net::IpAddr>() {
        Ok(std::net::IpAddr::V4(a)) => a.to_string(),
        Ok(std::net::IpAddr::V6(a)) => match a.to_ipv4_mapped() {
            Some(v4) => v4.to_string(),
            None => std::net::Ipv6Addr::from(u128::from(a) & !((1u128 << 64) - 1)).to_string(),
        },
        Err(_) => return ip.into(),
    };
    text.into()
}

impl UserState {
    /// Whether `ip` is familiar under a policy's `familiar_days` at `now`: a final success from
    /// it (IPv6: its /64) within that many days. Always false when `familiar_days` is 0.
    pub fn is_familiar(&self, ip: &str, familiar_days: u32, now: Millis) -> bool {
        if familiar_days == 0 {
            return false;
        }
        let span = u64::from(familiar_days) * 86_400_000;
        let key = familiar_key(ip);
        self.familiar.iter().any(|f| f.ip == key && now.saturating_sub(f.at) < span)
    }

    /// The index of `client` among the known clients with a lock in force or a final success
    /// within [`KNOWN_CLIENT_MS`] of `now`.
    pub fn known_client(&self, client: &str, now: Millis) -> Option<usize> {
        self.clients.iter().position(|c| {
            c.client == client && (c.counter.lock.is_some() || now.saturating_sub(c.at) < KNOWN_CLIENT_MS)
        })
    }
}

/// The heap bytes of a string: none for one of up to 24 bytes, which lives inside its struct.
pub fn heap_bytes(s: &CompactString) -> usize {
    if s.is_heap_allocated() {
        s.capacity()
    } else {
        0
    }
}
