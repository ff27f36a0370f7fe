//! The CLI child never outlives its worker: a worker killed with SIGKILL takes its running `claude`
//! (and everything that one started) with it.

use std::time::{Duration, Instant};

use baton_tests::TestEnv;

/// Pids of live (not zombie) processes whose command line contains `needle`.
fn processes_with(needle: &str) -> Vec<i32> {
    let mut pids = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().filter_map(Result::ok) {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        if !String::from_utf8_lossy(&cmdline).contains(needle) {
            continue;
        }
        let stat = std::fs::read_to_string(entry.path().join("stat")).unwrap_or_default();
        let live = stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| !rest.trim_start().starts_with(['Z', 'X']));
        if live {
            pids.push(pid);
        }
    }
    pids
}

/// The process group of a live process.
fn group_of(pid: i32) -> Option<i32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, rest) = stat.rsplit_once(')')?;
    // After the command: state, parent, group.
    rest.split_whitespace().nth(2)?.parse().ok()
}

/// Live (not zombie) processes in group `pgid`.
fn group_members(pgid: i32) -> Vec<i32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_string_lossy().parse::<i32>().ok())
        .filter(|&pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            stat.rsplit_once(')').is_some_and(|(_, rest)| {
                let mut f = rest.split_whitespace();
                let state = f.next().unwrap_or("Z");
                !state.starts_with(['Z', 'X'])
                    && f.nth(1).and_then(|g| g.parse().ok()) == Some(pgid)
            })
        })
        .collect()
}

fn wait_until(limit: Duration, what: &str, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(
            start.elapsed() < limit,
            "{what} did not happen within {limit:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_killed_worker_takes_its_cli_child_with_it() {
    let mut env = TestEnv::new().await;
    let marker = format!("hang-marker-{}", uuid::Uuid::new_v4().simple());
    env.worker_env
        .push(("CLAUDE_EMULATOR_FAULT".into(), "hang_before_result".into()));
    env.worker_env
        .push(("CLAUDE_EMULATOR_FAULT_MATCH".into(), marker.clone()));
    let worker = env.start_worker();
    env.enqueue(
        "orphan-check",
        "v1",
        "create",
        &format!("Build it ({marker})"),
    );

    wait_until(Duration::from_secs(30), "the CLI run starting", || {
        !processes_with(&marker).is_empty()
    });
    let cli = processes_with(&marker)[0];
    let group = group_of(cli).expect("the CLI's process group");
    assert_eq!(group, cli, "the CLI leads a process group of its own");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(worker as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    wait_until(
        Duration::from_secs(10),
        "the CLI ending with the worker",
        || processes_with(&marker).is_empty(),
    );
    wait_until(
        Duration::from_secs(10),
        "every process of the run's group ending with the worker",
        || group_members(group).is_empty(),
    );
}
