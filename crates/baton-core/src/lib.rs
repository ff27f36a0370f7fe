//! Baton's domain: the versioned job format and its validation, the step plan each job kind runs,
//! the session checkpoint, and the names shared by the producer, the worker and the ledger.
//!
//! This crate does no I/O, so every other crate can depend on it.

pub mod agent;
pub mod checkpoint;
pub mod connection;
pub mod events;
pub mod help;
pub mod ids;
pub mod job;
pub mod plan;
pub mod policy;
pub mod webhook;

pub use checkpoint::{Checkpoint, checkpoint_key};
pub use connection::Connection;
pub use ids::{BuildId, Fence, ProjectId, SessionId};
pub use job::{Job, JobError, JobKind, Limits, NewJob, ReadableJob};
pub use plan::{BuildStatus, Source, Step};

/// The stream jobs are enqueued on unless `BATON_STREAM` says otherwise.
pub const DEFAULT_STREAM: &str = "baton:builds";
/// The consumer group workers join unless `BATON_GROUP` says otherwise.
pub const DEFAULT_GROUP: &str = "baton-workers";
/// The field of a stream entry that holds the job's JSON.
pub const JOB_FIELD: &str = "job";

/// The dead-letter stream that belongs to a job stream.
pub fn dead_letter_stream(stream: &str) -> String {
    format!("{stream}:dead")
}

/// An error with its causes on one line, leaving out each cause that the text before it already
/// quotes: Baton's errors quote their source in their own message, so a plain walk down the chain
/// would print it twice.
pub fn describe_error(error: &(dyn std::error::Error + 'static)) -> String {
    let mut out = String::new();
    let mut cause = Some(error);
    while let Some(e) = cause {
        let text = e.to_string();
        if !out.contains(&text) {
            if !out.is_empty() {
                out.push_str(": ");
            }
            out.push_str(&text);
        }
        cause = e.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    enum Outer {
        #[error("redis error: {0}")]
        Quoting(#[source] std::io::Error),
        #[error("cannot reach Redis")]
        Wrapping(#[source] std::io::Error),
    }

    #[test]
    fn a_cause_the_message_already_quotes_is_not_repeated() {
        let refused = || std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        assert_eq!(
            describe_error(&Outer::Quoting(refused())),
            "redis error: refused"
        );
        assert_eq!(
            describe_error(&Outer::Wrapping(refused())),
            "cannot reach Redis: refused"
        );
    }
}
