//! Cancelling a build: the ledger decides, under the build's row lock, whether it ends at once
//! (queued), is marked for its worker to stop (running), or had already ended.

use baton_core::BuildStatus;
use serde::Serialize;

use crate::{Ledger, LedgerError};

/// What [`Ledger::cancel_build`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Cancel {
    /// The build was queued: it is `cancelled` now and no worker will run it.
    Cancelled,
    /// The build is running: its worker stops its run and ends it `cancelled`.
    Requested,
    /// The build had already ended with this status; nothing changed.
    Ended(BuildStatus),
}

impl Ledger {
    /// Cancels a build (see `migrations/*_cancel.sql`).
    pub async fn cancel_build(&self, build_id: &str) -> Result<Cancel, LedgerError> {
        let answer = sqlx::query_scalar!(
            r#"SELECT baton_cancel_build(p_build_id => $1) AS "answer""#,
            build_id
        )
        .fetch_one(&self.pool)
        .await?
        .ok_or_else(|| LedgerError::UnknownBuild(build_id.to_string()))?;
        match answer.as_str() {
            "cancelled" => Ok(Cancel::Cancelled),
            "requested" => Ok(Cancel::Requested),
            other => other
                .strip_prefix("ended:")
                .and_then(BuildStatus::from_name)
                .filter(|s| s.is_final())
                .map(Cancel::Ended)
                .ok_or_else(|| {
                    LedgerError::Unexpected(format!("baton_cancel_build answered {other:?}"))
                }),
        }
    }
}
