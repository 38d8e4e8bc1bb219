//! One JSON request to `<prefix>.svc.<tenant>.<op>` and its reply.

use std::time::Duration;

use async_nats::client::RequestErrorKind;
use async_nats::HeaderMap;
use lockout_proto::{codec, Tenant};
use serde::de::DeserializeOwned;
use serde::Serialize;
use uuid::Uuid;

use crate::{Client, Error};

/// Checks a tenant as the service would.
pub(crate) fn tenant(t: &str) -> Result<Tenant, Error> {
    Tenant::parse(t).map_err(|r| Error::Invalid(r.message))
}

impl Client {
    /// Sends `body` as JSON to `<prefix>.svc.<tenant>.<op>` and decodes the JSON reply, within
    /// the client's timeout; sent once (no `Nats-Msg-Id`). For an op this crate does not
    /// type, or a tool that handles retries itself; [`crate::Admin`] has every op typed.
    ///
    /// ```no_run
    /// # async fn f(client: &lockout_client::Client) -> Result<(), lockout_client::Error> {
    /// let digest: serde_json::Value = client.call("acme", "digest", &serde_json::json!({})).await?;
    /// # Ok(()) }
    /// ```
    pub async fn call<Q: Serialize, R: DeserializeOwned>(&self, tenant: &str, op: &str, body: &Q) -> Result<R, Error> {
        self.request(&self::tenant(tenant)?, op, body, None, self.timeout).await
    }

    /// Sends `body` as JSON to `op` of `tenant` (with `Nats-Msg-Id: msg_id` when given) and
    /// decodes the JSON reply, within `timeout`.
    pub(crate) async fn request<Q: Serialize, R: DeserializeOwned>(
        &self,
        tenant: &Tenant,
        op: &str,
        body: &Q,
        msg_id: Option<Uuid>,
        timeout: Duration,
    ) -> Result<R, Error> {
        let subject = self.subjects.svc(tenant, op);
        let mut headers = HeaderMap::new();
        headers.insert(codec::CONTENT_TYPE, codec::JSON);
        if let Some(id) = msg_id {
            headers.insert(codec::NATS_MSG_ID, id.to_string().as_str());
        }
        let payload = serde_json::to_vec(body).map_err(|e| Error::Invalid(format!("the {op} request: {e}")))?;
        let sent = self.nats.request_with_headers(subject.clone(), headers, payload.into());
        let reply = match tokio::time::timeout(timeout, sent).await {
            Err(_) => return Err(Error::Unavailable(format!("no reply from {subject} within {timeout:?}"))),
            Ok(Err(e)) => {
                return Err(match e.kind() {
                    RequestErrorKind::NoResponders => Error::Unavailable(format!("no responders on {subject}")),
                    RequestErrorKind::TimedOut => {
                        Error::Unavailable(format!("no reply from {subject} (may this NATS user publish to it?)"))
                    }
                    _ => Error::Nats(format!("request to {subject}: {e}")),
                })
            }
            Ok(Ok(r)) => r,
        };
        if let Some(code) = reply.headers.as_ref().and_then(|h| h.get(codec::SERVICE_ERROR_CODE)) {
            let message = reply
                .headers
                .as_ref()
                .and_then(|h| h.get(codec::SERVICE_ERROR))
                .map_or_else(|| "(no message)".to_owned(), |v| v.to_string());
            let code: u16 = code.as_str().parse().unwrap_or(500);
            return Err(if code == 503 {
                Error::Unavailable(format!("{op} failed (503): {message}"))
            } else {
                Error::Service { code, message }
            });
        }
        serde_json::from_slice(&reply.payload).map_err(|e| Error::Decode(format!("the reply of {subject}: {e}")))
    }
}
