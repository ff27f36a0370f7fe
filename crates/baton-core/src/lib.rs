//! Baton's domain: the versioned job format and its validation, the step plan each job kind runs,
//! the session checkpoint, and the names shared by the producer, the worker and the ledger.
//!
//! This crate does no I/O, so every other crate can depend on it.

pub mod checkpoint;
pub mod events;
pub mod job;
pub mod plan;
pub mod policy;

pub use checkpoint::{Checkpoint, checkpoint_key};
pub use job::{Job, JobError, JobKind, Limits, NewJob};
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
