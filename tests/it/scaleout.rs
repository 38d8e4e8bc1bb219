//! Several lockoutd processes sharing the partitions (contract v2, "Several lockoutd
//! processes"), as child processes against a real nats-server.

use std::collections::{BTreeMap, BTreeSet};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, kv};
use futures::StreamExt;
use lockout_core::UserState;
use lockout_proto::codec;
use lockout_proto::partition::{self, Set};
use lockout_store::Store;
use nats_harness::NatsServer;
use serde_json::Value;

use crate::oracle;
use crate::support::{lockoutctl, lockoutd_binary};

/// The lease of these tests: short, so a killed process's partitions move within seconds.
const LEASE_SECONDS: u64 = 3;

/// One lockoutd child process with its own data dir.
struct Proc {
    instance: String,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl Proc {
    fn spawn(url: &str, instance: &str) -> Proc {
        Proc::spawn_in(url, instance, tempfile::tempdir().unwrap())
    }

    /// Starts it on the data dir `dir` (another run's, say).
    fn spawn_in(url: &str, instance: &str, dir: tempfile::TempDir) -> Proc {
        Proc::spawn_with(url, instance, dir, &[])
    }

    /// Starts it with more flags.
    fn spawn_with(url: &str, instance: &str, dir: tempfile::TempDir, extra: &[&str]) -> Proc {
        let child = Command::new(lockoutd_binary())
            .args(["--nats-url", url, "--instance", instance, "--lease-seconds", &LEASE_SECONDS.to_string()])
            .args(extra)
            .arg("--data-dir")
            .arg(dir.path().join("store"))
            .env("RUST_LOG", "warn,lockoutd::catchup=info")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("log")).unwrap())
            .spawn()
            .expect("spawning lockoutd");
        Proc { instance: instance.to_owned(), dir, child: Some(child) }
    }

    /// What it logged so far (warnings and errors).
    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("log")).unwrap_or_default()
    }

    fn signal(&self, sig: libc::c_int) {
        nats_harness::signal(self.child.as_ref().expect("running").id(), sig);
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill().unwrap();
            c.wait().unwrap();
        }
    }

    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            nats_harness::signal(c.id(), libc::SIGTERM);
            let status = c.wait().unwrap();
            assert!(status.success(), "lockoutd {} exited with {status}", self.instance);
        }
    }

    /// The digest of `tenant`'s users in the partitions this store holds (it must be stopped).
    fn digest(&self, tenant: &str) -> (u64, String) {
        let store = Store::open(&self.dir.path().join("store"), 16 << 20).unwrap();
        let set = store.partitions().unwrap().unwrap_or_else(|| Set::all(partition::DEFAULT));
        store.digest_of(tenant, |u| set.contains(partition::of_user(tenant, u, set.count()))).unwrap()
    }

    /// The user states of the partitions this store holds (it must be stopped).
    fn states(&self) -> BTreeMap<(String, String), UserState> {
        let store = Store::open(&self.dir.path().join("store"), 16 << 20).unwrap();
        let set = store.partitions().unwrap().unwrap_or_else(|| Set::all(partition::DEFAULT));
        store
            .all_users()
            .map(|r| r.unwrap())
            .filter(|(t, u, _)| set.contains(partition::of_user(t, u, set.count())))
            .map(|(t, u, s)| ((t, u), s))
            .collect()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Who holds each partition's lease now.
async fn holders(js: &jetstream::Context) -> BTreeMap<u32, String> {
    let Ok(bucket) = js.get_key_value("LOCKOUT_LEASES").await else { return BTreeMap::new() };
    let mut out = BTreeMap::new();
    for p in 0..partition::DEFAULT {
        if let Ok(Some(e)) = bucket.entry(format!("part.{p}")).await {
            if e.operation == kv::Operation::Put {
                let h: Value = serde_json::from_slice(&e.value).unwrap();
                out.insert(p, h["instance"].as_str().unwrap().to_owned());
            }
        }
    }
    out
}

/// Every process's `health` (from the replies to `$SRV.STATS.lockout`), by instance.
async fn healths(client: &async_nats::Client) -> BTreeMap<String, Value> {
    let inbox = client.new_inbox();
    let mut sub = client.subscribe(inbox.clone()).await.unwrap();
    client.publish_with_reply("$SRV.STATS.lockout", inbox, bytes::Bytes::new()).await.unwrap();
    let mut out = BTreeMap::new();
    while let Ok(Some(m)) = tokio::time::timeout(Duration::from_millis(300), sub.next()).await {
        let v: Value = serde_json::from_slice(&m.payload).unwrap_or_default();
        if let Some(h) = v["endpoints"].as_array().and_then(|e| e.first()).map(|e| e["data"].clone()) {
            if let Some(i) = h["instance"].as_str() {
                out.insert(i.to_owned(), h.clone());
            }
        }
    }
    out
}

/// A JSON request to `lockout.svc.<tenant>.<op>`; panics on an error reply.
async fn call(client: &async_nats::Client, tenant: &str, op: &str, body: Value) -> Value {
    let mut h = async_nats::HeaderMap::new();
    h.insert(codec::CONTENT_TYPE, codec::JSON);
    let r = client
        .request_with_headers(format!("lockout.svc.{tenant}.{op}"), h, serde_json::to_vec(&body).unwrap().into())
        .await
        .unwrap();
    if let Some(code) = r.headers.as_ref().and_then(|h| h.get(codec::SERVICE_ERROR_CODE)) {
        panic!("{op} for {tenant}: {code} {:?}", r.headers.as_ref().unwrap().get(codec::SERVICE_ERROR));
    }
    serde_json::from_slice(&r.payload).unwrap()
}

/// Polls `f` every 50 ms until it holds, or panics after `secs`.
async fn until<F: std::future::Future<Output = bool>>(secs: u64, what: &str, mut f: impl FnMut() -> F) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !f().await {
        assert!(Instant::now() < deadline, "{what}: not within {secs} s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Each partition held by exactly one of `live`, every one of them holding some, and each of
/// them reporting in `health` the partitions it holds, folded up to the stream's last event.
async fn settled(js: &jetstream::Context, client: &async_nats::Client, live: &[&str]) -> bool {
    let held = holders(js).await;
    let owners: BTreeSet<&str> = held.values().map(String::as_str).collect();
    if held.len() != partition::DEFAULT as usize || owners != live.iter().copied().collect() {
        return false;
    }
    let last = js.get_stream("LOCKOUT_EVENTS").await.unwrap().get_info().await.unwrap().state.last_sequence;
    let health = healths(client).await;
    live.iter().all(|i| {
        let Some(h) = health.get(*i) else { return false };
        let reported: BTreeSet<u32> =
            h["partitions"].as_array().unwrap().iter().map(|p| p.as_u64().unwrap() as u32).collect();
        let leased: BTreeSet<u32> = held.iter().filter(|(_, o)| o == i).map(|(p, _)| *p).collect();
        reported == leased && h["seq"].as_u64() == Some(last)
    })
}

/// After a run: the stopped stores of `live`, each restricted to the partitions it holds,
/// hold every user once and together equal the fold of every event; `LOCKOUT_NOTICES` holds
/// every notice the fold implies, once. Returns how many notices that is.
async fn assert_nothing_lost(js: &jetstream::Context, live: &[&Proc]) -> usize {
    let (want, want_notices) = oracle::expected_from(js).await;
    let mut got = BTreeMap::new();
    for p in live {
        let states = p.states();
        assert!(states.keys().all(|k| !got.contains_key(k)), "no user is held twice");
        got.extend(states);
    }
    if got != want {
        let differ: Vec<_> = want.iter().filter(|(k, v)| got.get(*k) != Some(*v)).map(|(k, _)| k).take(5).collect();
        for p in live {
            eprintln!("--- {}:\n{}", p.instance, p.log());
        }
        for k in &differ {
            eprintln!("{k:?}\n  want {:?}\n  got  {:?}", want.get(*k), got.get(*k));
        }
    }
    assert_eq!(got.len(), want.len(), "users with a state");
    assert!(got == want, "every user's state equals the fold of all events");
    let notices = js.get_stream("LOCKOUT_NOTICES").await.unwrap().get_info().await.unwrap().state.messages;
    assert_eq!(notices as usize, want_notices, "every notice exactly once");
    want_notices
}

/// Three processes share the 64 partitions; one is killed with SIGKILL half-way through a
/// load and the two others take its partitions over (catching them up from the stream):
/// every user's state, in the store of the process that holds its partition, equals the fold
/// of every event, and every notice the fold implies is in `LOCKOUT_NOTICES` exactly once.
#[tokio::test]
async fn three_processes_share_the_partitions_and_a_kill_loses_nothing() {
    let server = NatsServer::start();
    let client = async_nats::connect(server.url()).await.unwrap();
    let js = jetstream::new(client.clone());
    let mut procs: Vec<Proc> = ["a", "b", "c"].iter().map(|i| Proc::spawn(&server.url(), i)).collect();
    until(30, "three processes share the partitions", || settled(&js, &client, &["a", "b", "c"])).await;
    let held = holders(&js).await;
    let split: Vec<usize> = ["a", "b", "c"].iter().map(|i| held.values().filter(|o| o == i).count()).collect();
    assert!(split.iter().all(|n| *n >= 10), "each process holds a share: {split:?}");

    let events = oracle::load(6_000, 400);
    oracle::publish(&js, &events[..3_000]).await;
    procs[1].kill();
    oracle::publish(&js, &events[3_000..]).await;
    until(60, "a and c hold every partition, folded to the end", || settled(&js, &client, &["a", "c"])).await;

    // Any process answers for any user: a request that reaches the other one is forwarded.
    let (want, _) = oracle::expected_from(&js).await;
    for ((tenant, user), state) in want.iter().take(60) {
        let s = call(&client, tenant, "status", serde_json::json!({ "user": user })).await;
        assert_eq!(s["locked"].as_bool(), Some(state.is_locked()), "{tenant}/{user}: {s}");
        assert_eq!(s["failures"].as_u64(), Some(u64::from(state.failures())), "{tenant}/{user}: {s}");
    }
    let locked: Vec<&(String, String)> = want.iter().filter(|(_, s)| s.is_locked()).map(|(k, _)| k).take(10).collect();
    assert_eq!(locked.len(), 10, "the load locks users");
    for (tenant, user) in &locked {
        let r = call(&client, tenant, "unlock", serde_json::json!({ "user": user, "actor": "help" })).await;
        assert_eq!(r["locked"].as_bool(), Some(false), "unlocked through any process: {r}");
        let s = call(&client, tenant, "status", serde_json::json!({ "user": user })).await;
        assert_eq!((s["locked"].as_bool(), s["unlocked_by"].as_str()), (Some(false), Some("help")));
    }
    // `unlock_many` selects across every partition, whichever process is asked.
    let (now, _) = oracle::expected_from(&js).await;
    let still: BTreeSet<(String, String)> =
        now.iter().filter(|((t, _), s)| t == "acme" && s.is_locked()).map(|(k, _)| k.clone()).collect();
    let body = |dry: bool, after: Option<String>| serde_json::json!({ "actor": "sec", "since": 1, "ips": ["198.51.100.0/24"], "dry_run": dry, "limit": 9, "after": after });
    assert!(still.len() > 9, "more locked users than a page: {}", still.len());
    let dry = call(&client, "acme", "unlock_many", body(true, None)).await;
    assert_eq!(dry["unlocked"].as_u64(), Some(9.min(still.len() as u64)), "a dry page: {dry}");
    let (mut unlocked, mut after) = (BTreeSet::new(), None);
    loop {
        let r = call(&client, "acme", "unlock_many", body(false, after.clone())).await;
        unlocked
            .extend(r["users"].as_array().unwrap().iter().map(|u| ("acme".to_owned(), u.as_str().unwrap().to_owned())));
        match r["next"].as_str() {
            Some(n) => after = Some(n.to_owned()),
            None => break,
        }
    }
    assert_eq!(unlocked, still, "every user locked from those IPs is unlocked, once");
    for (tenant, user) in unlocked.iter().take(20) {
        let s = call(&client, tenant, "status", serde_json::json!({ "user": user })).await;
        assert_eq!(s["locked"].as_bool(), Some(false), "{user} unlocked and folded by its owner: {s}");
    }
    let (want, want_notices) = oracle::expected_from(&js).await;
    // `locked` and `digest` cover every partition, whichever process is asked.
    let mut digests = BTreeMap::new();
    for tenant in ["acme", "globex"] {
        let d = call(&client, tenant, "digest", serde_json::json!({})).await;
        let users = want.keys().filter(|(t, _)| t == tenant).count() as u64;
        assert_eq!(d["users"].as_u64(), Some(users), "{tenant}: {d}");
        digests.insert(tenant, d["digest"].as_str().unwrap().to_owned());
        let (mut listed, mut after) = (Vec::new(), None::<String>);
        loop {
            let page = call(&client, tenant, "locked", serde_json::json!({ "limit": 7, "after": after })).await;
            listed.extend(page["users"].as_array().unwrap().iter().map(|s| s["user"].as_str().unwrap().to_owned()));
            match page["next"].as_str() {
                Some(n) => after = Some(n.to_owned()),
                None => break,
            }
        }
        let mut locked: Vec<String> =
            want.iter().filter(|((t, _), s)| t == tenant && s.is_locked()).map(|((_, u), _)| u.clone()).collect();
        locked.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
        assert_eq!(listed, locked, "{tenant}: every locked user once, in byte order, across pages");
    }
    // lockoutctl works unchanged against several processes: `verify` compares the history
    // with the gathered digest of every tenant.
    let url = server.url();
    let (code, out, err) = lockoutctl(&url, &["verify"]).await;
    assert_eq!(code, 0, "lockoutctl verify against two processes:\n{out}{err}");
    for tenant in digests.keys() {
        assert!(out.contains(&format!("tenant {tenant}: equal at seq")), "{out}");
    }
    // … and `replay` rebuilds, from the history alone, what both processes hold together.
    let rebuilt = tempfile::tempdir().unwrap();
    let data = rebuilt.path().join("store");
    let (code, _, err) = lockoutctl(&url, &["--json", "replay", "--data-dir", data.to_str().unwrap()]).await;
    assert_eq!(code, 0, "lockoutctl replay: {err}");
    let store = Store::open(&data, 1 << 20).unwrap();
    for (tenant, d) in &digests {
        assert_eq!(&store.digest(tenant).unwrap().1, d, "{tenant}: the replay's digest is the gathered one");
    }
    drop(store);
    procs[0].stop();
    procs[2].stop();
    for (tenant, d) in &digests {
        let (a, c) = (procs[0].digest(tenant), procs[2].digest(tenant));
        let both = lockout_store::xor_digests([a.1.as_str(), c.1.as_str()]).unwrap();
        assert_eq!(&both, d, "{tenant}: the digest answered is both stores' together");
    }
    let notices = assert_nothing_lost(&js, &[&procs[0], &procs[2]]).await;
    assert_eq!(notices, want_notices);
    assert!(notices > 100, "the load locks users: {notices} notices");
}

/// A process paused (SIGSTOP) longer than its lease, with events of its partitions delivered
/// to it meanwhile, wakes to find its partitions taken over: its fence refuses to commit or
/// publish what it folded for them (it says so in its log), and nothing is lost or doubled:
/// every state equals the fold of all events, every notice is in the stream once.
#[tokio::test]
async fn a_process_paused_past_its_lease_commits_and_publishes_nothing_for_lost_partitions() {
    let server = NatsServer::start();
    let client = async_nats::connect(server.url()).await.unwrap();
    let js = jetstream::new(client.clone());
    let mut procs: Vec<Proc> = ["a", "b", "c"].iter().map(|i| Proc::spawn(&server.url(), i)).collect();
    until(30, "three processes share the partitions", || settled(&js, &client, &["a", "b", "c"])).await;
    let b_parts: BTreeSet<u32> = holders(&js).await.into_iter().filter(|(_, o)| o == "b").map(|(p, _)| p).collect();
    // Failures of b's users only: b holds (delivered, not yet folded) work when it wakes.
    let of_b = |a: &lockout_proto::event::Attempt| {
        b_parts.contains(&partition::of_user(&a.tenant, &a.user, partition::DEFAULT))
    };
    let events: Vec<_> = oracle::load(8_000, 400).into_iter().filter(|a| of_b(a)).collect();
    let (before, during) = events.split_at(events.len() / 3);
    oracle::publish(&js, before).await;
    until(30, "b folded its events", || settled(&js, &client, &["a", "b", "c"])).await;
    procs[1].signal(libc::SIGSTOP);
    // a and c take b's partitions once its leases run out; b's pull keeps receiving.
    oracle::publish(&js, &during[..during.len() / 2]).await;
    until(30, "a and c hold every partition", || async {
        let owners: BTreeSet<String> = holders(&js).await.into_values().collect();
        owners == ["a", "c"].iter().map(|s| s.to_string()).collect()
    })
    .await;
    oracle::publish(&js, &during[during.len() / 2..]).await;
    procs[1].signal(libc::SIGCONT);
    until(30, "b refuses its stale work", || async { procs[1].log().contains("A partition lease was lost") }).await;
    until(60, "the three share the partitions again, folded to the end", || settled(&js, &client, &["a", "b", "c"]))
        .await;
    for p in &mut procs {
        p.stop();
    }
    let notices = assert_nothing_lost(&js, &[&procs[0], &procs[1], &procs[2]]).await;
    assert!(notices > 20, "b's users are locked: {notices} notices");
}

/// Under load a process joins (it takes a share, caught up from the stream) and another
/// leaves gracefully (its partitions are handed over at once): nothing is lost or doubled.
#[tokio::test]
async fn a_process_joins_and_another_leaves_under_load_losing_nothing() {
    let server = NatsServer::start();
    let client = async_nats::connect(server.url()).await.unwrap();
    let js = jetstream::new(client.clone());
    let mut procs: Vec<Proc> = ["a", "b"].iter().map(|i| Proc::spawn(&server.url(), i)).collect();
    until(30, "a and b share the partitions", || settled(&js, &client, &["a", "b"])).await;
    let events = oracle::load(6_000, 400);
    oracle::publish(&js, &events[..2_000]).await;
    procs.push(Proc::spawn(&server.url(), "c"));
    oracle::publish(&js, &events[2_000..4_000]).await;
    until(30, "c joined", || settled(&js, &client, &["a", "b", "c"])).await;
    procs[0].stop();
    // A graceful stop hands the leases back before the process exits: none waits to run out.
    assert!(holders(&js).await.values().all(|o| o != "a"), "a released every lease as it left");
    oracle::publish(&js, &events[4_000..]).await;
    until(30, "b and c hold every partition, folded to the end", || settled(&js, &client, &["b", "c"])).await;
    procs[1].stop();
    procs[2].stop();
    assert_nothing_lost(&js, &[&procs[1], &procs[2]]).await;
}

/// The upgrade procedure of the README: a store and stream written by one process alone
/// (with the default flags, as before scale-out) are taken over by that process, restarted,
/// and a new one: the new one catches its share up from the stream, nothing is lost or sent
/// twice, and the contract's consumer `lockoutd` is still the one reading partition 0.
#[tokio::test]
async fn one_process_s_store_is_taken_over_by_two_losing_nothing() {
    let server = NatsServer::start();
    let client = async_nats::connect(server.url()).await.unwrap();
    let js = jetstream::new(client.clone());
    let mut alone = Proc::spawn(&server.url(), "a");
    until(30, "a holds every partition", || settled(&js, &client, &["a"])).await;
    let events = oracle::load(4_000, 300);
    oracle::publish(&js, &events[..2_000]).await;
    until(30, "a folded everything", || settled(&js, &client, &["a"])).await;
    alone.stop();
    let dir = std::mem::replace(&mut alone.dir, tempfile::tempdir().unwrap());
    let mut procs = vec![Proc::spawn_in(&server.url(), "a", dir), Proc::spawn(&server.url(), "b")];
    oracle::publish(&js, &events[2_000..]).await;
    until(30, "a and b share the partitions, folded to the end", || settled(&js, &client, &["a", "b"])).await;
    let holder_of_0 = holders(&js).await[&0].clone();
    let stream = js.get_stream("LOCKOUT_EVENTS").await.unwrap();
    let consumer: jetstream::consumer::PullConsumer = stream.get_consumer("lockoutd").await.unwrap();
    assert!(consumer.cached_info().num_pending == 0, "the consumer `lockoutd` is {holder_of_0}'s and current");
    for p in &mut procs {
        p.stop();
    }
    assert!(!procs[1].states().is_empty(), "b holds a share");
    assert_nothing_lost(&js, &[&procs[0], &procs[1]]).await;
}

/// Contract v2's "losing one of three nats-server nodes or any one lockoutd process under load
/// loses nothing", on the deploy template's 3-node cluster with `--replicas 3`: three
/// processes fold a load while the node leading `LOCKOUT_EVENTS` is stopped, one process is
/// killed with SIGKILL, and the node comes back; the two left hold every partition, every
/// state equals the fold of all events and every notice is in the stream once.
#[tokio::test]
async fn three_processes_on_three_nodes_lose_nothing_when_a_node_and_a_process_die() {
    let mut cluster = nats_harness::Cluster::start(3);
    let url = cluster.url_list();
    let client =
        async_nats::ConnectOptions::new().retry_on_initial_connect().connect(cluster.urls().as_slice()).await.unwrap();
    let js = jetstream::new(client.clone());
    let mut procs: Vec<Proc> = ["a", "b", "c"]
        .iter()
        .map(|i| Proc::spawn_with(&url, i, tempfile::tempdir().unwrap(), &["--replicas", "3"]))
        .collect();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !settled(&js, &client, &["a", "b", "c"]).await {
        if Instant::now() > deadline {
            for p in &procs {
                eprintln!("--- {}:\n{}", p.instance, p.log());
            }
            eprintln!("holders {:?}\nhealths {:?}", holders(&js).await, healths(&client).await);
            panic!("three processes share the partitions: not within 60 s");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let events = oracle::load(6_000, 300);
    oracle::publish(&js, &events[..2_000]).await;
    let leader = cluster.stream_leader("LOCKOUT_EVENTS").expect("the events stream has a leader");
    cluster.node(leader).stop();
    oracle::publish(&js, &events[2_000..4_000]).await;
    procs[1].kill();
    oracle::publish(&js, &events[4_000..5_000]).await;
    cluster.node(leader).kill_and_restart();
    oracle::publish(&js, &events[5_000..]).await;
    cluster.wait_healthy(Duration::from_secs(60));
    until(90, "a and c hold every partition, folded to the end", || settled(&js, &client, &["a", "c"])).await;
    procs[0].stop();
    procs[2].stop();
    assert_nothing_lost(&js, &[&procs[0], &procs[2]]).await;
}
