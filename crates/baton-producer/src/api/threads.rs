//! A project's chat threads over HTTP: list a user's, show, delete and fork one, as `baton thread`
//! does.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use baton_ledger::threads::{DeletedThread, ThreadDetail, ThreadError, ThreadSummary};
use serde::Deserialize;
use utoipa::{IntoParams, ToSchema};

use super::Api;
use super::error::{ApiError, ErrorBody, JsonBody, PathParam, QueryParams};

/// Whose threads to list.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct ThreadQuery {
    /// The threads' owner.
    user_id: String,
    /// Only this project's.
    project_id: Option<String>,
}

/// A user's threads, newest first: what `baton thread list --json` shows.
#[utoipa::path(
    get,
    path = "/v1/threads",
    params(ThreadQuery),
    responses(
        (status = 200, description = "The threads", body = Vec<Object>),
        (status = 400, description = "No user_id", body = ErrorBody),
        (status = 401, description = "No or a wrong token", body = ErrorBody),
    )
)]
pub(crate) async fn list(
    State(api): State<Api>,
    QueryParams(query): QueryParams<ThreadQuery>,
) -> Result<Json<Vec<ThreadSummary>>, ApiError> {
    for (field, value) in [
        ("user_id", Some(&query.user_id)),
        ("project_id", query.project_id.as_ref()),
    ] {
        if let Some(value) = value {
            baton_core::job::validate_id(field, value, baton_core::job::MAX_ID_LEN)
                .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "bad_query", e.to_string()))?;
        }
    }
    Ok(Json(
        api.ledger()
            .threads(&query.user_id, query.project_id.as_deref())
            .await?,
    ))
}

/// One thread and its chain: what `baton thread show --json` shows.
#[utoipa::path(
    get,
    path = "/v1/projects/{project}/threads/{thread}",
    params(
        ("project" = String, Path, description = "The project"),
        ("thread" = String, Path, description = "The thread"),
    ),
    responses(
        (status = 200, description = "The thread", body = Object),
        (status = 401, description = "No or a wrong token", body = ErrorBody),
        (status = 404, description = "No such thread", body = ErrorBody),
    )
)]
pub(crate) async fn get(
    State(api): State<Api>,
    PathParam((project, thread)): PathParam<(String, String)>,
) -> Result<Json<ThreadDetail>, ApiError> {
    known(&project, &thread)?;
    Ok(Json(api.ledger().thread(&project, &thread).await?))
}

/// Deletes a thread: its mapping, its chain and its stored transcripts; never the main session.
#[utoipa::path(
    delete,
    path = "/v1/projects/{project}/threads/{thread}",
    params(
        ("project" = String, Path, description = "The project"),
        ("thread" = String, Path, description = "The thread"),
    ),
    responses(
        (status = 200, description = "Deleted", body = Object),
        (status = 401, description = "No or a wrong token", body = ErrorBody),
        (status = 404, description = "No such thread", body = ErrorBody),
        (status = 409, description = "A job of the thread is running", body = ErrorBody),
    )
)]
pub(crate) async fn delete(
    State(api): State<Api>,
    PathParam((project, thread)): PathParam<(String, String)>,
) -> Result<Json<DeletedThread>, ApiError> {
    known(&project, &thread)?;
    Ok(Json(api.ledger().delete_thread(&project, &thread).await?))
}

/// Where a fork goes.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ForkBody {
    /// The new thread.
    #[schema(
        min_length = 1,
        max_length = 128,
        pattern = r"^[A-Za-z0-9][A-Za-z0-9._:-]*$"
    )]
    to: String,
}

/// Makes thread `to` a branch of this thread, owned by its user: `to`'s first chat forks this
/// thread's session as it is now.
#[utoipa::path(
    post,
    path = "/v1/projects/{project}/threads/{thread}/fork",
    params(
        ("project" = String, Path, description = "The project"),
        ("thread" = String, Path, description = "The thread to branch from"),
    ),
    request_body = ForkBody,
    responses(
        (status = 201, description = "The new thread", body = Object),
        (status = 400, description = "Malformed", body = ErrorBody),
        (status = 401, description = "No or a wrong token", body = ErrorBody),
        (status = 404, description = "No such thread, or nothing to fork yet", body = ErrorBody),
        (status = 409, description = "The new thread exists", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
        (status = 415, description = "Not sent as `application/json`", body = ErrorBody),
        (status = 422, description = "Not a thread id", body = ErrorBody),
    )
)]
pub(crate) async fn fork(
    State(api): State<Api>,
    PathParam((project, thread)): PathParam<(String, String)>,
    JsonBody(body): JsonBody<ForkBody>,
) -> Result<(StatusCode, Json<ThreadSummary>), ApiError> {
    known(&project, &thread)?;
    baton_core::job::validate_id("to", &body.to, baton_core::job::MAX_ID_LEN)
        .map_err(|e| ApiError::invalid("invalid_thread", e.to_string()))?;
    let made = api
        .ledger()
        .fork_thread(&project, &thread, &body.to)
        .await?;
    Ok((StatusCode::CREATED, Json(made)))
}

/// A project and thread id the ledger could hold: anything else is a thread that is not there
/// (and never reaches the database, which refuses some bytes outright).
fn known(project: &str, thread: &str) -> Result<(), ApiError> {
    let valid = |field, id| baton_core::job::validate_id(field, id, baton_core::job::MAX_ID_LEN);
    valid("project", project)
        .and(valid("thread", thread))
        .map_err(|_| ApiError::not_found(format!("project {project:?} has no thread {thread:?}")))
}

impl From<ThreadError> for ApiError {
    fn from(e: ThreadError) -> ApiError {
        match e {
            e @ ThreadError::NotFound { .. } => ApiError::not_found(e.to_string()),
            e @ ThreadError::Exists { .. } => ApiError::conflict("thread_exists", e.to_string()),
            e @ ThreadError::Running { .. } => ApiError::conflict("thread_running", e.to_string()),
            ThreadError::Ledger(e @ baton_ledger::LedgerError::ForkSourceUnknown { .. }) => {
                ApiError::not_found(e.to_string())
            }
            ThreadError::Ledger(e) => e.into(),
        }
    }
}
