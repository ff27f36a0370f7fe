//! Cancel requests reaching the jobs this worker runs. Each running job is watched under its
//! build id; after every heartbeat the worker asks Redis which of them someone asked to cancel
//! (one `HMGET`, only while jobs run) and fires those jobs' abort tokens. A cancel thus reaches
//! the worker that holds the build, on whichever machine, within a heartbeat.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use baton_queue::{Queue, QueueError};
use tokio_util::sync::CancellationToken;
use tracing::info;

/// The running jobs' abort tokens by build id.
#[derive(Clone, Default)]
pub struct Cancels {
    running: Arc<Mutex<HashMap<String, CancellationToken>>>,
}

/// A job watched for cancel requests until this is dropped.
pub(crate) struct Watched {
    cancels: Cancels,
    build_id: String,
}

impl Drop for Watched {
    fn drop(&mut self) {
        self.cancels.lock().remove(&self.build_id);
    }
}

impl Cancels {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, CancellationToken>> {
        self.running.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Watches `build_id`: a request to cancel it fires `abort`.
    pub(crate) fn watch(&self, build_id: &str, abort: CancellationToken) -> Watched {
        self.lock().insert(build_id.to_string(), abort);
        Watched {
            cancels: self.clone(),
            build_id: build_id.to_string(),
        }
    }

    /// Fires the abort token of every watched job someone asked to cancel.
    pub(crate) async fn poll(&self, queue: &Queue) -> Result<(), QueueError> {
        let ids: Vec<String> = self.lock().keys().cloned().collect();
        if ids.is_empty() {
            return Ok(());
        }
        let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
        let asked = queue.cancel_requested(&refs).await?;
        let running = self.lock();
        for (id, _) in ids.iter().zip(asked).filter(|(_, asked)| *asked) {
            if let Some(abort) = running.get(id)
                && !abort.is_cancelled()
            {
                info!(build_id = %id, "cancel requested; stopping the build's run");
                abort.cancel();
            }
        }
        Ok(())
    }
}
