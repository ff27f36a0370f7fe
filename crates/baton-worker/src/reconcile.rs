//! What a heartbeat's answer means for one entry the worker holds. A pure function, so that each
//! case (taken, lost, being ended) is a unit test rather than a race in an end-to-end test.

use baton_queue::Holding;

/// What the worker knows of a held entry when the heartbeat answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Seen {
    /// Its job runs.
    pub(crate) running: bool,
    /// Its job has ended and the entry is being ended: nobody holding it is expected.
    pub(crate) ending: bool,
    /// An earlier heartbeat found that Redis lost it.
    pub(crate) vanished: bool,
}

/// What to do about the entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Action {
    /// Nothing: still this worker's, or ended by its own job, or lost but running on.
    Keep,
    /// Another worker took it while its job ran: stop the run at once, write nothing; the job's
    /// task forgets the entry when its run is gone.
    StopRun,
    /// Another worker took it while it waited: forget it.
    Forget,
    /// Redis lost it (first seen): count and say so, and remember it. A running job runs on,
    /// holding its project's lease (the heartbeat took it back).
    MarkLost,
    /// Redis lost it and it waited through a heartbeat since: enqueue its job again. Not at once,
    /// so every replica running a job Redis lost has had a heartbeat to take its project's lease
    /// back, and the copy cannot start beside a job of its project.
    Requeue,
}

/// What to do about an entry the worker holds, given what the heartbeat says of it.
pub(crate) fn reconcile(seen: Seen, holding: Holding) -> Action {
    match holding {
        Holding::Ours => Action::Keep,
        // Acknowledged by its own job's ending, which is under way.
        _ if seen.ending => Action::Keep,
        Holding::Taken if seen.running => Action::StopRun,
        Holding::Taken => Action::Forget,
        Holding::Gone if !seen.vanished => Action::MarkLost,
        Holding::Gone if seen.running => Action::Keep,
        Holding::Gone => Action::Requeue,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WAITING: Seen = Seen {
        running: false,
        ending: false,
        vanished: false,
    };
    const RUNNING: Seen = Seen {
        running: true,
        ..WAITING
    };

    #[test]
    fn an_entry_still_ours_is_kept() {
        assert_eq!(reconcile(WAITING, Holding::Ours), Action::Keep);
        assert_eq!(reconcile(RUNNING, Holding::Ours), Action::Keep);
    }

    #[test]
    fn a_taken_entry_stops_its_run_or_is_forgotten() {
        assert_eq!(reconcile(RUNNING, Holding::Taken), Action::StopRun);
        assert_eq!(reconcile(WAITING, Holding::Taken), Action::Forget);
    }

    #[test]
    fn an_entry_its_own_job_is_ending_is_left_to_that_ending() {
        let ending = Seen {
            ending: true,
            ..RUNNING
        };
        assert_eq!(reconcile(ending, Holding::Taken), Action::Keep);
        assert_eq!(reconcile(ending, Holding::Gone), Action::Keep);
    }

    #[test]
    fn a_lost_entry_is_marked_then_a_waiting_one_is_enqueued_again_and_a_running_one_runs_on() {
        assert_eq!(reconcile(WAITING, Holding::Gone), Action::MarkLost);
        assert_eq!(reconcile(RUNNING, Holding::Gone), Action::MarkLost);
        let lost = |seen: Seen| Seen {
            vanished: true,
            ..seen
        };
        assert_eq!(reconcile(lost(WAITING), Holding::Gone), Action::Requeue);
        assert_eq!(reconcile(lost(RUNNING), Holding::Gone), Action::Keep);
    }
}
