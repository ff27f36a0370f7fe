//! The worker's configuration: every setting is a flag and an environment variable.

use std::path::PathBuf;
use std::time::Duration;

use crate::error::{WorkerError, ensure};
use clap::Parser;

/// Default of `BATON_TRANSCRIPT_MAX_BYTES`: 128 MiB, several hundred turns of a real CLI session.
pub const DEFAULT_TRANSCRIPT_MAX_BYTES: u64 = 128 * 1024 * 1024;

/// `BATON_RESUME`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Resume {
    /// Resume each project's newest session, as the policy allows.
    On,
    /// Start every job fresh.
    Off,
}

/// `BATON_CLI_SESSION_IDS`: what the CLI does with a session's id when it resumes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum CliSessionIds {
    /// Keeps it (current CLIs): a resume answered under another id started fresh.
    Keep,
    /// Gives a new one each time (CLIs up to about 1.0.120).
    Rolling,
}

/// `BATON_LOG_FORMAT`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Readable lines.
    Text,
    /// One JSON object a line.
    Json,
    /// Text on a terminal, JSON otherwise.
    Auto,
}

/// `baton-worker`: takes build jobs from the Redis stream and runs them through the `claude` CLI.
#[derive(Debug, Clone, Parser)]
#[command(name = "baton-worker", version, about)]
pub struct Config {
    /// Where Redis and Postgres are, and the stream, group and schema used in them.
    #[command(flatten)]
    pub connection: baton_core::Connection,

    /// About how many dead letters to keep; the oldest go first.
    #[arg(long = "dead-letter-maxlen", env = "BATON_DEAD_LETTER_MAXLEN", default_value_t = baton_queue::DEFAULT_DEAD_LETTER_MAXLEN, value_parser = clap::value_parser!(u64).range(1..))]
    pub dead_letter_maxlen: u64,

    /// This process's consumer name; unique per process start unless given.
    #[arg(long, env = "BATON_CONSUMER")]
    pub consumer: Option<String>,

    /// The `claude` CLI to run.
    #[arg(long, env = "BATON_CLAUDE_BIN", default_value = "claude")]
    pub claude_bin: PathBuf,

    /// Folder under which every job's `project_path` lives.
    #[arg(long, env = "BATON_WORKSPACE_ROOT", default_value = "./workspace")]
    pub workspace_root: PathBuf,

    /// Do not apply migrations at start.
    #[arg(long, env = "BATON_NO_MIGRATE", default_value_t = false)]
    pub no_migrate: bool,

    /// Largest prompt accepted, in bytes.
    #[arg(long, env = "BATON_MAX_PROMPT_BYTES", default_value_t = baton_core::job::DEFAULT_MAX_PROMPT_BYTES)]
    pub max_prompt_bytes: usize,

    /// Longest an agent run may take.
    #[arg(long, env = "BATON_RUN_TIMEOUT", value_name = "BATON_RUN_TIMEOUT", default_value = "30m", value_parser = baton_core::policy::parse_duration)]
    pub run_timeout: Duration,

    /// Longest an agent run may print nothing.
    #[arg(long, env = "BATON_RUN_IDLE_TIMEOUT", value_name = "BATON_RUN_IDLE_TIMEOUT", default_value = "5m", value_parser = baton_core::policy::parse_duration)]
    pub run_idle_timeout: Duration,

    /// How long the CLI may linger after printing its result before it is ended.
    #[arg(long, env = "BATON_RUN_EXIT_GRACE", value_name = "BATON_RUN_EXIT_GRACE", default_value = "5s", value_parser = baton_core::policy::parse_duration)]
    pub run_exit_grace: Duration,

    /// Run the CLI without the supervisor that ends it when this worker dies (not recommended).
    #[arg(long, env = "BATON_NO_SUPERVISOR", default_value_t = false)]
    pub no_supervisor: bool,

    /// Extra environment variables passed to the CLI, comma-separated (`NAME` or `PREFIX*`).
    #[arg(long, env = "BATON_AGENT_ENV_ALLOW", value_delimiter = ',')]
    pub agent_env_allow: Vec<String>,

    /// How long in-flight runs get to finish after SIGTERM or SIGINT before they are cancelled.
    #[arg(long, env = "BATON_SHUTDOWN_GRACE", value_name = "BATON_SHUTDOWN_GRACE", default_value = "25s", value_parser = baton_core::policy::parse_duration)]
    pub shutdown_grace: Duration,

    /// Oldest conversation resumed, from its fresh start.
    #[arg(long, env = "BATON_SESSION_MAX_AGE", value_name = "BATON_SESSION_MAX_AGE", default_value = "24h", value_parser = baton_core::policy::parse_duration)]
    pub session_max_age: Duration,

    /// Most runs since a fresh start before the next job starts fresh.
    #[arg(long, env = "BATON_SESSION_MAX_OPS", default_value_t = baton_core::policy::DEFAULT_MAX_OPS)]
    pub session_max_ops: u32,

    /// `on` resumes sessions; `off` starts every job fresh.
    #[arg(long, env = "BATON_RESUME", value_name = "BATON_RESUME", value_enum, default_value_t = Resume::On)]
    pub resume: Resume,

    /// Largest total of one session's files (transcript and `<id>/` folder) kept in the ledger;
    /// a larger session is recorded as incomplete and the next job starts fresh.
    #[arg(long, env = "BATON_TRANSCRIPT_MAX_BYTES", default_value_t = DEFAULT_TRANSCRIPT_MAX_BYTES)]
    pub transcript_max_bytes: u64,

    /// Whether the CLI keeps a session's id when it resumes it (`keep`: current CLIs) or gives a
    /// new one each time (`rolling`: CLIs up to about 1.0.120). With `keep`, a resume that comes
    /// back under another id started fresh, and is recorded so.
    #[arg(long, env = "BATON_CLI_SESSION_IDS", value_name = "BATON_CLI_SESSION_IDS", value_enum, default_value_t = CliSessionIds::Keep)]
    pub cli_session_ids: CliSessionIds,

    /// The CLI's permission mode for every run; a job may choose another, but `bypassPermissions`
    /// only with `BATON_ALLOW_BYPASS_PERMISSIONS`.
    #[arg(long, env = "BATON_PERMISSION_MODE", default_value = baton_core::agent::DEFAULT_PERMISSION_MODE,
          value_parser = clap::builder::PossibleValuesParser::new(baton_core::agent::PERMISSION_MODES))]
    pub permission_mode: String,

    /// Tools the agent may use, comma-separated (`Read,Edit,Bash(git:*)`); a job may only narrow it.
    #[arg(long, env = "BATON_ALLOWED_TOOLS", value_delimiter = ',')]
    pub allowed_tools: Vec<String>,

    /// Tools the agent may not use, comma-separated; a job may add to it.
    #[arg(long, env = "BATON_DISALLOWED_TOOLS", value_delimiter = ',')]
    pub disallowed_tools: Vec<String>,

    /// The model of every run unless a job names one.
    #[arg(long, env = "BATON_MODEL")]
    pub model: Option<String>,

    /// The model the CLI falls back to when the first is overloaded.
    #[arg(long, env = "BATON_FALLBACK_MODEL")]
    pub fallback_model: Option<String>,

    /// Most turns of one run; a job may ask for fewer.
    #[arg(long, env = "BATON_MAX_TURNS")]
    pub max_turns: Option<u32>,

    /// Most dollars one run may spend; a job may ask for less.
    #[arg(long, env = "BATON_MAX_BUDGET_USD")]
    pub max_budget_usd: Option<f64>,

    /// Most dollars all of one job's runs may spend together; the job stops, failed, past it.
    #[arg(long, env = "BATON_JOB_MAX_BUDGET_USD")]
    pub job_max_budget_usd: Option<f64>,

    /// Text appended to every run's system prompt (a job's own follows it).
    #[arg(long, env = "BATON_APPEND_SYSTEM_PROMPT")]
    pub append_system_prompt: Option<String>,

    /// The CLI's `--mcp-config` for every run: a file, or JSON.
    #[arg(long, env = "BATON_MCP_CONFIG", hide_env_values = true)]
    pub mcp_config: Option<String>,

    /// The longest answer kept of one run, in bytes; a longer one is cut with a marker.
    #[arg(long, env = "BATON_MAX_RESULT_BYTES", default_value_t = 64 * 1024)]
    pub max_result_bytes: usize,

    /// Let jobs ask for `permission_mode` `bypassPermissions`.
    #[arg(long, env = "BATON_ALLOW_BYPASS_PERMISSIONS", default_value_t = false)]
    pub allow_bypass_permissions: bool,

    /// A JSON file naming the metadata steps' prompts (`{"metadata.recommendations": "...",
    /// "metadata.documentation": "..."}`); the built-in prompts otherwise.
    #[arg(long, env = "BATON_STEP_PROMPTS")]
    pub step_prompts: Option<PathBuf>,

    /// Jobs run at once by this worker (at least 1).
    #[arg(long, env = "BATON_CONCURRENCY", default_value_t = 4, value_parser = at_least_one)]
    pub concurrency: usize,

    /// Threads running the worker's own tasks. With 1 (the default) everything runs on one thread,
    /// which costs the least CPU: the worker mostly waits on the CLI, Redis and Postgres.
    #[arg(long, env = "BATON_THREADS", default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..))]
    pub threads: u16,

    /// Time between refreshes of this worker's entries and project leases.
    #[arg(long, env = "BATON_HEARTBEAT", value_name = "BATON_HEARTBEAT", default_value = "5s", value_parser = baton_core::policy::parse_duration)]
    pub heartbeat: Duration,

    /// How long an entry may go unrefreshed before a live replica takes it over.
    #[arg(long, env = "BATON_CLAIM_IDLE", value_name = "BATON_CLAIM_IDLE", default_value = "30s", value_parser = baton_core::policy::parse_duration)]
    pub claim_idle: Duration,

    /// Most runs of one step (the first and its retries) before the job is dead-lettered.
    #[arg(long, env = "BATON_MAX_RUN_ATTEMPTS", default_value_t = 3)]
    pub max_run_attempts: u32,

    /// First delay between retries of a run; it doubles, with jitter.
    #[arg(long, env = "BATON_RETRY_MIN_DELAY", value_name = "BATON_RETRY_MIN_DELAY", default_value = "2s", value_parser = baton_core::policy::parse_duration)]
    pub retry_min_delay: Duration,

    /// Longest delay between retries of a run.
    #[arg(long, env = "BATON_RETRY_MAX_DELAY", value_name = "BATON_RETRY_MAX_DELAY", default_value = "2m", value_parser = baton_core::policy::parse_duration)]
    pub retry_max_delay: Duration,

    /// How long a run's first progress (`run_started`, then the checkpoint of the session the CLI
    /// names) may wait to ride with a later write, saving Redis round trips; 0 sends each at once.
    #[arg(long, env = "BATON_PROGRESS_WINDOW", value_name = "BATON_PROGRESS_WINDOW", default_value = "50ms", value_parser = baton_core::policy::parse_duration)]
    pub progress_window: Duration,

    /// Where every build's end is sent as a signed webhook.
    #[arg(long, env = "BATON_WEBHOOK_URL", value_name = "BATON_WEBHOOK_URL")]
    pub webhook_url: Option<String>,

    /// The keys webhooks are signed with: `whsec_<base64>`, comma-separated (each signs every
    /// webhook, for rotation).
    #[arg(
        long,
        env = "BATON_WEBHOOK_SECRET",
        value_name = "BATON_WEBHOOK_SECRET",
        hide_env_values = true
    )]
    pub webhook_secret: Option<String>,

    /// Prefixes a job's own `webhook_url` must start with, comma-separated; none allows none.
    #[arg(
        long,
        env = "BATON_WEBHOOK_ALLOW",
        value_name = "BATON_WEBHOOK_ALLOW",
        value_delimiter = ','
    )]
    pub webhook_allow: Vec<String>,

    /// How long a webhook is tried before it is given up and marked failed.
    #[arg(long, env = "BATON_WEBHOOK_MAX_AGE", value_name = "BATON_WEBHOOK_MAX_AGE", default_value = "24h", value_parser = baton_core::policy::parse_duration)]
    pub webhook_max_age: Duration,

    /// How long one webhook attempt may take.
    #[arg(long, env = "BATON_WEBHOOK_TIMEOUT", value_name = "BATON_WEBHOOK_TIMEOUT", default_value = "10s", value_parser = baton_core::policy::parse_duration)]
    pub webhook_timeout: Duration,

    /// Time between probes of the CLI while paused on an authentication failure.
    #[arg(long, env = "BATON_AUTH_PROBE_INTERVAL", value_name = "BATON_AUTH_PROBE_INTERVAL", default_value = "60s", value_parser = baton_core::policy::parse_duration)]
    pub auth_probe_interval: Duration,

    /// Most entries this worker holds at once, running or waiting for their project.
    #[arg(long, env = "BATON_MAX_HELD", default_value_t = 1000)]
    pub max_held: usize,

    /// Where `/metrics`, `/healthz` and `/readyz` are served (`off` to serve nothing; port 0 picks a
    /// free port, which the log names).
    #[arg(long, env = "BATON_METRICS_ADDR", default_value = "127.0.0.1:9464")]
    pub metrics_addr: String,

    /// Log format: `text`, `json`, or `auto` (text on a terminal, JSON otherwise).
    #[arg(long, env = "BATON_LOG_FORMAT", value_name = "BATON_LOG_FORMAT", value_enum, default_value_t = LogFormat::Auto)]
    pub log_format: LogFormat,
}

/// A count that must be at least 1.
fn at_least_one(text: &str) -> Result<usize, String> {
    match text.trim().parse::<usize>() {
        Ok(0) => Err("must be at least 1".into()),
        Ok(n) => Ok(n),
        Err(e) => Err(format!("{text:?} is not a whole number: {e}")),
    }
}

impl Config {
    /// The consumer name: the given one, or `<host>-<pid>-<random>` so no two starts share one.
    pub fn consumer_name(&self) -> String {
        if let Some(name) = &self.consumer {
            return name.clone();
        }
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .ok()
            .map(|h| h.trim().to_string())
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "worker".into());
        let nonce = uuid::Uuid::new_v4().simple().to_string();
        format!("{host}-{}-{}", std::process::id(), &nonce[..8])
    }

    /// The agent's settings.
    pub fn agent(&self) -> baton_agent::AgentConfig {
        let mut agent = baton_agent::AgentConfig {
            program: self.claude_bin.clone(),
            wall_clock: self.run_timeout,
            idle: self.run_idle_timeout,
            post_result_grace: self.run_exit_grace,
            supervisor: if self.no_supervisor {
                None
            } else {
                std::env::current_exe().ok()
            },
            ..baton_agent::AgentConfig::default()
        };
        agent.env_allow.extend(
            self.agent_env_allow
                .iter()
                .filter(|s| !s.is_empty())
                .cloned(),
        );
        agent
    }

    /// The resume policy's settings.
    pub fn policy(&self) -> Result<baton_core::policy::PolicyConfig, WorkerError> {
        Ok(baton_core::policy::PolicyConfig {
            max_age: self.session_max_age,
            max_ops: self.session_max_ops,
            resume: self.resume == Resume::On,
        })
    }

    /// How the worker schedules and keeps its jobs.
    pub fn scheduling(&self) -> Result<Scheduling, WorkerError> {
        let positive = |name: &str, d: Duration| -> Result<Duration, WorkerError> {
            ensure(!d.is_zero(), || format!("{name} must be longer than zero"))?;
            Ok(d)
        };
        let scheduling = Scheduling {
            concurrency: self.concurrency.max(1),
            heartbeat: positive("BATON_HEARTBEAT", self.heartbeat)?,
            claim_idle: positive("BATON_CLAIM_IDLE", self.claim_idle)?,
            max_run_attempts: self.max_run_attempts.max(1),
            retry_min_delay: positive("BATON_RETRY_MIN_DELAY", self.retry_min_delay)?,
            retry_max_delay: positive("BATON_RETRY_MAX_DELAY", self.retry_max_delay)?,
            auth_probe_interval: positive("BATON_AUTH_PROBE_INTERVAL", self.auth_probe_interval)?,
            shutdown_grace: self.shutdown_grace,
            max_held: self.max_held.max(self.concurrency.max(1)),
            progress: {
                ensure(self.progress_window <= Duration::from_secs(60), || {
                    format!(
                        "BATON_PROGRESS_WINDOW must be at most 60 seconds, not {:?}",
                        self.progress_window
                    )
                })?;
                crate::progress::Progress::from_window(self.progress_window)
            },
        };
        // A worker stops its runs once it has gone three quarters of the claim timeout without a
        // heartbeat (see `job::Hold`): heartbeats must come well within that, or a slow one would
        // stop live runs.
        ensure(scheduling.heartbeat * 2 <= scheduling.claim_idle, || {
            format!(
                "BATON_HEARTBEAT ({:?}) must be at most half of BATON_CLAIM_IDLE ({:?}), or live jobs get stopped and taken over",
                scheduling.heartbeat, scheduling.claim_idle
            )
        })?;
        Ok(scheduling)
    }

    /// The metrics address, or `None` for `off`.
    pub fn metrics_addr(&self) -> Result<Option<std::net::SocketAddr>, WorkerError> {
        if self.metrics_addr.eq_ignore_ascii_case("off") {
            return Ok(None);
        }
        self.metrics_addr.parse().map(Some).map_err(|e| {
            WorkerError::Setting(format!(
                "BATON_METRICS_ADDR {:?} is not host:port: {e}",
                self.metrics_addr
            ))
        })
    }

    /// The operator's agent settings, checked as a job's would be.
    pub fn operator_agent(&self) -> Result<baton_core::agent::OperatorAgent, WorkerError> {
        let given = |v: &Option<String>| v.clone().filter(|s| !s.trim().is_empty());
        let tools = |v: &[String]| -> Vec<String> {
            v.iter()
                .map(|t| t.trim().to_string())
                .filter(|t| !t.is_empty())
                .collect()
        };
        let operator = baton_core::agent::OperatorAgent {
            permission_mode: self.permission_mode.clone(),
            allowed_tools: tools(&self.allowed_tools),
            disallowed_tools: tools(&self.disallowed_tools),
            model: given(&self.model),
            fallback_model: given(&self.fallback_model),
            max_turns: self.max_turns,
            max_budget_usd: self.max_budget_usd,
            append_system_prompt: given(&self.append_system_prompt),
            mcp_config: given(&self.mcp_config),
            allow_bypass: self.allow_bypass_permissions,
        };
        // The operator's values obey the same shapes as a job's.
        baton_core::agent::check_job_agent(&baton_core::agent::JobAgent {
            model: operator.model.clone(),
            permission_mode: Some(operator.permission_mode.clone()),
            allowed_tools: Some(operator.allowed_tools.clone()),
            disallowed_tools: Some(operator.disallowed_tools.clone()),
            max_turns: operator.max_turns,
            max_budget_usd: operator.max_budget_usd,
            append_system_prompt: None,
        })
        .map_err(|e| {
            WorkerError::Setting(format!(
                "the agent settings (BATON_PERMISSION_MODE and the rest): {e}"
            ))
        })?;
        if let Some(b) = self.job_max_budget_usd {
            ensure(b.is_finite() && b > 0.0, || {
                format!("BATON_JOB_MAX_BUDGET_USD must be a positive number, not {b}")
            })?;
        }
        Ok(operator)
    }

    /// The metadata steps' prompts: the built-in ones, or those `BATON_STEP_PROMPTS` names.
    pub fn step_prompts(&self) -> Result<baton_core::plan::StepPrompts, WorkerError> {
        let Some(path) = &self.step_prompts else {
            return Ok(baton_core::plan::StepPrompts::default());
        };
        let text = std::fs::read_to_string(path).map_err(|e| {
            WorkerError::Setting(format!("BATON_STEP_PROMPTS {}: {e}", path.display()))
        })?;
        baton_core::plan::StepPrompts::from_json(&text).map_err(|e| {
            WorkerError::Setting(format!("BATON_STEP_PROMPTS {}: {e}", path.display()))
        })
    }

    /// The webhook settings, checked together.
    pub fn webhooks(&self) -> Result<crate::webhooks::WebhookSettings, WorkerError> {
        let secrets =
            baton_core::webhook::Secrets::parse(self.webhook_secret.as_deref().unwrap_or_default())
                .map_err(|why| WorkerError::Setting(format!("BATON_WEBHOOK_SECRET: {why}")))?;
        let settings = crate::webhooks::WebhookSettings {
            url: self.webhook_url.clone().filter(|u| !u.trim().is_empty()),
            secrets,
            allow: self
                .webhook_allow
                .iter()
                .map(|p| p.trim().to_string())
                .filter(|p| !p.is_empty())
                .collect(),
            max_age: self.webhook_max_age,
            timeout: self.webhook_timeout,
        };
        settings.check().map_err(WorkerError::Setting)?;
        ensure(!settings.timeout.is_zero(), || {
            "BATON_WEBHOOK_TIMEOUT must be more than zero".to_string()
        })?;
        Ok(settings)
    }

    /// The job limits.
    pub fn limits(&self) -> baton_core::Limits {
        baton_core::Limits {
            max_prompt_bytes: self.max_prompt_bytes,
        }
    }
}

/// The worker's scheduling settings, checked.
#[derive(Debug, Clone, Copy)]
pub struct Scheduling {
    /// Jobs run at once.
    pub concurrency: usize,
    /// Refresh interval of entries and leases.
    pub heartbeat: Duration,
    /// Idle time after which an entry is taken over; also the project lease's length.
    pub claim_idle: Duration,
    /// Runs of one step before giving up.
    pub max_run_attempts: u32,
    /// First retry delay.
    pub retry_min_delay: Duration,
    /// Longest retry delay.
    pub retry_max_delay: Duration,
    /// Probe interval while paused on an authentication failure.
    pub auth_probe_interval: Duration,
    /// Time in-flight runs get after SIGTERM.
    pub shutdown_grace: Duration,
    /// Most entries held at once.
    pub max_held: usize,
    /// How a run's progress is sent while it runs (`BATON_PROGRESS_WINDOW`).
    pub progress: crate::progress::Progress,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::progress::Progress;

    #[test]
    fn one_thread_by_default_and_zero_threads_refused() {
        let config = Config::try_parse_from(["baton-worker"]).expect("defaults parse");
        assert_eq!(config.threads, 1);
        let config = Config::try_parse_from(["baton-worker", "--threads", "3"]).expect("parses");
        assert_eq!(config.threads, 3);
        let err = Config::try_parse_from(["baton-worker", "--threads", "0"])
            .expect_err("zero threads cannot run anything");
        assert!(err.to_string().contains("--threads"), "{err}");
    }

    #[test]
    fn every_flag_is_named_as_its_variable() {
        use clap::CommandFactory;
        for arg in Config::command().get_arguments() {
            let (Some(env), Some(long)) = (arg.get_env(), arg.get_long()) else {
                continue;
            };
            let env = env.to_string_lossy();
            let want = env
                .strip_prefix("BATON_")
                .unwrap_or(&env)
                .to_lowercase()
                .replace('_', "-");
            assert_eq!(long, want, "{env}");
        }
    }

    #[test]
    fn durations_take_units_and_bare_seconds() {
        let config = Config::try_parse_from([
            "baton-worker",
            "--run-timeout",
            "90m",
            "--heartbeat",
            "0.5",
            "--claim-idle",
            "2000ms",
        ])
        .unwrap();
        assert_eq!(config.run_timeout, Duration::from_secs(5400));
        let s = config.scheduling().unwrap();
        assert_eq!(
            (s.heartbeat, s.claim_idle),
            (Duration::from_millis(500), Duration::from_secs(2))
        );
        let err = Config::try_parse_from(["baton-worker", "--shutdown-grace", "soon"])
            .unwrap_err()
            .to_string();
        assert!(err.contains("BATON_SHUTDOWN_GRACE"), "{err}");
    }

    #[test]
    fn zero_concurrency_is_refused() {
        let err = Config::try_parse_from(["baton-worker", "--concurrency", "0"])
            .expect_err("a worker that runs no job at once");
        assert!(err.to_string().contains("--concurrency"), "{err}");
        let config = Config::try_parse_from(["baton-worker", "--concurrency", "2"]).unwrap();
        assert_eq!(config.concurrency, 2);
    }

    #[test]
    fn heartbeat_must_be_at_most_half_the_claim_timeout() {
        let parse = |heartbeat: &str, claim: &str| {
            Config::try_parse_from([
                "baton-worker",
                "--heartbeat",
                heartbeat,
                "--claim-idle",
                claim,
            ])
            .expect("parses")
            .scheduling()
        };
        assert!(parse("5", "30").is_ok(), "the defaults");
        assert!(parse("15", "30").is_ok(), "exactly half");
        let err = parse("16", "30").expect_err("more than half").to_string();
        assert!(err.contains("at most half of BATON_CLAIM_IDLE"), "{err}");
    }

    #[test]
    fn the_progress_window_defaults_to_50_ms_and_zero_is_immediate_but_not_less() {
        let window = |args: &[&str]| {
            let mut argv = vec!["baton-worker"];
            argv.extend(args);
            Config::try_parse_from(argv)
                .expect("parses")
                .scheduling()
                .map(|s| s.progress)
        };
        assert_eq!(
            window(&[]).unwrap(),
            Progress::Window(Duration::from_millis(50))
        );
        assert_eq!(
            window(&["--progress-window", "0"]).unwrap(),
            Progress::Immediate
        );
        let err = window(&["--progress-window=61s"])
            .expect_err("too long")
            .to_string();
        assert!(err.contains("BATON_PROGRESS_WINDOW"), "{err}");
        // A value the parser refuses names the variable too.
        let err = Config::try_parse_from(["baton-worker", "--progress-window=-1"])
            .expect_err("negative")
            .to_string();
        assert!(err.contains("BATON_PROGRESS_WINDOW"), "{err}");
    }
}
