//! The auditor's commands: history, explain, state-at, export, simulate.
//!
//! Each reads the event history with an ordered consumer and folds it with `lockout-core`,
//! using JetStream's stored time as the clock exactly as lockoutd does, and explains every
//! step ([`Track::apply`]).

use std::collections::BTreeMap;
use std::io::Write;

use lockout_core::UserState;
use lockout_proto::event::{Event, EventKind, Factor, Outcome};
use lockout_proto::notice::Source;
use lockout_proto::status::LockReason;
use lockout_proto::{Millis, Policy, Status};
use serde_json::{json, Value};

use crate::cli::{ExportArgs, HistoryArgs, SimulateArgs, StateAtArgs, UserArgs};
use crate::ctx::{self, Ctx};
use crate::events::{self, Range, Raw};
use crate::{exit, fmt, Exit};

/// A counted failure of the current streak.
#[derive(Debug, Clone)]
pub struct Counted {
    pub seq: u64,
    pub time: Millis,
    pub ip: String,
    pub client: Option<String>,
    pub factor: Factor,
}

/// A lock as the history shows it.
#[derive(Debug, Clone)]
pub struct LockRecord {
    pub seq: u64,
    pub at: Millis,
    pub until: Option<Millis>,
    pub reason: LockReason,
    /// The admin, for admin locks.
    pub actor: Option<String>,
    /// The attempt that tripped an automatic lock.
    pub trip: Option<(String, Option<String>)>,
    pub sources: Vec<Source>,
    /// The counted failures that led to it.
    pub counted: Vec<Counted>,
    /// When it ended and by whom (`None` = expired).
    pub ended: Option<(Millis, Option<String>)>,
}

/// One user's state through the history, with what the fold alone does not keep.
#[derive(Debug, Clone, Default)]
pub struct Track {
    pub state: UserState,
    pub counted: Vec<Counted>,
    pub locks: Vec<LockRecord>,
    pub events: u64,
}

fn outcome_word(o: Outcome, f: Factor) -> String {
    let o = match o {
        Outcome::Success => "success",
        Outcome::Failure => "failure",
    };
    match f {
        Factor::Password => o.to_owned(),
        Factor::Mfa => format!("mfa {o}"),
        Factor::RecoveryCode => format!("recovery_code {o}"),
    }
}

fn with_reason(text: String, reason: Option<&str>) -> String {
    match reason.filter(|r| !r.is_empty()) {
        Some(r) => format!("{text} (reason: {r})"),
        None => text,
    }
}

impl Track {
    fn close_lock(&mut self, at: Millis, by: Option<String>) {
        if let Some(l) = self.locks.last_mut().filter(|l| l.ended.is_none()) {
            l.ended = Some((at, by));
        }
    }

    /// Folds one user event at stored time `now` and says why the state changed.
    pub fn apply(&mut self, policy: &Policy, event: &Event, seq: u64, now: Millis) -> String {
        self.events += 1;
        let before = self.state.clone();
        let folded = lockout_core::fold(policy, before.clone(), event, now);
        let after = folded.state;
        let mut parts: Vec<String> = Vec::new();
        let expired_at = before.lock.as_ref().and_then(|l| l.locked_until).filter(|&u| u <= now);
        if let Some(u) = expired_at {
            self.close_lock(u, None);
            self.counted.clear();
            if !matches!(event, Event::Expired(_)) {
                parts.push(format!("lock expired at {}; then", fmt::time(u)));
            }
        }
        let was_locked = before.lock.is_some() && expired_at.is_none();
        let b_failures = if expired_at.is_some() { 0 } else { before.failures() };
        let max = policy.max_failures;
        match event {
            Event::Attempt(a) => {
                let src = fmt::source(&a.source_ip, a.client.as_deref());
                let what = outcome_word(a.outcome, a.factor);
                if was_locked {
                    parts.push(format!("blocked while locked: {what} from {src}"));
                } else if a.outcome == Outcome::Success {
                    let mut t = format!("{what} from {src}");
                    if b_failures > 0 && after.failures() == 0 {
                        t.push_str(": counter reset");
                    } else if b_failures > 0 {
                        t.push_str(&format!("; counter kept at {b_failures}/{max} (reset_on_success is off)"));
                    }
                    if before.mfa_reenrol && !after.mfa_reenrol {
                        t.push_str("; MFA re-enrolled");
                    }
                    parts.push(t);
                } else {
                    let counted = after.failures() != b_failures || after.last_failure_at != before.last_failure_at;
                    if !counted {
                        let why = if a.factor.is_mfa() && !policy.count_mfa_failures {
                            "count_mfa_failures is off"
                        } else if policy.dedupe_credential && a.credential.is_some() {
                            "its credential was already counted in this streak (dedupe_credential)"
                        } else {
                            "the policy does not count it"
                        };
                        parts.push(format!("{what} from {src} not counted: {why}"));
                    } else {
                        let restarted = after.failures() <= b_failures;
                        if restarted {
                            self.counted.clear();
                        }
                        self.counted.push(Counted {
                            seq,
                            time: now,
                            ip: a.source_ip.to_string(),
                            client: a.client.as_deref().map(str::to_owned),
                            factor: a.factor,
                        });
                        let n = after.failures();
                        let mut t = format!("{what} {n}/{max} from {src}");
                        if restarted && b_failures > 0 {
                            t.push_str(&format!(
                                " (new streak: {} s passed since the last failure)",
                                policy.window_seconds
                            ));
                        }
                        parts.push(t);
                        if let Some(lock) = &after.lock {
                            let sources = after.ranked_sources();
                            parts.push(format!(
                                "→ LOCKED {} — {n} failures from {} source{}: {} (automatic lock #{})",
                                fmt::until(lock.locked_until),
                                sources.len(),
                                if sources.len() == 1 { "" } else { "s" },
                                fmt::sources(&sources),
                                after.lock_count
                            ));
                            self.locks.push(LockRecord {
                                seq,
                                at: now,
                                until: lock.locked_until,
                                reason: LockReason::Failures,
                                actor: None,
                                trip: Some((a.source_ip.to_string(), a.client.as_deref().map(str::to_owned))),
                                sources,
                                counted: self.counted.clone(),
                                ended: None,
                            });
                        }
                    }
                }
            }
            Event::Unlock(u) => {
                if was_locked {
                    self.close_lock(now, Some(u.actor.to_string()));
                    parts.push(with_reason(format!("unlocked by {}", u.actor), u.reason.as_deref()));
                } else {
                    parts.push(with_reason(
                        format!("unlock by {} while not locked: counter reset", u.actor),
                        u.reason.as_deref(),
                    ));
                }
            }
            Event::Lock(l) => {
                if was_locked {
                    self.close_lock(now, Some(l.actor.to_string()));
                }
                let until = after.lock.as_ref().and_then(|x| x.locked_until);
                let mut t = format!("LOCKED by {} {}", l.actor, fmt::until(until));
                if was_locked {
                    t.push_str(", replacing the lock in force");
                }
                parts.push(with_reason(t, l.reason.as_deref()));
                self.locks.push(LockRecord {
                    seq,
                    at: now,
                    until,
                    reason: LockReason::Admin,
                    actor: Some(l.actor.to_string()),
                    trip: None,
                    sources: after.ranked_sources(),
                    counted: self.counted.clone(),
                    ended: None,
                });
            }
            Event::MfaReset(m) => {
                let removed = self.counted.iter().filter(|c| c.factor.is_mfa()).count();
                self.counted.retain(|c| !c.factor.is_mfa());
                parts.push(with_reason(
                    format!("MFA reset by {}: {removed} MFA failure(s) removed, re-enrolment required", m.actor),
                    m.reason.as_deref(),
                ));
            }
            Event::Expired(x) => {
                if let Some(u) = expired_at {
                    parts.push(format!("expired: the lock ended at {}", fmt::time(u)));
                } else if was_locked && after.lock.is_none() {
                    let until = before.lock.as_ref().and_then(|l| l.locked_until).unwrap_or(now);
                    self.close_lock(until, None);
                    parts.push(format!("expired: the lock ended at {}", fmt::time(until)));
                } else {
                    parts
                        .push(format!("expired (lock event {}): no effect, that lock had already ended", x.lock_event));
                }
            }
            Event::Policy(_) => parts.push("policy change".to_owned()),
        }
        if after.failures() == 0 && after.lock.is_none() {
            self.counted.clear();
        }
        self.state = after;
        parts.join(" ")
    }
}

/// The policy in force and where it came from.
#[derive(Debug, Clone, Default)]
pub struct PolicySource {
    pub policy: Policy,
    /// (seq, stored time, actor) of the policy event; `None` = the defaults.
    pub set: Option<(u64, Millis, String)>,
}

/// One event of a history, with the why and the status after it.
struct Line {
    raw_seq: u64,
    subject: String,
    time: Millis,
    kind: String,
    body: Value,
    why: String,
    status: Status,
}

/// Folds a user's history (user events + tenant policy events) up to `stop_after` (stored time).
struct UserHistory {
    tenant: String,
    user: String,
    policy: PolicySource,
    track: Track,
    lines: Vec<Line>,
}

async fn fold_user(
    ctx: &Ctx,
    tenant: &str,
    user: &str,
    stop_after: Option<Millis>,
    keep_lines: bool,
) -> anyhow::Result<UserHistory> {
    let t = ctx::tenant(tenant)?;
    let u = ctx::user(user)?;
    let filters = vec![ctx.subjects.user_events_filter(&t, &u), ctx.subjects.tenant_event(&t, EventKind::Policy)];
    let mut h = UserHistory {
        tenant: tenant.to_owned(),
        user: user.to_owned(),
        policy: PolicySource::default(),
        track: Track::default(),
        lines: Vec::new(),
    };
    let subjects = ctx.subjects.clone();
    events::read(ctx, &ctx.subjects.events_stream(), filters, Range::default(), None, async |raw: Raw| {
        if stop_after.is_some_and(|s| raw.time > s) {
            return Ok(false);
        }
        let (why, body) = match events::accept(&subjects, &raw) {
            Err(r) => (format!("refused by lockoutd ({}), no effect: {}", r.reason, r.message), Value::Null),
            Ok(Event::Policy(change)) => {
                let before = h.policy.policy;
                let new = lockout_core::fold::fold_policy(&before, &change);
                let changes = fmt::policy_changes(&before, &new);
                h.policy = PolicySource { policy: new, set: Some((raw.seq, raw.time, change.actor.to_string())) };
                let list: Vec<String> = changes.iter().map(|(k, b, a)| format!("{k} {b} -> {a}")).collect();
                let why = if list.is_empty() {
                    format!("policy set by {} (no change)", change.actor)
                } else {
                    format!("policy set by {}: {}", change.actor, list.join(", "))
                };
                (why, events::event_json(&Event::Policy(change)))
            }
            Ok(e) => (h.track.apply(&h.policy.policy, &e, raw.seq, raw.time), events::event_json(&e)),
        };
        if keep_lines {
            let status = lockout_core::status(&h.tenant, &h.user, &h.policy.policy, &h.track.state, raw.time);
            h.lines.push(Line {
                raw_seq: raw.seq,
                kind: events::subject_type(raw.subject()).to_owned(),
                subject: raw.subject().to_owned(),
                time: raw.time,
                body,
                why,
                status,
            });
        }
        Ok(true)
    })
    .await?;
    Ok(h)
}

pub async fn history(ctx: &Ctx, a: HistoryArgs, out: &mut dyn Write) -> anyhow::Result<()> {
    let since = fmt::parse_opt_time(a.since.as_deref(), "--since")?;
    let until = fmt::parse_opt_time(a.until.as_deref(), "--until")?;
    let h = fold_user(ctx, &a.tenant, &a.user, until, true).await?;
    if h.track.events == 0 {
        return Err(Exit::new(exit::NOT_FOUND, format!("no events of user {:?} in tenant {}", a.user, a.tenant)).into());
    }
    let shown: Vec<&Line> = h.lines.iter().filter(|l| since.is_none_or(|s| l.time >= s)).collect();
    if ctx.json {
        let list: Vec<Value> = shown
            .iter()
            .map(|l| {
                json!({
                    "seq": l.raw_seq, "subject": l.subject, "time": l.time, "time_utc": fmt::time(l.time),
                    "type": l.kind, "event": l.body, "why": l.why, "status": l.status,
                })
            })
            .collect();
        serde_json::to_writer_pretty(&mut *out, &json!({ "tenant": h.tenant, "user": h.user, "events": list }))?;
        writeln!(out)?;
        return Ok(());
    }
    writeln!(out, "history of {} in tenant {} ({} events shown; stored times, UTC)", h.user, h.tenant, shown.len())?;
    for l in shown {
        writeln!(out, "#{:<6} {}  {:<9} {}", l.raw_seq, fmt::time(l.time), l.kind, l.why)?;
        writeln!(out, "        state: {}", fmt::status_line(&l.status))?;
    }
    Ok(())
}

fn counted_line(c: &Counted) -> String {
    let f = match c.factor {
        Factor::Password => "password",
        Factor::Mfa => "mfa",
        Factor::RecoveryCode => "recovery_code",
    };
    format!("#{} {} {} from {}", c.seq, fmt::time(c.time), f, fmt::source(&c.ip, c.client.as_deref()))
}

fn policy_origin(p: &PolicySource) -> String {
    match &p.set {
        Some((seq, t, actor)) => format!("set by {actor} at {} (event #{seq})", fmt::time(*t)),
        None => "the defaults: the tenant never set a policy".to_owned(),
    }
}

pub async fn explain(ctx: &Ctx, a: UserArgs, out: &mut dyn Write) -> anyhow::Result<()> {
    let h = fold_user(ctx, &a.tenant, &a.user, None, false).await?;
    if h.track.events == 0 {
        return Err(Exit::new(
            exit::NOT_FOUND,
            format!("no events of user {:?} in tenant {}: never seen, so not locked", a.user, a.tenant),
        )
        .into());
    }
    let now = lockout_nats::clock::now_ms();
    let status = lockout_core::status(&h.tenant, &h.user, &h.policy.policy, &h.track.state, now);
    let lock = h.track.locks.last().filter(|l| status.locked && l.ended.is_none());
    let blocked = h.track.state.lock.as_ref().filter(|_| status.locked);
    if ctx.json {
        let counted = |list: &[Counted]| -> Vec<Value> {
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
        });
        serde_json::to_writer_pretty(&mut *out, &v)?;
        writeln!(out)?;
        return Ok(());
    }
    writeln!(out, "{} / {}: {}", h.tenant, h.user, fmt::status_line(&status))?;
    match lock {
        Some(l) => {
            match (&l.reason, &l.trip) {
                (LockReason::Failures, Some((ip, client))) => writeln!(
                    out,
                    "Why: {} counted failures reached max_failures {}; the lock was tripped by event #{} at {}, a failure from {}.",
                    l.counted.len(),
                    h.policy.policy.max_failures,
                    l.seq,
                    fmt::time(l.at),
                    fmt::source(ip, client.as_deref())
                )?,
                _ => writeln!(
                    out,
                    "Why: locked by the admin {} with event #{} at {}.",
                    l.actor.as_deref().unwrap_or("-"),
                    l.seq,
                    fmt::time(l.at)
                )?,
            }
            if !l.counted.is_empty() {
                writeln!(out, "Counted failures:")?;
                for c in &l.counted {
                    writeln!(out, "  {}", counted_line(c))?;
                }
            }
            writeln!(out, "Sources: {}", fmt::sources(&l.sources))?;
            if let Some(b) = blocked.filter(|b| b.blocked > 0) {
                let list: Vec<String> = b
                    .blocked_sources
                    .iter()
                    .map(|s| format!("{} ×{}", fmt::source(&s.ip, s.client.as_deref()), s.attempts))
                    .collect();
                writeln!(out, "Blocked while locked: {} attempt(s) from {}", b.blocked, list.join(", "))?;
            }
        }
        None => {
            if h.track.counted.is_empty() || status.failures == 0 {
                if !h.track.counted.is_empty() {
                    writeln!(
                        out,
                        "Why not locked: the counter restarted, window_seconds {} passed since the last counted failure.",
                        h.policy.policy.window_seconds
                    )?;
                } else {
                    writeln!(out, "Why not locked: no counted failures in the current streak.")?;
                }
            } else {
                let m = h.policy.policy.max_failures;
                if m == 0 {
                    writeln!(out, "Why not locked: max_failures is 0, the policy never locks automatically.")?;
                } else {
                    writeln!(out, "Why not locked: {} of {m} counted failures.", status.failures)?;
                }
                writeln!(out, "Counted failures:")?;
                for c in &h.track.counted {
                    writeln!(out, "  {}", counted_line(c))?;
                }
                writeln!(out, "Sources: {}", fmt::sources(&h.track.state.ranked_sources()))?;
            }
            if let Some(l) = h.track.locks.last() {
                let end = match &l.ended {
                    Some((t, Some(by))) => format!("unlocked by {by} at {}", fmt::time(*t)),
                    Some((t, None)) => format!("expired at {}", fmt::time(*t)),
                    None => format!("expired at {}", fmt::opt_time(l.until)),
                };
                writeln!(
                    out,
                    "Last lock: {} ({}) at {} by event #{}, {end}.",
                    if l.reason == LockReason::Failures { "automatic" } else { "admin" },
                    fmt::reason(Some(l.reason)),
                    fmt::time(l.at),
                    l.seq
                )?;
            }
        }
    }
    writeln!(out, "Policy in force: {} ({})", fmt::policy_line(&h.policy.policy), policy_origin(&h.policy))?;
    writeln!(out, "From {} event(s) of the user's history, folded with their stored times.", h.track.events)?;
    Ok(())
}

pub async fn state_at(ctx: &Ctx, a: StateAtArgs, out: &mut dyn Write) -> anyhow::Result<()> {
    let at = fmt::parse_time(&a.time, "TIME")?;
    let h = fold_user(ctx, &a.tenant, &a.user, Some(at), false).await?;
    let status = lockout_core::status(&h.tenant, &h.user, &h.policy.policy, &h.track.state, at);
    if ctx.json {
        serde_json::to_writer_pretty(&mut *out, &json!({ "at": at, "events": h.track.events, "status": status }))?;
        writeln!(out)?;
        return Ok(());
    }
    writeln!(out, "as of {} ({} event(s) folded):", fmt::time(at), h.track.events)?;
    write!(out, "{}", fmt::status_block(&status))?;
    Ok(())
}

pub async fn export(ctx: &Ctx, a: ExportArgs, out: &mut dyn Write) -> anyhow::Result<()> {
    let since = fmt::parse_opt_time(a.since.as_deref(), "--since")?;
    let until = fmt::parse_opt_time(a.until.as_deref(), "--until")?;
    let filter = match &a.tenant {
        Some(t) => format!("{}.events.{}.>", ctx.subjects.prefix(), ctx::tenant(t)?),
        None => ctx.subjects.events_all(),
    };
    let jsonl = a.jsonl || ctx.json;
    let subjects = ctx.subjects.clone();
    let range = Range { from_time: since, ..Range::default() };
    let mut n = 0u64;
    let mut result: anyhow::Result<()> = Ok(());
    events::read(ctx, &ctx.subjects.events_stream(), vec![filter], range, Some("export"), async |raw| {
        if until.is_some_and(|u| raw.time > u) {
            return Ok(false);
        }
        n += 1;
        let decoded = events::accept(&subjects, &raw);
        let line = if jsonl {
            let mut v = json!({
                "seq": raw.seq,
                "subject": raw.subject(),
                "time": raw.time,
                "time_utc": fmt::time(raw.time),
                "type": events::subject_type(raw.subject()),
            });
            let o = v.as_object_mut().expect("object");
            match &decoded {
                Ok(e) => {
                    o.insert("tenant".into(), json!(e.tenant()));
                    o.insert("user".into(), json!(e.user()));
                    o.insert("body".into(), events::event_json(e));
                }
                Err(r) => {
                    o.insert("body".into(), Value::Null);
                    o.insert("error".into(), json!(format!("{}: {}", r.reason, r.message)));
                }
            }
            v.to_string()
        } else {
            match &decoded {
                Ok(e) => format!(
                    "#{:<6} {}  {:<9} {} {}  {}",
                    raw.seq,
                    fmt::time(raw.time),
                    events::subject_type(raw.subject()),
                    e.tenant(),
                    e.user().unwrap_or("(tenant)"),
                    events::event_json(e)
                ),
                Err(r) => format!("#{:<6} {}  {}  refused: {}", raw.seq, fmt::time(raw.time), raw.subject(), r.message),
            }
        };
        if let Err(e) = writeln!(out, "{line}") {
            result = Err(e.into());
            return Ok(false);
        }
        Ok(true)
    })
    .await?;
    result?;
    if !jsonl {
        writeln!(out, "{n} event(s)")?;
    }
    Ok(())
}

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
    events::read(ctx, &ctx.subjects.events_stream(), vec![filter], Range::default(), Some("simulate"), async |raw| {
        if until.is_some_and(|u| raw.time > u) {
            return Ok(false);
        }
        n += 1;
        match events::accept(&subjects, &raw) {
            Err(_) => {}
            Ok(Event::Policy(change)) => actual_policy = lockout_core::fold::fold_policy(&actual_policy, &change),
            Ok(e) => {
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
