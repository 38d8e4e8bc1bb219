//! Partitions (contract v2, "Several lockoutd processes"): which partitions' states a store
//! holds complete up to its checkpoint, and taking over partitions that a catch-up folded into
//! a scratch store.
//!
//! A store folded by one process alone records nothing (every partition is complete). A
//! process that folds a subset records it (`m partitions`); the states of partitions outside
//! it are left where they were (another process folds them now) and are never read for an
//! answer. Taking a partition over replaces every key of its users (`u`, `l`, `x`, `y`) and
//! IPs (`c`, `k`) with those a catch-up folded from the stream into a scratch store, adds the
//! scratch store's outbox and the partition to the set, all in one sled batch.

use lockout_proto::partition::{self, Set};

use crate::{corrupt, split_user_key, Result, Store};

const PARTITIONS: &[u8] = b"mpartitions";

/// The prefixes of the keys that belong to a partition.
const PARTITIONED: [u8; 6] = [b'u', b'l', b'x', b'y', b'c', b'k'];

/// The partition (out of `n`) a stored key belongs to: its user's for `u`, `l`, `x`, `y`, its
/// IP's for `c`, `k`; `None` for keys of the tenant or the store (policies, IP blocks, outbox,
/// checkpoint).
fn key_partition(k: &[u8], n: u32) -> Result<Option<u32>> {
    let user = |ukey: &[u8]| -> Result<Option<u32>> {
        let (tenant, user) = split_user_key(ukey)?;
        Ok(Some(partition::of_user(&tenant, &user, n)))
    };
    let short = || corrupt("index key", "short");
    match k.first() {
        Some(b'u' | b'l') => user(&k[1..]),
        Some(b'x') => user(k.get(9..).ok_or_else(short)?),
        Some(b'y') => user(k.get(25..).ok_or_else(short)?),
        Some(b'c' | b'k') => {
            let (tenant, ip) = split_user_key(&k[1..])?;
            Ok(Some(partition::of_ip(&tenant, &ip, n)))
        }
        _ => Ok(None),
    }
}

impl Store {
    /// The partitions whose states this store holds complete up to its checkpoint; `None`:
    /// every one (a store one process folded alone, as before contract v2).
    pub fn partitions(&self) -> Result<Option<Set>> {
        match self.db()?.get(PARTITIONS)? {
            None => Ok(None),
            Some(v) => Set::from_bytes(&v).map(Some).ok_or_else(|| corrupt("partitions", "not a partition set")),
        }
    }

    /// Records that the store holds `set` complete up to its checkpoint (after a run that
    /// folded `set` released some of them, say). Keys of the others stay as they are.
    pub fn set_partitions(&self, set: &Set) -> Result<()> {
        self.db()?.insert(PARTITIONS, set.to_bytes())?;
        Ok(())
    }

    /// Takes `gained` over from `scratch`, a store a catch-up folded up to this store's
    /// checkpoint with only `gained` owned: in one batch, every key of `gained`'s users and
    /// IPs here is replaced by `scratch`'s, `scratch`'s outbox is added, and the recorded set
    /// becomes `owned` ∪ `gained`. Tenant state (policies, IP blocks) stays this store's: both
    /// folded the same tenant events up to the same sequence.
    pub fn take_partitions(&self, scratch: &Store, owned: &Set, gained: &Set) -> Result<u64> {
        let n = gained.count();
        let db = self.db()?;
        let mut b = sled::Batch::default();
        let mut moved = 0u64;
        for prefix in PARTITIONED {
            for kv in db.scan_prefix([prefix]) {
                let (k, _) = kv?;
                if key_partition(&k, n)?.is_some_and(|p| gained.contains(p)) {
                    b.remove(k);
                }
            }
            for kv in scratch.db()?.scan_prefix([prefix]) {
                let (k, v) = kv?;
                if key_partition(&k, n)?.is_some_and(|p| gained.contains(p)) {
                    b.insert(k, v);
                    moved += 1;
                }
            }
        }
        for kv in scratch.db()?.scan_prefix(b"o") {
            let (k, v) = kv?;
            b.insert(k, v);
        }
        let mut all = owned.clone();
        for p in gained.iter() {
            all.insert(p);
        }
        b.insert(PARTITIONS, all.to_bytes());
        db.apply_batch(b)?;
        Ok(moved)
    }
}
