//! The resume policy: before each job, which session to resume, or why to start fresh, or why the
//! job must be refused. A pure function of the job, what the ledger knows, and the configuration.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::job::{Job, JobKind};

/// Default of `BATON_SESSION_MAX_AGE`: a conversation older than this starts over.
pub const DEFAULT_MAX_AGE: Duration = Duration::from_secs(24 * 3600);
/// Default of `BATON_SESSION_MAX_OPS`: runs since the last fresh start after which it starts over.
pub const DEFAULT_MAX_OPS: u32 = 200;

/// How the policy is configured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PolicyConfig {
    /// Oldest conversation resumed, counted from its fresh start (`BATON_SESSION_MAX_AGE`).
    pub max_age: Duration,
    /// Most runs since the last fresh start (`BATON_SESSION_MAX_OPS`).
    pub max_ops: u32,
    /// Whether sessions are resumed at all (`BATON_RESUME`).
    pub resume: bool,
}

impl Default for PolicyConfig {
    fn default() -> Self {
        PolicyConfig {
            max_age: DEFAULT_MAX_AGE,
            max_ops: DEFAULT_MAX_OPS,
            resume: true,
        }
    }
}

/// What the ledger knows about a project, as the policy needs it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProjectSessions {
    /// The project's owner; `None` for a project the ledger has not seen.
    pub owner: Option<String>,
    /// The project's newest session.
    pub last_session: Option<crate::SessionId>,
    /// Whether the newest session may be resumed (not marked after a failed resume).
    pub last_resumable: bool,
    /// When the current conversation started fresh.
    pub fresh_start_at: Option<DateTime<Utc>>,
    /// Runs recorded since that fresh start.
    pub ops_since_fresh: u32,
    /// Whether the newest transition is an operator's reset.
    pub reset: bool,
    /// Whether the job's `previous_session_id` appears in this project's chain (`None`: the job
    /// carries none).
    pub previous_in_chain: Option<bool>,
    /// For a thread that has no session yet: the session it branches from (its `fork_from`).
    pub fork_session: Option<crate::SessionId>,
}

/// Why a job starts a fresh session; stored in `session_transitions.fresh_reason`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FreshReason {
    /// A `create` job.
    Create,
    /// The project has no session yet.
    NoSession,
    /// An operator reset the project's session.
    Reset,
    /// The conversation is older than `BATON_SESSION_MAX_AGE`.
    Expired,
    /// The newest session was marked not resumable.
    NotResumable,
    /// More than `BATON_SESSION_MAX_OPS` runs since the last fresh start.
    MaxOps,
    /// `BATON_RESUME=off`.
    ResumeDisabled,
    /// The CLI could not find the session to resume.
    ResumeFallback,
    /// The ledger holds no whole copy of the session's files (it outgrew
    /// `BATON_TRANSCRIPT_MAX_BYTES`, or its worker could not read them), so it cannot be resumed on
    /// any host.
    TranscriptIncomplete,
    /// The session was imported (`baton session import`).
    Import,
}

impl FreshReason {
    /// The name stored in the ledger and used in metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            FreshReason::Create => "create",
            FreshReason::NoSession => "no_session",
            FreshReason::Reset => "reset",
            FreshReason::Expired => "expired",
            FreshReason::NotResumable => "not_resumable",
            FreshReason::MaxOps => "max_ops",
            FreshReason::ResumeDisabled => "resume_disabled",
            FreshReason::ResumeFallback => "resume_fallback",
            FreshReason::TranscriptIncomplete => "transcript_incomplete",
            FreshReason::Import => "import",
        }
    }
}

/// The policy's verdict for one job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Resume this session. `stale` is the job's own, older id of the same chain, if it sent one.
    Resume {
        /// The session to resume: the project's newest.
        session_id: crate::SessionId,
        /// The job's `previous_session_id` when it was not the newest.
        stale: Option<crate::SessionId>,
    },
    /// Start a new session, for this reason.
    Fresh(FreshReason),
    /// Start a new thread's session as a copy of this one's history (`--fork-session`).
    Fork {
        /// The session the thread branches from.
        from: crate::SessionId,
    },
    /// Refuse the job: it can never run as it is.
    Refuse(String),
}

/// Decides how a job starts. A session never crosses projects or users.
pub fn decide(
    job: &Job,
    project: &ProjectSessions,
    config: &PolicyConfig,
    now: DateTime<Utc>,
) -> Decision {
    if let Some(owner) = &project.owner
        && owner != &job.user_id
    {
        return Decision::Refuse(format!(
            "user {} does not own project {}",
            job.user_id, job.project_id
        ));
    }
    if let Some(previous) = &job.previous_session_id
        && project.previous_in_chain != Some(true)
    {
        return Decision::Refuse(format!(
            "previous_session_id {previous} is not in the session chain of project {}",
            job.project_id
        ));
    }
    if job.kind == JobKind::Create {
        return Decision::Fresh(FreshReason::Create);
    }
    if !config.resume {
        return Decision::Fresh(FreshReason::ResumeDisabled);
    }
    let Some(last) = &project.last_session else {
        if let Some(from) = &project.fork_session {
            return Decision::Fork { from: from.clone() };
        }
        return Decision::Fresh(if project.reset {
            FreshReason::Reset
        } else {
            FreshReason::NoSession
        });
    };
    if !project.last_resumable {
        return Decision::Fresh(FreshReason::NotResumable);
    }
    if let Some(started) = project.fresh_start_at {
        let age = now
            .signed_duration_since(started)
            .to_std()
            .unwrap_or_default();
        if age > config.max_age {
            return Decision::Fresh(FreshReason::Expired);
        }
    }
    if project.ops_since_fresh >= config.max_ops {
        return Decision::Fresh(FreshReason::MaxOps);
    }
    Decision::Resume {
        session_id: last.clone(),
        stale: job.previous_session_id.clone().filter(|p| p != last),
    }
}

/// Reads a duration as every Baton setting takes one: a number, whole or not, with a unit `ms`,
/// `s`, `m`, `h` or `d` (`300ms`, `30s`, `90m`, `24h`, `2d`); a bare number is seconds (`1800`,
/// `0.3`).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let n: f64 = number
        .parse()
        .ok()
        .filter(|n: &f64| n.is_finite())
        .ok_or_else(|| format!("{text:?} is not a duration like 300ms, 30s, 90m, 24h or 2d"))?;
    let unit_secs = match unit {
        "" | "s" => 1.0,
        "ms" => 0.001,
        "m" => 60.0,
        "h" => 3600.0,
        "d" => 86_400.0,
        _ => {
            return Err(format!(
                "{text:?}: unknown unit {unit:?} (use ms, s, m, h or d)"
            ));
        }
    };
    let secs = n * unit_secs;
    // Past this no clock, date or timer can hold it.
    if secs >= 1e17 {
        return Err(format!("{text:?} is too long a duration"));
    }
    Ok(Duration::from_secs_f64(secs))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::job::{Limits, NewJob};

    fn job(kind: JobKind, user: &str, previous: Option<&str>) -> Job {
        NewJob {
            kind: Some(kind),
            project_id: "p1".into(),
            version_id: "v9".into(),
            user_id: user.into(),
            prompt: "go".into(),
            previous_session_id: previous.map(str::to_string),
            thread_id: (kind == JobKind::Chat).then(|| "th".to_string()),
            ..NewJob::default()
        }
        .into_job(&Limits::default())
        .unwrap()
    }

    fn project() -> ProjectSessions {
        ProjectSessions {
            owner: Some("alice".into()),
            last_session: Some("s-new".into()),
            last_resumable: true,
            fresh_start_at: Some(now() - chrono::Duration::hours(1)),
            ops_since_fresh: 8,
            reset: false,
            previous_in_chain: None,
            fork_session: None,
        }
    }

    fn now() -> DateTime<Utc> {
        "2026-11-21T12:00:00Z".parse().unwrap()
    }

    #[test]
    fn durations_take_one_format_everywhere() {
        for (text, want) in [
            ("1800", Duration::from_secs(1800)),
            ("0.3", Duration::from_millis(300)),
            ("300ms", Duration::from_millis(300)),
            ("30s", Duration::from_secs(30)),
            ("1.5m", Duration::from_secs(90)),
            ("24h", Duration::from_secs(86_400)),
            ("2d", Duration::from_secs(172_800)),
        ] {
            assert_eq!(parse_duration(text), Ok(want), "{text}");
        }
        for bad in ["", "s", "5x", "-1s", "1e3", "3000000000000d"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_policy_as_a_table() {
        let cfg = PolicyConfig::default();
        let resume_new = Decision::Resume {
            session_id: "s-new".into(),
            stale: None,
        };
        let cases: Vec<(&str, Job, ProjectSessions, PolicyConfig, Decision)> = vec![
            (
                "update resumes the newest",
                job(JobKind::Update, "alice", None),
                project(),
                cfg,
                resume_new.clone(),
            ),
            (
                "update naming the newest",
                job(JobKind::Update, "alice", Some("s-new")),
                ProjectSessions {
                    previous_in_chain: Some(true),
                    ..project()
                },
                cfg,
                resume_new.clone(),
            ),
            (
                "a stale id of the same chain resumes the newest",
                job(JobKind::Update, "alice", Some("s-old")),
                ProjectSessions {
                    previous_in_chain: Some(true),
                    ..project()
                },
                cfg,
                Decision::Resume {
                    session_id: "s-new".into(),
                    stale: Some("s-old".into()),
                },
            ),
            (
                "an id from another chain is refused",
                job(JobKind::Update, "alice", Some("s-elsewhere")),
                ProjectSessions {
                    previous_in_chain: Some(false),
                    ..project()
                },
                cfg,
                Decision::Refuse(
                    "previous_session_id s-elsewhere is not in the session chain of project p1"
                        .into(),
                ),
            ),
            (
                "a new thread with a fork source forks it",
                job(JobKind::Chat, "alice", None),
                ProjectSessions {
                    last_session: None,
                    fresh_start_at: None,
                    fork_session: Some("s-main".into()),
                    ..project()
                },
                cfg,
                Decision::Fork {
                    from: "s-main".into(),
                },
            ),
            (
                "a thread with a session resumes it, whatever it forked from",
                job(JobKind::Chat, "alice", None),
                ProjectSessions {
                    fork_session: Some("s-main".into()),
                    ..project()
                },
                cfg,
                resume_new.clone(),
            ),
            (
                "a new thread without a fork source starts fresh",
                job(JobKind::Chat, "alice", None),
                ProjectSessions {
                    last_session: None,
                    ..project()
                },
                cfg,
                Decision::Fresh(FreshReason::NoSession),
            ),
            (
                "another user is refused",
                job(JobKind::Update, "mallory", None),
                project(),
                cfg,
                Decision::Refuse("user mallory does not own project p1".into()),
            ),
            (
                "create starts fresh",
                job(JobKind::Create, "alice", None),
                project(),
                cfg,
                Decision::Fresh(FreshReason::Create),
            ),
            (
                "a new project starts fresh",
                job(JobKind::Update, "alice", None),
                ProjectSessions::default(),
                cfg,
                Decision::Fresh(FreshReason::NoSession),
            ),
            (
                "a reset project starts fresh",
                job(JobKind::Update, "alice", None),
                ProjectSessions {
                    last_session: None,
                    reset: true,
                    ..project()
                },
                cfg,
                Decision::Fresh(FreshReason::Reset),
            ),
            (
                "an old conversation starts fresh",
                job(JobKind::Update, "alice", None),
                ProjectSessions {
                    fresh_start_at: Some(now() - chrono::Duration::hours(25)),
                    ..project()
                },
                cfg,
                Decision::Fresh(FreshReason::Expired),
            ),
            (
                "a session marked not resumable starts fresh",
                job(JobKind::Update, "alice", None),
                ProjectSessions {
                    last_resumable: false,
                    ..project()
                },
                cfg,
                Decision::Fresh(FreshReason::NotResumable),
            ),
            (
                "too many operations start fresh",
                job(JobKind::Update, "alice", None),
                ProjectSessions {
                    ops_since_fresh: 200,
                    ..project()
                },
                cfg,
                Decision::Fresh(FreshReason::MaxOps),
            ),
            (
                "resumption turned off starts fresh",
                job(JobKind::Update, "alice", None),
                project(),
                PolicyConfig {
                    resume: false,
                    ..cfg
                },
                Decision::Fresh(FreshReason::ResumeDisabled),
            ),
            (
                "a short max age is honoured",
                job(JobKind::Update, "alice", None),
                project(),
                PolicyConfig {
                    max_age: Duration::from_secs(60),
                    ..cfg
                },
                Decision::Fresh(FreshReason::Expired),
            ),
            (
                "refusal comes before a fresh create",
                job(JobKind::Create, "alice", Some("s-elsewhere")),
                ProjectSessions {
                    previous_in_chain: Some(false),
                    ..project()
                },
                cfg,
                Decision::Refuse(
                    "previous_session_id s-elsewhere is not in the session chain of project p1"
                        .into(),
                ),
            ),
        ];
        for (name, job, project, cfg, expected) in cases {
            assert_eq!(decide(&job, &project, &cfg, now()), expected, "{name}");
        }
    }

    #[test]
    fn durations_parse_with_units() {
        assert_eq!(parse_duration("24h").unwrap(), Duration::from_secs(86_400));
        assert_eq!(parse_duration("90m").unwrap(), Duration::from_secs(5_400));
        assert_eq!(parse_duration("2d").unwrap(), Duration::from_secs(172_800));
        assert_eq!(parse_duration("45").unwrap(), Duration::from_secs(45));
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("5w").is_err());
        let too_long = parse_duration("300000000000000d").unwrap_err();
        assert!(too_long.contains("too long"), "{too_long}");
    }
}
