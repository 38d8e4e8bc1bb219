//! The processes the benchmark runs and watches: its own nats-server ([`Nats`]), lockoutd as a
//! child process ([`Daemon`]: spawned on a store directory, followed through its `health`
//! endpoint until it folded a stream, stopped with SIGTERM), whole `lockoutctl` commands, and
//! `perf` recordings ([`Recorder`], stopped with SIGINT). CPU time and peak RSS of a process
//! come from procfs.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use async_nats::jetstream;
use async_nats::HeaderMap;
use lockout_proto::codec;
use nats_harness::NatsServer;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// A nats-server of the benchmark's own with lockoutd's streams (prefix `lockout`), a
/// connection to it, and a scratch directory for the stores of the phases.
pub struct Nats {
    // Dropped in this order: the directory first, the server last.
    pub work: tempfile::TempDir,
    pub js: jetstream::Context,
    pub client: async_nats::Client,
    pub url: String,
    pub server: NatsServer,
}

impl Nats {
    pub async fn start() -> anyhow::Result<Nats> {
        let server = NatsServer::start();
        let url = server.url();
        let client = async_nats::connect(&url).await?;
        let js = jetstream::new(client.clone());
        let work = tempfile::tempdir()?;
        lockoutd::streams::ensure_streams(&js, &lockoutd::Config::new(&url, work.path().join("unused"))).await?;
        Ok(Nats { work, js, client, url, server })
    }

    /// `name` in the scratch directory.
    pub fn dir(&self, name: &str) -> PathBuf {
        self.work.path().join(name)
    }
}

/// The version line of the nats-server binary the benchmark runs.
pub fn nats_version() -> String {
    Command::new(nats_harness::binary())
        .arg("--version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default()
}

/// A binary built next to this one (`cargo build --release -p <name>`).
fn sibling(name: &str) -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let bin = exe.parent().context("exe dir")?.join(name);
    anyhow::ensure!(bin.exists(), "{} missing: run `cargo build --release -p {name}`", bin.display());
    Ok(bin)
}

/// Sends `signal` to process `pid`.
fn signal(pid: u32, signal: Signal) -> anyhow::Result<()> {
    let raw = i32::try_from(pid).context("pid out of range")?;
    kill(Pid::from_raw(raw), signal).with_context(|| format!("sending {signal} to {pid}"))
}

/// CPU time (user + system) process `pid` used so far, in seconds (0 once it is gone).
pub fn cpu_seconds(pid: u32) -> f64 {
    let stat = i32::try_from(pid).ok().and_then(|pid| procfs::process::Process::new(pid).ok()?.stat().ok());
    stat.map_or(0.0, |s| (s.utime + s.stime) as f64 / procfs::ticks_per_second() as f64)
}

/// What a lockoutd run folds: the stream of `prefix` up to `last`, with `env` set.
pub struct Stream<'a> {
    pub prefix: &'a str,
    pub last: u64,
    pub env: &'a [(String, String)],
    pub cache_mb: u64,
}

/// lockoutd as a child process; killed if dropped before [`Daemon::stop`]. It logs warnings
/// and errors to the benchmark's stderr (`LOCKOUT_BENCH_DAEMON_LOG` sets another `RUST_LOG`).
pub struct Daemon {
    child: Child,
}

impl Daemon {
    pub fn spawn(url: &str, dir: &Path, stream: &Stream) -> anyhow::Result<Daemon> {
        Daemon::spawn_with(url, dir, stream, &[])
    }

    /// [`Daemon::spawn`] with more flags.
    pub fn spawn_with(url: &str, dir: &Path, stream: &Stream, extra: &[&str]) -> anyhow::Result<Daemon> {
        let child = Command::new(sibling("lockoutd")?)
            .args([
                "--nats-url",
                url,
                "--prefix",
                stream.prefix,
                "--cache-mb",
                &stream.cache_mb.to_string(),
                "--data-dir",
            ])
            .arg(dir)
            .args(extra)
            .env("RUST_LOG", std::env::var("LOCKOUT_BENCH_DAEMON_LOG").unwrap_or_else(|_| "warn".into()))
            .envs(stream.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()?;
        Ok(Daemon { child })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// CPU time (user + system) the process used so far, in seconds.
    pub fn cpu_seconds(&self) -> f64 {
        cpu_seconds(self.pid())
    }

    /// Peak resident set size (VmHWM) in bytes.
    pub fn peak_rss(&self) -> u64 {
        let status =
            i32::try_from(self.pid()).ok().and_then(|pid| procfs::process::Process::new(pid).ok()?.status().ok());
        status.and_then(|s| s.vmhwm).map_or(0, |kb| kb * 1024)
    }

    /// SIGTERM, then waits: lockoutd must exit cleanly.
    pub fn stop(mut self) -> anyhow::Result<()> {
        signal(self.pid(), Signal::SIGTERM)?;
        let status = self.child.wait()?;
        anyhow::ensure!(status.success(), "lockoutd exited with {status}");
        Ok(())
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// lockoutd's checkpoint from its `health` endpoint, if it answers within a second.
pub async fn health_seq(client: &async_nats::Client, prefix: &str) -> Option<u64> {
    let mut h = HeaderMap::new();
    h.insert(codec::CONTENT_TYPE, codec::JSON);
    let r = tokio::time::timeout(
        Duration::from_secs(1),
        client.request_with_headers(format!("{prefix}.svc.bench.health"), h, "{}".into()),
    )
    .await
    .ok()?
    .ok()?;
    let v: serde_json::Value = serde_json::from_slice(&r.payload).ok()?;
    v["seq"].as_u64()
}

/// Starts lockoutd on an empty store and times first commit → checkpoint at `stream.last`;
/// with `perf`, records a profile of lockoutd meanwhile.
pub async fn fold_run(
    client: &async_nats::Client,
    url: &str,
    dir: &Path,
    stream: &Stream<'_>,
    perf: Option<&Path>,
) -> anyhow::Result<(f64, Daemon)> {
    let d = Daemon::spawn(url, dir, stream)?;
    let recorder = perf.map(|out| Recorder::profile(&d, out)).transpose()?;
    let result = wait_folded(client, stream.prefix, stream.last).await;
    if let Some(r) = recorder {
        r.stop()?;
    }
    Ok((result?, d))
}

/// Polls `health` until lockoutd folded `last`; events/s from its first commit.
async fn wait_folded(client: &async_nats::Client, prefix: &str, last: u64) -> anyhow::Result<f64> {
    let deadline = Instant::now() + Duration::from_secs(1_800);
    let (mut first_seq, mut first_at) = (0, Instant::now());
    loop {
        let seq = health_seq(client, prefix).await.unwrap_or(0);
        if seq > 0 && first_seq == 0 {
            (first_seq, first_at) = (seq, Instant::now());
        }
        if seq >= last {
            return Ok((last - first_seq) as f64 / first_at.elapsed().as_secs_f64().max(1e-9));
        }
        anyhow::ensure!(Instant::now() < deadline, "lockoutd did not reach {last}");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// A `perf` recording, from `start` until `stop`.
pub struct Recorder(Child);

impl Recorder {
    /// Runs `perf ARGS -o OUT`.
    pub fn start(args: &[&str], out: &Path) -> anyhow::Result<Recorder> {
        Command::new("perf")
            .args(args)
            .arg("-o")
            .arg(out)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .map(Recorder)
            .context("starting `perf` (Debian package linux-perf)")
    }

    /// A profile of lockoutd `d` with DWARF call graphs (`perf report -i OUT`).
    pub fn profile(d: &Daemon, out: &Path) -> anyhow::Result<Recorder> {
        Recorder::start(&["record", "-F", "999", "--call-graph", "dwarf,16384", "-p", &d.pid().to_string()], out)
    }

    /// Stops the recording as Ctrl-C would, so `perf` writes its file out whole.
    pub fn stop(mut self) -> anyhow::Result<()> {
        signal(self.0.id(), Signal::SIGINT)?;
        self.0.wait()?;
        Ok(())
    }
}

/// Runs `lockoutctl --json ARGS` to completion; milliseconds, start to exit.
pub fn ctl_ms(url: &str, args: &[&str]) -> anyhow::Result<f64> {
    let start = Instant::now();
    let out = Command::new(sibling("lockoutctl")?)
        .args(["--nats-url", url, "--json"])
        .args(args)
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()?;
    let took = start.elapsed().as_secs_f64() * 1e3;
    anyhow::ensure!(out.status.success(), "lockoutctl {args:?} exited with {}", out.status);
    Ok(took)
}

/// `lockoutctl replay` into an empty directory: the whole command, start to exit; events/s.
pub fn replay_run(url: &str, dir: &Path, last: u64) -> anyhow::Result<f64> {
    let start = Instant::now();
    let out = Command::new(sibling("lockoutctl")?)
        .args(["--nats-url", url, "--json", "replay", "--data-dir"])
        .arg(dir)
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()?;
    let took = start.elapsed().as_secs_f64();
    anyhow::ensure!(out.status.success(), "lockoutctl replay exited with {}", out.status);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    anyhow::ensure!(v["checkpoint"].as_u64() == Some(last), "lockoutctl replay stopped at {}", v["checkpoint"]);
    Ok(last as f64 / took)
}
