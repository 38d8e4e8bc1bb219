//! The auth gateway's side: ask before checking a secret, then record what happened.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_nats::jetstream;
use async_nats::HeaderMap;
use bytes::Bytes;
use lockout_proto::codec::{self, Encoding};
use lockout_proto::command::StatusRequest;
use lockout_proto::event::{Account, Attempt, Factor, Outcome};
use lockout_proto::status::BlockedBy;
use lockout_proto::{EventKind, Status, UserId};
use opentelemetry::metrics::Counter;
use opentelemetry::KeyValue;
use tokio::sync::{mpsc, Notify};
use uuid::Uuid;

use crate::request::tenant;
use crate::{Client, Error};

/// What [`Gateway::check`] answers when the service does not answer within the deadline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FailMode {
    /// Let the login go ahead (the password is still checked): an outage of the lockout
    /// service locks nobody out, and the attempts recorded meanwhile are folded afterwards.
    #[default]
    Open,
    /// Refuse the login: nobody gets in while the service cannot say who is locked.
    Closed,
}

/// How a [`Gateway`] behaves.
///
/// ```
/// use std::time::Duration;
/// use lockout_client::{FailMode, GatewayConfig};
/// let config = GatewayConfig { deadline: Duration::from_millis(100), on_timeout: FailMode::Closed, ..Default::default() };
/// assert_eq!(config.queue_capacity, 10_000);
/// ```
#[derive(Debug, Clone, Copy)]
pub struct GatewayConfig {
    /// How long [`Gateway::check`] waits for the service (default 250 ms).
    pub deadline: Duration,
    /// The answer when it did not answer in time (default [`FailMode::Open`]).
    pub on_timeout: FailMode,
    /// Attempts waiting to be published, at most (default 10,000). A full queue refuses
    /// more ([`Error::QueueFull`]) rather than grow: memory stays bounded while NATS is away.
    pub queue_capacity: usize,
}

impl Default for GatewayConfig {
    fn default() -> GatewayConfig {
        GatewayConfig { deadline: Duration::from_millis(250), on_timeout: FailMode::Open, queue_capacity: 10_000 }
    }
}

/// One login as the gateway saw it: whose, from where, with which secret.
///
/// ```
/// use lockout_client::Login;
/// use lockout_client::lockout_proto::event::Account;
/// let login = Login::password("acme", "sync@acme.example", "198.51.100.7")
///     .with_client("erp-sync/2.1")
///     .with_account(Account::Api);
/// assert_eq!(login.client.as_deref(), Some("erp-sync/2.1"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Login {
    pub tenant: String,
    pub user: String,
    /// The client's address as the gateway saw it (IPv4 or IPv6).
    pub ip: String,
    /// The client program (`User-Agent`, an integration's name …), when known.
    pub client: Option<String>,
    pub account: Option<Account>,
    /// Which secret is presented (default password).
    pub factor: Factor,
    /// Which credential (an API key's id …), when there are several.
    pub credential: Option<String>,
    /// Whether a success completes the sign-in (false: an MFA step follows). Default true.
    pub is_final: bool,
}

impl Login {
    /// A password login of `user` of `tenant` from `ip`.
    ///
    /// ```
    /// let login = lockout_client::Login::password("acme", "alice@example.com", "203.0.113.9");
    /// assert!(login.is_final);
    /// ```
    pub fn password(tenant: &str, user: &str, ip: &str) -> Login {
        Login {
            tenant: tenant.to_owned(),
            user: user.to_owned(),
            ip: ip.to_owned(),
            client: None,
            account: None,
            factor: Factor::Password,
            credential: None,
            is_final: true,
        }
    }

    /// The client program.
    ///
    /// ```
    /// let login = lockout_client::Login::password("acme", "bob", "192.0.2.1").with_client("Outlook/16");
    /// # assert!(login.client.is_some());
    /// ```
    pub fn with_client(mut self, client: &str) -> Login {
        self.client = Some(client.to_owned());
        self
    }

    /// The kind of account.
    ///
    /// ```
    /// use lockout_client::lockout_proto::event::Account;
    /// let login = lockout_client::Login::password("acme", "bob", "192.0.2.1").with_account(Account::Portal);
    /// # assert!(login.account.is_some());
    /// ```
    pub fn with_account(mut self, account: Account) -> Login {
        self.account = Some(account);
        self
    }

    /// Which secret is presented.
    ///
    /// ```
    /// use lockout_client::lockout_proto::event::Factor;
    /// let login = lockout_client::Login::password("acme", "bob", "192.0.2.1").with_factor(Factor::Mfa);
    /// # assert_eq!(login.factor, Factor::Mfa);
    /// ```
    pub fn with_factor(mut self, factor: Factor) -> Login {
        self.factor = factor;
        self
    }

    /// The attempt of this login with `outcome`, a new id and the time now.
    ///
    /// ```
    /// use lockout_client::lockout_proto::event::Outcome;
    /// let a = lockout_client::Login::password("acme", "bob", "192.0.2.1").attempt(Outcome::Failure);
    /// assert_eq!(a.source_ip, "192.0.2.1");
    /// ```
    pub fn attempt(&self, outcome: Outcome) -> Attempt {
        let at = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
        Attempt {
            id: Uuid::now_v7(),
            at,
            tenant: self.tenant.as_str().into(),
            user: self.user.as_str().into(),
            outcome,
            factor: self.factor,
            source_ip: self.ip.as_str().into(),
            client: self.client.as_deref().map(Into::into),
            credential: self.credential.as_deref().map(Into::into),
            account: self.account,
            is_final: self.is_final,
        }
    }
}

/// The answer of [`Gateway::check`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// Whether the login may go ahead to the password check.
    pub allowed: bool,
    /// What refuses it (the account, the IP, an unfamiliar source, the client), when known.
    pub blocked_by: Option<BlockedBy>,
    /// The service's answer; `None` when it did not answer in time.
    pub status: Option<Status>,
    /// The service did not answer in time: `allowed` is the configured [`FailMode`].
    pub fallback: bool,
}

/// An attempt waiting to be published.
struct Queued {
    subject: String,
    id: Uuid,
    payload: Bytes,
}

/// What the gateway and its publisher share.
struct Shared {
    /// Attempts queued and not yet acknowledged by JetStream.
    pending: AtomicUsize,
    published: Notify,
    fallbacks: AtomicU64,
    dropped: AtomicU64,
    fallback_metric: Counter<u64>,
    dropped_metric: Counter<u64>,
}

/// An auth gateway's client: [`check`](Gateway::check) before verifying a secret,
/// [`record`](Gateway::record) after.
///
/// Recording is asynchronous: attempts go into a bounded in-memory queue that a task
/// publishes to `LOCKOUT_EVENTS` in order, each with `Nats-Msg-Id` = its id, retried with the
/// same id until JetStream acknowledges it (the server drops a copy it already stored within
/// its 2-minute duplicate window). **What is lost when the process dies**: every attempt still
/// in the queue, that is not yet acknowledged; up to [`GatewayConfig::queue_capacity`] of them
/// if NATS was away long enough to fill it. Call [`Gateway::flush`] before a graceful exit.
///
/// Metrics (OpenTelemetry, meter `lockout-client`, a no-op until the program installs a
/// provider): `lockout_client.check.fallbacks` (attribute `answer`: `allowed` | `refused`)
/// and `lockout_client.record.dropped` (attempts refused by a full queue).
///
/// ```no_run
/// # async fn f() -> Result<(), lockout_client::Error> {
/// use lockout_client::{Client, Gateway, GatewayConfig, Login};
/// let client = Client::connect("nats://127.0.0.1:4222").await?;
/// let gateway = Gateway::new(&client, GatewayConfig::default());
/// let login = Login::password("acme", "alice@example.com", "203.0.113.9");
/// let decision = gateway.check(&login).await?;
/// if decision.allowed {
///     let password_ok = true; // verify the password here
///     gateway.record(&login, password_ok)?;
/// }
/// gateway.flush().await;
/// # Ok(()) }
/// ```
pub struct Gateway {
    client: Client,
    config: GatewayConfig,
    queue: mpsc::Sender<Queued>,
    shared: Arc<Shared>,
}

impl Gateway {
    /// A gateway publishing through `client`; starts its publisher task (call within a tokio
    /// runtime). The task publishes what is queued even after the gateway is dropped, while
    /// the runtime lives.
    pub fn new(client: &Client, config: GatewayConfig) -> Gateway {
        let meter = opentelemetry::global::meter("lockout-client");
        let shared = Arc::new(Shared {
            pending: AtomicUsize::new(0),
            published: Notify::new(),
            fallbacks: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            fallback_metric: meter
                .u64_counter("lockout_client.check.fallbacks")
                .with_description("checks answered by the fail mode: the service did not answer in time")
                .build(),
            dropped_metric: meter
                .u64_counter("lockout_client.record.dropped")
                .with_description("attempts not recorded: the gateway's queue was full")
                .build(),
        });
        let (queue, rx) = mpsc::channel(config.queue_capacity.max(1));
        tokio::spawn(publish_loop(client.js.clone(), rx, shared.clone()));
        Gateway { client: client.clone(), config, queue, shared }
    }

    /// Whether `login` may go ahead: the service's `status` with the login's source, within
    /// [`GatewayConfig::deadline`]. A refusal is recorded as a `rejected` attempt (counted
    /// on no counter, kept for audit), so do not record that login again. When the service
    /// does not answer in time the decision is the configured [`FailMode`] with `fallback`
    /// set, counted in `lockout_client.check.fallbacks`, and nothing is recorded.
    ///
    /// Errors only for input the service would refuse (an invalid tenant or user) or a
    /// request it refused.
    ///
    /// ```no_run
    /// # async fn f(gateway: &lockout_client::Gateway) -> Result<(), lockout_client::Error> {
    /// let login = lockout_client::Login::password("acme", "alice@example.com", "203.0.113.9");
    /// let d = gateway.check(&login).await?;
    /// if !d.allowed {
    ///     println!("refused: {:?}", d.blocked_by);
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn check(&self, login: &Login) -> Result<Decision, Error> {
        let t = tenant(&login.tenant)?;
        UserId::parse(&login.user).map_err(|r| Error::Invalid(r.message))?;
        let body = StatusRequest {
            user: login.user.clone(),
            ip: Some(login.ip.as_str().into()),
            client: login.client.as_deref().map(Into::into),
            account: login.account,
        };
        match self.client.request::<_, Status>(&t, "status", &body, None, self.config.deadline).await {
            Ok(status) => {
                if !status.allowed {
                    if let Err(e) = self.record_attempt(login.attempt(Outcome::Rejected)) {
                        tracing::warn!(error = %e, "The refused attempt was not recorded.");
                    }
                }
                Ok(Decision {
                    allowed: status.allowed,
                    blocked_by: status.blocked_by,
                    status: Some(status),
                    fallback: false,
                })
            }
            Err(e @ (Error::Invalid(_) | Error::Service { .. })) => Err(e),
            Err(e) => {
                let allowed = self.config.on_timeout == FailMode::Open;
                tracing::warn!(error = %e, allowed, "The lockout service did not answer; using the fail mode.");
                self.shared.fallbacks.fetch_add(1, Ordering::Relaxed);
                let answer = if allowed { "allowed" } else { "refused" };
                self.shared.fallback_metric.add(1, &[KeyValue::new("answer", answer)]);
                Ok(Decision { allowed, blocked_by: None, status: None, fallback: true })
            }
        }
    }

    /// Records that `login` succeeded (`ok`) or failed the secret check; returns the
    /// attempt's id. Queued, not yet published: see [`Gateway`] for what that means.
    ///
    /// ```no_run
    /// # fn f(gateway: &lockout_client::Gateway) -> Result<(), lockout_client::Error> {
    /// let login = lockout_client::Login::password("acme", "alice@example.com", "203.0.113.9");
    /// let id = gateway.record(&login, false)?;
    /// # Ok(()) }
    /// ```
    pub fn record(&self, login: &Login, ok: bool) -> Result<Uuid, Error> {
        let attempt = login.attempt(if ok { Outcome::Success } else { Outcome::Failure });
        let id = attempt.id;
        self.record_attempt(attempt)?;
        Ok(id)
    }

    /// Queues `attempt` as it is (its own id and time) for publishing.
    ///
    /// ```no_run
    /// # fn f(gateway: &lockout_client::Gateway) -> Result<(), lockout_client::Error> {
    /// use lockout_client::lockout_proto::event::Outcome;
    /// let attempt = lockout_client::Login::password("acme", "bob", "192.0.2.1").attempt(Outcome::Success);
    /// gateway.record_attempt(attempt)?;
    /// # Ok(()) }
    /// ```
    pub fn record_attempt(&self, attempt: Attempt) -> Result<(), Error> {
        let t = tenant(&attempt.tenant)?;
        let user = UserId::parse(&attempt.user).map_err(|r| Error::Invalid(r.message))?;
        let subject = self.client.subjects.user_event(&t, &user, EventKind::Attempt);
        let payload = codec::encode(Encoding::Json, &attempt).into();
        self.shared.pending.fetch_add(1, Ordering::AcqRel);
        match self.queue.try_send(Queued { subject, id: attempt.id, payload }) {
            Ok(()) => Ok(()),
            Err(_) => {
                self.done(1);
                self.shared.dropped.fetch_add(1, Ordering::Relaxed);
                self.shared.dropped_metric.add(1, &[]);
                Err(Error::QueueFull { capacity: self.config.queue_capacity })
            }
        }
    }

    fn done(&self, n: usize) {
        self.shared.pending.fetch_sub(n, Ordering::AcqRel);
        self.shared.published.notify_waiters();
    }

    /// Waits until every attempt queued so far is acknowledged by JetStream (forever while
    /// NATS is away: wrap it in a timeout to bound a shutdown).
    ///
    /// ```no_run
    /// # async fn f(gateway: lockout_client::Gateway) {
    /// let _ = tokio::time::timeout(std::time::Duration::from_secs(5), gateway.flush()).await;
    /// # }
    /// ```
    pub async fn flush(&self) {
        loop {
            let published = self.shared.published.notified();
            tokio::pin!(published);
            published.as_mut().enable();
            if self.shared.pending.load(Ordering::Acquire) == 0 {
                return;
            }
            published.await;
        }
    }

    /// Attempts queued and not yet acknowledged.
    ///
    /// ```
    /// # fn f(gateway: &lockout_client::Gateway) { assert!(gateway.queued() <= 10_000); }
    /// ```
    pub fn queued(&self) -> usize {
        self.shared.pending.load(Ordering::Acquire)
    }

    /// Checks answered by the fail mode so far (also the metric `lockout_client.check.fallbacks`).
    ///
    /// ```
    /// # fn f(gateway: &lockout_client::Gateway) { let _n: u64 = gateway.fallbacks(); }
    /// ```
    pub fn fallbacks(&self) -> u64 {
        self.shared.fallbacks.load(Ordering::Relaxed)
    }

    /// Attempts refused by a full queue so far (also `lockout_client.record.dropped`).
    ///
    /// ```
    /// # fn f(gateway: &lockout_client::Gateway) { let _n: u64 = gateway.dropped(); }
    /// ```
    pub fn dropped(&self) -> u64 {
        self.shared.dropped.load(Ordering::Relaxed)
    }
}

/// Most attempts published before their acknowledgements are awaited.
const WINDOW: usize = 256;
/// The longest pause between two tries while JetStream does not acknowledge.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Publishes the queue in order, a window at a time; an attempt not acknowledged is sent
/// again with the same `Nats-Msg-Id`, with the ones after it, until each is.
async fn publish_loop(js: jetstream::Context, mut rx: mpsc::Receiver<Queued>, shared: Arc<Shared>) {
    let mut window: Vec<Queued> = Vec::with_capacity(WINDOW);
    loop {
        if rx.recv_many(&mut window, WINDOW).await == 0 {
            return; // the gateway is gone and its queue is empty
        }
        let mut backoff = Duration::from_millis(50);
        while !window.is_empty() {
            let acked = publish_window(&js, &window).await;
            window.drain(..acked);
            shared.pending.fetch_sub(acked, Ordering::AcqRel);
            shared.published.notify_waiters();
            if !window.is_empty() {
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
}

/// Publishes `window` and awaits the acknowledgements in order; how many from the start were
/// acknowledged.
async fn publish_window(js: &jetstream::Context, window: &[Queued]) -> usize {
    let mut acks = Vec::with_capacity(window.len());
    for q in window {
        let mut headers = HeaderMap::new();
        headers.insert(codec::CONTENT_TYPE, codec::JSON);
        headers.insert(codec::NATS_MSG_ID, q.id.to_string().as_str());
        match js.publish_with_headers(q.subject.clone(), headers, q.payload.clone()).await {
            Ok(ack) => acks.push(ack),
            Err(e) => {
                tracing::warn!(error = %e, "Publishing an attempt failed; retrying with the same id.");
                break;
            }
        }
    }
    let mut acked = 0;
    for ack in acks {
        match ack.await {
            Ok(_) => acked += 1,
            Err(e) => {
                tracing::warn!(error = %e, "An attempt was not acknowledged; retrying with the same id.");
                break;
            }
        }
    }
    acked
}
