//! A build as the ledger knows it: its state, and each recorded run with what the agent answered.

use baton_core::{BuildId, BuildStatus, Job, ProjectId, SessionId, Step};
use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::{Ledger, LedgerError};

/// What a run answered, stored with its record (`BATON_MAX_RESULT_BYTES` bounds the text).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct RunResult {
    /// The result's text, cut with a marker past the bound.
    pub result: Option<String>,
    /// The result's `subtype` (`success`, `error_max_turns`, ...).
    pub subtype: Option<String>,
    /// Why the model's last message ended.
    pub stop_reason: Option<String>,
    /// Why the turn ended (`completed`, `max_turns`, ...).
    pub terminal_reason: Option<String>,
    /// Whether the CLI marked the run as failed.
    pub is_error: bool,
    /// The tool calls the permission mode refused, as the CLI reported them.
    pub permission_denials: serde_json::Value,
    /// Every file-writing tool call of the run was refused.
    pub nothing_done: bool,
}

/// One recorded run of a build, as `baton status` shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RunSummary {
    /// The step.
    pub step: Step,
    /// The session the run resumed.
    pub old_session_id: Option<SessionId>,
    /// The session the run left.
    pub new_session_id: SessionId,
    /// What it answered.
    #[serde(flatten)]
    pub answer: RunResult,
    /// Turns the CLI reported.
    pub num_turns: Option<i32>,
    /// `total_cost_usd` as the CLI reported it.
    pub cost_usd: Option<f64>,
    /// Uncached input tokens.
    pub input_tokens: Option<i64>,
    /// Output tokens.
    pub output_tokens: Option<i64>,
    /// Cached input tokens read.
    pub cache_read_input_tokens: Option<i64>,
    /// Cached input tokens written.
    pub cache_creation_input_tokens: Option<i64>,
    /// How long the run took, as the CLI reported it.
    pub duration_ms: Option<i64>,
    /// When the run was recorded (it ended moments before).
    pub recorded_at: DateTime<Utc>,
}

/// A build as the ledger knows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BuildState {
    /// The build.
    pub build_id: BuildId,
    /// Its project.
    pub project_id: ProjectId,
    /// Its version.
    pub version_id: String,
    /// What the job asks for (`create`, `update`, `chat_plan`, `chat`, `plan`), or, for a job
    /// refused because it could not be read, what it said (`invalid` when nothing).
    pub kind: String,
    /// The thread of a `chat` job.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub thread_id: Option<String>,
    /// Where it stands.
    pub status: BuildStatus,
    /// The last step recorded.
    pub step: Option<Step>,
    /// The step running now: the first of the job's plan not recorded yet, while the build runs.
    pub current_step: Option<Step>,
    /// Claims so far.
    pub attempt: i32,
    /// The last error, if any.
    pub last_error: Option<String>,
    /// When the producer enqueued it.
    pub enqueued_at: Option<DateTime<Utc>>,
    /// When a worker first took it.
    pub started_at: Option<DateTime<Utc>>,
    /// When it completed or failed.
    pub finished_at: Option<DateTime<Utc>>,
    /// The job's answer: the last run's result that is not a compaction's.
    pub output: Option<String>,
    /// Its runs, in order.
    pub runs: Vec<RunSummary>,
}

impl Ledger {
    /// The build's state and the runs it recorded.
    pub async fn build_state(&self, build_id: &str) -> Result<BuildState, LedgerError> {
        let row = sqlx::query!(
            r#"SELECT build_id, project_id, version_id, kind, status, step, attempt, last_error,
                      enqueued_at, started_at, finished_at, payload
               FROM builds WHERE build_id = $1"#,
            build_id
        )
        .fetch_optional(&self.pool)
        .await?
        .ok_or_else(|| LedgerError::UnknownBuild(build_id.to_string()))?;
        let runs = self.run_summaries(build_id).await?;
        // The job's own plan: its kind's steps, those its `steps` chose, or its tasks.
        let job = row
            .payload
            .and_then(|p| serde_json::from_value::<Job>(p).ok());
        let plan = job.as_ref().map(Step::plan_of);
        let unexpected = |what: &str, value: &str| {
            LedgerError::Unexpected(format!("build {build_id} has {what} {value:?}"))
        };
        let status = BuildStatus::from_name(&row.status)
            .ok_or_else(|| unexpected("the status", &row.status))?;
        let current_step = match (status, plan) {
            (BuildStatus::Running, Some(plan)) => plan
                .iter()
                .find(|s| !runs.iter().any(|r| r.step == **s))
                .cloned(),
            _ => None,
        };
        Ok(BuildState {
            build_id: row.build_id.into(),
            project_id: row.project_id.into(),
            version_id: row.version_id,
            kind: row.kind,
            thread_id: job.and_then(|j| j.thread_id),
            status,
            step: row.step.as_deref().map(crate::step_named).transpose()?,
            current_step,
            attempt: row.attempt,
            last_error: row.last_error,
            enqueued_at: row.enqueued_at,
            started_at: row.started_at,
            finished_at: row.finished_at,
            output: output(&runs),
            runs,
        })
    }

    async fn run_summaries(&self, build_id: &str) -> Result<Vec<RunSummary>, LedgerError> {
        let rows = sqlx::query!(
            r#"SELECT t.step AS "step!", t.old_session_id, t.new_session_id AS "new_session_id!",
                      r.result AS "result?", r.subtype AS "subtype?", r.stop_reason AS "stop_reason?",
                      r.terminal_reason AS "terminal_reason?", r.is_error AS "is_error?",
                      r.permission_denials AS "permission_denials?", r.nothing_done AS "nothing_done?",
                      m.num_turns AS "num_turns?", m.cost_usd AS "cost_usd?",
                      m.input_tokens AS "input_tokens?", m.output_tokens AS "output_tokens?",
                      m.cache_read_input_tokens AS "cache_read_input_tokens?",
                      m.cache_creation_input_tokens AS "cache_creation_input_tokens?",
                      m.duration_ms AS "duration_ms?", t.created_at
               FROM session_transitions t
               LEFT JOIN run_results r ON r.build_id = t.build_id AND r.step = t.step
               LEFT JOIN project_ai_session_metrics m ON m.build_id = t.build_id AND m.step = t.step
               WHERE t.build_id = $1 AND t.step IS NOT NULL AND t.new_session_id IS NOT NULL
               ORDER BY t.id"#,
            build_id
        )
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter()
            .map(|r| {
                Ok(RunSummary {
                    step: crate::step_named(&r.step)?,
                    old_session_id: r.old_session_id.map(SessionId::from),
                    new_session_id: r.new_session_id.into(),
                    answer: RunResult {
                        result: r.result,
                        subtype: r.subtype,
                        stop_reason: r.stop_reason,
                        terminal_reason: r.terminal_reason,
                        is_error: r.is_error.unwrap_or(false),
                        permission_denials: r
                            .permission_denials
                            .unwrap_or_else(|| serde_json::Value::Array(Vec::new())),
                        nothing_done: r.nothing_done.unwrap_or(false),
                    },
                    num_turns: r.num_turns,
                    cost_usd: r.cost_usd,
                    input_tokens: r.input_tokens,
                    output_tokens: r.output_tokens,
                    cache_read_input_tokens: r.cache_read_input_tokens,
                    cache_creation_input_tokens: r.cache_creation_input_tokens,
                    duration_ms: r.duration_ms,
                    recorded_at: r.created_at,
                })
            })
            .collect()
    }
}

/// A job's answer: its last run's result that is not a compaction's.
pub fn output(runs: &[RunSummary]) -> Option<String> {
    runs.iter()
        .rev()
        .filter(|r| r.step != Step::Compact)
        .find_map(|r| r.answer.result.clone())
}
