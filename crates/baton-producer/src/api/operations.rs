//! `GET /v1/stats`, `GET /v1/sync`, the dead letters (list, show, replay, purge) and the webhook
//! deliveries (list, retry).

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::Api;
use super::error::{ApiError, ErrorBody, PathParam, QueryParams};

/// Session statistics: what `baton stats --json` shows.
#[utoipa::path(
    get,
    path = "/v1/stats",
    responses(
        (status = 200, description = "Statistics", body = Object),
        (status = 401, description = "No or a wrong token", body = ErrorBody),
    )
)]
pub(crate) async fn stats(
    State(api): State<Api>,
) -> Result<Json<baton_ledger::reports::Stats>, ApiError> {
    Ok(Json(api.ledger().stats().await?))
}

/// Every project's session checked against its newest version's and transition's: what
/// `baton sync-check --json` shows.
#[utoipa::path(
    get,
    path = "/v1/sync",
    responses(
        (status = 200, description = "The sync report", body = Object),
        (status = 401, description = "No or a wrong token", body = ErrorBody),
    )
)]
pub(crate) async fn sync(
    State(api): State<Api>,
) -> Result<Json<baton_ledger::reports::SyncReport>, ApiError> {
    Ok(Json(api.ledger().sync_check().await?))
}

/// How many dead letters to list.
#[derive(Debug, Deserialize, IntoParams)]
pub(crate) struct ListQuery {
    /// At most this many (default 100, at most 10000).
    #[param(minimum = 1, maximum = 10000)]
    limit: Option<usize>,
}

impl ListQuery {
    /// The limit asked for, 100 when none.
    fn limit(&self) -> Result<usize, ApiError> {
        match self.limit.unwrap_or(100) {
            limit @ 1..=10_000 => Ok(limit),
            _ => Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "bad_query",
                "limit must be between 1 and 10000",
            )),
        }
    }
}

/// The dead letters, oldest first: what `baton dlq list --json` shows.
#[utoipa::path(
    get,
    path = "/v1/dead-letters",
    params(ListQuery),
    responses(
        (status = 200, description = "Dead letters", body = Vec<Object>),
        (status = 400, description = "A bad limit", body = ErrorBody),
        (status = 401, description = "No or a wrong token", body = ErrorBody),
    )
)]
pub(crate) async fn dead_letters(
    State(api): State<Api>,
    QueryParams(query): QueryParams<ListQuery>,
) -> Result<Json<Vec<baton_queue::DeadEntry>>, ApiError> {
    let limit = query.limit()?;
    Ok(Json(api.queue().dead_letters(limit).await?))
}

/// A replayed dead letter.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Replayed {
    /// The dead letter.
    dead_letter: String,
    /// Its new entry on the job stream.
    stream_id: String,
    /// The build it carries, when it names one.
    build_id: Option<String>,
}

/// Puts a dead letter back on the job stream (its failed build reopened), and removes it.
#[utoipa::path(
    post,
    path = "/v1/dead-letters/{id}/replay",
    params(("id" = String, Path, description = "The dead letter")),
    responses(
        (status = 200, description = "Replayed", body = Replayed),
        (status = 401, description = "No or a wrong token", body = ErrorBody),
        (status = 404, description = "No such dead letter", body = ErrorBody),
    )
)]
pub(crate) async fn replay(
    State(api): State<Api>,
    PathParam(id): PathParam<String>,
) -> Result<Json<Replayed>, ApiError> {
    if !super::is_stream_id(&id) {
        return Err(ApiError::not_found(format!("no dead letter {id}")));
    }
    match crate::dead_letters::replay(api.queue(), api.ledger(), &id).await? {
        Some(r) => Ok(Json(Replayed {
            dead_letter: r.dead_letter,
            stream_id: r.stream_id,
            build_id: r.build_id,
        })),
        None => Err(ApiError::not_found(format!("no dead letter {id}"))),
    }
}

/// Deletes a dead letter.
#[utoipa::path(
    delete,
    path = "/v1/dead-letters/{id}",
    params(("id" = String, Path, description = "The dead letter")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 401, description = "No or a wrong token", body = ErrorBody),
        (status = 404, description = "No such dead letter", body = ErrorBody),
    )
)]
pub(crate) async fn purge(
    State(api): State<Api>,
    PathParam(id): PathParam<String>,
) -> Result<StatusCode, ApiError> {
    if !super::is_stream_id(&id) {
        return Err(ApiError::not_found(format!("no dead letter {id}")));
    }
    match api.queue().purge_dead_letters(Some(&id)).await? {
        0 => Err(ApiError::not_found(format!("no dead letter {id}"))),
        _ => Ok(StatusCode::NO_CONTENT),
    }
}

/// One dead letter: what `baton dlq show --json` shows.
#[utoipa::path(
    get,
    path = "/v1/dead-letters/{id}",
    params(("id" = String, Path, description = "The dead letter")),
    responses(
        (status = 200, description = "The dead letter", body = Object),
        (status = 401, description = "No or a wrong token", body = ErrorBody),
        (status = 404, description = "No such dead letter", body = ErrorBody),
    )
)]
pub(crate) async fn dead_letter(
    State(api): State<Api>,
    PathParam(id): PathParam<String>,
) -> Result<Json<baton_queue::DeadEntry>, ApiError> {
    let entry = if super::is_stream_id(&id) {
        api.queue().dead_letter_entry(&id).await?
    } else {
        None
    };
    entry
        .map(Json)
        .ok_or_else(|| ApiError::not_found(format!("no dead letter {id}")))
}

/// The newest webhook deliveries, first the newest: what `baton webhooks list --json` shows.
#[utoipa::path(
    get,
    path = "/v1/webhooks",
    params(ListQuery),
    responses(
        (status = 200, description = "Deliveries", body = Vec<Object>),
        (status = 400, description = "A bad limit", body = ErrorBody),
        (status = 401, description = "No or a wrong token", body = ErrorBody),
    )
)]
pub(crate) async fn webhooks(
    State(api): State<Api>,
    QueryParams(query): QueryParams<ListQuery>,
) -> Result<Json<Vec<baton_ledger::webhooks::Delivery>>, ApiError> {
    let limit = query.limit()?;
    Ok(Json(api.ledger().webhooks(limit as i64).await?))
}

/// Makes a webhook delivery due now, as a new one: what `baton webhooks retry` does.
#[utoipa::path(
    post,
    path = "/v1/webhooks/{id}/retry",
    params(("id" = String, Path, description = "The delivery (`msg_...`)")),
    responses(
        (status = 202, description = "Due now"),
        (status = 401, description = "No or a wrong token", body = ErrorBody),
        (status = 404, description = "No such delivery", body = ErrorBody),
    )
)]
pub(crate) async fn retry_webhook(
    State(api): State<Api>,
    PathParam(id): PathParam<String>,
) -> Result<StatusCode, ApiError> {
    if api.ledger().retry_webhook(&id).await? {
        Ok(StatusCode::ACCEPTED)
    } else {
        Err(ApiError::not_found(format!("no webhook delivery {id}")))
    }
}
