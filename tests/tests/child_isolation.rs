//! The CLI child never outlives its worker: a worker killed with SIGKILL takes its running `claude`
//! (and everything that one started) with it.

use std::time::{Duration, Instant};

use baton_tests::{TestEnv, command_line, live_process, process_ids};

/// Live (not zombie) processes in group `group`.
fn group_members(group: i32) -> Vec<i32> {
    process_ids()
        .filter(|&pid| live_process(pid).is_some_and(|p| p.group == group))
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

    // The prompt (and its marker) reaches the CLI on stdin, so the CLI is found as the worker's
    // child that runs the emulator.
    let cli_of_worker = || {
        process_ids().find(|&pid| {
            live_process(pid).is_some_and(|p| p.parent == worker as i32)
                && command_line(pid).contains("claude-emulator")
        })
    };
    wait_until(Duration::from_secs(30), "the CLI run starting", || {
        cli_of_worker().is_some()
    });
    let cli = cli_of_worker().expect("found above");
    let group = live_process(cli).expect("the CLI runs").group;
    assert_eq!(group, cli, "the CLI leads a process group of its own");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(worker as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    wait_until(
        Duration::from_secs(10),
        "the CLI ending with the worker",
        || live_process(cli).is_none(),
    );
    wait_until(
        Duration::from_secs(10),
        "every process of the run's group ending with the worker",
        || group_members(group).is_empty(),
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_variable_that_is_not_utf8_passes_to_the_cli_without_stopping_the_worker() {
    use std::os::unix::ffi::OsStrExt;
    let env = TestEnv::new().await;
    // LANG is on the default allow-list, so the worker reads it and hands it to every run.
    let mut worker = env
        .command("baton-worker")
        .env("LANG", std::ffi::OsStr::from_bytes(b"C.\xff\xfe"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start baton-worker");
    let build = env.enqueue("latin1-env", "v1", "create", "Build it");
    let status = env.wait_finished(&build, Duration::from_secs(30));
    let _ = worker.kill();
    let _ = worker.wait();
    assert_eq!(status["status"], "completed", "{status}");
}
