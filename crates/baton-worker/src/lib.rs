//! The worker: reads jobs from the consumer group and runs each job's steps through the CLI,
//! checkpointing every run in Redis and recording it in the ledger.

pub mod config;

use std::path::{Path, PathBuf};
use std::time::Duration;

use baton_agent::{Agent, Outcome, RunReport, RunRequest};
use baton_core::policy::{self, Decision, FreshReason, PolicyConfig};
use baton_core::{BuildStatus, Checkpoint, Job, Limits, Step};
use baton_ledger::{Ledger, LedgerError, Recorded, RunMetrics, RunRecord};
use baton_queue::{Consumer, DeadLetter, Delivery, Queue};
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, error, info, info_span, warn};

pub use config::Config;

/// How long one read waits for a job before the loop checks for shutdown again.
const READ_BLOCK: Duration = Duration::from_secs(2);

/// A running worker's parts.
pub struct Worker {
    queue: Queue,
    ledger: Ledger,
    agent: Agent,
    workspace_root: PathBuf,
    limits: Limits,
    policy: PolicyConfig,
    consumer: String,
}

/// How a job's processing ended, for the loop and for tests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobEnd {
    /// Every step ran; the entry is acknowledged.
    Completed,
    /// The job cannot run; it went to the dead-letter stream with this reason.
    DeadLettered(String),
    /// A newer claim owns the job; this worker dropped it without writing.
    Fenced,
    /// The worker is shutting down or lost Redis/Postgres; the entry stays pending for a retry.
    LeftPending(String),
}

/// Why a job stopped before its end, inside [`Worker::run_steps`].
enum Stopped {
    Fenced,
    Failed(String),
    Interrupted(String),
}

impl From<LedgerError> for Stopped {
    fn from(e: LedgerError) -> Self {
        match e {
            LedgerError::Fenced { .. } => Stopped::Fenced,
            // Recording would fork the chain; the job cannot finish as it is.
            e @ LedgerError::StaleSession { .. } => Stopped::Failed(e.to_string()),
            other => Stopped::Interrupted(format!("ledger: {other}")),
        }
    }
}

impl Worker {
    /// Connects to Redis and Postgres, applies migrations unless told not to, and joins the group.
    pub async fn connect(config: &Config) -> anyhow::Result<Worker> {
        let queue = Queue::connect(&config.redis_url, &config.stream, &config.group).await?;
        queue.ensure_group().await?;
        let ledger = Ledger::connect(&config.database_url).await?;
        if !config.no_migrate {
            ledger.migrate().await?;
        }
        std::fs::create_dir_all(&config.workspace_root)?;
        resolve_program(&config.claude_bin)?;
        Ok(Worker {
            queue,
            ledger,
            agent: Agent::new(config.agent()),
            workspace_root: config.workspace_root.canonicalize()?,
            limits: config.limits(),
            policy: config.policy()?,
            consumer: config.consumer_name(),
        })
    }

    /// This worker's consumer name.
    pub fn consumer(&self) -> &str {
        &self.consumer
    }

    /// Reads and runs jobs until `shutdown`; in-flight runs are cancelled by `abort`.
    pub async fn run(
        &self,
        shutdown: CancellationToken,
        abort: CancellationToken,
    ) -> anyhow::Result<()> {
        let mut consumer: Consumer = self.queue.consumer(&self.consumer).await?;
        info!(consumer = %self.consumer, stream = %self.queue.stream(), group = %self.queue.group(), "worker started");
        while !shutdown.is_cancelled() {
            // The read is never cut short: entries Redis hands out are in this consumer's pending
            // list, and dropping the reply would strand them.
            let deliveries = match consumer.read(1, READ_BLOCK).await {
                Ok(d) => d,
                Err(e) => {
                    error!(error = %e, "reading the job stream failed; retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    consumer = match self.queue.consumer(&self.consumer).await {
                        Ok(c) => c,
                        Err(_) => continue,
                    };
                    continue;
                }
            };
            for delivery in deliveries {
                let end = self.process(&delivery, &abort).await;
                info!(entry = %delivery.id, end = ?end, "job processed");
            }
        }
        info!(consumer = %self.consumer, "worker stopped reading");
        Ok(())
    }

    /// Runs one delivered entry to its end.
    pub async fn process(&self, delivery: &Delivery, abort: &CancellationToken) -> JobEnd {
        let job = match delivery
            .payload
            .as_deref()
            .ok_or_else(|| format!("entry has no `{}` field", baton_core::JOB_FIELD))
            .and_then(|p| Job::from_json(p.as_bytes(), &self.limits).map_err(|e| e.to_string()))
        {
            Ok(job) => job,
            Err(reason) => {
                warn!(entry = %delivery.id, %reason, "refusing a malformed job");
                return self.dead_letter(delivery, &reason, 0, None).await;
            }
        };
        let span = info_span!("job", build_id = %job.build_id, project_id = %job.project_id, kind = %job.kind);
        self.process_job(delivery, job, abort)
            .instrument(span)
            .await
    }

    async fn process_job(
        &self,
        delivery: &Delivery,
        job: Job,
        abort: &CancellationToken,
    ) -> JobEnd {
        let cwd = match self.project_dir(&job.project_path) {
            Ok(dir) => dir,
            Err(reason) => {
                let _ = self.ledger.fail_unclaimed(&job, &reason).await;
                return self.dead_letter(delivery, &reason, 0, None).await;
            }
        };
        let claim = match self.ledger.claim_build(&job, Some(&delivery.id)).await {
            Ok(c) => c,
            Err(e) if e.is_terminal_for_job() => {
                let reason = e.to_string();
                let _ = self.ledger.fail_unclaimed(&job, &reason).await;
                return self.dead_letter(delivery, &reason, 0, None).await;
            }
            Err(e) => return JobEnd::LeftPending(format!("ledger: {e}")),
        };
        if let Some(status) = claim.finished {
            info!(
                status = status.as_str(),
                "build already finished; acknowledging the duplicate entry"
            );
            return self.ack(delivery, JobEnd::Completed).await;
        }
        info!(
            attempt = claim.attempt,
            fence = claim.fence,
            recorded = claim.recorded.len(),
            "job claimed"
        );

        match self.run_steps(&job, &cwd, &claim, abort).await {
            Ok(()) => match self
                .ledger
                .finish_build(&job.build_id, claim.fence, BuildStatus::Completed, None)
                .await
            {
                Ok(()) => self.ack(delivery, JobEnd::Completed).await,
                Err(LedgerError::Fenced { .. }) => JobEnd::Fenced,
                Err(e) => JobEnd::LeftPending(format!("ledger: {e}")),
            },
            Err(Stopped::Fenced) => {
                warn!("a newer claim owns this job; dropping it without writing");
                JobEnd::Fenced
            }
            Err(Stopped::Interrupted(why)) => {
                warn!(%why, "job interrupted; its entry stays pending");
                JobEnd::LeftPending(why)
            }
            Err(Stopped::Failed(reason)) => {
                match self
                    .ledger
                    .finish_build(
                        &job.build_id,
                        claim.fence,
                        BuildStatus::Failed,
                        Some(&reason),
                    )
                    .await
                {
                    Ok(()) => {}
                    Err(LedgerError::Fenced { .. }) => return JobEnd::Fenced,
                    Err(e) => error!(error = %e, "could not mark the build failed"),
                }
                self.dead_letter(
                    delivery,
                    &reason,
                    claim.attempt.max(0) as u32,
                    Some(&reason),
                )
                .await
            }
        }
    }

    async fn run_steps(
        &self,
        job: &Job,
        cwd: &Path,
        claim: &baton_ledger::Claim,
        abort: &CancellationToken,
    ) -> Result<(), Stopped> {
        // A replayed job resumes from the last run it recorded; otherwise the policy decides.
        let (mut session, mut fresh_reason) = match claim.recorded.last() {
            Some(last) => (Some(last.new_session_id.clone()), None),
            None => match policy::decide(job, &claim.project, &self.policy, chrono::Utc::now()) {
                Decision::Resume { session_id, stale } => {
                    if let Some(stale) = stale {
                        warn!(job_session = %stale, ledger_session = %session_id, "the job's previous_session_id is stale; resuming the project's newest");
                    }
                    (Some(session_id), None)
                }
                Decision::Fresh(reason) => {
                    info!(reason = reason.as_str(), "starting a fresh session");
                    (None, Some(reason))
                }
                Decision::Refuse(reason) => {
                    return Err(Stopped::Failed(format!("refused: {reason}")));
                }
            },
        };
        for &step in Step::plan(job.kind) {
            if claim.recorded.iter().any(|r| r.step == step.name()) {
                info!(step = step.name(), "step already recorded; skipping");
                continue;
            }
            self.ledger
                .start_step(&job.build_id, claim.fence, step)
                .await?;
            let report = loop {
                let report = self
                    .run_step(job, cwd, step, session.as_deref(), abort)
                    .await?;
                // The CLI lost the session: record it, and run the step again from a fresh one.
                if let (Outcome::ResumeNotFound { .. }, Some(missing)) =
                    (&report.outcome, session.as_deref())
                {
                    warn!(
                        step = step.name(),
                        session = missing,
                        "the CLI cannot find the session; continuing fresh"
                    );
                    self.ledger
                        .record_resume_fallback(job, claim.fence, step, missing)
                        .await?;
                    session = None;
                    fresh_reason = Some(FreshReason::ResumeFallback);
                    continue;
                }
                break report;
            };
            match &report.outcome {
                Outcome::Success => {
                    let Some(new_session) = report.session_id.clone() else {
                        return Err(Stopped::Failed(format!(
                            "{step}: the CLI reported no session id"
                        )));
                    };
                    self.checkpoint(job, step, &new_session, &report).await;
                    let record = RunRecord {
                        job,
                        fence: claim.fence,
                        step,
                        old_session_id: session.as_deref(),
                        new_session_id: &new_session,
                        metrics: metrics(&report),
                        fresh_reason: fresh_reason.take(),
                    };
                    if self.ledger.record_run(&record).await? == Recorded::AlreadyRecorded {
                        warn!(
                            step = step.name(),
                            "run was already recorded by an earlier claim"
                        );
                    }
                    session = Some(new_session);
                }
                Outcome::CompactionFailed { detail } if step.may_fail() => {
                    warn!(step = step.name(), %detail, "compaction did not happen; the job keeps its session");
                }
                Outcome::Cancelled => {
                    return Err(Stopped::Interrupted(format!("{step}: run cancelled")));
                }
                other => return Err(Stopped::Failed(format!("{step}: {other}"))),
            }
        }
        Ok(())
    }

    async fn run_step(
        &self,
        job: &Job,
        cwd: &Path,
        step: Step,
        session: Option<&str>,
        abort: &CancellationToken,
    ) -> Result<RunReport, Stopped> {
        let request = RunRequest {
            cwd: cwd.to_path_buf(),
            prompt: step.prompt(job),
            resume: session.map(str::to_string),
            ..RunRequest::default()
        };
        let span = info_span!(
            "run",
            step = step.name(),
            session_in = session.unwrap_or("-")
        );
        let report = self
            .agent
            .run(&request, abort)
            .instrument(span)
            .await
            .map_err(|e| Stopped::Interrupted(e.to_string()))?;
        info!(step = step.name(), outcome = %report.outcome, session_out = report.session_id.as_deref().unwrap_or("-"), ms = report.wall_ms, "agent run finished");
        Ok(report)
    }

    async fn checkpoint(&self, job: &Job, step: Step, session: &str, report: &RunReport) {
        let checkpoint = Checkpoint {
            session_id: session.to_string(),
            build_id: job.build_id.clone(),
            project_path: job.project_path.clone(),
            files_created: report.files_created.clone(),
            step: step.name().to_string(),
            updated_at: chrono::Utc::now(),
        };
        // The ledger is the source of truth; a lost checkpoint only costs the fast path.
        if let Err(e) = self.queue.save_checkpoint(&checkpoint).await {
            warn!(error = %e, "could not save the checkpoint");
        }
    }

    /// The project's folder under the workspace root, created on first sight. Refuses a path that
    /// leads out of the root through a symlink.
    fn project_dir(&self, project_path: &str) -> Result<PathBuf, String> {
        let dir = self.workspace_root.join(project_path);
        std::fs::create_dir_all(&dir)
            .map_err(|e| format!("cannot create project directory {}: {e}", dir.display()))?;
        let real = dir
            .canonicalize()
            .map_err(|e| format!("cannot resolve project directory {}: {e}", dir.display()))?;
        if !real.starts_with(&self.workspace_root) {
            return Err(format!(
                "invalid project_path: {project_path:?} leads to {} outside BATON_WORKSPACE_ROOT",
                real.display()
            ));
        }
        Ok(real)
    }

    async fn ack(&self, delivery: &Delivery, end: JobEnd) -> JobEnd {
        match self.queue.ack(&delivery.id).await {
            Ok(()) => end,
            Err(e) => JobEnd::LeftPending(format!("ack failed: {e}")),
        }
    }

    async fn dead_letter(
        &self,
        delivery: &Delivery,
        reason: &str,
        attempts: u32,
        last_error: Option<&str>,
    ) -> JobEnd {
        let letter = DeadLetter {
            stream_id: &delivery.id,
            payload: &delivery.original(),
            reason,
            attempts,
            last_error,
            consumer: &self.consumer,
        };
        match self.queue.dead_letter(&letter).await {
            Ok(_) => JobEnd::DeadLettered(reason.to_string()),
            Err(e) => {
                error!(error = %e, %reason, "could not dead-letter the entry; it stays pending");
                JobEnd::LeftPending(format!("dead-letter failed: {e}"))
            }
        }
    }
}

/// Finds the CLI the way the child's spawn will, so a missing one stops the worker at start
/// instead of failing every job.
fn resolve_program(program: &Path) -> anyhow::Result<PathBuf> {
    if program.components().count() > 1 {
        anyhow::ensure!(
            program.is_file(),
            "BATON_CLAUDE_BIN {} does not exist",
            program.display()
        );
        return Ok(program.to_path_buf());
    }
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|dir| dir.join(program))
        .find(|p| p.is_file())
        .ok_or_else(|| anyhow::anyhow!("BATON_CLAUDE_BIN {} is not on PATH; install the claude CLI or point BATON_CLAUDE_BIN at it (or at claude-emulator)", program.display()))
}

fn metrics(report: &RunReport) -> RunMetrics {
    let clamp = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
    RunMetrics {
        input_tokens: clamp(report.usage.input_tokens),
        output_tokens: clamp(report.usage.output_tokens),
        cache_read_input_tokens: clamp(report.usage.cache_read_input_tokens),
        cache_creation_input_tokens: clamp(report.usage.cache_creation_input_tokens),
        cost_usd: report.cost_usd,
        duration_ms: clamp(report.duration_ms),
        num_turns: i32::try_from(report.num_turns).unwrap_or(i32::MAX),
    }
}
