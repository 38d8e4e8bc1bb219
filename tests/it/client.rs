//! The client crate (`lockout-client`) and its examples against the real service: a gateway
//! checks and records, a notifier gets each notice once across a kill, admin writes are
//! retried through an outage, and the README's plain-NATS Python gateway runs.

use std::collections::BTreeMap;
use std::io::{BufRead as _, BufReader, Write as _};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use lockout_client::lockout_proto::command::{LockRequest, UnlockRequest};
use lockout_client::lockout_proto::event::{Attempt, Outcome};
use lockout_client::lockout_proto::status::BlockedBy;
use lockout_client::lockout_proto::Notice;
use lockout_client::{Admin, Client, Error, FailMode, Gateway, GatewayConfig, Login, Notices, NoticesConfig};

use crate::support::{lockoutd_binary, Lockout};

/// A binary of the workspace's examples (`cargo build --examples`; `make test` builds them).
fn example(name: &str) -> PathBuf {
    let dir = lockoutd_binary().parent().unwrap().join("examples");
    let bin = dir.join(name);
    assert!(bin.exists(), "{} is missing: run `cargo build --workspace --examples` (make test does)", bin.display());
    bin
}

/// The events of `LOCKOUT_EVENTS` that are attempts of `user`, with their `Nats-Msg-Id`.
async fn attempts_of(l: &Lockout, user: &str) -> Vec<(Attempt, String)> {
    let mut out = Vec::new();
    for m in l.stream_messages("LOCKOUT_EVENTS").await {
        if !m.subject.ends_with(".attempt") {
            continue;
        }
        let Ok(a) = serde_json::from_slice::<Attempt>(&m.payload) else { continue };
        if a.user == user {
            let id = m.headers.get("Nats-Msg-Id").map(|v| v.to_string()).unwrap_or_default();
            out.push((a, id));
        }
    }
    out
}

/// Polls `f` every 20 ms until it holds, or panics after `secs`.
async fn until<F: std::future::Future<Output = bool>>(secs: u64, what: &str, mut f: impl FnMut() -> F) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !f().await {
        assert!(Instant::now() < deadline, "{what}: not within {secs} s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_gateway_checks_records_and_is_refused_once_the_account_locks() {
    let l = Lockout::start().await;
    let gateway = Gateway::new(&Client::new(l.client.clone()), GatewayConfig::default());
    let login = Login::password("acme", "alice@example.com", "203.0.113.9").with_client("portal");
    for _ in 0..5 {
        let d = gateway.check(&login).await.unwrap();
        assert!(d.allowed && !d.fallback, "{d:?}");
        gateway.record(&login, false).unwrap();
    }
    gateway.flush().await;
    assert_eq!(gateway.queued(), 0);
    until(10, "alice locked", || async { l.status("acme", "alice@example.com").await["locked"] == true }).await;
    let refused = gateway.check(&login).await.unwrap();
    assert!(!refused.allowed && !refused.fallback);
    assert_eq!(refused.blocked_by, Some(BlockedBy::Account));
    assert!(refused.status.as_ref().is_some_and(|s| s.locked));
    gateway.flush().await;
    let recorded = attempts_of(&l, "alice@example.com").await;
    let outcomes: Vec<Outcome> = recorded.iter().map(|(a, _)| a.outcome).collect();
    assert_eq!(outcomes, [[Outcome::Failure; 5].as_slice(), &[Outcome::Rejected]].concat());
    for (a, msg_id) in &recorded {
        assert_eq!(msg_id, &a.id.to_string(), "each attempt is published with Nats-Msg-Id = its id");
        assert_eq!(a.client.as_deref(), Some("portal"));
    }
    // Bad input is refused before anything is sent.
    let bad = Login::password("acme", "", "203.0.113.9");
    assert!(matches!(gateway.check(&bad).await, Err(Error::Invalid(_))));
    assert!(matches!(gateway.record(&bad, true), Err(Error::Invalid(_))));
}

/// With no service the check falls back to the fail mode (counted); with no stream to take
/// them, attempts wait in the bounded queue (one too many is refused) and are published once
/// each when the service comes.
#[tokio::test]
async fn without_the_service_checks_fall_back_and_attempts_wait_in_a_bounded_queue() {
    let mut l = Lockout::start().await;
    l.stop_daemon().await.unwrap();
    for name in ["LOCKOUT_EVENTS", "LOCKOUT_NOTICES", "LOCKOUT_DEAD"] {
        l.js.delete_stream(name).await.unwrap();
    }
    let client = Client::new(l.client.clone());
    let config = GatewayConfig { deadline: Duration::from_millis(100), queue_capacity: 3, ..Default::default() };
    let open = Gateway::new(&client, config);
    let closed = Gateway::new(&client, GatewayConfig { on_timeout: FailMode::Closed, ..config });
    let login = Login::password("acme", "bob", "192.0.2.1");
    let d = open.check(&login).await.unwrap();
    assert!(d.allowed && d.fallback && d.status.is_none(), "{d:?}");
    let d = closed.check(&login).await.unwrap();
    assert!(!d.allowed && d.fallback, "{d:?}");
    assert_eq!((open.fallbacks(), closed.fallbacks()), (1, 1));

    let ids: Vec<_> = (0..3).map(|_| open.record(&login, false).unwrap()).collect();
    assert_eq!(open.record(&login, true), Err(Error::QueueFull { capacity: 3 }));
    assert_eq!((open.queued(), open.dropped()), (3, 1));
    l.start_daemon().await; // creates the streams again
    tokio::time::timeout(Duration::from_secs(30), open.flush()).await.expect("flushed once the stream exists");
    let recorded: Vec<String> = attempts_of(&l, "bob").await.into_iter().map(|(a, _)| a.id.to_string()).collect();
    assert_eq!(recorded, ids.iter().map(ToString::to_string).collect::<Vec<_>>(), "each once, in order");
}

#[tokio::test]
async fn admin_ops_are_typed_and_a_write_is_retried_through_an_outage_once() {
    let mut l = Lockout::start().await;
    let admin = Admin::new(&Client::new(l.client.clone()).with_timeout(Duration::from_secs(2)));
    let lock =
        LockRequest { user: "carol".into(), actor: "soc:kim".into(), reason: Some("phished".into()), seconds: None };
    let locked = admin.lock("acme", &lock).await.unwrap();
    assert!(locked.locked);
    let page = admin.locked("acme", None, None).await.unwrap();
    assert_eq!(page.users.iter().map(|s| s.user.as_str()).collect::<Vec<_>>(), ["carol"]);
    assert_eq!(admin.all_locked("acme").await.unwrap().len(), 1);
    assert!(admin.explain("acme", "carol").await.unwrap().status.locked);
    assert_eq!(admin.policy_get("acme").await.unwrap().max_failures, 5);
    assert_eq!(admin.digest("acme").await.unwrap().users, 1);
    assert!(!admin.ip_status("acme", "192.0.2.1").await.unwrap().blocked);
    let wrong = UnlockRequest {
        user: "carol".into(),
        actor: "help".into(),
        reason: None,
        lock_event: Some(uuid::Uuid::now_v7()),
    };
    assert!(matches!(admin.unlock("acme", &wrong).await, Err(Error::Service { code: 409, .. })), "a stale lock_event");

    // The service goes away; the unlock is sent meanwhile and lands once it is back.
    l.stop_daemon().await.unwrap();
    let unlock =
        UnlockRequest { user: "carol".into(), actor: "help".into(), reason: None, lock_event: Some(locked.event_id) };
    let pending = tokio::spawn({
        let admin = admin.clone();
        async move { admin.unlock("acme", &unlock).await }
    });
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert!(!pending.is_finished(), "the write waits for the service");
    l.start_daemon().await;
    let reply = pending.await.unwrap().expect("the write succeeds once the service is back");
    assert!(!reply.locked);
    let unlocks =
        l.stream_messages("LOCKOUT_EVENTS").await.into_iter().filter(|m| m.subject.ends_with(".unlock")).count();
    assert_eq!(unlocks, 1, "one unlock event, whatever the retries");
}

/// The gateway example: wrong passwords lock the account, the right one is then refused.
#[tokio::test]
async fn the_gateway_example_checks_verifies_and_records() {
    let l = Lockout::start().await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("passwords"), "dave:s3cret\n").unwrap();
    let mut child = Command::new(example("gateway"))
        .args(["acme"])
        .arg(dir.path().join("passwords"))
        .env("NATS_URL", l.nats.url())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let mut answers = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut ask = |line: &str| {
        writeln!(stdin, "{line}").unwrap();
        answers.next().unwrap().unwrap()
    };
    assert_eq!(ask("dave s3cret 198.51.100.4"), "ok");
    for _ in 0..5 {
        assert_eq!(ask("dave guess 198.51.100.4"), "wrong password");
    }
    until(10, "dave locked", || async { l.status("acme", "dave").await["locked"] == true }).await;
    assert_eq!(ask("dave s3cret 198.51.100.4"), "refused: account");
    drop(stdin);
    assert!(child.wait().unwrap().success());
    let outcomes: Vec<Outcome> = attempts_of(&l, "dave").await.into_iter().map(|(a, _)| a.outcome).collect();
    assert_eq!(outcomes, [&[Outcome::Success][..], &[Outcome::Failure; 5], &[Outcome::Rejected]].concat());
}

/// Lines a child writes to one of its pipes, gathered by a thread.
fn gather(pipe: impl std::io::Read + Send + 'static) -> Arc<Mutex<Vec<String>>> {
    let lines = Arc::new(Mutex::new(Vec::new()));
    let out = lines.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(pipe).lines().map_while(Result::ok) {
            out.lock().unwrap().push(line);
        }
    });
    lines
}

struct Notifier {
    child: Child,
    mails: Arc<Mutex<Vec<String>>>,
    sending: Arc<Mutex<Vec<String>>>,
}

impl Notifier {
    fn spawn(url: &str, handled: &std::path::Path) -> Notifier {
        let mut child = Command::new(example("notifier"))
            .args(["mailer"])
            .arg(handled)
            .args(["300", "2"])
            .env("NATS_URL", url)
            .env("RUST_LOG", "off")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mails = gather(child.stdout.take().unwrap());
        let sending = gather(child.stderr.take().unwrap());
        Notifier { child, mails, sending }
    }

    /// The Message-IDs of the e-mails it printed whole (up to the closing `.`).
    fn sent(&self) -> Vec<String> {
        let lines = self.mails.lock().unwrap().clone();
        let mut sent = Vec::new();
        let mut current = None;
        for line in lines {
            if let Some(id) = line.strip_prefix("Message-ID: <").and_then(|s| s.strip_suffix("@lockout>")) {
                current = Some(id.to_owned());
            } else if line == "." {
                sent.extend(current.take());
            }
        }
        sent
    }
}

impl Drop for Notifier {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The notifier example is killed in the middle of sending one e-mail; restarted on the same
/// record, it sends that one and the rest: every `locked` notice's e-mail exactly once.
#[tokio::test]
async fn the_notifier_example_sends_each_notice_once_across_a_kill() {
    let l = Lockout::start().await;
    let users = ["u1", "u2", "u3", "u4", "u5"];
    for u in users {
        for _ in 0..5 {
            l.attempt("acme", u, Outcome::Failure, "192.0.2.8", None).await;
        }
    }
    let want: Vec<String> = {
        let notices = l.wait_notices(users.len()).await;
        notices.iter().filter(|(n, _)| n.kind() == "locked").map(|(n, _)| n.id().to_string()).collect()
    };
    assert_eq!(want.len(), users.len());
    let handled = tempfile::tempdir().unwrap();
    let first = Notifier::spawn(&l.nats.url(), handled.path());
    until(20, "two e-mails sent and a third being sent", || async {
        first.sent().len() >= 2 && first.sending.lock().unwrap().len() > first.sent().len()
    })
    .await;
    let mut first = first;
    first.child.kill().unwrap(); // in the middle of a 300 ms send
    first.child.wait().unwrap();
    let before = first.sent();
    assert!(before.len() < users.len(), "killed before the end: {before:?}");
    let second = Notifier::spawn(&l.nats.url(), handled.path());
    until(30, "every e-mail sent", || async { before.len() + second.sent().len() >= users.len() }).await;
    // A moment for a duplicate to show, were there one.
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    let mut all: Vec<String> = before.iter().chain(second.sent().iter()).cloned().collect();
    all.sort();
    let mut want = want;
    want.sort();
    assert_eq!(all, want, "each locked notice's e-mail exactly once");
}

/// `Notices` skips what its record says was handled, and a handler's error has the notice
/// come again.
#[tokio::test]
async fn notices_skip_what_was_handled_and_retry_what_failed() {
    let l = Lockout::start().await;
    for u in ["v1", "v2"] {
        for _ in 0..5 {
            l.attempt("acme", u, Outcome::Failure, "192.0.2.9", None).await;
        }
    }
    l.wait_notices(2).await;
    let client = Client::new(l.client.clone());
    let dir = tempfile::tempdir().unwrap();
    let config = |durable: &str| {
        let mut c = NoticesConfig::new(durable, dir.path().join("handled")).tenant("acme").kind("locked");
        c.from_start = true;
        c.retry_after = Duration::from_millis(200);
        c
    };
    // The first consumer: v1's handler fails once.
    let calls: Arc<Mutex<BTreeMap<String, u32>>> = Arc::default();
    {
        let notices = Notices::new(&client, config("first")).await.unwrap();
        let calls = calls.clone();
        let stop = {
            let calls = calls.clone();
            async move {
                while calls.lock().unwrap().values().sum::<u32>() < 3 {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        };
        let handler = move |n: Notice| {
            let calls = calls.clone();
            async move {
                let Notice::Locked(n) = n else { return Err("not a lock".to_owned()) };
                let mut c = calls.lock().unwrap();
                let count = c.entry(n.user.to_string()).or_default();
                *count += 1;
                if n.user == "v1" && *count == 1 {
                    return Err("the mail server is away".to_owned());
                }
                Ok(())
            }
        };
        tokio::time::timeout(Duration::from_secs(20), notices.run_until(handler, stop)).await.unwrap().unwrap();
        assert_eq!(notices.handled().len(), 2);
    }
    assert_eq!(calls.lock().unwrap().clone(), BTreeMap::from([("v1".into(), 2), ("v2".into(), 1)]));

    // A second consumer from the start on the same record: both delivered, both skipped.
    let notices = Notices::new(&client, config("second")).await.unwrap();
    let called = Arc::new(Mutex::new(0u32));
    let handler = {
        let called = called.clone();
        move |_n: Notice| {
            let called = called.clone();
            async move {
                *called.lock().unwrap() += 1;
                Ok::<(), String>(())
            }
        }
    };
    let stop = tokio::time::sleep(Duration::from_secs(2));
    notices.run_until(handler, stop).await.unwrap();
    assert_eq!(*called.lock().unwrap(), 0, "handled notices are skipped");
    let info = l.js.get_stream("LOCKOUT_NOTICES").await.unwrap().consumer_info("second").await.unwrap();
    assert_eq!((info.num_ack_pending, info.num_pending), (0, 0), "and acknowledged");
    assert!(matches!(
        Notices::new(&client, NoticesConfig::new("x", dir.path().join("other")).kind("lockd")).await,
        Err(Error::Invalid(_))
    ));
}

/// The README's plain-NATS gateway (Python, nats-py): its status request and its attempt.
#[tokio::test]
async fn the_readmes_python_gateway_runs() {
    let l = Lockout::start().await;
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    let start = readme.find("<!-- gateway.py -->").expect("the README marks its Python gateway");
    let code = readme[start..].split("```python\n").nth(1).and_then(|s| s.split("\n```").next()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("gateway.py"), code).unwrap();
    let python_deps = root.join(".tools/python");
    assert!(python_deps.exists(), "{} is missing: run `make python-deps` (make test does)", python_deps.display());
    let out = tokio::task::spawn_blocking({
        let (url, script) = (l.nats.url(), dir.path().join("gateway.py"));
        move || {
            Command::new("python3").arg(script).env("NATS_URL", url).env("PYTHONPATH", python_deps).output().unwrap()
        }
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "python: {}{}", stdout, String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("allowed: True"), "{stdout}");
    let recorded = attempts_of(&l, "erin@example.com").await;
    assert_eq!(recorded.len(), 1, "{stdout}");
    assert_eq!(recorded[0].0.outcome, Outcome::Failure);
    assert_eq!(recorded[0].1, recorded[0].0.id.to_string());
}
