//! Durable delivery across worker replicas, with the real binaries: dead and stalled workers,
//! per-project order, graceful shutdown, retries and dead letters, authentication pauses.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use baton_tests::{RedisCut, TestEnv};
use nix::sys::signal::Signal;
use serde_json::Value;

const LIMIT: Duration = Duration::from_secs(90);

/// Successful CLI runs, in every project, whose prompt contains `marker`.
fn successful_runs_of(env: &TestEnv, marker: &str) -> usize {
    successful_runs(env)
        .into_iter()
        .filter(|((_, prompt), _)| prompt.contains(marker))
        .map(|(_, n)| n)
        .sum()
}

/// Successful CLI runs per (project folder, prompt), from the emulator's run log.
fn successful_runs(env: &TestEnv) -> HashMap<(String, String), usize> {
    let mut out = HashMap::new();
    for run in env.emulator_runs() {
        if !matches!(
            run["outcome"].as_str(),
            Some("success" | "compacted" | "compact_failed")
        ) {
            continue;
        }
        let prompt = run["prompt"].as_str().unwrap_or("");
        *out.entry((
            run["cwd"].as_str().unwrap_or("").to_string(),
            prompt.to_string(),
        ))
        .or_insert(0) += 1;
    }
    out
}

/// No CLI run of a step started after that step was recorded: a successor may redo a run its
/// predecessor finished but never recorded, never one the ledger holds.
fn assert_no_recorded_run_repeated(env: &TestEnv, projects: &[String]) {
    let time = |v: &Value| {
        v.as_str()
            .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
            .map(|t| t.with_timezone(&chrono::Utc))
    };
    // The prompt text that tells each step's runs apart in the emulator's log.
    let marker = |step: &str| match step {
        "build" => "Build service",
        "metadata.recommendations" => "RECOMMENDATIONS.md",
        "metadata.documentation" => "README.md",
        _ => "/compact",
    };
    let runs = env.emulator_runs();
    for project in projects {
        let chain = env.baton_json(&["chain", project]);
        for link in chain.as_array().unwrap() {
            let step = link["step"].as_str().unwrap();
            let recorded = time(&link["created_at"]).expect("a recording time");
            let later = runs.iter().filter(|r| {
                r["cwd"]
                    .as_str()
                    .is_some_and(|c| c.ends_with(&format!("/{project}")))
                    && matches!(
                        r["outcome"].as_str(),
                        Some("success" | "compacted" | "compact_failed")
                    )
                    && r["prompt"]
                        .as_str()
                        .is_some_and(|p| p.contains(marker(step)))
                    && time(&r["started_at"]).is_some_and(|started| started > recorded)
            });
            assert_eq!(
                later.count(),
                0,
                "{project}: {step} ran again after it was recorded at {recorded}"
            );
        }
    }
}

/// Every project's chain is linear: each run resumed the session the run before it left.
fn assert_linear(env: &TestEnv, project: &str) {
    let chain = env.baton_json(&["chain", project]);
    let links = chain.as_array().unwrap();
    for pair in links.windows(2) {
        assert_eq!(
            pair[1]["old_session_id"], pair[0]["new_session_id"],
            "{project}: the chain forks at {pair:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_dead_workers_jobs_finish_elsewhere_and_no_recorded_run_repeats() {
    let mut env = TestEnv::new().await;
    env.fast_timing("3");
    env.worker_env
        .push(("CLAUDE_EMULATOR_LATENCY_MS".into(), "400".into()));
    env.start_worker_with(&[("BATON_CONCURRENCY", "3")]);
    let builds: Vec<(String, String)> = (0..6)
        .map(|i| {
            let project = format!("crash-{i}");
            let build = env.enqueue(
                &project,
                &format!("{project}-v1"),
                "create",
                &format!("Build service {i}"),
            );
            (project, build)
        })
        .collect();
    env.wait_until(LIMIT, "the first worker running jobs", || {
        env.worker_has_child(0)
    });
    // The successor runs on a multi-thread runtime, the first on the default single thread: both
    // flavours share one fleet.
    env.start_worker_with(&[("BATON_CONCURRENCY", "3"), ("BATON_THREADS", "2")]);
    // Kill the first worker in the middle of a run.
    std::thread::sleep(Duration::from_millis(300));
    env.wait_until(LIMIT, "a run in flight on the first worker", || {
        env.worker_has_child(0)
    });
    let killed_at = Instant::now();
    env.signal_worker(0, Signal::SIGKILL);
    for (_, build) in &builds {
        let done = env.wait_finished(build, LIMIT);
        assert_eq!(done["status"], "completed", "{done}");
    }
    eprintln!(
        "all jobs done {:?} after the kill (claim timeout 3 s)",
        killed_at.elapsed()
    );
    let taken_over = builds
        .iter()
        .filter(|(_, b)| env.status(b)["attempt"].as_i64() > Some(1))
        .count();
    assert!(taken_over >= 1, "the dead worker's jobs were claimed again");
    assert_no_recorded_run_repeated(
        &env,
        &builds.iter().map(|(p, _)| p.clone()).collect::<Vec<_>>(),
    );
    for (project, _) in &builds {
        assert_linear(&env, project);
        assert_eq!(
            env.baton_json(&["chain", project])
                .as_array()
                .unwrap()
                .len(),
            4,
            "{project}: four runs recorded"
        );
    }
    env.assert_in_sync();
}

/// Starts a worker whose `slow-build` runs take `latency_ms`, enqueues such a build of `project`,
/// and stops the worker (SIGSTOP) once its run has started. Returns the build.
fn stall_first_worker(env: &mut TestEnv, project: &str, latency_ms: &str) -> String {
    env.fast_timing("2");
    env.slow_prompts("slow-build", latency_ms);
    env.start_worker();
    let build = env.enqueue(project, "v1", "create", "A slow-build of the app");
    env.wait_until(LIMIT, "the first worker's run starting", || {
        env.worker_has_child(0)
    });
    env.signal_worker(0, Signal::SIGSTOP);
    build
}

/// After SIGCONT, the stalled worker learns its entry was taken and its child ends; the project's
/// chain holds only the successor's four runs.
fn assert_stalled_worker_stopped(env: &TestEnv, project: &str) {
    env.wait_until(
        Duration::from_secs(10),
        "the stalled worker noticing",
        || env.worker_log(0).contains("another worker took this entry"),
    );
    env.wait_until(
        Duration::from_secs(10),
        "the stalled worker's child ending",
        || !env.worker_has_child(0),
    );
    let chain = env.baton_json(&["chain", project]);
    assert_eq!(chain.as_array().unwrap().len(), 4, "no late write: {chain}");
    assert_linear(env, project);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stalled_worker_cannot_overwrite_its_successor() {
    let mut env = TestEnv::new().await;
    let build = stall_first_worker(&mut env, "stall", "8000");
    env.start_worker();
    env.wait_until(LIMIT, "the second worker claiming the job", || {
        env.status(&build)["attempt"].as_i64() >= Some(2)
    });
    env.signal_worker(0, Signal::SIGCONT);
    let done = env.wait_finished(&build, LIMIT);
    assert_eq!(done["status"], "completed", "{done}");
    assert_stalled_worker_stopped(&env, "stall");
    // Its child was killed before it could finish: only the successor's build run succeeded.
    assert_eq!(
        successful_runs_of(&env, "slow-build"),
        1,
        "the stalled worker's run never completed"
    );
    env.assert_in_sync();
}

/// Watches worker 0's run and `build`'s claims until another worker claims the build, and fails
/// unless worker 0's run had ended by then: two runs must never resume one session at once.
fn assert_run_ends_before_takeover(env: &TestEnv, build: &str) {
    let mut run_ended = None;
    let started = Instant::now();
    let claimed = loop {
        if run_ended.is_none() && !env.worker_has_child(0) {
            run_ended = Some(started.elapsed());
        }
        if env.status(build)["attempt"].as_i64() >= Some(2) {
            break started.elapsed();
        }
        assert!(
            started.elapsed() < LIMIT,
            "the successor never claimed the job"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    let run_ended = run_ended.unwrap_or_else(|| {
        panic!(
            "worker 0's run was still going when its job was taken over {claimed:?} in: two runs \
             could resume one session at once; logs:\n{}",
            env.worker_logs()
        )
    });
    assert!(run_ended <= claimed, "{run_ended:?} after {claimed:?}");
    // The worker did not end it itself (it was stopped, or had no word from Redis): its
    // supervisor did.
    assert!(
        env.worker_log(0)
            .contains("did not renew its hold on its jobs in time"),
        "{}",
        env.worker_log(0)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stalled_workers_run_ends_before_a_replica_can_take_its_job_over() {
    let mut env = TestEnv::new().await;
    // Claim timeout 2 s: the stalled worker's hold runs out 1.5 s after its last heartbeat.
    let build = stall_first_worker(&mut env, "stall-overlap", "30000");
    env.start_worker();
    assert_run_ends_before_takeover(&env, &build);
    let done = env.wait_finished(&build, LIMIT);
    assert_eq!(done["status"], "completed", "{done}");
    env.signal_worker(0, Signal::SIGCONT);
    assert_stalled_worker_stopped(&env, "stall-overlap");
    env.assert_in_sync();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_worker_cut_off_from_redis_stops_its_run_before_a_replica_takes_the_job_over() {
    let mut env = TestEnv::new().await;
    env.fast_timing("2");
    env.slow_prompts("slow-build", "30000");
    let redis = RedisCut::start().await;
    env.start_worker_with(&[("REDIS_URL", &redis.url)]);
    let build = env.enqueue("cut-off", "v1", "create", "A slow-build of the app");
    env.wait_until(LIMIT, "the first worker's run starting", || {
        env.worker_has_child(0)
    });
    // The first worker runs on, but no heartbeat of its reaches Redis any more.
    redis.cut();
    env.start_worker();
    assert_run_ends_before_takeover(&env, &build);
    let done = env.wait_finished(&build, LIMIT);
    assert_eq!(done["status"], "completed", "{done}");
    // Its run ended by the supervisor was neither retried nor held against the job.
    env.wait_until(LIMIT, "the cut-off worker giving the job up", || {
        env.worker_log(0)
            .contains("the run was stopped, since another replica")
    });
    assert_eq!(
        successful_runs_of(&env, "slow-build"),
        1,
        "only the successor's build run ran to its end"
    );
    redis.restore();
    let chain = env.baton_json(&["chain", "cut-off"]);
    assert_eq!(chain.as_array().unwrap().len(), 4, "{chain}");
    assert_linear(&env, "cut-off");
    env.assert_in_sync();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_worker_whose_redis_connections_go_silent_reconnects_and_runs_new_jobs() {
    let mut env = TestEnv::new().await;
    env.fast_timing("2");
    let redis = RedisCut::start().await;
    env.start_worker_with(&[("REDIS_URL", &redis.url)]);
    let first = env.enqueue("silent", "v1", "create", "Build the app");
    assert_eq!(env.wait_finished(&first, LIMIT)["status"], "completed");
    // The worker now waits for entries in a blocking read: its reply will never come.
    redis.silence();
    let second = env.enqueue("silent", "v2", "update", "Change the app");
    let done = env.wait_finished(&second, LIMIT);
    assert_eq!(done["status"], "completed", "{done}");
    // Both its reading connection and its shared one were given up and opened anew.
    let log = env.worker_log(0);
    assert!(log.contains("presumed dead"), "{log}");
    assert!(
        log.contains("Redis stopped answering on its connection; opening a new one"),
        "{log}"
    );
    let (_, metrics) = baton_tests::http_get(&env.http_addr(0), "/metrics");
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("baton_redis_reconnects_total ") && !l.ends_with(" 0")),
        "{metrics}"
    );
    assert_linear(&env, "silent");
    env.assert_in_sync();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stalled_worker_whose_successor_already_finished_stops_its_run() {
    let mut env = TestEnv::new().await;
    let build = stall_first_worker(&mut env, "overtaken", "30000");
    // The successor's runs are quick: it ends the entry while the first worker still sleeps.
    env.start_worker_with(&[("CLAUDE_EMULATOR_LATENCY_MS", "0")]);
    assert_eq!(env.wait_finished(&build, LIMIT)["status"], "completed");
    env.signal_worker(0, Signal::SIGCONT);
    // The entry is nobody's now but still on the stream: it was ended, not lost, so the stalled
    // worker's run is stopped rather than run on.
    assert_stalled_worker_stopped(&env, "overtaken");
    assert!(
        !env.worker_log(0).contains("Redis lost"),
        "{}",
        env.worker_log(0)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn runs_of_one_project_never_overlap_and_keep_enqueue_order() {
    let mut env = TestEnv::new().await;
    env.fast_timing("5");
    env.worker_env
        .push(("CLAUDE_EMULATOR_LATENCY_MS".into(), "15".into()));
    env.start_worker();
    env.start_worker();
    let mut order: HashMap<String, Vec<String>> = HashMap::new();
    let mut all = Vec::new();
    for round in 0..5 {
        for p in 0..20 {
            let project = format!("order-{p}");
            let kind = if round == 0 { "create" } else { "update" };
            let build = env.enqueue(
                &project,
                &format!("{project}-v{round}"),
                kind,
                &format!("Change {round} of {project}"),
            );
            order.entry(project).or_default().push(build.clone());
            all.push(build);
        }
    }
    for build in &all {
        assert_eq!(env.wait_finished(build, LIMIT)["status"], "completed");
    }
    // From the CLI's own log: per project folder, no run starts before the previous one ended.
    let mut by_cwd: HashMap<String, Vec<(String, String)>> = HashMap::new();
    for run in env.emulator_runs() {
        let (Some(start), Some(end)) = (run["started_at"].as_str(), run["ended_at"].as_str())
        else {
            continue;
        };
        by_cwd
            .entry(run["cwd"].as_str().unwrap().to_string())
            .or_default()
            .push((start.to_string(), end.to_string()));
    }
    assert_eq!(by_cwd.len(), 20);
    for (cwd, mut runs) in by_cwd {
        assert_eq!(runs.len(), 20, "{cwd}: five jobs of four runs");
        runs.sort();
        for pair in runs.windows(2) {
            assert!(
                pair[1].0 >= pair[0].1,
                "{cwd}: a run started at {} before the one before it ended at {}",
                pair[1].0,
                pair[0].1
            );
        }
    }
    for (project, builds) in &order {
        let chain = env.baton_json(&["chain", project]);
        let mut ran: Vec<String> = Vec::new();
        for link in chain.as_array().unwrap() {
            let b = link["build_id"].as_str().unwrap().to_string();
            if ran.last() != Some(&b) {
                ran.push(b);
            }
        }
        assert_eq!(&ran, builds, "{project}: jobs ran in enqueue order");
        assert_linear(&env, project);
    }
    env.assert_in_sync();
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_hands_a_long_run_back_to_another_worker_at_once() {
    let mut env = TestEnv::new().await;
    // A claim timeout far longer than the test may wait: only a handback can explain a quick takeover.
    env.fast_timing("120");
    env.slow_prompts("long-run", "3000");
    env.start_worker();
    let build = env.enqueue("handback", "v1", "create", "A long-run build");
    env.wait_until(LIMIT, "the first worker's run starting", || {
        env.worker_has_child(0)
    });
    env.start_worker();
    let stopped = Instant::now();
    env.signal_worker(0, Signal::SIGTERM);
    assert_eq!(
        env.wait_worker(0),
        Some(0),
        "the worker exits cleanly after its grace"
    );
    env.wait_until(
        Duration::from_secs(30),
        "the other worker taking the job",
        || env.status(&build)["attempt"].as_i64() >= Some(2),
    );
    let taken = stopped.elapsed();
    assert!(
        taken < Duration::from_secs(30),
        "taken over after {taken:?}, not after the 120 s claim timeout"
    );
    assert_eq!(env.wait_finished(&build, LIMIT)["status"], "completed");
    assert!(
        env.worker_log(0).contains("handed entries back"),
        "{}",
        env.worker_log(0)
    );
    assert_linear(&env, "handback");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failing_run_is_retried_then_dead_lettered_and_can_be_replayed() {
    let mut env = TestEnv::new().await;
    env.fast_timing("5");
    let fault_file = env.dir.path().join("faults");
    std::fs::write(&fault_file, "crash").unwrap();
    env.worker_env.push((
        "CLAUDE_EMULATOR_FAULT_FILE".into(),
        fault_file.display().to_string(),
    ));
    env.worker_env
        .push(("CLAUDE_EMULATOR_FAULT_MATCH".into(), "fragile".into()));
    env.worker_env
        .push(("BATON_MAX_RUN_ATTEMPTS".into(), "3".into()));
    env.start_worker();
    let build = env.enqueue("fragile", "v1", "create", "A fragile build");
    let failed = env.wait_finished(&build, LIMIT);
    assert_eq!(failed["status"], "failed");
    assert!(
        failed["last_error"].as_str().unwrap().contains("crashed"),
        "{failed}"
    );
    let crashes = env
        .emulator_runs()
        .iter()
        .filter(|r| r["outcome"] == "crash")
        .count();
    assert_eq!(crashes, 3, "BATON_MAX_RUN_ATTEMPTS runs, then it gives up");
    let letters = env.baton_json(&["dlq", "list"]);
    let letter = &letters.as_array().unwrap()[0];
    assert!(
        letter["fields"]["reason"]
            .as_str()
            .unwrap()
            .contains("crashed"),
        "{letter}"
    );
    assert!(
        letter["fields"]["payload"]
            .as_str()
            .unwrap()
            .contains(&build)
    );
    let id = letter["id"].as_str().unwrap().to_string();
    let shown = env.baton_json(&["dlq", "show", &id]);
    assert_eq!(shown["fields"]["attempts"], "1");
    for command in ["show", "replay", "purge"] {
        let out = env.baton(&["dlq", command, "garbage"]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "dlq {command}: {stderr}");
        assert!(stderr.contains("not a dead letter id"), "{stderr}");
    }

    // The cause goes away; a replay reopens the build and it completes.
    std::fs::write(&fault_file, "").unwrap();
    env.baton_json(&["dlq", "replay", &id]);
    env.wait_until(LIMIT, "the replayed build completing", || {
        env.status(&build)["status"] == "completed"
    });
    assert_eq!(
        env.baton_json(&["dlq", "list"]).as_array().unwrap().len(),
        0
    );
    env.assert_in_sync();
}

#[tokio::test(flavor = "multi_thread")]
async fn transient_failures_are_retried_until_the_job_completes() {
    let mut env = TestEnv::new().await;
    env.fast_timing("5");
    for (k, v) in [
        (
            "CLAUDE_EMULATOR_FAULT",
            "crash,rate_limited,hang_before_result",
        ),
        ("CLAUDE_EMULATOR_FAULT_RATE", "0.4"),
        ("CLAUDE_EMULATOR_SEED", "11"),
        ("CLAUDE_EMULATOR_RATE_LIMIT_RESET_SECS", "1"),
    ] {
        env.worker_env.push((k.into(), v.into()));
    }
    env.worker_env
        .push(("BATON_MAX_RUN_ATTEMPTS".into(), "8".into()));
    env.worker_env
        .push(("BATON_RUN_IDLE_TIMEOUT".into(), "1".into()));
    env.start_worker();
    let builds: Vec<String> = (0..3)
        .map(|i| {
            env.enqueue(
                &format!("flaky-{i}"),
                &format!("flaky-{i}-v1"),
                "create",
                "Build it",
            )
        })
        .collect();
    for b in &builds {
        assert_eq!(env.wait_finished(b, LIMIT)["status"], "completed");
    }
    let faults = env
        .emulator_runs()
        .iter()
        .filter(|r| r["outcome"] != "success" && r["outcome"] != "compacted")
        .count();
    assert!(faults > 0, "the seed injects some faults");
    for i in 0..3 {
        assert_linear(&env, &format!("flaky-{i}"));
    }
    env.assert_in_sync();
}

#[tokio::test(flavor = "multi_thread")]
async fn expired_credentials_pause_the_worker_instead_of_draining_the_queue() {
    let mut env = TestEnv::new().await;
    env.fast_timing("5");
    let fault_file = env.dir.path().join("faults");
    std::fs::write(&fault_file, "not_logged_in").unwrap();
    env.worker_env.push((
        "CLAUDE_EMULATOR_FAULT_FILE".into(),
        fault_file.display().to_string(),
    ));
    env.start_worker();
    let builds: Vec<String> = (0..3)
        .map(|i| {
            env.enqueue(
                &format!("auth-{i}"),
                &format!("auth-{i}-v1"),
                "create",
                "Build it",
            )
        })
        .collect();
    env.wait_until(LIMIT, "the worker pausing", || {
        env.worker_log(0).contains("paused: taking no jobs")
    });
    std::thread::sleep(Duration::from_secs(1));
    let dead = env.dead_letter_count().await;
    assert_eq!(dead, 0, "nothing is dead-lettered for expired credentials");
    let waiting = env.status(&builds[0]);
    assert_ne!(waiting["status"], "failed", "{waiting}");
    // Credentials come back: the probe notices and the jobs run.
    std::fs::write(&fault_file, "").unwrap();
    for b in &builds {
        assert_eq!(env.wait_finished(b, LIMIT)["status"], "completed");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn chat_plan_runs_once_in_plan_mode_on_the_newest_session() {
    let mut env = TestEnv::new().await;
    env.start_worker();
    let create = env.enqueue("planner", "v1", "create", "Build a blog");
    env.wait_finished(&create, LIMIT);
    let plan = env.enqueue(
        "planner",
        "v1-plan",
        "chat_plan",
        "Plan the comments feature",
    );
    let done = env.wait_finished(&plan, LIMIT);
    assert_eq!(done["status"], "completed", "{done}");
    let runs = done["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 1);
    assert_eq!(runs[0]["step"], "chat_plan");
    let chain = env.baton_json(&["chain", "planner"]);
    let last = chain.as_array().unwrap().last().unwrap();
    assert_eq!(last["source"], "chat_plan");
    assert_eq!(
        last["old_session_id"],
        chain.as_array().unwrap()[3]["new_session_id"],
        "it resumed the newest session"
    );
    let plan_run = env
        .emulator_runs()
        .into_iter()
        .find(|r| r["prompt"] == "Plan the comments feature")
        .unwrap();
    let argv: Vec<&str> = plan_run["argv"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(argv.contains(&"--permission-mode=plan"), "{argv:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_compaction_that_fails_does_not_fail_the_job() {
    let mut env = TestEnv::new().await;
    env.fast_timing("5");
    env.worker_env
        .push(("CLAUDE_EMULATOR_FAULT".into(), "crash".into()));
    env.worker_env
        .push(("CLAUDE_EMULATOR_FAULT_MATCH".into(), "/compact".into()));
    env.worker_env
        .push(("BATON_MAX_RUN_ATTEMPTS".into(), "2".into()));
    env.start_worker();
    let build = env.enqueue("compactless", "v1", "create", "Build it");
    let done = env.wait_finished(&build, LIMIT);
    assert_eq!(done["status"], "completed", "{done}");
    let chain = env.baton_json(&["chain", "compactless"]);
    let compact = chain.as_array().unwrap().last().unwrap();
    assert_eq!(compact["source"], "compact");
    assert!(
        compact["note"]
            .as_str()
            .unwrap()
            .contains("compaction did not happen"),
        "{compact}"
    );
    assert_eq!(
        compact["old_session_id"], compact["new_session_id"],
        "the job keeps its session"
    );
    env.assert_in_sync();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_project_path_that_leaves_the_workspace_through_a_symlink_is_refused() {
    let mut env = TestEnv::new().await;
    std::fs::create_dir_all(env.workspace()).unwrap();
    std::os::unix::fs::symlink(env.dir.path(), env.workspace().join("escape")).unwrap();
    env.start_worker();
    let build = env.baton_json(&[
        "enqueue",
        "--project",
        "sly",
        "--version",
        "v1",
        "--kind",
        "create",
        "--prompt",
        "x",
        "--project-path",
        "escape/made-outside",
    ])["build_id"]
        .as_str()
        .unwrap()
        .to_string();
    let done = env.wait_finished(&build, LIMIT);
    assert_eq!(done["status"], "failed");
    assert!(
        done["last_error"]
            .as_str()
            .unwrap()
            .contains("outside BATON_WORKSPACE_ROOT"),
        "{done}"
    );
    assert!(env.emulator_runs().is_empty(), "no CLI ran");
    assert!(
        !env.dir.path().join("made-outside").exists(),
        "nothing was created outside the workspace"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_run_cut_off_mid_turn_is_resumed_not_redone() {
    let mut env = TestEnv::new().await;
    env.fast_timing("2");
    env.slow_prompts("cut-off", "4000");
    env.start_worker();
    let build = env.enqueue("cutoff", "cutoff-v1", "create", "Build the cut-off app");
    env.wait_until(LIMIT, "the first run starting", || env.worker_has_child(0));
    // The run's session is checkpointed as soon as the CLI names it.
    let mut redis = env.redis().await;
    let key = format!("claude:session:{build}");
    let mut checkpoint = Value::Null;
    env.wait_until(
        Duration::from_secs(10),
        "the start-of-run checkpoint",
        || {
            let raw: Option<String> =
                futures_block(redis::cmd("GET").arg(&key).query_async(&mut redis));
            checkpoint = raw
                .and_then(|r| serde_json::from_str(&r).ok())
                .unwrap_or(Value::Null);
            checkpoint["phase"] == "started"
        },
    );
    let started_session = checkpoint["sessionId"].as_str().unwrap().to_string();
    env.signal_worker(0, Signal::SIGKILL);
    // The host comes back (a restarted pod keeps its volume): the cut-off run's transcript, never
    // recorded, is still on its disk.
    env.start_worker_on("host-0", &[]);
    let done = env.wait_finished(&build, LIMIT);
    assert_eq!(done["status"], "completed", "{done}");
    // The successor resumed the cut-off run's session instead of starting over.
    let build_run = &done["runs"][0];
    assert_eq!(build_run["step"], "build");
    assert_eq!(
        build_run["old_session_id"],
        Value::Null,
        "the chain still starts fresh"
    );
    assert_eq!(build_run["new_session_id"], started_session.as_str());
    let resumed = env
        .emulator_runs()
        .into_iter()
        .find(|r| r["outcome"] == "success" && r["prompt"] == "Build the cut-off app")
        .expect("the successor's build run");
    assert_eq!(resumed["session_in"], started_session.as_str());
    env.assert_in_sync();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_redis_that_loses_its_data_loses_no_job_and_runs_no_project_twice_at_once() {
    let mut env = TestEnv::new().await;
    env.fast_timing("30");
    env.slow_prompts("long-run", "3000");
    env.start_worker();
    let running = env.enqueue("kept", "kept-v1", "create", "A long-run build");
    env.wait_until(LIMIT, "the job's run starting", || env.worker_has_child(0));
    let waiting = env.enqueue("kept", "kept-v2", "update", "Add a footer");
    let mut redis = env.redis().await;
    env.wait_until(LIMIT, "the worker holding the waiting entry", || {
        futures_block(
            redis::cmd("XPENDING")
                .arg(&env.stream)
                .arg("baton-workers")
                .query_async::<Vec<redis::Value>>(&mut redis),
        )
        .is_some_and(|summary| summary.first() == Some(&redis::Value::Int(2)))
    });

    // Redis loses everything of this stream, as a restart without its data does (only this test's
    // keys: other tests share the server).
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{}*", env.stream))
        .query_async(&mut redis)
        .await
        .unwrap();
    assert!(keys.contains(&env.stream), "{keys:?}");
    redis::cmd("DEL")
        .arg(&keys)
        .query_async::<i64>(&mut redis)
        .await
        .unwrap();
    let after = env.enqueue("after", "after-v1", "create", "Build a page");

    for build in [&running, &waiting, &after] {
        assert_eq!(env.wait_finished(build, LIMIT)["status"], "completed");
    }
    let log = env.worker_logs();
    for said in [
        "created it again",
        "Redis lost this running entry",
        "Redis lost this waiting entry",
        "enqueued the lost entry's job again",
    ] {
        assert!(log.contains(said), "no {said:?} in:\n{log}");
    }
    // The job that ran on kept its project's lease: the copy of the waiting one ran after it,
    // never beside it, and no run was repeated (eight runs for two jobs).
    let mut runs: Vec<(String, String)> = env
        .emulator_runs()
        .iter()
        .filter(|r| r["cwd"].as_str().is_some_and(|c| c.ends_with("/kept")))
        .filter_map(|r| {
            Some((
                r["started_at"].as_str()?.into(),
                r["ended_at"].as_str()?.into(),
            ))
        })
        .collect();
    assert_eq!(runs.len(), 8, "two jobs of four runs: {runs:?}");
    runs.sort();
    for pair in runs.windows(2) {
        assert!(pair[1].0 >= pair[0].1, "runs of kept overlap: {pair:?}");
    }
    let chain = env.baton_json(&["chain", "kept"]);
    let builds: Vec<&str> = chain
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["build_id"].as_str().unwrap())
        .collect();
    assert_eq!(builds.len(), 8);
    assert!(
        builds[..4].iter().all(|b| *b == running) && builds[4..].iter().all(|b| *b == waiting),
        "jobs ran in enqueue order: {builds:?}"
    );
    assert_linear(&env, "kept");
    assert_no_recorded_run_repeated(&env, &["after".into()]);
    env.assert_in_sync();
    let (_, metrics) = baton_tests::http_get(&env.http_addr(0), "/metrics");
    for line in [
        "baton_lost_entries_total 2",
        "baton_group_recreations_total 1",
    ] {
        assert!(metrics.contains(line), "no {line:?} in\n{metrics}");
    }
}

/// Runs a Redis future to completion from inside a synchronous poll closure.
fn futures_block<T>(f: impl std::future::Future<Output = redis::RedisResult<T>>) -> Option<T> {
    tokio::task::block_in_place(|| tokio::runtime::Handle::current().block_on(f)).ok()
}
