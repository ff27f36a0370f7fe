//! `baton session`: a project's session, and a session's stored files (export, import, show).

use std::io::{IsTerminal, Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use baton_ledger::{Ledger, LedgerError};
use baton_producer::sessions::Export;
use clap::Subcommand;

use super::EXIT_INVALID;

/// Default of `--transcript-max-bytes` (`BATON_TRANSCRIPT_MAX_BYTES`): as the worker's.
const DEFAULT_MAX_BYTES: u64 = 128 * 1024 * 1024;

/// `baton session ...`.
#[derive(Debug, Subcommand)]
pub enum SessionCommand {
    /// End the project's session: its next job starts fresh (recorded as `reset`). A job of the
    /// project that is running finishes on the session and records its runs first.
    Reset {
        /// The project.
        project: String,
    },
    /// Write a session's stored files as a `.tar.gz` (to standard output without `-o`).
    Export {
        /// The session.
        session: String,
        /// The file to write.
        #[arg(short, long)]
        output: Option<PathBuf>,
    },
    /// Add a session made before Baton (a `.jsonl` transcript, or an archive `export` wrote) as
    /// the project's newest session: jobs naming it are accepted and resume it.
    Import {
        /// The project (created for `--user` when the ledger does not know it).
        #[arg(long)]
        project: String,
        /// The project's owner.
        #[arg(long, env = "BATON_USER", default_value = "local")]
        user: String,
        /// Largest total of the session's files accepted.
        #[arg(long = "transcript-max-bytes", env = "BATON_TRANSCRIPT_MAX_BYTES", default_value_t = DEFAULT_MAX_BYTES)]
        max_bytes: u64,
        /// The `.jsonl` or `.tar.gz` file.
        file: PathBuf,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// What the ledger holds of a session: its size, runs, when stored, first and last messages.
    Show {
        /// The session.
        session: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

/// Runs one `baton session` command.
pub async fn run(ledger: Ledger, command: SessionCommand) -> anyhow::Result<ExitCode> {
    match command {
        SessionCommand::Reset { project } => match ledger.reset_session(&project).await {
            Ok(reset) if reset.deferred => {
                out!(
                    "project {project}: a job is running on session {}; it finishes and records its runs, and the next job starts fresh",
                    reset.session.as_deref().unwrap_or("(none)")
                );
                Ok(ExitCode::SUCCESS)
            }
            Ok(reset) => {
                out!(
                    "project {project}: session {} ended; the next job starts fresh",
                    reset.session.as_deref().unwrap_or("(none)")
                );
                Ok(ExitCode::SUCCESS)
            }
            Err(LedgerError::UnknownProject(p)) => {
                eprintln!("baton: no project {p} in the ledger");
                Ok(ExitCode::FAILURE)
            }
            Err(e) => Err(e.into()),
        },
        SessionCommand::Export { session, output } => export(&ledger, &session, output).await,
        SessionCommand::Import {
            project,
            user,
            max_bytes,
            file,
            json,
        } => import(&ledger, &project, &user, max_bytes, &file, json).await,
        SessionCommand::Show { session, json } => show(&ledger, &session, json).await,
    }
}

async fn export(
    ledger: &Ledger,
    session: &str,
    output: Option<PathBuf>,
) -> anyhow::Result<ExitCode> {
    if output.is_none() && std::io::stdout().is_terminal() {
        eprintln!("baton: not writing a .tar.gz to a terminal; use -o FILE or redirect the output");
        return Ok(ExitCode::from(EXIT_INVALID));
    }
    let (archive, files, size) = match baton_producer::sessions::export(ledger, session).await? {
        Export::Archive { bytes, files, size } => (bytes, files, size),
        Export::Unknown => {
            eprintln!("baton: the ledger holds no files of session {session}");
            return Ok(ExitCode::FAILURE);
        }
        Export::Incomplete(why) => {
            eprintln!("baton: the ledger holds no whole copy of session {session}: {why}");
            return Ok(ExitCode::FAILURE);
        }
    };
    match output {
        Some(path) => {
            std::fs::write(&path, &archive)
                .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))?;
            eprintln!(
                "baton: wrote session {session} ({files} files, {size} bytes) to {}",
                path.display()
            );
        }
        None => {
            let mut stdout = std::io::stdout().lock();
            if let Err(e) = stdout.write_all(&archive).and_then(|()| stdout.flush()) {
                if e.kind() == std::io::ErrorKind::BrokenPipe {
                    return Ok(ExitCode::from(141));
                }
                return Err(e.into());
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn import(
    ledger: &Ledger,
    project: &str,
    user: &str,
    max_bytes: u64,
    file: &std::path::Path,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let mut bytes = Vec::new();
    // One byte over the bound is enough to refuse it, whatever the file's size.
    std::fs::File::open(file)
        .and_then(|f| f.take(max_bytes.saturating_add(1)).read_to_end(&mut bytes))
        .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", file.display()))?;
    let name = file.file_name().map(|n| n.to_string_lossy().into_owned());
    let imported = match baton_transcript::archive::read_import(name.as_deref(), &bytes, max_bytes)
    {
        Ok(i) => i,
        Err(e) => {
            eprintln!("baton: cannot import {}: {e}", file.display());
            return Ok(ExitCode::from(EXIT_INVALID));
        }
    };
    let previous = match ledger.import_session(project, user, &imported).await {
        Ok(previous) => previous,
        Err(e @ (LedgerError::SessionKnown(_) | LedgerError::NotOwner { .. })) => {
            eprintln!("baton: cannot import {}: {e}", file.display());
            return Ok(ExitCode::from(EXIT_INVALID));
        }
        Err(e) => return Err(e.into()),
    };
    let total: usize = imported.files.iter().map(|f| f.bytes.len()).sum();
    if json {
        out!(
            "{}",
            serde_json::json!({
                "session_id": imported.session_id,
                "project_id": project,
                "previous_session_id": previous,
                "files": imported.files.len(),
                "bytes": total,
            })
        );
    } else {
        out!(
            "imported session {} into project {project} ({} files, {total} bytes); it is the project's newest session",
            imported.session_id,
            imported.files.len()
        );
    }
    Ok(ExitCode::SUCCESS)
}

async fn show(ledger: &Ledger, session: &str, json: bool) -> anyhow::Result<ExitCode> {
    let Some(v) = baton_producer::sessions::summary(ledger, session).await? else {
        eprintln!("baton: the ledger holds no files of session {session}");
        return Ok(ExitCode::FAILURE);
    };
    if json {
        out!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(ExitCode::SUCCESS);
    }
    let text = |k: &str| v[k].as_str().unwrap_or_default().to_string();
    let number = |k: &str| v[k].as_i64().unwrap_or_default();
    out!("session      {}", text("session_id"));
    out!("project      {}", text("project_id"));
    out!(
        "stored       {} bytes in {} files ({} compressed, {} pieces), last {}",
        number("bytes"),
        v["files"].as_array().map_or(0, Vec::len),
        number("stored_bytes"),
        number("pieces"),
        v["updated_at"].as_str().unwrap_or("never")
    );
    if let Some(why) = v["incomplete"].as_str() {
        out!("incomplete   {why}");
    }
    out!("runs         {}", number("runs"));
    out!("messages     {}", number("messages"));
    for (label, key) in [("first", "first_message"), ("last", "last_message")] {
        if let Some(m) = v[key].as_object() {
            let body = m.get("text").and_then(|t| t.as_str()).unwrap_or_default();
            let role = m.get("role").and_then(|r| r.as_str()).unwrap_or_default();
            out!(
                "{label:<12} {role}: {}",
                body.lines().next().unwrap_or_default()
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}
