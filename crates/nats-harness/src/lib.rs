//! Runs a real `nats-server` for tests.
//!
//! Each [`NatsServer`] is its own process with JetStream on, listening on a free loopback
//! port (`-p -1`, read back from the server's ports file) with a temp store dir; it is
//! killed and its files removed on `Drop`. Readiness is polled, never slept for.
//!
//! The binary is `$NATS_SERVER_BIN`, else the project's pinned copy in `.tools/nats/bin/`
//! (installed by `make nats-server`), else `nats-server` on `PATH`.

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running nats-server; killed on drop.
pub struct NatsServer {
    child: Option<Child>,
    port: u16,
    dir: tempfile::TempDir,
    config: Option<PathBuf>,
    env: Vec<(String, String)>,
    extra_args: Vec<String>,
    monitor_port: Option<u16>,
}

/// The nats-server binary tests use.
pub fn binary() -> PathBuf {
    if let Some(p) = std::env::var_os("NATS_SERVER_BIN") {
        return PathBuf::from(p);
    }
    let pinned = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.tools/nats/bin/nats-server");
    if pinned.exists() {
        return pinned;
    }
    PathBuf::from("nats-server")
}

impl NatsServer {
    /// Starts a JetStream-enabled server on a free loopback port.
    pub fn start() -> NatsServer {
        Self::start_with_config(None, &[])
    }

    /// Starts a server with a config file (`-c`); `env` sets the variables it references.
    /// Port, address and store dir still come from the harness.
    pub fn start_with_config(config: Option<&Path>, env: &[(&str, &str)]) -> NatsServer {
        let mut s = Self::unstarted(config, owned(env), vec![], None);
        s.spawn(None);
        s
    }

    /// [`NatsServer::start_with_config`] with the monitoring endpoint on a free loopback port,
    /// read with [`NatsServer::monitor`].
    pub fn start_monitored(config: Option<&Path>, env: &[(&str, &str)]) -> NatsServer {
        for _ in 0..5 {
            let port = cluster::free_ports(1)[0];
            let mut s = Self::unstarted(config, owned(env), vec!["-m".into(), port.to_string()], Some(port));
            if s.spawn_checked(None) {
                return s;
            }
        }
        panic!("nats-server with a monitoring port exited at start five times (ports taken?)");
    }

    fn unstarted(
        config: Option<&Path>,
        env: Vec<(String, String)>,
        extra_args: Vec<String>,
        monitor_port: Option<u16>,
    ) -> NatsServer {
        let dir = tempfile::Builder::new().prefix("nats-harness-").tempdir().expect("temp dir for nats-server");
        let config = config.map(Path::to_path_buf);
        NatsServer { child: None, port: 0, dir, config, env, extra_args, monitor_port }
    }

    /// `GET path` on the monitoring endpoint (e.g. `/varz`), when started with one.
    pub fn monitor(&self, path: &str) -> Option<serde_json::Value> {
        serde_json::from_str(&cluster::http_get(self.monitor_port?, path)?).ok()
    }

    /// Where this server keeps JetStream's files (`NODE_STORE_DIR` for a config file that
    /// names its store, `--store_dir` otherwise).
    pub fn store_dir(&self) -> PathBuf {
        self.dir.path().join("store")
    }

    /// Starts a server with a config file on a chosen port, with more command-line arguments;
    /// `env` sets the variables the file references. Returns `None` when the server exits at
    /// once (e.g. a port taken meanwhile).
    fn try_start_node(
        config: &Path,
        env: Vec<(String, String)>,
        port: u16,
        extra_args: Vec<String>,
    ) -> Option<NatsServer> {
        let mut s = Self::unstarted(Some(config), env, extra_args, None);
        s.spawn_checked(Some(port)).then_some(s)
    }

    fn spawn(&mut self, port: Option<u16>) {
        assert!(self.spawn_checked(port), "nats-server exited at start (port {port:?} taken?)");
    }

    /// Starts the process and waits until it listens; false when it exited before that.
    fn spawn_checked(&mut self, port: Option<u16>) -> bool {
        let ports_dir = self.dir.path().join("ports");
        let _ = std::fs::remove_dir_all(&ports_dir);
        std::fs::create_dir_all(&ports_dir).expect("ports dir");
        let port_arg = port.map_or("-1".to_string(), |p| p.to_string());
        let mut cmd = Command::new(binary());
        if let Some(c) = &self.config {
            cmd.arg("-c").arg(c);
        }
        cmd.envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .env("NODE_STORE_DIR", self.store_dir())
            .args(["-js", "-a", "127.0.0.1", "-p", &port_arg]);
        // The deploy configurations name their store (`store_dir: $NODE_STORE_DIR`), and
        // nats-server refuses it twice.
        if !self.config.as_deref().is_some_and(names_store_dir) {
            cmd.arg("--store_dir").arg(self.store_dir());
        }
        let child = cmd
            .arg("--ports_file_dir")
            .arg(&ports_dir)
            .args(&self.extra_args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start {:?}: {e}. Run `make nats-server` (installs the pinned nats-server into .tools/nats) or set NATS_SERVER_BIN",
                    binary()
                )
            });
        let pid = child.id();
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        self.port = loop {
            if let Some(p) = read_port(&ports_dir, pid) {
                break p;
            }
            if self.exited() {
                return false;
            }
            assert!(Instant::now() < deadline, "nats-server did not write its ports file within 20 s");
            std::thread::sleep(Duration::from_millis(10));
        };
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            if self.exited() {
                return false;
            }
            assert!(Instant::now() < deadline, "nats-server did not accept connections within 20 s");
            std::thread::sleep(Duration::from_millis(10));
        }
        true
    }

    fn exited(&mut self) -> bool {
        let gone = self.child.as_mut().is_none_or(|c| c.try_wait().ok().flatten().is_some());
        if gone {
            self.child = None;
        }
        gone
    }

    /// `nats://127.0.0.1:<port>`
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The server's process id while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Stops the server (SIGKILL) and keeps its store for [`NatsServer::restart`].
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Stops the server gracefully (SIGTERM, as an operator's restart does), so JetStream
    /// syncs what it acknowledged; keeps its store.
    pub fn terminate(&mut self) {
        if let Some(mut c) = self.child.take() {
            signal(c.id(), libc::SIGTERM);
            let _ = c.wait();
        }
    }

    /// Freezes the server (SIGSTOP) for `d`, then lets it go on (SIGCONT), from a thread of its
    /// own: a server that hangs while its clients keep their connections. Returns at once.
    pub fn pause_for(&self, d: Duration) -> std::thread::JoinHandle<()> {
        let pid = self.child.as_ref().expect("nats-server is running").id();
        signal(pid, libc::SIGSTOP);
        std::thread::spawn(move || {
            std::thread::sleep(d);
            signal(pid, libc::SIGCONT);
        })
    }

    /// Restarts gracefully on the same port with the same store.
    pub fn restart(&mut self) {
        self.terminate();
        self.start_again();
    }

    /// Kills the server (SIGKILL: acknowledged but unsynced messages may be lost) and starts
    /// it again on the same port with the same store.
    pub fn kill_and_restart(&mut self) {
        self.stop();
        self.start_again();
    }

    fn start_again(&mut self) {
        let port = self.port;
        let deadline = Instant::now() + Duration::from_secs(20);
        // The port may linger briefly after the kill.
        loop {
            if self.spawn_checked(Some(port)) {
                return;
            }
            assert!(Instant::now() < deadline, "nats-server could not restart on port {port}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

mod cluster;
pub use cluster::Cluster;

fn owned(env: &[(&str, &str)]) -> Vec<(String, String)> {
    env.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
}

/// Whether a configuration file sets `store_dir` itself.
fn names_store_dir(config: &Path) -> bool {
    std::fs::read_to_string(config).is_ok_and(|t| t.lines().any(|l| l.trim_start().starts_with("store_dir")))
}

fn read_port(dir: &Path, pid: u32) -> Option<u16> {
    for entry in std::fs::read_dir(dir).ok()? {
        let path = entry.ok()?.path();
        if !path.to_string_lossy().ends_with(&format!("_{pid}.ports")) {
            continue;
        }
        let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).ok()?).ok()?;
        let url = v.get("nats")?.get(0)?.as_str()?;
        return url.rsplit(':').next()?.parse().ok();
    }
    None
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Sends `sig` to the process `pid` (a child of this process); panics when that fails.
pub fn signal(pid: u32, sig: libc::c_int) {
    let pid = libc::pid_t::try_from(pid).expect("a process id");
    // SAFETY: a plain syscall with plain integer arguments.
    let rc = unsafe { libc::kill(pid, sig) };
    assert_eq!(rc, 0, "kill({pid}, {sig}): {}", std::io::Error::last_os_error());
}
