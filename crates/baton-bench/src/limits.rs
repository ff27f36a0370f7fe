//! The three limits a job is made of, each measured alone with the machine to itself: CLI runs,
//! the ledger's transactions (and their commit floor), and Redis's operations.

use super::*;

/// Hands out a limit's jobs in the pipeline's order and shape: `jobs` over `projects`, each
/// project's jobs one at a time and in order. So the CLI's sessions grow as long, and the ledger's
/// chains as deep, as in the pipeline, and no lane idles while another still has work.
pub(crate) struct Schedule {
    pub(crate) state: std::sync::Mutex<ScheduleState>,
    pub(crate) freed: tokio::sync::Notify,
}

impl Schedule {
    pub(crate) fn new(jobs: usize, projects: usize) -> Arc<Schedule> {
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
    pub(crate) async fn next(&self) -> Option<(usize, usize)> {
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
    pub(crate) fn done(&self, project: usize) {
        self.state.lock().expect("lock").1.remove(&project);
        self.freed.notify_waiters();
    }
}

/// Jobs/s of the CLI alone: `jobs` jobs of four runs over `projects` projects, driven as the
/// workers drive them: `replicas` threads, each with its own single-threaded runtime, agent and
/// supervisor, running `concurrency` jobs at once. Each project's jobs continue its session, as the
/// pipeline's do; `label` keeps each measurement's sessions apart.
pub(crate) async fn agent_limit(
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
pub(crate) async fn cli_lane(
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
pub(crate) async fn commit_floor(
    db_url: &str,
    lanes: usize,
    jobs: usize,
) -> anyhow::Result<(f64, Spent)> {
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
pub(crate) fn job_transactions() -> usize {
    1 + Step::plan(JobKind::Update).len()
}

/// Jobs/s of Redis alone: each job's queue operations at `lanes` at once.
pub(crate) async fn redis_limit(bench: &Bench, lanes: usize, jobs: usize) -> anyhow::Result<f64> {
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
                        step: baton_core::Step::Build,
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
