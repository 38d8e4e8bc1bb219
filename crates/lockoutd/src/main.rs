//! `lockoutd`: parses flags, sets up logging, runs until SIGTERM or SIGINT.

use clap::Parser;
use lockoutd::config::{Args, Config, LogFormat};

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match format {
        LogFormat::Human => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("installing the SIGTERM handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let config = match Config::try_from(Args::parse()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("lockoutd: {e:#}");
            return std::process::ExitCode::from(2);
        }
    };
    init_logging(config.log_format);
    match lockoutd::run(config, shutdown_signal()).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("lockoutd failed: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
