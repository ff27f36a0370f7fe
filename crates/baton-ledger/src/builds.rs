//! A build's state outside its runs' records: ending it, handing it back, reopening it, and the
//! final state of a job that could not run.

use baton_core::{BuildStatus, Fence, Job};

use crate::{Ledger, LedgerError};

impl Ledger {
    /// Ends a build as completed or failed, under the claim's fence.
    pub async fn finish_build(
        &self,
        build_id: &str,
        fence: Fence,
        status: BuildStatus,
        last_error: Option<&str>,
    ) -> Result<(), LedgerError> {
        // Fenced in the statement itself, so ending a build is one round trip.
        let done = sqlx::query!(
            r#"UPDATE builds SET status = $2, last_error = COALESCE($3, last_error), finished_at = now(), updated_at = now()
               WHERE build_id = $1 AND fencing_token = $4"#,
            build_id,
            status.as_str(),
            last_error,
            fence.get()
        )
        .execute(&self.pool)
        .await?;
        if done.rows_affected() == 0 {
            return Err(self.fence_refusal(build_id, fence).await);
        }
        Ok(())
    }

    /// Puts a claimed build back to `queued` (its entry was handed back: shutdown, or the CLI's
    /// credentials failed), keeping why. Fenced like every write of a claim.
    pub async fn requeue_build(
        &self,
        build_id: &str,
        fence: Fence,
        reason: &str,
    ) -> Result<(), LedgerError> {
        let done = sqlx::query!(
            "UPDATE builds SET status = 'queued', last_error = $2, updated_at = now() WHERE build_id = $1 AND fencing_token = $3",
            build_id,
            reason,
            fence.get()
        )
        .execute(&self.pool)
        .await?;
        if done.rows_affected() == 0 {
            return Err(self.fence_refusal(build_id, fence).await);
        }
        Ok(())
    }

    /// Why a fenced write of `build_id` matched no row: the build is unknown or claimed again.
    pub(crate) async fn fence_refusal(&self, build_id: &str, fence: Fence) -> LedgerError {
        match sqlx::query_scalar!(
            "SELECT fencing_token FROM builds WHERE build_id = $1",
            build_id
        )
        .fetch_optional(&self.pool)
        .await
        {
            Ok(Some(current)) => LedgerError::Fenced {
                build_id: build_id.to_string(),
                yours: fence,
                current: Fence(current),
            },
            Ok(None) => LedgerError::UnknownBuild(build_id.to_string()),
            Err(e) => LedgerError::Db(e),
        }
    }

    /// Opens a failed build again so a replayed job runs its remaining steps; returns whether the
    /// build was failed. Completed builds stay completed.
    pub async fn reopen_build(&self, build_id: &str) -> Result<bool, LedgerError> {
        let reopened = sqlx::query!(
            "UPDATE builds SET status = 'queued', finished_at = NULL, updated_at = now() WHERE build_id = $1 AND status = 'failed'",
            build_id
        )
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(reopened == 1)
    }

    /// Marks a build failed without a claim's fence: for jobs refused before any worker could run
    /// them, and for one whose worker panicked while running it.
    pub async fn fail_unclaimed(&self, job: &Job, error: &str) -> Result<(), LedgerError> {
        let readable = baton_core::ReadableJob {
            build_id: job.build_id.to_string(),
            project_id: job.project_id.to_string(),
            version_id: job.version_id.clone(),
            user_id: job.user_id.clone(),
            kind: job.kind.as_str().to_string(),
        };
        let payload = serde_json::to_value(job).expect("a job serialises");
        self.fail_rejected(&readable, error, Some(&payload)).await
    }

    /// Gives a build that cannot run its final state, `failed` with `error`, so a backend that
    /// follows the ledger sees it end: a new row, or the build's own row while it is unfinished
    /// and the same build (project, user, version, kind and payload but its enqueue time). Never
    /// another build, nor a finished one: a job that reuses a build id changes nothing of it.
    pub async fn fail_rejected(
        &self,
        job: &baton_core::ReadableJob,
        error: &str,
        payload: Option<&serde_json::Value>,
    ) -> Result<(), LedgerError> {
        sqlx::query!(
            r#"INSERT INTO builds AS b (build_id, project_id, version_id, user_id, kind, status, last_error, payload, finished_at)
               VALUES ($1, $2, $3, $4, $5, 'failed', $6, $7, now())
               ON CONFLICT (build_id) DO UPDATE SET status = 'failed', last_error = EXCLUDED.last_error,
                   finished_at = now(), updated_at = now()
               WHERE b.status IN ('queued', 'running') AND b.project_id = EXCLUDED.project_id
                 AND b.user_id = EXCLUDED.user_id AND b.version_id = EXCLUDED.version_id
                 AND b.kind = EXCLUDED.kind
                 AND (b.payload - 'enqueued_at') IS NOT DISTINCT FROM (EXCLUDED.payload - 'enqueued_at')"#,
            job.build_id.as_str(),
            job.project_id.as_str(),
            job.version_id,
            job.user_id,
            job.kind,
            error,
            payload,
        )
        .execute(&self.pool)
        .await?;
        Ok(())
    }
}
