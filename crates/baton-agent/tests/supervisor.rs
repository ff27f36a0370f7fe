//! The supervisor: when the agent's end of its pipe closes, every process carrying the agent's token
//! dies, with its process group, and nothing else does.

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use baton_agent::supervise::{GUARD_VAR, SUPERVISE_FLAG};

fn alive(pid: i32) -> bool {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    stat.rsplit_once(')')
        .is_some_and(|(_, rest)| !rest.trim_start().starts_with(['Z', 'X']))
}

fn read_pid(path: &std::path::Path) -> i32 {
    let start = Instant::now();
    loop {
        if let Ok(text) = std::fs::read_to_string(path)
            && let Ok(pid) = text.trim().parse()
        {
            return pid;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "{path:?} never written"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn closing_the_lifeline_kills_the_marked_processes_and_their_groups() {
    let dir = tempfile::tempdir().unwrap();
    let token = format!("test-{}", std::process::id());
    let mut supervisor = Command::new(claude_emulator::sibling_binary("baton-worker"))
        .args([SUPERVISE_FLAG, &token])
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();

    // A marked run in its own group, with a child that stays in the group but drops the mark, and
    // one that leaves the group (setsid) but keeps the mark.
    let script = format!(
        "env -u {GUARD_VAR} sleep 300 & echo $! > unmarked-in-group.pid; \
         setsid sleep 300 & echo $! > marked-elsewhere.pid; \
         echo $$ > run.pid; wait"
    );
    let mut run = Command::new("sh");
    run.args(["-c", &script])
        .current_dir(dir.path())
        .env(GUARD_VAR, &token);
    std::os::unix::process::CommandExt::process_group(&mut run, 0);
    let mut run = run.spawn().unwrap();
    // Unrelated: neither marked nor in the run's group.
    let mut bystander = Command::new("sleep").arg("300").spawn().unwrap();

    let pids = [
        read_pid(&dir.path().join("run.pid")),
        read_pid(&dir.path().join("unmarked-in-group.pid")),
        read_pid(&dir.path().join("marked-elsewhere.pid")),
    ];
    std::thread::sleep(Duration::from_millis(100));
    assert!(
        supervisor.try_wait().unwrap().is_none(),
        "the supervisor waits while the pipe is open"
    );
    assert!(pids.iter().all(|p| alive(*p)));

    // What the kernel does when the agent's process ends.
    let mut lifeline = supervisor.stdin.take().unwrap();
    lifeline.flush().unwrap();
    drop(lifeline);
    let status = supervisor.wait().unwrap();
    assert!(status.success(), "{status:?}");
    let _ = run.wait();
    let start = Instant::now();
    while pids.iter().any(|p| alive(*p)) && start.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(20));
    }
    for pid in pids {
        assert!(!alive(pid), "{pid} outlived the agent");
    }
    assert!(
        bystander.try_wait().unwrap().is_none(),
        "an unmarked process outside the group is left alone"
    );
    let _ = bystander.kill();
    let _ = bystander.wait();
}
