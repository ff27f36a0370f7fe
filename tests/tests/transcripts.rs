//! Sessions that survive any machine: every worker here is its own host (its own `HOME` and
//! `CLAUDE_CONFIG_DIR`), so a job can only resume a session another host made if Baton carries the
//! session's files through the ledger.

use std::time::Duration;

use baton_tests::TestEnv;
use nix::sys::signal::Signal;
use serde_json::Value;

const LIMIT: Duration = Duration::from_secs(60);

/// Enqueues a job and waits until it completes; returns its status.
fn run(env: &TestEnv, project: &str, version: &str, kind: &str, prompt: &str) -> Value {
    let build = env.enqueue(project, version, kind, prompt);
    let done = env.wait_finished(&build, LIMIT);
    assert_eq!(done["status"], "completed", "{done}\n{}", env.worker_logs());
    done
}

/// The session a project's chain ends in.
fn newest_session(env: &TestEnv, project: &str) -> String {
    let chain = env.baton_json(&["chain", project]);
    chain.as_array().unwrap().last().unwrap()["new_session_id"]
        .as_str()
        .expect("the chain ends in a session")
        .to_string()
}

/// What the agent last said in `session`, from the ledger's copy of its transcript.
fn last_answer(env: &TestEnv, session: &str) -> String {
    let shown = env.baton_json(&["session", "show", session]);
    assert_eq!(shown["last_message"]["role"], "assistant", "{shown}");
    shown["last_message"]["text"].as_str().unwrap().to_string()
}

/// The chain's sources, oldest first.
fn sources(env: &TestEnv, project: &str) -> Vec<String> {
    env.baton_json(&["chain", project])
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["source"].as_str().unwrap().to_string())
        .collect()
}

/// Lines of worker `n`'s log that restored a session, as JSON.
fn restores(env: &TestEnv, n: usize) -> Vec<Value> {
    env.worker_log(n)
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["message"] == "restored the session's files from the ledger")
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_session_follows_its_project_from_host_to_host_through_kill_9() {
    let mut env = TestEnv::new().await;
    env.start_worker(); // host-0
    run(
        &env,
        "todo",
        "v1",
        "create",
        "Create index.html for a todo app",
    );
    let session = newest_session(&env, "todo");
    env.signal_worker(0, Signal::SIGKILL);
    env.wait_worker(0);

    // Host 1 has never seen the session: Baton writes it there from the ledger.
    env.start_worker(); // host-1
    run(&env, "todo", "v2", "chat_plan", "What was asked before?");
    let answer = last_answer(&env, &session);
    assert!(
        answer.contains("Create index.html for a todo app"),
        "host 1 resumed the conversation host 0 began: {answer}"
    );
    assert_eq!(
        newest_session(&env, "todo"),
        session,
        "the same session, resumed"
    );
    let restored = restores(&env, 1);
    assert_eq!(restored.len(), 1, "{}", env.worker_log(1));
    assert_eq!(restored[0]["reason"], "missing");
    assert!(
        env.host_claude_dir("host-1")
            .join("projects")
            .read_dir()
            .unwrap()
            .any(|d| d.unwrap().path().join(format!("{session}.jsonl")).is_file()),
        "the transcript is where the CLI on host 1 looks"
    );

    // A third host gets both hosts' work.
    env.signal_worker(1, Signal::SIGKILL);
    env.wait_worker(1);
    env.start_worker(); // host-2
    run(&env, "todo", "v3", "update", "Add app.js");
    run(&env, "todo", "v4", "chat_plan", "What was asked before?");
    let answer = last_answer(&env, &session);
    for asked in [
        "Create index.html for a todo app",
        "What was asked before?",
        "Add app.js",
    ] {
        assert!(answer.contains(asked), "{asked:?} missing from: {answer}");
    }
    let chain = sources(&env, "todo");
    assert!(
        !chain.iter().any(|s| s == "resume_fallback"),
        "no conversation was lost: {chain:?}"
    );
    // And host 0, back with its old copy, gets the ledger's instead of its stale one.
    env.signal_worker(2, Signal::SIGKILL);
    env.wait_worker(2);
    env.start_worker_on("host-0", &[]); // worker 3
    run(&env, "todo", "v5", "chat_plan", "What was asked before?");
    let answer = last_answer(&env, &session);
    assert!(answer.contains("Add app.js"), "{answer}");
    let restored = restores(&env, 3);
    assert_eq!(restored.len(), 1, "{}", env.worker_log(3));
    assert_eq!(restored[0]["reason"], "stale");
    assert_eq!(
        sources(&env, "todo")
            .iter()
            .filter(|s| *s == "resume_fallback")
            .count(),
        0
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_sessions_side_files_travel_with_it() {
    let mut env = TestEnv::new().await;
    env.start_worker();
    run(
        &env,
        "report",
        "v1",
        "create",
        "Create report.md from a large output",
    );
    let session = newest_session(&env, "report");
    let shown = env.baton_json(&["session", "show", &session]);
    let paths: Vec<&str> = shown["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["path"].as_str().unwrap())
        .collect();
    assert!(
        paths
            .iter()
            .any(|p| p.starts_with(&format!("{session}/tool-results/"))),
        "{paths:?}"
    );
    env.signal_worker(0, Signal::SIGKILL);
    env.wait_worker(0);
    env.start_worker();
    run(
        &env,
        "report",
        "v2",
        "chat_plan",
        "Show the saved tool results",
    );
    let answer = last_answer(&env, &session);
    assert!(
        answer.contains("Output of turn 1: Create report.md from a large output"),
        "{answer}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_exported_session_imported_into_an_empty_ledger_resumes_with_its_history() {
    let mut from = TestEnv::new().await;
    from.start_worker();
    run(
        &from,
        "todo",
        "v1",
        "create",
        "Create index.html for a todo app",
    );
    let session = newest_session(&from, "todo");
    let archive = from.dir.path().join("session.tar.gz");
    let out = from.baton(&[
        "session",
        "export",
        &session,
        "-o",
        archive.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // To standard output, the same archive.
    let piped = from.baton(&["session", "export", &session]);
    assert!(piped.status.success());
    assert_eq!(piped.stdout, std::fs::read(&archive).unwrap());
    let missing = from.baton(&["session", "export", "no-such-session", "-o", "/dev/null"]);
    assert_eq!(missing.status.code(), Some(1));

    let mut to = TestEnv::new().await;
    let imported = to.baton_json(&[
        "session",
        "import",
        "--project",
        "moved",
        archive.to_str().unwrap(),
    ]);
    assert_eq!(imported["session_id"], session.as_str());
    assert_eq!(imported["previous_session_id"], Value::Null);
    // A second import of the same session is refused; so is a file that is no session.
    let again = to.baton(&[
        "session",
        "import",
        "--project",
        "moved",
        archive.to_str().unwrap(),
    ]);
    assert_eq!(again.status.code(), Some(2));
    let junk = to.dir.path().join("junk.jsonl");
    std::fs::write(&junk, "not a transcript\n").unwrap();
    let refused = to.baton(&[
        "session",
        "import",
        "--project",
        "moved",
        junk.to_str().unwrap(),
    ]);
    assert_eq!(refused.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("not JSON"));

    to.start_worker();
    let build = to.baton_json(&[
        "enqueue",
        "--project",
        "moved",
        "--version",
        "m1",
        "--kind",
        "chat_plan",
        "--previous-session",
        &session,
        "--prompt",
        "What was asked before?",
    ])["build_id"]
        .as_str()
        .unwrap()
        .to_string();
    let done = to.wait_finished(&build, LIMIT);
    assert_eq!(done["status"], "completed", "{done}\n{}", to.worker_logs());
    assert_eq!(done["runs"][0]["old_session_id"], session.as_str());
    let answer = last_answer(&to, &session);
    assert!(
        answer.contains("Create index.html for a todo app"),
        "{answer}"
    );
    assert_eq!(sources(&to, "moved"), ["import", "chat_plan"]);
    let shown = to.baton_json(&["session", "show", &session]);
    assert_eq!(shown["runs"], 1);
    assert_eq!(
        shown["first_message"]["text"],
        "Create index.html for a todo app"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_session_too_large_to_keep_is_recorded_and_the_next_job_starts_fresh() {
    let mut env = TestEnv::new().await;
    env.start_worker_with(&[("BATON_TRANSCRIPT_MAX_BYTES", "200")]);
    run(&env, "big", "v1", "create", "Create index.html");
    let session = newest_session(&env, "big");
    let shown = env.baton_json(&["session", "show", &session]);
    assert!(
        shown["incomplete"]
            .as_str()
            .is_some_and(|w| w.contains("BATON_TRANSCRIPT_MAX_BYTES")),
        "{shown}"
    );
    let done = run(&env, "big", "v2", "update", "Add app.js");
    assert_eq!(done["runs"][0]["old_session_id"], Value::Null, "{done}");
    let chain = env.baton_json(&["chain", "big"]);
    let update_build = chain
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["version_id"] == "v2" && t["step"] == "build")
        .unwrap();
    assert_eq!(update_build["fresh_reason"], "transcript_incomplete");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_resume_that_silently_starts_fresh_is_recorded_as_a_fallback() {
    let mut env = TestEnv::new().await;
    env.start_worker_with(&[
        ("CLAUDE_EMULATOR_FAULT", "silent_fresh"),
        ("CLAUDE_EMULATOR_FAULT_MATCH", "regression-probe"),
    ]);
    run(&env, "p", "v1", "create", "Create index.html");
    let before = newest_session(&env, "p");
    let done = run(&env, "p", "v2", "chat_plan", "regression-probe: what now?");
    let chain = env.baton_json(&["chain", "p"]);
    let links = chain.as_array().unwrap();
    let n = links.len();
    assert_eq!(links[n - 2]["source"], "resume_fallback", "{chain}");
    assert_eq!(links[n - 2]["old_session_id"], before.as_str());
    assert_eq!(links[n - 1]["source"], "chat_plan");
    assert_eq!(
        links[n - 1]["old_session_id"],
        Value::Null,
        "not a continuation"
    );
    assert_eq!(links[n - 1]["fresh_reason"], "resume_fallback");
    assert_ne!(done["runs"][0]["new_session_id"], before.as_str());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_run_cut_off_on_a_host_that_is_gone_is_run_again_from_the_last_record() {
    let mut env = TestEnv::new().await;
    env.fast_timing("2");
    env.slow_prompts("cut-off", "4000");
    env.start_worker();
    let build = env.enqueue("gone", "gone-v1", "create", "Build the cut-off app");
    env.wait_until(LIMIT, "the first run starting", || env.worker_has_child(0));
    env.wait_until(LIMIT, "the cut-off run naming its session", || {
        env.emulator_runs().is_empty()
            && std::fs::read_dir(env.host_claude_dir("host-0").join("projects"))
                .is_ok_and(|mut d| d.next().is_some())
    });
    env.signal_worker(0, Signal::SIGKILL);
    // Another host, which never had the cut-off run's transcript: the run starts over from what
    // the ledger recorded (nothing yet, for a create), and nothing is recorded as lost.
    env.start_worker();
    let done = env.wait_finished(&build, LIMIT);
    assert_eq!(done["status"], "completed", "{done}\n{}", env.worker_logs());
    assert_eq!(done["runs"][0]["old_session_id"], Value::Null);
    let chain = env.baton_json(&["chain", "gone"]);
    assert!(
        chain
            .as_array()
            .unwrap()
            .iter()
            .all(|t| t["source"] != "resume_fallback"),
        "{chain}"
    );
    env.assert_in_sync();
}
