//! One run of the `claude` CLI: spawned in its own process group with a cleared environment, its
//! stream-json read line by line under watchdogs, and its outcome classified once.
//!
//! The contract this follows is `docs/claude-cli.md`.

pub mod outcome;
pub mod stream;
pub mod supervise;

use std::collections::VecDeque;
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;
use tokio::time::{sleep_until, timeout};
use tokio_util::sync::CancellationToken;

pub use outcome::{Exit, Outcome, Stop, classify};
pub use stream::{StreamState, Usage};

/// Environment variables a child gets by default; everything else is cleared.
/// A trailing `*` matches a prefix. The emulator's knobs are listed so tests and the demo can steer it.
pub const DEFAULT_ENV_ALLOW: &[&str] = &[
    "PATH",
    "HOME",
    "LANG",
    "LC_ALL",
    "TERM",
    "TMPDIR",
    "USER",
    "CLAUDE_CONFIG_DIR",
    "ANTHROPIC_API_KEY",
    "ANTHROPIC_AUTH_TOKEN",
    "ANTHROPIC_BASE_URL",
    "ANTHROPIC_MODEL",
    "CLAUDE_CODE_OAUTH_TOKEN",
    "CLAUDE_CODE_USE_BEDROCK",
    "CLAUDE_CODE_USE_VERTEX",
    "CLAUDE_EMULATOR_*",
];

/// What the real CLI answers when asked to bypass permissions as root, before doing anything.
pub const BYPASS_AS_ROOT: &str =
    "--dangerously-skip-permissions cannot be used with root/sudo privileges for security reasons";

/// Why a run in `permission_mode` cannot start from this process: the CLI refuses
/// `bypassPermissions` to root, so a worker running as root must not ask for it.
pub fn refused_as_root(permission_mode: Option<&str>) -> Option<&'static str> {
    (permission_mode == Some("bypassPermissions") && nix::unistd::geteuid().is_root())
        .then_some(BYPASS_AS_ROOT)
}

/// Variables that never reach a child, whatever the allow-list says: the worker's own secrets.
const ENV_DENY: &[&str] = &["DATABASE_URL", "REDIS_URL", "BATON_*"];

/// How the agent runs the CLI. Every limit is configurable; see the README for the variables.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// The CLI to run (`BATON_CLAUDE_BIN`).
    pub program: PathBuf,
    /// The longest a run may take in all.
    pub wall_clock: Duration,
    /// The longest a run may print nothing.
    pub idle: Duration,
    /// How long the process may linger after its `result` line before it is ended.
    pub post_result_grace: Duration,
    /// How long each signal (SIGINT, then SIGTERM) is given before the next, ending with SIGKILL.
    pub kill_step: Duration,
    /// An executable that calls [`supervise::run_if_supervisor`] first thing (the worker's own):
    /// started once as the agent's supervisor, it ends the agent's runs when the agent's process
    /// ends. `None` leaves runs unguarded.
    pub supervisor: Option<PathBuf>,
    /// Names (or `PREFIX*` patterns) of this process's environment variables passed to the child,
    /// read once, when the agent is made; values need not be UTF-8.
    pub env_allow: Vec<String>,
    /// Variables set for every run on top of the allowed ones (for example a `CLAUDE_CONFIG_DIR`
    /// per worker). The deny-list applies to these too.
    pub env: Vec<(String, String)>,
    /// Longest stdout line read; longer lines are skipped.
    pub max_line_bytes: usize,
    /// How much of stderr's end is kept for error reports.
    pub stderr_tail_bytes: usize,
}

impl Default for AgentConfig {
    fn default() -> Self {
        AgentConfig {
            program: PathBuf::from("claude"),
            wall_clock: Duration::from_secs(30 * 60),
            idle: Duration::from_secs(5 * 60),
            post_result_grace: Duration::from_secs(5),
            kill_step: Duration::from_secs(3),
            supervisor: None,
            env_allow: DEFAULT_ENV_ALLOW.iter().map(|s| s.to_string()).collect(),
            env: Vec::new(),
            max_line_bytes: 8 * 1024 * 1024,
            stderr_tail_bytes: 8 * 1024,
        }
    }
}

/// What to ask the CLI for in one run.
#[derive(Debug, Clone, Default)]
pub struct RunRequest {
    /// The project's directory; the child's cwd.
    pub cwd: PathBuf,
    /// The prompt, given on the CLI's standard input: an argument would show it to every user of
    /// the host (`ps`).
    pub prompt: String,
    /// The session to resume, if any.
    pub resume: Option<String>,
    /// Resume into a new session id holding a copy of the history.
    pub fork_session: bool,
    /// `--model`.
    pub model: Option<String>,
    /// `--max-turns`.
    pub max_turns: Option<u32>,
    /// `--permission-mode` (not kept on resume, so passed on every run).
    pub permission_mode: Option<String>,
    /// `--allowed-tools`.
    pub allowed_tools: Vec<String>,
    /// `--disallowed-tools`.
    pub disallowed_tools: Vec<String>,
    /// `--fallback-model`.
    pub fallback_model: Option<String>,
    /// `--max-budget-usd`.
    pub max_budget_usd: Option<f64>,
    /// `--append-system-prompt`.
    pub append_system_prompt: Option<String>,
    /// `--mcp-config`.
    pub mcp_config: Option<String>,
}

impl RunRequest {
    /// Whether this run is a `/compact`.
    pub fn is_compact(&self) -> bool {
        self.prompt.trim() == "/compact"
    }

    /// The CLI arguments for this request. The prompt is not among them: it goes to standard input.
    pub fn args(&self) -> Vec<String> {
        let mut args = vec![
            "-p".to_string(),
            "--output-format".into(),
            "stream-json".into(),
            "--verbose".into(),
        ];
        if let Some(id) = &self.resume {
            // With '=': --resume takes an optional value, so a separate word could be misread.
            args.push(format!("--resume={id}"));
        }
        if self.fork_session {
            args.push("--fork-session".into());
        }
        // Values go with '=' so that one starting with '-' is never read as a flag.
        let mut flag = |name: &str, value: Option<String>| {
            if let Some(v) = value {
                args.push(format!("--{name}={v}"));
            }
        };
        flag("model", self.model.clone());
        flag("fallback-model", self.fallback_model.clone());
        flag("max-turns", self.max_turns.map(|n| n.to_string()));
        flag("max-budget-usd", self.max_budget_usd.map(|b| b.to_string()));
        flag("permission-mode", self.permission_mode.clone());
        flag("append-system-prompt", self.append_system_prompt.clone());
        flag("mcp-config", self.mcp_config.clone());
        // These take several values: one flag, then each tool as a word of its own (a tool such as
        // `Bash(npm run test)` has spaces). No tool starts with '-' (the job's validation sees to
        // that), and the next flag ends the list.
        for (name, tools) in [
            ("--allowed-tools", &self.allowed_tools),
            ("--disallowed-tools", &self.disallowed_tools),
        ] {
            if !tools.is_empty() {
                args.push(name.to_string());
                args.extend(tools.iter().cloned());
            }
        }
        args
    }
}

/// Everything one run produced.
#[derive(Debug, Clone)]
pub struct RunReport {
    /// What the run came to.
    pub outcome: Outcome,
    /// The session the run worked in: from the first line that carried one, confirmed by `result`.
    pub session_id: Option<String>,
    /// Files written by Write/Edit/MultiEdit/NotebookEdit tool calls.
    pub files_created: Vec<String>,
    /// Token usage, each API message counted once.
    pub usage: Usage,
    /// `total_cost_usd` as the CLI reported it (per run or cumulative, depending on the CLI version).
    pub cost_usd: f64,
    /// `duration_ms` from the result, or the wall time when there was none.
    pub duration_ms: u64,
    /// `num_turns` from the result.
    pub num_turns: u64,
    /// How the process ended.
    pub exit: Option<Exit>,
    /// The last part of stderr.
    pub stderr_tail: String,
    /// The result's text.
    pub result_text: Option<String>,
    /// The result's `subtype` (`success`, `error_max_turns`, ...), when a result came.
    pub subtype: Option<String>,
    /// Why the model's last message ended.
    pub stop_reason: Option<String>,
    /// Why the turn ended (`completed`, `max_turns`, `api_error`, ...), where reported.
    pub terminal_reason: Option<String>,
    /// The tool calls the permission mode refused.
    pub permission_denials: Vec<serde_json::Value>,
    /// Every file-writing tool call of the run was refused by its permissions (and there was at
    /// least one): the run did nothing to the project, whatever its outcome says.
    pub nothing_done: bool,
    /// The process printed its result but did not exit within the grace, and was ended.
    pub killed_after_result: bool,
    /// Stdout lines skipped as not JSON or too long.
    pub skipped_lines: u64,
    /// Time spent from spawn to reaping, in milliseconds.
    pub wall_ms: u64,
}

/// How the caller steers and watches one run.
#[derive(Debug, Default)]
pub struct RunHooks {
    /// Ends the run gracefully: SIGINT, SIGTERM, then SIGKILL (shutdown).
    pub cancel: CancellationToken,
    /// Ends the run at once with SIGKILL (the job was taken by another worker).
    pub kill: CancellationToken,
    /// Receives the session id as soon as a line names it, before the run's work is done.
    pub session_seen: Option<tokio::sync::oneshot::Sender<String>>,
}

/// Why a run could not even start.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// The CLI could not be started.
    #[error("cannot start {program}: {cause}")]
    Spawn {
        /// The program that was run.
        program: String,
        /// Why it failed.
        cause: std::io::Error,
    },
    /// The supervisor could not be started.
    #[error("cannot start the supervisor {exe}: {cause}")]
    Supervisor {
        /// The executable that was run.
        exe: String,
        /// Why it failed.
        cause: std::io::Error,
    },
}

/// Runs the CLI. Cheap to clone and share.
#[derive(Debug, Clone)]
pub struct Agent {
    config: AgentConfig,
    guard: std::sync::Arc<Guard>,
    /// Every run's environment, worked out once: the process's own never changes (setting it
    /// takes `unsafe`, which the workspace forbids), and reading it per run cost the worker 1% of
    /// its CPU.
    child_vars: std::sync::Arc<[(std::ffi::OsString, std::ffi::OsString)]>,
}

/// What marks this agent's runs, and the helper that ends them with the agent's process.
#[derive(Debug)]
struct Guard {
    token: String,
    supervisor: std::sync::Mutex<Option<supervise::Supervisor>>,
    /// The latest deadline of [`Agent::hold_runs_until`] on the shared clock, 0 for none: given
    /// again to a supervisor started after it.
    deadline_ns: std::sync::atomic::AtomicU64,
}

enum StdoutItem {
    Line(String),
    TooLong(usize),
}

impl Agent {
    /// An agent with this configuration.
    pub fn new(config: AgentConfig) -> Self {
        let nonce = {
            use std::hash::{BuildHasher, Hasher};
            let mut h = std::collections::hash_map::RandomState::new().build_hasher();
            h.write_u128(
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_nanos()),
            );
            h.finish()
        };
        // A variable whose name is not UTF-8 cannot be on the allow-list; its value may be anything.
        let inherited = std::env::vars_os().filter_map(|(k, v)| Some((k.into_string().ok()?, v)));
        let own = config
            .env
            .iter()
            .filter(|(k, _)| !matches_any(k, ENV_DENY.iter().copied()))
            .map(|(k, v)| (k.into(), v.into()));
        let child_vars = Self::allowed(&config, inherited)
            .into_iter()
            .map(|(k, v)| (k.into(), v))
            .chain(own)
            .collect();
        Agent {
            child_vars,
            config,
            guard: std::sync::Arc::new(Guard {
                token: format!("{}-{nonce:016x}", std::process::id()),
                supervisor: std::sync::Mutex::new(None),
                deadline_ns: std::sync::atomic::AtomicU64::new(0),
            }),
        }
    }

    /// Starts the supervisor, or starts it again if it died, before a run that needs it.
    fn ensure_supervisor(&self) -> Result<(), AgentError> {
        let Some(exe) = &self.config.supervisor else {
            return Ok(());
        };
        let mut slot = self
            .guard
            .supervisor
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(running) = slot.as_mut() {
            if running.alive() {
                return Ok(());
            }
            tracing::warn!(supervisor = %exe.display(), "the supervisor died; starting it again");
        }
        let started = supervise::Supervisor::start(exe, &self.guard.token).map_err(|cause| {
            AgentError::Supervisor {
                exe: exe.display().to_string(),
                cause,
            }
        })?;
        let deadline = self
            .guard
            .deadline_ns
            .load(std::sync::atomic::Ordering::SeqCst);
        if deadline != 0 {
            started.send_deadline(deadline);
        }
        *slot = Some(started);
        Ok(())
    }

    /// Has the supervisor kill every run of this agent at `until`, unless a later call moves the
    /// deadline first. A worker calls it after each renewal of its hold on its jobs, so that its
    /// runs end before another replica may take the jobs over, even if the worker stalls. Does
    /// nothing without a supervisor.
    pub fn hold_runs_until(&self, until: Instant) {
        if self.config.supervisor.is_none() {
            return;
        }
        let deadline = supervise::on_monotonic_clock(until).max(1);
        let slot = self
            .guard
            .supervisor
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        self.guard
            .deadline_ns
            .store(deadline, std::sync::atomic::Ordering::SeqCst);
        if let Some(running) = slot.as_ref() {
            running.send_deadline(deadline);
        }
    }

    /// The folder the CLI keeps its sessions in, as its runs' environment sets it:
    /// `CLAUDE_CONFIG_DIR`, or else `~/.claude` under the runs' `HOME`.
    pub fn claude_config_dir(&self) -> PathBuf {
        let var = |name: &str| {
            self.child_vars
                .iter()
                .rev()
                .find(|(k, v)| k == name && !v.is_empty())
                .map(|(_, v)| PathBuf::from(v))
        };
        var("CLAUDE_CONFIG_DIR").unwrap_or_else(|| {
            var("HOME")
                .unwrap_or_else(|| PathBuf::from("/"))
                .join(".claude")
        })
    }

    /// The configuration in use.
    pub fn config(&self) -> &AgentConfig {
        &self.config
    }

    /// The environment a child gets: the allowed variables of `vars`, never the denied ones.
    fn allowed<V>(
        config: &AgentConfig,
        vars: impl Iterator<Item = (String, V)>,
    ) -> Vec<(String, V)> {
        vars.filter(|(k, _)| {
            matches_any(k, config.env_allow.iter().map(String::as_str))
                && !matches_any(k, ENV_DENY.iter().copied())
        })
        .collect()
    }

    /// Runs one request to the end, a watchdog, or `cancel`. Always reaps the child and its group.
    pub async fn run(
        &self,
        req: &RunRequest,
        cancel: &CancellationToken,
    ) -> Result<RunReport, AgentError> {
        let hooks = RunHooks {
            cancel: cancel.clone(),
            ..RunHooks::default()
        };
        self.run_with(req, hooks).await
    }

    /// Runs one request with the caller's hooks; see [`RunHooks`].
    pub async fn run_with(
        &self,
        req: &RunRequest,
        mut hooks: RunHooks,
    ) -> Result<RunReport, AgentError> {
        let cancel = hooks.cancel.clone();
        let kill = hooks.kill.clone();
        let started = Instant::now();
        self.ensure_supervisor()?;
        let mut cmd = Command::new(&self.config.program);
        cmd.args(req.args());
        cmd.current_dir(&req.cwd)
            .env_clear()
            .envs(self.child_vars.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true);
        if self.config.supervisor.is_some() {
            // Set after the deny-list applied, which keeps `BATON_*` variables from the child.
            cmd.env(supervise::GUARD_VAR, &self.guard.token);
        }
        let mut child = spawn_retrying(&mut cmd)
            .await
            .map_err(|cause| AgentError::Spawn {
                program: self.config.program.display().to_string(),
                cause,
            })?;
        let pgid = child.id().map(|id| Pid::from_raw(id as i32));
        // The prompt, then end of input, as `echo prompt | claude -p` gives it. Written from a task
        // of its own: a CLI that does not read it (one that fails first) must not block the run,
        // and a broken pipe only means it did not.
        let stdin = child.stdin.take().expect("stdin is piped");
        let prompt = req.prompt.clone();
        tokio::spawn(async move {
            use tokio::io::AsyncWriteExt;
            let mut stdin = stdin;
            let _ = stdin.write_all(prompt.as_bytes()).await;
            let _ = stdin.shutdown().await;
        });
        tracing::debug!(pid = ?pgid, resume = ?req.resume, "agent run started");

        let (tx, mut rx) = mpsc::channel(256);
        let stdout = child.stdout.take().expect("stdout is piped");
        tokio::spawn(read_stdout(stdout, tx, self.config.max_line_bytes));
        let stderr = child.stderr.take().expect("stderr is piped");
        let stderr_task = tokio::spawn(read_tail(stderr, self.config.stderr_tail_bytes));

        let mut state = StreamState::default();
        let mut too_long = 0u64;
        let mut exit: Option<Exit> = None;
        let mut stdout_open = true;
        let mut killed_after_result = false;
        let wall_deadline = tokio::time::Instant::now() + self.config.wall_clock;
        let mut idle_deadline = tokio::time::Instant::now() + self.config.idle;
        let mut drain_deadline: Option<tokio::time::Instant> = None;
        let mut killed_at_once = false;
        let stop = loop {
            // After the result (or after the process exited) only a short grace remains.
            let soft_deadline = drain_deadline.unwrap_or(idle_deadline);
            tokio::select! {
                biased;
                _ = kill.cancelled() => {
                    killed_at_once = true;
                    break Stop::Cancelled;
                }
                _ = cancel.cancelled() => break Stop::Cancelled,
                _ = sleep_until(wall_deadline) => break Stop::WallClock(self.config.wall_clock),
                _ = sleep_until(soft_deadline) => {
                    if drain_deadline.is_some() {
                        killed_after_result = exit.is_none();
                        break Stop::Natural;
                    }
                    break Stop::Idle(self.config.idle);
                }
                item = rx.recv(), if stdout_open => match item {
                    Some(StdoutItem::Line(line)) => {
                        state.feed(&line);
                        if let (Some(id), Some(_)) = (&state.session_id, &hooks.session_seen) {
                            let tx = hooks.session_seen.take().expect("checked above");
                            let _ = tx.send(id.clone());
                        }
                        idle_deadline = tokio::time::Instant::now() + self.config.idle;
                        if state.result.is_some() && drain_deadline.is_none() {
                            drain_deadline = Some(tokio::time::Instant::now() + self.config.post_result_grace);
                        }
                    }
                    Some(StdoutItem::TooLong(n)) => {
                        too_long += 1;
                        tracing::warn!(bytes = n, limit = self.config.max_line_bytes, "skipping an over-long stdout line");
                    }
                    None => {
                        stdout_open = false;
                        if exit.is_some() { break Stop::Natural; }
                    }
                },
                status = child.wait(), if exit.is_none() => {
                    exit = status.ok().map(to_exit);
                    if !stdout_open { break Stop::Natural; }
                    // A grandchild may still hold stdout open; give it the grace, not the idle limit.
                    drain_deadline.get_or_insert(tokio::time::Instant::now() + self.config.post_result_grace);
                }
            }
        };

        if exit.is_none() {
            exit = if killed_at_once {
                if let Some(pgid) = pgid {
                    let _ = killpg(pgid, Signal::SIGKILL);
                }
                child.wait().await.ok().map(to_exit)
            } else {
                self.terminate(&mut child, pgid).await
            };
        }
        // Whatever the leader left behind in its group ends with the run.
        if let Some(pgid) = pgid {
            let _ = killpg(pgid, Signal::SIGKILL);
            wait_group_gone(pgid, self.config.kill_step).await;
        }
        // Lines already printed before the end still count.
        while let Ok(Some(item)) = timeout(Duration::from_millis(200), rx.recv()).await {
            if let StdoutItem::Line(line) = item {
                state.feed(&line);
            }
        }
        let stderr_tail = timeout(Duration::from_secs(1), stderr_task)
            .await
            .ok()
            .and_then(Result::ok)
            .unwrap_or_default();

        let now_epoch = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let outcome = classify(
            &state,
            exit,
            &stderr_tail,
            stop,
            req.is_compact(),
            now_epoch,
        );
        let result = state.result.clone().unwrap_or_default();
        let session_id = match (&state.session_id, &result.session_id) {
            (Some(first), Some(last)) if first != last => {
                tracing::warn!(first = %first, result = %last, "the result names another session than the stream began with; taking the result's");
                Some(last.clone())
            }
            (first, last) => first.clone().or_else(|| last.clone()),
        };
        let wall_ms = started.elapsed().as_millis() as u64;
        Ok(RunReport {
            outcome,
            session_id,
            files_created: state.files_created.clone(),
            usage: if state.usage == Usage::default() {
                result.usage.unwrap_or_default()
            } else {
                state.usage
            },
            cost_usd: result.cost_usd.unwrap_or(0.0),
            duration_ms: result.duration_ms.unwrap_or(wall_ms),
            num_turns: result.num_turns.unwrap_or(0),
            exit,
            stderr_tail,
            result_text: result.result.clone(),
            subtype: state.result.as_ref().map(|r| r.subtype.clone()),
            stop_reason: result.stop_reason.clone(),
            terminal_reason: result.terminal_reason.clone(),
            nothing_done: {
                let denied = result.denied_tool_ids();
                !result.permission_denials.is_empty()
                    && state
                        .writing_tool_ids
                        .iter()
                        .all(|id| denied.contains(&id.as_str()))
            },
            permission_denials: result.permission_denials.clone(),
            killed_after_result,
            skipped_lines: state.skipped_lines + too_long,
            wall_ms,
        })
    }

    /// Ends the child's process group: SIGINT so the CLI can end its turn, then SIGTERM, then SIGKILL.
    async fn terminate(&self, child: &mut Child, pgid: Option<Pid>) -> Option<Exit> {
        if let Some(pgid) = pgid {
            for signal in [Signal::SIGINT, Signal::SIGTERM] {
                let _ = killpg(pgid, signal);
                if let Ok(Ok(status)) = timeout(self.config.kill_step, child.wait()).await {
                    return Some(to_exit(status));
                }
            }
            let _ = killpg(pgid, Signal::SIGKILL);
        } else {
            let _ = child.start_kill();
        }
        child.wait().await.ok().map(to_exit)
    }
}

/// Waits (at most `bound`) until no process of the group is left alive, so a run that returned has
/// really ended. Zombies of a reaping parent other than us count as gone.
async fn wait_group_gone(pgid: Pid, bound: Duration) {
    let deadline = Instant::now() + bound;
    while Instant::now() < deadline {
        if killpg(pgid, None).is_err() || !group_has_live_member(pgid) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tracing::warn!(
        pgid = pgid.as_raw(),
        "processes of the agent's group are still alive after SIGKILL"
    );
}

fn group_has_live_member(pgid: Pid) -> bool {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return true;
    };
    entries.filter_map(Result::ok).any(|e| {
        let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) else {
            return false;
        };
        // Fields after the command's closing parenthesis: state, ppid, pgrp, ...
        let Some((_, rest)) = stat.rsplit_once(')') else {
            return false;
        };
        let mut fields = rest.split_whitespace();
        let state = fields.next().unwrap_or("");
        let pgrp = fields.nth(1).and_then(|f| f.parse::<i32>().ok());
        pgrp == Some(pgid.as_raw()) && state != "Z" && state != "X"
    })
}

/// Spawns, retrying briefly while the executable is busy being written (ETXTBSY): an upgrade of
/// the CLI in place, or any process that still holds it open for writing.
pub async fn spawn_retrying(cmd: &mut Command) -> std::io::Result<Child> {
    let mut tries = 0;
    loop {
        match cmd.spawn() {
            Err(e) if e.raw_os_error() == Some(nix::errno::Errno::ETXTBSY as i32) && tries < 40 => {
                tries += 1;
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
            other => return other,
        }
    }
}

fn to_exit(status: std::process::ExitStatus) -> Exit {
    match status.code() {
        Some(code) => Exit::Code(code),
        None => Exit::Signal(status.signal().unwrap_or(0)),
    }
}

fn matches_any<'a>(name: &str, patterns: impl IntoIterator<Item = &'a str>) -> bool {
    patterns.into_iter().any(|p| match p.strip_suffix('*') {
        Some(prefix) => name.starts_with(prefix),
        None => name == p,
    })
}

async fn read_stdout(
    stdout: impl AsyncRead + Unpin,
    tx: mpsc::Sender<StdoutItem>,
    max_line_bytes: usize,
) {
    let mut reader = BufReader::new(stdout);
    let mut line = Vec::new();
    let mut overflow = 0usize;
    loop {
        let chunk = match reader.fill_buf().await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "reading the agent's stdout failed");
                break;
            }
        };
        if chunk.is_empty() {
            break;
        }
        let (part, ends_line) = match chunk.iter().position(|&b| b == b'\n') {
            Some(i) => (&chunk[..i], true),
            None => (chunk, false),
        };
        if overflow == 0 && line.len() + part.len() <= max_line_bytes {
            line.extend_from_slice(part);
        } else {
            // Over the bound: stop keeping the line, but keep reading to its end.
            overflow += line.len() + part.len();
            line.clear();
        }
        let used = part.len() + usize::from(ends_line);
        reader.consume(used);
        if ends_line {
            let item = if overflow > 0 {
                StdoutItem::TooLong(overflow)
            } else {
                StdoutItem::Line(line_text(std::mem::take(&mut line)))
            };
            line.clear();
            overflow = 0;
            if tx.send(item).await.is_err() {
                return;
            }
        }
    }
    if !line.is_empty() {
        let _ = tx.send(StdoutItem::Line(line_text(line))).await;
    }
}

/// A line's bytes as text, handed over without a copy when they are valid UTF-8 (as the CLI's always
/// are) and with U+FFFD for the bad bytes otherwise, so the parser still sees the rest of the line.
fn line_text(bytes: Vec<u8>) -> String {
    String::from_utf8(bytes)
        .unwrap_or_else(|bad| String::from_utf8_lossy(bad.as_bytes()).into_owned())
}

async fn read_tail(mut stderr: impl AsyncRead + Unpin, keep: usize) -> String {
    // Grown as stderr arrives rather than reserved up front: most runs write nothing there, and a
    // 64 KiB block taken and given back on every run made the allocator consolidate its free lists
    // each time (3% of the worker's CPU in a profile of the bench).
    let mut tail: VecDeque<u8> = VecDeque::new();
    let mut buf = [0u8; 4096];
    while let Ok(n) = stderr.read(&mut buf).await {
        if n == 0 {
            break;
        }
        tail.extend(&buf[..n]);
        while tail.len() > keep {
            tail.pop_front();
        }
    }
    String::from_utf8_lossy(tail.make_contiguous()).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn child_env_keeps_the_allow_list_and_never_the_secrets() {
        let agent = Agent::new(AgentConfig {
            env_allow: vec!["PATH".into(), "EXTRA_*".into(), "DATABASE_URL".into()],
            ..AgentConfig::default()
        });
        let vars = [
            ("PATH", "/bin"),
            ("EXTRA_ONE", "1"),
            ("DATABASE_URL", "postgres://secret"),
            ("REDIS_URL", "redis://secret"),
            ("BATON_STREAM", "s"),
            ("OTHER", "x"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()));
        let mut names: Vec<_> = Agent::allowed(agent.config(), vars)
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        names.sort();
        assert_eq!(names, ["EXTRA_ONE", "PATH"]);
    }

    #[test]
    fn args_follow_the_contract_and_never_carry_the_prompt() {
        let req = RunRequest {
            prompt: "--help me with a secret plan".into(),
            resume: Some("-abc".into()),
            ..RunRequest::default()
        };
        let args = req.args();
        assert_eq!(
            args[..4],
            ["-p", "--output-format", "stream-json", "--verbose"]
        );
        assert!(args.contains(&"--resume=-abc".to_string()));
        assert!(args.iter().all(|a| !a.contains("secret plan")), "{args:?}");
    }

    #[tokio::test]
    async fn stdout_lines_keep_their_text_mend_bad_bytes_and_bound_their_length() {
        let input: &[u8] = b"{\"type\":\"system\"}\nbad \xff byte\n0123456789abcdefgh\nlast";
        let (tx, mut rx) = mpsc::channel(8);
        // Bounded at 17 bytes, the first line's length: it is kept, the 18-byte one is not.
        read_stdout(input, tx, 17).await;
        let mut items = Vec::new();
        while let Some(item) = rx.recv().await {
            items.push(match item {
                StdoutItem::Line(l) => l,
                StdoutItem::TooLong(n) => format!("too long: {n}"),
            });
        }
        assert_eq!(
            items,
            [
                "{\"type\":\"system\"}".to_string(),
                "bad \u{fffd} byte".to_string(),
                "too long: 18".to_string(),
                "last".to_string(),
            ]
        );
    }
}
