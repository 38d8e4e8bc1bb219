//! The NATS connection and micro service requests.
//!
//! Requests go to `<prefix>.svc.<tenant>.<op>` in JSON. A reply with `Nats-Service-Error-Code`
//! becomes an [`Exit`] whose code follows the service's (400 → 4, 404 → 3, 503 → 6, 409 → 7, else 1)
//! and whose message is the service's `Nats-Service-Error`.

use std::time::Duration;

use anyhow::Context as _;
use async_nats::jetstream;
use async_nats::HeaderMap;
use lockout_proto::codec;
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
        Ok(Ctx { client, js, subjects, json: cli.json, timeout })
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
        let subject = self.subjects.svc(tenant, op);
        let mut headers = HeaderMap::new();
        headers.insert(codec::CONTENT_TYPE, codec::JSON);
        let payload = serde_json::to_vec(body).expect("requests always encode");
        let reply = match tokio::time::timeout(
            self.timeout,
            self.client.request_with_headers(subject.clone(), headers, payload.into()),
        )
        .await
        {
            Err(_) => {
                return Err(Exit::new(
                    exit::UNAVAILABLE,
                    format!(
                        "no reply from {subject} within {} s: is lockoutd running, and may this NATS user publish to {subject} (a denied request is dropped by the server, not refused)?",
                        self.timeout.as_secs()
                    ),
                )
                .into())
            }
            Ok(Err(e)) => {
                use async_nats::client::RequestErrorKind;
                let (code, hint) = match e.kind() {
                    RequestErrorKind::NoResponders => (exit::UNAVAILABLE, "is lockoutd running?".to_owned()),
                    RequestErrorKind::TimedOut => (
                        exit::UNAVAILABLE,
                        format!("is lockoutd running, and may this NATS user publish to {subject}? A denied request is dropped by the server, not refused"),
                    ),
                    _ => (exit::FAILURE, "is lockoutd running?".to_owned()),
                };
                return Err(Exit::new(code, format!("request to {subject} failed: {e} ({hint})")).into());
            }
            Ok(Ok(r)) => r,
        };
        if let Some(h) = &reply.headers {
            if let Some(code) = h.get(codec::SERVICE_ERROR_CODE) {
                let message = h.get(codec::SERVICE_ERROR).map_or("(no message)", |v| v.as_str());
                let exit = match code.as_str() {
                    "400" => exit::BAD_REQUEST,
                    "404" => exit::NOT_FOUND,
                    "503" => exit::UNAVAILABLE,
                    "409" => exit::CONFLICT,
                    _ => exit::FAILURE,
                };
                return Err(Exit::new(exit, format!("{op} failed ({}): {message}", code.as_str())).into());
            }
        }
        serde_json::from_slice(&reply.payload)
            .with_context(|| format!("the reply of {subject} is not the JSON lockoutctl expects"))
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
