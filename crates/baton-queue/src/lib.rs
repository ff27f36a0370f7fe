//! Baton's Redis side: jobs on a stream read by one consumer group, the dead-letter stream beside
//! it, and each build's session checkpoint `claude:session:<buildId>`.
//!
//! Delivery is at least once through a consumer group. Each entry is queued under its project when
//! it is delivered (one Lua script, so every project's queue is in stream order), and starts only
//! when it heads that queue and takes the project's lease: at most one job of a project runs at a
//! time, in enqueue order, while other projects go on. Workers refresh their entries and leases
//! with a heartbeat; entries nobody refreshed for the claim timeout are taken over with
//! `XAUTOCLAIM`. The scripts tell an entry taken or ended elsewhere from one Redis lost (a restart
//! without its data), whose job its worker puts back ([`Holding`]). The scripts live in `src/lua/`.
//!
//! Commands share one multiplexed connection, redis-rs's `ConnectionManager`, which reconnects by
//! itself when the connection breaks, and is replaced when it stays open but stops answering
//! (`conn`). (A `deadpool-redis` pool, used before, checks every connection it hands out with an
//! `UNWATCH` and a `PING`: a second round trip for every command.) Waiting for new entries
//! (`XREAD ... BLOCK`) uses a dedicated connection without the client's default reply timeout,
//! which would otherwise cut every wait longer than it; such a wait is given up
//! [`BLOCKED_REPLY_GRACE`] after its block ran out, and the reader opens a new connection.
//!
//! By concern: `entries` (the stream's entries, project queues and leases: read, start,
//! heartbeat, takeover, finish), `events` (progress events and wake-ups), `dead_letters`,
//! `checkpoints`, and `conn` (the shared connection); this file holds the queue itself, its
//! group and what the modules share.

mod cancels;
mod checkpoints;
mod conn;
mod dead_letters;
mod entries;
mod events;

pub use dead_letters::{DeadEntry, DeadLetter};
pub use entries::{Consumer, ConsumerInfo, Delivery, Ending, Holding, Start};
pub use events::{EventReader, Wake};

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use baton_core::{Checkpoint, JOB_FIELD, Job, checkpoint_key, dead_letter_stream};
use redis::aio::{ConnectionManagerConfig, MultiplexedConnection};
use redis::{AsyncConnectionConfig, IntoConnectionInfo};
use serde::Serialize;

/// About how many dead letters a queue keeps unless told otherwise (`BATON_DEAD_LETTER_MAXLEN`):
/// enough for weeks of a fleet's failures, bounded so a storm of bad jobs cannot fill Redis.
pub const DEFAULT_DEAD_LETTER_MAXLEN: u64 = 10_000;

/// What can go wrong talking to Redis.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    /// Redis refused or failed a command.
    #[error(transparent)]
    Redis(#[from] redis::RedisError),
    /// A blocking read got no reply long after its block ran out: its connection is presumed
    /// dead (a firewall or NAT that forgot it drops the reply without a word, and the reader,
    /// sending nothing, would wait forever). Open a new reader.
    #[error(
        "no reply from Redis {waited:?} into a read blocking for {block:?}; the connection is presumed dead"
    )]
    NoReply {
        /// How long the read waited.
        waited: Duration,
        /// What it asked Redis to block for.
        block: Duration,
    },
    /// A stored checkpoint is not valid JSON.
    #[error("checkpoint for build {build_id} is unreadable: {cause}")]
    BadCheckpoint {
        /// The build.
        build_id: String,
        /// Why it did not parse.
        cause: serde_json::Error,
    },
}

impl QueueError {
    /// Whether Redis no longer has the consumer group (or its stream): it restarted without its
    /// data, or someone deleted them. [`Queue::ensure_group`] creates them again.
    pub fn is_missing_group(&self) -> bool {
        matches!(self, QueueError::Redis(e) if e.code() == Some("NOGROUP"))
    }
}

struct Scripts {
    read: redis::Script,
    autoclaim: redis::Script,
    start: redis::Script,
    heartbeat: redis::Script,
    finish: redis::Script,
    handback: redis::Script,
    group: redis::Script,
    leave: redis::Script,
}

impl Scripts {
    fn load() -> Scripts {
        const PRELUDE: &str = include_str!("lua/prelude.lua");
        let script = |body: &str| redis::Script::new(&format!("{PRELUDE}\n{body}"));
        Scripts {
            read: script(include_str!("lua/read.lua")),
            autoclaim: script(include_str!("lua/autoclaim.lua")),
            start: script(include_str!("lua/start.lua")),
            heartbeat: script(include_str!("lua/heartbeat.lua")),
            finish: script(include_str!("lua/finish.lua")),
            handback: script(include_str!("lua/handback.lua")),
            group: script(include_str!("lua/group.lua")),
            leave: script(include_str!("lua/leave.lua")),
        }
    }
}

/// The job stream, its group and dead letters, the project queues and leases, and the
/// checkpoints. Cheap to clone.
#[derive(Clone)]
pub struct Queue {
    conn: conn::Conn,
    client: redis::Client,
    stream: String,
    group: String,
    scripts: Arc<Scripts>,
    dead_letter_maxlen: u64,
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
        // Requests are small and answered at once: without TCP_NODELAY (off in `redis`'s default),
        // Nagle's algorithm holds a request back while an earlier one on the shared connection
        // awaits its acknowledgement. Under `just bench` that cost 7% of the throughput.
        let info = redis_url
            .into_connection_info()?
            .set_tcp_settings(redis::io::tcp::TcpSettings::default().set_nodelay(true));
        let client = redis::Client::open(info)?;
        // Connects on first use (the ping below), retrying briefly: a Redis that is down is
        // reported within a second, and callers retry with their own backoff.
        let config = ConnectionManagerConfig::new()
            .set_number_of_retries(2)
            .set_max_delay(Duration::from_millis(500));
        let conn = conn::Conn::new(client.clone(), config)?;
        let queue = Queue {
            conn,
            client,
            stream: stream.to_string(),
            group: group.to_string(),
            scripts: Arc::new(Scripts::load()),
            dead_letter_maxlen: DEFAULT_DEAD_LETTER_MAXLEN,
        };
        queue.ping().await?;
        Ok(queue)
    }

    /// The same queue keeping about `maxlen` dead letters (the oldest go first); see
    /// [`DEFAULT_DEAD_LETTER_MAXLEN`].
    pub fn with_dead_letter_maxlen(mut self, maxlen: u64) -> Queue {
        self.dead_letter_maxlen = maxlen;
        self
    }

    /// How many times the shared connection stopped answering (it stayed open, but replies
    /// timed out again and again) and was replaced by a new one.
    pub fn connections_replaced(&self) -> u64 {
        self.conn.replaced()
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
        let mut conn = self.conn.clone();
        redis::cmd("PING").query_async::<String>(&mut conn).await?;
        Ok(())
    }

    /// Creates the consumer group (and the stream) unless it exists; returns whether it did. New
    /// groups start at the stream's beginning, so jobs enqueued before the first worker started are
    /// not skipped. Notes since when the group delivers (`<stream>:since`), which tells an entry
    /// ended elsewhere from one Redis lost (group.lua).
    pub async fn ensure_group(&self) -> Result<bool, QueueError> {
        let mut conn = self.conn.clone();
        let made: String = self
            .scripts
            .group
            .key(&self.stream)
            .key(format!("{}:since", self.stream))
            .arg(&self.group)
            .invoke_async(&mut conn)
            .await?;
        Ok(made == "created")
    }

    /// Removes `consumer` from the group, unless it still holds entries (which must stay where a
    /// claim pass finds them); returns whether it left.
    pub async fn leave(&self, consumer: &str) -> Result<bool, QueueError> {
        let mut conn = self.conn.clone();
        let left: String = self
            .scripts
            .leave
            .key(&self.stream)
            .arg(&self.group)
            .arg(consumer)
            .invoke_async(&mut conn)
            .await?;
        Ok(left == "left")
    }

    /// Whether Redis keeps its data on disk (an append-only file or snapshots), so a restart does
    /// not lose the queue; `None` when Redis does not say (`CONFIG` disabled, as on some managed
    /// services).
    pub async fn keeps_data(&self) -> Option<bool> {
        let mut conn = self.conn.clone();
        let mut setting = async |name: &str| -> Option<String> {
            let pair: Vec<String> = redis::cmd("CONFIG")
                .arg("GET")
                .arg(name)
                .query_async(&mut conn)
                .await
                .ok()?;
            pair.into_iter().nth(1)
        };
        let aof = setting("appendonly").await?;
        let snapshots = setting("save").await?;
        Some(aof == "yes" || !snapshots.trim().is_empty())
    }

    pub(crate) async fn xlen(&self, key: &str) -> Result<u64, QueueError> {
        let mut conn = self.conn.clone();
        Ok(redis::cmd("XLEN").arg(key).query_async(&mut conn).await?)
    }

    /// Deletes every key named after the stream (the stream with its group, the dead letters, the
    /// events, the project queues and leases); returns how many went. For tests and benchmarks
    /// cleaning up after themselves: a fleet reading the stream loses its jobs.
    pub async fn delete_all_keys(&self) -> Result<u64, QueueError> {
        let mut conn = self.conn.clone();
        // Every derived key is `<stream>:...`. SCAN matches globs, so the name is escaped, and a
        // stream whose name merely starts with this one's is left alone.
        let pattern: String = self
            .stream
            .chars()
            .flat_map(|c| {
                let escape = matches!(c, '*' | '?' | '[' | ']' | '\\').then_some('\\');
                escape.into_iter().chain([c])
            })
            .chain([':', '*'])
            .collect();
        let mut keys: Vec<String> = vec![self.stream.clone()];
        let mut cursor = 0u64;
        loop {
            let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(&pattern)
                .arg("COUNT")
                .arg(1000)
                .query_async(&mut conn)
                .await?;
            keys.extend(batch);
            if next == 0 {
                break;
            }
            cursor = next;
        }
        keys.sort();
        keys.dedup();
        let mut deleted = 0;
        for chunk in keys.chunks(500) {
            deleted += redis::cmd("DEL")
                .arg(chunk)
                .query_async::<u64>(&mut conn)
                .await?;
        }
        Ok(deleted)
    }
}

/// How much longer than its `BLOCK` a blocking read may wait for its reply before its connection
/// is given up as dead. Readers use connections without a reply timeout, since a block is long by
/// design; this bounds it instead.
pub const BLOCKED_REPLY_GRACE: Duration = Duration::from_secs(5);

/// Awaits the reply of a read that blocks for `block`, at most `block` + [`BLOCKED_REPLY_GRACE`].
pub(crate) async fn bounded_block<T>(
    block: Duration,
    read: impl std::future::Future<Output = redis::RedisResult<T>>,
) -> Result<T, QueueError> {
    let limit = block + BLOCKED_REPLY_GRACE;
    match tokio::time::timeout(limit, read).await {
        Ok(reply) => Ok(reply?),
        Err(_) => Err(QueueError::NoReply {
            waited: limit,
            block,
        }),
    }
}

pub(crate) fn as_array(v: redis::Value) -> Vec<redis::Value> {
    match v {
        redis::Value::Array(items) => items,
        _ => Vec::new(),
    }
}

pub(crate) fn value_text(v: &redis::Value) -> String {
    match v {
        redis::Value::BulkString(b) => String::from_utf8_lossy(b).into_owned(),
        redis::Value::SimpleString(s) => s.clone(),
        redis::Value::Int(i) => i.to_string(),
        other => format!("{other:?}"),
    }
}

#[cfg(test)]
mod tests;
