//! Who the caller is (contract, "Who the caller is"): the account and user nats-server puts
//! in `Nats-Request-Info` when a request crosses a service import with `share: true`.
//!
//! nats-server writes that header itself, replacing one a client sent, whenever a request
//! crosses an import; a request published inside lockoutd's own account passes it through as
//! the client wrote it. So the caller is only as trustworthy as the deployment: every role but
//! lockoutd must live in an account of its own (deploy/nats/lockout.conf), and servers older
//! than 2.11.15 / 2.12.6 let the header be forged (`--require-caller` refuses them).

use async_nats::HeaderMap;
use lockout_proto::event::CALLER_MAX;
use lockout_proto::CompactString;

/// The header nats-server sets on a request that crossed a service import.
pub const REQUEST_INFO: &str = "Nats-Request-Info";

/// The caller `<account>/<user>` of a request, if the server said who it is.
///
/// `None` without the header, or when it names no user (the import lacks `share: true`, so
/// the server sent the account only) or is not the JSON the server writes.
pub fn of(headers: Option<&HeaderMap>) -> Option<CompactString> {
    let value = headers?.get(REQUEST_INFO)?;
    let info: serde_json::Value = serde_json::from_str(value.as_str()).ok()?;
    let field = |name: &str| info.get(name).and_then(serde_json::Value::as_str).filter(|s| !s.is_empty());
    let caller = format!("{}/{}", field("acc")?, field("user")?);
    (caller.chars().count() <= CALLER_MAX).then(|| caller.into())
}

/// Why a write without a caller is refused under `--require-caller` (a 503: the deployment,
/// not the request, needs fixing).
pub fn required_message() -> String {
    format!(
        "this lockoutd runs with --require-caller and the request carries no caller ({REQUEST_INFO} with an account and a user): call the service from an account that imports it with `share: true` (deploy/nats/lockout.conf)"
    )
}

/// Refuses a nats-server that lets a client forge `Nats-Request-Info` (before 2.11.15, and
/// 2.12.0 to 2.12.5). `version` is the server's `INFO` version, e.g. `2.12.6` or `2.14.0-RC.1`.
pub fn check_server_version(version: &str) -> Result<(), String> {
    let core = version.trim_start_matches('v').split(['-', '+']).next().unwrap_or("");
    let parts: Vec<u64> = core.split('.').map(|p| p.parse().unwrap_or(0)).collect();
    let (major, minor, patch) =
        (parts.first().copied().unwrap_or(0), parts.get(1).copied().unwrap_or(0), parts.get(2).copied().unwrap_or(0));
    let safe = match (major, minor) {
        (m, _) if m > 2 => true,
        (2, n) if n > 12 => true,
        (2, 12) => patch >= 6,
        (2, 11) => patch >= 15,
        _ => false,
    };
    if safe {
        Ok(())
    } else {
        Err(format!(
            "--require-caller: nats-server {version:?} lets clients forge {REQUEST_INFO}; upgrade it to 2.11.15, 2.12.6 or later, or run without --require-caller"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(REQUEST_INFO, value);
        h
    }

    #[test]
    fn the_caller_is_account_slash_user() {
        let h = headers(r#"{"acc":"ADMIN_ACME","rtt":1000,"user":"alice","lang":"rust","kind":"Client"}"#);
        assert_eq!(of(Some(&h)).as_deref(), Some("ADMIN_ACME/alice"));
    }

    #[test]
    fn no_header_no_user_or_garbage_is_no_caller() {
        assert_eq!(of(None), None);
        assert_eq!(of(Some(&HeaderMap::new())), None);
        assert_eq!(of(Some(&headers(r#"{"acc":"ADMIN_ACME","rtt":1000}"#))), None, "import without share: true");
        assert_eq!(of(Some(&headers("not json"))), None);
        let long = format!(r#"{{"acc":"A","user":"{}"}}"#, "u".repeat(CALLER_MAX));
        assert_eq!(of(Some(&headers(&long))), None, "longer than an event may carry");
    }

    #[test]
    fn servers_that_let_the_header_be_forged_are_refused() {
        for ok in ["2.11.15", "2.11.16", "2.12.6", "2.12.10", "2.13.0", "2.15.1", "v2.14.0-RC.1", "3.0.0"] {
            assert_eq!(check_server_version(ok), Ok(()), "{ok}");
        }
        for bad in ["2.11.14", "2.12.0", "2.12.5", "2.10.29", "2.9.0", "", "garbage"] {
            let e = check_server_version(bad).unwrap_err();
            assert!(e.contains("2.12.6"), "{bad}: {e}");
        }
    }
}
