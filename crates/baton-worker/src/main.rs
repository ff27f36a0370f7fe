//! `baton-worker`: one replica of the Baton worker fleet.

use std::io::IsTerminal;
use std::time::Duration;

use baton_worker::{Config, Worker};
use clap::Parser;
use tokio_util::sync::CancellationToken;
use tracing_subscriber::EnvFilter;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    // This executable also supervises each CLI child (see baton_agent::supervise).
    baton_agent::supervise::run_if_supervisor();
    let config = Config::parse();
    init_tracing(&config.log_format);
    match run(config).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "worker failed");
            eprintln!("baton-worker: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(config: Config) -> anyhow::Result<()> {
    let worker = Worker::connect(&config).await?;
    let shutdown = CancellationToken::new();
    let abort = CancellationToken::new();
    tokio::spawn(watch_signals(
        shutdown.clone(),
        abort.clone(),
        Duration::from_secs(config.shutdown_grace_secs),
    ));
    worker.run(shutdown, abort).await
}

/// First SIGTERM/SIGINT: stop reading and give in-flight runs the grace; then cancel them.
/// A second signal cancels at once.
async fn watch_signals(shutdown: CancellationToken, abort: CancellationToken, grace: Duration) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("cannot install signal handlers");
        return;
    };
    tokio::select! { _ = term.recv() => {}, _ = int.recv() => {} }
    tracing::info!(
        grace_secs = grace.as_secs(),
        "shutting down: no new jobs; in-flight runs get the grace"
    );
    shutdown.cancel();
    tokio::select! {
        _ = tokio::time::sleep(grace) => tracing::warn!("grace over; cancelling in-flight runs"),
        _ = term.recv() => tracing::warn!("second signal; cancelling in-flight runs"),
        _ = int.recv() => tracing::warn!("second signal; cancelling in-flight runs"),
    }
    abort.cancel();
}

fn init_tracing(format: &str) {
    let filter = EnvFilter::try_from_env("BATON_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let json = match format {
        "json" => true,
        "text" => false,
        _ => !std::io::stderr().is_terminal(),
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    if json {
        builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(true)
            .init();
    } else {
        builder.init();
    }
}
