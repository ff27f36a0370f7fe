//! What the ledger knows of one project, as the HTTP API shows it.

use baton_core::SessionId;
use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::{Ledger, LedgerError};

/// A project's session and counts.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ProjectSummary {
    /// The project.
    pub project_id: String,
    /// Its owner.
    pub user_id: String,
    /// Its newest session: what its next job resumes (none before its first run, or after a
    /// reset or a fallback).
    pub session_id: Option<SessionId>,
    /// When the session last changed.
    pub session_updated_at: Option<DateTime<Utc>>,
    /// A reset asked for while a job ran, performed when the next job is claimed.
    pub reset_pending: bool,
    /// Its builds.
    pub builds: i64,
    /// Its builds running now.
    pub running: i64,
    /// Runs recorded in its chain.
    pub runs: i64,
    /// Distinct sessions its chain went through.
    pub sessions: i64,
}

impl Ledger {
    /// The project's session and counts.
    pub async fn project_summary(&self, project_id: &str) -> Result<ProjectSummary, LedgerError> {
        let row = sqlx::query!(
            r#"SELECT p.project_id, p.user_id, p.last_ai_session_id, p.last_ai_session_updated_at,
                      p.reset_requested_at IS NOT NULL AS "reset_pending!",
                      (SELECT count(*) FROM builds b WHERE b.project_id = p.project_id) AS "builds!",
                      (SELECT count(*) FROM builds b WHERE b.project_id = p.project_id
                                                       AND b.status = 'running') AS "running!",
                      (SELECT count(*) FROM session_transitions t
                        WHERE t.project_id = p.project_id AND t.step IS NOT NULL
                          AND t.new_session_id IS NOT NULL) AS "runs!",
                      (SELECT count(DISTINCT t.new_session_id) FROM session_transitions t
                        WHERE t.project_id = p.project_id) AS "sessions!"
               FROM projects p WHERE p.project_id = $1"#,
            project_id
        )
        .fetch_optional(&self.pool)
        .await?
        .ok_or_else(|| LedgerError::UnknownProject(project_id.to_string()))?;
        Ok(ProjectSummary {
            project_id: row.project_id,
            user_id: row.user_id,
            session_id: row.last_ai_session_id.map(SessionId::from),
            session_updated_at: row.last_ai_session_updated_at,
            reset_pending: row.reset_pending,
            builds: row.builds,
            running: row.running,
            runs: row.runs,
            sessions: row.sessions,
        })
    }
}
