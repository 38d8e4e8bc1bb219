//! `lockoutd`: parses flags, sets up logging and telemetry, runs until SIGTERM or SIGINT.

use clap::Parser;
use lockoutd::config::{Args, Config};

// The projector allocates small strings per event (decoded fields, keys); mimalloc does that
// markedly cheaper than glibc's allocator (`make bench`).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
    // Logs, plus OTLP export only when OTEL_EXPORTER_OTLP_*ENDPOINT is set. The guard
    // flushes the exporters when main returns.
    let telemetry = match lockoutd::telemetry::init(config.log_format) {
        Ok(g) => g,
        Err(e) => {
            eprintln!("lockoutd: setting up telemetry: {e:#}");
            return std::process::ExitCode::from(2);
        }
    };
    let (traces, metrics) = telemetry.exporting();
    if traces || metrics {
        tracing::info!(traces, metrics, "Exporting telemetry over OTLP/HTTP.");
    }
    let code = match lockoutd::run(config, shutdown_signal()).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("lockoutd failed: {e:#}");
            std::process::ExitCode::FAILURE
        }
    };
    drop(telemetry);
    code
}
