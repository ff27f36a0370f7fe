//! `baton-worker`: one replica of the Baton worker fleet.

use std::io::IsTerminal;

use baton_worker::config::LogFormat;
use baton_worker::{Config, Worker};
use clap::{CommandFactory, FromArgMatches};
use tokio_util::sync::CancellationToken;
use tracing_subscriber::EnvFilter;

fn main() -> std::process::ExitCode {
    // This executable is also the supervisor that ends the CLI runs when the worker ends (see
    // baton_agent::supervise); started as one, it does nothing else.
    baton_agent::supervise::run_if_supervisor();
    // `--help` says which secret settings reached the process, never their values.
    let command = baton_core::help::mark_secrets_set(Config::command(), |name| {
        std::env::var_os(name).is_some_and(|v| !v.is_empty())
    });
    let config = Config::from_arg_matches(&command.get_matches()).unwrap_or_else(|e| e.exit());
    init_tracing(config.log_format);
    // A multi-thread runtime hands tasks and wake-ups between its threads; measured under `just
    // bench`, that cost the worker about a fifth more CPU per job than one thread doing it all.
    let built = match config.threads {
        1 => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build(),
        n => tokio::runtime::Builder::new_multi_thread()
            .worker_threads(usize::from(n))
            .enable_all()
            .build(),
    };
    let runtime = match built {
        Ok(r) => r,
        Err(e) => {
            eprintln!("baton-worker: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(config)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            let error = baton_core::describe_error(e.as_ref());
            tracing::error!(%error, "worker failed");
            eprintln!("baton-worker: {error}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(config: Config) -> anyhow::Result<()> {
    let worker = Worker::connect(&config).await?;
    let shutdown = CancellationToken::new();
    tokio::spawn(watch_signals(shutdown.clone()));
    Ok(worker.run(shutdown).await?)
}

/// SIGTERM or SIGINT: stop taking jobs; the worker gives running ones `BATON_SHUTDOWN_GRACE`, then
/// cancels them and hands their entries back.
async fn watch_signals(shutdown: CancellationToken) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("cannot install signal handlers");
        return;
    };
    tokio::select! { _ = term.recv() => {}, _ = int.recv() => {} }
    tracing::info!("shutting down: no new jobs; running ones get the grace");
    shutdown.cancel();
}

fn init_tracing(format: LogFormat) {
    let filter = EnvFilter::try_from_env("BATON_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let json = match format {
        LogFormat::Json => true,
        LogFormat::Text => false,
        LogFormat::Auto => !std::io::stderr().is_terminal(),
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
