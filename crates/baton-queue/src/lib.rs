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

mod conn;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use baton_core::{Checkpoint, JOB_FIELD, Job, checkpoint_key, dead_letter_stream};
use redis::aio::{ConnectionManagerConfig, MultiplexedConnection};
use redis::{AsyncConnectionConfig, IntoConnectionInfo};
use serde::Serialize;

/// The idle time a handback gives its entries: "since a day ago", past any claim timeout, so the
/// next claim pass takes them. Heartbeats leave entries this idle alone.
const HANDED_BACK_IDLE_MS: u64 = 86_400_000;

/// About how many dead letters a queue keeps unless told otherwise (`BATON_DEAD_LETTER_MAXLEN`):
/// enough for weeks of a fleet's failures, bounded so a storm of bad jobs cannot fill Redis.
pub const DEFAULT_DEAD_LETTER_MAXLEN: u64 = 10_000;

/// What can go wrong talking to Redis.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    /// Redis refused or failed a command.
    #[error("redis error: {0}")]
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
    #[error("checkpoint for build {build_id} is unreadable: {source}")]
    BadCheckpoint {
        /// The build.
        build_id: String,
        /// Why it did not parse.
        source: serde_json::Error,
    },
}

impl QueueError {
    /// Whether Redis no longer has the consumer group (or its stream): it restarted without its
    /// data, or someone deleted them. [`Queue::ensure_group`] creates them again.
    pub fn is_missing_group(&self) -> bool {
        matches!(self, QueueError::Redis(e) if e.code() == Some("NOGROUP"))
    }
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
    /// The project whose queue the entry is in; `None` for entries that are not jobs.
    pub project: Option<String>,
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

/// How starting an entry went; see [`Queue::try_start`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    /// The entry heads its project's queue and holds the lease: run it.
    Started,
    /// An older entry of the project is unfinished, or another holder has the lease: wait.
    Wait,
    /// The entry was taken or ended elsewhere (see [`Holding::Taken`]): drop it without writing.
    Lost,
    /// Redis lost the entry (see [`Holding::Gone`]).
    Gone,
}

/// Who holds an entry a consumer believes it holds, as [`Queue::heartbeat`] and
/// [`Queue::hand_back`] found it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Holding {
    /// The consumer itself.
    Ours,
    /// Another consumer took it over or ended it, or the group was created anew over the stream
    /// (and delivers the entry again): drop it without writing.
    Taken,
    /// Nobody, and the stream no longer has it: Redis lost it (a restart without its data). Only
    /// its holder ends an entry, so its job is unfinished and should be enqueued again with
    /// [`Queue::requeue`] unless it is running.
    Gone,
}

impl Holding {
    fn from_reply(code: i64) -> Holding {
        match code {
            1 => Holding::Ours,
            0 => Holding::Taken,
            _ => Holding::Gone,
        }
    }
}

/// How an entry ends; see [`Queue::finish`].
#[derive(Debug, Clone)]
pub enum Ending<'a> {
    /// Done: acknowledge it.
    Ack,
    /// It cannot run: move it to the dead-letter stream, then acknowledge it.
    DeadLetter(DeadLetter<'a>),
}

/// What [`Consumer::next`] found.
enum ReadResult {
    Delivered(Vec<Delivery>),
    Empty { last_delivered: String },
}

/// A dead letter as stored in `<stream>:dead`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeadEntry {
    /// The dead-letter entry's own id.
    pub id: String,
    /// Its fields: reason, payload, stream_id, attempts, last_error, consumer, failed_at_ms.
    pub fields: std::collections::BTreeMap<String, String>,
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

    /// Adds a validated job to the stream; returns the entry's stream id.
    pub async fn enqueue(&self, job: &Job) -> Result<String, QueueError> {
        self.enqueue_raw(&job.to_json()).await
    }

    /// Adds any text as a job entry. For producers that validated elsewhere, and for tests that
    /// need to put garbage on the stream.
    pub async fn enqueue_raw(&self, payload: &str) -> Result<String, QueueError> {
        let mut conn = self.conn.clone();
        Ok(redis::cmd("XADD")
            .arg(&self.stream)
            .arg("*")
            .arg(JOB_FIELD)
            .arg(payload)
            .query_async(&mut conn)
            .await?)
    }

    /// A reader for the consumer `name`, waiting on its own connection without a reply timeout.
    pub async fn consumer(&self, name: &str) -> Result<Consumer, QueueError> {
        let config = AsyncConnectionConfig::new().set_response_timeout(None);
        let conn = self
            .client
            .get_multiplexed_async_connection_with_config(&config)
            .await?;
        Ok(Consumer {
            conn,
            queue: self.clone(),
            name: name.to_string(),
        })
    }

    fn project_queue_prefix(&self) -> String {
        format!("{}:project:", self.stream)
    }

    fn lease_prefix(&self) -> String {
        format!("{}:lease:", self.stream)
    }

    /// The key of a project's queue of unfinished entries.
    pub fn project_queue_key(&self, project: &str) -> String {
        format!("{}{project}", self.project_queue_prefix())
    }

    /// The key of a project's lease.
    pub fn lease_key(&self, project: &str) -> String {
        format!("{}{project}", self.lease_prefix())
    }

    /// Delivers up to `count` new entries to `consumer`, each queued under its project.
    async fn read(&self, consumer: &str, count: usize) -> Result<ReadResult, QueueError> {
        let mut conn = self.conn.clone();
        let reply: redis::Value = self
            .scripts
            .read
            .key(&self.stream)
            .arg(&self.group)
            .arg(consumer)
            .arg(count.max(1))
            .arg(self.project_queue_prefix())
            .invoke_async(&mut conn)
            .await?;
        let mut parts = as_array(reply).into_iter();
        let delivered = matches!(parts.next(), Some(redis::Value::Int(1)));
        let rest = parts.next().unwrap_or(redis::Value::Nil);
        Ok(if delivered {
            ReadResult::Delivered(as_array(rest).into_iter().filter_map(to_delivery).collect())
        } else {
            ReadResult::Empty {
                last_delivered: value_text(&rest),
            }
        })
    }

    /// Takes over up to `count` entries that no consumer refreshed for `min_idle`.
    pub async fn autoclaim(
        &self,
        consumer: &str,
        min_idle: Duration,
        count: usize,
    ) -> Result<Vec<Delivery>, QueueError> {
        let mut conn = self.conn.clone();
        let reply: redis::Value = self
            .scripts
            .autoclaim
            .key(&self.stream)
            .arg(&self.group)
            .arg(consumer)
            .arg(min_idle.as_millis() as u64)
            .arg(count.max(1))
            .invoke_async(&mut conn)
            .await?;
        Ok(as_array(reply)
            .into_iter()
            .filter_map(to_delivery)
            .collect())
    }

    /// Starts an entry if it heads its project's queue and the project's lease is free (taking
    /// it for `lease`). Entries that are not jobs start at once.
    pub async fn try_start(
        &self,
        consumer: &str,
        delivery: &Delivery,
        lease: Duration,
    ) -> Result<Start, QueueError> {
        let Some(project) = &delivery.project else {
            return Ok(Start::Started);
        };
        let mut conn = self.conn.clone();
        let started: i64 = self
            .scripts
            .start
            .key(&self.stream)
            .key(self.project_queue_key(project))
            .key(self.lease_key(project))
            .arg(&self.group)
            .arg(&delivery.id)
            .arg(consumer)
            .arg(lease.as_millis() as u64)
            .invoke_async(&mut conn)
            .await?;
        Ok(match started {
            1 => Start::Started,
            0 => Start::Wait,
            -1 => Start::Lost,
            _ => Start::Gone,
        })
    }

    /// Refreshes `consumer`'s entries and the leases of those running, given as `(id, project)`
    /// for running entries and `(id, None)` for waiting ones. A running entry Redis lost takes its
    /// project's lease back. Returns, per entry, who holds it now.
    pub async fn heartbeat(
        &self,
        consumer: &str,
        entries: &[(String, Option<String>)],
        lease: Duration,
    ) -> Result<Vec<Holding>, QueueError> {
        if entries.is_empty() {
            return Ok(Vec::new());
        }
        let mut conn = self.conn.clone();
        let mut invocation = self.scripts.heartbeat.key(&self.stream);
        invocation
            .arg(&self.group)
            .arg(consumer)
            .arg(lease.as_millis() as u64)
            .arg(self.lease_prefix())
            .arg(HANDED_BACK_IDLE_MS);
        for (id, project) in entries {
            invocation.arg(id).arg(project.as_deref().unwrap_or(""));
        }
        let held: Vec<i64> = invocation.invoke_async(&mut conn).await?;
        Ok(held.into_iter().map(Holding::from_reply).collect())
    }

    /// Ends an entry (acknowledged, or dead-lettered then acknowledged), takes it out of its
    /// project's queue and releases its lease. Returns false, doing nothing, when another consumer
    /// took the entry; one nobody holds any more ([`Holding::Gone`]) is ended all the same.
    pub async fn finish(
        &self,
        consumer: &str,
        delivery: &Delivery,
        ending: Ending<'_>,
    ) -> Result<bool, QueueError> {
        self.finish_with_event(consumer, delivery, ending, None)
            .await
    }

    /// Like [`Queue::finish`], and publishes `event` (the job's last progress event) in the same
    /// round trip, whether or not the entry is still `consumer`'s.
    pub async fn finish_with_event(
        &self,
        consumer: &str,
        delivery: &Delivery,
        ending: Ending<'_>,
        event: Option<&baton_core::events::Event>,
    ) -> Result<bool, QueueError> {
        let project = delivery.project.as_deref().unwrap_or("");
        let mut conn = self.conn.clone();
        let mut invocation = self.scripts.finish.key(&self.stream);
        invocation
            .key(self.project_queue_key(project))
            .key(self.lease_key(project))
            .key(self.dead_stream())
            .key(self.events_stream())
            .arg(&self.group)
            .arg(&delivery.id)
            .arg(consumer)
            .arg(if delivery.project.is_some() { "1" } else { "0" });
        let wake = self.wake_channel();
        let event = event
            .map(|e| serde_json::to_string(e).expect("an event serialises"))
            .unwrap_or_default();
        let event_args = |invocation: &mut redis::ScriptInvocation<'_>| {
            invocation
                .arg(&event)
                .arg(baton_core::events::EVENTS_MAXLEN)
                .arg(baton_core::events::EVENT_FIELD)
                .arg(self.dead_letter_maxlen);
        };
        match &ending {
            Ending::Ack => {
                invocation.arg("ack").arg(&wake);
                event_args(&mut invocation);
            }
            Ending::DeadLetter(letter) => {
                let failed_at = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_millis())
                    .unwrap_or(0);
                invocation.arg("dead").arg(&wake);
                event_args(&mut invocation);
                invocation
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
                    .arg(failed_at.to_string());
            }
        }
        let ended: i64 = invocation.invoke_async(&mut conn).await?;
        Ok(ended == 1)
    }

    /// Gives entries back so any replica's next claim pass takes them, and releases their leases.
    /// Returns, per entry, who held it: only [`Holding::Ours`] entries were handed back.
    pub async fn hand_back(
        &self,
        consumer: &str,
        entries: &[(String, Option<String>)],
    ) -> Result<Vec<Holding>, QueueError> {
        if entries.is_empty() {
            return Ok(Vec::new());
        }
        let mut conn = self.conn.clone();
        let mut invocation = self.scripts.handback.key(&self.stream);
        invocation
            .arg(&self.group)
            .arg(consumer)
            .arg(HANDED_BACK_IDLE_MS)
            .arg(self.lease_prefix())
            .arg(self.wake_channel());
        for (id, project) in entries {
            invocation.arg(id).arg(project.as_deref().unwrap_or(""));
        }
        let held: Vec<i64> = invocation.invoke_async(&mut conn).await?;
        Ok(held.into_iter().map(Holding::from_reply).collect())
    }

    /// Adds an entry that Redis lost (see [`Holding::Gone`]) to the stream again, with the fields
    /// it was delivered with; returns the new entry's id. The ledger makes the copy safe: a build
    /// that finished meanwhile is acknowledged as a duplicate, an unfinished one resumes from its
    /// last recorded run.
    pub async fn requeue(&self, delivery: &Delivery) -> Result<String, QueueError> {
        let mut conn = self.conn.clone();
        let mut cmd = redis::cmd("XADD");
        cmd.arg(&self.stream).arg("*");
        match &delivery.payload {
            Some(payload) => {
                cmd.arg(JOB_FIELD).arg(payload);
            }
            None => {
                for (field, value) in &delivery.fields {
                    cmd.arg(field).arg(value);
                }
            }
        }
        Ok(cmd.query_async(&mut conn).await?)
    }

    /// How many entries the group has delivered and not yet acknowledged.
    pub async fn pending_count(&self) -> Result<u64, QueueError> {
        let mut conn = self.conn.clone();
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

    /// The Pub/Sub channel on which ending or handing back an entry is announced, so workers
    /// holding a project's next entry try it at once rather than on their next tick.
    pub fn wake_channel(&self) -> String {
        format!("{}:wake", self.stream)
    }

    /// Calls `on_wake` for every announcement on [`Queue::wake_channel`], until the connection ends.
    pub async fn watch_wakes(&self, mut on_wake: impl FnMut()) -> Result<(), QueueError> {
        let mut pubsub = self.client.get_async_pubsub().await?;
        pubsub.subscribe(self.wake_channel()).await?;
        let mut messages = pubsub.on_message();
        while futures_util::StreamExt::next(&mut messages).await.is_some() {
            on_wake();
        }
        Ok(())
    }

    /// The events stream (`<stream>:events`).
    pub fn events_stream(&self) -> String {
        baton_core::events::events_stream(&self.stream)
    }

    /// Publishes a progress event, trimming the events stream to about
    /// [`baton_core::events::EVENTS_MAXLEN`] entries.
    pub async fn publish_event(
        &self,
        event: &baton_core::events::Event,
    ) -> Result<String, QueueError> {
        let mut conn = self.conn.clone();
        Ok(self.event_cmd(event).query_async(&mut conn).await?)
    }

    /// Publishes progress events in order, in one round trip (none for no events).
    pub async fn publish_events(
        &self,
        events: &[&baton_core::events::Event],
    ) -> Result<(), QueueError> {
        if events.is_empty() {
            return Ok(());
        }
        let mut conn = self.conn.clone();
        let mut pipe = redis::pipe();
        for event in events {
            pipe.add_command(self.event_cmd(event)).ignore();
        }
        pipe.query_async::<()>(&mut conn).await?;
        Ok(())
    }

    /// The `XADD` that appends `event` to the trimmed events stream.
    fn event_cmd(&self, event: &baton_core::events::Event) -> redis::Cmd {
        let mut cmd = redis::cmd("XADD");
        cmd.arg(self.events_stream())
            .arg("MAXLEN")
            .arg("~")
            .arg(baton_core::events::EVENTS_MAXLEN)
            .arg("*")
            .arg(baton_core::events::EVENT_FIELD)
            .arg(serde_json::to_string(event).expect("an event serialises"));
        cmd
    }

    /// The id of the newest event, or `0-0`: where a follower starts so it misses nothing after.
    pub async fn last_event_id(&self) -> Result<String, QueueError> {
        let mut conn = self.conn.clone();
        let newest: redis::streams::StreamRangeReply = redis::cmd("XREVRANGE")
            .arg(self.events_stream())
            .arg("+")
            .arg("-")
            .arg("COUNT")
            .arg(1)
            .query_async(&mut conn)
            .await?;
        Ok(newest
            .ids
            .first()
            .map(|e| e.id.clone())
            .unwrap_or_else(|| "0-0".into()))
    }

    /// A follower of the events stream from after `last_id`, on its own connection without a
    /// reply timeout.
    pub async fn event_reader(&self, last_id: &str) -> Result<EventReader, QueueError> {
        let config = AsyncConnectionConfig::new().set_response_timeout(None);
        let conn = self
            .client
            .get_multiplexed_async_connection_with_config(&config)
            .await?;
        Ok(EventReader {
            conn,
            stream: self.events_stream(),
            last_id: last_id.to_string(),
        })
    }

    /// Entries in the job stream: the backlog, as ended entries leave it (lag plus pending).
    pub async fn stream_length(&self) -> Result<u64, QueueError> {
        self.xlen(&self.stream).await
    }

    /// Entries not yet delivered to the group: Redis's own count (`XINFO GROUPS`' `lag`, Redis 7),
    /// or, where Redis cannot tell, the stream's length less the pending entries.
    pub async fn lag(&self) -> Result<u64, QueueError> {
        let mut conn = self.conn.clone();
        let groups: Vec<HashMap<String, redis::Value>> = redis::cmd("XINFO")
            .arg("GROUPS")
            .arg(&self.stream)
            .query_async(&mut conn)
            .await?;
        let ours = groups.iter().find(|g| {
            g.get("name")
                .and_then(|v| redis::from_redis_value_ref::<String>(v).ok())
                .is_some_and(|name| name == self.group)
        });
        let count = |key: &str| {
            ours.and_then(|g| g.get(key))
                .and_then(|v| redis::from_redis_value_ref::<u64>(v).ok())
        };
        if let Some(lag) = count("lag") {
            return Ok(lag);
        }
        let pending = count("pending").unwrap_or(0);
        Ok(self.stream_length().await?.saturating_sub(pending))
    }

    /// Entries in the dead-letter stream.
    pub async fn dead_letter_length(&self) -> Result<u64, QueueError> {
        self.xlen(&self.dead_stream()).await
    }

    async fn xlen(&self, key: &str) -> Result<u64, QueueError> {
        let mut conn = self.conn.clone();
        Ok(redis::cmd("XLEN").arg(key).query_async(&mut conn).await?)
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

/// A checkpoint as read from Redis, if there was one.
fn parse_checkpoint(build_id: &str, raw: Option<String>) -> Result<Option<Checkpoint>, QueueError> {
    raw.map(|r| {
        serde_json::from_str(&r).map_err(|source| QueueError::BadCheckpoint {
            build_id: build_id.to_string(),
            source,
        })
    })
    .transpose()
}

/// The `SET` that stores `checkpoint` under its build with the checkpoint TTL.
fn checkpoint_cmd(checkpoint: &Checkpoint) -> redis::Cmd {
    let mut cmd = redis::cmd("SET");
    cmd.arg(checkpoint_key(&checkpoint.build_id))
        .arg(serde_json::to_string(checkpoint).expect("a checkpoint serialises"))
        .arg("EX")
        .arg(baton_core::checkpoint::CHECKPOINT_TTL_SECS);
    cmd
}

/// Reads the group's new entries for one consumer name.
pub struct Consumer {
    conn: MultiplexedConnection,
    queue: Queue,
    name: String,
}

impl Consumer {
    /// The consumer's name in the group.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Delivers up to `count` new entries, waiting at most `block` for one to arrive.
    pub async fn next(
        &mut self,
        count: usize,
        block: Duration,
    ) -> Result<Vec<Delivery>, QueueError> {
        let last_delivered = match self.queue.read(&self.name, count).await? {
            ReadResult::Delivered(entries) => return Ok(entries),
            ReadResult::Empty { last_delivered } => last_delivered,
        };
        // Wait without taking anything: deliveries only ever come from the read script, which
        // queues each under its project. So a wait given up on loses nothing.
        let _: redis::Value = bounded_block(
            block,
            redis::cmd("XREAD")
                .arg("COUNT")
                .arg(1)
                .arg("BLOCK")
                .arg(block.as_millis() as u64)
                .arg("STREAMS")
                .arg(&self.queue.stream)
                .arg(last_delivered)
                .query_async(&mut self.conn),
        )
        .await?;
        match self.queue.read(&self.name, count).await? {
            ReadResult::Delivered(entries) => Ok(entries),
            ReadResult::Empty { .. } => Ok(Vec::new()),
        }
    }
}

/// Follows the events stream; see [`Queue::event_reader`].
pub struct EventReader {
    conn: MultiplexedConnection,
    stream: String,
    last_id: String,
}

impl EventReader {
    /// The id of the last entry read (or the one reading started after): where a new reader picks
    /// up, for example after the connection was lost.
    pub fn position(&self) -> &str {
        &self.last_id
    }

    /// The next events, waiting at most `block` for one. Entries that are not events are skipped.
    pub async fn next(
        &mut self,
        block: Duration,
    ) -> Result<Vec<baton_core::events::Event>, QueueError> {
        let reply: Option<redis::streams::StreamReadReply> = bounded_block(
            block,
            redis::cmd("XREAD")
                .arg("COUNT")
                .arg(100)
                .arg("BLOCK")
                .arg(block.as_millis() as u64)
                .arg("STREAMS")
                .arg(&self.stream)
                .arg(&self.last_id)
                .query_async(&mut self.conn),
        )
        .await?;
        let mut events = Vec::new();
        for entry in reply.into_iter().flat_map(|r| r.keys).flat_map(|k| k.ids) {
            self.last_id = entry.id.clone();
            if let Some(v) = entry.map.get(baton_core::events::EVENT_FIELD)
                && let Ok(event) = serde_json::from_str(&value_text(v))
            {
                events.push(event);
            }
        }
        Ok(events)
    }
}

/// How much longer than its `BLOCK` a blocking read may wait for its reply before its connection
/// is given up as dead. Readers use connections without a reply timeout, since a block is long by
/// design; this bounds it instead.
pub const BLOCKED_REPLY_GRACE: Duration = Duration::from_secs(5);

/// Awaits the reply of a read that blocks for `block`, at most `block` + [`BLOCKED_REPLY_GRACE`].
async fn bounded_block<T>(
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

fn as_array(v: redis::Value) -> Vec<redis::Value> {
    match v {
        redis::Value::Array(items) => items,
        _ => Vec::new(),
    }
}

/// An `{id, {field, value, ...}, project|nil}` triple from a script.
fn to_delivery(v: redis::Value) -> Option<Delivery> {
    let mut parts = as_array(v).into_iter();
    let id = value_text(&parts.next()?);
    let flat = as_array(parts.next()?);
    let project = match parts.next() {
        Some(redis::Value::Nil) | None => None,
        Some(p) => Some(value_text(&p)),
    };
    let fields: HashMap<String, String> = flat
        .chunks(2)
        .filter(|kv| kv.len() == 2)
        .map(|kv| (value_text(&kv[0]), value_text(&kv[1])))
        .collect();
    Some(Delivery {
        id,
        payload: fields.get(JOB_FIELD).cloned(),
        fields,
        project,
    })
}

fn dead_entry(e: redis::streams::StreamId) -> DeadEntry {
    DeadEntry {
        fields: e
            .map
            .iter()
            .map(|(k, v)| (k.clone(), value_text(v)))
            .collect(),
        id: e.id,
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
