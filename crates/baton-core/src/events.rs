//! Progress events: every state change of a job, published on `<stream>:events` for a web backend to
//! follow with `XREAD`. Each entry has one field, `event`, holding an [`Event`] as JSON.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// About how many events the events stream keeps (it is trimmed approximately past this).
pub const EVENTS_MAXLEN: usize = 10_000;

/// The field of an events-stream entry that holds the event's JSON.
pub const EVENT_FIELD: &str = "event";

/// The most of a job's answer a `job_completed` event carries: the events stream keeps thousands
/// of entries, so the whole answer stays in the ledger.
pub const EVENT_OUTPUT_BYTES: usize = 4096;

/// `text` cut to at most `max` bytes on a character's boundary, with a marker saying how much was
/// left out when it was cut (the answers Baton keeps and sends are bounded so).
pub fn bounded(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_string();
    }
    let mut cut = max;
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}\n[... {} more bytes]", &text[..cut], text.len() - cut)
}

/// The events stream that belongs to a job stream.
pub fn events_stream(stream: &str) -> String {
    format!("{stream}:events")
}

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventType {
    /// A worker claimed the job (`attempt` says which claim).
    JobStarted,
    /// A CLI run of `step` started, resuming `session_id` (none for a fresh start).
    RunStarted,
    /// The running CLI named its session (`session_id`), before its work is done.
    SessionSeen,
    /// A run of `step` ended with `outcome`, leaving `session_id`.
    RunFinished,
    /// Every step ran; `session_id` is the project's newest session.
    JobCompleted,
    /// The job failed for good and went to the dead-letter stream; `error` says why.
    JobFailed,
    /// The job was handed back to run later (shutdown, expired credentials); `error` says why.
    JobRequeued,
    /// Someone cancelled the job: it never started, or its run was cut and not recorded;
    /// `session_id` is the project's newest session, which its next job resumes.
    JobCancelled,
}

impl EventType {
    /// Whether an event of this type ends the job's progress (completed, failed or cancelled).
    pub fn is_final(self) -> bool {
        matches!(
            self,
            EventType::JobCompleted | EventType::JobFailed | EventType::JobCancelled
        )
    }

    /// The type's name on the wire (`job_completed`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::JobStarted => "job_started",
            EventType::RunStarted => "run_started",
            EventType::SessionSeen => "session_seen",
            EventType::RunFinished => "run_finished",
            EventType::JobCompleted => "job_completed",
            EventType::JobFailed => "job_failed",
            EventType::JobRequeued => "job_requeued",
            EventType::JobCancelled => "job_cancelled",
        }
    }
}

/// One progress event. Fields that do not apply to its type are absent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// What happened.
    pub event: EventType,
    /// The build.
    pub build_id: String,
    /// Its project.
    pub project_id: String,
    /// The step, for run events.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step: Option<String>,
    /// The session the event concerns.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_id: Option<String>,
    /// A run's outcome (`success`, `crashed`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<String>,
    /// The claim number, for `job_started`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempt: Option<i32>,
    /// Why, for `job_failed` and `job_requeued`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// `job_completed`: the job's answer (its last run's result that is not a compaction's), at
    /// most [`EVENT_OUTPUT_BYTES`]; the whole of it is in the ledger (`baton status --json`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<String>,
    /// When.
    pub at: DateTime<Utc>,
}

impl Event {
    /// An event of `event` for a build, stamped now, with no optional fields.
    pub fn new(event: EventType, build_id: &str, project_id: &str) -> Event {
        Event {
            event,
            build_id: build_id.to_string(),
            project_id: project_id.to_string(),
            step: None,
            session_id: None,
            outcome: None,
            attempt: None,
            error: None,
            output: None,
            at: Utc::now(),
        }
    }

    /// Whether this event ends the job's progress (completed, failed or cancelled).
    pub fn is_final(&self) -> bool {
        self.event.is_final()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_serialise_flat_without_absent_fields() {
        let mut e = Event::new(EventType::SessionSeen, "b1", "p1");
        e.step = Some("build".into());
        e.session_id = Some("s1".into());
        let v: serde_json::Value = serde_json::to_value(&e).unwrap();
        assert_eq!(v["event"], "session_seen");
        assert_eq!(v["session_id"], "s1");
        assert!(v.get("outcome").is_none());
        let back: Event = serde_json::from_value(v).unwrap();
        assert_eq!(back, e);
    }

    #[test]
    fn bounded_text_is_cut_on_a_character_and_says_how_much_went() {
        assert_eq!(bounded("short", 10), "short");
        assert_eq!(bounded("abcdef", 3), "abc\n[... 3 more bytes]");
        // 'é' is two bytes: a cut inside it backs off to the character before.
        assert_eq!(bounded("aé", 2), "a\n[... 2 more bytes]");
    }
}
