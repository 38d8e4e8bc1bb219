//! `deploy/nats/lockout.conf` against a real nats-server with TLS (certificates generated
//! here with rcgen): every role can do its job and nothing else, and lockoutd runs over TLS
//! with its own credentials.

use std::path::{Path, PathBuf};
use std::time::Duration;

use async_nats::jetstream;
use futures::StreamExt as _;
use lockout_proto::codec::{self, Encoding};
use lockout_proto::event::{Attempt, Outcome};
use lockout_proto::notice::How;
use lockout_proto::Notice;
use nats_harness::NatsServer;
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
use serde_json::json;
use uuid::Uuid;

use crate::support::{attempt_body, next_notice, Lockout};

struct Pki {
    ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
}

fn pki(dir: &Path) -> Pki {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
        .unwrap()
        .signed_by(&key, &issuer)
        .unwrap();
    // The clients' certificate (the deploy configuration wants mutual TLS), beside the CA.
    let client_key = KeyPair::generate().unwrap();
    let client = CertificateParams::new(Vec::<String>::new()).unwrap().signed_by(&client_key, &issuer).unwrap();
    let p = Pki { ca: dir.join("ca.pem"), cert: dir.join("server.pem"), key: dir.join("server-key.pem") };
    std::fs::write(&p.ca, ca_cert.pem()).unwrap();
    std::fs::write(&p.cert, cert.pem()).unwrap();
    std::fs::write(&p.key, key.serialize_pem()).unwrap();
    let (client_pem, client_key_pem) = client_cert(&p.ca);
    std::fs::write(client_pem, client.pem()).unwrap();
    std::fs::write(client_key_pem, client_key.serialize_pem()).unwrap();
    p
}

/// The client certificate and key [`pki`] writes beside the CA `ca`.
fn client_cert(ca: &Path) -> (PathBuf, PathBuf) {
    (ca.with_file_name("client.pem"), ca.with_file_name("client-key.pem"))
}

fn config_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/nats/lockout.conf")
}

/// Connects as `user` with its own inbox prefix (`_INBOX_<user>`), as the deploy config wants.
async fn connect_as(url: &str, user: &str, password: &str, ca: &Path) -> Result<async_nats::Client, String> {
    connect_with_inbox(url, user, password, ca, &format!("_INBOX_{user}")).await
}

async fn connect_with_inbox(
    url: &str,
    user: &str,
    password: &str,
    ca: &Path,
    inbox: &str,
) -> Result<async_nats::Client, String> {
    let (cert, key) = client_cert(ca);
    async_nats::ConnectOptions::with_user_and_password(user.into(), password.into())
        .custom_inbox_prefix(inbox)
        .add_root_certificates(ca.to_path_buf())
        .add_client_certificate(cert, key)
        .require_tls(true)
        .connect(url)
        .await
        .map_err(|e| e.to_string())
}

/// A request that must succeed (a reply without a service error).
async fn allowed(c: &async_nats::Client, subject: &str, body: serde_json::Value) -> serde_json::Value {
    let mut h = async_nats::HeaderMap::new();
    h.insert(codec::CONTENT_TYPE, codec::JSON);
    let r = tokio::time::timeout(
        Duration::from_secs(5),
        c.request_with_headers(subject.to_owned(), h, serde_json::to_vec(&body).unwrap().into()),
    )
    .await
    .expect("reply in time")
    .expect("request allowed");
    assert!(r.headers.as_ref().and_then(|h| h.get(codec::SERVICE_ERROR_CODE)).is_none(), "{subject}: {r:?}");
    serde_json::from_slice(&r.payload).unwrap()
}

/// A request the server must refuse (permissions violation: no reply).
async fn denied(c: &async_nats::Client, subject: &str) {
    let r = tokio::time::timeout(Duration::from_secs(1), c.request(subject.to_owned(), "{}".into())).await;
    assert!(!matches!(r, Ok(Ok(_))), "{subject} must be denied, got a reply");
}

fn attempt_bytes(tenant: &str, user: &str) -> Vec<u8> {
    let a = Attempt { client: Some("IT Glue".into()), ..attempt_body(tenant, user, Outcome::Failure, "203.0.113.7") };
    codec::encode(Encoding::Postcard, &a)
}

/// The JetStream API prefix under which the deploy config imports the streams into the
/// notifiers' and auditors' accounts.
const JS_API_PREFIX: &str = "JS.lockout.API";

/// A JetStream context for a notifier or an auditor: the streams are imported into their
/// accounts under [`JS_API_PREFIX`].
fn imported_js(c: async_nats::Client) -> jetstream::Context {
    jetstream::with_prefix(c, JS_API_PREFIX)
}

/// A JetStream publish that must not be stored.
async fn publish_denied(c: &async_nats::Client, subject: &str, payload: Vec<u8>) {
    let js = jetstream::new(c.clone());
    let r = tokio::time::timeout(Duration::from_secs(1), async {
        js.publish(subject.to_owned(), payload.into()).await?.await
    })
    .await;
    assert!(!matches!(r, Ok(Ok(_))), "publishing to {subject} must be denied");
}

/// The users of `deploy/nats/lockout.conf` (the per-tenant ones for tenant acme) and the
/// variable holding each one's password.
const USERS: [(&str, &str); 8] = [
    ("lockoutd", "LOCKOUTD_PASSWORD"),
    ("gateway_acme", "GATEWAY_ACME_PASSWORD"),
    ("notifier_acme", "NOTIFIER_ACME_PASSWORD"),
    ("idp_acme", "IDP_ACME_PASSWORD"),
    ("admin_acme_alice", "ADMIN_ACME_ALICE_PASSWORD"),
    ("admin_acme_bob", "ADMIN_ACME_BOB_PASSWORD"),
    ("auditor", "AUDITOR_PASSWORD"),
    ("console_acme", "CONSOLE_ACME_PASSWORD"),
];

/// The variables `deploy/nats/lockout.conf` reads: each user's password (`pw(user)`) and the
/// TLS files.
fn deploy_env(p: &Pki, pw: impl Fn(&str) -> String) -> Vec<(&'static str, String)> {
    let mut env: Vec<(&'static str, String)> = USERS.into_iter().map(|(user, k)| (k, pw(user))).collect();
    for (k, f) in [("LOCKOUT_TLS_CERT", &p.cert), ("LOCKOUT_TLS_KEY", &p.key), ("LOCKOUT_TLS_CA", &p.ca)] {
        env.push((k, f.display().to_string()));
    }
    env
}

fn env_refs<'a>(env: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    env.iter().map(|(k, v)| (*k, v.as_str())).collect()
}

/// lockoutd in this process with its own user over TLS (with `--require-caller`, as the deploy
/// configuration is meant to be run); send on the sender to stop it.
fn spawn_lockoutd(
    url: &str,
    store: PathBuf,
    password: String,
    ca: &Path,
    inbox: String,
    require_caller: bool,
) -> (tokio::sync::oneshot::Sender<()>, tokio::task::JoinHandle<anyhow::Result<()>>) {
    let mut config = lockoutd::Config::new(url, store);
    config.nats.nats_user = Some("lockoutd".into());
    config.nats.nats_password = Some(password);
    config.nats.tls_ca = Some(ca.to_path_buf());
    let (cert, key) = client_cert(ca);
    (config.nats.tls_cert, config.nats.tls_key) = (Some(cert), Some(key));
    config.nats.inbox_prefix = Some(inbox);
    config.require_caller = require_caller;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let daemon = tokio::spawn(lockoutd::run(config, async move {
        let _ = stopped.await;
    }));
    (stop, daemon)
}

/// Waits until lockoutd answers `status` to `admin`.
async fn wait_ready(admin: &async_nats::Client) {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let mut h = async_nats::HeaderMap::new();
        h.insert(codec::CONTENT_TYPE, codec::JSON);
        let status = admin.request_with_headers("lockout.svc.acme.status", h, br#"{"user":"alice"}"#.as_slice().into());
        if matches!(tokio::time::timeout(Duration::from_millis(500), status).await, Ok(Ok(_))) {
            return;
        }
        assert!(std::time::Instant::now() < deadline, "lockoutd did not become ready over TLS");
    }
}

/// nats-server on `deploy/nats/lockout.conf` with a password per user and lockoutd in this
/// process over TLS with its own credentials, answering.
struct Deploy {
    _tmp: tempfile::TempDir,
    p: Pki,
    _nats: NatsServer,
    url: String,
    pws: Vec<(&'static str, String)>,
    stop: tokio::sync::oneshot::Sender<()>,
    daemon: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Deploy {
    async fn start() -> Deploy {
        let tmp = tempfile::tempdir().unwrap();
        let p = pki(tmp.path());
        let pws: Vec<(&str, String)> =
            USERS.iter().map(|(u, _)| (*u, format!("{u}-{}", Uuid::now_v7().simple()))).collect();
        let pw_of = |user: &str| pws.iter().find(|(u, _)| *u == user).unwrap().1.clone();
        let env = deploy_env(&p, pw_of);
        let nats = NatsServer::start_with_config(Some(&config_path()), &env_refs(&env));
        let url = nats.url();
        let (stop, daemon) =
            spawn_lockoutd(&url, tmp.path().join("store"), pw_of("lockoutd"), &p.ca, "_INBOX_lockoutd".into(), true);
        let d = Deploy { _tmp: tmp, p, _nats: nats, url, pws, stop, daemon };
        wait_ready(&d.connect("admin_acme_alice").await).await;
        d
    }

    fn pw(&self, user: &str) -> String {
        self.pws.iter().find(|(u, _)| *u == user).unwrap().1.clone()
    }

    /// `user` connected with its password, certificate and inbox prefix.
    async fn connect(&self, user: &str) -> async_nats::Client {
        connect_as(&self.url, user, &self.pw(user), &self.p.ca).await.unwrap()
    }

    async fn stop(self) {
        let _ = self.stop.send(());
        self.daemon.await.unwrap().unwrap();
    }
}

#[tokio::test]
async fn every_role_is_confined_and_lockoutd_runs_over_tls_with_its_credentials() {
    let d = Deploy::start().await;
    let (url, p) = (d.url.clone(), &d.p);
    let (lockoutd_pw, gateway_pw, admin_pw) = (d.pw("lockoutd"), d.pw("gateway_acme"), d.pw("admin_acme_alice"));
    let admin = d.connect("admin_acme_alice").await;

    // Without our CA, or without credentials, nobody gets in.
    assert!(async_nats::ConnectOptions::with_user_and_password("gateway_acme".into(), gateway_pw.clone())
        .connect(&url)
        .await
        .is_err());
    assert!(connect_as(&url, "gateway_acme", "wrong", &p.ca).await.is_err());

    // A tenant's gateways publish that tenant's attempts and ask its status; nothing else.
    let gateway = d.connect("gateway_acme").await;
    let gjs = jetstream::new(gateway.clone());
    let subject = "lockout.events.acme.u.YWxpY2U.attempt";
    let seq = gjs.publish(subject, attempt_bytes("acme", "alice").into()).await.unwrap().await.unwrap().sequence;
    assert!(seq >= 1);
    let status = loop {
        let s = allowed(&gateway, "lockout.svc.acme.status", serde_json::json!({"user": "alice"})).await;
        if s["failures"] == 1 {
            break s;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(status["last_source_ip"], "203.0.113.7");
    publish_denied(&gateway, "lockout.events.acme.u.YWxpY2U.unlock", b"{}".to_vec()).await;
    publish_denied(&gateway, "lockout.events.acme.t.policy", b"{}".to_vec()).await;
    denied(&gateway, "lockout.svc.acme.unlock").await;
    denied(&gateway, "lockout.svc.acme.policy_set").await;

    // A tenant's admin works on that tenant only.
    let r = allowed(&admin, "lockout.svc.acme.unlock", serde_json::json!({"user": "alice", "actor": "admin7"})).await;
    assert_eq!(r["unlocked_by"], "admin7");
    denied(&admin, "lockout.svc.globex.status").await;
    denied(&admin, "lockout.svc.globex.unlock").await;
    publish_denied(&admin, subject, attempt_bytes("acme", "alice")).await;

    // Notifiers cannot publish events.
    let notifier = d.connect("notifier_acme").await;
    publish_denied(&notifier, subject, attempt_bytes("acme", "alice")).await;

    // Auditors read the events stream and write nothing.
    let auditor = d.connect("auditor").await;
    let ajs = imported_js(auditor.clone());
    let events = ajs.get_stream("LOCKOUT_EVENTS").await.unwrap();
    assert_eq!(events.get_raw_message(seq).await.unwrap().subject.as_str(), subject);
    publish_denied(&auditor, subject, attempt_bytes("acme", "alice")).await;
    denied(&auditor, "lockout.svc.acme.unlock").await;
    auditors_cannot_touch_lockoutds_consumer(&events, &auditor, &url, &lockoutd_pw, &p.ca).await;

    // Only the one permitted attempt was folded: the denied writes changed nothing.
    let s = allowed(&admin, "lockout.svc.acme.status", serde_json::json!({"user": "alice"})).await;
    assert_eq!((s["failures"].as_u64(), s["unlocked_by"].as_str()), (Some(0), Some("admin7")));

    // lockoutctl reaches the secured deployment over TLS with an admin's credentials, and is
    // confined like any client of that user.
    let ctl = |tenant: &'static str| {
        let (url, pw, ca) = (url.clone(), admin_pw.clone(), p.ca.display().to_string());
        let (cert, key) = client_cert(&p.ca);
        let (cert, key) = (cert.display().to_string(), key.display().to_string());
        async move {
            let args = ["lockoutctl", "--nats-url", &url, "--nats-user", "admin_acme_alice", "--nats-password", &pw];
            let args = args.iter().copied().chain(["--inbox-prefix", "_INBOX_admin_acme_alice", "--tls-cert", &cert]);
            let args =
                args.chain(["--tls-key", &key, "--tls-ca", &ca, "--timeout", "2", "--json", "status", tenant, "alice"]);
            let (mut out, mut err) = (Vec::new(), Vec::new());
            let code = lockoutctl::run_io(args.map(str::to_owned).collect::<Vec<_>>(), &mut out, &mut err).await;
            (code, String::from_utf8(out).unwrap(), String::from_utf8(err).unwrap())
        }
    };
    let (code, out, err) = ctl("acme").await;
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(serde_json::from_str::<serde_json::Value>(&out).unwrap()["unlocked_by"], "admin7");
    let (code, _, err) = ctl("globex").await;
    assert_ne!(code, 0, "another tenant is out of reach: {err}");
    assert!(
        err.contains("may this NATS user publish to lockout.svc.globex.status"),
        "the error names the likely cause: {err}"
    );
    d.stop().await;
}

/// Hole 3: a tenant's gateway, notifier and identity provider reach that tenant only: a
/// gateway publishes its tenant's attempts and asks its status; an identity provider asks
/// status and reports password resets; a notifier reads its tenant's notices through one
/// consumer of its own (hole 4: it cannot widen, rename or delete consumers).
#[tokio::test]
async fn per_tenant_credentials_reach_only_their_tenant() {
    let d = Deploy::start().await;
    let gateway = d.connect("gateway_acme").await;
    let gjs = jetstream::new(gateway.clone());
    let ours = "lockout.events.acme.u.YWxpY2U.attempt";
    gjs.publish(ours, attempt_bytes("acme", "alice").into()).await.unwrap().await.expect("its tenant's attempts");
    allowed(&gateway, "lockout.svc.acme.status", json!({"user": "alice"})).await;
    // Contract v2: a gateway asks status with the attempt's source and publishes the attempts
    // it refused as `rejected`, on the same subject; it may not report password resets.
    let s = allowed(&gateway, "lockout.svc.acme.status", json!({"user": "alice", "ip": "203.0.113.7"})).await;
    assert_eq!(s["allowed"], true, "{s}");
    let rejected = attempt_body("acme", "alice", Outcome::Rejected, "203.0.113.7");
    gjs.publish(ours, codec::encode(Encoding::Postcard, &rejected).into())
        .await
        .unwrap()
        .await
        .expect("rejected attempts");
    denied(&gateway, "lockout.svc.acme.password_reset").await;
    publish_denied(&gateway, "lockout.events.globex.u.YWxpY2U.attempt", attempt_bytes("globex", "alice")).await;
    denied(&gateway, "lockout.svc.globex.status").await;

    let idp = d.connect("idp_acme").await;
    allowed(&idp, "lockout.svc.acme.status", json!({"user": "alice"})).await;
    let reset =
        allowed(&idp, "lockout.svc.acme.password_reset", json!({"user": "alice", "method": "self_service"})).await;
    assert!(reset["event_id"].is_string(), "{reset}");
    denied(&idp, "lockout.svc.globex.password_reset").await;
    denied(&idp, "lockout.svc.acme.unlock").await;
    denied(&idp, "lockout.svc.globex.status").await;
    publish_denied(&idp, ours, attempt_bytes("acme", "alice")).await;

    notifiers_are_confined_to_their_consumer(&d.connect("notifier_acme").await).await;
    d.stop().await;
}

/// Hole 2: the actor is whatever the caller typed. Each admin has a user of their own in the
/// tenant's admin account, which imports the service with `share: true`; lockoutd records the
/// authenticated caller beside the typed actor, on the event, its notice and Status. An admin
/// who types another admin's name is recorded as itself.
#[tokio::test]
async fn actor_spoofing_an_admin_typing_another_admins_name_is_recorded_as_itself() {
    let d = Deploy::start().await;
    let (alice, bob) = (d.connect("admin_acme_alice").await, d.connect("admin_acme_bob").await);
    allowed(&alice, "lockout.svc.acme.lock", json!({"user": "carol", "actor": "bob", "reason": "test"})).await;
    let r = allowed(&alice, "lockout.svc.acme.unlock", json!({"user": "carol", "actor": "bob"})).await;
    assert_eq!(r["unlocked_by"], "bob", "the typed actor is kept");
    assert_eq!(r["unlocked_caller"], "ADMIN_ACME/admin_acme_alice", "the caller is who connected");
    let r = allowed(&bob, "lockout.svc.acme.mfa_reset", json!({"user": "carol", "actor": "bob"})).await;
    assert_eq!(r["mfa_reset_caller"], "ADMIN_ACME/admin_acme_bob");
    assert_eq!(r["unlocked_caller"], "ADMIN_ACME/admin_acme_alice");

    // The events as stored (what replay and audits see) and the notices carry it too.
    let lockoutd = d.connect("lockoutd").await;
    let js = jetstream::new(lockoutd);
    let events = js.get_stream("LOCKOUT_EVENTS").await.unwrap();
    let mut callers = Vec::new();
    for seq in 1..=3 {
        let m = events.get_raw_message(seq).await.unwrap();
        let enc = Encoding::from_content_type(m.headers.get(codec::CONTENT_TYPE).map(|v| v.as_str())).unwrap();
        assert_eq!(enc, Encoding::PostcardV2, "the service writes the v2 layout by default");
        let kind = m.subject.rsplit('.').next().unwrap().parse().unwrap();
        let e = lockout_proto::Event::decode(kind, enc, &m.payload).unwrap();
        callers.push(match e {
            lockout_proto::Event::Lock(e) => e.caller,
            lockout_proto::Event::Unlock(e) => e.caller,
            lockout_proto::Event::MfaReset(e) => e.caller,
            other => panic!("unexpected {other:?}"),
        });
    }
    let want = ["ADMIN_ACME/admin_acme_alice", "ADMIN_ACME/admin_acme_alice", "ADMIN_ACME/admin_acme_bob"];
    assert_eq!(callers, want.map(|c| Some(c.into())));
    let notices = js.get_stream("LOCKOUT_NOTICES").await.unwrap();
    let m = notices.get_last_raw_message_by_subject("lockout.notices.acme.unlocked").await.unwrap();
    let enc = Encoding::from_content_type(m.headers.get(codec::CONTENT_TYPE).map(|v| v.as_str())).unwrap();
    let lockout_proto::Notice::Unlocked(n) = lockout_proto::Notice::decode("unlocked", enc, &m.payload).unwrap() else {
        panic!("an unlocked notice")
    };
    assert_eq!((n.actor.as_deref(), n.caller.as_deref()), (Some("bob"), Some("ADMIN_ACME/admin_acme_alice")));

    // Admins see every lockoutd's health through `$SRV.STATS` (a stream of replies).
    let stats = tokio::time::timeout(Duration::from_secs(5), bob.request("$SRV.STATS.lockout", "".into()))
        .await
        .expect("a $SRV.STATS reply in time")
        .expect("admins may ask $SRV.STATS");
    let stats: serde_json::Value = serde_json::from_slice(&stats.payload).unwrap();
    assert_eq!(stats["name"], "lockout", "{stats}");
    assert!(stats["endpoints"].as_array().is_some_and(|e| !e.is_empty()), "{stats}");

    // The identity provider's account imports status (and password_reset) only.
    let idp = d.connect("idp_acme").await;
    allowed(&idp, "lockout.svc.acme.status", json!({"user": "carol"})).await;
    denied(&idp, "lockout.svc.acme.unlock").await;
    d.stop().await;
}

/// `--require-caller`: a write the server does not vouch for (here: no accounts, no
/// `Nats-Request-Info`) is refused with a 503 that says what to fix, and changes nothing;
/// reads still work. A forged header from a client in lockoutd's own account is what the
/// deploy configuration rules out (no user there may publish a write op).
#[tokio::test]
async fn actor_spoofing_require_caller_refuses_writes_without_a_caller() {
    let l = Lockout::start_requiring_caller().await;
    let e = l.call("acme", "unlock", json!({"user": "carol", "actor": "bob"})).await.unwrap_err();
    assert_eq!(e.code, 503, "{e:?}");
    assert!(e.message.contains("--require-caller") && e.message.contains("share: true"), "{}", e.message);
    let e = l.call("acme", "policy_set", json!({"actor": "bob", "policy": {}})).await.unwrap_err();
    assert_eq!(e.code, 503, "{e:?}");
    let s = l.call("acme", "status", json!({"user": "carol"})).await.unwrap();
    assert_eq!((s["unlocked_by"].as_str(), s["unlocked_caller"].as_str()), (None, None));
    assert!(l.stream_messages("LOCKOUT_EVENTS").await.is_empty(), "nothing was appended");
}

/// Hole 4: auditors could delete each other's consumers (they shared the right to delete any
/// consumer of `LOCKOUT_EVENTS` but lockoutd's). Now they delete none: an auditor's consumer
/// survives another auditor's delete, and `lockoutctl history` (ordered consumers, which end
/// by going idle) still works with the auditor's credentials.
#[tokio::test]
async fn consumer_tampering_an_auditor_cannot_delete_another_auditors_consumer() {
    use jetstream::consumer::pull;
    let d = Deploy::start().await;
    let gateway = d.connect("gateway_acme").await;
    let seq = jetstream::new(gateway)
        .publish("lockout.events.acme.u.YWxpY2U.attempt", attempt_bytes("acme", "alice").into())
        .await
        .unwrap()
        .await
        .unwrap()
        .sequence;
    let (first, second) = (d.connect("auditor").await, d.connect("auditor").await);
    let events = imported_js(first).get_stream("LOCKOUT_EVENTS").await.unwrap();
    // Kept well past the denied delete's timeout (an ephemeral consumer goes after 5 s idle).
    let idle = Duration::from_secs(120);
    let config = pull::Config { name: Some("audit-one".into()), inactive_threshold: idle, ..Default::default() };
    events.create_consumer(config).await.expect("an auditor creates a consumer");
    let theirs = imported_js(second).get_stream("LOCKOUT_EVENTS").await.unwrap();
    assert!(theirs.delete_consumer("audit-one").await.is_err(), "another auditor cannot delete it");
    let owner = jetstream::new(d.connect("lockoutd").await).get_stream("LOCKOUT_EVENTS").await.unwrap();
    owner.consumer_info("audit-one").await.expect("the consumer is still there");

    // lockoutctl reads the history as an auditor: ordered consumers need no delete.
    let (cert, key) = client_cert(&d.p.ca);
    let (url, pw, ca) = (d.url.clone(), d.pw("auditor"), d.p.ca.display().to_string());
    let (cert, key) = (cert.display().to_string(), key.display().to_string());
    let args = ["lockoutctl", "--nats-url", &url, "--nats-user", "auditor", "--nats-password", &pw];
    let args = args.iter().copied().chain(["--inbox-prefix", "_INBOX_auditor", "--tls-cert", &cert, "--tls-key", &key]);
    let args = args.chain(["--tls-ca", &ca, "--js-api-prefix", JS_API_PREFIX, "--timeout", "5", "--json"]);
    let args = args.chain(["history", "acme", "alice"]);
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let code = lockoutctl::run_io(args.map(str::to_owned).collect::<Vec<_>>(), &mut out, &mut err).await;
    let (out, err) = (String::from_utf8(out).unwrap(), String::from_utf8(err).unwrap());
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains(&format!("\"seq\":{seq}")) || out.contains(&format!("\"seq\": {seq}")), "{out}");
    d.stop().await;
}

/// Hole 7: a flood of distinct users grew the store without bound. With a state TTL, an idle
/// unlocked user's state is dropped by a `forget` event in the history (so a replay drops it
/// too); a locked user never is, and the state of a user active since stays.
#[tokio::test]
async fn unbounded_growth_idle_states_are_forgotten_by_an_event_and_replay_agrees() {
    let l = Lockout::start_with_state_ttl(Duration::from_secs(2)).await;
    let seq = l.attempt("acme", "alice", Outcome::Failure, "203.0.113.7", None).await;
    l.wait_folded(seq).await;
    l.call("acme", "lock", json!({"user": "bob", "actor": "ops"})).await.unwrap();
    assert_eq!(l.call("acme", "digest", json!({})).await.unwrap()["users"], 2);
    let forgets = |msgs: &[jetstream::message::StreamMessage]| {
        msgs.iter().filter(|m| m.subject.ends_with(".forget")).map(|m| m.subject.to_string()).collect::<Vec<_>>()
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let digest = l.call("acme", "digest", json!({})).await.unwrap();
        if digest["users"] == 1 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "alice's idle state was not dropped: {digest}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(l.status("acme", "alice").await["failures"], 0);
    assert_eq!(l.status("acme", "bob").await["locked"], true, "a locked user is never forgotten");
    let events = l.stream_messages("LOCKOUT_EVENTS").await;
    let alice = lockout_proto::UserId::parse("alice").unwrap();
    assert_eq!(forgets(&events), vec![format!("lockout.events.acme.u.{}.forget", alice.token())]);

    // The history replays to the same store.
    let url = l.nats.url();
    let args = vec!["lockoutctl", "--nats-url", url.as_str(), "--json", "verify"];
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let code = lockoutctl::run_io(args, &mut out, &mut err).await;
    let (out, err) = (String::from_utf8(out).unwrap(), String::from_utf8(err).unwrap());
    assert_eq!(code, 0, "{out}{err}");
}

/// A notifier of tenant acme: its own durable consumer, `notifier_acme` filtered to acme's
/// notices, works; a wider filter, another name, another tenant's consumer or the events
/// stream do not.
async fn notifiers_are_confined_to_their_consumer(notifier: &async_nats::Client) {
    use jetstream::consumer::pull;
    let njs = imported_js(notifier.clone());
    let notices = njs.get_stream("LOCKOUT_NOTICES").await.unwrap();
    let own = |filter: &str| pull::Config {
        durable_name: Some("notifier_acme".into()),
        filter_subject: filter.into(),
        ..Default::default()
    };
    for (what, config) in [
        ("every tenant's notices", own("lockout.notices.>")),
        ("another tenant's notices", own("lockout.notices.globex.>")),
        ("no filter", own("")),
        (
            "another name",
            pull::Config { durable_name: Some("notifier_globex".into()), ..own("lockout.notices.acme.>") },
        ),
    ] {
        let r = tokio::time::timeout(Duration::from_secs(1), notices.create_consumer(config)).await;
        assert!(!matches!(r, Ok(Ok(_))), "a notifier of acme must not create a consumer with {what}");
    }
    let mut c = notices.create_consumer(own("lockout.notices.acme.>")).await.expect("its own consumer");
    assert_eq!(c.info().await.unwrap().config.filter_subject, "lockout.notices.acme.>");
    let r = tokio::time::timeout(Duration::from_secs(1), notices.delete_consumer("notifier_globex")).await;
    assert!(!matches!(r, Ok(Ok(_))), "a notifier must not delete another's consumer");
    assert!(njs.get_stream("LOCKOUT_EVENTS").await.is_err(), "a notifier cannot read events");
}

/// Durability was overstated: nats-server syncs its files every 2 minutes by default, so a
/// power loss or an OS crash loses events it had acknowledged. Every deploy configuration
/// syncs each write before acknowledging it, in the store it names.
#[test]
fn durability_every_deploy_config_syncs_each_write_to_its_named_store() {
    let tmp = tempfile::tempdir().unwrap();
    let p = pki(tmp.path());
    let env = deploy_env(&p, |role| format!("unused-{role}"));
    let single = NatsServer::start_monitored(Some(&config_path()), &env_refs(&env));
    let mut cluster = nats_harness::Cluster::start(3);
    let seen = [
        ("lockout.conf", single.monitor("/varz"), single.store_dir()),
        ("cluster.conf", cluster.monitor(0, "/varz"), cluster.node(0).store_dir()),
    ];
    for (config, varz, store) in seen {
        let js = &varz.unwrap_or_else(|| panic!("{config}: no /varz"))["jetstream"]["config"];
        assert_eq!(js["sync_always"], true, "{config} must sync every write: {js}");
        let dir = js["store_dir"].as_str().unwrap_or_default();
        assert!(Path::new(dir).starts_with(&store), "{config} must name its store_dir ({dir} is not in {store:?})");
    }
}

/// Every role could read everyone's replies and deliveries: each user could subscribe to
/// `_INBOX.>`, where requests' replies and pull consumers' batches arrive. Now each credential
/// has an inbox prefix of its own. A notifier that subscribes to every inbox subject it may
/// sees nothing while the others work; on the old shared-inbox configuration (the control) the
/// same eavesdropper reads their traffic.
#[tokio::test]
async fn eavesdropping_no_credential_reads_another_credentials_replies_or_deliveries() {
    assert_eq!(eavesdropped(false).await, 0, "the deploy configuration leaks nothing into another's inbox");
    assert!(eavesdropped(true).await > 0, "control: with a shared _INBOX.> the eavesdropper reads the others' traffic");
}

/// Runs lockoutd on the deploy configuration (or, `shared_inbox`, on the old one where every
/// user subscribes to `_INBOX.>`), has a notifier subscribe to every inbox subject it may, runs
/// the other roles' work, and returns how many of their messages the notifier received.
async fn eavesdropped(shared_inbox: bool) -> usize {
    let tmp = tempfile::tempdir().unwrap();
    let p = pki(tmp.path());
    // The control is the layout before issue 20: one account, a shared `_INBOX.>`.
    let config = match shared_inbox {
        false => config_path(),
        true => Path::new(env!("CARGO_MANIFEST_DIR")).join("it/fixtures/single-account-shared-inbox.conf"),
    };
    let config = std::fs::read_to_string(config).unwrap();
    let config_file = tmp.path().join("lockout.conf");
    std::fs::write(&config_file, &config).unwrap();
    let pw = |role: &str| format!("{role}-{}", Uuid::now_v7().simple());
    let pws: Vec<(&str, String)> = USERS.into_iter().map(|(u, _)| (u, pw(u))).collect();
    let pw_of = |role: &str| pws.iter().find(|(r, _)| *r == role).unwrap().1.clone();
    let env = deploy_env(&p, pw_of);
    let nats = NatsServer::start_with_config(Some(&config_file), &env_refs(&env));
    let url = nats.url();
    // Each client uses its own prefix on the deploy configuration, the default one on the old.
    let inbox = |user: &str| if shared_inbox { "_INBOX".to_owned() } else { format!("_INBOX_{user}") };
    let connect = |user: &'static str| {
        let (url, pw, ca, inbox) = (url.clone(), pw_of(user), p.ca.clone(), inbox(user));
        async move { connect_with_inbox(&url, user, &pw, &ca, &inbox).await.unwrap() }
    };

    let (stop, daemon) =
        spawn_lockoutd(&url, tmp.path().join("store"), pw_of("lockoutd"), &p.ca, inbox("lockoutd"), !shared_inbox);
    let admin = connect("admin_acme_alice").await;
    wait_ready(&admin).await;

    // The eavesdropper: a notifier subscribed to every inbox subject it is allowed.
    let spy = connect("notifier_acme").await;
    let mut heard = futures::stream::select(
        spy.subscribe("_INBOX.>").await.unwrap(),
        spy.subscribe(if shared_inbox { "_INBOX.>" } else { "_INBOX_notifier_acme.>" }).await.unwrap(),
    );
    spy.flush().await.unwrap();

    // The others' work: a gateway publishes attempts and asks for status, an admin unlocks,
    // an auditor reads the events stream.
    let gateway = connect("gateway_acme").await;
    let gjs = jetstream::new(gateway.clone());
    for _ in 0..3 {
        gjs.publish("lockout.events.acme.u.YWxpY2U.attempt", attempt_bytes("acme", "alice").into())
            .await
            .unwrap()
            .await
            .unwrap();
    }
    allowed(&gateway, "lockout.svc.acme.status", serde_json::json!({"user": "alice"})).await;
    allowed(&admin, "lockout.svc.acme.unlock", serde_json::json!({"user": "alice", "actor": "admin7"})).await;
    let auditor = connect("auditor").await;
    let auditor_js = if shared_inbox { jetstream::new(auditor) } else { imported_js(auditor) };
    let events = auditor_js.get_stream("LOCKOUT_EVENTS").await.unwrap();
    events.get_raw_message(1).await.unwrap();
    // The spy's own subscription is flushed after everything above: what it was sent is in.
    spy.flush().await.unwrap();
    let mut count = 0;
    while let Ok(Some(_)) = tokio::time::timeout(Duration::from_millis(200), heard.next()).await {
        count += 1;
    }
    let _ = stop.send(());
    daemon.await.unwrap().unwrap();
    count
}

/// Auditors could delete or re-filter lockoutd's own consumer (they may create and delete
/// consumers on `LOCKOUT_EVENTS`): the deploy config denies them its name. They still create
/// consumers of their own; lockoutd's keeps its filter whatever they try.
async fn auditors_cannot_touch_lockoutds_consumer(
    events: &jetstream::stream::Stream,
    auditor: &async_nats::Client,
    url: &str,
    lockoutd_pw: &str,
    ca: &Path,
) {
    use jetstream::consumer::pull;
    assert!(events.delete_consumer("lockoutd").await.is_err(), "an auditor cannot delete lockoutd's consumer");
    let refilter = pull::Config {
        durable_name: Some("lockoutd".into()),
        filter_subject: "lockout.events.nobody.>".into(),
        ..Default::default()
    };
    assert!(events.create_consumer(refilter).await.is_err(), "an auditor cannot re-create lockoutd's consumer");
    // The unnamed (legacy) create with lockoutd's name in the body.
    let body = serde_json::json!({
        "stream_name": "LOCKOUT_EVENTS",
        "config": {"name": "lockoutd", "filter_subject": "lockout.events.nobody.>", "deliver_policy": "all", "ack_policy": "explicit"}
    });
    let _ = tokio::time::timeout(
        Duration::from_secs(2),
        auditor.request(
            format!("{JS_API_PREFIX}.CONSUMER.CREATE.LOCKOUT_EVENTS"),
            serde_json::to_vec(&body).unwrap().into(),
        ),
    )
    .await;
    events.create_consumer(pull::Config::default()).await.expect("an auditor creates consumers of its own");
    let owner = connect_as(url, "lockoutd", lockoutd_pw, ca).await.unwrap();
    let ours = jetstream::new(owner).get_stream("LOCKOUT_EVENTS").await.unwrap();
    let info = ours.consumer_info("lockoutd").await.expect("lockoutd's consumer still exists");
    assert_eq!(info.config.filter_subject, "lockout.events.>", "lockoutd's consumer keeps its filter");
}

/// Hole 9: the deploy configuration (what `make run-secure` starts) wants mutual TLS: the right
/// password over TLS without a client certificate is refused; with one, accepted.
#[tokio::test]
async fn run_secure_mutual_tls_refuses_a_client_without_a_certificate() {
    let tmp = tempfile::tempdir().unwrap();
    let p = pki(tmp.path());
    let env = deploy_env(&p, |role| format!("{role}-{}", Uuid::now_v7().simple()));
    let gateway_pw = env.iter().find(|(k, _)| *k == "GATEWAY_ACME_PASSWORD").unwrap().1.clone();
    let nats = NatsServer::start_with_config(Some(&config_path()), &env_refs(&env));
    let url = nats.url();
    let no_cert = async_nats::ConnectOptions::with_user_and_password("gateway_acme".into(), gateway_pw.clone())
        .custom_inbox_prefix("_INBOX_gateway_acme")
        .add_root_certificates(p.ca.clone())
        .require_tls(true)
        .connect(&url)
        .await;
    assert!(no_cert.is_err(), "a client without a certificate must be refused");
    let with_cert = connect_as(&url, "gateway_acme", &gateway_pw, &p.ca).await;
    assert!(with_cert.is_ok(), "{:?}", with_cert.err());
}

/// Hole 7: the dead letters are bounded (`--dead-max-messages`, the oldest dropped), the events
/// stream's limits are opt-in and applied to the stream, and the deploy configuration's
/// `max_payload` fits the largest reply lockoutd can send (a `locked` page of 1,000 users with
/// every field at its longest and escaped).
#[tokio::test]
async fn unbounded_growth_dead_letters_are_bounded_and_the_largest_reply_fits_max_payload() {
    use lockout_bench::invalid::invalid_event;
    let mut l = Lockout::start().await;
    let events = l.js.get_stream("LOCKOUT_EVENTS").await.unwrap().get_info().await.unwrap().config;
    assert_eq!((events.max_age, events.max_bytes), (Duration::ZERO, -1), "the history is kept forever by default");
    l.stop_daemon().await.unwrap();
    l.limits.dead_max_messages = 5;
    l.limits.events_max_bytes = 10_000_000;
    l.start_daemon().await;
    let mut last = 0;
    for i in 0..8 {
        let bad = invalid_event("lockout", i);
        last = l.publish_raw(&bad.subject, bad.headers, bad.payload).await;
    }
    l.wait_folded(last).await;
    // Folded is committed; the dead letters are published right after: wait for the eighth.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let dead = loop {
        let dead = l.js.get_stream("LOCKOUT_DEAD").await.unwrap().get_info().await.unwrap();
        if dead.state.last_sequence >= 8 || std::time::Instant::now() > deadline {
            break dead;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(
        (dead.state.messages, dead.state.first_sequence, dead.state.last_sequence),
        (5, 4, 8),
        "the five newest dead letters are kept"
    );
    // `health` reports the limits and the disk.
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    let h = loop {
        let h = l.health().await;
        if h["disk"].is_object() || std::time::Instant::now() > deadline {
            break h;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(
        h["retention"],
        json!({"events_max_age_days": 0, "events_max_bytes": 10_000_000, "dead_max_messages": 5, "state_ttl_days": 0})
    );
    let disk = &h["disk"];
    assert!(
        disk["store_bytes"].as_u64() > Some(0) && disk["free_bytes"].as_u64() <= disk["total_bytes"].as_u64(),
        "{h}"
    );
    let events = l.js.get_stream("LOCKOUT_EVENTS").await.unwrap().get_info().await.unwrap().config;
    assert_eq!(
        (events.max_bytes, events.discard),
        (10_000_000, jetstream::stream::DiscardPolicy::Old),
        "--events-max-bytes applies to the stream"
    );

    // The largest reply: a `locked` page of 1,000 statuses, every string at its longest and made
    // of characters JSON escapes as \u00XX.
    let long = |n: usize| "\u{1}".repeat(n);
    let status = lockout_proto::Status {
        tenant: "t".repeat(lockout_proto::ids::TENANT_MAX).into(),
        user: long(lockout_proto::ids::USER_MAX_BYTES).into(),
        locked: true,
        reason: Some(lockout_proto::status::LockReason::Failures),
        locked_at: Some(u64::MAX),
        locked_until: Some(u64::MAX),
        failures: u32::MAX,
        max_failures: u32::MAX,
        last_failure_at: Some(u64::MAX),
        last_source_ip: Some("ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255".into()),
        unlocked_at: Some(u64::MAX),
        unlocked_by: Some(long(lockout_proto::event::ACTOR_MAX).into()),
        mfa_reset_at: Some(u64::MAX),
        mfa_reset_by: Some(long(lockout_proto::event::ACTOR_MAX).into()),
        mfa_reenrol: true,
        lock_count: u32::MAX,
        allowed: false,
        blocked_by: Some(lockout_proto::status::BlockedBy::Account),
        unfamiliar_failures: u32::MAX,
        // No scope locks yet: the fold makes none before source-aware locks (issue 21).
        scope_locks: Vec::new(),
        // Callers are account and user names from the server's configuration: plain ASCII.
        unlocked_caller: Some("a".repeat(lockout_proto::event::CALLER_MAX).into()),
        mfa_reset_caller: Some("a".repeat(lockout_proto::event::CALLER_MAX).into()),
    };
    let page = lockout_proto::command::LockedReply {
        users: vec![status; lockout_proto::command::LOCKED_MAX_LIMIT as usize],
        next: Some("x".repeat(2 * lockout_proto::ids::USER_MAX_BYTES)),
    };
    let largest = codec::encode(Encoding::Json, &page).len();
    let conf = std::fs::read_to_string(config_path()).unwrap();
    let max_payload = conf
        .lines()
        .find_map(|l| l.trim().strip_prefix("max_payload:"))
        .and_then(|v| v.trim().strip_suffix("MB"))
        .and_then(|mb| mb.parse::<usize>().ok())
        .expect("lockout.conf sets max_payload in MB")
        << 20;
    assert!(largest <= max_payload, "the largest reply ({largest} bytes) exceeds max_payload ({max_payload})");
    assert!(lockout_proto::codec::MAX_PAYLOAD <= max_payload);
}

// ---------------------------------------------------------------------------------------
// Hole 8: lockoutd's clock ends locks.
// ---------------------------------------------------------------------------------------

/// The `expired` event lockoutd would append for `user`'s lock `lock_event`, published now.
async fn publish_expired(l: &Lockout, user: &str, lock_event: Uuid) -> u64 {
    let (tenant, uid) = (lockout_proto::Tenant::parse("acme").unwrap(), lockout_proto::UserId::parse(user).unwrap());
    let id = lockout_core::ids::expired_event_id("acme", user, lock_event);
    let e = lockout_proto::event::Expired {
        id,
        at: lockout_nats::clock::now_ms(),
        tenant: "acme".into(),
        user: user.into(),
        lock_event,
    };
    let mut h = async_nats::HeaderMap::new();
    h.insert(codec::NATS_MSG_ID, id.to_string().as_str());
    let subject = l.subjects.user_event(&tenant, &uid, lockout_proto::event::EventKind::Expired);
    l.publish_raw(&subject, h, codec::encode(Encoding::Postcard, &e)).await
}

/// Hole 8: an `expired` event stored well before its lock's `locked_until` (appended by a
/// lockoutd whose clock ran ahead of the server's) must not end the lock early; the first
/// event at or after `locked_until` ends it, with the one `unlocked` notice.
#[tokio::test]
async fn early_expired_event_stored_before_locked_until_does_not_end_the_lock() {
    let l = Lockout::start().await;
    let mut live = l.notice_consumer().await;
    let r = l.call("acme", "lock", json!({"user": "dora", "actor": "ops", "seconds": 2})).await.unwrap();
    let until = r["locked_until"].as_u64().unwrap();
    let lock_event = Uuid::parse_str(r["event_id"].as_str().unwrap()).unwrap();
    assert!(matches!(next_notice(&mut live, 10).await.0, Notice::Locked(_)));

    // lockoutd's own `expired` event, as a clock 2 s ahead would have appended it now (its
    // retry on time is then a duplicate JetStream drops for two minutes).
    let seq = publish_expired(&l, "dora", lock_event).await;
    l.wait_folded(seq).await;
    let stored =
        l.stream_messages("LOCKOUT_EVENTS").await.last().map(|m| (m.time.unix_timestamp_nanos() / 1_000_000) as u64);
    assert!(stored.is_some_and(|t| t + 1_000 < until), "the test's expired event was not early");
    let s = l.status("acme", "dora").await;
    assert_eq!((s["locked"].as_bool(), s["locked_until"].as_u64()), (Some(true), Some(until)), "{s}");

    // The next event at or after locked_until ends it, with the expiry's one notice.
    let left = until.saturating_sub(lockout_nats::clock::now_ms());
    tokio::time::sleep(Duration::from_millis(left + 100)).await;
    l.attempt("acme", "dora", Outcome::Success, "192.0.2.7", None).await;
    let (n, _) = next_notice(&mut live, 10).await;
    let Notice::Unlocked(u) = n else { panic!("expected unlocked, got {n:?}") };
    assert_eq!((u.how, u.at), (How::Expired, until));
    assert_eq!(l.status("acme", "dora").await["locked"], false);
}

/// Hole 8: lockoutd measures its clock against the server's (`health`'s `clock_skew_ms`) and
/// decides expiries by the server's time: with its clock 5 s ahead, the `expired` event of a
/// 2 s lock is stored at `locked_until` (not at once, which the fold would ignore) and the lock
/// ends with its notice.
#[tokio::test]
async fn early_expired_lockoutd_with_a_clock_ahead_appends_expiries_by_the_servers_time() {
    let l = Lockout::start_with_clock_ahead(5_000).await;
    let mut live = l.notice_consumer().await;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let skew = loop {
        if let Some(s) = l.health().await["clock_skew_ms"].as_i64() {
            break s;
        }
        assert!(std::time::Instant::now() < deadline, "health reports no clock_skew_ms");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!((4_900..6_000).contains(&skew), "clock_skew_ms {skew}, the clock is 5 s ahead");

    let r = l.call("acme", "lock", json!({"user": "ed", "actor": "ops", "seconds": 2})).await.unwrap();
    let until = r["locked_until"].as_u64().unwrap();
    assert!(matches!(next_notice(&mut live, 10).await.0, Notice::Locked(_)));
    let (n, _) = next_notice(&mut live, 15).await;
    let Notice::Unlocked(u) = n else { panic!("expected unlocked, got {n:?}") };
    assert_eq!((u.how, u.at), (How::Expired, until));
    let expired: Vec<u64> = l
        .stream_messages("LOCKOUT_EVENTS")
        .await
        .into_iter()
        .filter(|m| m.subject.ends_with(".expired"))
        .map(|m| (m.time.unix_timestamp_nanos() / 1_000_000) as u64)
        .collect();
    assert_eq!(expired.len(), 1, "one expired event");
    assert!(
        expired[0] + lockout_core::EXPIRED_EARLY_ALLOWANCE_MS >= until,
        "stored {} ms before locked_until",
        until - expired[0]
    );
}

// ---------------------------------------------------------------------------------------
// Hole 5: gateways choose event ids.
// ---------------------------------------------------------------------------------------

/// Publishes `a` to its user's attempt subject with exactly `headers` (JSON body).
async fn publish_attempt_with(l: &Lockout, a: &Attempt, mut headers: async_nats::HeaderMap) -> u64 {
    let subject = l.subjects.user_event(
        &lockout_proto::Tenant::parse(&a.tenant).unwrap(),
        &lockout_proto::UserId::parse(&a.user).unwrap(),
        lockout_proto::event::EventKind::Attempt,
    );
    headers.insert(codec::CONTENT_TYPE, Encoding::Json.content_type());
    l.publish_raw(&subject, headers, codec::encode(Encoding::Json, a)).await
}

/// Hole 5: an event id reused for another user (no `Nats-Msg-Id`, so JetStream stores both)
/// must not give that user's `locked` notice the first user's id, which the notices stream
/// would drop as a duplicate: both users are locked and both are told, by two notices.
#[tokio::test]
async fn reused_event_ids_another_users_lock_still_gets_its_own_notice() {
    let l = Lockout::start().await;
    let shared = Uuid::now_v7();
    let mut last = 0;
    for user in ["fay", "gus"] {
        for _ in 1..lockout_proto::Policy::default().max_failures {
            l.attempt("acme", user, Outcome::Failure, "192.0.2.9", None).await;
        }
        let a = Attempt { id: shared, ..attempt_body("acme", user, Outcome::Failure, "192.0.2.9") };
        last = publish_attempt_with(&l, &a, async_nats::HeaderMap::new()).await;
    }
    l.wait_folded(last).await;
    for user in ["fay", "gus"] {
        assert_eq!(l.status("acme", user).await["locked"], true, "{user} is locked");
    }
    let notices = l.wait_notices(2).await;
    let locked: Vec<(String, Uuid, Uuid)> = notices
        .iter()
        .filter_map(|(n, _)| match n {
            Notice::Locked(x) => Some((x.user.to_string(), x.event_id, x.id)),
            _ => None,
        })
        .collect();
    assert_eq!(locked.len(), 2, "{locked:?}");
    assert_eq!((locked[0].1, locked[1].1), (shared, shared), "both caused by the shared event id");
    assert_ne!(locked[0].2, locked[1].2, "two notice ids");
}

/// Hole 5: an event whose `Nats-Msg-Id` is not its body's `id` is dead-lettered
/// (`msg_id_mismatch`) and changes nothing: JetStream deduplicated it under one id while its
/// notices would derive from another.
#[tokio::test]
async fn reused_event_ids_a_msg_id_other_than_the_body_id_is_dead_lettered() {
    let l = Lockout::start().await;
    let a = attempt_body("acme", "hal", Outcome::Failure, "192.0.2.10");
    let mut h = async_nats::HeaderMap::new();
    h.insert(codec::NATS_MSG_ID, Uuid::now_v7().to_string().as_str());
    let seq = publish_attempt_with(&l, &a, h).await;
    l.wait_folded(seq).await;
    assert_eq!(l.status("acme", "hal").await["failures"], 0, "nothing counted");
    let dead = l.stream_messages("LOCKOUT_DEAD").await;
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].subject.as_str(), "lockout.dead.acme.msg_id_mismatch");
    let why = dead[0].headers.get("Lockout-Error").unwrap().as_str();
    assert!(why.contains(&a.id.to_string()), "{why}");
    // the same event with its own id as Nats-Msg-Id is counted
    let mut h = async_nats::HeaderMap::new();
    h.insert(codec::NATS_MSG_ID, a.id.to_string().as_str());
    l.wait_folded(publish_attempt_with(&l, &a, h).await).await;
    assert_eq!(l.status("acme", "hal").await["failures"], 1);
}

// ---------------------------------------------------------------------------------------
// Hole 4: consumers changed by someone else.
// ---------------------------------------------------------------------------------------

/// Narrows lockoutd's consumer to one tenant, as a client with the rights to change it could.
async fn narrow_lockoutds_consumer(l: &Lockout) {
    let stream = l.js.get_stream("LOCKOUT_EVENTS").await.unwrap();
    let mut config = stream.consumer_info("lockoutd").await.unwrap().config;
    config.filter_subject = "lockout.events.acme.>".into();
    stream.update_consumer(config).await.expect("the test's client may change the consumer");
}

/// Hole 4: whoever narrows lockoutd's consumer (an operator's credential, or a role a
/// deployment left too wide) must not make it fold a part of the events unnoticed. Under
/// traffic, the first event delivered past one the stream still holds makes lockoutd start
/// over from its checkpoint with a consumer of its own, so the passed-over event is folded;
/// while idle, its periodic check restores the consumer.
#[tokio::test]
async fn consumer_tampering_a_narrowed_filter_loses_no_event() {
    let l = Lockout::start().await;
    l.wait_folded(l.attempt("acme", "ivy", Outcome::Failure, "192.0.2.11", None).await).await;

    narrow_lockoutds_consumer(&l).await;
    l.attempt("globex", "jo", Outcome::Failure, "192.0.2.12", None).await;
    l.wait_folded(l.attempt("acme", "ivy", Outcome::Failure, "192.0.2.11", None).await).await;
    assert_eq!(l.status("globex", "jo").await["failures"], 1, "the event outside the narrowed filter is folded");
    assert_eq!(l.status("acme", "ivy").await["failures"], 2);
    let events = l.js.get_stream("LOCKOUT_EVENTS").await.unwrap();
    assert_eq!(events.consumer_info("lockoutd").await.unwrap().config.filter_subject, "lockout.events.>");

    // Idle: the check after 10 s without events recreates it.
    narrow_lockoutds_consumer(&l).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while events.consumer_info("lockoutd").await.map(|i| i.config.filter_subject).ok().as_deref()
        != Some("lockout.events.>")
    {
        assert!(std::time::Instant::now() < deadline, "lockoutd did not restore its consumer within 30 s");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    l.wait_folded(l.attempt("globex", "jo", Outcome::Failure, "192.0.2.12", None).await).await;
    assert_eq!(l.status("globex", "jo").await["failures"], 2);
}

/// The help-desk console's user: the tenant's service ops (recorded as its `caller`), reads of
/// the tenant's events and notices through named ordered consumers pinned to the tenant, and
/// nothing of another tenant, of lockoutd's consumer or of a notifier's.
#[tokio::test]
async fn the_console_reads_its_tenant_and_acts_as_its_admins_do() {
    use jetstream::consumer::pull;
    let d = Deploy::start().await;
    let console = d.connect("console_acme").await;
    let api = lockout_client::Client::new(console.clone()).with_jetstream_prefix(JS_API_PREFIX);
    let admin = lockout_client::Admin::new(&api.clone().with_timeout(Duration::from_secs(2))).retry_for(Duration::ZERO);
    let lock = lockout_client::lockout_proto::command::LockRequest {
        user: "alice".into(),
        actor: "sam".into(),
        reason: Some("help desk".into()),
        seconds: None,
    };
    admin.lock("acme", &lock).await.unwrap();
    let status = admin.status("acme", "alice").await.unwrap();
    assert!(status.locked);
    assert!(admin.status("globex", "alice").await.is_err(), "another tenant's service is out of reach");

    // Its tenant's events and notices, through ordered consumers with a name and one filter.
    let create = |stream: &'static str, filter: &str| {
        let (js, filter) = (api.jetstream().clone(), filter.to_owned());
        async move {
            let s = js.get_stream(stream).await.map_err(|e| e.to_string())?;
            let name = format!("console_{}", Uuid::now_v7().simple());
            let config = pull::OrderedConfig { name: Some(name), filter_subject: filter, ..Default::default() };
            tokio::time::timeout(Duration::from_secs(2), s.create_consumer(config))
                .await
                .map_err(|_| "no reply".to_owned())?
                .map_err(|e| e.to_string())
        }
    };
    for (stream, filter, first) in [
        ("LOCKOUT_EVENTS", "lockout.events.acme.u.YWxpY2U.*", "lockout.events.acme.u.YWxpY2U.lock"),
        ("LOCKOUT_NOTICES", "lockout.notices.acme.*", "lockout.notices.acme.locked"),
    ] {
        let mut msgs = create(stream, filter).await.unwrap().messages().await.unwrap();
        let m = tokio::time::timeout(Duration::from_secs(5), msgs.next()).await.unwrap().unwrap().unwrap();
        assert_eq!(m.subject.as_str(), first);
    }
    for (stream, filter) in [
        ("LOCKOUT_EVENTS", "lockout.events.globex.>"),
        ("LOCKOUT_EVENTS", "lockout.events.>"),
        ("LOCKOUT_NOTICES", "lockout.notices.globex.*"),
        ("LOCKOUT_NOTICES", "lockout.notices.>"),
    ] {
        assert!(create(stream, filter).await.is_err(), "a consumer of {filter} must be refused");
    }
    // Not lockoutd's consumer, not the notifier's; no events written.
    let notifier = d.connect("notifier_acme").await;
    let njs = imported_js(notifier);
    let own = pull::Config {
        durable_name: Some("notifier_acme".into()),
        filter_subject: "lockout.notices.acme.>".into(),
        ..Default::default()
    };
    njs.get_stream("LOCKOUT_NOTICES").await.unwrap().create_consumer(own).await.unwrap();
    denied(&console, "JS.lockout.API.CONSUMER.MSG.NEXT.LOCKOUT_NOTICES.notifier_acme").await;
    denied(&console, "JS.lockout.API.CONSUMER.MSG.NEXT.LOCKOUT_EVENTS.lockoutd").await;
    publish_denied(&console, "lockout.events.acme.u.YWxpY2U.attempt", attempt_bytes("acme", "alice")).await;
    d.stop().await;
}
