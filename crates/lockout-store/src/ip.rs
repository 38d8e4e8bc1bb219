//! IP blocks and counts (contract v2, "IP blocks"): their keys (`b`, `c`, `k`, `z`, see the
//! crate docs), their part of a commit, and the reads of them.

use lockout_core::ip::{IpBlockState, IpCount};
use lockout_proto::event::IpBlock;
use lockout_proto::{CompactString, Millis};
use uuid::Uuid;

use crate::{corrupt, split_user_key, tenant_prefix, Commit, Result, Store};

/// A change of one IP's block (contract v2, "IP blocks").
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpBlockChange {
    pub tenant: CompactString,
    pub ip: CompactString,
    /// The block before the commit's events (to unindex its expiry).
    pub before: Option<IpBlockState>,
    pub after: Option<IpBlockState>,
}

/// A stored IP count: (tenant, IP, count).
pub type StoredIpCount = (String, String, IpCount);

/// A change of one IP's count.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpCountChange {
    pub tenant: CompactString,
    pub ip: CompactString,
    /// Whether the count held a pending decision before the commit's events (its `k` index
    /// entry then exists).
    pub was_pending: bool,
    pub count: IpCount,
}

/// The key of an IP within its tenant, after a one-byte prefix.
fn ip_key(prefix: u8, tenant: &str, ip: &str) -> Vec<u8> {
    let mut k = tenant_prefix(prefix, tenant);
    k.extend_from_slice(ip.as_bytes());
    k
}

fn ip_expiry_key(until: Millis, tenant: &str, ip: &str) -> Vec<u8> {
    let mut k = vec![b'z'];
    k.extend_from_slice(&until.to_be_bytes());
    k.extend_from_slice(&ip_key(b'z', tenant, ip)[1..]);
    k
}

/// Splits the part of an IP key after its prefix into tenant and IP.
fn split_ip_key(k: &[u8]) -> Result<(String, String)> {
    split_user_key(k).map_err(|_| corrupt("IP key", "short"))
}

/// Writes the IP blocks and counts of `c` into its batch.
pub(crate) fn write(b: &mut sled::Batch, c: &Commit) {
    for ch in &c.ip_blocks {
        if let Some(until) = ch.before.as_ref().and_then(|x| x.blocked_until) {
            b.remove(ip_expiry_key(until, &ch.tenant, &ch.ip));
        }
        match &ch.after {
            Some(after) => {
                b.insert(ip_key(b'b', &ch.tenant, &ch.ip), postcard::to_allocvec(after).expect("blocks always encode"));
                if let Some(until) = after.blocked_until {
                    b.insert(ip_expiry_key(until, &ch.tenant, &ch.ip), &after.block_event.as_bytes()[..]);
                }
            }
            None => b.remove(ip_key(b'b', &ch.tenant, &ch.ip)),
        }
    }
    for ch in &c.ip_counts {
        let (tenant, ip, count) = (&ch.tenant, &ch.ip, &ch.count);
        if count.is_empty() {
            b.remove(ip_key(b'c', tenant, ip));
        } else {
            b.insert(ip_key(b'c', tenant, ip), postcard::to_allocvec(count).expect("counts always encode"));
        }
        match (ch.was_pending, count.pending.is_some()) {
            (false, true) => b.insert(ip_key(b'k', tenant, ip), &[][..]),
            (true, false) => b.remove(ip_key(b'k', tenant, ip)),
            _ => {}
        }
    }
}

impl Store {
    /// The block of `ip` (canonical) of `tenant` as last folded, if any (it may have run out:
    /// see [`IpBlockState::in_force`]).
    pub fn ip_block(&self, tenant: &str, ip: &str) -> Result<Option<IpBlockState>> {
        self.db()?
            .get(ip_key(b'b', tenant, ip))?
            .map(|v| postcard::from_bytes(&v).map_err(|e| corrupt("IP block", e)))
            .transpose()
    }

    /// The stored IP blocks of `tenant` after the IP `after` (exclusive), by the IPs' text
    /// (some may have run out: see [`IpBlockState::in_force`]).
    pub fn ip_blocks_after<'a>(
        &'a self,
        tenant: &str,
        after: Option<&str>,
    ) -> impl Iterator<Item = Result<(String, IpBlockState)>> + 'a {
        self.tenant_range(b'b', tenant, after).map(|kv| {
            let (ip, v) = kv?;
            Ok((ip, postcard::from_bytes(&v).map_err(|e| corrupt("IP block", e))?))
        })
    }

    /// Every stored IP block: (tenant, IP, block), by tenant then IP.
    pub fn all_ip_blocks(&self) -> impl Iterator<Item = Result<(String, String, IpBlockState)>> + '_ {
        self.scan(|db| db.scan_prefix(b"b")).map(|kv| {
            let (k, v) = kv?;
            let (tenant, ip) = split_ip_key(&k[1..])?;
            Ok((tenant, ip, postcard::from_bytes(&v).map_err(|e| corrupt("IP block", e))?))
        })
    }

    /// The failures counted for `ip` (canonical) of `tenant`, if any.
    pub fn ip_count(&self, tenant: &str, ip: &str) -> Result<Option<IpCount>> {
        self.db()?
            .get(ip_key(b'c', tenant, ip))?
            .map(|v| postcard::from_bytes(&v).map_err(|e| corrupt("IP count", e)))
            .transpose()
    }

    /// Every stored IP count: (tenant, IP, count) (for tests and `make bench`).
    pub fn all_ip_counts(&self) -> impl Iterator<Item = Result<(String, String, IpCount)>> + '_ {
        self.scan(|db| db.scan_prefix(b"c")).map(|kv| {
            let (k, v) = kv?;
            let (tenant, ip) = split_ip_key(&k[1..])?;
            Ok((tenant, ip, postcard::from_bytes(&v).map_err(|e| corrupt("IP count", e))?))
        })
    }

    /// Up to `limit` stored IP counts after the key `after` (exclusive; `None`: from the first),
    /// with the key to pass as `after` next: (tenant, IP, count) in key order. Fewer than `limit`
    /// means the end was reached.
    pub fn ip_counts_after(&self, after: Option<&[u8]>, limit: usize) -> Result<(Vec<StoredIpCount>, Option<Vec<u8>>)> {
        let start = match after {
            Some(k) => {
                let mut k = k.to_vec();
                k.push(0);
                k
            }
            None => b"c".to_vec(),
        };
        let mut out = Vec::new();
        let mut last = None;
        for kv in self.db()?.range(start..b"d".to_vec()).take(limit) {
            let (k, v) = kv?;
            let (tenant, ip) = split_ip_key(&k[1..])?;
            out.push((tenant, ip, postcard::from_bytes(&v).map_err(|e| corrupt("IP count", e))?));
            last = Some(k.to_vec());
        }
        Ok((out, last))
    }

    /// Bytes the IP counts take as stored, keys included, and how many IPs they cover.
    pub fn ip_count_bytes(&self) -> Result<(u64, u64)> {
        let (mut bytes, mut n) = (0u64, 0u64);
        for kv in self.db()?.scan_prefix(b"c") {
            let (k, v) = kv?;
            bytes += (k.len() + v.len()) as u64;
            n += 1;
        }
        Ok((bytes, n))
    }

    /// The `ip_block` events decided and committed but not yet folded, at most `limit`.
    pub fn pending_ip_blocks(&self, limit: usize) -> Result<Vec<IpBlock>> {
        let db = self.db()?;
        let mut out = Vec::new();
        for kv in db.scan_prefix(b"k").take(limit) {
            let (k, _) = kv?;
            let (tenant, ip) = split_ip_key(&k[1..])?;
            if let Some(p) = self.ip_count(&tenant, &ip)?.and_then(|c| c.pending) {
                out.push(*p);
            }
        }
        Ok(out)
    }

    /// Timed IP blocks with `blocked_until` ≤ `now`, earliest first, at most `limit`:
    /// (tenant, IP, blocked_until, block event).
    pub fn due_ip_expiries(&self, now: Millis, limit: usize) -> Result<Vec<(String, String, Millis, Uuid)>> {
        let db = self.db()?;
        let mut end = vec![b'z'];
        end.extend_from_slice(&now.saturating_add(1).to_be_bytes());
        let mut due = Vec::new();
        for kv in db.range(&b"z"[..]..end.as_slice()).take(limit) {
            let (k, v) = kv?;
            let until = u64::from_be_bytes(k[1..9].try_into().map_err(|e| corrupt("IP expiry key", e))?);
            let (tenant, ip) = split_ip_key(&k[9..])?;
            let block_event = Uuid::from_slice(&v).map_err(|e| corrupt("IP expiry value", e))?;
            due.push((tenant, ip, until, block_event));
        }
        Ok(due)
    }
}
