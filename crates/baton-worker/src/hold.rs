//! A worker's hold on the entries it holds, renewed by its heartbeats.
//!
//! Its clock is tokio's, so the timing is tested with paused time; only the deadline handed to the
//! CLI's supervisor (a separate process) is turned into the real monotonic clock.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

/// This worker's hold on the entries it holds: when a heartbeat last renewed them, and how long a
/// renewal counts. Past that, another replica may soon take the entries over, so the worker starts
/// no run and its supervisor kills the runs under way ([`baton_agent::Agent::hold_runs_until`]): two runs must
/// never resume one session at once, and a stalled worker cannot stop its own.
#[derive(Clone)]
pub struct Hold {
    renewed: Arc<Mutex<Instant>>,
    lasts: Duration,
}

impl Hold {
    /// A hold renewed now that counts for three quarters of `claim_idle`: the rest is the margin
    /// in which the runs end before a replica's claim can come.
    pub fn new(claim_idle: Duration) -> Hold {
        Hold {
            renewed: Arc::new(Mutex::new(Instant::now())),
            lasts: claim_idle * 3 / 4,
        }
    }

    /// Records a renewal by a heartbeat that started at `at` (Redis refreshed the entries after).
    /// A renewal older than the last one changes nothing.
    pub fn renew(&self, at: Instant) {
        let mut renewed = self.renewed.lock().unwrap_or_else(|e| e.into_inner());
        *renewed = (*renewed).max(at);
    }

    /// When the hold runs out unless renewed.
    pub fn expires_at(&self) -> Instant {
        *self.renewed.lock().unwrap_or_else(|e| e.into_inner()) + self.lasts
    }

    /// [`Hold::expires_at`] on the real monotonic clock, for the supervisor process, which does not
    /// share tokio's (paused in tests) clock.
    pub fn expires_at_std(&self) -> std::time::Instant {
        self.expires_at().into_std()
    }

    /// How long ago the hold ran out, if it has.
    pub fn lapsed(&self) -> Option<Duration> {
        Instant::now().checked_duration_since(self.expires_at())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_hold_lasts_three_quarters_of_the_claim_timeout_from_its_last_renewal() {
        let hold = Hold::new(Duration::from_secs(60));
        tokio::time::advance(Duration::from_secs(44)).await;
        assert_eq!(hold.lapsed(), None, "45 s of 60 have not passed");
        tokio::time::advance(Duration::from_secs(2)).await;
        assert_eq!(hold.lapsed(), Some(Duration::from_secs(1)));

        // A heartbeat that started 10 s ago renews it from then, not from now.
        hold.renew(Instant::now() - Duration::from_secs(10));
        assert_eq!(hold.lapsed(), None);
        tokio::time::advance(Duration::from_secs(36)).await;
        assert_eq!(hold.lapsed(), Some(Duration::from_secs(1)));
    }

    #[tokio::test(start_paused = true)]
    async fn a_late_answer_of_an_older_heartbeat_does_not_shorten_the_hold() {
        let hold = Hold::new(Duration::from_secs(40));
        let older = Instant::now();
        tokio::time::advance(Duration::from_secs(20)).await;
        hold.renew(Instant::now());
        hold.renew(older);
        assert_eq!(hold.expires_at(), older + Duration::from_secs(20 + 30));
    }
}
