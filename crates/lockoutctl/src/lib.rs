//! `lockoutctl`, the admin and auditor command line of the lockout service.
//!
//! Everything it knows comes from NATS: the micro service `lockout` (admin commands and
//! queries) and the event history in `LOCKOUT_EVENTS`, folded here with the same
//! `lockout-core` fold lockoutd runs, so an auditor can answer "why was this account locked,
//! by whom, from where, and what did the state look like at 16:03?" and prove that the live
//! state is what the history says.
//!
//! The binary is thin: [`run`] (or [`run_async`] inside a tokio runtime, as the tests do)
//! takes the arguments and a writer for standard output and returns the exit code.
//!
//! # Layout
//! - [`cli`]: the clap definitions of every subcommand.
//! - [`ctx`]: the NATS connection, service requests and their error mapping.
//! - [`events`]: reading `LOCKOUT_EVENTS` with ordered consumers, decoding as lockoutd does.
//! - [`admin`]: status, locked, unlock, lock, mfa-reset, policy, attempt, tail.
//! - [`audit`]: history, explain, state-at, export, simulate.
//! - [`replay`]: replay and verify, with the engine lockoutd folds with (`lockout-engine`).
//! - [`fmt`]: times (RFC 3339 UTC) and the human texts.

pub mod admin;
pub mod audit;
pub mod cli;
pub mod ctx;
pub mod events;
pub mod fmt;
pub mod replay;

use std::ffi::OsString;
use std::io::Write;

use clap::Parser as _;

pub use cli::Cli;
pub use ctx::Ctx;

/// Exit codes; documented in `lockoutctl --help` and the README.
pub mod exit {
    /// Success.
    pub const OK: i32 = 0;
    /// Failure: NATS unreachable, a stream missing, a store error, a 500 from the service.
    pub const FAILURE: i32 = 1;
    /// Usage: unknown flag, missing argument, a value that does not parse.
    pub const USAGE: i32 = 2;
    /// Not found: the service answered 404, or what was asked for does not exist.
    pub const NOT_FOUND: i32 = 3;
    /// Bad request: the service answered 400 (or lockoutctl refused the same input itself).
    pub const BAD_REQUEST: i32 = 4;
    /// `verify` found differences between the live state and the replayed history.
    pub const DIFFERENCES: i32 = 5;
    /// Service unavailable: the service answered 503, or no lockoutd answers at all.
    pub const UNAVAILABLE: i32 = 6;
    /// Conflict: the service answered 409 (`unlock --lock-event` naming a lock no longer in
    /// force).
    pub const CONFLICT: i32 = 7;
}

/// An error with the exit code it means. Other errors exit with [`exit::FAILURE`].
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct Exit {
    pub code: i32,
    pub message: String,
}

impl Exit {
    pub fn new(code: i32, message: impl Into<String>) -> Exit {
        Exit { code, message: message.into() }
    }
    pub fn usage(message: impl Into<String>) -> anyhow::Error {
        Exit::new(exit::USAGE, message).into()
    }
    pub fn bad_request(message: impl Into<String>) -> anyhow::Error {
        Exit::new(exit::BAD_REQUEST, message).into()
    }
}

/// Runs lockoutctl with `args` (the first is the program name), writing results to `out` and
/// errors to standard error; returns the exit code. Builds its own tokio runtime: call
/// [`run_async`] from inside one.
pub fn run<I, T>(args: I, out: &mut (dyn Write + Send)) -> i32
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let rt = match tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("lockoutctl: starting the async runtime failed: {e}");
            return exit::FAILURE;
        }
    };
    rt.block_on(run_async(args, out))
}

/// [`run`] inside a tokio runtime; errors go to standard error.
pub async fn run_async<I, T>(args: I, out: &mut (dyn Write + Send)) -> i32
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    run_io(args, out, &mut std::io::stderr()).await
}

/// [`run_async`] with errors written to `err` (tests read both).
pub async fn run_io<I, T>(args: I, out: &mut (dyn Write + Send), err: &mut (dyn Write + Send)) -> i32
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let cli = match Cli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(e) => {
            use clap::error::ErrorKind;
            let text = e.render().to_string();
            return match e.kind() {
                ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => {
                    let _ = write!(out, "{text}");
                    exit::OK
                }
                _ => {
                    let _ = write!(err, "{text}");
                    exit::USAGE
                }
            };
        }
    };
    let result = cli::dispatch(cli, out).await;
    let _ = out.flush();
    match result {
        Ok(code) => code,
        Err(e) => {
            let code = e.chain().find_map(|c| c.downcast_ref::<Exit>()).map_or(exit::FAILURE, |x| x.code);
            let _ = writeln!(err, "lockoutctl: {e:#}");
            code
        }
    }
}
