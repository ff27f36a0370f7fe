//! Baton's Redis side: jobs on a stream read by one consumer group, the dead-letter stream beside
//! it, and each build's session checkpoint `claude:session:<buildId>`.
//!
//! Commands go through a `deadpool-redis` pool. Blocking reads (`XREADGROUP ... BLOCK`) get a
//! dedicated connection without the client's default reply timeout, which would otherwise cut every
//! read that waits longer than it.

use std::collections::HashMap;
use std::time::Duration;

use baton_core::{Checkpoint, JOB_FIELD, Job, checkpoint_key, dead_letter_stream};
use deadpool_redis::{Config as PoolConfig, Pool, Runtime};
use redis::AsyncConnectionConfig;
use redis::aio::MultiplexedConnection;
use redis::streams::StreamReadReply;
use serde::Serialize;

/// What can go wrong talking to Redis.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    /// Redis refused or failed a command.
    #[error("redis error: {0}")]
    Redis(#[from] redis::RedisError),
    /// No connection could be had from the pool.
    #[error("redis pool error: {0}")]
    Pool(#[from] deadpool_redis::PoolError),
    /// The pool could not be built from the URL.
    #[error("invalid redis configuration: {0}")]
    Config(#[from] deadpool_redis::CreatePoolError),
    /// A stored checkpoint is not valid JSON.
    #[error("checkpoint for build {build_id} is unreadable: {source}")]
    BadCheckpoint {
        /// The build.
        build_id: String,
        /// Why it did not parse.
        source: serde_json::Error,
    },
}

/// One entry read from the job stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// The entry's stream id; what is acknowledged.
    pub id: String,
    /// The job field's text, or `None` when the entry has no `job` field.
    pub payload: Option<String>,
    /// Every field as text, for dead letters of entries that are not jobs.
    pub fields: HashMap<String, String>,
}

impl Delivery {
    /// The entry as it was written: the job field, or all fields when there is none.
    pub fn original(&self) -> String {
        match &self.payload {
            Some(p) => p.clone(),
            None => serde_json::to_string(&self.fields).unwrap_or_default(),
        }
    }
}

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

/// The job stream, its group and dead letters, and the checkpoints. Cheap to clone.
#[derive(Clone)]
pub struct Queue {
    pool: Pool,
    client: redis::Client,
    stream: String,
    group: String,
}

impl std::fmt::Debug for Queue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Queue")
            .field("stream", &self.stream)
            .field("group", &self.group)
            .finish_non_exhaustive()
    }
}

impl Queue {
    /// Connects to `redis_url` for the job stream `stream` and consumer group `group`.
    pub async fn connect(redis_url: &str, stream: &str, group: &str) -> Result<Queue, QueueError> {
        let client = redis::Client::open(redis_url)?;
        let pool = PoolConfig::from_url(redis_url).create_pool(Some(Runtime::Tokio1))?;
        let queue = Queue {
            pool,
            client,
            stream: stream.to_string(),
            group: group.to_string(),
        };
        queue.ping().await?;
        Ok(queue)
    }

    /// The job stream's name.
    pub fn stream(&self) -> &str {
        &self.stream
    }

    /// The consumer group's name.
    pub fn group(&self) -> &str {
        &self.group
    }

    /// The dead-letter stream's name (`<stream>:dead`).
    pub fn dead_stream(&self) -> String {
        dead_letter_stream(&self.stream)
    }

    /// Checks that Redis answers.
    pub async fn ping(&self) -> Result<(), QueueError> {
        let mut conn = self.pool.get().await?;
        redis::cmd("PING").query_async::<String>(&mut conn).await?;
        Ok(())
    }

    /// Creates the consumer group (and the stream) unless it exists. New groups start at the
    /// stream's beginning, so jobs enqueued before the first worker started are not skipped.
    pub async fn ensure_group(&self) -> Result<(), QueueError> {
        let mut conn = self.pool.get().await?;
        let created: Result<String, _> = redis::cmd("XGROUP")
            .arg("CREATE")
            .arg(&self.stream)
            .arg(&self.group)
            .arg("0")
            .arg("MKSTREAM")
            .query_async(&mut conn)
            .await;
        match created {
            Ok(_) => Ok(()),
            Err(e) if e.code() == Some("BUSYGROUP") => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Adds a validated job to the stream; returns the entry's stream id.
    pub async fn enqueue(&self, job: &Job) -> Result<String, QueueError> {
        self.enqueue_raw(&job.to_json()).await
    }

    /// Adds any text as a job entry. For producers that validated elsewhere, and for tests that
    /// need to put garbage on the stream.
    pub async fn enqueue_raw(&self, payload: &str) -> Result<String, QueueError> {
        let mut conn = self.pool.get().await?;
        Ok(redis::cmd("XADD")
            .arg(&self.stream)
            .arg("*")
            .arg(JOB_FIELD)
            .arg(payload)
            .query_async(&mut conn)
            .await?)
    }

    /// A reader for the consumer `name`, on its own connection without a reply timeout.
    pub async fn consumer(&self, name: &str) -> Result<Consumer, QueueError> {
        let config = AsyncConnectionConfig::new().set_response_timeout(None);
        let conn = self
            .client
            .get_multiplexed_async_connection_with_config(&config)
            .await?;
        Ok(Consumer {
            conn,
            stream: self.stream.clone(),
            group: self.group.clone(),
            name: name.to_string(),
        })
    }

    /// Acknowledges an entry: the group is done with it.
    pub async fn ack(&self, id: &str) -> Result<(), QueueError> {
        let mut conn = self.pool.get().await?;
        redis::cmd("XACK")
            .arg(&self.stream)
            .arg(&self.group)
            .arg(id)
            .query_async::<i64>(&mut conn)
            .await?;
        Ok(())
    }

    /// How many entries the group has delivered and not yet acknowledged.
    pub async fn pending_count(&self) -> Result<u64, QueueError> {
        let mut conn = self.pool.get().await?;
        // XPENDING's summary form begins with the count; the rest is not needed here.
        let summary: Vec<redis::Value> = redis::cmd("XPENDING")
            .arg(&self.stream)
            .arg(&self.group)
            .query_async(&mut conn)
            .await?;
        Ok(match summary.first() {
            Some(redis::Value::Int(n)) => u64::try_from(*n).unwrap_or(0),
            _ => 0,
        })
    }

    /// Moves an entry to the dead-letter stream with its reason and acknowledges it, atomically.
    pub async fn dead_letter(&self, letter: &DeadLetter<'_>) -> Result<String, QueueError> {
        let mut conn = self.pool.get().await?;
        let failed_at = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis())
            .unwrap_or(0);
        let (dead_id, _acked): (String, i64) = redis::pipe()
            .atomic()
            .cmd("XADD")
            .arg(self.dead_stream())
            .arg("*")
            .arg("reason")
            .arg(letter.reason)
            .arg("payload")
            .arg(letter.payload)
            .arg("stream_id")
            .arg(letter.stream_id)
            .arg("attempts")
            .arg(letter.attempts)
            .arg("last_error")
            .arg(letter.last_error.unwrap_or(""))
            .arg("consumer")
            .arg(letter.consumer)
            .arg("failed_at_ms")
            .arg(failed_at.to_string())
            .cmd("XACK")
            .arg(&self.stream)
            .arg(&self.group)
            .arg(letter.stream_id)
            .query_async(&mut conn)
            .await?;
        Ok(dead_id)
    }

    /// Saves a build's checkpoint with the one-hour TTL.
    pub async fn save_checkpoint(&self, checkpoint: &Checkpoint) -> Result<(), QueueError> {
        let mut conn = self.pool.get().await?;
        let json = serde_json::to_string(checkpoint).expect("a checkpoint serialises");
        redis::cmd("SET")
            .arg(checkpoint_key(&checkpoint.build_id))
            .arg(json)
            .arg("EX")
            .arg(baton_core::checkpoint::CHECKPOINT_TTL_SECS)
            .query_async::<()>(&mut conn)
            .await?;
        Ok(())
    }

    /// A build's checkpoint, if Redis still has it.
    pub async fn load_checkpoint(&self, build_id: &str) -> Result<Option<Checkpoint>, QueueError> {
        let mut conn = self.pool.get().await?;
        let raw: Option<String> = redis::cmd("GET")
            .arg(checkpoint_key(build_id))
            .query_async(&mut conn)
            .await?;
        raw.map(|r| {
            serde_json::from_str(&r).map_err(|source| QueueError::BadCheckpoint {
                build_id: build_id.to_string(),
                source,
            })
        })
        .transpose()
    }
}

/// Reads the group's entries for one consumer name.
pub struct Consumer {
    conn: MultiplexedConnection,
    stream: String,
    group: String,
    name: String,
}

impl Consumer {
    /// The consumer's name in the group.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Reads up to `count` new entries, waiting at most `block` for the first.
    pub async fn read(
        &mut self,
        count: usize,
        block: Duration,
    ) -> Result<Vec<Delivery>, QueueError> {
        let reply: Option<StreamReadReply> = redis::cmd("XREADGROUP")
            .arg("GROUP")
            .arg(&self.group)
            .arg(&self.name)
            .arg("COUNT")
            .arg(count.max(1))
            .arg("BLOCK")
            .arg(block.as_millis() as u64)
            .arg("STREAMS")
            .arg(&self.stream)
            .arg(">")
            .query_async(&mut self.conn)
            .await?;
        let Some(reply) = reply else {
            return Ok(Vec::new());
        };
        Ok(reply
            .keys
            .into_iter()
            .flat_map(|k| k.ids)
            .map(|entry| {
                let fields: HashMap<String, String> = entry
                    .map
                    .iter()
                    .map(|(k, v)| (k.clone(), value_text(v)))
                    .collect();
                Delivery {
                    id: entry.id,
                    payload: fields.get(JOB_FIELD).cloned(),
                    fields,
                }
            })
            .collect())
    }
}

fn value_text(v: &redis::Value) -> String {
    match v {
        redis::Value::BulkString(b) => String::from_utf8_lossy(b).into_owned(),
        redis::Value::SimpleString(s) => s.clone(),
        redis::Value::Int(i) => i.to_string(),
        other => format!("{other:?}"),
    }
}

#[cfg(test)]
mod tests;
