//! Requests and replies of the micro service `lockout` on `<p>.svc.<tenant>.<op>`.
//!
//! The tenant is the subject's token. In JSON a request may also carry `tenant`; when it
//! differs from the subject the request is refused ([`decode_request`]). Unknown JSON fields
//! in requests are ignored, except inside a `Policy`, which is strict.

use compact_str::CompactString;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::codec::{check_size, decode, Encoding};
use crate::error::{RejectReason, Rejection};
use crate::event::{Account, Factor, ResetMethod};
use crate::ids::Tenant;
use crate::notice::Source;
use crate::policy::Policy;
use crate::status::{Scope, Status};
use crate::Millis;
use uuid::Uuid;

/// The ops of the service: those of `docs/protocol.md`, in its order, then `health` (an
/// extension), then those contract v2 added.
pub const OPS: [&str; 15] = [
    "status",
    "locked",
    "unlock",
    "lock",
    "mfa_reset",
    "policy_get",
    "policy_set",
    "digest",
    "health",
    "password_reset",
    "explain",
    "ip_status",
    "ip_unblock",
    "unlock_many",
    "ip_blocks",
];

/// Most users one `unlock_many` request may select (contract v2).
pub const UNLOCK_MANY_MAX: usize = 100_000;
/// Default and largest page of `unlock_many` (an extension: how its replies are paged).
pub const UNLOCK_MANY_PAGE: u32 = 1000;

/// Default and largest page size of `locked`.
pub const LOCKED_DEFAULT_LIMIT: u32 = 100;
pub const LOCKED_MAX_LIMIT: u32 = 1000;

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct StatusRequest {
    pub user: String,
    /// Contract v2: the source of the attempt about to be made. Without it only the
    /// account-wide lock is considered.
    #[serde(default, with = "crate::layout::v2")]
    pub ip: Option<CompactString>,
    /// Contract v2: its client; a client lock applies with `account: "api"`.
    #[serde(default, with = "crate::layout::v2")]
    pub client: Option<CompactString>,
    /// Contract v2: its account kind.
    #[serde(default, with = "crate::layout::v2")]
    pub account: Option<Account>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct LockedRequest {
    /// Page size, 1–1000; absent = 100.
    pub limit: Option<u32>,
    /// The `next` cursor of the previous page.
    pub after: Option<String>,
}

impl LockedRequest {
    /// The page size, refusing values outside 1–1000.
    pub fn page_size(&self) -> Result<u32, Rejection> {
        match self.limit {
            None => Ok(LOCKED_DEFAULT_LIMIT),
            Some(n) if (1..=LOCKED_MAX_LIMIT).contains(&n) => Ok(n),
            Some(n) => Err(Rejection::new(
                RejectReason::OutOfRange,
                format!("field `limit` is {n}; it must be 1 to {LOCKED_MAX_LIMIT} (default {LOCKED_DEFAULT_LIMIT})"),
            )),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockedReply {
    pub users: Vec<Status>,
    /// Non-null exactly when more locked users follow; pass it as `after`.
    pub next: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnlockRequest {
    pub user: CompactString,
    pub actor: CompactString,
    pub reason: Option<CompactString>,
    /// Contract v2: unlock only if the lock in force was started by this event, else 409.
    #[serde(default, with = "crate::layout::v2_uuid")]
    pub lock_event: Option<Uuid>,
}

/// Contract v2: the identity provider reports a verified password change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PasswordResetRequest {
    pub user: CompactString,
    pub method: ResetMethod,
    #[serde(default)]
    pub actor: Option<CompactString>,
}

/// Contract v2: an IP's block and recent failures for the tenant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IpStatusRequest {
    pub ip: CompactString,
}

/// Contract v2: the `ip_status` reply (also `ip_unblock`'s).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IpStatusReply {
    /// Canonical text of the address.
    pub ip: CompactString,
    pub blocked: bool,
    /// The block's end while blocked; `None` otherwise or until an admin unblocks.
    pub blocked_until: Option<Millis>,
    /// Failures from the IP within `ip_window_seconds` up to now (not counting those while
    /// blocked); while blocked, those that led to the block.
    pub failures: u32,
    /// Distinct users of those failures.
    pub users: u32,
    /// An extension: the `ip_block` event of the block in force.
    #[serde(default, with = "crate::uuid16::option")]
    pub block_event: Option<Uuid>,
}

/// An extension: the tenant's IP blocks in force, a page at a time (`limit` 1–1000, default
/// 100; `after` the previous page's `next`), in the order of the IPs' canonical text.
pub type IpBlocksRequest = LockedRequest;

/// An extension: a page of the tenant's IP blocks in force, each as its `ip_status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IpBlocksReply {
    pub ips: Vec<IpStatusReply>,
    /// Non-null exactly when more blocks follow; pass it as `after`.
    pub next: Option<String>,
}

/// Contract v2: end an IP's block.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IpUnblockRequest {
    pub ip: CompactString,
    pub actor: CompactString,
    #[serde(default)]
    pub reason: Option<CompactString>,
}

/// Contract v2: unlock every user of the tenant whose automatic lock in force (`failures` or a
/// scope lock) was tripped by an attempt from one of `ips` with `locked_at` in
/// [`since`, `until`]; admin locks are never touched.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnlockManyRequest {
    pub actor: CompactString,
    #[serde(default)]
    pub reason: Option<CompactString>,
    /// Inclusive, ms since the Unix epoch; required.
    pub since: Millis,
    /// Inclusive; absent: now.
    #[serde(default)]
    pub until: Option<Millis>,
    /// IPs or CIDR blocks (`203.0.113.0/24`, `2001:db8::/32`); absent: every IP.
    #[serde(default)]
    pub ips: Option<Vec<CompactString>>,
    /// An extension: answer who would be unlocked, append nothing.
    #[serde(default)]
    pub dry_run: bool,
    /// An extension: users per reply, 1–1000 (default 1000); the rest by `after`.
    #[serde(default)]
    pub limit: Option<u32>,
    /// An extension: the `next` of the previous reply.
    #[serde(default)]
    pub after: Option<String>,
}

/// Contract v2: the `unlock_many` reply.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnlockManyReply {
    /// Users unlocked by this request (with `dry_run`: who would be).
    pub unlocked: u32,
    pub users: Vec<CompactString>,
    /// More users are selected: send the request again with `after` = this (an extension).
    pub next: Option<String>,
}

/// Contract v2: why a user is (or would be) locked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExplainRequest {
    pub user: CompactString,
}

/// One failure on a counter in force (`explain`'s `counted`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CountedFailure {
    /// Its `LOCKOUT_EVENTS` sequence.
    pub seq: u64,
    /// Its stored time.
    pub at: Millis,
    pub ip: CompactString,
    pub client: Option<CompactString>,
    pub factor: Factor,
    /// The counter it went to.
    pub counter: Scope,
}

/// The reply of `explain`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExplainReply {
    pub status: Status,
    pub policy: Policy,
    /// The failures on the counters in force, oldest first.
    pub counted: Vec<CountedFailure>,
    /// The account counter's sources, most failures first.
    pub sources: Vec<Source>,
    /// Attempts refused while a lock was in force (blocked or `rejected`).
    pub blocked_attempts: u64,
    /// One sentence: what locks, or would lock, the user.
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockRequest {
    pub user: CompactString,
    pub actor: CompactString,
    pub reason: Option<CompactString>,
    /// Lock length, ≥ 1; absent = until an admin unlocks.
    pub seconds: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MfaResetRequest {
    pub user: CompactString,
    pub actor: CompactString,
    pub reason: Option<CompactString>,
}

/// `policy_get` takes an empty object (no bytes in postcard).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct PolicyGetRequest {}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicySetRequest {
    pub actor: CompactString,
    pub policy: Policy,
}

/// `digest` takes an empty object (no bytes in postcard).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct DigestRequest {}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DigestReply {
    /// `LOCKOUT_EVENTS` sequence of the last folded event.
    pub seq: u64,
    /// Users of the tenant with a stored state.
    pub users: u64,
    /// Lower-case hex SHA-256 over the tenant's user states; equal on stores that folded the
    /// same events.
    pub digest: String,
}

/// `health` takes an empty object (no bytes in postcard). An extension of the protocol
/// (`docs/protocol.md`).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct HealthRequest {}

/// How lockoutd is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, strum::IntoStaticStr)]
#[serde(rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
pub enum HealthStatus {
    /// Folding, within [`LAGGING_AFTER`] events of the stream's end.
    Ready,
    /// More than [`LAGGING_AFTER`] events behind.
    Lagging,
    /// The store is failing (e.g. disk full): not consuming until it recovers.
    Unhealthy,
}

/// Events behind the stream's end above which lockoutd reports `lagging`.
pub const LAGGING_AFTER: u64 = 10_000;

/// The reply of `health`. An extension of the protocol (`docs/protocol.md`).
///
/// In JSON it has every field; in postcard the first five (the layout of
/// `schemas/postcard.md`, unchanged until a v2 layout: a postcard reader of the five fields
/// must not meet trailing bytes), so the later ones decode from postcard as `None`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthReply {
    pub status: HealthStatus,
    /// `LOCKOUT_EVENTS` sequence of the last folded event.
    pub seq: u64,
    /// Events in the stream not yet folded, as of the last fetch.
    pub lag: u64,
    /// When the last batch was committed (lockoutd's clock), null before the first.
    pub last_commit_at: Option<u64>,
    /// The store's error while unhealthy.
    pub error: Option<String>,
    /// How far lockoutd's clock runs ahead of the NATS server's, ms (negative: behind),
    /// estimated from the stored times of live events; null before the first. JSON only.
    pub clock_skew_ms: Option<i64>,
    /// The store's disk, as last read (every 10 s); null before the first. JSON only.
    pub disk: Option<DiskUse>,
    /// What the streams keep. JSON only.
    pub retention: Option<Retention>,
    /// Contract v2: the process that answered (`--instance`). JSON only.
    pub instance: Option<String>,
    /// Contract v2: the partitions this process folds (all of them while one process runs).
    /// JSON only.
    pub partitions: Option<Vec<u32>>,
}

/// The disk lockoutd's store lives on (`health`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct DiskUse {
    /// Bytes of the store.
    pub store_bytes: u64,
    /// Bytes free on its filesystem (for unprivileged writers).
    pub free_bytes: u64,
    /// Size of its filesystem.
    pub total_bytes: u64,
}

/// What the streams and the store keep (`health`); 0 is no bound.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Retention {
    pub events_max_age_days: u64,
    pub events_max_bytes: u64,
    pub dead_max_messages: u64,
    /// `--state-ttl-days`: an unlocked user whose state recorded nothing for this many days
    /// is dropped by a `forget` event (0: never).
    #[serde(default)]
    pub state_ttl_days: u64,
}

/// [`HealthReply`] on the wire: every field in JSON, the v1 five in postcard.
#[derive(Serialize, Deserialize)]
#[serde(rename = "HealthReply")]
struct HealthWire {
    status: HealthStatus,
    seq: u64,
    lag: u64,
    last_commit_at: Option<u64>,
    error: Option<String>,
}

#[derive(Serialize, Deserialize)]
#[serde(rename = "HealthReply")]
struct HealthWireJson {
    #[serde(flatten)]
    v1: HealthWire,
    #[serde(default)]
    clock_skew_ms: Option<i64>,
    #[serde(default)]
    disk: Option<DiskUse>,
    #[serde(default)]
    retention: Option<Retention>,
    #[serde(default)]
    instance: Option<String>,
    #[serde(default)]
    partitions: Option<Vec<u32>>,
}

impl Serialize for HealthReply {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let v1 = HealthWire {
            status: self.status,
            seq: self.seq,
            lag: self.lag,
            last_commit_at: self.last_commit_at,
            error: self.error.clone(),
        };
        if s.is_human_readable() {
            HealthWireJson {
                v1,
                clock_skew_ms: self.clock_skew_ms,
                disk: self.disk,
                retention: self.retention,
                instance: self.instance.clone(),
                partitions: self.partitions.clone(),
            }
            .serialize(s)
        } else {
            v1.serialize(s)
        }
    }
}

impl<'de> Deserialize<'de> for HealthReply {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        if !d.is_human_readable() {
            let HealthWire { status, seq, lag, last_commit_at, error } = HealthWire::deserialize(d)?;
            let (clock_skew_ms, disk, retention, instance, partitions) = (None, None, None, None, None);
            return Ok(HealthReply {
                status,
                seq,
                lag,
                last_commit_at,
                error,
                clock_skew_ms,
                disk,
                retention,
                instance,
                partitions,
            });
        }
        let w = HealthWireJson::deserialize(d)?;
        let HealthWire { status, seq, lag, last_commit_at, error } = w.v1;
        Ok(HealthReply {
            status,
            seq,
            lag,
            last_commit_at,
            error,
            clock_skew_ms: w.clock_skew_ms,
            disk: w.disk,
            retention: w.retention,
            instance: w.instance,
            partitions: w.partitions,
        })
    }
}

/// Any JSON value, refusing an object that names a key twice at any depth (serde_json keeps
/// the last one silently, so `{"user":"alice","user":"mallory"}` would read as mallory).
struct NoDuplicateKeys;

impl<'de> serde::Deserialize<'de> for NoDuplicateKeys {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = NoDuplicateKeys;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON value")
            }
            fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
                Ok(NoDuplicateKeys)
            }
            fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
                Ok(NoDuplicateKeys)
            }
            fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
                Ok(NoDuplicateKeys)
            }
            fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
                Ok(NoDuplicateKeys)
            }
            fn visit_str<E>(self, _: &str) -> Result<Self::Value, E> {
                Ok(NoDuplicateKeys)
            }
            fn visit_unit<E>(self) -> Result<Self::Value, E> {
                Ok(NoDuplicateKeys)
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                while seq.next_element::<NoDuplicateKeys>()?.is_some() {}
                Ok(NoDuplicateKeys)
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut seen = std::collections::HashSet::new();
                while let Some(key) = map.next_key::<String>()? {
                    if !seen.insert(key.clone()) {
                        return Err(serde::de::Error::custom(format_args!("field `{key}` appears twice")));
                    }
                    map.next_value::<NoDuplicateKeys>()?;
                }
                Ok(NoDuplicateKeys)
            }
        }
        d.deserialize_any(Visitor)
    }
}

/// Decodes a request for `tenant`. An empty JSON body reads as `{}`; a JSON `tenant` field
/// that differs from the subject's tenant is refused, and so is a key given twice.
pub fn decode_request<T: DeserializeOwned>(enc: Encoding, bytes: &[u8], tenant: &Tenant) -> Result<T, Rejection> {
    match enc {
        Encoding::Postcard | Encoding::PostcardV2 => decode(enc, bytes, "the request"),
        Encoding::Json => {
            check_size(bytes)?;
            let bytes = if bytes.iter().all(u8::is_ascii_whitespace) { b"{}".as_slice() } else { bytes };
            serde_json::from_slice::<NoDuplicateKeys>(bytes).map_err(|e| {
                Rejection::new(RejectReason::Undecodable, format!("the request is not valid JSON: {e}"))
            })?;
            let mut value: serde_json::Value = serde_json::from_slice(bytes).map_err(|e| {
                Rejection::new(RejectReason::Undecodable, format!("the request is not valid JSON: {e}"))
            })?;
            let obj = value
                .as_object_mut()
                .ok_or_else(|| Rejection::new(RejectReason::Undecodable, "the request must be a JSON object"))?;
            match obj.remove("tenant") {
                None | Some(serde_json::Value::Null) => {}
                Some(serde_json::Value::String(t)) if t == tenant.as_str() => {}
                Some(other) => {
                    return Err(Rejection::new(
                        RejectReason::Mismatch,
                        format!(
                            "body tenant {other} differs from the subject's tenant {:?}; send the request to the body's tenant or drop the field",
                            tenant.as_str()
                        ),
                    ))
                }
            }
            serde_json::from_value(value).map_err(|e| {
                Rejection::new(RejectReason::Undecodable, format!("the request is not valid for this op: {e}"))
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn acme() -> Tenant {
        Tenant::parse("acme").unwrap()
    }

    #[test]
    fn json_tenant_must_match() {
        let ok: StatusRequest = decode_request(Encoding::Json, br#"{"tenant":"acme","user":"a"}"#, &acme()).unwrap();
        assert_eq!(ok.user, "a");
        let e =
            decode_request::<StatusRequest>(Encoding::Json, br#"{"tenant":"other","user":"a"}"#, &acme()).unwrap_err();
        assert_eq!(e.reason, RejectReason::Mismatch);
        assert!(e.message.contains("\"other\""), "{}", e.message);
    }

    /// postmortem (found by reading, while writing the fuzz targets): a key given twice was
    /// read as its last value, so `{"user":"alice","user":"mallory"}` asked about mallory.
    #[test]
    fn a_key_given_twice_is_refused_at_any_depth() {
        let e = decode_request::<StatusRequest>(Encoding::Json, br#"{"user":"alice","user":"mallory"}"#, &acme())
            .unwrap_err();
        assert_eq!(e.reason, RejectReason::Undecodable);
        assert!(e.message.contains("field `user` appears twice"), "{}", e.message);
        let nested = br#"{"actor":"a","policy":{"max_failures":3,"max_failures":0}}"#;
        let e = decode_request::<PolicySetRequest>(Encoding::Json, nested, &acme()).unwrap_err();
        assert!(e.message.contains("field `max_failures` appears twice"), "{}", e.message);
        assert!(
            serde_json::from_slice::<NoDuplicateKeys>(br#"[{"a":1},{"a":{"a":2}}]"#).is_ok(),
            "the same key in sibling or nested objects is no duplicate"
        );
    }

    #[test]
    fn empty_bodies_are_empty_objects() {
        decode_request::<PolicyGetRequest>(Encoding::Json, b"", &acme()).unwrap();
        decode_request::<DigestRequest>(Encoding::Postcard, b"", &acme()).unwrap();
        let r: LockedRequest = decode_request(Encoding::Json, b" ", &acme()).unwrap();
        assert_eq!(r.page_size().unwrap(), 100);
    }

    #[test]
    fn locked_limit_range() {
        for (limit, ok) in [(0, false), (1, true), (1000, true), (1001, false)] {
            let r = LockedRequest { limit: Some(limit), after: None };
            assert_eq!(r.page_size().is_ok(), ok, "{limit}");
        }
    }

    #[test]
    fn missing_required_field_names_it() {
        let e = decode_request::<UnlockRequest>(Encoding::Json, br#"{"user":"a"}"#, &acme()).unwrap_err();
        assert!(e.message.contains("actor"), "{}", e.message);
    }
}
