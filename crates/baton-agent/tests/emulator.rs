//! Agent runs against the emulator binary: sessions, resume, compaction, and the child's isolation.

use std::path::{Path, PathBuf};
use std::time::Duration;

use baton_agent::{Agent, AgentConfig, Outcome, RunRequest};
use tokio_util::sync::CancellationToken;

struct Fixture {
    _dir: tempfile::TempDir,
    agent: Agent,
    cwd: std::path::PathBuf,
}

fn fixture() -> Fixture {
    fixture_with(&[], None)
}

/// A scratch project and config dir; `env` is exported to the emulator (the agent clears the rest),
/// `tune` adjusts the agent's limits.
fn fixture_with(env: &[(&str, &str)], tune: Option<fn(&mut AgentConfig)>) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let cwd = dir.path().join("project");
    std::fs::create_dir_all(&cwd).unwrap();
    let config_dir = dir.path().join("claude-config");
    // The child sees only the allow-list, so the config dir is passed through a wrapper script.
    let wrapper = dir.path().join("claude");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\nexport CLAUDE_CONFIG_DIR='{}'\n{}exec '{}' \"$@\"\n",
            config_dir.display(),
            env.iter()
                .map(|(k, v)| format!("export {k}='{v}'\n"))
                .collect::<String>(),
            claude_emulator::binary().display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(
        &wrapper,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let mut config = AgentConfig {
        program: wrapper,
        wall_clock: Duration::from_secs(30),
        idle: Duration::from_secs(10),
        ..AgentConfig::default()
    };
    if let Some(tune) = tune {
        tune(&mut config);
    }
    let agent = Agent::new(config);
    Fixture {
        _dir: dir,
        agent,
        cwd,
    }
}

/// A request as the worker makes it, in Baton's default permission mode: a headless CLI in the
/// `default` mode is refused every edit.
fn request(f: &Fixture, prompt: &str, resume: Option<&str>) -> RunRequest {
    RunRequest {
        cwd: f.cwd.clone(),
        prompt: prompt.into(),
        resume: resume.map(str::to_string),
        permission_mode: Some("acceptEdits".into()),
        ..RunRequest::default()
    }
}

#[tokio::test]
async fn a_resumed_session_keeps_its_id_and_its_history() {
    let f = fixture();
    let cancel = CancellationToken::new();
    let first = f
        .agent
        .run(&request(&f, "Build a todo app in app.py", None), &cancel)
        .await
        .unwrap();
    assert_eq!(first.outcome, Outcome::Success, "{}", first.stderr_tail);
    let id = first.session_id.clone().unwrap();
    assert!(
        first.files_created.iter().any(|p| p.ends_with("app.py")),
        "{:?}",
        first.files_created
    );
    assert!(f.cwd.join("app.py").is_file());
    assert!(first.usage.input_tokens > 0 && first.num_turns > 0);

    let second = f
        .agent
        .run(&request(&f, "What was asked before?", Some(&id)), &cancel)
        .await
        .unwrap();
    assert_eq!(second.outcome, Outcome::Success);
    assert_eq!(second.session_id.as_deref(), Some(id.as_str()));
    assert!(
        second
            .result_text
            .unwrap()
            .contains("Build a todo app in app.py")
    );

    let compact = f
        .agent
        .run(&request(&f, "/compact", Some(&id)), &cancel)
        .await
        .unwrap();
    assert_eq!(compact.outcome, Outcome::Success);
    assert_eq!(compact.session_id.as_deref(), Some(id.as_str()));
}

#[tokio::test]
async fn compacting_a_fresh_session_is_a_failed_compaction() {
    let f = fixture();
    let report = f
        .agent
        .run(&request(&f, "/compact", None), &CancellationToken::new())
        .await
        .unwrap();
    assert!(
        matches!(report.outcome, Outcome::CompactionFailed { .. }),
        "{:?}",
        report.outcome
    );
}

#[tokio::test]
async fn resuming_an_unknown_session_is_classified_as_missing() {
    let f = fixture();
    let missing = "00000000-0000-4000-8000-000000000000";
    let report = f
        .agent
        .run(&request(&f, "hi", Some(missing)), &CancellationToken::new())
        .await
        .unwrap();
    assert_eq!(
        report.outcome,
        Outcome::ResumeNotFound {
            session_id: Some(missing.into())
        }
    );
    assert!(report.stderr_tail.contains("No conversation found"));
}

/// A stand-in CLI written as a shell script `body` in `dir`, and a request to run it there.
fn script_cli(dir: &Path, body: &str) -> (PathBuf, RunRequest) {
    let script = dir.join("script-claude");
    std::fs::write(&script, format!("#!/bin/sh\n{body}")).unwrap();
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let req = RunRequest {
        cwd: dir.to_path_buf(),
        prompt: "x".into(),
        ..RunRequest::default()
    };
    (script, req)
}

#[tokio::test]
async fn a_cancelled_run_is_ended_and_reaped() {
    let dir = tempfile::tempdir().unwrap();
    // Prints its init line, then a grandchild that would outlive a careless kill.
    let (script, req) = script_cli(
        dir.path(),
        "echo '{\"type\":\"system\",\"subtype\":\"init\",\"session_id\":\"s-1\"}'\nsleep 300 &\necho $! > \"$PWD/grandchild.pid\"\nwait\n",
    );
    let agent = Agent::new(AgentConfig {
        program: script,
        kill_step: Duration::from_millis(300),
        ..AgentConfig::default()
    });
    let cancel = CancellationToken::new();
    let trigger = cancel.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(500)).await;
        trigger.cancel();
    });
    let report = agent.run(&req, &cancel).await.unwrap();
    assert_eq!(report.outcome, Outcome::Cancelled);
    assert_eq!(report.session_id.as_deref(), Some("s-1"));
    let pid: i32 = std::fs::read_to_string(dir.path().join("grandchild.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let alive = stat
        .rsplit_once(')')
        .is_some_and(|(_, rest)| !rest.trim_start().starts_with(['Z', 'X']));
    assert!(!alive, "the grandchild {pid} outlived the run");
}

#[tokio::test]
async fn a_silent_child_is_ended_by_the_idle_watchdog() {
    let dir = tempfile::tempdir().unwrap();
    let (script, req) = script_cli(dir.path(), "sleep 300\n");
    let agent = Agent::new(AgentConfig {
        program: script,
        idle: Duration::from_millis(300),
        kill_step: Duration::from_millis(200),
        ..AgentConfig::default()
    });
    let report = agent.run(&req, &CancellationToken::new()).await.unwrap();
    assert!(
        matches!(report.outcome, Outcome::Hung { .. }),
        "{:?}",
        report.outcome
    );
    assert!(report.outcome.is_retryable());
}

async fn run_with_fault(fault: &str, tune: Option<fn(&mut AgentConfig)>) -> baton_agent::RunReport {
    let f = fixture_with(&[("CLAUDE_EMULATOR_FAULT", fault)], tune);
    f.agent
        .run(
            &request(&f, "Build it in main.py", None),
            &CancellationToken::new(),
        )
        .await
        .unwrap()
}

fn short_watchdogs(c: &mut AgentConfig) {
    c.idle = Duration::from_millis(500);
    c.post_result_grace = Duration::from_millis(300);
    c.kill_step = Duration::from_millis(200);
}

#[tokio::test]
async fn fault_crash_mid_stream_is_a_retryable_crash() {
    let r = run_with_fault("crash", None).await;
    assert!(
        matches!(r.outcome, Outcome::Crashed { .. }),
        "{:?}",
        r.outcome
    );
    assert!(r.outcome.is_retryable());
    assert_eq!(r.exit, Some(baton_agent::Exit::Signal(6)), "SIGABRT");
    assert!(
        r.session_id.is_some(),
        "the session id of the init line survives the crash"
    );
}

#[tokio::test]
async fn fault_hang_before_result_is_ended_by_the_idle_watchdog() {
    let r = run_with_fault("hang_before_result", Some(short_watchdogs)).await;
    assert!(matches!(r.outcome, Outcome::Hung { .. }), "{:?}", r.outcome);
    assert!(r.session_id.is_some());
}

#[tokio::test]
async fn fault_hang_after_result_keeps_the_result_and_ends_the_process() {
    let r = run_with_fault("hang_after_result", Some(short_watchdogs)).await;
    // The result line is authoritative: the turn finished and its transcript is saved.
    assert_eq!(r.outcome, Outcome::Success);
    assert!(r.killed_after_result);
}

#[tokio::test]
async fn fault_garbage_lines_are_skipped() {
    let r = run_with_fault("garbage", None).await;
    assert_eq!(r.outcome, Outcome::Success);
    assert_eq!(r.skipped_lines, 3, "three lines that are not JSON objects");
}

#[tokio::test]
async fn fault_not_logged_in_is_an_auth_failure() {
    let r = run_with_fault("not_logged_in", None).await;
    assert!(
        matches!(r.outcome, Outcome::AuthFailed { .. }),
        "{:?}",
        r.outcome
    );
    assert_eq!(r.exit, Some(baton_agent::Exit::Code(1)));
}

#[tokio::test]
async fn fault_rate_limited_carries_the_retry_after() {
    let r = run_with_fault("rate_limited", None).await;
    match r.outcome {
        Outcome::RateLimited {
            retry_after: Some(after),
            ..
        } => {
            assert!(
                after <= Duration::from_secs(60) && after >= Duration::from_secs(50),
                "{after:?}"
            )
        }
        other => panic!("expected a rate limit with a retry-after, got {other:?}"),
    }
}

#[tokio::test]
async fn fault_exit_after_success_is_still_a_success() {
    let r = run_with_fault("exit_after_success", None).await;
    assert_eq!(r.outcome, Outcome::Success);
    assert_eq!(r.exit, Some(baton_agent::Exit::Code(1)));
}

#[tokio::test]
async fn fault_max_turns_is_a_turn_limit() {
    let r = run_with_fault("max_turns", None).await;
    assert!(
        matches!(r.outcome, Outcome::TurnLimit { .. }),
        "{:?}",
        r.outcome
    );
    assert!(!r.outcome.is_retryable());
}

#[tokio::test]
async fn a_seeded_fault_rate_repeats_the_same_draws() {
    async fn draws() -> Vec<&'static str> {
        let f = fixture_with(
            &[
                ("CLAUDE_EMULATOR_FAULT", "max_turns"),
                ("CLAUDE_EMULATOR_FAULT_RATE", "0.5"),
                ("CLAUDE_EMULATOR_SEED", "7"),
            ],
            None,
        );
        let mut out = Vec::new();
        for _ in 0..12 {
            let r = f
                .agent
                .run(&request(&f, "go", None), &CancellationToken::new())
                .await
                .unwrap();
            out.push(r.outcome.label());
        }
        out
    }
    let first = draws().await;
    assert_eq!(first, draws().await, "same seed, same sequence");
    assert!(
        first.contains(&"success") && first.contains(&"turn_limit"),
        "a rate of 0.5 mixes: {first:?}"
    );
}

#[tokio::test]
async fn a_fork_gets_a_new_id_holding_the_history() {
    let f = fixture();
    let cancel = CancellationToken::new();
    let first = f
        .agent
        .run(&request(&f, "Write notes.md", None), &cancel)
        .await
        .unwrap();
    let id = first.session_id.unwrap();
    let mut fork = request(&f, "What was asked before?", Some(&id));
    fork.fork_session = true;
    let forked = f.agent.run(&fork, &cancel).await.unwrap();
    assert_eq!(forked.outcome, Outcome::Success);
    assert_ne!(forked.session_id.as_deref(), Some(id.as_str()));
    assert!(
        forked.result_text.unwrap().contains("Write notes.md"),
        "the fork holds the history"
    );
}

#[tokio::test]
async fn context_survives_a_compaction() {
    let f = fixture();
    let cancel = CancellationToken::new();
    let id = f
        .agent
        .run(&request(&f, "Create lib.rs", None), &cancel)
        .await
        .unwrap()
        .session_id
        .unwrap();
    f.agent
        .run(&request(&f, "Add tests.rs", Some(&id)), &cancel)
        .await
        .unwrap();
    let compact = f
        .agent
        .run(&request(&f, "/compact", Some(&id)), &cancel)
        .await
        .unwrap();
    assert_eq!(compact.outcome, Outcome::Success);
    let after = f
        .agent
        .run(&request(&f, "What was asked before?", Some(&id)), &cancel)
        .await
        .unwrap();
    let text = after.result_text.unwrap();
    assert!(
        text.contains("Create lib.rs") && text.contains("Add tests.rs"),
        "{text}"
    );
}

#[tokio::test]
async fn a_supervised_run_behaves_like_a_direct_one() {
    let f = fixture_with(
        &[],
        Some(|c: &mut AgentConfig| {
            c.supervisor = Some(claude_emulator::sibling_binary("baton-worker"));
        }),
    );
    let cancel = CancellationToken::new();
    let ok = f
        .agent
        .run(&request(&f, "Build app.py", None), &cancel)
        .await
        .unwrap();
    assert_eq!(ok.outcome, Outcome::Success, "{}", ok.stderr_tail);
    let missing = f
        .agent
        .run(
            &request(&f, "hi", Some("00000000-0000-4000-8000-000000000000")),
            &cancel,
        )
        .await
        .unwrap();
    assert!(
        matches!(missing.outcome, Outcome::ResumeNotFound { .. }),
        "{:?}",
        missing.outcome
    );
    assert_eq!(
        missing.exit,
        Some(baton_agent::Exit::Code(1)),
        "a supervised run reports the CLI's own exit"
    );
}

#[tokio::test]
async fn a_chatty_child_is_ended_by_the_wall_clock_watchdog() {
    let dir = tempfile::tempdir().unwrap();
    // Output keeps the idle watchdog quiet; only the wall clock can end this.
    let (script, req) = script_cli(
        dir.path(),
        "while true; do echo '{\"type\":\"system\",\"subtype\":\"status\",\"session_id\":\"s\"}'; sleep 0.05; done\n",
    );
    let agent = Agent::new(AgentConfig {
        program: script,
        wall_clock: Duration::from_millis(600),
        idle: Duration::from_secs(30),
        kill_step: Duration::from_millis(200),
        ..AgentConfig::default()
    });
    let report = agent.run(&req, &CancellationToken::new()).await.unwrap();
    match &report.outcome {
        Outcome::Hung { detail } => assert!(detail.contains("wall-clock"), "{detail}"),
        other => panic!("expected the wall-clock watchdog, got {other:?}"),
    }
}

#[tokio::test]
async fn a_supervised_cli_gets_sigint_first_when_cancelled() {
    let f = fixture_with(
        &[("CLAUDE_EMULATOR_FAULT", "hang_before_result")],
        Some(|c: &mut AgentConfig| {
            c.supervisor = Some(claude_emulator::sibling_binary("baton-worker"));
            // Were SIGINT lost on the way, the run would only end with the later signals.
            c.kill_step = Duration::from_secs(20);
        }),
    );
    let cancel = CancellationToken::new();
    let trigger = cancel.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(500)).await;
        trigger.cancel();
    });
    let report = f
        .agent
        .run(&request(&f, "Build it", None), &cancel)
        .await
        .unwrap();
    assert_eq!(report.outcome, Outcome::Cancelled);
    assert_eq!(
        report.exit,
        Some(baton_agent::Exit::Signal(2)),
        "ended by SIGINT, so the CLI could end its turn"
    );
}

#[tokio::test]
async fn the_supervisor_kills_the_runs_when_their_hold_runs_out_and_keeps_watching() {
    let f = fixture_with(
        &[
            ("CLAUDE_EMULATOR_FAULT", "hang_before_result"),
            ("CLAUDE_EMULATOR_FAULT_MATCH", "hang here"),
        ],
        Some(|c: &mut AgentConfig| {
            c.supervisor = Some(claude_emulator::sibling_binary("baton-worker"));
            // Only the supervisor can end the hanging run before this.
            c.idle = Duration::from_secs(60);
        }),
    );
    let hung = run_held_for(&f, Duration::from_millis(700), "Build it, hang here").await;
    assert_eq!(
        hung.exit,
        Some(baton_agent::Exit::Signal(9)),
        "killed by the supervisor at the deadline: {:?}",
        hung.outcome
    );
    // A renewed hold lets the next runs finish: the supervisor watches on after a sweep.
    let ok = run_held_for(&f, Duration::from_secs(60), "Build app.py").await;
    assert_eq!(ok.outcome, Outcome::Success, "{}", ok.stderr_tail);
}

/// Runs `prompt` fresh, with the agent's runs held for `hold` from now.
async fn run_held_for(f: &Fixture, hold: Duration, prompt: &str) -> baton_agent::RunReport {
    f.agent.hold_runs_until(std::time::Instant::now() + hold);
    f.agent
        .run(&request(f, prompt, None), &CancellationToken::new())
        .await
        .unwrap()
}

#[tokio::test]
async fn renewing_the_hold_in_time_keeps_a_run_alive() {
    let f = fixture_with(
        &[("CLAUDE_EMULATOR_LATENCY_MS", "1500")],
        Some(|c: &mut AgentConfig| {
            c.supervisor = Some(claude_emulator::sibling_binary("baton-worker"));
        }),
    );
    let agent = f.agent.clone();
    // Renewed every 200 ms, each time for 500 ms: the run outlives every single deadline.
    let renewer = tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_millis(200)).await;
            agent.hold_runs_until(std::time::Instant::now() + Duration::from_millis(500));
        }
    });
    let report = run_held_for(&f, Duration::from_millis(500), "Build app.py").await;
    renewer.abort();
    assert_eq!(report.outcome, Outcome::Success, "{}", report.stderr_tail);
}
