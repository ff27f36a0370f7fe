//! The fast-path record of a build's newest session, kept in Redis beside the authoritative ledger.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// How long a checkpoint lives in Redis, in seconds.
pub const CHECKPOINT_TTL_SECS: u64 = 3600;

/// The Redis key of a build's checkpoint: `claude:session:<buildId>`.
pub fn checkpoint_key(build_id: &str) -> String {
    format!("claude:session:{build_id}")
}

/// The session a build reached after its latest agent run, as stored under [`checkpoint_key`].
///
/// Field names are camelCase because the web backend of the seed design reads these keys.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Checkpoint {
    /// The session id the run reported.
    pub session_id: String,
    /// The build the run belongs to.
    pub build_id: String,
    /// The project's directory, relative to the workspace root.
    pub project_path: String,
    /// Files the run wrote, as the CLI reported them.
    pub files_created: Vec<String>,
    /// The step the run belonged to (see [`crate::Step::name`]).
    pub step: String,
    /// When the checkpoint was written.
    pub updated_at: DateTime<Utc>,
}
