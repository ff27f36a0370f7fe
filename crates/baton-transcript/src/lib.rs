//! Where the `claude` CLI keeps a session on disk, and carrying it between hosts.
//!
//! A session lives under the CLI's config folder (`$CLAUDE_CONFIG_DIR`, default `~/.claude`) as
//! `projects/<folder>/<session-id>.jsonl`, plus a folder `projects/<folder>/<session-id>/` holding
//! `tool-results/` and `subagents/`. `<folder>` is the run's real working directory with every
//! character that is not an ASCII letter or digit replaced by `-` ([`project_folder_name`]). A
//! replica on another host has none of these files, so Baton keeps them in the ledger and writes
//! them back before a run resumes the session. This crate is the file side of that: which files make
//! a session ([`read_session`]), what is new in them since the stored copy ([`changes`]), whether the
//! local copy is the stored one ([`local_state`]), and writing a stored file back atomically
//! ([`write_file`]). It does no database work.

pub mod archive;
pub mod conversation;

use std::io::{self, Read, Write};
use std::path::{Component, Path, PathBuf};

use sha2::{Digest, Sha256};

/// The longest folder name the CLI keeps whole; a longer one is cut and given a hash suffix.
pub const MAX_FOLDER_NAME: usize = 200;

/// Most files one session may have beside its transcript (`tool-results/`, `subagents/`); more are
/// refused rather than read, as no CLI run writes that many.
pub const MAX_SESSION_FILES: usize = 10_000;

/// How many appended pieces a stored file may have before the next store sends it whole again, so a
/// restore never has to join an unbounded number of pieces.
pub const MAX_PIECES: i32 = 64;

/// What can go wrong with a session's files.
#[derive(Debug, thiserror::Error)]
pub enum TranscriptError {
    /// Reading or writing a file failed.
    #[error("{path}: {cause}")]
    Io {
        /// The file.
        path: String,
        /// Why; quoted in the message, so not also a `#[source]` (nothing prints it twice).
        cause: io::Error,
    },
    /// A session id or a file's path could lead out of the CLI's folder, or is not one the CLI
    /// writes.
    #[error("{0}")]
    Invalid(String),
    /// Stored data did not come back as it was stored.
    #[error("{0}")]
    Corrupt(String),
}

fn io_error(path: &Path) -> impl FnOnce(io::Error) -> TranscriptError + '_ {
    move |cause| TranscriptError::Io {
        path: path.display().to_string(),
        cause,
    }
}

/// The CLI's name for the folder of a working directory, as CLI 2.1.332 computes it (checked
/// against it by the conformance suite): every UTF-16 unit that is not an ASCII letter or digit
/// becomes `-`; a name longer than [`MAX_FOLDER_NAME`] is cut to that length and given `-` and the
/// base-36 absolute value of a 32-bit `hash * 31 + unit` hash of the whole path. `cwd` must be the
/// real path (symlinks resolved), as the CLI sees it.
pub fn project_folder_name(cwd: &Path) -> String {
    let path = cwd.to_string_lossy();
    let units: Vec<u16> = path.encode_utf16().collect();
    let name: String = units
        .iter()
        .map(|&u| match u8::try_from(u) {
            Ok(b) if b.is_ascii_alphanumeric() => char::from(b),
            _ => '-',
        })
        .collect();
    if name.len() <= MAX_FOLDER_NAME {
        return name;
    }
    // JavaScript's `(h << 5) - h + c | 0` over the string's UTF-16 units, then `Math.abs`.
    let hash = units.iter().fold(0i32, |h, &u| {
        h.wrapping_shl(5).wrapping_sub(h).wrapping_add(i32::from(u))
    });
    format!(
        "{}-{}",
        &name[..MAX_FOLDER_NAME],
        base36(u64::from(hash.unsigned_abs()))
    )
}

fn base36(mut n: u64) -> String {
    const DIGITS: &[u8; 36] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut out = Vec::new();
    loop {
        out.push(DIGITS[(n % 36) as usize]);
        n /= 36;
        if n == 0 {
            break;
        }
    }
    out.reverse();
    String::from_utf8(out).expect("ASCII digits")
}

/// The folder the CLI keeps `cwd`'s sessions in, under its config folder.
pub fn project_folder(config_dir: &Path, cwd: &Path) -> PathBuf {
    config_dir.join("projects").join(project_folder_name(cwd))
}

/// Checks that `id` can name a session's files: 1 to 255 ASCII letters, digits, `-` and `_` (the
/// CLI's ids are UUIDs), so it can never lead out of the folder.
pub fn check_session_id(id: &str) -> Result<(), TranscriptError> {
    let ok = !id.is_empty()
        && id.len() <= 255
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(TranscriptError::Invalid(format!(
            "{id:?} is not a session id (1 to 255 letters, digits, '-' or '_')"
        )))
    }
}

/// Checks that `path` is one of session `id`'s files, relative to the project folder: the
/// transcript `<id>.jsonl` or a plain path under `<id>/`.
pub fn check_file_path(id: &str, path: &str) -> Result<(), TranscriptError> {
    check_session_id(id)?;
    if path == format!("{id}.jsonl") {
        return Ok(());
    }
    let refuse = || {
        TranscriptError::Invalid(format!(
            "{path:?} is not a file of session {id} (`{id}.jsonl` or a path under `{id}/`)"
        ))
    };
    let rest = path
        .strip_prefix(id)
        .and_then(|r| r.strip_prefix('/'))
        .ok_or_else(refuse)?;
    let plain = !rest.is_empty()
        && !rest.contains('\\')
        && !rest.contains('\0')
        && Path::new(rest)
            .components()
            .all(|c| matches!(c, Component::Normal(_)))
        && rest
            .split('/')
            .all(|part| !part.is_empty() && part != "." && part != "..");
    if plain { Ok(()) } else { Err(refuse()) }
}

/// One file of a session, its path relative to the CLI's project folder (`/`-separated).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionFile {
    /// `<id>.jsonl`, or a path under `<id>/`.
    pub path: String,
    /// Its content.
    pub bytes: Vec<u8>,
}

impl SessionFile {
    /// The SHA-256 of the content.
    pub fn sha256(&self) -> Vec<u8> {
        sha256(&self.bytes)
    }
}

/// SHA-256 of `bytes`.
pub fn sha256(bytes: &[u8]) -> Vec<u8> {
    Sha256::digest(bytes).to_vec()
}

/// Finds the folder holding session `id`: `cwd`'s own, or else any other project folder under
/// the config folder (where the CLI also looks when resuming). `None` when no transcript is found.
pub fn find_session(config_dir: &Path, cwd: &Path, id: &str) -> Option<PathBuf> {
    check_session_id(id).ok()?;
    let file = format!("{id}.jsonl");
    let own = project_folder(config_dir, cwd);
    if own.join(&file).is_file() {
        return Some(own);
    }
    std::fs::read_dir(config_dir.join("projects"))
        .ok()?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|folder| folder.join(&file).is_file())
}

/// Reads session `id`'s files from the project folder `folder`: the transcript and every regular
/// file under `<id>/` (symbolic links are not followed), in path order. `None` when there is no
/// transcript.
pub fn read_session(folder: &Path, id: &str) -> Result<Option<Vec<SessionFile>>, TranscriptError> {
    check_session_id(id)?;
    let transcript = folder.join(format!("{id}.jsonl"));
    let bytes = match std::fs::read(&transcript) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_error(&transcript)(e)),
    };
    let mut files = vec![SessionFile {
        path: format!("{id}.jsonl"),
        bytes,
    }];
    let mut pending = vec![(folder.join(id), id.to_string())];
    while let Some((dir, rel)) = pending.pop() {
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(io_error(&dir)(e)),
        };
        for entry in entries {
            let entry = entry.map_err(io_error(&dir))?;
            let Ok(name) = entry.file_name().into_string() else {
                continue;
            };
            let kind = entry.file_type().map_err(io_error(&entry.path()))?;
            let rel = format!("{rel}/{name}");
            if kind.is_dir() {
                pending.push((entry.path(), rel));
            } else if kind.is_file() {
                if files.len() > MAX_SESSION_FILES {
                    return Err(TranscriptError::Invalid(format!(
                        "session {id} has more than {MAX_SESSION_FILES} files under {}",
                        folder.join(id).display()
                    )));
                }
                let bytes = std::fs::read(entry.path()).map_err(io_error(&entry.path()))?;
                files.push(SessionFile { path: rel, bytes });
            }
        }
    }
    files.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(Some(files))
}

/// What the ledger holds of one file of a session.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct StoredFile {
    /// `<id>.jsonl`, or a path under `<id>/`.
    pub path: String,
    /// Bytes stored.
    pub length: i64,
    /// SHA-256 of those bytes.
    #[serde(skip)]
    pub sha256: Vec<u8>,
    /// Pieces it is stored in (one per store that appended to it).
    pub pieces: i32,
}

/// What one store sends for one file: the bytes new since the stored copy, or the whole file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileChange {
    /// The file.
    pub path: String,
    /// The length of the stored copy these bytes follow; 0 replaces the file.
    pub base_length: i64,
    /// The SHA-256 of the stored copy these bytes follow (empty when replacing).
    pub base_sha256: Vec<u8>,
    /// The file's length after this change.
    pub length: i64,
    /// The file's SHA-256 after this change.
    pub sha256: Vec<u8>,
    /// The new bytes, compressed ([`compress`]).
    pub data: Vec<u8>,
    /// How many bytes the new part has before compression.
    pub new_bytes: i64,
}

/// What a store must send so the ledger holds `local`: for each file, nothing when the stored copy
/// is the same; the new bytes when the file only grew (the transcript is append-only in practice);
/// the whole file when it no longer starts with what was stored, when it is new, or when its stored
/// copy has [`MAX_PIECES`] pieces already.
pub fn changes(local: &[SessionFile], stored: &[StoredFile]) -> Vec<FileChange> {
    local
        .iter()
        .filter_map(|file| {
            let len = file.bytes.len() as i64;
            let sha = file.sha256();
            let known = stored.iter().find(|s| s.path == file.path);
            let base = match known {
                Some(s) if s.length == len && s.sha256 == sha => return None,
                Some(s)
                    if s.length > 0
                        && s.length < len
                        && s.pieces < MAX_PIECES
                        && sha256(&file.bytes[..s.length as usize]) == s.sha256 =>
                {
                    Some(s)
                }
                _ => None,
            };
            let from = base.map_or(0, |s| s.length as usize);
            let new = &file.bytes[from..];
            Some(FileChange {
                path: file.path.clone(),
                base_length: from as i64,
                base_sha256: base.map(|s| s.sha256.clone()).unwrap_or_default(),
                length: len,
                sha256: sha,
                data: compress(new),
                new_bytes: new.len() as i64,
            })
        })
        .collect()
}

/// What the ledger holds of a session's files once `changes` are stored on top of `stored`: each
/// changed file with its new length and hash, one piece more when appended to, one piece when
/// replaced.
pub fn stored_after(stored: &[StoredFile], changes: &[FileChange]) -> Vec<StoredFile> {
    let mut files = stored.to_vec();
    for change in changes {
        let pieces = match files.iter().find(|f| f.path == change.path) {
            Some(f) if change.base_length > 0 => f.pieces + 1,
            _ => 1,
        };
        files.retain(|f| f.path != change.path);
        files.push(StoredFile {
            path: change.path.clone(),
            length: change.length,
            sha256: change.sha256.clone(),
            pieces,
        });
    }
    files
}

/// Whether the local copy of a stored file is the stored one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LocalState {
    /// Same length and hash: nothing to do.
    Current,
    /// No such file here.
    Missing,
    /// Here, but not what the ledger holds.
    Stale,
}

impl LocalState {
    /// The state's name in logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            LocalState::Current => "current",
            LocalState::Missing => "missing",
            LocalState::Stale => "stale",
        }
    }
}

/// Compares each stored file with its copy under the project folder `folder`.
pub fn local_state(
    folder: &Path,
    stored: &[StoredFile],
) -> Result<Vec<LocalState>, TranscriptError> {
    stored
        .iter()
        .map(|s| {
            let path = folder.join(&s.path);
            match std::fs::metadata(&path) {
                Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(LocalState::Missing),
                Err(e) => Err(io_error(&path)(e)),
                Ok(meta) if !meta.is_file() || meta.len() != s.length as u64 => {
                    Ok(LocalState::Stale)
                }
                Ok(_) => {
                    let bytes = std::fs::read(&path).map_err(io_error(&path))?;
                    Ok(if sha256(&bytes) == s.sha256 {
                        LocalState::Current
                    } else {
                        LocalState::Stale
                    })
                }
            }
        })
        .collect()
}

/// Writes session `id`'s file `path` under the project folder `folder` atomically: into a
/// temporary file beside it, then renamed over it, so a CLI never reads half a transcript.
pub fn write_file(
    folder: &Path,
    id: &str,
    path: &str,
    bytes: &[u8],
) -> Result<(), TranscriptError> {
    check_file_path(id, path)?;
    let target = folder.join(path);
    let dir = target.parent().expect("a file path has a parent");
    std::fs::create_dir_all(dir).map_err(io_error(dir))?;
    let mut tmp = tempfile_in(dir).map_err(io_error(dir))?;
    tmp.1.write_all(bytes).map_err(io_error(&tmp.0))?;
    tmp.1.sync_all().map_err(io_error(&tmp.0))?;
    std::fs::rename(&tmp.0, &target).map_err(|e| {
        let _ = std::fs::remove_file(&tmp.0);
        io_error(&target)(e)
    })
}

/// A new file in `dir` with a name no other writer uses.
fn tempfile_in(dir: &Path) -> io::Result<(PathBuf, std::fs::File)> {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    for n in 0..100u32 {
        let path = dir.join(format!(".baton-restore-{}-{nanos}-{n}", std::process::id()));
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
        {
            Ok(f) => return Ok((path, f)),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
    Err(io::Error::new(
        io::ErrorKind::AlreadyExists,
        "no free temporary name",
    ))
}

thread_local! {
    /// One compressor per thread, reset for each use: making one allocates and clears several
    /// hundred kilobytes of state, which cost more than compressing a run's few new kilobytes.
    static COMPRESSOR: std::cell::RefCell<flate2::Compress> =
        std::cell::RefCell::new(flate2::Compress::new(flate2::Compression::fast(), true));
}

/// Compresses stored bytes (zlib).
pub fn compress(bytes: &[u8]) -> Vec<u8> {
    COMPRESSOR.with(|c| {
        let mut c = c.borrow_mut();
        c.reset();
        let mut out = Vec::with_capacity(bytes.len() / 2 + 64);
        loop {
            let done = c.total_in() as usize;
            let status = c
                .compress_vec(&bytes[done..], &mut out, flate2::FlushCompress::Finish)
                .expect("compressing in memory cannot fail");
            if status == flate2::Status::StreamEnd {
                return out;
            }
            out.reserve(out.capacity().max(64));
        }
    })
}

/// Joins a stored file's pieces back into its bytes and checks them against its length and hash.
pub fn assemble(file: &StoredFile, pieces: &[Vec<u8>]) -> Result<Vec<u8>, TranscriptError> {
    let limit = u64::try_from(file.length).unwrap_or(0);
    let mut out = Vec::with_capacity(limit as usize);
    for piece in pieces {
        flate2::read::ZlibDecoder::new(piece.as_slice())
            // One byte over the length shows a piece that holds more than it should.
            .take(limit + 1 - (out.len() as u64).min(limit))
            .read_to_end(&mut out)
            .map_err(|e| TranscriptError::Corrupt(format!("{}: {e}", file.path)))?;
    }
    if out.len() as i64 != file.length || sha256(&out) != file.sha256 {
        return Err(TranscriptError::Corrupt(format!(
            "{}: the stored pieces give {} bytes that do not match the {} bytes and hash stored",
            file.path,
            out.len(),
            file.length
        )));
    }
    Ok(out)
}

#[cfg(test)]
mod tests;
