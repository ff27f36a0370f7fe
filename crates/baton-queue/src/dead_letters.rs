//! The dead-letter stream `<stream>:dead`: what a worker gave up on, to list, replay or purge.

use super::*;

/// Why and how a job went to the dead-letter stream.
#[derive(Debug, Clone, Serialize)]
pub struct DeadLetter<'a> {
    /// The entry's id on the job stream.
    pub stream_id: &'a str,
    /// The entry as it was written.
    pub payload: &'a str,
    /// Why it cannot run.
    pub reason: &'a str,
    /// How many times it was tried.
    pub attempts: u32,
    /// The last error, where there was one beyond the reason.
    pub last_error: Option<&'a str>,
    /// The consumer that gave up on it.
    pub consumer: &'a str,
}

/// A dead letter as stored in `<stream>:dead`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeadEntry {
    /// The dead-letter entry's own id.
    pub id: String,
    /// Its fields: reason, payload, stream_id, attempts, last_error, consumer, failed_at_ms.
    pub fields: std::collections::BTreeMap<String, String>,
}

impl DeadEntry {
    /// The build its payload names, when the payload is a JSON object with a `build_id`.
    pub fn build_id(&self) -> Option<String> {
        let payload = self.fields.get("payload")?;
        let value: serde_json::Value = serde_json::from_str(payload).ok()?;
        value.get("build_id")?.as_str().map(str::to_string)
    }
}

pub(crate) fn dead_entry(e: redis::streams::StreamId) -> DeadEntry {
    DeadEntry {
        fields: e
            .map
            .iter()
            .map(|(k, v)| (k.clone(), value_text(v)))
            .collect(),
        id: e.id,
    }
}

impl Queue {
    /// Entries in the dead-letter stream.
    pub async fn dead_letter_length(&self) -> Result<u64, QueueError> {
        self.xlen(&self.dead_stream()).await
    }

    /// Up to `count` dead letters, oldest first.
    pub async fn dead_letters(&self, count: usize) -> Result<Vec<DeadEntry>, QueueError> {
        let mut conn = self.conn.clone();
        let reply: redis::streams::StreamRangeReply = redis::cmd("XRANGE")
            .arg(self.dead_stream())
            .arg("-")
            .arg("+")
            .arg("COUNT")
            .arg(count.max(1))
            .query_async(&mut conn)
            .await?;
        Ok(reply.ids.into_iter().map(dead_entry).collect())
    }

    /// One dead letter by its id.
    pub async fn dead_letter_entry(&self, id: &str) -> Result<Option<DeadEntry>, QueueError> {
        let mut conn = self.conn.clone();
        let reply: redis::streams::StreamRangeReply = redis::cmd("XRANGE")
            .arg(self.dead_stream())
            .arg(id)
            .arg(id)
            .query_async(&mut conn)
            .await?;
        Ok(reply.ids.into_iter().next().map(dead_entry))
    }

    /// Puts a dead letter's payload back on the job stream and removes the letter, atomically.
    /// Returns the new entry's id, or `None` when there is no such letter.
    pub async fn replay_dead_letter(&self, id: &str) -> Result<Option<String>, QueueError> {
        let Some(letter) = self.dead_letter_entry(id).await? else {
            return Ok(None);
        };
        let payload = letter.fields.get("payload").cloned().unwrap_or_default();
        let mut conn = self.conn.clone();
        let (new_id, _): (String, i64) = redis::pipe()
            .atomic()
            .cmd("XADD")
            .arg(&self.stream)
            .arg("*")
            .arg(JOB_FIELD)
            .arg(payload)
            .cmd("XDEL")
            .arg(self.dead_stream())
            .arg(id)
            .query_async(&mut conn)
            .await?;
        Ok(Some(new_id))
    }

    /// Deletes one dead letter, or all of them; returns how many went.
    pub async fn purge_dead_letters(&self, id: Option<&str>) -> Result<u64, QueueError> {
        let mut conn = self.conn.clone();
        Ok(match id {
            Some(id) => {
                redis::cmd("XDEL")
                    .arg(self.dead_stream())
                    .arg(id)
                    .query_async(&mut conn)
                    .await?
            }
            None => {
                let n = self.dead_letter_length().await?;
                redis::cmd("DEL")
                    .arg(self.dead_stream())
                    .query_async::<i64>(&mut conn)
                    .await?;
                n
            }
        })
    }
}
