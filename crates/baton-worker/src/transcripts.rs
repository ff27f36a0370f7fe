//! Carrying sessions between hosts. The CLI keeps a session as files on the host that ran it; the
//! ledger keeps a copy. Before a run resumes a session, this worker makes its local copy the
//! ledger's (a host that never saw the session, or whose copy is stale, gets it written back);
//! after a run, what changed in the session's files goes into the ledger with the run's record.

use std::path::{Path, PathBuf};

use baton_ledger::{StoredSession, TranscriptWrite};
use baton_transcript::{LocalState, StoredFile};
use tracing::{info, warn};

use crate::job::JobContext;

/// Where this worker's CLI keeps sessions, and how much of one the ledger keeps.
#[derive(Debug, Clone)]
pub struct TranscriptSettings {
    /// The CLI's config folder (`CLAUDE_CONFIG_DIR` of its runs, or `~/.claude`).
    pub config_dir: PathBuf,
    /// `BATON_TRANSCRIPT_MAX_BYTES`.
    pub max_bytes: u64,
    /// `BATON_CLI_SESSION_IDS=keep`: a resume that comes back under another id started fresh.
    pub keep_ids: bool,
}

/// What a job knows the ledger holds of the session its chain is at, so that each run's store
/// sends only what is new and each resume checks the local copy against it.
#[derive(Debug, Clone, Default)]
pub struct Carried {
    /// The session.
    pub session: Option<String>,
    /// Its stored files, as of the last store or read.
    pub files: Vec<StoredFile>,
}

impl Carried {
    /// What the ledger holds of `session`, as read from it.
    pub fn read(stored: Option<&StoredSession>, session: &str) -> Carried {
        Carried {
            session: Some(session.to_string()),
            files: stored.map(|s| s.files.clone()).unwrap_or_default(),
        }
    }

    /// The stored files of `session`, when this is what is known of it.
    fn files_of(&self, session: &str) -> &[StoredFile] {
        if self.session.as_deref() == Some(session) {
            &self.files
        } else {
            &[]
        }
    }

    /// What the ledger holds once `write` is stored for `session` on top of what was known.
    pub fn after(&self, session: &str, write: &TranscriptWrite) -> Carried {
        if write.incomplete.is_some() {
            return Carried {
                session: Some(session.to_string()),
                files: Vec::new(),
            };
        }
        let files = baton_transcript::stored_after(self.files_of(session), &write.changes);
        Carried {
            session: Some(session.to_string()),
            files,
        }
    }
}

/// Sessions up to this size are read and hashed on the worker's own thread: a blocking-pool hop
/// costs more than reading them (most are a few kilobytes); larger ones go to the blocking pool.
const INLINE_BYTES: i64 = 1 << 20;

/// Runs `f`, which reads files, on the blocking pool unless `small`.
async fn file_work<T: Send + 'static>(
    small: bool,
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, String> {
    if small {
        Ok(f())
    } else {
        tokio::task::spawn_blocking(f)
            .await
            .map_err(|e| format!("reading the session's files: {e}"))
    }
}

impl Carried {
    /// Whether what is known of the session is small enough to read on the worker's own thread.
    fn small(&self) -> bool {
        self.files.iter().map(|f| f.length).sum::<i64>() <= INLINE_BYTES
    }
}

impl JobContext {
    /// The CLI's project folder for `cwd` on this host.
    fn session_folder(&self, cwd: &Path) -> PathBuf {
        baton_transcript::project_folder(&self.transcripts.config_dir, cwd)
    }

    /// Makes this host's copy of `carried`'s session the ledger's before a run resumes it: files
    /// missing here or different (length, hash) are written back from the ledger, atomically.
    /// A session the ledger holds nothing of is left to the CLI (and to its fallback).
    pub(crate) async fn restore(&self, cwd: &Path, carried: &Carried) -> Result<(), String> {
        let Some(session) = carried.session.clone() else {
            return Ok(());
        };
        if carried.files.is_empty() {
            return Ok(());
        }
        let folder = self.session_folder(cwd);
        let started = std::time::Instant::now();
        let stored = carried.files.clone();
        let states = {
            let folder = folder.clone();
            file_work(carried.small(), move || {
                baton_transcript::local_state(&folder, &stored)
            })
            .await?
            .map_err(|e| format!("checking the session's files: {e}"))?
        };
        let stale: Vec<(String, LocalState)> = carried
            .files
            .iter()
            .zip(states)
            .filter(|(_, state)| *state != LocalState::Current)
            .map(|(f, state)| (f.path.clone(), state))
            .collect();
        if stale.is_empty() {
            return Ok(());
        }
        let paths: Vec<String> = stale.iter().map(|(p, _)| p.clone()).collect();
        let files = self
            .ledger
            .stored_files(&session, Some(&paths))
            .await
            .map_err(|e| format!("reading session {session} from the ledger: {e}"))?;
        if files.len() != paths.len() {
            return Err(format!(
                "the ledger no longer holds every file of session {session}"
            ));
        }
        let bytes: usize = files.iter().map(|f| f.bytes.len()).sum();
        let written = {
            let (folder, session) = (folder.clone(), session.clone());
            file_work(carried.small(), move || {
                files.iter().try_for_each(|f| {
                    baton_transcript::write_file(&folder, &session, &f.path, &f.bytes)
                })
            })
            .await?
        };
        written.map_err(|e| format!("restoring session {session}: {e}"))?;
        let elapsed = started.elapsed();
        for (_, state) in &stale {
            self.metrics
                .transcript_restores
                .get_or_create(&crate::metrics::RestoreLabels {
                    reason: state.as_str().into(),
                })
                .inc();
        }
        self.metrics
            .transcript_restore_duration
            .observe(elapsed.as_secs_f64());
        let reason = if stale.iter().any(|(_, s)| *s == LocalState::Stale) {
            "stale"
        } else {
            "missing"
        };
        info!(
            session = %session,
            files = stale.len(),
            bytes,
            reason,
            ms = elapsed.as_millis() as u64,
            folder = %folder.display(),
            "restored the session's files from the ledger"
        );
        Ok(())
    }

    /// What changed in `session`'s files on this host since `carried`, to store with the record of
    /// the run that left it. A session this host has no transcript of, or one over
    /// `BATON_TRANSCRIPT_MAX_BYTES`, is stored as incomplete, with why.
    pub(crate) async fn transcript_write(
        &self,
        cwd: &Path,
        session: &str,
        carried: &Carried,
    ) -> TranscriptWrite {
        let config_dir = self.transcripts.config_dir.clone();
        let (cwd, id) = (cwd.to_path_buf(), session.to_string());
        let max = self.transcripts.max_bytes;
        let base = carried.files_of(session).to_vec();
        // A session's files are read, hashed and compressed in one go, after its run: on the
        // worker's thread while it is small.
        let read = file_work(carried.small(), move || {
            let folder = baton_transcript::find_session(&config_dir, &cwd, &id)
                .unwrap_or_else(|| baton_transcript::project_folder(&config_dir, &cwd));
            baton_transcript::read_session(&folder, &id).map(|files| {
                let files = files.map(|files| {
                    let total: u64 = files.iter().map(|f| f.bytes.len() as u64).sum();
                    let changes = (total <= max).then(|| baton_transcript::changes(&files, &base));
                    (total, changes)
                });
                (folder, files)
            })
        })
        .await;
        let incomplete = |why: String| {
            warn!(session, reason = %why, "the session cannot be kept whole in the ledger; the next job starts fresh");
            self.metrics.transcript_incomplete.inc();
            TranscriptWrite {
                changes: Vec::new(),
                incomplete: Some(why),
            }
        };
        match read {
            Ok(Ok((_, Some((_, Some(changes)))))) => TranscriptWrite {
                changes,
                incomplete: None,
            },
            Ok(Ok((_, Some((total, None))))) => incomplete(format!(
                "the session's files total {total} bytes, over BATON_TRANSCRIPT_MAX_BYTES ({max})"
            )),
            Ok(Ok((folder, None))) => incomplete(format!(
                "the CLI left no transcript of the session under {}",
                folder.display()
            )),
            Ok(Err(e)) => incomplete(format!("reading the session's files: {e}")),
            Err(e) => incomplete(e),
        }
    }

    /// The same write with every file sent whole, for a store that found the ledger's copy
    /// changed since this job read it.
    pub(crate) async fn transcript_write_whole(
        &self,
        cwd: &Path,
        session: &str,
    ) -> TranscriptWrite {
        self.transcript_write(cwd, session, &Carried::default())
            .await
    }
}
