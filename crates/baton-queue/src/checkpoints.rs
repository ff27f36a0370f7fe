//! Each build's session checkpoint `claude:session:<buildId>` (an hour to live): the fast path
//! beside the ledger.

use super::*;

/// A checkpoint as read from Redis, if there was one.
pub(crate) fn parse_checkpoint(
    build_id: &str,
    raw: Option<String>,
) -> Result<Option<Checkpoint>, QueueError> {
    raw.map(|r| {
        serde_json::from_str(&r).map_err(|cause| QueueError::BadCheckpoint {
            build_id: build_id.to_string(),
            cause,
        })
    })
    .transpose()
}

/// The `SET` that stores `checkpoint` under its build with the checkpoint TTL.
pub(crate) fn checkpoint_cmd(checkpoint: &Checkpoint) -> redis::Cmd {
    let mut cmd = redis::cmd("SET");
    cmd.arg(checkpoint_key(&checkpoint.build_id))
        .arg(serde_json::to_string(checkpoint).expect("a checkpoint serialises"))
        .arg("EX")
        .arg(baton_core::checkpoint::CHECKPOINT_TTL_SECS);
    cmd
}

impl Queue {
    /// Saves a build's checkpoint with the one-hour TTL.
    pub async fn save_checkpoint(&self, checkpoint: &Checkpoint) -> Result<(), QueueError> {
        self.save_checkpoint_with_events(checkpoint, &[]).await
    }

    /// Saves a checkpoint and publishes the progress events that go with it, in order, in one
    /// round trip.
    pub async fn save_checkpoint_with_events(
        &self,
        checkpoint: &Checkpoint,
        events: &[&baton_core::events::Event],
    ) -> Result<(), QueueError> {
        let mut conn = self.conn.clone();
        let mut pipe = redis::pipe();
        pipe.add_command(checkpoint_cmd(checkpoint)).ignore();
        for event in events {
            pipe.add_command(self.event_cmd(event)).ignore();
        }
        pipe.query_async::<()>(&mut conn).await?;
        Ok(())
    }

    /// A build's checkpoint, if Redis still has it.
    pub async fn load_checkpoint(&self, build_id: &str) -> Result<Option<Checkpoint>, QueueError> {
        let mut conn = self.conn.clone();
        let raw: Option<String> = redis::cmd("GET")
            .arg(checkpoint_key(build_id))
            .query_async(&mut conn)
            .await?;
        parse_checkpoint(build_id, raw)
    }

    /// Publishes `event` and reads `build_id`'s checkpoint in one round trip: what a job does as
    /// it starts.
    pub async fn publish_and_load_checkpoint(
        &self,
        event: &baton_core::events::Event,
        build_id: &str,
    ) -> Result<Option<Checkpoint>, QueueError> {
        let mut conn = self.conn.clone();
        let (raw,): (Option<String>,) = redis::pipe()
            .add_command(self.event_cmd(event))
            .ignore()
            .get(checkpoint_key(build_id))
            .query_async(&mut conn)
            .await?;
        parse_checkpoint(build_id, raw)
    }
}
