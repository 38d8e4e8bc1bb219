//! A lockoutd under test: a real nats-server, a temp sled store, lockoutd in-process or as
//! a child process, and a client that speaks the protocol (`docs/protocol.md`).

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, consumer};
use async_nats::HeaderMap;
use futures::StreamExt;
use lockout_proto::codec::{self, Encoding};
use lockout_proto::event::{Attempt, EventKind, Factor, Outcome};
use lockout_proto::{Notice, Subjects, Tenant, UserId};
use nats_harness::{Cluster, NatsServer};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;
use tokio::sync::oneshot;
use uuid::Uuid;

/// How lockoutd runs.
enum Daemon {
    InProcess { stop: oneshot::Sender<()>, task: tokio::task::JoinHandle<anyhow::Result<()>> },
    Process(Child),
    Stopped,
}

/// The nats-server(s) under test: one, or a cluster of the deploy template.
pub enum Servers {
    One(NatsServer),
    Cluster(Cluster),
}

impl Servers {
    /// The URL lockoutd and clients connect with (a comma-separated list for a cluster).
    pub fn url(&self) -> String {
        match self {
            Servers::One(s) => s.url(),
            Servers::Cluster(c) => c.url_list(),
        }
    }

    fn addrs(&self) -> Vec<async_nats::ServerAddr> {
        self.url().split(',').map(|u| u.parse().unwrap()).collect()
    }

    /// The single server (tests that stop or pause it).
    pub fn one(&mut self) -> &mut NatsServer {
        match self {
            Servers::One(s) => s,
            Servers::Cluster(_) => panic!("this test needs a single nats-server"),
        }
    }

    /// The cluster (tests that kill its nodes).
    pub fn cluster(&mut self) -> &mut Cluster {
        match self {
            Servers::Cluster(c) => c,
            Servers::One(_) => panic!("this test needs a cluster: Lockout::start_process_on_cluster"),
        }
    }

    /// The single server's [`NatsServer::pause_for`] (callable where the test holds `&Lockout`).
    pub fn pause_for(&self, d: Duration) -> std::thread::JoinHandle<()> {
        match self {
            Servers::One(s) => s.pause_for(d),
            Servers::Cluster(_) => panic!("this test needs a single nats-server"),
        }
    }
}

pub struct Lockout {
    pub nats: Servers,
    pub data: tempfile::TempDir,
    daemon: Daemon,
    pub client: async_nats::Client,
    pub js: jetstream::Context,
    pub subjects: Subjects,
    pub notice_encoding: Encoding,
    /// lockoutd's `--commit-linger-ms`.
    pub commit_linger: Duration,
    /// The wall clock of an in-process lockoutd: the system's until a test moves it on.
    pub clock: Arc<lockout_nats::clock::ManualClock>,
    /// lockoutd's `--replicas`.
    pub replicas: usize,
    /// lockoutd's stream limits (`--dead-max-messages`, `--events-max-*`).
    pub limits: lockoutd::config::StreamLimits,
    /// lockoutd's `--require-caller`.
    pub require_caller: bool,
    /// lockoutd's state TTL (`--state-ttl-days`, here any length; swept every 200 ms).
    pub state_ttl: Duration,
}

/// A micro service error: code and message.
#[derive(Debug, PartialEq, Eq)]
pub struct SvcError {
    pub code: u16,
    pub message: String,
}

/// An attempt body with a fresh v7 id, the local clock as `at` and no optional fields;
/// tests set what they need on it.
pub fn attempt_body(tenant: &str, user: &str, outcome: Outcome, ip: &str) -> Attempt {
    Attempt {
        id: Uuid::now_v7(),
        at: lockout_nats::clock::now_ms(),
        tenant: tenant.into(),
        user: user.into(),
        outcome,
        factor: Factor::Password,
        source_ip: ip.into(),
        client: None,
        credential: None,
        account: None,
        is_final: true,
    }
}

/// In-process lockoutd logs to the test's output when `LOCKOUT_TEST_LOG` holds a filter
/// (e.g. `LOCKOUT_TEST_LOG=lockoutd=debug`): what to look at when a test fails.
fn init_logs() {
    if let Ok(filter) = std::env::var("LOCKOUT_TEST_LOG") {
        let _ = tracing_subscriber::fmt().with_env_filter(filter).with_test_writer().try_init();
    }
}

/// Runs `lockoutctl --nats-url URL ARGS` in this process: exit code, stdout, stderr.
pub async fn lockoutctl(url: &str, args: &[&str]) -> (i32, String, String) {
    let mut full = vec!["lockoutctl", "--nats-url", url];
    full.extend_from_slice(args);
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let code = lockoutctl::run_io(full, &mut out, &mut err).await;
    (code, String::from_utf8(out).unwrap(), String::from_utf8(err).unwrap())
}

pub fn lockoutd_binary() -> PathBuf {
    // target/<profile>/deps/it-<hash> → target/<profile>/lockoutd
    let exe = std::env::current_exe().expect("test executable path");
    let bin = exe.parent().and_then(|d| d.parent()).expect("target dir").join("lockoutd");
    assert!(bin.exists(), "{} is missing: build it with `cargo build -p lockoutd` (make test does)", bin.display());
    bin
}

impl Lockout {
    /// A fresh server and store with lockoutd running in-process.
    pub async fn start() -> Lockout {
        Self::start_with(Encoding::Postcard).await
    }

    /// A fresh server and store with lockoutd as a child process (for kill -9).
    pub async fn start_process() -> Lockout {
        let mut l = Self::server_only(Encoding::Postcard).await;
        l.spawn_daemon().await;
        l
    }

    pub async fn start_with(notice_encoding: Encoding) -> Lockout {
        let mut l = Self::server_only(notice_encoding).await;
        l.start_daemon().await;
        l
    }

    /// lockoutd in-process, holding batches nobody waits for up to `linger` (any length).
    pub async fn start_lingering(linger: Duration) -> Lockout {
        let mut l = Self::server_only(Encoding::Postcard).await;
        l.commit_linger = linger;
        l.start_daemon().await;
        l
    }

    /// A fresh 3-node cluster (`deploy/nats/cluster.conf`) and store, with lockoutd as a child
    /// process keeping 3 replicas of every stream.
    pub async fn start_process_on_cluster() -> Lockout {
        let mut l = Self::on(Servers::Cluster(Cluster::start(3)), Encoding::Postcard).await;
        l.replicas = 3;
        l.spawn_daemon().await;
        l
    }

    /// [`Lockout::start`] dropping states idle for `ttl` (`--state-ttl-days` in seconds).
    pub async fn start_with_state_ttl(ttl: Duration) -> Lockout {
        let mut l = Self::server_only(Encoding::Postcard).await;
        l.state_ttl = ttl;
        l.start_daemon().await;
        l
    }

    /// [`Lockout::start`] with `--require-caller`.
    pub async fn start_requiring_caller() -> Lockout {
        let mut l = Self::server_only(Encoding::Postcard).await;
        l.require_caller = true;
        l.start_daemon().await;
        l
    }

    /// [`Lockout::start`] with lockoutd's clock `ms` ahead of the server's from its start.
    pub async fn start_with_clock_ahead(ms: u64) -> Lockout {
        let mut l = Self::server_only(Encoding::Postcard).await;
        l.advance_clock(ms);
        l.start_daemon().await;
        l
    }

    async fn server_only(notice_encoding: Encoding) -> Lockout {
        Self::on(Servers::One(NatsServer::start()), notice_encoding).await
    }

    async fn on(nats: Servers, notice_encoding: Encoding) -> Lockout {
        init_logs();
        let data = tempfile::Builder::new().prefix("lockout-it-").tempdir().unwrap();
        let client = async_nats::ConnectOptions::new()
            .retry_on_initial_connect()
            .connect(nats.addrs().as_slice())
            .await
            .unwrap();
        let js = jetstream::new(client.clone());
        Lockout {
            nats,
            data,
            daemon: Daemon::Stopped,
            client,
            js,
            subjects: Subjects::default(),
            notice_encoding,
            commit_linger: Duration::from_millis(lockoutd::config::DEFAULT_COMMIT_LINGER_MS),
            clock: Arc::default(),
            replicas: 1,
            limits: Default::default(),
            require_caller: false,
            state_ttl: Duration::ZERO,
        }
    }

    pub fn config(&self) -> lockoutd::Config {
        let mut c = lockoutd::Config::new(&self.nats.url(), self.data.path().join("store"));
        c.notice_encoding = self.notice_encoding;
        c.commit_linger = self.commit_linger;
        c.replicas = self.replicas;
        c.limits = self.limits;
        c.require_caller = self.require_caller;
        if !self.state_ttl.is_zero() {
            c.state_ttl = self.state_ttl;
            c.state_sweep_every = Duration::from_millis(200);
        }
        c
    }

    /// Starts lockoutd in-process and waits until its service answers.
    pub async fn start_daemon(&mut self) {
        let (stop, rx) = oneshot::channel();
        let task = tokio::spawn(lockoutd::run_with_clock(self.config(), self.clock.clone(), async move {
            let _ = rx.await;
        }));
        self.daemon = Daemon::InProcess { stop, task };
        self.wait_ready().await;
    }

    /// Moves the in-process lockoutd's clock `ms` ahead (a lock's end without waiting for it).
    pub fn advance_clock(&self, ms: u64) {
        self.clock.advance(ms);
    }

    /// Starts lockoutd as a child process (so it can be killed with SIGKILL).
    pub async fn spawn_daemon(&mut self) {
        let c = self.config();
        let mut cmd = Command::new(lockoutd_binary());
        // A write past a file-size limit (see `limit_file_size`) fails with EFBIG, as on a
        // full disk, instead of killing the process: ignored signals stay ignored across exec.
        // SAFETY: `signal` is async-signal-safe, as `pre_exec` requires.
        unsafe {
            std::os::unix::process::CommandExt::pre_exec(&mut cmd, || {
                libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
                Ok(())
            });
        }
        let child = cmd
            .arg("--nats-url")
            .arg(&c.nats.nats_url)
            .arg("--data-dir")
            .arg(&c.data_dir)
            .arg("--notice-encoding")
            .arg(self.notice_encoding.name())
            .arg("--commit-linger-ms")
            .arg(c.commit_linger.as_millis().to_string())
            .arg("--replicas")
            .arg(c.replicas.to_string())
            .arg("--dead-max-messages")
            .arg(c.limits.dead_max_messages.to_string())
            .arg("--events-max-age-days")
            .arg((c.limits.events_max_age.as_secs() / 86_400).to_string())
            .arg("--events-max-bytes")
            .arg(c.limits.events_max_bytes.to_string())
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawning lockoutd");
        self.daemon = Daemon::Process(child);
        self.wait_ready().await;
    }

    /// Sets how large the child lockoutd may grow any file (`None`: unlimited), as a disk
    /// that fills up and frees space again.
    pub fn limit_file_size(&self, bytes: Option<u64>) {
        let Daemon::Process(c) = &self.daemon else { panic!("a file-size limit needs lockoutd as a process") };
        let limit = bytes.unwrap_or(libc::RLIM_INFINITY);
        let new = libc::rlimit { rlim_cur: limit, rlim_max: libc::RLIM_INFINITY };
        let pid = libc::pid_t::try_from(c.id()).unwrap();
        // SAFETY: plain syscall on our own child's limits with valid pointers.
        let rc = unsafe { libc::prlimit(pid, libc::RLIMIT_FSIZE, &new, std::ptr::null_mut()) };
        assert_eq!(rc, 0, "prlimit: {}", std::io::Error::last_os_error());
    }

    /// The `health` reply (JSON).
    pub async fn health(&self) -> Value {
        self.call("_probe", "health", serde_json::json!({})).await.unwrap()
    }

    /// SIGKILL of the child process: no draining, no flush.
    pub fn kill_daemon(&mut self) {
        match std::mem::replace(&mut self.daemon, Daemon::Stopped) {
            Daemon::Process(mut c) => {
                c.kill().unwrap();
                c.wait().unwrap();
            }
            _ => panic!("kill -9 needs lockoutd as a process: use Lockout::start_process"),
        }
    }

    /// Graceful stop; returns lockoutd's result.
    pub async fn stop_daemon(&mut self) -> anyhow::Result<()> {
        match std::mem::replace(&mut self.daemon, Daemon::Stopped) {
            Daemon::InProcess { stop, task } => {
                let _ = stop.send(());
                task.await.unwrap()
            }
            Daemon::Process(mut c) => {
                nats_harness::signal(c.id(), libc::SIGTERM);
                let status = c.wait().unwrap();
                anyhow::ensure!(status.success(), "lockoutd exited with {status}");
                Ok(())
            }
            Daemon::Stopped => Ok(()),
        }
    }

    pub async fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            // `health` is the last endpoint lockoutd registers: once it answers, every op
            // does ($SRV.PING answers before the endpoints are subscribed).
            let r = tokio::time::timeout(
                Duration::from_millis(500),
                self.client.request("lockout.svc._probe.health", bytes::Bytes::new()),
            )
            .await;
            if matches!(r, Ok(Ok(_))) {
                return;
            }
            assert!(Instant::now() < deadline, "lockoutd's service did not answer within 30 s");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Sends a JSON request to `lockout.svc.<tenant>.<op>`.
    pub async fn call(&self, tenant: &str, op: &str, body: Value) -> Result<Value, SvcError> {
        self.call_raw(tenant, op, Encoding::Json, serde_json::to_vec(&body).unwrap(), HeaderMap::new())
            .await
            .map(|b| serde_json::from_slice(&b).unwrap())
    }

    /// Sends a typed request in either encoding and decodes the typed reply.
    pub async fn call_typed<Q: Serialize, R: DeserializeOwned>(
        &self,
        tenant: &str,
        op: &str,
        enc: Encoding,
        body: &Q,
    ) -> Result<R, SvcError> {
        let bytes = self.call_raw(tenant, op, enc, codec::encode(enc, body), HeaderMap::new()).await?;
        Ok(codec::decode(enc, &bytes, "reply").unwrap())
    }

    pub async fn call_raw(
        &self,
        tenant: &str,
        op: &str,
        enc: Encoding,
        body: Vec<u8>,
        mut headers: HeaderMap,
    ) -> Result<Vec<u8>, SvcError> {
        headers.insert(codec::CONTENT_TYPE, enc.content_type());
        let subject = format!("lockout.svc.{tenant}.{op}");
        let reply = tokio::time::timeout(
            Duration::from_secs(10),
            self.client.request_with_headers(subject, headers, body.into()),
        )
        .await
        .expect("service reply within 10 s")
        .expect("request");
        let h = reply.headers.clone().unwrap_or_default();
        if let Some(code) = h.get(codec::SERVICE_ERROR_CODE) {
            assert!(reply.payload.is_empty(), "error replies have an empty body");
            return Err(SvcError {
                code: code.as_str().parse().unwrap(),
                message: h.get(codec::SERVICE_ERROR).map(|v| v.as_str().to_owned()).unwrap_or_default(),
            });
        }
        assert_eq!(
            h.get(codec::CONTENT_TYPE).map(|v| v.as_str()),
            Some(enc.content_type()),
            "replies carry Content-Type"
        );
        Ok(reply.payload.to_vec())
    }

    pub async fn status(&self, tenant: &str, user: &str) -> Value {
        self.call(tenant, "status", serde_json::json!({ "user": user })).await.unwrap()
    }

    /// Publishes an attempt exactly as a gateway would (JSON); returns its stream sequence.
    pub async fn attempt(&self, tenant: &str, user: &str, outcome: Outcome, ip: &str, client: Option<&str>) -> u64 {
        let a = Attempt { client: client.map(Into::into), ..attempt_body(tenant, user, outcome, ip) };
        self.publish_attempt(&a, Encoding::Json).await
    }

    pub async fn publish_attempt(&self, a: &Attempt, enc: Encoding) -> u64 {
        let subject = self.subjects.user_event(
            &Tenant::parse(&a.tenant).unwrap(),
            &UserId::parse(&a.user).unwrap(),
            EventKind::Attempt,
        );
        let mut h = HeaderMap::new();
        h.insert(codec::CONTENT_TYPE, enc.content_type());
        h.insert(codec::NATS_MSG_ID, a.id.to_string().as_str());
        self.publish_raw(&subject, h, codec::encode(enc, a)).await
    }

    pub async fn publish_raw(&self, subject: &str, headers: HeaderMap, payload: Vec<u8>) -> u64 {
        self.js.publish_with_headers(subject.to_owned(), headers, payload.into()).await.unwrap().await.unwrap().sequence
    }

    /// The last event sequence lockoutd folded (from `digest`).
    /// (0 while the store cannot answer, e.g. while lockoutd reopens it.)
    pub async fn folded_seq(&self) -> u64 {
        let digest = self.call("_probe", "digest", serde_json::json!({})).await;
        digest.ok().and_then(|d| d["seq"].as_u64()).unwrap_or(0)
    }

    /// Waits until lockoutd folded `seq`.
    pub async fn wait_folded(&self, seq: u64) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while self.folded_seq().await < seq {
            assert!(Instant::now() < deadline, "lockoutd did not fold sequence {seq} within 60 s");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Every message of a stream, in order.
    pub async fn stream_messages(&self, stream: &str) -> Vec<jetstream::message::StreamMessage> {
        stream_messages(&self.js, stream).await
    }

    /// Every notice so far, decoded, with its headers.
    pub async fn notices(&self) -> Vec<(Notice, HeaderMap)> {
        self.stream_messages("LOCKOUT_NOTICES")
            .await
            .into_iter()
            .map(|m| {
                let kind = m.subject.rsplit('.').next().unwrap().to_owned();
                let enc = Encoding::from_content_type(m.headers.get(codec::CONTENT_TYPE).map(|v| v.as_str())).unwrap();
                (Notice::decode(&kind, enc, &m.payload).unwrap(), m.headers)
            })
            .collect()
    }

    /// Waits until `LOCKOUT_NOTICES` holds at least `n` messages and returns them all.
    pub async fn wait_notices(&self, n: usize) -> Vec<(Notice, HeaderMap)> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let all = self.notices().await;
            if all.len() >= n {
                return all;
            }
            assert!(Instant::now() < deadline, "expected {n} notices within 30 s, have {}", all.len());
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// A live subscription to notices through an ephemeral pull consumer.
    pub async fn notice_consumer(&self) -> consumer::pull::Stream {
        let s = self.js.get_stream("LOCKOUT_NOTICES").await.unwrap();
        let c: consumer::PullConsumer = s
            .create_consumer(consumer::pull::Config {
                deliver_policy: consumer::DeliverPolicy::New,
                ..Default::default()
            })
            .await
            .unwrap();
        c.messages().await.unwrap()
    }
}

impl Drop for Lockout {
    fn drop(&mut self) {
        if let Daemon::Process(c) = &mut self.daemon {
            let _ = c.kill();
            let _ = c.wait();
        }
        if let Daemon::InProcess { task, .. } = &self.daemon {
            task.abort();
        }
    }
}

/// Reads one notice from a live consumer within `secs`.
pub async fn next_notice(stream: &mut consumer::pull::Stream, secs: u64) -> (Notice, HeaderMap) {
    let m = tokio::time::timeout(Duration::from_secs(secs), stream.next())
        .await
        .expect("a notice in time")
        .expect("stream open")
        .expect("message");
    let kind = m.subject.rsplit('.').next().unwrap().to_owned();
    let h = m.headers.clone().unwrap_or_default();
    let enc = Encoding::from_content_type(h.get(codec::CONTENT_TYPE).map(|v| v.as_str())).unwrap();
    m.ack().await.unwrap();
    (Notice::decode(&kind, enc, &m.payload).unwrap(), h)
}

/// Every message of a stream, in order.
pub async fn stream_messages(js: &jetstream::Context, stream: &str) -> Vec<jetstream::message::StreamMessage> {
    let s = js.get_stream(stream).await.unwrap();
    let last = s.get_info().await.unwrap().state.last_sequence;
    let mut out = Vec::new();
    for seq in 1..=last {
        if let Ok(m) = s.get_raw_message(seq).await {
            out.push(m);
        }
    }
    out
}
