//! What a run's report means for its job, the ledger and the checkpoint: go on or stop, the usage
//! and the answer to record, the checkpoint to leave.

use baton_agent::{Outcome, RunReport};
use baton_core::checkpoint::Phase;
use baton_core::{Checkpoint, Job, Step};
use baton_ledger::RunMetrics;
use tracing::warn;

use crate::job::{JobContext, JobSignals, Stopped};

/// What a step's final run means for the job: go on (with a note for a compaction that did not
/// happen, which leaves the session as it was) or stop.
pub(crate) fn judge(step: &Step, report: &RunReport) -> Result<Option<String>, Stopped> {
    match &report.outcome {
        Outcome::Success => Ok(None),
        Outcome::Cancelled => Err(Stopped::Interrupted(format!("{step}: run cancelled"))),
        Outcome::AuthFailed { detail } => Err(Stopped::Auth(format!("{step}: {detail}"))),
        other if step.may_fail() => {
            warn!(step = step.name(), outcome = %other, "compaction did not happen; the job keeps its session");
            Ok(Some(format!("compaction did not happen: {other}")))
        }
        other => Err(Stopped::Failed(format!("{step}: {other}"))),
    }
}

/// What a run answered, as the ledger keeps it: the text cut at `max_bytes` (on a character's
/// boundary, with a marker saying how much was left out).
pub(crate) fn answer_of(report: &RunReport, max_bytes: usize) -> baton_ledger::RunResult {
    let result = report
        .result_text
        .as_deref()
        .map(|text| baton_core::events::bounded(text, max_bytes));
    baton_ledger::RunResult {
        result,
        subtype: report.subtype.clone(),
        stop_reason: report.stop_reason.clone(),
        terminal_reason: report.terminal_reason.clone(),
        is_error: !matches!(report.outcome, Outcome::Success),
        permission_denials: serde_json::Value::Array(report.permission_denials.clone()),
        nothing_done: report.nothing_done,
    }
}

pub(crate) fn metrics(report: &RunReport) -> RunMetrics {
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

/// The checkpoint of `job` at `step`, as of now.
pub(crate) fn checkpoint_of(
    job: &Job,
    step: &Step,
    session: &str,
    files: &[String],
    phase: Phase,
) -> Checkpoint {
    Checkpoint {
        session_id: session.into(),
        build_id: job.build_id.clone(),
        project_path: job.project_path.clone(),
        files_created: files.to_vec(),
        step: step.clone(),
        phase,
        updated_at: chrono::Utc::now(),
    }
}

impl JobContext {
    /// Records a run, trying again while the failure may pass (the database unreachable for a
    /// moment) and this worker still holds the job: a run that finished is recorded, not run
    /// again. A refusal (fenced, stale, conflict) is answered at once.
    pub(crate) async fn record(
        &self,
        record: &baton_ledger::RunRecord<'_>,
        signals: &JobSignals,
    ) -> Result<baton_ledger::Recorded, baton_ledger::LedgerError> {
        use backon::BackoffBuilder;
        let mut delays = backon::ExponentialBuilder::default()
            .with_min_delay(std::time::Duration::from_millis(100))
            .with_max_delay(std::time::Duration::from_secs(2))
            .with_jitter()
            .without_max_times()
            .build();
        loop {
            let error = match self.ledger.record_run(record).await {
                Err(e @ baton_ledger::LedgerError::Db(_)) => e,
                other => return other,
            };
            let give_up = signals.lost.is_cancelled()
                || signals.cancel.is_cancelled()
                || self.hold.lapsed().is_some();
            let Some(delay) = delays.next().filter(|_| !give_up) else {
                return Err(error);
            };
            self.metrics.ledger_errors.inc();
            warn!(step = record.step.name(), error = %error, retry_in_ms = delay.as_millis() as u64, "recording the run failed; trying again");
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = signals.lost.cancelled() => return Err(error),
                _ = signals.cancel.cancelled() => return Err(error),
            }
        }
    }
}
