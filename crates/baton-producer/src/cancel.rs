//! Cancelling a build, for `baton cancel` and `baton serve`: the ledger decides; a queued build's
//! end is announced here (no worker will run it), a running build's request goes to Redis, where
//! the worker that holds it reads it with its next heartbeat.

use baton_core::events::{Event, EventType};
use baton_ledger::cancel::Cancel;
use baton_ledger::{Ledger, LedgerError};
use baton_queue::Queue;

use crate::ProducerError;

/// Cancels `build_id`. Answers what happened; an unknown build is
/// [`LedgerError::UnknownBuild`].
pub async fn cancel(
    queue: &Queue,
    ledger: &Ledger,
    build_id: &str,
) -> Result<Cancel, ProducerError> {
    // Read for its project; whether it already ended is the cancel's own answer, under its lock.
    let state = ledger.build_state(build_id).await?;
    let done = ledger.cancel_build(build_id).await?;
    match done {
        Cancel::Cancelled => {
            // The followers of the build learn now that it ended; its chain's session (the
            // project's, or its thread's) is as the last job left it.
            let mut event = Event::new(EventType::JobCancelled, build_id, &state.project_id);
            event.session_id = ledger
                .chain_head(&state.project_id, state.thread_id.as_deref())
                .await?
                .map(String::from);
            queue.publish_event(&event).await?;
        }
        Cancel::Requested => {
            queue.request_cancel(build_id).await?;
            // The job may have ended between the ledger's answer and the request: then no worker
            // will clear it, so it is cleared here.
            if ledger.build_state(build_id).await?.status.is_final() {
                queue.clear_cancel(build_id).await?;
            }
        }
        Cancel::Ended(_) => {}
    }
    Ok(done)
}

/// Whether an error of [`cancel`] means the build is unknown.
pub fn is_unknown_build(e: &ProducerError) -> bool {
    matches!(e, ProducerError::Ledger(LedgerError::UnknownBuild(_)))
}
