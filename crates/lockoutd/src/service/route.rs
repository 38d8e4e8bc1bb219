//! Requests for partitions another process folds (contract v2: "Any process answers any
//! request").
//!
//! A user's op (`status`, `unlock`, `lock`, `mfa_reset`, `password_reset`) belongs to the
//! user's partition, an IP's (`ip_status`, `ip_unblock`) to the IP's. A process that does not
//! fold that partition forwards the request, headers and body as they came, to
//! `<prefix>.part.<p>.<tenant>.<op>`, which only the partition's owner subscribes to, once it
//! has caught the partition up; the owner answers it as its own, and the reply goes back
//! unchanged. While no process owns the partition (a take-over) the forwarder retries for
//! 5 s, then answers 503; a write that timed out at the owner is not sent again (the caller
//! retries with the same `Nats-Msg-Id`). Other ops are answered by any process: every one
//! holds the tenant state (policies, IP blocks) and reads the stream, but `locked` and
//! `digest`, which cover every partition: the process asked sends them to
//! `<prefix>.all.<tenant>.<op>`, every process answers for the partitions it folds (a
//! `digest` part once it has folded the stream's last sequence at the time of the request),
//! and the parts are merged (digests of disjoint users XOR into the digest of their union).

use std::time::{Duration, Instant};

use async_nats::HeaderMap;
use futures::StreamExt;
use lockout_proto::codec::{self, Encoding};
use lockout_proto::event::canonical_ip;
use lockout_proto::partition::{self, Set};
use lockout_proto::Tenant;

use lockout_proto::command::{decode_request, DigestReply, LockedReply, LockedRequest};
use lockout_proto::Status;
use serde::{Deserialize, Serialize};

use super::{dispatch, Fail, FOLD_TIMEOUT};
use crate::Shared;

/// How long a request waits for a partition without an owner.
pub const OWNER_WAIT: Duration = Duration::from_secs(5);

/// Answers here, or forwards to the process that folds the request's partition.
pub(super) async fn dispatch_or_forward(
    shared: &Shared,
    op: &str,
    enc: Encoding,
    msg: &async_nats::Message,
) -> Result<Vec<u8>, Fail> {
    if let Ok((tenant, _)) = shared.config.subjects.parse_svc(msg.subject.as_str()) {
        if gathered(shared, op) {
            return gather(shared, &tenant, op, enc, msg).await;
        }
        if let Some(p) = elsewhere(shared, op, enc, &tenant, &msg.payload) {
            let (headers, body) = forward(shared, &shared.client, p, &tenant, op, msg).await?;
            return relay(&headers, body);
        }
    }
    super::dispatch(shared, op, enc, msg).await
}

/// The partition a request belongs to, when another process folds it; `None`: answered here.
pub fn elsewhere(shared: &Shared, op: &str, enc: Encoding, tenant: &Tenant, body: &[u8]) -> Option<u32> {
    let cluster = &shared.cluster;
    if cluster.with_run_set(Set::is_all) {
        return None;
    }
    let p = match op {
        "status" | "unlock" | "lock" | "mfa_reset" | "password_reset" => {
            partition::of_user(tenant.as_str(), &first_string(enc, body, "user")?, cluster.n)
        }
        "ip_status" | "ip_unblock" => {
            partition::of_ip(tenant.as_str(), &canonical_ip(&first_string(enc, body, "ip")?)?, cluster.n)
        }
        _ => return None,
    };
    (!cluster.with_run_set(|r| r.contains(p))).then_some(p)
}

/// The request's first field, `name` (every user op's request starts with `user`, every IP
/// op's with `ip`); `None` when it does not decode (answered here, with the op's own error).
fn first_string(enc: Encoding, body: &[u8], name: &str) -> Option<String> {
    match enc {
        Encoding::Json => {
            serde_json::from_slice::<serde_json::Value>(body).ok()?.get(name)?.as_str().map(str::to_owned)
        }
        _ => postcard::take_from_bytes::<String>(body).ok().map(|(s, _)| s),
    }
}

/// Forwards `msg` to the owner of partition `p`; its reply's headers and body.
pub async fn forward(
    shared: &Shared,
    client: &async_nats::Client,
    p: u32,
    tenant: &Tenant,
    op: &str,
    msg: &async_nats::Message,
) -> Result<(HeaderMap, bytes::Bytes), Fail> {
    let subject = format!("{}.part.{p}.{tenant}.{op}", shared.config.subjects.prefix());
    let deadline = Instant::now() + OWNER_WAIT;
    loop {
        let req = async_nats::Request::new()
            .headers(msg.headers.clone().unwrap_or_default())
            .payload(msg.payload.clone())
            .timeout(Some(FOLD_TIMEOUT + Duration::from_secs(2)));
        match client.send_request(subject.clone(), req).await {
            Ok(reply) => return Ok((reply.headers.unwrap_or_default(), reply.payload)),
            Err(e) if e.kind() == async_nats::RequestErrorKind::NoResponders && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) if e.kind() == async_nats::RequestErrorKind::NoResponders => {
                return Err(Fail::new(
                    503,
                    format!("no lockoutd process folds partition {p} yet (one is taking it over); retry shortly"),
                ))
            }
            Err(e) => {
                return Err(Fail::new(
                    503,
                    format!("the lockoutd process that folds partition {p} did not answer ({e}); retry a write with the same Nats-Msg-Id"),
                ))
            }
        }
    }
}

/// The forwarded reply as this process's own: its body, or its error.
pub fn relay(headers: &HeaderMap, body: bytes::Bytes) -> Result<Vec<u8>, Fail> {
    match headers.get(codec::SERVICE_ERROR_CODE).and_then(|c| c.as_str().parse().ok()) {
        Some(code) => Err(Fail::new(code, headers.get(codec::SERVICE_ERROR).map_or("", |v| v.as_str()))),
        None => Ok(body.to_vec()),
    }
}

/// The header of a gathered `digest`: the stream's last sequence when it was asked.
const UPTO: &str = "Lockout-Upto";

/// One process's part of a gathered reply.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Part {
    partitions: Vec<u32>,
    users: u64,
    digest: String,
    locked: Vec<Status>,
    more: bool,
    /// `unlock_many`: the users selected (a page) with their locks, and how many in all.
    selected: Vec<(String, uuid::Uuid)>,
    count: u64,
}

/// Whether `op` covers every partition and this process folds only some of them.
pub fn gathered(shared: &Shared, op: &str) -> bool {
    matches!(op, "locked" | "digest") && spread(shared)
}

/// Whether this process folds only some partitions (others fold the rest).
pub fn spread(shared: &Shared) -> bool {
    !shared.cluster.with_run_set(Set::is_all)
}

/// Asks every process for its part of `op` and merges the parts.
pub async fn gather(
    shared: &Shared,
    tenant: &Tenant,
    op: &str,
    enc: Encoding,
    msg: &async_nats::Message,
) -> Result<Vec<u8>, Fail> {
    let request: Option<LockedRequest> =
        if op == "locked" { Some(decode_request(enc, &msg.payload, tenant)?) } else { None };
    let upto = crate::streams::last_event_seq(&shared.js, &shared.config)
        .await
        .map_err(|e| Fail::new(503, format!("reading the events stream failed ({e}); retry shortly")))?;
    let parts = parts(shared, tenant, op, upto, msg.headers.clone().unwrap_or_default(), msg.payload.clone()).await?;
    match request {
        None => {
            let digest = lockout_store::xor_digests(parts.iter().map(|p| p.digest.as_str()))
                .ok_or_else(|| Fail::new(500, "a process answered a digest that is not one"))?;
            let users = parts.iter().map(|p| p.users).sum();
            Ok(codec::encode(enc, &DigestReply { seq: upto, users, digest }))
        }
        Some(r) => {
            let limit = r.page_size()? as usize;
            let more = parts.iter().any(|p| p.more);
            let mut users: Vec<Status> = parts.into_iter().flat_map(|p| p.locked).collect();
            users.sort_by(|a, b| a.user.as_bytes().cmp(b.user.as_bytes()));
            let more = more || users.len() > limit;
            users.truncate(limit);
            let next = if more { users.last().map(|s| cursor(&s.user)) } else { None };
            Ok(codec::encode(enc, &LockedReply { users, next }))
        }
    }
}

/// The `after` cursor of a page that ends with `user`.
pub(super) fn cursor(user: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(user.as_bytes())
}

/// `unlock_many`'s selection across every process: up to `limit` users after the cursor, in
/// byte order, with their locks, and how many are selected in all.
pub(super) async fn gather_selection(
    shared: &Shared,
    tenant: &Tenant,
    msg: &async_nats::Message,
    limit: usize,
) -> Result<super::ip::Selection, Fail> {
    let parts =
        parts(shared, tenant, "unlock_many", 0, msg.headers.clone().unwrap_or_default(), msg.payload.clone()).await?;
    let selected = parts.iter().map(|p| p.count).sum::<u64>() as usize;
    if selected > lockout_proto::command::UNLOCK_MANY_MAX {
        return Err(crate::bulk::too_many(selected));
    }
    let mut page: Vec<(String, uuid::Uuid)> = parts.into_iter().flat_map(|p| p.selected).collect();
    page.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
    page.truncate(limit);
    Ok(super::ip::Selection { page, selected })
}

/// Waits until every partition has folded `upto` (a write's events, folded by their owners).
pub(super) async fn wait_all_folded(shared: &Shared, tenant: &Tenant, upto: u64) -> Result<(), Fail> {
    parts(shared, tenant, "folded", upto, HeaderMap::new(), bytes::Bytes::new()).await.map(|_| ()).map_err(|_| {
        Fail::new(
            503,
            format!("the events were appended (up to sequence {upto}) but not folded by every partition's owner within 5 s; retry with the same Nats-Msg-Id"),
        )
    })
}

/// Sends `op` to `<prefix>.all.<tenant>.<op>` and collects the parts until they cover every
/// partition (each once), else 503 after 5 s.
async fn parts(
    shared: &Shared,
    tenant: &Tenant,
    op: &str,
    upto: u64,
    mut headers: HeaderMap,
    payload: bytes::Bytes,
) -> Result<Vec<Part>, Fail> {
    let client = &shared.client;
    let inbox = client.new_inbox();
    let mut replies = client
        .subscribe(inbox.clone())
        .await
        .map_err(|e| Fail::new(503, format!("gathering the partitions' answers failed ({e}); retry shortly")))?;
    headers.insert(UPTO, upto.to_string().as_str());
    let subject = format!("{}.all.{tenant}.{op}", shared.config.subjects.prefix());
    client
        .publish_with_reply_and_headers(subject, inbox, headers, payload)
        .await
        .map_err(|e| Fail::new(503, format!("asking the other processes failed ({e}); retry shortly")))?;
    let n = shared.cluster.n;
    let mut covered = Set::none(n);
    let mut parts = Vec::new();
    let deadline = tokio::time::Instant::now() + OWNER_WAIT;
    while covered.len() < n {
        let Ok(Some(m)) = tokio::time::timeout_at(deadline, replies.next()).await else {
            let missing = Set::of(n, (0..n).filter(|p| !covered.contains(*p)));
            return Err(Fail::new(
                503,
                format!(
                    "partitions {missing} did not answer within 5 s (a process is taking them over); retry shortly"
                ),
            ));
        };
        let Ok(part) = serde_json::from_slice::<Part>(&m.payload) else { continue };
        // Two processes that both answered for a partition (a hand-over in between): the
        // first answer counts.
        if part.partitions.iter().any(|p| covered.contains(*p) || *p >= n) {
            continue;
        }
        part.partitions.iter().for_each(|p| covered.insert(*p));
        parts.push(part);
    }
    Ok(parts)
}

/// This process's part of a gathered request, for the partitions of `set`; `None` when it
/// cannot answer it (its fold is behind the request's sequence for 5 s, a bad request: the
/// asking process then reports the partitions missing).
async fn part(shared: &Shared, set: &Set, msg: &async_nats::Message) -> Option<Part> {
    let prefix = shared.config.subjects.prefix();
    let rest = msg.subject.as_str().strip_prefix(prefix)?.strip_prefix(".all.")?;
    let (tenant, op) = rest.split_once('.')?;
    let tenant = Tenant::parse(tenant).ok()?;
    let n = set.count();
    let keep = |u: &str| set.contains(partition::of_user(tenant.as_str(), u, n));
    let mut part = Part { partitions: set.iter().collect(), ..Part::default() };
    match op {
        "digest" => {
            let upto: u64 = msg.headers.as_ref()?.get(UPTO)?.as_str().parse().ok()?;
            let mut folded = shared.folded.clone();
            tokio::time::timeout(OWNER_WAIT, folded.wait_for(|s| *s >= upto)).await.ok()?.ok()?;
            (part.users, part.digest) = shared.store.digest_of(tenant.as_str(), keep).ok()?;
        }
        "folded" => {
            let upto: u64 = msg.headers.as_ref()?.get(UPTO)?.as_str().parse().ok()?;
            let mut folded = shared.folded.clone();
            tokio::time::timeout(OWNER_WAIT, folded.wait_for(|s| *s >= upto)).await.ok()?.ok()?;
        }
        "locked" | "unlock_many" => {
            let ct = msg.headers.as_ref().and_then(|h| h.get(codec::CONTENT_TYPE)).map(|v| v.as_str().to_owned());
            let enc = Encoding::from_content_type(ct.as_deref()).ok()?;
            if op == "locked" {
                let r: LockedRequest = decode_request(enc, &msg.payload, &tenant).ok()?;
                let page = super::locked_page(shared, &tenant, &r, keep).ok()?;
                part.more = page.next.is_some();
                part.locked = page.users;
            } else {
                let r: lockout_proto::command::UnlockManyRequest = decode_request(enc, &msg.payload, &tenant).ok()?;
                let sel = super::ip::select(shared, &tenant, &r, keep).ok()?;
                part.count = sel.selected as u64;
                part.selected = sel.page;
            }
        }
        _ => return None,
    }
    Some(part)
}

/// Answers the requests forwarded to the partitions of `set`, and the gathered ones for them,
/// until dropped (aborted when the projector run that folds them ends).
pub async fn serve_partitions(shared: std::sync::Arc<Shared>, set: Set) {
    let prefix = shared.config.subjects.prefix().to_owned();
    let mut subs = Vec::new();
    match shared.client.subscribe(format!("{prefix}.all.>")).await {
        Ok(s) => subs.push(s),
        Err(e) => tracing::error!(error = %e, "Subscribing to gathered requests failed."),
    }
    for p in set.iter() {
        match shared.client.subscribe(format!("{prefix}.part.{p}.>")).await {
            Ok(s) => subs.push(s),
            Err(e) => tracing::error!(partition = p, error = %e, "Subscribing to a partition's requests failed."),
        }
    }
    let mut all = futures::stream::select_all(subs);
    let mut inflight = tokio::task::JoinSet::new();
    let gathered = format!("{prefix}.all.");
    while let Some(msg) = all.next().await {
        if msg.subject.as_str().starts_with(&gathered) {
            let (shared, set) = (shared.clone(), set.clone());
            inflight.spawn(async move {
                let Some(reply) = msg.reply.clone() else { return };
                if let Some(p) = part(&shared, &set, &msg).await {
                    let body = serde_json::to_vec(&p).expect("a part serializes");
                    let _ = shared.client.publish(reply, body.into()).await;
                }
            });
            continue;
        }
        inflight.spawn(answer(shared.clone(), msg));
        while inflight.try_join_next().is_some() {}
    }
}

/// Answers one forwarded request as if it had come to `<prefix>.svc.<tenant>.<op>`.
async fn answer(shared: std::sync::Arc<Shared>, mut msg: async_nats::Message) {
    let Some(reply) = msg.reply.clone() else { return };
    let prefix = shared.config.subjects.prefix();
    // <prefix>.part.<p>.<tenant>.<op>
    let rest = msg.subject.as_str().strip_prefix(prefix).and_then(|r| r.strip_prefix(".part.")).unwrap_or("");
    let mut tokens = rest.splitn(3, '.');
    let (_, tenant, op) = (tokens.next(), tokens.next().unwrap_or(""), tokens.next().unwrap_or(""));
    let Some(op) = lockout_proto::command::OPS.iter().find(|o| **o == op) else { return };
    msg.subject = format!("{prefix}.svc.{tenant}.{op}").into();
    let ct = msg.headers.as_ref().and_then(|h| h.get(codec::CONTENT_TYPE)).map(|v| v.as_str().to_owned());
    let (enc, result) = match Encoding::from_content_type(ct.as_deref()) {
        Ok(enc) => (enc, dispatch(&shared, op, enc, &msg).await),
        Err(r) => (Encoding::Postcard, Err(Fail::from(r))),
    };
    let mut headers = HeaderMap::new();
    headers.insert(codec::CONTENT_TYPE, enc.content_type());
    let body = match result {
        Ok(body) => body,
        Err(f) => {
            headers.insert(codec::SERVICE_ERROR, f.message.replace(['\r', '\n'], " ").as_str());
            headers.insert(codec::SERVICE_ERROR_CODE, f.code.to_string().as_str());
            Vec::new()
        }
    };
    if let Err(e) = shared.client.publish_with_headers(reply, headers, body.into()).await {
        tracing::warn!(op, error = %e, "Answering a forwarded request failed.");
    }
}
