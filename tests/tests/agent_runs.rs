//! Real agent runs: the deployment's agent settings and a job's narrowing of them reach the CLI as
//! its flags, a job cannot widen them, a job can choose its steps, the prompt goes on stdin, and
//! every run's answer, denials, usage and cost are kept in the ledger and sent with the events.

use std::time::Duration;

use baton_tests::TestEnv;
use serde_json::Value;

const LIMIT: Duration = Duration::from_secs(60);

/// The CLI arguments of the emulator's run whose prompt is `prompt`.
fn argv_of(env: &TestEnv, prompt: &str) -> Vec<String> {
    let run = env
        .emulator_runs()
        .into_iter()
        .find(|r| r["prompt"] == prompt)
        .unwrap_or_else(|| panic!("no run with the prompt {prompt:?}"));
    run["argv"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap().to_string())
        .collect()
}

/// The words that follow `flag` up to the next flag.
fn values_of(argv: &[String], flag: &str) -> Vec<String> {
    argv.iter()
        .skip_while(|a| *a != flag)
        .skip(1)
        .take_while(|a| !a.starts_with('-'))
        .cloned()
        .collect()
}

fn enqueue(env: &TestEnv, args: &[&str]) -> String {
    let mut all = vec!["enqueue"];
    all.extend(args);
    env.baton_json(&all)["build_id"]
        .as_str()
        .unwrap()
        .to_string()
}

fn finished(env: &TestEnv, build: &str, status: &str) -> Value {
    let done = env.wait_finished(build, LIMIT);
    assert_eq!(done["status"], status, "{done}\n{}", env.worker_logs());
    done
}

#[tokio::test(flavor = "multi_thread")]
async fn the_deployments_settings_and_a_jobs_narrowing_reach_the_cli() {
    let mut env = TestEnv::new().await;
    env.start_worker_with(&[
        ("BATON_MODEL", "model-of-the-deployment"),
        ("BATON_FALLBACK_MODEL", "fallback-model"),
        ("BATON_ALLOWED_TOOLS", "Read,Write,Edit,Bash(git status)"),
        ("BATON_DISALLOWED_TOOLS", "WebFetch"),
        ("BATON_MAX_TURNS", "30"),
        ("BATON_MAX_BUDGET_USD", "5"),
        ("BATON_APPEND_SYSTEM_PROMPT", "-Be brief."),
    ]);
    let plain = "Create index.html with a secret recipe";
    let build = enqueue(
        &env,
        &[
            "--project",
            "p",
            "--version",
            "v1",
            "--kind",
            "create",
            "--prompt",
            plain,
            "--steps",
            "build",
        ],
    );
    finished(&env, &build, "completed");
    let argv = argv_of(&env, plain);
    for flag in [
        "--model=model-of-the-deployment",
        "--fallback-model=fallback-model",
        "--permission-mode=acceptEdits",
        "--max-turns=30",
        "--max-budget-usd=5",
        "--append-system-prompt=-Be brief.",
    ] {
        assert!(argv.contains(&flag.to_string()), "{flag} in {argv:?}");
    }
    assert_eq!(
        values_of(&argv, "--allowed-tools"),
        ["Read", "Write", "Edit", "Bash(git status)"]
    );
    assert_eq!(values_of(&argv, "--disallowed-tools"), ["WebFetch"]);
    assert!(
        argv.iter().all(|a| !a.contains("secret recipe")),
        "the prompt goes on stdin, never in the arguments `ps` shows: {argv:?}"
    );

    let narrowed = "Add app.js";
    let build = enqueue(
        &env,
        &[
            "--project",
            "p",
            "--version",
            "v2",
            "--kind",
            "update",
            "--prompt",
            narrowed,
            "--steps",
            "build",
            "--model",
            "model-of-the-job",
            "--max-turns",
            "5",
            "--max-budget-usd",
            "0.5",
            "--allowed-tools",
            "Read,Write",
            "--disallowed-tools",
            "Bash",
            "--append-system-prompt",
            "Use TypeScript.",
        ],
    );
    finished(&env, &build, "completed");
    let argv = argv_of(&env, narrowed);
    for flag in [
        "--model=model-of-the-job",
        "--max-turns=5",
        "--max-budget-usd=0.5",
        "--append-system-prompt=-Be brief.\n\nUse TypeScript.",
    ] {
        assert!(argv.contains(&flag.to_string()), "{flag} in {argv:?}");
    }
    assert_eq!(values_of(&argv, "--allowed-tools"), ["Read", "Write"]);
    assert_eq!(values_of(&argv, "--disallowed-tools"), ["WebFetch", "Bash"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_job_that_would_widen_the_deployments_settings_is_refused() {
    let mut env = TestEnv::new().await;
    env.start_worker_with(&[
        ("BATON_ALLOWED_TOOLS", "Read,Write"),
        ("BATON_MAX_TURNS", "10"),
        ("BATON_MAX_BUDGET_USD", "1"),
    ]);
    for (version, extra, says) in [
        (
            "v1",
            vec!["--permission-mode", "bypassPermissions"],
            "BATON_ALLOW_BYPASS_PERMISSIONS",
        ),
        ("v2", vec!["--max-turns", "11"], "max_turns 11"),
        ("v3", vec!["--max-budget-usd", "2"], "max_budget_usd 2"),
        ("v4", vec!["--allowed-tools", "Bash"], "\"Bash\""),
    ] {
        let mut args = vec![
            "--project",
            "w",
            "--version",
            version,
            "--kind",
            "create",
            "--prompt",
            "x",
        ];
        args.extend(extra);
        let build = enqueue(&env, &args);
        let done = finished(&env, &build, "failed");
        let error = done["last_error"].as_str().unwrap();
        assert!(error.contains(says), "{version}: {error}");
    }
    assert_eq!(env.dead_letter_count().await, 4);
    assert!(env.emulator_runs().is_empty(), "no refused job ran the CLI");
    // A bad value is refused before it is enqueued.
    let out = env.baton(&[
        "enqueue",
        "--project",
        "w",
        "--version",
        "v5",
        "--kind",
        "create",
        "--prompt",
        "x",
        "--permission-mode",
        "yolo",
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("permission_mode"));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_job_runs_only_the_steps_it_names_and_the_operator_sets_the_metadata_prompts() {
    let mut env = TestEnv::new().await;
    let prompts = env.dir.path().join("prompts.json");
    std::fs::write(
        &prompts,
        r#"{"metadata.recommendations": "List three ideas in IDEAS.md."}"#,
    )
    .unwrap();
    env.start_worker_with(&[("BATON_STEP_PROMPTS", prompts.to_str().unwrap())]);
    let build = enqueue(
        &env,
        &[
            "--project",
            "s",
            "--version",
            "v1",
            "--kind",
            "create",
            "--prompt",
            "Create index.html",
            "--steps",
            "compact,build",
        ],
    );
    let done = finished(&env, &build, "completed");
    let steps: Vec<&str> = done["runs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["step"].as_str().unwrap())
        .collect();
    assert_eq!(steps, ["build", "compact"], "in the plan's order");
    let project = env.workspace().join("s");
    assert!(project.join("index.html").is_file());
    assert!(!project.join("RECOMMENDATIONS.md").exists());
    assert!(!project.join("README.md").exists());

    let build = enqueue(
        &env,
        &[
            "--project",
            "s",
            "--version",
            "v2",
            "--kind",
            "update",
            "--prompt",
            "Add app.js",
            "--steps",
            "metadata.recommendations",
        ],
    );
    finished(&env, &build, "completed");
    assert!(
        project.join("IDEAS.md").is_file(),
        "the operator's prompt ran"
    );
    assert!(!project.join("app.js").exists(), "the build step did not");

    let out = env.baton(&[
        "enqueue",
        "--project",
        "s",
        "--version",
        "v3",
        "--kind",
        "chat_plan",
        "--prompt",
        "x",
        "--steps",
        "build",
    ]);
    assert_eq!(out.status.code(), Some(2), "a step the kind does not have");
}

#[tokio::test(flavor = "multi_thread")]
async fn every_runs_answer_is_kept_and_the_jobs_answer_is_sent() {
    let mut env = TestEnv::new().await;
    env.start_worker();
    let build = enqueue(
        &env,
        &[
            "--project",
            "a",
            "--version",
            "v1",
            "--kind",
            "create",
            "--prompt",
            "Create index.html",
        ],
    );
    let created = finished(&env, &build, "completed");
    let first = &created["runs"][0];
    assert_eq!(first["result"], "Done: wrote index.html.");
    assert_eq!(first["subtype"], "success");
    assert_eq!(first["stop_reason"], "end_turn");
    assert_eq!(first["num_turns"], 2);
    assert!(first["cost_usd"].as_f64().unwrap() > 0.0);
    assert!(first["output_tokens"].as_i64().unwrap() > 0);
    assert_eq!(first["permission_denials"], serde_json::json!([]));
    assert_eq!(first["nothing_done"], false);
    // The job's answer is its last run's that is not a compaction's.
    assert_eq!(created["output"], created["runs"][2]["result"], "{created}");

    let build = enqueue(
        &env,
        &[
            "--project",
            "a",
            "--version",
            "v2",
            "--kind",
            "chat_plan",
            "--prompt",
            "What was asked before?",
        ],
    );
    let planned = finished(&env, &build, "completed");
    let output = planned["output"].as_str().unwrap();
    assert!(output.contains("Create index.html"), "{output}");
    let completed = env
        .build_events(&build)
        .await
        .into_iter()
        .map(|(_, e)| e)
        .find(|e| e["event"] == "job_completed")
        .expect("a job_completed event");
    assert_eq!(completed["output"], output);
    let status = String::from_utf8_lossy(&env.baton(&["status", &build]).stdout).into_owned();
    assert!(status.contains("Create index.html"), "{status}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_run_its_permissions_left_with_nothing_done_says_so() {
    let mut env = TestEnv::new().await;
    env.start_worker_with(&[("BATON_PERMISSION_MODE", "default")]);
    let build = enqueue(
        &env,
        &[
            "--project",
            "d",
            "--version",
            "v1",
            "--kind",
            "create",
            "--prompt",
            "Create index.html",
            "--steps",
            "build",
        ],
    );
    let done = finished(&env, &build, "completed");
    let run = &done["runs"][0];
    assert_eq!(run["nothing_done"], true, "{done}");
    assert_eq!(run["permission_denials"][0]["tool_name"], "Write");
    assert!(!env.workspace().join("d/index.html").exists());
    let (_, metrics) = baton_tests::http_get(&env.http_addr(0), "/metrics");
    assert!(
        metrics.contains("baton_runs_nothing_done_total 1"),
        "{metrics}"
    );
    // Allowed the tool, the same mode writes.
    let build = enqueue(
        &env,
        &[
            "--project",
            "d",
            "--version",
            "v2",
            "--kind",
            "update",
            "--prompt",
            "Create app.js",
            "--steps",
            "build",
            "--allowed-tools",
            "Write",
        ],
    );
    let done = finished(&env, &build, "completed");
    assert_eq!(done["runs"][0]["nothing_done"], false);
    assert!(env.workspace().join("d/app.js").is_file());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_job_past_its_budget_stops_with_the_reason() {
    let mut env = TestEnv::new().await;
    env.start_worker_with(&[("BATON_JOB_MAX_BUDGET_USD", "0.000001")]);
    let build = enqueue(
        &env,
        &[
            "--project",
            "b",
            "--version",
            "v1",
            "--kind",
            "create",
            "--prompt",
            "Create index.html",
        ],
    );
    let done = finished(&env, &build, "failed");
    assert!(
        done["last_error"]
            .as_str()
            .unwrap()
            .contains("BATON_JOB_MAX_BUDGET_USD"),
        "{done}"
    );
    assert_eq!(done["runs"].as_array().unwrap().len(), 1, "the run is kept");
    // A run's own budget, spent up in the CLI, ends the job without retries.
    let build = enqueue(
        &env,
        &[
            "--project",
            "c",
            "--version",
            "c1",
            "--kind",
            "create",
            "--prompt",
            "Create index.html",
            "--max-budget-usd",
            "0.0000001",
        ],
    );
    let done = finished(&env, &build, "failed");
    assert!(
        done["last_error"].as_str().unwrap().contains("budget"),
        "{done}"
    );
    let runs = env
        .emulator_runs()
        .into_iter()
        .filter(|r| r["outcome"] == "max_budget")
        .count();
    assert_eq!(runs, 1, "not retried");
}

#[tokio::test(flavor = "multi_thread")]
async fn bypass_permissions_as_root_is_refused_up_front() {
    if !nix::unistd::geteuid().is_root() {
        // The CLI refuses bypassPermissions only to root; elsewhere there is nothing to refuse.
        return;
    }
    let mut env = TestEnv::new().await;
    env.start_worker_with(&[("BATON_PERMISSION_MODE", "bypassPermissions")]);
    let (status, body) = baton_tests::http_get(&env.http_addr(0), "/readyz");
    assert_eq!(status, 503);
    assert!(body.contains("root"), "{body}");
    env.start_worker_with(&[("BATON_ALLOW_BYPASS_PERMISSIONS", "true")]);
    let build = enqueue(
        &env,
        &[
            "--project",
            "r",
            "--version",
            "v1",
            "--kind",
            "create",
            "--prompt",
            "x",
            "--permission-mode",
            "bypassPermissions",
        ],
    );
    let done = finished(&env, &build, "failed");
    assert!(
        done["last_error"]
            .as_str()
            .unwrap()
            .contains("cannot be used with root/sudo privileges"),
        "{done}"
    );
    assert!(env.emulator_runs().is_empty());
}
