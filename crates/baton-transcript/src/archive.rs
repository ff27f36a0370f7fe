//! A session as one file a person can move: a `.tar.gz` of its files (what `baton session export`
//! writes), or a bare transcript `.jsonl` (what a backend that ran the CLI itself may have).

use std::io::{Read, Write};

use crate::{SessionFile, TranscriptError, check_file_path, check_session_id};

/// Writes `files` as a gzip-compressed tar archive, each at its path relative to the CLI's project
/// folder (`<id>.jsonl`, `<id>/tool-results/...`), so unpacking it into a project folder restores
/// the session.
pub fn write_tar_gz(files: &[SessionFile], out: impl Write) -> std::io::Result<()> {
    let gz = flate2::write::GzEncoder::new(out, flate2::Compression::default());
    let mut tar = tar::Builder::new(gz);
    for file in files {
        let mut header = tar::Header::new_gnu();
        header.set_size(file.bytes.len() as u64);
        header.set_mode(0o600);
        header.set_mtime(0);
        header.set_entry_type(tar::EntryType::Regular);
        tar.append_data(&mut header, &file.path, file.bytes.as_slice())?;
    }
    tar.into_inner()?.finish()?.flush()
}

/// A session read from an archive or a transcript file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Imported {
    /// The session's id.
    pub session_id: String,
    /// Its files, the transcript first.
    pub files: Vec<SessionFile>,
}

/// Reads a session from `bytes`: a `.tar.gz` as [`write_tar_gz`] writes it, or a bare `.jsonl`
/// transcript whose id is the `sessionId` its lines carry or else its file name (`file_name`, when
/// that is `<id>.jsonl`). Refuses anything else, paths that are not the session's, files
/// that together pass `max_bytes`, and a transcript whose lines are not JSON objects.
pub fn read_import(
    file_name: Option<&str>,
    bytes: &[u8],
    max_bytes: u64,
) -> Result<Imported, TranscriptError> {
    let imported = if bytes.starts_with(&[0x1f, 0x8b]) {
        read_tar_gz(bytes, max_bytes)?
    } else {
        if bytes.len() as u64 > max_bytes {
            return Err(too_big(max_bytes));
        }
        // The lines' own id wins; a file name is only a hint (it may be `export.jsonl`).
        let named = || {
            file_name
                .and_then(|n| n.rsplit('/').next())
                .and_then(|n| n.strip_suffix(".jsonl"))
                .filter(|id| check_session_id(id).is_ok())
                .map(str::to_string)
        };
        let id = line_session_id(bytes).or_else(named).ok_or_else(|| {
            TranscriptError::Invalid(
                "the transcript names no session: call the file <session-id>.jsonl".into(),
            )
        })?;
        Imported {
            files: vec![SessionFile {
                path: format!("{id}.jsonl"),
                bytes: bytes.to_vec(),
            }],
            session_id: id,
        }
    };
    check_transcript(&imported)?;
    Ok(imported)
}

fn too_big(max_bytes: u64) -> TranscriptError {
    TranscriptError::Invalid(format!(
        "the session's files are larger than {max_bytes} bytes (BATON_TRANSCRIPT_MAX_BYTES)"
    ))
}

fn read_tar_gz(bytes: &[u8], max_bytes: u64) -> Result<Imported, TranscriptError> {
    let bad = |e: std::io::Error| TranscriptError::Invalid(format!("not a readable .tar.gz: {e}"));
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(bytes));
    let mut files = Vec::new();
    let mut total = 0u64;
    for entry in archive.entries().map_err(bad)? {
        let mut entry = entry.map_err(bad)?;
        let kind = entry.header().entry_type();
        let path = entry.path().map_err(bad)?.to_string_lossy().into_owned();
        let path = path.trim_start_matches("./").to_string();
        if kind.is_dir() || path.is_empty() {
            continue;
        }
        if !kind.is_file() {
            return Err(TranscriptError::Invalid(format!(
                "{path:?} in the archive is not a regular file"
            )));
        }
        total = total.saturating_add(entry.size());
        if total > max_bytes {
            return Err(too_big(max_bytes));
        }
        let mut content = Vec::new();
        entry.read_to_end(&mut content).map_err(bad)?;
        files.push(SessionFile {
            path,
            bytes: content,
        });
    }
    let transcripts: Vec<&str> = files
        .iter()
        .filter(|f| !f.path.contains('/'))
        .filter_map(|f| f.path.strip_suffix(".jsonl"))
        .collect();
    let [id] = transcripts[..] else {
        return Err(TranscriptError::Invalid(format!(
            "the archive must hold exactly one <session-id>.jsonl at its top, not {}",
            transcripts.len()
        )));
    };
    let id = id.to_string();
    for f in &files {
        check_file_path(&id, &f.path)?;
    }
    files.sort_by_key(|f| (f.path != format!("{id}.jsonl"), f.path.clone()));
    Ok(Imported {
        session_id: id,
        files,
    })
}

/// The first `sessionId` the transcript's lines carry.
fn line_session_id(bytes: &[u8]) -> Option<String> {
    String::from_utf8_lossy(bytes).lines().find_map(|line| {
        let v: serde_json::Value = serde_json::from_str(line).ok()?;
        let id = v.get("sessionId")?.as_str()?.to_string();
        check_session_id(&id).ok().map(|()| id)
    })
}

/// A transcript is lines of JSON objects; every `sessionId` in them is the session's.
fn check_transcript(imported: &Imported) -> Result<(), TranscriptError> {
    let id = &imported.session_id;
    check_session_id(id)?;
    let transcript = imported
        .files
        .iter()
        .find(|f| f.path == format!("{id}.jsonl"))
        .ok_or_else(|| TranscriptError::Invalid(format!("no transcript {id}.jsonl")))?;
    let text = std::str::from_utf8(&transcript.bytes)
        .map_err(|_| TranscriptError::Invalid(format!("{id}.jsonl is not UTF-8 text")))?;
    for (n, line) in text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        let v: serde_json::Value = serde_json::from_str(line).map_err(|e| {
            TranscriptError::Invalid(format!("{id}.jsonl line {}: not JSON: {e}", n + 1))
        })?;
        if !v.is_object() {
            return Err(TranscriptError::Invalid(format!(
                "{id}.jsonl line {}: not a JSON object",
                n + 1
            )));
        }
        if let Some(other) = v.get("sessionId").and_then(|s| s.as_str())
            && other != id
        {
            return Err(TranscriptError::Invalid(format!(
                "{id}.jsonl line {} belongs to session {other}",
                n + 1
            )));
        }
    }
    Ok(())
}
