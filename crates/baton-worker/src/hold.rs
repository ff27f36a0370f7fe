//! A worker's hold on the entries it holds, renewed by its heartbeats.

/// This worker's hold on the entries it holds: when a heartbeat last renewed them, and how long a
/// renewal counts. Past that, another replica may soon take the entries over, so the worker starts
/// no run and its supervisor kills the runs under way ([`baton_agent::Agent::hold_runs_until`]): two runs must
/// never resume one session at once, and a stalled worker cannot stop its own.
#[derive(Clone)]
pub struct Hold {
    renewed: std::sync::Arc<std::sync::Mutex<std::time::Instant>>,
    lasts: std::time::Duration,
}

impl Hold {
    /// A hold renewed now that counts for three quarters of `claim_idle`: the rest is the margin
    /// in which the runs end before a replica's claim can come.
    pub fn new(claim_idle: std::time::Duration) -> Hold {
        Hold {
            renewed: std::sync::Arc::new(std::sync::Mutex::new(std::time::Instant::now())),
            lasts: claim_idle * 3 / 4,
        }
    }

    /// Records a renewal by a heartbeat that started at `at` (Redis refreshed the entries after).
    pub fn renew(&self, at: std::time::Instant) {
        let mut renewed = self.renewed.lock().unwrap_or_else(|e| e.into_inner());
        *renewed = (*renewed).max(at);
    }

    /// When the hold runs out unless renewed.
    pub fn expires_at(&self) -> std::time::Instant {
        *self.renewed.lock().unwrap_or_else(|e| e.into_inner()) + self.lasts
    }

    /// How long ago the hold ran out, if it has.
    pub fn lapsed(&self) -> Option<std::time::Duration> {
        std::time::Instant::now().checked_duration_since(self.expires_at())
    }
}
