//! The worker's Prometheus metrics.

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Labels of `baton_jobs_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct JobLabels {
    /// `create`, `update`, `chat_plan`, or `invalid` for entries that are not jobs.
    pub kind: String,
    /// `completed`, `dead_lettered`, `fenced`, `handed_back`, `auth_paused`.
    pub outcome: String,
}

/// Labels of `baton_agent_runs_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RunLabels {
    /// The transition source of the step (`build`, `metadata`, `compact`, `chat_plan`).
    pub source: String,
    /// The run's outcome label (`success`, `crashed`, ...).
    pub outcome: String,
}

/// Labels of `baton_resume_decisions_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DecisionLabels {
    /// `resumed`, `forked`, `fresh_<reason>`, `refused`, `fallback`.
    pub decision: String,
}

/// Labels of `baton_transcript_restores_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RestoreLabels {
    /// Why the local copy was rewritten: `missing` or `stale`.
    pub reason: String,
}

/// Labels of `baton_webhook_deliveries_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WebhookLabels {
    /// How an attempt ended: `delivered`, `retried`, `failed` (given up) or `skipped`.
    pub outcome: String,
}

/// Every metric the worker exports.
pub struct Metrics {
    registry: Registry,
    /// Jobs ended, by kind and outcome.
    pub jobs: Family<JobLabels, Counter>,
    /// CLI runs, by source and outcome.
    pub runs: Family<RunLabels, Counter>,
    /// Wall time of CLI runs.
    pub run_duration: Histogram,
    /// Wall time of jobs, from claim to end.
    pub job_duration: Histogram,
    /// Resume policy decisions.
    pub resume_decisions: Family<DecisionLabels, Counter>,
    /// Jobs running now.
    pub jobs_in_flight: Gauge,
    /// Entries in the job stream: the backlog (ended entries leave it).
    pub stream_length: Gauge,
    /// Entries not yet delivered to the group.
    pub stream_lag: Gauge,
    /// Entries delivered and not yet acknowledged.
    pub stream_pending: Gauge,
    /// Entries in the dead-letter stream.
    pub dead_letter_length: Gauge,
    /// Entries taken over from replicas that stopped refreshing them.
    pub claims: Counter,
    /// Writes refused because a newer claim owned the job.
    pub fenced_writes: Counter,
    /// Ledger operations that failed for reasons other than fencing.
    pub ledger_errors: Counter<u64, AtomicU64>,
    /// Entries Redis lost while this worker held them (a restart without its data).
    pub lost_entries: Counter,
    /// Times this worker created the consumer group again after Redis lost it.
    pub group_recreations: Counter,
    /// Times the shared Redis connection stopped answering and was replaced by a new one.
    pub redis_reconnects: Counter,
    /// Compressed bytes of session files stored in the ledger with run records.
    pub transcript_stored_bytes: Counter,
    /// Session files written back from the ledger before a resume, by reason.
    pub transcript_restores: Family<RestoreLabels, Counter>,
    /// Time a restore took, from the ledger's answer to the files in place.
    pub transcript_restore_duration: Histogram,
    /// Sessions whose files could not be stored whole (too large, or not found after a run).
    pub transcript_incomplete: Counter,
    /// Runs whose permissions refused every change they tried.
    pub nothing_done: Counter,
    /// Webhook delivery attempts, by outcome.
    pub webhook_deliveries: Family<WebhookLabels, Counter>,
    /// How long the oldest undelivered webhook has waited, in seconds.
    pub webhook_oldest_pending: Gauge<f64, AtomicU64>,
    /// The queue's own count of those, as last added to `redis_reconnects`.
    redis_reconnects_synced: AtomicU64,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// Creates and registers every metric under the `baton_` prefix.
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("baton");
        let seconds = || Histogram::new(exponential_buckets(0.005, 2.0, 18));
        let m = Metrics {
            jobs: Family::default(),
            runs: Family::default(),
            run_duration: seconds(),
            job_duration: seconds(),
            resume_decisions: Family::default(),
            jobs_in_flight: Gauge::default(),
            stream_length: Gauge::default(),
            stream_lag: Gauge::default(),
            stream_pending: Gauge::default(),
            dead_letter_length: Gauge::default(),
            claims: Counter::default(),
            fenced_writes: Counter::default(),
            ledger_errors: Counter::default(),
            lost_entries: Counter::default(),
            group_recreations: Counter::default(),
            redis_reconnects: Counter::default(),
            transcript_stored_bytes: Counter::default(),
            transcript_restores: Family::default(),
            transcript_restore_duration: Histogram::new(exponential_buckets(0.001, 2.0, 16)),
            transcript_incomplete: Counter::default(),
            nothing_done: Counter::default(),
            webhook_deliveries: Family::default(),
            webhook_oldest_pending: Gauge::default(),
            redis_reconnects_synced: AtomicU64::new(0),
            registry: Registry::default(),
        };
        registry.register("jobs", "Jobs ended, by kind and outcome", m.jobs.clone());
        registry.register(
            "agent_runs",
            "Claude CLI runs, by source and outcome",
            m.runs.clone(),
        );
        registry.register(
            "agent_run_duration_seconds",
            "Wall time of Claude CLI runs",
            m.run_duration.clone(),
        );
        registry.register(
            "job_duration_seconds",
            "Wall time of jobs from claim to end",
            m.job_duration.clone(),
        );
        registry.register(
            "resume_decisions",
            "Resume policy decisions",
            m.resume_decisions.clone(),
        );
        registry.register(
            "jobs_in_flight",
            "Jobs running on this worker",
            m.jobs_in_flight.clone(),
        );
        registry.register(
            "stream_length",
            "Entries in the job stream: not yet delivered, or delivered and not yet ended",
            m.stream_length.clone(),
        );
        registry.register(
            "stream_lag",
            "Entries in the job stream not yet delivered to the group",
            m.stream_lag.clone(),
        );
        registry.register(
            "stream_pending",
            "Entries delivered to the group and not yet acknowledged",
            m.stream_pending.clone(),
        );
        registry.register(
            "dead_letter_length",
            "Entries in the dead-letter stream",
            m.dead_letter_length.clone(),
        );
        registry.register(
            "claims",
            "Entries taken over from replicas that stopped refreshing them",
            m.claims.clone(),
        );
        registry.register(
            "fenced_writes",
            "Writes refused because a newer claim owned the job",
            m.fenced_writes.clone(),
        );
        registry.register(
            "ledger_errors",
            "Ledger operations that failed other than by fencing",
            m.ledger_errors.clone(),
        );
        registry.register(
            "lost_entries",
            "Entries Redis lost while this worker held them",
            m.lost_entries.clone(),
        );
        registry.register(
            "group_recreations",
            "Times the consumer group was created again after Redis lost it",
            m.group_recreations.clone(),
        );
        registry.register(
            "redis_reconnects",
            "Times the shared Redis connection stopped answering and was replaced",
            m.redis_reconnects.clone(),
        );
        registry.register(
            "transcript_stored_bytes",
            "Compressed bytes of session files stored in the ledger with run records",
            m.transcript_stored_bytes.clone(),
        );
        registry.register(
            "transcript_restores",
            "Session files written back from the ledger before a resume, by reason",
            m.transcript_restores.clone(),
        );
        registry.register(
            "transcript_restore_duration_seconds",
            "Time a restore of a session's files from the ledger took",
            m.transcript_restore_duration.clone(),
        );
        registry.register(
            "transcript_incomplete",
            "Sessions whose files could not be stored whole",
            m.transcript_incomplete.clone(),
        );
        registry.register(
            "runs_nothing_done",
            "Runs whose permissions refused every change they tried, so they did nothing",
            m.nothing_done.clone(),
        );
        registry.register(
            "webhook_deliveries",
            "Webhook delivery attempts, by outcome",
            m.webhook_deliveries.clone(),
        );
        registry.register(
            "webhook_oldest_pending_seconds",
            "How long the oldest undelivered webhook has waited",
            m.webhook_oldest_pending.clone(),
        );
        Metrics { registry, ..m }
    }

    /// Brings `baton_redis_reconnects_total` up to `total`, the queue's count; concurrent scrapes
    /// add each replacement once.
    pub fn sync_redis_reconnects(&self, total: u64) {
        let before = self
            .redis_reconnects_synced
            .fetch_max(total, std::sync::atomic::Ordering::SeqCst);
        self.redis_reconnects.inc_by(total.saturating_sub(before));
    }

    /// Counts a job's end.
    pub fn job_ended(&self, kind: &str, outcome: &str, seconds: f64) {
        self.jobs
            .get_or_create(&JobLabels {
                kind: kind.into(),
                outcome: outcome.into(),
            })
            .inc();
        self.job_duration.observe(seconds);
    }

    /// Counts a CLI run.
    pub fn run_ended(&self, source: &str, outcome: &str, seconds: f64) {
        self.runs
            .get_or_create(&RunLabels {
                source: source.into(),
                outcome: outcome.into(),
            })
            .inc();
        self.run_duration.observe(seconds);
    }

    /// Counts a webhook delivery attempt's outcome.
    pub fn webhook(&self, outcome: &str) {
        self.webhook_deliveries
            .get_or_create(&WebhookLabels {
                outcome: outcome.to_string(),
            })
            .inc();
    }

    /// Counts a resume decision.
    pub fn decision(&self, decision: &str) {
        self.resume_decisions
            .get_or_create(&DecisionLabels {
                decision: decision.into(),
            })
            .inc();
    }

    /// The Prometheus text exposition of every metric.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redis_reconnects_follow_the_queues_count_once_each() {
        let m = Metrics::new();
        m.sync_redis_reconnects(2);
        m.sync_redis_reconnects(2);
        assert_eq!(
            m.redis_reconnects.get(),
            2,
            "a repeated scrape adds nothing"
        );
        m.sync_redis_reconnects(5);
        m.sync_redis_reconnects(3);
        assert_eq!(
            m.redis_reconnects.get(),
            5,
            "a scrape that read an older count adds nothing"
        );
    }

    #[test]
    fn metrics_are_exported_by_prometheus_conventions() {
        let m = Metrics::new();
        m.job_ended("create", "completed", 1.5);
        m.run_ended("build", "success", 0.2);
        m.decision("fresh_create");
        m.claims.inc();
        let text = m.encode();
        for line in [
            "baton_jobs_total{kind=\"create\",outcome=\"completed\"} 1",
            "baton_agent_runs_total{source=\"build\",outcome=\"success\"} 1",
            "baton_resume_decisions_total{decision=\"fresh_create\"} 1",
            "baton_claims_total 1",
            "baton_lost_entries_total 0",
            "baton_group_recreations_total 0",
            "baton_transcript_stored_bytes_total 0",
            "baton_transcript_incomplete_total 0",
            "# TYPE baton_transcript_restore_duration_seconds histogram",
            "baton_jobs_in_flight 0",
            "baton_job_duration_seconds_count 1",
            "# TYPE baton_agent_run_duration_seconds histogram",
        ] {
            assert!(text.contains(line), "missing {line:?} in\n{text}");
        }
    }
}
