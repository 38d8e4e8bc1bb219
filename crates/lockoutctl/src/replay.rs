//! `replay` and `verify`: rebuild the projection from `LOCKOUT_EVENTS` with the engine lockoutd
//! folds with (`lockout-engine`, publishing nothing), and compare it with the live service.

use std::collections::BTreeSet;
use std::io::Write;
use std::path::Path;

use anyhow::Context as _;
use lockout_engine::rebuild::Rebuild;
use lockout_engine::{BatchFolder, OutboxMode};
use lockout_proto::command::{DigestReply, IpBlocksReply, LockedReply};
use lockout_proto::{Millis, Status, Tenant};
use lockout_store::Store;
use serde_json::{json, Value};

use crate::cli::{ReplayArgs, VerifyArgs};
use crate::ctx::Ctx;
use crate::events::{self, Range, Raw};
use crate::{exit, fmt, Exit};

/// A store being rebuilt from the stream.
pub struct Replayer {
    pub store: Store,
    /// The folder, here between reads; inside the rebuild during a `run_to`.
    folder: Option<BatchFolder>,
    batch: usize,
    /// Sequences read so far (the checkpoint may lag when the last ones were deleted).
    pub upto: u64,
    /// Events folded by this process.
    pub events: u64,
    /// Folds and commits the batches read; running during a `run_to`.
    rebuild: Option<Rebuild<Raw>>,
}

impl Replayer {
    pub fn open(ctx: &Ctx, dir: &Path, batch: usize) -> anyhow::Result<Replayer> {
        if !(1..=10_000).contains(&batch) {
            return Err(Exit::usage(format!("--batch must be 1 to 10000 (got {batch})")));
        }
        let store = Store::open(dir, 64 << 20).with_context(|| format!("opening the store in {}", dir.display()))?;
        let folder = BatchFolder::new(store.clone(), ctx.subjects.clone(), OutboxMode::Discard)?;
        let upto = folder.checkpoint();
        Ok(Replayer { store, folder: Some(folder), batch, upto, events: 0, rebuild: None })
    }

    pub fn checkpoint(&self) -> u64 {
        self.folder.as_ref().map_or(0, BatchFolder::checkpoint)
    }

    /// Hands a full batch to the fold thread (starting the rebuild with the first one).
    async fn commit(&mut self, buf: &mut Vec<Raw>) -> anyhow::Result<()> {
        if buf.is_empty() {
            return Ok(());
        }
        let n = buf.len() as u64;
        let batch = std::mem::replace(buf, Vec::with_capacity(self.batch));
        let rebuild = match self.rebuild.take() {
            Some(r) => r,
            None => {
                let folder = self.folder.take().context("the replay's folder is gone after an earlier failure")?;
                Rebuild::start(self.store.clone(), folder)
            }
        };
        let sent = rebuild.send(batch).await;
        self.rebuild = Some(rebuild);
        if sent.is_err() {
            return Err(self
                .finish()
                .await
                .err()
                .unwrap_or_else(|| anyhow::anyhow!("the replay's fold thread stopped")));
        }
        self.events += n;
        Ok(())
    }

    /// Stops the rebuild after the queued batches; the folder comes back for the next read.
    async fn finish(&mut self) -> anyhow::Result<()> {
        let Some(r) = self.rebuild.take() else { return Ok(()) };
        // Joining the threads waits for their last batches: not on a runtime thread.
        let folder = tokio::task::spawn_blocking(move || r.finish())
            .await
            .map_err(|e| anyhow::anyhow!("waiting for the replay's threads: {e}"))??;
        self.folder = Some(folder);
        Ok(())
    }

    /// Folds the stream from the checkpoint up to sequence `to_seq`, stopping before the first
    /// event stored after `until_time`.
    pub async fn run_to(
        &mut self,
        ctx: &Ctx,
        to_seq: u64,
        until_time: Option<Millis>,
        what: &str,
    ) -> anyhow::Result<()> {
        let from = self.upto + 1;
        if to_seq < from {
            return Ok(());
        }
        let range = Range { from_seq: from, from_time: None, to_seq };
        let mut buf: Vec<Raw> = Vec::with_capacity(self.batch);
        let mut last = self.upto;
        let mut failed: anyhow::Result<()> = Ok(());
        let mut early = false;
        let plan = events::read(
            ctx,
            &ctx.subjects.events_stream(),
            vec![ctx.subjects.events_all()],
            range,
            Some(what),
            async |raw| {
                if until_time.is_some_and(|t| raw.time > t) {
                    early = true;
                    return Ok(false);
                }
                last = raw.seq;
                buf.push(raw);
                if buf.len() >= self.batch {
                    if let Err(e) = self.commit(&mut buf).await {
                        failed = Err(e);
                        return Ok(false);
                    }
                }
                Ok(true)
            },
        )
        .await;
        let folded = match plan.and_then(|plan| failed.map(|()| plan)) {
            Ok(plan) => self.commit(&mut buf).await.map(|()| plan),
            Err(e) => Err(e),
        };
        self.finish().await?;
        let plan = folded?;
        self.upto = if early { last } else { last.max(plan.end) };
        self.store.flush()?;
        Ok(())
    }

    /// Every tenant with a user state or a policy in the store.
    pub fn tenants(&self) -> anyhow::Result<BTreeSet<String>> {
        let mut set = BTreeSet::new();
        for item in self.store.all_users() {
            set.insert(item?.0);
        }
        for item in self.store.all_policies() {
            set.insert(item?.0);
        }
        Ok(set)
    }
}

fn parse_until(s: &str) -> anyhow::Result<(u64, Option<Millis>)> {
    // A bare number below 10^12 is a sequence; larger ones are ms since the epoch (2001 onwards).
    if s.bytes().all(|b| b.is_ascii_digit()) {
        let n: u64 = s.parse().map_err(|_| Exit::usage(format!("--until {s:?} is too large")))?;
        if n < 1_000_000_000_000 {
            return Ok((n, None));
        }
    }
    Ok((u64::MAX, Some(fmt::parse_time(s, "--until")?)))
}

fn ensure_empty(dir: &Path) -> anyhow::Result<()> {
    if let Ok(mut entries) = std::fs::read_dir(dir) {
        if entries.next().is_some() {
            return Err(Exit::usage(format!("{} is not empty: give a new or empty directory", dir.display())));
        }
    }
    Ok(())
}

pub async fn replay(ctx: &Ctx, a: ReplayArgs, out: &mut dyn Write) -> anyhow::Result<()> {
    let (to_seq, until_time) = match &a.until {
        Some(s) => parse_until(s)?,
        None => (u64::MAX, None),
    };
    let mut r = Replayer::open(ctx, &a.data_dir, a.batch)?;
    let start = r.checkpoint();
    r.run_to(ctx, to_seq, until_time, "replay").await?;
    let tenants = r.tenants()?;
    let mut list = Vec::new();
    for t in &tenants {
        let (users, digest) = r.store.digest(t)?;
        list.push(json!({ "tenant": t, "users": users, "digest": digest }));
    }
    if ctx.json {
        let v = json!({
            "data_dir": a.data_dir.display().to_string(), "from_checkpoint": start,
            "events": r.events, "checkpoint": r.checkpoint(), "tenants": list,
        });
        serde_json::to_writer_pretty(&mut *out, &v)?;
        writeln!(out)?;
        return Ok(());
    }
    writeln!(
        out,
        "replayed {} event(s) into {} (from checkpoint {start}); checkpoint now {}; nothing published",
        r.events,
        a.data_dir.display(),
        r.checkpoint()
    )?;
    for t in list {
        writeln!(
            out,
            "  tenant {}: {} user(s), digest {}",
            t["tenant"].as_str().unwrap_or("-"),
            t["users"],
            t["digest"].as_str().unwrap_or("-")
        )?;
    }
    Ok(())
}

/// Status fields that differ, as `field: live X, replay Y`.
fn status_diff(live: &Status, replay: &Status) -> Vec<(String, Value, Value)> {
    let (Ok(Value::Object(l)), Ok(Value::Object(r))) = (serde_json::to_value(live), serde_json::to_value(replay))
    else {
        return Vec::new();
    };
    l.into_iter()
        .filter_map(|(k, lv)| {
            let rv = r.get(&k).cloned().unwrap_or(Value::Null);
            (lv != rv).then_some((k, lv, rv))
        })
        .collect()
}

/// Compares one tenant's users status by status; returns the differences found.
async fn user_differences(ctx: &Ctx, r: &Replayer, tenant: &Tenant) -> anyhow::Result<Vec<Value>> {
    let policy = r.store.policy_or_default(tenant.as_str())?;
    let mut diffs = Vec::new();
    let mut replayed = BTreeSet::new();
    let users: Vec<(String, lockout_core::UserState)> = r
        .store
        .all_users()
        .filter_map(|item| match item {
            Ok((t, u, s)) if t == tenant.as_str() => Some(Ok((u, s))),
            Ok(_) => None,
            Err(e) => Some(Err(e)),
        })
        .collect::<Result<_, _>>()?;
    for (user, state) in users {
        let live: Status = ctx.request(tenant, "status", &json!({ "user": user })).await?;
        let mine = lockout_core::status(tenant.as_str(), &user, &policy, &state, lockout_nats::clock::now_ms());
        let d = status_diff(&live, &mine);
        if !d.is_empty() {
            let fields: serde_json::Map<String, Value> =
                d.into_iter().map(|(k, l, r)| (k, json!({ "live": l, "replay": r }))).collect();
            diffs.push(json!({ "user": user, "fields": fields }));
        }
        replayed.insert(user);
    }
    let mut after: Option<String> = None;
    loop {
        let page: LockedReply = ctx.request(tenant, "locked", &json!({ "limit": 1000, "after": after })).await?;
        for s in page.users {
            if !replayed.contains(s.user.as_str()) {
                diffs.push(json!({ "user": s.user, "fields": { "locked": { "live": true, "replay": "no state" } } }));
            }
        }
        match page.next {
            Some(n) => after = Some(n),
            None => break,
        }
    }
    Ok(diffs)
}

/// The IP blocks in force (ip → block event) that the live service and the replay disagree on,
/// as notes; none against a lockoutd without the `ip_blocks` op.
async fn ip_block_differences(ctx: &Ctx, r: &Replayer, tenant: &Tenant) -> anyhow::Result<Vec<Value>> {
    let pages = ctx
        .pages(
            tenant,
            "ip_blocks",
            |after| json!({ "limit": 1000, "after": after }),
            |p: IpBlocksReply| (p.ips, p.next),
        )
        .await;
    let blocked = match pages {
        Ok(b) => b,
        Err(e) if e.downcast_ref::<Exit>().is_some_and(|x| x.code == exit::NOT_FOUND) => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let live: std::collections::BTreeMap<String, Option<uuid::Uuid>> =
        blocked.into_iter().map(|s| (s.ip.to_string(), s.block_event)).collect();
    let now = lockout_nats::clock::now_ms();
    let mut replay = std::collections::BTreeMap::new();
    for b in r.store.ip_blocks_after(tenant.as_str(), None) {
        let (ip, block) = b?;
        if block.in_force(now) {
            replay.insert(ip, Some(block.block_event));
        }
    }
    let ips: BTreeSet<&String> = live.keys().chain(replay.keys()).collect();
    Ok(ips
        .into_iter()
        .filter(|ip| live.get(*ip) != replay.get(*ip))
        .map(|ip| {
            let side = |m: &std::collections::BTreeMap<String, Option<uuid::Uuid>>| {
                m.get(ip).map_or("not blocked".to_owned(), |e| {
                    format!("blocked by {}", e.map_or("-".to_owned(), |e| e.to_string()))
                })
            };
            json!({ "note": format!("IP {ip}: live {}, replay {}", side(&live), side(&replay)) })
        })
        .collect())
}

pub async fn verify(ctx: &Ctx, a: VerifyArgs, out: &mut dyn Write) -> anyhow::Result<i32> {
    let temp;
    let dir = match &a.data_dir {
        Some(d) => {
            ensure_empty(d)?;
            d.clone()
        }
        None => {
            temp = tempfile::Builder::new().prefix("lockoutctl-verify-").tempdir().context("creating a temp dir")?;
            temp.path().to_owned()
        }
    };
    let mut extra = BTreeSet::new();
    for t in &a.tenants {
        extra.insert(crate::ctx::tenant(t)?.to_string());
    }
    let probe_tenant = Tenant::parse("_").expect("valid");
    let probe: DigestReply = ctx.request(&probe_tenant, "digest", &json!({})).await?;
    let mut r = Replayer::open(ctx, &dir, a.batch)?;
    r.run_to(ctx, probe.seq, None, "verify").await?;
    let mut checked = BTreeSet::new();
    let mut reports = Vec::new();
    let mut differing = 0usize;
    loop {
        let todo: Vec<String> = r.tenants()?.union(&extra).filter(|t| !checked.contains(*t)).cloned().collect();
        if todo.is_empty() {
            break;
        }
        for t in todo {
            checked.insert(t.clone());
            let tenant = crate::ctx::tenant(&t)?;
            let live: DigestReply = ctx.request(&tenant, "digest", &json!({})).await?;
            if live.seq > r.upto {
                r.run_to(ctx, live.seq, None, "verify").await?;
            }
            let (users, digest) = r.store.digest(&t)?;
            let mut report = json!({
                "tenant": t, "seq": live.seq,
                "live": { "users": live.users, "digest": live.digest },
                "replay": { "users": users, "digest": digest, "seq": r.upto },
            });
            let blocks = ip_block_differences(ctx, &r, &tenant).await?;
            let equal = live.seq == r.upto && live.users == users && live.digest == digest && blocks.is_empty();
            report["equal"] = json!(equal);
            if !equal {
                differing += 1;
                let mut diffs = Vec::new();
                if live.seq < r.upto {
                    diffs.push(json!({ "note": format!("the live service is at seq {} behind the replay at {}: is lockoutd rebuilding? run verify again", live.seq, r.upto) }));
                }
                diffs.extend(user_differences(ctx, &r, &tenant).await?);
                diffs.extend(blocks);
                report["differences"] = json!(diffs);
            }
            reports.push(report);
        }
    }
    let seq = r.upto;
    if ctx.json {
        serde_json::to_writer_pretty(&mut *out, &json!({ "seq": seq, "equal": differing == 0, "tenants": reports }))?;
        writeln!(out)?;
    } else {
        for rep in &reports {
            let t = rep["tenant"].as_str().unwrap_or("-");
            if rep["equal"].as_bool() == Some(true) {
                writeln!(
                    out,
                    "tenant {t}: equal at seq {} ({} user(s), digest {})",
                    rep["seq"],
                    rep["live"]["users"],
                    rep["live"]["digest"].as_str().unwrap_or("-")
                )?;
                continue;
            }
            writeln!(
                out,
                "tenant {t}: DIFFERENT: live seq {} {} user(s) digest {}; replay seq {} {} user(s) digest {}",
                rep["seq"],
                rep["live"]["users"],
                rep["live"]["digest"].as_str().unwrap_or("-"),
                rep["replay"]["seq"],
                rep["replay"]["users"],
                rep["replay"]["digest"].as_str().unwrap_or("-")
            )?;
            for d in rep["differences"].as_array().into_iter().flatten() {
                if let Some(note) = d["note"].as_str() {
                    writeln!(out, "  {note}")?;
                    continue;
                }
                let fields: Vec<String> = d["fields"]
                    .as_object()
                    .into_iter()
                    .flatten()
                    .map(|(k, v)| format!("{k}: live {} replay {}", v["live"], v["replay"]))
                    .collect();
                writeln!(out, "  {}: {}", d["user"].as_str().unwrap_or("-"), fields.join("; "))?;
            }
            if rep["differences"].as_array().is_some_and(Vec::is_empty) {
                writeln!(out, "  every user's status is equal: the stored states differ in what status does not show (e.g. counted credentials, blocked sources)")?;
            }
        }
        if differing == 0 {
            writeln!(
                out,
                "verified {} tenant(s) at seq {seq}: the live state is what the history says",
                reports.len()
            )?;
        } else {
            writeln!(out, "{differing} of {} tenant(s) differ from the history at seq {seq}", reports.len())?;
        }
    }
    Ok(if differing == 0 { exit::OK } else { exit::DIFFERENCES })
}
