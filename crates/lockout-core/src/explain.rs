//! Why a user is, or would be, locked (contract v2, op `explain`): one user's history folded
//! with the fold itself, keeping the failures that sit on the counters in force.
//!
//! Pure, like the fold: the caller reads the user's events and the tenant's policy events in
//! stream order and feeds them with their sequence and stored time; lockoutd's `explain` op
//! and `lockoutctl` give the same answer from the same events.

use lockout_proto::command::{CountedFailure, ExplainReply};
use lockout_proto::event::Event;
use lockout_proto::status::Scope;
use lockout_proto::{Millis, Policy};

use crate::fold::{fold_into, Effect};
use crate::ip::{fold_ip_event, IpBlockState, IpCount};
use crate::message::duration;
use crate::state::{StreakSource, UserState};
use crate::view::status;

/// One user's history, folded event by event.
#[derive(Debug, Clone)]
pub struct Explainer {
    tenant: String,
    user: String,
    policy: Policy,
    state: UserState,
    counted: Vec<CountedFailure>,
    blocked: u64,
    /// The tenant's IP blocks as folded so far (contract v2, "IP blocks").
    ip_blocks: std::collections::HashMap<lockout_proto::CompactString, IpBlockState>,
    /// Sequences of the counted failures whose IP was blocked for the tenant when they were
    /// stored: they count for the user, not towards the IP's spraying count.
    from_blocked_ips: Vec<u64>,
}

impl Explainer {
    pub fn new(tenant: &str, user: &str) -> Explainer {
        Explainer {
            tenant: tenant.to_owned(),
            user: user.to_owned(),
            policy: Policy::default(),
            state: UserState::default(),
            counted: Vec::new(),
            blocked: 0,
            ip_blocks: Default::default(),
            from_blocked_ips: Vec::new(),
        }
    }

    /// Folds the next event of the user (or a policy event of the tenant), stored at `at` as
    /// `LOCKOUT_EVENTS` sequence `seq`.
    pub fn push(&mut self, seq: u64, at: Millis, event: &Event) {
        let ip = match event {
            Event::Policy(p) => {
                self.policy = p.policy;
                return;
            }
            Event::IpBlock(e) => Some(&e.ip),
            Event::IpUnblock(e) => Some(&e.ip),
            Event::IpExpired(e) => Some(&e.ip),
            _ => None,
        };
        if let Some(ip) = ip {
            let mut block = self.ip_blocks.remove(ip);
            fold_ip_event(&mut block, &mut IpCount::default(), event, at);
            if let Some(b) = block {
                self.ip_blocks.insert(ip.clone(), b);
            }
            return;
        }
        let (_, why) = fold_into(&self.policy, &mut self.state, event, at);
        match (why.effect, event) {
            (Effect::Counted { counter, .. }, Event::Attempt(a)) => {
                let blocked_ip = lockout_proto::event::canonical_ip(&a.source_ip)
                    .and_then(|ip| self.ip_blocks.get(&ip))
                    .is_some_and(|b| b.in_force(at));
                if blocked_ip {
                    self.from_blocked_ips.push(seq);
                }
                self.counted.push(CountedFailure {
                    seq,
                    at,
                    ip: a.source_ip.clone(),
                    client: a.client.clone(),
                    factor: a.factor,
                    counter,
                });
            }
            (Effect::Blocked { .. } | Effect::Rejected, Event::Attempt(_)) => self.blocked += 1,
            _ => {}
        }
        self.reconcile();
    }

    /// Keeps only the failures the counters still hold: per counter and source, the latest
    /// as many as the counter lists (a reset, a window, an MFA reset or a lock's end drops
    /// them).
    fn reconcile(&mut self) {
        let st = &self.state;
        let held = |counter: Scope, client: Option<&str>| -> &[StreakSource] {
            match counter {
                Scope::Account => &st.streak,
                Scope::Unfamiliar => &st.unfamiliar.streak,
                Scope::Client => st
                    .clients
                    .iter()
                    .find(|c| Some(c.client.as_str()) == client)
                    .map_or(&[][..], |c| &c.counter.streak[..]),
            }
        };
        let mut keep = vec![false; self.counted.len()];
        for (i, c) in self.counted.iter().enumerate().rev() {
            let sources = held(c.counter, c.client.as_deref());
            let Some(src) = sources.iter().find(|s| s.ip == c.ip && s.client == c.client) else { continue };
            let already = self.counted[i + 1..]
                .iter()
                .zip(&keep[i + 1..])
                .filter(|(d, k)| **k && d.counter == c.counter && d.ip == c.ip && d.client == c.client)
                .count();
            keep[i] = u32::try_from(already).unwrap_or(u32::MAX) < src.total();
        }
        let mut k = keep.into_iter();
        self.counted.retain(|_| k.next().unwrap_or(false));
        let counted = &self.counted;
        self.from_blocked_ips.retain(|seq| counted.iter().any(|c| c.seq == *seq));
        if !self.state.any_lock() && self.counted.is_empty() {
            self.blocked = 0;
        }
    }

    /// Sequences of the counted failures (still on a counter) whose IP was blocked for the
    /// tenant when they were stored.
    pub fn from_blocked_ips(&self) -> &[u64] {
        &self.from_blocked_ips
    }

    /// The explanation at `now` (the server's time).
    pub fn finish(self, now: Millis) -> ExplainReply {
        let status = status(&self.tenant, &self.user, &self.policy, &self.state, now);
        let mut reason = reason(&self.policy, &self.state, &status);
        match self.from_blocked_ips.len() {
            0 => {}
            1 => reason.push_str(
                " 1 of the counted failures came from an IP blocked for the tenant at the time (password spraying): it counts for the user, not towards the IP's block.",
            ),
            n => reason.push_str(&format!(
                " {n} of the counted failures came from IPs blocked for the tenant at the time (password spraying): they count for the user, not towards the IPs' blocks."
            )),
        }
        ExplainReply {
            sources: self.state.ranked_sources(),
            status,
            policy: self.policy,
            counted: self.counted,
            blocked_attempts: self.blocked,
            reason,
        }
    }
}

/// One sentence: what locks the user, or what would.
fn reason(policy: &Policy, state: &UserState, s: &lockout_proto::Status) -> String {
    let until = |u: Option<Millis>| match u {
        Some(t) => format!("until {}", utc(t)),
        None => "until unlocked".to_owned(),
    };
    let mut parts = Vec::new();
    if s.locked {
        let why = match s.reason {
            Some(lockout_proto::status::LockReason::Admin) => "by an administrator".to_owned(),
            _ => format!("by {} counted failures on the account counter", s.failures),
        };
        parts.push(format!("The account is locked {why}, {}", until(s.locked_until)));
    }
    for l in &s.scope_locks {
        let what = match (&l.scope, &l.client) {
            (Scope::Client, Some(c)) => format!("sign-ins from {c}"),
            _ => "sign-ins from unfamiliar IPs".to_owned(),
        };
        parts.push(format!("{what} are locked by {} failures, {}", l.failures, until(l.locked_until)));
    }
    if parts.is_empty() {
        let max = policy.max_failures;
        if max == 0 {
            return "Not locked: this tenant's policy never locks automatically (max_failures 0).".to_owned();
        }
        let mut text = format!("Not locked: {} of {max} failures on the account counter", s.failures);
        if policy.familiar_days > 0 {
            text.push_str(&format!(", {} of {max} on the unfamiliar-IP counter", s.unfamiliar_failures));
        }
        for c in state.clients.iter().filter(|c| c.counter.failures() > 0) {
            text.push_str(&format!(", {} of {max} on {}'s counter", c.counter.failures(), c.client));
        }
        let left = max.saturating_sub(s.failures);
        let window = match policy.window_seconds {
            0 => String::new(),
            w => format!(" within {} of each other", duration(u64::from(w))),
        };
        text.push_str(&format!("; {left} more failure(s){window} would lock the account."));
        return text;
    }
    let mut text = parts.join("; ");
    text.push('.');
    text
}

/// `ms` as UTC, "2024-05-06 10:30:00Z" (no I/O, no time zone data).
pub fn utc(ms: Millis) -> String {
    let secs = ms / 1000;
    let (days, rest) = (secs / 86_400, secs % 86_400);
    // Howard Hinnant's civil_from_days, for days since 1970-01-01.
    let z = i64::try_from(days).unwrap_or(i64::MAX / 2) + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}Z", rest / 3600, rest % 3600 / 60, rest % 60)
}

#[cfg(test)]
mod tests {
    #[test]
    fn utc_formats_known_instants() {
        assert_eq!(super::utc(0), "1970-01-01 00:00:00Z");
        assert_eq!(super::utc(1_714_953_600_000 + 37_800_000), "2024-05-06 10:30:00Z");
        assert_eq!(super::utc(951_782_400_000), "2000-02-29 00:00:00Z");
    }
}
