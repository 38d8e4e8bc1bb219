//! `lockout-console`: the help desk's web console. Serves server-rendered pages over HTTP and
//! talks to the lockout service over NATS with its own credentials: locked users (search,
//! paging, new locks live), a user's status, why they are locked and their recent history,
//! unlock and MFA reset with a reason (the signed-in member as `actor`), IP blocks.

mod auth;
mod data;
mod views;
mod web;

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use clap::Parser;
use lockout_client::Client;

#[derive(Parser, Debug)]
#[command(about = "The help-desk web console of the lockout service")]
struct Cli {
    #[command(flatten)]
    nats: lockout_nats::NatsArgs,
    /// The deployment's subject prefix (lockoutd's --prefix).
    #[arg(long, env = "LOCKOUT_PREFIX", default_value = "lockout")]
    prefix: String,
    /// The JetStream API prefix of an account that reaches lockoutd's streams through imports
    /// (`JS.lockout.API` in deploy/nats/lockout.conf).
    #[arg(long, env = "LOCKOUT_JS_API_PREFIX")]
    js_api_prefix: Option<String>,
    /// Address to serve HTTP on. Put TLS in front (a reverse proxy) beyond localhost.
    #[arg(long, env = "LOCKOUT_CONSOLE_LISTEN", default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// The help desk: one member per line, `name tenant argon2-hash` (`-` for sign-in through
    /// the trusted proxy only). `lockout-console hash` prints a hash for a password on stdin.
    #[arg(long, env = "LOCKOUT_CONSOLE_USERS")]
    users: Option<PathBuf>,
    /// Sign members in by this header (set by an SSO proxy), accepted only from
    /// --trusted-proxy addresses.
    #[arg(long, requires = "trusted_proxy")]
    trusted_header: Option<String>,
    /// The proxy address the trusted header is accepted from (repeat for several).
    #[arg(long)]
    trusted_proxy: Vec<IpAddr>,
    /// Cookies without `Secure`: only for plain HTTP on a development machine.
    #[arg(long)]
    insecure_cookies: bool,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(clap::Subcommand, Debug)]
enum Command {
    /// Reads a password on stdin and prints its argon2id hash for the users file.
    Hash,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    if let Some(Command::Hash) = cli.command {
        let mut password = String::new();
        std::io::stdin().read_line(&mut password)?;
        println!("{}", auth::hash(password.trim_end_matches(['\r', '\n']))?);
        return Ok(());
    }
    let Some(users_file) = &cli.users else { anyhow::bail!("--users FILE is required (the help desk's members)") };
    let users = auth::read_users(users_file)?;
    cli.nats.validate().map_err(anyhow::Error::msg)?;
    let opts = async_nats::ConnectOptions::new().name("lockout-console").retry_on_initial_connect();
    let mut client = Client::new(cli.nats.connect(opts).await?).with_prefix(&cli.prefix)?;
    if let Some(prefix) = &cli.js_api_prefix {
        client = client.with_jetstream_prefix(prefix);
    }
    let settings = web::Settings {
        users,
        secure_cookies: !cli.insecure_cookies,
        trusted_header: cli.trusted_header.map(|h| (h, cli.trusted_proxy)),
    };
    let app = web::router(web::App::new(client, settings));
    let listener = tokio::net::TcpListener::bind(cli.listen).await?;
    tracing::info!(addr = %listener.local_addr()?, "lockout-console serving");
    println!("listening on http://{}", listener.local_addr()?);
    let shutdown = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>())
        .with_graceful_shutdown(shutdown)
        .await?;
    Ok(())
}
