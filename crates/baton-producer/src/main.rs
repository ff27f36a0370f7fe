//! `baton`: enqueue build jobs, apply migrations, and inspect builds and session chains.

use std::io::Write;
use std::process::ExitCode;

use anyhow::Context;
use baton_core::{JobKind, NewJob};
use baton_ledger::{Ledger, LedgerError};
use baton_producer::{Producer, ProducerError};
use baton_queue::Queue;
use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};

/// Prints a line to stdout as `println!` does, except that a reader that went away (a closed pipe,
/// as after `head`) ends `baton` quietly, with the status a shell gives a tool SIGPIPE ended (141),
/// instead of a panic.
macro_rules! out {
    () => {
        $crate::write_out(format_args!("\n"))
    };
    ($($arg:tt)*) => {
        $crate::write_out(format_args!("{}\n", format_args!($($arg)*)))
    };
}

// After the macro, so that the commands' modules can print with it.
mod cli;
use cli::session::SessionCommand;

/// Writes to stdout; see [`out!`].
fn write_out(args: std::fmt::Arguments) {
    if let Err(e) = std::io::stdout().write_fmt(args) {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(141);
        }
        eprintln!("baton: cannot write to stdout: {e}");
        std::process::exit(1);
    }
}

#[derive(Debug, Parser)]
#[command(
    name = "baton",
    version,
    about = "Enqueue Baton build jobs and inspect their sessions"
)]
struct Cli {
    /// Where Redis and Postgres are, and the stream, group and schema used in them.
    #[command(flatten)]
    connection: baton_core::Connection,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Validate a build job and put it on the stream; prints its build id.
    Enqueue(Box<EnqueueArgs>),
    /// Apply the ledger's migrations.
    Migrate,
    /// Print a project's session transitions, oldest first.
    Chain {
        /// The project.
        project: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// List webhook deliveries, or try one again.
    Webhooks {
        #[command(subcommand)]
        command: cli::webhooks::WebhooksCommand,
    },
    /// Serve the HTTP API (builds, live progress, cancel, sessions, dead letters) until SIGINT or
    /// SIGTERM; its OpenAPI document is at /v1/openapi.json.
    Serve(Box<cli::serve::ServeArgs>),
    /// Cancel a build: a queued one never starts; a running one's CLI run is ended by the worker
    /// that holds it (within a heartbeat) and not recorded. Exits 3 when the build already ended.
    Cancel {
        /// The build.
        build: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Print a build's state and the sessions it recorded.
    Status {
        /// The build.
        build: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Check every project's session id against its newest version's and newest transition's;
    /// exits 1 when any project is out of sync.
    SyncCheck {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Print session statistics: adoption, resumes, fresh starts by reason, usage by source.
    Stats {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Inspect, replay or purge the dead-letter stream (`<stream>:dead`).
    Dlq {
        #[command(subcommand)]
        command: DlqCommand,
    },
    /// Manage a project's session, and export, import or show a session's stored files.
    Session {
        #[command(subcommand)]
        command: SessionCommand,
    },
    /// List, show, delete or fork a project's chat threads.
    Thread {
        #[command(subcommand)]
        command: cli::thread::ThreadCommand,
    },
    /// Enqueue again the unfinished builds whose ledger row has not changed for a duration: after
    /// Redis lost their entries (a restart without its data), or a producer died between recording
    /// a build and enqueueing it. Copies of builds that are in fact still queued or running wait
    /// behind them and are then acknowledged, so a generous duration costs nothing.
    Requeue {
        /// How long a build must have gone unchanged (`30m`, `2h`, ...); longer than the longest run.
        #[arg(long = "idle-for")]
        idle_for: String,
        /// Only list what would be enqueued.
        #[arg(long)]
        dry_run: bool,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Delete transitions, usage rows and stored transcripts older than a duration, keeping each
    /// project's newest link and its newest session's transcript.
    Prune {
        /// How old a row must be to go (`30d`, `12h`, ...).
        #[arg(long = "older-than")]
        older_than: String,
        /// Only count what would go.
        #[arg(long)]
        dry_run: bool,
        /// Allow a duration under one day (which deletes recent history).
        #[arg(long)]
        force: bool,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
enum DlqCommand {
    /// List dead letters, oldest first.
    List {
        /// At most this many.
        #[arg(long, default_value_t = 100)]
        limit: usize,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Show one dead letter in full.
    Show {
        /// The dead letter's id (from `dlq list`).
        #[arg(value_parser = dead_letter_id)]
        id: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Put dead letters back on the job stream (a failed build is reopened and resumes after its
    /// recorded runs).
    Replay {
        /// The dead letter's id.
        #[arg(required_unless_present = "all", value_parser = dead_letter_id)]
        id: Option<String>,
        /// Replay every dead letter.
        #[arg(long, conflicts_with = "id")]
        all: bool,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Delete dead letters.
    Purge {
        /// The dead letter's id.
        #[arg(required_unless_present = "all", value_parser = dead_letter_id)]
        id: Option<String>,
        /// Delete every dead letter.
        #[arg(long, conflicts_with = "id")]
        all: bool,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, clap::Args)]
struct EnqueueArgs {
    /// The project.
    #[arg(long)]
    project: String,
    /// The version this build produces (a chat or a plan may name none).
    #[arg(long)]
    version: Option<String>,
    /// `create` starts a fresh session; `update` resumes the project's newest; `chat_plan` is one
    /// plan-mode run on it; `chat` talks in a thread (`--thread`); `plan` runs `--task`s in order
    /// in one session.
    #[arg(long)]
    kind: JobKind,
    /// What to build (for a plan: what the plan is for; its tasks when not given).
    #[arg(long, required_unless_present = "tasks")]
    prompt: Option<String>,
    /// A chat's thread: its own session beside the project's main one.
    #[arg(long = "thread")]
    thread: Option<String>,
    /// Where a chat's new thread branches from: `main`, another thread, or a session id.
    #[arg(long = "fork-from")]
    fork_from: Option<String>,
    /// A plan's task, in order (repeat the flag); the tasks get the ids 1, 2, 3...
    #[arg(long = "task", id = "tasks")]
    tasks: Vec<String>,
    /// The project's owner.
    #[arg(long, env = "BATON_USER", default_value = "local")]
    user: String,
    /// The session the caller believes is the project's newest.
    #[arg(long = "previous-session")]
    previous_session: Option<String>,
    /// The project's folder relative to BATON_WORKSPACE_ROOT (default: the project id).
    #[arg(long = "project-path")]
    project_path: Option<String>,
    /// A build id of the caller's choosing (default: a new UUIDv7).
    #[arg(long = "build-id")]
    build_id: Option<String>,
    /// Only these steps of the kind's plan, comma-separated (`build,compact`); they run in the
    /// plan's order.
    #[arg(long, value_delimiter = ',')]
    steps: Option<Vec<String>>,
    #[command(flatten)]
    agent: AgentArgs,
    /// Where the build's end is also sent as a signed webhook; it must start with a prefix of
    /// BATON_WEBHOOK_ALLOW.
    #[arg(long)]
    webhook_url: Option<String>,
    #[command(flatten)]
    intake: cli::intake::IntakeArgs,
    /// Do not record the build as queued in the ledger (Redis only).
    #[arg(long)]
    no_ledger: bool,
    /// Print `{"build_id": ..., "stream_id": ...}` (with `--wait`, also `status` and `session_id`).
    #[arg(long)]
    json: bool,
    /// Follow the job's progress events until it completes or fails; exit 0 or 1 accordingly.
    #[arg(long)]
    wait: bool,
    /// With `--wait`: give up after this many seconds (exit 3).
    #[arg(long)]
    timeout: Option<u64>,
}

/// The job's own agent settings (its `agent` object): they narrow the deployment's, never widen
/// them.
#[derive(Debug, clap::Args)]
struct AgentArgs {
    /// The model for this job's runs.
    #[arg(long)]
    model: Option<String>,
    /// The permission mode (acceptEdits, auto, bypassPermissions, manual, dontAsk, plan, default).
    #[arg(long = "permission-mode")]
    permission_mode: Option<String>,
    /// Tools the agent may use, comma-separated (within the deployment's BATON_ALLOWED_TOOLS).
    #[arg(long = "allowed-tools", value_delimiter = ',')]
    allowed_tools: Option<Vec<String>>,
    /// Tools the agent may not use, comma-separated (added to the deployment's).
    #[arg(long = "disallowed-tools", value_delimiter = ',')]
    disallowed_tools: Option<Vec<String>>,
    /// Most turns of each run (at most the deployment's BATON_MAX_TURNS).
    #[arg(long = "max-turns")]
    max_turns: Option<u32>,
    /// Most dollars each run may spend (at most the deployment's BATON_MAX_BUDGET_USD).
    #[arg(long = "max-budget-usd")]
    max_budget_usd: Option<f64>,
    /// Text appended to the system prompt, after the deployment's.
    #[arg(long = "append-system-prompt")]
    append_system_prompt: Option<String>,
}

impl AgentArgs {
    /// The job's `agent` object, or none when no flag was given.
    fn into_agent(self) -> Option<baton_core::agent::JobAgent> {
        let agent = baton_core::agent::JobAgent {
            model: self.model,
            permission_mode: self.permission_mode,
            allowed_tools: self.allowed_tools,
            disallowed_tools: self.disallowed_tools,
            max_turns: self.max_turns,
            max_budget_usd: self.max_budget_usd,
            append_system_prompt: self.append_system_prompt,
        };
        (agent != baton_core::agent::JobAgent::default()).then_some(agent)
    }
}

/// Exit code for input Baton refuses, as opposed to a failure of Redis or Postgres.
const EXIT_INVALID: u8 = 2;

/// A dead letter's id as `dlq list` prints it: a stream id, `<milliseconds>-<sequence>`.
fn dead_letter_id(text: &str) -> Result<String, String> {
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    match text.split_once('-') {
        Some((ms, seq)) if digits(ms) && digits(seq) => Ok(text.to_string()),
        _ => Err("not a dead letter id; `baton dlq list` shows them (like 1795290593124-0)".into()),
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    // `--help` says which secret settings reached the process, never their values.
    let command = baton_core::help::mark_secrets_set(Cli::command(), |name| {
        std::env::var_os(name).is_some_and(|v| !v.is_empty())
    });
    let cli = Cli::from_arg_matches(&command.get_matches()).unwrap_or_else(|e| e.exit());
    match run(cli).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("baton: {}", baton_core::describe_error(e.as_ref()));
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let db = Db {
        url: &cli.connection.database_url,
        schema: &cli.connection.db_schema,
        stream: &cli.connection.stream,
    };
    match cli.command {
        Command::Enqueue(args) => {
            enqueue(
                &cli.connection.redis_url,
                db,
                &cli.connection.stream,
                &cli.connection.group,
                *args,
            )
            .await
        }
        Command::Migrate => {
            ledger(db).await?.migrate().await?;
            out!("migrations applied");
            Ok(ExitCode::SUCCESS)
        }
        Command::Chain { project, json } => {
            let chain = ledger(db).await?.chain(&project).await?;
            if json {
                out!("{}", serde_json::to_string_pretty(&chain)?);
            } else {
                cli::print::chain(&project, &chain);
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Status { build, json } => match ledger(db).await?.build_state(&build).await {
            Ok(state) => {
                if json {
                    out!("{}", serde_json::to_string_pretty(&state)?);
                } else {
                    cli::print::status(&state);
                }
                Ok(ExitCode::SUCCESS)
            }
            Err(LedgerError::UnknownBuild(id)) => {
                eprintln!("baton: no build {id} in the ledger");
                Ok(ExitCode::FAILURE)
            }
            Err(e) => Err(e.into()),
        },
        Command::Webhooks { command } => cli::webhooks::run(ledger(db).await?, command).await,
        Command::Serve(args) => {
            let queue = queue(&cli.connection).await?;
            cli::serve::run(queue, ledger(db).await?, *args).await
        }
        Command::Cancel { build, json } => {
            let queue = queue(&cli.connection).await?;
            cli::cancel::run(&queue, &ledger(db).await?, &build, json).await
        }
        Command::SyncCheck { json } => sync_check(db, json).await,
        Command::Stats { json } => {
            let stats = ledger(db).await?.stats().await?;
            if json {
                out!("{}", serde_json::to_string_pretty(&stats)?);
            } else {
                cli::print::stats(&stats);
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Session { command } => cli::session::run(ledger(db).await?, command).await,
        Command::Thread { command } => cli::thread::run(ledger(db).await?, command).await,
        Command::Prune {
            older_than,
            dry_run,
            force,
            json,
        } => prune(db, &older_than, dry_run, force, json).await,
        Command::Requeue {
            idle_for,
            dry_run,
            json,
        } => {
            let services = Services {
                redis_url: &cli.connection.redis_url,
                db,
                stream: &cli.connection.stream,
                group: &cli.connection.group,
            };
            requeue(services, &idle_for, dry_run, json).await
        }
        Command::Dlq { command } => {
            let services = Services {
                redis_url: &cli.connection.redis_url,
                db,
                stream: &cli.connection.stream,
                group: &cli.connection.group,
            };
            dlq(services, command).await
        }
    }
}

/// Where Redis and Postgres are, for commands that use both.
struct Services<'a> {
    redis_url: &'a str,
    db: Db<'a>,
    stream: &'a str,
    group: &'a str,
}

async fn dlq(cli: Services<'_>, command: DlqCommand) -> anyhow::Result<ExitCode> {
    let queue = Queue::connect(cli.redis_url, cli.stream, cli.group)
        .await
        .with_context(|| format!("cannot reach Redis at {}", redact(cli.redis_url)))?;
    match command {
        DlqCommand::List { limit, json } => {
            let letters = queue.dead_letters(limit).await?;
            if json {
                out!("{}", serde_json::to_string_pretty(&letters)?);
            } else if letters.is_empty() {
                out!("no dead letters on {}", queue.dead_stream());
            } else {
                for l in &letters {
                    let f = |k: &str| l.fields.get(k).map(String::as_str).unwrap_or("-");
                    out!(
                        "{}  entry {}  attempts {}  {}",
                        l.id,
                        f("stream_id"),
                        f("attempts"),
                        f("reason")
                    );
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        DlqCommand::Show { id, json } => match queue.dead_letter_entry(&id).await? {
            Some(letter) => {
                if json {
                    out!("{}", serde_json::to_string_pretty(&letter)?);
                } else {
                    out!("dead letter {}", letter.id);
                    for (k, v) in &letter.fields {
                        out!("{k:<13} {v}");
                    }
                }
                Ok(ExitCode::SUCCESS)
            }
            None => {
                eprintln!("baton: no dead letter {id}");
                Ok(ExitCode::FAILURE)
            }
        },
        DlqCommand::Replay { id, all, json } => {
            let ids = match id {
                Some(id) => vec![id],
                None if all => queue
                    .dead_letters(usize::MAX)
                    .await?
                    .into_iter()
                    .map(|l| l.id)
                    .collect(),
                None => unreachable!("clap requires an id or --all"),
            };
            let ledger = ledger(cli.db).await?;
            let mut replayed = Vec::new();
            for id in ids {
                match baton_producer::dead_letters::replay(&queue, &ledger, &id).await? {
                    Some(r) => replayed.push(r),
                    None => {
                        eprintln!("baton: no dead letter {id}");
                        return Ok(ExitCode::FAILURE);
                    }
                }
            }
            if json {
                out!("{}", serde_json::to_string_pretty(&replayed)?);
            } else {
                for r in &replayed {
                    out!("replayed {} as entry {}", r.dead_letter, r.stream_id);
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        DlqCommand::Purge { id, all, json } => {
            let purged = queue
                .purge_dead_letters(if all { None } else { id.as_deref() })
                .await?;
            if json {
                out!("{}", serde_json::json!({"purged": purged}));
            } else {
                out!("purged {purged} dead letters");
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

async fn sync_check(db: Db<'_>, json: bool) -> anyhow::Result<ExitCode> {
    let report = ledger(db).await?.sync_check().await?;
    if json {
        out!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        for p in &report.projects {
            out!(
                "{:<12} {}  project={} version={} transition={}",
                if p.synced { "SYNCED" } else { "OUT_OF_SYNC" },
                p.project_id,
                p.project_session.as_deref().unwrap_or("-"),
                p.version_session.as_deref().unwrap_or("-"),
                p.transition_session.as_deref().unwrap_or("-"),
            );
        }
        out!(
            "sync rate {:.1}% ({} of {} projects)",
            report.rate * 100.0,
            report.synced,
            report.total
        );
    }
    Ok(if report.synced == report.total {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

async fn requeue(
    cli: Services<'_>,
    idle_for: &str,
    dry_run: bool,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let cutoff = match ago("--idle-for", idle_for) {
        Ok(cutoff) => cutoff,
        Err(exit) => return Ok(exit),
    };
    let stale = ledger(cli.db).await?.stale_builds(cutoff).await?;
    let queue = if dry_run {
        None
    } else {
        Some(
            Queue::connect(cli.redis_url, cli.stream, cli.group)
                .await
                .with_context(|| format!("cannot reach Redis at {}", redact(cli.redis_url)))?,
        )
    };
    let mut report = Vec::new();
    let mut skipped = 0;
    for build in &stale {
        let Some(payload) = &build.payload else {
            eprintln!(
                "baton: build {} has no job in the ledger; enqueue it again by hand",
                build.build_id
            );
            skipped += 1;
            continue;
        };
        let stream_id = match &queue {
            Some(q) => Some(q.enqueue_raw(&payload.to_string()).await?),
            None => None,
        };
        if !json {
            let idle_since = build.updated_at.format("%Y-%m-%d %H:%M:%S UTC");
            match &stream_id {
                Some(id) => out!(
                    "requeued build {} ({}, {}, unchanged since {idle_since}) as entry {id}",
                    build.build_id,
                    build.project_id,
                    build.status
                ),
                None => out!(
                    "would requeue build {} ({}, {}, unchanged since {idle_since})",
                    build.build_id,
                    build.project_id,
                    build.status
                ),
            }
        }
        report.push(serde_json::json!({
            "build_id": build.build_id,
            "project_id": build.project_id,
            "status": build.status,
            "updated_at": build.updated_at,
            "stream_id": stream_id,
        }));
    }
    if json {
        out!("{}", serde_json::to_string_pretty(&report)?);
    } else if stale.is_empty() {
        out!("no unfinished build has gone unchanged for {idle_for}");
    }
    Ok(if skipped == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// The time the duration `text` (given as `flag`) ago; a malformed or too long one is reported
/// and gives the exit code for refused input.
fn ago(flag: &str, text: &str) -> Result<chrono::DateTime<chrono::Utc>, ExitCode> {
    let cutoff = baton_core::policy::parse_duration(text).and_then(|age| {
        chrono::Duration::from_std(age)
            .ok()
            .and_then(|age| chrono::Utc::now().checked_sub_signed(age))
            .ok_or_else(|| format!("{text:?} reaches back before any date"))
    });
    cutoff.map_err(|e| {
        eprintln!("baton: {flag}: {e}");
        ExitCode::from(EXIT_INVALID)
    })
}

async fn prune(
    db: Db<'_>,
    older_than: &str,
    dry_run: bool,
    force: bool,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let cutoff = match ago("--older-than", older_than) {
        Ok(cutoff) => cutoff,
        Err(exit) => return Ok(exit),
    };
    if !force && !dry_run && chrono::Utc::now() - cutoff < chrono::Duration::days(1) {
        eprintln!(
            "baton: --older-than {older_than} would delete the last day's history; see what would go with --dry-run, and add --force to do it"
        );
        return Ok(ExitCode::from(EXIT_INVALID));
    }
    let report = ledger(db).await?.prune(cutoff, dry_run).await?;
    if json {
        out!("{}", serde_json::to_string(&report)?);
    } else {
        out!(
            "{} {} transitions, {} usage rows, {} stored transcripts and {} webhook deliveries older than {older_than}",
            if dry_run { "would prune" } else { "pruned" },
            report.transitions,
            report.metrics,
            report.transcripts,
            report.webhooks
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// The job stream's queue.
async fn queue(connection: &baton_core::Connection) -> anyhow::Result<Queue> {
    Queue::connect(&connection.redis_url, &connection.stream, &connection.group)
        .await
        .with_context(|| format!("cannot reach Redis at {}", redact(&connection.redis_url)))
}

/// Where the ledger is: the database and the schema in it, and the job stream whose builds it
/// records.
#[derive(Debug, Clone, Copy)]
struct Db<'a> {
    url: &'a str,
    schema: &'a str,
    stream: &'a str,
}

async fn ledger(db: Db<'_>) -> anyhow::Result<Ledger> {
    match Ledger::connect(db.url, db.schema).await {
        Ok(ledger) => Ok(ledger.for_stream(db.stream)),
        Err(e @ LedgerError::InvalidSchema(_)) => Err(e.into()),
        Err(e) => {
            Err(anyhow::Error::new(e)
                .context(format!("cannot reach the ledger at {}", redact(db.url))))
        }
    }
}

async fn enqueue(
    redis_url: &str,
    db: Db<'_>,
    stream: &str,
    group: &str,
    args: EnqueueArgs,
) -> anyhow::Result<ExitCode> {
    let tasks: Vec<baton_core::job::Task> = args
        .tasks
        .iter()
        .enumerate()
        .map(|(i, prompt)| baton_core::job::Task {
            id: (i + 1).to_string(),
            prompt: prompt.clone(),
        })
        .collect();
    let prompt = args.prompt.unwrap_or_else(|| {
        let asks: Vec<&str> = tasks.iter().map(|t| t.prompt.as_str()).collect();
        format!("A plan of {} tasks: {}", tasks.len(), asks.join("; "))
    });
    let new = NewJob {
        kind: Some(args.kind),
        project_id: args.project,
        version_id: args.version.unwrap_or_default(),
        user_id: args.user,
        prompt,
        thread_id: args.thread,
        fork_from: args.fork_from,
        tasks: (!tasks.is_empty()).then_some(tasks),
        previous_session_id: args.previous_session,
        project_path: args.project_path,
        build_id: args.build_id,
        agent: args.agent.into_agent(),
        steps: args.steps,
        webhook_url: args.webhook_url,
    };
    let limits = args.intake.limits();
    let allow = args.intake.webhook_allow();
    // Validate before touching any service, so bad input is refused even when they are down.
    let job = match new.into_job(&limits).and_then(|job| {
        baton_producer::check_webhook_allowed(&job, &allow)?;
        Ok(job)
    }) {
        Ok(job) => job,
        Err(e) => {
            eprintln!("baton: refusing the job: {e}");
            return Ok(ExitCode::from(EXIT_INVALID));
        }
    };
    let queue = Queue::connect(redis_url, stream, group)
        .await
        .with_context(|| format!("cannot reach Redis at {}", redact(redis_url)))?;
    let ledger = if args.no_ledger {
        None
    } else {
        Some(ledger(db).await?)
    };
    // Events are followed from before the job exists, so none of its events can be missed.
    let events_from = if args.wait {
        Some(queue.last_event_id().await?)
    } else {
        None
    };
    let watch = ledger.clone();
    let producer = Producer::new(queue.clone(), ledger, limits).with_webhook_allow(allow);
    match producer.enqueue_job(&job).await {
        Ok(done) if args.wait => {
            let from = events_from.expect("read above with --wait");
            let follow = cli::follow::Follow {
                queue: &queue,
                ledger: watch.as_ref(),
                done: &done,
                json: args.json,
            };
            follow
                .run(&from, args.timeout.map(std::time::Duration::from_secs))
                .await
        }
        Ok(done) => {
            if args.json {
                out!("{}", serde_json::to_string(&done)?);
            } else {
                out!("{}", done.build_id);
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(ProducerError::Invalid(e)) => {
            eprintln!("baton: refusing the job: {e}");
            Ok(ExitCode::from(EXIT_INVALID))
        }
        Err(e) => Err(e.into()),
    }
}

/// A URL without its password, for error messages.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let creds = &url[scheme + 3..at];
            match creds.split_once(':') {
                Some((user, _)) => format!("{}{}:***{}", &url[..scheme + 3], user, &url[at..]),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}
