//! One job, from its claim in the ledger to its end: the resume policy, replay of recorded runs, the
//! steps through the CLI with retries, a checkpoint at the start and end of every run, and a ledger
//! record after every run.

use std::path::{Path, PathBuf};

use baton_agent::{Agent, Outcome, RunRequest};
use baton_core::agent::RunSettings;
use baton_core::checkpoint::Phase;
use baton_core::events::{Event, EventType};
use baton_core::policy::{self, Decision, FreshReason, PolicyConfig};
use baton_core::{BuildStatus, Checkpoint, Job, JobKind, Limits, SessionId, Source, Step};
use baton_ledger::{Claim, Ledger, LedgerError, Recorded, RunRecord};
use baton_queue::{Delivery, Queue, QueueError};
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, error, info, info_span, warn};

use crate::config::Scheduling;
pub use crate::end::{JobEnd, Processed};
pub use crate::hold::Hold;
use crate::metrics::Metrics;
use crate::panics::panic_message;
use crate::progress::Held;
use crate::report::{answer_of, checkpoint_of, judge, metrics};
use crate::runs::Turn;
use crate::transcripts::{Carried, TranscriptSettings};

/// Why the steps stopped before the end.
pub(crate) enum Stopped {
    Fenced,
    Cancelled,
    Failed(String),
    Interrupted(String),
    Auth(String),
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

/// What a job needs from its worker.
#[derive(Clone)]
pub struct JobContext {
    /// Redis.
    pub queue: Queue,
    /// Postgres.
    pub ledger: Ledger,
    /// The CLI.
    pub agent: Agent,
    /// Canonical workspace root.
    pub workspace_root: PathBuf,
    /// Job limits.
    pub limits: Limits,
    /// Resume policy.
    pub policy: PolicyConfig,
    /// Retry and timing settings.
    pub scheduling: Scheduling,
    /// Metrics.
    pub metrics: std::sync::Arc<Metrics>,
    /// This worker's hold on its entries, renewed by its heartbeats.
    pub hold: Hold,
    /// Where the CLI keeps sessions on this host, and how much of one the ledger keeps.
    pub transcripts: TranscriptSettings,
    /// The metadata steps' prompts (`BATON_STEP_PROMPTS`).
    pub step_prompts: baton_core::plan::StepPrompts,
    /// The operator's agent settings, which each job may narrow.
    pub agent_settings: baton_core::agent::OperatorAgent,
    /// `BATON_JOB_MAX_BUDGET_USD`: what all of one job's runs may cost together.
    pub job_max_budget_usd: Option<f64>,
    /// `BATON_MAX_RESULT_BYTES`: the longest answer kept of one run.
    pub max_result_bytes: usize,
    /// The running jobs, watched for cancel requests.
    pub cancels: crate::cancels::Cancels,
    /// Where webhooks go; a job's own `webhook_url` must start with one of its prefixes.
    pub webhooks: std::sync::Arc<crate::webhooks::WebhookSettings>,
}

/// The tokens that end a job early.
#[derive(Clone)]
pub struct JobSignals {
    /// Shutdown after the grace: end the runs gracefully and hand the entry back. Also fired by
    /// `abort` (its parent), so a cancelled build's run ends the same way.
    pub cancel: CancellationToken,
    /// The entry was taken by another worker: kill the child at once, write nothing.
    pub lost: CancellationToken,
    /// Someone cancelled the build: end its run gracefully, record nothing of it, and end the
    /// build `cancelled`.
    pub abort: CancellationToken,
}

impl Default for JobSignals {
    fn default() -> Self {
        let abort = CancellationToken::new();
        JobSignals {
            cancel: abort.child_token(),
            lost: CancellationToken::new(),
            abort,
        }
    }
}

impl JobContext {
    /// Runs one delivered entry to its end; see [`Processed`].
    pub async fn process(&self, delivery: &Delivery, signals: &JobSignals) -> Processed {
        let job = match delivery
            .payload
            .as_deref()
            .ok_or_else(|| format!("entry has no `{}` field", baton_core::JOB_FIELD))
            .and_then(|p| Job::from_json(p.as_bytes(), &self.limits).map_err(|e| e.to_string()))
        {
            Ok(job) => job,
            Err(reason) => {
                warn!(entry = %delivery.id, %reason, "refusing a malformed job");
                // A job whose build id can be read still ends where the backend looks: failed in
                // the ledger, with a `job_failed` event.
                let readable = delivery
                    .payload
                    .as_deref()
                    .and_then(|p| baton_core::ReadableJob::from_payload(p.as_bytes()));
                let event = match &readable {
                    Some(r) => {
                        if let Err(e) = self.ledger.fail_rejected(r, &reason, None).await {
                            self.ledger_error(&e);
                            warn!(error = %e, "could not record the refused build as failed");
                        }
                        let mut event =
                            Event::new(EventType::JobFailed, &r.build_id, &r.project_id);
                        event.error = Some(reason.clone());
                        Some(event)
                    }
                    None => None,
                };
                let end = JobEnd::DeadLettered {
                    reason,
                    attempts: 0,
                };
                return Processed {
                    end,
                    event,
                    span: info_span!("job", entry = %delivery.id),
                    kind: None,
                };
            }
        };
        let span = info_span!("job", build_id = %job.build_id, project_id = %job.project_id, kind = %job.kind);
        let run = self
            .process_job(delivery, &job, signals)
            .instrument(span.clone());
        // A bug that panics must not strand the entry: its task would die while the worker kept the
        // entry and its slot, heartbeating it forever, with the build left running.
        let end =
            match futures_util::FutureExt::catch_unwind(std::panic::AssertUnwindSafe(run)).await {
                Ok(end) => end,
                Err(panic) => {
                    self.after_panic(&job, &panic_message(panic.as_ref()), signals)
                        .instrument(span.clone())
                        .await
                }
            };
        let final_event = match &end {
            JobEnd::Completed { .. } => Some(EventType::JobCompleted),
            JobEnd::DeadLettered { .. } => Some(EventType::JobFailed),
            JobEnd::Conflict(_) => None,
            JobEnd::Cancelled { announce, .. } => announce.then_some(EventType::JobCancelled),
            JobEnd::HandBack(_) | JobEnd::AuthFailed(_) => Some(EventType::JobRequeued),
            JobEnd::Fenced => None,
        };
        let event = final_event.map(|kind| {
            let mut event = Event::new(kind, &job.build_id, &job.project_id);
            event.session_id = end.session().map(str::to_string);
            event.error = end.reason().map(str::to_string);
            event.output = end
                .output()
                .map(|o| baton_core::events::bounded(o, baton_core::events::EVENT_OUTPUT_BYTES));
            event
        });
        Processed {
            end,
            event,
            span,
            kind: Some(job.kind),
        }
    }

    /// Publishes a progress event; a lost event costs a backend a live update, never the job.
    pub(crate) async fn publish(&self, event: &Event) {
        if let Err(e) = self.queue.publish_event(event).await {
            warn!(error = %e, "could not publish a progress event");
        }
    }

    /// Counts a ledger error.
    pub(crate) fn ledger_error(&self, e: &LedgerError) {
        match e {
            LedgerError::Fenced { .. } => self.metrics.fenced_writes.inc(),
            _ => self.metrics.ledger_errors.inc(),
        };
    }

    async fn process_job(&self, delivery: &Delivery, job: &Job, signals: &JobSignals) -> JobEnd {
        let cwd = match self.project_dir(&job.project_path) {
            Ok(dir) => dir,
            Err(reason) => {
                let _ = self.ledger.fail_unclaimed(job, &reason).await;
                return JobEnd::DeadLettered {
                    reason,
                    attempts: 0,
                };
            }
        };
        if let Some(url) = &job.webhook_url
            && let Err(why) = baton_core::webhook::check_allowed(url, &self.webhooks.allow)
        {
            let reason = format!("refused: webhook_url {why}");
            let _ = self.ledger.fail_unclaimed(job, &reason).await;
            return JobEnd::DeadLettered {
                reason,
                attempts: 0,
            };
        }
        // What the agent may do in this job's runs: the operator's settings, narrowed by the job's.
        let settings = match baton_core::agent::settle(&self.agent_settings, job.agent.as_ref())
            .and_then(
                |s| match baton_agent::refused_as_root(s.permission_mode.as_deref()) {
                    Some(why) => Err(why.to_string()),
                    None => Ok(s),
                },
            ) {
            Ok(s) => s,
            Err(why) => {
                self.metrics.decision("refused");
                let reason = format!("refused: {why}");
                let _ = self.ledger.fail_unclaimed(job, &reason).await;
                return JobEnd::DeadLettered {
                    reason,
                    attempts: 0,
                };
            }
        };
        let claim = match self.ledger.claim_build(job, Some(&delivery.id)).await {
            Ok(c) => c,
            Err(e @ LedgerError::BuildIdReused(_)) => {
                self.metrics.decision("refused");
                return JobEnd::Conflict(format!("refused: {e}"));
            }
            Err(e) if e.is_terminal_for_job() => {
                self.metrics.decision("refused");
                let reason = format!("refused: {e}");
                let _ = self.ledger.fail_unclaimed(job, &reason).await;
                return JobEnd::DeadLettered {
                    reason,
                    attempts: 0,
                };
            }
            Err(e) => {
                self.ledger_error(&e);
                return JobEnd::HandBack(format!("ledger: {e}"));
            }
        };
        match claim.finished {
            Some(BuildStatus::Failed) => {
                // Its worker marked it failed and stopped before the dead letter (or this entry is a
                // copy of one that was dead-lettered): dead-letter it, so it can be replayed and its
                // end is reported as the failure it was.
                let reason = match self.ledger.build_state(&job.build_id).await {
                    Ok(state) => state.last_error,
                    Err(e) => {
                        self.ledger_error(&e);
                        None
                    }
                }
                .unwrap_or_else(|| "the build had already failed".into());
                info!(%reason, "build already failed; dead-lettering its entry");
                return JobEnd::DeadLettered {
                    reason,
                    attempts: u32::try_from(claim.attempt).unwrap_or(0),
                };
            }
            Some(BuildStatus::Cancelled) => {
                info!("build was cancelled; acknowledging its entry unrun");
                let session = self.project_session(job).await;
                return JobEnd::Cancelled {
                    session,
                    announce: false,
                };
            }
            Some(status) => {
                info!(
                    status = status.as_str(),
                    "build already finished; acknowledging the duplicate entry"
                );
                let session = claim.recorded.last().map(|r| r.new_session_id.clone());
                let output = self.recorded_output(&job.build_id).await;
                return JobEnd::Completed { session, output };
            }
            None => {}
        }
        let mut started = Event::new(EventType::JobStarted, &job.build_id, &job.project_id);
        started.attempt = Some(claim.attempt);
        let interrupted = self
            .queue
            .publish_and_load_checkpoint(&started, &job.build_id)
            .await;
        info!(
            attempt = claim.attempt,
            fence = claim.fence.get(),
            recorded = claim.recorded.len(),
            "job claimed"
        );
        let attempts = u32::try_from(claim.attempt).unwrap_or(0);
        // Watched from now on: a cancel request fires `signals.abort`. One asked before this
        // claim (while another worker ran the build) is in the claim's answer.
        let _watched = self.cancels.watch(&job.build_id, signals.abort.clone());
        if claim.cancel_requested {
            signals.abort.cancel();
        }

        let ended = self
            .run_steps(job, &cwd, &claim, interrupted, signals, &settings)
            .await;
        // A run the cancel cut short ends the job cancelled, however it ended; a job that got
        // to its end before the cancel came stays completed.
        let ended = match ended {
            Err(Stopped::Interrupted(_) | Stopped::Failed(_)) if signals.abort.is_cancelled() => {
                Err(Stopped::Cancelled)
            }
            other => other,
        };
        let ended = match ended {
            // Every answering run was recorded by an earlier claim: the answer is the ledger's.
            Ok((session, completed, None)) if !claim.recorded.is_empty() => Ok((
                session,
                completed,
                self.recorded_output(&job.build_id).await,
            )),
            other => other,
        };
        let (status, end) = match ended {
            // The last run's record already ended the build.
            Ok((session, true, output)) => (None, JobEnd::Completed { session, output }),
            Ok((session, false, output)) => (
                Some((BuildStatus::Completed, None)),
                JobEnd::Completed { session, output },
            ),
            Err(Stopped::Fenced) => {
                warn!("a newer claim owns this job; dropping it without writing");
                self.metrics.fenced_writes.inc();
                return JobEnd::Fenced;
            }
            Err(Stopped::Interrupted(why)) => {
                warn!(%why, "job interrupted; handing its entry back");
                let _ = self
                    .ledger
                    .requeue_build(&job.build_id, claim.fence, &why)
                    .await;
                return JobEnd::HandBack(why);
            }
            Err(Stopped::Auth(why)) => {
                error!(%why, "the CLI's credentials failed; handing the job back and pausing");
                let _ = self
                    .ledger
                    .requeue_build(&job.build_id, claim.fence, &why)
                    .await;
                return JobEnd::AuthFailed(why);
            }
            Err(Stopped::Failed(reason)) => (
                Some((BuildStatus::Failed, Some(reason.clone()))),
                JobEnd::DeadLettered { reason, attempts },
            ),
            Err(Stopped::Cancelled) => {
                info!("cancelled; nothing of the cut run is recorded");
                let session = self.project_session(job).await;
                (
                    Some((BuildStatus::Cancelled, Some("cancelled".to_string()))),
                    JobEnd::Cancelled {
                        session,
                        announce: true,
                    },
                )
            }
        };
        if let Some((status, error)) = status {
            match self
                .ledger
                .finish_build(&job.build_id, claim.fence, status, error.as_deref())
                .await
            {
                Ok(()) => {}
                Err(e @ LedgerError::Fenced { .. }) => {
                    self.ledger_error(&e);
                    return JobEnd::Fenced;
                }
                Err(e) => {
                    self.ledger_error(&e);
                    return JobEnd::HandBack(format!("ledger: {e}"));
                }
            }
        }
        // A cancel that came as the job ended leaves its request too: it is cleared all the same.
        if (matches!(end, JobEnd::Cancelled { .. }) || signals.abort.is_cancelled())
            && let Err(e) = self.queue.clear_cancel(&job.build_id).await
        {
            warn!(error = %e, "could not clear the build's cancel request");
        }
        end
    }

    /// The newest session of the job's chain (the project's main one, or its thread's), as the
    /// ledger has it now; `None` when it has none or cannot say (which costs a cancelled job's
    /// event its `session_id`, nothing else).
    async fn project_session(&self, job: &Job) -> Option<SessionId> {
        match self
            .ledger
            .chain_head(&job.project_id, job.thread_id.as_deref())
            .await
        {
            Ok(session) => session,
            Err(e) => {
                self.ledger_error(&e);
                None
            }
        }
    }

    /// Runs the steps not yet recorded. Returns the session the chain ends in, whether the last
    /// run's record also completed the build, and the answer of its last run here that is not a
    /// compaction.
    async fn run_steps(
        &self,
        job: &Job,
        cwd: &Path,
        claim: &Claim,
        interrupted: Result<Option<Checkpoint>, QueueError>,
        signals: &JobSignals,
        settings: &RunSettings,
    ) -> Result<(Option<SessionId>, bool, Option<String>), Stopped> {
        // `chain` is the session the ledger's chain ends in: what a recorded run resumed from. A
        // new thread's first run forks the session it branches from (`fork`).
        let mut fork = false;
        let (mut chain, mut fresh_reason) = match claim.recorded.last() {
            Some(last) => (Some(last.new_session_id.clone()), None),
            None => match policy::decide(job, &claim.project, &self.policy, chrono::Utc::now()) {
                Decision::Resume { session_id, stale } => {
                    if let Some(stale) = stale {
                        warn!(job_session = %stale, ledger_session = %session_id, "the job's previous_session_id is stale; resuming the project's newest");
                    }
                    (Some(session_id), None)
                }
                Decision::Fork { from } => {
                    fork = true;
                    (Some(from), None)
                }
                Decision::Fresh(reason) => (None, Some(reason)),
                Decision::Refuse(reason) => {
                    self.metrics.decision("refused");
                    return Err(Stopped::Failed(format!("refused: {reason}")));
                }
            },
        };
        // What the ledger holds of the chain's session: written back before each run resumes it
        // (on a host that never saw it, or whose copy is stale), and the base of each store.
        let mut carried = Carried::default();
        if let Some(session) = chain.clone() {
            let stored = self.ledger.stored_session(&session).await.map_err(|e| {
                self.ledger_error(&e);
                Stopped::Interrupted(format!("ledger: {e}"))
            })?;
            match stored.as_ref().and_then(|s| s.incomplete.as_deref()) {
                // A new job does not resume what no host can have whole.
                Some(why) if claim.recorded.is_empty() => {
                    warn!(session = %session, reason = why, "the ledger has no whole copy of the session");
                    chain = None;
                    fresh_reason = Some(FreshReason::TranscriptIncomplete);
                }
                _ => carried = Carried::read(stored.as_ref(), &session),
            }
        }
        if claim.recorded.is_empty() {
            match (&chain, fresh_reason) {
                (Some(session), _) if fork => {
                    self.metrics.decision("forked");
                    info!(session = %session, "forking the session the thread branches from");
                }
                (Some(session), _) => {
                    self.metrics.decision("resumed");
                    info!(session = %session, "resuming the project's newest session");
                }
                (None, Some(reason)) => {
                    self.metrics.decision(&format!("fresh_{}", reason.as_str()));
                    info!(reason = reason.as_str(), "starting a fresh session");
                }
                (None, None) => {}
            }
        }
        // A run cut off mid-turn left its session in the checkpoint (read while the job started):
        // resume that one, so its partial work is kept (falling back to the chain's session if the
        // CLI cannot find it).
        let interrupted = match interrupted {
            Ok(Some(cp)) if cp.phase == Phase::Started => Some(cp),
            Ok(_) => None,
            Err(e) => {
                warn!(error = %e, "the checkpoint is unreadable; the ledger decides alone");
                None
            }
        };
        let plan = Step::plan_of(job);
        let mut completed = false;
        let mut output = None;
        // What the job's runs cost so far, those an earlier claim recorded included.
        let mut job_cost = match self.job_max_budget_usd {
            Some(_) if !claim.recorded.is_empty() => {
                self.ledger.build_cost(&job.build_id).await.map_err(|e| {
                    self.ledger_error(&e);
                    Stopped::Interrupted(format!("ledger: {e}"))
                })?
            }
            _ => 0.0,
        };
        // With sessions off, each task of a plan starts fresh, told what the tasks before did.
        let fresh_tasks = job.kind == JobKind::Plan && !self.policy.resume;
        let mut done_here: Vec<(String, Vec<String>)> = Vec::new();
        for (i, step) in plan.iter().enumerate() {
            if claim.recorded.iter().any(|r| &r.step == step) {
                info!(step = step.name(), "step already recorded; skipping");
                continue;
            }
            let mut prompt = step.prompt(job, &self.step_prompts);
            if fresh_tasks && i > 0 {
                chain = None;
                fresh_reason = Some(FreshReason::ResumeDisabled);
                prompt = crate::plans::fresh_task_prompt(job, i, &done_here, &prompt);
            }
            let turn = Turn {
                step,
                prompt,
                fork_from: chain.as_deref().filter(|_| fork),
            };

            let target = interrupted
                .as_ref()
                .filter(|cp| &cp.step == step)
                .map(|cp| {
                    info!(session = %cp.session_id, "resuming the session of the run that was cut off");
                    cp.session_id.clone()
                })
                .or_else(|| chain.clone());
            let (report, unsent, fell_back) = self
                .run_with_retries(
                    job,
                    cwd,
                    &turn,
                    target,
                    (chain.as_deref(), claim),
                    signals,
                    &carried,
                    settings,
                )
                .await?;
            job_cost += report.cost_usd;
            if fell_back {
                chain = None;
                fork = false;
                fresh_reason = Some(FreshReason::ResumeFallback);
            }
            let judged = judge(step, &report).and_then(|note| {
                let session = report
                    .session_id
                    .clone()
                    .map(SessionId::from)
                    .or_else(|| chain.clone());
                match session {
                    _ if signals.lost.is_cancelled() => Err(Stopped::Fenced),
                    Some(session) => Ok((note, session)),
                    None => Err(Stopped::Failed(format!(
                        "{step}: the CLI reported no session id"
                    ))),
                }
            });
            let (note, new_session) = match judged {
                Ok(judged) => judged,
                Err(stop) => {
                    unsent.send(&self.queue).await;
                    return Err(stop);
                }
            };
            let transcript = self.transcript_write(cwd, &new_session, &carried).await;
            let answer = answer_of(&report, self.max_result_bytes);
            if answer.nothing_done {
                warn!(
                    step = step.name(),
                    denials = report.permission_denials.len(),
                    "the run's permissions refused every change it tried: it did nothing"
                );
                self.metrics.nothing_done.inc();
            }
            let record = RunRecord {
                job,
                fence: claim.fence,
                step: step.clone(),
                source: (fork && chain.is_some()).then_some(Source::Fork),
                old_session_id: chain.as_deref(),
                new_session_id: &new_session,
                metrics: metrics(&report),
                fresh_reason: fresh_reason.take(),
                note: note.as_deref(),
                completes: i + 1 == plan.len(),
                transcript: Some(&transcript),
                result: Some(&answer),
            };
            // The checkpoint is the fast path and the ledger the truth: neither waits for the
            // other. The run's events not yet sent ride with its last checkpoint, which supersedes
            // the start checkpoint a short run held back.
            let checkpoint = Held {
                checkpoint: Some(checkpoint_of(
                    job,
                    step,
                    &new_session,
                    &report.files_created,
                    Phase::Finished,
                )),
                events: unsent.events,
            }
            .send(&self.queue);
            let ((), recorded) = tokio::join!(checkpoint, self.record(&record, signals));
            let whole;
            let (recorded, stored) = match recorded {
                Err(LedgerError::TranscriptConflict { path, .. }) => {
                    warn!(%path, "the ledger's copy of the session changed since this job read it; storing its files whole");
                    whole = self.transcript_write_whole(cwd, &new_session).await;
                    let again = RunRecord {
                        transcript: Some(&whole),
                        ..record.clone()
                    };
                    (self.record(&again, signals).await, &whole)
                }
                other => (other, &transcript),
            };
            match recorded? {
                Recorded::Written => {
                    completed = record.completes;
                    if *step != Step::Compact {
                        output = answer.result.clone();
                    }
                    let bytes: usize = stored.changes.iter().map(|c| c.data.len()).sum();
                    self.metrics.transcript_stored_bytes.inc_by(bytes as u64);
                    carried = carried.after(&new_session, stored);
                }
                Recorded::AlreadyRecorded => warn!(
                    step = step.name(),
                    "run was already recorded by an earlier claim"
                ),
            }
            chain = Some(new_session);
            fork = false;
            if let Some(task) = step.task_id() {
                done_here.push((task.to_string(), report.files_created.clone()));
            }
            // The run's work is recorded; past the job's budget, nothing more is spent on it.
            if let Some(max) = self.job_max_budget_usd
                && job_cost > max
                && i + 1 < plan.len()
            {
                return Err(Stopped::Failed(format!(
                    "{step}: the job's runs cost ${job_cost:.4}, over BATON_JOB_MAX_BUDGET_USD (${max})"
                )));
            }
        }
        Ok((chain, completed, output))
    }

    /// A build's answer as the ledger recorded it; `None` when it has none or cannot be read (a
    /// lost answer costs the event its `output`, never the job).
    async fn recorded_output(&self, build_id: &str) -> Option<String> {
        match self.ledger.build_state(build_id).await {
            Ok(state) => state.output,
            Err(e) => {
                warn!(error = %e, "could not read the build's answer from the ledger");
                None
            }
        }
    }

    /// Whether the CLI's credentials work again: one minimal run in a scratch folder.
    pub async fn probe_cli(&self) -> bool {
        let dir = self.workspace_root.join(".baton-probe");
        if std::fs::create_dir_all(&dir).is_err() {
            return false;
        }
        let request = RunRequest {
            cwd: dir,
            prompt: "Reply with the single word OK.".into(),
            max_turns: Some(1),
            ..RunRequest::default()
        };
        match self.agent.run(&request, &CancellationToken::new()).await {
            Ok(report) => !matches!(report.outcome, Outcome::AuthFailed { .. }),
            Err(_) => false,
        }
    }
}
