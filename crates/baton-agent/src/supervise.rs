//! The supervisor that makes sure no CLI run outlives its worker.
//!
//! A process group ends with a signal only when someone sends one; a worker killed with SIGKILL sends
//! nothing. So an agent with a supervisor starts, once, a helper process: its own executable run
//! with [`SUPERVISE_FLAG`]. The helper holds the reading end of a pipe whose only writer is the
//! agent, and waits. When the agent's process ends, however it ends, the kernel closes the pipe; the
//! helper then kills every process carrying the agent's token in its environment ([`GUARD_VAR`],
//! which every CLI run gets and passes on to what it starts), together with its process group.
//!
//! The same pipe carries deadlines ([`Agent::hold_runs_until`](crate::Agent::hold_runs_until)): a
//! worker whose jobs' entries may be taken over by another replica after a while must not have its
//! runs outlive that moment, even when the worker itself is stalled (stopped, frozen, starved) and
//! cannot end them. Each deadline is 8 bytes, little-endian nanoseconds of `CLOCK_MONOTONIC`, which
//! the two processes share. When a deadline passes with no later one, the helper kills the runs as
//! it does at the agent's end, and goes on watching.
//!
//! The CLI is the agent's direct child. An earlier design put a supervisor process between the two
//! for every run; on the virtual machines profiled a process start costs about 1 ms of CPU, mostly in
//! libc's start-up, which made that supervisor a third of Baton's overhead per run.

use std::ffi::OsString;
use std::io;
use std::os::fd::AsFd;
use std::path::Path;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::{Duration, Instant};

use nix::fcntl::{FcntlArg, OFlag, fcntl};
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signal::{SigSet, Signal, kill, killpg};
use nix::time::{ClockId, clock_gettime};
use nix::unistd::{Pid, getpgid, getpgrp};

/// The first argument that turns an executable into the supervisor: `<exe> --baton-agent-supervise
/// <token>`, with the pipe from the agent on stdin.
pub const SUPERVISE_FLAG: &str = "--baton-agent-supervise";

/// The environment variable that marks a CLI run (and whatever it starts) as the agent's:
/// `BATON_AGENT_GUARD=<token>`.
pub const GUARD_VAR: &str = "BATON_AGENT_GUARD";

/// Runs the supervisor and exits if this process was started as one; returns otherwise.
/// Call it first thing in `main` of any binary used as [`crate::AgentConfig::supervisor`].
pub fn run_if_supervisor() {
    let args: Vec<OsString> = std::env::args_os().collect();
    if args.get(1).is_some_and(|a| a == SUPERVISE_FLAG) {
        let Some(token) = args.get(2).and_then(|t| t.to_str()) else {
            eprintln!("baton supervisor: usage: {SUPERVISE_FLAG} <token>");
            std::process::exit(2);
        };
        std::process::exit(supervise(token));
    }
}

/// The helper's life: kill the agent's runs whenever a deadline passes unrenewed, and once more at
/// the agent's end.
fn supervise(token: &str) -> i32 {
    // Signals meant for the worker (a Ctrl-C in its terminal reaches its whole group) must not end
    // the helper before the worker: it has work to do after.
    let mut mask = SigSet::empty();
    for s in [
        Signal::SIGINT,
        Signal::SIGTERM,
        Signal::SIGHUP,
        Signal::SIGQUIT,
    ] {
        mask.add(s);
    }
    let _ = mask.thread_block();
    let entry = format!("{GUARD_VAR}={token}");
    let mut deadlines = Deadlines::default();
    let stdin = io::stdin();
    loop {
        let timeout = match deadlines.current {
            None => PollTimeout::NONE,
            Some(at) => {
                let left = at.saturating_sub(monotonic_ns());
                // Rounded up, so the wake-up is never before the deadline.
                PollTimeout::try_from(left.div_ceil(1_000_000) as u128).unwrap_or(PollTimeout::MAX)
            }
        };
        let mut fds = [PollFd::new(stdin.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, timeout) {
            Ok(0) => {
                if deadlines.current.is_some_and(|at| monotonic_ns() >= at) {
                    eprintln!(
                        "baton supervisor: the worker did not renew its hold on its jobs in time \
                         (stalled, or cut off from Redis); killing its CLI runs before another \
                         replica takes the jobs over"
                    );
                    kill_all(&entry, token);
                    deadlines.current = None;
                }
            }
            Ok(_) => {
                let mut buf = [0u8; 256];
                match nix::unistd::read(stdin.as_fd(), &mut buf) {
                    // The agent's process ended: the pipe's only writer is gone.
                    Ok(0) => break,
                    Ok(n) => deadlines.feed(&buf[..n]),
                    Err(nix::errno::Errno::EINTR | nix::errno::Errno::EAGAIN) => {}
                    Err(_) => break,
                }
            }
            Err(nix::errno::Errno::EINTR) => {}
            Err(_) => break,
        }
    }
    if kill_all(&entry, token) { 0 } else { 1 }
}

/// Kills the runs of `entry` until a sweep finds none; false if they keep appearing.
fn kill_all(entry: &str, token: &str) -> bool {
    // A run may be forking while it is killed: sweep until a pass finds nothing.
    for _ in 0..50 {
        if sweep(entry.as_bytes()) == 0 {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    eprintln!("baton supervisor: processes of token {token} keep appearing; giving up");
    false
}

/// The deadlines read from the pipe so far: the latest whole one, and the bytes of one still
/// arriving.
#[derive(Debug, Default)]
struct Deadlines {
    current: Option<u64>,
    partial: Vec<u8>,
}

impl Deadlines {
    fn feed(&mut self, bytes: &[u8]) {
        self.partial.extend_from_slice(bytes);
        let whole = self.partial.len() / 8 * 8;
        if let Some(last) = self.partial[..whole].chunks_exact(8).last() {
            self.current = Some(u64::from_le_bytes(last.try_into().expect("8 bytes")));
        }
        self.partial.drain(..whole);
    }
}

/// Nanoseconds of `CLOCK_MONOTONIC`, the clock the agent and the helper share.
fn monotonic_ns() -> u64 {
    clock_gettime(ClockId::CLOCK_MONOTONIC)
        .map(|t| u64::try_from(Duration::from(t).as_nanos()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// `at` on the shared clock.
pub(crate) fn on_monotonic_clock(at: Instant) -> u64 {
    let now = Instant::now();
    let base = monotonic_ns();
    match at.checked_duration_since(now) {
        Some(ahead) => base.saturating_add(u64::try_from(ahead.as_nanos()).unwrap_or(u64::MAX)),
        None => base
            .saturating_sub(u64::try_from(now.duration_since(at).as_nanos()).unwrap_or(u64::MAX)),
    }
}

/// Kills every live process whose environment holds `entry`, with its process group. Returns how
/// many it found.
fn sweep(entry: &[u8]) -> usize {
    let me = std::process::id();
    let own_group = getpgrp();
    let mut found = 0;
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return 0;
    };
    for e in dir.filter_map(Result::ok) {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        if pid == me {
            continue;
        }
        // A zombie's environment reads empty, so the dead are not counted again.
        let Ok(env) = std::fs::read(e.path().join("environ")) else {
            continue;
        };
        if !env.split(|b| *b == 0).any(|v| v == entry) {
            continue;
        }
        found += 1;
        let pid = Pid::from_raw(pid as i32);
        if let Ok(group) = getpgid(Some(pid))
            && group != own_group
        {
            let _ = killpg(group, Signal::SIGKILL);
        }
        let _ = kill(pid, Signal::SIGKILL);
    }
    found
}

/// The agent's side: the running helper and the pipe it watches.
#[derive(Debug)]
pub(crate) struct Supervisor {
    child: Option<Child>,
    /// Carries deadlines; its closing says the agent is gone.
    lifeline: Option<ChildStdin>,
}

impl Supervisor {
    /// Starts the helper `exe` for `token`.
    pub(crate) fn start(exe: &Path, token: &str) -> io::Result<Supervisor> {
        let mut child = Command::new(exe)
            .arg(SUPERVISE_FLAG)
            .arg(token)
            .env_clear()
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()?;
        let lifeline = child.stdin.take();
        if let Some(pipe) = &lifeline {
            // A helper that stopped reading must never block the agent's thread on a full pipe.
            let flags = fcntl(pipe, FcntlArg::F_GETFL)?;
            fcntl(
                pipe,
                FcntlArg::F_SETFL(OFlag::from_bits_retain(flags) | OFlag::O_NONBLOCK),
            )?;
        }
        Ok(Supervisor {
            child: Some(child),
            lifeline,
        })
    }

    /// Tells the helper to kill the runs at `deadline_ns` (see [`on_monotonic_clock`]) unless a
    /// later deadline comes first. Lost when the pipe is full, which only a helper that stopped
    /// reading leaves it.
    pub(crate) fn send_deadline(&self, deadline_ns: u64) {
        if let Some(pipe) = &self.lifeline {
            let _ = nix::unistd::write(pipe, &deadline_ns.to_le_bytes());
        }
    }

    /// Whether the helper still runs.
    pub(crate) fn alive(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }
}

impl Drop for Supervisor {
    fn drop(&mut self) {
        // The agent is gone, and its runs with it: the helper sweeps and exits. It is reaped off
        // this thread, which may be an async runtime's.
        drop(self.lifeline.take());
        if let Some(mut child) = self.child.take() {
            std::thread::spawn(move || child.wait());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deadlines_are_read_whole_whatever_the_pipe_splits_them_into() {
        let mut d = Deadlines::default();
        let (a, b) = (7u64.to_le_bytes(), 1_000_000_000_123u64.to_le_bytes());
        d.feed(&a[..3]);
        assert_eq!(d.current, None, "a deadline in part is not one");
        d.feed(&a[3..]);
        assert_eq!(d.current, Some(7));
        let both: Vec<u8> = b.iter().chain(a.iter()).copied().collect();
        d.feed(&both[..13]);
        assert_eq!(
            d.current,
            Some(1_000_000_000_123),
            "the last whole one counts"
        );
        d.feed(&both[13..]);
        assert_eq!(d.current, Some(7));
        assert!(d.partial.is_empty());
    }

    #[test]
    fn instants_map_onto_the_shared_clock_in_order() {
        let now = Instant::now();
        let (earlier, here, later) = (
            on_monotonic_clock(now - Duration::from_millis(50)),
            on_monotonic_clock(now),
            on_monotonic_clock(now + Duration::from_secs(2)),
        );
        assert!(earlier < here && here < later, "{earlier} {here} {later}");
        let span = later - here;
        assert!(
            span.abs_diff(2_000_000_000) < 500_000_000,
            "two seconds apart on both clocks, not {span} ns"
        );
        assert!(here.abs_diff(monotonic_ns()) < 1_000_000_000);
    }
}
