//! Session transcripts in the ledger: the files the CLI needs to resume a session, stored with each
//! run's record ([`Ledger::record_run`]) and read back by a worker before it resumes the session on
//! another host; also exported, imported and shown for operators.

use baton_transcript::{FileChange, SessionFile, StoredFile, archive::Imported};
use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::{Ledger, LedgerError};

/// What changed in a session's files, to store with a run's record.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TranscriptWrite {
    /// The files' changes (see [`baton_transcript::changes`]).
    pub changes: Vec<FileChange>,
    /// Why the session cannot be stored whole (too large, not found on the worker): the store
    /// then keeps this reason instead of a half copy, and the next job starts fresh.
    pub incomplete: Option<String>,
}

/// A [`TranscriptWrite`] as the columns `baton_store_transcript` takes.
pub(crate) struct Columns {
    pub(crate) paths: Vec<String>,
    pub(crate) base_lengths: Vec<i64>,
    pub(crate) base_hashes: Vec<Vec<u8>>,
    pub(crate) lengths: Vec<i64>,
    pub(crate) hashes: Vec<Vec<u8>>,
    pub(crate) data: Vec<Vec<u8>>,
}

impl Columns {
    pub(crate) fn of(write: Option<&TranscriptWrite>) -> Columns {
        let changes = write.map(|w| w.changes.as_slice()).unwrap_or_default();
        Columns {
            paths: changes.iter().map(|c| c.path.clone()).collect(),
            base_lengths: changes.iter().map(|c| c.base_length).collect(),
            base_hashes: changes.iter().map(|c| c.base_sha256.clone()).collect(),
            lengths: changes.iter().map(|c| c.length).collect(),
            hashes: changes.iter().map(|c| c.sha256.clone()).collect(),
            data: changes.iter().map(|c| c.data.clone()).collect(),
        }
    }
}

/// What the ledger holds of one session's files.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StoredSession {
    /// The session.
    pub session_id: String,
    /// Its project.
    pub project_id: String,
    /// Why the stored copy cannot be resumed, when it cannot.
    pub incomplete: Option<String>,
    /// The files' total length.
    pub bytes: i64,
    /// What the files take in the ledger, compressed.
    pub stored_bytes: i64,
    /// Stores that changed something.
    pub stores: i32,
    /// When it was first stored.
    pub created_at: DateTime<Utc>,
    /// When it was last stored.
    pub updated_at: DateTime<Utc>,
    /// Its files, transcript first.
    pub files: Vec<StoredFile>,
}

impl Ledger {
    /// What the ledger holds of `session_id`'s files, without their content; `None` when nothing
    /// was ever stored for it.
    pub async fn stored_session(
        &self,
        session_id: &str,
    ) -> Result<Option<StoredSession>, LedgerError> {
        let mut conn = self.pool.acquire().await?;
        stored_session(&mut conn, session_id).await
    }

    /// The content of `session_id`'s files named in `paths` (every file when `None`), joined from
    /// their pieces and checked against their stored length and hash, with what the ledger holds of
    /// the session, both read from one snapshot.
    pub async fn stored_files(
        &self,
        session_id: &str,
        paths: Option<&[String]>,
    ) -> Result<Option<(StoredSession, Vec<SessionFile>)>, LedgerError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query!("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            .execute(&mut *tx)
            .await?;
        let Some(session) = stored_session(&mut tx, session_id).await? else {
            return Ok(None);
        };
        let wanted: Vec<String> = match paths {
            Some(p) => p.to_vec(),
            None => session.files.iter().map(|f| f.path.clone()).collect(),
        };
        let rows = sqlx::query!(
            r#"SELECT path, data FROM session_transcript_pieces
               WHERE session_id = $1 AND path = ANY($2) ORDER BY path, seq"#,
            session_id,
            &wanted
        )
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        let mut files = Vec::new();
        for stored in session.files.iter().filter(|f| wanted.contains(&f.path)) {
            let pieces: Vec<Vec<u8>> = rows
                .iter()
                .filter(|r| r.path == stored.path)
                .map(|r| r.data.clone())
                .collect();
            let bytes = baton_transcript::assemble(stored, &pieces)
                .map_err(|e| LedgerError::Unexpected(format!("session {session_id}: {e}")))?;
            files.push(SessionFile {
                path: stored.path.clone(),
                bytes,
            });
        }
        Ok(Some((session, files)))
    }

    /// How many recorded runs left `session_id` (an import is no run).
    pub async fn session_runs(&self, session_id: &str) -> Result<i64, LedgerError> {
        Ok(sqlx::query_scalar!(
            r#"SELECT count(*) AS "n!" FROM session_transitions
               WHERE new_session_id = $1 AND build_id IS NOT NULL"#,
            session_id
        )
        .fetch_one(&self.pool)
        .await?)
    }

    /// Adds a session made outside Baton (`baton session import`) as `project_id`'s newest, with
    /// its files, so jobs naming it are accepted and resume it. Creates the project for `user_id`
    /// on first sight; refuses another user's project and a session the ledger already knows.
    /// Returns the session the project had before, if any.
    pub async fn import_session(
        &self,
        project_id: &str,
        user_id: &str,
        imported: &Imported,
    ) -> Result<Option<String>, LedgerError> {
        let id = &imported.session_id;
        let mut tx = self.pool.begin().await?;
        let project = sqlx::query!(
            r#"INSERT INTO projects (project_id, user_id) VALUES ($1, $2)
               ON CONFLICT (project_id) DO UPDATE SET user_id = projects.user_id
               RETURNING user_id, last_ai_session_id"#,
            project_id,
            user_id
        )
        .fetch_one(&mut *tx)
        .await?;
        if project.user_id != user_id {
            return Err(LedgerError::NotOwner {
                project_id: project_id.to_string(),
                user_id: user_id.to_string(),
            });
        }
        let known = sqlx::query_scalar!(
            r#"SELECT EXISTS (SELECT 1 FROM session_transitions WHERE new_session_id = $1)
                   OR EXISTS (SELECT 1 FROM session_transitions WHERE old_session_id = $1)
                   OR EXISTS (SELECT 1 FROM session_transcripts WHERE session_id = $1) AS "known!""#,
            id
        )
        .fetch_one(&mut *tx)
        .await?;
        if known {
            return Err(LedgerError::SessionKnown(id.clone()));
        }
        // A conversation new to Baton: a fresh start as far as its age and length go.
        sqlx::query!(
            r#"INSERT INTO session_transitions (project_id, old_session_id, new_session_id, source, fresh_reason)
               VALUES ($1, NULL, $2, 'import', 'import')"#,
            project_id,
            id
        )
        .execute(&mut *tx)
        .await?;
        sqlx::query!(
            "UPDATE projects SET last_ai_session_id = $2 WHERE project_id = $1",
            project_id,
            id
        )
        .execute(&mut *tx)
        .await?;
        let write = TranscriptWrite {
            changes: baton_transcript::changes(&imported.files, &[]),
            incomplete: None,
        };
        let c = Columns::of(Some(&write));
        sqlx::query_scalar!(
            r#"SELECT baton_store_transcript(
                   p_project_id => $1, p_session_id => $2, p_paths => $3, p_base_lengths => $4,
                   p_base_hashes => $5, p_lengths => $6, p_hashes => $7, p_data => $8,
                   p_incomplete => NULL)"#,
            project_id,
            id,
            &c.paths,
            &c.base_lengths,
            &c.base_hashes,
            &c.lengths,
            &c.hashes,
            &c.data,
        )
        .fetch_one(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(project.last_ai_session_id)
    }
}

async fn stored_session(
    conn: &mut sqlx::PgConnection,
    session_id: &str,
) -> Result<Option<StoredSession>, LedgerError> {
    let Some(head) = sqlx::query!(
        r#"SELECT session_id, project_id, incomplete, bytes, stored_bytes, stores, created_at, updated_at
           FROM session_transcripts WHERE session_id = $1"#,
        session_id
    )
    .fetch_optional(&mut *conn)
    .await?
    else {
        return Ok(None);
    };
    let files = sqlx::query_as!(
        StoredFile,
        r#"SELECT path, length, sha256, pieces FROM session_transcript_files
           WHERE session_id = $1 ORDER BY path LIKE '%/%', path"#,
        session_id
    )
    .fetch_all(&mut *conn)
    .await?;
    Ok(Some(StoredSession {
        session_id: head.session_id,
        project_id: head.project_id,
        incomplete: head.incomplete,
        bytes: head.bytes,
        stored_bytes: head.stored_bytes,
        stores: head.stores,
        created_at: head.created_at,
        updated_at: head.updated_at,
        files,
    }))
}

#[cfg(test)]
mod tests;
