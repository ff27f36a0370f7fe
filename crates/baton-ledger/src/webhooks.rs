//! The webhook outbox (`webhook_deliveries`, see `migrations/*_webhooks.sql`): claiming deliveries
//! that are due, recording how each attempt went, and what operators list and retry.

use baton_core::webhook::{BuildEnd, Payload, Usage};
use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::{Ledger, LedgerError};

/// A delivery claimed for one attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Due {
    /// `msg_<uuid>`: the `webhook-id` of every attempt.
    pub id: String,
    /// The build that ended.
    pub build_id: String,
    /// `build.completed`, ...
    pub event_type: String,
    /// The job's own URL; `None` for the deployment's.
    pub url: Option<String>,
    /// The body as first sent, if it was.
    pub body: Option<String>,
    /// Attempts so far, this one included.
    pub attempts: i32,
    /// Since when it is being delivered (its creation, or an operator's retry).
    pub since: DateTime<Utc>,
}

/// A delivery as `baton webhooks list` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Delivery {
    /// `msg_<uuid>`.
    pub id: String,
    /// The build.
    pub build_id: String,
    /// `build.completed`, ...
    pub event_type: String,
    /// The job's own URL; `None` for the deployment's.
    pub url: Option<String>,
    /// `pending`, `delivered`, `failed` or `skipped` (no URL to send it to).
    pub state: String,
    /// Attempts so far.
    pub attempts: i32,
    /// The last attempt's HTTP status, if it got one.
    pub last_status: Option<i32>,
    /// The last attempt's error.
    pub last_error: Option<String>,
    /// When it is tried next, while pending.
    pub next_attempt_at: DateTime<Utc>,
    /// When the build ended.
    pub created_at: DateTime<Utc>,
    /// When it was delivered.
    pub delivered_at: Option<DateTime<Utc>>,
}

impl Ledger {
    /// Claims up to `limit` due deliveries for one attempt each: any replica may, none claims a row
    /// another holds, and a claim lasts `lease` (past it, a dead claimer's row is due again).
    pub async fn claim_webhooks(
        &self,
        limit: i64,
        lease: std::time::Duration,
    ) -> Result<Vec<Due>, LedgerError> {
        let rows = sqlx::query!(
            r#"UPDATE webhook_deliveries d
               SET next_attempt_at = now() + make_interval(secs => $2), attempts = d.attempts + 1
               WHERE d.id IN (SELECT w.id FROM webhook_deliveries w
                              WHERE w.state = 'pending' AND w.next_attempt_at <= now()
                              ORDER BY w.next_attempt_at LIMIT $1
                              FOR UPDATE SKIP LOCKED)
               RETURNING d.id, d.build_id, d.event_type, d.url, d.body, d.attempts, d.since"#,
            limit,
            lease.as_secs_f64(),
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|r| Due {
                id: r.id,
                build_id: r.build_id,
                event_type: r.event_type,
                url: r.url,
                body: r.body,
                attempts: r.attempts,
                since: r.since,
            })
            .collect())
    }

    /// Marks every pending delivery to the deployment's URL skipped: this deployment has none.
    pub async fn skip_default_webhooks(&self) -> Result<u64, LedgerError> {
        Ok(sqlx::query!(
            "UPDATE webhook_deliveries SET state = 'skipped', last_error = 'BATON_WEBHOOK_URL is not set'
             WHERE state = 'pending' AND url IS NULL"
        )
        .execute(&self.pool)
        .await?
        .rows_affected())
    }

    /// Keeps `body` as the delivery's, unless an earlier attempt kept one; returns the one kept.
    pub async fn keep_webhook_body(&self, id: &str, body: &str) -> Result<String, LedgerError> {
        Ok(sqlx::query_scalar!(
            r#"UPDATE webhook_deliveries SET body = COALESCE(body, $2) WHERE id = $1
               RETURNING body AS "body!""#,
            id,
            body
        )
        .fetch_one(&self.pool)
        .await?)
    }

    /// Records an attempt's end: delivered, due again at `retry_at`, or given up (`retry_at`
    /// `None` and not delivered).
    pub async fn webhook_attempted(
        &self,
        id: &str,
        delivered: bool,
        status: Option<i32>,
        error: Option<&str>,
        retry_at: Option<DateTime<Utc>>,
    ) -> Result<(), LedgerError> {
        let state = match (delivered, retry_at) {
            (true, _) => "delivered",
            (false, Some(_)) => "pending",
            (false, None) => "failed",
        };
        sqlx::query!(
            r#"UPDATE webhook_deliveries
               SET state = $2, last_status = $3, last_error = $4,
                   next_attempt_at = COALESCE($5, next_attempt_at),
                   delivered_at = CASE WHEN $2 = 'delivered' THEN now() END
               WHERE id = $1"#,
            id,
            state,
            status,
            error,
            retry_at,
        )
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The newest deliveries first, at most `limit`.
    pub async fn webhooks(&self, limit: i64) -> Result<Vec<Delivery>, LedgerError> {
        Ok(sqlx::query_as!(
            Delivery,
            r#"SELECT id, build_id, event_type, url, state, attempts, last_status, last_error,
                      next_attempt_at, created_at, delivered_at
               FROM webhook_deliveries ORDER BY created_at DESC, id LIMIT $1"#,
            limit
        )
        .fetch_all(&self.pool)
        .await?)
    }

    /// Makes a delivery due now, as a new one (its age counted from now); whether it exists.
    pub async fn retry_webhook(&self, id: &str) -> Result<bool, LedgerError> {
        Ok(sqlx::query!(
            "UPDATE webhook_deliveries SET state = 'pending', next_attempt_at = now(), since = now()
             WHERE id = $1",
            id
        )
        .execute(&self.pool)
        .await?
        .rows_affected()
            == 1)
    }

    /// How long the oldest pending delivery has waited, in seconds (0 when none waits).
    pub async fn oldest_pending_webhook_secs(&self) -> Result<f64, LedgerError> {
        Ok(sqlx::query_scalar!(
            r#"SELECT COALESCE(EXTRACT(EPOCH FROM now() - min(since))::float8, 0) AS "age!"
               FROM webhook_deliveries WHERE state = 'pending'"#
        )
        .fetch_one(&self.pool)
        .await?)
    }

    /// The body of a webhook of `build_id`'s end, from the ledger.
    pub async fn webhook_payload(
        &self,
        build_id: &str,
        event_type: &str,
    ) -> Result<Payload, LedgerError> {
        let state = self.build_state(build_id).await?;
        let mut usage = Usage::default();
        let mut cost_usd = 0.0;
        for r in &state.runs {
            usage.input_tokens += r.input_tokens.unwrap_or(0);
            usage.output_tokens += r.output_tokens.unwrap_or(0);
            usage.cache_read_input_tokens += r.cache_read_input_tokens.unwrap_or(0);
            usage.cache_creation_input_tokens += r.cache_creation_input_tokens.unwrap_or(0);
            cost_usd += r.cost_usd.unwrap_or(0.0);
        }
        let session_id = match state.runs.last() {
            Some(run) => Some(run.new_session_id.to_string()),
            None => self
                .chain_head(&state.project_id, state.thread_id.as_deref())
                .await?
                .map(String::from),
        };
        let failed = state.status == baton_core::BuildStatus::Failed;
        Ok(Payload {
            event_type: event_type.to_string(),
            timestamp: state.finished_at.unwrap_or_else(Utc::now),
            data: BuildEnd {
                build_id: state.build_id.to_string(),
                project_id: state.project_id.to_string(),
                version_id: state.version_id,
                kind: state.kind,
                status: state.status.as_str().to_string(),
                session_id,
                output: state.output.as_deref().map(|o| {
                    baton_core::events::bounded(o, baton_core::webhook::WEBHOOK_OUTPUT_BYTES)
                }),
                error: state.last_error.filter(|_| failed),
                usage,
                cost_usd,
                enqueued_at: state.enqueued_at,
                finished_at: state.finished_at,
            },
        })
    }
}
