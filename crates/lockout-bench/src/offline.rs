//! The measurements in this process without NATS: single-core decode + fold (the suite's last
//! phase and `lockout-bench fold`), lockoutd's batch folder and store (`folder`), the store's
//! size per user (`disk`, and [`dir_size`] for the suite's store-size phase), and sled reads
//! while commits run (`reads-under-commits`).

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use lockout_core::UserState;
use lockout_proto::codec::Encoding;
use lockout_proto::event::{Event, EventKind};
use lockout_proto::{CompactString, Policy, Subjects};

use crate::report::{median, Samples};
use crate::workload::{spraying_workload, wide_workload, workload, Msg};
use crate::{DiskArgs, FoldArgs, FolderArgs, ReadsArgs, SprayingArgs};

/// How much of the projector's per-event work a fold measurement includes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FoldWork {
    /// Decode the body and fold it (what `make bench-fold` measures).
    DecodeFold,
    /// Parse the subject, decode and check the body, fold: the projector's per-event work
    /// minus the store and NATS.
    Projector,
}

/// Single-core fold of pre-encoded attempts into a map of states; events/s.
fn fold_eps(events: &[Msg], enc: Encoding, work: FoldWork) -> f64 {
    let subjects = Subjects::default();
    let encoded: Vec<(&str, Vec<u8>)> = events
        .iter()
        .map(|(subject, _, p)| match enc {
            Encoding::Postcard => (subject.as_str(), p.clone()),
            Encoding::Json | Encoding::PostcardV2 => {
                let e = Event::decode(EventKind::Attempt, Encoding::Postcard, p).unwrap();
                (subject.as_str(), e.encode(enc))
            }
        })
        .collect();
    let policy = Policy::default();
    let start = Instant::now();
    // States as the projector's cache holds them: boxed, in its map type (foldhash, not
    // std's SipHash), grown as users appear; folded in place, as the projector folds.
    let mut states: lockout_engine::cache::HashMap<CompactString, Box<UserState>> = Default::default();
    for (i, (subject, bytes)) in encoded.iter().enumerate() {
        let e = match work {
            FoldWork::DecodeFold => Event::decode(EventKind::Attempt, enc, bytes).unwrap(),
            FoldWork::Projector => Event::decode_checked(&subjects.parse_event(subject).unwrap(), enc, bytes).unwrap(),
        };
        let user = e.user().unwrap();
        let slot = match states.get_mut(user) {
            Some(s) => s,
            None => states.entry(user.into()).or_default(),
        };
        let notices = lockout_core::fold_into(&policy, slot, &e, i as u64);
        std::hint::black_box(&notices);
    }
    std::hint::black_box(&states);
    encoded.len() as f64 / start.elapsed().as_secs_f64()
}

/// The fold phase's figures, events/s: medians of the repeats.
pub struct FoldFigures {
    pub postcard: f64,
    pub json: f64,
    pub checked_postcard: f64,
    pub checked_json: f64,
}

/// Single-core decode + fold (and the projector's checks) of the first 200,000 of `events`,
/// postcard and JSON; each the median of `repeats` runs.
pub fn fold_figures(events: &[Msg], repeats: usize) -> FoldFigures {
    let fold_sample = &events[..events.len().min(200_000)];
    let fold = |enc, work| median((0..repeats).map(|_| fold_eps(fold_sample, enc, work)).collect());
    FoldFigures {
        postcard: fold(Encoding::Postcard, FoldWork::DecodeFold),
        json: fold(Encoding::Json, FoldWork::DecodeFold),
        checked_postcard: fold(Encoding::Postcard, FoldWork::Projector),
        checked_json: fold(Encoding::Json, FoldWork::Projector),
    }
}

/// `lockout-bench fold`: the fold phase alone on the main workload; prints its figures.
pub fn fold_only(a: &FoldArgs) {
    let ((n, users), repeats) = (a.scale.sizes(), a.repeats);
    let events = workload("lockout", n, users);
    let sample = &events[..events.len().min(200_000)];
    for enc in [Encoding::Postcard, Encoding::Json] {
        for (work, name) in [(FoldWork::DecodeFold, "fold"), (FoldWork::Projector, "fold_checked")] {
            let eps = median((0..repeats).map(|_| fold_eps(sample, enc, work)).collect());
            println!("{name}_{}_eps {eps:.0}", enc.name());
        }
    }
}

/// Bytes of the files under `p`, recursively.
pub fn dir_size(p: &Path) -> u64 {
    std::fs::read_dir(p).map_or(0, |rd| {
        rd.filter_map(Result::ok)
            .map(|e| {
                let md = e.metadata().ok();
                match md {
                    Some(m) if m.is_dir() => dir_size(&e.path()),
                    Some(m) => m.len(),
                    None => 0,
                }
            })
            .sum()
    })
}

/// Folds `events` (subjects under `prefix`) with lockoutd's batch folder in this process, in
/// batches of 1000, committing each into the store in `dir`; closes the store.
fn fold_in_process(
    events: &[Msg],
    dir: &Path,
    prefix: &str,
    sled_cache_bytes: u64,
    state_cache_bytes: usize,
) -> anyhow::Result<()> {
    let store = lockout_store::Store::open(dir, sled_cache_bytes)?;
    let outbox = lockout_engine::OutboxMode::Publish { floors: Default::default(), notices: Encoding::Postcard };
    let mut folder =
        lockout_engine::BatchFolder::new(store.clone(), Subjects::new(prefix).map_err(anyhow::Error::msg)?, outbox)?;
    folder.set_state_cache_bytes(state_cache_bytes);
    for (b, chunk) in events.chunks(1_000).enumerate() {
        let incoming: Vec<_> = chunk
            .iter()
            .enumerate()
            .map(|(i, (subject, headers, payload))| {
                let seq = (b * 1_000 + i + 1) as u64;
                let content_type = headers.get(lockout_proto::codec::CONTENT_TYPE).map(|v| v.as_str());
                lockout_engine::Incoming { seq, subject, payload, time: seq, content_type }
            })
            .collect();
        if let Some(c) = folder.fold_batch(&incoming)?.commit {
            store.commit(&c)?;
        }
    }
    drop(folder);
    store.flush()?;
    Ok(())
}

/// `lockout-bench folder`: lockoutd's batch folder and store on the main workload, one thread;
/// prints events/s.
pub fn folder(a: &FolderArgs) -> anyhow::Result<()> {
    let (n, users) = a.scale.sizes();
    let events = workload("lockout", n, users);
    let dir = tempfile::tempdir()?;
    let start = Instant::now();
    fold_in_process(&events, dir.path(), "lockout", 128 << 20, lockout_engine::DEFAULT_STATE_CACHE_BYTES)?;
    println!("folder_eps {:.0}", events.len() as f64 / start.elapsed().as_secs_f64());
    Ok(())
}

/// What spraying detection costs (issue 22).
#[derive(Debug, Clone, Copy)]
pub struct SprayingFigures {
    /// Fold + commit events/s (lockoutd's batch folder, one thread) of the main workload (90%
    /// successes, failures from 65,536 IPs) with detection off and on: medians of interleaved
    /// runs over the same events.
    pub off_eps: f64,
    pub on_eps: f64,
    /// The same for the worst case: every event a failure from an IP never seen before.
    pub worst_off_eps: f64,
    pub worst_on_eps: f64,
    /// IP counts as stored (keys included) per IP counted, after the worst case's "on" run.
    pub ip_state_bytes_per_ip: f64,
    pub ips: usize,
}

/// Fold + commit events/s of `off` and `on`, alternating, `repeats` times each (medians), and
/// the stored bytes per IP count after the last `on` run.
fn off_on(off: &[Msg], on: &[Msg], repeats: usize) -> anyhow::Result<(f64, f64, f64)> {
    let (mut off_eps, mut on_eps, mut bytes) = (Vec::new(), Vec::new(), 0.0);
    for _ in 0..repeats.max(1) {
        for (events, out) in [(off, &mut off_eps), (on, &mut on_eps)] {
            let dir = tempfile::tempdir()?;
            let start = Instant::now();
            fold_in_process(events, dir.path(), "spray", 128 << 20, lockout_engine::DEFAULT_STATE_CACHE_BYTES)?;
            out.push(events.len() as f64 / start.elapsed().as_secs_f64());
            let (b, counted) = lockout_store::Store::open(dir.path(), 16 << 20)?.ip_count_bytes()?;
            if counted > 0 {
                bytes = b as f64 / counted as f64;
            }
        }
    }
    Ok((median(off_eps), median(on_eps), bytes))
}

/// Spraying detection off and on over the main workload (`n` events, `users` users) and over
/// the worst case (`n` failures from `ips` distinct IPs), `repeats` interleaved runs each.
pub fn spraying_figures(n: usize, users: usize, ips: usize, repeats: usize) -> anyhow::Result<SprayingFigures> {
    use crate::workload::with_spraying_policy;
    let (off_eps, on_eps, _) = off_on(
        &with_spraying_policy("spray", false, workload("spray", n, users)),
        &with_spraying_policy("spray", true, workload("spray", n, users)),
        repeats,
    )?;
    let (worst_off_eps, worst_on_eps, ip_state_bytes_per_ip) = off_on(
        &spraying_workload("spray", n, users, ips, false),
        &spraying_workload("spray", n, users, ips, true),
        repeats,
    )?;
    Ok(SprayingFigures { off_eps, on_eps, worst_off_eps, worst_on_eps, ip_state_bytes_per_ip, ips })
}

/// `lockout-bench spraying`: prints [`spraying_figures`].
pub fn spraying(a: &SprayingArgs) -> anyhow::Result<()> {
    let f = spraying_figures(a.events, a.users, a.ips, a.repeats)?;
    println!("spraying_off_fold_eps {:.0}", f.off_eps);
    println!("spraying_on_fold_eps {:.0}", f.on_eps);
    println!("spraying_on_vs_off {:.3}", f.on_eps / f.off_eps);
    println!("spraying_worst_on_vs_off {:.3}", f.worst_on_eps / f.worst_off_eps);
    println!("ip_state_bytes_per_ip {:.1}", f.ip_state_bytes_per_ip);
    Ok(())
}

/// `lockout-bench disk`: the store-size workload (`--wide-users`) folded into a store with
/// lockoutd's caches for `--cache-mb`; prints the store's size per user.
pub fn disk(a: &DiskArgs) -> anyhow::Result<()> {
    let (users, sorted) = a.wide.sizes(a.quick);
    let events = wide_workload("wide", users, sorted);
    let dir = tempfile::tempdir()?;
    let cfg = lockoutd::Config { cache_bytes: a.cache_mb << 20, ..lockoutd::Config::new("unused", dir.path().into()) };
    fold_in_process(&events, dir.path(), "wide", cfg.sled_cache_bytes(), cfg.state_cache_bytes())?;
    // What is stored per user: the key and the state in the store's encoding, and the same
    // state as plain postcard (the store's earlier format), on average.
    let (mut tracked, mut key, mut state, mut postcard) = (0usize, 0usize, 0usize, 0usize);
    for r in lockout_store::Store::open(dir.path(), 16 << 20)?.all_users() {
        let (tenant, user, s) = r?;
        tracked += 1;
        key += 1 + lockout_store::user_key(&tenant, &user).len();
        state += lockout_store::state_codec::encode(&s).len();
        postcard += postcard::to_allocvec(&s)?.len();
    }
    let per_user = |x: usize| x as f64 / tracked.max(1) as f64;
    println!("disk_bytes_per_user {:.0}", per_user(dir_size(dir.path()) as usize));
    println!("key_bytes_per_user {:.1}", per_user(key));
    println!("state_bytes_per_user {:.1}", per_user(state));
    println!("postcard_state_bytes_per_user {:.1}", per_user(postcard));
    Ok(())
}

/// `lockout-bench reads-under-commits`: a store of `--users` users (one failure each), then one
/// thread reading users' states as `status` does, one every 300 µs, while no commit runs and
/// then while another thread commits `--commit-states` states every 5 ms; prints the reads'
/// percentiles in µs for both. sled 0.34 guards every tree with one process-wide reader-writer
/// lock that each commit (`apply_batch`) holds for writing and each read for reading, so a read
/// that comes during a commit waits for it.
pub fn reads_under_commits(a: &ReadsArgs) -> anyhow::Result<()> {
    let (users, per_commit) = (a.users, a.commit_states);
    let dir = tempfile::tempdir()?;
    let cfg = lockoutd::Config::new("unused", dir.path().into());
    fold_in_process(
        &wide_workload("wide", users, false),
        dir.path(),
        "wide",
        cfg.sled_cache_bytes(),
        cfg.state_cache_bytes(),
    )?;
    let store = lockout_store::Store::open(dir.path(), cfg.sled_cache_bytes())?;
    let keys = store.all_users().map(|r| r.map(|(t, u, _)| (t, u))).collect::<Result<Vec<_>, _>>()?;
    anyhow::ensure!(keys.len() == users, "{} users stored of {users}", keys.len());
    let reads = |n: usize, offset: usize| -> anyhow::Result<Samples> {
        let mut us = Samples::default();
        for i in 0..n {
            std::thread::sleep(Duration::from_micros(300));
            let (tenant, user) = &keys[(offset + i).wrapping_mul(104_729) % keys.len()];
            let t = Instant::now();
            anyhow::ensure!(store.user(tenant, user)?.is_some(), "{user} not stored");
            us.record(t.elapsed());
        }
        Ok(us)
    };
    let report = |name: &str, us: Samples| {
        for (p, label) in [(0.50, "p50"), (0.99, "p99"), (0.999, "p999"), (1.0, "max")] {
            println!("store_read_{name}_{label}_us {:.0}", us.us(p));
        }
    };
    report("idle", reads(5_000, 0)?);
    let stop = AtomicBool::new(false);
    let under_commits = std::thread::scope(|s| {
        let committer = s.spawn(|| -> anyhow::Result<u64> {
            let (mut seq, mut commits) = (store.checkpoint()?, 0u64);
            while !stop.load(Ordering::Relaxed) {
                let states = (0..per_commit)
                    .map(|_| {
                        seq += 1;
                        let (tenant, user) = &keys[(seq as usize).wrapping_mul(7_919) % keys.len()];
                        let state = UserState { last_failure_at: Some(seq), ..UserState::default() };
                        lockout_store::StateChange {
                            tenant: tenant.into(),
                            user: user.into(),
                            before: None,
                            before_scoped: Vec::new(),
                            state,
                        }
                    })
                    .collect();
                store.commit(&lockout_store::Commit { states, checkpoint: seq, ..Default::default() })?;
                commits += 1;
                std::thread::sleep(Duration::from_millis(5));
            }
            Ok(commits)
        });
        let r = reads(5_000, 5_000);
        stop.store(true, Ordering::Relaxed);
        let commits = committer.join().map_err(|_| anyhow::anyhow!("the committer panicked"))??;
        anyhow::ensure!(commits > 0, "nothing was committed");
        r
    })?;
    report("committing", under_commits);
    Ok(())
}
