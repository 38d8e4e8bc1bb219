//! The one-sentence texts of `locked` notices, as a person would write them.

use lockout_proto::notice::Source;

/// "Your account has been locked for 30 minutes due to an excessive number of unsuccessful
/// log in attempts from 203.0.113.7 (IT Glue)."
pub fn auto_locked(seconds: Option<u64>, sources: &[Source]) -> String {
    let mut text = format!(
        "Your account has been locked {} due to an excessive number of unsuccessful log in attempts",
        for_how_long(seconds)
    );
    push_sources(&mut text, sources);
    text.push('.');
    text
}

/// The text of a scope lock's `locked` notice (contract v2), saying what is locked:
/// "Sign-ins to alice@acme.com from IT Glue are blocked for 30 minutes due to an excessive
/// number of unsuccessful log in attempts from 203.0.113.7 (IT Glue); other sign-ins still
/// work." / "Sign-ins to alice@acme.com from unfamiliar locations are blocked …; sign-ins
/// from familiar locations still work."
pub fn scope_locked(
    user: &str,
    scope: lockout_proto::status::Scope,
    client: Option<&str>,
    seconds: Option<u64>,
    sources: &[Source],
) -> String {
    use lockout_proto::status::Scope;
    let (what, still) = match (scope, client) {
        (Scope::Client, Some(c)) => (format!("from {c}"), "other sign-ins still work"),
        (Scope::Client, None) => ("from this client".to_owned(), "other sign-ins still work"),
        _ => ("from unfamiliar locations".to_owned(), "sign-ins from familiar locations still work"),
    };
    let how_long = match seconds {
        Some(s) => format!("for {}", duration(s)),
        None => "until an administrator unlocks them or the password is reset".to_owned(),
    };
    let mut text = format!(
        "Sign-ins to {user} {what} are blocked {how_long} due to an excessive number of unsuccessful log in attempts"
    );
    push_sources(&mut text, sources);
    text.push_str("; ");
    text.push_str(still);
    text.push('.');
    text
}

/// " from 203.0.113.7 (IT Glue) and 2 other sources", or nothing without sources.
fn push_sources(text: &mut String, sources: &[Source]) {
    if let Some(top) = sources.first() {
        text.push_str(" from ");
        text.push_str(&describe(top));
        match sources.len() - 1 {
            0 => {}
            1 => text.push_str(" and 1 other source"),
            n => text.push_str(&format!(" and {n} other sources")),
        }
    }
}

/// The text of an `ip_blocked` notice: "Sign-ins from 203.0.113.7 are blocked for 1 hour:
/// 50 failed sign-ins against 50 accounts (password spraying)."
pub fn ip_blocked(ip: &str, failures: u32, users: u32, seconds: Option<u64>) -> String {
    let how_long = match seconds {
        Some(s) => format!("for {}", duration(s)),
        None => "until an administrator unblocks it".to_owned(),
    };
    let plural = |n: u32, one: &str, many: &str| format!("{n} {}", if n == 1 { one } else { many });
    format!(
        "Sign-ins from {ip} are blocked {how_long}: {} against {} (password spraying).",
        plural(failures, "failed sign-in", "failed sign-ins"),
        plural(users, "account", "accounts")
    )
}

/// "Your account has been locked by an administrator for 2 hours (reason: offboarding)."
pub fn admin_locked(seconds: Option<u64>, reason: Option<&str>) -> String {
    let mut text = format!("Your account has been locked by an administrator {}", for_how_long(seconds));
    if let Some(r) = reason.filter(|r| !r.is_empty()) {
        text.push_str(&format!(" (reason: {r})"));
    }
    text.push('.');
    text
}

fn for_how_long(seconds: Option<u64>) -> String {
    match seconds {
        Some(s) => format!("for {}", duration(s)),
        None => "until an administrator unlocks it".to_owned(),
    }
}

fn describe(s: &Source) -> String {
    match &s.client {
        Some(c) if !c.is_empty() => format!("{} ({c})", s.ip),
        _ => s.ip.to_string(),
    }
}

/// A duration in the largest units that say it exactly: "30 minutes", "2 hours",
/// "1 day", "1 hour 30 minutes", "45 seconds".
pub fn duration(seconds: u64) -> String {
    if seconds == 0 {
        return "0 seconds".to_owned();
    }
    let units = [(86_400, "day"), (3_600, "hour"), (60, "minute"), (1, "second")];
    let mut rest = seconds;
    let mut parts = Vec::new();
    for (size, name) in units {
        let n = rest / size;
        rest %= size;
        if n > 0 {
            parts.push(format!("{n} {name}{}", if n == 1 { "" } else { "s" }));
        }
    }
    parts.join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_naturally() {
        for (s, text) in [
            (1, "1 second"),
            (45, "45 seconds"),
            (60, "1 minute"),
            (300, "5 minutes"),
            (1800, "30 minutes"),
            (5400, "1 hour 30 minutes"),
            (7200, "2 hours"),
            (86_400, "1 day"),
            (90_061, "1 day 1 hour 1 minute 1 second"),
        ] {
            assert_eq!(duration(s), text, "{s}");
        }
    }

    /// Kaseya BMS's lock e-mail: "locked for X minutes due to an excessive number of
    /// unsuccessful log in attempts", here followed by the sources of the failures.
    #[test]
    fn bms_lock_email_sentence_with_sources_and_admin_lock_text() {
        let src = |ip: &str, client: Option<&str>, failures| Source {
            ip: ip.into(),
            client: client.map(Into::into),
            failures,
        };
        assert_eq!(
            auto_locked(Some(1800), &[src("203.0.113.7", Some("IT Glue"), 5)]),
            "Your account has been locked for 30 minutes due to an excessive number of unsuccessful log in attempts from 203.0.113.7 (IT Glue)."
        );
        assert_eq!(
            auto_locked(None, &[src("203.0.113.7", None, 3), src("198.51.100.2", None, 2), src("::1", None, 1)]),
            "Your account has been locked until an administrator unlocks it due to an excessive number of unsuccessful log in attempts from 203.0.113.7 and 2 other sources."
        );
        assert_eq!(
            admin_locked(Some(7200), Some("offboarding")),
            "Your account has been locked by an administrator for 2 hours (reason: offboarding)."
        );
    }
}
