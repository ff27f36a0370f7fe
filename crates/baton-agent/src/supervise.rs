//! The supervisor that makes sure no CLI run outlives its worker.
//!
//! A process group ends with a signal only when someone sends one; a worker killed with SIGKILL sends
//! nothing. So an agent with a supervisor starts, once, a helper process: its own executable run
//! with [`SUPERVISE_FLAG`]. The helper holds the reading end of a pipe whose only writer is the
//! agent, and waits. When the agent's process ends, however it ends, the kernel closes the pipe; the
//! helper then kills every process carrying the agent's token in its environment ([`GUARD_VAR`],
//! which every CLI run gets and passes on to what it starts), together with its process group.
//!
//! The CLI is the agent's direct child. An earlier design put a supervisor process between the two
//! for every run; on the virtual machines profiled a process start costs about 1 ms of CPU, mostly in
//! libc's start-up, which made that supervisor a third of Baton's overhead per run.

use std::ffi::OsString;
use std::io::{self, Read};
use std::path::Path;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::Duration;

use nix::sys::signal::{SigSet, Signal, kill, killpg};
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

/// The helper's life: wait for the agent's end, then end its runs.
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
    // Nothing is ever written; the read ends when the agent's process closes the pipe by ending.
    let mut stdin = io::stdin().lock();
    let mut buf = [0u8; 64];
    loop {
        match stdin.read(&mut buf) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
    let entry = format!("{GUARD_VAR}={token}");
    // A run may be forking while it is killed: sweep until a pass finds nothing.
    for _ in 0..50 {
        if sweep(entry.as_bytes()) == 0 {
            return 0;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    eprintln!("baton supervisor: processes of token {token} keep appearing; giving up");
    1
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
    /// Held, never written: its closing is the message.
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
        Ok(Supervisor {
            child: Some(child),
            lifeline,
        })
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
