//! The worker's HTTP endpoints: `/metrics` (Prometheus text), `/healthz` (the process is alive) and
//! `/readyz` (Redis and Postgres answer, the CLI is usable, the worker takes jobs; and what risks
//! jobs, such as a Redis that keeps nothing on disk, as warnings).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use tokio_util::sync::CancellationToken;

use crate::Worker;
use crate::error::WorkerError;

/// How long each readiness check may take.
const CHECK_TIMEOUT: Duration = Duration::from_secs(2);

/// Serves the endpoints on `addr` until `stop`; returns the bound address (useful with port 0).
pub async fn serve(
    worker: Worker,
    addr: SocketAddr,
    shutdown: CancellationToken,
    stop: CancellationToken,
) -> Result<SocketAddr, WorkerError> {
    let listener = tokio::net::TcpListener::bind(addr).await.map_err(|e| {
        WorkerError::Setting(format!(
            "cannot serve metrics on {addr} (BATON_METRICS_ADDR): {e}"
        ))
    })?;
    let bound = listener.local_addr()?;
    let state = Arc::new((worker, shutdown));
    let app = Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .with_state(state);
    tokio::spawn(async move {
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(async move { stop.cancelled().await })
            .await;
        if let Err(e) = served {
            tracing::error!(error = %e, "the metrics server stopped");
        }
    });
    Ok(bound)
}

type Shared = Arc<(Worker, CancellationToken)>;

async fn metrics(State(state): State<Shared>) -> impl IntoResponse {
    let worker = &state.0;
    worker.refresh_queue_gauges().await;
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        worker.metrics().encode(),
    )
}

async fn readyz(State(state): State<Shared>) -> impl IntoResponse {
    let (worker, shutdown) = &*state;
    let mut problems = Vec::new();
    if shutdown.is_cancelled() {
        problems.push("shutting down".to_string());
    }
    if let Some(reason) = worker.paused() {
        problems.push(reason);
    }
    problems.extend(worker.check_dependencies(CHECK_TIMEOUT).await);
    if problems.is_empty() {
        // Ready, with what risks jobs said on lines of their own.
        let mut body = "ready\n".to_string();
        for warning in worker.warnings().await {
            body.push_str(&format!("warning: {warning}\n"));
        }
        (StatusCode::OK, body)
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {}\n", problems.join("; ")),
        )
    }
}
