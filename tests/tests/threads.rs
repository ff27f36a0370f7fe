//! Threads: chat conversations beside a project's main session, forked from it or from each
//! other, each with its own chain, across hosts; and the mapping operations over the CLI and HTTP.

use std::time::Duration;

use baton_tests::TestEnv;
use nix::sys::signal::Signal;
use serde_json::{Value, json};

const LIMIT: Duration = Duration::from_secs(60);

/// Enqueues a job with `baton enqueue ... --json` and these arguments; returns its build id.
fn enqueue(env: &TestEnv, args: &[&str]) -> String {
    let mut all = vec!["enqueue"];
    all.extend_from_slice(args);
    env.baton_json(&all)["build_id"]
        .as_str()
        .expect("build id")
        .to_string()
}

/// Runs a chat in `thread` of project `app` and waits for it; returns its final status.
fn chat(env: &TestEnv, thread: &str, extra: &[&str], prompt: &str) -> Value {
    let mut args = vec![
        "--project",
        "app",
        "--kind",
        "chat",
        "--thread",
        thread,
        "--prompt",
        prompt,
    ];
    args.extend_from_slice(extra);
    let build = enqueue(env, &args);
    env.wait_finished(&build, LIMIT)
}

fn completed(env: &TestEnv, done: &Value) -> String {
    assert_eq!(done["status"], "completed", "{done}\n{}", env.worker_logs());
    done["output"].as_str().unwrap_or_default().to_string()
}

/// Runs a main-session job of project `app` to completion; returns its answer.
fn main_job(env: &TestEnv, version: &str, kind: &str, prompt: &str) -> String {
    let build = env.enqueue("app", version, kind, prompt);
    let done = env.wait_finished(&build, LIMIT);
    completed(env, &done)
}

fn thread_json(env: &TestEnv, thread: &str) -> Value {
    env.baton_json(&["thread", "show", "--project", "app", thread])
}

#[tokio::test(flavor = "multi_thread")]
async fn a_forked_thread_keeps_mains_history_on_another_host_and_main_never_sees_it() {
    let mut env = TestEnv::new().await;
    env.start_worker(); // host-0
    main_job(&env, "v1", "create", "Create index.html for a todo app");
    let main_session = env.baton_json(&["chain", "app"]).as_array().unwrap()[0]["new_session_id"]
        .as_str()
        .unwrap()
        .to_string();
    // The fork runs on a host that never saw main's session: Baton carries it there.
    env.signal_worker(0, Signal::SIGKILL);
    env.wait_worker(0);
    env.start_worker(); // host-1

    let answer = completed(
        &env,
        &chat(
            &env,
            "t1",
            &["--fork-from", "main"],
            "What was asked before?",
        ),
    );
    assert!(
        answer.contains("Create index.html for a todo app"),
        "the fork remembers main's history: {answer}"
    );
    let t1 = thread_json(&env, "t1");
    let chain = t1["chain"].as_array().unwrap();
    assert_eq!(chain[0]["source"], "fork", "{t1}");
    assert_eq!(chain[0]["old_session_id"], main_session.as_str(), "{t1}");
    assert_ne!(
        chain[0]["new_session_id"],
        main_session.as_str(),
        "a fork is a new session"
    );
    assert_eq!(t1["user_id"], "local");

    completed(&env, &chat(&env, "t1", &[], "Remember the word kumquat"));
    let answer = completed(&env, &chat(&env, "t1", &[], "What was asked before?"));
    assert!(
        answer.contains("kumquat"),
        "the thread resumes itself: {answer}"
    );

    // Main never sees the thread's prompts, and its session is its own.
    let answer = main_job(&env, "v2", "chat_plan", "What was asked before?");
    assert!(!answer.contains("kumquat"), "main saw the thread: {answer}");
    assert!(answer.contains("Create index.html"), "{answer}");
    let project = env.baton_json(&["chain", "app"]);
    assert!(
        project
            .as_array()
            .unwrap()
            .iter()
            .all(|t| t["source"] != "chat" && t["source"] != "fork"),
        "no thread run is in main's chain: {project}"
    );

    // Another user can neither talk in the thread nor fork it.
    for extra in [
        &["--user", "mallory"][..],
        &["--user", "mallory", "--fork-from", "t1"],
    ] {
        let thread = if extra.len() > 2 { "m1" } else { "t1" };
        let done = chat(&env, thread, extra, "What was asked before?");
        assert_eq!(done["status"], "failed", "{done}");
        assert!(
            done["last_error"]
                .as_str()
                .unwrap_or_default()
                .contains("another user"),
            "{done}"
        );
    }
    // Nor can a fork name something the project does not have.
    let done = chat(&env, "t9", &["--fork-from", "nope"], "hello");
    assert_eq!(done["status"], "failed", "{done}");
    assert!(
        done["last_error"]
            .as_str()
            .unwrap_or_default()
            .contains("fork_from"),
        "{done}"
    );

    // The mapping operations: list, fork, show, delete.
    let listed = env.baton_json(&["thread", "list", "--user", "local", "--project", "app"]);
    let t1 = listed
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["thread_id"] == "t1")
        .unwrap_or_else(|| panic!("t1 listed: {listed}"));
    assert_eq!(t1["runs"], 3, "{t1}");
    assert!(
        t1["last_answer"]
            .as_str()
            .unwrap()
            .starts_with("Earlier prompts"),
        "{t1}"
    );
    let t1_session = t1["session_id"].as_str().unwrap().to_string();

    let forked = env.baton_json(&["thread", "fork", "--project", "app", "t1", "--to", "t2"]);
    assert_eq!(forked["fork_session_id"], t1_session.as_str(), "{forked}");
    let answer = completed(&env, &chat(&env, "t2", &[], "What was asked before?"));
    assert!(answer.contains("kumquat"), "t2 branches from t1: {answer}");
    let again = env.baton(&["thread", "fork", "--project", "app", "t1", "--to", "t2"]);
    assert_eq!(again.status.code(), Some(2), "t2 exists already");

    let main_before = env.baton_json(&["chain", "app"]);
    let gone = env.baton(&["thread", "delete", "--project", "app", "t1"]);
    assert!(
        gone.status.success(),
        "{}",
        String::from_utf8_lossy(&gone.stderr)
    );
    assert_eq!(
        env.baton(&["thread", "show", "--project", "app", "t1"])
            .status
            .code(),
        Some(2),
        "t1 is gone"
    );
    assert_eq!(
        env.baton_json(&["chain", "app"]),
        main_before,
        "main untouched"
    );
    let mut db = env.db().await;
    let stored: i64 =
        sqlx::query_scalar("SELECT count(*) FROM session_transcripts WHERE session_id = $1")
            .bind(&t1_session)
            .fetch_one(&mut db)
            .await
            .unwrap();
    assert_eq!(stored, 0, "t1's transcript went with it");
    let answer = completed(&env, &chat(&env, "t2", &[], "What was asked before?"));
    assert!(
        answer.contains("kumquat"),
        "t2 keeps its own copy: {answer}"
    );
    env.assert_in_sync();
}

#[tokio::test(flavor = "multi_thread")]
async fn threads_are_listed_shown_forked_and_deleted_over_http() {
    let mut env = TestEnv::new().await;
    env.start_worker();
    let api = env.start_api(&["tok"], &[]);
    let made = api.post(
        "/v1/builds",
        &json!({"kind": "chat", "project_id": "app", "user_id": "ann", "thread_id": "h1",
                "prompt": "Remember the word quince"}),
    );
    assert_eq!(made.status, 201, "{}", made.body);
    let build = made.json()["build_id"].as_str().unwrap().to_string();
    completed(&env, &env.wait_finished(&build, LIMIT));

    let listed = api.get("/v1/threads?user_id=ann").json();
    assert_eq!(listed.as_array().unwrap().len(), 1, "{listed}");
    assert_eq!(listed[0]["thread_id"], "h1");
    assert_eq!(api.get("/v1/threads?user_id=bob").json(), json!([]));
    assert_eq!(api.get("/v1/threads").status, 400, "user_id is required");

    let shown = api.get("/v1/projects/app/threads/h1");
    assert_eq!(shown.status, 200);
    assert_eq!(shown.json()["chain"].as_array().unwrap().len(), 1);
    assert_eq!(api.get("/v1/projects/app/threads/nope").status, 404);

    let fork = api.post("/v1/projects/app/threads/h1/fork", &json!({"to": "h2"}));
    assert_eq!(fork.status, 201, "{}", fork.body);
    assert_eq!(fork.json()["user_id"], "ann");
    let again = api.post("/v1/projects/app/threads/h1/fork", &json!({"to": "h2"}));
    assert_eq!(
        (again.status, again.error_code().as_str()),
        (409, "thread_exists")
    );
    let made = api.post(
        "/v1/builds",
        &json!({"kind": "chat", "project_id": "app", "user_id": "ann", "thread_id": "h2",
                "prompt": "What was asked before?"}),
    );
    let build = made.json()["build_id"].as_str().unwrap().to_string();
    let answer = completed(&env, &env.wait_finished(&build, LIMIT));
    assert!(answer.contains("quince"), "{answer}");

    let deleted = api.request("DELETE", "/v1/projects/app/threads/h1", &[], None);
    assert_eq!(deleted.status, 200, "{}", deleted.body);
    assert_eq!(api.get("/v1/projects/app/threads/h1").status, 404);
    assert_eq!(
        api.request("DELETE", "/v1/projects/app/threads/h1", &[], None)
            .status,
        404
    );
}
