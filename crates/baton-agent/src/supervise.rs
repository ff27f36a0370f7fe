//! The supervisor that stands between a worker and the CLI, so the CLI cannot outlive the worker.
//!
//! A process group ends with a signal only when someone sends one; a worker killed with SIGKILL sends
//! nothing. So the agent starts the CLI through a supervisor — the worker's own executable run with
//! [`SUPERVISE_FLAG`] — which asks the kernel for a signal when its parent dies
//! (`PR_SET_PDEATHSIG`) and then kills the whole group, the CLI's own children included.
//!
//! The supervisor leads the group and waits for the CLI. SIGINT and SIGTERM sent to the group reach
//! the CLI directly, so the supervisor only waits; it exits as the CLI did (code or signal). It
//! blocks signals only after starting the CLI, which would otherwise inherit the blocked mask.

use std::ffi::OsString;

use nix::sys::signal::{SigSet, Signal, killpg, raise};
use nix::sys::wait::WaitStatus;
use nix::unistd::{getpgrp, getppid};

/// The first argument that turns an executable into the supervisor:
/// `<exe> --baton-agent-supervise <parent pid> -- <program> [args...]`.
pub const SUPERVISE_FLAG: &str = "--baton-agent-supervise";

/// The signal the kernel sends the supervisor when its parent dies.
const PARENT_DIED: Signal = Signal::SIGUSR2;

/// Runs the supervisor and exits if this process was started as one; returns otherwise.
/// Call it first thing in `main` of any binary used as [`crate::AgentConfig::supervisor`], before
/// any other thread exists (in particular before an async runtime starts): the supervisor takes
/// signals with `sigwait` on this thread, and another thread that does not block them would
/// receive and drop them.
pub fn run_if_supervisor() {
    let args: Vec<OsString> = std::env::args_os().collect();
    if args.get(1).is_some_and(|a| a == SUPERVISE_FLAG) {
        std::process::exit(supervise(&args[2..]));
    }
}

/// The arguments that make `supervisor` run `program args...` under supervision.
pub fn supervisor_args(program: &std::path::Path, args: &[String]) -> Vec<OsString> {
    let mut all: Vec<OsString> = vec![
        SUPERVISE_FLAG.into(),
        std::process::id().to_string().into(),
        "--".into(),
        program.as_os_str().to_owned(),
    ];
    all.extend(args.iter().map(OsString::from));
    all
}

fn supervise(args: &[OsString]) -> i32 {
    let parent: Option<i32> = args
        .first()
        .and_then(|p| p.to_str())
        .and_then(|p| p.parse().ok());
    let (Some(parent), Some(sep)) = (parent, args.get(1)) else {
        eprintln!("baton supervisor: usage: {SUPERVISE_FLAG} <parent pid> -- <program> [args...]");
        return 2;
    };
    if sep != "--" || args.len() < 3 {
        eprintln!("baton supervisor: usage: {SUPERVISE_FLAG} <parent pid> -- <program> [args...]");
        return 2;
    }
    // The CLI starts before any signal is blocked here: a child inherits the blocked mask, and
    // the CLI must see SIGINT and SIGTERM to end its turn.
    let mut child = match std::process::Command::new(&args[2])
        .args(&args[3..])
        .spawn()
    {
        Ok(c) => c,
        Err(e) => {
            eprintln!(
                "baton supervisor: cannot start {}: {e}",
                args[2].to_string_lossy()
            );
            return 127;
        }
    };
    // From here on signals are taken with sigwait.
    let mut mask = SigSet::empty();
    for s in [
        Signal::SIGCHLD,
        Signal::SIGINT,
        Signal::SIGTERM,
        PARENT_DIED,
    ] {
        mask.add(s);
    }
    if let Err(e) = mask.thread_block() {
        eprintln!("baton supervisor: cannot block signals: {e}");
        let _ = killpg(getpgrp(), Signal::SIGKILL);
        return 2;
    }
    if let Err(e) = nix::sys::prctl::set_pdeathsig(PARENT_DIED) {
        eprintln!("baton supervisor: cannot watch the parent: {e}");
        let _ = killpg(getpgrp(), Signal::SIGKILL);
        return 2;
    }
    // The parent may have died before the request above took effect.
    if getppid().as_raw() != parent {
        let _ = killpg(getpgrp(), Signal::SIGKILL);
        return 137;
    }
    let child_pid = nix::unistd::Pid::from_raw(child.id() as i32);
    // A SIGCHLD that came before the mask was discarded; look once before waiting for signals.
    let mut check_child = true;
    loop {
        if check_child {
            match nix::sys::wait::waitpid(child_pid, Some(nix::sys::wait::WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(_, code)) => return code,
                Ok(WaitStatus::Signaled(_, signal, _)) => return exit_like(signal, &mask),
                _ => {}
            }
        }
        check_child = false;
        match mask.wait() {
            Ok(Signal::SIGCHLD) => check_child = true,
            Ok(s) if s == PARENT_DIED => {
                // The worker is gone: end everything it started, this supervisor included.
                let _ = killpg(getpgrp(), Signal::SIGKILL);
                let _ = child.kill();
                return 137;
            }
            // SIGINT and SIGTERM went to the whole group; the CLI has them. Keep waiting for it.
            _ => {}
        }
    }
}

/// Ends this process the way the CLI ended: by the same signal where it can be raised.
fn exit_like(signal: Signal, mask: &SigSet) -> i32 {
    let _ = mask.thread_unblock();
    let _ = raise(signal);
    128 + signal as i32
}
