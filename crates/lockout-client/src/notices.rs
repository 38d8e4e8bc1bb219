//! The notifier's side: each notice of `LOCKOUT_NOTICES` through a handler, acknowledged
//! once handled.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use async_nats::jetstream::consumer::{pull, AckPolicy, DeliverPolicy, PullConsumer};
use async_nats::jetstream::AckKind;
use futures::StreamExt;
use lockout_proto::codec::{self, Encoding};
use lockout_proto::notice::KINDS;
use lockout_proto::Notice;
use uuid::Uuid;

use crate::request::tenant;
use crate::{Client, Error};

/// Which notices a [`Notices`] consumer hands over, and how.
///
/// ```
/// let config = lockout_client::NoticesConfig::new("mailer", "/var/lib/mailer/handled")
///     .tenant("acme")
///     .kind("locked")
///     .kind("unlocked");
/// assert_eq!(config.kinds, ["locked", "unlocked"]);
/// ```
#[derive(Debug, Clone)]
pub struct NoticesConfig {
    /// The durable consumer's name: the server keeps its place across restarts. Two
    /// processes with one name share the notices (each gets some).
    pub durable: String,
    /// Only these tenants (none: every tenant).
    pub tenants: Vec<String>,
    /// Only these kinds: `locked`, `unlocked`, `mfa_reset`, `ip_blocked`, `ip_unblocked`
    /// (none: every kind).
    pub kinds: Vec<String>,
    /// Where the record of handled notices lives (a sled database, created if absent).
    pub handled_dir: PathBuf,
    /// How long a handled notice is remembered (default 7 days): longer than any redelivery
    /// of it can come.
    pub retain: Duration,
    /// How long after a handler's error the notice comes again (default 5 s).
    pub retry_after: Duration,
    /// How long the server waits for an acknowledgement before it delivers again (default
    /// 30 s); a handler still running is kept alive with progress acknowledgements.
    pub ack_wait: Duration,
    /// A consumer created now starts with the notices published from now on (default), or
    /// with every notice the stream holds (`true`). An existing consumer keeps its place.
    pub from_start: bool,
}

impl NoticesConfig {
    /// Every notice of every tenant for the durable consumer `durable`, handled ids kept in
    /// `handled_dir`.
    ///
    /// ```
    /// let c = lockout_client::NoticesConfig::new("pager", "./data/pager-handled");
    /// assert!(c.tenants.is_empty() && c.kinds.is_empty());
    /// ```
    pub fn new(durable: &str, handled_dir: impl AsRef<Path>) -> NoticesConfig {
        NoticesConfig {
            durable: durable.to_owned(),
            tenants: Vec::new(),
            kinds: Vec::new(),
            handled_dir: handled_dir.as_ref().to_path_buf(),
            retain: Duration::from_secs(7 * 24 * 3600),
            retry_after: Duration::from_secs(5),
            ack_wait: Duration::from_secs(30),
            from_start: false,
        }
    }

    /// Adds a tenant to hand over.
    ///
    /// ```
    /// let c = lockout_client::NoticesConfig::new("pager", "h").tenant("acme");
    /// assert_eq!(c.tenants, ["acme"]);
    /// ```
    pub fn tenant(mut self, tenant: &str) -> NoticesConfig {
        self.tenants.push(tenant.to_owned());
        self
    }

    /// Adds a kind to hand over.
    ///
    /// ```
    /// let c = lockout_client::NoticesConfig::new("pager", "h").kind("ip_blocked");
    /// assert_eq!(c.kinds, ["ip_blocked"]);
    /// ```
    pub fn kind(mut self, kind: &str) -> NoticesConfig {
        self.kinds.push(kind.to_owned());
        self
    }

    /// The consumer's subject filters.
    fn filters(&self, client: &Client) -> Result<Vec<String>, Error> {
        for k in &self.kinds {
            if !KINDS.contains(&k.as_str()) {
                return Err(Error::Invalid(format!("notice kind {k:?}: the kinds are {}", KINDS.join(", "))));
            }
        }
        for t in &self.tenants {
            tenant(t)?;
        }
        let star = ["*".to_owned()];
        let tenants = if self.tenants.is_empty() { &star[..] } else { &self.tenants[..] };
        let kinds = if self.kinds.is_empty() { &star[..] } else { &self.kinds[..] };
        let subjects = client.subjects();
        Ok(tenants.iter().flat_map(|t| kinds.iter().map(move |k| subjects.notice(t, k))).collect())
    }
}

/// The notices already handled, by id, in a small sled database: what lets [`Notices`] skip a
/// notice delivered again after its handler returned.
///
/// ```
/// let dir = std::env::temp_dir().join(format!("handled-doc-{}", std::process::id()));
/// let handled = lockout_client::Handled::open(&dir).unwrap();
/// let id = uuid::Uuid::now_v7();
/// assert!(!handled.contains(id).unwrap());
/// handled.insert(id).unwrap();
/// assert!(handled.contains(id).unwrap());
/// # drop(handled); std::fs::remove_dir_all(&dir).unwrap();
/// ```
#[derive(Clone)]
pub struct Handled {
    db: sled::Db,
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

fn store_err(e: sled::Error) -> Error {
    Error::Handled(e.to_string())
}

impl Handled {
    /// Opens (creating) the record in `dir`.
    pub fn open(dir: impl AsRef<Path>) -> Result<Handled, Error> {
        let dir = dir.as_ref();
        let db = sled::Config::new()
            .path(dir)
            .cache_capacity(4 << 20)
            .open()
            .map_err(|e| Error::Handled(format!("opening {}: {e}", dir.display())))?;
        Ok(Handled { db })
    }

    /// Whether notice `id` was handled.
    pub fn contains(&self, id: Uuid) -> Result<bool, Error> {
        self.db.contains_key(id.as_bytes()).map_err(store_err)
    }

    /// Records notice `id` as handled, durably (flushed to disk before it returns).
    pub fn insert(&self, id: Uuid) -> Result<(), Error> {
        self.db.insert(id.as_bytes(), &now_ms().to_be_bytes()).map_err(store_err)?;
        self.db.flush().map_err(store_err)?;
        Ok(())
    }

    /// Forgets ids handled longer than `retain` ago; how many.
    ///
    /// ```
    /// # let dir = std::env::temp_dir().join(format!("handled-prune-{}", std::process::id()));
    /// let handled = lockout_client::Handled::open(&dir).unwrap();
    /// handled.insert(uuid::Uuid::now_v7()).unwrap();
    /// assert_eq!(handled.prune(std::time::Duration::from_secs(3600)).unwrap(), 0);
    /// assert_eq!(handled.prune(std::time::Duration::ZERO).unwrap(), 1);
    /// # drop(handled); std::fs::remove_dir_all(&dir).unwrap();
    /// ```
    pub fn prune(&self, retain: Duration) -> Result<usize, Error> {
        let cutoff = now_ms().saturating_sub(retain.as_millis() as u64);
        let mut pruned = 0;
        for kv in self.db.iter() {
            let (k, v) = kv.map_err(store_err)?;
            let at = v.as_ref().try_into().map_or(0, u64::from_be_bytes);
            if at <= cutoff {
                self.db.remove(k).map_err(store_err)?;
                pruned += 1;
            }
        }
        self.db.flush().map_err(store_err)?;
        Ok(pruned)
    }

    /// How many ids are remembered.
    pub fn len(&self) -> usize {
        self.db.len()
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.db.is_empty()
    }
}

/// A notifier's consumer of `LOCKOUT_NOTICES`: [`run`](Notices::run) hands each notice to an
/// async handler and acknowledges it only after the handler returned `Ok`, recording its id
/// as handled first; a notice whose id is recorded is acknowledged without calling the
/// handler. A handler's `Err` has the notice delivered again after
/// [`NoticesConfig::retry_after`] (other notices go on meanwhile).
///
/// **When the handler runs twice for one notice**: only if the process dies (or the record's
/// disk write fails) between the handler's return and the record of its id. Make the handler
/// idempotent where that matters (the notice's `id` is stable: use it as the e-mail's
/// `Message-ID`, say). A notice the handler never returned `Ok` for is never acknowledged, so
/// none is lost; one that cannot be decoded (not the contract's) is logged and terminated.
///
/// ```no_run
/// # async fn f() -> Result<(), lockout_client::Error> {
/// use lockout_client::lockout_proto::Notice;
/// use lockout_client::{Client, Notices, NoticesConfig};
/// let client = Client::connect("nats://127.0.0.1:4222").await?;
/// let config = NoticesConfig::new("mailer", "./handled").kind("locked");
/// let notices = Notices::new(&client, config).await?;
/// notices
///     .run(|notice: Notice| async move {
///         if let Notice::Locked(n) = notice {
///             println!("to {}: {}", n.user, n.message);
///         }
///         Ok::<(), std::io::Error>(())
///     })
///     .await?;
/// # Ok(()) }
/// ```
pub struct Notices {
    consumer: PullConsumer,
    handled: Handled,
    config: NoticesConfig,
}

impl Notices {
    /// Opens the record of handled notices and creates the durable consumer (or finds it:
    /// then it keeps its place).
    pub async fn new(client: &Client, config: NoticesConfig) -> Result<Notices, Error> {
        let filters = config.filters(client)?;
        let name_ok = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '_';
        if config.durable.is_empty() || !config.durable.chars().all(name_ok) {
            return Err(Error::Invalid(format!(
                "consumer name {:?}: use letters, digits, `-` and `_`",
                config.durable
            )));
        }
        let handled = Handled::open(&config.handled_dir)?;
        handled.prune(config.retain)?;
        let stream_name = client.subjects().notices_stream();
        let stream = client
            .js
            .get_stream(&stream_name)
            .await
            .map_err(|e| Error::Nats(format!("looking up {stream_name}: {e}")))?;
        let consumer = stream
            .get_or_create_consumer(
                &config.durable,
                pull::Config {
                    durable_name: Some(config.durable.clone()),
                    description: Some("lockout-client notices".into()),
                    ack_policy: AckPolicy::Explicit,
                    ack_wait: config.ack_wait,
                    deliver_policy: if config.from_start { DeliverPolicy::All } else { DeliverPolicy::New },
                    filter_subjects: filters,
                    ..Default::default()
                },
            )
            .await
            .map_err(|e| Error::Nats(format!("the consumer {} of {stream_name}: {e}", config.durable)))?;
        Ok(Notices { consumer, handled, config })
    }

    /// The record of handled notices.
    pub fn handled(&self) -> &Handled {
        &self.handled
    }

    /// Hands every notice to `handler`, forever (until an error of the record or of NATS
    /// that retrying does not mend).
    pub async fn run<F, Fut, E>(&self, handler: F) -> Result<(), Error>
    where
        F: FnMut(Notice) -> Fut,
        Fut: Future<Output = Result<(), E>>,
        E: std::fmt::Display,
    {
        self.run_until(handler, std::future::pending()).await
    }

    /// [`Notices::run`] until `stop` completes (between two notices, never inside a
    /// handler).
    ///
    /// ```no_run
    /// # async fn f(notices: lockout_client::Notices) -> Result<(), lockout_client::Error> {
    /// let stop = async { let _ = tokio::signal::ctrl_c().await; };
    /// notices.run_until(|n| async move { println!("{}", n.kind()); Ok::<(), String>(()) }, stop).await?;
    /// # Ok(()) }
    /// ```
    pub async fn run_until<F, Fut, E>(&self, mut handler: F, stop: impl Future<Output = ()>) -> Result<(), Error>
    where
        F: FnMut(Notice) -> Fut,
        Fut: Future<Output = Result<(), E>>,
        E: std::fmt::Display,
    {
        tokio::pin!(stop);
        let mut pruned_at = Instant::now();
        loop {
            let mut messages = match self.consumer.messages().await {
                Ok(m) => m,
                Err(e) => {
                    tracing::warn!(error = %e, "Reading notices failed; retrying.");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            };
            loop {
                let next = tokio::select! {
                    _ = &mut stop => return Ok(()),
                    next = messages.next() => next,
                };
                match next {
                    None => break,
                    Some(Err(e)) => tracing::warn!(error = %e, "Reading notices failed; retrying."),
                    Some(Ok(msg)) => self.handle(msg, &mut handler).await?,
                }
                if pruned_at.elapsed() > Duration::from_secs(3600) {
                    self.handled.prune(self.config.retain)?;
                    pruned_at = Instant::now();
                }
            }
        }
    }

    async fn handle<F, Fut, E>(&self, msg: async_nats::jetstream::Message, handler: &mut F) -> Result<(), Error>
    where
        F: FnMut(Notice) -> Fut,
        Fut: Future<Output = Result<(), E>>,
        E: std::fmt::Display,
    {
        let kind = msg.subject.as_str().rsplit('.').next().unwrap_or_default();
        let content_type = msg.headers.as_ref().and_then(|h| h.get(codec::CONTENT_TYPE)).map(|v| v.as_str());
        let decoded = Encoding::from_content_type(content_type).and_then(|enc| Notice::decode(kind, enc, &msg.payload));
        let notice = match decoded {
            Ok(n) => n,
            Err(r) => {
                tracing::error!(subject = %msg.subject, error = %r.message, "Not a notice of the contract; terminated.");
                let _ = msg.ack_with(AckKind::Term).await;
                return Ok(());
            }
        };
        let id = notice.id();
        if self.handled.contains(id)? {
            let _ = msg.ack().await;
            return Ok(());
        }
        let run = handler(notice);
        tokio::pin!(run);
        let mut alive = tokio::time::interval((self.config.ack_wait / 2).max(Duration::from_millis(100)));
        alive.tick().await;
        let result = loop {
            tokio::select! {
                r = &mut run => break r,
                _ = alive.tick() => { let _ = msg.ack_with(AckKind::Progress).await; }
            }
        };
        match result {
            Ok(()) => {
                self.handled.insert(id)?;
                if let Err(e) = msg.double_ack().await {
                    // Delivered again later, then skipped as handled.
                    tracing::warn!(error = %e, "Acknowledging a handled notice failed.");
                }
            }
            Err(e) => {
                tracing::warn!(notice = %id, error = %e, "The handler failed; the notice comes again.");
                let _ = msg.ack_with(AckKind::Nak(Some(self.config.retry_after))).await;
            }
        }
        Ok(())
    }
}
