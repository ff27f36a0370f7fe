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
    pub session_id: crate::SessionId,
    /// The build the run belongs to.
    pub build_id: crate::BuildId,
    /// The project's directory, relative to the workspace root.
    pub project_path: String,
    /// Files the run wrote, as the CLI reported them.
    pub files_created: Vec<String>,
    /// The step the run belonged to, by its name (see [`crate::Step::name`]).
    pub step: crate::Step,
    /// Whether the run had just started (its `init` named the session) or had finished and was
    /// recorded. A replay resumes a started run's session, so its partial work is kept.
    #[serde(default)]
    pub phase: Phase,
    /// When the checkpoint was written.
    pub updated_at: DateTime<Utc>,
}

/// Where the run a checkpoint describes stood.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// The run started; its session is named but its result not recorded.
    Started,
    /// The run finished and was recorded.
    #[default]
    Finished,
}
