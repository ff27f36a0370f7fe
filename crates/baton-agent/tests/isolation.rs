//! The child's environment is cleared to the allow-list. Its own test binary: it sets variables of
//! this process, which is only sound while no other thread reads the environment.

use baton_agent::{Agent, AgentConfig, Outcome, RunRequest};
use tokio_util::sync::CancellationToken;

#[test]
#[allow(unsafe_code)]
fn the_child_never_sees_the_workers_secrets() {
    // SAFETY: this binary has this one test and sets the variables before any other thread starts.
    unsafe {
        std::env::set_var("DATABASE_URL", "postgres://worker:secret@db/baton");
        std::env::set_var("REDIS_URL", "redis://:secret@cache");
        std::env::set_var("BATON_STREAM", "baton:builds");
        std::env::set_var("BATON_AGENT_TEST_EXTRA", "allowed");
        std::env::set_var("UNLISTED_VARIABLE", "dropped");
    }
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("env-claude");
    std::fs::write(
        &script,
        "#!/bin/sh\nenv > \"$PWD/child.env\"\necho '{\"type\":\"result\",\"subtype\":\"success\",\"is_error\":false,\"result\":\"ok\",\"session_id\":\"s\"}'\n",
    )
    .unwrap();
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let mut config = AgentConfig {
        program: script,
        ..AgentConfig::default()
    };
    // An operator may add names, but never the denied ones.
    config.env_allow.extend([
        "BATON_AGENT_TEST_EXTRA".to_string(),
        "DATABASE_URL".to_string(),
    ]);
    let agent = Agent::new(config);
    let req = RunRequest {
        cwd: dir.path().to_path_buf(),
        prompt: "x".into(),
        ..RunRequest::default()
    };
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let report = runtime
        .block_on(agent.run(&req, &CancellationToken::new()))
        .unwrap();
    assert_eq!(report.outcome, Outcome::Success);
    let env = std::fs::read_to_string(dir.path().join("child.env")).unwrap();
    for secret in [
        "DATABASE_URL",
        "REDIS_URL",
        "BATON_STREAM",
        "BATON_AGENT_TEST_EXTRA",
        "UNLISTED_VARIABLE",
    ] {
        assert!(
            !env.contains(&format!("{secret}=")),
            "{secret} reached the child:\n{env}"
        );
    }
    assert!(env.contains("PATH="), "PATH is allowed:\n{env}");
}
