//! One step of a job through the CLI: its runs with retries (and the fallbacks when the session to
//! resume is gone), each run with its progress on the way, and whether this worker may still run.

use std::path::Path;

use backon::{BackoffBuilder, ExponentialBuilder};
use baton_agent::{Outcome, RunHooks, RunReport, RunRequest};
use baton_core::agent::RunSettings;
use baton_core::events::{Event, EventType};
use baton_core::{Job, SessionId, Step};
use baton_ledger::Claim;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, info, info_span, warn};

use crate::job::{JobContext, JobSignals, Stopped};
use crate::progress::Held;
use crate::transcripts::Carried;

/// One step as the job runs it: the step, the prompt it sends, and the session it forks, if any
/// (a new thread's first chat).
pub(crate) struct Turn<'a> {
    /// The step.
    pub(crate) step: &'a Step,
    /// What the run asks.
    pub(crate) prompt: String,
    /// A run resuming this session resumes it into a new one holding a copy of its history.
    pub(crate) fork_from: Option<&'a str>,
}

impl Turn<'_> {
    /// Whether a run resuming `target` forks it. Once the target is another (the fork's own
    /// session after a retry, a fresh start) the run resumes as any other.
    fn forks(&self, target: Option<&str>) -> bool {
        target.is_some() && target == self.fork_from
    }
}

impl JobContext {
    /// Runs a step until it succeeds, fails for good, or its attempts run out. Returns the last
    /// report, what the last run has not yet sent (its `run_finished` event at least, so the caller
    /// can send it with what it writes next), and whether the chain's session was lost and the step
    /// ran fresh instead.
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn run_with_retries(
        &self,
        job: &Job,
        cwd: &Path,
        turn: &Turn<'_>,
        mut target: Option<SessionId>,
        (chain, claim): (Option<&str>, &Claim),
        signals: &JobSignals,
        carried: &Carried,
        settings: &RunSettings,
    ) -> Result<(RunReport, Held, bool), Stopped> {
        let step = turn.step;
        let mut delays = ExponentialBuilder::default()
            .with_min_delay(self.scheduling.retry_min_delay)
            .with_max_delay(self.scheduling.retry_max_delay)
            .with_jitter()
            .with_max_times(self.scheduling.max_run_attempts.saturating_sub(1) as usize)
            .build();
        let mut fell_back = false;
        let mut attempt = 1u32;
        loop {
            // The local copy of the session is made the ledger's before every run that resumes
            // it: this host may never have seen it, or hold a copy a cut-off run left longer.
            if let Some(t) = target.as_deref()
                && carried.session.as_deref() == Some(t)
            {
                self.restore(cwd, carried).await.map_err(|why| {
                    self.metrics.ledger_errors.inc();
                    Stopped::Interrupted(why)
                })?;
            }
            let forking = turn.forks(target.as_deref());
            let (report, unsent) = self
                .run_step(job, cwd, turn, target.as_deref(), signals, settings)
                .await?;
            // A CLI that keeps ids and answers a resume under another id started a fresh session
            // without the history: the run is kept, but recorded as the fresh start it was. A fork
            // always answers under a new id.
            if let (true, Some(asked), Some(got)) = (
                self.transcripts.keep_ids && !forking,
                target.as_deref(),
                report.session_id.as_deref(),
            ) && asked != got
                && !fell_back
            {
                warn!(
                    step = step.name(),
                    asked, got, "the CLI answered the resume in another session: it started fresh"
                );
                self.metrics.decision("fallback");
                self.ledger
                    .record_resume_fallback(job, claim.fence, step, asked)
                    .await?;
                fell_back = true;
                target = None;
            }
            if let Outcome::ResumeNotFound { .. } = report.outcome {
                match target.as_deref() {
                    // The interrupted run's session is gone: go back to the chain's.
                    Some(t) if Some(t) != chain && !fell_back => {
                        warn!(
                            step = step.name(),
                            session = t,
                            "the cut-off run's session is gone; resuming the one before it"
                        );
                        target = chain.map(SessionId::from);
                        unsent.send(&self.queue).await;
                        continue;
                    }
                    Some(missing) if !fell_back => {
                        warn!(
                            step = step.name(),
                            session = missing,
                            "the CLI cannot find the session; continuing fresh"
                        );
                        self.metrics.decision("fallback");
                        // Published first, so a ledger error below does not lose the run's end.
                        unsent.send(&self.queue).await;
                        self.ledger
                            .record_resume_fallback(job, claim.fence, step, missing)
                            .await?;
                        target = None;
                        fell_back = true;
                        continue;
                    }
                    _ => return Ok((report, unsent, fell_back)),
                }
            }
            if !report.outcome.is_retryable() {
                return Ok((report, unsent, fell_back));
            }
            let Some(mut delay) = delays.next() else {
                warn!(step = step.name(), attempts = attempt, outcome = %report.outcome, "no run attempts left");
                return Ok((report, unsent, fell_back));
            };
            if let Outcome::RateLimited {
                retry_after: Some(after),
                ..
            } = &report.outcome
            {
                delay = delay.max(*after);
            }
            // A run that got as far as naming its session is resumed, so its partial work is kept.
            if report.session_id.is_some() {
                target = report.session_id.clone().map(SessionId::from);
            }
            attempt += 1;
            // Sent now: a worker that dies while waiting leaves the run's session in the
            // checkpoint, for its successor to resume.
            unsent.send(&self.queue).await;
            warn!(step = step.name(), outcome = %report.outcome, retry_in_ms = delay.as_millis() as u64, attempt, "retrying the run");
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = signals.cancel.cancelled() => return Err(Stopped::Interrupted(format!("{step}: cancelled while waiting to retry"))),
                _ = signals.lost.cancelled() => return Err(Stopped::Fenced),
            }
        }
    }

    async fn run_step(
        &self,
        job: &Job,
        cwd: &Path,
        turn: &Turn<'_>,
        session: Option<&str>,
        signals: &JobSignals,
        settings: &RunSettings,
    ) -> Result<(RunReport, Held), Stopped> {
        let step = turn.step;
        if signals.abort.is_cancelled() {
            return Err(Stopped::Cancelled);
        }
        if let Some(why) = self.hold_lapsed(step, "not starting a run") {
            return Err(Stopped::Interrupted(why));
        }
        let request = RunRequest {
            cwd: cwd.to_path_buf(),
            prompt: turn.prompt.clone(),
            resume: session.map(str::to_string),
            fork_session: turn.forks(session),
            // A step that needs its own mode (a planning chat) has it whatever the job asked.
            permission_mode: step
                .permission_mode()
                .map(str::to_string)
                .or_else(|| settings.permission_mode.clone()),
            model: settings.model.clone(),
            fallback_model: settings.fallback_model.clone(),
            max_turns: settings.max_turns,
            max_budget_usd: settings.max_budget_usd,
            allowed_tools: settings.allowed_tools.clone(),
            disallowed_tools: settings.disallowed_tools.clone(),
            append_system_prompt: settings.append_system_prompt.clone(),
            mcp_config: settings.mcp_config.clone(),
        };
        let mut started = Event::new(EventType::RunStarted, &job.build_id, &job.project_id);
        started.step = Some(step.name().to_string());
        started.session_id = session.map(str::to_string);
        let (seen_tx, seen_rx) = tokio::sync::oneshot::channel::<String>();
        let hooks = RunHooks {
            cancel: signals.cancel.clone(),
            kill: signals.lost.clone(),
            session_seen: Some(seen_tx),
        };
        // Progress goes out while the CLI runs, in order: the run started, then its session
        // (checkpointed, so that a successor can resume a run cut off mid-turn).
        let ended = CancellationToken::new();
        let progress = self.scheduling.progress.follow(
            &self.queue,
            job,
            step,
            started,
            seen_rx,
            ended.clone(),
        );
        let span = info_span!(
            "run",
            step = step.name(),
            session_in = session.unwrap_or("-")
        );
        let run = async {
            let report = self.agent.run_with(&request, hooks).instrument(span).await;
            ended.cancel();
            report
        };
        let (report, mut unsent) = tokio::join!(run, progress);
        let report = match report {
            Ok(report) => report,
            Err(e) => {
                unsent.send(&self.queue).await;
                return Err(Stopped::Interrupted(e.to_string()));
            }
        };
        // Taken over: the successor owns the build's checkpoint now, so nothing held is written.
        if signals.lost.is_cancelled() {
            return Err(Stopped::Fenced);
        }
        // Cancelled: the cut run is not recorded, and its events end with the job's.
        if signals.abort.is_cancelled() {
            unsent.send(&self.queue).await;
            return Err(Stopped::Cancelled);
        }
        // The supervisor ended it, most likely: not the job's fault, so no attempt is spent on it
        // and it is never dead-lettered for it. A run that succeeded is still recorded (fenced).
        // Another replica may own the job by now, so only the events go out, not the checkpoint.
        if !matches!(report.outcome, Outcome::Success)
            && let Some(why) = self.hold_lapsed(step, "the run was stopped")
        {
            unsent.checkpoint = None;
            unsent.send(&self.queue).await;
            return Err(Stopped::Interrupted(why));
        }
        info!(
            step = step.name(),
            outcome = %report.outcome,
            session_in = session.unwrap_or("-"),
            session_out = report.session_id.as_deref().unwrap_or("-"),
            ms = report.wall_ms,
            "agent run finished"
        );
        self.metrics.run_ended(
            step.source().as_str(),
            report.outcome.label(),
            report.wall_ms as f64 / 1000.0,
        );
        let mut finished = Event::new(EventType::RunFinished, &job.build_id, &job.project_id);
        finished.step = Some(step.name().to_string());
        finished.session_id = report.session_id.clone();
        finished.outcome = Some(report.outcome.label().to_string());
        unsent.events.push(finished);
        Ok((report, unsent))
    }

    /// Why `step` cannot go on, when this worker's hold on its jobs has run out: another replica
    /// may take them over any moment, so a run now could resume a session beside its successor's.
    pub(crate) fn hold_lapsed(&self, step: &Step, consequence: &str) -> Option<String> {
        self.hold.lapsed().map(|ago| {
            format!(
                "{step}: this worker's hold on its jobs ran out {:.1} s ago (stalled, or cut off \
                 from Redis); {consequence}, since another replica may be running the job",
                ago.as_secs_f64()
            )
        })
    }
}
