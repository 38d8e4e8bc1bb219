//! The command line: global options and one subcommand per task.

use std::io::Write;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::ctx::Ctx;

const EXIT_CODES: &str = "\
Exit codes:
  0  ok
  1  failure: NATS unreachable, stream missing, store error, service error 500
  2  usage: unknown flag, missing or unparsable argument
  3  not found: service error 404, or history/explain of a user with no events
  4  bad request: service error 400, or input lockoutctl refuses for the same reason
  5  verify found differences between the live state and the replayed history
  6  service unavailable: service error 503, or no lockoutd answers

Times (--since, --until, TIME) are RFC 3339 (2025-06-01T16:03:00Z) or milliseconds since the
Unix epoch; lockoutctl prints them as RFC 3339 UTC.";

/// The admin and auditor command line of the lockout service.
#[derive(Debug, Parser)]
#[command(name = "lockoutctl", version, about, after_help = EXIT_CODES, propagate_version = true)]
pub struct Cli {
    #[command(flatten)]
    pub nats: lockout_nats::NatsArgs,
    /// Root prefix of every subject (streams are <PREFIX>_EVENTS, _NOTICES, _DEAD).
    #[arg(long, global = true, env = "LOCKOUT_PREFIX", default_value = "lockout")]
    pub prefix: String,
    /// Seconds to wait for a service reply or a stream read.
    #[arg(long, global = true, default_value_t = 10, value_name = "SECONDS")]
    pub timeout: u64,
    /// Machine-readable JSON instead of text for people.
    #[arg(long, global = true)]
    pub json: bool,
    /// The JetStream API prefix where the streams are imported from another account (the
    /// deploy config gives auditors `JS.lockout.API`); default `$JS.API`.
    #[arg(long, global = true, env = "LOCKOUT_JS_API_PREFIX", value_name = "PREFIX")]
    pub js_api_prefix: Option<String>,
    #[command(subcommand)]
    pub cmd: Cmd,
}

#[derive(Debug, Subcommand)]
pub enum Cmd {
    /// A user's lockout status now (service op `status`); with --ip/--client/--account,
    /// whether an attempt from that source is allowed.
    Status(StatusArgs),
    /// Every locked user of a tenant, following the `locked` cursors to the end.
    Locked(LockedArgs),
    /// Unlock a user: end every lock and restart the counters (service op `unlock`).
    Unlock(UnlockArgs),
    /// Tell the service the user verified a password change (service op `password_reset`):
    /// ends failure and scope locks under `unlock_on_password_reset`.
    PasswordReset(PasswordResetArgs),
    /// Unlock every user one attack locked: automatic locks tripped from --cidr within
    /// --since..--until (service op `unlock_many`); --dry-run lists them and changes nothing.
    UnlockMany(UnlockManyArgs),
    /// An IP's block for a tenant: `ip status`, `ip unblock` (password spraying).
    #[command(subcommand)]
    Ip(IpCmd),
    /// Lock a user, for --seconds or until unlocked (service op `lock`).
    Lock(LockArgs),
    /// Reset a user's MFA: drop MFA failures, require re-enrolment (service op `mfa_reset`).
    MfaReset(AdminArgs),
    /// Read or change a tenant's policy.
    #[command(subcommand)]
    Policy(PolicyCmd),
    /// Publish a login attempt to JetStream exactly as an auth gateway does (demos, tests).
    Attempt(AttemptArgs),
    /// Follow LOCKOUT_NOTICES and print each notice for a person.
    Tail(TailArgs),
    /// A user's events with the state after each and why it changed.
    History(HistoryArgs),
    /// Why a user is (or is not) locked now, from the history.
    Explain(UserArgs),
    /// A user's status at a past instant, from the history.
    StateAt(StateAtArgs),
    /// Rebuild a projection from LOCKOUT_EVENTS into a sled store, publishing nothing.
    Replay(ReplayArgs),
    /// Replay the history and compare every tenant with the live service (exit 5 on differences).
    Verify(VerifyArgs),
    /// The event history for SIEM import: one JSON object per event with --jsonl.
    Export(ExportArgs),
    /// Fold a tenant's real history under another policy and report what would have changed.
    Simulate(SimulateArgs),
}

#[derive(Debug, Args)]
pub struct UserArgs {
    pub tenant: String,
    /// The account's canonical id.
    pub user: String,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    #[command(flatten)]
    pub user: UserArgs,
    /// The source IP of the attempt about to be made.
    #[arg(long)]
    pub ip: Option<String>,
    /// Its client (app, integration).
    #[arg(long)]
    pub client: Option<String>,
    /// Its account kind: user, api or portal.
    #[arg(long)]
    pub account: Option<String>,
}

#[derive(Debug, Args)]
pub struct UnlockArgs {
    #[command(flatten)]
    pub admin: AdminArgs,
    /// Unlock only if the lock in force was started by this event (its `event_id`), else
    /// fail with 409 (exit 4): a lock seen earlier cannot end a newer one.
    #[arg(long)]
    pub lock_event: Option<uuid::Uuid>,
}

#[derive(Debug, Args)]
pub struct UnlockManyArgs {
    pub tenant: String,
    /// Who is doing it (recorded on each unlock event).
    #[arg(long)]
    pub actor: String,
    /// Why (recorded on each unlock event).
    #[arg(long)]
    pub reason: Option<String>,
    /// Only locks tripped from this IP or CIDR block (repeatable; default: any IP).
    #[arg(long = "cidr", value_name = "IP_OR_CIDR")]
    pub cidrs: Vec<String>,
    /// Only locks that started at or after this time (required).
    #[arg(long)]
    pub since: String,
    /// Only locks that started at or before this time (default: now).
    #[arg(long)]
    pub until: Option<String>,
    /// List who would be unlocked; change nothing.
    #[arg(long)]
    pub dry_run: bool,
}

#[derive(Debug, Subcommand)]
pub enum IpCmd {
    /// Whether an IP is blocked for a tenant, and its failures in the window (`ip_status`).
    Status { tenant: String, ip: String },
    /// Every IP blocked for a tenant now, following the `ip_blocks` pages to the end.
    List { tenant: String },
    /// End an IP's block and restart its count (`ip_unblock`).
    Unblock {
        tenant: String,
        ip: String,
        /// Who is doing it.
        #[arg(long)]
        actor: String,
        /// Why.
        #[arg(long)]
        reason: Option<String>,
    },
}

#[derive(Debug, Args)]
pub struct PasswordResetArgs {
    pub tenant: String,
    pub user: String,
    /// self_service or admin.
    #[arg(long, default_value = "self_service")]
    pub method: String,
    /// Who reset it, if not the user.
    #[arg(long)]
    pub actor: Option<String>,
}

#[derive(Debug, Args)]
pub struct LockedArgs {
    pub tenant: String,
    /// Page size of each `locked` request (1-1000).
    #[arg(long, default_value_t = 100)]
    pub page: u32,
}

#[derive(Debug, Args)]
pub struct AdminArgs {
    pub tenant: String,
    pub user: String,
    /// Who does it (recorded in the event and the notice).
    #[arg(long, env = "LOCKOUT_ACTOR")]
    pub actor: String,
    /// Why (recorded in the event).
    #[arg(long)]
    pub reason: Option<String>,
}

#[derive(Debug, Args)]
pub struct LockArgs {
    #[command(flatten)]
    pub admin: AdminArgs,
    /// Lock length in seconds (at least 1); without it the lock lasts until an admin unlocks.
    #[arg(long)]
    pub seconds: Option<u32>,
}

#[derive(Debug, Subcommand)]
pub enum PolicyCmd {
    /// The tenant's policy, defaults filled in (service op `policy_get`).
    Get { tenant: String },
    /// Change fields of the tenant's policy; fields not given keep their current values.
    Set(PolicySetArgs),
}

#[derive(Debug, Args)]
pub struct PolicySetArgs {
    pub tenant: String,
    /// Who changes it (recorded in the policy event).
    #[arg(long, env = "LOCKOUT_ACTOR")]
    pub actor: String,
    /// A JSON object with some or all policy fields; flags override it.
    #[arg(long)]
    pub file: Option<PathBuf>,
    #[arg(long)]
    pub max_failures: Option<u32>,
    #[arg(long)]
    pub lock_seconds: Option<u32>,
    #[arg(long)]
    pub window_seconds: Option<u32>,
    #[arg(long, value_name = "BOOL")]
    pub reset_on_success: Option<bool>,
    #[arg(long, value_name = "BOOL")]
    pub count_mfa_failures: Option<bool>,
    #[arg(long, value_name = "BOOL")]
    pub dedupe_credential: Option<bool>,
    #[arg(long)]
    pub lock_multiplier: Option<u32>,
    #[arg(long)]
    pub max_lock_seconds: Option<u64>,
    #[arg(long)]
    pub history_seconds: Option<u32>,
    #[arg(long)]
    pub permanent_after: Option<u32>,
    #[arg(long)]
    pub familiar_days: Option<u32>,
    #[arg(long, value_name = "BOOL")]
    pub api_client_scope: Option<bool>,
    /// all or same_ip.
    #[arg(long)]
    pub reset_scope: Option<String>,
    #[arg(long, value_name = "BOOL")]
    pub unlock_on_password_reset: Option<bool>,
    #[arg(long)]
    pub ip_max_failures: Option<u32>,
    #[arg(long)]
    pub ip_window_seconds: Option<u32>,
    #[arg(long)]
    pub ip_block_seconds: Option<u32>,
}

#[derive(Debug, Args)]
#[command(group = clap::ArgGroup::new("outcome").required(true).args(["fail", "ok", "rejected"]))]
pub struct AttemptArgs {
    pub tenant: String,
    pub user: String,
    /// A failed login.
    #[arg(long)]
    pub fail: bool,
    /// A successful login.
    #[arg(long)]
    pub ok: bool,
    /// An attempt the gateway refused because `status` said it was not allowed.
    #[arg(long)]
    pub rejected: bool,
    /// A success that does not complete the sign-in (a password step MFA still follows):
    /// it makes no IP familiar and no client known.
    #[arg(long)]
    pub not_final: bool,
    /// The client's address (IPv4 or IPv6).
    #[arg(long)]
    pub ip: String,
    /// The app, integration or user agent (at most 200 characters).
    #[arg(long)]
    pub client: Option<String>,
    /// password, mfa or recovery_code.
    #[arg(long, default_value = "password")]
    pub factor: String,
    /// A non-reversible fingerprint of the submitted secret (never the secret).
    #[arg(long)]
    pub credential: Option<String>,
    /// user, api or portal.
    #[arg(long)]
    pub account: Option<String>,
    /// Publish this many attempts, each with its own id.
    #[arg(long, default_value_t = 1)]
    pub count: u32,
    /// Wait until lockoutd has folded the attempts (polls `digest`).
    #[arg(long)]
    pub wait: bool,
}

#[derive(Debug, Args)]
pub struct TailArgs {
    /// Only this tenant's notices.
    pub tenant: Option<String>,
    /// Start from the first notice in the stream instead of new ones.
    #[arg(long)]
    pub all: bool,
    /// Stop after this many notices.
    #[arg(long)]
    pub count: Option<u64>,
}

#[derive(Debug, Args)]
pub struct HistoryArgs {
    pub tenant: String,
    pub user: String,
    /// Show events stored at or after this time (earlier ones are still folded).
    #[arg(long)]
    pub since: Option<String>,
    /// Show events stored at or before this time.
    #[arg(long)]
    pub until: Option<String>,
}

#[derive(Debug, Args)]
pub struct StateAtArgs {
    pub tenant: String,
    pub user: String,
    /// The instant.
    pub time: String,
}

#[derive(Debug, Args)]
pub struct ReplayArgs {
    /// The sled store to build (created; an existing store continues from its checkpoint).
    #[arg(long)]
    pub data_dir: PathBuf,
    /// Stop after this sequence, or after the last event stored at or before this time.
    #[arg(long, value_name = "SEQ|TIME")]
    pub until: Option<String>,
    /// Events per sled commit.
    #[arg(long, default_value_t = 1000)]
    pub batch: usize,
}

#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// Keep the replayed store here instead of a temporary directory (must be new or empty).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Also compare this tenant (repeatable); by default every tenant of the history.
    #[arg(long = "tenant")]
    pub tenants: Vec<String>,
    /// Events per sled commit.
    #[arg(long, default_value_t = 1000)]
    pub batch: usize,
}

#[derive(Debug, Args)]
pub struct ExportArgs {
    /// Only this tenant's events.
    pub tenant: Option<String>,
    /// One JSON object per line (seq, subject, stored time, type, decoded body).
    #[arg(long)]
    pub jsonl: bool,
    /// Events stored at or after this time.
    #[arg(long)]
    pub since: Option<String>,
    /// Events stored at or before this time.
    #[arg(long)]
    pub until: Option<String>,
}

#[derive(Debug, Args)]
pub struct SimulateArgs {
    pub tenant: String,
    /// The policy to simulate: a JSON Policy (absent fields take the defaults, as in policy_set).
    #[arg(long)]
    pub policy: PathBuf,
    /// Count locks that start at or after this time.
    #[arg(long)]
    pub since: Option<String>,
    /// Count locks that start at or before this time (and lock time up to it).
    #[arg(long)]
    pub until: Option<String>,
}

/// Runs the parsed command; returns the exit code (errors carry theirs, see [`crate::Exit`]).
pub async fn dispatch(cli: Cli, out: &mut (dyn Write + Send)) -> anyhow::Result<i32> {
    let ctx = Ctx::connect(&cli).await?;
    let ok = Ok(crate::exit::OK);
    match cli.cmd {
        Cmd::Status(a) => crate::admin::status(&ctx, a, out).await.and(ok),
        Cmd::Locked(a) => crate::admin::locked(&ctx, a, out).await.and(ok),
        Cmd::Unlock(a) => crate::admin::unlock(&ctx, a, out).await.and(ok),
        Cmd::PasswordReset(a) => crate::admin::password_reset(&ctx, a, out).await.and(ok),
        Cmd::UnlockMany(a) => crate::admin::unlock_many(&ctx, a, out).await.and(ok),
        Cmd::Ip(c) => crate::admin::ip(&ctx, c, out).await.and(ok),
        Cmd::Lock(a) => crate::admin::lock(&ctx, a, out).await.and(ok),
        Cmd::MfaReset(a) => crate::admin::mfa_reset(&ctx, a, out).await.and(ok),
        Cmd::Policy(PolicyCmd::Get { tenant }) => crate::admin::policy_get(&ctx, &tenant, out).await.and(ok),
        Cmd::Policy(PolicyCmd::Set(a)) => crate::admin::policy_set(&ctx, a, out).await.and(ok),
        Cmd::Attempt(a) => crate::admin::attempt(&ctx, a, out).await.and(ok),
        Cmd::Tail(a) => crate::admin::tail(&ctx, a, out).await.and(ok),
        Cmd::History(a) => crate::audit::history(&ctx, a, out).await.and(ok),
        Cmd::Explain(a) => crate::audit::explain(&ctx, a, out).await.and(ok),
        Cmd::StateAt(a) => crate::audit::state_at(&ctx, a, out).await.and(ok),
        Cmd::Replay(a) => crate::replay::replay(&ctx, a, out).await.and(ok),
        Cmd::Verify(a) => crate::replay::verify(&ctx, a, out).await,
        Cmd::Export(a) => crate::audit::export(&ctx, a, out).await.and(ok),
        Cmd::Simulate(a) => crate::audit::simulate(&ctx, a, out).await.and(ok),
    }
}
