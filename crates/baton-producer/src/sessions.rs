//! What the ledger holds of a session, for `baton session show|export` and `baton serve`.

use baton_ledger::{Ledger, LedgerError};

/// What the ledger holds of `session`: its stored files and their sizes, the runs that left it,
/// whether it is incomplete and why, and its first and last messages; `None` when it holds no
/// files of it.
pub async fn summary(
    ledger: &Ledger,
    session: &str,
) -> Result<Option<serde_json::Value>, LedgerError> {
    let Some(stored) = ledger.stored_session(session).await? else {
        return Ok(None);
    };
    let files = ledger.stored_files(session, None).await?;
    let runs = ledger.session_runs(session).await?;
    let stats = ledger.transcript_stats(session).await?;
    let messages = files
        .first()
        .map(|t| baton_transcript::conversation::messages(&t.bytes))
        .unwrap_or_default();
    let mut v = serde_json::to_value(&stored).expect("a stored session serialises");
    v["runs"] = runs.into();
    v["bytes"] = stats.bytes.into();
    v["stored_bytes"] = stats.stored_bytes.into();
    v["pieces"] = stats.pieces.into();
    v["updated_at"] = serde_json::to_value(stats.updated_at).expect("a time serialises");
    v["messages"] = messages.len().into();
    v["first_message"] = serde_json::to_value(messages.first()).expect("a message serialises");
    v["last_message"] = serde_json::to_value(messages.last()).expect("a message serialises");
    Ok(Some(v))
}

/// A session's stored files as a `.tar.gz`, or why there is none.
pub enum Export {
    /// The archive, and how many files and bytes it holds.
    Archive {
        /// The `.tar.gz`.
        bytes: Vec<u8>,
        /// Files in it.
        files: usize,
        /// Their bytes, uncompressed.
        size: usize,
    },
    /// The ledger holds no files of the session.
    Unknown,
    /// The ledger holds no whole copy of it, for this reason.
    Incomplete(String),
}

/// `session`'s stored files as a `.tar.gz`, as `baton session import` reads it back.
pub async fn export(ledger: &Ledger, session: &str) -> Result<Export, LedgerError> {
    let Some(stored) = ledger.stored_session(session).await? else {
        return Ok(Export::Unknown);
    };
    if let Some(why) = stored.incomplete {
        return Ok(Export::Incomplete(why));
    }
    let files = ledger.stored_files(session, None).await?;
    let mut bytes = Vec::new();
    baton_transcript::archive::write_tar_gz(&files, &mut bytes)
        .map_err(|e| LedgerError::Unexpected(format!("cannot archive session {session}: {e}")))?;
    Ok(Export::Archive {
        bytes,
        files: files.len(),
        size: files.iter().map(|f| f.bytes.len()).sum(),
    })
}
