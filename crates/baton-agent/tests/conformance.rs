//! One conformance suite, the same assertions for the emulator and — when `BATON_REAL_CLAUDE` names
//! a real `claude` — for the real CLI (run without credentials, so only its error paths). `just
//! conformance-real` installs the real CLI into a scratch folder and runs this against it.

use std::path::{Path, PathBuf};
use std::process::Command;

use baton_agent::{Agent, AgentConfig, Exit, Outcome, RunRequest, Stop, StreamState, classify};
use tokio_util::sync::CancellationToken;

/// A CLI under test: a name for messages and a wrapper script that runs it in a scratch home.
struct Target {
    name: &'static str,
    wrapper: PathBuf,
    project: PathBuf,
    /// The CLI's config folder on this target's host.
    config_dir: PathBuf,
    program: PathBuf,
    env: Vec<(String, String)>,
    _dir: tempfile::TempDir,
}

impl Target {
    /// The same CLI on another host (a scratch home and config folder of its own), working in
    /// `project`.
    fn on_another_host(&self, project: &Path) -> Target {
        let env: Vec<(&str, &str)> = self
            .env
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let mut t = target(self.name, &self.program, &env);
        t.project = project.to_path_buf();
        t
    }
}

/// The emulator, and the real CLI when `BATON_REAL_CLAUDE` is set.
fn targets() -> Vec<Target> {
    let mut out = vec![target(
        "emulator",
        &claude_emulator::binary(),
        &[
            ("CLAUDE_EMULATOR_FAULT", "not_logged_in"),
            ("CLAUDE_EMULATOR_FAULT_MATCH", "not-logged-in-probe"),
        ],
    )];
    if let Some(real) = std::env::var_os("BATON_REAL_CLAUDE").filter(|v| !v.is_empty()) {
        let real = PathBuf::from(real);
        assert!(
            real.is_file(),
            "BATON_REAL_CLAUDE={} does not exist",
            real.display()
        );
        out.push(target("real CLI", &real, &[]));
    }
    out
}

/// A wrapper with a scratch HOME and CLAUDE_CONFIG_DIR and no credentials, so a real CLI can only
/// show its error paths and never spends anything.
fn target(name: &'static str, program: &Path, env: &[(&str, &str)]) -> Target {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    let project = dir.path().join("project");
    std::fs::create_dir_all(&home).unwrap();
    std::fs::create_dir_all(&project).unwrap();
    let exports: String = env
        .iter()
        .map(|(k, v)| format!("export {k}='{v}'\n"))
        .collect();
    let wrapper = dir.path().join("claude");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\nunset ANTHROPIC_API_KEY ANTHROPIC_AUTH_TOKEN CLAUDE_CODE_OAUTH_TOKEN\nexport HOME='{home}'\nexport CLAUDE_CONFIG_DIR='{home}/.claude'\n{exports}exec '{program}' \"$@\"\n",
            home = home.display(),
            program = program.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(
        &wrapper,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    Target {
        name,
        wrapper,
        project,
        config_dir: home.join(".claude"),
        program: program.to_path_buf(),
        env: env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        _dir: dir,
    }
}

/// Runs the target with raw arguments and classifies what it printed, as the agent would.
fn raw(t: &Target, args: &[&str]) -> (Outcome, i32, String) {
    // The wrapper was just written; a fork in another test thread may still hold it open (ETXTBSY).
    let out = loop {
        match Command::new(&t.wrapper)
            .args(args)
            .current_dir(&t.project)
            .output()
        {
            Err(e) if e.raw_os_error() == Some(26) => {
                std::thread::sleep(std::time::Duration::from_millis(25))
            }
            other => break other.unwrap(),
        }
    };
    let mut state = StreamState::default();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        state.feed(line);
    }
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let code = out.status.code().unwrap_or(-1);
    (
        classify(
            &state,
            Some(Exit::Code(code)),
            &stderr,
            Stop::Natural,
            false,
            0,
        ),
        code,
        stderr,
    )
}

/// Runs the target with arguments it must refuse: asserts exit code 1 and that the agent classifies
/// it as an invalid invocation, and returns what it printed on stderr.
fn refused(t: &Target, args: &[&str]) -> String {
    let (outcome, code, stderr) = raw(t, args);
    assert_eq!(code, 1, "{}", t.name);
    assert!(
        matches!(outcome, Outcome::InvalidInvocation { .. }),
        "{}: {outcome:?}",
        t.name
    );
    stderr
}

async fn agent_run(t: &Target, prompt: &str, resume: Option<&str>) -> baton_agent::RunReport {
    let agent = Agent::new(AgentConfig {
        program: t.wrapper.clone(),
        ..AgentConfig::default()
    });
    let req = RunRequest {
        cwd: t.project.clone(),
        prompt: prompt.into(),
        resume: resume.map(str::to_string),
        ..RunRequest::default()
    };
    agent.run(&req, &CancellationToken::new()).await.unwrap()
}

#[tokio::test]
async fn resuming_a_missing_session_is_resume_not_found() {
    let missing = "00000000-0000-4000-8000-000000000000";
    for t in targets() {
        let r = agent_run(&t, "hi", Some(missing)).await;
        assert_eq!(
            r.outcome,
            Outcome::ResumeNotFound {
                session_id: Some(missing.into())
            },
            "{}",
            t.name
        );
        assert_eq!(r.exit, Some(Exit::Code(1)), "{}", t.name);
        assert!(
            r.stderr_tail
                .contains(&format!("No conversation found with session ID: {missing}")),
            "{}: {}",
            t.name,
            r.stderr_tail
        );
    }
}

#[tokio::test]
async fn a_resume_value_that_is_no_session_id_is_resume_not_found() {
    for t in targets() {
        let r = agent_run(&t, "hi", Some("not-a-session")).await;
        assert_eq!(
            r.outcome,
            Outcome::ResumeNotFound {
                session_id: Some("not-a-session".into())
            },
            "{}: {}",
            t.name,
            r.stderr_tail
        );
        assert!(
            r.stderr_tail
                .contains("--resume requires a valid session ID or session title"),
            "{}",
            t.name
        );
    }
}

#[tokio::test]
async fn a_session_id_that_is_no_uuid_is_refused() {
    for t in targets() {
        let stderr = refused(
            &t,
            &[
                "-p",
                "hi",
                "--session-id",
                "nope",
                "--output-format",
                "stream-json",
                "--verbose",
            ],
        );
        assert_eq!(
            stderr.trim(),
            "Error: Invalid session ID. Must be a valid UUID.",
            "{}",
            t.name
        );
    }
}

#[tokio::test]
async fn stream_json_without_verbose_is_refused() {
    for t in targets() {
        let stderr = refused(&t, &["-p", "hi", "--output-format", "stream-json"]);
        assert_eq!(
            stderr.trim(),
            "Error: When using --print, --output-format=stream-json requires --verbose",
            "{}",
            t.name
        );
    }
}

#[tokio::test]
async fn session_id_with_resume_needs_fork_session() {
    for t in targets() {
        let stderr = refused(
            &t,
            &[
                "-p",
                "hi",
                "--session-id",
                "22222222-2222-4222-8222-222222222222",
                "--resume=33333333-3333-4333-8333-333333333333",
                "--output-format",
                "stream-json",
                "--verbose",
            ],
        );
        // 2.1.329 says "... also needs --fork-session."; 2.1.197 says "... if --fork-session is also specified."
        assert!(
            stderr.starts_with("Error: --session-id") && stderr.contains("--fork-session"),
            "{}: {stderr}",
            t.name
        );
    }
}

#[tokio::test]
async fn unknown_flags_are_refused() {
    for t in targets() {
        let stderr = refused(&t, &["-p", "hi", "--frobnicate"]);
        assert_eq!(
            stderr.trim(),
            "error: unknown option '--frobnicate'",
            "{}",
            t.name
        );
    }
}

#[tokio::test]
async fn not_logged_in_is_an_auth_failure_and_keeps_the_session() {
    for t in targets() {
        // The emulator is told to fail this prompt; the real CLI has no credentials.
        let r = agent_run(&t, "not-logged-in-probe", None).await;
        assert!(
            matches!(r.outcome, Outcome::AuthFailed { .. }),
            "{}: {:?}",
            t.name,
            r.outcome
        );
        assert_eq!(r.exit, Some(Exit::Code(1)), "{}", t.name);
        let id = r.session_id.clone().expect("init names the session");
        // Both keep the failed turn's transcript, so the session can be resumed, under the same id.
        let again = agent_run(&t, "not-logged-in-probe again", Some(&id)).await;
        assert!(
            matches!(again.outcome, Outcome::AuthFailed { .. }),
            "{}: {:?}",
            t.name,
            again.outcome
        );
        assert_eq!(
            again.session_id.as_deref(),
            Some(id.as_str()),
            "{}: the id is kept on resume",
            t.name
        );
    }
}

/// Where a session lives, checked against the real CLI: Baton restores a session at the path this
/// rule gives, so the rule must be the CLI's, long paths included.
#[tokio::test]
async fn a_sessions_folder_is_named_by_the_clis_rule_even_for_long_paths() {
    for t in targets() {
        let long = t.project.join("a".repeat(120)).join("b".repeat(100));
        std::fs::create_dir_all(&long).unwrap();
        for project in [t.project.clone(), long] {
            let here = t.on_another_host(&project);
            let r = agent_run(&here, "not-logged-in-probe", None).await;
            let id = r.session_id.expect("init names the session");
            let cwd = project.canonicalize().unwrap();
            let folder = baton_transcript::project_folder(&here.config_dir, &cwd);
            assert!(
                folder.join(format!("{id}.jsonl")).is_file(),
                "{}: no transcript at {}; the config folder holds {:?}",
                t.name,
                folder.display(),
                std::fs::read_dir(here.config_dir.join("projects")).map(|d| d
                    .filter_map(Result::ok)
                    .map(|e| e.file_name())
                    .collect::<Vec<_>>())
            );
        }
    }
}

/// A session moves between hosts as Baton moves it: unknown on a host that never ran it, found
/// once its files are written there at the path the rule gives (the real CLI then fails only at
/// login, under the same id).
#[tokio::test]
async fn a_session_restored_on_another_host_is_found_there() {
    for t in targets() {
        let first = agent_run(&t, "not-logged-in-probe", None).await;
        let id = first.session_id.expect("init names the session");
        let cwd = t.project.canonicalize().unwrap();
        let folder = baton_transcript::project_folder(&t.config_dir, &cwd);
        let files = baton_transcript::read_session(&folder, &id)
            .unwrap()
            .expect("the failed run left its transcript");

        let other = t.on_another_host(&t.project);
        let before = agent_run(&other, "not-logged-in-probe again", Some(&id)).await;
        assert!(
            matches!(before.outcome, Outcome::ResumeNotFound { .. }),
            "{}: {:?}",
            t.name,
            before.outcome
        );
        let there = baton_transcript::project_folder(&other.config_dir, &cwd);
        for f in &files {
            baton_transcript::write_file(&there, &id, &f.path, &f.bytes).unwrap();
        }
        let after = agent_run(&other, "not-logged-in-probe again", Some(&id)).await;
        assert!(
            matches!(after.outcome, Outcome::AuthFailed { .. }),
            "{}: {:?} {}",
            t.name,
            after.outcome,
            after.stderr_tail
        );
        assert_eq!(after.session_id.as_deref(), Some(id.as_str()), "{}", t.name);
    }
}

/// The agent gives the prompt on standard input, never in the arguments: the CLI reads it there
/// (a run gets as far as the login), and with nothing there it says so.
#[tokio::test]
async fn the_prompt_is_read_from_standard_input() {
    for t in targets() {
        let r = agent_run(&t, "not-logged-in-probe", None).await;
        assert!(
            matches!(r.outcome, Outcome::AuthFailed { .. }),
            "{}: {:?} {}",
            t.name,
            r.outcome,
            r.stderr_tail
        );
        let empty = agent_run(&t, "", None).await;
        assert!(
            matches!(empty.outcome, Outcome::InvalidInvocation { .. }),
            "{}: {:?}",
            t.name,
            empty.outcome
        );
        assert!(
            empty
                .stderr_tail
                .contains("Input must be provided either through stdin or as a prompt argument"),
            "{}: {}",
            t.name,
            empty.stderr_tail
        );
    }
}

/// Every flag Baton passes, in the form it passes them, is one the CLI takes: a run with all of
/// them gets as far as the login.
#[tokio::test]
async fn every_flag_baton_passes_is_accepted() {
    for t in targets() {
        let agent = Agent::new(AgentConfig {
            program: t.wrapper.clone(),
            ..AgentConfig::default()
        });
        let req = RunRequest {
            cwd: t.project.clone(),
            prompt: "not-logged-in-probe".into(),
            permission_mode: Some("acceptEdits".into()),
            model: Some("sonnet".into()),
            fallback_model: Some("haiku".into()),
            max_turns: Some(3),
            max_budget_usd: Some(0.5),
            allowed_tools: vec!["Read".into(), "Write".into(), "Bash(git status)".into()],
            disallowed_tools: vec!["WebFetch".into()],
            append_system_prompt: Some("-Be brief.".into()),
            mcp_config: Some(r#"{"mcpServers":{}}"#.into()),
            ..RunRequest::default()
        };
        let r = agent.run(&req, &CancellationToken::new()).await.unwrap();
        assert!(
            matches!(r.outcome, Outcome::AuthFailed { .. }),
            "{}: {:?} {}",
            t.name,
            r.outcome,
            r.stderr_tail
        );
    }
}

/// The CLI refuses to bypass permissions as root, before any output; Baton says so up front.
#[tokio::test]
async fn bypassing_permissions_as_root_is_refused() {
    if !nix::unistd::geteuid().is_root() {
        return;
    }
    for t in targets() {
        let stderr = refused(
            &t,
            &[
                "-p",
                "hi",
                "--output-format",
                "stream-json",
                "--verbose",
                "--permission-mode",
                "bypassPermissions",
            ],
        );
        assert!(
            stderr.contains(baton_agent::BYPASS_AS_ROOT),
            "{}: {stderr}",
            t.name
        );
    }
}
