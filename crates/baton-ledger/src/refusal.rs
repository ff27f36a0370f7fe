//! The refusals the ledger's SQL functions raise, as Rust reads them. Each is a `RAISE EXCEPTION`
//! with a SQLSTATE of Baton's own class `BT` (see `migrations/`), its reason as the message, and
//! what the caller needs in the detail and hint.

/// `baton_claim_build`: the job's user does not own the project.
pub(crate) const NOT_OWNER: &str = "BT403";
/// `baton_fork_source` (and the claim of a thread's job): nothing to fork of that name.
pub(crate) const NOT_FOUND: &str = "BT404";
/// `baton_claim_build`: the build id belongs to another build.
pub(crate) const BUILD_ID_REUSED: &str = "BT409";
/// `baton_record_run` and `baton_store_transcript`: the record was refused; the reason is one of
/// the `reason` constants below.
pub(crate) const RECORD_REFUSED: &str = "BT412";

/// The reasons of [`RECORD_REFUSED`].
pub(crate) mod reason {
    /// The run is recorded already (a replay).
    pub(crate) const ALREADY_RECORDED: &str = "already_recorded";
    /// The project is not in the ledger.
    pub(crate) const UNKNOWN_PROJECT: &str = "unknown_project";
    /// The build is not in the ledger.
    pub(crate) const UNKNOWN_BUILD: &str = "unknown_build";
    /// The thread the run belongs to is not in the ledger (deleted while the run went on).
    pub(crate) const UNKNOWN_THREAD: &str = "unknown_thread";
    /// [`super::NOT_OWNER`] of a thread rather than of the project.
    pub(crate) const NOT_THREAD_OWNER: &str = "not_thread_owner";
    /// A newer claim owns the build; the detail is its fencing token.
    pub(crate) const FENCED: &str = "fenced";
    /// The run resumed a session that is no longer the project's newest; the hint is the newest.
    pub(crate) const STALE: &str = "stale";
    /// The stored copy of a session file changed since the worker read it; the detail is the file.
    pub(crate) const TRANSCRIPT_CONFLICT: &str = "transcript_conflict";
    /// The session's files are stored under another project.
    pub(crate) const TRANSCRIPT_OF_OTHER_PROJECT: &str = "transcript_of_other_project";
}

/// One refusal raised by a ledger function.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Refusal<'a> {
    /// The SQLSTATE: one of the constants above.
    pub(crate) code: &'a str,
    /// The reason.
    pub(crate) reason: &'a str,
    /// What the reason says it holds (a fencing token, a file), or empty.
    pub(crate) detail: &'a str,
    /// What the reason says it holds (the project's newest session), or empty.
    pub(crate) hint: &'a str,
}

impl<'a> Refusal<'a> {
    /// The refusal `e` carries, when it is one of Baton's (SQLSTATE class `BT`).
    pub(crate) fn of(e: &'a sqlx::Error) -> Option<Refusal<'a>> {
        let db = e.as_database_error()?;
        let pg = db.try_downcast_ref::<sqlx::postgres::PgDatabaseError>()?;
        let code = pg.code();
        code.starts_with("BT").then(|| Refusal {
            code,
            reason: pg.message(),
            detail: pg.detail().unwrap_or(""),
            hint: pg.hint().unwrap_or(""),
        })
    }
}
