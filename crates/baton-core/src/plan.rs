//! The steps each job kind runs, and the names the ledger records them under.

use serde::{Deserialize, Serialize};

use crate::job::{Job, JobKind};

/// One agent run of a job's plan, in the order the plan runs them. Serialised as its name.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Step {
    /// The user's prompt: creates or changes the project.
    Build,
    /// Metadata, first run: recommendations for the project's next steps.
    Recommendations,
    /// Metadata, second run: the project's documentation.
    Documentation,
    /// `/compact` on the session the steps before left.
    Compact,
    /// A planning chat: the user's prompt in plan mode.
    ChatPlan,
    /// A chat in one of the project's threads: the user's prompt on the thread's session.
    Chat,
    /// One task of a `plan` job, by its name `task:<id>` (made by [`Step::task`]).
    Task(String),
}

/// What a task step's name starts with.
const TASK_PREFIX: &str = "task:";

const BUILD_PLAN: &[Step] = &[
    Step::Build,
    Step::Recommendations,
    Step::Documentation,
    Step::Compact,
];

impl Step {
    /// The steps a job of `kind` runs, in order; a `plan` job's are its tasks ([`Step::plan_of`]).
    pub fn plan(kind: JobKind) -> &'static [Step] {
        match kind {
            JobKind::Create | JobKind::Update => BUILD_PLAN,
            JobKind::ChatPlan => &[Step::ChatPlan],
            JobKind::Chat => &[Step::Chat],
            JobKind::Plan => &[],
        }
    }

    /// The step of the plan task `id`.
    pub fn task(id: &str) -> Step {
        Step::Task(format!("{TASK_PREFIX}{id}"))
    }

    /// The task's id, for a task step.
    pub fn task_id(&self) -> Option<&str> {
        match self {
            Step::Task(name) => name.strip_prefix(TASK_PREFIX),
            _ => None,
        }
    }

    /// The step's stable name, used in the ledger, the checkpoint and logs.
    pub fn name(&self) -> &str {
        match self {
            Step::Build => "build",
            Step::Recommendations => "metadata.recommendations",
            Step::Documentation => "metadata.documentation",
            Step::Compact => "compact",
            Step::ChatPlan => "chat_plan",
            Step::Chat => "chat",
            Step::Task(name) => name,
        }
    }

    /// Parses a name written by [`Step::name`].
    pub fn from_name(name: &str) -> Option<Step> {
        if let Some(id) = name.strip_prefix(TASK_PREFIX) {
            return crate::job::validate_id("task id", id, crate::job::MAX_ID_LEN)
                .is_ok()
                .then(|| Step::task(id));
        }
        [
            Step::Build,
            Step::Recommendations,
            Step::Documentation,
            Step::Compact,
            Step::ChatPlan,
            Step::Chat,
        ]
        .into_iter()
        .find(|s| s.name() == name)
    }

    /// The transition source the ledger records this step's run under.
    pub fn source(&self) -> Source {
        match self {
            Step::Build => Source::Build,
            Step::Recommendations | Step::Documentation => Source::Metadata,
            Step::Compact => Source::Compact,
            Step::ChatPlan => Source::ChatPlan,
            Step::Chat => Source::Chat,
            Step::Task(_) => Source::PlanTask,
        }
    }

    /// The `--permission-mode` the step runs with, where it needs one (not kept on resume, so
    /// passed on every run).
    pub fn permission_mode(&self) -> Option<&'static str> {
        match self {
            Step::ChatPlan => Some("plan"),
            _ => None,
        }
    }

    /// Whether a failure of this step leaves the job's session usable, so the job still completes.
    /// A compaction that fails changes nothing in the session.
    pub fn may_fail(&self) -> bool {
        matches!(self, Step::Compact)
    }

    /// The steps `job` runs: a plan's tasks in order; otherwise its kind's plan, or the part of it
    /// its `steps` names, in the plan's order.
    pub fn plan_of(job: &Job) -> Vec<Step> {
        if let Some(tasks) = &job.tasks {
            return tasks.iter().map(|t| Step::task(&t.id)).collect();
        }
        Step::plan(job.kind)
            .iter()
            .filter(|s| {
                job.steps
                    .as_ref()
                    .is_none_or(|names| names.iter().any(|n| n == s.name()))
            })
            .cloned()
            .collect()
    }

    /// The prompt the step sends to the CLI: the job's own for a build or a chat, the task's for a
    /// plan task, the operator's metadata prompts, `/compact` for a compaction.
    pub fn prompt(&self, job: &Job, prompts: &StepPrompts) -> String {
        match self {
            Step::Build | Step::ChatPlan | Step::Chat => job.prompt.clone(),
            Step::Task(_) => {
                let id = self.task_id();
                job.tasks
                    .iter()
                    .flatten()
                    .find(|t| Some(t.id.as_str()) == id)
                    .map_or_else(|| job.prompt.clone(), |t| t.prompt.clone())
            }
            Step::Recommendations => prompts.recommendations.clone(),
            Step::Documentation => prompts.documentation.clone(),
            Step::Compact => "/compact".to_string(),
        }
    }
}

impl Serialize for Step {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

impl<'de> Deserialize<'de> for Step {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Step, D::Error> {
        let name = String::deserialize(d)?;
        Step::from_name(&name)
            .ok_or_else(|| serde::de::Error::custom(format!("unknown step {name:?}")))
    }
}

/// The prompts of the steps that do not take the job's (`BATON_STEP_PROMPTS` changes them).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepPrompts {
    /// `metadata.recommendations`.
    pub recommendations: String,
    /// `metadata.documentation`.
    pub documentation: String,
}

impl Default for StepPrompts {
    fn default() -> Self {
        StepPrompts {
            recommendations: "Review the project as it is now and write RECOMMENDATIONS.md: \
                 the five most valuable next steps, each with a one-line reason."
                .to_string(),
            documentation: "Write or update README.md so a new developer can run, test and \
                 change the project. Describe what changed in this version."
                .to_string(),
        }
    }
}

impl StepPrompts {
    /// The defaults, with the prompts a JSON object names by step (`{"metadata.recommendations":
    /// "...", "metadata.documentation": "..."}`) instead. Other steps' prompts are not the
    /// operator's to change: a build or a chat sends the job's, a compaction `/compact`.
    pub fn from_json(text: &str) -> Result<StepPrompts, String> {
        let map: std::collections::BTreeMap<String, String> = serde_json::from_str(text)
            .map_err(|e| format!("not a JSON object of step names and prompts: {e}"))?;
        let mut prompts = StepPrompts::default();
        for (step, prompt) in map {
            if prompt.trim().is_empty() {
                return Err(format!("the prompt of {step:?} is blank"));
            }
            match step.as_str() {
                "metadata.recommendations" => prompts.recommendations = prompt,
                "metadata.documentation" => prompts.documentation = prompt,
                other => {
                    return Err(format!(
                        "{other:?} has no prompt of its own to set (only metadata.recommendations and metadata.documentation do)"
                    ));
                }
            }
        }
        Ok(prompts)
    }
}

impl std::fmt::Display for Step {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // `pad`, so that `{:<25}` lines steps up in the CLI's tables.
        f.pad(self.name())
    }
}

/// Why a session transition was recorded; stored in `session_transitions.source`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// The build step's run.
    Build,
    /// A metadata run (recommendations or documentation).
    Metadata,
    /// A `/compact` run.
    Compact,
    /// A planning chat run.
    ChatPlan,
    /// A run of a thread's chat.
    Chat,
    /// A run of one task of a plan.
    PlanTask,
    /// A fresh start after the CLI could not find the session to resume.
    ResumeFallback,
    /// An operator reset the project's session.
    Reset,
    /// The first run of a thread forked from another session: a new session holding a copy of
    /// its history.
    Fork,
    /// A session an operator imported from elsewhere.
    Import,
}

impl Source {
    /// The name stored in the ledger.
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Build => "build",
            Source::Metadata => "metadata",
            Source::Compact => "compact",
            Source::ChatPlan => "chat_plan",
            Source::Chat => "chat",
            Source::PlanTask => "plan_task",
            Source::ResumeFallback => "resume_fallback",
            Source::Reset => "reset",
            Source::Fork => "fork",
            Source::Import => "import",
        }
    }

    /// Parses a name written by [`Source::as_str`].
    pub fn from_name(name: &str) -> Option<Source> {
        [
            Source::Build,
            Source::Metadata,
            Source::Compact,
            Source::ChatPlan,
            Source::Chat,
            Source::PlanTask,
            Source::ResumeFallback,
            Source::Reset,
            Source::Fork,
            Source::Import,
        ]
        .into_iter()
        .find(|s| s.as_str() == name)
    }
}

/// Where a build stands; stored in `builds.status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BuildStatus {
    /// Enqueued, not yet taken by a worker.
    Queued,
    /// A worker is running its steps.
    Running,
    /// Every step ran.
    Completed,
    /// The build stopped on an error it cannot recover from.
    Failed,
    /// Someone cancelled it: a queued build never started, a running one's run was cut and not
    /// recorded.
    Cancelled,
}

impl BuildStatus {
    /// The name stored in the ledger.
    pub fn as_str(self) -> &'static str {
        match self {
            BuildStatus::Queued => "queued",
            BuildStatus::Running => "running",
            BuildStatus::Completed => "completed",
            BuildStatus::Failed => "failed",
            BuildStatus::Cancelled => "cancelled",
        }
    }

    /// Whether the build has ended: completed, failed or cancelled.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            BuildStatus::Completed | BuildStatus::Failed | BuildStatus::Cancelled
        )
    }

    /// Parses a name written by [`BuildStatus::as_str`].
    pub fn from_name(name: &str) -> Option<BuildStatus> {
        match name {
            "queued" => Some(BuildStatus::Queued),
            "running" => Some(BuildStatus::Running),
            "completed" => Some(BuildStatus::Completed),
            "failed" => Some(BuildStatus::Failed),
            "cancelled" => Some(BuildStatus::Cancelled),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn build_plans_run_build_then_metadata_then_compact() {
        for kind in [JobKind::Create, JobKind::Update] {
            let sources: Vec<_> = Step::plan(kind).iter().map(|s| s.source()).collect();
            assert_eq!(
                sources,
                [
                    Source::Build,
                    Source::Metadata,
                    Source::Metadata,
                    Source::Compact
                ]
            );
        }
    }

    #[test]
    fn a_chat_plan_is_one_plan_mode_run() {
        assert_eq!(Step::plan(JobKind::ChatPlan), [Step::ChatPlan]);
        assert_eq!(Step::ChatPlan.source(), Source::ChatPlan);
        assert_eq!(Step::ChatPlan.permission_mode(), Some("plan"));
        assert_eq!(Step::Build.permission_mode(), None);
    }

    #[test]
    fn step_names_round_trip() {
        for step in Step::plan(JobKind::Create)
            .iter()
            .cloned()
            .chain([Step::Chat, Step::task("t-1")])
        {
            assert_eq!(Step::from_name(step.name()), Some(step.clone()));
        }
        assert_eq!(Step::task("t-1").name(), "task:t-1");
        assert_eq!(Step::task("t-1").task_id(), Some("t-1"));
        assert_eq!(Step::from_name("nope"), None);
        assert_eq!(Step::from_name("task:a b"), None);
    }

    #[test]
    fn serde_names_are_the_ledger_names() {
        for step in [
            Step::Build,
            Step::Recommendations,
            Step::Documentation,
            Step::Compact,
            Step::ChatPlan,
            Step::Chat,
            Step::task("x"),
        ] {
            let json = serde_json::to_value(&step).unwrap();
            assert_eq!(json, step.name());
            assert_eq!(serde_json::from_value::<Step>(json).unwrap(), step);
        }
        for source in [
            Source::Build,
            Source::ResumeFallback,
            Source::Import,
            Source::Chat,
            Source::PlanTask,
        ] {
            assert_eq!(serde_json::to_value(source).unwrap(), source.as_str());
            assert_eq!(Source::from_name(source.as_str()), Some(source));
        }
    }

    #[test]
    fn only_compaction_may_fail_without_failing_the_job() {
        let tolerant: Vec<_> = Step::plan(JobKind::Create)
            .iter()
            .filter(|s| s.may_fail())
            .collect();
        assert_eq!(tolerant, [&Step::Compact]);
    }
}
