//! Times and the texts printed for people.

use lockout_proto::notice::Source;
use lockout_proto::status::LockReason;
use lockout_proto::{Millis, Policy, Status};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use crate::Exit;

/// RFC 3339 UTC with milliseconds: `2025-06-01T16:03:00.000Z`.
pub fn time(ms: Millis) -> String {
    let nanos = i128::from(ms) * 1_000_000;
    match OffsetDateTime::from_unix_timestamp_nanos(nanos) {
        Ok(t) => format!(
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
            t.year(),
            u8::from(t.month()),
            t.day(),
            t.hour(),
            t.minute(),
            t.second(),
            t.millisecond()
        ),
        Err(_) => format!("{ms} ms"),
    }
}

/// An optional time, or `-`.
pub fn opt_time(ms: Option<Millis>) -> String {
    ms.map_or_else(|| "-".to_owned(), time)
}

/// Parses RFC 3339 (any offset) or milliseconds since the Unix epoch (exit 2 otherwise).
pub fn parse_time(s: &str, what: &str) -> anyhow::Result<Millis> {
    let s = s.trim();
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
        return s.parse().map_err(|_| Exit::usage(format!("{what} {s:?} is too large for milliseconds")));
    }
    let t = OffsetDateTime::parse(s, &Rfc3339).map_err(|e| {
        Exit::usage(format!(
            "{what} {s:?} is not a time: give RFC 3339 (2025-06-01T16:03:00Z) or milliseconds since the Unix epoch ({e})"
        ))
    })?;
    u64::try_from(t.unix_timestamp_nanos() / 1_000_000).map_err(|_| Exit::usage(format!("{what} {s:?} is before 1970")))
}

/// Parses an optional time argument.
pub fn parse_opt_time(s: Option<&str>, what: &str) -> anyhow::Result<Option<Millis>> {
    s.map(|s| parse_time(s, what)).transpose()
}

/// `203.0.113.7 (IT Glue)` or `203.0.113.7`.
pub fn source(ip: &str, client: Option<&str>) -> String {
    match client {
        Some(c) if !c.is_empty() => format!("{ip} ({c})"),
        _ => ip.to_owned(),
    }
}

/// `203.0.113.7 (IT Glue) ×3, 198.51.100.2 ×1`
pub fn sources(list: &[Source]) -> String {
    if list.is_empty() {
        return "none".to_owned();
    }
    list.iter()
        .map(|s| format!("{} ×{}", source(&s.ip, s.client.as_deref()), s.failures))
        .collect::<Vec<_>>()
        .join(", ")
}

pub fn reason(r: Option<LockReason>) -> &'static str {
    r.map_or("-", Into::into)
}

/// `until 2025-…Z` or `until an admin unlocks`.
pub fn until(t: Option<Millis>) -> String {
    match t {
        Some(t) => format!("until {}", time(t)),
        None => "until an admin unlocks".to_owned(),
    }
}

/// One line: `LOCKED (failures) since … until …, failures 3/3` or `unlocked, failures 1/5`.
pub fn status_line(s: &Status) -> String {
    let mut line = if s.locked {
        format!(
            "LOCKED ({}) since {} {}, failures {}/{}",
            reason(s.reason),
            opt_time(s.locked_at),
            until(s.locked_until),
            s.failures,
            s.max_failures
        )
    } else {
        format!("unlocked, failures {}/{}", s.failures, s.max_failures)
    };
    if s.mfa_reenrol {
        line.push_str(", MFA re-enrolment pending");
    }
    line
}

/// Who did an admin action: the typed actor, and the authenticated caller when the server
/// vouched for one (`bob [ADMIN_ACME/admin_acme_alice]`).
pub fn who(actor: &str, caller: Option<&str>) -> String {
    match caller {
        Some(c) => format!("{actor} [{c}]"),
        None => actor.to_owned(),
    }
}

/// The full status block of `status` and `state-at`.
pub fn status_block(s: &Status) -> String {
    let mut out = format!("{} / {}: {}\n", s.tenant, s.user, status_line(s));
    match s.blocked_by {
        Some(lockout_proto::status::BlockedBy::Ip) => {
            out.push_str("  this source: not allowed (its IP is blocked for the tenant: password spraying)\n");
        }
        Some(by) => {
            let by: &str = by.into();
            out.push_str(&format!("  this source: not allowed (blocked by the {by} lock)\n"));
        }
        None => {}
    }
    if s.unfamiliar_failures > 0 {
        out.push_str(&format!("  failures from unfamiliar IPs: {}/{}\n", s.unfamiliar_failures, s.max_failures));
    }
    for l in &s.scope_locks {
        let what = match &l.client {
            Some(c) => format!("sign-ins from {c}"),
            None => "sign-ins from unfamiliar IPs".to_owned(),
        };
        out.push_str(&format!(
            "  {what}: LOCKED since {} {} ({} failures)\n",
            time(l.locked_at),
            until(l.locked_until),
            l.failures
        ));
    }
    if let Some(t) = s.last_failure_at {
        out.push_str(&format!(
            "  last counted failure: {} from {}\n",
            time(t),
            s.last_source_ip.as_deref().unwrap_or("-")
        ));
    }
    out.push_str(&format!("  automatic locks so far: {}\n", s.lock_count));
    if let Some(t) = s.unlocked_at {
        match &s.unlocked_by {
            Some(by) => {
                out.push_str(&format!("  last unlocked: {} by {}\n", time(t), who(by, s.unlocked_caller.as_deref())))
            }
            None => out.push_str(&format!("  last unlocked: {} (expired)\n", time(t))),
        }
    }
    if let Some(t) = s.mfa_reset_at {
        let by = who(s.mfa_reset_by.as_deref().unwrap_or("-"), s.mfa_reset_caller.as_deref());
        out.push_str(&format!("  MFA reset: {} by {by}\n", time(t)));
    }
    out
}

/// The policy's fields in the order docs/protocol.md lists them, as (name, JSON value).
pub fn policy_fields(p: &Policy) -> Vec<(String, serde_json::Value)> {
    use serde_json::json;
    [
        ("max_failures", json!(p.max_failures)),
        ("lock_seconds", json!(p.lock_seconds)),
        ("window_seconds", json!(p.window_seconds)),
        ("reset_on_success", json!(p.reset_on_success)),
        ("count_mfa_failures", json!(p.count_mfa_failures)),
        ("dedupe_credential", json!(p.dedupe_credential)),
        ("lock_multiplier", json!(p.lock_multiplier)),
        ("max_lock_seconds", json!(p.max_lock_seconds)),
        ("history_seconds", json!(p.history_seconds)),
        ("permanent_after", json!(p.permanent_after)),
        ("familiar_days", json!(p.familiar_days)),
        ("api_client_scope", json!(p.api_client_scope)),
        ("reset_scope", json!(p.reset_scope)),
        ("unlock_on_password_reset", json!(p.unlock_on_password_reset)),
        ("ip_max_failures", json!(p.ip_max_failures)),
        ("ip_window_seconds", json!(p.ip_window_seconds)),
        ("ip_block_seconds", json!(p.ip_block_seconds)),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect()
}

/// `max_failures=3 lock_seconds=300 …`: the v1 fields, then those contract v2 added that
/// differ from their defaults.
pub fn policy_line(p: &Policy) -> String {
    let defaults = policy_fields(&Policy::default());
    policy_fields(p)
        .into_iter()
        .enumerate()
        .filter(|(i, field)| *i < V1_POLICY_FIELDS || defaults[*i] != *field)
        .map(|(_, (k, v))| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// The policy fields of contract v1, first in [`policy_fields`].
const V1_POLICY_FIELDS: usize = 10;

/// `max_failures 5 → 3, reset_on_success true → false`, empty when equal.
pub fn policy_changes(before: &Policy, after: &Policy) -> Vec<(String, serde_json::Value, serde_json::Value)> {
    let b = policy_fields(before);
    let a = policy_fields(after);
    b.into_iter().zip(a).filter(|((_, x), (_, y))| x != y).map(|((k, x), (_, y))| (k, x, y)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_round_trip() {
        assert_eq!(time(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(time(1_748_793_780_123), "2025-06-01T16:03:00.123Z");
        assert_eq!(parse_time("2025-06-01T16:03:00.123Z", "t").unwrap(), 1_748_793_780_123);
        assert_eq!(parse_time("2025-06-01T18:03:00+02:00", "t").unwrap(), 1_748_793_780_000);
        assert_eq!(parse_time("1748793780123", "t").unwrap(), 1_748_793_780_123);
        assert!(parse_time("yesterday", "t").is_err());
    }

    #[test]
    fn policy_changes_list_fields() {
        let a = Policy::default();
        let b = Policy { max_failures: 3, reset_on_success: false, ..a };
        let c = policy_changes(&a, &b);
        assert_eq!(c.len(), 2);
        assert_eq!(c[0].0, "max_failures");
        assert_eq!(c[1].0, "reset_on_success");
    }

    #[test]
    fn the_status_block_names_the_caller_beside_the_typed_actor() {
        let s = Status {
            unlocked_at: Some(0),
            unlocked_by: Some("bob".into()),
            unlocked_caller: Some("ADMIN_ACME/admin_acme_alice".into()),
            mfa_reset_at: Some(0),
            mfa_reset_by: Some("carol".into()),
            ..Status::unknown("acme", "alice", 5)
        };
        let block = status_block(&s);
        assert!(
            block.contains("last unlocked: 1970-01-01T00:00:00.000Z by bob [ADMIN_ACME/admin_acme_alice]"),
            "{block}"
        );
        assert!(block.contains("MFA reset: 1970-01-01T00:00:00.000Z by carol\n"), "no caller, none shown: {block}");
    }
}
