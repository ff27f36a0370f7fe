//! Every job accounted for, and no job able to touch another build: build ids reused, a ledger
//! that shares the application's database, and a stream that holds only the backlog.

use std::time::Duration;

use baton_tests::TestEnv;
use sqlx::Connection;

const LIMIT: Duration = Duration::from_secs(60);

async fn xadd(env: &TestEnv, payload: &serde_json::Value) -> String {
    let mut redis = env.redis().await;
    redis::cmd("XADD")
        .arg(&env.stream)
        .arg("*")
        .arg("job")
        .arg(payload.to_string())
        .query_async(&mut redis)
        .await
        .unwrap()
}

/// The session a build's last recorded run left, from `baton status --json`.
fn left(status: &serde_json::Value) -> String {
    status["runs"]
        .as_array()
        .and_then(|runs| runs.last())
        .and_then(|run| run["new_session_id"].as_str())
        .unwrap_or_else(|| panic!("no run in {status}"))
        .to_string()
}

/// The payload the ledger keeps for a build: what the producer put on the stream.
async fn stored_payload(env: &TestEnv, build: &str) -> serde_json::Value {
    sqlx::query_scalar("SELECT payload FROM builds WHERE build_id = $1")
        .bind(build)
        .fetch_one(&mut env.db().await)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_build_id_seen_again_is_one_build_and_another_builds_id_is_refused_untouched() {
    let mut env = TestEnv::new().await;
    env.start_worker();
    let build = env.enqueue("alpha", "a1", "create", "Create index.html");
    let done = env.wait_finished(&build, LIMIT);
    assert_eq!(done["status"], "completed", "{done}");
    let runs_before = env.emulator_runs().len();
    let events_before = env.build_events(&build).await.len();

    // The same job twice more (a backend's retry, with a later enqueue time), then the same id for
    // another project and for another prompt of the same project.
    let mut same = stored_payload(&env, &build).await;
    xadd(&env, &same).await;
    same["enqueued_at"] = "2026-12-01T00:00:00Z".into();
    xadd(&env, &same).await;
    let mut other_project = same.clone();
    other_project["project_id"] = "beta".into();
    other_project["project_path"] = "beta".into();
    xadd(&env, &other_project).await;
    let mut other_prompt = same.clone();
    other_prompt["prompt"] = "Delete everything".into();
    xadd(&env, &other_prompt).await;

    env.wait_until(LIMIT, "two dead letters", || {
        tokio::task::block_in_place(|| {
            tokio::runtime::Handle::current().block_on(env.dead_letter_count())
        }) == 2
    });
    let letters = env.baton_json(&["dlq", "list"]);
    for letter in letters.as_array().unwrap() {
        let reason = letter["fields"]["reason"].as_str().unwrap();
        assert!(reason.contains("belongs to another build"), "{letter}");
    }
    // Wait for the duplicates' acknowledgement too: every entry ended, and so left the stream.
    wait_stream_empty(&env, "every entry ended");

    // One build: no step ran again, and nothing of it changed.
    assert_eq!(env.emulator_runs().len(), runs_before, "no step ran twice");
    let after = env.status(&build);
    assert_eq!(after["status"], "completed", "{after}");
    assert_eq!(after["project_id"], "alpha", "{after}");
    assert_eq!(left(&after), left(&done), "{after}");
    assert_eq!(
        stored_payload(&env, &build).await["prompt"],
        "Create index.html"
    );
    let mut db = env.db().await;
    let beta: i64 = sqlx::query_scalar("SELECT count(*) FROM projects WHERE project_id = 'beta'")
        .fetch_one(&mut db)
        .await
        .unwrap();
    assert_eq!(beta, 0, "the refused job created no project");
    // The duplicates told the backend again that the build completed; the refusals said nothing
    // under the build's id, which the backend follows for the first build.
    let events = env.build_events(&build).await;
    assert!(
        events[events_before..]
            .iter()
            .all(|(_, e)| e["event"] == "job_completed"),
        "{events:?}"
    );
    env.assert_in_sync();

    // The producer refuses a reused id before anything is enqueued.
    let length_before = stream_length(&env, &env.stream).await;
    let out = env.baton(&[
        "enqueue",
        "--project",
        "alpha",
        "--version",
        "a1",
        "--kind",
        "update",
        "--prompt",
        "Something else",
        "--build-id",
        &build,
    ]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("belongs to another build"), "{stderr}");
    let length_after = stream_length(&env, &env.stream).await;
    assert_eq!(length_after, length_before, "nothing enqueued");
}

#[tokio::test(flavor = "multi_thread")]
async fn baton_lives_in_a_schema_of_its_own_beside_the_applications_tables() {
    let mut env = TestEnv::new().await;
    // The application's database already has its own `projects` and `builds`.
    let mut admin = sqlx::PgConnection::connect(&env.database_url)
        .await
        .unwrap();
    for statement in [
        "DROP SCHEMA baton CASCADE",
        "CREATE TABLE public.projects (id serial PRIMARY KEY, name text NOT NULL)",
        "CREATE TABLE public.builds (id serial PRIMARY KEY, project integer REFERENCES public.projects)",
        "INSERT INTO public.projects (name) VALUES ('the app''s own')",
    ] {
        sqlx::query(statement).execute(&mut admin).await.unwrap();
    }
    let out = env.baton(&["migrate"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    env.start_worker();
    let build = env.enqueue("shared-db", "v1", "create", "Create index.html");
    assert_eq!(env.wait_finished(&build, LIMIT)["status"], "completed");
    env.assert_in_sync();

    let tables: Vec<(String, String)> = sqlx::query_as(
        "SELECT table_schema::text, table_name::text FROM information_schema.tables
         WHERE table_name IN ('projects', 'builds', '_sqlx_migrations') ORDER BY 1, 2",
    )
    .fetch_all(&mut admin)
    .await
    .unwrap();
    let want = [
        ("baton", "_sqlx_migrations"),
        ("baton", "builds"),
        ("baton", "projects"),
        ("public", "builds"),
        ("public", "projects"),
    ];
    assert_eq!(
        tables,
        want.map(|(s, t)| (s.to_string(), t.to_string())).to_vec()
    );
    let functions: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
         WHERE p.proname LIKE 'baton\\_%' AND n.nspname <> 'baton'",
    )
    .fetch_one(&mut admin)
    .await
    .unwrap();
    assert_eq!(functions, 0, "every function is in Baton's schema");
    let app: Vec<String> = sqlx::query_scalar("SELECT name FROM public.projects")
        .fetch_all(&mut admin)
        .await
        .unwrap();
    assert_eq!(app, ["the app's own"]);

    // Another schema is a separate ledger in the same database; a name that would need quoting is
    // refused, naming the variable.
    let other = env
        .command("baton")
        .args(["migrate"])
        .env("BATON_DB_SCHEMA", "baton_staging")
        .output()
        .unwrap();
    assert!(other.status.success());
    let chain = env
        .command("baton")
        .args(["status", &build])
        .env("BATON_DB_SCHEMA", "baton_staging")
        .output()
        .unwrap();
    assert!(!chain.status.success(), "the staging ledger has no builds");
    let bad = env
        .command("baton")
        .args(["migrate"])
        .env("BATON_DB_SCHEMA", "x; DROP TABLE projects")
        .output()
        .unwrap();
    assert!(!bad.status.success());
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("BATON_DB_SCHEMA"),
        "{}",
        String::from_utf8_lossy(&bad.stderr)
    );
}

async fn stream_length(env: &TestEnv, key: &str) -> i64 {
    let mut redis = env.redis().await;
    redis::cmd("XLEN")
        .arg(key)
        .query_async(&mut redis)
        .await
        .unwrap()
}

/// Waits until every entry of the job stream has ended, and so left it.
fn wait_stream_empty(env: &TestEnv, what: &str) {
    env.wait_until(LIMIT, what, || {
        tokio::task::block_in_place(|| {
            tokio::runtime::Handle::current().block_on(stream_length(env, &env.stream))
        }) == 0
    });
}

#[tokio::test(flavor = "multi_thread")]
async fn the_stream_holds_only_the_backlog_and_dead_letters_are_capped() {
    let mut env = TestEnv::new().await;
    let builds: Vec<String> = (0..6)
        .map(|i| env.enqueue(&format!("p{}", i % 3), "v1", "create", "Create index.html"))
        .collect();
    // Two entries that are not jobs, for the dead-letter stream.
    for n in 0..3 {
        xadd(&env, &serde_json::json!({"v": 1, "junk": n})).await;
    }
    assert_eq!(stream_length(&env, &env.stream).await, 9, "the backlog");
    env.start_worker_with(&[("BATON_DEAD_LETTER_MAXLEN", "1")]);
    for build in &builds {
        assert_eq!(env.wait_finished(build, LIMIT)["status"], "completed");
    }
    wait_stream_empty(&env, "the stream emptying");
    // `MAXLEN ~` trims whole nodes of the stream: a cap of 1 keeps no more than one node's worth,
    // never everything once the cap is passed by far.
    let dead = format!("{}:dead", env.stream);
    for n in 0..200 {
        xadd(&env, &serde_json::json!({"v": 1, "junk": n})).await;
    }
    wait_stream_empty(&env, "the junk ending");
    let kept = stream_length(&env, &dead).await;
    assert!(kept < 203, "dead letters are capped: {kept} kept");
    let (status, metrics) = baton_tests::http_get(&env.http_addr(0), "/metrics");
    assert_eq!(status, 200);
    for line in [
        "baton_stream_length 0",
        "baton_stream_lag 0",
        "baton_stream_pending 0",
    ] {
        assert!(metrics.contains(line), "missing {line:?} in\n{metrics}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_reset_during_a_running_job_lets_it_finish_and_the_next_job_starts_fresh() {
    let mut env = TestEnv::new().await;
    env.slow_prompts("slow-update", "2000");
    env.start_worker();
    let created = env.enqueue("resetting", "v1", "create", "Create index.html");
    let first = env.wait_finished(&created, LIMIT);
    let session = left(&first);
    let running = env.baton_json(&[
        "enqueue",
        "--project",
        "resetting",
        "--version",
        "v2",
        "--kind",
        "update",
        "--prompt",
        "A slow-update change",
        "--steps",
        "build,compact",
    ])["build_id"]
        .as_str()
        .unwrap()
        .to_string();
    env.wait_until(LIMIT, "the update running", || env.worker_has_child(0));
    let out = env.baton(&["session", "reset", "resetting"]);
    assert!(out.status.success());
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.contains("a job is running"), "{said}");

    // The running job finishes on its session and records both its runs.
    let done = env.wait_finished(&running, LIMIT);
    assert_eq!(done["status"], "completed", "{done}");
    assert_eq!(left(&done), session, "{done}");
    let chain = env.baton_json(&["chain", "resetting"]);
    let sources: Vec<&str> = chain
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["source"].as_str().unwrap())
        .collect();
    assert_eq!(sources.last(), Some(&"compact"), "{chain}");

    // The next job starts fresh, after the reset the ledger records at its claim.
    let next = env.enqueue("resetting", "v3", "update", "Add a footer");
    let after = env.wait_finished(&next, LIMIT);
    assert_eq!(after["status"], "completed", "{after}");
    assert_ne!(left(&after), session, "{after}");
    let chain = env.baton_json(&["chain", "resetting"]);
    let links = chain.as_array().unwrap();
    let reset = links
        .iter()
        .position(|t| t["source"] == "reset")
        .expect("a reset link");
    assert_eq!(links[reset]["old_session_id"], session.as_str());
    let fresh = &links[reset + 1];
    assert_eq!(fresh["build_id"], next.as_str(), "{chain}");
    assert!(fresh["old_session_id"].is_null(), "{chain}");
    assert_eq!(fresh["fresh_reason"], "reset", "{chain}");
    env.assert_in_sync();
}

#[tokio::test(flavor = "multi_thread")]
async fn after_prune_a_stale_session_of_the_projects_own_chain_is_still_its_own() {
    let mut env = TestEnv::new().await;
    env.start_worker();
    let create = env.enqueue("pruned", "v1", "create", "Create index.html");
    let old = left(&env.wait_finished(&create, LIMIT));
    assert!(env.baton(&["session", "reset", "pruned"]).status.success());
    let fresh = env.enqueue("pruned", "v2", "update", "Add a footer");
    let newest = left(&env.wait_finished(&fresh, LIMIT));
    assert_ne!(old, newest);

    let pruned = env.baton_json(&["prune", "--older-than", "0s", "--force"]);
    assert!(pruned["transitions"].as_u64().unwrap() > 0, "{pruned}");
    // The backend still holds the first session's id: stale, but the project's own.
    let stale = env.baton_json(&[
        "enqueue",
        "--project",
        "pruned",
        "--version",
        "v3",
        "--kind",
        "update",
        "--prompt",
        "Add a header",
        "--previous-session",
        &old,
    ])["build_id"]
        .as_str()
        .unwrap()
        .to_string();
    let done = env.wait_finished(&stale, LIMIT);
    assert_eq!(done["status"], "completed", "{done}");
    assert_eq!(
        done["runs"][0]["old_session_id"].as_str(),
        Some(newest.as_str()),
        "it resumed the project's newest session: {done}"
    );
}

/// A Redis of the test's own, on a free port, with `args`; stopped when dropped.
struct PrivateRedis {
    child: std::process::Child,
    url: String,
    _dir: tempfile::TempDir,
}

impl PrivateRedis {
    fn start(args: &[&str]) -> PrivateRedis {
        let dir = tempfile::tempdir().unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = std::process::Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .arg("--dir")
            .arg(dir.path())
            .args(args)
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("redis-server on PATH");
        let url = format!("redis://127.0.0.1:{port}");
        let client = redis::Client::open(url.as_str()).unwrap();
        let start = std::time::Instant::now();
        while client.get_connection().is_err() {
            assert!(start.elapsed() < LIMIT, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        PrivateRedis {
            child,
            url,
            _dir: dir,
        }
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_redis_that_keeps_nothing_is_reported_and_a_clean_exit_leaves_the_group() {
    let volatile = PrivateRedis::start(&["--save", "", "--appendonly", "no"]);
    let durable = PrivateRedis::start(&["--save", "", "--appendonly", "yes"]);
    let mut env = TestEnv::new().await;
    env.start_worker_with(&[("REDIS_URL", &volatile.url)]);
    env.start_worker_with(&[("REDIS_URL", &durable.url)]);
    let (status, body) = baton_tests::http_get(&env.http_addr(0), "/readyz");
    assert_eq!(status, 200, "{body}");
    assert!(
        body.contains("warning: redis keeps nothing on disk"),
        "{body}"
    );
    let (status, body) = baton_tests::http_get(&env.http_addr(1), "/readyz");
    assert_eq!((status, body.trim()), (200, "ready"), "{body}");
    assert!(env.worker_log(0).contains("redis keeps nothing on disk"));

    // SIGTERM: the worker ends cleanly and takes its consumer out of the group.
    let stream = env.stream.clone();
    let consumers = |url: &str| -> usize {
        let mut redis = redis::Client::open(url).unwrap().get_connection().unwrap();
        let list: Vec<redis::Value> = redis::cmd("XINFO")
            .arg("CONSUMERS")
            .arg(&stream)
            .arg("baton-workers")
            .query(&mut redis)
            .unwrap();
        list.len()
    };
    // A consumer joins the group with its first read of an entry.
    let out = env
        .command("baton")
        .args([
            "enqueue",
            "--project",
            "volatile",
            "--version",
            "v1",
            "--kind",
            "create",
        ])
        .args(["--prompt", "Create index.html", "--json"])
        .env("REDIS_URL", &volatile.url)
        .output()
        .unwrap();
    assert!(out.status.success());
    let build: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    env.wait_finished(build["build_id"].as_str().unwrap(), LIMIT);
    assert_eq!(consumers(&volatile.url), 1);
    env.signal_worker(0, nix::sys::signal::Signal::SIGTERM);
    assert_eq!(env.wait_worker(0), Some(0));
    assert_eq!(consumers(&volatile.url), 0, "{}", env.worker_log(0));
}

#[tokio::test(flavor = "multi_thread")]
async fn requeue_puts_back_only_its_own_streams_builds() {
    let env = TestEnv::new().await;
    let ours = env.enqueue("mine", "v1", "create", "Create index.html");
    let other_stream = format!("{}-other", env.stream);
    let out = env
        .command("baton")
        .args([
            "enqueue",
            "--project",
            "theirs",
            "--version",
            "v1",
            "--kind",
            "create",
        ])
        .args(["--prompt", "Create index.html", "--json"])
        .env("BATON_STREAM", &other_stream)
        .output()
        .unwrap();
    assert!(out.status.success());
    let theirs: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();

    let ours_listed = env.baton_json(&["requeue", "--idle-for", "0s", "--dry-run"]);
    let ids: Vec<&str> = ours_listed
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["build_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [ours.as_str()]);
    let out = env
        .command("baton")
        .args(["requeue", "--idle-for", "0s", "--dry-run", "--json"])
        .env("BATON_STREAM", &other_stream)
        .output()
        .unwrap();
    let theirs_listed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(theirs_listed[0]["build_id"], theirs["build_id"]);
    assert_eq!(theirs_listed.as_array().unwrap().len(), 1);
    let mut redis = env.redis().await;
    let _: i64 = redis::cmd("DEL")
        .arg(&other_stream)
        .query_async(&mut redis)
        .await
        .unwrap();
}
