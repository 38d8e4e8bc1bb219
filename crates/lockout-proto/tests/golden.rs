//! Golden vectors: one representative value of every wire message, pinned as committed
//! fixtures in `schemas/golden/` (`<name>.json`, pretty JSON, `<name>.postcard.hex`, the
//! postcard bytes of the v1 layout as one line of lower-case hex, and `<name>.postcard-v2.hex`,
//! those of the v2 layout). The v1 files predate contract v2 and must never change: a v1
//! body decodes to the vector with the fields v2 added at their defaults ([`v1_of`]).
//!
//! Each vector is checked both ways and in both encodings: the value built here must encode to
//! exactly the file's bytes (JSON compared as a `serde_json::Value`), and the file's bytes must
//! decode to the value, through the same entry points the service uses (`Event::decode_checked`,
//! `decode_request`, `Notice::decode`) as well as the plain codec.
//!
//! `UPDATE_GOLDEN=1 cargo test -p lockout-proto --test golden` rewrites the files from the
//! values instead; review the diff before committing it, since a changed vector is a changed
//! wire format.

use std::collections::BTreeSet;
use std::fmt::Debug;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;
use uuid::Uuid;

use lockout_proto::codec::{decode, encode, Encoding};
use lockout_proto::command::{
    decode_request, CountedFailure, DigestReply, DigestRequest, ExplainReply, ExplainRequest, HealthReply,
    HealthRequest, HealthStatus, IpBlocksReply, IpStatusReply, IpStatusRequest, IpUnblockRequest, LockRequest,
    LockedReply, LockedRequest, MfaResetRequest, PasswordResetRequest, PolicyGetRequest, PolicySetRequest,
    StatusRequest, UnlockManyReply, UnlockManyRequest, UnlockRequest,
};
use lockout_proto::event::{
    Account, Attempt, Event, Expired, Factor, Forget, IpBlock, IpExpired, IpUnblock, Lock, MfaReset, Outcome,
    PasswordReset, PolicyChange, ResetMethod, Unlock,
};
use lockout_proto::notice::{
    How, IpBlockedNotice, IpUnblockedNotice, LockedNotice, MfaResetNotice, Notice, Source, UnlockedNotice,
};
use lockout_proto::policy::ResetScope;
use lockout_proto::status::{BlockedBy, LockReason, Scope};
use lockout_proto::{Policy, Status, Subjects, Tenant};

const TENANT: &str = "acme";
const ALICE: &str = "alice@acme.com";
const ADMIN: &str = "admin@acme.com";
/// The authenticated caller nats-server vouched for (contract v2, "Who the caller is").
const CALLER: &str = "ADMIN_ACME/admin_acme_alice";
/// 2024-07-27T19:54:38.539Z, the time in the version-7 UUIDs below.
const T0: u64 = 1_722_110_078_539;

/// A fixed version-7 UUID whose last byte is `n`.
fn id(n: u8) -> Uuid {
    Uuid::parse_str(&format!("0190f5c2-6e4b-7000-8000-0000000000{n:02x}")).unwrap()
}

/// The fixture folder; with `UPDATE_GOLDEN=1` the first call rewrites every fixture, before any
/// test reads one.
fn golden_dir() -> PathBuf {
    static UPDATED: OnceLock<()> = OnceLock::new();
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../schemas/golden");
    UPDATED.get_or_init(|| {
        if std::env::var("UPDATE_GOLDEN").is_ok_and(|v| v == "1") {
            write_fixtures(&dir);
        }
    });
    dir
}

fn write_fixtures(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    for case in cases() {
        let (_, encoder) = &case.encoders[0];
        std::fs::write(dir.join(format!("{}.json", case.name)), format!("{}\n", case.pretty)).unwrap();
        for (suffix, enc) in LAYOUTS {
            let hex = hex::encode(encoder(enc));
            std::fs::write(dir.join(format!("{}.{suffix}.hex", case.name)), format!("{hex}\n")).unwrap();
        }
    }
}

/// The postcard fixtures: file suffix and encoding.
const LAYOUTS: [(&str, Encoding); 2] = [("postcard", Encoding::Postcard), ("postcard-v2", Encoding::PostcardV2)];

/// The JSON keys contract v2 added to the message a vector's name starts with (nested Status
/// items of a `locked` page included): absent from the v1 layout.
fn v2_keys(name: &str) -> &'static [&'static str] {
    match name.split('.').take(2).collect::<Vec<_>>()[..] {
        ["event", "attempt"] => &["final"],
        ["event", "unlock"] => &["caller", "lock_event"],
        ["event", "lock" | "mfa_reset" | "policy"] => &["caller"],
        ["policy"] | ["reply", "policy_get" | "policy_set"] => POLICY,
        ["request", "status"] => &["ip", "client", "account"],
        ["request", "unlock"] => &["lock_event"],
        ["notice", "locked"] => &["scope", "caller"],
        ["notice", "unlocked"] => &["scope", "client", "caller"],
        ["notice", "mfa_reset"] => &["caller"],
        ["status"]
        | ["write_reply"]
        | ["reply", "status" | "unlock" | "lock" | "mfa_reset" | "locked" | "password_reset"] => STATUS,
        _ => &[],
    }
}

/// The Status fields contract v2 added.
const STATUS: &[&str] =
    &["allowed", "blocked_by", "unfamiliar_failures", "scope_locks", "unlocked_caller", "mfa_reset_caller"];

/// The policy fields contract v2 added.
const POLICY: &[&str] = &[
    "familiar_days",
    "api_client_scope",
    "reset_scope",
    "unlock_on_password_reset",
    "ip_max_failures",
    "ip_window_seconds",
    "ip_block_seconds",
];

/// What a v1 postcard body of `value` decodes to: the v2 fields at their defaults.
fn v1_of<T: Serialize + DeserializeOwned>(name: &str, value: &T) -> T {
    let keys = v2_keys(name);
    let strip = |v: &mut Value| {
        if let Some(o) = v.as_object_mut() {
            for k in keys {
                // `client` of a locked notice is v1's; only the unlocked notice added one.
                o.remove(*k);
            }
        }
    };
    let mut json = serde_json::to_value(value).unwrap();
    strip(&mut json);
    // Nested messages follow the layout of the message around them.
    for (field, keys) in [("policy", POLICY), ("status", STATUS)] {
        if let Some(inner) = json.get_mut(field).and_then(Value::as_object_mut) {
            for k in keys {
                inner.remove(*k);
            }
        }
    }
    if let Some(users) = json.get_mut("users").and_then(Value::as_array_mut) {
        users.iter_mut().for_each(strip);
    }
    serde_json::from_value(json).unwrap()
}

type Encoder = Box<dyn Fn(Encoding) -> Vec<u8>>;
type Decoder = Box<dyn Fn(Encoding, &[u8]) -> Result<(), String>>;
type Acceptor = Box<dyn Fn(&[u8]) -> bool>;

/// One golden vector: how to write it, and every way it must encode and decode.
struct Case {
    name: String,
    /// Pretty JSON in field order, for the fixture file.
    pretty: String,
    encoders: Vec<(&'static str, Encoder)>,
    decoders: Vec<(&'static str, Decoder)>,
    /// Whether some JSON decodes as this message's type at all.
    accepts_json: Acceptor,
}

fn same<T: PartialEq + Debug>(got: T, want: &T) -> Result<(), String> {
    if &got == want {
        Ok(())
    } else {
        Err(format!("decoded to\n{got:#?}\nexpected\n{want:#?}"))
    }
}

impl Case {
    /// A vector of a wire struct, encoded and decoded with the plain codec.
    fn new<T>(name: &str, value: T) -> Case
    where
        T: Serialize + DeserializeOwned + PartialEq + Debug + Clone + 'static,
    {
        let pretty = serde_json::to_string_pretty(&value).unwrap();
        let v1 = v1_of(name, &value);
        let (enc_value, dec_value) = (value.clone(), value);
        Case {
            name: name.to_owned(),
            pretty,
            encoders: vec![("codec::encode", Box::new(move |enc| encode(enc, &enc_value)))],
            decoders: vec![(
                "codec::decode",
                Box::new(move |enc, bytes| {
                    let want = if enc == Encoding::Postcard { &v1 } else { &dec_value };
                    same(decode::<T>(enc, bytes, "golden").map_err(|e| e.message)?, want)
                }),
            )],
            accepts_json: Box::new(|bytes| decode::<T>(Encoding::Json, bytes, "golden").is_ok()),
        }
    }

    fn encoder(mut self, label: &'static str, f: impl Fn(Encoding) -> Vec<u8> + 'static) -> Case {
        self.encoders.push((label, Box::new(f)));
        self
    }

    fn decoder(mut self, label: &'static str, f: impl Fn(Encoding, &[u8]) -> Result<(), String> + 'static) -> Case {
        self.decoders.push((label, Box::new(f)));
        self
    }
}

/// An event vector, also encoded by `Event::encode` and decoded by `Event::decode_checked` on
/// the subject the event belongs on (so every golden event is one the projector accepts).
fn event_case<T>(name: &str, value: T, wrap: fn(T) -> Event) -> Case
where
    T: Serialize + DeserializeOwned + PartialEq + Debug + Clone + 'static,
{
    let event = wrap(value.clone());
    let v1 = wrap(v1_of(name, &value));
    let subjects = Subjects::default();
    let tenant = Tenant::parse(event.tenant()).unwrap();
    let subject = match event.user() {
        Some(user) => subjects.user_event(&tenant, &lockout_proto::UserId::parse(user).unwrap(), event.kind()),
        None => subjects.tenant_event(&tenant, event.kind()),
    };
    let (enc_event, dec_event) = (event.clone(), event);
    Case::new(name, value).encoder("Event::encode", move |enc| enc_event.encode(enc)).decoder(
        "Event::decode_checked",
        move |enc, bytes| {
            let parsed = Subjects::default().parse_event(&subject).map_err(|e| e.message)?;
            let want = if enc == Encoding::Postcard { &v1 } else { &dec_event };
            same(Event::decode_checked(&parsed, enc, bytes).map_err(|e| e.message)?, want)
        },
    )
}

/// A request vector, also decoded by `decode_request` for the tenant `acme`.
fn request_case<T>(name: &str, value: T) -> Case
where
    T: Serialize + DeserializeOwned + PartialEq + Debug + Clone + 'static,
{
    let v1 = v1_of(name, &value);
    let want = value.clone();
    Case::new(name, value).decoder("decode_request", move |enc, bytes| {
        let tenant = Tenant::parse(TENANT).unwrap();
        let want = if enc == Encoding::Postcard { &v1 } else { &want };
        same(decode_request::<T>(enc, bytes, &tenant).map_err(|e| e.message)?, want)
    })
}

/// A notice vector, also encoded by `Notice::encode` and decoded by `Notice::decode`.
fn notice_case<T>(name: &str, value: T, wrap: fn(T) -> Notice) -> Case
where
    T: Serialize + DeserializeOwned + PartialEq + Debug + Clone + 'static,
{
    let notice = wrap(value.clone());
    let v1 = wrap(v1_of(name, &value));
    let (enc_notice, dec_notice) = (notice.clone(), notice);
    Case::new(name, value).encoder("Notice::encode", move |enc| enc_notice.encode(enc)).decoder(
        "Notice::decode",
        move |enc, bytes| {
            let want = if enc == Encoding::Postcard { &v1 } else { &dec_notice };
            same(Notice::decode(dec_notice.kind(), enc, bytes).map_err(|e| e.message)?, want)
        },
    )
}

fn attempt_minimal() -> Attempt {
    Attempt {
        id: id(0x01),
        at: T0,
        tenant: TENANT.into(),
        user: ALICE.into(),
        outcome: Outcome::Failure,
        factor: Factor::Password,
        source_ip: "203.0.113.7".into(),
        client: None,
        credential: None,
        account: None,
        is_final: true,
    }
}

fn pms_policy() -> Policy {
    Policy {
        max_failures: 3,
        lock_seconds: 300,
        window_seconds: 300,
        reset_on_success: false,
        count_mfa_failures: true,
        dedupe_credential: true,
        lock_multiplier: 2,
        max_lock_seconds: 604_800,
        history_seconds: 86_400,
        permanent_after: 4,
        familiar_days: 30,
        api_client_scope: true,
        reset_scope: ResetScope::SameIp,
        unlock_on_password_reset: false,
        ip_max_failures: 100,
        ip_window_seconds: 86_400,
        ip_block_seconds: 7_200,
    }
}

/// alice, locked by her fifth counted failure, which came from IT Glue.
fn status_locked() -> Status {
    Status {
        tenant: TENANT.into(),
        user: ALICE.into(),
        locked: true,
        reason: Some(LockReason::Failures),
        locked_at: Some(T0 + 4_000),
        locked_until: Some(T0 + 4_000 + 1_800_000),
        failures: 5,
        max_failures: 5,
        last_failure_at: Some(T0 + 4_000),
        last_source_ip: Some("203.0.113.7".into()),
        unlocked_at: None,
        unlocked_by: None,
        mfa_reset_at: None,
        mfa_reset_by: None,
        mfa_reenrol: false,
        lock_count: 1,
        allowed: false,
        blocked_by: Some(BlockedBy::Account),
        unfamiliar_failures: 0,
        scope_locks: vec![],
        unlocked_caller: None,
        mfa_reset_caller: None,
    }
}

fn cases() -> Vec<Case> {
    let tenant = || TENANT.to_owned();
    let alice = || ALICE.to_owned();
    let admin = || ADMIN.to_owned();
    let locked_at = T0 + 4_000;

    let status_unlocked_by_admin = Status {
        locked: false,
        reason: None,
        locked_at: None,
        locked_until: None,
        failures: 0,
        unlocked_at: Some(T0 + 60_000),
        unlocked_by: Some(admin().into()),
        unlocked_caller: Some(CALLER.into()),
        allowed: true,
        blocked_by: None,
        ..status_locked()
    };
    let status_locked_by_admin = Status {
        reason: Some(LockReason::Admin),
        locked_at: Some(T0 + 120_000),
        locked_until: Some(T0 + 120_000 + 3_600_000),
        failures: 0,
        unlocked_at: Some(T0 + 60_000),
        unlocked_by: Some(admin().into()),
        ..status_locked()
    };
    let status_mfa_reset = Status {
        failures: 2,
        mfa_reset_at: Some(T0 + 180_000),
        mfa_reset_by: Some(admin().into()),
        mfa_reset_caller: Some(CALLER.into()),
        mfa_reenrol: true,
        ..status_unlocked_by_admin.clone()
    };
    let status_expired = Status {
        locked: false,
        reason: None,
        locked_at: None,
        locked_until: None,
        failures: 0,
        unlocked_at: Some(locked_at + 1_800_000),
        unlocked_by: None,
        allowed: true,
        blocked_by: None,
        ..status_locked()
    };
    let status_bob = Status {
        user: "bob@acme.com".into(),
        reason: Some(LockReason::Admin),
        locked_at: Some(T0 - 86_400_000),
        locked_until: None,
        failures: 1,
        last_failure_at: Some(T0 - 90_000_000),
        last_source_ip: Some("2001:db8::42".into()),
        lock_count: 0,
        ..status_locked()
    };

    vec![
        // Events.
        event_case("event.attempt.minimal", attempt_minimal(), Event::Attempt),
        event_case(
            "event.attempt.full",
            Attempt {
                id: id(0x02),
                at: T0 + 1_000,
                outcome: Outcome::Failure,
                factor: Factor::Mfa,
                source_ip: "2001:db8::7".into(),
                client: Some("IT Glue".into()),
                credential: Some("hmac-sha256:4f1c9a0e7b2d3c5a".into()),
                account: Some(Account::Api),
                is_final: false,
                ..attempt_minimal()
            },
            Event::Attempt,
        ),
        event_case(
            "event.unlock",
            Unlock {
                id: id(0x03),
                at: T0 + 60_000,
                tenant: tenant().into(),
                user: alice().into(),
                actor: admin().into(),
                reason: Some("user called the help desk".into()),
                caller: Some(CALLER.into()),
                lock_event: Some(id(0x02)),
            },
            Event::Unlock,
        ),
        event_case(
            "event.lock",
            Lock {
                id: id(0x04),
                at: T0 + 120_000,
                tenant: tenant().into(),
                user: alice().into(),
                actor: admin().into(),
                reason: Some("offboarding".into()),
                seconds: Some(3_600),
                caller: Some(CALLER.into()),
            },
            Event::Lock,
        ),
        event_case(
            "event.mfa_reset",
            MfaReset {
                id: id(0x05),
                at: T0 + 180_000,
                tenant: tenant().into(),
                user: alice().into(),
                actor: admin().into(),
                reason: Some("phone lost".into()),
                caller: None,
            },
            Event::MfaReset,
        ),
        event_case(
            "event.expired",
            Expired { id: id(0x06), at: locked_at + 1_800_250, tenant: tenant().into(), user: alice().into(), lock_event: id(0x02) },
            Event::Expired,
        ),
        event_case(
            "event.forget",
            Forget { id: id(0x08), at: T0 + 90 * 86_400_000, tenant: tenant().into(), user: alice().into(), last_activity: T0 + 180_000 },
            Event::Forget,
        ),
        event_case(
            "event.policy",
            PolicyChange { id: id(0x07), at: T0 - 3_600_000, tenant: tenant().into(), actor: admin().into(), policy: pms_policy(), caller: Some(CALLER.into()) },
            Event::Policy,
        ),
        event_case(
            "event.password_reset",
            PasswordReset {
                id: id(0x09),
                at: T0 + 600_000,
                tenant: tenant().into(),
                user: alice().into(),
                method: ResetMethod::SelfService,
                actor: None,
                caller: Some("IDP_ACME/idp".into()),
            },
            Event::PasswordReset,
        ),
        event_case(
            "event.ip_block",
            IpBlock {
                id: id(0x0a),
                at: T0 + 60_000,
                tenant: tenant().into(),
                ip: SPRAYER.into(),
                failures: 50,
                users: 48,
                sample_users: sample_users(),
                blocked_until: Some(T0 + 3_660_000),
            },
            Event::IpBlock,
        ),
        event_case(
            "event.ip_unblock",
            IpUnblock {
                id: id(0x0b),
                at: T0 + 900_000,
                tenant: tenant().into(),
                ip: SPRAYER.into(),
                actor: admin().into(),
                caller: Some(CALLER.into()),
                reason: Some("office NAT".into()),
            },
            Event::IpUnblock,
        ),
        event_case(
            "event.ip_expired",
            IpExpired { id: id(0x0c), at: T0 + 3_660_250, tenant: tenant().into(), ip: SPRAYER.into(), block_event: id(0x0a) },
            Event::IpExpired,
        ),
        // Shared structs.
        Case::new("policy", Policy::default()),
        Case::new("status", status_locked()),
        Case::new("write_reply", status_locked_by_admin.clone().with_event(id(0x04))),
        Case::new("source", Source { ip: "203.0.113.7".into(), client: Some("IT Glue".into()), failures: 3 }),
        // Commands.
        request_case(
            "request.status",
            StatusRequest {
                user: alice(),
                ip: Some("203.0.113.7".into()),
                client: Some("IT Glue".into()),
                account: Some(Account::Api),
            },
        ),
        Case::new("reply.status", status_expired.clone()),
        request_case(
            "request.locked",
            LockedRequest { limit: Some(2), after: Some("YWxpY2VAYWNtZS5jb20".into()) },
        ),
        Case::new("reply.locked", LockedReply { users: vec![status_locked(), status_bob], next: Some("Ym9iQGFjbWUuY29t".into()) }),
        request_case(
            "request.unlock",
            UnlockRequest {
                user: alice().into(),
                actor: admin().into(),
                reason: Some("user called the help desk".into()),
                lock_event: Some(id(0x02)),
            },
        ),
        Case::new("reply.unlock", status_unlocked_by_admin.with_event(id(0x03))),
        request_case(
            "request.lock",
            LockRequest { user: alice().into(), actor: admin().into(), reason: Some("offboarding".into()), seconds: Some(3_600) },
        ),
        Case::new("reply.lock", status_locked_by_admin.with_event(id(0x04))),
        request_case(
            "request.mfa_reset",
            MfaResetRequest { user: alice().into(), actor: admin().into(), reason: Some("phone lost".into()) },
        ),
        Case::new("reply.mfa_reset", status_mfa_reset.with_event(id(0x05))),
        request_case(
            "request.password_reset",
            PasswordResetRequest { user: alice().into(), method: ResetMethod::Admin, actor: Some(admin().into()) },
        ),
        Case::new("reply.password_reset", status_expired.with_event(id(0x09))),
        request_case("request.explain", ExplainRequest { user: alice().into() }),
        Case::new(
            "reply.explain",
            ExplainReply {
                status: status_locked(),
                policy: Policy::default(),
                counted: vec![CountedFailure {
                    seq: 41,
                    at: T0 + 1_000,
                    ip: "203.0.113.7".into(),
                    client: Some("IT Glue".into()),
                    factor: Factor::Password,
                    counter: Scope::Account,
                }],
                sources: vec![Source { ip: "203.0.113.7".into(), client: Some("IT Glue".into()), failures: 5 }],
                blocked_attempts: 2,
                reason: "Locked for 30 minutes by 5 failures from 203.0.113.7 (IT Glue).".into(),
            },
        ),
        request_case("request.ip_status", IpStatusRequest { ip: SPRAYER.into() }),
        Case::new(
            "reply.ip_status",
            IpStatusReply {
                ip: SPRAYER.into(),
                blocked: true,
                blocked_until: Some(T0 + 3_660_000),
                failures: 50,
                users: 48,
                block_event: Some(id(0x0a)),
            },
        ),
        request_case(
            "request.ip_unblock",
            IpUnblockRequest { ip: SPRAYER.into(), actor: admin().into(), reason: Some("office NAT".into()) },
        ),
        Case::new(
            "reply.ip_unblock",
            IpStatusReply { ip: SPRAYER.into(), blocked: false, blocked_until: None, failures: 0, users: 0, block_event: None },
        ),
        request_case(
            "request.unlock_many",
            UnlockManyRequest {
                actor: admin().into(),
                reason: Some("spraying from 203.0.113.0/24".into()),
                since: T0,
                until: Some(T0 + 3_600_000),
                ips: Some(vec!["203.0.113.0/24".into(), "2001:db8::/32".into()]),
                dry_run: false,
                limit: Some(500),
                after: None,
            },
        ),
        Case::new(
            "reply.unlock_many",
            UnlockManyReply { unlocked: 2, users: sample_users()[..2].to_vec(), next: Some("Ym9iQGFjbWUuY29t".into()) },
        ),
        request_case("request.ip_blocks", LockedRequest { limit: Some(2), after: Some("MjAzLjAuMTEzLjY1".into()) }),
        Case::new(
            "reply.ip_blocks",
            IpBlocksReply {
                ips: vec![IpStatusReply {
                    ip: SPRAYER.into(),
                    blocked: true,
                    blocked_until: None,
                    failures: 100,
                    users: 97,
                    block_event: Some(id(0x0a)),
                }],
                next: None,
            },
        ),
        request_case("request.policy_get", PolicyGetRequest {}),
        Case::new("reply.policy_get", pms_policy()),
        request_case("request.policy_set", PolicySetRequest { actor: admin().into(), policy: pms_policy() }),
        Case::new("reply.policy_set", pms_policy()),
        request_case("request.digest", DigestRequest {}),
        Case::new(
            "reply.digest",
            DigestReply {
                seq: 1_234,
                users: 42,
                digest: "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08".into(),
            },
        ),
        request_case("request.health", HealthRequest {}),
        Case::new(
            "reply.health",
            HealthReply {
                status: HealthStatus::Ready,
                seq: 1_234,
                lag: 0,
                last_commit_at: Some(1_700_000_000_000),
                error: None,
                clock_skew_ms: None,
                disk: None,
                retention: None,
                instance: None,
                partitions: None,
            },
        ),
        // Notices.
        notice_case(
            "notice.locked",
            LockedNotice {
                id: id(0x81),
                event_id: id(0x02),
                tenant: tenant().into(),
                user: alice().into(),
                at: locked_at,
                reason: LockReason::Failures,
                locked_until: Some(locked_at + 1_800_000),
                lock_seconds: Some(1_800),
                failures: 5,
                source_ip: Some("203.0.113.7".into()),
                client: Some("IT Glue".into()),
                sources: vec![
                    Source { ip: "203.0.113.7".into(), client: Some("IT Glue".into()), failures: 3 },
                    Source { ip: "198.51.100.23".into(), client: None, failures: 2 },
                ],
                actor: None,
                scope: Scope::Account,
                caller: None,
                message: "Your account has been locked for 30 minutes due to an excessive number of unsuccessful log in attempts from 203.0.113.7 (IT Glue) and 1 other source.".into(),
            },
            Notice::Locked,
        ),
        notice_case(
            "notice.locked.admin",
            LockedNotice {
                id: id(0x84),
                event_id: id(0x04),
                tenant: tenant().into(),
                user: alice().into(),
                at: T0 + 120_000,
                reason: LockReason::Admin,
                locked_until: None,
                lock_seconds: None,
                failures: 0,
                source_ip: None,
                client: None,
                sources: vec![],
                actor: Some(admin().into()),
                scope: Scope::Account,
                caller: Some(CALLER.into()),
                message: "Your account has been locked by an administrator until an administrator unlocks it (reason: offboarding).".into(),
            },
            Notice::Locked,
        ),
        notice_case(
            "notice.unlocked",
            UnlockedNotice {
                id: id(0x83),
                event_id: id(0x03),
                tenant: tenant().into(),
                user: alice().into(),
                at: T0 + 60_000,
                how: How::Admin,
                actor: Some(admin().into()),
                scope: Scope::Account,
                client: None,
                caller: Some(CALLER.into()),
            },
            Notice::Unlocked,
        ),
        notice_case(
            "notice.unlocked.expired",
            UnlockedNotice {
                id: id(0x86),
                event_id: id(0x02),
                tenant: tenant().into(),
                user: alice().into(),
                at: locked_at + 1_800_000,
                how: How::Expired,
                actor: None,
                scope: Scope::Account,
                client: None,
                caller: None,
            },
            Notice::Unlocked,
        ),
        notice_case(
            "notice.mfa_reset",
            MfaResetNotice {
                id: id(0x85),
                event_id: id(0x05),
                tenant: tenant().into(),
                user: alice().into(),
                at: T0 + 180_000,
                actor: admin().into(),
                caller: Some(CALLER.into()),
            },
            Notice::MfaReset,
        ),
        notice_case(
            "notice.ip_blocked",
            IpBlockedNotice {
                id: id(0x87),
                event_id: id(0x0a),
                tenant: tenant().into(),
                at: T0 + 60_010,
                ip: SPRAYER.into(),
                failures: 50,
                users: 48,
                sample_users: sample_users(),
                blocked_until: Some(T0 + 3_660_000),
                message: "Sign-ins from 203.0.113.66 are blocked for 1 hour: 50 failed sign-ins against 48 accounts (password spraying).".into(),
            },
            Notice::IpBlocked,
        ),
        notice_case(
            "notice.ip_unblocked",
            IpUnblockedNotice {
                id: id(0x88),
                event_id: id(0x0b),
                tenant: tenant().into(),
                at: T0 + 900_000,
                ip: SPRAYER.into(),
                how: How::Admin,
                actor: Some(admin().into()),
                caller: Some(CALLER.into()),
            },
            Notice::IpUnblocked,
        ),
    ]
}

const SPRAYER: &str = "203.0.113.66";

fn sample_users() -> Vec<lockout_proto::CompactString> {
    ["alice@acme.com", "bob@acme.com", "carol@acme.com"].into_iter().map(Into::into).collect()
}

fn read(path: &Path) -> Result<String, String> {
    std::fs::read_to_string(path).map_err(|e| {
        format!(
            "cannot read {}: {e} (run `UPDATE_GOLDEN=1 cargo test -p lockout-proto --test golden` to create it)",
            path.display()
        )
    })
}

/// Compares one case against its files; every difference is reported, not just the first.
fn check(case: &Case, dir: &Path) -> Vec<String> {
    let mut errors = Vec::new();
    let mut fail = |what: String| errors.push(format!("{}: {what}", case.name));
    let json_path = dir.join(format!("{}.json", case.name));
    let json_text = match read(&json_path) {
        Ok(j) => j,
        Err(e) => {
            fail(e);
            return errors;
        }
    };
    let file_json: Value = match serde_json::from_str(&json_text) {
        Ok(v) => v,
        Err(e) => {
            fail(format!("{} is not JSON: {e}", json_path.display()));
            return errors;
        }
    };
    for (label, encoder) in &case.encoders {
        match serde_json::from_slice::<Value>(&encoder(Encoding::Json)) {
            Ok(json) if json == file_json => {}
            Ok(json) => fail(format!("{label} writes JSON {json} but the fixture holds {file_json}")),
            Err(e) => fail(format!("{label} writes invalid JSON: {e}")),
        }
    }
    for (label, decoder) in &case.decoders {
        if let Err(e) = decoder(Encoding::Json, json_text.as_bytes()) {
            fail(format!("{label} of the JSON fixture: {e}"));
        }
    }
    for (suffix, enc) in LAYOUTS {
        let hex_path = dir.join(format!("{}.{suffix}.hex", case.name));
        let hex_text = match read(&hex_path) {
            Ok(h) => h,
            Err(e) => {
                fail(e);
                continue;
            }
        };
        if hex_text.lines().count() != 1 || hex_text.trim() != hex_text.trim_end_matches('\n') {
            fail(format!("{} must be exactly one line of hex", hex_path.display()));
        }
        let file_postcard = match hex::decode(hex_text.trim_end_matches('\n')) {
            Ok(b) => b,
            Err(e) => {
                fail(format!("{} is not hex: {e}", hex_path.display()));
                continue;
            }
        };
        if hex_text.trim_end_matches('\n') != hex::encode(&file_postcard) {
            fail(format!("{} must be lower-case hex", hex_path.display()));
        }
        for (label, encoder) in &case.encoders {
            let postcard = encoder(enc);
            if postcard != file_postcard {
                fail(format!(
                    "{label} writes {} {} but the fixture holds {}",
                    enc.name(),
                    hex::encode(&postcard),
                    hex::encode(&file_postcard)
                ));
            }
        }
        for (label, decoder) in &case.decoders {
            if let Err(e) = decoder(enc, &file_postcard) {
                fail(format!("{label} of the {} fixture: {e}", enc.name()));
            }
        }
    }
    errors
}

#[test]
fn golden_vectors() {
    let dir = golden_dir();
    let cases = cases();
    let errors: Vec<String> = cases.iter().flat_map(|c| check(c, &dir)).collect();
    assert!(errors.is_empty(), "{} golden mismatches:\n\n{}", errors.len(), errors.join("\n\n"));
}

#[test]
fn fixture_files_are_exactly_the_cases() {
    let names: BTreeSet<String> = cases().iter().map(|c| c.name.clone()).collect();
    assert_eq!(names.len(), cases().len(), "duplicate golden names");
    let mut files = BTreeSet::new();
    for entry in std::fs::read_dir(golden_dir()).unwrap() {
        files.insert(entry.unwrap().file_name().into_string().unwrap());
    }
    let expected: BTreeSet<String> = names
        .iter()
        .flat_map(|n| [format!("{n}.json"), format!("{n}.postcard.hex"), format!("{n}.postcard-v2.hex")])
        .collect();
    let stray: Vec<_> = files.difference(&expected).collect();
    let missing: Vec<_> = expected.difference(&files).collect();
    assert!(stray.is_empty() && missing.is_empty(), "stray fixtures {stray:?}, missing fixtures {missing:?}");
}

/// `absent` and `null` mean the same in JSON, and `factor` defaults to `password`: the minimal
/// attempt as a gateway would write it, with only the required fields, decodes to the vector.
#[test]
fn minimal_attempt_without_optional_fields() {
    let json = serde_json::json!({
        "id": "0190f5c2-6e4b-7000-8000-000000000001",
        "at": T0,
        "tenant": TENANT,
        "user": ALICE,
        "outcome": "failure",
        "source_ip": "203.0.113.7",
    });
    let subject = Subjects::default().parse_event("lockout.events.acme.u.YWxpY2VAYWNtZS5jb20.attempt").unwrap();
    let bytes = serde_json::to_vec(&json).unwrap();
    let event = Event::decode_checked(&subject, Encoding::Json, &bytes).unwrap();
    assert_eq!(event, Event::Attempt(attempt_minimal()));

    // `factor: null` means `password` too, like an absent `factor`.
    let mut with_null = json.clone();
    with_null["factor"] = Value::Null;
    let bytes = serde_json::to_vec(&with_null).unwrap();
    assert_eq!(Event::decode_checked(&subject, Encoding::Json, &bytes).unwrap(), Event::Attempt(attempt_minimal()));

    // The same body with every optional field written as `null` (and the file's pretty JSON) too.
    let file: Value =
        serde_json::from_str(&std::fs::read_to_string(golden_dir().join("event.attempt.minimal.json")).unwrap())
            .unwrap();
    for key in ["client", "credential", "account"] {
        assert_eq!(file[key], Value::Null, "{key} of the minimal vector");
    }
    assert_eq!(file["factor"], "password");
}

/// The layout rule in `schemas/postcard.md`: a WriteReply is the Status's bytes followed by the
/// 16 bytes of `event_id`, and its JSON is the Status's object plus `event_id`.
#[test]
fn write_reply_is_status_then_event_id() {
    let status = status_locked();
    let reply = status.clone().with_event(id(0x04));
    let mut expected = encode(Encoding::Postcard, &status);
    expected.extend_from_slice(id(0x04).as_bytes());
    assert_eq!(encode(Encoding::Postcard, &reply), expected);

    // v2: the v1 layout (Status v1, event_id), then the Status fields v2 added.
    let v2 = encode(Encoding::PostcardV2, &reply);
    assert_eq!(&v2[..expected.len()], &expected[..]);
    let added = (
        status.allowed,
        status.blocked_by,
        status.unfamiliar_failures,
        &status.scope_locks,
        &status.unlocked_caller,
        &status.mfa_reset_caller,
    );
    assert_eq!(&v2[expected.len()..], &postcard::to_allocvec(&added).unwrap()[..]);

    let mut json = serde_json::to_value(&status).unwrap();
    json.as_object_mut().unwrap().insert("event_id".into(), Value::String(id(0x04).to_string()));
    assert_eq!(serde_json::to_value(&reply).unwrap(), json);
}

/// The example user token of `docs/protocol.md`, and UUIDs as exactly 16 bytes with no length
/// prefix.
#[test]
fn uuid_is_sixteen_raw_bytes() {
    let expired = Expired { id: id(0x06), at: 1, tenant: "t".into(), user: "u".into(), lock_event: id(0x02) };
    let bytes = encode(Encoding::Postcard, &expired);
    let mut expected = id(0x06).as_bytes().to_vec();
    expected.extend_from_slice(&[0x01, 0x01, b't', 0x01, b'u']);
    expected.extend_from_slice(id(0x02).as_bytes());
    assert_eq!(bytes, expected);
    let json = serde_json::to_value(&expired).unwrap();
    assert_eq!(json["id"], "0190f5c2-6e4b-7000-8000-000000000006");
}

/// The `required` lists of a schema file, following `$ref` and `allOf`.
fn required_fields(stem: &str, out: &mut BTreeSet<String>) {
    let path = golden_dir().join(format!("../{stem}.schema.json"));
    let schema: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let visit = |s: &Value, out: &mut BTreeSet<String>| {
        out.extend(s["required"].as_array().into_iter().flatten().map(|r| r.as_str().unwrap().to_owned()));
        if let Some(r) = s["$ref"].as_str() {
            required_fields(r.strip_suffix(".schema.json").unwrap(), out);
        }
    };
    visit(&schema, out);
    for sub in schema["allOf"].as_array().into_iter().flatten() {
        visit(sub, out);
    }
}

/// The schemas' `required` lists are exactly the fields the Rust types cannot do without: each
/// golden JSON with one field left out still decodes if and only if the schema does not require
/// that field (so `Option` fields, `factor` and Policy fields are optional, the rest required).
/// Policy replies are the exception: the schema requires every field, as `docs/protocol.md`
/// promises.
#[test]
fn schema_required_fields_are_the_ones_rust_requires() {
    let dir = golden_dir();
    let mut wrong = Vec::new();
    for case in cases() {
        let parts: Vec<&str> = case.name.split('.').collect();
        let stem = (1..=parts.len())
            .rev()
            .map(|n| parts[..n].join("."))
            .find(|stem| dir.join(format!("../{stem}.schema.json")).is_file())
            .unwrap_or_else(|| panic!("no schema for {}", case.name));
        let mut required = BTreeSet::new();
        required_fields(&stem, &mut required);
        if stem == "reply.policy_get" || stem == "reply.policy_set" {
            // `docs/protocol.md`: "Replies always list every field", a promise of the writer that the
            // schema states; the Rust type still reads an absent field as its default.
            assert_eq!(required.len(), 10, "{stem} must require every Policy field");
            continue;
        }
        let json: Value = serde_json::from_str(&case.pretty).unwrap();
        for key in json.as_object().unwrap().keys() {
            let mut without = json.clone();
            without.as_object_mut().unwrap().remove(key);
            let accepted = (case.accepts_json)(&serde_json::to_vec(&without).unwrap());
            if accepted == required.contains(key) {
                let rust = if accepted { "optional" } else { "required" };
                wrong.push(format!("{}: `{key}` is {rust} in Rust but not in {stem}.schema.json", case.name));
            }
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}
