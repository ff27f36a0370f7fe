//! The dashboard in a real browser: Debian's chromium driven by playwright-core
//! (`tests/browser/dashboard.mjs`) against `baton serve` and a worker with real builds. `just test`
//! installs both; screenshots of each page land in `target/dashboard-screenshots/`.

use std::path::Path;
use std::time::Duration;

use baton_tests::TestEnv;
use serde_json::json;

const LIMIT: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread")]
async fn the_dashboard_shows_builds_sessions_and_dead_letters_and_its_buttons_work() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let browser_dir = root.join("tests/browser");
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    assert!(
        Path::new(&chromium).exists() && browser_dir.join("node_modules/playwright-core").is_dir(),
        "the browser tests need Debian's chromium and tests/browser's node_modules: `just test` installs both"
    );
    let mut env = TestEnv::new().await;
    env.slow_prompts("SLOW", "3000");
    env.start_worker_with(&[
        ("CLAUDE_EMULATOR_FAULT", "max_turns"),
        ("CLAUDE_EMULATOR_FAULT_MATCH", "BREAK"),
    ]);
    let api = env.start_api(&["dash-token"], &[]);

    // Something to show: a completed build, a thread forked from it, a failed build.
    let done = env.enqueue("app", "v1", "create", "Create index.html for a todo app");
    let finished = env.wait_finished(&done, LIMIT);
    assert_eq!(finished["status"], "completed", "{finished}");
    let session = finished["runs"][0]["new_session_id"]
        .as_str()
        .unwrap()
        .to_string();
    let chat = env.baton_json(&[
        "enqueue",
        "--project",
        "app",
        "--kind",
        "chat",
        "--thread",
        "t1",
        "--fork-from",
        "main",
        "--prompt",
        "What was asked before?",
    ]);
    env.wait_finished(chat["build_id"].as_str().unwrap(), LIMIT);
    let failed = env.enqueue("broken", "v1", "create", "BREAK: build it");
    assert_eq!(env.wait_finished(&failed, LIMIT)["status"], "failed");
    env.wait_until(LIMIT, "the failed build's dead letter", || {
        api.get("/v1/dead-letters")
            .body
            .contains(&format!("\\\"build_id\\\":\\\"{failed}\\\""))
    });

    let shots = root.join("target/dashboard-screenshots");
    let out = std::process::Command::new("node")
        .arg(browser_dir.join("dashboard.mjs"))
        .env("BASE", &api.base)
        .env("TOKEN", "dash-token")
        .env("SHOTS", &shots)
        .env("CHROMIUM", &chromium)
        .env(
            "DATA",
            json!({"done": done, "session": session, "project": "app", "failed": failed})
                .to_string(),
        )
        .output()
        .expect("node runs (the machine's Node.js)");
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "the browser checks failed:\n{report}\n{}\nworker log:\n{}",
        String::from_utf8_lossy(&out.stderr),
        env.worker_logs()
    );
    for page in [
        "overview",
        "builds",
        "build",
        "build-live",
        "build-cancelled",
        "project",
        "session",
        "dead-letters",
    ] {
        assert!(
            shots.join(format!("{page}.png")).is_file(),
            "no screenshot of {page}"
        );
    }
    println!("{report}");
}
