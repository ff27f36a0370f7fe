//! Deciding once what a run came to, from its stream, its stderr and how it exited.

use std::time::Duration;

use serde::Serialize;

use crate::stream::StreamState;

/// What the CLI prints when the session to resume does not exist.
const NO_CONVERSATION: &str = "No conversation found with session ID";
/// What the CLI prints when a `--resume` value is neither a UUID nor a session title.
const NO_SUCH_TITLE: &str = "--resume requires a valid session ID or session title";

/// What an agent run came to. A `result` line is authoritative over the exit code.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Outcome {
    /// The run did what it was asked.
    Success,
    /// The session named by `--resume` does not exist (any CLI version in the contract).
    ResumeNotFound {
        /// The missing session id, where the CLI named it.
        session_id: Option<String>,
    },
    /// Not logged in, or an authentication, organisation or billing failure. Not the job's fault.
    AuthFailed {
        /// What the CLI said.
        detail: String,
    },
    /// Rate limited or overloaded.
    RateLimited {
        /// When the limit resets, where the stream said so.
        retry_after: Option<Duration>,
        /// What the CLI said.
        detail: String,
    },
    /// The run hit `--max-turns`.
    TurnLimit {
        /// What the CLI said.
        detail: String,
    },
    /// The run hit its spending limit.
    BudgetLimit {
        /// What the CLI said.
        detail: String,
    },
    /// A `/compact` run that did not compact (failed, or nothing to compact). Exits 0 all the same.
    CompactionFailed {
        /// What the CLI said.
        detail: String,
    },
    /// The CLI refused its command line (flag errors on stderr).
    InvalidInvocation {
        /// What the CLI said.
        detail: String,
    },
    /// Any other error the CLI reported in its `result`.
    Failed {
        /// Whether trying again may help (server errors, errors during execution).
        retryable: bool,
        /// What the CLI said.
        detail: String,
    },
    /// The process ended without a `result`: a crash, or killed by a signal.
    Crashed {
        /// Exit code or signal, and the tail of stderr.
        detail: String,
    },
    /// A watchdog fired: no output for the idle limit, or the wall-clock limit ran out.
    Hung {
        /// Which watchdog fired.
        detail: String,
    },
    /// The caller cancelled the run (shutdown, lost lease).
    Cancelled,
}

impl Outcome {
    /// Whether running the same request again may succeed.
    pub fn is_retryable(&self) -> bool {
        match self {
            Outcome::RateLimited { .. } | Outcome::Crashed { .. } | Outcome::Hung { .. } => true,
            Outcome::Failed { retryable, .. } => *retryable,
            Outcome::Success
            | Outcome::ResumeNotFound { .. }
            | Outcome::AuthFailed { .. }
            | Outcome::TurnLimit { .. }
            | Outcome::BudgetLimit { .. }
            | Outcome::CompactionFailed { .. }
            | Outcome::InvalidInvocation { .. }
            | Outcome::Cancelled => false,
        }
    }

    /// A short stable label for logs and metrics.
    pub fn label(&self) -> &'static str {
        match self {
            Outcome::Success => "success",
            Outcome::ResumeNotFound { .. } => "resume_not_found",
            Outcome::AuthFailed { .. } => "auth_failed",
            Outcome::RateLimited { .. } => "rate_limited",
            Outcome::TurnLimit { .. } => "turn_limit",
            Outcome::BudgetLimit { .. } => "budget_limit",
            Outcome::CompactionFailed { .. } => "compaction_failed",
            Outcome::InvalidInvocation { .. } => "invalid_invocation",
            Outcome::Failed { .. } => "failed",
            Outcome::Crashed { .. } => "crashed",
            Outcome::Hung { .. } => "hung",
            Outcome::Cancelled => "cancelled",
        }
    }
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Outcome::Success => f.write_str("success"),
            Outcome::Cancelled => f.write_str("cancelled"),
            Outcome::ResumeNotFound { session_id } => write!(
                f,
                "resume target not found: {}",
                session_id.as_deref().unwrap_or("?")
            ),
            Outcome::RateLimited {
                retry_after,
                detail,
            } => match retry_after {
                Some(d) => write!(f, "rate_limited (retry after {}s): {detail}", d.as_secs()),
                None => write!(f, "rate_limited: {detail}"),
            },
            Outcome::AuthFailed { detail }
            | Outcome::TurnLimit { detail }
            | Outcome::BudgetLimit { detail }
            | Outcome::CompactionFailed { detail }
            | Outcome::InvalidInvocation { detail }
            | Outcome::Failed { detail, .. }
            | Outcome::Crashed { detail }
            | Outcome::Hung { detail } => write!(f, "{}: {detail}", self.label()),
        }
    }
}

/// How the process ended, as far as the classifier needs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// Exited with this code.
    Code(i32),
    /// Killed by this signal.
    Signal(i32),
}

/// Which watchdog, if any, ended the run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// The process ended by itself (or after its result, see [`crate::RunReport::killed_after_result`]).
    Natural,
    /// No output for the idle limit.
    Idle(Duration),
    /// The wall-clock limit ran out.
    WallClock(Duration),
    /// The caller cancelled.
    Cancelled,
}

/// Classifies a finished run. `compact` says the run was a `/compact`.
pub fn classify(
    state: &StreamState,
    exit: Option<Exit>,
    stderr: &str,
    stop: Stop,
    compact: bool,
    now_epoch_secs: u64,
) -> Outcome {
    if let Some(result) = &state.result {
        if let Some(session_id) = result.errors.iter().find_map(|e| missing_resume_target(e)) {
            return Outcome::ResumeNotFound { session_id };
        }
        return classify_result(state, result, compact, now_epoch_secs);
    }
    // Without a result, the watchdog or the caller explains the end before stderr does.
    match stop {
        Stop::Cancelled => return Outcome::Cancelled,
        Stop::Idle(d) => {
            return Outcome::Hung {
                detail: format!("no output for {}s", d.as_secs_f64()),
            };
        }
        Stop::WallClock(d) => {
            return Outcome::Hung {
                detail: format!(
                    "still running after the {}s wall-clock limit",
                    d.as_secs_f64()
                ),
            };
        }
        Stop::Natural => {}
    }
    if let Some(session_id) = missing_resume_target(stderr) {
        return Outcome::ResumeNotFound { session_id };
    }
    let tail = last_lines(stderr, 5);
    match exit {
        Some(Exit::Code(code)) if code != 0 && state.lines == 0 && is_flag_error(stderr) => {
            Outcome::InvalidInvocation { detail: tail }
        }
        Some(Exit::Signal(sig)) => Outcome::Crashed {
            detail: format!("killed by signal {sig} before a result; stderr: {tail}"),
        },
        Some(Exit::Code(code)) => Outcome::Crashed {
            detail: format!("exited with code {code} without a result; stderr: {tail}"),
        },
        None => Outcome::Crashed {
            detail: format!("ended without a result or an exit status; stderr: {tail}"),
        },
    }
}

/// Whether `text` says the resume target cannot be found, and which one where it says so.
fn missing_resume_target(text: &str) -> Option<Option<String>> {
    text.lines().find_map(|line| {
        if let Some(at) = line.find(NO_CONVERSATION) {
            let id = line[at + NO_CONVERSATION.len()..]
                .trim_start_matches(':')
                .trim();
            return Some((!id.is_empty()).then(|| id.to_string()));
        }
        if line.contains(NO_SUCH_TITLE) {
            let value = line
                .split_once("Provided value \"")
                .and_then(|(_, rest)| rest.split_once('"'))
                .map(|(v, _)| v.to_string());
            return Some(value);
        }
        None
    })
}

/// Whether stderr refuses the command line: a flag error, or the refusal to bypass permissions as
/// root (which the CLI prints without an `Error:`).
fn is_flag_error(stderr: &str) -> bool {
    stderr.lines().any(|l| {
        let l = l.trim_start();
        l.starts_with("Error:") || l.starts_with("error:") || l.contains(crate::BYPASS_AS_ROOT)
    })
}

fn classify_result(
    state: &StreamState,
    result: &crate::stream::ResultLine,
    compact: bool,
    now_epoch_secs: u64,
) -> Outcome {
    let text = result
        .result
        .clone()
        .or_else(|| result.errors.first().cloned())
        .unwrap_or_default();
    if let Some(api_error) = &state.api_error {
        let detail = format!("{api_error}: {text}");
        return match api_error.as_str() {
            "authentication_failed" | "oauth_org_not_allowed" | "billing_error" => {
                Outcome::AuthFailed { detail }
            }
            "rate_limit" | "overloaded" => Outcome::RateLimited {
                retry_after: state
                    .rate_limit_resets_at
                    .map(|t| Duration::from_secs(t.saturating_sub(now_epoch_secs))),
                detail,
            },
            "invalid_request" | "model_not_found" => Outcome::Failed {
                retryable: false,
                detail,
            },
            _ => Outcome::Failed {
                retryable: true,
                detail,
            },
        };
    }
    match result.subtype.as_str() {
        "error_max_turns" => return Outcome::TurnLimit { detail: text },
        "error_max_budget_usd" => return Outcome::BudgetLimit { detail: text },
        "error_max_structured_output_retries" => {
            return Outcome::Failed {
                retryable: false,
                detail: text,
            };
        }
        "error_during_execution" => {
            return Outcome::Failed {
                retryable: true,
                detail: text,
            };
        }
        _ => {}
    }
    if result.is_error {
        if text.contains("Not logged in") || text.contains("/login") {
            return Outcome::AuthFailed { detail: text };
        }
        // The API's own status, where the CLI reports it, decides: a server error or a rate
        // limit may pass, a refused request will not.
        let retryable = match result.api_error_status {
            Some(401 | 403) => return Outcome::AuthFailed { detail: text },
            Some(429) => {
                return Outcome::RateLimited {
                    retry_after: None,
                    detail: text,
                };
            }
            Some(status) => status >= 500,
            None => result.terminal_reason.as_deref() == Some("api_error"),
        };
        // A budget the CLI spent up is the job's to fix, however the CLI words it.
        if result.terminal_reason.as_deref() == Some("budget_exhausted") {
            return Outcome::BudgetLimit { detail: text };
        }
        return Outcome::Failed {
            retryable,
            detail: text,
        };
    }
    if compact {
        let compacted =
            state.saw_compact_boundary || state.compact_result.as_deref() == Some("success");
        if !compacted {
            let detail = state.compact_error.clone().unwrap_or(text);
            return Outcome::CompactionFailed { detail };
        }
    }
    Outcome::Success
}

fn last_lines(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    let start = lines.len().saturating_sub(n);
    lines[start..].join(" | ")
}
