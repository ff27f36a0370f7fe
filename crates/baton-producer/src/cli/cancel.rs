//! `baton cancel`: cancel a queued or running build.

use std::process::ExitCode;

use baton_ledger::Ledger;
use baton_ledger::cancel::Cancel;
use baton_producer::cancel::{cancel, is_unknown_build};
use baton_queue::Queue;

/// Exit status when the build had already ended (nothing to cancel).
const EXIT_ENDED: u8 = 3;

/// Cancels `build` and says what happened: exit 0 when it is cancelled or its worker was asked to
/// stop it, 1 for an unknown build, [`EXIT_ENDED`] when it had already ended.
pub async fn run(
    queue: &Queue,
    ledger: &Ledger,
    build: &str,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let done = match cancel(queue, ledger, build).await {
        Ok(done) => done,
        Err(e) if is_unknown_build(&e) => {
            eprintln!("baton: no build {build} in the ledger");
            return Ok(ExitCode::FAILURE);
        }
        Err(e) => return Err(e.into()),
    };
    if json {
        out!(
            "{}",
            serde_json::json!({ "build_id": build, "result": done })
        );
    } else {
        match done {
            Cancel::Cancelled => out!("build {build} cancelled; it had not started"),
            Cancel::Requested => out!(
                "build {build} is running: its worker stops it within a heartbeat and ends it cancelled"
            ),
            Cancel::Ended(status) => {
                eprintln!("baton: build {build} already ended ({})", status.as_str())
            }
        }
    }
    Ok(match done {
        Cancel::Ended(_) => ExitCode::from(EXIT_ENDED),
        _ => ExitCode::SUCCESS,
    })
}
