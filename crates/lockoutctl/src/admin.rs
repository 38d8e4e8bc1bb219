//! Admin commands through the micro service, plus the gateway and notifier aids
//! (`attempt`, `tail`).

use std::io::Write;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use async_nats::HeaderMap;
use lockout_proto::codec::{self, Encoding};
use lockout_proto::command::{DigestReply, IpBlocksReply, IpStatusReply, LockedReply, UnlockManyReply};
use lockout_proto::event::{Account, Attempt, EventKind, Factor, Outcome, ResetMethod};
use lockout_proto::notice::How;
use lockout_proto::{Notice, Policy, Status};
use serde_json::{json, Value};
use uuid::Uuid;

use crate::cli::{
    AdminArgs, AttemptArgs, IpCmd, LockArgs, LockedArgs, PasswordResetArgs, PolicySetArgs, StatusArgs, TailArgs,
    UnlockArgs, UnlockManyArgs,
};
use crate::ctx::{self, Ctx};
use crate::events;
use crate::{fmt, Exit};

fn print_json(out: &mut dyn Write, v: &impl serde::Serialize) -> anyhow::Result<()> {
    serde_json::to_writer_pretty(&mut *out, v)?;
    writeln!(out)?;
    Ok(())
}

pub async fn status(ctx: &Ctx, a: StatusArgs, out: &mut dyn Write) -> anyhow::Result<()> {
    let tenant = ctx::tenant(&a.user.tenant)?;
    let account = parse_account(a.account.as_deref())?;
    let body = json!({ "user": a.user.user, "ip": a.ip, "client": a.client, "account": account });
    let s: Status = ctx.request(&tenant, "status", &body).await?;
    if ctx.json {
        print_json(out, &s)
    } else {
        write!(out, "{}", fmt::status_block(&s))?;
        Ok(())
    }
}

pub async fn locked(ctx: &Ctx, a: LockedArgs, out: &mut dyn Write) -> anyhow::Result<()> {
    let tenant = ctx::tenant(&a.tenant)?;
    let all: Vec<Status> = ctx
        .pages(
            &tenant,
            "locked",
            |after| json!({ "limit": a.page, "after": after }),
            |p: LockedReply| (p.users, p.next),
        )
        .await?;
    if ctx.json {
        return print_json(out, &all);
    }
    for s in &all {
        writeln!(out, "{}  {}", s.user, fmt::status_line(s))?;
    }
    writeln!(out, "{} locked user(s) in tenant {tenant}", all.len())?;
    Ok(())
}

/// Prints a write reply: the new status and the appended event's id.
fn write_reply(ctx: &Ctx, what: &str, reply: Value, out: &mut dyn Write) -> anyhow::Result<()> {
    if ctx.json {
        return print_json(out, &reply);
    }
    let event_id = reply.get("event_id").and_then(Value::as_str).unwrap_or("-").to_owned();
    let s: Status = serde_json::from_value(reply).context("the reply is not a Status")?;
    writeln!(out, "{what} {} / {} (event {event_id})", s.tenant, s.user)?;
    write!(out, "{}", fmt::status_block(&s))?;
    Ok(())
}

pub async fn unlock(ctx: &Ctx, a: UnlockArgs, out: &mut dyn Write) -> anyhow::Result<()> {
    let tenant = ctx::tenant(&a.admin.tenant)?;
    let body = json!({
        "user": a.admin.user,
        "actor": a.admin.actor,
        "reason": a.admin.reason,
        "lock_event": a.lock_event,
    });
    let reply: Value = ctx.request(&tenant, "unlock", &body).await?;
    write_reply(ctx, "unlocked", reply, out)
}

pub async fn password_reset(ctx: &Ctx, a: PasswordResetArgs, out: &mut dyn Write) -> anyhow::Result<()> {
    let tenant = ctx::tenant(&a.tenant)?;
    let method: ResetMethod = serde_json::from_value(json!(a.method))
        .map_err(|_| Exit::usage(format!("--method {:?}: use self_service or admin", a.method)))?;
    let body = json!({ "user": a.user, "method": method, "actor": a.actor });
    let reply: Value = ctx.request(&tenant, "password_reset", &body).await?;
    write_reply(ctx, "password reset recorded for", reply, out)
}

/// `unlock-many`: follows the reply's pages to the end (each page is one request that unlocks
/// its users; a dry run appends nothing).
pub async fn unlock_many(ctx: &Ctx, a: UnlockManyArgs, out: &mut dyn Write) -> anyhow::Result<()> {
    let tenant = ctx::tenant(&a.tenant)?;
    let since = fmt::parse_time(&a.since, "--since")?;
    let until = a.until.as_deref().map(|u| fmt::parse_time(u, "--until")).transpose()?;
    let ips = (!a.cidrs.is_empty()).then_some(&a.cidrs);
    let body = |after: Option<&str>| {
        json!({
            "actor": a.actor, "reason": a.reason, "since": since, "until": until, "ips": ips,
            "dry_run": a.dry_run, "after": after,
        })
    };
    let users = ctx.pages(&tenant, "unlock_many", body, |p: UnlockManyReply| (p.users, p.next)).await?;
    if ctx.json {
        return print_json(out, &json!({ "dry_run": a.dry_run, "unlocked": users.len(), "users": users }));
    }
    for u in &users {
        writeln!(out, "{u}")?;
    }
    let what = if a.dry_run { "would be unlocked (dry run: nothing changed)" } else { "unlocked" };
    writeln!(out, "{} user(s) of tenant {tenant} {what}", users.len())?;
    Ok(())
}

pub async fn ip(ctx: &Ctx, c: IpCmd, out: &mut dyn Write) -> anyhow::Result<()> {
    let (tenant, s): (_, IpStatusReply) = match c {
        IpCmd::List { tenant } => {
            let tenant = ctx::tenant(&tenant)?;
            let all = ctx
                .pages(&tenant, "ip_blocks", |after| json!({ "after": after }), |p: IpBlocksReply| (p.ips, p.next))
                .await?;
            if ctx.json {
                return print_json(out, &all);
            }
            for s in &all {
                writeln!(out, "{}", ip_line(&tenant, s))?;
            }
            writeln!(out, "{} blocked IP(s) in tenant {tenant}", all.len())?;
            return Ok(());
        }
        IpCmd::Status { tenant, ip } => {
            let tenant = ctx::tenant(&tenant)?;
            let s = ctx.request(&tenant, "ip_status", &json!({ "ip": ip })).await?;
            (tenant, s)
        }
        IpCmd::Unblock { tenant, ip, actor, reason } => {
            let tenant = ctx::tenant(&tenant)?;
            let body = json!({ "ip": ip, "actor": actor, "reason": reason });
            let s = ctx.request(&tenant, "ip_unblock", &body).await?;
            (tenant, s)
        }
    };
    if ctx.json {
        return print_json(out, &s);
    }
    writeln!(out, "{}", ip_line(&tenant, &s))?;
    Ok(())
}

/// `acme / IP 203.0.113.66: BLOCKED until …, 20 failure(s) against 20 user(s) in the window`.
fn ip_line(tenant: &lockout_proto::Tenant, s: &IpStatusReply) -> String {
    let state = match (s.blocked, s.blocked_until) {
        (false, _) => "not blocked".to_owned(),
        (true, Some(u)) => format!("BLOCKED until {}", fmt::time(u)),
        (true, None) => "BLOCKED until an admin unblocks it".to_owned(),
    };
    format!("{tenant} / IP {}: {state}, {} failure(s) against {} user(s) in the window", s.ip, s.failures, s.users)
}

/// `--account`: user, api or portal.
fn parse_account(s: Option<&str>) -> anyhow::Result<Option<Account>> {
    s.map(|s| {
        serde_json::from_value(json!(s)).map_err(|_| Exit::usage(format!("--account {s:?}: use user, api or portal")))
    })
    .transpose()
}

pub async fn lock(ctx: &Ctx, a: LockArgs, out: &mut dyn Write) -> anyhow::Result<()> {
    let tenant = ctx::tenant(&a.admin.tenant)?;
    let body = json!({ "user": a.admin.user, "actor": a.admin.actor, "reason": a.admin.reason, "seconds": a.seconds });
    let reply: Value = ctx.request(&tenant, "lock", &body).await?;
    write_reply(ctx, "locked", reply, out)
}

pub async fn mfa_reset(ctx: &Ctx, a: AdminArgs, out: &mut dyn Write) -> anyhow::Result<()> {
    let tenant = ctx::tenant(&a.tenant)?;
    let body = json!({ "user": a.user, "actor": a.actor, "reason": a.reason });
    let reply: Value = ctx.request(&tenant, "mfa_reset", &body).await?;
    write_reply(ctx, "reset MFA of", reply, out)
}

fn print_policy(out: &mut dyn Write, tenant: &str, p: &Policy) -> anyhow::Result<()> {
    writeln!(out, "policy of tenant {tenant}:")?;
    for (k, v) in fmt::policy_fields(p) {
        writeln!(out, "  {k:<19} {v}")?;
    }
    Ok(())
}

pub async fn policy_get(ctx: &Ctx, tenant: &str, out: &mut dyn Write) -> anyhow::Result<()> {
    let tenant = ctx::tenant(tenant)?;
    let p: Policy = ctx.request(&tenant, "policy_get", &json!({})).await?;
    if ctx.json {
        print_json(out, &p)
    } else {
        print_policy(out, tenant.as_str(), &p)
    }
}

/// The policy `base` with the fields of a JSON object applied (strict: unknown fields,
/// `null` and out-of-range values are refused with exit 4).
pub fn overlay_policy(base: &Policy, patch: &Value, what: &str) -> anyhow::Result<Policy> {
    let Value::Object(patch) = patch else {
        return Err(Exit::bad_request(format!("{what} must be a JSON object of policy fields")));
    };
    let mut merged = serde_json::to_value(base)?;
    let obj = merged.as_object_mut().expect("a policy is an object");
    for (k, v) in patch {
        obj.insert(k.clone(), v.clone());
    }
    let p: Policy = serde_json::from_value(merged).map_err(|e| Exit::bad_request(format!("{what}: {e}")))?;
    p.validate().map_err(|r| Exit::bad_request(format!("{what}: {}", r.message)))?;
    Ok(p)
}

pub async fn policy_set(ctx: &Ctx, a: PolicySetArgs, out: &mut dyn Write) -> anyhow::Result<()> {
    let tenant = ctx::tenant(&a.tenant)?;
    let current: Policy = ctx.request(&tenant, "policy_get", &json!({})).await?;
    let mut wanted = current;
    if let Some(file) = &a.file {
        let text = std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
        let v: Value = serde_json::from_str(&text)
            .map_err(|e| Exit::bad_request(format!("{} is not JSON: {e}", file.display())))?;
        wanted = overlay_policy(&wanted, &v, &file.display().to_string())?;
    }
    let flags = json!({
        "max_failures": a.max_failures,
        "lock_seconds": a.lock_seconds,
        "window_seconds": a.window_seconds,
        "reset_on_success": a.reset_on_success,
        "count_mfa_failures": a.count_mfa_failures,
        "dedupe_credential": a.dedupe_credential,
        "lock_multiplier": a.lock_multiplier,
        "max_lock_seconds": a.max_lock_seconds,
        "history_seconds": a.history_seconds,
        "permanent_after": a.permanent_after,
        "familiar_days": a.familiar_days,
        "api_client_scope": a.api_client_scope,
        "reset_scope": a.reset_scope,
        "unlock_on_password_reset": a.unlock_on_password_reset,
        "ip_max_failures": a.ip_max_failures,
        "ip_window_seconds": a.ip_window_seconds,
        "ip_block_seconds": a.ip_block_seconds,
    });
    let given: serde_json::Map<String, Value> = flags
        .as_object()
        .expect("object")
        .iter()
        .filter(|(_, v)| !v.is_null())
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    wanted = overlay_policy(&wanted, &Value::Object(given), "the flags")?;
    let changes = fmt::policy_changes(&current, &wanted);
    if changes.is_empty() {
        if ctx.json {
            return print_json(out, &json!({ "changed": {}, "policy": current }));
        }
        writeln!(out, "policy of tenant {tenant} unchanged: every given field already has that value")?;
        return Ok(());
    }
    let stored: Policy = ctx.request(&tenant, "policy_set", &json!({ "actor": a.actor, "policy": wanted })).await?;
    if ctx.json {
        let changed: serde_json::Map<String, Value> =
            changes.iter().map(|(k, b, a)| (k.clone(), json!({ "from": b, "to": a }))).collect();
        return print_json(out, &json!({ "changed": changed, "policy": stored }));
    }
    writeln!(out, "policy of tenant {tenant} changed by {}:", a.actor)?;
    for (k, b, a) in &changes {
        writeln!(out, "  {k}: {b} -> {a}")?;
    }
    Ok(())
}

pub async fn attempt(ctx: &Ctx, a: AttemptArgs, out: &mut dyn Write) -> anyhow::Result<()> {
    let tenant = ctx::tenant(&a.tenant)?;
    let user = ctx::user(&a.user)?;
    let factor: Factor = serde_json::from_value(json!(a.factor))
        .map_err(|_| Exit::usage(format!("--factor {:?}: use password, mfa or recovery_code", a.factor)))?;
    let account = parse_account(a.account.as_deref())?;
    let outcome = match (a.ok, a.rejected) {
        (true, _) => Outcome::Success,
        (_, true) => Outcome::Rejected,
        _ => Outcome::Failure,
    };
    let subject = ctx.subjects.user_event(&tenant, &user, EventKind::Attempt);
    let mut results = Vec::new();
    for _ in 0..a.count.max(1) {
        let attempt = Attempt {
            id: Uuid::now_v7(),
            at: lockout_nats::clock::now_ms(),
            tenant: tenant.as_str().into(),
            user: user.as_str().into(),
            outcome,
            factor,
            source_ip: a.ip.as_str().into(),
            client: a.client.as_deref().map(Into::into),
            credential: a.credential.as_deref().map(Into::into),
            account,
            is_final: !a.not_final,
        };
        // Refuse locally what lockoutd would dead-letter, with the same sentence.
        let target = ctx.subjects.parse_event(&subject).map_err(|r| Exit::bad_request(r.message))?;
        lockout_proto::Event::Attempt(attempt.clone()).check(&target).map_err(|r| Exit::bad_request(r.message))?;
        let mut headers = HeaderMap::new();
        headers.insert(codec::CONTENT_TYPE, codec::JSON);
        headers.insert(codec::NATS_MSG_ID, attempt.id.to_string().as_str());
        let ack = ctx
            .js
            .publish_with_headers(subject.clone(), headers, codec::encode(Encoding::Json, &attempt).into())
            .await
            .with_context(|| format!("publishing to {subject}"))?
            .await
            .with_context(|| format!("awaiting the PubAck of {subject}: is lockoutd's events stream there?"))?;
        results.push((ack.sequence, attempt.id));
    }
    if a.wait {
        let last = results.last().map_or(0, |r| r.0);
        let deadline = Instant::now() + ctx.timeout;
        loop {
            let d: DigestReply = ctx.request(&tenant, "digest", &json!({})).await?;
            if d.seq >= last {
                break;
            }
            if Instant::now() >= deadline {
                return Err(Exit::new(
                    crate::exit::UNAVAILABLE,
                    format!(
                        "lockoutd did not fold sequence {last} within {} s (it is at {})",
                        ctx.timeout.as_secs(),
                        d.seq
                    ),
                )
                .into());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    if ctx.json {
        let list: Vec<Value> =
            results.iter().map(|(seq, id)| json!({ "seq": seq, "id": id.to_string(), "subject": subject })).collect();
        return print_json(out, &list);
    }
    let what = if a.ok { "success" } else { "failure" };
    for (seq, id) in &results {
        writeln!(
            out,
            "published {what} of {user} from {} as event #{seq} (id {id})",
            fmt::source(&a.ip, a.client.as_deref())
        )?;
    }
    Ok(())
}

/// One notice for a person.
pub fn notice_text(n: &Notice) -> String {
    match n {
        Notice::Locked(l) => {
            let scope = match (l.scope, &l.client) {
                (lockout_proto::status::Scope::Account, _) => String::new(),
                (lockout_proto::status::Scope::Client, Some(c)) => format!(", only {c}"),
                (scope, _) => format!(", only {} IPs", <&str>::from(scope)),
            };
            let mut s = format!(
                "{}  {} / {}  LOCKED ({}{scope}) {}: {}",
                fmt::time(l.at),
                l.tenant,
                l.user,
                fmt::reason(Some(l.reason)),
                fmt::until(l.locked_until),
                l.message
            );
            if let Some(actor) = &l.actor {
                s.push_str(&format!("\n    by {actor}"));
            }
            if !l.sources.is_empty() {
                s.push_str(&format!("\n    sources: {}", fmt::sources(&l.sources)));
            }
            s
        }
        Notice::Unlocked(u) => match u.how {
            How::Admin => format!(
                "{}  {} / {}  unlocked by {}",
                fmt::time(u.at),
                u.tenant,
                u.user,
                u.actor.as_deref().unwrap_or("-")
            ),
            How::Expired => format!("{}  {} / {}  unlocked: the lock expired", fmt::time(u.at), u.tenant, u.user),
            How::PasswordReset => format!(
                "{}  {} / {}  unlocked by a password reset{}",
                fmt::time(u.at),
                u.tenant,
                u.user,
                u.actor.as_deref().map(|a| format!(" by {a}")).unwrap_or_default()
            ),
        },
        Notice::MfaReset(m) => format!("{}  {} / {}  MFA reset by {}", fmt::time(m.at), m.tenant, m.user, m.actor),
        Notice::IpBlocked(b) => format!(
            "{}  {} / IP {}  BLOCKED {}: {}\n    users ({} of {}): {}",
            fmt::time(b.at),
            b.tenant,
            b.ip,
            fmt::until(b.blocked_until),
            b.message,
            b.sample_users.len(),
            b.users,
            b.sample_users.iter().map(|u| u.as_str()).collect::<Vec<_>>().join(", ")
        ),
        Notice::IpUnblocked(u) => match u.how {
            How::Expired => format!("{}  {} / IP {}  unblocked: the block expired", fmt::time(u.at), u.tenant, u.ip),
            _ => format!(
                "{}  {} / IP {}  unblocked by {}",
                fmt::time(u.at),
                u.tenant,
                u.ip,
                u.actor.as_deref().unwrap_or("-")
            ),
        },
    }
}

fn notice_json(n: &Notice) -> Value {
    n.to_json()
}

pub async fn tail(ctx: &Ctx, a: TailArgs, out: &mut dyn Write) -> anyhow::Result<()> {
    let filter = match &a.tenant {
        Some(t) => format!("{}.notices.{}.>", ctx.subjects.prefix(), ctx::tenant(t)?),
        None => ctx.subjects.notices_all(),
    };
    let stream_name = ctx.subjects.notices_stream();
    let stream = ctx
        .js
        .get_stream(&stream_name)
        .await
        .with_context(|| format!("looking up stream {stream_name}: has lockoutd ever started?"))?;
    let deliver_policy = if a.all {
        async_nats::jetstream::consumer::DeliverPolicy::All
    } else {
        async_nats::jetstream::consumer::DeliverPolicy::New
    };
    let consumer: async_nats::jetstream::consumer::Consumer<async_nats::jetstream::consumer::pull::OrderedConfig> =
        stream
            .create_consumer(async_nats::jetstream::consumer::pull::OrderedConfig {
                description: Some("lockoutctl tail".to_owned()),
                filter_subject: filter,
                deliver_policy,
                ..Default::default()
            })
            .await
            .with_context(|| format!("creating an ordered consumer on {stream_name}"))?;
    let mut messages = consumer.messages().await?;
    let mut seen = 0u64;
    use futures::StreamExt;
    while a.count.is_none_or(|c| seen < c) {
        let Some(m) = messages.next().await else { break };
        let m = m.with_context(|| format!("reading {stream_name}"))?;
        let info = m.info().map_err(|e| anyhow::anyhow!("bad message metadata: {e}"))?;
        let time = lockout_nats::stored_time(&info);
        let kind = events::subject_type(&m.subject).to_owned();
        let enc = Encoding::from_content_type(
            m.headers.as_ref().and_then(|h| h.get(codec::CONTENT_TYPE)).map(|v| v.as_str()),
        );
        let decoded = enc.and_then(|enc| Notice::decode(&kind, enc, &m.payload));
        let event_seq = m.headers.as_ref().and_then(|h| h.get(codec::EVENT_SEQ)).map(|v| v.as_str().to_owned());
        seen += 1;
        match (decoded, ctx.json) {
            (Ok(n), true) => {
                let line = json!({ "subject": m.subject.as_str(), "time": time, "event_seq": event_seq, "notice": notice_json(&n) });
                writeln!(out, "{line}")?;
            }
            (Ok(n), false) => writeln!(out, "{}", notice_text(&n))?,
            (Err(r), true) => {
                writeln!(out, "{}", json!({ "subject": m.subject.as_str(), "time": time, "error": r.message }))?;
            }
            (Err(r), false) => writeln!(out, "{}  {}: undecodable notice: {}", fmt::time(time), m.subject, r.message)?,
        }
        out.flush()?;
    }
    Ok(())
}
