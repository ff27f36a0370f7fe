//! The pipeline under test: a scratch database and stream, worker replicas, enqueueing jobs and
//! waiting for them, and what Postgres's backends wait for meanwhile.

use super::*;

/// One isolated installation: a fresh database and stream, scratch folders, release binaries.
pub(crate) struct Bench {
    pub(crate) admin_url: String,
    pub(crate) db_name: String,
    pub(crate) db_url: String,
    pub(crate) redis_url: String,
    pub(crate) stream: String,
    pub(crate) dir: PathBuf,
    pub(crate) bins: PathBuf,
    pub(crate) workers: Vec<Child>,
}

impl Bench {
    pub(crate) async fn new(args: &Args, label: &str) -> anyhow::Result<Bench> {
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

    pub(crate) fn emulator_log(&self) -> PathBuf {
        self.dir.join("emulator-runs.jsonl")
    }

    pub(crate) fn start_worker(&mut self, env: &[(&str, String)]) -> anyhow::Result<u32> {
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

    pub(crate) async fn queue(&self) -> anyhow::Result<Queue> {
        let q = Queue::connect(&self.redis_url, &self.stream, baton_core::DEFAULT_GROUP).await?;
        q.ensure_group().await?;
        Ok(q)
    }

    /// Stops every worker with SIGTERM and waits for them. Each is signalled once: a worker already
    /// waited for is no longer ours, and its pid may belong to another process by now.
    pub(crate) fn stop_workers(&mut self) {
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

    pub(crate) async fn cleanup(mut self) {
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
pub(crate) async fn enqueue(
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
        builds.push(done.build_id.into_string());
    }
    Ok(builds)
}

/// Follows the events stream until every build in `builds` completed; fails on a failed job.
pub(crate) async fn wait_completed(
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
pub(crate) async fn wait_finished_in_ledger(
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
pub(crate) struct PgWaits {
    pub(crate) conn: sqlx::PgConnection,
    /// The pipeline's database.
    pub(crate) db_name: String,
    /// The sampling connection's own backend, which the CPU figures count as the bench's.
    pub(crate) backend: i32,
}

/// Samples per kind of wait, in the order of [`PgWaits::HEADING`].
pub(crate) struct WaitShares(pub(crate) [u64; 4]);

impl PgWaits {
    /// How often it samples. Each sample is a query of the bench's on the cores the pipeline is
    /// measured on: every 10 ms, the sampling was most of the bench's own CPU during a run.
    const EVERY: Duration = Duration::from_millis(25);
    pub(crate) const HEADING: &str = "Postgres backends in a pipeline transaction, sampled every 25 ms: running (on a core or waiting for one) / waiting for the WAL's flush / for a lock / other";

    pub(crate) async fn connect(admin_url: &str, db_name: &str) -> anyhow::Result<PgWaits> {
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
    pub(crate) async fn wal_flushes(&mut self) -> Option<(i64, f64)> {
        sqlx::query_as("SELECT wal_sync, wal_sync_time FROM pg_stat_wal")
            .fetch_one(&mut self.conn)
            .await
            .ok()
    }

    /// Samples every [`PgWaits::EVERY`] until `stop`, leaving out the backends of the sampler and of
    /// `watcher`.
    pub(crate) async fn sample(
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
    pub(crate) fn percentages(&self) -> String {
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

pub(crate) async fn xact_commits(admin_url: &str, db: &str) -> anyhow::Result<i64> {
    let mut conn = sqlx::PgConnection::connect(admin_url).await?;
    Ok(
        sqlx::query_scalar::<_, i64>("SELECT xact_commit FROM pg_stat_database WHERE datname = $1")
            .bind(db)
            .fetch_one(&mut conn)
            .await?,
    )
}
