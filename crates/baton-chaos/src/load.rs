//! The load: per project a create, then a seeded mix of updates, chats in threads (some forked
//! from main), plans and planning chats, enqueued with `baton enqueue` as a backend would, and
//! enqueued again (the same build id) while Redis or PostgreSQL is away.

use std::time::{Duration, Instant};

use anyhow::bail;

use crate::fleet::Setting;
use crate::seed::Seed;

/// One build the run enqueued.
#[derive(Debug, Clone)]
pub struct Enqueued {
    pub build_id: String,
    pub project: String,
    pub kind: &'static str,
}

/// The `baton enqueue` arguments of the `n`-th job of `project`.
pub fn job_args(
    seed: &mut Seed,
    project: &str,
    n: u32,
    threads: &mut Vec<u32>,
) -> (Vec<String>, &'static str) {
    let mut args: Vec<String> = vec!["--project".into(), project.into()];
    let kind = if n == 0 {
        "create"
    } else {
        ["update", "update", "chat", "chat", "plan", "chat_plan"][seed.below(6) as usize]
    };
    args.extend(["--kind".into(), kind.into()]);
    match kind {
        "chat" => {
            let thread = seed.below(3) as u32;
            args.extend(["--thread".into(), format!("t{thread}")]);
            if !threads.contains(&thread) {
                threads.push(thread);
                if seed.below(2) == 0 {
                    args.extend(["--fork-from".into(), "main".into()]);
                }
            }
            args.extend([
                "--prompt".into(),
                format!("What was asked before? (chat {n})"),
            ]);
        }
        "plan" => {
            for t in 0..2 + seed.below(2) {
                args.extend(["--task".into(), format!("Write part {t} of step {n}")]);
            }
        }
        _ => {
            args.extend(["--version".into(), format!("v{n}")]);
            args.extend(["--prompt".into(), format!("Change {n} to {project}")]);
        }
    }
    (args, kind)
}

/// Enqueues one job, trying again with the same build id while the services are away.
pub fn enqueue(setting: &Setting, build_id: &str, args: &[String]) -> anyhow::Result<()> {
    let started = Instant::now();
    loop {
        let out = setting
            .command("baton")
            .arg("enqueue")
            .args(["--build-id", build_id])
            .args(args)
            .output()?;
        if out.status.success() {
            return Ok(());
        }
        if out.status.code() == Some(2) {
            bail!(
                "baton refused {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        if started.elapsed() > Duration::from_secs(120) {
            bail!(
                "could not enqueue for 120 s: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(300));
    }
}
