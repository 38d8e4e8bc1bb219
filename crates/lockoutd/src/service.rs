//! The micro service `lockout` on `<p>.svc.<tenant>.<op>`.
//!
//! Reads (`status`, `locked`, `policy_get`, `digest`) come from the store. Writes validate
//! the request, append their event to `LOCKOUT_EVENTS` (the request's `Nats-Msg-Id`, when
//! given, becomes the event id, so a retry is not applied twice), wait until the projector
//! has folded it and published its notices, then reply with the new state.

use std::sync::Arc;
use std::time::Duration;

use async_nats::service::{self, ServiceExt};
use async_nats::HeaderMap;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use futures::StreamExt;
use lockout_core::Probe;
use lockout_proto::codec::{self, encode, Encoding};
use lockout_proto::command::{
    decode_request, DigestReply, DigestRequest, ExplainRequest, HealthRequest, IpBlocksRequest, IpStatusRequest,
    IpUnblockRequest, LockRequest, LockedReply, LockedRequest, MfaResetRequest, PasswordResetRequest, PolicyGetRequest,
    PolicySetRequest, StatusRequest, UnlockManyRequest, UnlockRequest, OPS,
};
use lockout_proto::error::check_len;
use lockout_proto::event::{
    canonical_ip, check_ip, Event, EventKind, IpUnblock, Lock, MfaReset, PasswordReset, PolicyChange, Unlock,
    CLIENT_MAX,
};
use lockout_proto::subject::{EventSubject, Target};
use lockout_proto::{CompactString, Rejection, Tenant, UserId};
use tokio::task::JoinSet;
use tracing::Instrument as _;
use uuid::Uuid;

use crate::Shared;

mod ip;
pub mod route;

use ip::{canonical, ip_block_in_force, ip_blocks_page, ip_status, unlock_many};

/// How long a write waits for its event to be folded before answering 503.
pub const FOLD_TIMEOUT: Duration = Duration::from_secs(5);

/// A failed request: the micro error code and a sentence a person can act on.
#[derive(Debug)]
pub struct Fail {
    pub code: usize,
    pub message: String,
}

impl Fail {
    pub fn new(code: usize, message: impl Into<String>) -> Fail {
        Fail { code, message: message.into() }
    }
}

impl From<Rejection> for Fail {
    fn from(r: Rejection) -> Fail {
        Fail::new(400, r.message)
    }
}

impl From<lockout_store::Error> for Fail {
    fn from(e: lockout_store::Error) -> Fail {
        match e.kind {
            lockout_store::ErrorKind::Closed => {
                Fail::new(503, format!("{}; retry shortly, and check lockoutd's disk and logs", e.detail))
            }
            _ => Fail::new(500, format!("the store failed: {e}; check lockoutd's disk and logs")),
        }
    }
}

/// The running service; [`ServiceHandle::stop`] stops taking requests and waits for the
/// ones in flight.
pub struct ServiceHandle {
    stop: tokio::sync::oneshot::Sender<()>,
    done: tokio::sync::oneshot::Receiver<()>,
}

impl ServiceHandle {
    pub async fn stop(self) {
        let _ = self.stop.send(());
        let _ = self.done.await;
    }
}

/// Starts the micro service with one endpoint per op, on a thread, runtime and NATS
/// connection of its own: a `status` request never waits behind the projector's work (a
/// batch folding on a runtime worker) or behind the events, acks and notices on the
/// projector's connection (`status_p99_ms` in `make bench`).
pub async fn start(shared: Arc<Shared>) -> anyhow::Result<ServiceHandle> {
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel::<anyhow::Result<()>>();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let (done_tx, done_rx) = tokio::sync::oneshot::channel::<()>();
    std::thread::Builder::new().name("lockoutd-service".into()).spawn(move || {
        let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
            Ok(rt) => rt,
            Err(e) => {
                let _ = ready_tx.send(Err(anyhow::anyhow!("starting the service's runtime: {e}")));
                return;
            }
        };
        rt.block_on(async move {
            let running = match crate::connect_as(&shared.config, "lockoutd-service").await {
                Ok(client) => serve(shared, client).await,
                Err(e) => Err(e),
            };
            let (service, mut loops) = match running {
                Ok(r) => r,
                Err(e) => {
                    let _ = ready_tx.send(Err(e));
                    return;
                }
            };
            let _ = ready_tx.send(Ok(()));
            let _ = stop_rx.await;
            if let Err(e) = service.stop().await {
                tracing::warn!(error = %e, "Stopping the micro service failed.");
            }
            while loops.join_next().await.is_some() {}
        });
        // Whatever the runtime still holds (the store among it) is gone before `stop` returns:
        // a caller may reopen the store right after.
        drop(rt);
        let _ = done_tx.send(());
    })?;
    ready_rx.await.map_err(|_| anyhow::anyhow!("the service thread stopped while starting"))??;
    Ok(ServiceHandle { stop: stop_tx, done: done_rx })
}

/// Adds the service and its endpoints on `client`; each endpoint's requests are answered by
/// tasks of the calling runtime.
async fn serve(shared: Arc<Shared>, client: async_nats::Client) -> anyhow::Result<(service::Service, JoinSet<()>)> {
    let prefix = shared.config.subjects.prefix().to_owned();
    let service = client
        .service_builder()
        .description(
            "Account lockout: status, unlock, lock, MFA reset, password reset, explain, tenant policy, digest.",
        )
        .stats_handler({
            let health = shared.health.clone();
            let folded = shared.folded.clone();
            move |_endpoint, _stats| serde_json::to_value(health.reply(*folded.borrow())).unwrap_or_default()
        })
        .metadata(std::collections::HashMap::from([("instance".to_owned(), shared.config.instance.clone())]))
        .start("lockout", env!("CARGO_PKG_VERSION"))
        .await
        .map_err(|e| anyhow::anyhow!("starting the micro service: {e}"))?;
    let mut loops = JoinSet::new();
    for op in OPS {
        let mut endpoint = service
            .endpoint_builder()
            .name(op)
            .add(format!("{prefix}.svc.*.{op}"))
            .await
            .map_err(|e| anyhow::anyhow!("adding endpoint {op}: {e}"))?;
        let shared = shared.clone();
        loops.spawn(async move {
            let mut inflight = JoinSet::new();
            while let Some(req) = endpoint.next().await {
                inflight.spawn(handle(shared.clone(), op, req));
                while inflight.try_join_next().is_some() {}
            }
            while inflight.join_next().await.is_some() {}
        });
    }
    // The endpoints' subscriptions are at the server before lockoutd reports ready.
    client.flush().await.map_err(|e| anyhow::anyhow!("registering the micro service: {e}"))?;
    Ok((service, loops))
}

async fn handle(shared: Arc<Shared>, op: &'static str, req: service::Request) {
    // One span per request, continuing the caller's trace when it sent a traceparent; a
    // write's appended event carries this span's context on to the fold and the notices.
    let span = tracing::debug_span!(
        "lockout.request",
        otel.kind = "server",
        messaging.system = "nats",
        lockout.op = op,
        lockout.code = tracing::field::Empty,
    );
    crate::telemetry::link_parent(&span, req.message.headers.as_ref());
    let started = std::time::Instant::now();
    let code = handle_in_span(&shared, op, req).instrument(span.clone()).await;
    span.record("lockout.code", code);
    shared.metrics.request(op, code, started.elapsed());
}

/// Answers one request; returns the reply's code (200 on success).
async fn handle_in_span(shared: &Shared, op: &'static str, req: service::Request) -> u16 {
    let ct = req.message.headers.as_ref().and_then(|h| h.get(codec::CONTENT_TYPE)).map(|v| v.as_str().to_owned());
    let (enc, result) = match Encoding::from_content_type(ct.as_deref()) {
        Ok(enc) => (enc, route::dispatch_or_forward(shared, op, enc, &req.message).await),
        Err(r) => (Encoding::Postcard, Err(Fail::from(r))),
    };
    let mut headers = HeaderMap::new();
    headers.insert(codec::CONTENT_TYPE, enc.content_type());
    let code = match &result {
        Ok(_) => 200,
        Err(f) => u16::try_from(f.code).unwrap_or(500),
    };
    let sent = match result {
        Ok(body) => req.respond_with_headers(Ok(body.into()), headers).await,
        Err(f) => {
            if f.code >= 500 {
                tracing::error!(op, code = f.code, error = %f.message, "A request failed.");
            }
            let err = service::error::Error { status: f.message.replace(['\r', '\n'], " "), code: f.code };
            req.respond_with_headers(Err(err), headers).await
        }
    };
    if let Err(e) = sent {
        tracing::warn!(op, error = %e, "Sending a reply failed.");
    }
    code
}

fn user_id(user: &str) -> Result<UserId, Fail> {
    Ok(UserId::parse(user)?)
}

async fn dispatch(shared: &Shared, op: &str, enc: Encoding, msg: &async_nats::Message) -> Result<Vec<u8>, Fail> {
    let (tenant, _) = shared.config.subjects.parse_svc(msg.subject.as_str())?;
    let body = &msg.payload[..];
    let store = &shared.store;
    match op {
        "status" => {
            let r: StatusRequest = decode_request(enc, body, &tenant)?;
            let user = user_id(&r.user)?;
            if let Some(ip) = &r.ip {
                check_ip(ip).map_err(|e| Fail::new(400, e.message.replace("`source_ip`", "`ip`")))?;
            }
            check_len("client", r.client.as_deref(), 0, CLIENT_MAX)?;
            let ip_blocked = match r.ip.as_deref().and_then(canonical_ip) {
                Some(ip) => ip_block_in_force(shared, &tenant, &ip)?.is_some(),
                None => false,
            };
            let probe = Probe { ip: r.ip.as_deref(), client: r.client.as_deref(), account: r.account, ip_blocked };
            Ok(encode(enc, &status_for(shared, &tenant, &user, &probe)?))
        }
        "locked" => {
            let r: LockedRequest = decode_request(enc, body, &tenant)?;
            Ok(encode(enc, &locked_page(shared, &tenant, &r, |_| true)?))
        }
        "unlock" => {
            let r: UnlockRequest = decode_request(enc, body, &tenant)?;
            if let Some(want) = r.lock_event {
                let state = shared.store.user(tenant.as_str(), user_id(&r.user)?.as_str())?.unwrap_or_default();
                if !lock_in_force_started_by(&state, want) {
                    return Err(Fail::new(409, stale_lock_event(want)));
                }
            }
            let t: CompactString = tenant.as_str().into();
            let (guarded, unlocked) = (r.lock_event, r.user.clone());
            let reply = write_user(shared, enc, msg, &tenant, |id, at, caller| {
                Event::Unlock(Unlock {
                    id,
                    at,
                    tenant: t,
                    user: r.user,
                    actor: r.actor,
                    reason: r.reason,
                    caller,
                    lock_event: r.lock_event,
                })
            })
            .await?;
            // The fold refuses a guarded unlock whose lock ended or was replaced between the
            // check above and its event (the unlock then changed nothing): still locked.
            if let Some(want) = guarded {
                let state = shared.store.user(tenant.as_str(), user_id(&unlocked)?.as_str())?.unwrap_or_default();
                if state.any_lock() {
                    return Err(Fail::new(409, stale_lock_event(want)));
                }
            }
            Ok(reply)
        }
        "password_reset" => {
            let r: PasswordResetRequest = decode_request(enc, body, &tenant)?;
            let t: CompactString = tenant.as_str().into();
            write_user(shared, enc, msg, &tenant, |id, at, caller| {
                let (user, method, actor) = (r.user, r.method, r.actor);
                Event::PasswordReset(PasswordReset { id, at, tenant: t, user, method, actor, caller })
            })
            .await
        }
        "explain" => {
            let r: ExplainRequest = decode_request(enc, body, &tenant)?;
            let user = user_id(&r.user)?;
            Ok(encode(enc, &crate::explain::explain(shared, &tenant, &user).await?))
        }
        "lock" => {
            let r: LockRequest = decode_request(enc, body, &tenant)?;
            let t: CompactString = tenant.as_str().into();
            write_user(shared, enc, msg, &tenant, |id, at, caller| {
                let (user, actor, reason, seconds) = (r.user, r.actor, r.reason, r.seconds);
                Event::Lock(Lock { id, at, tenant: t, user, actor, reason, seconds, caller })
            })
            .await
        }
        "mfa_reset" => {
            let r: MfaResetRequest = decode_request(enc, body, &tenant)?;
            let t: CompactString = tenant.as_str().into();
            write_user(shared, enc, msg, &tenant, |id, at, caller| {
                Event::MfaReset(MfaReset { id, at, tenant: t, user: r.user, actor: r.actor, reason: r.reason, caller })
            })
            .await
        }
        "policy_get" => {
            let _: PolicyGetRequest = decode_request(enc, body, &tenant)?;
            Ok(encode(enc, &store.policy_or_default(tenant.as_str())?))
        }
        "policy_set" => {
            let r: PolicySetRequest = decode_request(enc, body, &tenant)?;
            let e = Event::Policy(PolicyChange {
                id: event_id(msg)?,
                at: shared.clock.now_ms(),
                tenant: tenant.as_str().into(),
                actor: r.actor,
                policy: r.policy,
                caller: write_caller(shared, msg)?,
            });
            let target = EventSubject { tenant: tenant.clone(), target: Target::Tenant, kind: EventKind::Policy };
            e.check(&target)?;
            append_and_wait(shared, msg, shared.config.subjects.tenant_event(&tenant, EventKind::Policy), &e).await?;
            Ok(encode(enc, &store.policy_or_default(tenant.as_str())?))
        }
        "ip_status" => {
            let r: IpStatusRequest = decode_request(enc, body, &tenant)?;
            let ip = canonical(&r.ip)?;
            Ok(encode(enc, &ip_status(shared, &tenant, &ip)?))
        }
        "ip_unblock" => {
            let r: IpUnblockRequest = decode_request(enc, body, &tenant)?;
            let ip = canonical(&r.ip)?;
            let e = Event::IpUnblock(IpUnblock {
                id: event_id(msg)?,
                at: shared.clock.now_ms(),
                tenant: tenant.as_str().into(),
                ip: ip.clone(),
                actor: r.actor,
                caller: write_caller(shared, msg)?,
                reason: r.reason,
            });
            let target = EventSubject { tenant: tenant.clone(), target: Target::Tenant, kind: EventKind::IpUnblock };
            e.check(&target)?;
            append_and_wait(shared, msg, shared.config.subjects.tenant_event(&tenant, EventKind::IpUnblock), &e)
                .await?;
            Ok(encode(enc, &ip_status(shared, &tenant, &ip)?))
        }
        "ip_blocks" => {
            let r: IpBlocksRequest = decode_request(enc, body, &tenant)?;
            Ok(encode(enc, &ip_blocks_page(shared, &tenant, &r)?))
        }
        "unlock_many" => {
            let r: UnlockManyRequest = decode_request(enc, body, &tenant)?;
            Ok(encode(enc, &unlock_many(shared, msg, &tenant, r).await?))
        }
        "digest" => {
            let _: DigestRequest = decode_request(enc, body, &tenant)?;
            let seq = store.checkpoint()?;
            let (users, digest) = store.digest(tenant.as_str())?;
            Ok(encode(enc, &DigestReply { seq, users, digest }))
        }
        "health" => {
            let _: HealthRequest = decode_request(enc, body, &tenant)?;
            Ok(encode(enc, &shared.health.reply(*shared.folded.borrow())))
        }
        other => Err(Fail::new(404, format!("unknown op {other:?}: ops are {}", OPS.join(", ")))),
    }
}

/// The user's status now, by the server's clock as lockoutd knows it.
fn current_status(shared: &Shared, tenant: &Tenant, user: &UserId) -> Result<lockout_proto::Status, Fail> {
    status_for(shared, tenant, user, &Probe::default())
}

/// The user's status now for an attempt from `probe`'s source.
fn status_for(
    shared: &Shared,
    tenant: &Tenant,
    user: &UserId,
    probe: &Probe<'_>,
) -> Result<lockout_proto::Status, Fail> {
    let policy = shared.store.policy_or_default(tenant.as_str())?;
    let state = shared.store.user(tenant.as_str(), user.as_str())?.unwrap_or_default();
    Ok(lockout_core::status_for(tenant.as_str(), user.as_str(), &policy, &state, shared.server_now_ms(), probe))
}

/// A `locked`/`unlock_many` cursor back to the user id it names.
fn decode_cursor(c: &str) -> Result<String, Fail> {
    URL_SAFE_NO_PAD.decode(c).ok().and_then(|b| String::from_utf8(b).ok()).ok_or_else(|| {
        Fail::new(
            400,
            format!("field `after` {c:?} is not a cursor this service returned; pass the `next` of the previous page"),
        )
    })
}

/// Whether a lock in force (the account's or a scope's) was started by `event`.
fn lock_in_force_started_by(state: &lockout_core::UserState, event: Uuid) -> bool {
    std::iter::once(&state.lock)
        .chain(std::iter::once(&state.unfamiliar.lock))
        .chain(state.clients.iter().map(|c| &c.counter.lock))
        .any(|l| l.as_ref().is_some_and(|l| l.event_id == event))
}

fn stale_lock_event(want: Uuid) -> String {
    format!(
        "no lock in force was started by event {want} (`lock_event`): the lock it names has ended or a newer one replaced it; read the user's status again and unlock the lock in force"
    )
}

/// One page of locked users; the cursor is the base64url of the last user listed.
/// A page of the users `keep` selects among `tenant`'s locked ones.
pub(crate) fn locked_page(
    shared: &Shared,
    tenant: &Tenant,
    r: &LockedRequest,
    keep: impl Fn(&str) -> bool,
) -> Result<LockedReply, Fail> {
    let limit = r.page_size()? as usize;
    let after = r.after.as_deref().map(decode_cursor).transpose()?;
    let policy = shared.store.policy_or_default(tenant.as_str())?;
    let now = shared.server_now_ms();
    let mut users = Vec::with_capacity(limit.min(128));
    let mut more = false;
    for item in shared.store.locked_after(tenant.as_str(), after.as_deref()) {
        let (user, state) = item?;
        if !keep(&user) {
            continue;
        }
        let status = lockout_core::status(tenant.as_str(), &user, &policy, &state, now);
        if !status.locked {
            continue;
        }
        if users.len() == limit {
            more = true;
            break;
        }
        users.push(status);
    }
    let next = if more { users.last().map(|s| URL_SAFE_NO_PAD.encode(s.user.as_bytes())) } else { None };
    Ok(LockedReply { users, next })
}

/// The event id of a write: the request's `Nats-Msg-Id` when given (a UUID), else a new v7.
fn event_id(msg: &async_nats::Message) -> Result<Uuid, Fail> {
    match msg.headers.as_ref().and_then(|h| h.get(codec::NATS_MSG_ID)) {
        None => Ok(Uuid::now_v7()),
        Some(v) => Uuid::parse_str(v.as_str()).map_err(|_| {
            Fail::new(
                400,
                format!(
                    "header Nats-Msg-Id {:?} is not a UUID; send a UUID (v7 recommended) or leave it out",
                    v.as_str()
                ),
            )
        }),
    }
}

/// The authenticated caller a write records; under `--require-caller`, a 503 without one.
fn write_caller(shared: &Shared, msg: &async_nats::Message) -> Result<Option<CompactString>, Fail> {
    match crate::caller::of(msg.headers.as_ref()) {
        None if shared.config.require_caller => Err(Fail::new(503, crate::caller::required_message())),
        caller => Ok(caller),
    }
}

/// Builds a user command's event (id from the request, `at` now, the caller), checks it exactly as the
/// projector will, appends it, waits until it is folded and replies with the new state.
async fn write_user(
    shared: &Shared,
    enc: Encoding,
    msg: &async_nats::Message,
    tenant: &Tenant,
    make: impl FnOnce(Uuid, u64, Option<CompactString>) -> Event,
) -> Result<Vec<u8>, Fail> {
    let e = make(event_id(msg)?, shared.clock.now_ms(), write_caller(shared, msg)?);
    let user = user_id(e.user().unwrap_or_default())?;
    let target = EventSubject { tenant: tenant.clone(), target: Target::User(user.clone()), kind: e.kind() };
    e.check(&target)?;
    let subject = shared.config.subjects.user_event(tenant, &user, e.kind());
    append_and_wait(shared, msg, subject, &e).await?;
    let status = current_status(shared, tenant, &user)?;
    Ok(encode(enc, &status.with_event(e.id())))
}

/// The body of a service-written event in `enc` (`--wire-version`), unless that would lose
/// something: under `--wire-version 1` an event carrying a field contract v2 added (a v2
/// policy field, an unlock's `lock_event`, a caller) is written as JSON, which has one form
/// with every field, rather than in the v1 postcard layout, which has no place for it.
fn event_body(enc: Encoding, e: &Event) -> (Encoding, Vec<u8>) {
    let body = e.encode(enc);
    if enc == Encoding::Postcard && Event::decode(e.kind(), enc, &body).as_ref() != Ok(e) {
        return (Encoding::Json, e.encode(Encoding::Json));
    }
    (enc, body)
}

/// Appends a service-written event and waits until it is folded.
async fn append_and_wait(shared: &Shared, msg: &async_nats::Message, subject: String, e: &Event) -> Result<(), Fail> {
    append_all_and_wait(shared, msg, vec![(subject, e.clone())]).await
}

/// Appends service-written events (all sent before any acknowledgement is awaited) and waits
/// until the last is folded.
async fn append_all_and_wait(
    shared: &Shared,
    msg: &async_nats::Message,
    events: Vec<(String, Event)>,
) -> Result<(), Fail> {
    let last = append_all(shared, msg, events).await?;
    wait_folded(shared, last).await
}

/// Appends `events` in order; the last one's sequence.
async fn append_all(shared: &Shared, msg: &async_nats::Message, events: Vec<(String, Event)>) -> Result<u64, Fail> {
    let unavailable = |err: &dyn std::fmt::Display| {
        Fail::new(
            503,
            format!("appending the event to the events stream failed ({err}); retry with the same Nats-Msg-Id"),
        )
    };
    let mut acks = Vec::with_capacity(events.len());
    for (subject, e) in &events {
        let (headers, body) = event_message(shared, msg, e);
        acks.push(
            shared
                .js
                .publish_with_headers(subject.clone(), headers, body.into())
                .await
                .map_err(|err| unavailable(&err))?,
        );
    }
    let mut last = 0;
    for ack in acks {
        last = last.max(ack.await.map_err(|err| unavailable(&err))?.sequence);
    }
    Ok(last)
}

/// Waits until this process has folded and published `last`.
async fn wait_folded(shared: &Shared, last: u64) -> Result<(), Fail> {
    let mut folded = shared.folded.clone();
    let waited = tokio::time::timeout(FOLD_TIMEOUT, folded.wait_for(|&c| c >= last)).await.map(|r| r.is_ok());
    match waited {
        Ok(true) => Ok(()),
        _ => Err(Fail::new(
            503,
            format!(
                "the event was appended (sequence {last}) but not folded within {} s; lockoutd is lagging or stopping — retry with the same Nats-Msg-Id",
                FOLD_TIMEOUT.as_secs()
            ),
        )),
    }
}

/// The headers and body of a service-written event: its encoding, `Nats-Msg-Id` = its id, and
/// the trace context (the request span's when traced, else the request's own headers).
fn event_message(shared: &Shared, msg: &async_nats::Message, e: &Event) -> (HeaderMap, Vec<u8>) {
    let (enc, body) = event_body(shared.config.notice_encoding, e);
    let mut headers = HeaderMap::new();
    headers.insert(codec::CONTENT_TYPE, enc.content_type());
    headers.insert(codec::NATS_MSG_ID, e.id().to_string().as_str());
    // The request span's context when traced, else the request's own trace headers.
    match crate::telemetry::trace_headers(&tracing::Span::current()) {
        Some(trace) => {
            for (name, value) in trace {
                headers.insert(name.as_str(), value.as_str());
            }
        }
        None => {
            if let Some(h) = &msg.headers {
                for name in [codec::TRACEPARENT, codec::TRACESTATE] {
                    if let Some(v) = h.get(name) {
                        headers.insert(name, v.as_str());
                    }
                }
            }
        }
    }
    (headers, body)
}
