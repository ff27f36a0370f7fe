//! Replaying a dead letter, for `baton dlq replay` and `baton serve`.

use baton_ledger::Ledger;
use baton_queue::Queue;
use serde::Serialize;

use crate::ProducerError;

/// A dead letter put back on the job stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Replayed {
    /// The dead letter's id.
    pub dead_letter: String,
    /// The new entry's id on the job stream.
    pub stream_id: String,
    /// The build it carries, when its payload names one.
    pub build_id: Option<String>,
}

/// Puts dead letter `id` back on the job stream, reopening its failed build first (or the replay
/// would be taken for a finished duplicate). `None` when there is no such dead letter.
pub async fn replay(
    queue: &Queue,
    ledger: &Ledger,
    id: &str,
) -> Result<Option<Replayed>, ProducerError> {
    let Some(letter) = queue.dead_letter_entry(id).await? else {
        return Ok(None);
    };
    let build_id = letter.build_id();
    if let Some(build) = &build_id {
        ledger.reopen_build(build).await?;
    }
    Ok(queue
        .replay_dead_letter(id)
        .await?
        .map(|stream_id| Replayed {
            dead_letter: id.to_string(),
            stream_id,
            build_id,
        }))
}
