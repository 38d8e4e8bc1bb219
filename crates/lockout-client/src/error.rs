//! What can go wrong, by what the caller should do about it.

/// An error of the lockout client.
///
/// ```
/// use lockout_client::Error;
/// let e = Error::Service { code: 404, message: "no such user".into() };
/// assert!(!e.is_retryable());
/// assert!(Error::Unavailable("no reply within 5 s".into()).is_retryable());
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Bad input caught before anything was sent (a tenant, user or prefix the service would
    /// refuse): fix the input.
    #[error("invalid input: {0}")]
    Invalid(String),
    /// The service refused the request (`Nats-Service-Error-Code` 400, 404, 409 …): the
    /// message says why. A `503` is [`Error::Unavailable`] instead.
    #[error("the service refused the request ({code}): {message}")]
    Service { code: u16, message: String },
    /// No answer in time, no responders, or `503` (the service is starting, taking a
    /// partition over, or its store is failing): retry later; writes with the same
    /// `Nats-Msg-Id`, which [`crate::Admin`] does by itself.
    #[error("the lockout service is unavailable: {0}")]
    Unavailable(String),
    /// The gateway's queue of attempts to publish is full (NATS has been away long enough
    /// to fill it): the attempt was not queued.
    #[error("the gateway's queue of {capacity} attempts is full; this attempt was not recorded")]
    QueueFull { capacity: usize },
    /// NATS itself failed (connecting, creating a consumer …).
    #[error("NATS: {0}")]
    Nats(String),
    /// A reply or message that is not what the contract says.
    #[error("an unexpected reply: {0}")]
    Decode(String),
    /// The notices consumer's record of handled notices failed (its directory).
    #[error("the record of handled notices: {0}")]
    Handled(String),
}

impl Error {
    /// Whether the same request may succeed later ([`Error::Unavailable`]).
    ///
    /// ```
    /// assert!(!lockout_client::Error::Invalid("user".into()).is_retryable());
    /// ```
    pub fn is_retryable(&self) -> bool {
        matches!(self, Error::Unavailable(_))
    }
}
