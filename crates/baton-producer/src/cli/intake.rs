//! What `baton enqueue` and `baton serve` accept of a job, the same for both.

/// The job limits and the webhook allow-list a producer applies.
#[derive(Debug, Clone, clap::Args)]
pub struct IntakeArgs {
    /// Prefixes a job's own `webhook_url` must start with, comma-separated.
    #[arg(
        long,
        env = "BATON_WEBHOOK_ALLOW",
        value_name = "BATON_WEBHOOK_ALLOW",
        value_delimiter = ','
    )]
    webhook_allow: Vec<String>,
    /// Largest prompt accepted, in bytes.
    #[arg(long, env = "BATON_MAX_PROMPT_BYTES", default_value_t = baton_core::job::DEFAULT_MAX_PROMPT_BYTES)]
    max_prompt_bytes: usize,
}

impl IntakeArgs {
    /// The job limits.
    pub fn limits(&self) -> baton_core::Limits {
        baton_core::Limits {
            max_prompt_bytes: self.max_prompt_bytes,
        }
    }

    /// The allow-list, blank prefixes left out.
    pub fn webhook_allow(&self) -> Vec<String> {
        self.webhook_allow
            .iter()
            .map(|p| p.trim().to_string())
            .filter(|p| !p.is_empty())
            .collect()
    }
}
