//! `baton webhooks`: the webhook outbox, to see and to redo.

use std::process::ExitCode;

use baton_ledger::Ledger;
use clap::Subcommand;

/// `baton webhooks ...`.
#[derive(Debug, Subcommand)]
pub enum WebhooksCommand {
    /// The newest deliveries: state, attempts, last status, next try.
    List {
        /// At most this many.
        #[arg(long, default_value_t = 50)]
        limit: i64,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Try a delivery again now, as a new one (its age counted from now), whatever its state.
    Retry {
        /// The delivery (`msg_...`).
        id: String,
    },
}

/// Runs a `baton webhooks` command.
pub async fn run(ledger: Ledger, command: WebhooksCommand) -> anyhow::Result<ExitCode> {
    match command {
        WebhooksCommand::List { limit, json } => {
            let deliveries = ledger.webhooks(limit.max(1)).await?;
            if json {
                out!("{}", serde_json::to_string_pretty(&deliveries)?);
            } else if deliveries.is_empty() {
                out!("no webhook deliveries");
            } else {
                for d in &deliveries {
                    out!(
                        "{}  {:<9} {:<19} build {}  attempts {}  last {}  next {}{}",
                        d.id,
                        d.state,
                        d.event_type,
                        d.build_id,
                        d.attempts,
                        d.last_status
                            .map_or_else(|| "-".to_string(), |s| s.to_string()),
                        if d.state == "pending" {
                            d.next_attempt_at.format("%Y-%m-%d %H:%M:%S").to_string()
                        } else {
                            "-".to_string()
                        },
                        d.last_error
                            .as_deref()
                            .map_or_else(String::new, |e| format!("  ({e})")),
                    );
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        WebhooksCommand::Retry { id } => {
            if ledger.retry_webhook(&id).await? {
                out!("webhook {id} is due again now");
                Ok(ExitCode::SUCCESS)
            } else {
                eprintln!("baton: no webhook delivery {id}");
                Ok(ExitCode::FAILURE)
            }
        }
    }
}
