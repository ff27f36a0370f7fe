//! Progress events on `<stream>:events`, and the wake-ups that tell workers an entry ended.

use super::*;

/// What an announcement on the wake channel says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Wake {
    /// A job of this project ended: the project's next entry may start.
    Freed(String),
    /// Entries were handed back, or something else changed: any waiting entry may start.
    Any,
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
        Ok(self
            .next_with_ids(block)
            .await?
            .into_iter()
            .map(|(_, event)| event)
            .collect())
    }

    /// [`EventReader::next`], each event with its entry's id on the events stream.
    pub async fn next_with_ids(
        &mut self,
        block: Duration,
    ) -> Result<Vec<(String, baton_core::events::Event)>, QueueError> {
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
                events.push((entry.id.clone(), event));
            }
        }
        Ok(events)
    }
}

impl Queue {
    /// The Pub/Sub channel on which ending or handing back an entry is announced, so workers
    /// holding a project's next entry try it at once rather than on their next tick.
    pub fn wake_channel(&self) -> String {
        format!("{}:wake", self.stream)
    }

    /// Calls `on_wake` for every announcement on [`Queue::wake_channel`], until the connection ends.
    pub async fn watch_wakes(&self, mut on_wake: impl FnMut(Wake)) -> Result<(), QueueError> {
        let mut pubsub = self.client.get_async_pubsub().await?;
        pubsub.subscribe(self.wake_channel()).await?;
        let mut messages = pubsub.on_message();
        while let Some(message) = futures_util::StreamExt::next(&mut messages).await {
            let payload: String = message.get_payload().unwrap_or_default();
            on_wake(match payload.strip_prefix("freed:") {
                Some(project) => Wake::Freed(project.to_string()),
                None => Wake::Any,
            });
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
    pub(crate) fn event_cmd(&self, event: &baton_core::events::Event) -> redis::Cmd {
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
}
