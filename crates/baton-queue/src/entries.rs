//! The job stream's entries: enqueueing, reading into per-project queues, starting under the
//! project's lease, heartbeats, takeovers, and ending (acknowledged and deleted, or dead-lettered).
//! Each step is one Lua script in `lua/` (`read`, `start`, `heartbeat`, `autoclaim`, `finish`,
//! `handback`).

use super::*;

/// The idle time a handback gives its entries: "since a day ago", past any claim timeout, so the
/// next claim pass takes them. Heartbeats leave entries this idle alone.
const HANDED_BACK_IDLE_MS: u64 = 86_400_000;

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
    /// The scripts' answer (`holding` in lua/prelude.lua).
    fn from_reply(answer: &str) -> Holding {
        match answer {
            "ours" => Holding::Ours,
            "taken" => Holding::Taken,
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

/// An `{id, {field, value, ...}, project|nil}` triple from a script.
pub(crate) fn to_delivery(v: redis::Value) -> Option<Delivery> {
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

impl Queue {
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

    pub(crate) fn project_queue_prefix(&self) -> String {
        format!("{}:project:", self.stream)
    }

    pub(crate) fn lease_prefix(&self) -> String {
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
        let delivered = parts
            .next()
            .is_some_and(|answer| value_text(&answer) == "delivered");
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
        let started: String = self
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
        Ok(match started.as_str() {
            "started" => Start::Started,
            "wait" => Start::Wait,
            "taken" => Start::Lost,
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
        let held: Vec<String> = invocation.invoke_async(&mut conn).await?;
        Ok(held.iter().map(|h| Holding::from_reply(h)).collect())
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
            .arg(project);
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
        let ended: String = invocation.invoke_async(&mut conn).await?;
        Ok(ended == "ended")
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
        let held: Vec<String> = invocation.invoke_async(&mut conn).await?;
        Ok(held.iter().map(|h| Holding::from_reply(h)).collect())
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

    /// The group's consumers (one per worker process), as Redis sees them: how many entries each
    /// holds, and how long since it last read or claimed.
    pub async fn consumers(&self) -> Result<Vec<ConsumerInfo>, QueueError> {
        let mut conn = self.conn.clone();
        let rows: Vec<HashMap<String, redis::Value>> = match redis::cmd("XINFO")
            .arg("CONSUMERS")
            .arg(&self.stream)
            .arg(&self.group)
            .query_async(&mut conn)
            .await
        {
            Ok(rows) => rows,
            // No stream or no group yet: no consumers.
            Err(e) if e.code() == Some("NOGROUP") || e.to_string().contains("no such key") => {
                return Ok(Vec::new());
            }
            Err(e) => return Err(e.into()),
        };
        Ok(rows
            .iter()
            .map(|c| {
                let int = |key: &str| {
                    c.get(key)
                        .and_then(|v| redis::from_redis_value_ref::<u64>(v).ok())
                        .unwrap_or(0)
                };
                ConsumerInfo {
                    name: c
                        .get("name")
                        .and_then(|v| redis::from_redis_value_ref::<String>(v).ok())
                        .unwrap_or_default(),
                    pending: int("pending"),
                    idle_ms: int("idle"),
                }
            })
            .collect())
    }
}

/// One consumer of the job stream's group, a worker process, as Redis sees it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ConsumerInfo {
    /// Its name (`<host>-<pid>-...`).
    pub name: String,
    /// Entries it holds: its running jobs and those waiting behind their projects.
    pub pending: u64,
    /// Milliseconds since it last read or claimed entries (its heartbeats claim its own).
    pub idle_ms: u64,
}
