//! Read-side reports over the ledger: the sync check, usage statistics, and pruning old history.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::{Ledger, LedgerError};

/// One project's sync state: its session id against its newest version's and newest transition's.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SyncRow {
    /// The project.
    pub project_id: String,
    /// `projects.last_ai_session_id`.
    pub project_session: Option<String>,
    /// The session of the version used most recently.
    pub version_session: Option<String>,
    /// The newest transition's new session.
    pub transition_session: Option<String>,
    /// Whether they agree.
    pub synced: bool,
}

/// The sync check over every project.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SyncReport {
    /// One row per project.
    pub projects: Vec<SyncRow>,
    /// Projects in sync.
    pub synced: usize,
    /// Projects in all.
    pub total: usize,
    /// `synced / total` (1 when there are no projects).
    pub rate: f64,
}

/// Usage statistics.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Stats {
    /// Projects in the ledger.
    pub projects: i64,
    /// Projects whose newest session is set.
    pub projects_with_sessions: i64,
    /// Projects with a run recorded in the last hour.
    pub active_last_hour: i64,
    /// `projects_with_sessions / projects`.
    pub adoption_rate: f64,
    /// Runs that resumed a session.
    pub resumed_runs: i64,
    /// Resumes the CLI could not serve (fallbacks to a fresh session).
    pub resume_failures: i64,
    /// `resumed_runs / (resumed_runs + resume_failures)`.
    pub resume_success_rate: f64,
    /// Fresh starts by reason.
    pub fresh_starts: BTreeMap<String, i64>,
    /// Tokens and cost by transition source.
    pub usage_by_source: BTreeMap<String, SourceUsage>,
}

/// Usage summed over one source.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct SourceUsage {
    /// Runs.
    pub runs: i64,
    /// Uncached input tokens.
    pub input_tokens: i64,
    /// Output tokens.
    pub output_tokens: i64,
    /// Cached input tokens read.
    pub cache_read_input_tokens: i64,
    /// Cached input tokens written.
    pub cache_creation_input_tokens: i64,
    /// Cost as the CLI reported it.
    pub cost_usd: f64,
}

/// An unfinished build that has not changed for a while; see [`Ledger::stale_builds`].
#[derive(Debug, Clone, Serialize)]
pub struct StaleBuild {
    /// The build.
    pub build_id: String,
    /// Its project.
    pub project_id: String,
    /// `queued` or `running`.
    pub status: String,
    /// When its row last changed.
    pub updated_at: DateTime<Utc>,
    /// The job as it was enqueued, when the ledger has it.
    pub payload: Option<serde_json::Value>,
}

/// What a prune removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct PruneReport {
    /// Transitions deleted.
    pub transitions: u64,
    /// Metrics rows deleted.
    pub metrics: u64,
    /// Stored session transcripts deleted (never a project's newest session's).
    pub transcripts: u64,
    /// Webhook deliveries deleted: delivered, skipped or given up (never a pending one).
    pub webhooks: u64,
    /// Nothing was deleted: the counts are what would have gone.
    pub dry_run: bool,
}

fn ratio(part: i64, whole: i64) -> f64 {
    if whole == 0 {
        1.0
    } else {
        part as f64 / whole as f64
    }
}

impl Ledger {
    /// Compares every project's session id with its newest version's and its newest transition's.
    /// After a reset the project has no session, and only the transition must agree; after an
    /// import, whose session no version has yet, likewise.
    pub async fn sync_check(&self) -> Result<SyncReport, LedgerError> {
        let rows = sqlx::query!(
            r#"SELECT p.project_id AS "project_id!",
                      p.last_ai_session_id AS project_session,
                      (SELECT v.ai_session_id FROM project_versions v
                       WHERE v.project_id = p.project_id AND v.ai_session_id IS NOT NULL
                       ORDER BY v.ai_session_last_used_at DESC NULLS LAST, v.created_at DESC LIMIT 1) AS version_session,
                      (SELECT t.new_session_id FROM session_transitions t
                       WHERE t.project_id = p.project_id AND t.thread_id = ''
                       ORDER BY t.id DESC LIMIT 1) AS transition_session,
                      (SELECT t.source FROM session_transitions t
                       WHERE t.project_id = p.project_id AND t.thread_id = ''
                       ORDER BY t.id DESC LIMIT 1) AS transition_source,
                      EXISTS (SELECT 1 FROM session_transitions t
                              WHERE t.project_id = p.project_id AND t.thread_id = '') AS "has_chain!"
               FROM projects p ORDER BY p.project_id"#
        )
        .fetch_all(&self.pool)
        .await?;
        let projects: Vec<SyncRow> = rows
            .into_iter()
            .map(|r| {
                let transition_ok = !r.has_chain || r.project_session == r.transition_session;
                // An imported session belongs to no version until a job resumes it.
                let version_ok = r.project_session.is_none()
                    || r.project_session == r.version_session
                    || r.transition_source.as_deref() == Some("import");
                SyncRow {
                    synced: transition_ok && version_ok,
                    project_id: r.project_id,
                    project_session: r.project_session,
                    version_session: r.version_session,
                    transition_session: r.transition_session,
                }
            })
            .collect();
        let synced = projects.iter().filter(|p| p.synced).count();
        let total = projects.len();
        Ok(SyncReport {
            rate: ratio(synced as i64, total as i64),
            projects,
            synced,
            total,
        })
    }

    /// What the runs recorded for `build_id` cost, as the CLI reported it.
    pub async fn build_cost(&self, build_id: &str) -> Result<f64, LedgerError> {
        Ok(sqlx::query_scalar!(
            r#"SELECT coalesce(sum(cost_usd), 0)::float8 AS "cost!"
               FROM project_ai_session_metrics WHERE build_id = $1"#,
            build_id
        )
        .fetch_one(&self.pool)
        .await?)
    }

    /// Usage statistics over the whole ledger.
    pub async fn stats(&self) -> Result<Stats, LedgerError> {
        let p = sqlx::query!(
            r#"SELECT count(*) AS "projects!",
                      count(last_ai_session_id) AS "with_sessions!",
                      (SELECT count(DISTINCT project_id) FROM session_transitions
                       WHERE created_at > now() - interval '1 hour') AS "active!",
                      (SELECT count(*) FROM session_transitions
                       WHERE old_session_id IS NOT NULL AND new_session_id IS NOT NULL) AS "resumed!",
                      (SELECT count(*) FROM session_transitions WHERE source = 'resume_fallback') AS "failures!"
               FROM projects"#
        )
        .fetch_one(&self.pool)
        .await?;
        let fresh_starts = sqlx::query!(
            r#"SELECT COALESCE(fresh_reason, 'unrecorded') AS "reason!", count(*) AS "n!"
               FROM session_transitions
               WHERE old_session_id IS NULL AND new_session_id IS NOT NULL
               GROUP BY 1 ORDER BY 1"#
        )
        .fetch_all(&self.pool)
        .await?
        .into_iter()
        .map(|r| (r.reason, r.n))
        .collect();
        let usage_by_source = sqlx::query!(
            r#"SELECT source AS "source!", count(*) AS "runs!",
                      COALESCE(sum(input_tokens), 0)::bigint AS "input!",
                      COALESCE(sum(output_tokens), 0)::bigint AS "output!",
                      COALESCE(sum(cache_read_input_tokens), 0)::bigint AS "cache_read!",
                      COALESCE(sum(cache_creation_input_tokens), 0)::bigint AS "cache_creation!",
                      COALESCE(sum(cost_usd), 0)::float8 AS "cost!"
               FROM project_ai_session_metrics GROUP BY source ORDER BY source"#
        )
        .fetch_all(&self.pool)
        .await?
        .into_iter()
        .map(|r| {
            (
                r.source,
                SourceUsage {
                    runs: r.runs,
                    input_tokens: r.input,
                    output_tokens: r.output,
                    cache_read_input_tokens: r.cache_read,
                    cache_creation_input_tokens: r.cache_creation,
                    cost_usd: r.cost,
                },
            )
        })
        .collect();
        Ok(Stats {
            projects: p.projects,
            projects_with_sessions: p.with_sessions,
            active_last_hour: p.active,
            adoption_rate: ratio(p.with_sessions, p.projects),
            resumed_runs: p.resumed,
            resume_failures: p.failures,
            resume_success_rate: ratio(p.resumed, p.resumed + p.failures),
            fresh_starts,
            usage_by_source,
        })
    }

    /// Unfinished builds (queued or running) of this ledger's stream ([`Ledger::for_stream`])
    /// whose row has not changed since `cutoff`, oldest first, with the job each was enqueued as: the ones to enqueue again when Redis lost their
    /// entries. A healthy build may be among them (a long run changes nothing until it ends);
    /// enqueueing it again is safe, since its copy waits behind it and is then acknowledged.
    pub async fn stale_builds(
        &self,
        cutoff: DateTime<Utc>,
    ) -> Result<Vec<StaleBuild>, LedgerError> {
        Ok(sqlx::query_as!(
            StaleBuild,
            r#"SELECT build_id, project_id, status, updated_at, payload
               FROM builds
               WHERE status IN ('queued', 'running') AND updated_at < $1
                 AND stream IS NOT DISTINCT FROM $2
               ORDER BY COALESCE(enqueued_at, created_at), build_id"#,
            cutoff,
            self.stream.as_deref(),
        )
        .fetch_all(&self.pool)
        .await?)
    }

    /// Deletes transitions and metrics older than `cutoff`, keeping each project's newest chain link
    /// and its usage row, so the chain's head and the sync check survive, and every session id of
    /// the links that go (`pruned_sessions`), so a stale id of the project's chain is still known
    /// as its own; and the stored
    /// transcripts of sessions last stored before `cutoff` that are no project's newest.
    /// With `dry_run`, counts what would go and deletes nothing.
    pub async fn prune(
        &self,
        cutoff: DateTime<Utc>,
        dry_run: bool,
    ) -> Result<PruneReport, LedgerError> {
        let mut tx = self.pool.begin().await?;
        // The session ids of the links that go are kept, so the policy still knows them as the
        // project's own.
        let transitions = sqlx::query_scalar!(
            r#"WITH gone AS (
                   DELETE FROM session_transitions t
                   WHERE t.created_at < $1
                     AND t.id <> (SELECT max(id) FROM session_transitions h
                                  WHERE h.project_id = t.project_id AND h.thread_id = t.thread_id)
                   RETURNING t.project_id, t.old_session_id, t.new_session_id),
               kept AS (
                   INSERT INTO pruned_sessions (session_id, project_id)
                   SELECT DISTINCT v.session_id, g.project_id
                   FROM gone g, LATERAL (VALUES (g.old_session_id), (g.new_session_id)) v(session_id)
                   WHERE v.session_id IS NOT NULL
                   ON CONFLICT (session_id) DO NOTHING
                   RETURNING 1)
               SELECT count(*) AS "count!" FROM gone"#,
            cutoff
        )
        .fetch_one(&mut *tx)
        .await?
        .try_into()
        .unwrap_or(0);
        let metrics = sqlx::query!(
            r#"DELETE FROM project_ai_session_metrics m
               WHERE m.created_at < $1
                 AND m.id <> (SELECT max(id) FROM project_ai_session_metrics h WHERE h.project_id = m.project_id)"#,
            cutoff
        )
        .execute(&mut *tx)
        .await?
        .rows_affected();
        let transcripts = sqlx::query!(
            r#"DELETE FROM session_transcripts s
               WHERE s.created_at < $1
                 AND NOT EXISTS (SELECT 1 FROM session_transcript_pieces c
                                 WHERE c.session_id = s.session_id AND c.created_at >= $1)
                 AND NOT EXISTS (SELECT 1 FROM projects p WHERE p.last_ai_session_id = s.session_id)
                 AND NOT EXISTS (SELECT 1 FROM threads th
                                 WHERE th.last_ai_session_id = s.session_id
                                    OR th.fork_session_id = s.session_id)"#,
            cutoff
        )
        .execute(&mut *tx)
        .await?
        .rows_affected();
        let webhooks = sqlx::query!(
            r#"DELETE FROM webhook_deliveries WHERE created_at < $1 AND state <> 'pending'"#,
            cutoff
        )
        .execute(&mut *tx)
        .await?
        .rows_affected();
        // A dry run makes the same deletions and takes them back: its counts are exactly a real
        // run's at this moment.
        if dry_run {
            tx.rollback().await?;
        } else {
            tx.commit().await?;
        }
        Ok(PruneReport {
            transitions,
            metrics,
            transcripts,
            webhooks,
            dry_run,
        })
    }
}
