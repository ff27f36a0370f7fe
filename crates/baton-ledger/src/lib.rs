//! The ledger: Postgres as the single source of truth for every project's Claude session chain.
//!
//! Every agent run is recorded in one transaction that locks the project row: the project's and the
//! version's session ids, an audit row in `session_transitions` and a usage row in
//! `project_ai_session_metrics`. Recording is idempotent on (build, step) and fenced: a write under an
//! older claim of the build than the newest is refused, so a stalled worker cannot overwrite its
//! successor.

use baton_core::policy::{FreshReason, ProjectSessions};
use baton_core::{BuildId, BuildStatus, Fence, Job, SessionId, Source, Step};
use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::pool::PoolConnection;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions, Postgres};

use refusal::{Refusal, reason};

/// `url` with its database name replaced by `name`, keeping host, credentials and query
/// (`postgres://u@h:5432/baton?sslmode=require` with `x` gives `postgres://u@h:5432/x?sslmode=require`).
pub fn url_with_database(url: &str, name: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let scheme_end = base.find("://").map(|i| i + 3).unwrap_or(0);
    let host = match base[scheme_end..].find('/') {
        Some(i) => &base[..scheme_end + i],
        None => base,
    };
    match query {
        Some(q) => format!("{host}/{name}?{q}"),
        None => format!("{host}/{name}"),
    }
}

/// The Postgres schema Baton's tables and functions live in unless `BATON_DB_SCHEMA` names another,
/// so that Baton can share a database with the application (which may have its own `projects`).
pub const DEFAULT_SCHEMA: &str = baton_core::connection::DEFAULT_DB_SCHEMA;

/// Checks a schema name: a plain lower-case SQL identifier (letters, digits and `_`, not starting
/// with a digit, at most 63 bytes), so it needs no quoting wherever Postgres takes it.
pub fn check_schema(name: &str) -> Result<(), LedgerError> {
    let plain = !name.is_empty()
        && name.len() <= 63
        && !name.starts_with(|c: char| c.is_ascii_digit())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if plain {
        Ok(())
    } else {
        Err(LedgerError::InvalidSchema(name.to_string()))
    }
}

/// The migrations in `migrations/`, embedded so `baton migrate` and the worker need no files.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../../migrations");

/// What can go wrong in the ledger.
#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    /// The database refused or failed a query.
    #[error(transparent)]
    Db(#[from] sqlx::Error),
    /// `BATON_DB_SCHEMA` is not a plain identifier.
    #[error(
        "BATON_DB_SCHEMA={0:?} is not a schema name Baton accepts: lower-case letters, digits and `_`, not starting with a digit, at most 63 bytes"
    )]
    InvalidSchema(String),
    /// A migration failed.
    #[error(transparent)]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// A newer claim of the build exists; the caller's work is stale and must stop.
    #[error(
        "build {build_id} was claimed again (token {current}); this worker's token {yours} is stale"
    )]
    Fenced {
        /// The build.
        build_id: String,
        /// The caller's token.
        yours: Fence,
        /// The newest token.
        current: Fence,
    },
    /// The job's user does not own the project it names.
    #[error("project {project_id} belongs to another user than {user_id}")]
    NotOwner {
        /// The project.
        project_id: String,
        /// The job's user.
        user_id: String,
    },
    /// The job names a build id the ledger holds for another build (another project, user,
    /// version, kind or payload). Nothing of that build, its rows or its project was touched.
    #[error("build id {0} belongs to another build; use a new id for a new build")]
    BuildIdReused(String),
    /// The session is in the ledger already (an import of a session Baton knows).
    #[error("session {0} is in the ledger already")]
    SessionKnown(String),
    /// The build is not in the ledger.
    #[error("no build {0} in the ledger")]
    UnknownBuild(String),
    /// The project is not in the ledger.
    #[error("no project {0} in the ledger")]
    UnknownProject(String),
    /// The thread is not in the ledger (never made, or deleted).
    #[error("project {project_id} has no thread {thread_id}")]
    UnknownThread {
        /// The project.
        project_id: String,
        /// The thread.
        thread_id: String,
    },
    /// The job's user does not own the thread it names or forks.
    #[error("a thread named by the job belongs to another user than {user_id}")]
    NotThreadOwner {
        /// The job's user.
        user_id: String,
    },
    /// What a new thread forks from names nothing of the project that has a session.
    #[error(
        "fork_from {fork_from:?} is neither main with a session, nor a thread, nor a session of project {project_id}"
    )]
    ForkSourceUnknown {
        /// The project.
        project_id: String,
        /// What the job named.
        fork_from: String,
    },
    /// The run resumed a session that is no longer the project's newest: another operation on the
    /// project recorded in between. Recording it would fork the chain.
    #[error(
        "project {project_id} moved on to session {actual:?} while this run resumed {expected}"
    )]
    StaleSession {
        /// The project.
        project_id: String,
        /// The session the run resumed.
        expected: String,
        /// The project's newest session now.
        actual: Option<String>,
    },
    /// A store of a session's files found the stored copy changed since the worker read it; the
    /// worker sends the files whole instead.
    #[error("the stored copy of {path} of session {session_id} changed while the run went on")]
    TranscriptConflict {
        /// The session.
        session_id: String,
        /// The file.
        path: String,
    },
    /// The database answered something this version does not understand (a schema from another
    /// version of Baton).
    #[error("unexpected answer from the database: {0}")]
    Unexpected(String),
}

impl LedgerError {
    /// Whether the job that hit this error can never succeed as it is (dead-letter it).
    pub fn is_terminal_for_job(&self) -> bool {
        matches!(
            self,
            LedgerError::NotOwner { .. }
                | LedgerError::BuildIdReused(_)
                | LedgerError::NotThreadOwner { .. }
                | LedgerError::ForkSourceUnknown { .. }
        )
    }
}

/// A worker's hold on a build, returned by [`Ledger::claim_build`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    /// The fencing token every write of this claim carries.
    pub fence: Fence,
    /// How many times the build has been claimed, this claim included.
    pub attempt: i32,
    /// The build had already finished; nothing is to be run.
    pub finished: Option<BuildStatus>,
    /// What the ledger knows of the project's sessions, for the resume policy.
    pub project: ProjectSessions,
    /// The runs of this build already recorded, in order.
    pub recorded: Vec<RecordedRun>,
    /// Someone asked to cancel the build while it ran: the claim's worker ends it unrun.
    pub cancel_requested: bool,
}

/// A run of a build that the ledger holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RecordedRun {
    /// The step.
    pub step: Step,
    /// The session the run resumed.
    pub old_session_id: Option<SessionId>,
    /// The session the run left.
    pub new_session_id: SessionId,
}

/// One agent run to record.
#[derive(Debug, Clone)]
pub struct RunRecord<'a> {
    /// The job the run belongs to.
    pub job: &'a Job,
    /// The claim's fencing token.
    pub fence: Fence,
    /// The step.
    pub step: Step,
    /// The source to record instead of the step's own (a thread's first run, a fork).
    pub source: Option<Source>,
    /// The session the run resumed, if any.
    pub old_session_id: Option<&'a str>,
    /// The session the run reported.
    pub new_session_id: &'a str,
    /// Usage and timing.
    pub metrics: RunMetrics,
    /// Why this run started a fresh session, when it did.
    pub fresh_reason: Option<FreshReason>,
    /// What the job survived in this run, e.g. a compaction that did not happen.
    pub note: Option<&'a str>,
    /// This is the job's last run: a written record also marks the build completed, in the same
    /// transaction (an already recorded run does not; end the build with [`Ledger::finish_build`]).
    pub completes: bool,
    /// What changed in the files of the session the run left, stored with the record.
    pub transcript: Option<&'a TranscriptWrite>,
    /// What the run answered, stored with the record.
    pub result: Option<&'a RunResult>,
}

/// Usage of one run, as the CLI reported it.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct RunMetrics {
    /// Uncached input tokens.
    pub input_tokens: i64,
    /// Output tokens.
    pub output_tokens: i64,
    /// Cached input tokens read.
    pub cache_read_input_tokens: i64,
    /// Cached input tokens written.
    pub cache_creation_input_tokens: i64,
    /// `total_cost_usd`.
    pub cost_usd: f64,
    /// `duration_ms`.
    pub duration_ms: i64,
    /// `num_turns`.
    pub num_turns: i32,
}

/// What [`Ledger::record_run`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recorded {
    /// The run was written.
    Written,
    /// This run of this build was already recorded; nothing was written.
    AlreadyRecorded,
}

/// One link of a project's session chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Transition {
    /// Order of recording.
    pub id: i64,
    /// The version the run belonged to.
    pub version_id: Option<String>,
    /// The build the run belonged to.
    pub build_id: Option<BuildId>,
    /// The step.
    pub step: Option<Step>,
    /// The session resumed.
    pub old_session_id: Option<SessionId>,
    /// The session left; none for a reset or a resume fallback, which end a session.
    pub new_session_id: Option<SessionId>,
    /// Why it was recorded.
    pub source: Source,
    /// Why the run started fresh, when it did.
    pub fresh_reason: Option<String>,
    /// What the job survived in this run, e.g. a compaction that did not happen.
    pub note: Option<String>,
    /// When.
    pub created_at: DateTime<Utc>,
}

/// How long a connection may sit unused (in the pool or kept by the hot path) before it is checked
/// with a round trip before its next use.
const IDLE_BEFORE_PING: std::time::Duration = std::time::Duration::from_secs(1);

/// Most connections the hot path keeps out of the pool between calls (see [`Kept`]); never more
/// than half the pool, so the pool always has connections for everything else.
const KEEP_MAX: usize = 5;

/// How long a kept connection may go unused before it goes back to the pool.
const KEEP_IDLE: std::time::Duration = std::time::Duration::from_secs(60);

/// How long the hot path keeps using one connection before it goes back to the pool, whose own
/// rules (its maximum lifetime) then decide whether it is replaced.
const KEEP_LIFETIME: std::time::Duration = std::time::Duration::from_secs(30 * 60);

/// The ledger, over a connection pool. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Ledger {
    pool: PgPool,
    kept: std::sync::Arc<Kept>,
    /// The schema every connection works in, when the ledger set it (see [`Ledger::connect`]).
    schema: Option<String>,
    /// The job stream whose builds this ledger records and requeues (see [`Ledger::for_stream`]).
    stream: Option<String>,
}

/// Connections the hot path (claims and records) keeps between calls instead of handing them back
/// to the pool: sqlx checks every connection it takes back with a round trip to Postgres, which
/// made each claim and record cost two round trips instead of one.
#[derive(Debug, Default)]
struct Kept {
    idle: std::sync::Mutex<Vec<HotConnection>>,
}

/// A connection of the hot path, with when it was first kept and when it was last used.
#[derive(Debug)]
pub(crate) struct HotConnection {
    pub(crate) conn: PoolConnection<Postgres>,
    first_kept: std::time::Instant,
    last_used: std::time::Instant,
}

impl Drop for Kept {
    fn drop(&mut self) {
        // Handing a connection back to the pool spawns a task, which panics once the runtime is
        // gone (a ledger dropped after it); closing them here needs no runtime, and the pool opens
        // replacements when it needs them.
        for hot in self.lock().drain(..) {
            drop(hot.conn.detach());
        }
    }
}

impl Kept {
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<HotConnection>> {
        // The list stays consistent whatever a panicking holder did: it only pushes and pops.
        self.idle
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Ledger {
    /// Connects to `database_url`, working in `schema` (see [`DEFAULT_SCHEMA`]): every connection
    /// starts with it as its only `search_path`, so each table and function Baton creates or uses
    /// is that schema's, whatever else the database holds.
    pub async fn connect(database_url: &str, schema: &str) -> Result<Ledger, LedgerError> {
        check_schema(schema)?;
        let options: PgConnectOptions = database_url.parse()?;
        let options = options.options([("search_path", schema)]);
        let pool = PgPoolOptions::new()
            .max_connections(10)
            .acquire_timeout(std::time::Duration::from_secs(10))
            // A round trip per acquire doubled a busy worker's Postgres round trips; a connection
            // in steady use shows its failure on the next query anyway, so only one that sat idle
            // (where restarts and idle timeouts bite) is checked before it is handed out.
            .test_before_acquire(false)
            .before_acquire(|conn, meta| {
                Box::pin(async move {
                    if meta.idle_for >= IDLE_BEFORE_PING {
                        sqlx::Connection::ping(conn).await?;
                    }
                    Ok(true)
                })
            })
            .connect_with(options)
            .await?;
        Ok(Ledger {
            schema: Some(schema.to_string()),
            ..Ledger::from_pool(pool)
        })
    }

    /// A ledger over an existing pool, working in whatever schema its connections use.
    pub fn from_pool(pool: PgPool) -> Ledger {
        Ledger {
            pool,
            kept: Default::default(),
            schema: None,
            stream: None,
        }
    }

    /// The same ledger, noting `stream` as the job stream of the builds it records, so that
    /// `baton requeue` on one stream never puts another stream's build on it.
    pub fn for_stream(mut self, stream: &str) -> Ledger {
        self.stream = Some(stream.to_string());
        self
    }

    /// A connection for the hot path: the most recently kept one, checked with a round trip only
    /// if it sat unused long enough for a restart or an idle timeout to have broken it; otherwise
    /// one from the pool.
    pub(crate) async fn hot_connection(&self) -> Result<HotConnection, LedgerError> {
        loop {
            let Some(mut hot) = self.kept.lock().pop() else {
                let now = std::time::Instant::now();
                return Ok(HotConnection {
                    conn: self.pool.acquire().await?,
                    first_kept: now,
                    last_used: now,
                });
            };
            if hot.last_used.elapsed() < IDLE_BEFORE_PING
                || sqlx::Connection::ping(&mut *hot.conn).await.is_ok()
            {
                return Ok(hot);
            }
            // Broken: dropping it lets the pool open a replacement.
        }
    }

    /// Keeps a hot-path connection that just answered a call, for the next call. Connections past
    /// [`KEEP_MAX`], unused for [`KEEP_IDLE`] or kept for [`KEEP_LIFETIME`] go back to the pool.
    pub(crate) fn keep(&self, mut hot: HotConnection) {
        let now = std::time::Instant::now();
        hot.last_used = now;
        let mut kept = self.kept.lock();
        // Least recently used first: those that sat too long return to the pool (dropped after
        // the lock).
        let stale: Vec<_> = {
            let fresh_from = kept
                .iter()
                .position(|k| now.duration_since(k.last_used) < KEEP_IDLE)
                .unwrap_or(kept.len());
            kept.drain(..fresh_from).collect()
        };
        let room = KEEP_MAX.min(self.pool.options().get_max_connections() as usize / 2);
        let overflow = if kept.len() < room && now.duration_since(hot.first_kept) < KEEP_LIFETIME {
            kept.push(hot);
            None
        } else {
            Some(hot)
        };
        drop(kept);
        drop(stale);
        drop(overflow);
    }

    /// The pool, for health checks.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Checks that Postgres answers.
    pub async fn ping(&self) -> Result<(), LedgerError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    /// Creates the ledger's schema if it is missing and applies every pending migration in it
    /// (the migrations' own record, `_sqlx_migrations`, included).
    pub async fn migrate(&self) -> Result<(), LedgerError> {
        if let Some(schema) = &self.schema {
            // Checked by `connect`: a plain identifier, safe to splice.
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "CREATE SCHEMA IF NOT EXISTS {schema}"
            )))
            .execute(&self.pool)
            .await?;
        }
        MIGRATOR.run(&self.pool).await?;
        Ok(())
    }

    /// Records a build as queued (by the producer). Does nothing when the same build is already
    /// known (a retried enqueue); refused, changing nothing, when the id is another build's.
    pub async fn record_queued(
        &self,
        job: &Job,
        stream_id: Option<&str>,
    ) -> Result<(), LedgerError> {
        // The existing row is read in the same statement: it cannot see the insert, which makes
        // `inserted` the answer when the id is new.
        let same = sqlx::query_scalar!(
            r#"WITH inserted AS (
                   INSERT INTO builds (build_id, project_id, version_id, user_id, kind, status, stream_id, payload, enqueued_at, stream)
                   VALUES ($1, $2, $3, $4, $5, 'queued', $6, $7, $8, $9)
                   ON CONFLICT (build_id) DO NOTHING
                   RETURNING 1)
               SELECT EXISTS (SELECT 1 FROM inserted)
                   OR EXISTS (SELECT 1 FROM builds b
                              WHERE b.build_id = $1 AND b.project_id = $2 AND b.version_id = $3
                                AND b.user_id = $4 AND b.kind = $5
                                AND (b.payload IS NULL OR b.payload - 'enqueued_at' = $7::jsonb - 'enqueued_at'))
                   AS "same!""#,
            job.build_id.as_str(),
            job.project_id.as_str(),
            job.version_id,
            job.user_id,
            job.kind.as_str(),
            stream_id,
            serde_json::to_value(job).expect("a job serialises"),
            job.enqueued_at,
            self.stream.as_deref(),
        )
        .fetch_one(&self.pool)
        .await?;
        if !same {
            return Err(LedgerError::BuildIdReused(job.build_id.to_string()));
        }
        Ok(())
    }

    /// Takes a build for a worker: creates the project and version on first sight, checks that the
    /// job's user owns the project, raises the build's fencing token and marks it running.
    pub async fn claim_build(
        &self,
        job: &Job,
        stream_id: Option<&str>,
    ) -> Result<Claim, LedgerError> {
        // One function call, one round trip: see migrations/*_claim.sql.
        let mut conn = self.hot_connection().await?;
        let row = sqlx::query!(
            r#"SELECT fence AS "fence!", attempt AS "attempt!", status AS "status!",
                      last_session, last_resumable AS "last_resumable!", fresh_start_at,
                      ops AS "ops!", reset AS "reset!", previous_in_chain AS "previous_in_chain!",
                      recorded_steps AS "recorded_steps!: Vec<String>",
                      recorded_old AS "recorded_old!: Vec<Option<String>>",
                      recorded_new AS "recorded_new!: Vec<String>",
                      cancel_requested AS "cancel_requested!", fork_session
               FROM baton_claim_build(
                   p_build_id => $1, p_project_id => $2, p_version_id => $3, p_user_id => $4,
                   p_kind => $5, p_stream_id => $6, p_payload => $7, p_enqueued_at => $8,
                   p_previous_session_id => $9, p_stream => $10, p_thread_id => $11,
                   p_fork_from => $12)"#,
            job.build_id.as_str(),
            job.project_id.as_str(),
            job.version_id,
            job.user_id,
            job.kind.as_str(),
            stream_id,
            serde_json::to_value(job).expect("a job serialises"),
            job.enqueued_at,
            job.previous_session_id.as_deref(),
            self.stream.as_deref(),
            job.thread_id.as_deref(),
            job.fork_from.as_deref(),
        )
        .fetch_one(&mut *conn.conn)
        .await
        .map_err(|e| threads::claim_refusal(e, job))?;
        self.keep(conn);
        let recorded = row
            .recorded_steps
            .into_iter()
            .zip(row.recorded_old)
            .zip(row.recorded_new)
            .map(|((step, old_session_id), new_session_id)| {
                Ok(RecordedRun {
                    step: step_named(&step)?,
                    old_session_id: old_session_id.map(SessionId::from),
                    new_session_id: new_session_id.into(),
                })
            })
            .collect::<Result<_, LedgerError>>()?;
        Ok(Claim {
            fence: Fence(row.fence),
            attempt: row.attempt,
            finished: BuildStatus::from_name(&row.status).filter(|s| s.is_final()),
            project: ProjectSessions {
                owner: Some(job.user_id.clone()),
                last_session: row.last_session.map(SessionId::from),
                last_resumable: row.last_resumable,
                fresh_start_at: row.fresh_start_at,
                ops_since_fresh: u32::try_from(row.ops).unwrap_or(u32::MAX),
                reset: row.reset,
                previous_in_chain: job
                    .previous_session_id
                    .as_ref()
                    .map(|_| row.previous_in_chain),
                fork_session: row.fork_session.map(SessionId::from),
            },
            recorded,
            cancel_requested: row.cancel_requested,
        })
    }

    /// Records one agent run in one transaction: the project's and version's session ids, the
    /// transition and the usage row, what changed in the session's files, and for the job's last
    /// run the build's completion. Refused under a stale fence; a no-op when already recorded.
    pub async fn record_run(&self, run: &RunRecord<'_>) -> Result<Recorded, LedgerError> {
        let job = run.job;
        let m = &run.metrics;
        let files = transcripts::Columns::of(run.transcript);
        let none = RunResult::default();
        let answer = run.result.unwrap_or(&none);
        // One statement, one round trip: the record (migrations/*_record.sql), then the
        // session's files (migrations/*_transcripts.sql). A refusal by either undoes both.
        let mut conn = self.hot_connection().await?;
        let written = sqlx::query!(
            r#"WITH recorded AS (
                   SELECT baton_record_run(
                       p_project_id => $1, p_version_id => $2, p_build_id => $3, p_step => $4,
                       p_fence => $5, p_old_session_id => $6, p_new_session_id => $7,
                       p_source => $8, p_fresh_reason => $9, p_note => $10,
                       p_input_tokens => $11, p_output_tokens => $12,
                       p_cache_read_input_tokens => $13, p_cache_creation_input_tokens => $14,
                       p_cost_usd => $15, p_duration_ms => $16, p_num_turns => $17,
                       p_completes => $18, p_thread_id => $35) AS written)
               SELECT r.written AS "written!",
                      baton_store_transcript(
                          p_project_id => $1, p_session_id => $19, p_paths => $20,
                          p_base_lengths => $21, p_base_hashes => $22, p_lengths => $23,
                          p_hashes => $24, p_data => $25, p_incomplete => $26) AS "stored!",
                      CASE WHEN $27::boolean THEN baton_store_result(
                          p_project_id => $1, p_build_id => $3, p_step => $4, p_result => $28,
                          p_subtype => $29, p_stop_reason => $30, p_terminal_reason => $31,
                          p_is_error => $32, p_permission_denials => $33,
                          p_nothing_done => $34) END AS "kept_result"
               FROM recorded r"#,
            job.project_id.as_str(),
            job.version_id,
            job.build_id.as_str(),
            run.step.name(),
            run.fence.get(),
            run.old_session_id,
            run.new_session_id,
            run.source.unwrap_or_else(|| run.step.source()).as_str(),
            run.fresh_reason.map(FreshReason::as_str),
            run.note,
            m.input_tokens,
            m.output_tokens,
            m.cache_read_input_tokens,
            m.cache_creation_input_tokens,
            m.cost_usd,
            m.duration_ms,
            m.num_turns,
            run.completes,
            run.new_session_id,
            &files.paths,
            &files.base_lengths,
            &files.base_hashes,
            &files.lengths,
            &files.hashes,
            &files.data,
            run.transcript.and_then(|t| t.incomplete.as_deref()),
            run.result.is_some(),
            answer.result.as_deref(),
            answer.subtype.as_deref(),
            answer.stop_reason.as_deref(),
            answer.terminal_reason.as_deref(),
            answer.is_error,
            &answer.permission_denials,
            answer.nothing_done,
            job.thread_id.as_deref(),
        )
        .fetch_one(&mut *conn.conn)
        .await;
        // Only a connection that answered goes back for the next call; after an error the pool
        // takes it, and checks it.
        let e = match written {
            Ok(row) if row.written => {
                self.keep(conn);
                return Ok(Recorded::Written);
            }
            Ok(_) => {
                return Err(LedgerError::Unexpected(
                    "baton_record_run answered false".into(),
                ));
            }
            Err(e) => e,
        };
        let Some(refused) = Refusal::of(&e).filter(|r| r.code == refusal::RECORD_REFUSED) else {
            return Err(LedgerError::Db(e));
        };
        match refused.reason {
            reason::ALREADY_RECORDED => Ok(Recorded::AlreadyRecorded),
            reason::UNKNOWN_PROJECT => Err(LedgerError::UnknownProject(job.project_id.to_string())),
            reason::UNKNOWN_BUILD => Err(LedgerError::UnknownBuild(job.build_id.to_string())),
            reason::UNKNOWN_THREAD => Err(LedgerError::UnknownThread {
                project_id: job.project_id.to_string(),
                thread_id: job.thread_id.clone().unwrap_or_default(),
            }),
            reason::FENCED => Err(LedgerError::Fenced {
                build_id: job.build_id.to_string(),
                yours: run.fence,
                current: Fence(refused.detail.parse().unwrap_or_default()),
            }),
            reason::STALE => Err(LedgerError::StaleSession {
                project_id: job.project_id.to_string(),
                expected: run.old_session_id.unwrap_or_default().to_string(),
                actual: Some(refused.hint.to_string()).filter(|s| !s.is_empty()),
            }),
            reason::TRANSCRIPT_CONFLICT => Err(LedgerError::TranscriptConflict {
                session_id: run.new_session_id.to_string(),
                path: refused.detail.to_string(),
            }),
            reason::TRANSCRIPT_OF_OTHER_PROJECT => Err(LedgerError::Unexpected(format!(
                "session {} is stored under another project than {}",
                run.new_session_id, job.project_id
            ))),
            other => Err(LedgerError::Unexpected(format!(
                "baton_record_run refused with {other:?}"
            ))),
        }
    }
}

/// A step the ledger recorded, by its name; a name no Baton writes is an unexpected answer.
fn step_named(name: &str) -> Result<Step, LedgerError> {
    Step::from_name(name)
        .ok_or_else(|| LedgerError::Unexpected(format!("unknown step {name:?} in the ledger")))
}

async fn check_fence(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    build_id: &str,
    fence: Fence,
) -> Result<(), LedgerError> {
    let current = sqlx::query_scalar!(
        "SELECT fencing_token FROM builds WHERE build_id = $1 FOR UPDATE",
        build_id
    )
    .fetch_optional(&mut **tx)
    .await?
    .ok_or_else(|| LedgerError::UnknownBuild(build_id.to_string()))?;
    if current != fence.get() {
        return Err(LedgerError::Fenced {
            build_id: build_id.to_string(),
            yours: fence,
            current: Fence(current),
        });
    }
    Ok(())
}

mod builds;
pub mod cancel;
mod chain;
pub mod listings;
pub mod projects;
mod refusal;
pub mod reports;
pub mod status;
pub mod threads;
pub mod transcripts;
pub mod webhooks;

pub use chain::Reset;
pub use status::{BuildState, RunResult, RunSummary};
pub use transcripts::{StoredSession, TranscriptWrite};

#[cfg(test)]
mod tests;
