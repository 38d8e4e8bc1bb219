//! Partitions (contract v2, "Several lockoutd processes"): which partitions' states a store
//! holds complete up to its checkpoint, and taking over partitions that a catch-up folded into
//! a scratch store.
//!
//! A store folded by one process alone records nothing (every partition is complete). A
//! process that folds a subset records it (`m partitions`) and deletes the keys of the
//! partitions outside it (another process folds them now), so indexes such as the due
//! expiries hold only its own. Taking a partition over replaces every key of its users (`u`, `l`, `x`, `y`) and
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

fn meta_key(name: &str) -> Vec<u8> {
    let mut k = b"m".to_vec();
    k.extend_from_slice(name.as_bytes());
    k
}

/// Removes (into `b`) every key of `db` of a partition (out of `n`) that `drop` selects.
fn remove_partitioned(db: &sled::Db, b: &mut sled::Batch, drop: impl Fn(u32) -> bool, n: u32) -> Result<u64> {
    let mut removed = 0;
    for prefix in PARTITIONED {
        for kv in db.scan_prefix([prefix]) {
            let (k, _) = kv?;
            if key_partition(&k, n)?.is_some_and(&drop) {
                b.remove(k);
                removed += 1;
            }
        }
    }
    Ok(removed)
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

    /// Records that the store holds `set` complete up to its checkpoint, and nothing of the
    /// other partitions: their keys are deleted in the same batch (another process folds them
    /// now; a later take-over brings them back from a catch-up). Returns the keys deleted.
    pub fn set_partitions(&self, set: &Set) -> Result<u64> {
        let db = self.db()?;
        let mut b = sled::Batch::default();
        let dropped = remove_partitioned(&db, &mut b, |p| !set.contains(p), set.count())?;
        b.insert(PARTITIONS, set.to_bytes());
        db.apply_batch(b)?;
        Ok(dropped)
    }

    /// A value lockoutd keeps about the store itself (`m<name>`): its id, the run that last
    /// opened it, the claims its partitions were folded under.
    pub fn meta(&self, name: &str) -> Result<Option<Vec<u8>>> {
        Ok(self.db()?.get(meta_key(name))?.map(|v| v.to_vec()))
    }

    /// Writes [`Store::meta`] `name` durably.
    pub fn set_meta(&self, name: &str, value: &[u8]) -> Result<()> {
        self.db()?.insert(meta_key(name), value)?;
        self.flush()
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
        remove_partitioned(&db, &mut b, |p| gained.contains(p), n)?;
        for prefix in PARTITIONED {
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
