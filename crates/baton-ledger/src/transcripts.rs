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
    /// When it was first stored.
    pub created_at: DateTime<Utc>,
    /// Its files, transcript first.
    pub files: Vec<StoredFile>,
}

/// How much a stored session takes, read from its files and pieces.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct TranscriptStats {
    /// The files' total length.
    pub bytes: i64,
    /// What their pieces take in the ledger, compressed.
    pub stored_bytes: i64,
    /// Pieces stored: one per store that changed a file.
    pub pieces: i64,
    /// When the last piece was stored.
    pub updated_at: Option<DateTime<Utc>>,
}

impl Ledger {
    /// What the ledger holds of `session_id`'s files, without their content; `None` when nothing
    /// was ever stored for it. One statement, on the hot path's connection: a worker asks this
    /// before each job that resumes a session.
    pub async fn stored_session(
        &self,
        session_id: &str,
    ) -> Result<Option<StoredSession>, LedgerError> {
        let mut conn = self.hot_connection().await?;
        let row = sqlx::query!(
            r#"SELECT t.session_id, t.project_id, t.incomplete, t.created_at,
                      coalesce(array_agg(f.path ORDER BY f.path LIKE '%/%', f.path)
                               FILTER (WHERE f.path IS NOT NULL), '{}') AS "paths!: Vec<String>",
                      coalesce(array_agg(f.length ORDER BY f.path LIKE '%/%', f.path)
                               FILTER (WHERE f.path IS NOT NULL), '{}') AS "lengths!: Vec<i64>",
                      coalesce(array_agg(f.sha256 ORDER BY f.path LIKE '%/%', f.path)
                               FILTER (WHERE f.path IS NOT NULL), '{}') AS "hashes!: Vec<Vec<u8>>",
                      coalesce(array_agg(f.pieces ORDER BY f.path LIKE '%/%', f.path)
                               FILTER (WHERE f.path IS NOT NULL), '{}') AS "pieces!: Vec<i32>"
               FROM session_transcripts t
               LEFT JOIN session_transcript_files f ON f.session_id = t.session_id
               WHERE t.session_id = $1
               GROUP BY t.session_id, t.project_id, t.incomplete, t.created_at"#,
            session_id
        )
        .fetch_optional(&mut *conn.conn)
        .await?;
        self.keep(conn);
        Ok(row.map(|r| StoredSession {
            files: r
                .paths
                .into_iter()
                .zip(r.lengths)
                .zip(r.hashes)
                .zip(r.pieces)
                .map(|(((path, length), sha256), pieces)| StoredFile {
                    path,
                    length,
                    sha256,
                    pieces,
                })
                .collect(),
            session_id: r.session_id,
            project_id: r.project_id,
            incomplete: r.incomplete,
            created_at: r.created_at,
        }))
    }

    /// How much `session_id` takes in the ledger (all zeros when nothing is stored).
    pub async fn transcript_stats(&self, session_id: &str) -> Result<TranscriptStats, LedgerError> {
        let r = sqlx::query!(
            r#"SELECT (SELECT coalesce(sum(length), 0) FROM session_transcript_files
                       WHERE session_id = $1)::bigint AS "bytes!",
                      coalesce(sum(octet_length(data)), 0)::bigint AS "stored_bytes!",
                      count(*) AS "pieces!",
                      max(created_at) AS updated_at
               FROM session_transcript_pieces WHERE session_id = $1"#,
            session_id
        )
        .fetch_one(&self.pool)
        .await?;
        Ok(TranscriptStats {
            bytes: r.bytes,
            stored_bytes: r.stored_bytes,
            pieces: r.pieces,
            updated_at: r.updated_at,
        })
    }

    /// The content of `session_id`'s files named in `paths` (every file when `None`), each joined
    /// from its pieces and checked against its stored length and hash, in one statement (so from
    /// one snapshot). Empty when the ledger holds none of them.
    pub async fn stored_files(
        &self,
        session_id: &str,
        paths: Option<&[String]>,
    ) -> Result<Vec<SessionFile>, LedgerError> {
        let rows = sqlx::query!(
            r#"SELECT f.path, f.length, f.sha256, f.pieces,
                      array_agg(c.data ORDER BY c.seq) AS "data!: Vec<Vec<u8>>"
               FROM session_transcript_files f
               JOIN session_transcript_pieces c ON c.session_id = f.session_id AND c.path = f.path
               WHERE f.session_id = $1 AND ($2::text[] IS NULL OR f.path = ANY($2))
               GROUP BY f.path, f.length, f.sha256, f.pieces
               ORDER BY f.path LIKE '%/%', f.path"#,
            session_id,
            paths as Option<&[String]>
        )
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter()
            .map(|r| {
                let stored = StoredFile {
                    path: r.path,
                    length: r.length,
                    sha256: r.sha256,
                    pieces: r.pieces,
                };
                let bytes = baton_transcript::assemble(&stored, &r.data)
                    .map_err(|e| LedgerError::Unexpected(format!("session {session_id}: {e}")))?;
                Ok(SessionFile {
                    path: stored.path,
                    bytes,
                })
            })
            .collect()
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

#[cfg(test)]
mod tests;
