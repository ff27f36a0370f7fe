//! What can stop a worker from starting or running.

use baton_ledger::LedgerError;
use baton_queue::QueueError;

/// Why the worker cannot start or go on.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    /// A setting the worker refuses; the message names its variable.
    #[error("{0}")]
    Setting(String),
    /// Redis refused or failed.
    #[error(transparent)]
    Queue(#[from] QueueError),
    /// Postgres refused or failed.
    #[error(transparent)]
    Ledger(#[from] LedgerError),
    /// A file or socket could not be used.
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// `Err` with the setting's complaint unless `holds`.
pub(crate) fn ensure(holds: bool, complaint: impl FnOnce() -> String) -> Result<(), WorkerError> {
    if holds {
        Ok(())
    } else {
        Err(WorkerError::Setting(complaint()))
    }
}
