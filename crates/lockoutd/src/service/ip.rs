//! The ops of IP blocks (contract v2, "IP blocks"): `ip_status`, `ip_blocks` (an extension),
//! the block a `status` with an `ip` consults, and `unlock_many`.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use lockout_core::ip::IpBlockState;
use lockout_proto::command::{
    IpBlocksReply, IpBlocksRequest, IpStatusReply, UnlockManyReply, UnlockManyRequest, UNLOCK_MANY_MAX,
};
use lockout_proto::event::{canonical_ip, check_admin, parse_ip, Event, EventKind, Unlock};
use lockout_proto::subject::{EventSubject, Target};
use lockout_proto::{CompactString, Tenant};
use uuid::Uuid;

use super::{append_all, decode_cursor, event_id, user_id, wait_folded, write_caller, Fail};
use crate::Shared;

/// `unlock_many`: selects up to a page of users ([`crate::bulk`]), appends one guarded
/// `unlock` per user (unless `dry_run`), waits until they are folded, and names them.
/// Users an `unlock_many` selects: a page (up to its `limit`) with their locks, and how many
/// are selected in all (after the cursor).
pub(crate) struct Selection {
    pub page: Vec<(String, Uuid)>,
    pub selected: usize,
}

/// Selects among the users `keep` accepts (this process's partitions, when several share them).
pub(crate) fn select(
    shared: &Shared,
    tenant: &Tenant,
    r: &UnlockManyRequest,
    keep: impl Fn(&str) -> bool,
) -> Result<Selection, Fail> {
    let now = shared.server_now_ms();
    let selector = crate::bulk::Selector::new(r, now)?;
    let limit = crate::bulk::page_size(r)?;
    let after = r.after.as_deref().map(decode_cursor).transpose()?;
    let mut page: Vec<(String, Uuid)> = Vec::new();
    let mut selected = 0usize;
    for item in shared.store.users_after(tenant.as_str(), after.as_deref()) {
        let (user, state) = item?;
        if !keep(&user) {
            continue;
        }
        let Some(lock_event) = selector.selects(&state, now) else { continue };
        selected += 1;
        if selected > UNLOCK_MANY_MAX {
            return Err(crate::bulk::too_many(selected));
        }
        if page.len() < limit {
            page.push((user, lock_event));
        }
    }
    Ok(Selection { page, selected })
}

pub(super) async fn unlock_many(
    shared: &Shared,
    msg: &async_nats::Message,
    tenant: &Tenant,
    r: UnlockManyRequest,
) -> Result<UnlockManyReply, Fail> {
    crate::bulk::Selector::new(&r, shared.server_now_ms())?;
    let limit = crate::bulk::page_size(&r)?;
    check_admin(&r.actor, r.reason.as_deref())?;
    r.after.as_deref().map(decode_cursor).transpose()?;
    let caller = write_caller(shared, msg)?;
    let request = event_id(msg)?;
    // With several processes each selects among its partitions' users.
    let spread = super::route::spread(shared);
    let Selection { page, selected } = if spread {
        super::route::gather_selection(shared, tenant, msg, limit).await?
    } else {
        select(shared, tenant, &r, |_| true)?
    };
    let next =
        (selected > page.len()).then(|| page.last().map(|(u, _)| URL_SAFE_NO_PAD.encode(u.as_bytes()))).flatten();
    let users: Vec<CompactString> = page.iter().map(|(u, _)| u.as_str().into()).collect();
    if !r.dry_run {
        let events: Vec<(String, Event)> = page
            .into_iter()
            .map(|(user, lock_event)| {
                let u = user_id(&user)?;
                let e = Event::Unlock(Unlock {
                    id: crate::bulk::unlock_event_id(request, tenant.as_str(), &user),
                    at: shared.clock.now_ms(),
                    tenant: tenant.as_str().into(),
                    user: user.as_str().into(),
                    actor: r.actor.clone(),
                    reason: r.reason.clone(),
                    caller: caller.clone(),
                    lock_event: Some(lock_event),
                });
                e.check(&EventSubject {
                    tenant: tenant.clone(),
                    target: Target::User(u.clone()),
                    kind: EventKind::Unlock,
                })?;
                Ok((shared.config.subjects.user_event(tenant, &u, EventKind::Unlock), e))
            })
            .collect::<Result<_, Fail>>()?;
        let last = append_all(shared, msg, events).await?;
        if spread {
            super::route::wait_all_folded(shared, tenant, last).await?;
        } else {
            wait_folded(shared, last).await?;
        }
    }
    Ok(UnlockManyReply { unlocked: u32::try_from(users.len()).unwrap_or(u32::MAX), users, next })
}

/// One page of the tenant's IP blocks in force; the cursor is the base64url of the last IP.
pub(super) fn ip_blocks_page(shared: &Shared, tenant: &Tenant, r: &IpBlocksRequest) -> Result<IpBlocksReply, Fail> {
    let limit = r.page_size()? as usize;
    let after = r.after.as_deref().map(decode_cursor).transpose()?;
    let now = shared.server_now_ms();
    let mut ips = Vec::with_capacity(limit.min(128));
    let mut more = false;
    for item in shared.store.ip_blocks_after(tenant.as_str(), after.as_deref()) {
        let (ip, block) = item?;
        if !block.in_force(now) {
            continue;
        }
        if ips.len() == limit {
            more = true;
            break;
        }
        ips.push(ip_status(shared, tenant, &ip)?);
    }
    let next = if more { ips.last().map(|s: &IpStatusReply| URL_SAFE_NO_PAD.encode(s.ip.as_bytes())) } else { None };
    Ok(IpBlocksReply { ips, next })
}

/// The canonical text of a request's `ip`, or a 400 that says what is wrong.
pub(super) fn canonical(ip: &str) -> Result<CompactString, Fail> {
    parse_ip("ip", ip)?;
    Ok(canonical_ip(ip).expect("parsed above"))
}

/// The `ip_status` reply of `ip` (canonical) of `tenant` now.
pub(super) fn ip_status(shared: &Shared, tenant: &Tenant, ip: &str) -> Result<IpStatusReply, Fail> {
    let now = shared.server_now_ms();
    let stored = shared.store.ip_block(tenant.as_str(), ip)?;
    let policy = shared.store.policy_or_default(tenant.as_str())?;
    let count = shared.store.ip_count(tenant.as_str(), ip)?.unwrap_or_default();
    let (failures, users) = count.window(&policy, now, stored.as_ref());
    let block = stored.filter(|b| b.in_force(now));
    Ok(IpStatusReply {
        ip: ip.into(),
        blocked: block.is_some(),
        blocked_until: block.as_ref().and_then(|b| b.blocked_until),
        failures,
        users,
        block_event: block.map(|b| b.block_event),
    })
}

/// The block of `ip` (canonical) of `tenant` if it is in force now.
pub(super) fn ip_block_in_force(shared: &Shared, tenant: &Tenant, ip: &str) -> Result<Option<IpBlockState>, Fail> {
    let now = shared.server_now_ms();
    Ok(shared.store.ip_block(tenant.as_str(), ip)?.filter(|b| b.in_force(now)))
}
