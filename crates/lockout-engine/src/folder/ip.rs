//! The folder's IP counts and blocks (contract v2, "IP blocks"): the counts in memory in
//! front of the store, their sweep, counting a failure, folding the IP events.

use lockout_core::ip::{IpBlockState, IpCount};
use lockout_proto::event::{self, Event};
use lockout_proto::{CompactString, Millis, Notice, Policy};

use super::{BatchFolder, IpKey, IpOriginal, IP_COUNTS_SWEPT_PER_BATCH};
use crate::cache::HashMap;

impl BatchFolder {
    /// The count of `key` as folded so far (from memory, else the store), remembering what
    /// block and count the IP had before this batch.
    pub(super) fn ip_count<'a>(
        &'a mut self,
        ips: &mut HashMap<IpKey, IpOriginal>,
        key: &IpKey,
    ) -> Result<&'a mut IpCount, lockout_store::Error> {
        if !self.ip_counts.contains_key(key) {
            let stored =
                if self.ip_counts_complete { None } else { self.store.ip_count(&key.0, &key.1)? }.unwrap_or_default();
            self.ip_counts.insert(key.clone(), stored);
        }
        let count = self.ip_counts.get_mut(key).expect("inserted above");
        if !ips.contains_key(key) {
            ips.insert(key.clone(), IpOriginal { block: self.ip_blocks.get(key).cloned(), count: count.clone() });
        }
        Ok(count)
    }

    /// Drops the stale counts (every failure out of the window at `now`, the batch's last stored
    /// time; no decision pending) among the next [`IP_COUNTS_SWEPT_PER_BATCH`] stored ones. The
    /// folder is the counts' only writer, so the drop goes into this batch's commit like any
    /// other change. Counting is not replayed: dropping a count that the next failure would
    /// have pruned anyway changes no decision.
    pub(super) fn sweep_ip_counts(
        &mut self,
        ips: &mut HashMap<IpKey, IpOriginal>,
        now: Millis,
    ) -> Result<(), lockout_store::Error> {
        if self.ip_counts_complete && self.ip_counts.is_empty() {
            // Nothing was ever counted: nothing to sweep, no store read.
            return Ok(());
        }
        // Best effort: a store that cannot be read now (a failed disk) fails the commit that
        // follows anyway; the sweep is not worth failing the fold for.
        let Ok((slice, last)) = self.store.ip_counts_after(self.sweep_after.as_deref(), IP_COUNTS_SWEPT_PER_BATCH)
        else {
            return Ok(());
        };
        self.sweep_after = if slice.len() < IP_COUNTS_SWEPT_PER_BATCH { None } else { last };
        for (tenant, ip, _) in slice {
            let key: IpKey = (tenant.as_str().into(), ip.as_str().into());
            let policy = self.policy(&tenant)?;
            // The latest count: this batch's or one in flight, else the store's.
            if self.ip_count(ips, &key)?.is_stale(&policy, now) {
                *self.ip_count(ips, &key)? = IpCount::default();
            }
        }
        Ok(())
    }

    /// Counts a failure towards its IP's spraying count (contract v2, "IP blocks"); a count
    /// that reaches `ip_max_failures` holds the `ip_block` event to append as pending (lockoutd
    /// appends it once the commit has landed and the backlog is folded).
    pub(super) fn count_ip_failure(
        &mut self,
        ips: &mut HashMap<IpKey, IpOriginal>,
        policy: &Policy,
        a: &event::Attempt,
        time: Millis,
    ) -> Result<(), lockout_store::Error> {
        let Some(ip) = event::canonical_ip(&a.source_ip) else { return Ok(()) };
        if !self.owns_ip(&a.tenant, &ip) {
            return Ok(());
        }
        let key: IpKey = (a.tenant.clone(), ip);
        let block = self.ip_blocks.get(&key).cloned();
        let count = self.ip_count(ips, &key)?;
        lockout_core::ip::count_failure(policy, count, block.as_ref(), &key.0, &key.1, &a.user, a.id, time);
        Ok(())
    }

    /// Folds an `ip_block`, `ip_unblock` or `ip_expired` event into its IP's block and count.
    pub(super) fn fold_ip_event(
        &mut self,
        ips: &mut HashMap<IpKey, IpOriginal>,
        event: &Event,
        time: Millis,
    ) -> Result<Vec<Notice>, lockout_store::Error> {
        let Some(ip) = ip_of(event) else { return Ok(Vec::new()) };
        let key: IpKey = (event.tenant().into(), ip.into());
        let mut block = self.ip_blocks.get(&key).cloned();
        let notices = if self.owns_ip(&key.0, &key.1) {
            let count = self.ip_count(ips, &key)?;
            lockout_core::ip::fold_ip_event(&mut block, count, event, time)
        } else {
            // Every process applies the block; its count and notices are its owner's (a
            // block's course never depends on the count).
            ips.entry(key.clone()).or_insert_with(|| IpOriginal { block: block.clone(), count: IpCount::default() });
            lockout_core::ip::fold_ip_event(&mut block, &mut IpCount::default(), event, time);
            Vec::new()
        };
        match block {
            Some(b) => self.ip_blocks.insert(key, b),
            None => self.ip_blocks.remove(&key),
        };
        Ok(notices)
    }

    /// The block of `ip` (canonical) of `tenant` as folded so far, if any.
    pub fn ip_block(&self, tenant: &str, ip: &str) -> Option<&IpBlockState> {
        self.ip_blocks.get(&(CompactString::from(tenant), CompactString::from(ip)))
    }
}

/// The IP an IP event is about.
pub(super) fn ip_of(event: &Event) -> Option<&str> {
    match event {
        Event::IpBlock(e) => Some(&e.ip),
        Event::IpUnblock(e) => Some(&e.ip),
        Event::IpExpired(e) => Some(&e.ip),
        _ => None,
    }
}
