//! `baton-bench`: Baton's pipeline through real Redis, Postgres and worker replicas, held against the
//! limits a job is made of, measured on the same machine in the same run.
//!
//! Modes:
//! - `fast` (default): N jobs over P projects with the emulator at zero latency; reports jobs/s,
//!   runs/s, enqueue-to-done latency, Baton's overhead per run, peak RSS per worker, Postgres
//!   transactions and WAL flushes per job, what Postgres's backends wait for; then the three limits
//!   alone (CLI runs, ledger transactions, Redis operations of a job), the pipeline's throughput as
//!   a fraction of the tightest, the ledger's commit floor (a job's transactions as bare durable
//!   commits), the CPU a job may cost for the pipeline to reach 70% of the tightest limit, and where
//!   the pipeline's CPU beyond the limits went, part by part.
//! - `slow`: runs of `--latency-ms` with many jobs in flight; reports memory per in-flight job and
//!   throughput across concurrency and replica counts.
//! - `failover`: kills one of two workers mid-run and reports how long its jobs took to resume.
//!
//! Needs `REDIS_URL` and `DATABASE_URL` (an account that may create databases) and the release
//! binaries beside this one: run it with `just bench`.

use std::collections::{HashMap, HashSet, VecDeque};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use baton_agent::{Agent, AgentConfig, RunRequest};
use baton_core::checkpoint::Phase;
use baton_core::events::EventType;
use baton_core::{JobKind, Limits, NewJob, Step};
use baton_ledger::Ledger;
use baton_producer::Producer;
use baton_queue::{Ending, Queue};
use chrono::{DateTime, Utc};
use clap::{Parser, ValueEnum};
use sqlx::Connection;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

mod ledger_limit;
use ledger_limit::ledger_limit;

/// The share of the cores' time the hypervisor may take during a phase before the run's fractions
/// are called unreliable. On the fourteenth round's VM the host took 0.4% over a quiet half hour and
/// 6.4% over twenty other minutes, in which two runs measured a p99 overhead of 33 and 162 ms.
const STEAL_WARNING: f64 = 0.02;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Mode {
    Fast,
    Slow,
    Failover,
}

/// Benchmark Baton against the machine's own limits.
#[derive(Debug, Parser)]
struct Args {
    /// What to measure.
    #[arg(long, value_enum, default_value = "fast")]
    mode: Mode,
    /// Jobs (fast mode). Enough that the pipeline runs for seconds, not a blink the machine's
    /// noise would swamp.
    #[arg(long, default_value_t = 1000)]
    jobs: usize,
    /// Projects the jobs are spread over (fast mode): ten jobs each by default, so every session
    /// is resumed ten times.
    #[arg(long, default_value_t = 100)]
    projects: usize,
    /// Worker replicas (fast and failover modes).
    #[arg(long, default_value_t = 2)]
    replicas: usize,
    /// `BATON_CONCURRENCY` of each worker (fast mode).
    #[arg(long, default_value_t = 4)]
    concurrency: usize,
    /// Jobs in flight at once on one worker (slow mode).
    #[arg(long, default_value_t = 256)]
    in_flight: usize,
    /// Latency of each CLI run in slow mode.
    #[arg(long, default_value_t = 2000)]
    latency_ms: u64,
    #[arg(
        long,
        env = "REDIS_URL",
        hide_env_values = true,
        default_value = "redis://127.0.0.1:6379"
    )]
    redis_url: String,
    #[arg(
        long,
        env = "DATABASE_URL",
        hide_env_values = true,
        default_value = "postgres://postgres@127.0.0.1:5432/baton?sslmode=disable"
    )]
    database_url: String,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let machine = machine();
    println!(
        "baton-bench {:?} on {machine}, {}",
        args.mode,
        Utc::now().format("%Y-%m-%d")
    );
    match args.mode {
        Mode::Fast => fast(&args).await,
        Mode::Slow => slow(&args).await,
        Mode::Failover => failover(&args).await,
    }
}

/// One isolated installation: a fresh database and stream, scratch folders, release binaries.
struct Bench {
    admin_url: String,
    db_name: String,
    db_url: String,
    redis_url: String,
    stream: String,
    dir: PathBuf,
    bins: PathBuf,
    workers: Vec<Child>,
}

impl Bench {
    async fn new(args: &Args, label: &str) -> anyhow::Result<Bench> {
        let bins = claude_emulator::sibling_binary("baton-worker")
            .parent()
            .expect("a folder")
            .to_path_buf();
        let db_name = format!("baton_bench_{}", uuid::Uuid::new_v4().simple());
        let admin_url = args.database_url.clone();
        let mut admin = sqlx::PgConnection::connect(&admin_url)
            .await
            .context("DATABASE_URL must answer and may create databases")?;
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {db_name}")))
            .execute(&mut admin)
            .await?;
        let db_url = baton_ledger::url_with_database(&admin_url, &db_name);
        Ledger::connect(&db_url, baton_ledger::DEFAULT_SCHEMA)
            .await?
            .migrate()
            .await?;
        let dir = std::env::temp_dir().join(format!("baton-bench-{label}-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        Ok(Bench {
            admin_url,
            db_name,
            db_url,
            redis_url: args.redis_url.clone(),
            stream: format!("baton-bench:{}", uuid::Uuid::new_v4()),
            dir,
            bins,
            workers: Vec::new(),
        })
    }

    fn emulator_log(&self) -> PathBuf {
        self.dir.join("emulator-runs.jsonl")
    }

    fn start_worker(&mut self, env: &[(&str, String)]) -> anyhow::Result<u32> {
        let log =
            std::fs::File::create(self.dir.join(format!("worker-{}.log", self.workers.len())))?;
        let child = Command::new(self.bins.join("baton-worker"))
            .env("REDIS_URL", &self.redis_url)
            .env("DATABASE_URL", &self.db_url)
            .env("BATON_STREAM", &self.stream)
            .env("BATON_WORKSPACE_ROOT", self.dir.join("workspace"))
            .env("BATON_CLAUDE_BIN", self.bins.join("claude-emulator"))
            .env("BATON_NO_MIGRATE", "true")
            .env("BATON_METRICS_ADDR", "off")
            .env("BATON_LOG_FORMAT", "json")
            .env("BATON_LOG", "warn")
            // Each worker is a host of its own, as replicas are: sessions travel through the ledger.
            .env(
                "HOME",
                self.dir.join(format!("host-{}", self.workers.len())),
            )
            .env(
                "CLAUDE_CONFIG_DIR",
                self.dir
                    .join(format!("host-{}/.claude", self.workers.len())),
            )
            .env("CLAUDE_EMULATOR_LOG", self.emulator_log())
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("start baton-worker (build the release binaries: just bench does)")?;
        let pid = child.id();
        self.workers.push(child);
        Ok(pid)
    }

    async fn queue(&self) -> anyhow::Result<Queue> {
        let q = Queue::connect(&self.redis_url, &self.stream, baton_core::DEFAULT_GROUP).await?;
        q.ensure_group().await?;
        Ok(q)
    }

    /// Stops every worker with SIGTERM and waits for them. Each is signalled once: a worker already
    /// waited for is no longer ours, and its pid may belong to another process by now.
    fn stop_workers(&mut self) {
        let mut workers = std::mem::take(&mut self.workers);
        for w in &workers {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(w.id() as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
        }
        for w in &mut workers {
            let _ = w.wait();
        }
    }

    async fn cleanup(mut self) {
        self.stop_workers();
        if let Ok(mut admin) = sqlx::PgConnection::connect(&self.admin_url).await {
            let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.db_name
            )))
            .execute(&mut admin)
            .await;
        }
        if let Ok(q) =
            Queue::connect(&self.redis_url, &self.stream, baton_core::DEFAULT_GROUP).await
        {
            let _ = q.delete_all_keys().await;
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Drop for Bench {
    /// A bench that failed part-way stops its workers all the same: left running, they would poll
    /// Redis and Postgres for good and take CPU from every later measurement. What it leaves for a
    /// look (the scratch folder with the workers' logs, the database) is named.
    fn drop(&mut self) {
        self.stop_workers();
        if self.dir.exists() {
            eprintln!(
                "baton-bench: ended before its cleanup; the workers' logs are in {} and the ledger in database {}",
                self.dir.display(),
                self.db_name
            );
        }
    }
}

/// Enqueues `jobs` jobs round-robin over `projects` projects (the first of each a create).
async fn enqueue(
    queue: &Queue,
    jobs: usize,
    projects: usize,
    prefix: &str,
) -> anyhow::Result<Vec<String>> {
    let producer = Producer::new(queue.clone(), None, Limits::default());
    let mut builds = Vec::with_capacity(jobs);
    for i in 0..jobs {
        let project = format!("{prefix}-{}", i % projects);
        let round = i / projects;
        let done = producer
            .enqueue(NewJob {
                kind: Some(if round == 0 {
                    JobKind::Create
                } else {
                    JobKind::Update
                }),
                project_id: project.clone(),
                version_id: format!("{project}-v{round}"),
                user_id: "bench".into(),
                prompt: format!("Change {round} of {project}"),
                ..NewJob::default()
            })
            .await?;
        builds.push(done.build_id);
    }
    Ok(builds)
}

/// Follows the events stream until every build in `builds` completed; fails on a failed job.
async fn wait_completed(
    queue: &Queue,
    from: &str,
    builds: &[String],
    limit: Duration,
) -> anyhow::Result<()> {
    let mut waiting: std::collections::HashSet<&str> = builds.iter().map(String::as_str).collect();
    let mut reader = queue.event_reader(from).await?;
    let deadline = Instant::now() + limit;
    while !waiting.is_empty() {
        if Instant::now() > deadline {
            bail!("{} jobs still unfinished after {limit:?}", waiting.len());
        }
        for e in reader.next(Duration::from_secs(1)).await? {
            match e.event {
                EventType::JobCompleted => {
                    waiting.remove(e.build_id.as_str());
                }
                EventType::JobFailed if waiting.contains(e.build_id.as_str()) => {
                    bail!("job {} failed: {:?}", e.build_id, e.error)
                }
                _ => {}
            }
        }
    }
    Ok(())
}

/// Polls the ledger until every build in `builds` completed; fails on a failed one. Returns when the
/// last one finished, by the ledger's clock, and how many polls (transactions) that took. Cheaper
/// for the machine than following the events, which would put the bench's own reading on the cores
/// the pipeline is measured on. The database is the bench's own and holds only these builds, so the
/// poll reads the whole table (matching every id against every row put a sixth of Postgres's CPU
/// in a 1000-job run on the bench's account). It polls on `conn`, whose backend the CPU figures
/// count as the bench's, every 250 ms: the wall time comes from the ledger's finish times, so a
/// slower poll does not blur it, and it takes less of the machine the pipeline is measured on.
async fn wait_finished_in_ledger(
    conn: &mut sqlx::PgConnection,
    builds: &[String],
    limit: Duration,
) -> anyhow::Result<(DateTime<Utc>, i64)> {
    let deadline = Instant::now() + limit;
    let mut polls = 0;
    loop {
        polls += 1;
        let (completed, failed, last): (i64, Option<String>, Option<DateTime<Utc>>) =
            sqlx::query_as(
                "SELECT count(*) FILTER (WHERE status = 'completed'),
                        min(build_id || ': ' || coalesce(last_error, '')) FILTER (WHERE status = 'failed'),
                        max(finished_at)
                 FROM builds",
            )
            .fetch_one(&mut *conn)
            .await?;
        if let Some(failed) = failed {
            bail!("job {failed}");
        }
        if completed as usize == builds.len() {
            return Ok((last.context("completed builds have a finish time")?, polls));
        }
        if Instant::now() > deadline {
            bail!(
                "{} jobs still unfinished after {limit:?}",
                builds.len() - completed as usize
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Samples what the pipeline's Postgres backends are doing while one of their transactions is in
/// progress: on a core (or waiting for one), waiting for the WAL's flush, for a lock, or other.
/// Where the ledger's round trips go is what decides whether its commits or its CPU hold a job up.
/// It connects to the admin database, so its queries are not counted as the pipeline's
/// transactions.
struct PgWaits {
    conn: sqlx::PgConnection,
    /// The pipeline's database.
    db_name: String,
    /// The sampling connection's own backend, which the CPU figures count as the bench's.
    backend: i32,
}

/// Samples per kind of wait, in the order of [`PgWaits::HEADING`].
struct WaitShares([u64; 4]);

impl PgWaits {
    /// How often it samples. Each sample is a query of the bench's on the cores the pipeline is
    /// measured on: every 10 ms, the sampling was most of the bench's own CPU during a run.
    const EVERY: Duration = Duration::from_millis(25);
    const HEADING: &str = "Postgres backends in a pipeline transaction, sampled every 25 ms: running (on a core or waiting for one) / waiting for the WAL's flush / for a lock / other";

    async fn connect(admin_url: &str, db_name: &str) -> anyhow::Result<PgWaits> {
        let mut conn = sqlx::PgConnection::connect(admin_url).await?;
        let backend = sqlx::query_scalar("SELECT pg_backend_pid()")
            .fetch_one(&mut conn)
            .await?;
        Ok(PgWaits {
            conn,
            db_name: db_name.to_string(),
            backend,
        })
    }

    /// The cluster's WAL flushes so far and the milliseconds they took (zero unless
    /// `track_wal_io_timing` is on); `None` before Postgres 14, which has no `pg_stat_wal`.
    async fn wal_flushes(&mut self) -> Option<(i64, f64)> {
        sqlx::query_as("SELECT wal_sync, wal_sync_time FROM pg_stat_wal")
            .fetch_one(&mut self.conn)
            .await
            .ok()
    }

    /// Samples every [`PgWaits::EVERY`] until `stop`, leaving out the backends of the sampler and of
    /// `watcher`.
    async fn sample(
        mut self,
        watcher: i32,
        stop: CancellationToken,
    ) -> anyhow::Result<(PgWaits, WaitShares)> {
        let mut shares = [0u64; 4];
        let mut tick = tokio::time::interval(Self::EVERY);
        while !stop.is_cancelled() {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stop.cancelled() => break,
            }
            let rows: Vec<(i32,)> = sqlx::query_as(
                "SELECT CASE
                          WHEN wait_event IS NULL THEN 0
                          WHEN wait_event IN ('WALWrite', 'WALSync', 'WALInsert') THEN 1
                          WHEN wait_event_type = 'Lock' THEN 2
                          ELSE 3
                        END
                 FROM pg_stat_activity
                 WHERE datname = $1 AND backend_type = 'client backend'
                   AND state IN ('active', 'idle in transaction') AND pid <> $2",
            )
            .bind(&self.db_name)
            .bind(watcher)
            .fetch_all(&mut self.conn)
            .await?;
            for (kind,) in rows {
                shares[kind as usize] += 1;
            }
        }
        Ok((self, WaitShares(shares)))
    }
}

impl WaitShares {
    /// The shares as percentages, with the sample count.
    fn percentages(&self) -> String {
        let total: u64 = self.0.iter().sum();
        if total == 0 {
            return "no samples".into();
        }
        let parts: Vec<String> = self
            .0
            .iter()
            .map(|n| format!("{:.0}%", 100.0 * *n as f64 / total as f64))
            .collect();
        format!("{} ({total} samples)", parts.join(" / "))
    }
}

async fn xact_commits(admin_url: &str, db: &str) -> anyhow::Result<i64> {
    let mut conn = sqlx::PgConnection::connect(admin_url).await?;
    Ok(
        sqlx::query_scalar::<_, i64>("SELECT xact_commit FROM pg_stat_database WHERE datname = $1")
            .bind(db)
            .fetch_one(&mut conn)
            .await?,
    )
}

fn rss_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| {
            l.strip_prefix(field)
                .map(|v| v.trim().trim_end_matches(" kB").trim().parse().unwrap_or(0))
        })
        .unwrap_or(0)
}

/// A completed build as the ledger has it: project, enqueued, started, finished.
type BuildRow = (String, DateTime<Utc>, DateTime<Utc>, DateTime<Utc>);

/// One CLI run from the emulator's run log: when its process was created (before its `exec`; the
/// start of `main` where the log has no creation), when `main` started, and its last line.
#[derive(Clone, Copy)]
struct ChildRun {
    created: DateTime<Utc>,
    started: DateTime<Utc>,
    ended: DateTime<Utc>,
}

/// Child runs per project folder, from the emulator's run log.
fn child_runs(log: &Path) -> HashMap<String, Vec<ChildRun>> {
    let mut out: HashMap<String, Vec<_>> = HashMap::new();
    for line in std::fs::read_to_string(log).unwrap_or_default().lines() {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        let parse = |k: &str| {
            v[k].as_str()
                .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
                .map(|t| t.with_timezone(&Utc))
        };
        if let (Some(started), Some(ended), Some(cwd)) =
            (parse("started_at"), parse("ended_at"), v["cwd"].as_str())
        {
            let project = Path::new(cwd)
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let created = parse("created_at").unwrap_or(started);
            out.entry(project).or_default().push(ChildRun {
                created,
                started,
                ended,
            });
        }
    }
    out
}

/// The mean CPU of a CLI run in the emulator's run log `log`, as each process measured itself (its
/// exec included, its exit not); `None` without such lines.
fn cli_cpu_per_run(log: &Path) -> Option<f64> {
    let text = std::fs::read_to_string(log).ok()?;
    let cpu: Vec<f64> = text
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| v["cpu_ms"].as_f64())
        .collect();
    (!cpu.is_empty()).then(|| cpu.iter().sum::<f64>() / cpu.len() as f64)
}

/// Baton's overhead, from the jobs' times in the ledger and their CLI runs in the emulator's log.
/// Every list is sorted, in milliseconds.
#[derive(Default)]
struct Overhead {
    /// Per job: its time from claim to end that no CLI process of it spent, divided by its runs. A
    /// run's time starts when its process was created, so the CLI's own start (exec, loader,
    /// runtime) is inside it.
    per_run: Vec<f64>,
    /// The same with a run's time starting at the CLI's `main`, as the benchmark measured before
    /// the emulator could tell its creation.
    per_run_from_main: Vec<f64>,
    /// From the claim to the first run's process.
    claim_to_first: Vec<f64>,
    /// From one run's last line to the next run's process: the CLI's exit, the run's record and the
    /// next spawn.
    between: Vec<f64>,
    /// From the last run's last line to the build's end.
    last_to_end: Vec<f64>,
}

impl Overhead {
    fn measure(rows: &[BuildRow], children: &HashMap<String, Vec<ChildRun>>) -> Self {
        let mut o = Overhead::default();
        for (project, _, start, end) in rows {
            let mut inside: Vec<&ChildRun> = children
                .get(project)
                .into_iter()
                .flatten()
                .filter(|r| r.created >= *start && r.ended <= *end)
                .collect();
            // A job's runs follow one another, so in order of creation the last one ends last.
            inside.sort_by_key(|r| r.created);
            let (Some(first), Some(last)) = (inside.first(), inside.last()) else {
                continue;
            };
            let runs = inside.len() as f64;
            let job_ms = ms(*end - *start);
            let created_ms: f64 = inside.iter().map(|r| ms(r.ended - r.created)).sum();
            let main_ms: f64 = inside.iter().map(|r| ms(r.ended - r.started)).sum();
            o.per_run.push((job_ms - created_ms) / runs);
            o.per_run_from_main.push((job_ms - main_ms) / runs);
            o.claim_to_first.push(ms(first.created - *start));
            o.between
                .extend(inside.windows(2).map(|w| ms(w[1].created - w[0].ended)));
            o.last_to_end.push(ms(*end - last.ended));
        }
        for v in [
            &mut o.per_run,
            &mut o.per_run_from_main,
            &mut o.claim_to_first,
            &mut o.between,
            &mut o.last_to_end,
        ] {
            v.sort_by(f64::total_cmp);
        }
        o
    }
}

/// A span of time in milliseconds, to the microsecond.
fn ms(d: chrono::TimeDelta) -> f64 {
    d.num_microseconds().unwrap_or(0) as f64 / 1000.0
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

async fn fast(args: &Args) -> anyhow::Result<()> {
    let mut bench = Bench::new(args, "fast").await?;
    let queue = bench.queue().await?;
    let lanes = args.replicas * args.concurrency;
    // The CLI limit is measured before the pipeline and again after it: the machine's speed drifts
    // by several percent within a minute, and the mean of the two brackets the pipeline's run.
    let machine = Machine::read();
    let driver = own_cpu();
    let reaped = reaped_cpu();
    let agent_before = agent_limit(
        &bench,
        args.replicas,
        args.concurrency,
        args.jobs,
        args.projects,
        "before",
    )
    .await?;
    let agent_before_machine = machine.per_job(args.jobs);
    let driver_before = (own_cpu() - driver) / args.jobs as f64;
    let cli_before = (reaped_cpu() - reaped) / args.jobs as f64;
    let before = xact_commits(&bench.admin_url, &bench.db_name).await?;
    let mut pids = Vec::new();
    for _ in 0..args.replicas {
        pids.push(bench.start_worker(&[("BATON_CONCURRENCY", args.concurrency.to_string())])?);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let ledger = Ledger::connect(&bench.db_url, baton_ledger::DEFAULT_SCHEMA).await?;
    // The bench watches the ledger on a connection of its own, whose backend's CPU is the bench's
    // and not the pipeline's.
    let mut watcher = sqlx::PgConnection::connect(&bench.db_url).await?;
    sqlx::query("SET search_path TO baton")
        .execute(&mut watcher)
        .await?;
    let watcher_backend: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
        .fetch_one(&mut watcher)
        .await?;
    let mut waits = PgWaits::connect(&bench.admin_url, &bench.db_name).await?;
    let not_pipeline = [
        u32::try_from(watcher_backend)?,
        u32::try_from(waits.backend)?,
    ];
    let wal_before = waits.wal_flushes().await;
    let stop_sampling = CancellationToken::new();
    let sampling = tokio::spawn(waits.sample(watcher_backend, stop_sampling.clone()));
    let cpu_before = Cpu::sample(&pids, &not_pipeline);
    let machine = Machine::read();
    let started = Utc::now();
    let builds = enqueue(&queue, args.jobs, args.projects, "fast").await?;
    let (last, polls) =
        wait_finished_in_ledger(&mut watcher, &builds, Duration::from_secs(600)).await?;
    let cpu = Cpu::sample(&pids, &not_pipeline).since(&cpu_before);
    let pipeline = machine.per_job(args.jobs);
    let pipeline_cpu = pipeline.busy;
    stop_sampling.cancel();
    let (mut waits, shares) = sampling.await??;
    let wall = (last - started).num_microseconds().unwrap_or(0) as f64 / 1e6;
    let peak_rss: Vec<u64> = pids.iter().map(|p| rss_kib(*p, "VmHWM:")).collect();
    bench.stop_workers();
    // Backends flush their statistics when they exit; a busy one, only once a second.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let after = xact_commits(&bench.admin_url, &bench.db_name).await?;
    let wal = match (wal_before, waits.wal_flushes().await) {
        (Some(before), Some(after)) => Some((after.0 - before.0, after.1 - before.1)),
        _ => None,
    };

    let rows: Vec<BuildRow> = sqlx::query_as(
        "SELECT project_id, enqueued_at, started_at, finished_at FROM builds WHERE status = 'completed'",
    )
    .fetch_all(ledger.pool())
    .await?;
    let children = child_runs(&bench.emulator_log());
    let runs_total: usize = children.values().map(Vec::len).sum();
    let mut latency: Vec<f64> = rows.iter().map(|r| ms(r.3 - r.1)).collect();
    let overhead = Overhead::measure(&rows, &children);
    latency.sort_by(f64::total_cmp);
    let jobs_per_s = args.jobs as f64 / wall;
    let (store_bytes, store_compressed, _) = ledger_limit::stored(&ledger).await?;
    let per_run = |b: i64| b as f64 / runs_total.max(1) as f64;
    let store_per_run = per_run(store_bytes).round() as usize;

    println!(
        "\n## Pipeline: {} jobs over {} projects, {} replicas x concurrency {}, emulator at zero latency\n",
        args.jobs, args.projects, args.replicas, args.concurrency
    );
    println!("| measure | value |\n|---|---|");
    println!("| jobs/s | {jobs_per_s:.1} |");
    println!("| runs/s | {:.1} |", runs_total as f64 / wall);
    println!(
        "| enqueue-to-done latency p50 / p99 | {:.0} ms / {:.0} ms |",
        percentile(&latency, 50.0),
        percentile(&latency, 99.0)
    );
    let p50_p99 = |v: &[f64]| {
        format!(
            "{:.2} ms / {:.2} ms",
            percentile(v, 50.0),
            percentile(v, 99.0)
        )
    };
    println!(
        "| Baton's overhead per run (job time not inside a CLI process, from its creation to its last line) p50 / p99 | {} |",
        p50_p99(&overhead.per_run)
    );
    println!(
        "| the same, counting the CLI's start before its main (exec, loader) as Baton's | {} |",
        p50_p99(&overhead.per_run_from_main)
    );
    println!(
        "| where it is spent: claim to first run / between runs / last run to the build's end, p50 / p99 | {} / {} / {} |",
        p50_p99(&overhead.claim_to_first),
        p50_p99(&overhead.between),
        p50_p99(&overhead.last_to_end)
    );
    println!(
        "| peak RSS per worker | {} |",
        peak_rss
            .iter()
            .map(|k| format!("{:.1} MB", *k as f64 / 1024.0))
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!(
        "| Postgres transactions per job | {:.1} |",
        (after - before - polls) as f64 / args.jobs as f64
    );
    println!(
        "| CPU per job: Postgres / Redis / workers / CLI children (emulator) / bench | {:.2} / {:.2} / {:.2} / {:.2} / {:.2} ms |",
        cpu.postgres * 1000.0 / args.jobs as f64,
        cpu.redis * 1000.0 / args.jobs as f64,
        cpu.workers * 1000.0 / args.jobs as f64,
        cpu.children * 1000.0 / args.jobs as f64,
        cpu.bench * 1000.0 / args.jobs as f64,
    );
    println!(
        "| machine CPU used during the run | {:.0}% of {} cores |",
        100.0 * cpu.total() / (wall * cores() as f64),
        cores()
    );
    if let Some((flushes, ms)) = wal {
        let per_flush = if ms > 0.0 {
            format!("{:.2} ms", ms / flushes as f64)
        } else {
            "not timed (track_wal_io_timing is off)".into()
        };
        println!(
            "| Postgres WAL flushes per job (the whole server's); mean time per flush | {:.1}; {per_flush} |",
            flushes as f64 / args.jobs as f64
        );
    }
    println!("| {} | {} |", PgWaits::HEADING, shares.percentages());
    println!(
        "| transcript store: session bytes per run (new, as stored compressed) | {:.0} B, {:.0} B |",
        per_run(store_bytes),
        per_run(store_compressed)
    );

    // The limits, each alone at the same concurrency.
    let machine = Machine::read();
    let driver = own_cpu();
    let reaped = reaped_cpu();
    let agent_after = agent_limit(
        &bench,
        args.replicas,
        args.concurrency,
        args.jobs,
        args.projects,
        "after",
    )
    .await?;
    let agent_after_machine = machine.per_job(args.jobs);
    let driver_after = (own_cpu() - driver) / args.jobs as f64;
    let cli_after = (reaped_cpu() - reaped) / args.jobs as f64;
    let driver_cpu = (driver_before + driver_after) / 2.0;
    let agent_jobs = (agent_before + agent_after) / 2.0;
    let agent_cpu = (agent_before_machine.busy + agent_after_machine.busy) / 2.0;
    let agent_switches = (agent_before_machine.switches + agent_after_machine.switches) / 2.0;
    // The same without the session files, for what the transcript store costs the ledger.
    let (plain_jobs, plain_record_tx) =
        ledger_limit(&ledger, lanes, args.jobs, args.projects, None, "plain").await?;
    let machine = Machine::read();
    let cpu_before = Cpu::sample(&[], &[]);
    let wal_before = waits.wal_flushes().await;
    // The pipeline's runs stored this much of their sessions' files each; the ledger's limit stores
    // as much with each record, as the workers' records do.

    let (ledger_jobs, record_tx) = ledger_limit(
        &ledger,
        lanes,
        args.jobs,
        args.projects,
        Some(store_per_run),
        "store",
    )
    .await?;
    let ledger_machine = machine.per_job(args.jobs);
    let ledger_alone = Cpu::sample(&[], &[]).since(&cpu_before);
    // Its backends report their WAL flushes when they exit, as the workers' did.
    let pool = ledger.pool().clone();
    drop(ledger);
    pool.close().await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let ledger_wal = match (wal_before, waits.wal_flushes().await) {
        (Some(before), Some(after)) => Some(after.0 - before.0),
        _ => None,
    };
    let ledger_cpu = ledger_machine.busy;
    let (floor_jobs, floor_machine) = commit_floor(&bench.db_url, lanes, args.jobs).await?;
    let redis_job_count = args.jobs.max(lanes);
    let machine = Machine::read();
    let cpu_before = Cpu::sample(&[], &[]);
    let redis_jobs = redis_limit(&bench, lanes, redis_job_count).await?;
    let redis_machine = machine.per_job(redis_job_count);
    let redis_alone = Cpu::sample(&[], &[]).since(&cpu_before);
    let redis_cpu = redis_machine.busy;
    let tightest = [
        ("CLI runs", agent_jobs, agent_cpu),
        ("ledger", ledger_jobs, ledger_cpu),
        ("Redis", redis_jobs, redis_cpu),
    ]
    .into_iter()
    .min_by(|a, b| a.1.total_cmp(&b.1))
    .expect("three limits");
    println!("\n## Limits, each alone at concurrency {lanes} (jobs/s)\n");
    println!("| limit | jobs/s | machine CPU per job |\n|---|---|---|");
    let cpu_ms = |seconds: f64| format!("{:.2} ms", seconds * 1000.0);
    println!(
        "| spawning and reading the CLI (4 runs a job, supervised and driven as in the workers); mean of {agent_before:.1} before the pipeline and {agent_after:.1} after | {agent_jobs:.1} | {} |",
        cpu_ms(agent_cpu)
    );
    println!(
        "| ledger: a job's transactions (claim, 4 records with {store_per_run} new bytes of the session's transcript each, the last completing the build); record_run alone {record_tx:.0} tx/s | {ledger_jobs:.1} | {} |",
        cpu_ms(ledger_cpu)
    );
    println!(
        "| the same without the transcript store: record_run alone {plain_record_tx:.0} tx/s (the store costs {:.0}% of the limit, {:.3} ms a record) | {plain_jobs:.1} | |",
        100.0 * (1.0 - ledger_jobs / plain_jobs),
        1000.0 / record_tx - 1000.0 / plain_record_tx
    );
    println!(
        "| Redis: a job's operations (enqueue, read, start, checkpoint read with an event, 4 checkpoints with 12 events, finish with an event) | {redis_jobs:.1} | {} |",
        cpu_ms(redis_cpu)
    );
    // Each limit was measured with the whole machine to itself; the pipeline pays for all three on
    // the same cores, so the bound it can reach is their combination.
    let combined = 1.0 / (1.0 / agent_jobs + 1.0 / ledger_jobs + 1.0 / redis_jobs);
    println!(
        "\npipeline {jobs_per_s:.1} jobs/s = {:.0}% of the tightest limit ({}, {:.1} jobs/s)",
        100.0 * jobs_per_s / tightest.1,
        tightest.0,
        tightest.1
    );
    println!(
        "pipeline {jobs_per_s:.1} jobs/s = {:.0}% of the combined bound of the three sharing the machine ({combined:.1} jobs/s)",
        100.0 * jobs_per_s / combined
    );
    // A limit alone need not keep every core busy (Redis alone waits on round trips far more than
    // it computes), so the combined bound above understates what the three leave room for. On a
    // CPU-bound machine the ceiling of the first fraction is the limits' CPU: what a pipeline that
    // cost no more than the three, with every core busy, would reach.
    let limits_cpu = agent_cpu + ledger_cpu + redis_cpu;
    let cpu_bound = cores() as f64 / limits_cpu;
    println!(
        "limits' machine CPU per job {} + {} + {} = {}: on {} cores at most {cpu_bound:.1} jobs/s = {:.0}% of the tightest limit; the pipeline used {} per job, {} more",
        cpu_ms(agent_cpu),
        cpu_ms(ledger_cpu),
        cpu_ms(redis_cpu),
        cpu_ms(limits_cpu),
        cores(),
        100.0 * cpu_bound / tightest.1,
        cpu_ms(pipeline_cpu),
        cpu_ms(pipeline_cpu - limits_cpu)
    );
    println!(
        "the ledger's commit floor, a job's {} transactions as one-row durable commits and nothing else, {lanes} at once: {floor_jobs:.1} jobs/s, {} of machine CPU per job, {:.0}% of the ledger's {}",
        job_transactions(),
        cpu_ms(floor_machine.busy),
        100.0 * floor_machine.busy / ledger_cpu,
        cpu_ms(ledger_cpu)
    );
    let budget = Budget {
        cores: cores(),
        busy: pipeline_cpu * args.jobs as f64 / (wall * cores() as f64),
        tightest,
        others: limits_cpu - tightest.2,
        others_at_floor: (tightest.0 != "ledger")
            .then_some(limits_cpu - tightest.2 - ledger_cpu + floor_machine.busy),
        pipeline: pipeline_cpu,
    };
    println!("{}", budget.line());
    // The CLI limit's lanes spawn, read and reap the CLI as a worker does and nothing else, so what a
    // worker spends beyond them is its own work: the part of the excess above that Baton can cut.
    let workers_cpu = cpu.workers / args.jobs as f64;
    println!(
        "the workers used {} of CPU per job; the CLI limit's lanes, which only drive the CLI as a worker does, {}; the rest of a worker's work (the stream, the ledger's and Redis's clients, leases, events) {}",
        cpu_ms(workers_cpu),
        cpu_ms(driver_cpu),
        cpu_ms(workers_cpu - driver_cpu)
    );
    let per_job = |seconds: f64, jobs: usize| seconds / jobs as f64;
    let excess = Excess {
        pipeline: pipeline_cpu,
        limits: limits_cpu,
        cli: (
            per_job(cpu.children, args.jobs),
            (cli_before + cli_after) / 2.0,
        ),
        postgres: (
            per_job(cpu.postgres, args.jobs),
            per_job(ledger_alone.postgres, args.jobs),
        ),
        redis: (
            per_job(cpu.redis, args.jobs),
            per_job(redis_alone.redis, redis_job_count),
        ),
        clients: (
            per_job(cpu.workers, args.jobs),
            driver_cpu
                + per_job(ledger_alone.bench, args.jobs)
                + per_job(redis_alone.bench, redis_job_count),
        ),
    };
    println!("{}", excess.line());
    // A commit that finds its WAL already flushed by another's costs no flush of its own. Lanes
    // that commit back to back share flushes; in the pipeline a lane commits when its run ends.
    if let (Some((pipeline_flushes, _)), Some(ledger_flushes)) = (wal, ledger_wal) {
        println!(
            "Postgres WAL flushes per job: the pipeline {:.1}, the ledger's limit {:.1}, of {} commits",
            pipeline_flushes as f64 / args.jobs as f64,
            ledger_flushes as f64 / args.jobs as f64,
            job_transactions()
        );
    }
    // Each hand-off between processes (worker to Postgres or Redis and back, worker to CLI) is a
    // wakeup. A limit alone keeps its server busy, so it serves many requests per wakeup; in the
    // pipeline the servers sleep between a job's requests.
    println!(
        "context switches per job, whole machine: the pipeline {:.0}; the limits {:.0} + {:.0} + {:.0} = {:.0}",
        pipeline.switches,
        agent_switches,
        ledger_machine.switches,
        redis_machine.switches,
        agent_switches + ledger_machine.switches + redis_machine.switches
    );
    // A VM's cores are lent: where the host takes them away during some phases of a run and not
    // others, the fractions above compare machines of different speeds.
    let stolen = [
        ("the pipeline", pipeline.stolen),
        ("the CLI limit before it", agent_before_machine.stolen),
        ("after it", agent_after_machine.stolen),
        ("the ledger's limit", ledger_machine.stolen),
        ("Redis's", redis_machine.stolen),
    ];
    println!(
        "cores' time taken by the hypervisor (steal): {}",
        stolen
            .iter()
            .map(|(phase, share)| format!("{phase} {:.1}%", 100.0 * share))
            .collect::<Vec<_>>()
            .join(", ")
    );
    if let Some(line) = steal_warning(&stolen) {
        println!("{line}");
    }
    let limit_cli: Vec<f64> = ["before", "after"]
        .iter()
        .filter_map(|label| cli_cpu_per_run(&bench.dir.join(format!("limit-runs-{label}.jsonl"))))
        .collect();
    if let (Some(pipeline), false) = (cli_cpu_per_run(&bench.emulator_log()), limit_cli.is_empty())
    {
        let limit = limit_cli.iter().sum::<f64>() / limit_cli.len() as f64;
        println!(
            "a CLI run's own CPU, as the process measured it: {pipeline:.2} ms in the pipeline, {limit:.2} ms in the CLI limit"
        );
        // Every CLI run does the same work, so its CPU tells the machine's speed at the time, and
        // the CLI limit's throughput follows that cost. A VM's speed drifts between the phases of
        // one run; scaled to the CLI's cost during the pipeline, the limit is compared at one speed.
        // It also counts as drift what the pipeline's neighbours add to a CLI run, hence both lines.
        if pipeline > 0.0 {
            let scaled = agent_jobs * limit / pipeline;
            println!(
                "pipeline {jobs_per_s:.1} jobs/s = {:.0}% of the CLI limit at the CLI's speed during the pipeline ({agent_jobs:.1} jobs/s x {limit:.2} / {pipeline:.2} ms a run = {scaled:.1} jobs/s)",
                100.0 * jobs_per_s / scaled
            );
        }
    }
    bench.cleanup().await;
    Ok(())
}

/// Hands out a limit's jobs in the pipeline's order and shape: `jobs` over `projects`, each
/// project's jobs one at a time and in order. So the CLI's sessions grow as long, and the ledger's
/// chains as deep, as in the pipeline, and no lane idles while another still has work.
struct Schedule {
    state: std::sync::Mutex<ScheduleState>,
    freed: tokio::sync::Notify,
}

/// Jobs not yet handed out, as (project, round), and the projects in flight.
type ScheduleState = (VecDeque<(usize, usize)>, HashSet<usize>);

impl Schedule {
    fn new(jobs: usize, projects: usize) -> Arc<Schedule> {
        let projects = projects.max(1);
        Arc::new(Schedule {
            state: std::sync::Mutex::new((
                (0..jobs).map(|i| (i % projects, i / projects)).collect(),
                HashSet::new(),
            )),
            freed: tokio::sync::Notify::new(),
        })
    }

    /// The next job whose project is not in flight; `None` once every job was handed out.
    async fn next(&self) -> Option<(usize, usize)> {
        loop {
            // Taken before looking, so a project freed in between still wakes this lane.
            let freed = self.freed.notified();
            {
                let mut state = self.state.lock().expect("lock");
                let (queue, busy) = &mut *state;
                if queue.is_empty() {
                    return None;
                }
                if let Some(i) = queue.iter().position(|(p, _)| !busy.contains(p)) {
                    let (project, round) = queue.remove(i).expect("a position in the queue");
                    busy.insert(project);
                    return Some((project, round));
                }
            }
            freed.await;
        }
    }

    /// Marks `project`'s job done, so its next one can be handed out.
    fn done(&self, project: usize) {
        self.state.lock().expect("lock").1.remove(&project);
        self.freed.notify_waiters();
    }
}

/// Jobs/s of the CLI alone: `jobs` jobs of four runs over `projects` projects, driven as the
/// workers drive them: `replicas` threads, each with its own single-threaded runtime, agent and
/// supervisor, running `concurrency` jobs at once. Each project's jobs continue its session, as the
/// pipeline's do; `label` keeps each measurement's sessions apart.
async fn agent_limit(
    bench: &Bench,
    replicas: usize,
    concurrency: usize,
    jobs: usize,
    projects: usize,
    label: &str,
) -> anyhow::Result<f64> {
    let schedule = Schedule::new(jobs, projects);
    let sessions = Arc::new(std::sync::Mutex::new(HashMap::<usize, String>::new()));
    let started = Instant::now();
    let mut threads = Vec::with_capacity(replicas);
    let in_bench_dir = |name: String| bench.dir.join(name).display().to_string();
    for replica in 0..replicas {
        let agent = Agent::new(AgentConfig {
            program: bench.bins.join("claude-emulator"),
            // As the worker does, with the worker's executable.
            supervisor: Some(bench.bins.join("baton-worker")),
            env: vec![
                (
                    "CLAUDE_CONFIG_DIR".into(),
                    in_bench_dir(format!("claude-limit-{label}")),
                ),
                // The pipeline's runs log themselves for the overhead measure; the limit's do the
                // same work, so the two compare like for like.
                (
                    "CLAUDE_EMULATOR_LOG".into(),
                    in_bench_dir(format!("limit-runs-{label}.jsonl")),
                ),
            ],
            ..AgentConfig::default()
        });
        let schedule = schedule.clone();
        let sessions = sessions.clone();
        let workspace = bench.dir.join(format!("limit-workspace-{label}"));
        threads.push(
            std::thread::Builder::new()
                .name(format!("cli-limit-{replica}"))
                .spawn(move || -> anyhow::Result<()> {
                    let runtime = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()?;
                    runtime.block_on(async move {
                        let mut set = JoinSet::new();
                        for _ in 0..concurrency {
                            set.spawn(cli_lane(
                                agent.clone(),
                                schedule.clone(),
                                sessions.clone(),
                                workspace.clone(),
                            ));
                        }
                        while let Some(r) = set.join_next().await {
                            r??;
                        }
                        anyhow::Ok(())
                    })
                })?,
        );
    }
    let joined = tokio::task::spawn_blocking(move || {
        threads
            .into_iter()
            .map(|t| {
                t.join()
                    .map_err(|_| anyhow!("a CLI limit thread panicked"))?
            })
            .collect::<anyhow::Result<Vec<()>>>()
    })
    .await?;
    joined?;
    Ok(jobs as f64 / started.elapsed().as_secs_f64())
}

/// One lane of the CLI limit: takes jobs from the schedule and runs each job's four runs, resuming
/// the project's session as the worker would.
async fn cli_lane(
    agent: Agent,
    schedule: Arc<Schedule>,
    sessions: Arc<std::sync::Mutex<HashMap<usize, String>>>,
    workspace: PathBuf,
) -> anyhow::Result<()> {
    while let Some((project, round)) = schedule.next().await {
        let dir = workspace.join(format!("project-{project}"));
        std::fs::create_dir_all(&dir)?;
        let mut session = sessions.lock().expect("lock").get(&project).cloned();
        for step in Step::plan(JobKind::Create) {
            let prompt = if *step == Step::Compact {
                "/compact".to_string()
            } else {
                format!("Change {round} of project {project}: {step}")
            };
            let req = RunRequest {
                cwd: dir.clone(),
                prompt,
                resume: session.clone(),
                ..RunRequest::default()
            };
            let report = agent.run(&req, &CancellationToken::new()).await?;
            session = report.session_id;
        }
        if let Some(session) = session {
            sessions.lock().expect("lock").insert(project, session);
        }
        schedule.done(project);
    }
    Ok(())
}

/// The ledger's floor: each of a job's transactions reduced to the one thing a run's record cannot
/// do without, a row written and durably committed. `lanes` connections of their own (as the
/// workers' records have) each update their own row, so no lane waits for another's lock. Returns
/// jobs/s and what the machine spent per job; what a job's real transactions cost beyond this is
/// the ledger's own work (statements, indexes, constraints), the rest is the commit and the WAL's
/// flush, which no schema can save.
async fn commit_floor(db_url: &str, lanes: usize, jobs: usize) -> anyhow::Result<(f64, Spent)> {
    let mut setup = sqlx::PgConnection::connect(db_url).await?;
    sqlx::query("CREATE TABLE bench_commit_floor (lane integer PRIMARY KEY, n bigint NOT NULL)")
        .execute(&mut setup)
        .await?;
    sqlx::query("INSERT INTO bench_commit_floor SELECT g, 0 FROM generate_series(0, $1 - 1) g")
        .bind(i32::try_from(lanes)?)
        .execute(&mut setup)
        .await?;
    let mut conns = Vec::with_capacity(lanes);
    for _ in 0..lanes {
        conns.push(sqlx::PgConnection::connect(db_url).await?);
    }
    let commits = jobs * job_transactions();
    let machine = Machine::read();
    let started = Instant::now();
    let mut set = JoinSet::new();
    for (lane, mut conn) in conns.into_iter().enumerate() {
        let share = commits / lanes + usize::from(lane < commits % lanes);
        let lane = i32::try_from(lane)?;
        set.spawn(async move {
            for _ in 0..share {
                sqlx::query("UPDATE bench_commit_floor SET n = n + 1 WHERE lane = $1")
                    .bind(lane)
                    .execute(&mut conn)
                    .await?;
            }
            anyhow::Ok(())
        });
    }
    while let Some(r) = set.join_next().await {
        r??;
    }
    let jobs_per_s = jobs as f64 / started.elapsed().as_secs_f64();
    Ok((jobs_per_s, machine.per_job(jobs)))
}

/// A build job's ledger transactions: its claim and one record per step.
fn job_transactions() -> usize {
    1 + Step::plan(JobKind::Update).len()
}

/// Jobs/s of Redis alone: each job's queue operations at `lanes` at once.
async fn redis_limit(bench: &Bench, lanes: usize, jobs: usize) -> anyhow::Result<f64> {
    let queue = Queue::connect(
        &bench.redis_url,
        &format!("{}-limit", bench.stream),
        "limit",
    )
    .await?;
    queue.ensure_group().await?;
    let per_lane = jobs.div_ceil(lanes);
    let started = Instant::now();
    let mut set = JoinSet::new();
    for lane in 0..lanes {
        let queue = queue.clone();
        set.spawn(async move {
            let consumer_name = format!("limit-{lane}");
            let mut consumer = queue.consumer(&consumer_name).await?;
            for j in 0..per_lane {
                let job = NewJob {
                    kind: Some(JobKind::Create),
                    project_id: format!("redis-{lane}"),
                    version_id: format!("redis-{lane}-{j}"),
                    user_id: "bench".into(),
                    prompt: "x".into(),
                    ..NewJob::default()
                }
                .into_job(&Limits::default())?;
                queue.enqueue(&job).await?;
                let Some(delivery) = consumer
                    .next(1, Duration::from_millis(100))
                    .await?
                    .into_iter()
                    .next()
                else {
                    bail!("no delivery");
                };
                queue
                    .try_start(&consumer_name, &delivery, Duration::from_secs(30))
                    .await?;
                // As a worker does with runs this short: `job_started` with the checkpoint read;
                // per run one checkpoint carrying `run_started`, `session_seen` and `run_finished`
                // (a run over within the start window sends its progress with its end); the ack
                // carrying `job_completed`.
                let event =
                    |kind| baton_core::events::Event::new(kind, &job.build_id, &job.project_id);
                queue
                    .publish_and_load_checkpoint(&event(EventType::JobStarted), &job.build_id)
                    .await?;
                for _ in 0..4 {
                    let checkpoint = baton_core::Checkpoint {
                        session_id: "s".into(),
                        build_id: job.build_id.clone(),
                        project_path: job.project_path.clone(),
                        files_created: vec![],
                        step: "build".into(),
                        phase: Phase::Finished,
                        updated_at: Utc::now(),
                    };
                    let events: Vec<_> = [
                        EventType::RunStarted,
                        EventType::SessionSeen,
                        EventType::RunFinished,
                    ]
                    .into_iter()
                    .map(event)
                    .collect();
                    let events: Vec<_> = events.iter().collect();
                    queue
                        .save_checkpoint_with_events(&checkpoint, &events)
                        .await?;
                }
                queue
                    .finish_with_event(
                        &consumer_name,
                        &delivery,
                        Ending::Ack,
                        Some(&event(EventType::JobCompleted)),
                    )
                    .await?;
            }
            anyhow::Ok(())
        });
    }
    while let Some(r) = set.join_next().await {
        r??;
    }
    let jobs_per_s = (per_lane * lanes) as f64 / started.elapsed().as_secs_f64();
    queue.delete_all_keys().await?;
    Ok(jobs_per_s)
}

async fn slow(args: &Args) -> anyhow::Result<()> {
    // Memory per in-flight job: one worker holding `in_flight` slow jobs at once.
    let mut bench = Bench::new(args, "slow").await?;
    let queue = bench.queue().await?;
    let latency = args.latency_ms.to_string();
    let pid = bench.start_worker(&[
        ("BATON_CONCURRENCY", args.in_flight.to_string()),
        ("CLAUDE_EMULATOR_LATENCY_MS", latency.clone()),
    ])?;
    tokio::time::sleep(Duration::from_millis(800)).await;
    let idle = rss_kib(pid, "VmRSS:");
    let from = queue.last_event_id().await?;
    let builds = enqueue(&queue, args.in_flight, args.in_flight, "slow").await?;
    let mut peak = idle;
    let mut most_children = 0;
    let deadline = Instant::now() + Duration::from_secs(120);
    while Instant::now() < deadline {
        let children = count_children(pid);
        most_children = most_children.max(children);
        peak = peak.max(rss_kib(pid, "VmRSS:"));
        if children >= args.in_flight {
            // Hold the sample a moment: every job is in flight now.
            tokio::time::sleep(Duration::from_millis(300)).await;
            peak = peak.max(rss_kib(pid, "VmRSS:"));
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    wait_completed(&queue, &from, &builds, Duration::from_secs(600)).await?;
    println!("\n## Slow runs: {} ms each, one worker\n", args.latency_ms);
    println!("| measure | value |\n|---|---|");
    println!("| CLI runs in flight at the sample | {most_children} |");
    println!(
        "| worker RSS idle / with {} jobs in flight | {:.1} MB / {:.1} MB |",
        args.in_flight,
        idle as f64 / 1024.0,
        peak as f64 / 1024.0
    );
    println!(
        "| memory per in-flight job | {:.1} KB |",
        (peak.saturating_sub(idle)) as f64 / args.in_flight.max(1) as f64
    );
    bench.cleanup().await;

    // Throughput across concurrency and replicas.
    println!(
        "\n| replicas | concurrency | jobs | jobs/s | expected at zero overhead |\n|---|---|---|---|---|"
    );
    for (replicas, concurrency) in [(1, 8), (1, 32), (2, 32)] {
        let mut bench = Bench::new(args, "scale").await?;
        let queue = bench.queue().await?;
        for _ in 0..replicas {
            bench.start_worker(&[
                ("BATON_CONCURRENCY", concurrency.to_string()),
                ("CLAUDE_EMULATOR_LATENCY_MS", latency.clone()),
            ])?;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        let jobs = replicas * concurrency * 2;
        let from = queue.last_event_id().await?;
        let started = Instant::now();
        let builds = enqueue(&queue, jobs, jobs, "scale").await?;
        wait_completed(&queue, &from, &builds, Duration::from_secs(600)).await?;
        let rate = jobs as f64 / started.elapsed().as_secs_f64();
        let ideal = (replicas * concurrency) as f64 / (4.0 * args.latency_ms as f64 / 1000.0);
        println!("| {replicas} | {concurrency} | {jobs} | {rate:.2} | {ideal:.2} |");
        bench.cleanup().await;
    }
    Ok(())
}

/// Live CLI processes that a worker started: its children.
fn count_children(worker: u32) -> usize {
    let parent = |pid: u32| -> Option<u32> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        let (_, rest) = stat.rsplit_once(')')?;
        // After the command: state, then the parent's pid.
        rest.split_whitespace().nth(1)?.parse().ok()
    };
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_string_lossy().parse::<u32>().ok())
        .filter(|&pid| {
            let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
            comm.trim() == "claude-emulator" && parent(pid) == Some(worker)
        })
        .count()
}

async fn failover(args: &Args) -> anyhow::Result<()> {
    let claim_idle = 10u64;
    let mut bench = Bench::new(args, "failover").await?;
    let queue = bench.queue().await?;
    let env = [
        ("BATON_CLAIM_IDLE", claim_idle.to_string()),
        ("BATON_HEARTBEAT", "2".to_string()),
        ("BATON_CONCURRENCY", "4".to_string()),
        ("CLAUDE_EMULATOR_LATENCY_MS", "1000".to_string()),
    ];
    let victim = bench.start_worker(&env)?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let from = queue.last_event_id().await?;
    let builds = enqueue(&queue, 8, 8, "failover").await?;
    while count_children(victim) < 4 {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    bench.start_worker(&env)?;
    let killed = Utc::now();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(victim as i32),
        nix::sys::signal::Signal::SIGKILL,
    )?;
    wait_completed(&queue, &from, &builds, Duration::from_secs(300)).await?;
    // When each of the dead worker's jobs was claimed again, from the events stream.
    let mut reader = queue.event_reader(&from).await?;
    let mut resumed = Vec::new();
    loop {
        let events = reader.next(Duration::from_millis(200)).await?;
        if events.is_empty() {
            break;
        }
        for e in events {
            if e.event == EventType::JobStarted && e.attempt.unwrap_or(1) > 1 {
                resumed.push((e.at - killed).num_milliseconds() as f64 / 1000.0);
            }
        }
    }
    resumed.sort_by(f64::total_cmp);
    println!(
        "\n## Failover: kill -9 of a worker running 4 jobs (BATON_CLAIM_IDLE {claim_idle} s)\n"
    );
    println!("| measure | value |\n|---|---|");
    println!("| jobs taken over | {} |", resumed.len());
    println!(
        "| kill to takeover, slowest | {:.1} s (target: claim idle + 5 = {} s) |",
        resumed.last().copied().unwrap_or(f64::NAN),
        claim_idle + 5
    );
    bench.cleanup().await;
    Ok(())
}

/// CPU seconds spent by each part of the pipeline.
#[derive(Debug, Default, Clone, Copy)]
struct Cpu {
    postgres: f64,
    redis: f64,
    workers: f64,
    children: f64,
    bench: f64,
}

impl Cpu {
    /// Cumulative CPU of the Postgres and Redis servers, the workers, the workers' reaped children
    /// (the CLI runs), and the bench: this process and the Postgres backends in `bench_backends`.
    fn sample(workers: &[u32], bench_backends: &[u32]) -> Cpu {
        let mut cpu = Cpu::default();
        for entry in std::fs::read_dir("/proc")
            .into_iter()
            .flatten()
            .filter_map(Result::ok)
        {
            let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
                continue;
            };
            let comm = std::fs::read_to_string(entry.path().join("comm")).unwrap_or_default();
            match comm.trim() {
                "postgres" if bench_backends.contains(&pid) => {
                    cpu.bench += process_times(pid).map(|t| t.0).unwrap_or(0.0)
                }
                "postgres" => cpu.postgres += process_times(pid).map(|t| t.0).unwrap_or(0.0),
                "redis-server" => cpu.redis += process_times(pid).map(|t| t.0).unwrap_or(0.0),
                _ => {}
            }
        }
        for &w in workers {
            if let Some((own, children)) = process_times(w) {
                cpu.workers += own;
                cpu.children += children;
            }
        }
        cpu.bench += own_cpu();
        cpu
    }

    fn since(&self, before: &Cpu) -> Cpu {
        Cpu {
            postgres: self.postgres - before.postgres,
            redis: self.redis - before.redis,
            workers: self.workers - before.workers,
            children: self.children - before.children,
            bench: self.bench - before.bench,
        }
    }

    fn total(&self) -> f64 {
        self.postgres + self.redis + self.workers + self.children + self.bench
    }
}

/// CPU seconds process `pid` has spent itself, and those of its reaped children; `None` once it is
/// gone.
fn process_times(pid: u32) -> Option<(f64, f64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command, in parentheses, may hold spaces; the fields after it do not.
    let (_, rest) = stat.rsplit_once(')')?;
    let f: Vec<f64> = rest
        .split_whitespace()
        .map(|x| x.parse().unwrap_or(0.0))
        .collect();
    // After the command: state(0) ... utime(11) stime(12) cutime(13) cstime(14), in USER_HZ, which
    // Linux fixes at 100 per second.
    let at = |i: usize| f.get(i).copied().unwrap_or(0.0) / 100.0;
    Some((at(11) + at(12), at(13) + at(14)))
}

/// CPU seconds of this process's reaped children: during the CLI limit, the CLI's processes and
/// their supervisors, as a worker's reaped children are in the pipeline.
fn reaped_cpu() -> f64 {
    process_times(std::process::id()).map_or(0.0, |t| t.1)
}

/// CPU seconds this process has spent itself: its runtime and, during the CLI limit, the lanes that
/// drive the CLI as a worker would.
fn own_cpu() -> f64 {
    process_times(std::process::id()).map_or(0.0, |t| t.0)
}

/// What the whole machine has done since it started: CPU seconds spent working, over every core and
/// process (user, nice, system, irq and softirq in `/proc/stat`; idle, I/O wait and time stolen by
/// the hypervisor are not work), context switches, and the seconds the hypervisor gave this
/// machine's cores to someone else while they had work (steal). The difference of two readings is
/// what a phase cost, whoever spent it.
#[derive(Clone, Copy)]
struct Machine {
    busy: f64,
    switches: f64,
    stolen: f64,
    at: Instant,
}

/// What the machine did during one phase of the bench, from a [`Machine`] reading to its end.
#[derive(Clone, Copy)]
struct Spent {
    /// CPU seconds of work per job.
    busy: f64,
    /// Context switches per job.
    switches: f64,
    /// The share of the cores' time the hypervisor took away. Every figure of a phase where this is
    /// more than a few percent measured a slower machine than the phases around it.
    stolen: f64,
}

impl Machine {
    fn read() -> Machine {
        let (busy, stolen, switches) =
            parse_stat(&std::fs::read_to_string("/proc/stat").unwrap_or_default());
        Machine {
            busy,
            switches,
            stolen,
            at: Instant::now(),
        }
    }

    /// What the machine has done per job since this reading, over `jobs`.
    fn per_job(&self, jobs: usize) -> Spent {
        let now = Machine::read();
        let core_seconds = now.at.duration_since(self.at).as_secs_f64() * cores() as f64;
        Spent {
            busy: (now.busy - self.busy) / jobs as f64,
            switches: (now.switches - self.switches) / jobs as f64,
            stolen: if core_seconds > 0.0 {
                (now.stolen - self.stolen) / core_seconds
            } else {
                0.0
            },
        }
    }
}

/// Busy seconds, stolen seconds and context switches from the text of `/proc/stat`. Missing
/// fields read as zero: an older kernel without the steal column simply reports none.
fn parse_stat(stat: &str) -> (f64, f64, f64) {
    let ticks: Vec<f64> = stat
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .skip(1)
        .map(|x| x.parse().unwrap_or(0.0))
        .collect();
    // In USER_HZ, which Linux fixes at 100 per second.
    let seconds =
        |fields: &[usize]| fields.iter().filter_map(|&i| ticks.get(i)).sum::<f64>() / 100.0;
    let switches = stat
        .lines()
        .find_map(|l| l.strip_prefix("ctxt "))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0.0);
    (seconds(&[0, 1, 2, 5, 6]), seconds(&[7]), switches)
}

fn cores() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

fn machine() -> String {
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let mem_gib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .next()
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|k| k.parse::<f64>().ok())
        })
        .map(|kib| kib / 1024.0 / 1024.0)
        .unwrap_or(0.0);
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines().find_map(|l| {
                l.strip_prefix("model name")
                    .map(|v| v.trim_start_matches([' ', '\t', ':']).to_string())
            })
        })
        .unwrap_or_else(|| "unknown CPU".into());
    format!("{cores} cores ({cpu}), {mem_gib:.0} GiB")
}

/// The line that warns of a phase the hypervisor took too much of, if any: `stolen` holds the
/// pipeline and the CLI limit's two phases first, then the ledger's and Redis's limits.
fn steal_warning(stolen: &[(&str, f64)]) -> Option<String> {
    let worst = |phases: &[(&str, f64)]| {
        phases
            .iter()
            .filter(|(_, share)| *share > STEAL_WARNING)
            .max_by(|a, b| a.1.total_cmp(&b.1))
            .map(|(phase, share)| (phase.to_string(), 100.0 * share))
    };
    // The fraction of the tightest limit rests on the pipeline and the CLI limit alone; the ledger's
    // and Redis's phases feed only the ceiling and the combined bound. Those phases are also short
    // (a second or less), where `/proc/stat`'s 10 ms ticks make the share coarse.
    let (main, side) = stolen.split_at(stolen.len().min(3));
    if let Some((phase, share)) = worst(main) {
        return Some(format!(
            "warning: the hypervisor took {share:.1}% of the cores' time during {phase}; this run \
             compared a slower machine with a faster one, so its fractions do not hold: run it again"
        ));
    }
    worst(side).map(|(phase, share)| {
        format!(
            "note: the hypervisor took {share:.1}% of the cores' time during {phase}; the ceiling \
             and the combined bound are less reliable, the fraction of the CLI limit does not \
             depend on it"
        )
    })
}

/// The share of the tightest limit the pipeline is to reach (the target `just bench` is held to).
const TARGET: f64 = 0.70;

/// What a job may cost for the pipeline to reach [`TARGET`] of the tightest limit, and what it
/// did cost. Throughput on a CPU-bound machine is busy cores over CPU per job, so the target fixes
/// a budget per job; set against what the limits spend alone, it shows how much room is left.
struct Budget {
    cores: usize,
    /// The share of the cores' time the pipeline kept busy.
    busy: f64,
    /// The tightest limit: its name, jobs/s and machine CPU per job.
    tightest: (&'static str, f64, f64),
    /// The other two limits' machine CPU per job together.
    others: f64,
    /// The same with the ledger at its commit floor, unless the ledger is the tightest.
    others_at_floor: Option<f64>,
    /// The pipeline's machine CPU per job.
    pipeline: f64,
}

impl Budget {
    /// Machine CPU seconds a job may cost.
    fn per_job(&self) -> f64 {
        self.cores as f64 * self.busy / (TARGET * self.tightest.1)
    }

    fn line(&self) -> String {
        let ms = |s: f64| format!("{:.2} ms", s * 1000.0);
        let (name, _, tightest_cpu) = self.tightest;
        let budget = self.per_job();
        let floor = self
            .others_at_floor
            .map(|f| format!(" ({} with the ledger at its commit floor)", ms(f)))
            .unwrap_or_default();
        format!(
            "budget for {:.0}% of the tightest limit with {:.0}% of the cores busy, as in the \
             pipeline: {} of machine CPU per job, which leaves {} beside the {name} limit's {}; \
             the other two limits alone took {}{floor}, the pipeline {} beside it",
            100.0 * TARGET,
            100.0 * self.busy,
            ms(budget),
            ms(budget - tightest_cpu),
            ms(tightest_cpu),
            ms(self.others),
            ms(self.pipeline - tightest_cpu),
        )
    }
}

/// Where the pipeline's machine CPU per job beyond its three limits went: each part of the pipeline
/// as (in the pipeline, in its limit alone), all in seconds per job. The limits each had the machine
/// to themselves; the pipeline's parts share its cores, so a part that costs more here pays for
/// the sharing (caches another process emptied, a server woken for each request) or for work the
/// limits leave out.
struct Excess {
    /// The pipeline's machine CPU per job.
    pipeline: f64,
    /// The three limits' machine CPU per job together.
    limits: f64,
    /// The CLI's processes (with their supervisors): the workers' reaped children, and the CLI
    /// limit's.
    cli: (f64, f64),
    /// The Postgres server's processes: in the pipeline, and in the ledger's limit.
    postgres: (f64, f64),
    /// The Redis server: in the pipeline, and in Redis's limit.
    redis: (f64, f64),
    /// The clients: the workers, and the three limits' drivers (the CLI limit's lanes and the
    /// ledger's and Redis's clients), which do the rest of a worker's work between them.
    clients: (f64, f64),
}

impl Excess {
    fn line(&self) -> String {
        let ms = |s: f64| format!("{:+.2} ms", s * 1000.0);
        let part = |name: &str, (pipeline, alone): (f64, f64), alone_name: &str| {
            format!(
                "{name} {} ({:.2} ms in the pipeline, {:.2} ms {alone_name})",
                ms(pipeline - alone),
                pipeline * 1000.0,
                alone * 1000.0
            )
        };
        let parts = [self.cli, self.postgres, self.redis, self.clients];
        let named: f64 = parts.iter().map(|(p, a)| p - a).sum();
        format!(
            "where the pipeline's {} per job beyond its limits went: {}, {}, {}, {}; the rest {} \
             (the bench, the kernel's threads and interrupts)",
            ms(self.pipeline - self.limits),
            part("the CLI's processes", self.cli, "in the CLI limit"),
            part("Postgres", self.postgres, "in the ledger's limit"),
            part("Redis", self.redis, "in its limit"),
            part("the workers", self.clients, "for the limits' drivers"),
            ms(self.pipeline - self.limits - named),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steal_in_the_pipeline_or_cli_limit_voids_the_fractions_and_elsewhere_only_the_ceiling() {
        let phases = |shares: [f64; 5]| {
            let names = ["the pipeline", "before", "after", "the ledger's", "Redis's"];
            steal_warning(&names.into_iter().zip(shares).collect::<Vec<_>>())
        };
        assert_eq!(
            phases([0.01, 0.0, 0.015, 0.0, 0.02]),
            None,
            "at most 2% is fine"
        );
        let line = phases([0.01, 0.03, 0.0, 0.0, 0.30]).unwrap();
        assert!(
            line.starts_with("warning: the hypervisor took 3.0%"),
            "{line}"
        );
        assert!(line.contains("during before;"), "{line}");
        let line = phases([0.0, 0.0, 0.0, 0.05, 0.12]).unwrap();
        assert!(
            line.starts_with("note: the hypervisor took 12.0%"),
            "{line}"
        );
        assert!(line.contains("during Redis's;"), "{line}");
    }

    #[test]
    fn the_budget_is_what_a_job_may_cost_at_the_target_with_the_cores_as_busy() {
        let budget = Budget {
            cores: 2,
            busy: 0.9,
            tightest: ("CLI runs", 180.0, 0.008),
            others: 0.003,
            others_at_floor: Some(0.002),
            pipeline: 0.0125,
        };
        // 2 cores x 90% / (70% x 180 jobs/s) = 14.29 ms a job, 6.29 ms beyond the CLI's 8 ms.
        assert!((budget.per_job() - 0.014_285_7).abs() < 1e-6);
        let line = budget.line();
        assert!(
            line.starts_with("budget for 70% of the tightest limit with 90% of the cores busy"),
            "{line}"
        );
        assert!(
            line.contains(
                ": 14.29 ms of machine CPU per job, which leaves 6.29 ms beside the CLI runs limit's 8.00 ms;"
            ),
            "{line}"
        );
        assert!(line.contains("alone took 3.00 ms (2.00 ms with the ledger at its commit floor), the pipeline 4.50 ms beside it"), "{line}");
        let ledger_tightest = Budget {
            others_at_floor: None,
            ..budget
        };
        assert!(!ledger_tightest.line().contains("floor"));
    }

    #[test]
    fn the_excess_is_each_part_against_its_limit_and_the_rest_is_what_no_part_accounts_for() {
        let excess = Excess {
            pipeline: 0.0130,
            limits: 0.0093,
            cli: (0.0064, 0.0057),
            postgres: (0.0031, 0.0017),
            redis: (0.0006, 0.0003),
            clients: (0.0022, 0.0013),
        };
        let line = excess.line();
        assert!(
            line.starts_with("where the pipeline's +3.70 ms per job beyond its limits went: "),
            "{line}"
        );
        assert!(
            line.contains(
                "the CLI's processes +0.70 ms (6.40 ms in the pipeline, 5.70 ms in the CLI limit), "
            ),
            "{line}"
        );
        assert!(
            line.contains(
                "Postgres +1.40 ms (3.10 ms in the pipeline, 1.70 ms in the ledger's limit), "
            ),
            "{line}"
        );
        assert!(
            line.contains("Redis +0.30 ms (0.60 ms in the pipeline, 0.30 ms in its limit), "),
            "{line}"
        );
        assert!(
            line.contains(
                "the workers +0.90 ms (2.20 ms in the pipeline, 1.30 ms for the limits' drivers); "
            ),
            "{line}"
        );
        // 3.70 - (0.70 + 1.40 + 0.30 + 0.90) = 0.40 ms that no part accounts for.
        assert!(line.contains("; the rest +0.40 ms (the bench"), "{line}");
        let cheaper = Excess {
            postgres: (0.0015, 0.0017),
            ..excess
        };
        assert!(
            cheaper.line().contains("Postgres -0.20 ms"),
            "{}",
            cheaper.line()
        );
    }

    #[test]
    fn stat_reads_work_steal_and_switches_apart() {
        // user nice system idle iowait irq softirq steal guest guest_nice
        let stat = "cpu  1000 20 300 5000 400 6 70 800 0 0\ncpu0 1 2 3 4 5 6 7 8 0 0\nctxt 123456\nbtime 1\n";
        let (busy, stolen, switches) = parse_stat(stat);
        // Idle, I/O wait and steal are not work.
        assert_eq!(busy, (1000.0 + 20.0 + 300.0 + 6.0 + 70.0) / 100.0);
        assert_eq!(stolen, 8.0);
        assert_eq!(switches, 123456.0);
    }

    #[test]
    fn stat_without_a_steal_column_reports_none_stolen() {
        let (busy, stolen, switches) = parse_stat("cpu  100 0 100 900 0 0 0\nctxt 7\n");
        assert_eq!((busy, stolen, switches), (2.0, 0.0, 7.0));
        assert_eq!(parse_stat(""), (0.0, 0.0, 0.0));
    }
}
