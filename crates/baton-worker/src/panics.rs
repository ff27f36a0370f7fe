//! A job whose processing panics is ended, not stranded: the panic's message becomes its reason.

use baton_core::Job;
use tracing::{error, warn};

use crate::job::{JobContext, JobEnd, JobSignals};

/// The text a panic carried, as `panic!` and `expect` give it.
pub(crate) fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".into())
}

impl JobContext {
    /// Ends a job whose processing panicked: dead-lettered with the panic's message, so it can be
    /// replayed once the bug is fixed, and marked failed in the ledger unless another worker has
    /// taken it over.
    pub(crate) async fn after_panic(
        &self,
        job: &Job,
        message: &str,
        signals: &JobSignals,
    ) -> JobEnd {
        let reason = format!("the worker panicked while running this job: {message}");
        if signals.lost.is_cancelled() {
            error!(%reason, "job panicked; another worker has taken it over");
            return JobEnd::Fenced;
        }
        error!(%reason, "job panicked; dead-lettering it");
        if let Err(e) = self.ledger.fail_unclaimed(job, &reason).await {
            self.ledger_error(&e);
            warn!(error = %e, "could not mark the panicked build failed");
        }
        JobEnd::DeadLettered {
            reason,
            attempts: 1,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A job's stand-in that panics with `message` when given one, as `panic!` and `expect` do.
    async fn job(message: Option<&'static str>, formatted: bool) {
        tokio::task::yield_now().await;
        match (message, formatted) {
            (Some(m), false) => panic!("{}", m),
            (Some(m), true) => panic!("{m} at line {}", 3),
            (None, _) => {}
        }
    }

    async fn caught(fut: impl std::future::Future<Output = ()>) -> Result<(), String> {
        futures_util::FutureExt::catch_unwind(std::panic::AssertUnwindSafe(fut))
            .await
            .map_err(|p| panic_message(p.as_ref()))
    }

    #[tokio::test]
    async fn a_panicking_job_future_is_caught_with_its_message() {
        assert_eq!(
            caught(job(Some("bad line"), false)).await,
            Err("bad line".into())
        );
        assert_eq!(
            caught(job(Some("bad line"), true)).await,
            Err("bad line at line 3".into())
        );
        assert_eq!(caught(job(None, false)).await, Ok(()));
        let literal = std::panic::catch_unwind(|| panic!("literal")).unwrap_err();
        assert_eq!(panic_message(literal.as_ref()), "literal");
    }
}
