//! `baton enqueue --wait`: following a job's progress events to its end.

use std::io::{IsTerminal, Write};
use std::process::ExitCode;

use baton_core::BuildStatus;
use baton_core::events::EventType;
use baton_ledger::{BuildState, Ledger};
use baton_queue::Queue;

use crate::write_out;

/// Exit code of `--wait` when the job failed.
const EXIT_JOB_FAILED: u8 = 1;
/// Exit code of `--wait` when `--timeout` ran out.
const EXIT_TIMEOUT: u8 = 3;

/// How often `--wait` asks the ledger whether the job ended, in case its final event never comes
/// (publishing it failed: a lost event costs a live update, never the job).
const LEDGER_CHECK: std::time::Duration = std::time::Duration::from_secs(5);

/// What `--wait` follows a job with.
pub struct Follow<'a> {
    /// Redis, for the events.
    pub queue: &'a Queue,
    /// The ledger, unless the job was enqueued with `--no-ledger`.
    pub ledger: Option<&'a Ledger>,
    /// The job, as enqueued.
    pub done: &'a baton_producer::Enqueued,
    /// Print JSON lines.
    pub json: bool,
}

impl Follow<'_> {
    /// Follows the job's progress events: one line per event (or, on a terminal, one line per step
    /// rewritten as it changes), until the job completes or fails. Rides out Redis going away, and
    /// takes the job's end from the ledger when its final event does not come.
    pub async fn run(
        &self,
        from: &str,
        timeout: Option<std::time::Duration>,
    ) -> anyhow::Result<ExitCode> {
        let tty = !self.json && std::io::stdout().is_terminal();
        let mut reader = self.queue.event_reader(from).await?;
        let deadline = timeout.map(|t| std::time::Instant::now() + t);
        if !self.json {
            out!(
                "build {} enqueued as entry {}; following its progress",
                self.done.build_id,
                self.done.stream_id
            );
        }
        let mut open_line = false;
        let mut started = false;
        let mut redis_lost = false;
        let mut ledger_checked = std::time::Instant::now();
        let mut ended_in_ledger: Option<BuildState> = None;
        loop {
            if deadline.is_some_and(|d| std::time::Instant::now() >= d) {
                if open_line {
                    out!();
                }
                let state = if started {
                    "still running"
                } else {
                    "still queued (no worker started it)"
                };
                eprintln!(
                    "baton: build {} {state} after the timeout",
                    self.done.build_id
                );
                return Ok(ExitCode::from(EXIT_TIMEOUT));
            }
            let events = match reader.next(std::time::Duration::from_secs(1)).await {
                Ok(events) => {
                    if redis_lost {
                        eprintln!("baton: Redis answers again; following on");
                        redis_lost = false;
                    }
                    events
                }
                Err(e) => {
                    if !redis_lost {
                        eprintln!(
                            "baton: lost Redis while following the job ({}); retrying",
                            baton_core::describe_error(&e)
                        );
                        redis_lost = true;
                    }
                    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                    if let Ok(again) = self.queue.event_reader(reader.position()).await {
                        reader = again;
                    }
                    Vec::new()
                }
            };
            for event in events {
                if self.done.build_id != event.build_id {
                    continue;
                }
                started = true;
                open_line = self.show(&event, tty);
                if event.is_final() {
                    let status = match event.event {
                        EventType::JobCompleted => BuildStatus::Completed,
                        EventType::JobCancelled => BuildStatus::Cancelled,
                        _ => BuildStatus::Failed,
                    };
                    return Ok(self.end(status, event.session_id, event.error));
                }
            }
            // The ledger said the job ended one read ago, and its final event has still not come.
            if let Some(state) = ended_in_ledger.take() {
                if open_line {
                    out!();
                }
                let session = state.runs.last().map(|r| r.new_session_id.to_string());
                if !self.json {
                    let line = ended_line(
                        state.status,
                        session.as_deref(),
                        state.last_error.as_deref(),
                    );
                    out!("{line}");
                }
                return Ok(self.end(state.status, session, state.last_error));
            }
            if let Some(ledger) = self.ledger
                && ledger_checked.elapsed() >= LEDGER_CHECK
            {
                ledger_checked = std::time::Instant::now();
                // Not at once: the events of the job's last moments get one more read to arrive.
                ended_in_ledger = ledger
                    .build_state(&self.done.build_id)
                    .await
                    .ok()
                    .filter(|state| state.status.is_final());
            }
        }
    }

    /// Prints an event's line (none with `--json`); returns whether a step's line is left open
    /// on the terminal, to be rewritten.
    fn show(&self, event: &baton_core::events::Event, tty: bool) -> bool {
        let step = event.step.clone().unwrap_or_default();
        let session = event.session_id.clone().unwrap_or_else(|| "(fresh)".into());
        let line = match event.event {
            EventType::JobStarted => format!("started (claim {})", event.attempt.unwrap_or(1)),
            EventType::RunStarted => format!("{step:<25} running, resuming {session}"),
            EventType::SessionSeen => format!("{step:<25} running in session {session}"),
            EventType::RunFinished => format!(
                "{step:<25} {} in session {session}",
                event.outcome.clone().unwrap_or_default()
            ),
            EventType::JobRequeued => format!(
                "handed back to run later: {}",
                event.error.clone().unwrap_or_default()
            ),
            EventType::JobCompleted => {
                ended_line(BuildStatus::Completed, event.session_id.as_deref(), None)
            }
            EventType::JobFailed => ended_line(BuildStatus::Failed, None, event.error.as_deref()),
            EventType::JobCancelled => {
                ended_line(BuildStatus::Cancelled, event.session_id.as_deref(), None)
            }
        };
        if self.json {
            // Only the final object is printed with --json.
            false
        } else if tty {
            // One line per step, rewritten until the step finishes.
            let step_line = matches!(event.event, EventType::RunStarted | EventType::SessionSeen);
            write_out(format_args!("\r\x1b[2K{line}"));
            if !step_line {
                out!();
            }
            let _ = std::io::stdout().flush();
            step_line
        } else {
            out!("{line}");
            false
        }
    }

    /// The job ended: the final JSON object with `--json`, and the exit code.
    fn end(&self, status: BuildStatus, session: Option<String>, error: Option<String>) -> ExitCode {
        if self.json {
            out!(
                "{}",
                serde_json::json!({
                    "build_id": self.done.build_id,
                    "stream_id": self.done.stream_id,
                    "status": status.as_str(),
                    "session_id": session,
                    "error": error,
                })
            );
        }
        if status == BuildStatus::Completed {
            ExitCode::SUCCESS
        } else {
            ExitCode::from(EXIT_JOB_FAILED)
        }
    }
}

/// The last line `--wait` prints for a job that ended.
fn ended_line(status: BuildStatus, session: Option<&str>, error: Option<&str>) -> String {
    match status {
        BuildStatus::Completed => format!(
            "completed; the project's session is {}",
            session.unwrap_or("(fresh)")
        ),
        BuildStatus::Cancelled => format!(
            "cancelled; the project's session is {}",
            session.unwrap_or("(fresh)")
        ),
        _ => format!("failed: {}", error.unwrap_or_default()),
    }
}
