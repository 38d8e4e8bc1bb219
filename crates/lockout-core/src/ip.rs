//! Per-IP blocks against password spraying (contract v2, "IP blocks").
//!
//! Three jobs, as `ARCHITECTURE.md` ("Where a rule that spans users belongs") sets out:
//!
//! - **Counting** ([`count_failure`]): each failure's IP, per tenant, in a sliding window of
//!   `ip_window_seconds` ([`IpCount`]). It is folded from the user events the projector
//!   folds, is never replayed, and keeps only the failures inside the window.
//! - **Deciding**: when an IP's count reaches `ip_max_failures`, counting returns the
//!   `ip_block` event to append, with an id derived from the tripping failure's; the count
//!   holds it as `pending` until the event is folded, counting nothing meanwhile.
//! - **Applying** ([`fold_ip_event`]): the tenant's `ip_block`, `ip_unblock` and `ip_expired`
//!   events, in stream order, give the blocks in force ([`IpBlockState`]) and the
//!   `ip_blocked`/`ip_unblocked` notices. A block applies to the events stored after it.
//!
//! Pure functions like the user fold: no I/O, no clock; the caller passes stored times.

use lockout_proto::event::{Event, IpBlock, SAMPLE_USERS_MAX};
use lockout_proto::notice::{How, IpBlockedNotice, IpUnblockedNotice};
use lockout_proto::{CompactString, Millis, Notice, Policy};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::ids::{self, NoticeKind};
use crate::EXPIRED_EARLY_ALLOWANCE_MS;

/// A block in force for one IP of a tenant (what `ip_block` started).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IpBlockState {
    /// The `ip_block` event that started it.
    #[serde(with = "lockout_proto::uuid16")]
    pub block_event: Uuid,
    /// Its stored time.
    pub blocked_at: Millis,
    /// `None`: until an admin unblocks.
    pub blocked_until: Option<Millis>,
    pub failures: u32,
    pub users: u32,
}

impl IpBlockState {
    /// Whether the block holds at `at` (it ends at `blocked_until`, whether or not its
    /// `ip_expired` event has been folded yet).
    pub fn in_force(&self, at: Millis) -> bool {
        self.blocked_until.is_none_or(|u| at < u)
    }
}

/// One IP's recent failures across a tenant's users: only those inside the window, each with
/// a hash of its user (for the distinct-user count), and up to [`SAMPLE_USERS_MAX`] user ids.
/// Bounded by `min(failures in the window, ip_max_failures)`: reaching `ip_max_failures`
/// empties it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IpCount {
    /// (stored time, FNV-1a of the user id) of each failure in the window, oldest first.
    pub failures: Vec<(Millis, u32)>,
    /// Users it failed against, first seen first, each still among `failures`.
    pub sample_users: Vec<CompactString>,
    /// The `ip_block` event decided and not yet folded: counting waits for it.
    pub pending: Option<Box<IpBlock>>,
}

impl IpCount {
    pub fn is_empty(&self) -> bool {
        self.failures.is_empty() && self.pending.is_none()
    }

    /// (failures, distinct users) within the window ending at `now`: the `ip_status` view.
    /// `block` is the IP's stored block: a block that ran out leaves only the failures after
    /// its end (the count restarts at 0), even before its `ip_expired` is folded.
    pub fn window(&self, policy: &Policy, now: Millis, block: Option<&IpBlockState>) -> (u32, u32) {
        let ended = block.filter(|b| !b.in_force(now)).and_then(|b| b.blocked_until).map_or(0, |u| u.saturating_sub(1));
        let from = window_start(policy, now).max(ended);
        let recent = || self.failures.iter().filter(move |(t, _)| *t > from);
        (u32::try_from(recent().count()).unwrap_or(u32::MAX), distinct(recent().map(|(_, h)| *h)))
    }

    /// Whether the count may be dropped (what lockoutd's sweep does): no decision waits and
    /// every failure is older than the window ending at `now` and than [`SWEEP_HORIZON_MS`].
    /// The horizon keeps a count a later, longer `ip_window_seconds` could still use, so a
    /// sweep (which a rebuild does at other moments) changes no decision unless the window
    /// grows past it.
    pub fn is_stale(&self, policy: &Policy, now: Millis) -> bool {
        let from = window_start(policy, now).min(now.saturating_sub(SWEEP_HORIZON_MS));
        self.pending.is_none() && self.failures.last().is_none_or(|(t, _)| *t <= from)
    }

    /// Forgets the failures (a block ended): counting starts over from 0.
    fn restart(&mut self) {
        self.failures.clear();
        self.sample_users.clear();
    }

    /// Drops the failures at or before `from`, and the sample users no longer among them.
    fn prune(&mut self, from: Millis) {
        let keep = self.failures.partition_point(|(t, _)| *t <= from);
        if keep > 0 {
            self.failures.drain(..keep);
            let hashes: std::collections::HashSet<u32> = self.failures.iter().map(|(_, h)| *h).collect();
            self.sample_users.retain(|u| hashes.contains(&user_hash(u)));
        }
    }
}

/// How long a count stays after its last failure at least, whatever the window (7 days).
pub const SWEEP_HORIZON_MS: Millis = 7 * 86_400_000;

fn window_start(policy: &Policy, now: Millis) -> Millis {
    now.saturating_sub(u64::from(policy.ip_window_seconds) * 1000)
}

fn distinct(hashes: impl Iterator<Item = u32>) -> u32 {
    let set: std::collections::HashSet<u32> = hashes.collect();
    u32::try_from(set.len()).unwrap_or(u32::MAX)
}

/// The hash an [`IpCount`] keeps per failure to count distinct users: 32-bit FNV-1a of the
/// user id (two users may share one; `users` then counts them once).
pub fn user_hash(user: &str) -> u32 {
    lockout_proto::partition::fnv1a32(user.as_bytes().iter())
}

/// Counts a failure of `user` from `ip` (canonical) of `tenant` at stored time `at`, caused by
/// event `event_id`. Not counted when spraying detection is off (`ip_max_failures` 0), while
/// a block is in force for the IP (`block`), or while a block is decided and not yet folded.
/// Returns the `ip_block` event to append when the failure reaches `ip_max_failures`; the
/// count then holds it as pending and starts over from 0.
#[allow(clippy::too_many_arguments)]
pub fn count_failure(
    policy: &Policy,
    count: &mut IpCount,
    block: Option<&IpBlockState>,
    tenant: &str,
    ip: &str,
    user: &str,
    event_id: Uuid,
    at: Millis,
) -> Option<IpBlock> {
    if policy.ip_max_failures == 0 || block.is_some_and(|b| b.in_force(at)) || count.pending.is_some() {
        return None;
    }
    // When a block ends the count restarts at 0: a block that ran out (its `ip_expired` not
    // folded yet) leaves only failures after its end.
    let ended = block.and_then(|b| b.blocked_until).map_or(0, |u| u.saturating_sub(1));
    count.prune(window_start(policy, at).max(ended));
    let hash = user_hash(user);
    if count.sample_users.len() < SAMPLE_USERS_MAX && !count.failures.iter().any(|(_, h)| *h == hash) {
        count.sample_users.push(user.into());
    }
    // Stored times never go backwards within a stream; keep the order if they ever did.
    let at = count.failures.last().map_or(at, |(t, _)| at.max(*t));
    count.failures.push((at, hash));
    let failures = u32::try_from(count.failures.len()).unwrap_or(u32::MAX);
    if failures < policy.ip_max_failures {
        return None;
    }
    let event = IpBlock {
        id: ids::ip_block_event_id(tenant, ip, event_id),
        at,
        tenant: tenant.into(),
        ip: ip.into(),
        failures,
        users: distinct(count.failures.iter().map(|(_, h)| *h)),
        sample_users: count.sample_users.clone(),
        blocked_until: match policy.ip_block_seconds {
            0 => None,
            s => Some(at.saturating_add(u64::from(s) * 1000)),
        },
    };
    // The failures stay (`ip_status` shows them while they are in the window); nothing is
    // counted until the block has ended, and then from 0.
    count.pending = Some(Box::new(event.clone()));
    Some(event)
}

/// Folds a tenant's IP event (`ip_block`, `ip_unblock`, `ip_expired`; anything else changes
/// nothing) stored at `at` into the block of its IP (`block`) and that IP's count. Returns
/// the notices: `ip_blocked` for a new block, `ip_unblocked` exactly once per block, whichever
/// event ends it (an `ip_expired` or any IP event folded at or after `blocked_until` ends it
/// as expired, with the id derived from the block's event; an admin unblock with its own).
pub fn fold_ip_event(block: &mut Option<IpBlockState>, count: &mut IpCount, event: &Event, at: Millis) -> Vec<Notice> {
    let mut notices = Vec::new();
    let (tenant, ip) = match event {
        Event::IpBlock(e) => (&e.tenant, &e.ip),
        Event::IpUnblock(e) => (&e.tenant, &e.ip),
        Event::IpExpired(e) => (&e.tenant, &e.ip),
        _ => return notices,
    };
    // A block whose time has run out ends as expired before anything else happens to it;
    // the failures counted since its end stay (counting restarted at `blocked_until`).
    if let Some(b) = block.as_ref().filter(|b| !b.in_force(at)) {
        notices.push(expired_notice(tenant, ip, b, at));
        count.prune(b.blocked_until.unwrap_or(at).saturating_sub(1));
        *block = None;
    }
    match event {
        Event::IpBlock(e) => {
            // The decision is history now: counting resumes once the block ends. (A pending
            // decision of another id stays: it is appended and folded in its turn.)
            if count.pending.as_ref().is_some_and(|p| p.id == e.id) {
                count.pending = None;
            }
            if block.as_ref().is_some_and(|b| b.block_event == e.id) {
                // The same decision appended twice: one block.
                return notices;
            }
            if e.blocked_until.is_some_and(|u| u <= at) {
                // Over before it was stored (a copy stored late, or a decision a rebuild made
                // again long after): no block, no notice.
                return notices;
            }
            *block = Some(IpBlockState {
                block_event: e.id,
                blocked_at: at,
                blocked_until: e.blocked_until,
                failures: e.failures,
                users: e.users,
            });
            notices.push(Notice::IpBlocked(IpBlockedNotice {
                id: ids::scoped_notice_id(tenant, ip, e.id, NoticeKind::IpBlocked, SCOPE_IP, None),
                event_id: e.id,
                tenant: tenant.clone(),
                at,
                ip: ip.clone(),
                failures: e.failures,
                users: e.users,
                sample_users: e.sample_users.clone(),
                blocked_until: e.blocked_until,
                message: crate::message::ip_blocked(
                    ip,
                    e.failures,
                    e.users,
                    e.blocked_until.map(|u| u.saturating_sub(e.at) / 1000),
                ),
            }));
        }
        Event::IpUnblock(e) => {
            // An admin vouched for the IP: its count starts over, blocked or not.
            count.restart();
            if block.take().is_some() {
                notices.push(Notice::IpUnblocked(IpUnblockedNotice {
                    id: ids::scoped_notice_id(tenant, ip, e.id, NoticeKind::IpUnblocked, SCOPE_IP, None),
                    event_id: e.id,
                    tenant: tenant.clone(),
                    at,
                    ip: ip.clone(),
                    how: How::Admin,
                    actor: Some(e.actor.clone()),
                    caller: e.caller.clone(),
                }));
            }
        }
        Event::IpExpired(e) => {
            let due =
                |b: &IpBlockState| b.blocked_until.is_some_and(|u| at.saturating_add(EXPIRED_EARLY_ALLOWANCE_MS) >= u);
            if let Some(b) = block.as_ref().filter(|b| b.block_event == e.block_event && due(b)) {
                notices.push(expired_notice(tenant, ip, b, at));
                count.prune(b.blocked_until.unwrap_or(at).saturating_sub(1));
                *block = None;
            }
        }
        _ => {}
    }
    notices
}

/// The scope IP notices' ids are derived with.
pub const SCOPE_IP: &str = "ip";

fn expired_notice(tenant: &CompactString, ip: &CompactString, b: &IpBlockState, at: Millis) -> Notice {
    Notice::IpUnblocked(IpUnblockedNotice {
        id: ids::scoped_notice_id(tenant, ip, b.block_event, NoticeKind::IpExpired, SCOPE_IP, None),
        event_id: b.block_event,
        tenant: tenant.clone(),
        at,
        ip: ip.clone(),
        how: How::Expired,
        actor: None,
        caller: None,
    })
}
