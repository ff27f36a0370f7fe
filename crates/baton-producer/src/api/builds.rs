//! `POST /v1/builds`, `GET /v1/builds/{id}` and `POST /v1/builds/{id}/cancel`.

use crate::Producer;
use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use baton_core::{JobKind, NewJob};
use baton_ledger::LedgerError;
use baton_ledger::cancel::Cancel;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::Api;
use super::error::{ApiError, ErrorBody, JsonBody, PathParam};

/// A build to enqueue: the job's fields, as `baton enqueue` takes them.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct CreateBuild {
    /// `create`, `update`, `chat_plan`, `chat` or `plan`.
    #[schema(value_type = Kind)]
    kind: String,
    /// The project.
    #[schema(
        min_length = 1,
        max_length = 128,
        pattern = r"^[A-Za-z0-9][A-Za-z0-9._:-]*$"
    )]
    project_id: String,
    /// The version this build produces; a `chat` or a `plan` may name none.
    #[serde(default)]
    #[schema(
        min_length = 1,
        max_length = 128,
        pattern = r"^[A-Za-z0-9][A-Za-z0-9._:-]*$"
    )]
    version_id: Option<String>,
    /// The project's owner; `BATON_USER` of the server when absent.
    #[serde(default)]
    #[schema(
        min_length = 1,
        max_length = 128,
        pattern = r"^[A-Za-z0-9][A-Za-z0-9._:-]*$"
    )]
    user_id: Option<String>,
    /// What the user asks for: not blank, no NUL bytes, at most `BATON_MAX_PROMPT_BYTES` bytes
    /// (65536 by default, so at most 16384 characters of any kind).
    #[schema(min_length = 1, max_length = 16384, pattern = r"^[^\x00]*\S[^\x00]*$")]
    prompt: String,
    /// The session the backend believes is the project's newest.
    #[serde(default)]
    #[schema(
        min_length = 1,
        max_length = 255,
        pattern = r"^[A-Za-z0-9][A-Za-z0-9._:-]*$"
    )]
    previous_session_id: Option<String>,
    /// The project's folder under the workspace root; the project id when absent. No leading
    /// `/`, no `.` or `..` components.
    #[serde(default)]
    #[schema(
        min_length = 1,
        max_length = 255,
        pattern = r"^(?!.*(^|/)\.{1,2}(/|$))[A-Za-z0-9._-]+(/[A-Za-z0-9._-]+)*$"
    )]
    project_path: Option<String>,
    /// The build's id; also what makes a retry return the same build. A new UUIDv7 when absent
    /// (and no `Idempotency-Key` is sent).
    #[serde(default)]
    #[schema(
        min_length = 1,
        max_length = 128,
        pattern = r"^[A-Za-z0-9][A-Za-z0-9._:-]*$"
    )]
    build_id: Option<String>,
    /// The agent's settings for this build, narrowing the operator's.
    #[serde(default)]
    #[schema(value_type = Option<AgentSettings>)]
    agent: Option<serde_json::Value>,
    /// The steps of the kind's plan to run (all when absent).
    #[serde(default)]
    steps: Option<Vec<String>>,
    /// Where the build's end is also sent as a signed webhook; it must start with a prefix of
    /// `BATON_WEBHOOK_ALLOW`.
    #[serde(default)]
    #[schema(min_length = 1, max_length = 2048, pattern = r"^https?://\S*$")]
    webhook_url: Option<String>,
    /// A `chat`'s thread: its own session beside the project's main one.
    #[serde(default)]
    #[schema(
        min_length = 1,
        max_length = 128,
        pattern = r"^[A-Za-z0-9][A-Za-z0-9._:-]*$"
    )]
    thread_id: Option<String>,
    /// Where a `chat`'s new thread branches from: `main`, another thread of the project and
    /// user, or a session id of the project's chains.
    #[serde(default)]
    #[schema(
        min_length = 1,
        max_length = 255,
        pattern = r"^[A-Za-z0-9][A-Za-z0-9._:-]*$"
    )]
    fork_from: Option<String>,
    /// A `plan`'s tasks (1 to 50, ids distinct), run in order in one session.
    #[serde(default)]
    #[schema(value_type = Option<Vec<PlanTask>>)]
    tasks: Option<Vec<serde_json::Value>>,
}

/// One task of a plan.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)] // Only its schema is used.
pub(crate) struct PlanTask {
    /// The task's id; its run is recorded as step `task:<id>`.
    #[schema(
        min_length = 1,
        max_length = 128,
        pattern = r"^[A-Za-z0-9][A-Za-z0-9._:-]*$"
    )]
    id: String,
    /// What the task asks.
    #[schema(min_length = 1, max_length = 16384, pattern = r"^[^\x00]*\S[^\x00]*$")]
    prompt: String,
}

/// A job's kind, as the schema names it.
#[derive(ToSchema)]
#[schema(rename_all = "snake_case")]
#[allow(dead_code)] // Only its schema is used: the kind is parsed as the producer parses it.
pub(crate) enum Kind {
    /// A new project: a fresh session.
    Create,
    /// A change: resumes the project's newest session.
    Update,
    /// One plan-mode run on the newest session.
    ChatPlan,
    /// One run in the thread `thread_id`.
    Chat,
    /// The `tasks`, in order, in one session.
    Plan,
}

/// A job's own agent settings, as the job schema documents them; read as the worker reads them
/// (`baton_core::agent::JobAgent`), which refuses an unknown field.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)] // Only its schema is used.
pub(crate) struct AgentSettings {
    /// `--model`.
    #[schema(min_length = 1, max_length = 200, pattern = r"^[^-]")]
    model: Option<String>,
    /// `--permission-mode`.
    #[schema(value_type = Option<PermissionMode>)]
    permission_mode: Option<String>,
    /// `--allowed-tools`: only tools the operator allows, when the operator names any.
    allowed_tools: Option<Vec<String>>,
    /// `--disallowed-tools`, added to the operator's.
    disallowed_tools: Option<Vec<String>>,
    /// `--max-turns`, at most the operator's.
    #[schema(minimum = 1)]
    max_turns: Option<u32>,
    /// `--max-budget-usd` of each run, at most the operator's.
    #[schema(exclusive_minimum = 0.0)]
    max_budget_usd: Option<f64>,
    /// Appended to the system prompt, after the operator's.
    append_system_prompt: Option<String>,
}

/// The CLI's permission modes.
#[derive(ToSchema)]
#[allow(dead_code, clippy::enum_variant_names)] // Only its schema is used.
pub(crate) enum PermissionMode {
    /// Edits are accepted.
    #[schema(rename = "acceptEdits")]
    AcceptEdits,
    /// The CLI decides.
    #[schema(rename = "auto")]
    Auto,
    /// Nothing is asked (needs `BATON_ALLOW_BYPASS_PERMISSIONS`).
    #[schema(rename = "bypassPermissions")]
    BypassPermissions,
    /// Everything is asked.
    #[schema(rename = "manual")]
    Manual,
    /// Nothing is asked; what is not allowed is refused.
    #[schema(rename = "dontAsk")]
    DontAsk,
    /// Plan mode: no changes.
    #[schema(rename = "plan")]
    Plan,
    /// The CLI's default.
    #[schema(rename = "default")]
    Default,
}

/// An enqueued build.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Created {
    /// The build.
    build_id: String,
    /// Its entry on the job stream (absent when a retry found the build already there).
    stream_id: Option<String>,
    /// Where it stands.
    status: String,
}

/// A cancel's answer.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Cancelled {
    /// The build.
    build_id: String,
    /// `cancelled` (it had not started) or `requested` (its worker stops its run within a
    /// heartbeat and ends it `cancelled`).
    result: String,
}

/// Enqueues a build. An `Idempotency-Key` header (or a `build_id`) makes a retry return the same
/// build; the same key with another body is a conflict.
#[utoipa::path(
    post,
    path = "/v1/builds",
    request_body = CreateBuild,
    params(("Idempotency-Key" = Option<String>, Header, description = "Makes a retry return the same build; used as its build id")),
    responses(
        (status = 201, description = "Enqueued", body = Created),
        (status = 200, description = "The same build was already enqueued", body = Created),
        (status = 400, description = "Malformed", body = ErrorBody),
        (status = 401, description = "No or a wrong token", body = ErrorBody),
        (status = 409, description = "The key or build id is another build's, or the project another user's", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
        (status = 415, description = "Not sent as `application/json`", body = ErrorBody),
        (status = 422, description = "Not a valid job", body = ErrorBody),
    )
)]
pub(crate) async fn create(
    State(api): State<Api>,
    headers: HeaderMap,
    JsonBody(body): JsonBody<CreateBuild>,
) -> Result<(StatusCode, Json<Created>), ApiError> {
    let key = match headers.get("idempotency-key") {
        Some(v) => Some(
            v.to_str()
                .map_err(|_| {
                    ApiError::new(
                        StatusCode::BAD_REQUEST,
                        "bad_header",
                        "Idempotency-Key is not visible ASCII",
                    )
                })?
                .to_string(),
        ),
        None => None,
    };
    let build_id = match (body.build_id, key) {
        (Some(id), Some(key)) if id != key => {
            return Err(ApiError::invalid(
                "invalid_job",
                "build_id and Idempotency-Key differ; send one, or the same in both",
            ));
        }
        (id, key) => id.or(key),
    };
    let kind: JobKind = body
        .kind
        .parse()
        .map_err(|e: baton_core::JobError| ApiError::invalid("invalid_job", e.to_string()))?;
    let agent = body
        .agent
        .map(serde_json::from_value)
        .transpose()
        .map_err(|e| ApiError::invalid("invalid_job", format!("invalid agent: {e}")))?;
    let tasks = body
        .tasks
        .map(|tasks| serde_json::from_value(serde_json::Value::Array(tasks)))
        .transpose()
        .map_err(|e| ApiError::invalid("invalid_job", format!("invalid tasks: {e}")))?;
    let job = NewJob {
        kind: Some(kind),
        project_id: body.project_id,
        version_id: body.version_id.unwrap_or_default(),
        user_id: body
            .user_id
            .unwrap_or_else(|| api.inner.default_user.clone()),
        prompt: body.prompt,
        previous_session_id: body.previous_session_id,
        project_path: body.project_path,
        build_id: build_id.clone(),
        agent,
        steps: body.steps,
        webhook_url: body.webhook_url,
        thread_id: body.thread_id,
        fork_from: body.fork_from,
        tasks,
    }
    .into_job(&api.inner.limits)
    .and_then(|job| {
        crate::check_webhook_allowed(&job, &api.inner.webhook_allow)?;
        Ok(job)
    })
    .map_err(|e| ApiError::invalid("invalid_job", e.to_string()))?;
    // A build of this id already: the same job is a retry (200, nothing enqueued again); another
    // is refused by the ledger (409).
    if build_id.is_some() {
        match api.ledger().build_state(&job.build_id).await {
            Ok(state) => {
                api.ledger().record_queued(&job, None).await?;
                return Ok((
                    StatusCode::OK,
                    Json(Created {
                        build_id: job.build_id.to_string(),
                        stream_id: None,
                        status: state.status.as_str().to_string(),
                    }),
                ));
            }
            Err(LedgerError::UnknownBuild(_)) => {}
            Err(e) => return Err(e.into()),
        }
    }
    let producer = Producer::new(
        api.queue().clone(),
        Some(api.ledger().clone()),
        api.inner.limits,
    );
    let enqueued = producer.enqueue_job(&job).await?;
    Ok((
        StatusCode::CREATED,
        Json(Created {
            build_id: enqueued.build_id.to_string(),
            stream_id: Some(enqueued.stream_id),
            status: "queued".to_string(),
        }),
    ))
}

/// A build's state and its recorded runs: what `baton status --json` shows.
#[utoipa::path(
    get,
    path = "/v1/builds/{id}",
    params(("id" = String, Path, description = "The build")),
    responses(
        (status = 200, description = "The build", body = Object),
        (status = 401, description = "No or a wrong token", body = ErrorBody),
        (status = 404, description = "No such build", body = ErrorBody),
    )
)]
pub(crate) async fn get(
    State(api): State<Api>,
    PathParam(id): PathParam<String>,
) -> Result<Json<baton_ledger::BuildState>, ApiError> {
    Ok(Json(api.ledger().build_state(&id).await?))
}

/// Cancels a build: a queued one never starts; a running one's CLI run is ended by the worker that
/// holds it within a heartbeat, not recorded, and the build ends `cancelled`.
#[utoipa::path(
    post,
    path = "/v1/builds/{id}/cancel",
    params(("id" = String, Path, description = "The build")),
    responses(
        (status = 202, description = "Cancelled, or its worker asked to stop it", body = Cancelled),
        (status = 401, description = "No or a wrong token", body = ErrorBody),
        (status = 404, description = "No such build", body = ErrorBody),
        (status = 409, description = "The build already ended", body = ErrorBody),
    )
)]
pub(crate) async fn cancel(
    State(api): State<Api>,
    PathParam(id): PathParam<String>,
) -> Result<(StatusCode, Json<Cancelled>), ApiError> {
    let result = match crate::cancel::cancel(api.queue(), api.ledger(), &id).await? {
        Cancel::Cancelled => "cancelled",
        Cancel::Requested => "requested",
        Cancel::Ended(status) => {
            return Err(ApiError::conflict(
                "build_ended",
                format!("build {id} already ended ({})", status.as_str()),
            ));
        }
    };
    Ok((
        StatusCode::ACCEPTED,
        Json(Cancelled {
            build_id: id,
            result: result.to_string(),
        }),
    ))
}
