//! Clients of the lockout service (`lockoutd`) for the three kinds of program around it.
//!
//! - [`Gateway`], for auth gateways: [`Gateway::check`] asks whether a login may go ahead
//!   (the service's `status` with the login's source) within a deadline, falling back to a
//!   configured answer when the service does not answer; [`Gateway::record`] publishes the
//!   attempt's outcome to `LOCKOUT_EVENTS` from a bounded queue, retrying with the same
//!   `Nats-Msg-Id` while NATS is away.
//! - [`Notices`], for notifier services: a durable consumer of `LOCKOUT_NOTICES` that hands
//!   each notice to an async handler and acknowledges it only once the handler returned `Ok`,
//!   skipping notices it recorded as handled.
//! - [`Admin`], for admin tools: every op of the service, typed, writes retried with the same
//!   `Nats-Msg-Id` through a take-over's `503`s.
//!
//! All three share a [`Client`]: a NATS connection, the deployment's subject prefix and a
//! request timeout. The wire format is the public contract (`docs/protocol.md` of the
//! repository); programs in other languages speak it with any NATS client.
//!
//! ```no_run
//! use lockout_client::{Client, Gateway, GatewayConfig, Login};
//!
//! # async fn login(password_ok: impl Fn() -> bool) -> Result<bool, lockout_client::Error> {
//! let client = Client::connect("nats://127.0.0.1:4222").await?;
//! let gateway = Gateway::new(&client, GatewayConfig::default());
//! let login = Login::password("acme", "alice@example.com", "203.0.113.9");
//! if !gateway.check(&login).await?.allowed {
//!     return Ok(false); // refused before checking the password; recorded as `rejected`
//! }
//! let ok = password_ok();
//! gateway.record(&login, ok)?;
//! # Ok(ok)
//! # }
//! ```

mod admin;
mod error;
mod gateway;
mod notices;
mod request;

use std::time::Duration;

pub use admin::Admin;
pub use error::Error;
pub use gateway::{Decision, FailMode, Gateway, GatewayConfig, Login};
pub use lockout_proto;
pub use notices::{Handled, Notices, NoticesConfig};

use async_nats::jetstream;
use lockout_proto::Subjects;

/// How long a request waits for the service's reply unless told otherwise.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

/// A connection to the lockout service: the NATS client, the deployment's subject prefix
/// (`lockout` unless it was started with another `--prefix`) and the request timeout. Cheap
/// to clone; every clone shares the connection.
///
/// ```no_run
/// # async fn f() -> Result<(), lockout_client::Error> {
/// use std::time::Duration;
/// let client = lockout_client::Client::connect("nats://127.0.0.1:4222")
///     .await?
///     .with_prefix("lockout")?
///     .with_timeout(Duration::from_secs(2));
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Client {
    nats: async_nats::Client,
    js: jetstream::Context,
    subjects: Subjects,
    timeout: Duration,
}

impl Client {
    /// Connects to `url` (a comma-separated list of servers is tried in turn) with the default
    /// prefix and timeout. For credentials, TLS and the rest, connect with
    /// [`async_nats::ConnectOptions`] and use [`Client::new`].
    ///
    /// ```no_run
    /// # async fn f() -> Result<(), lockout_client::Error> {
    /// let client = lockout_client::Client::connect("nats://a:4222,nats://b:4222").await?;
    /// # Ok(()) }
    /// ```
    pub async fn connect(url: &str) -> Result<Client, Error> {
        let nats = async_nats::connect(url).await.map_err(|e| Error::Nats(format!("connecting to {url}: {e}")))?;
        Ok(Client::new(nats))
    }

    /// Wraps a NATS connection made elsewhere (with credentials, TLS, a name …).
    ///
    /// ```no_run
    /// # async fn f() -> Result<(), Box<dyn std::error::Error>> {
    /// let nats = async_nats::ConnectOptions::new().name("my-gateway").connect("nats://127.0.0.1:4222").await?;
    /// let client = lockout_client::Client::new(nats);
    /// # Ok(()) }
    /// ```
    pub fn new(nats: async_nats::Client) -> Client {
        let js = jetstream::new(nats.clone());
        Client { nats, js, subjects: Subjects::default(), timeout: DEFAULT_TIMEOUT }
    }

    /// The deployment's subject prefix (lockoutd's `--prefix`): subjects `<prefix>.events.…`,
    /// `<prefix>.svc.…`, streams `<PREFIX>_EVENTS` and `<PREFIX>_NOTICES`.
    ///
    /// ```
    /// # async fn f(client: lockout_client::Client) {
    /// assert!(client.clone().with_prefix("staging").is_ok());
    /// assert!(client.with_prefix("no dots.or spaces").is_err());
    /// # }
    /// ```
    pub fn with_prefix(mut self, prefix: &str) -> Result<Client, Error> {
        self.subjects = Subjects::new(prefix).map_err(|e| Error::Invalid(format!("prefix {prefix:?}: {e}")))?;
        Ok(self)
    }

    /// Reaches JetStream's API under `prefix` (e.g. `JS.lockout.API`), for an account that
    /// sees lockoutd's streams through imports rather than its own JetStream.
    ///
    /// ```
    /// # fn f(client: lockout_client::Client) -> lockout_client::Client {
    /// client.with_jetstream_prefix("JS.lockout.API")
    /// # }
    /// ```
    pub fn with_jetstream_prefix(mut self, prefix: &str) -> Client {
        self.js = jetstream::with_prefix(self.nats.clone(), prefix);
        self
    }

    /// How long a request waits for a reply (default [`DEFAULT_TIMEOUT`]). The gateway's
    /// `check` has a deadline of its own ([`GatewayConfig::deadline`]).
    ///
    /// ```
    /// # fn f(client: lockout_client::Client) -> lockout_client::Client {
    /// client.with_timeout(std::time::Duration::from_secs(2))
    /// # }
    /// ```
    pub fn with_timeout(mut self, timeout: Duration) -> Client {
        self.timeout = timeout;
        self
    }

    /// The NATS connection.
    ///
    /// ```
    /// # fn f(client: &lockout_client::Client) {
    /// let _state = client.nats().connection_state();
    /// # }
    /// ```
    pub fn nats(&self) -> &async_nats::Client {
        &self.nats
    }

    /// The JetStream context of the connection (streams, consumers).
    ///
    /// ```
    /// # fn f(client: &lockout_client::Client) {
    /// let _js = client.jetstream();
    /// # }
    /// ```
    pub fn jetstream(&self) -> &jetstream::Context {
        &self.js
    }

    /// The subjects and stream names of the deployment's prefix.
    ///
    /// ```
    /// # fn f(client: &lockout_client::Client) {
    /// assert_eq!(client.subjects().notices_stream(), "LOCKOUT_NOTICES");
    /// # }
    /// ```
    pub fn subjects(&self) -> &Subjects {
        &self.subjects
    }
}
