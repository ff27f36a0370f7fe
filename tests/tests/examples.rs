//! The client examples in `examples/` run green against the real binaries: each enqueues a build
//! over `baton serve`, follows its events to the end, and verifies the webhook of its end.

use std::path::PathBuf;
use std::time::Duration;

use baton_tests::TestEnv;
use baton_tests::webhook::free_port;
use serde_json::Value;

const SECRET: &str = "whsec_ZXhhbXBsZS1zZWNyZXQtZm9yLWJhdG9u";

fn example(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("examples")
        .join(path)
}

/// Runs `program example` against a Baton whose webhooks go to the example's port; returns its
/// summary.
async fn run_example(program: &str, script: &str, project: &str) -> Value {
    let mut env = TestEnv::new().await;
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}/webhook");
    env.start_worker_on(
        "host-a",
        &[
            ("BATON_WEBHOOK_URL", url.as_str()),
            ("BATON_WEBHOOK_SECRET", SECRET),
        ],
    );
    let api = env.start_api(&["example-token"], &[]);
    let out = std::process::Command::new(program)
        .arg(example(script))
        .env("BATON_API_URL", &api.base)
        .env("BATON_API_TOKEN", "example-token")
        .env("BATON_WEBHOOK_SECRET", SECRET)
        .env("WEBHOOK_PORT", port.to_string())
        .env("PROJECT", project)
        .output()
        .unwrap_or_else(|e| panic!("run {program}: {e}"));
    assert!(
        out.status.success(),
        "{script} failed:\n{}\n{}\nworker:\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        env.worker_logs()
    );
    let summary: Value = serde_json::from_slice(&out.stdout).expect("a JSON summary");
    // What the example saw is what the ledger says.
    let state = env.status(summary["build_id"].as_str().unwrap());
    assert_eq!(summary["session_id"], state["runs"][3]["new_session_id"]);
    let deliveries = env.baton_json(&["webhooks", "list"]);
    assert_eq!(deliveries[0]["id"], summary["webhook_id"]);
    std::thread::sleep(Duration::from_millis(200));
    summary
}

fn assert_followed_to_the_end(summary: &Value) {
    let events: Vec<&str> = summary["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e.as_str().unwrap())
        .collect();
    assert_eq!(events.first(), Some(&"job_started"), "{summary}");
    assert_eq!(events.last(), Some(&"job_completed"), "{summary}");
    assert_eq!(summary["webhook_type"], "build.completed");
    assert_eq!(summary["status"], "completed");
    assert_eq!(summary["verified"], true);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_node_example_enqueues_follows_and_verifies_its_webhook() {
    let summary = run_example("node", "node/baton-client.mjs", "node-example").await;
    assert_followed_to_the_end(&summary);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_python_example_enqueues_follows_and_verifies_its_webhook() {
    let summary = run_example("python3", "python/baton_client.py", "python-example").await;
    assert_followed_to_the_end(&summary);
}
