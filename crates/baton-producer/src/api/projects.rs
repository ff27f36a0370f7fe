//! `GET /v1/projects/{id}`, its chain, and its session's reset.

use axum::Json;
use axum::extract::State;

use super::Api;
use super::error::{ApiError, ErrorBody, PathParam};

/// A project's session (what its next job resumes), when it changed, and counts.
#[utoipa::path(
    get,
    path = "/v1/projects/{id}",
    params(("id" = String, Path, description = "The project")),
    responses(
        (status = 200, description = "The project", body = Object),
        (status = 401, description = "No or a wrong token", body = ErrorBody),
        (status = 404, description = "No such project", body = ErrorBody),
    )
)]
pub(crate) async fn get(
    State(api): State<Api>,
    PathParam(id): PathParam<String>,
) -> Result<Json<baton_ledger::projects::ProjectSummary>, ApiError> {
    Ok(Json(api.ledger().project_summary(&id).await?))
}

/// The project's session transitions, oldest first: what `baton chain --json` shows.
#[utoipa::path(
    get,
    path = "/v1/projects/{id}/chain",
    params(("id" = String, Path, description = "The project")),
    responses(
        (status = 200, description = "The chain", body = Vec<Object>),
        (status = 401, description = "No or a wrong token", body = ErrorBody),
        (status = 404, description = "No such project", body = ErrorBody),
    )
)]
pub(crate) async fn chain(
    State(api): State<Api>,
    PathParam(id): PathParam<String>,
) -> Result<Json<Vec<baton_ledger::Transition>>, ApiError> {
    // An unknown project is a 404, not an empty chain.
    api.ledger().project_summary(&id).await?;
    Ok(Json(api.ledger().chain(&id).await?))
}

/// Ends the project's session: its next job starts fresh. A job of the project that is running
/// finishes on the session first (`deferred`).
#[utoipa::path(
    post,
    path = "/v1/projects/{id}/session/reset",
    params(("id" = String, Path, description = "The project")),
    responses(
        (status = 200, description = "Reset, or deferred until the running job ends", body = Object),
        (status = 401, description = "No or a wrong token", body = ErrorBody),
        (status = 404, description = "No such project", body = ErrorBody),
    )
)]
pub(crate) async fn reset(
    State(api): State<Api>,
    PathParam(id): PathParam<String>,
) -> Result<Json<baton_ledger::Reset>, ApiError> {
    Ok(Json(api.ledger().reset_session(&id).await?))
}
