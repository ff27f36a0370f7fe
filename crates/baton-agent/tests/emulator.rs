//! Agent runs against the emulator binary: sessions, resume, compaction, and the child's isolation.

use std::time::Duration;

use baton_agent::{Agent, AgentConfig, Outcome, RunRequest};
use tokio_util::sync::CancellationToken;

struct Fixture {
    _dir: tempfile::TempDir,
    agent: Agent,
    cwd: std::path::PathBuf,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let cwd = dir.path().join("project");
    std::fs::create_dir_all(&cwd).unwrap();
    let config_dir = dir.path().join("claude-config");
    // The child sees only the allow-list, so the config dir is passed through a wrapper script.
    let wrapper = dir.path().join("claude");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\nexport CLAUDE_CONFIG_DIR='{}'\nenv > \"$PWD/.child-env\"\nexec '{}' \"$@\"\n",
            config_dir.display(),
            claude_emulator::binary().display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(
        &wrapper,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let agent = Agent::new(AgentConfig {
        program: wrapper,
        wall_clock: Duration::from_secs(30),
        idle: Duration::from_secs(10),
        ..AgentConfig::default()
    });
    Fixture {
        _dir: dir,
        agent,
        cwd,
    }
}

fn request(f: &Fixture, prompt: &str, resume: Option<&str>) -> RunRequest {
    RunRequest {
        cwd: f.cwd.clone(),
        prompt: prompt.into(),
        resume: resume.map(str::to_string),
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

#[tokio::test]
async fn a_cancelled_run_is_ended_and_reaped() {
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("slow-claude");
    // Prints its init line, then a grandchild that would outlive a careless kill.
    std::fs::write(
        &script,
        "#!/bin/sh\necho '{\"type\":\"system\",\"subtype\":\"init\",\"session_id\":\"s-1\"}'\nsleep 300 &\necho $! > \"$PWD/grandchild.pid\"\nwait\n",
    )
    .unwrap();
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let agent = Agent::new(AgentConfig {
        program: script,
        kill_step: Duration::from_millis(300),
        ..AgentConfig::default()
    });
    let cancel = CancellationToken::new();
    let req = RunRequest {
        cwd: dir.path().to_path_buf(),
        prompt: "x".into(),
        ..RunRequest::default()
    };
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
    let script = dir.path().join("mute-claude");
    std::fs::write(&script, "#!/bin/sh\nsleep 300\n").unwrap();
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let agent = Agent::new(AgentConfig {
        program: script,
        idle: Duration::from_millis(300),
        kill_step: Duration::from_millis(200),
        ..AgentConfig::default()
    });
    let req = RunRequest {
        cwd: dir.path().to_path_buf(),
        prompt: "x".into(),
        ..RunRequest::default()
    };
    let report = agent.run(&req, &CancellationToken::new()).await.unwrap();
    assert!(
        matches!(report.outcome, Outcome::Hung { .. }),
        "{:?}",
        report.outcome
    );
    assert!(report.outcome.is_retryable());
}
