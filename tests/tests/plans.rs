//! Plans: a job's tasks run in order in one session, each a recorded run; a plan cut off resumes
//! after its last recorded task on another host; with sessions off each task starts fresh, told
//! what the tasks before it did.

use std::time::Duration;

use baton_tests::TestEnv;
use nix::sys::signal::Signal;
use serde_json::Value;

const LIMIT: Duration = Duration::from_secs(60);

/// Enqueues a plan of project `app` with these tasks; returns its build id.
fn enqueue_plan(env: &TestEnv, tasks: &[&str]) -> String {
    let mut args = vec!["enqueue", "--project", "app", "--kind", "plan"];
    for task in tasks {
        args.extend_from_slice(&["--task", task]);
    }
    env.baton_json(&args)["build_id"]
        .as_str()
        .expect("build id")
        .to_string()
}

/// The build's recorded runs in project `app`'s chain, oldest first.
fn runs_of(env: &TestEnv, build: &str) -> Vec<Value> {
    env.baton_json(&["chain", "app"])
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["build_id"] == build)
        .cloned()
        .collect()
}

fn steps(runs: &[Value]) -> Vec<String> {
    runs.iter()
        .map(|t| t["step"].as_str().unwrap().to_string())
        .collect()
}

/// The prompts the emulator was given, in order.
fn prompts(env: &TestEnv) -> Vec<String> {
    env.emulator_runs()
        .iter()
        .map(|r| r["prompt"].as_str().unwrap_or_default().to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_plans_tasks_run_in_one_session_and_the_last_knows_the_first_two() {
    let mut env = TestEnv::new().await;
    env.start_worker();
    let build = enqueue_plan(
        &env,
        &[
            "Create App.tsx",
            "Create Header.tsx",
            "What was asked before?",
        ],
    );
    let done = env.wait_finished(&build, LIMIT);
    assert_eq!(done["status"], "completed", "{done}\n{}", env.worker_logs());
    let answer = done["output"].as_str().unwrap();
    assert!(
        answer.contains("Create App.tsx") && answer.contains("Create Header.tsx"),
        "the last task knows the first two: {answer}"
    );
    let runs = runs_of(&env, &build);
    assert_eq!(steps(&runs), ["task:1", "task:2", "task:3"]);
    assert!(runs.iter().all(|t| t["source"] == "plan_task"), "{runs:?}");
    for pair in runs.windows(2) {
        assert_eq!(
            pair[1]["old_session_id"], pair[0]["new_session_id"],
            "each task resumes the session the one before left"
        );
    }
    let session = &runs[0]["new_session_id"];
    assert!(
        runs.iter().all(|t| &t["new_session_id"] == session),
        "one session for the whole plan: {runs:?}"
    );
    assert_eq!(
        done["version_id"], "",
        "a plan naming no version records none"
    );
    let mut db = env.db().await;
    let versions: i64 = sqlx::query_scalar("SELECT count(*) FROM project_versions")
        .fetch_one(&mut db)
        .await
        .unwrap();
    assert_eq!(versions, 0);
    // A later build resumes the plan's session like any other.
    let next = env.enqueue("app", "v2", "chat_plan", "What was asked before?");
    let next = env.wait_finished(&next, LIMIT);
    assert!(
        next["output"]
            .as_str()
            .unwrap()
            .contains("Create Header.tsx"),
        "{next}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_plan_killed_after_task_two_resumes_at_task_three_on_another_host() {
    let mut env = TestEnv::new().await;
    env.fast_timing("1");
    env.slow_prompts("SLOW", "30000");
    env.start_worker(); // host-0
    let build = enqueue_plan(
        &env,
        &[
            "Create App.tsx",
            "Create Header.tsx",
            "SLOW: what was asked before?",
        ],
    );
    env.wait_until(LIMIT, "tasks 1 and 2 to be recorded", || {
        steps(&runs_of(&env, &build)) == ["task:1", "task:2"]
    });
    // Task 2's CLI ended before its run was recorded: a child now is task 3's.
    env.wait_until(LIMIT, "task 3 to start", || env.worker_has_child(0));
    env.signal_worker(0, Signal::SIGKILL);
    env.wait_worker(0);
    env.slow_prompts("never-matches", "0");
    env.start_worker(); // host-1
    let done = env.wait_finished(&build, LIMIT);
    assert_eq!(done["status"], "completed", "{done}\n{}", env.worker_logs());
    assert_eq!(
        steps(&runs_of(&env, &build)),
        ["task:1", "task:2", "task:3"]
    );
    let asked = prompts(&env);
    for task in ["Create App.tsx", "Create Header.tsx"] {
        assert_eq!(
            asked.iter().filter(|p| p.as_str() == task).count(),
            1,
            "{task} ran once: {asked:?}"
        );
    }
    let answer = done["output"].as_str().unwrap();
    assert!(
        answer.contains("Create App.tsx") && answer.contains("Create Header.tsx"),
        "task 3 resumed the plan's session on host 1: {answer}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn with_sessions_off_each_task_starts_fresh_told_what_came_before() {
    let mut env = TestEnv::new().await;
    env.start_worker_with(&[("BATON_RESUME", "off")]);
    let build = enqueue_plan(&env, &["Create App.tsx", "Create Header.tsx"]);
    let done = env.wait_finished(&build, LIMIT);
    assert_eq!(done["status"], "completed", "{done}\n{}", env.worker_logs());
    let runs = runs_of(&env, &build);
    assert_eq!(steps(&runs), ["task:1", "task:2"]);
    for run in &runs {
        assert_eq!(run["old_session_id"], Value::Null, "fresh: {run}");
        assert_eq!(run["fresh_reason"], "resume_disabled", "{run}");
    }
    assert_ne!(runs[0]["new_session_id"], runs[1]["new_session_id"]);
    let emulated = env.emulator_runs();
    let second = emulated
        .iter()
        .find(|r| {
            r["prompt"]
                .as_str()
                .unwrap_or_default()
                .ends_with("Create Header.tsx")
        })
        .expect("task 2 ran");
    let prompt = second["prompt"].as_str().unwrap();
    assert!(
        prompt.contains("1. [1] Create App.tsx") && prompt.contains("Files it wrote:"),
        "task 2 is told what task 1 did: {prompt}"
    );
    assert!(
        !second["argv"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a.as_str().unwrap_or_default().starts_with("--resume")),
        "task 2 starts fresh: {second}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failing_task_ends_the_plan_with_its_reason_and_keeps_the_tasks_before() {
    let mut env = TestEnv::new().await;
    env.start_worker_with(&[
        ("CLAUDE_EMULATOR_FAULT", "max_turns"),
        ("CLAUDE_EMULATOR_FAULT_MATCH", "BREAK"),
    ]);
    let build = enqueue_plan(
        &env,
        &[
            "Create App.tsx",
            "BREAK: Create Header.tsx",
            "Write the types",
        ],
    );
    let done = env.wait_finished(&build, LIMIT);
    assert_eq!(done["status"], "failed", "{done}");
    let error = done["last_error"].as_str().unwrap();
    assert!(
        error.contains("task:2"),
        "the reason names the task: {error}"
    );
    assert_eq!(
        steps(&runs_of(&env, &build)),
        ["task:1"],
        "task 1 stays recorded"
    );
    assert!(
        !prompts(&env).iter().any(|p| p == "Write the types"),
        "task 3 never ran"
    );
    let app = env.workspace().join("app");
    assert!(
        app.read_dir().unwrap().next().is_some(),
        "task 1's work is in the project folder"
    );
}
