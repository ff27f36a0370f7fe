//! What the dashboard lists: builds newest first, filtered and paged by a cursor (so a page costs
//! the same at 100,000 builds as at ten), and the activity of the last hour and day.

use baton_core::BuildStatus;
use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::{Ledger, LedgerError};

/// Which builds to list.
#[derive(Debug, Clone, Default)]
pub struct BuildFilter {
    /// Only this status.
    pub status: Option<BuildStatus>,
    /// Only this project's.
    pub project_id: Option<String>,
    /// Only this kind.
    pub kind: Option<String>,
    /// Only builds made at or after this.
    pub since: Option<DateTime<Utc>>,
    /// Only builds before this one in the listing's order: (made, build id), from the last row of
    /// the page before.
    pub before: Option<(DateTime<Utc>, String)>,
    /// At most this many (1 to 500).
    pub limit: i64,
}

/// One build in a listing.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BuildRow {
    /// The build.
    pub build_id: String,
    /// Its project.
    pub project_id: String,
    /// Its kind.
    pub kind: String,
    /// Its thread, for a chat.
    pub thread_id: Option<String>,
    /// Where it stands.
    pub status: String,
    /// The last step recorded.
    pub step: Option<String>,
    /// Claims so far.
    pub attempt: i32,
    /// The last error.
    pub last_error: Option<String>,
    /// When the ledger first saw it.
    pub created_at: DateTime<Utc>,
    /// When it ended.
    pub finished_at: Option<DateTime<Utc>>,
}

/// What happened lately, for the overview.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Activity {
    /// Builds queued in the ledger.
    pub queued: i64,
    /// Builds running.
    pub running: i64,
    /// Builds completed in the last hour.
    pub completed_last_hour: i64,
    /// Builds failed in the last hour.
    pub failed_last_hour: i64,
    /// Builds cancelled in the last hour.
    pub cancelled_last_hour: i64,
    /// Builds that ended in each of the last 60 minutes, oldest first.
    pub ended_per_minute: Vec<i64>,
    /// What the runs of each of the last 24 hours cost, oldest first.
    pub cost_per_hour: Vec<f64>,
}

impl Ledger {
    /// Builds newest first, as `filter` says.
    pub async fn builds_page(&self, filter: &BuildFilter) -> Result<Vec<BuildRow>, LedgerError> {
        let (before_at, before_id) = match &filter.before {
            Some((at, id)) => (Some(*at), Some(id.as_str())),
            None => (None, None),
        };
        let rows = sqlx::query!(
            r#"SELECT build_id, project_id, kind, payload->>'thread_id' AS thread_id, status, step,
                      attempt, last_error, created_at, finished_at
               FROM builds
               WHERE ($1::text IS NULL OR status = $1)
                 AND ($2::text IS NULL OR project_id = $2)
                 AND ($3::text IS NULL OR kind = $3)
                 AND ($4::timestamptz IS NULL OR created_at >= $4)
                 AND ($5::timestamptz IS NULL OR (created_at, build_id) < ($5, $6::text))
               ORDER BY created_at DESC, build_id DESC
               LIMIT $7"#,
            filter.status.map(BuildStatus::as_str),
            filter.project_id.as_deref(),
            filter.kind.as_deref(),
            filter.since,
            before_at,
            before_id,
            filter.limit.clamp(1, 500),
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|r| BuildRow {
                build_id: r.build_id,
                project_id: r.project_id,
                kind: r.kind,
                thread_id: r.thread_id,
                status: r.status,
                step: r.step,
                attempt: r.attempt,
                last_error: r.last_error,
                created_at: r.created_at,
                finished_at: r.finished_at,
            })
            .collect())
    }

    /// The builds of the last hour and the cost of the last day.
    pub async fn activity(&self) -> Result<Activity, LedgerError> {
        let counts = sqlx::query!(
            r#"SELECT
                 (SELECT count(*) FROM builds WHERE status = 'queued') AS "queued!",
                 (SELECT count(*) FROM builds WHERE status = 'running') AS "running!",
                 count(*) FILTER (WHERE status = 'completed') AS "completed!",
                 count(*) FILTER (WHERE status = 'failed') AS "failed!",
                 count(*) FILTER (WHERE status = 'cancelled') AS "cancelled!"
               FROM builds WHERE finished_at >= now() - interval '1 hour'"#
        )
        .fetch_one(&self.pool)
        .await?;
        let ended = sqlx::query_scalar!(
            r#"SELECT count(b.build_id) AS "n!"
               FROM generate_series(59, 0, -1) AS m(ago)
               LEFT JOIN builds b
                 ON b.finished_at >= date_trunc('minute', now()) - make_interval(mins => m.ago)
                AND b.finished_at < date_trunc('minute', now()) - make_interval(mins => m.ago - 1)
               GROUP BY m.ago ORDER BY m.ago DESC"#
        )
        .fetch_all(&self.pool)
        .await?;
        let cost = sqlx::query_scalar!(
            r#"SELECT coalesce(sum(u.cost_usd), 0)::float8 AS "cost!"
               FROM generate_series(23, 0, -1) AS h(ago)
               LEFT JOIN project_ai_session_metrics u
                 ON u.created_at >= date_trunc('hour', now()) - make_interval(hours => h.ago)
                AND u.created_at < date_trunc('hour', now()) - make_interval(hours => h.ago - 1)
               GROUP BY h.ago ORDER BY h.ago DESC"#
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(Activity {
            queued: counts.queued,
            running: counts.running,
            completed_last_hour: counts.completed,
            failed_last_hour: counts.failed,
            cancelled_last_hour: counts.cancelled,
            ended_per_minute: ended,
            cost_per_hour: cost,
        })
    }
}
