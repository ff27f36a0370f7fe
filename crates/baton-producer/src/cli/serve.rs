//! `baton serve`: the HTTP API (see the `baton-api` crate) until SIGINT or SIGTERM.

use std::net::SocketAddr;
use std::process::ExitCode;

use baton_ledger::Ledger;
use baton_queue::Queue;

/// `baton serve`'s settings.
#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// Where the API listens. Away from loopback it needs BATON_API_TOKENS.
    #[arg(
        long,
        env = "BATON_API_ADDR",
        value_name = "BATON_API_ADDR",
        default_value = "127.0.0.1:8080"
    )]
    addr: SocketAddr,
    /// Bearer tokens the API takes, comma-separated; required unless it listens on loopback.
    #[arg(
        long = "tokens",
        env = "BATON_API_TOKENS",
        value_name = "BATON_API_TOKENS",
        hide_env_values = true,
        value_delimiter = ',',
        default_value = ""
    )]
    tokens: Vec<String>,
    /// The largest request body read, in bytes (`512KiB`, `1MiB` and plain numbers work).
    #[arg(
        long = "max-body",
        env = "BATON_API_MAX_BODY",
        value_name = "BATON_API_MAX_BODY",
        default_value = "1MiB",
        value_parser = parse_bytes
    )]
    max_body: usize,
    /// The owner of a build that names none, as `baton enqueue`'s.
    #[arg(long, env = "BATON_USER", default_value = "local")]
    user: String,
    #[command(flatten)]
    intake: super::intake::IntakeArgs,
}

/// A size in bytes: a number, optionally with `KiB` or `MiB`.
fn parse_bytes(text: &str) -> Result<usize, String> {
    let t = text.trim();
    let (number, unit) = match t.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => (&t[..i], t[i..].trim()),
        None => (t, ""),
    };
    let n: usize = number
        .parse()
        .map_err(|_| format!("{text:?} is not a size like 1048576, 512KiB or 1MiB"))?;
    let scale = match unit {
        "" | "B" => 1,
        "KiB" => 1024,
        "MiB" => 1024 * 1024,
        _ => return Err(format!("{text:?}: the unit must be KiB or MiB")),
    };
    match n.checked_mul(scale) {
        Some(0) | None => Err(format!("{text:?} must be between 1 byte and a few MiB")),
        Some(bytes) => Ok(bytes),
    }
}

/// Serves until SIGINT or SIGTERM.
pub async fn run(queue: Queue, ledger: Ledger, args: ServeArgs) -> anyhow::Result<ExitCode> {
    let settings = baton_producer::api::Settings {
        addr: args.addr,
        tokens: args
            .tokens
            .into_iter()
            .filter(|t| !t.trim().is_empty())
            .collect(),
        max_body: args.max_body,
        default_user: args.user,
        limits: args.intake.limits(),
        webhook_allow: args.intake.webhook_allow(),
    };
    // Errors the API answers as 503 (Redis or Postgres trouble) are logged here, on stderr.
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(tracing_subscriber::EnvFilter::new("info"))
        .init();
    let tokens = settings.tokens.len();
    baton_producer::api::serve(
        queue,
        ledger,
        settings,
        |addr| eprintln!("baton: serving the API on http://{addr} ({tokens} tokens)"),
        shutdown(),
    )
    .await?;
    Ok(ExitCode::SUCCESS)
}

async fn shutdown() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("a SIGTERM handler installs");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_with_their_units() {
        assert_eq!(parse_bytes("1MiB"), Ok(1024 * 1024));
        assert_eq!(parse_bytes("512KiB"), Ok(512 * 1024));
        assert_eq!(parse_bytes("100"), Ok(100));
        assert!(parse_bytes("0").is_err());
        assert!(parse_bytes("1GB").is_err());
        assert!(parse_bytes("lots").is_err());
    }
}
