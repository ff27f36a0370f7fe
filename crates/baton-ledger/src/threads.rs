//! Threads: chat conversations beside a project's main session, each with its own chain (see
//! `migrations/*_threads.sql`). Listing, showing, deleting and forking them; the claim and the
//! record of a thread's job are the ledger's usual ones, told the thread.

use baton_core::{Job, SessionId};
use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::refusal::{self, Refusal, reason};
use crate::{Ledger, LedgerError, Transition};

/// One thread as the mapping operations show it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ThreadSummary {
    /// The thread.
    pub thread_id: String,
    /// Its project.
    pub project_id: String,
    /// Its owner.
    pub user_id: String,
    /// Its newest session; none before its first run.
    pub session_id: Option<SessionId>,
    /// What it was forked from, as asked (`main`, a thread, a session id).
    pub fork_from: Option<String>,
    /// The session its first run forks (or forked).
    pub fork_session_id: Option<SessionId>,
    /// When it was made.
    pub created_at: DateTime<Utc>,
    /// When its session last moved.
    pub updated_at: DateTime<Utc>,
    /// Its recorded runs.
    pub runs: i64,
    /// The first line of its newest answer.
    pub last_answer: Option<String>,
}

/// A thread and its chain (`baton thread show`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ThreadDetail {
    /// The thread.
    #[serde(flatten)]
    pub thread: ThreadSummary,
    /// Its chain, oldest first.
    pub chain: Vec<Transition>,
}

/// What [`Ledger::delete_thread`] removed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeletedThread {
    /// The thread's sessions whose stored transcripts went with it.
    pub transcripts: u64,
    /// Its chain's links.
    pub transitions: u64,
}

/// Why a thread operation was refused.
#[derive(Debug, thiserror::Error)]
pub enum ThreadError {
    /// The ledger failed.
    #[error(transparent)]
    Ledger(#[from] LedgerError),
    /// No such thread.
    #[error("project {project_id} has no thread {thread_id}")]
    NotFound {
        /// The project.
        project_id: String,
        /// The thread.
        thread_id: String,
    },
    /// The thread a fork would make exists already.
    #[error("project {project_id} has a thread {thread_id} already")]
    Exists {
        /// The project.
        project_id: String,
        /// The thread.
        thread_id: String,
    },
    /// A job of the thread is running: deleting it now would fail that job's record.
    #[error("a job of thread {thread_id} is running; cancel it or wait for it to end")]
    Running {
        /// The thread.
        thread_id: String,
    },
}

impl From<sqlx::Error> for ThreadError {
    fn from(e: sqlx::Error) -> Self {
        ThreadError::Ledger(LedgerError::Db(e))
    }
}

/// What the claim's refusal `e` means for `job`.
pub(crate) fn claim_refusal(e: sqlx::Error, job: &Job) -> LedgerError {
    match Refusal::of(&e).map(|r| (r.code, r.reason)) {
        Some((refusal::NOT_OWNER, reason::NOT_THREAD_OWNER)) => LedgerError::NotThreadOwner {
            user_id: job.user_id.clone(),
        },
        Some((refusal::NOT_OWNER, _)) => LedgerError::NotOwner {
            project_id: job.project_id.to_string(),
            user_id: job.user_id.clone(),
        },
        Some((refusal::NOT_FOUND, _)) => LedgerError::ForkSourceUnknown {
            project_id: job.project_id.to_string(),
            fork_from: job.fork_from.clone().unwrap_or_default(),
        },
        Some((refusal::BUILD_ID_REUSED, _)) => LedgerError::BuildIdReused(job.build_id.to_string()),
        _ => LedgerError::Db(e),
    }
}

impl Ledger {
    /// The threads of `user_id`, of one project or of all, newest first.
    pub async fn threads(
        &self,
        user_id: &str,
        project_id: Option<&str>,
    ) -> Result<Vec<ThreadSummary>, LedgerError> {
        let rows = sqlx::query!(
            r#"SELECT th.thread_id AS "thread_id!", th.project_id AS "project_id!",
                      th.user_id AS "user_id!", th.last_ai_session_id AS session_id,
                      th.fork_from, th.fork_session_id,
                      th.created_at AS "created_at!", th.updated_at AS "updated_at!",
                      (SELECT count(*) FROM session_transitions t
                       WHERE t.project_id = th.project_id AND t.thread_id = th.thread_id
                         AND t.new_session_id IS NOT NULL) AS "runs!",
                      (SELECT split_part(r.result, E'\n', 1) FROM session_transitions t
                       JOIN run_results r ON r.build_id = t.build_id AND r.step = t.step
                       WHERE t.project_id = th.project_id AND t.thread_id = th.thread_id
                       ORDER BY t.id DESC LIMIT 1) AS last_answer
               FROM threads th
               WHERE th.user_id = $1 AND ($2::text IS NULL OR th.project_id = $2)
               ORDER BY th.updated_at DESC, th.thread_id"#,
            user_id,
            project_id,
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|r| ThreadSummary {
                thread_id: r.thread_id,
                project_id: r.project_id,
                user_id: r.user_id,
                session_id: r.session_id.map(SessionId::from),
                fork_from: r.fork_from,
                fork_session_id: r.fork_session_id.map(SessionId::from),
                created_at: r.created_at,
                updated_at: r.updated_at,
                runs: r.runs,
                last_answer: r.last_answer,
            })
            .collect())
    }

    /// One thread with its chain.
    pub async fn thread(
        &self,
        project_id: &str,
        thread_id: &str,
    ) -> Result<ThreadDetail, ThreadError> {
        let user = sqlx::query_scalar!(
            "SELECT user_id FROM threads WHERE project_id = $1 AND thread_id = $2",
            project_id,
            thread_id
        )
        .fetch_optional(&self.pool)
        .await?
        .ok_or_else(|| not_found(project_id, thread_id))?;
        let thread = self
            .threads(&user, Some(project_id))
            .await?
            .into_iter()
            .find(|t| t.thread_id == thread_id)
            .ok_or_else(|| not_found(project_id, thread_id))?;
        let chain = self.chain_of(project_id, Some(thread_id)).await?;
        Ok(ThreadDetail { thread, chain })
    }

    /// Deletes a thread: its mapping, its chain's links and the stored transcripts of the sessions
    /// it made (but one another thread is still to fork). The main session and other threads are
    /// untouched; builds and their answers stay.
    pub async fn delete_thread(
        &self,
        project_id: &str,
        thread_id: &str,
    ) -> Result<DeletedThread, ThreadError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query_scalar!(
            "SELECT user_id FROM threads WHERE project_id = $1 AND thread_id = $2 FOR UPDATE",
            project_id,
            thread_id
        )
        .fetch_optional(&mut *tx)
        .await?
        .ok_or_else(|| not_found(project_id, thread_id))?;
        let running = sqlx::query_scalar!(
            r#"SELECT EXISTS (SELECT 1 FROM builds
                              WHERE project_id = $1 AND status = 'running'
                                AND payload->>'thread_id' = $2) AS "running!""#,
            project_id,
            thread_id
        )
        .fetch_one(&mut *tx)
        .await?;
        if running {
            return Err(ThreadError::Running {
                thread_id: thread_id.to_string(),
            });
        }
        let transcripts = sqlx::query!(
            r#"DELETE FROM session_transcripts s
               WHERE s.project_id = $1
                 AND s.session_id IN (SELECT t.new_session_id FROM session_transitions t
                                      WHERE t.project_id = $1 AND t.thread_id = $2)
                 AND NOT EXISTS (SELECT 1 FROM threads o
                                 WHERE o.project_id = $1 AND o.thread_id <> $2
                                   AND o.fork_session_id = s.session_id
                                   AND o.last_ai_session_id IS NULL)"#,
            project_id,
            thread_id
        )
        .execute(&mut *tx)
        .await?
        .rows_affected();
        let transitions = sqlx::query!(
            "DELETE FROM session_transitions WHERE project_id = $1 AND thread_id = $2",
            project_id,
            thread_id
        )
        .execute(&mut *tx)
        .await?
        .rows_affected();
        sqlx::query!(
            "DELETE FROM threads WHERE project_id = $1 AND thread_id = $2",
            project_id,
            thread_id
        )
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(DeletedThread {
            transcripts,
            transitions,
        })
    }

    /// Makes thread `to` a branch of thread `thread_id`, owned by the same user: its first chat
    /// forks the session `thread_id` has now.
    pub async fn fork_thread(
        &self,
        project_id: &str,
        thread_id: &str,
        to: &str,
    ) -> Result<ThreadSummary, ThreadError> {
        let mut tx = self.pool.begin().await?;
        let user = sqlx::query_scalar!(
            "SELECT user_id FROM threads WHERE project_id = $1 AND thread_id = $2 FOR SHARE",
            project_id,
            thread_id
        )
        .fetch_optional(&mut *tx)
        .await?
        .ok_or_else(|| not_found(project_id, thread_id))?;
        let made = sqlx::query_scalar!(
            r#"INSERT INTO threads (project_id, thread_id, user_id, fork_from, fork_session_id)
               VALUES ($1, $2, $3, $4,
                       baton_fork_source(p_project_id => $1, p_user_id => $3, p_fork_from => $4))
               ON CONFLICT (project_id, thread_id) DO NOTHING
               RETURNING thread_id"#,
            project_id,
            to,
            user,
            thread_id
        )
        .fetch_optional(&mut *tx)
        .await
        .map_err(|e| match Refusal::of(&e).map(|r| r.code) {
            Some(refusal::NOT_FOUND) => ThreadError::Ledger(LedgerError::ForkSourceUnknown {
                project_id: project_id.to_string(),
                fork_from: thread_id.to_string(),
            }),
            _ => ThreadError::from(e),
        })?;
        if made.is_none() {
            return Err(ThreadError::Exists {
                project_id: project_id.to_string(),
                thread_id: to.to_string(),
            });
        }
        tx.commit().await?;
        Ok(self.thread(project_id, to).await?.thread)
    }
}

fn not_found(project_id: &str, thread_id: &str) -> ThreadError {
    ThreadError::NotFound {
        project_id: project_id.to_string(),
        thread_id: thread_id.to_string(),
    }
}
