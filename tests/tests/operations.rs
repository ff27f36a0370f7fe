//! Operating a worker: metrics and health endpoints, progress events, and `baton enqueue --wait`.

use std::time::Duration;

use baton_tests::{TestEnv, http_get};
use serde_json::Value;
use sqlx::Connection;

const LIMIT: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread")]
async fn a_running_worker_answers_metrics_health_and_readiness() {
    let mut env = TestEnv::new().await;
    env.start_worker();
    let addr = env.http_addr(0);
    let (status, body) = http_get(&addr, "/healthz");
    assert_eq!((status, body.trim()), (200, "ok"));
    let (status, body) = http_get(&addr, "/readyz");
    assert_eq!(
        (status, body.lines().next()),
        (200, Some("ready")),
        "{body}"
    );

    let build = env.enqueue("observed", "observed-v1", "create", "Build a dashboard");
    env.wait_finished(&build, LIMIT);
    let (status, metrics) = http_get(&addr, "/metrics");
    assert_eq!(status, 200);
    for line in [
        "baton_jobs_total{kind=\"create\",outcome=\"completed\"} 1",
        "baton_agent_runs_total{source=\"build\",outcome=\"success\"} 1",
        "baton_agent_runs_total{source=\"metadata\",outcome=\"success\"} 2",
        "baton_resume_decisions_total{decision=\"fresh_create\"} 1",
        "baton_jobs_in_flight 0",
        // An ended entry leaves the stream.
        "baton_stream_length 0",
        "baton_stream_lag 0",
        "baton_stream_pending 0",
        "baton_dead_letter_length 0",
        "baton_claims_total 0",
        "baton_fenced_writes_total 0",
        "baton_ledger_errors_total 0",
        "baton_job_duration_seconds_count 1",
        "baton_agent_run_duration_seconds_count 4",
    ] {
        assert!(metrics.contains(line), "missing {line:?} in\n{metrics}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn readiness_says_why_the_worker_takes_no_jobs() {
    let mut env = TestEnv::new().await;
    let faults = env.dir.path().join("faults");
    std::fs::write(&faults, "not_logged_in").unwrap();
    env.worker_env.push((
        "CLAUDE_EMULATOR_FAULT_FILE".into(),
        faults.display().to_string(),
    ));
    env.worker_env
        .push(("BATON_AUTH_PROBE_INTERVAL".into(), "0.3".into()));
    env.start_worker();
    let addr = env.http_addr(0);
    env.enqueue("locked-out", "locked-out-v1", "create", "Build it");
    env.wait_until(LIMIT, "the worker pausing", || {
        http_get(&addr, "/readyz").0 == 503
    });
    let (_, body) = http_get(&addr, "/readyz");
    assert!(
        body.contains("cannot authenticate") && body.contains("Not logged in"),
        "{body}"
    );
    std::fs::write(&faults, "").unwrap();
    env.wait_until(LIMIT, "the worker taking jobs again", || {
        http_get(&addr, "/readyz").0 == 200
    });
}

#[tokio::test(flavor = "multi_thread")]
async fn readiness_fails_while_the_worker_shuts_down() {
    let mut env = TestEnv::new().await;
    // A run long enough that the shutdown's grace is still running when readiness is asked.
    env.start_worker_with(&[
        ("CLAUDE_EMULATOR_LATENCY_MS", "3000"),
        ("BATON_SHUTDOWN_GRACE", "20"),
    ]);
    let addr = env.http_addr(0);
    env.enqueue("draining", "draining-v1", "create", "Build it");
    env.wait_until(LIMIT, "the first run to start", || env.worker_has_child(0));
    env.signal_worker(0, nix::sys::signal::Signal::SIGTERM);
    env.wait_until(LIMIT, "readiness to fail", || {
        http_get(&addr, "/readyz").0 == 503
    });
    let (_, body) = http_get(&addr, "/readyz");
    assert!(body.contains("shutting down"), "{body}");
    // Still alive while it drains: liveness must not get it killed before its jobs are handed on.
    assert_eq!(http_get(&addr, "/healthz").0, 200);
    assert_eq!(env.wait_worker(0), Some(0));
}

#[tokio::test(flavor = "multi_thread")]
async fn readiness_names_postgres_when_the_ledger_is_gone() {
    let mut env = TestEnv::new().await;
    env.start_worker();
    let addr = env.http_addr(0);
    assert_eq!(http_get(&addr, "/readyz").0, 200);
    let mut admin = sqlx::PgConnection::connect(&baton_tests::admin_database_url())
        .await
        .unwrap();
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "DROP DATABASE {} WITH (FORCE)",
        env.db_name
    )))
    .execute(&mut admin)
    .await
    .unwrap();
    env.wait_until(LIMIT, "readiness to fail", || {
        http_get(&addr, "/readyz").0 == 503
    });
    let (_, body) = http_get(&addr, "/readyz");
    assert!(body.contains("postgres: "), "{body}");
    assert!(!body.contains("redis: "), "Redis still answers: {body}");
}

#[tokio::test(flavor = "multi_thread")]
async fn every_state_change_is_published_as_an_event() {
    let mut env = TestEnv::new().await;
    env.start_worker();
    let build = env.enqueue("evented", "evented-v1", "create", "Build it");
    let done = env.wait_finished(&build, LIMIT);
    let events = env.build_events(&build).await;
    let types: Vec<&str> = events
        .iter()
        .map(|(_, e)| e["event"].as_str().unwrap())
        .collect();
    let mut expected = vec!["job_started"];
    for _ in 0..4 {
        expected.extend(["run_started", "session_seen", "run_finished"]);
    }
    expected.push("job_completed");
    assert_eq!(types, expected, "in the order they happened");
    let last = &events.last().unwrap().1;
    assert_eq!(last["session_id"], done["runs"][3]["new_session_id"]);
    assert!(
        events
            .iter()
            .all(|(_, e)| e["project_id"] == "evented" && e["at"].is_string())
    );
}

/// Every command Redis runs while it lives, as `MONITOR` prints them (one line each).
struct RedisMonitor {
    lines: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    reader: tokio::task::JoinHandle<()>,
}

impl RedisMonitor {
    async fn start(redis_url: &str) -> RedisMonitor {
        use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
        let addr = redis_url
            .trim_start_matches("redis://")
            .rsplit('@')
            .next()
            .unwrap()
            .split('/')
            .next()
            .unwrap()
            .to_string();
        let mut socket = tokio::net::TcpStream::connect(&addr).await.unwrap();
        socket.write_all(b"MONITOR\r\n").await.unwrap();
        let mut reader = tokio::io::BufReader::new(socket).lines();
        let first = reader.next_line().await.unwrap();
        assert_eq!(first.as_deref(), Some("+OK"), "MONITOR refused");
        let lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = lines.clone();
        let reader = tokio::spawn(async move {
            while let Ok(Some(line)) = reader.next_line().await {
                sink.lock().unwrap().push(line);
            }
        });
        RedisMonitor { lines, reader }
    }

    /// The lines seen so far that contain every one of `parts`.
    fn matching(&self, parts: &[&str]) -> Vec<String> {
        self.lines
            .lock()
            .unwrap()
            .iter()
            .filter(|l| parts.iter().all(|p| l.contains(p)))
            .cloned()
            .collect()
    }
}

impl Drop for RedisMonitor {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_run_over_within_the_progress_window_sends_its_progress_with_its_end() {
    let mut env = TestEnv::new().await;
    let monitor = RedisMonitor::start(&env.redis_url).await;
    // A window no run of the emulator at zero latency outlasts, so the test does not hang on timing.
    env.start_worker_with(&[("BATON_PROGRESS_WINDOW", "10")]);
    let build = env.enqueue("windowed", "windowed-v1", "create", "Build it");
    env.wait_finished(&build, LIMIT);
    let events = env.build_events(&build).await;
    let types: Vec<&str> = events
        .iter()
        .map(|(_, e)| e["event"].as_str().unwrap())
        .collect();
    assert_eq!(types.len(), 14, "{types:?}");
    assert_eq!(
        &types[1..4],
        ["run_started", "session_seen", "run_finished"],
        "every event still goes out, in order"
    );
    let key = format!("\"claude:session:{build}\"");
    env.wait_until(LIMIT, "the monitor to see the last checkpoint", || {
        monitor.matching(&["\"SET\"", &key]).len() >= 4
    });
    let checkpoints = monitor.matching(&["\"SET\"", &key]);
    assert_eq!(
        checkpoints.len(),
        4,
        "one checkpoint per run, not one at its start and one at its end: {checkpoints:#?}"
    );
    assert!(
        checkpoints.iter().all(|c| c.contains("finished")),
        "no start checkpoint: {checkpoints:#?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_zero_progress_window_sends_each_runs_start_checkpoint_as_soon_as_its_session_is_named() {
    let mut env = TestEnv::new().await;
    let monitor = RedisMonitor::start(&env.redis_url).await;
    env.start_worker_with(&[("BATON_PROGRESS_WINDOW", "0")]);
    let build = env.enqueue("immediate", "immediate-v1", "create", "Build it");
    env.wait_finished(&build, LIMIT);
    let types: Vec<String> = env
        .build_events(&build)
        .await
        .iter()
        .map(|(_, e)| e["event"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        &types[1..4],
        ["run_started", "session_seen", "run_finished"],
        "{types:?}"
    );
    let key = format!("\"claude:session:{build}\"");
    env.wait_until(LIMIT, "the monitor to see the last checkpoint", || {
        monitor.matching(&["\"SET\"", &key]).len() >= 8
    });
    let checkpoints = monitor.matching(&["\"SET\"", &key]);
    let started = checkpoints.iter().filter(|c| c.contains("started")).count();
    assert_eq!(
        (started, checkpoints.len()),
        (4, 8),
        "each run's start checkpoint goes out on its own: {checkpoints:#?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_slow_starting_cli_gets_its_run_started_before_it_names_a_session() {
    let mut env = TestEnv::new().await;
    // A CLI that takes its time before its first line, as the real one does while Node starts.
    let cli = env.dir.path().join("slow-start-claude");
    std::fs::write(
        &cli,
        format!(
            "#!/bin/sh\nsleep 0.3\nexec {} \"$@\"\n",
            claude_emulator::binary().display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&cli, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    env.start_worker_with(&[("BATON_CLAUDE_BIN", cli.to_str().unwrap())]);
    let build = env.enqueue("slowstart", "slowstart-v1", "create", "Build it");
    env.wait_finished(&build, LIMIT);
    let events = env.build_events(&build).await;
    let published_ms = |kind: &str, nth: usize| -> u64 {
        let (id, _) = events
            .iter()
            .filter(|(_, e)| e["event"] == kind)
            .nth(nth)
            .unwrap_or_else(|| panic!("no {kind} #{nth}: {events:?}"));
        id.split('-').next().unwrap().parse().unwrap()
    };
    for run in 0..4 {
        let started = published_ms("run_started", run);
        let seen = published_ms("session_seen", run);
        assert!(
            seen >= started + 200,
            "run {run}: run_started went out at {started}, session_seen at {seen}; the start must not wait for the session"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_jobs_log_lines_carry_its_build_project_step_and_sessions() {
    let mut env = TestEnv::new().await;
    env.start_worker_with(&[("BATON_LOG_FORMAT", "json")]);
    let create = env.enqueue("logged", "logged-v1", "create", "Build it");
    let created = env.wait_finished(&create, LIMIT);
    let update = env.enqueue("logged", "logged-v2", "update", "Change it");
    env.wait_finished(&update, LIMIT);
    env.wait_until(LIMIT, "both jobs' ends in the log", || {
        env.worker_log(0).matches("\"job ended\"").count() == 2
    });
    let session = created["runs"][3]["new_session_id"].as_str().unwrap();
    let log = env.worker_log(0);
    let lines: Vec<Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let of_job = |build: &str| -> Vec<&Value> {
        lines
            .iter()
            .filter(|l| l["span"]["build_id"] == build)
            .collect()
    };
    for build in [&create, &update] {
        let job = of_job(build);
        assert!(
            job.iter().all(|l| l["span"]["project_id"] == "logged"),
            "{log}"
        );
        let runs: Vec<_> = job
            .iter()
            .filter(|l| l["message"] == "agent run finished")
            .collect();
        assert_eq!(runs.len(), 4, "{log}");
        for run in &runs {
            for field in ["step", "session_in", "session_out"] {
                assert!(run[field].is_string(), "{field} missing in {run}");
            }
        }
        let ended: Vec<_> = job.iter().filter(|l| l["message"] == "job ended").collect();
        assert_eq!(ended.len(), 1, "{log}");
        assert_eq!(ended[0]["outcome"], "completed");
    }
    let first_run = |build: &str| {
        of_job(build)
            .into_iter()
            .find(|l| l["message"] == "agent run finished")
            .unwrap()
            .clone()
    };
    // The create starts fresh and says why; the update resumes the session the create left.
    assert_eq!(first_run(&create)["session_in"], "-");
    assert!(
        of_job(&create)
            .iter()
            .any(|l| l["message"] == "starting a fresh session" && l["reason"] == "create")
    );
    assert_eq!(first_run(&update)["session_in"], session);
    assert!(of_job(&update).iter().any(|l| l["message"]
        == "resuming the project's newest session"
        && l["session"] == session));
    let update_end = of_job(&update)
        .into_iter()
        .find(|l| l["message"] == "job ended")
        .unwrap();
    assert_eq!(update_end["session"], session);
}

#[tokio::test(flavor = "multi_thread")]
async fn enqueue_wait_follows_progress_and_exits_with_the_outcome() {
    let mut env = TestEnv::new().await;
    env.worker_env
        .push(("CLAUDE_EMULATOR_FAULT".into(), "max_turns".into()));
    env.worker_env
        .push(("CLAUDE_EMULATOR_FAULT_MATCH".into(), "doomed".into()));
    env.start_worker();
    let out = env.baton(&[
        "enqueue",
        "--project",
        "waited",
        "--version",
        "waited-v1",
        "--kind",
        "create",
        "--prompt",
        "Build it",
        "--wait",
    ]);
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for step in [
        "build",
        "metadata.recommendations",
        "metadata.documentation",
        "compact",
    ] {
        assert!(
            text.lines()
                .any(|l| l.starts_with(step) && l.contains("success in session")),
            "{step} in\n{text}"
        );
    }
    assert!(
        text.lines()
            .last()
            .unwrap()
            .starts_with("completed; the project's session is"),
        "{text}"
    );

    let out = env.baton(&[
        "enqueue",
        "--project",
        "waited",
        "--version",
        "waited-v2",
        "--kind",
        "update",
        "--prompt",
        "A doomed change",
        "--wait",
        "--json",
    ]);
    assert_eq!(out.status.code(), Some(1), "a failed job exits 1");
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["status"], "failed");
    assert!(v["error"].as_str().unwrap().contains("turn_limit"), "{v}");
}

#[tokio::test(flavor = "multi_thread")]
async fn enqueue_wait_times_out_saying_whether_the_job_ever_started() {
    let env = TestEnv::new().await;
    // No worker: the job stays queued.
    let out = env.baton(&[
        "enqueue",
        "--project",
        "unattended",
        "--version",
        "unattended-v1",
        "--kind",
        "create",
        "--prompt",
        "Build it",
        "--wait",
        "--timeout",
        "1",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "a timeout exits 3: {stderr}");
    assert!(
        stderr.contains("still queued (no worker started it) after the timeout"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_entry_of_a_build_that_already_ended_reports_how_it_ended() {
    let mut env = TestEnv::new().await;
    // A worker marked this build failed and died before dead-lettering its entry.
    let failed = env.enqueue("ended", "ended-v1", "create", "Build it");
    let mut db = env.db().await;
    sqlx::query(
        "UPDATE builds SET status = 'failed', last_error = 'build: boom', finished_at = now() WHERE build_id = $1",
    )
    .bind(&failed)
    .execute(&mut db)
    .await
    .unwrap();
    env.start_worker();
    let deadline = std::time::Instant::now() + LIMIT;
    while env.dead_letter_count().await == 0 {
        assert!(std::time::Instant::now() < deadline, "no dead letter");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let letters = env.baton_json(&["dlq", "list"]);
    assert_eq!(letters.as_array().unwrap().len(), 1, "{letters}");
    assert_eq!(letters[0]["fields"]["reason"], "build: boom", "{letters}");
    let events = env.build_events(&failed).await;
    let kinds: Vec<&str> = events
        .iter()
        .map(|(_, e)| e["event"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["job_failed"], "{events:?}");
    assert_eq!(events[0].1["error"], "build: boom");
    assert_eq!(env.status(&failed)["status"], "failed");

    // A copy of a completed build's entry is acknowledged, reporting the session the build left.
    let done = env.enqueue("ended", "ended-v2", "update", "Change it");
    let session = env.wait_finished(&done, LIMIT)["runs"][3]["new_session_id"]
        .as_str()
        .unwrap()
        .to_string();
    // The entry left the stream when it ended; the ledger keeps the job it carried.
    let payload: Value = sqlx::query_scalar("SELECT payload FROM builds WHERE build_id = $1")
        .bind(&done)
        .fetch_one(&mut db)
        .await
        .unwrap();
    let mut redis = env.redis().await;
    redis::cmd("XADD")
        .arg(&env.stream)
        .arg("*")
        .arg("job")
        .arg(payload.to_string())
        .query_async::<String>(&mut redis)
        .await
        .unwrap();
    let deadline = std::time::Instant::now() + LIMIT;
    loop {
        let completions: Vec<Value> = env
            .build_events(&done)
            .await
            .into_iter()
            .map(|(_, e)| e)
            .filter(|e| e["event"] == "job_completed")
            .collect();
        if completions.len() == 2 {
            assert_eq!(completions[1]["session_id"], session.as_str());
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{completions:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(env.dead_letter_count().await, 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn requeue_puts_back_a_build_redis_lost_before_any_worker_read_it() {
    let mut env = TestEnv::new().await;
    let lost = env.enqueue("forgotten", "forgotten-v1", "create", "Build it");
    // Redis loses the stream before any worker read it, as a restart without its data does.
    let mut redis = env.redis().await;
    redis::cmd("DEL")
        .arg(&env.stream)
        .query_async::<i64>(&mut redis)
        .await
        .unwrap();

    let dry = env.baton_json(&["requeue", "--idle-for", "0s", "--dry-run"]);
    assert_eq!(dry.as_array().unwrap().len(), 1, "{dry}");
    assert_eq!(dry[0]["build_id"], lost.as_str());
    assert_eq!(dry[0]["status"], "queued");
    assert!(dry[0]["stream_id"].is_null(), "{dry}");
    let length: i64 = redis::cmd("XLEN")
        .arg(&env.stream)
        .query_async(&mut redis)
        .await
        .unwrap();
    assert_eq!(length, 0, "a dry run enqueues nothing");
    let recent = env.baton_json(&["requeue", "--idle-for", "1h"]);
    assert_eq!(
        recent,
        serde_json::json!([]),
        "the build changed moments ago"
    );

    let done = env.baton_json(&["requeue", "--idle-for", "0s"]);
    assert!(done[0]["stream_id"].is_string(), "{done}");
    env.start_worker();
    assert_eq!(env.wait_finished(&lost, LIMIT)["status"], "completed");
    let after = env.baton_json(&["requeue", "--idle-for", "0s"]);
    assert_eq!(
        after,
        serde_json::json!([]),
        "a finished build is never requeued"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn enqueue_wait_takes_the_end_from_the_ledger_when_the_final_event_never_comes() {
    let env = TestEnv::new().await;
    let child = env
        .command("baton")
        .args([
            "enqueue",
            "--project",
            "unheard",
            "--version",
            "unheard-v1",
            "--kind",
            "create",
            "--prompt",
            "Build it",
            "--build-id",
            "unheard-build",
            "--wait",
            "--json",
            "--timeout",
            "60",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // The build ends in the ledger, and no event says so (as when publishing it failed).
    let mut db = env.db().await;
    env.wait_until(LIMIT, "the build queued in the ledger", || {
        env.baton(&["status", "unheard-build"]).status.success()
    });
    sqlx::query(
        "UPDATE builds SET status = 'failed', last_error = 'build: boom', finished_at = now() WHERE build_id = 'unheard-build'",
    )
    .execute(&mut db)
    .await
    .unwrap();
    let out = tokio::task::spawn_blocking(move || child.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(1),
        "a failed job exits 1: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["status"], "failed");
    assert_eq!(v["error"], "build: boom");
}

#[tokio::test(flavor = "multi_thread")]
async fn baton_whose_reader_went_away_exits_quietly_instead_of_panicking() {
    let mut env = TestEnv::new().await;
    env.start_worker();
    let build = env.enqueue("piped", "piped-v1", "create", "Build it");
    env.wait_finished(&build, LIMIT);
    // As `baton status X | head -1` once the reader has its line: the pipe's reading end is gone.
    let mut child = env
        .command("baton")
        .args(["status", &build])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(out.status.code(), Some(141), "{stderr}");
}

#[tokio::test(flavor = "multi_thread")]
async fn help_never_shows_a_secret_from_the_environment() {
    let env = TestEnv::new().await;
    for (binary, args) in [
        ("baton", vec!["status", "--help"]),
        ("baton", vec!["--help"]),
        ("baton-worker", vec!["--help"]),
    ] {
        let out = env
            .command(binary)
            .args(&args)
            .env(
                "DATABASE_URL",
                "postgres://baton:db-secret-pw@db.internal/baton",
            )
            .env("REDIS_URL", "redis://:redis-secret-pw@redis.internal:6379")
            .env("BATON_MCP_CONFIG", r#"{"token":"mcp-secret"}"#)
            .output()
            .unwrap();
        let help = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{binary} {args:?}");
        for secret in ["db-secret-pw", "redis-secret-pw", "mcp-secret"] {
            assert!(
                !help.contains(secret),
                "{binary} {args:?} shows {secret}:\n{help}"
            );
        }
        assert!(help.contains("DATABASE_URL"), "{help}");
        // It says that the secret reached the process, though.
        assert!(
            help.contains("[set; value hidden]"),
            "{binary} {args:?}:\n{help}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_refused_job_with_a_readable_build_id_ends_failed_where_the_backend_looks() {
    let mut env = TestEnv::new().await;
    env.start_worker();
    let kept = env.enqueue("kept", "k1", "create", "Create index.html");
    assert_eq!(
        env.wait_finished(&kept, Duration::from_secs(60))["status"],
        "completed"
    );
    let mut redis = env.redis().await;
    let shaped = |build: &str, prompt: &str| {
        serde_json::json!({"v": 1, "build_id": build, "kind": "create", "project_id": "x",
            "version_id": "x1", "user_id": "u", "prompt": prompt, "project_path": "x",
            "enqueued_at": "2026-11-21T05:00:00Z"})
    };
    for payload in [
        serde_json::json!({"v": 2, "build_id": "bad-version", "project_id": "x"}),
        shaped("bad-prompt", ""),
        // An invalid job that reuses a finished build's id, for another project.
        serde_json::json!({"v": 1, "build_id": kept, "project_id": "other", "kind": "create"}),
    ] {
        let _: String = redis::cmd("XADD")
            .arg(&env.stream)
            .arg("*")
            .arg("job")
            .arg(payload.to_string())
            .query_async(&mut redis)
            .await
            .unwrap();
    }
    env.wait_until(Duration::from_secs(30), "three dead letters", || {
        tokio::task::block_in_place(|| {
            tokio::runtime::Handle::current().block_on(env.dead_letter_count())
        }) == 3
    });
    for (build, says) in [("bad-version", "version"), ("bad-prompt", "prompt")] {
        let status = env.status(build);
        assert_eq!(status["status"], "failed", "{status}");
        assert!(
            status["last_error"].as_str().unwrap().contains(says),
            "{status}"
        );
    }
    let untouched = env.status(&kept);
    assert_eq!(untouched["status"], "completed");
    assert_eq!(untouched["project_id"], "kept");
    for build in ["bad-version", "bad-prompt"] {
        let events = env.build_events(build).await;
        assert!(
            events.iter().any(|(_, e)| e["event"] == "job_failed"),
            "{events:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_run_whose_record_meets_a_postgres_outage_is_recorded_not_run_again() {
    let mut env = TestEnv::new().await;
    // The worker reaches Postgres through a proxy the test cuts while the run goes on.
    let host_port = env
        .database_url
        .split('@')
        .nth(1)
        .and_then(|rest| rest.split('/').next())
        .expect("host:port in DATABASE_URL")
        .to_string();
    let pg = baton_tests::RedisCut::start_to(host_port.clone()).await;
    let through_proxy = env.database_url.replacen(&host_port, &pg.addr, 1);
    env.slow_prompts("slow-build", "2000");
    env.start_worker_with(&[("DATABASE_URL", &through_proxy)]);
    let build = env.baton_json(&[
        "enqueue",
        "--project",
        "blip",
        "--version",
        "v1",
        "--kind",
        "create",
        "--prompt",
        "A slow-build app",
        "--steps",
        "build",
    ])["build_id"]
        .as_str()
        .unwrap()
        .to_string();
    env.wait_until(Duration::from_secs(30), "the run starting", || {
        env.worker_has_child(0)
    });
    pg.cut();
    env.wait_until(
        Duration::from_secs(30),
        "the run ending during the outage",
        || {
            env.emulator_runs()
                .iter()
                .any(|r| r["prompt"] == "A slow-build app")
        },
    );
    env.wait_until(
        Duration::from_secs(30),
        "a failed record being retried",
        || {
            env.worker_log(0)
                .contains("recording the run failed; trying again")
        },
    );
    pg.restore();
    let done = env.wait_finished(&build, Duration::from_secs(90));
    assert_eq!(done["status"], "completed", "{done}\n{}", env.worker_logs());
    let runs = env
        .emulator_runs()
        .into_iter()
        .filter(|r| r["prompt"] == "A slow-build app")
        .count();
    assert_eq!(runs, 1, "the finished run was recorded, not run again");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_version_id_belongs_to_its_project() {
    let mut env = TestEnv::new().await;
    env.start_worker();
    for project in ["alpha", "beta"] {
        let build = env.enqueue(project, "1", "create", "Create index.html");
        let done = env.wait_finished(&build, Duration::from_secs(60));
        assert_eq!(done["status"], "completed", "{project}: {done}");
    }
    env.assert_in_sync();
}
