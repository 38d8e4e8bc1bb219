//! The lockout service's store, on sled.
//!
//! Nothing else touches sled. The store keeps, in one tree with prefixed keys:
//!
//! | prefix | key | value |
//! |---|---|---|
//! | `u` | user key | `UserState`, compact ([`state_codec`]) |
//! | `p` | tenant | postcard `Policy` |
//! | `l` | user key | empty: the user is locked (index for `locked`) |
//! | `x` | `locked_until` (u64 BE) + user key | lock event id: timed account locks by expiry |
//! | `y` | `locked_until` (u64 BE) + lock event id + user key | empty: timed scope locks (contract v2) by expiry |
//! | `b` | tenant (length-prefixed) + IP | postcard `IpBlockState`: an IP block in force (contract v2) |
//! | `z` | `blocked_until` (u64 BE) + tenant (length-prefixed) + IP | `ip_block` event id: timed IP blocks by expiry |
//! | `c` | tenant (length-prefixed) + IP | postcard `IpCount`: the IP's failures in the window |
//! | `k` | tenant (length-prefixed) + IP | empty: the IP's count holds a decided `ip_block` not yet folded |
//! | `o` | event seq (u64 BE) + index (u32 BE) | postcard `OutboxEntry`: to publish |
//! | `m` | `checkpoint` | u64 BE last folded `LOCKOUT_EVENTS` sequence, u64 BE its stored time |
//! | `m` | `id`, `holder`, `claims` | lockoutd's notes about the store ([`Store::meta`]): its id, the run that last opened it, the claims its partitions were folded under |
//! | `m` | `partitions` | the partitions complete up to the checkpoint ([`lockout_proto::partition::Set`] bytes); absent: all ([`partitions`]) |
//!
//! A *user key* is the tenant's length (one byte), the tenant, then the user id's bytes, so
//! a tenant's users sort by the UTF-8 bytes of their ids.
//!
//! Guarantee: a [`Commit`] is one sled batch — after a crash either all of it (states,
//! indexes, outbox, checkpoint) is there or none is. Durability comes from sled's periodic
//! flush and [`Store::flush`]; a lost tail is re-folded from the stream, because the
//! checkpoint is lost with it.
//!
//! Once sled fails a write (a full disk, say) it refuses every later one until it is opened
//! again, and what it accepted but had not yet written may be lost like a crash's tail.
//! [`Store::reopen`] does that in place, for every clone at once; [`Store::check_writable`]
//! proves the disk takes writes again.

use std::path::Path;

mod commit;
mod ip;
pub mod partitions;
pub mod state_codec;

pub use commit::{scope_expiries, Commit, LockIndex, OutboxEntry, OutboxStream, StateChange};
pub use ip::{IpBlockChange, IpCountChange, StoredIpCount};

use lockout_core::UserState;
use lockout_proto::{Millis, Policy};
use sha2::{Digest, Sha256};
use uuid::Uuid;

/// Why a store operation failed.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// sled reported an I/O error or corruption (disk full, permissions, damaged files).
    Io,
    /// A stored value did not decode: the store was written by an incompatible version.
    Corrupt,
    /// The store is closed after a failure and not reopened yet: retry shortly.
    Closed,
}

/// A store failure: infrastructure, never bad input.
#[derive(Debug, thiserror::Error)]
#[error("store {kind:?} error: {detail}")]
pub struct Error {
    pub kind: ErrorKind,
    pub detail: String,
}

impl From<sled::Error> for Error {
    fn from(e: sled::Error) -> Self {
        Error { kind: ErrorKind::Io, detail: e.to_string() }
    }
}

fn corrupt(what: &str, e: impl std::fmt::Display) -> Error {
    Error { kind: ErrorKind::Corrupt, detail: format!("{what}: {e}") }
}

pub type Result<T> = std::result::Result<T, Error>;

const CHECKPOINT: &[u8] = b"mcheckpoint";

/// A timed lock whose `locked_until` has passed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DueExpiry {
    pub tenant: String,
    pub user: String,
    pub locked_until: Millis,
    pub lock_event: Uuid,
}

/// The sled store. Cloning shares the same database, and [`Store::reopen`] reopens it for
/// every clone.
#[derive(Clone)]
pub struct Store {
    inner: std::sync::Arc<Inner>,
}

struct Inner {
    dir: std::path::PathBuf,
    cache_bytes: u64,
    /// `None` only while [`Store::reopen`] could not open it again.
    db: std::sync::RwLock<Option<sled::Db>>,
}

fn closed() -> Error {
    Error { kind: ErrorKind::Closed, detail: "the store is closed after a failure; lockoutd is reopening it".into() }
}

/// sled's segment size for new stores: larger than its 512 KiB default, so its background
/// threads write fewer, larger segments (`make bench`).
pub const SEGMENT_SIZE: usize = 8 << 20;

/// The segment size of the store in `dir`: what its `conf` file records (sled refuses to open
/// a store with another one), else [`SEGMENT_SIZE`].
fn segment_size(dir: &Path) -> usize {
    std::fs::read(dir.join("conf"))
        .ok()
        .and_then(|conf| {
            String::from_utf8_lossy(&conf)
                .lines()
                .find_map(|l| l.strip_prefix("segment_size: "))
                .and_then(|v| v.trim().parse().ok())
        })
        .unwrap_or(SEGMENT_SIZE)
}

/// A stored policy: the v2 layout, or (stored before contract v2) the v1 layout, whose bytes
/// are a strict prefix of a v2 body and so never decode as one.
fn decode_policy(bytes: &[u8]) -> Result<Policy> {
    use lockout_proto::layout::{self, Layout};
    match postcard::from_bytes::<Policy>(bytes) {
        Ok(p) => Ok(p),
        Err(v2) => layout::with(Layout::V1, || postcard::from_bytes(bytes))
            .map_err(|v1| corrupt("policy", format!("{v2} (v2 layout); {v1} (v1 layout)"))),
    }
}

/// The key of a user within its tenant.
pub fn user_key(tenant: &str, user: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(1 + tenant.len() + user.len());
    k.push(u8::try_from(tenant.len()).expect("tenants are at most 64 bytes"));
    k.extend_from_slice(tenant.as_bytes());
    k.extend_from_slice(user.as_bytes());
    k
}

fn prefixed(prefix: u8, rest: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(1 + rest.len());
    k.push(prefix);
    k.extend_from_slice(rest);
    k
}

fn tenant_prefix(prefix: u8, tenant: &str) -> Vec<u8> {
    let mut k = vec![prefix, u8::try_from(tenant.len()).expect("tenants are at most 64 bytes")];
    k.extend_from_slice(tenant.as_bytes());
    k
}

fn scope_expiry_key(until: Millis, event: Uuid, ukey: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(25 + ukey.len());
    k.push(b'y');
    k.extend_from_slice(&until.to_be_bytes());
    k.extend_from_slice(event.as_bytes());
    k.extend_from_slice(ukey);
    k
}

fn expiry_key(until: Millis, ukey: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(9 + ukey.len());
    k.push(b'x');
    k.extend_from_slice(&until.to_be_bytes());
    k.extend_from_slice(ukey);
    k
}

/// Splits a user key into tenant and user.
fn split_user_key(ukey: &[u8]) -> Result<(String, String)> {
    let n = *ukey.first().ok_or_else(|| corrupt("user key", "empty"))? as usize;
    let tenant = ukey.get(1..1 + n).ok_or_else(|| corrupt("user key", "short"))?;
    let user = &ukey[1 + n..];
    let s = |b: &[u8]| String::from_utf8(b.to_vec()).map_err(|e| corrupt("user key", e));
    Ok((s(tenant)?, s(user)?))
}

/// Makes the calling thread a background thread: on Linux, `SCHED_BATCH`, which keeps its
/// share of the CPU but never preempts a running thread when it wakes up.
///
/// Why: sled 0.34 hands each log buffer to its pool of seven I/O threads with `notify_all`,
/// twice per commit, waking all seven every time; on a small machine those wake-ups took the
/// CPUs from the very thread that had just committed and from everything else that was
/// about to answer (README "Performance": the commit stage of a `locked` notice). The I/O
/// threads' work (writing buffers out) waits for nothing on the commit path, so they lose
/// nothing by waiting for a CPU. Best effort: a refusal leaves the thread as it was.
fn background_thread() {
    #[cfg(target_os = "linux")]
    {
        let param = libc::sched_param { sched_priority: 0 };
        // SAFETY: plain system call on the calling thread (pid 0) with a valid parameter.
        let _ = unsafe { libc::sched_setscheduler(0, libc::SCHED_BATCH, &param) };
    }
}

impl Store {
    /// Opens (or creates) the store in `dir` with a page cache of `cache_bytes`.
    pub fn open(dir: &Path, cache_bytes: u64) -> Result<Store> {
        let db = Self::open_db(dir, cache_bytes)?;
        let inner = Inner { dir: dir.to_path_buf(), cache_bytes, db: std::sync::RwLock::new(Some(db)) };
        Ok(Store { inner: std::sync::Arc::new(inner) })
    }

    /// Opens sled on a thread of its own that runs as a background thread
    /// ([`background_thread`]), so the threads sled starts meanwhile inherit that: its log
    /// flusher and, the first time in a process, its pool of I/O threads (created by the
    /// thread that first hands it work: the recovery of an existing store, or the flush of a
    /// new one's first buffer here).
    fn open_db(dir: &Path, cache_bytes: u64) -> Result<sled::Db> {
        std::thread::scope(|s| {
            s.spawn(|| {
                background_thread();
                let db = sled::Config::new()
                    .path(dir)
                    .cache_capacity(cache_bytes)
                    .mode(sled::Mode::HighThroughput)
                    .segment_size(segment_size(dir))
                    .open()?;
                db.flush()?;
                Ok(db)
            })
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        })
    }

    /// The open database (a cheap handle), or the error that closed it.
    fn db(&self) -> Result<sled::Db> {
        let guard = self.inner.db.read().unwrap_or_else(std::sync::PoisonError::into_inner);
        guard.clone().ok_or_else(closed)
    }

    /// Closes the database and opens it again from disk, for every clone of this store: the
    /// way out of sled's failed state after a refused write. What sled had accepted but not
    /// written is gone, as after a crash; the checkpoint says where to fold from. Fails while
    /// another handle still holds the files (retry), or when the disk refuses to open it.
    pub fn reopen(&self) -> Result<()> {
        let mut guard = self.inner.db.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        drop(guard.take());
        *guard = Some(Self::open_db(&self.inner.dir, self.inner.cache_bytes)?);
        Ok(())
    }

    /// Iterates what `f` selects of the open database; a closed store yields its error once.
    fn scan(&self, f: impl FnOnce(&sled::Db) -> sled::Iter) -> impl Iterator<Item = Result<(sled::IVec, sled::IVec)>> {
        let (iter, err) = match self.db() {
            Ok(db) => (Some(f(&db)), None),
            Err(e) => (None, Some(Err(e))),
        };
        err.into_iter().chain(iter.into_iter().flatten().map(|kv| kv.map_err(Error::from)))
    }

    /// Writes and flushes a probe (and its removal): `Ok` when the disk takes writes.
    pub fn check_writable(&self) -> Result<()> {
        let db = self.db()?;
        db.insert(b"mprobe", &[1u8][..])?;
        db.remove(b"mprobe")?;
        db.flush()?;
        Ok(())
    }

    /// The last folded `LOCKOUT_EVENTS` sequence (0 when nothing was folded).
    pub fn checkpoint(&self) -> Result<u64> {
        Ok(self.checkpoint_at()?.0)
    }

    /// The last folded sequence and its stored time ((0, 0) when nothing was folded).
    pub fn checkpoint_at(&self) -> Result<(u64, Millis)> {
        let Some(v) = self.db()?.get(CHECKPOINT)? else { return Ok((0, 0)) };
        let half = |r: std::ops::Range<usize>| -> Result<u64> {
            let bytes = v.get(r).ok_or_else(|| corrupt("checkpoint", "short value"))?;
            Ok(u64::from_be_bytes(bytes.try_into().map_err(|e| corrupt("checkpoint", e))?))
        };
        Ok((half(0..8)?, half(8..16)?))
    }

    pub fn user(&self, tenant: &str, user: &str) -> Result<Option<UserState>> {
        self.db()?
            .get(prefixed(b'u', &user_key(tenant, user)))?
            .map(|v| state_codec::decode(&v).map_err(|e| corrupt("user state", e)))
            .transpose()
    }

    /// The tenant's policy, or `None` when it never set one (the defaults apply).
    pub fn policy(&self, tenant: &str) -> Result<Option<Policy>> {
        self.db()?.get(prefixed(b'p', tenant.as_bytes()))?.map(|v| decode_policy(&v)).transpose()
    }

    /// The tenant's policy with defaults filled in.
    pub fn policy_or_default(&self, tenant: &str) -> Result<Policy> {
        Ok(self.policy(tenant)?.unwrap_or_default())
    }

    /// Writes one batch's changes atomically.
    pub fn commit(&self, c: &Commit) -> Result<()> {
        let mut b = sled::Batch::default();
        for s in &c.states {
            let ukey = user_key(&s.tenant, &s.user);
            let after = LockIndex::of(&s.state);
            if s.before != after {
                if let Some(LockIndex { locked_until: Some(t), .. }) = s.before {
                    b.remove(expiry_key(t, &ukey));
                }
                match after {
                    Some(l) => {
                        b.insert(prefixed(b'l', &ukey), &[][..]);
                        if let Some(t) = l.locked_until {
                            b.insert(expiry_key(t, &ukey), &l.event_id.as_bytes()[..]);
                        }
                    }
                    None => b.remove(prefixed(b'l', &ukey)),
                }
            }
            let after_scoped = scope_expiries(&s.state);
            if s.before_scoped != after_scoped {
                for &(t, e) in &s.before_scoped {
                    b.remove(scope_expiry_key(t, e, &ukey));
                }
                for &(t, e) in &after_scoped {
                    b.insert(scope_expiry_key(t, e, &ukey), &[][..]);
                }
            }
            if s.state == UserState::default() {
                // Nothing to remember (a `forget` event dropped it): not stored, as for a
                // user never seen.
                b.remove(prefixed(b'u', &ukey));
            } else {
                b.insert(prefixed(b'u', &ukey), state_codec::encode(&s.state));
            }
        }
        for (tenant, policy) in &c.policies {
            b.insert(prefixed(b'p', tenant.as_bytes()), postcard::to_allocvec(policy).expect("policies always encode"));
        }
        ip::write(&mut b, c);
        for e in &c.outbox {
            b.insert(&e.key()[..], postcard::to_allocvec(e).expect("outbox entries always encode"));
        }
        let mut cp = [0u8; 16];
        cp[..8].copy_from_slice(&c.checkpoint.to_be_bytes());
        cp[8..].copy_from_slice(&c.checkpoint_time.to_be_bytes());
        b.insert(CHECKPOINT, &cp[..]);
        self.db()?.apply_batch(b)?;
        Ok(())
    }

    /// Every outbox entry, in (event seq, index) order.
    pub fn outbox(&self) -> Result<Vec<OutboxEntry>> {
        self.db()?
            .scan_prefix(b"o")
            .map(|kv| {
                let (_, v) = kv?;
                postcard::from_bytes(&v).map_err(|e| corrupt("outbox entry", e))
            })
            .collect()
    }

    /// Removes published outbox entries.
    pub fn remove_outbox(&self, entries: &[OutboxEntry]) -> Result<()> {
        let mut b = sled::Batch::default();
        for e in entries {
            b.remove(&e.key()[..]);
        }
        self.db()?.apply_batch(b)?;
        Ok(())
    }

    /// Timed locks (account and scope locks) with `locked_until` ≤ `now`, earliest first, at
    /// most `limit`.
    pub fn due_expiries(&self, now: Millis, limit: usize) -> Result<Vec<DueExpiry>> {
        let db = self.db()?;
        let end = expiry_key(now.saturating_add(1), &[]);
        let mut due = Vec::new();
        for kv in db.range(&b"x"[..]..end.as_slice()).take(limit) {
            let (k, v) = kv?;
            let until = u64::from_be_bytes(k[1..9].try_into().map_err(|e| corrupt("expiry key", e))?);
            let (tenant, user) = split_user_key(&k[9..])?;
            let lock_event = Uuid::from_slice(&v).map_err(|e| corrupt("expiry value", e))?;
            due.push(DueExpiry { tenant, user, locked_until: until, lock_event });
        }
        let end = scope_expiry_key(now.saturating_add(1), Uuid::nil(), &[]);
        for kv in db.range(&b"y"[..]..end.as_slice()).take(limit) {
            let (k, _) = kv?;
            let until = u64::from_be_bytes(k[1..9].try_into().map_err(|e| corrupt("expiry key", e))?);
            let lock_event = Uuid::from_slice(&k[9..25]).map_err(|e| corrupt("expiry key", e))?;
            let (tenant, user) = split_user_key(&k[25..])?;
            due.push(DueExpiry { tenant, user, locked_until: until, lock_event });
        }
        due.sort_by_key(|d| d.locked_until);
        due.truncate(limit);
        Ok(due)
    }

    /// Locked users of `tenant` after the user id `after` (exclusive), ascending by UTF-8
    /// bytes, with their states. Users whose timed lock has run out are still listed here;
    /// the caller filters by its clock.
    pub fn locked_after<'a>(
        &'a self,
        tenant: &str,
        after: Option<&str>,
    ) -> impl Iterator<Item = Result<(String, UserState)>> + 'a {
        let tenant = tenant.to_owned();
        self.tenant_range(b'l', &tenant, after).map(move |kv| {
            let (user, _) = kv?;
            let state = self.user(&tenant, &user)?.unwrap_or_default();
            Ok((user, state))
        })
    }

    /// Number of users of `tenant` with a state, and the XOR of one SHA-256 per user over
    /// (user, state), each state re-encoded in the current [`state_codec`] format without the
    /// locks' tripping IPs ([`state_codec::without_trips`]), default states left out: equal on
    /// stores that folded the same events, whichever version wrote them, and combinable:
    /// the XOR of the digests of disjoint sets of users is the digest of their union, so
    /// processes that hold different partitions answer `digest` together
    /// ([`Store::digest_of`], [`xor_digests`]).
    pub fn digest(&self, tenant: &str) -> Result<(u64, String)> {
        self.digest_of(tenant, |_| true)
    }

    /// [`Store::digest`] over the users `keep` selects (by user id).
    pub fn digest_of(&self, tenant: &str, keep: impl Fn(&str) -> bool) -> Result<(u64, String)> {
        let prefix = tenant_prefix(b'u', tenant);
        let default_state = state_codec::encode(&UserState::default());
        let mut acc = [0u8; 32];
        let mut n = 0u64;
        for kv in self.db()?.scan_prefix(&prefix) {
            let (k, v) = kv?;
            let user = &k[prefix.len()..];
            if !keep(std::str::from_utf8(user).map_err(|e| corrupt("user key", e))?) {
                continue;
            }
            let state = state_codec::decode(&v).map_err(|e| corrupt("user state", e))?;
            let v = state_codec::encode(&state_codec::without_trips(state));
            if v[..] == default_state[..] {
                // Stored by a lockoutd before default states were deleted: the same as none.
                continue;
            }
            let mut h = Sha256::new();
            h.update((user.len() as u64).to_be_bytes());
            h.update(user);
            h.update((v.len() as u64).to_be_bytes());
            h.update(&v);
            acc.iter_mut().zip(h.finalize()).for_each(|(a, b)| *a ^= b);
            n += 1;
        }
        Ok((n, hex::encode(acc)))
    }

    /// The users of `tenant` with a state, after the user id `after` (exclusive), ascending by
    /// UTF-8 bytes.
    pub fn users_after<'a>(
        &'a self,
        tenant: &str,
        after: Option<&str>,
    ) -> impl Iterator<Item = Result<(String, UserState)>> + 'a {
        self.tenant_range(b'u', tenant, after).map(|kv| {
            kv.and_then(|(user, v)| Ok((user, state_codec::decode(&v).map_err(|e| corrupt("user state", e))?)))
        })
    }

    /// The keys of `tenant` under `prefix` after the name `after` (exclusive), ascending: (the
    /// key's name after the tenant, its value). Names are UTF-8 (user ids, IPs), which never
    /// hold the byte 0xff that ends the range.
    fn tenant_range<'a>(
        &'a self,
        prefix: u8,
        tenant: &str,
        after: Option<&str>,
    ) -> impl Iterator<Item = Result<(String, sled::IVec)>> + 'a {
        let prefix = tenant_prefix(prefix, tenant);
        let mut start = prefix.clone();
        if let Some(a) = after {
            // The smallest key strictly greater than `prefix + after`.
            start.extend_from_slice(a.as_bytes());
            start.push(0);
        }
        let mut end = prefix.clone();
        end.push(0xff);
        let plen = prefix.len();
        self.scan(|db| db.range(start..end)).map(move |kv| {
            let (k, v) = kv?;
            Ok((String::from_utf8(k[plen..].to_vec()).map_err(|e| corrupt("key", e))?, v))
        })
    }

    /// Every stored (tenant, user, state), in key order (for verification and tests).
    pub fn all_users(&self) -> impl Iterator<Item = Result<(String, String, UserState)>> + '_ {
        self.scan(|db| db.scan_prefix(b"u")).map(|kv| {
            let (k, v) = kv?;
            let (tenant, user) = split_user_key(&k[1..])?;
            let state = state_codec::decode(&v).map_err(|e| corrupt("user state", e))?;
            Ok((tenant, user, state))
        })
    }

    /// Every tenant with a stored policy.
    pub fn all_policies(&self) -> impl Iterator<Item = Result<(String, Policy)>> + '_ {
        self.scan(|db| db.scan_prefix(b"p")).map(|kv| {
            let (k, v) = kv?;
            let tenant = String::from_utf8(k[1..].to_vec()).map_err(|e| corrupt("policy key", e))?;
            Ok((tenant, decode_policy(&v)?))
        })
    }

    /// Writes everything to disk; returns when it is durable.
    pub fn flush(&self) -> Result<()> {
        self.db()?.flush()?;
        Ok(())
    }

    /// Bytes the store occupies on disk.
    pub fn size_on_disk(&self) -> Result<u64> {
        Ok(self.db()?.size_on_disk()?)
    }

    /// The filesystem the store lives on: (bytes free for unprivileged writers, total bytes);
    /// `None` where it cannot be read.
    pub fn filesystem_space(&self) -> Option<(u64, u64)> {
        filesystem_space(&self.inner.dir)
    }
}

/// The digest of the union of disjoint sets of users from their [`Store::digest_of`]s; `None`
/// when one is not a digest.
pub fn xor_digests<'a>(digests: impl IntoIterator<Item = &'a str>) -> Option<String> {
    let mut acc = [0u8; 32];
    for d in digests {
        let b = hex::decode(d).ok()?;
        if b.len() != 32 {
            return None;
        }
        acc.iter_mut().zip(b).for_each(|(a, x)| *a ^= x);
    }
    Some(hex::encode(acc))
}

#[cfg(unix)]
// `c_ulong` and `fsblkcnt_t` are `u64` on 64-bit Linux, narrower elsewhere.
#[allow(clippy::useless_conversion)]
fn filesystem_space(dir: &std::path::Path) -> Option<(u64, u64)> {
    use std::os::unix::ffi::OsStrExt as _;
    let path = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
    // SAFETY: `statvfs` fills the zeroed struct we pass; the path is a valid C string.
    let mut s: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(path.as_ptr(), &mut s) } != 0 {
        return None;
    }
    let block = u64::from(s.f_frsize);
    Some((u64::from(s.f_bavail).saturating_mul(block), u64::from(s.f_blocks).saturating_mul(block)))
}

#[cfg(not(unix))]
fn filesystem_space(_dir: &std::path::Path) -> Option<(u64, u64)> {
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use lockout_proto::layout::{self, Layout};

    /// A policy stored before contract v2 (its v1 layout) still reads, with the fields v2
    /// added at their defaults; one stored now reads back exactly.
    #[test]
    fn policies_stored_in_either_layout_read() {
        let v1 = Policy { max_failures: 3, lock_seconds: 60, ..Policy::default() };
        let old = layout::with(Layout::V1, || postcard::to_allocvec(&v1).unwrap());
        assert_eq!(decode_policy(&old).unwrap(), v1);
        let v2 = Policy { familiar_days: 30, unlock_on_password_reset: false, ip_window_seconds: 60, ..v1 };
        let new = postcard::to_allocvec(&v2).unwrap();
        assert!(new.len() > old.len() && new.starts_with(&old));
        assert_eq!(decode_policy(&new).unwrap(), v2);
        assert!(decode_policy(&old[..old.len() - 1]).is_err());
    }
}
