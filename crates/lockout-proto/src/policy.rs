//! The per-tenant lockout policy.
//!
//! A tenant with no policy uses [`Policy::default`]. In JSON an absent field takes its
//! default; `null`, an unknown field or a value out of range is refused.

use serde::{Deserialize, Serialize};

use crate::error::Rejection;

/// How failures lock an account. Field order is the postcard layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Policy {
    /// Counted failures that lock the account; 0 = never lock automatically.
    pub max_failures: u32,
    /// Length of an automatic lock; 0 = locked until an admin unlocks.
    pub lock_seconds: u32,
    /// The counter restarts when this long has passed since the last counted failure; 0 = never.
    pub window_seconds: u32,
    /// A successful login clears the counter.
    pub reset_on_success: bool,
    /// Failed `mfa` / `recovery_code` attempts count like password failures.
    pub count_mfa_failures: bool,
    /// A failure whose `credential` was already counted in this streak is not counted again.
    pub dedupe_credential: bool,
    /// Each further automatic lock within `history_seconds` lasts this many times longer (≥ 1).
    pub lock_multiplier: u32,
    /// Cap for progressive locks.
    pub max_lock_seconds: u64,
    /// Look-back for progressive and permanent locks.
    pub history_seconds: u32,
    /// This many automatic locks within `history_seconds` make the next one permanent; 0 = never.
    pub permanent_after: u32,
    /// Contract v2: > 0: an IP with a final success in the last this many days is familiar;
    /// failures from unfamiliar IPs count on a counter of their own, which locks only
    /// unfamiliar IPs. 0: one counter (v1).
    #[serde(with = "crate::layout::v2")]
    pub familiar_days: u32,
    /// Contract v2: failures of a known API client count on that client's counter, which
    /// locks only that client.
    #[serde(with = "crate::layout::v2")]
    pub api_client_scope: bool,
    /// Contract v2: what a success clears under `reset_on_success`.
    #[serde(with = "crate::layout::v2")]
    pub reset_scope: ResetScope,
    /// Contract v2: a `password_reset` ends the user's `failures` and scope locks.
    #[serde(with = "crate::layout::v2_true")]
    pub unlock_on_password_reset: bool,
    /// Contract v2: > 0: failures from one IP across the tenant's users within
    /// `ip_window_seconds` that block the IP for the tenant (`lockout_core::ip`).
    #[serde(with = "crate::layout::v2")]
    pub ip_max_failures: u32,
    /// Contract v2: the sliding window of `ip_max_failures`, ≥ 1.
    #[serde(with = "crate::layout::v2_hour")]
    pub ip_window_seconds: u32,
    /// Contract v2: how long an IP block lasts; 0 = until an admin unblocks.
    #[serde(with = "crate::layout::v2_hour")]
    pub ip_block_seconds: u32,
}

/// What a success clears under `reset_on_success` (contract v2, `reset_scope`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize, strum::IntoStaticStr)]
#[serde(rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
pub enum ResetScope {
    /// Every failure on the counters its source's failures went to (v1).
    #[default]
    All,
    /// Only the failures from the success's IP (NIST SP 800-63B §5.2.2).
    SameIp,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            max_failures: 5,
            lock_seconds: 1800,
            window_seconds: 0,
            reset_on_success: true,
            count_mfa_failures: true,
            dedupe_credential: false,
            lock_multiplier: 1,
            max_lock_seconds: 86_400,
            history_seconds: 86_400,
            permanent_after: 0,
            familiar_days: 0,
            api_client_scope: false,
            reset_scope: ResetScope::All,
            unlock_on_password_reset: true,
            ip_max_failures: 0,
            ip_window_seconds: 3600,
            ip_block_seconds: 3600,
        }
    }
}

impl Policy {
    /// Checks the ranges serde's types do not express.
    pub fn validate(&self) -> Result<(), Rejection> {
        if self.lock_multiplier < 1 {
            return Err(Rejection::out_of_range(
                "field `policy.lock_multiplier` is 0; it must be at least 1 (1 = every lock lasts `lock_seconds`)",
            ));
        }
        if self.ip_window_seconds < 1 {
            return Err(Rejection::out_of_range(
                "field `policy.ip_window_seconds` is 0; it must be at least 1 (the window in which `ip_max_failures` failures from one IP block it)",
            ));
        }
        if self.familiar_days > FAMILIAR_DAYS_MAX {
            return Err(Rejection::out_of_range(format!(
                "field `policy.familiar_days` is {}; it must be at most {FAMILIAR_DAYS_MAX} (0 = off)",
                self.familiar_days
            )));
        }
        Ok(())
    }
}

/// Largest `familiar_days` (ten years).
pub const FAMILIAR_DAYS_MAX: u32 = 3650;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::{decode, Encoding};
    use crate::error::RejectReason;

    fn json(s: &str) -> Result<Policy, Rejection> {
        decode::<Policy>(Encoding::Json, s.as_bytes(), "policy").and_then(|p| p.validate().map(|()| p))
    }

    #[test]
    fn absent_fields_take_defaults() {
        assert_eq!(json("{}").unwrap(), Policy::default());
        let p = json(r#"{"max_failures":3,"reset_on_success":false}"#).unwrap();
        assert_eq!(p, Policy { max_failures: 3, reset_on_success: false, ..Policy::default() });
    }

    #[test]
    fn null_unknown_and_out_of_range_are_refused() {
        for (body, needle) in [
            (r#"{"max_failures":null}"#, "null"),
            (r#"{"max_fialures":3}"#, "unknown field"),
            (r#"{"max_failures":-1}"#, "-1"),
            (r#"{"max_failures":4294967296}"#, "4294967296"),
            (r#"{"reset_on_success":"yes"}"#, "boolean"),
        ] {
            let e = json(body).unwrap_err();
            assert_eq!(e.reason, RejectReason::Undecodable, "{body}");
            assert!(e.message.contains(needle), "{body}: {}", e.message);
        }
        let e = json(r#"{"lock_multiplier":0}"#).unwrap_err();
        assert_eq!(e.reason, RejectReason::OutOfRange);
        assert!(e.message.contains("lock_multiplier"));
    }
}
