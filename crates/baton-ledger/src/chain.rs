//! A project's chains as the ledger keeps them: the main one and each thread's, their newest
//! sessions, their links, and what ends a session (a resume the CLI could not make, a reset).

use baton_core::{BuildId, Fence, Job, SessionId, Source, Step};
use serde::Serialize;

use crate::{Ledger, LedgerError, Transition, check_fence};

impl Ledger {
    /// The newest session of the project's main chain, or of its thread `thread_id`, if it has
    /// one.
    pub async fn chain_head(
        &self,
        project_id: &str,
        thread_id: Option<&str>,
    ) -> Result<Option<SessionId>, LedgerError> {
        Ok(sqlx::query_scalar!(
            r#"SELECT CASE WHEN $2::text IS NULL THEN p.last_ai_session_id
                           ELSE (SELECT th.last_ai_session_id FROM threads th
                                 WHERE th.project_id = p.project_id AND th.thread_id = $2) END
               FROM projects p WHERE p.project_id = $1"#,
            project_id,
            thread_id,
        )
        .fetch_optional(&self.pool)
        .await?
        .flatten()
        .map(SessionId::from))
    }

    /// The project's newest session (of its main chain), if it has one.
    pub async fn project_session(
        &self,
        project_id: &str,
    ) -> Result<Option<SessionId>, LedgerError> {
        self.chain_head(project_id, None).await
    }

    /// The transitions of the project's main chain, oldest first.
    pub async fn chain(&self, project_id: &str) -> Result<Vec<Transition>, LedgerError> {
        self.chain_of(project_id, None).await
    }

    /// The transitions of the project's main chain, or of its thread `thread_id`, oldest first.
    pub async fn chain_of(
        &self,
        project_id: &str,
        thread_id: Option<&str>,
    ) -> Result<Vec<Transition>, LedgerError> {
        sqlx::query!(
            r#"SELECT id, version_id, build_id, step, old_session_id, new_session_id, source, fresh_reason, note, created_at
               FROM session_transitions WHERE project_id = $1 AND thread_id = coalesce($2, '')
               ORDER BY id"#,
            project_id,
            thread_id,
        )
        .fetch_all(&self.pool)
        .await?
        .into_iter()
        .map(|r| {
            Ok(Transition {
                id: r.id,
                version_id: r.version_id,
                build_id: r.build_id.map(BuildId::from),
                // A fallback is stored under `<step>:resume_fallback`, unique beside the step's
                // own run; its source already says what it is.
                step: r
                    .step
                    .as_deref()
                    .map(|s| crate::step_named(s.strip_suffix(FALLBACK_SUFFIX).unwrap_or(s)))
                    .transpose()?,
                old_session_id: r.old_session_id.map(SessionId::from),
                new_session_id: r.new_session_id.map(SessionId::from),
                source: Source::from_name(&r.source).ok_or_else(|| {
                    LedgerError::Unexpected(format!("unknown transition source {:?}", r.source))
                })?,
                fresh_reason: r.fresh_reason,
                note: r.note,
                created_at: r.created_at,
            })
        })
        .collect()
    }

    /// Records that the CLI could not find the session a run tried to resume: marks the session not
    /// resumable, counts the failure, and records a `resume_fallback` transition, so the run can
    /// start fresh. Fenced like every write of a claim; recorded once per (build, step).
    pub async fn record_resume_fallback(
        &self,
        job: &Job,
        fence: Fence,
        step: &Step,
        missing_session: &str,
    ) -> Result<(), LedgerError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query!(
            "SELECT project_id FROM projects WHERE project_id = $1 FOR UPDATE",
            job.project_id.as_str()
        )
        .fetch_one(&mut *tx)
        .await?;
        check_fence(&mut tx, &job.build_id, fence).await?;
        let fallback_step = format!("{}{FALLBACK_SUFFIX}", step.name());
        sqlx::query!(
            r#"INSERT INTO session_transitions (project_id, thread_id, version_id, build_id, step, old_session_id, new_session_id, source)
               VALUES ($1, coalesce($6, ''), nullif($2, ''), $3, $4, $5, NULL, 'resume_fallback')
               ON CONFLICT (build_id, step) WHERE build_id IS NOT NULL AND step IS NOT NULL DO NOTHING"#,
            job.project_id.as_str(),
            job.version_id,
            job.build_id.as_str(),
            fallback_step,
            missing_session,
            job.thread_id.as_deref(),
        )
        .execute(&mut *tx)
        .await?;
        mark_not_resumable(&mut tx, &job.project_id, missing_session).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Ends a project's session so its next job starts fresh; recorded as a `reset` transition.
    /// While a job of the project runs, the reset waits for it: that job records its runs, and
    /// the next claim of the project performs the reset ([`Reset::deferred`]).
    pub async fn reset_session(&self, project_id: &str) -> Result<Reset, LedgerError> {
        let mut tx = self.pool.begin().await?;
        let last = sqlx::query_scalar!(
            "SELECT last_ai_session_id FROM projects WHERE project_id = $1 FOR UPDATE",
            project_id
        )
        .fetch_optional(&mut *tx)
        .await?
        .ok_or_else(|| LedgerError::UnknownProject(project_id.to_string()))?;
        let running = sqlx::query_scalar!(
            r#"SELECT EXISTS (SELECT 1 FROM builds WHERE project_id = $1 AND status = 'running') AS "running!""#,
            project_id
        )
        .fetch_one(&mut *tx)
        .await?;
        if running {
            sqlx::query!(
                "UPDATE projects SET reset_requested_at = now() WHERE project_id = $1",
                project_id
            )
            .execute(&mut *tx)
            .await?;
        } else {
            sqlx::query!(
                r#"INSERT INTO session_transitions (project_id, old_session_id, new_session_id, source)
                   VALUES ($1, $2, NULL, 'reset')"#,
                project_id,
                last
            )
            .execute(&mut *tx)
            .await?;
            sqlx::query!(
                "UPDATE projects SET last_ai_session_id = NULL, reset_requested_at = NULL WHERE project_id = $1",
                project_id
            )
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(Reset {
            session: last,
            deferred: running,
        })
    }
}

/// What [`Ledger::reset_session`] did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Reset {
    /// The project's session when the reset was asked for.
    pub session: Option<String>,
    /// A job of the project was running: the reset takes effect when the next job is claimed.
    pub deferred: bool,
}

/// Marks a session not resumable and counts the failure; whichever of the project's chains has it
/// as its newest forgets it.
async fn mark_not_resumable(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    project_id: &str,
    session: &str,
) -> Result<(), LedgerError> {
    sqlx::query!(
        r#"UPDATE project_ai_session_metrics
           SET is_resumable = false, resume_failure_count = resume_failure_count + 1
           WHERE session_id = $1 AND project_id = $2"#,
        session,
        project_id
    )
    .execute(&mut **tx)
    .await?;
    sqlx::query!(
        "UPDATE projects SET last_ai_session_id = NULL WHERE project_id = $1 AND last_ai_session_id = $2",
        project_id,
        session
    )
    .execute(&mut **tx)
    .await?;
    sqlx::query!(
        "UPDATE threads SET last_ai_session_id = NULL WHERE project_id = $1 AND last_ai_session_id = $2",
        project_id,
        session
    )
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// What a resume fallback's transition adds to its step's name, so that it is recorded once per
/// (build, step) beside the step's own run.
pub(crate) const FALLBACK_SUFFIX: &str = ":resume_fallback";
