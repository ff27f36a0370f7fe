//! Fault injection, chosen by environment:
//!
//! - `CLAUDE_EMULATOR_FAULT`: a comma-separated list of faults (see [`Fault`]); one is drawn per run.
//! - `CLAUDE_EMULATOR_FAULT_RATE`: the probability that a run gets a fault at all (default 1).
//! - `CLAUDE_EMULATOR_SEED`: makes the draws repeatable: the n-th run under one config dir draws the
//!   same way every time.
//! - `CLAUDE_EMULATOR_FAULT_MATCH`: only runs whose prompt contains this text can get a fault.
//! - `CLAUDE_EMULATOR_FAULT_FILE`: a file whose text, when it exists, is the fault list instead of
//!   `CLAUDE_EMULATOR_FAULT`, so a test can switch faults while a worker runs.

use std::io::Write;
use std::path::Path;

/// A way a run misbehaves, as the real CLI has been seen to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Prints `init` and part of the turn, then dies by SIGABRT without a `result`.
    Crash,
    /// Prints `init`, then hangs forever without output.
    HangBeforeResult,
    /// Prints the whole run including `result`, then never exits.
    HangAfterResult,
    /// Mixes lines that are not JSON, and a type nobody knows, into a normal run.
    Garbage,
    /// The not-logged-in shape of CLI 2.1.329: a synthetic assistant error, `result` with
    /// `subtype:"success"` and `is_error:true`, exit 1.
    NotLoggedIn,
    /// Rate limited: a `rate_limit_event` with `resetsAt`, a synthetic `rate_limit` error, exit 1.
    RateLimited,
    /// A successful run that exits 1 anyway (as when an MCP server fails).
    ExitAfterSuccess,
    /// The turn limit: `result` with `subtype:"error_max_turns"`, exit 1.
    MaxTurns,
    /// A resume that silently starts a new session without the history, under a new id (CLI
    /// regressions did this; see `docs/claude-cli.md`).
    SilentFresh,
}

impl Fault {
    fn parse(name: &str) -> Option<Fault> {
        Some(match name.trim() {
            "crash" => Fault::Crash,
            "hang_before_result" => Fault::HangBeforeResult,
            "hang_after_result" => Fault::HangAfterResult,
            "garbage" => Fault::Garbage,
            "not_logged_in" => Fault::NotLoggedIn,
            "rate_limited" => Fault::RateLimited,
            "exit_after_success" => Fault::ExitAfterSuccess,
            "max_turns" => Fault::MaxTurns,
            "silent_fresh" => Fault::SilentFresh,
            _ => return None,
        })
    }

    /// The fault's name in the environment and the run log.
    pub fn name(self) -> &'static str {
        match self {
            Fault::Crash => "crash",
            Fault::HangBeforeResult => "hang_before_result",
            Fault::HangAfterResult => "hang_after_result",
            Fault::Garbage => "garbage",
            Fault::NotLoggedIn => "not_logged_in",
            Fault::RateLimited => "rate_limited",
            Fault::ExitAfterSuccess => "exit_after_success",
            Fault::MaxTurns => "max_turns",
            Fault::SilentFresh => "silent_fresh",
        }
    }
}

/// Draws this run's fault, if any, from the environment.
pub fn draw(prompt: &str, config_dir: &Path) -> Result<Option<Fault>, String> {
    let list = match std::env::var_os("CLAUDE_EMULATOR_FAULT_FILE") {
        Some(file) => std::fs::read_to_string(file).unwrap_or_default(),
        None => match std::env::var("CLAUDE_EMULATOR_FAULT") {
            Ok(list) => list,
            Err(_) => return Ok(None),
        },
    };
    let faults = list
        .split(',')
        .filter(|s| !s.trim().is_empty())
        .map(|s| Fault::parse(s).ok_or_else(|| format!("unknown CLAUDE_EMULATOR_FAULT {s:?}")))
        .collect::<Result<Vec<_>, _>>()?;
    if faults.is_empty() {
        return Ok(None);
    }
    if let Ok(needle) = std::env::var("CLAUDE_EMULATOR_FAULT_MATCH")
        && !prompt.contains(&needle)
    {
        return Ok(None);
    }
    let rate: f64 = match std::env::var("CLAUDE_EMULATOR_FAULT_RATE") {
        Ok(r) => r
            .parse()
            .map_err(|_| format!("CLAUDE_EMULATOR_FAULT_RATE {r:?} is not a number"))?,
        Err(_) => 1.0,
    };
    let mut rng = Rng::new(seed(config_dir)?);
    if rng.unit() >= rate {
        return Ok(None);
    }
    Ok(Some(faults[(rng.next() % faults.len() as u64) as usize]))
}

/// The draw's seed: with `CLAUDE_EMULATOR_SEED`, the seed mixed with this run's number under the
/// config dir (so a sequence of runs repeats); otherwise the clock and the pid.
fn seed(config_dir: &Path) -> Result<u64, String> {
    match std::env::var("CLAUDE_EMULATOR_SEED") {
        Ok(s) => {
            let base: u64 = s
                .parse()
                .map_err(|_| format!("CLAUDE_EMULATOR_SEED {s:?} is not a whole number"))?;
            Ok(base ^ next_run_number(config_dir).wrapping_mul(0x9E37_79B9_7F4A_7C15))
        }
        Err(_) => {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(0);
            Ok(nanos ^ u64::from(std::process::id()))
        }
    }
}

/// Counts runs by appending one byte to a file: appends are atomic, so concurrent runs get distinct
/// numbers.
fn next_run_number(config_dir: &Path) -> u64 {
    let path = config_dir.join("emulator-runs.count");
    let _ = std::fs::create_dir_all(config_dir);
    let Ok(mut f) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
    else {
        return 0;
    };
    let _ = f.write_all(b".");
    f.metadata().map(|m| m.len().saturating_sub(1)).unwrap_or(0)
}

/// SplitMix64: small, good enough for fault draws.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Rng(seed)
    }

    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}
