//! One user's state through the history, with what the fold alone does not keep (which
//! failures are counted, every lock and how it ended), and a sentence per event saying why the
//! state changed. The rules are the fold's: every sentence is built from the
//! [`lockout_core::Why`] the fold returns, never by comparing states.

use lockout_core::{Effect, Forgot, NotCounted, StreakChange, UserState};
use lockout_proto::event::{Attempt, Event, Factor};
use lockout_proto::notice::Source;
use lockout_proto::status::{LockReason, Scope};
use lockout_proto::{Millis, Policy};

use crate::fmt;

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

/// One user's state through the history.
#[derive(Debug, Clone, Default)]
pub struct Track {
    pub state: UserState,
    pub counted: Vec<Counted>,
    pub locks: Vec<LockRecord>,
    pub events: u64,
    /// Scope locks (contract v2: unfamiliar IPs, one client) started, with their start times.
    pub scope_locks: Vec<(Scope, Millis)>,
}

fn outcome_word(a: &Attempt) -> String {
    let o: &str = a.outcome.into();
    match a.factor {
        Factor::Password => o.to_owned(),
        f => format!("{} {o}", <&str>::from(f)),
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

    /// Keeps the list of counted failures as the fold changed the streak.
    fn follow_streak(&mut self, change: StreakChange, event: &Event, seq: u64, now: Millis) {
        let counted = |a: &Attempt| Counted {
            seq,
            time: now,
            ip: a.source_ip.to_string(),
            client: a.client.as_deref().map(str::to_owned),
            factor: a.factor,
        };
        match (change, event) {
            (StreakChange::Kept, _) => {}
            (StreakChange::Cleared, _) => self.counted.clear(),
            (StreakChange::MfaRemoved, _) => self.counted.retain(|c| !c.factor.is_mfa()),
            (StreakChange::Restarted, Event::Attempt(a)) => {
                self.counted.clear();
                self.counted.push(counted(a));
            }
            (StreakChange::Added, Event::Attempt(a)) => self.counted.push(counted(a)),
            (StreakChange::Added | StreakChange::Restarted, _) => {
                unreachable!("only an attempt adds a failure to the streak")
            }
        }
    }

    /// Drops the followed failures the account counter no longer holds (a success clearing
    /// only its own IP's under `reset_scope: same_ip`, a success counting for another
    /// counter): per source, the latest as many as the counter lists.
    fn keep_what_the_counter_holds(&mut self) {
        let streak = &self.state.streak;
        let mut keep = vec![false; self.counted.len()];
        for i in (0..self.counted.len()).rev() {
            let c = &self.counted[i];
            let Some(src) = streak.iter().find(|s| s.ip == c.ip && s.client.as_deref() == c.client.as_deref()) else {
                // A source beyond the 64 listed: counted, not listed; keep it while any are.
                keep[i] = streak.len() >= lockout_core::state::STREAK_SOURCES_MAX;
                continue;
            };
            let later = (i + 1..self.counted.len())
                .filter(|&j| keep[j] && self.counted[j].ip == c.ip && self.counted[j].client == c.client)
                .count();
            keep[i] = (later as u64) < u64::from(src.total());
        }
        let mut k = keep.into_iter();
        self.counted.retain(|_| k.next().unwrap_or(false));
    }

    /// Folds one user event at stored time `now` and says why the state changed.
    pub fn apply(&mut self, policy: &Policy, event: &Event, seq: u64, now: Millis) -> String {
        self.events += 1;
        let folded = lockout_core::fold(policy, std::mem::take(&mut self.state), event, now);
        self.state = folded.state;
        let why = folded.why;
        let mut parts: Vec<String> = Vec::new();
        if let Some(u) = why.expired_first {
            self.close_lock(u, None);
            self.counted.clear();
            if !matches!(event, Event::Expired(_)) {
                parts.push(format!("lock expired at {}; then", fmt::time(u)));
            }
        }
        // Only the account counter's failures are followed here (scope counters: `explain`).
        let change = match why.effect {
            Effect::Counted { counter, .. } if counter != Scope::Account => StreakChange::Kept,
            // What a success cleared depends on the counter and reset_scope: reconciled below.
            Effect::Succeeded { .. } => StreakChange::Kept,
            e => e.streak(),
        };
        self.follow_streak(change, event, seq, now);
        self.keep_what_the_counter_holds();
        let max = policy.max_failures;
        let text = match (why.effect, event) {
            (Effect::Counted { failures, new_streak, locked, counter }, Event::Attempt(a))
                if counter != Scope::Account =>
            {
                let scope: &str = counter.into();
                let mut t = format!("{} {failures}/{max} on the {scope} counter from {}", outcome_word(a), src(a));
                if new_streak {
                    t.push_str(&format!(" (new streak: {} s passed since the last failure)", policy.window_seconds));
                }
                if locked {
                    self.scope_locks.push((counter, now));
                    let what = match counter {
                        Scope::Client => format!("sign-ins from {}", a.client.as_deref().unwrap_or("this client")),
                        _ => "sign-ins from unfamiliar IPs".to_owned(),
                    };
                    t.push_str(&format!(" LOCKED ({scope} scope): {what} refused"));
                }
                t
            }
            (Effect::Counted { failures, new_streak, locked, .. }, Event::Attempt(a)) => {
                let mut t = format!("{} {failures}/{max} from {}", outcome_word(a), src(a));
                if new_streak {
                    t.push_str(&format!(" (new streak: {} s passed since the last failure)", policy.window_seconds));
                }
                if locked {
                    t.push(' ');
                    t.push_str(&self.auto_locked(a, seq, now));
                }
                t
            }
            (Effect::NotCounted(why), Event::Attempt(a)) => {
                let why = match why {
                    NotCounted::MfaNotCounted => "count_mfa_failures is off",
                    NotCounted::CredentialAlreadyCounted => {
                        "its credential was already counted in this streak (dedupe_credential)"
                    }
                };
                format!("{} from {} not counted: {why}", outcome_word(a), src(a))
            }
            (Effect::Blocked { scope: Scope::Account }, Event::Attempt(a)) => {
                format!("blocked while locked: {} from {}", outcome_word(a), src(a))
            }
            (Effect::Blocked { scope }, Event::Attempt(a)) => {
                let scope: &str = scope.into();
                format!("blocked by the {scope} lock: {} from {}", outcome_word(a), src(a))
            }
            (Effect::Rejected, Event::Attempt(a)) => {
                format!("rejected by the gateway (status said not allowed) from {}: recorded, not counted", src(a))
            }
            (Effect::UnlockRefused, Event::Unlock(u)) => format!(
                "unlock by {} naming lock event {}: no effect, that lock is not in force",
                fmt::who(&u.actor, u.caller.as_deref()),
                u.lock_event.map(|e| e.to_string()).unwrap_or_default()
            ),
            (Effect::PasswordReset { ended, kept }, Event::PasswordReset(r)) => {
                if ended > 0 && self.state.lock.is_none() {
                    self.close_lock(now, r.actor.as_ref().map(ToString::to_string));
                }
                let who = r.actor.as_deref().map_or_else(|| "the user".to_owned(), |a| fmt::who(a, r.caller.as_deref()));
                let method: &str = r.method.into();
                match (ended, kept) {
                    (0, false) => format!("password reset ({method}) by {who}: counters cleared"),
                    (n, false) => format!("password reset ({method}) by {who}: {n} lock(s) ended, counters cleared"),
                    (n, true) => format!(
                        "password reset ({method}) by {who}: {n} lock(s) ended; a lock stays (an admin or permanent lock, or unlock_on_password_reset is off)"
                    ),
                }
            }
            (Effect::Succeeded { failures, reset, reenrolled }, Event::Attempt(a)) => {
                let mut t = format!("{} from {}", outcome_word(a), src(a));
                match (failures, reset) {
                    (0, _) => {}
                    (_, true) => t.push_str(": counter reset"),
                    (n, false) => t.push_str(&format!("; counter kept at {n}/{max} (reset_on_success is off)")),
                }
                if reenrolled {
                    t.push_str("; MFA re-enrolled");
                }
                t
            }
            (Effect::Unlocked { was_locked: true }, Event::Unlock(u)) => {
                self.close_lock(now, Some(u.actor.to_string()));
                with_reason(format!("unlocked by {}", fmt::who(&u.actor, u.caller.as_deref())), u.reason.as_deref())
            }
            (Effect::Unlocked { was_locked: false }, Event::Unlock(u)) => with_reason(
                format!("unlock by {} while not locked: counter reset", fmt::who(&u.actor, u.caller.as_deref())),
                u.reason.as_deref(),
            ),
            (Effect::Locked { replaced }, Event::Lock(l)) => {
                if replaced {
                    self.close_lock(now, Some(l.actor.to_string()));
                }
                let until = self.state.lock.as_ref().and_then(|x| x.locked_until);
                let mut t = format!("LOCKED by {} {}", fmt::who(&l.actor, l.caller.as_deref()), fmt::until(until));
                if replaced {
                    t.push_str(", replacing the lock in force");
                }
                self.locks.push(LockRecord {
                    seq,
                    at: now,
                    until,
                    reason: LockReason::Admin,
                    actor: Some(l.actor.to_string()),
                    trip: None,
                    sources: self.state.ranked_sources(),
                    counted: self.counted.clone(),
                    ended: None,
                });
                with_reason(t, l.reason.as_deref())
            }
            (Effect::MfaReset { removed }, Event::MfaReset(m)) => with_reason(
                format!(
                    "MFA reset by {}: {removed} MFA failure(s) removed, re-enrolment required",
                    fmt::who(&m.actor, m.caller.as_deref())
                ),
                m.reason.as_deref(),
            ),
            (Effect::Expired { ended: Some(until) }, Event::Expired(_)) => {
                self.close_lock(until, None);
                format!("expired: the lock ended at {}", fmt::time(until))
            }
            (Effect::Expired { ended: None }, Event::Expired(x)) => match why.expired_first {
                Some(u) => format!("expired: the lock ended at {}", fmt::time(u)),
                None => format!("expired (lock event {}): no effect, that lock had already ended", x.lock_event),
            },
            (Effect::ExpiredEarly { until }, Event::Expired(_)) => format!(
                "expired: stored {} ms before the lock's end at {}, more than the {} ms allowed: ignored, the lock stays (the clock of whoever wrote it ran ahead of the server's)",
                until.saturating_sub(now),
                fmt::time(until),
                lockout_core::EXPIRED_EARLY_ALLOWANCE_MS
            ),
            (Effect::Forget(forgot), Event::Forget(x)) => match forgot {
                Forgot::Dropped => format!(
                    "forgotten: idle since {} (--state-ttl-days), the state is dropped: counters, lock history and MFA reset",
                    fmt::time(x.last_activity)
                ),
                Forgot::Nothing => "forget: nothing stored, no effect".to_owned(),
                Forgot::Locked => "forget: no effect, the user is locked".to_owned(),
                Forgot::ActiveSince(t) => format!("forget: no effect, the state changed at {} since", fmt::time(t)),
            },
            (Effect::TenantEvent, _) => "policy change".to_owned(),
            (effect, event) => unreachable!("the fold gave {effect:?} for a {:?} event", event.kind()),
        };
        parts.push(text);
        parts.join(" ")
    }

    /// Records the automatic lock the attempt `a` tripped; returns its sentence.
    fn auto_locked(&mut self, a: &Attempt, seq: u64, now: Millis) -> String {
        let until = self.state.lock.as_ref().and_then(|l| l.locked_until);
        let sources = self.state.ranked_sources();
        let n = self.state.failures();
        let text = format!(
            "→ LOCKED {} — {n} failures from {} source{}: {} (automatic lock #{})",
            fmt::until(until),
            sources.len(),
            if sources.len() == 1 { "" } else { "s" },
            fmt::sources(&sources),
            self.state.lock_count
        );
        self.locks.push(LockRecord {
            seq,
            at: now,
            until,
            reason: LockReason::Failures,
            actor: None,
            trip: Some((a.source_ip.to_string(), a.client.as_deref().map(str::to_owned))),
            sources,
            counted: self.counted.clone(),
            ended: None,
        });
        text
    }
}

fn src(a: &Attempt) -> String {
    fmt::source(&a.source_ip, a.client.as_deref())
}
