//! The spine end to end: `baton enqueue` -> Redis stream -> a real `baton-worker` -> the emulator ->
//! Redis checkpoint and Postgres ledger, for a `create` and then an `update` of one project.

use std::time::Duration;

use baton_tests::{TestEnv, http_get};
use serde_json::Value;

const LIMIT: Duration = Duration::from_secs(60);

fn run_of<'a>(status: &'a Value, step: &str) -> &'a Value {
    status["runs"]
        .as_array()
        .and_then(|runs| runs.iter().find(|r| r["step"] == step))
        .unwrap_or_else(|| panic!("no {step} run in {status}"))
}

fn s(v: &Value) -> &str {
    v.as_str()
        .unwrap_or_else(|| panic!("expected a string, got {v}"))
}

/// Runs create then update on one project and returns (create status, update status).
fn create_then_update(env: &TestEnv, project: &str) -> (Value, Value) {
    let create = env.enqueue(
        project,
        &format!("{project}-v1"),
        "create",
        "Build a todo app in app.py",
    );
    let created = env.wait_finished(&create, LIMIT);
    assert_eq!(
        created["status"],
        "completed",
        "{created}\n{}",
        env.worker_logs()
    );
    let update = env.enqueue(
        project,
        &format!("{project}-v2"),
        "update",
        "Add due dates to the todo app",
    );
    let updated = env.wait_finished(&update, LIMIT);
    assert_eq!(
        updated["status"],
        "completed",
        "{updated}\n{}",
        env.worker_logs()
    );
    (created, updated)
}

#[tokio::test(flavor = "multi_thread")]
async fn an_update_resumes_the_session_the_create_left() {
    let mut env = TestEnv::new().await;
    env.start_worker();
    let (created, updated) = create_then_update(&env, "todo");

    // Every step of both builds ran, in plan order.
    let steps = |v: &Value| {
        v["runs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| s(&r["step"]).to_string())
            .collect::<Vec<_>>()
    };
    let plan = [
        "build",
        "metadata.recommendations",
        "metadata.documentation",
        "compact",
    ];
    assert_eq!(steps(&created), plan);
    assert_eq!(steps(&updated), plan);

    // The update's build run resumed the session the create's compact run left.
    let left = s(&run_of(&created, "compact")["new_session_id"]);
    assert_eq!(s(&run_of(&updated, "build")["old_session_id"]), left);
    // ... and the CLI was really asked to resume it.
    let runs = env.emulator_runs();
    let update_build = runs
        .iter()
        .find(|r| r["prompt"] == "Add due dates to the todo app")
        .expect("the update's build run is in the emulator log");
    // The prompt reached the CLI on its standard input, never in its arguments (`ps` shows those).
    let argv = update_build["argv"].to_string();
    assert!(!argv.contains("due dates"), "{argv}");
    assert_eq!(s(&update_build["session_in"]), left);
    assert_eq!(runs.len(), 8, "four runs per build, none repeated");

    // The project's newest session is the chain's newest link.
    let mut db = env.db().await;
    let last: Option<String> =
        sqlx::query_scalar("SELECT last_ai_session_id FROM projects WHERE project_id = 'todo'")
            .fetch_one(&mut db)
            .await
            .unwrap();
    let chain = env.baton_json(&["chain", "todo"]);
    let newest = chain.as_array().unwrap().last().expect("a chain");
    assert_eq!(last.as_deref(), Some(s(&newest["new_session_id"])));
    assert_eq!(chain.as_array().unwrap().len(), 8);
    let versions: Vec<(String, Option<String>)> =
        sqlx::query_as("SELECT version_id, ai_session_id FROM project_versions WHERE project_id = 'todo' ORDER BY version_id")
            .fetch_all(&mut db)
            .await
            .unwrap();
    assert!(
        versions.iter().all(|(_, s)| s.is_some()),
        "every version records its session: {versions:?}"
    );
    let metrics: Vec<(String, i64)> =
        sqlx::query_as("SELECT source, input_tokens FROM project_ai_session_metrics WHERE project_id = 'todo' ORDER BY id")
            .fetch_all(&mut db)
            .await
            .unwrap();
    assert_eq!(metrics.len(), 8, "a usage row per run: {metrics:?}");
    assert!(
        metrics
            .iter()
            .filter(|(source, _)| source != "compact")
            .all(|(_, tokens)| *tokens > 0),
        "runs that talk to the model report tokens: {metrics:?}"
    );

    // The checkpoint of the update is in Redis with its one-hour TTL.
    let mut redis = env.redis().await;
    let key = format!("claude:session:{}", s(&updated["build_id"]));
    let ttl: i64 = redis::cmd("TTL")
        .arg(&key)
        .query_async(&mut redis)
        .await
        .unwrap();
    assert!(ttl > 0 && ttl <= 3600, "checkpoint TTL {ttl}");
    let checkpoint: String = redis::cmd("GET")
        .arg(&key)
        .query_async(&mut redis)
        .await
        .unwrap();
    let checkpoint: Value = serde_json::from_str(&checkpoint).unwrap();
    assert_eq!(checkpoint["sessionId"], newest["new_session_id"]);
    assert_eq!(checkpoint["projectPath"], "todo");

    // The project folder was created and holds what the runs wrote.
    let project = env.workspace().join("todo");
    for file in ["app.py", "RECOMMENDATIONS.md", "README.md"] {
        assert!(
            project.join(file).is_file(),
            "{file} was written into the project folder"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn rolling_session_ids_of_old_clis_are_followed() {
    let mut env = TestEnv::new().await;
    env.worker_env
        .push(("CLAUDE_EMULATOR_SESSION_IDS".into(), "rolling".into()));
    env.worker_env
        .push(("BATON_CLI_SESSION_IDS".into(), "rolling".into()));
    env.start_worker();
    let (created, updated) = create_then_update(&env, "legacy");
    let runs: Vec<&Value> = created["runs"]
        .as_array()
        .unwrap()
        .iter()
        .chain(updated["runs"].as_array().unwrap())
        .collect();
    // Every run resumes exactly the id the run before it left, and each resume gave a new id.
    for pair in runs.windows(2) {
        assert_eq!(
            pair[1]["old_session_id"], pair[0]["new_session_id"],
            "{pair:?}"
        );
        assert_ne!(
            pair[1]["new_session_id"], pair[0]["new_session_id"],
            "rolling ids change on resume"
        );
    }
    let chain = env.baton_json(&["chain", "legacy"]);
    let last = chain.as_array().unwrap().last().unwrap()["new_session_id"].clone();
    assert_eq!(last, runs.last().unwrap()["new_session_id"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn garbage_on_the_stream_is_dead_lettered_and_the_worker_keeps_going() {
    let mut env = TestEnv::new().await;
    env.start_worker();
    let mut redis = env.redis().await;
    for garbage in [
        "{not json",
        r#"{"v":2,"build_id":"x"}"#,
        r#"{"v":1,"build_id":"b1","kind":"create"}"#,
    ] {
        let _: String = redis::cmd("XADD")
            .arg(&env.stream)
            .arg("*")
            .arg("job")
            .arg(garbage)
            .query_async(&mut redis)
            .await
            .unwrap();
    }
    let _: String = redis::cmd("XADD")
        .arg(&env.stream)
        .arg("*")
        .arg("other")
        .arg("field")
        .query_async(&mut redis)
        .await
        .unwrap();
    // A good job after the garbage still runs.
    let build = env.enqueue("after-garbage", "v1", "create", "Build a CLI in main.rs");
    let done = env.wait_finished(&build, LIMIT);
    assert_eq!(done["status"], "completed");
    let dead: redis::streams::StreamRangeReply = redis::cmd("XRANGE")
        .arg(baton_core::dead_letter_stream(&env.stream))
        .arg("-")
        .arg("+")
        .query_async(&mut redis)
        .await
        .unwrap();
    let text = |v: &redis::Value| match v {
        redis::Value::BulkString(b) => String::from_utf8_lossy(b).into_owned(),
        other => format!("{other:?}"),
    };
    // Jobs run concurrently, so the letters come in any order: match each to its payload.
    let reasons: std::collections::HashMap<String, String> = dead
        .ids
        .iter()
        .map(|e| (text(&e.map["payload"]), text(&e.map["reason"])))
        .collect();
    assert_eq!(reasons.len(), 4, "{reasons:?}");
    let reason = |payload: &str| {
        reasons
            .get(payload)
            .cloned()
            .unwrap_or_else(|| panic!("no letter for {payload}: {reasons:?}"))
    };
    assert!(
        reason("{not json").contains("not valid JSON"),
        "{reasons:?}"
    );
    assert!(
        reason(r#"{"v":2,"build_id":"x"}"#).contains("unsupported job version 2"),
        "{reasons:?}"
    );
    assert!(
        reason(r#"{"v":1,"build_id":"b1","kind":"create"}"#).contains("missing field"),
        "{reasons:?}"
    );
    assert!(
        reason(r#"{"other":"field"}"#).contains("no `job` field"),
        "{reasons:?}"
    );
    // Each entry is counted once its stream entry has ended, which is just after the ledger says so.
    let addr = env.http_addr(0);
    let counted = [
        "baton_jobs_total{kind=\"invalid\",outcome=\"dead_lettered\"} 4",
        "baton_jobs_total{kind=\"create\",outcome=\"completed\"} 1",
    ];
    env.wait_until(LIMIT, "the jobs counted by kind", || {
        let metrics = http_get(&addr, "/metrics").1;
        counted.iter().all(|line| metrics.contains(line))
    });
}

#[tokio::test(flavor = "multi_thread")]
async fn enqueue_refuses_bad_input_with_a_clear_message() {
    let env = TestEnv::new().await;
    let out = env.baton(&[
        "enqueue",
        "--project",
        "../etc",
        "--version",
        "v1",
        "--kind",
        "create",
        "--prompt",
        "x",
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("invalid project_id"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = env.baton(&[
        "enqueue",
        "--project",
        "p",
        "--version",
        "v1",
        "--kind",
        "create",
        "--prompt",
        "x",
        "--project-path",
        "a/../../b",
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("'..'"));
    let out = env.baton(&["status", "no-such-build"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no build no-such-build"));
}
