//! The producer: validates a job, records it as queued in the ledger, and adds it to the stream.
//!
//! A backend in Rust uses [`Producer`]; one in another language writes the same JSON (see
//! `crates/baton-core/job.schema.json`) with `XADD <stream> * job <json>`.

pub mod api;
pub mod cancel;
mod dashboard;
pub mod dead_letters;
pub mod sessions;

use baton_core::{Job, JobError, Limits, NewJob};
use baton_ledger::{Ledger, LedgerError};
use baton_queue::{Queue, QueueError};
use serde::Serialize;

/// What can go wrong enqueueing a job.
#[derive(Debug, thiserror::Error)]
pub enum ProducerError {
    /// The job is invalid; nothing was enqueued.
    #[error(transparent)]
    Invalid(#[from] JobError),
    /// Redis refused the job.
    #[error(transparent)]
    Queue(#[from] QueueError),
    /// The ledger could not record the job as queued.
    #[error(transparent)]
    Ledger(#[from] LedgerError),
}

/// Refuses a job whose own `webhook_url` does not start with a prefix of `allow`
/// (`BATON_WEBHOOK_ALLOW`), as the worker would.
pub fn check_webhook_allowed(job: &Job, allow: &[String]) -> Result<(), JobError> {
    match &job.webhook_url {
        Some(url) => baton_core::webhook::check_allowed(url, allow)
            .map_err(|why| JobError::invalid("webhook_url", why)),
        None => Ok(()),
    }
}

/// A job that is on the stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Enqueued {
    /// The build's id.
    pub build_id: baton_core::BuildId,
    /// The stream entry's id.
    pub stream_id: String,
}

/// Enqueues jobs on one stream, recording them in the ledger when it has one.
#[derive(Debug, Clone)]
pub struct Producer {
    queue: Queue,
    ledger: Option<Ledger>,
    limits: Limits,
    webhook_allow: Vec<String>,
}

impl Producer {
    /// A producer over a queue and, optionally, the ledger (for `queued` build states).
    pub fn new(queue: Queue, ledger: Option<Ledger>, limits: Limits) -> Self {
        Producer {
            queue,
            ledger,
            limits,
            webhook_allow: Vec::new(),
        }
    }

    /// This producer with the prefixes a job's own `webhook_url` must start with
    /// (`BATON_WEBHOOK_ALLOW`); without them, a job naming one is refused.
    pub fn with_webhook_allow(self, allow: Vec<String>) -> Self {
        Producer {
            webhook_allow: allow,
            ..self
        }
    }

    /// Validates and enqueues a job.
    pub async fn enqueue(&self, new: NewJob) -> Result<Enqueued, ProducerError> {
        let job = new.into_job(&self.limits)?;
        self.enqueue_job(&job).await
    }

    /// Enqueues a job built elsewhere, after validating it again.
    pub async fn enqueue_job(&self, job: &Job) -> Result<Enqueued, ProducerError> {
        job.validate(&self.limits)?;
        check_webhook_allowed(job, &self.webhook_allow)?;
        // Recorded before the XADD so a fast worker never finds a build the ledger has not seen.
        if let Some(ledger) = &self.ledger {
            ledger.record_queued(job, None).await?;
        }
        let stream_id = match self.queue.enqueue(job).await {
            Ok(id) => id,
            Err(e) => {
                if let Some(ledger) = &self.ledger {
                    let _ = ledger
                        .fail_unclaimed(job, &format!("enqueue failed: {e}"))
                        .await;
                }
                return Err(e.into());
            }
        };
        Ok(Enqueued {
            build_id: job.build_id.clone(),
            stream_id,
        })
    }
}
