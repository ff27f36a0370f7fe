//! The job format (version 1) that a backend puts on the stream, and its validation.
//!
//! The same rules are published as a JSON Schema (`job.schema.json`, see [`JOB_SCHEMA`]) so that a
//! backend in another language can check a job before it enqueues it; a test keeps the two in step.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// The job format version this crate reads and writes.
pub const JOB_VERSION: u64 = 1;

/// The JSON Schema of a version-1 job, for producers written in other languages.
pub const JOB_SCHEMA: &str = include_str!("../job.schema.json");

/// Longest id (build, project, version, user) accepted.
pub const MAX_ID_LEN: usize = 128;
/// Longest session id accepted; the ledger stores them as `varchar(255)`.
pub const MAX_SESSION_ID_LEN: usize = 255;
/// Longest `project_path` accepted.
pub const MAX_PROJECT_PATH_LEN: usize = 255;
/// The default bound on a prompt's size (`BATON_MAX_PROMPT_BYTES`).
pub const DEFAULT_MAX_PROMPT_BYTES: usize = 64 * 1024;
/// Most tasks one `plan` job may carry.
pub const MAX_PLAN_TASKS: usize = 50;
/// The `fork_from` that names the project's main session.
pub const FORK_FROM_MAIN: &str = "main";

/// What kind of operation a job asks for; each kind has its own step plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobKind {
    /// The project's first build: starts a fresh session.
    Create,
    /// A later build: resumes the project's newest session.
    Update,
    /// A planning chat: one run in plan mode on the project's newest session.
    ChatPlan,
    /// A chat in one of the project's threads (`thread_id`): one run on the thread's newest
    /// session, or a fresh or forked start for the thread's first.
    Chat,
    /// A plan: its `tasks` run in order in one session, each resuming the one the task before left.
    Plan,
}

impl JobKind {
    /// The kind's name as it appears in the job JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            JobKind::Create => "create",
            JobKind::Update => "update",
            JobKind::ChatPlan => "chat_plan",
            JobKind::Chat => "chat",
            JobKind::Plan => "plan",
        }
    }
}

impl std::fmt::Display for JobKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for JobKind {
    type Err = JobError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "create" => Ok(JobKind::Create),
            "update" => Ok(JobKind::Update),
            "chat_plan" | "chat-plan" => Ok(JobKind::ChatPlan),
            "chat" => Ok(JobKind::Chat),
            "plan" => Ok(JobKind::Plan),
            other => Err(JobError::invalid(
                "kind",
                format!(
                    "unknown kind {other:?} (expected create, update, chat_plan, chat or plan)"
                ),
            )),
        }
    }
}

/// A build job as it travels on the stream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Job {
    /// Format version; always [`JOB_VERSION`].
    pub v: u64,
    /// Unique id of this build; the key of its checkpoint and ledger rows.
    pub build_id: crate::BuildId,
    /// Which step plan to run.
    pub kind: JobKind,
    /// The project the build belongs to.
    pub project_id: crate::ProjectId,
    /// The project version this build produces; empty (absent) only for a `chat` or `plan` job,
    /// which then records no version.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub version_id: String,
    /// The user who owns the project.
    pub user_id: String,
    /// What the user asked for.
    pub prompt: String,
    /// The session the backend believes is the project's newest, if any.
    pub previous_session_id: Option<crate::SessionId>,
    /// The project's directory, relative to `BATON_WORKSPACE_ROOT`.
    pub project_path: String,
    /// When the job was enqueued: RFC 3339 with a four-digit year, `T` and `Z` or an offset, as the
    /// published schema's pattern says.
    #[serde(deserialize_with = "rfc3339")]
    pub enqueued_at: DateTime<Utc>,
    /// The agent's settings for this job's runs, narrowing the operator's (never widening them).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<crate::agent::JobAgent>,
    /// The steps of the kind's plan to run, by name (every step when absent); they run in the
    /// plan's order whatever order they are given in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub steps: Option<Vec<String>>,
    /// Where this build's end is also sent as a signed webhook, beside `BATON_WEBHOOK_URL`; taken
    /// only when it starts with a prefix of `BATON_WEBHOOK_ALLOW`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook_url: Option<String>,
    /// The thread a `chat` job talks in: its own session chain beside the project's main one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thread_id: Option<String>,
    /// Where a `chat` job's thread, when this job starts it, branches from: `main` (the project's
    /// main session), another thread of the project and user, or a session id of the project's
    /// chains. Ignored once the thread exists.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fork_from: Option<String>,
    /// A `plan` job's tasks, run in order in one session.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tasks: Option<Vec<Task>>,
}

/// One task of a `plan` job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Task {
    /// The task's id, unique in its plan; its run is recorded as step `task:<id>`.
    pub id: String,
    /// What the task asks the agent to do.
    pub prompt: String,
}

/// Reads a timestamp as strictly as the schema's pattern does. chrono's own parsing is lenient (it
/// took `202 -11-21T05:00:00Z` for the year 202), which let the worker accept jobs the schema
/// refuses.
fn rfc3339<'de, D: serde::Deserializer<'de>>(d: D) -> Result<DateTime<Utc>, D::Error> {
    let text = String::deserialize(d)?;
    parse_timestamp(&text).ok_or_else(|| {
        serde::de::Error::custom(format!(
            "enqueued_at {text:?} is not an RFC 3339 timestamp like 2026-11-21T05:00:00Z"
        ))
    })
}

/// `text` as a UTC timestamp if it has the shape `YYYY-MM-DDTHH:MM:SS[.fraction](Z|+HH:MM|-HH:MM)`
/// and names a real instant.
fn parse_timestamp(text: &str) -> Option<DateTime<Utc>> {
    let b = text.as_bytes();
    let digits =
        |r: std::ops::Range<usize>| b.get(r).is_some_and(|d| d.iter().all(u8::is_ascii_digit));
    let shape = digits(0..4)
        && b.get(4) == Some(&b'-')
        && digits(5..7)
        && b.get(7) == Some(&b'-')
        && digits(8..10)
        && b.get(10) == Some(&b'T')
        && digits(11..13)
        && b.get(13) == Some(&b':')
        && digits(14..16)
        && b.get(16) == Some(&b':')
        && digits(17..19);
    if !shape {
        return None;
    }
    let mut rest = &text[19..];
    if let Some(fraction) = rest.strip_prefix('.') {
        let n = fraction.bytes().take_while(u8::is_ascii_digit).count();
        if n == 0 {
            return None;
        }
        rest = &fraction[n..];
    }
    let zone = rest.as_bytes();
    let zone_ok = rest == "Z"
        || (zone.len() == 6
            && matches!(zone[0], b'+' | b'-')
            && zone[1..3].iter().all(u8::is_ascii_digit)
            && zone[3] == b':'
            && zone[4..6].iter().all(u8::is_ascii_digit));
    if !zone_ok {
        return None;
    }
    DateTime::parse_from_rfc3339(text)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

/// Bounds that depend on configuration rather than on the format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest prompt accepted, in bytes.
    pub max_prompt_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_prompt_bytes: DEFAULT_MAX_PROMPT_BYTES,
        }
    }
}

/// Why a job was refused. Every variant is final: retrying the same payload cannot succeed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JobError {
    /// The payload is not JSON at all.
    #[error("job is not valid JSON: {0}")]
    NotJson(String),
    /// The payload is JSON but declares a version this build does not read.
    #[error("unsupported job version {0} (this worker reads version {JOB_VERSION})")]
    UnsupportedVersion(String),
    /// The payload does not have the shape of a job: a field is missing, unknown or of the wrong type.
    #[error("malformed job: {0}")]
    Malformed(String),
    /// A field has the right type but a value that is not allowed.
    #[error("invalid {field}: {reason}")]
    Invalid {
        /// The offending field.
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
}

impl JobError {
    /// A field whose value is not allowed, and why.
    pub fn invalid(field: &'static str, reason: impl Into<String>) -> Self {
        JobError::Invalid {
            field,
            reason: reason.into(),
        }
    }
}

/// The fields a producer supplies; [`NewJob::into_job`] fills in the rest and validates.
#[derive(Debug, Clone, Default)]
pub struct NewJob {
    /// Which step plan to run.
    pub kind: Option<JobKind>,
    /// The project the build belongs to.
    pub project_id: String,
    /// The version this build produces.
    pub version_id: String,
    /// The project's owner.
    pub user_id: String,
    /// What the user asked for.
    pub prompt: String,
    /// The session the backend believes is newest.
    pub previous_session_id: Option<String>,
    /// The project's directory; defaults to the project id.
    pub project_path: Option<String>,
    /// A build id chosen by the caller; a fresh UUIDv7 otherwise.
    pub build_id: Option<String>,
    /// The job's own agent settings.
    pub agent: Option<crate::agent::JobAgent>,
    /// The steps to run, when not all of the kind's.
    pub steps: Option<Vec<String>>,
    /// Where the build's end is also sent as a webhook.
    pub webhook_url: Option<String>,
    /// A `chat` job's thread.
    pub thread_id: Option<String>,
    /// Where a new thread forks from.
    pub fork_from: Option<String>,
    /// A `plan` job's tasks.
    pub tasks: Option<Vec<Task>>,
}

impl NewJob {
    /// Builds a version-1 job stamped now, and validates it.
    pub fn into_job(self, limits: &Limits) -> Result<Job, JobError> {
        let kind = self
            .kind
            .ok_or_else(|| JobError::invalid("kind", "missing"))?;
        let job = Job {
            v: JOB_VERSION,
            build_id: self
                .build_id
                .unwrap_or_else(|| uuid::Uuid::now_v7().to_string())
                .into(),
            kind,
            project_path: self.project_path.unwrap_or_else(|| self.project_id.clone()),
            project_id: self.project_id.into(),
            version_id: self.version_id,
            user_id: self.user_id,
            prompt: self.prompt,
            previous_session_id: self.previous_session_id.map(Into::into),
            enqueued_at: Utc::now(),
            agent: self.agent,
            steps: self.steps,
            webhook_url: self.webhook_url,
            thread_id: self.thread_id,
            fork_from: self.fork_from,
            tasks: self.tasks,
        };
        job.validate(limits)?;
        Ok(job)
    }
}

impl Job {
    /// Parses and validates a payload read from the stream.
    pub fn from_json(payload: &[u8], limits: &Limits) -> Result<Job, JobError> {
        let value: serde_json::Value =
            serde_json::from_slice(payload).map_err(|e| JobError::NotJson(e.to_string()))?;
        // The version is checked before the shape, so a newer producer gets a clear answer
        // rather than a complaint about whichever of its fields we do not know.
        match value.get("v") {
            Some(serde_json::Value::Number(n)) if n.as_u64() == Some(JOB_VERSION) => {}
            Some(other) => return Err(JobError::UnsupportedVersion(other.to_string())),
            None => return Err(JobError::Malformed("missing field `v`".into())),
        }
        let job: Job =
            serde_json::from_value(value).map_err(|e| JobError::Malformed(e.to_string()))?;
        job.validate(limits)?;
        Ok(job)
    }

    /// The job as the JSON a producer puts on the stream.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("a job always serialises")
    }

    /// Checks every field against the rules of the format and the configured limits.
    pub fn validate(&self, limits: &Limits) -> Result<(), JobError> {
        if self.v != JOB_VERSION {
            return Err(JobError::UnsupportedVersion(self.v.to_string()));
        }
        validate_id("build_id", &self.build_id, MAX_ID_LEN)?;
        validate_id("project_id", &self.project_id, MAX_ID_LEN)?;
        // A chat or a plan need not produce a version; every other kind does.
        if !(self.version_id.is_empty() && matches!(self.kind, JobKind::Chat | JobKind::Plan)) {
            validate_id("version_id", &self.version_id, MAX_ID_LEN)?;
        }
        validate_id("user_id", &self.user_id, MAX_ID_LEN)?;
        if let Some(session) = &self.previous_session_id {
            validate_id("previous_session_id", session, MAX_SESSION_ID_LEN)?;
        }
        validate_prompt(&self.prompt, limits)?;
        validate_project_path(&self.project_path)?;
        if let Some(agent) = &self.agent {
            crate::agent::check_job_agent(agent).map_err(|why| JobError::invalid("agent", why))?;
        }
        if let Some(steps) = &self.steps {
            validate_steps(self.kind, steps)?;
        }
        if let Some(url) = &self.webhook_url {
            crate::webhook::check_url(url).map_err(|why| JobError::invalid("webhook_url", why))?;
        }
        self.validate_kind_fields(limits)
    }

    /// The fields that belong to one kind: a chat's thread and fork, a plan's tasks.
    fn validate_kind_fields(&self, limits: &Limits) -> Result<(), JobError> {
        let only = |field: &'static str, kind: &str| {
            JobError::invalid(field, format!("only a {kind} job takes one"))
        };
        match (&self.thread_id, self.kind) {
            (Some(thread), JobKind::Chat) => validate_id("thread_id", thread, MAX_ID_LEN)?,
            (None, JobKind::Chat) => {
                return Err(JobError::invalid("thread_id", "a chat job must name one"));
            }
            (Some(_), _) => return Err(only("thread_id", "chat")),
            (None, _) => {}
        }
        match (&self.fork_from, self.kind) {
            (Some(from), JobKind::Chat) => {
                validate_id("fork_from", from, MAX_SESSION_ID_LEN)?;
                if Some(from) == self.thread_id.as_ref() {
                    return Err(JobError::invalid(
                        "fork_from",
                        "a thread cannot fork from itself",
                    ));
                }
            }
            (Some(_), _) => return Err(only("fork_from", "chat")),
            (None, _) => {}
        }
        match (&self.tasks, self.kind) {
            (Some(tasks), JobKind::Plan) => validate_tasks(tasks, limits)?,
            (None, JobKind::Plan) => {
                return Err(JobError::invalid("tasks", "a plan job must carry them"));
            }
            (Some(_), _) => return Err(only("tasks", "plan")),
            (None, _) => {}
        }
        Ok(())
    }
}

/// A plan's tasks: 1 to [`MAX_PLAN_TASKS`], each with a valid id no other task has and a prompt.
fn validate_tasks(tasks: &[Task], limits: &Limits) -> Result<(), JobError> {
    if tasks.is_empty() || tasks.len() > MAX_PLAN_TASKS {
        return Err(JobError::invalid(
            "tasks",
            format!(
                "a plan carries 1 to {MAX_PLAN_TASKS} tasks, not {}",
                tasks.len()
            ),
        ));
    }
    for (i, task) in tasks.iter().enumerate() {
        validate_id("tasks", &task.id, MAX_ID_LEN)?;
        if tasks[..i].iter().any(|t| t.id == task.id) {
            return Err(JobError::invalid(
                "tasks",
                format!("the id {:?} is taken by an earlier task", task.id),
            ));
        }
        validate_prompt(&task.prompt, limits).map_err(|e| match e {
            JobError::Invalid { reason, .. } => {
                JobError::invalid("tasks", format!("task {:?}: prompt {reason}", task.id))
            }
            other => other,
        })?;
    }
    Ok(())
}

/// A job's `steps`: at least one, each a step of its kind's plan, none twice.
fn validate_steps(kind: JobKind, steps: &[String]) -> Result<(), JobError> {
    if kind == JobKind::Plan {
        return Err(JobError::invalid(
            "steps",
            "a plan job runs its tasks; it takes no steps",
        ));
    }
    let plan = crate::plan::Step::plan(kind);
    if steps.is_empty() {
        return Err(JobError::invalid("steps", "must name at least one step"));
    }
    for (i, name) in steps.iter().enumerate() {
        if !plan.iter().any(|s| s.name() == name) {
            let names: Vec<&str> = plan.iter().map(|s| s.name()).collect();
            return Err(JobError::invalid(
                "steps",
                format!(
                    "{name:?} is not a step of a {kind} job ({})",
                    names.join(", ")
                ),
            ));
        }
        if steps[..i].contains(name) {
            return Err(JobError::invalid(
                "steps",
                format!("{name:?} is named twice"),
            ));
        }
    }
    Ok(())
}

/// What can be read of a job that is not valid: enough to give its build a final state the backend
/// can see. The build id must be a valid id; any other field that is not reads as empty.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadableJob {
    /// The build.
    pub build_id: String,
    /// Its project, or empty.
    pub project_id: String,
    /// Its version, or empty.
    pub version_id: String,
    /// Its user, or empty.
    pub user_id: String,
    /// Its kind as written, when it is a short word; `invalid` otherwise.
    pub kind: String,
}

impl ReadableJob {
    /// The ids of a payload that is a JSON object with a valid `build_id`, whatever else is wrong
    /// with it; `None` otherwise.
    pub fn from_payload(payload: &[u8]) -> Option<ReadableJob> {
        let value: serde_json::Value = serde_json::from_slice(payload).ok()?;
        let id = |field: &'static str, max: usize| {
            value
                .get(field)
                .and_then(|v| v.as_str())
                .filter(|v| validate_id(field, v, max).is_ok())
                .map(str::to_string)
        };
        Some(ReadableJob {
            build_id: id("build_id", MAX_ID_LEN)?,
            project_id: id("project_id", MAX_ID_LEN).unwrap_or_default(),
            version_id: id("version_id", MAX_ID_LEN).unwrap_or_default(),
            user_id: id("user_id", MAX_ID_LEN).unwrap_or_default(),
            kind: value
                .get("kind")
                .and_then(|v| v.as_str())
                .filter(|k| k.len() <= 32 && k.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'))
                .unwrap_or("invalid")
                .to_string(),
        })
    }
}

/// Ids go into Redis keys, file names, log lines and CLI arguments, so only a safe set is allowed:
/// ASCII letters, digits, `.`, `_`, `:` and `-`, starting with a letter or digit.
pub fn validate_id(field: &'static str, value: &str, max_len: usize) -> Result<(), JobError> {
    if value.is_empty() {
        return Err(JobError::invalid(field, "must not be empty"));
    }
    if value.len() > max_len {
        return Err(JobError::invalid(
            field,
            format!("is {} bytes long, the limit is {max_len}", value.len()),
        ));
    }
    if !value.as_bytes()[0].is_ascii_alphanumeric() {
        return Err(JobError::invalid(
            field,
            format!("{value:?} must start with a letter or digit"),
        ));
    }
    if let Some(bad) = value
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | ':' | '-')))
    {
        return Err(JobError::invalid(
            field,
            format!(
                "{value:?} contains {bad:?}; allowed are letters, digits, '.', '_', ':' and '-'"
            ),
        ));
    }
    Ok(())
}

fn validate_prompt(prompt: &str, limits: &Limits) -> Result<(), JobError> {
    if prompt.trim().is_empty() {
        return Err(JobError::invalid("prompt", "must not be empty"));
    }
    if prompt.len() > limits.max_prompt_bytes {
        return Err(JobError::invalid(
            "prompt",
            format!(
                "is {} bytes, the limit (BATON_MAX_PROMPT_BYTES) is {}",
                prompt.len(),
                limits.max_prompt_bytes
            ),
        ));
    }
    // A NUL byte cannot be passed in a process argument.
    if prompt.contains('\0') {
        return Err(JobError::invalid("prompt", "must not contain NUL bytes"));
    }
    Ok(())
}

/// A project path must stay inside the workspace root: relative, no `..`, no empty or hidden
/// tricks. Symlinks that lead out can only be seen on disk; the worker checks those.
pub fn validate_project_path(path: &str) -> Result<(), JobError> {
    const FIELD: &str = "project_path";
    if path.is_empty() {
        return Err(JobError::invalid(FIELD, "must not be empty"));
    }
    if path.len() > MAX_PROJECT_PATH_LEN {
        return Err(JobError::invalid(
            FIELD,
            format!("is longer than {MAX_PROJECT_PATH_LEN} bytes"),
        ));
    }
    if path.starts_with('/') || path.starts_with('\\') {
        return Err(JobError::invalid(
            FIELD,
            format!("{path:?} is absolute; it must be relative to BATON_WORKSPACE_ROOT"),
        ));
    }
    // Split by hand: `Path::components` drops empty and inner `.` components, so it took `a/./b`,
    // `a//b` and `a/`, which the schema refuses.
    for part in path.split('/') {
        let why = match part {
            ".." => format!("{path:?} contains '..' and could leave BATON_WORKSPACE_ROOT"),
            "." => format!("{path:?} contains '.'; give the plain relative path"),
            "" => format!("{path:?} has an empty component (a doubled or trailing '/')"),
            _ if part
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')) =>
            {
                continue;
            }
            _ => format!(
                "{path:?} has the component {part:?}; allowed are letters, digits, '.', '_' and '-'"
            ),
        };
        return Err(JobError::invalid(FIELD, why));
    }
    Ok(())
}

#[cfg(test)]
mod tests;
