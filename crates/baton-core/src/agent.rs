//! What the agent may do in a run: the operator's settings, which a job may narrow but never widen.

use serde::{Deserialize, Serialize};

/// The permission modes the CLI takes (`--permission-mode`; 2.1.329 lists all but `default`,
/// which it also takes).
pub const PERMISSION_MODES: &[&str] = &[
    "acceptEdits",
    "auto",
    "bypassPermissions",
    "manual",
    "dontAsk",
    "plan",
    "default",
];

/// Baton's default permission mode: the agent may edit the project's files, and asks for nothing
/// else. A headless CLI in the `default` mode is refused every edit.
pub const DEFAULT_PERMISSION_MODE: &str = "acceptEdits";

/// The mode that lets the agent do anything, refused from a job unless the operator allows it.
pub const BYPASS: &str = "bypassPermissions";

/// A job's own agent settings (its `agent` object), each optional.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobAgent {
    /// `--model`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// `--permission-mode`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub permission_mode: Option<String>,
    /// `--allowed-tools`: only tools the operator allows, when the operator names any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allowed_tools: Option<Vec<String>>,
    /// `--disallowed-tools`, added to the operator's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disallowed_tools: Option<Vec<String>>,
    /// `--max-turns`, at most the operator's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_turns: Option<u32>,
    /// `--max-budget-usd` of each run, at most the operator's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_budget_usd: Option<f64>,
    /// Appended to the system prompt, after the operator's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub append_system_prompt: Option<String>,
}

/// The operator's agent settings (`BATON_PERMISSION_MODE` and the rest).
#[derive(Debug, Clone, PartialEq)]
pub struct OperatorAgent {
    /// `BATON_PERMISSION_MODE`.
    pub permission_mode: String,
    /// `BATON_ALLOWED_TOOLS` (empty: the CLI's own choice).
    pub allowed_tools: Vec<String>,
    /// `BATON_DISALLOWED_TOOLS`.
    pub disallowed_tools: Vec<String>,
    /// `BATON_MODEL`.
    pub model: Option<String>,
    /// `BATON_FALLBACK_MODEL`.
    pub fallback_model: Option<String>,
    /// `BATON_MAX_TURNS`.
    pub max_turns: Option<u32>,
    /// `BATON_MAX_BUDGET_USD`, per run.
    pub max_budget_usd: Option<f64>,
    /// `BATON_APPEND_SYSTEM_PROMPT`.
    pub append_system_prompt: Option<String>,
    /// `BATON_MCP_CONFIG`.
    pub mcp_config: Option<String>,
    /// `BATON_ALLOW_BYPASS_PERMISSIONS`: jobs may ask for `bypassPermissions`.
    pub allow_bypass: bool,
}

impl Default for OperatorAgent {
    fn default() -> Self {
        OperatorAgent {
            permission_mode: DEFAULT_PERMISSION_MODE.into(),
            allowed_tools: Vec::new(),
            disallowed_tools: Vec::new(),
            model: None,
            fallback_model: None,
            max_turns: None,
            max_budget_usd: None,
            append_system_prompt: None,
            mcp_config: None,
            allow_bypass: false,
        }
    }
}

/// The settings one job's runs get, as CLI flags.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RunSettings {
    /// `--permission-mode`.
    pub permission_mode: Option<String>,
    /// `--allowed-tools`.
    pub allowed_tools: Vec<String>,
    /// `--disallowed-tools`.
    pub disallowed_tools: Vec<String>,
    /// `--model`.
    pub model: Option<String>,
    /// `--fallback-model`.
    pub fallback_model: Option<String>,
    /// `--max-turns`.
    pub max_turns: Option<u32>,
    /// `--max-budget-usd`.
    pub max_budget_usd: Option<f64>,
    /// `--append-system-prompt`.
    pub append_system_prompt: Option<String>,
    /// `--mcp-config`.
    pub mcp_config: Option<String>,
}

/// Checks the shape of a job's agent settings (the schema's rules), whatever the operator allows.
pub fn check_job_agent(agent: &JobAgent) -> Result<(), String> {
    if let Some(mode) = &agent.permission_mode
        && !PERMISSION_MODES.contains(&mode.as_str())
    {
        return Err(format!(
            "permission_mode {mode:?} is not one of {}",
            PERMISSION_MODES.join(", ")
        ));
    }
    if agent.max_turns == Some(0) {
        return Err("max_turns must be at least 1".into());
    }
    if let Some(b) = agent.max_budget_usd
        && !(b.is_finite() && b > 0.0)
    {
        return Err(format!("max_budget_usd must be a positive number, not {b}"));
    }
    for tool in agent
        .allowed_tools
        .iter()
        .chain(&agent.disallowed_tools)
        .flatten()
    {
        if tool.is_empty()
            || tool.len() > 200
            || tool.starts_with('-')
            || tool.contains(['\0', ',', '\n'])
        {
            return Err(format!(
                "tool {tool:?} must be 1 to 200 characters, not start with '-', and have no commas or line breaks"
            ));
        }
    }
    if let Some(model) = &agent.model
        && (model.is_empty() || model.len() > 200 || model.starts_with('-'))
    {
        return Err(format!("model {model:?} is not a model name"));
    }
    Ok(())
}

/// The settings a job's runs get: the operator's, narrowed by the job's. Refuses (with why) a job
/// that would widen them: `bypassPermissions` without `BATON_ALLOW_BYPASS_PERMISSIONS`, more turns
/// or budget than the operator's, or a tool the operator's allow-list leaves out.
pub fn settle(operator: &OperatorAgent, job: Option<&JobAgent>) -> Result<RunSettings, String> {
    let none = JobAgent::default();
    let job = job.unwrap_or(&none);
    check_job_agent(job)?;
    if job.permission_mode.as_deref() == Some(BYPASS)
        && operator.permission_mode != BYPASS
        && !operator.allow_bypass
    {
        return Err(
            "the job asks for permission_mode bypassPermissions, which this deployment does not allow (BATON_ALLOW_BYPASS_PERMISSIONS)"
                .into(),
        );
    }
    let at_most = |what: &str, asked: Option<f64>, limit: Option<f64>| match (asked, limit) {
        (Some(a), Some(l)) if a > l => Err(format!(
            "the job asks for {what} {a}, over this deployment's {l}"
        )),
        (Some(a), _) => Ok(Some(a)),
        (None, l) => Ok(l),
    };
    let max_turns = at_most(
        "max_turns",
        job.max_turns.map(f64::from),
        operator.max_turns.map(f64::from),
    )?
    .map(|t| t as u32);
    let max_budget_usd = at_most(
        "max_budget_usd",
        job.max_budget_usd,
        operator.max_budget_usd,
    )?;
    let allowed_tools = match &job.allowed_tools {
        Some(asked) if !operator.allowed_tools.is_empty() => {
            if let Some(extra) = asked.iter().find(|t| !operator.allowed_tools.contains(t)) {
                return Err(format!(
                    "the job allows the tool {extra:?}, which this deployment's BATON_ALLOWED_TOOLS does not"
                ));
            }
            asked.clone()
        }
        Some(asked) => asked.clone(),
        None => operator.allowed_tools.clone(),
    };
    let mut disallowed_tools = operator.disallowed_tools.clone();
    for tool in job.disallowed_tools.iter().flatten() {
        if !disallowed_tools.contains(tool) {
            disallowed_tools.push(tool.clone());
        }
    }
    let append_system_prompt = match (&operator.append_system_prompt, &job.append_system_prompt) {
        (Some(o), Some(j)) => Some(format!("{o}\n\n{j}")),
        (o, j) => o.clone().or_else(|| j.clone()),
    };
    Ok(RunSettings {
        permission_mode: Some(
            job.permission_mode
                .clone()
                .unwrap_or_else(|| operator.permission_mode.clone()),
        ),
        allowed_tools,
        disallowed_tools,
        model: job.model.clone().or_else(|| operator.model.clone()),
        fallback_model: operator.fallback_model.clone(),
        max_turns,
        max_budget_usd,
        append_system_prompt,
        mcp_config: operator.mcp_config.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_job_narrows_the_operators_settings() {
        let op = OperatorAgent {
            allowed_tools: vec!["Read".into(), "Write".into(), "Edit".into()],
            disallowed_tools: vec!["WebFetch".into()],
            max_turns: Some(30),
            max_budget_usd: Some(2.0),
            model: Some("sonnet".into()),
            append_system_prompt: Some("Be brief.".into()),
            ..OperatorAgent::default()
        };
        let s = settle(&op, None).unwrap();
        assert_eq!(s.permission_mode.as_deref(), Some("acceptEdits"));
        assert_eq!((s.max_turns, s.max_budget_usd), (Some(30), Some(2.0)));
        let job = JobAgent {
            model: Some("opus".into()),
            permission_mode: Some("plan".into()),
            allowed_tools: Some(vec!["Read".into()]),
            disallowed_tools: Some(vec!["Bash".into()]),
            max_turns: Some(5),
            max_budget_usd: Some(0.5),
            append_system_prompt: Some("Use TypeScript.".into()),
        };
        let s = settle(&op, Some(&job)).unwrap();
        assert_eq!(s.model.as_deref(), Some("opus"));
        assert_eq!(s.permission_mode.as_deref(), Some("plan"));
        assert_eq!(s.allowed_tools, ["Read"]);
        assert_eq!(s.disallowed_tools, ["WebFetch", "Bash"]);
        assert_eq!((s.max_turns, s.max_budget_usd), (Some(5), Some(0.5)));
        assert_eq!(
            s.append_system_prompt.as_deref(),
            Some("Be brief.\n\nUse TypeScript.")
        );
    }

    #[test]
    fn a_job_cannot_widen_them() {
        let op = OperatorAgent {
            allowed_tools: vec!["Read".into()],
            max_turns: Some(10),
            max_budget_usd: Some(1.0),
            ..OperatorAgent::default()
        };
        let refused = |job: JobAgent| settle(&op, Some(&job)).unwrap_err();
        assert!(
            refused(JobAgent {
                permission_mode: Some(BYPASS.into()),
                ..JobAgent::default()
            })
            .contains("BATON_ALLOW_BYPASS_PERMISSIONS")
        );
        assert!(
            refused(JobAgent {
                max_turns: Some(11),
                ..JobAgent::default()
            })
            .contains("max_turns 11")
        );
        assert!(
            refused(JobAgent {
                max_budget_usd: Some(1.5),
                ..JobAgent::default()
            })
            .contains("max_budget_usd 1.5")
        );
        assert!(
            refused(JobAgent {
                allowed_tools: Some(vec!["Bash".into()]),
                ..JobAgent::default()
            })
            .contains("\"Bash\"")
        );
        assert!(
            refused(JobAgent {
                permission_mode: Some("bogus".into()),
                ..JobAgent::default()
            })
            .contains("not one of")
        );
        // Allowed by the operator, bypass is fine.
        let open = OperatorAgent {
            allow_bypass: true,
            ..OperatorAgent::default()
        };
        let job = JobAgent {
            permission_mode: Some(BYPASS.into()),
            ..JobAgent::default()
        };
        assert_eq!(
            settle(&open, Some(&job))
                .unwrap()
                .permission_mode
                .as_deref(),
            Some(BYPASS)
        );
    }
}
