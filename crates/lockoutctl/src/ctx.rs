//! The NATS connection and micro service requests.
//!
//! Requests go to `<prefix>.svc.<tenant>.<op>` in JSON, through `lockout-client`. A reply with
//! `Nats-Service-Error-Code` becomes an [`Exit`] whose code follows the service's (400 → 4,
//! 404 → 3, 503 → 6, 409 → 7, else 1) and whose message is the service's `Nats-Service-Error`.

use std::time::Duration;

use async_nats::jetstream;
use lockout_proto::{Subjects, Tenant, UserId};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::cli::Cli;
use crate::{exit, Exit};

/// What every command needs.
pub struct Ctx {
    pub client: async_nats::Client,
    pub js: jetstream::Context,
    pub subjects: Subjects,
    pub json: bool,
    pub timeout: Duration,
    /// The service's requests, through the client crate.
    pub api: lockout_client::Client,
}

impl Ctx {
    pub async fn connect(cli: &Cli) -> anyhow::Result<Ctx> {
        let subjects = Subjects::new(&cli.prefix).map_err(|e| Exit::usage(format!("--prefix: {e}")))?;
        cli.nats.validate().map_err(Exit::usage)?;
        let timeout = Duration::from_secs(cli.timeout.max(1));
        let opts = async_nats::ConnectOptions::new()
            .name("lockoutctl")
            .connection_timeout(timeout)
            .request_timeout(Some(timeout));
        let client = cli.nats.connect(opts).await?;
        let mut js = match &cli.js_api_prefix {
            Some(prefix) => jetstream::with_prefix(client.clone(), prefix),
            None => jetstream::new(client.clone()),
        };
        js.set_timeout(timeout);
        let api = lockout_client::Client::new(client.clone()).with_prefix(&cli.prefix)?.with_timeout(timeout);
        Ok(Ctx { client, js, subjects, json: cli.json, timeout, api })
    }

    /// Sends a JSON request to `<prefix>.svc.<tenant>.<op>` and decodes the JSON reply.
    /// Sends `op` page after page, `body(after)` with the previous reply's cursor, until a
    /// reply has no `next`; the items of every page, in order. `split` takes a reply apart
    /// into its items and its `next`.
    pub async fn pages<P: DeserializeOwned, T>(
        &self,
        tenant: &Tenant,
        op: &str,
        body: impl Fn(Option<&str>) -> serde_json::Value,
        split: impl Fn(P) -> (Vec<T>, Option<String>),
    ) -> anyhow::Result<Vec<T>> {
        let mut all = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let page: P = self.request(tenant, op, &body(after.as_deref())).await?;
            let (items, next) = split(page);
            all.extend(items);
            match next {
                Some(n) => after = Some(n),
                None => return Ok(all),
            }
        }
    }

    pub async fn request<Q: Serialize, R: DeserializeOwned>(
        &self,
        tenant: &Tenant,
        op: &str,
        body: &Q,
    ) -> anyhow::Result<R> {
        use lockout_client::Error;
        self.api.call(tenant.as_str(), op, body).await.map_err(|e| {
            let code = match &e {
                Error::Service { code: 400, .. } | Error::Invalid(_) => exit::BAD_REQUEST,
                Error::Service { code: 404, .. } => exit::NOT_FOUND,
                Error::Service { code: 409, .. } => exit::CONFLICT,
                Error::Unavailable(_) => exit::UNAVAILABLE,
                _ => exit::FAILURE,
            };
            let message = match e {
                Error::Service { code, message } => format!("{op} failed ({code}): {message}"),
                Error::Unavailable(m) if m.starts_with(&format!("{op} failed (")) => m,
                Error::Unavailable(m) => format!("{m}: is lockoutd running, and may this NATS user publish to {}? (a denied request is dropped by the server, not refused)", self.subjects.svc(tenant, op)),
                other => other.to_string(),
            };
            Exit::new(code, message).into()
        })
    }
}

/// Validates a tenant argument as the service would (exit 4 when it would refuse it).
pub fn tenant(s: &str) -> anyhow::Result<Tenant> {
    Tenant::parse(s).map_err(|r| Exit::bad_request(r.message))
}

/// Validates a user argument as the service would (exit 4 when it would refuse it).
pub fn user(s: &str) -> anyhow::Result<UserId> {
    UserId::parse(s).map_err(|r| Exit::bad_request(r.message))
}
