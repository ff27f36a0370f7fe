//! How a run's progress reaches Redis while the CLI runs: `run_started`, then the session the CLI
//! names (`session_seen`, with the checkpoint a successor resumes a cut-off run from).
//!
//! Two ways, chosen by `BATON_PROGRESS_WINDOW`: [`Progress::Immediate`] (`0`) sends each as soon as
//! it is known; [`Progress::Window`] holds them back for at most the window, so a run over within it
//! sends them with its end in one round trip. Only the job pipeline's executor (`job.rs`) drives
//! this type; it never has to know which of the two it has.

use std::time::Duration;

use baton_core::checkpoint::Phase;
use baton_core::events::{Event, EventType};
use baton_core::{Checkpoint, Job, Step};
use baton_queue::Queue;
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;
use tracing::warn;

use crate::report::checkpoint_of;

/// Progress not yet sent: events in the order they happened and the checkpoint they ride with.
#[derive(Debug, Default)]
pub(crate) struct Held {
    /// The checkpoint the events ride with: the named session's, until the run's end replaces it.
    pub(crate) checkpoint: Option<Checkpoint>,
    /// Events not yet published, in order.
    pub(crate) events: Vec<Event>,
}

impl Held {
    /// Sends what is held, in one round trip: the checkpoint, if any, with the events. The ledger
    /// is the source of truth; a lost checkpoint only costs the fast path, a lost event a live
    /// update, never the job.
    pub(crate) async fn send(self, queue: &Queue) {
        if self.checkpoint.is_none() && self.events.is_empty() {
            return;
        }
        let events: Vec<&Event> = self.events.iter().collect();
        let sent = match &self.checkpoint {
            Some(checkpoint) => queue.save_checkpoint_with_events(checkpoint, &events).await,
            None => queue.publish_events(&events).await,
        };
        if let Err(e) = sent {
            warn!(error = %e, "could not save the checkpoint or publish progress events");
        }
    }
}

/// How a run's progress is sent while it runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    /// Each piece of progress goes out as soon as it is known.
    Immediate,
    /// The first progress waits at most this long to ride with a later write.
    Window(Duration),
}

impl Progress {
    /// The way `BATON_PROGRESS_WINDOW` names: zero is immediate.
    pub fn from_window(window: Duration) -> Progress {
        if window.is_zero() {
            Progress::Immediate
        } else {
            Progress::Window(window)
        }
    }

    /// Follows one run of `step`: sends `run_started`, then the session the CLI names through
    /// `seen` with its checkpoint, as this way says. Returns what is still held when `ended`
    /// fires or the run ends without naming a session, for the caller to send with the run's end.
    pub(crate) async fn follow(
        self,
        queue: &Queue,
        job: &Job,
        step: &Step,
        started: Event,
        seen: oneshot::Receiver<String>,
        ended: CancellationToken,
    ) -> Held {
        let deadline = match self {
            Progress::Immediate => None,
            Progress::Window(window) => Some(tokio::time::Instant::now() + window),
        };
        let mut seen = seen;
        let mut held = Held {
            checkpoint: None,
            events: vec![started],
        };
        // A CLI names its session moments after it starts, so in a window both events ride with
        // that checkpoint; one that takes longer gets its `run_started` on its own first.
        let named = match deadline {
            Some(deadline) => match tokio::time::timeout_at(deadline, &mut seen).await {
                Ok(named) => named,
                Err(_) => {
                    std::mem::take(&mut held).send(queue).await;
                    seen.await
                }
            },
            None => {
                std::mem::take(&mut held).send(queue).await;
                seen.await
            }
        };
        // Without a session named, the run is over: what is held rides with its end.
        let Ok(session) = named else {
            return held;
        };
        let mut seen = Event::new(EventType::SessionSeen, &job.build_id, &job.project_id);
        seen.step = Some(step.name().to_string());
        seen.session_id = Some(session.clone());
        held.events.push(seen);
        held.checkpoint = Some(checkpoint_of(job, step, &session, &[], Phase::Started));
        if let Some(deadline) = deadline {
            tokio::select! {
                biased;
                _ = ended.cancelled() => return held,
                _ = tokio::time::sleep_until(deadline) => {}
            }
        }
        held.send(queue).await;
        Held::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_zero_window_is_immediate() {
        assert_eq!(Progress::from_window(Duration::ZERO), Progress::Immediate);
        assert_eq!(
            Progress::from_window(Duration::from_millis(50)),
            Progress::Window(Duration::from_millis(50))
        );
    }
}
