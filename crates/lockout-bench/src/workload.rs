//! The events the benchmark publishes and folds: attempts as a gateway encodes them (postcard,
//! `Nats-Msg-Id` = the attempt's id), the workloads of each phase (the main mix, one failure per
//! user for the store-size phase, the main mix with 10,000 invalid events among it, one busy
//! user's history) and their publishing, in chunks with every PubAck awaited.

use std::path::PathBuf;

use async_nats::jetstream;
use async_nats::HeaderMap;
use lockout_proto::codec::{self, Encoding};
use lockout_proto::event::{Attempt, EventKind, Factor, Outcome};
use lockout_proto::{Subjects, Tenant, UserId};
use uuid::Uuid;

/// The tenant of the main workload.
pub const TENANT: &str = "bench";

/// An attempt of `user` in tenant [`TENANT`], its source address and client varying with `i`.
pub fn attempt(user: String, outcome: Outcome, i: usize) -> Attempt {
    Attempt {
        id: Uuid::now_v7(),
        at: lockout_nats::clock::now_ms(),
        tenant: TENANT.into(),
        user: user.into(),
        outcome,
        factor: Factor::Password,
        source_ip: format!("198.51.{}.{}", (i / 256) % 256, i % 256).into(),
        client: Some(["Outlook", "IT Glue", "VSA sync", "Mozilla/5.0 (X11; Linux x86_64)"][i % 4].into()),
        credential: None,
        account: None,
        is_final: true,
    }
}

/// A message to publish: subject, headers, payload.
pub type Msg = (String, HeaderMap, Vec<u8>);

/// An attempt as a gateway publishes it: postcard, `Nats-Msg-Id` = its id.
pub fn gateway_msg(subjects: &Subjects, a: &Attempt) -> Msg {
    let tenant = Tenant::parse(&a.tenant).unwrap();
    let subject = subjects.user_event(&tenant, &UserId::parse(&a.user).unwrap(), EventKind::Attempt);
    let mut h = HeaderMap::new();
    h.insert(codec::NATS_MSG_ID, a.id.to_string().as_str());
    (subject, h, codec::encode(Encoding::Postcard, a))
}

/// The workload under `prefix`: 90% successes and 10% failures over `users`, plus 1% of users
/// hammered by a stale integration (every attempt fails, so they lock).
pub fn workload(prefix: &str, n: usize, users: usize) -> Vec<Msg> {
    let subjects = Subjects::new(prefix).unwrap();
    (0..n)
        .map(|i| {
            let u = (i.wrapping_mul(7919)) % users;
            let hammered = u % 100 == 0;
            let outcome = if hammered || i % 10 == 0 { Outcome::Failure } else { Outcome::Success };
            gateway_msg(&subjects, &attempt(format!("user{u:06}@example.com"), outcome, i))
        })
        .collect()
}

/// `events` under `prefix` after a `policy` event of their tenant with `ip_max_failures` 100
/// (window a day) when `detect`, else 0: the same events either way.
pub fn with_spraying_policy(prefix: &str, detect: bool, events: Vec<Msg>) -> Vec<Msg> {
    use lockout_proto::event::{Event, PolicyChange};
    let subjects = Subjects::new(prefix).unwrap();
    let tenant = Tenant::parse(TENANT).unwrap();
    let policy = lockout_proto::Policy {
        ip_max_failures: if detect { 100 } else { 0 },
        ip_window_seconds: 86_400,
        ..lockout_proto::Policy::default()
    };
    let change = Event::Policy(PolicyChange {
        id: Uuid::now_v7(),
        at: lockout_nats::clock::now_ms(),
        tenant: TENANT.into(),
        actor: "bench".into(),
        policy,
        caller: None,
    });
    let mut h = HeaderMap::new();
    h.insert(codec::CONTENT_TYPE, Encoding::PostcardV2.content_type());
    let mut out = vec![(subjects.tenant_event(&tenant, EventKind::Policy), h, change.encode(Encoding::PostcardV2))];
    out.extend(events);
    out
}

/// Password spraying under `prefix`: `n` failed attempts over `users` users, each from one of
/// `ips` distinct IPs in turn (so each has `n / ips` failures), behind
/// [`with_spraying_policy`].
pub fn spraying_workload(prefix: &str, n: usize, users: usize, ips: usize, detect: bool) -> Vec<Msg> {
    let subjects = Subjects::new(prefix).unwrap();
    let events = (0..n)
        .map(|i| {
            let ip = i % ips;
            let a = Attempt {
                source_ip: format!("10.{}.{}.{}", (ip >> 16) & 255, (ip >> 8) & 255, ip & 255).into(),
                ..attempt(format!("user{:06}@example.com", i.wrapping_mul(7919) % users), Outcome::Failure, i)
            };
            gateway_msg(&subjects, &a)
        })
        .collect();
    with_spraying_policy(prefix, detect, events)
}

/// One failed attempt for each of `users` distinct users under `prefix`: every one of them
/// ends up with a stored state. Users come in a scrambled order, as in [`workload`] (people
/// do not log in sorted by name; `--wide-sorted` for the sorted order).
pub fn wide_workload(prefix: &str, users: usize, sorted: bool) -> Vec<Msg> {
    let subjects = Subjects::new(prefix).unwrap();
    (0..users)
        .map(|i| {
            // 7919 is prime and divides no power of ten: i ↦ i·7919 mod users is a permutation
            // for the round user counts used here (each user once).
            let u = if sorted { i } else { i.wrapping_mul(7919) % users };
            gateway_msg(&subjects, &attempt(format!("wide{u:07}@example.com"), Outcome::Failure, i))
        })
        .collect()
}

/// `valid` with the 10,000 distinct invalid events of the fault suite spread evenly among them.
pub fn mixed_workload(prefix: &str, valid: Vec<Msg>) -> Vec<Msg> {
    const INVALID: usize = 10_000;
    let every = (valid.len() / INVALID).max(1);
    let mut out = Vec::with_capacity(valid.len() + INVALID);
    let mut bad = (0..INVALID).map(|i| lockout_bench::invalid::invalid_event(prefix, i));
    for (i, m) in valid.into_iter().enumerate() {
        out.push(m);
        if i % every == 0 {
            out.extend(bad.next().map(|b| (b.subject, b.headers, b.payload)));
        }
    }
    out.extend(bad.map(|b| (b.subject, b.headers, b.payload)));
    out
}

/// 10,000 events of one user, `busy@example.com` of tenant `audit`, under the default prefix:
/// every third a success, the others failures.
pub fn audit_workload() -> Vec<Msg> {
    let audit_subjects = Subjects::default();
    (0..10_000)
        .map(|i| {
            let outcome = if i % 3 == 0 { Outcome::Success } else { Outcome::Failure };
            let mut a = attempt("busy@example.com".into(), outcome, i);
            a.tenant = "audit".into();
            gateway_msg(&audit_subjects, &a)
        })
        .collect()
}

/// Publishes `events` in chunks of 2,000, awaiting each chunk's PubAcks; the last sequence.
pub async fn publish_all(js: &jetstream::Context, events: &[Msg]) -> anyhow::Result<u64> {
    let mut last = 0;
    for chunk in events.chunks(2_000) {
        let mut acks = Vec::with_capacity(chunk.len());
        for (subject, h, payload) in chunk {
            acks.push(js.publish_with_headers(subject.clone(), h.clone(), payload.clone().into()).await?);
        }
        for a in acks {
            last = a.await?.sequence;
        }
    }
    Ok(last)
}

/// Creates the streams of `prefix` (as lockoutd would) and publishes `msgs`; the last sequence.
pub async fn publish_on(js: &jetstream::Context, url: &str, prefix: &str, msgs: &[Msg]) -> anyhow::Result<u64> {
    let subjects = Subjects::new(prefix).map_err(anyhow::Error::msg)?;
    let cfg = lockoutd::Config { subjects, ..lockoutd::Config::new(url, PathBuf::from("unused")) };
    lockoutd::streams::ensure_streams(js, &cfg).await?;
    publish_all(js, msgs).await
}
