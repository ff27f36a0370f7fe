//! `GET /v1/sessions/{id}` and `GET /v1/sessions/{id}/export`: what the ledger holds of a session.

use axum::Json;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;

use super::Api;
use super::error::{ApiError, ErrorBody, PathParam};
use crate::sessions::Export;

/// What the ledger holds of a session: its files and sizes, the runs that left it, whether it is
/// incomplete and why, its first and last messages (`baton session show --json`).
#[utoipa::path(
    get,
    path = "/v1/sessions/{id}",
    params(("id" = String, Path, description = "The session")),
    responses(
        (status = 200, description = "The session", body = Object),
        (status = 401, description = "No or a wrong token", body = ErrorBody),
        (status = 404, description = "The ledger holds no files of it", body = ErrorBody),
    )
)]
pub(crate) async fn get(
    State(api): State<Api>,
    PathParam(id): PathParam<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    crate::sessions::summary(api.ledger(), &id)
        .await?
        .map(Json)
        .ok_or_else(|| ApiError::not_found(format!("the ledger holds no files of session {id}")))
}

/// A session's stored files as a `.tar.gz`, as `baton session import` reads it back.
#[utoipa::path(
    get,
    path = "/v1/sessions/{id}/export",
    params(("id" = String, Path, description = "The session")),
    responses(
        (status = 200, description = "The archive", content_type = "application/gzip", body = Vec<u8>),
        (status = 401, description = "No or a wrong token", body = ErrorBody),
        (status = 404, description = "The ledger holds no files of it", body = ErrorBody),
        (status = 409, description = "The ledger holds no whole copy of it", body = ErrorBody),
    )
)]
pub(crate) async fn export(
    State(api): State<Api>,
    PathParam(id): PathParam<String>,
) -> Result<impl IntoResponse, ApiError> {
    match crate::sessions::export(api.ledger(), &id).await? {
        Export::Archive { bytes, .. } => Ok((
            [
                (header::CONTENT_TYPE, "application/gzip".to_string()),
                (
                    header::CONTENT_DISPOSITION,
                    format!("attachment; filename=\"session-{}.tar.gz\"", safe_name(&id)),
                ),
            ],
            bytes,
        )),
        Export::Unknown => Err(ApiError::not_found(format!(
            "the ledger holds no files of session {id}"
        ))),
        Export::Incomplete(why) => Err(ApiError::conflict(
            "session_incomplete",
            format!("the ledger holds no whole copy of session {id}: {why}"),
        )),
    }
}

/// `id` with anything but letters, digits, `-`, `_` and `.` replaced, for a file name in a header.
fn safe_name(id: &str) -> String {
    id.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '_'
            }
        })
        .collect()
}
