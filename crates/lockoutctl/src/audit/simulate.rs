//! `lockoutctl simulate`: a tenant's real history folded again under another policy, and how
//! its automatic locks would have differed.

use std::collections::BTreeMap;
use std::io::Write;

use lockout_proto::event::Event;
use lockout_proto::status::LockReason;
use lockout_proto::{Millis, Policy};
use serde_json::{json, Value};

use super::track::{LockRecord, Track};
use crate::cli::SimulateArgs;
use crate::ctx::{self, Ctx};
use crate::events::{self, Range};
use crate::{fmt, Exit};

/// Automatic locks of a track within [since, until], with their minutes up to `horizon`.
fn auto_locks(
    t: &Track,
    since: Option<Millis>,
    until: Option<Millis>,
    horizon: Millis,
) -> (u64, f64, Option<&LockRecord>) {
    let mut n = 0;
    let mut minutes = 0.0;
    let mut first = None;
    for l in t.locks.iter().filter(|l| l.reason == LockReason::Failures) {
        if since.is_some_and(|s| l.at < s) || until.is_some_and(|u| l.at > u) {
            continue;
        }
        n += 1;
        first.get_or_insert(l);
        let end = match (&l.ended, l.until) {
            (Some((t, _)), _) => *t,
            (None, Some(u)) => u.min(horizon),
            (None, None) => horizon,
        };
        let end = until.map_or(end, |u| end.min(u));
        minutes += end.saturating_sub(l.at) as f64 / 60_000.0;
    }
    (n, minutes, first)
}

pub async fn simulate(ctx: &Ctx, a: SimulateArgs, out: &mut dyn Write) -> anyhow::Result<()> {
    let tenant = ctx::tenant(&a.tenant)?;
    let since = fmt::parse_opt_time(a.since.as_deref(), "--since")?;
    let until = fmt::parse_opt_time(a.until.as_deref(), "--until")?;
    let text = std::fs::read_to_string(&a.policy)
        .map_err(|e| Exit::usage(format!("reading --policy {}: {e}", a.policy.display())))?;
    let v: Value = serde_json::from_str(&text)
        .map_err(|e| Exit::bad_request(format!("{} is not JSON: {e}", a.policy.display())))?;
    let sim_policy = crate::admin::overlay_policy(&Policy::default(), &v, &a.policy.display().to_string())?;
    let filter = format!("{}.events.{}.>", ctx.subjects.prefix(), tenant);
    let subjects = ctx.subjects.clone();
    let mut actual_policy = Policy::default();
    let mut actual: BTreeMap<String, Track> = BTreeMap::new();
    let mut sim: BTreeMap<String, Track> = BTreeMap::new();
    let mut n = 0u64;
    // IP blocks (password spraying): those the history holds, and those the simulated policy
    // would have decided, each folded right after its tripping failure.
    let mut ip_blocks_actual = std::collections::BTreeSet::new();
    let mut sim_ips = SimulatedIps::default();
    events::read(ctx, &ctx.subjects.events_stream(), vec![filter], Range::default(), Some("simulate"), async |raw| {
        if until.is_some_and(|u| raw.time > u) {
            return Ok(false);
        }
        n += 1;
        match events::accept(&subjects, &raw) {
            Err(_) => {}
            Ok(Event::Policy(change)) => actual_policy = lockout_core::fold::fold_policy(&actual_policy, &change),
            Ok(Event::IpBlock(b)) => {
                if since.is_none_or(|s| raw.time >= s) {
                    ip_blocks_actual.insert(b.ip.to_string());
                }
            }
            Ok(Event::IpUnblock(_) | Event::IpExpired(_)) => {}
            Ok(e) => {
                if let Event::Attempt(a) = &e {
                    if a.outcome == lockout_proto::event::Outcome::Failure {
                        sim_ips.failure(&sim_policy, a, raw.time, since);
                    }
                }
                let user = e.user().unwrap_or_default().to_owned();
                actual.entry(user.clone()).or_default().apply(&actual_policy, &e, raw.seq, raw.time);
                sim.entry(user).or_default().apply(&sim_policy, &e, raw.seq, raw.time);
            }
        }
        Ok(true)
    })
    .await?;
    let horizon = until.unwrap_or_else(lockout_nats::clock::now_ms);
    let mut totals = [(0u64, 0u64, 0.0f64); 2];
    // Scope locks (contract v2) in the window: what a source-aware policy locks instead.
    let in_window = |t: &Millis| since.is_none_or(|s| *t >= s) && until.is_none_or(|u| *t <= u);
    let scope_locks = |tracks: &BTreeMap<String, Track>| -> u64 {
        tracks.values().map(|t| t.scope_locks.iter().filter(|(_, at)| in_window(at)).count() as u64).sum()
    };
    let scoped = [scope_locks(&actual), scope_locks(&sim)];
    let mut newly = Vec::new();
    let mut no_longer = Vec::new();
    for (user, at) in &actual {
        let st = &sim[user];
        let (an, am, _) = auto_locks(at, since, until, horizon);
        let (sn, sm, sfirst) = auto_locks(st, since, until, horizon);
        let (_, _, afirst) = auto_locks(at, since, until, horizon);
        for (i, (k, m)) in [(an, am), (sn, sm)].into_iter().enumerate() {
            totals[i].0 += k;
            totals[i].1 += u64::from(k > 0);
            totals[i].2 += m;
        }
        let entry = |k: u64, m: f64, first: Option<&LockRecord>| {
            json!({
                "user": user, "locks": k, "lock_minutes": (m * 10.0).round() / 10.0,
                "first_at": first.map(|l| l.at),
                "first_trip": first.and_then(|l| l.trip.as_ref()).map(|(ip, c)| fmt::source(ip, c.as_deref())),
            })
        };
        if sn > 0 && an == 0 {
            newly.push(entry(sn, sm, sfirst));
        } else if an > 0 && sn == 0 {
            no_longer.push(entry(an, am, afirst));
        }
    }
    let side =
        |t: &(u64, u64, f64)| json!({ "locks": t.0, "users_locked": t.1, "lock_minutes": (t.2 * 10.0).round() / 10.0 });
    if ctx.json {
        let v = json!({
            "tenant": tenant.as_str(), "events": n, "users": actual.len(), "policy": sim_policy,
            "actual": side(&totals[0]), "simulated": side(&totals[1]),
            "scope_locks": { "actual": scoped[0], "simulated": scoped[1] },
            "ip_blocks": { "actual": ip_blocks_actual.len(), "simulated": sim_ips.blocked.len() },
            "would_be_locked": newly, "would_not_be_locked": no_longer,
        });
        serde_json::to_writer_pretty(&mut *out, &v)?;
        writeln!(out)?;
        return Ok(());
    }
    writeln!(
        out,
        "tenant {tenant}: {n} event(s) of {} user(s) folded under {}",
        actual.len(),
        fmt::policy_line(&sim_policy)
    )?;
    writeln!(
        out,
        "automatic locks{}:",
        match (since, until) {
            (None, None) => String::new(),
            (s, u) => format!(" from {} to {}", fmt::opt_time(s), fmt::opt_time(u)),
        }
    )?;
    writeln!(out, "               {:>8} {:>10}", "actual", "simulated")?;
    writeln!(out, "  locks        {:>8} {:>10}", totals[0].0, totals[1].0)?;
    writeln!(out, "  users locked {:>8} {:>10}", totals[0].1, totals[1].1)?;
    writeln!(out, "  lock minutes {:>8.1} {:>10.1}", totals[0].2, totals[1].2)?;
    writeln!(out, "scope locks (only unfamiliar IPs or one client refused):")?;
    writeln!(out, "  locks        {:>8} {:>10}", scoped[0], scoped[1])?;
    writeln!(out, "IPs blocked (password spraying):")?;
    writeln!(out, "  IPs          {:>8} {:>10}", ip_blocks_actual.len(), sim_ips.blocked.len())?;
    for (title, list) in
        [("would have been locked (were not):", &newly), ("would not have been locked (were):", &no_longer)]
    {
        writeln!(out, "{title} {}", if list.is_empty() { "none" } else { "" })?;
        for e in list {
            writeln!(
                out,
                "  {}  {} lock(s), {} min, first at {} tripped by {}",
                e["user"].as_str().unwrap_or("-"),
                e["locks"],
                e["lock_minutes"],
                fmt::opt_time(e["first_at"].as_u64()),
                e["first_trip"].as_str().unwrap_or("-")
            )?;
        }
    }
    Ok(())
}

/// IP blocks as a policy would have decided them over a history: counting as lockoutd does,
/// each decision folded right after its tripping failure (lockoutd appends it within a tick).
#[derive(Default)]
struct SimulatedIps {
    counts: std::collections::HashMap<lockout_proto::CompactString, lockout_core::ip::IpCount>,
    blocks: std::collections::HashMap<lockout_proto::CompactString, lockout_core::ip::IpBlockState>,
    /// IPs blocked at least once in the window.
    blocked: std::collections::BTreeSet<String>,
}

impl SimulatedIps {
    fn failure(&mut self, policy: &Policy, a: &lockout_proto::event::Attempt, at: Millis, since: Option<Millis>) {
        let Some(ip) = lockout_proto::event::canonical_ip(&a.source_ip) else { return };
        let count = self.counts.entry(ip.clone()).or_default();
        let mut block = self.blocks.remove(&ip);
        if let Some(decided) =
            lockout_core::ip::count_failure(policy, count, block.as_ref(), &a.tenant, &ip, &a.user, a.id, at)
        {
            lockout_core::ip::fold_ip_event(&mut block, count, &Event::IpBlock(decided), at);
            if since.is_none_or(|s| at >= s) {
                self.blocked.insert(ip.to_string());
            }
        }
        if let Some(b) = block {
            self.blocks.insert(ip, b);
        }
    }
}
