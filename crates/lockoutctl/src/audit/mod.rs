//! The auditor's commands: history, explain, state-at, export, simulate.
//!
//! Each reads the event history with an ordered consumer and folds it with `lockout-core`,
//! using JetStream's stored time as the clock exactly as lockoutd does. Why each event did
//! what it did comes from the fold itself ([`lockout_core::Why`]); this module keeps no rule of
//! its own.
//!
//! - [`track`]: one user's state through the history, with every lock and the counted failures.
//! - [`history`]: a user's history folded and rendered (`history`, `explain`), without I/O.
//! - [`export`], [`simulate`]: the tenant-wide commands.

pub mod export;
pub mod history;
pub mod simulate;
pub mod track;

use std::io::Write;

use lockout_proto::event::EventKind;
use lockout_proto::Millis;
use serde_json::{json, Value};

pub use export::export;
use history::UserHistory;
pub use simulate::simulate;

use crate::cli::{HistoryArgs, StateAtArgs, UserArgs};
use crate::ctx::{self, Ctx};
use crate::events::{self, Range};
use crate::{exit, fmt, Exit};

/// Reads and folds a user's history (user events + the tenant's events: policies, IP blocks) up to `stop_after`
/// (stored time).
async fn fold_user(
    ctx: &Ctx,
    tenant: &str,
    user: &str,
    stop_after: Option<Millis>,
    keep_lines: bool,
) -> anyhow::Result<UserHistory> {
    let t = ctx::tenant(tenant)?;
    let u = ctx::user(user)?;
    let filters: Vec<String> = std::iter::once(ctx.subjects.user_events_filter(&t, &u))
        .chain(EventKind::all().filter(|k| k.is_tenant_event()).map(|k| ctx.subjects.tenant_event(&t, k)))
        .collect();
    let mut h = UserHistory::new(tenant, user, keep_lines);
    let subjects = ctx.subjects.clone();
    events::read(ctx, &ctx.subjects.events_stream(), filters, Range::default(), None, async |raw| {
        if stop_after.is_some_and(|s| raw.time > s) {
            return Ok(false);
        }
        h.push(raw.seq, raw.subject(), raw.time, events::accept(&subjects, &raw));
        Ok(true)
    })
    .await?;
    Ok(h)
}

fn no_events(a: &str, tenant: &str, more: &str) -> anyhow::Error {
    Exit::new(exit::NOT_FOUND, format!("no events of user {a:?} in tenant {tenant}{more}")).into()
}

pub async fn history(ctx: &Ctx, a: HistoryArgs, out: &mut dyn Write) -> anyhow::Result<()> {
    let since = fmt::parse_opt_time(a.since.as_deref(), "--since")?;
    let until = fmt::parse_opt_time(a.until.as_deref(), "--until")?;
    let h = fold_user(ctx, &a.tenant, &a.user, until, true).await?;
    if h.track.events == 0 {
        return Err(no_events(&a.user, &a.tenant, ""));
    }
    if !ctx.json {
        return Ok(h.history_text(since, out)?);
    }
    let list: Vec<Value> = h
        .lines
        .iter()
        .filter(|l| since.is_none_or(|s| l.time >= s))
        .map(|l| {
            json!({
                "seq": l.seq, "subject": l.subject, "time": l.time, "time_utc": fmt::time(l.time),
                "type": l.kind, "event": l.body, "why": l.why, "status": l.status,
            })
        })
        .collect();
    serde_json::to_writer_pretty(&mut *out, &json!({ "tenant": h.tenant, "user": h.user, "events": list }))?;
    writeln!(out)?;
    Ok(())
}

pub async fn explain(ctx: &Ctx, a: UserArgs, out: &mut dyn Write) -> anyhow::Result<()> {
    let h = fold_user(ctx, &a.tenant, &a.user, None, false).await?;
    if h.track.events == 0 {
        return Err(no_events(&a.user, &a.tenant, ": never seen, so not locked"));
    }
    let now = lockout_nats::clock::now_ms();
    if !ctx.json {
        return Ok(h.explain_text(now, out)?);
    }
    let status = h.status_at(now);
    let lock = h.track.locks.last().filter(|l| status.locked && l.ended.is_none());
    let blocked = h.track.state.lock.as_ref().filter(|_| status.locked);
    let counted = |list: &[track::Counted]| -> Vec<Value> {
        list.iter()
            .map(|c| json!({ "seq": c.seq, "time": c.time, "ip": c.ip, "client": c.client, "factor": c.factor }))
            .collect()
    };
    let v = json!({
        "status": status,
        "policy": h.policy.policy,
        "policy_set": h.policy.set.as_ref().map(|(seq, t, actor)| json!({ "seq": seq, "time": t, "actor": actor })),
        "lock": lock.map(|l| json!({
            "seq": l.seq, "at": l.at, "until": l.until, "reason": l.reason, "actor": l.actor,
            "trip": l.trip.as_ref().map(|(ip, c)| json!({ "ip": ip, "client": c })),
            "sources": l.sources, "counted": counted(&l.counted),
        })),
        "blocked": blocked.map(|b| json!({ "attempts": b.blocked, "sources": b.blocked_sources })),
        "counted": counted(&h.track.counted),
        "sources": h.track.state.ranked_sources(),
        "events": h.track.events,
        // What the service's `explain` op answers, from the same events.
        "explain": h.explainer.clone().finish(now),
    });
    serde_json::to_writer_pretty(&mut *out, &v)?;
    writeln!(out)?;
    Ok(())
}

pub async fn state_at(ctx: &Ctx, a: StateAtArgs, out: &mut dyn Write) -> anyhow::Result<()> {
    let at = fmt::parse_time(&a.time, "TIME")?;
    let h = fold_user(ctx, &a.tenant, &a.user, Some(at), false).await?;
    let status = h.status_at(at);
    if ctx.json {
        serde_json::to_writer_pretty(&mut *out, &json!({ "at": at, "events": h.track.events, "status": status }))?;
        writeln!(out)?;
        return Ok(());
    }
    writeln!(out, "as of {} ({} event(s) folded):", fmt::time(at), h.track.events)?;
    write!(out, "{}", fmt::status_block(&status))?;
    Ok(())
}
