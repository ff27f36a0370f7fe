//! The worker's configuration: every setting is a flag and an environment variable.

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

/// `baton-worker`: takes build jobs from the Redis stream and runs them through the `claude` CLI.
#[derive(Debug, Clone, Parser)]
#[command(name = "baton-worker", version, about)]
pub struct Config {
    /// Redis holding the job stream and checkpoints.
    #[arg(long, env = "REDIS_URL", default_value = "redis://127.0.0.1:6379")]
    pub redis_url: String,

    /// Postgres holding the ledger.
    #[arg(
        long,
        env = "DATABASE_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/baton"
    )]
    pub database_url: String,

    /// The job stream.
    #[arg(long, env = "BATON_STREAM", default_value = baton_core::DEFAULT_STREAM)]
    pub stream: String,

    /// The consumer group every replica joins.
    #[arg(long, env = "BATON_GROUP", default_value = baton_core::DEFAULT_GROUP)]
    pub group: String,

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

    /// Longest an agent run may take, in seconds.
    #[arg(long, env = "BATON_RUN_TIMEOUT", default_value_t = 1800)]
    pub run_timeout_secs: u64,

    /// Longest an agent run may print nothing, in seconds.
    #[arg(long, env = "BATON_RUN_IDLE_TIMEOUT", default_value_t = 300)]
    pub run_idle_secs: u64,

    /// Seconds the CLI may linger after printing its result before it is ended.
    #[arg(long, env = "BATON_RUN_EXIT_GRACE", default_value_t = 5)]
    pub run_exit_grace_secs: u64,

    /// Run the CLI without the supervisor that ends it when this worker dies (not recommended).
    #[arg(long, env = "BATON_NO_SUPERVISOR", default_value_t = false)]
    pub no_supervisor: bool,

    /// Extra environment variables passed to the CLI, comma-separated (`NAME` or `PREFIX*`).
    #[arg(long, env = "BATON_AGENT_ENV_ALLOW", value_delimiter = ',')]
    pub agent_env_allow: Vec<String>,

    /// Seconds in-flight runs get to finish after SIGTERM or SIGINT before they are cancelled.
    #[arg(long, env = "BATON_SHUTDOWN_GRACE", default_value_t = 25)]
    pub shutdown_grace_secs: u64,

    /// Oldest conversation resumed, from its fresh start (`24h`, `90m`, `3600`, ...).
    #[arg(long, env = "BATON_SESSION_MAX_AGE", default_value = "24h")]
    pub session_max_age: String,

    /// Most runs since a fresh start before the next job starts fresh.
    #[arg(long, env = "BATON_SESSION_MAX_OPS", default_value_t = baton_core::policy::DEFAULT_MAX_OPS)]
    pub session_max_ops: u32,

    /// `on` resumes sessions; `off` starts every job fresh.
    #[arg(long, env = "BATON_RESUME", default_value = "on", value_parser = ["on", "off"])]
    pub resume: String,

    /// Log format: `text`, `json`, or `auto` (text on a terminal, JSON otherwise).
    #[arg(long, env = "BATON_LOG_FORMAT", default_value = "auto")]
    pub log_format: String,
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
            wall_clock: Duration::from_secs(self.run_timeout_secs),
            idle: Duration::from_secs(self.run_idle_secs),
            post_result_grace: Duration::from_secs(self.run_exit_grace_secs),
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
    pub fn policy(&self) -> anyhow::Result<baton_core::policy::PolicyConfig> {
        Ok(baton_core::policy::PolicyConfig {
            max_age: baton_core::policy::parse_duration(&self.session_max_age)
                .map_err(|e| anyhow::anyhow!("BATON_SESSION_MAX_AGE: {e}"))?,
            max_ops: self.session_max_ops,
            resume: self.resume == "on",
        })
    }

    /// The job limits.
    pub fn limits(&self) -> baton_core::Limits {
        baton_core::Limits {
            max_prompt_bytes: self.max_prompt_bytes,
        }
    }
}
