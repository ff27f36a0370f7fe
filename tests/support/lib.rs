//! A test environment for end-to-end tests: a fresh Postgres database, a fresh stream, a scratch
//! workspace, and the real `baton` and `baton-worker` binaries driving the emulator. Every worker
//! is its own host, as replicas are deployed: its own `HOME` and `CLAUDE_CONFIG_DIR`, so a session
//! that does not travel between machines fails here as it would in production. Needs Redis at
//! `REDIS_URL` and Postgres at `DATABASE_URL` (the justfile provides them).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use sqlx::Connection;

pub mod api;
pub mod webhook;

/// Redis for tests: `REDIS_URL`, or the local default.
pub fn redis_url() -> String {
    std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

/// Postgres for tests: `DATABASE_URL`, or the local default. Each environment makes its own database.
pub fn admin_database_url() -> String {
    std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// One isolated Baton installation: its own database, stream, workspace and CLI config.
pub struct TestEnv {
    /// The database's name.
    pub db_name: String,
    /// The URL of this environment's database.
    pub database_url: String,
    /// Redis.
    pub redis_url: String,
    /// This environment's job stream.
    pub stream: String,
    /// Scratch folder holding workspace, Claude config, logs.
    pub dir: tempfile::TempDir,
    /// Extra environment for workers (for example the emulator's session-id mode).
    pub worker_env: Vec<(String, String)>,
    workers: Vec<Child>,
}

impl TestEnv {
    /// Creates the database, applies the migrations with `baton migrate`, and picks a stream name.
    pub async fn new() -> TestEnv {
        let db_name = format!("baton_e2e_{}", uuid::Uuid::new_v4().simple());
        let admin = admin_database_url();
        let mut conn = sqlx::PgConnection::connect(&admin)
            .await
            .unwrap_or_else(|e| panic!("Postgres must answer at DATABASE_URL ({admin}): {e}"));
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {db_name}")))
            .execute(&mut conn)
            .await
            .expect("create the test database");
        let env = TestEnv {
            database_url: baton_ledger::url_with_database(&admin, &db_name),
            db_name,
            redis_url: redis_url(),
            stream: format!("baton-e2e:{}", uuid::Uuid::new_v4()),
            dir: tempfile::tempdir().expect("scratch folder"),
            worker_env: Vec::new(),
            workers: Vec::new(),
        };
        let out = env.baton(&["migrate"]);
        assert!(
            out.status.success(),
            "baton migrate failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        env
    }

    /// The folder projects live in.
    pub fn workspace(&self) -> PathBuf {
        self.dir.path().join("workspace")
    }

    /// The emulator's run log (one JSON line per CLI run).
    pub fn emulator_log(&self) -> PathBuf {
        self.dir.path().join("emulator-runs.jsonl")
    }

    /// A command for one of the workspace binaries, configured for this environment.
    pub fn command(&self, binary: &str) -> Command {
        let mut cmd = Command::new(claude_emulator::sibling_binary(binary));
        cmd.env("REDIS_URL", &self.redis_url)
            .env("DATABASE_URL", &self.database_url)
            .env("BATON_STREAM", &self.stream)
            .env("BATON_GROUP", "baton-workers")
            .env("BATON_WORKSPACE_ROOT", self.workspace())
            .env("BATON_CLAUDE_BIN", claude_emulator::binary())
            .env("CLAUDE_EMULATOR_LOG", self.emulator_log())
            .env("BATON_LOG_FORMAT", "json")
            // Many workers share this machine: each takes a free port and logs it.
            .env("BATON_METRICS_ADDR", "127.0.0.1:0")
            .stdin(Stdio::null());
        cmd
    }

    /// Runs `baton` with these arguments.
    pub fn baton(&self, args: &[&str]) -> Output {
        self.command("baton")
            .args(args)
            .output()
            .expect("run baton")
    }

    /// Runs `baton ... --json`, asserts success and parses stdout.
    pub fn baton_json(&self, args: &[&str]) -> Value {
        let mut all = args.to_vec();
        all.push("--json");
        let out = self.baton(&all);
        assert!(
            out.status.success(),
            "baton {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).expect("baton printed JSON")
    }

    /// Starts a worker replica on a host of its own; its log goes to `worker-<n>.log` in the
    /// scratch folder.
    pub fn start_worker(&mut self) -> u32 {
        self.start_worker_with(&[])
    }

    /// Starts a worker replica on a host of its own (`host-<n>`), with extra environment on top of
    /// [`TestEnv::worker_env`].
    pub fn start_worker_with(&mut self, extra: &[(&str, &str)]) -> u32 {
        let host = format!("host-{}", self.workers.len());
        self.start_worker_on(&host, extra)
    }

    /// The folders of the host named `host`: its `HOME`, and in it the CLI's config folder.
    pub fn host_home(&self, host: &str) -> PathBuf {
        self.dir.path().join("hosts").join(host)
    }

    /// The CLI's config folder (`CLAUDE_CONFIG_DIR`) on the host named `host`.
    pub fn host_claude_dir(&self, host: &str) -> PathBuf {
        self.host_home(host).join(".claude")
    }

    /// Every host's folders, under which each keeps its CLI's sessions.
    pub fn hosts_dir(&self) -> PathBuf {
        self.dir.path().join("hosts")
    }

    /// Starts a worker replica on the host named `host`: a host that ran a worker before keeps
    /// its folders, as a restarted pod with its volume, or a VM, does.
    pub fn start_worker_on(&mut self, host: &str, extra: &[(&str, &str)]) -> u32 {
        let log_path = self
            .dir
            .path()
            .join(format!("worker-{}.log", self.workers.len()));
        let log = std::fs::File::create(&log_path).expect("worker log");
        let home = self.host_home(host);
        std::fs::create_dir_all(&home).expect("the host's home");
        let child = self
            .command("baton-worker")
            .env("HOME", &home)
            .env("CLAUDE_CONFIG_DIR", self.host_claude_dir(host))
            .envs(
                self.worker_env
                    .iter()
                    .map(|(k, v)| (k.as_str(), v.as_str())),
            )
            .envs(extra.iter().copied())
            .stdout(log.try_clone().expect("log handle"))
            .stderr(log)
            .spawn()
            .expect("start baton-worker");
        let pid = child.id();
        self.workers.push(child);
        pid
    }

    /// Short timings for workers started from now on: heartbeats, claims and retries in fractions
    /// of a second, so faults show within a test's patience.
    pub fn fast_timing(&mut self, claim_idle: &str) {
        for (k, v) in [
            ("BATON_HEARTBEAT", "0.3"),
            ("BATON_CLAIM_IDLE", claim_idle),
            ("BATON_RETRY_MIN_DELAY", "0.05"),
            ("BATON_RETRY_MAX_DELAY", "0.2"),
            ("BATON_AUTH_PROBE_INTERVAL", "0.3"),
            ("BATON_SHUTDOWN_GRACE", "1"),
        ] {
            self.worker_env.push((k.into(), v.into()));
        }
    }

    /// Makes the emulator take `latency_ms` over every run whose prompt contains `marker`, for
    /// workers started from now on.
    pub fn slow_prompts(&mut self, marker: &str, latency_ms: &str) {
        for (k, v) in [
            ("CLAUDE_EMULATOR_LATENCY_MS", latency_ms),
            ("CLAUDE_EMULATOR_LATENCY_MATCH", marker),
        ] {
            self.worker_env.push((k.into(), v.into()));
        }
    }

    /// Asserts that `baton sync-check` finds every project in sync.
    pub fn assert_in_sync(&self) {
        let out = self.baton(&["sync-check"]);
        assert!(
            out.status.success(),
            "sync-check: {}",
            String::from_utf8_lossy(&out.stdout)
        );
    }

    /// Enqueues a job with `baton enqueue --json`; returns its build id.
    pub fn enqueue(&self, project: &str, version: &str, kind: &str, prompt: &str) -> String {
        let v = self.baton_json(&[
            "enqueue",
            "--project",
            project,
            "--version",
            version,
            "--kind",
            kind,
            "--prompt",
            prompt,
        ]);
        assert!(
            v["stream_id"].as_str().is_some_and(|s| s.contains('-')),
            "stream id in {v}"
        );
        v["build_id"].as_str().expect("build id").to_string()
    }

    /// Polls `baton status --json` until the build ends (completed, failed or cancelled), or
    /// `limit` passes.
    pub fn wait_finished(&self, build: &str, limit: Duration) -> Value {
        let start = Instant::now();
        loop {
            let v = self.baton_json(&["status", build]);
            let status = v["status"].as_str().unwrap_or_default().to_string();
            if matches!(status.as_str(), "completed" | "failed" | "cancelled") {
                return v;
            }
            assert!(
                start.elapsed() < limit,
                "build {build} still {status} after {limit:?}; worker logs:\n{}",
                self.worker_logs()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Sends a signal to worker `n` (in start order).
    pub fn signal_worker(&self, n: usize, signal: nix::sys::signal::Signal) {
        let pid = nix::unistd::Pid::from_raw(self.workers[n].id() as i32);
        nix::sys::signal::kill(pid, signal).expect("signal the worker");
    }

    /// Waits for worker `n` to exit and returns its exit code.
    pub fn wait_worker(&mut self, n: usize) -> Option<i32> {
        self.workers[n].wait().ok().and_then(|s| s.code())
    }

    /// Whether worker `n` has a CLI child running.
    pub fn worker_has_child(&self, n: usize) -> bool {
        let worker = self.workers[n].id() as i32;
        process_ids().any(|pid| {
            // The worker's other child is its supervisor.
            live_process(pid).is_some_and(|p| p.parent == worker)
                && !command_line(pid).contains(baton_agent::supervise::SUPERVISE_FLAG)
        })
    }

    /// The address worker `n` serves `/metrics`, `/healthz` and `/readyz` on, from its log.
    pub fn http_addr(&self, n: usize) -> String {
        let mut addr = None;
        self.wait_until(Duration::from_secs(30), "the worker serving HTTP", || {
            addr = self.worker_log(n).lines().find_map(|l| {
                let v: Value = serde_json::from_str(l).ok()?;
                (v["message"] == "serving /metrics, /healthz and /readyz")
                    .then(|| v["addr"].as_str().map(str::to_string))?
            });
            addr.is_some()
        });
        addr.expect("found above")
    }

    /// Entries in the dead-letter stream.
    pub async fn dead_letter_count(&self) -> i64 {
        let mut redis = self.redis().await;
        redis::cmd("XLEN")
            .arg(baton_core::dead_letter_stream(&self.stream))
            .query_async(&mut redis)
            .await
            .expect("XLEN of the dead-letter stream")
    }

    /// The log of worker `n`.
    pub fn worker_log(&self, n: usize) -> String {
        std::fs::read_to_string(self.dir.path().join(format!("worker-{n}.log"))).unwrap_or_default()
    }

    /// A build's state, from `baton status --json`.
    pub fn status(&self, build: &str) -> Value {
        self.baton_json(&["status", build])
    }

    /// Polls until `done` holds, failing with `what` and the worker logs after `limit`.
    pub fn wait_until(&self, limit: Duration, what: &str, mut done: impl FnMut() -> bool) {
        let start = Instant::now();
        while !done() {
            assert!(
                start.elapsed() < limit,
                "{what} did not happen within {limit:?}; worker logs:\n{}",
                self.worker_logs()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Every worker log, for failure messages.
    pub fn worker_logs(&self) -> String {
        (0..self.workers.len())
            .map(|i| {
                std::fs::read_to_string(self.dir.path().join(format!("worker-{i}.log")))
                    .unwrap_or_default()
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// The emulator's run log, parsed.
    pub fn emulator_runs(&self) -> Vec<Value> {
        read_json_lines(&self.emulator_log())
    }

    /// A connection to this environment's database, working in Baton's schema.
    pub async fn db(&self) -> sqlx::PgConnection {
        let mut conn = sqlx::PgConnection::connect(&self.database_url)
            .await
            .expect("connect to the test database");
        sqlx::query("SET search_path TO baton")
            .execute(&mut conn)
            .await
            .expect("work in Baton's schema");
        conn
    }

    /// A build's progress events with their stream ids, oldest first.
    pub async fn build_events(&self, build: &str) -> Vec<(String, Value)> {
        let mut redis = self.redis().await;
        let entries: redis::streams::StreamRangeReply = redis::cmd("XRANGE")
            .arg(baton_core::events::events_stream(&self.stream))
            .arg("-")
            .arg("+")
            .query_async(&mut redis)
            .await
            .unwrap();
        entries
            .ids
            .iter()
            .map(|e| match &e.map["event"] {
                redis::Value::BulkString(b) => (e.id.clone(), serde_json::from_slice(b).unwrap()),
                other => panic!("not an event: {other:?}"),
            })
            .filter(|(_, e): &(String, Value)| e["build_id"] == build)
            .collect()
    }

    /// A connection to Redis.
    pub async fn redis(&self) -> redis::aio::MultiplexedConnection {
        redis::Client::open(self.redis_url.as_str())
            .expect("redis url")
            .get_multiplexed_async_connection()
            .await
            .expect("connect to redis")
    }
}

fn read_json_lines(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

impl Drop for TestEnv {
    fn drop(&mut self) {
        for w in &mut self.workers {
            let _ = w.kill();
            let _ = w.wait();
        }
        let admin = admin_database_url();
        let db_name = self.db_name.clone();
        let redis_url = self.redis_url.clone();
        let stream = self.stream.clone();
        // Drop runs inside the test's runtime, so the cleanup gets a runtime of its own.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .ok()?;
            rt.block_on(async {
                if let Ok(mut conn) = sqlx::PgConnection::connect(&admin).await {
                    let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
                        "DROP DATABASE IF EXISTS {db_name} WITH (FORCE)"
                    )))
                    .execute(&mut conn)
                    .await;
                }
                if let Ok(queue) =
                    baton_queue::Queue::connect(&redis_url, &stream, "baton-workers").await
                {
                    let _ = queue.delete_all_keys().await;
                }
            });
            Some(())
        })
        .join();
    }
}

/// A plain HTTP/1.1 GET on loopback: (status code, body).
pub fn http_get(addr: &str, path: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).expect("connect to the worker's HTTP port");
    stream.set_read_timeout(Some(Duration::from_secs(10))).ok();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .expect("send the request");
    let mut raw = String::new();
    stream.read_to_string(&mut raw).expect("read the response");
    let status = raw
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = raw
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

/// Where a live process stands in the process tree.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcessInfo {
    /// Its parent's pid.
    pub parent: i32,
    /// Its process group.
    pub group: i32,
}

/// The pids in `/proc`.
pub fn process_ids() -> impl Iterator<Item = i32> {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_string_lossy().parse().ok())
}

/// Parent and group of `pid`, or `None` when it is gone or a zombie.
pub fn live_process(pid: i32) -> Option<ProcessInfo> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // After the command: state, parent, group.
    let (_, rest) = stat.rsplit_once(')')?;
    let mut fields = rest.split_whitespace();
    if fields.next()?.starts_with(['Z', 'X']) {
        return None;
    }
    Some(ProcessInfo {
        parent: fields.next()?.parse().ok()?,
        group: fields.next()?.parse().ok()?,
    })
}

/// The command line of `pid`, arguments separated by NUL; empty when it is gone.
pub fn command_line(pid: i32) -> String {
    let raw = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    String::from_utf8_lossy(&raw).into_owned()
}

/// A TCP proxy in front of Redis that a test can cut, to stand for a worker cut off from Redis
/// while the rest of the fleet still reaches it. While cut, it closes every connection through it
/// and each new one at once. It can also make the open connections go silent, as when a firewall
/// or NAT forgets them: closed towards Redis, open and mute towards the worker.
pub struct RedisCut {
    /// `redis://` address of the proxy, for one worker's `REDIS_URL`.
    pub url: String,
    /// The proxy's `host:port`.
    pub addr: String,
    cut: std::sync::Arc<std::sync::atomic::AtomicBool>,
    links: std::sync::Arc<std::sync::Mutex<Vec<tokio::task::AbortHandle>>>,
    silence: tokio::sync::watch::Sender<u32>,
    accept: tokio::task::JoinHandle<()>,
}

impl RedisCut {
    /// Starts the proxy in front of [`redis_url`] on a free port, on the caller's runtime.
    pub async fn start() -> RedisCut {
        let target = redis_url()
            .trim_start_matches("redis://")
            .trim_end_matches('/')
            .to_string();
        RedisCut::start_to(target).await
    }

    /// Starts the same proxy in front of any TCP service at `target` (`host:port`), for one
    /// worker's Postgres, say. [`RedisCut::addr`] is where to point the worker.
    pub async fn start_to(target: String) -> RedisCut {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the proxy");
        let addr = listener.local_addr().expect("address").to_string();
        let url = format!("redis://{addr}");
        let cut = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let links = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let (silence, silenced) = tokio::sync::watch::channel(0u32);
        let accept = tokio::spawn({
            let (cut, links) = (cut.clone(), links.clone());
            async move {
                while let Ok((mut inbound, _)) = listener.accept().await {
                    if cut.load(std::sync::atomic::Ordering::SeqCst) {
                        continue;
                    }
                    let target = target.clone();
                    let mut silenced = silenced.clone();
                    silenced.mark_unchanged();
                    let link = tokio::spawn(async move {
                        let Ok(mut outbound) = tokio::net::TcpStream::connect(&target).await else {
                            return;
                        };
                        let muted = tokio::select! {
                            _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => false,
                            _ = silenced.changed() => true,
                        };
                        if muted {
                            drop(outbound);
                            // Held open, never read nor written, until the test ends.
                            std::future::pending::<()>().await;
                            drop(inbound);
                        }
                    });
                    links.lock().expect("links").push(link.abort_handle());
                }
            }
        });
        RedisCut {
            url,
            addr,
            cut,
            links,
            silence,
            accept,
        }
    }

    /// Makes every open connection through the proxy go silent; new ones get through.
    pub fn silence(&self) {
        self.silence.send_modify(|n| *n += 1);
    }

    /// Cuts every connection through the proxy, and every new one until [`RedisCut::restore`].
    pub fn cut(&self) {
        self.cut.store(true, std::sync::atomic::Ordering::SeqCst);
        for link in self.links.lock().expect("links").drain(..) {
            link.abort();
        }
    }

    /// Lets connections through again.
    pub fn restore(&self) {
        self.cut.store(false, std::sync::atomic::Ordering::SeqCst);
    }
}

impl Drop for RedisCut {
    fn drop(&mut self) {
        self.accept.abort();
        for link in self.links.lock().expect("links").drain(..) {
            link.abort();
        }
    }
}
