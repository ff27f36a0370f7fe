//! How a job's processing ended, for the scheduler to end its entry.

use baton_core::JobKind;
use baton_core::events::Event;

/// How a job's processing ended; the scheduler ends its entry accordingly.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobEnd {
    /// Every step ran: acknowledge the entry.
    Completed {
        /// The session the job left, when it ran any step.
        session: Option<baton_core::SessionId>,
        /// The job's answer: its last run's result that is not a compaction's.
        output: Option<String>,
    },
    /// The job can never run as it is: dead-letter the entry.
    DeadLettered {
        /// Why.
        reason: String,
        /// Claims of the build so far.
        attempts: u32,
    },
    /// The entry names another build's id: dead-letter it, and say nothing under that id, which
    /// a backend follows for the other build.
    Conflict(String),
    /// A newer claim owns the job: drop the entry without writing.
    Fenced,
    /// The job was interrupted (shutdown, Redis or Postgres trouble, a spawn failure): hand the
    /// entry back so a replica runs it again from its last recorded run.
    HandBack(String),
    /// The CLI's credentials failed: hand the entry back and pause this worker.
    AuthFailed(String),
    /// Someone cancelled the build: acknowledge the entry. Nothing of a cut run is recorded.
    Cancelled {
        /// The project's newest session, which its next job resumes.
        session: Option<baton_core::SessionId>,
        /// Announce it with `job_cancelled`: not when the build was cancelled while queued,
        /// which its canceller announced.
        announce: bool,
    },
}

impl JobEnd {
    /// The end as the `outcome` label of `baton_jobs_total` and of the `job ended` log line.
    pub fn outcome(&self) -> &'static str {
        match self {
            JobEnd::Completed { .. } => "completed",
            JobEnd::DeadLettered { .. } | JobEnd::Conflict(_) => "dead_lettered",
            JobEnd::Fenced => "fenced",
            JobEnd::HandBack(_) => "handed_back",
            JobEnd::AuthFailed(_) => "auth_paused",
            JobEnd::Cancelled { .. } => "cancelled",
        }
    }

    /// Why and after how many claims the entry is dead-lettered, when it is.
    pub(crate) fn dead_letter(&self) -> Option<(&str, u32)> {
        match self {
            JobEnd::DeadLettered { reason, attempts } => Some((reason, *attempts)),
            JobEnd::Conflict(reason) => Some((reason, 0)),
            _ => None,
        }
    }

    /// The session a completed job left, when it ran any step.
    pub(crate) fn session(&self) -> Option<&str> {
        match self {
            JobEnd::Completed { session, .. } | JobEnd::Cancelled { session, .. } => {
                session.as_deref()
            }
            _ => None,
        }
    }

    /// The answer of a completed job, when it has one.
    pub(crate) fn output(&self) -> Option<&str> {
        match self {
            JobEnd::Completed { output, .. } => output.as_deref(),
            _ => None,
        }
    }

    /// Why the job did not complete, when it says.
    pub(crate) fn reason(&self) -> Option<&str> {
        match self {
            JobEnd::DeadLettered { reason, .. } => Some(reason),
            JobEnd::HandBack(why) | JobEnd::AuthFailed(why) | JobEnd::Conflict(why) => Some(why),
            JobEnd::Completed { .. } | JobEnd::Fenced | JobEnd::Cancelled { .. } => None,
        }
    }
}

/// How one delivered entry was processed, for its caller to end the entry.
pub struct Processed {
    /// The job's end.
    pub end: JobEnd,
    /// The progress event announcing it, when there is one, published with the entry's ending.
    pub event: Option<Event>,
    /// The job's span, so that what the caller logs while ending the entry carries its ids too.
    pub span: tracing::Span,
    /// The job's kind, when the entry held a valid job.
    pub kind: Option<JobKind>,
}
