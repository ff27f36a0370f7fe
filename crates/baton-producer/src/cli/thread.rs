//! `baton thread`: a project's chat threads (list, show, delete, fork), the mapping a chat product
//! keeps of its conversations.

use std::process::ExitCode;

use baton_ledger::Ledger;
use baton_ledger::threads::{ThreadError, ThreadSummary};
use clap::Subcommand;

use super::EXIT_INVALID;

/// `baton thread ...`.
#[derive(Debug, Subcommand)]
pub enum ThreadCommand {
    /// A user's threads, newest first: id, project, session, when made and updated, runs, and the
    /// first line of the last answer.
    List {
        /// The threads' owner.
        #[arg(long, env = "BATON_USER", default_value = "local")]
        user: String,
        /// Only this project's.
        #[arg(long)]
        project: Option<String>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// One thread and its chain.
    Show {
        /// The project.
        #[arg(long)]
        project: String,
        /// The thread.
        thread: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Delete a thread: its mapping, its chain and its stored transcripts (never the project's
    /// main session, nor another thread).
    Delete {
        /// The project.
        #[arg(long)]
        project: String,
        /// The thread.
        thread: String,
    },
    /// Make thread `--to` a branch of a thread: its first chat forks the thread's session as it
    /// is now, keeping its history.
    Fork {
        /// The project.
        #[arg(long)]
        project: String,
        /// The thread to branch from.
        thread: String,
        /// The new thread.
        #[arg(long)]
        to: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

/// Runs one `baton thread` command.
pub async fn run(ledger: Ledger, command: ThreadCommand) -> anyhow::Result<ExitCode> {
    match command {
        ThreadCommand::List {
            user,
            project,
            json,
        } => {
            let threads = ledger.threads(&user, project.as_deref()).await?;
            if json {
                out!("{}", serde_json::to_string_pretty(&threads)?);
            } else if threads.is_empty() {
                out!("no threads of user {user}");
            } else {
                for t in &threads {
                    line(t);
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        ThreadCommand::Show {
            project,
            thread,
            json,
        } => match ledger.thread(&project, &thread).await {
            Ok(detail) if json => {
                out!("{}", serde_json::to_string_pretty(&detail)?);
                Ok(ExitCode::SUCCESS)
            }
            Ok(detail) => {
                line(&detail.thread);
                super::print::chain(&format!("{project}, thread {thread}"), &detail.chain);
                Ok(ExitCode::SUCCESS)
            }
            Err(e) => refused(e),
        },
        ThreadCommand::Delete { project, thread } => {
            match ledger.delete_thread(&project, &thread).await {
                Ok(gone) => {
                    out!(
                        "thread {thread} of project {project} deleted ({} chain links, {} stored transcripts)",
                        gone.transitions,
                        gone.transcripts
                    );
                    Ok(ExitCode::SUCCESS)
                }
                Err(e) => refused(e),
            }
        }
        ThreadCommand::Fork {
            project,
            thread,
            to,
            json,
        } => match ledger.fork_thread(&project, &thread, &to).await {
            Ok(made) if json => {
                out!("{}", serde_json::to_string_pretty(&made)?);
                Ok(ExitCode::SUCCESS)
            }
            Ok(made) => {
                out!(
                    "thread {to} of project {project} branches from {thread} at session {}",
                    made.fork_session_id.as_deref().unwrap_or("-")
                );
                Ok(ExitCode::SUCCESS)
            }
            Err(e) => refused(e),
        },
    }
}

/// One thread on one line.
fn line(t: &ThreadSummary) {
    out!(
        "{}  project {}  session {}  created {}  updated {}  runs {}  {}",
        t.thread_id,
        t.project_id,
        t.session_id.as_deref().unwrap_or("-"),
        t.created_at.format("%Y-%m-%d %H:%M:%S"),
        t.updated_at.format("%Y-%m-%d %H:%M:%S"),
        t.runs,
        t.last_answer.as_deref().unwrap_or("")
    );
}

/// A refusal the caller can act on exits with [`EXIT_INVALID`]; a failing ledger is an error.
fn refused(e: ThreadError) -> anyhow::Result<ExitCode> {
    match e {
        ThreadError::Ledger(baton_ledger::LedgerError::Db(e)) => Err(e.into()),
        other => {
            eprintln!("baton: {other}");
            Ok(ExitCode::from(EXIT_INVALID))
        }
    }
}
