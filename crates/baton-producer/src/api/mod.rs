//! The HTTP API, served by `baton serve`: everything the `baton` CLI does, over HTTP with a
//! bearer token, plus live progress as server-sent events and cancellation.
//!
//! Routes and the OpenAPI document come from the same handler list ([`routes`]), so the document
//! cannot drift from the server.

pub(crate) mod auth;
mod builds;
pub mod error;
mod events;
mod operations;
mod projects;
mod sessions;
mod threads;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use baton_core::Limits;
use baton_ledger::Ledger;
use baton_queue::Queue;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use auth::BearerScheme;
pub use auth::Tokens;
use error::ApiError;

/// What `baton serve` needs to answer.
#[derive(Clone)]
pub struct Api {
    inner: Arc<Inner>,
}

struct Inner {
    queue: Queue,
    ledger: Ledger,
    limits: Limits,
    default_user: String,
    tokens: Tokens,
    webhook_allow: Vec<String>,
}

/// How the API runs.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Where it listens (`BATON_API_ADDR`).
    pub addr: SocketAddr,
    /// The bearer tokens it takes (`BATON_API_TOKENS`); none is allowed only on loopback.
    pub tokens: Vec<String>,
    /// The largest request body it reads (`BATON_API_MAX_BODY`).
    pub max_body: usize,
    /// The `user_id` of a build that names none (`BATON_USER`, as `baton enqueue`).
    pub default_user: String,
    /// Job limits, as the producer's.
    pub limits: Limits,
    /// Prefixes a build's own `webhook_url` must start with (`BATON_WEBHOOK_ALLOW`).
    pub webhook_allow: Vec<String>,
}

/// Why the API cannot start.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// Tokens are required away from loopback.
    #[error(
        "BATON_API_TOKENS is empty but BATON_API_ADDR {0} is not a loopback address: set at least one token"
    )]
    NoTokens(SocketAddr),
    /// The address could not be bound.
    #[error("cannot listen on BATON_API_ADDR {addr}: {cause}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why; quoted in the message, so not also a `#[source]`.
        cause: std::io::Error,
    },
    /// Serving failed.
    #[error("the API server stopped: {0}")]
    Serve(String),
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Baton",
        description = "Builds, live progress, cancellation, sessions and dead letters of a Baton deployment."
    ),
    modifiers(&BearerScheme),
    security(("bearer" = []))
)]
struct ApiDoc;

impl Api {
    /// An API over these services.
    pub fn new(queue: Queue, ledger: Ledger, settings: &Settings) -> Api {
        Api {
            inner: Arc::new(Inner {
                queue,
                ledger,
                limits: settings.limits,
                default_user: settings.default_user.clone(),
                tokens: Tokens::new(&settings.tokens),
                webhook_allow: settings.webhook_allow.clone(),
            }),
        }
    }

    /// The router, with its OpenAPI document served at `/v1/openapi.json`.
    pub fn router(&self, max_body: usize) -> Router {
        let (v1, doc) = routes().split_for_parts();
        let doc = Arc::new(doc);
        let v1 = v1
            .route(
                "/v1/openapi.json",
                axum::routing::get(move || {
                    let doc = doc.clone();
                    async move { axum::Json(doc.as_ref().clone()) }
                }),
            )
            .layer(axum::middleware::from_fn_with_state(
                self.clone(),
                auth::require_token,
            ));
        Router::new()
            .route("/healthz", axum::routing::get(healthz))
            .merge(v1)
            .merge(crate::dashboard::router(self.clone()))
            .fallback(not_found)
            .method_not_allowed_fallback(method_not_allowed)
            .layer(DefaultBodyLimit::max(max_body))
            .with_state(self.clone())
    }

    pub(crate) fn queue(&self) -> &Queue {
        &self.inner.queue
    }

    pub(crate) fn ledger(&self) -> &Ledger {
        &self.inner.ledger
    }

    pub(crate) fn tokens(&self) -> &Tokens {
        &self.inner.tokens
    }
}

/// The API's routes with their documentation: the one list both come from.
fn routes() -> OpenApiRouter<Api> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(builds::create))
        .routes(routes!(builds::get))
        .routes(routes!(builds::cancel))
        .routes(routes!(events::stream))
        .routes(routes!(projects::get))
        .routes(routes!(projects::chain))
        .routes(routes!(projects::reset))
        .routes(routes!(operations::stats))
        .routes(routes!(operations::sync))
        .routes(routes!(operations::dead_letters))
        .routes(routes!(operations::replay))
        .routes(routes!(operations::purge, operations::dead_letter))
        .routes(routes!(sessions::get))
        .routes(routes!(sessions::export))
        .routes(routes!(operations::webhooks))
        .routes(routes!(operations::retry_webhook))
        .routes(routes!(threads::list))
        .routes(routes!(threads::get, threads::delete))
        .routes(routes!(threads::fork))
}

/// The OpenAPI document, as the server serves it.
pub fn openapi() -> utoipa::openapi::OpenApi {
    routes().split_for_parts().1
}

/// Serves the API until `shutdown` resolves; `listening` is told the address once it is bound.
/// Refuses to start without tokens away from loopback.
pub async fn serve(
    queue: Queue,
    ledger: Ledger,
    settings: Settings,
    listening: impl FnOnce(SocketAddr),
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    if settings.tokens.is_empty() && !settings.addr.ip().is_loopback() {
        return Err(ServeError::NoTokens(settings.addr));
    }
    let api = Api::new(queue, ledger, &settings);
    let listener = tokio::net::TcpListener::bind(settings.addr)
        .await
        .map_err(|cause| ServeError::Bind {
            addr: settings.addr,
            cause,
        })?;
    let addr = listener.local_addr().unwrap_or(settings.addr);
    listening(addr);
    axum::serve(listener, api.router(settings.max_body))
        .with_graceful_shutdown(shutdown)
        .await
        .map_err(|e| ServeError::Serve(e.to_string()))
}

/// Whether `s` is a stream entry id (`<ms>-<seq>`).
pub(crate) fn is_stream_id(s: &str) -> bool {
    s.split_once('-').is_some_and(|(ms, seq)| {
        [ms, seq]
            .iter()
            .all(|p| !p.is_empty() && p.len() <= 20 && p.bytes().all(|b| b.is_ascii_digit()))
    })
}

async fn healthz() -> axum::Json<serde_json::Value> {
    axum::Json(serde_json::json!({ "ok": true }))
}

async fn not_found() -> ApiError {
    ApiError::not_found("no such route")
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        axum::http::StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "this route does not take that method",
    )
}
