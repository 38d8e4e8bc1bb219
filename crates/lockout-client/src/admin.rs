//! Every op of the service, typed, for admin tools and consoles.

use std::time::{Duration, Instant};

use lockout_proto::command::{
    DigestReply, DigestRequest, ExplainReply, ExplainRequest, HealthReply, HealthRequest, IpBlocksReply,
    IpBlocksRequest, IpStatusReply, IpStatusRequest, IpUnblockRequest, LockRequest, LockedReply, LockedRequest,
    MfaResetRequest, PasswordResetRequest, PolicyGetRequest, PolicySetRequest, StatusRequest, UnlockManyReply,
    UnlockManyRequest, UnlockRequest,
};
use lockout_proto::{Policy, Status, WriteReply};
use serde::de::DeserializeOwned;
use serde::Serialize;
use uuid::Uuid;

use crate::request::tenant;
use crate::{Client, Error};

/// How long [`Admin`] retries a write through `503`s by default: a take-over answers
/// within the lease plus a catch-up.
pub const DEFAULT_RETRY_FOR: Duration = Duration::from_secs(30);

/// The service's ops (`<prefix>.svc.<tenant>.<op>`, JSON), typed.
///
/// Every write (`unlock`, `lock`, `mfa_reset`, `password_reset`, `policy_set`,
/// `ip_unblock`, `unlock_many`) is sent with a new `Nats-Msg-Id` and, while the service
/// answers `503`, does not answer, or has no responders (a restart, a partition being taken
/// over), sent again with the same id for up to [`Admin::retry_for`]: the service appends
/// each write's event once, whichever copy it sees. Reads are sent once. The writes' `actor`
/// is the person; the NATS user the client connected as is what the service records as
/// `caller`.
///
/// ```no_run
/// # async fn f() -> Result<(), lockout_client::Error> {
/// use lockout_client::{Admin, Client};
/// use lockout_client::lockout_proto::command::UnlockRequest;
/// let admin = Admin::new(&Client::connect("nats://127.0.0.1:4222").await?);
/// let status = admin.status("acme", "alice@example.com").await?;
/// if status.locked {
///     let unlock = UnlockRequest {
///         user: "alice@example.com".into(),
///         actor: "helpdesk:sam".into(),
///         reason: Some("called the help desk".into()),
///         lock_event: None,
///     };
///     let reply = admin.unlock("acme", &unlock).await?;
///     assert!(!reply.locked);
/// }
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Admin {
    client: Client,
    retry_for: Duration,
}

impl Admin {
    /// Admin ops through `client`, writes retried for [`DEFAULT_RETRY_FOR`].
    ///
    /// ```no_run
    /// # async fn f(client: lockout_client::Client) {
    /// let admin = lockout_client::Admin::new(&client);
    /// # }
    /// ```
    pub fn new(client: &Client) -> Admin {
        Admin { client: client.clone(), retry_for: DEFAULT_RETRY_FOR }
    }

    /// How long a write is retried through `503`s and timeouts (zero: sent once).
    ///
    /// ```no_run
    /// # fn f(admin: lockout_client::Admin) -> lockout_client::Admin {
    /// admin.retry_for(std::time::Duration::from_secs(10))
    /// # }
    /// ```
    pub fn retry_for(mut self, d: Duration) -> Admin {
        self.retry_for = d;
        self
    }

    async fn read<Q: Serialize, R: DeserializeOwned>(&self, t: &str, op: &str, body: &Q) -> Result<R, Error> {
        self.client.request(&tenant(t)?, op, body, None, self.client.timeout).await
    }

    /// Sends a write with one `Nats-Msg-Id`, again while the service is unavailable.
    async fn write<Q: Serialize, R: DeserializeOwned>(&self, t: &str, op: &str, body: &Q) -> Result<R, Error> {
        let t = tenant(t)?;
        let id = Uuid::now_v7();
        let until = Instant::now() + self.retry_for;
        let mut pause = Duration::from_millis(100);
        loop {
            match self.client.request(&t, op, body, Some(id), self.client.timeout).await {
                Err(e) if e.is_retryable() && Instant::now() + pause < until => {
                    tracing::debug!(op, error = %e, "Retrying a write with the same Nats-Msg-Id.");
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_secs(2));
                }
                r => return r,
            }
        }
    }

    /// A user's lockout state (`status` without a source: the account-wide lock).
    ///
    /// ```no_run
    /// # async fn f(admin: &lockout_client::Admin) -> Result<(), lockout_client::Error> {
    /// let s = admin.status("acme", "alice@example.com").await?;
    /// println!("{} failures of {}", s.failures, s.max_failures);
    /// # Ok(()) }
    /// ```
    pub async fn status(&self, tenant: &str, user: &str) -> Result<Status, Error> {
        let body = StatusRequest { user: user.to_owned(), ip: None, client: None, account: None };
        self.read(tenant, "status", &body).await
    }

    /// `status` with a source (`ip`, `client`, `account`): whether such an attempt may go
    /// ahead, and what refuses it.
    ///
    /// ```no_run
    /// # async fn f(admin: &lockout_client::Admin) -> Result<(), lockout_client::Error> {
    /// use lockout_client::lockout_proto::command::StatusRequest;
    /// let q = StatusRequest { user: "bob".into(), ip: Some("192.0.2.1".into()), client: None, account: None };
    /// let s = admin.status_of("acme", &q).await?;
    /// # Ok(()) }
    /// ```
    pub async fn status_of(&self, tenant: &str, request: &StatusRequest) -> Result<Status, Error> {
        self.read(tenant, "status", request).await
    }

    /// One page of the tenant's locked users (`limit` 1–1000, default 100; `after`: the
    /// previous page's `next`).
    ///
    /// ```no_run
    /// # async fn f(admin: &lockout_client::Admin) -> Result<(), lockout_client::Error> {
    /// let page = admin.locked("acme", Some(50), None).await?;
    /// if let Some(next) = page.next {
    ///     let _more = admin.locked("acme", Some(50), Some(next)).await?;
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn locked(&self, tenant: &str, limit: Option<u32>, after: Option<String>) -> Result<LockedReply, Error> {
        self.read(tenant, "locked", &LockedRequest { limit, after }).await
    }

    /// Every locked user of the tenant, page after page.
    ///
    /// ```no_run
    /// # async fn f(admin: &lockout_client::Admin) -> Result<(), lockout_client::Error> {
    /// for s in admin.all_locked("acme").await? {
    ///     println!("{} since {:?}", s.user, s.locked_at);
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn all_locked(&self, tenant: &str) -> Result<Vec<Status>, Error> {
        let mut all = Vec::new();
        let mut after = None;
        loop {
            let page = self.locked(tenant, Some(lockout_proto::command::LOCKED_MAX_LIMIT), after).await?;
            all.extend(page.users);
            match page.next {
                Some(n) => after = Some(n),
                None => return Ok(all),
            }
        }
    }

    /// Why the user is (or is not) locked: the counted failures, their sources, the policy.
    ///
    /// ```no_run
    /// # async fn f(admin: &lockout_client::Admin) -> Result<(), lockout_client::Error> {
    /// let e = admin.explain("acme", "alice@example.com").await?;
    /// println!("{}", e.reason);
    /// # Ok(()) }
    /// ```
    pub async fn explain(&self, tenant: &str, user: &str) -> Result<ExplainReply, Error> {
        self.read(tenant, "explain", &ExplainRequest { user: user.into() }).await
    }

    /// Ends the user's lock (with `lock_event`: only that lock, else `409`).
    ///
    /// ```no_run
    /// # async fn f(admin: &lockout_client::Admin) -> Result<(), lockout_client::Error> {
    /// use lockout_client::lockout_proto::command::UnlockRequest;
    /// let r = UnlockRequest { user: "bob".into(), actor: "helpdesk:sam".into(), reason: Some("called in".into()), lock_event: None };
    /// admin.unlock("acme", &r).await?;
    /// # Ok(()) }
    /// ```
    pub async fn unlock(&self, tenant: &str, request: &UnlockRequest) -> Result<WriteReply, Error> {
        self.write(tenant, "unlock", request).await
    }

    /// Locks the user (for `seconds`, or until unlocked).
    ///
    /// ```no_run
    /// # async fn f(admin: &lockout_client::Admin) -> Result<(), lockout_client::Error> {
    /// use lockout_client::lockout_proto::command::LockRequest;
    /// let r = LockRequest { user: "bob".into(), actor: "soc:kim".into(), reason: Some("phished".into()), seconds: None };
    /// admin.lock("acme", &r).await?;
    /// # Ok(()) }
    /// ```
    pub async fn lock(&self, tenant: &str, request: &LockRequest) -> Result<WriteReply, Error> {
        self.write(tenant, "lock", request).await
    }

    /// Resets the user's MFA enrolment.
    ///
    /// ```no_run
    /// # async fn f(admin: &lockout_client::Admin) -> Result<(), lockout_client::Error> {
    /// use lockout_client::lockout_proto::command::MfaResetRequest;
    /// let r = MfaResetRequest { user: "bob".into(), actor: "helpdesk:sam".into(), reason: None };
    /// admin.mfa_reset("acme", &r).await?;
    /// # Ok(()) }
    /// ```
    pub async fn mfa_reset(&self, tenant: &str, request: &MfaResetRequest) -> Result<WriteReply, Error> {
        self.write(tenant, "mfa_reset", request).await
    }

    /// Reports a verified password change (ends a lock the password's failures caused).
    ///
    /// ```no_run
    /// # async fn f(admin: &lockout_client::Admin) -> Result<(), lockout_client::Error> {
    /// use lockout_client::lockout_proto::command::PasswordResetRequest;
    /// use lockout_client::lockout_proto::event::ResetMethod;
    /// let r = PasswordResetRequest { user: "bob".into(), method: ResetMethod::SelfService, actor: None };
    /// admin.password_reset("acme", &r).await?;
    /// # Ok(()) }
    /// ```
    pub async fn password_reset(&self, tenant: &str, request: &PasswordResetRequest) -> Result<WriteReply, Error> {
        self.write(tenant, "password_reset", request).await
    }

    /// The tenant's policy, defaults filled in.
    ///
    /// ```no_run
    /// # async fn f(admin: &lockout_client::Admin) -> Result<(), lockout_client::Error> {
    /// let p = admin.policy_get("acme").await?;
    /// println!("{} failures lock", p.max_failures);
    /// # Ok(()) }
    /// ```
    pub async fn policy_get(&self, tenant: &str) -> Result<Policy, Error> {
        self.read(tenant, "policy_get", &PolicyGetRequest {}).await
    }

    /// Sets the tenant's policy; the reply is the policy in force.
    ///
    /// ```no_run
    /// # async fn f(admin: &lockout_client::Admin) -> Result<(), lockout_client::Error> {
    /// let mut policy = admin.policy_get("acme").await?;
    /// policy.max_failures = 10;
    /// admin.policy_set("acme", "secops:lee", policy).await?;
    /// # Ok(()) }
    /// ```
    pub async fn policy_set(&self, tenant: &str, actor: &str, policy: Policy) -> Result<Policy, Error> {
        self.write(tenant, "policy_set", &PolicySetRequest { actor: actor.into(), policy }).await
    }

    /// An IP's block and recent failures across the tenant.
    ///
    /// ```no_run
    /// # async fn f(admin: &lockout_client::Admin) -> Result<(), lockout_client::Error> {
    /// let ip = admin.ip_status("acme", "198.51.100.7").await?;
    /// println!("blocked: {}", ip.blocked);
    /// # Ok(()) }
    /// ```
    pub async fn ip_status(&self, tenant: &str, ip: &str) -> Result<IpStatusReply, Error> {
        self.read(tenant, "ip_status", &IpStatusRequest { ip: ip.into() }).await
    }

    /// Ends an IP's block; the reply is its new `ip_status`.
    ///
    /// ```no_run
    /// # async fn f(admin: &lockout_client::Admin) -> Result<(), lockout_client::Error> {
    /// use lockout_client::lockout_proto::command::IpUnblockRequest;
    /// let r = IpUnblockRequest { ip: "198.51.100.7".into(), actor: "soc:kim".into(), reason: None };
    /// admin.ip_unblock("acme", &r).await?;
    /// # Ok(()) }
    /// ```
    pub async fn ip_unblock(&self, tenant: &str, request: &IpUnblockRequest) -> Result<IpStatusReply, Error> {
        self.write(tenant, "ip_unblock", request).await
    }

    /// One page of the IP blocks in force.
    ///
    /// ```no_run
    /// # async fn f(admin: &lockout_client::Admin) -> Result<(), lockout_client::Error> {
    /// let page = admin.ip_blocks("acme", None, None).await?;
    /// # Ok(()) }
    /// ```
    pub async fn ip_blocks(
        &self,
        tenant: &str,
        limit: Option<u32>,
        after: Option<String>,
    ) -> Result<IpBlocksReply, Error> {
        self.read(tenant, "ip_blocks", &IpBlocksRequest { limit, after }).await
    }

    /// Unlocks (or with `dry_run`, lists) the users an incident locked: by time and IPs.
    ///
    /// ```no_run
    /// # async fn f(admin: &lockout_client::Admin) -> Result<(), lockout_client::Error> {
    /// use lockout_client::lockout_proto::command::UnlockManyRequest;
    /// let r = UnlockManyRequest {
    ///     actor: "soc:kim".into(), reason: Some("spraying from one range".into()), since: 1_764_979_200_000,
    ///     until: None, ips: Some(vec!["198.51.100.7".into()]), dry_run: true, limit: None, after: None,
    /// };
    /// let would = admin.unlock_many("acme", &r).await?;
    /// # Ok(()) }
    /// ```
    pub async fn unlock_many(&self, tenant: &str, request: &UnlockManyRequest) -> Result<UnlockManyReply, Error> {
        if request.dry_run {
            self.read(tenant, "unlock_many", request).await
        } else {
            self.write(tenant, "unlock_many", request).await
        }
    }

    /// The tenant's state digest (equal on stores that folded the same events).
    ///
    /// ```no_run
    /// # async fn f(admin: &lockout_client::Admin) -> Result<(), lockout_client::Error> {
    /// let d = admin.digest("acme").await?;
    /// println!("{} users at {}", d.users, d.seq);
    /// # Ok(()) }
    /// ```
    pub async fn digest(&self, tenant: &str) -> Result<DigestReply, Error> {
        self.read(tenant, "digest", &DigestRequest {}).await
    }

    /// How the answering lockoutd is doing (any tenant token will do).
    ///
    /// ```no_run
    /// # async fn f(admin: &lockout_client::Admin) -> Result<(), lockout_client::Error> {
    /// let h = admin.health("acme").await?;
    /// println!("{:?} at {}", h.status, h.seq);
    /// # Ok(()) }
    /// ```
    pub async fn health(&self, tenant: &str) -> Result<HealthReply, Error> {
        self.read(tenant, "health", &HealthRequest {}).await
    }
}
