//! `GET /v1/builds/{id}/events`: a build's progress as server-sent events, from its first event
//! (or after `Last-Event-ID`) to its final one.
//!
//! Events come from the events stream (`<stream>:events`), each with its entry id as `id:`, so a
//! client that reconnects with `Last-Event-ID` gets only what came after. A build that ended
//! before its events could be read (they are trimmed after
//! [`baton_core::events::EVENTS_MAXLEN`]) still ends its stream: with a final event made from
//! the ledger, which carries no `id:`.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use baton_core::BuildStatus;
use baton_core::events::{EVENT_OUTPUT_BYTES, Event, EventType, bounded};
use baton_ledger::BuildState;
use baton_queue::EventReader;
use futures_util::Stream;

use super::Api;
use super::error::{ApiError, ErrorBody, PathParam};

/// How long one read of the events stream waits; also how often the ledger is asked whether the
/// build ended while no event of it comes.
const READ_BLOCK: Duration = Duration::from_secs(1);

/// One server-sent event of the stream, as the OpenAPI document describes it.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)] // Only its schema is used: axum writes the frames.
pub(crate) struct Frame {
    /// The event's entry on the events stream; absent on a final event made from the ledger.
    id: Option<String>,
    /// Its type: `job_started`, `run_started`, `session_seen`, `run_finished`, `job_completed`,
    /// `job_failed`, `job_requeued`, `job_cancelled`.
    event: String,
    /// Its JSON.
    data: String,
}

/// A build's events as `text/event-stream`.
#[utoipa::path(
    get,
    path = "/v1/builds/{id}/events",
    params(
        ("id" = String, Path, description = "The build"),
        ("Last-Event-ID" = Option<String>, Header, description = "Resume after this event id"),
    ),
    responses(
        (status = 200, description = "The build's events, ending with its final one", content_type = "text/event-stream", body = Frame),
        (status = 400, description = "Last-Event-ID is not an event id", body = ErrorBody),
        (status = 401, description = "No or a wrong token", body = ErrorBody),
        (status = 404, description = "No such build", body = ErrorBody),
    )
)]
pub(crate) async fn stream(
    State(api): State<Api>,
    PathParam(id): PathParam<String>,
    headers: HeaderMap,
) -> Result<Sse<impl Stream<Item = Result<SseEvent, Infallible>>>, ApiError> {
    api.ledger().build_state(&id).await?;
    let after = match headers.get("last-event-id") {
        None => "0-0".to_string(),
        Some(v) => v
            .to_str()
            .ok()
            .filter(|s| super::is_stream_id(s))
            .ok_or_else(|| {
                ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "bad_last_event_id",
                    "Last-Event-ID is not an event id like 1733500000000-0",
                )
            })?
            .to_string(),
    };
    let reader = api.queue().event_reader(&after).await?;
    let follow = Follow {
        api,
        build_id: id,
        reader,
        pending: VecDeque::new(),
        ended: false,
        ended_in_ledger: false,
    };
    let events =
        futures_util::stream::unfold(
            follow,
            |mut f| async move { f.next().await.map(|e| (Ok(e), f)) },
        );
    Ok(Sse::new(events).keep_alive(KeepAlive::default()))
}

/// One client's following of one build.
struct Follow {
    api: Api,
    build_id: String,
    reader: EventReader,
    /// Events read, not yet sent.
    pending: VecDeque<SseEvent>,
    /// The final event is among those read: nothing more is read.
    ended: bool,
    /// The ledger said the build ended at the last idle read: one more read for its final event
    /// to arrive, then it is made from the ledger.
    ended_in_ledger: bool,
}

impl Follow {
    async fn next(&mut self) -> Option<SseEvent> {
        loop {
            if let Some(e) = self.pending.pop_front() {
                return Some(e);
            }
            if self.ended {
                return None;
            }
            let batch = match self.reader.next_with_ids(READ_BLOCK).await {
                Ok(batch) => batch,
                Err(e) => {
                    // The client reconnects with Last-Event-ID and loses nothing.
                    tracing::warn!(error = %e, "lost Redis while streaming a build's events");
                    return None;
                }
            };
            let mut any = false;
            for (entry, event) in batch {
                if event.build_id != self.build_id {
                    continue;
                }
                any = true;
                self.ended |= event.is_final();
                self.pending.push_back(sse(Some(&entry), &event));
                if self.ended {
                    break;
                }
            }
            if any {
                self.ended_in_ledger = false;
                continue;
            }
            let state = match self.api.ledger().build_state(&self.build_id).await {
                Ok(state) => state,
                Err(e) => {
                    tracing::warn!(error = %e, "could not read the build while streaming its events");
                    return None;
                }
            };
            if !state.status.is_final() {
                continue;
            }
            if self.ended_in_ledger {
                self.ended = true;
                return Some(sse(None, &final_event(&state)));
            }
            self.ended_in_ledger = true;
        }
    }
}

/// `event` as a server-sent event, with its events-stream id when it has one.
fn sse(entry: Option<&str>, event: &Event) -> SseEvent {
    let e = SseEvent::default()
        .event(event.event.as_str())
        .data(serde_json::to_string(event).expect("an event serialises"));
    match entry {
        Some(id) => e.id(id),
        None => e,
    }
}

/// The final event of a build that ended, made from the ledger.
fn final_event(state: &BuildState) -> Event {
    let kind = match state.status {
        BuildStatus::Completed => EventType::JobCompleted,
        BuildStatus::Cancelled => EventType::JobCancelled,
        _ => EventType::JobFailed,
    };
    let mut event = Event::new(kind, &state.build_id, &state.project_id);
    event.session_id = state.runs.last().map(|r| r.new_session_id.to_string());
    event.error = state
        .last_error
        .clone()
        .filter(|_| kind == EventType::JobFailed);
    event.output = state
        .output
        .as_deref()
        .filter(|_| kind == EventType::JobCompleted)
        .map(|o| bounded(o, EVENT_OUTPUT_BYTES));
    if let Some(at) = state.finished_at {
        event.at = at;
    }
    event
}

#[cfg(test)]
mod tests {
    use super::super::is_stream_id;

    #[test]
    fn only_stream_ids_are_taken_as_last_event_ids() {
        assert!(is_stream_id("1733500000000-0"));
        assert!(is_stream_id("0-0"));
        for bad in [
            "",
            "0",
            "-1",
            "1-",
            "a-1",
            "1-2-3",
            "12345678901234567890123-0",
        ] {
            assert!(!is_stream_id(bad), "{bad:?}");
        }
    }
}
