//! A user's history folded and explained, without I/O: [`UserHistory::push`] takes each stored
//! event (or lockoutd's refusal of it) in order; [`UserHistory::history_text`] and
//! [`UserHistory::explain_text`] render what `lockoutctl history` and `explain` print for
//! people. The commands read the stream and call these; the tests call them on events of
//! their own and compare the text with snapshots.

use std::io::Write;

use lockout_proto::event::Event;
use lockout_proto::status::{LockReason, Scope};
use lockout_proto::{Millis, Policy, Rejection, Status};
use serde_json::Value;

use super::track::{Counted, Track};
use crate::fmt;

/// The policy in force and where it came from.
#[derive(Debug, Clone, Default)]
pub struct PolicySource {
    pub policy: Policy,
    /// (seq, stored time, actor) of the policy event; `None` = the defaults.
    pub set: Option<(u64, Millis, String)>,
}

/// One event of a history, with the why and the status after it.
#[derive(Debug, Clone)]
pub struct Line {
    pub seq: u64,
    pub subject: String,
    pub time: Millis,
    pub kind: String,
    pub body: Value,
    pub why: String,
    pub status: Status,
}

/// A user's events (and the tenant's policy events) folded in order.
#[derive(Debug, Clone)]
pub struct UserHistory {
    pub tenant: String,
    pub user: String,
    pub policy: PolicySource,
    pub track: Track,
    /// Every event with its why, when kept.
    pub lines: Vec<Line>,
    keep_lines: bool,
    /// The same events folded into the `explain` op's answer (the counter of each failure).
    pub explainer: lockout_core::explain::Explainer,
}

impl UserHistory {
    pub fn new(tenant: &str, user: &str, keep_lines: bool) -> UserHistory {
        UserHistory {
            tenant: tenant.to_owned(),
            user: user.to_owned(),
            policy: PolicySource::default(),
            track: Track::default(),
            lines: Vec::new(),
            keep_lines,
            explainer: lockout_core::explain::Explainer::new(tenant, user),
        }
    }

    /// Folds the next stored event: `decoded` is the event, or why lockoutd refused it.
    pub fn push(&mut self, seq: u64, subject: &str, time: Millis, decoded: Result<Event, Rejection>) {
        if let Ok(e) = &decoded {
            self.explainer.push(seq, time, e);
        }
        let (why, body) = match decoded {
            Err(r) => (format!("refused by lockoutd ({}), no effect: {}", r.reason, r.message), Value::Null),
            Ok(Event::Policy(change)) => {
                let before = self.policy.policy;
                let new = lockout_core::fold::fold_policy(&before, &change);
                let list: Vec<String> =
                    fmt::policy_changes(&before, &new).iter().map(|(k, b, a)| format!("{k} {b} -> {a}")).collect();
                let why = if list.is_empty() {
                    format!("policy set by {} (no change)", change.actor)
                } else {
                    format!("policy set by {}: {}", change.actor, list.join(", "))
                };
                self.policy = PolicySource { policy: new, set: Some((seq, time, change.actor.to_string())) };
                (why, Event::Policy(change).body_json())
            }
            Ok(e @ (Event::IpBlock(_) | Event::IpUnblock(_) | Event::IpExpired(_))) => (ip_why(&e), e.body_json()),
            Ok(e) => (self.track.apply(&self.policy.policy, &e, seq, time), e.body_json()),
        };
        if self.keep_lines {
            let status = self.status_at(time);
            let kind = crate::events::subject_type(subject).to_owned();
            self.lines.push(Line { seq, subject: subject.to_owned(), time, kind, body, why, status });
        }
    }

    /// The user's Status at `at`, as folded so far.
    pub fn status_at(&self, at: Millis) -> Status {
        lockout_core::status(&self.tenant, &self.user, &self.policy.policy, &self.track.state, at)
    }

    /// `lockoutctl history`: every event shown (stored at or after `since`) with its why and
    /// the state after it.
    pub fn history_text(&self, since: Option<Millis>, out: &mut dyn Write) -> std::io::Result<()> {
        let shown: Vec<&Line> = self.lines.iter().filter(|l| since.is_none_or(|s| l.time >= s)).collect();
        writeln!(
            out,
            "history of {} in tenant {} ({} events shown; stored times, UTC)",
            self.user,
            self.tenant,
            shown.len()
        )?;
        for l in shown {
            writeln!(out, "#{:<6} {}  {:<9} {}", l.seq, fmt::time(l.time), l.kind, l.why)?;
            writeln!(out, "        state: {}", fmt::status_line(&l.status))?;
        }
        Ok(())
    }

    /// `lockoutctl explain`: why the user is (or is not) locked at `now`.
    pub fn explain_text(&self, now: Millis, out: &mut dyn Write) -> std::io::Result<()> {
        let (track, policy) = (&self.track, &self.policy.policy);
        let status = self.status_at(now);
        let lock = track.locks.last().filter(|l| status.locked && l.ended.is_none());
        writeln!(out, "{} / {}: {}", self.tenant, self.user, fmt::status_line(&status))?;
        match lock {
            Some(l) => {
                match (&l.reason, &l.trip) {
                    (LockReason::Failures, Some((ip, client))) => writeln!(
                        out,
                        "Why: {} counted failures reached max_failures {}; the lock was tripped by event #{} at {}, a failure from {}.",
                        l.counted.len(),
                        policy.max_failures,
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
                counted_lines(&l.counted, out)?;
                writeln!(out, "Sources: {}", fmt::sources(&l.sources))?;
                if let Some(b) = track.state.lock.as_ref().filter(|b| b.blocked > 0) {
                    let list: Vec<String> = b
                        .blocked_sources
                        .iter()
                        .map(|s| format!("{} ×{}", fmt::source(&s.ip, s.client.as_deref()), s.attempts))
                        .collect();
                    writeln!(out, "Blocked while locked: {} attempt(s) from {}", b.blocked, list.join(", "))?;
                }
            }
            None => {
                if track.counted.is_empty() || status.failures == 0 {
                    if track.counted.is_empty() {
                        writeln!(out, "Why not locked: no counted failures in the current streak.")?;
                    } else {
                        writeln!(
                            out,
                            "Why not locked: the counter restarted, window_seconds {} passed since the last counted failure.",
                            policy.window_seconds
                        )?;
                    }
                } else {
                    match policy.max_failures {
                        0 => writeln!(out, "Why not locked: max_failures is 0, the policy never locks automatically.")?,
                        m => writeln!(out, "Why not locked: {} of {m} counted failures.", status.failures)?,
                    }
                    counted_lines(&track.counted, out)?;
                    writeln!(out, "Sources: {}", fmt::sources(&track.state.ranked_sources()))?;
                }
                if let Some(l) = track.locks.last() {
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
        // Contract v2's counters: which counter each failure still counted went to.
        let answer = self.explainer.clone().finish(now);
        if answer.counted.iter().any(|c| c.counter != Scope::Account) || !answer.status.scope_locks.is_empty() {
            writeln!(out, "Failures on each counter (account, unfamiliar IPs, each known client):")?;
            for c in &answer.counted {
                let (factor, counter): (&str, &str) = (c.factor.into(), c.counter.into());
                writeln!(
                    out,
                    "  #{} {} {factor} from {} -> {counter}",
                    c.seq,
                    fmt::time(c.at),
                    fmt::source(&c.ip, c.client.as_deref())
                )?;
            }
            writeln!(out, "In short: {}", answer.reason)?;
        }
        let from_blocked = self.explainer.from_blocked_ips();
        if !from_blocked.is_empty() {
            let seqs: Vec<String> = from_blocked.iter().map(|s| format!("#{s}")).collect();
            writeln!(
                out,
                "Not counted towards IP blocks: {} (their IP was blocked for the tenant then; they count for the user only).",
                seqs.join(", ")
            )?;
        }
        let origin = match &self.policy.set {
            Some((seq, t, actor)) => format!("set by {actor} at {} (event #{seq})", fmt::time(*t)),
            None => "the defaults: the tenant never set a policy".to_owned(),
        };
        writeln!(out, "Policy in force: {} ({origin})", fmt::policy_line(policy))?;
        writeln!(out, "From {} event(s) of the user's history, folded with their stored times.", track.events)
    }
}

fn counted_lines(list: &[Counted], out: &mut dyn Write) -> std::io::Result<()> {
    if list.is_empty() {
        return Ok(());
    }
    writeln!(out, "Counted failures:")?;
    for c in list {
        let factor: &str = c.factor.into();
        writeln!(out, "  #{} {} {factor} from {}", c.seq, fmt::time(c.time), fmt::source(&c.ip, c.client.as_deref()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests;

/// What a tenant's IP event says, for `history`.
fn ip_why(e: &Event) -> String {
    match e {
        Event::IpBlock(b) => format!(
            "IP {} blocked for the tenant {} after {} failures against {} users (password spraying)",
            b.ip,
            fmt::until(b.blocked_until),
            b.failures,
            b.users
        ),
        Event::IpUnblock(u) => format!("IP {} unblocked by {}", u.ip, u.actor),
        Event::IpExpired(x) => format!("IP {}: its block ran out", x.ip),
        _ => String::new(),
    }
}
