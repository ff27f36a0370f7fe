//! The API's one error shape, `{"error": {"code", "message"}}`, and how each failure maps to it:
//! what a client sent is a 4xx, never a 5xx.

use crate::ProducerError;
use axum::Json;
use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use baton_ledger::LedgerError;
use serde::Serialize;
use utoipa::ToSchema;

/// An error answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// The HTTP status.
    pub status: StatusCode,
    /// A stable, machine-readable code (`not_found`, `invalid_job`, ...).
    pub code: &'static str,
    /// What went wrong, for a person.
    pub message: String,
}

/// The body of every error answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    /// The error.
    pub error: ErrorDetail,
}

/// What went wrong.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorDetail {
    /// A stable, machine-readable code.
    pub code: String,
    /// What went wrong, for a person.
    pub message: String,
}

impl ApiError {
    /// An error with this status, code and message.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
        }
    }

    /// 404: no such thing.
    pub fn not_found(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    /// 409: the request conflicts with what is there.
    pub fn conflict(code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::CONFLICT, code, message)
    }

    /// 422: well-formed, but not a value Baton takes.
    pub fn invalid(code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, code, message)
    }

    /// 500: Baton's own trouble (Redis or Postgres); logged, and said without its details.
    fn internal(what: &str, e: &(dyn std::error::Error + 'static)) -> ApiError {
        tracing::error!(error = %baton_core::describe_error(e), "{what}");
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            format!("{what}; try again"),
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code.to_string(),
                message: self.message,
            },
        };
        (self.status, Json(body)).into_response()
    }
}

impl From<LedgerError> for ApiError {
    fn from(e: LedgerError) -> ApiError {
        match e {
            LedgerError::UnknownBuild(id) => ApiError::not_found(format!("no build {id}")),
            LedgerError::UnknownProject(id) => ApiError::not_found(format!("no project {id}")),
            e @ LedgerError::BuildIdReused(_) => {
                ApiError::conflict("build_id_reused", e.to_string())
            }
            e @ LedgerError::NotOwner { .. } => ApiError::conflict("not_owner", e.to_string()),
            e => ApiError::internal("the ledger could not answer", &e),
        }
    }
}

impl From<ProducerError> for ApiError {
    fn from(e: ProducerError) -> ApiError {
        match e {
            ProducerError::Invalid(e) => ApiError::invalid("invalid_job", e.to_string()),
            ProducerError::Ledger(e) => e.into(),
            ProducerError::Queue(e) => ApiError::internal("Redis could not answer", &e),
        }
    }
}

impl From<baton_queue::QueueError> for ApiError {
    fn from(e: baton_queue::QueueError) -> ApiError {
        ApiError::internal("Redis could not answer", &e)
    }
}

impl From<JsonRejection> for ApiError {
    fn from(r: JsonRejection) -> ApiError {
        let status = r.status();
        let code = match status {
            StatusCode::PAYLOAD_TOO_LARGE => "body_too_large",
            StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported_media_type",
            StatusCode::UNPROCESSABLE_ENTITY => "invalid_body",
            _ => "malformed_body",
        };
        // Anything else a client sends is its own error, never the server's.
        let status = if status.is_server_error() {
            StatusCode::BAD_REQUEST
        } else {
            status
        };
        ApiError::new(status, code, r.body_text())
    }
}

impl From<PathRejection> for ApiError {
    fn from(r: PathRejection) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, "bad_path", r.body_text())
    }
}

impl From<QueryRejection> for ApiError {
    fn from(r: QueryRejection) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, "bad_query", r.body_text())
    }
}

/// `Json` whose rejections answer in the API's error shape.
#[derive(axum::extract::FromRequest)]
#[from_request(via(axum::Json), rejection(ApiError))]
pub struct JsonBody<T>(pub T);

/// `Path` whose rejections answer in the API's error shape.
#[derive(axum::extract::FromRequestParts)]
#[from_request(via(axum::extract::Path), rejection(ApiError))]
pub struct PathParam<T>(pub T);

/// `Query` whose rejections answer in the API's error shape.
#[derive(axum::extract::FromRequestParts)]
#[from_request(via(axum::extract::Query), rejection(ApiError))]
pub struct QueryParams<T>(pub T);
