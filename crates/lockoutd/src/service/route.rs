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
//! holds the tenant state (policies, IP blocks) and reads the stream.

use std::time::{Duration, Instant};

use async_nats::HeaderMap;
use futures::StreamExt;
use lockout_proto::codec::{self, Encoding};
use lockout_proto::event::canonical_ip;
use lockout_proto::partition::{self, Set};
use lockout_proto::Tenant;

use super::{dispatch, Fail, FOLD_TIMEOUT};
use crate::Shared;

/// How long a request waits for a partition without an owner.
pub const OWNER_WAIT: Duration = Duration::from_secs(5);

/// The partition a request belongs to, when another process folds it; `None`: answered here.
pub fn elsewhere(shared: &Shared, op: &str, enc: Encoding, tenant: &Tenant, body: &[u8]) -> Option<u32> {
    let cluster = &shared.cluster;
    let run = cluster.run_set();
    if run.is_all() {
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
    (!run.contains(p)).then_some(p)
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

/// Answers the requests forwarded to the partitions of `set` until dropped (aborted when the
/// projector run that folds them ends).
pub async fn serve_partitions(shared: std::sync::Arc<Shared>, set: Set) {
    let prefix = shared.config.subjects.prefix().to_owned();
    let mut subs = Vec::new();
    for p in set.iter() {
        match shared.client.subscribe(format!("{prefix}.part.{p}.>")).await {
            Ok(s) => subs.push(s),
            Err(e) => tracing::error!(partition = p, error = %e, "Subscribing to a partition's requests failed."),
        }
    }
    let mut all = futures::stream::select_all(subs);
    let mut inflight = tokio::task::JoinSet::new();
    while let Some(msg) = all.next().await {
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
