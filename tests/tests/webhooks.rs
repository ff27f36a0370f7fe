//! Webhooks of a build's end through the real binaries: signed, retried with the same id, never
//! lost across a worker's death while the endpoint is down, and a job's own URL only when allowed.

use std::time::Duration;

use baton_core::webhook::Secrets;
use baton_tests::TestEnv;
use baton_tests::webhook::{Endpoint, Received, free_port};
use serde_json::Value;

const LIMIT: Duration = Duration::from_secs(60);
const SECRET: &str = "whsec_dGVzdC1zZWNyZXQta2V5LWZvci1iYXRvbg==";

fn webhook_env(url: &str) -> Vec<(&'static str, String)> {
    vec![
        ("BATON_WEBHOOK_URL", url.to_string()),
        ("BATON_WEBHOOK_SECRET", SECRET.to_string()),
        ("BATON_WEBHOOK_TIMEOUT", "2s".to_string()),
    ]
}

fn start_worker(env: &mut TestEnv, host: &str, vars: &[(&'static str, String)]) {
    let vars: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (*k, v.as_str())).collect();
    env.start_worker_on(host, &vars);
}

/// Asserts the request carries a valid Standard Webhooks signature of its body.
fn assert_signed(r: &Received) {
    let id = &r.headers["webhook-id"];
    let ts: i64 = r.headers["webhook-timestamp"].parse().expect("a timestamp");
    assert!(id.starts_with("msg_"), "{id}");
    assert!(
        (chrono::Utc::now().timestamp() - ts).abs() < 300,
        "a fresh timestamp"
    );
    let expected = Secrets::parse(SECRET).unwrap().sign(id, ts, &r.body);
    assert_eq!(r.headers["webhook-signature"], expected);
}

/// `baton enqueue --json` of a create in project `own` whose own webhook goes to `url`, under the
/// allow-list `allowed`.
fn enqueue_with_url(
    env: &TestEnv,
    version: &str,
    url: &str,
    allowed: &str,
) -> std::process::Output {
    env.command("baton")
        .args([
            "enqueue",
            "--project",
            "own",
            "--version",
            version,
            "--kind",
            "create",
        ])
        .args(["--prompt", "x", "--json", "--webhook-url", url])
        .env("BATON_WEBHOOK_ALLOW", allowed)
        .output()
        .unwrap()
}

fn wait_for(env: &TestEnv, endpoint: &Endpoint, n: usize) -> Vec<Received> {
    env.wait_until(LIMIT, "the webhooks to arrive", || {
        endpoint.received().len() >= n
    });
    endpoint.received()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_build_end_is_delivered_once_signed_with_its_session_and_usage() {
    let mut env = TestEnv::new().await;
    let endpoint = Endpoint::start(&[]).await;
    start_worker(&mut env, "host-a", &webhook_env(&endpoint.url));
    let build = env.enqueue("hook", "hook-v1", "create", "Build it");
    let state = env.wait_finished(&build, LIMIT);
    let got = wait_for(&env, &endpoint, 1);
    assert_signed(&got[0]);
    assert_eq!(got[0].headers["content-type"], "application/json");
    let body: Value = serde_json::from_str(&got[0].body).unwrap();
    assert_eq!(body["type"], "build.completed");
    let data = &body["data"];
    assert_eq!(data["build_id"], build.as_str());
    assert_eq!(data["status"], "completed");
    assert_eq!(data["session_id"], state["runs"][3]["new_session_id"]);
    assert_eq!(data["output"], state["output"]);
    assert!(
        data["usage"]["output_tokens"]
            .as_i64()
            .is_some_and(|t| t > 0),
        "{data}"
    );
    assert!(data["cost_usd"].as_f64().is_some_and(|c| c > 0.0), "{data}");
    // Once: nothing more comes.
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(endpoint.received().len(), 1);
    let list = env.baton_json(&["webhooks", "list"]);
    assert_eq!(list[0]["state"], "delivered", "{list}");
    assert_eq!(list[0]["attempts"], 1);
    assert_eq!(
        list[0]["id"].as_str(),
        Some(got[0].headers["webhook-id"].as_str())
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_5xx_is_retried_with_the_same_webhook_id_and_body() {
    let mut env = TestEnv::new().await;
    let endpoint = Endpoint::start(&[503]).await;
    start_worker(&mut env, "host-a", &webhook_env(&endpoint.url));
    let build = env.enqueue("retry", "retry-v1", "create", "Build it");
    env.wait_finished(&build, LIMIT);
    let got = wait_for(&env, &endpoint, 2);
    assert_eq!(got[0].headers["webhook-id"], got[1].headers["webhook-id"]);
    assert_eq!(got[0].body, got[1].body);
    got.iter().for_each(assert_signed);
    env.wait_until(LIMIT, "the delivery to be recorded", || {
        env.baton_json(&["webhooks", "list"])[0]["state"] == "delivered"
    });
    let list = env.baton_json(&["webhooks", "list"]);
    assert_eq!(
        (
            list[0]["attempts"].as_i64(),
            list[0]["last_status"].as_i64()
        ),
        (Some(2), Some(200))
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_webhook_is_delivered_after_its_worker_died_while_the_endpoint_was_down() {
    let mut env = TestEnv::new().await;
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}/hook");
    start_worker(&mut env, "host-a", &webhook_env(&url));
    let build = env.enqueue("down", "down-v1", "create", "Build it");
    env.wait_finished(&build, LIMIT);
    env.wait_until(LIMIT, "an attempt to fail", || {
        env.baton_json(&["webhooks", "list"])[0]["attempts"]
            .as_i64()
            .is_some_and(|a| a >= 1)
    });
    env.signal_worker(0, nix::sys::signal::Signal::SIGKILL);
    env.wait_worker(0);
    let endpoint = Endpoint::start_on(port, &[]).await;
    start_worker(&mut env, "host-b", &webhook_env(&url));
    let got = wait_for(&env, &endpoint, 1);
    assert_signed(&got[0]);
    let body: Value = serde_json::from_str(&got[0].body).unwrap();
    assert_eq!(body["data"]["build_id"], build.as_str());
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(endpoint.received().len(), 1, "delivered once");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_job_url_is_used_only_when_allowed() {
    let mut env = TestEnv::new().await;
    let endpoint = Endpoint::start(&[]).await;
    let own = Endpoint::start(&[]).await;
    let allowed = own.url.trim_end_matches("hook").to_string();
    let mut vars = webhook_env(&endpoint.url);
    vars.push(("BATON_WEBHOOK_ALLOW", allowed.clone()));
    start_worker(&mut env, "host-a", &vars);

    // The producer refuses a URL outside the allow-list before it enqueues anything.
    let out = enqueue_with_url(&env, "own-v0", "https://elsewhere.example/hook", &allowed);
    assert_eq!(
        out.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("webhook_url"));

    // A job XADDed with such a URL is refused by the worker: it ends dead-lettered, and only the
    // deployment's endpoint hears of it.
    let refused = serde_json::json!({
        "v": 1, "build_id": "refused-1", "kind": "create", "project_id": "own",
        "version_id": "own-v1", "user_id": "local", "prompt": "x", "project_path": "own",
        "enqueued_at": "2026-12-06T00:00:00Z", "webhook_url": "https://elsewhere.example/hook"
    });
    let mut redis = env.redis().await;
    let _: String = redis::cmd("XADD")
        .arg(&env.stream)
        .arg("*")
        .arg("job")
        .arg(refused.to_string())
        .query_async(&mut redis)
        .await
        .unwrap();
    env.wait_until(LIMIT, "the worker to record the refused build", || {
        env.baton(&["status", "refused-1"]).status.success()
    });
    let state = env.wait_finished("refused-1", LIMIT);
    assert_eq!(state["status"], "failed");
    let got = wait_for(&env, &endpoint, 1);
    let body: Value = serde_json::from_str(&got[0].body).unwrap();
    assert_eq!(body["type"], "build.dead_lettered");
    assert!(
        body["data"]["error"]
            .as_str()
            .is_some_and(|e| e.contains("webhook_url"))
    );

    // An allowed one gets the build's end too, signed the same way.
    let out = enqueue_with_url(&env, "own-v2", &own.url, &allowed);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let build: Value = serde_json::from_slice(&out.stdout).unwrap();
    let build = build["build_id"].as_str().unwrap().to_string();
    env.wait_finished(&build, LIMIT);
    let mine = wait_for(&env, &own, 1);
    assert_signed(&mine[0]);
    assert!(mine[0].body.contains(&build));
    wait_for(&env, &endpoint, 2);
    assert_eq!(
        own.received().len(),
        1,
        "the refused job's URL was never called"
    );
}
