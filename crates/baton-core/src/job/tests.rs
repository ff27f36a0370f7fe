//! The job format's validation, in Rust and in the published schema, case by case.
use super::*;

fn valid() -> serde_json::Value {
    serde_json::json!({
        "v": 1,
        "build_id": "b-1",
        "kind": "create",
        "project_id": "p1",
        "version_id": "v1",
        "user_id": "u1",
        "prompt": "Build a todo app",
        "previous_session_id": null,
        "project_path": "p1",
        "enqueued_at": "2026-11-21T05:00:00Z"
    })
}

fn with(field: &str, value: serde_json::Value) -> serde_json::Value {
    let mut job = valid();
    job[field] = value;
    job
}

fn without(field: &str) -> serde_json::Value {
    let mut job = valid();
    job.as_object_mut().unwrap().remove(field);
    job
}

/// Cases both the Rust validation and the published schema must agree on.
fn cases() -> Vec<(&'static str, serde_json::Value, bool)> {
    let long_prompt = "x".repeat(DEFAULT_MAX_PROMPT_BYTES + 1);
    vec![
        ("valid create", valid(), true),
        (
            "valid update with session",
            {
                let mut j = with("kind", "update".into());
                j["previous_session_id"] = "81898c55-fde9-4d44-b1f5-fbd77cd4fef6".into();
                j
            },
            true,
        ),
        (
            "nested project path",
            with("project_path", "users/u1/p1".into()),
            true,
        ),
        ("version 2", with("v", 2.into()), false),
        (
            "a '.' inside the path",
            with("project_path", "a/./b".into()),
            false,
        ),
        ("a doubled '/'", with("project_path", "a//b".into()), false),
        ("a trailing '/'", with("project_path", "a/".into()), false),
        (
            "a three-digit year",
            with("enqueued_at", "202 -11-21T05:00:00Z".into()),
            false,
        ),
        (
            "a day the month does not have",
            with("enqueued_at", "2026-02-30T05:00:00Z".into()),
            false,
        ),
        (
            "a lowercase t",
            with("enqueued_at", "2026-11-21t05:00:00Z".into()),
            false,
        ),
        (
            "an offset and a fraction",
            with("enqueued_at", "2026-11-21T05:00:00.123+02:00".into()),
            true,
        ),
        ("unknown kind", with("kind", "delete".into()), false),
        ("missing prompt", without("prompt"), false),
        (
            "absent previous_session_id means null",
            without("previous_session_id"),
            true,
        ),
        ("empty prompt", with("prompt", "".into()), false),
        (
            "prompt over the limit",
            with("prompt", long_prompt.into()),
            false,
        ),
        ("id with a space", with("project_id", "p 1".into()), false),
        ("id with a slash", with("build_id", "a/b".into()), false),
        (
            "id starting with a dash",
            with("user_id", "-rf".into()),
            false,
        ),
        (
            "session id with a quote",
            with("previous_session_id", "a'b".into()),
            false,
        ),
        ("absolute path", with("project_path", "/etc".into()), false),
        (
            "parent dir",
            with("project_path", "p1/../../etc".into()),
            false,
        ),
        ("unknown field", with("extra", 1.into()), false),
        (
            "agent settings",
            with(
                "agent",
                serde_json::json!({"model": "sonnet", "permission_mode": "plan",
                    "allowed_tools": ["Read", "Bash(git:*)"], "disallowed_tools": ["WebFetch"],
                    "max_turns": 5, "max_budget_usd": 0.25, "append_system_prompt": "Be brief."}),
            ),
            true,
        ),
        (
            "an unknown permission mode",
            with("agent", serde_json::json!({"permission_mode": "yolo"})),
            false,
        ),
        (
            "zero turns",
            with("agent", serde_json::json!({"max_turns": 0})),
            false,
        ),
        (
            "a negative budget",
            with("agent", serde_json::json!({"max_budget_usd": -1})),
            false,
        ),
        (
            "an unknown agent setting",
            with("agent", serde_json::json!({"temperature": 1})),
            false,
        ),
        (
            "a tool with a comma",
            with(
                "agent",
                serde_json::json!({"allowed_tools": ["Read,Write"]}),
            ),
            false,
        ),
        (
            "some of the steps",
            with("steps", serde_json::json!(["compact", "build"])),
            true,
        ),
        ("no steps", with("steps", serde_json::json!([])), false),
        (
            "a step twice",
            with("steps", serde_json::json!(["build", "build"])),
            false,
        ),
        (
            "a step of another kind",
            with("steps", serde_json::json!(["chat_plan"])),
            false,
        ),
        (
            "bad timestamp",
            with("enqueued_at", "yesterday".into()),
            false,
        ),
        ("a create without a version", without("version_id"), false),
        ("a chat in a thread", chat(), true),
        (
            "a chat without a version",
            without_in(chat(), "version_id"),
            true,
        ),
        (
            "a chat forked from main",
            with_in(chat(), "fork_from", "main".into()),
            true,
        ),
        (
            "a chat without a thread",
            without_in(chat(), "thread_id"),
            false,
        ),
        (
            "a chat with tasks",
            with_in(chat(), "tasks", plan()["tasks"].clone()),
            false,
        ),
        (
            "a create in a thread",
            with("thread_id", "t1".into()),
            false,
        ),
        (
            "a fork outside a chat",
            with("fork_from", "main".into()),
            false,
        ),
        ("a plan", plan(), true),
        ("a plan without tasks", without_in(plan(), "tasks"), false),
        (
            "a plan of no tasks",
            with_in(plan(), "tasks", serde_json::json!([])),
            false,
        ),
        (
            "a plan of 51 tasks",
            with_in(
                plan(),
                "tasks",
                (0..51)
                    .map(|i| serde_json::json!({"id": format!("t{i}"), "prompt": "x"}))
                    .collect(),
            ),
            false,
        ),
        (
            "a task with an unknown field",
            with_in(
                plan(),
                "tasks",
                serde_json::json!([{"id": "a", "prompt": "x", "model": "m"}]),
            ),
            false,
        ),
        (
            "a task with a blank prompt",
            with_in(
                plan(),
                "tasks",
                serde_json::json!([{"id": "a", "prompt": " "}]),
            ),
            false,
        ),
        (
            "a plan with steps",
            with_in(plan(), "steps", serde_json::json!(["task:a"])),
            false,
        ),
        (
            "tasks on an update",
            with("tasks", plan()["tasks"].clone()),
            false,
        ),
    ]
}

fn chat() -> serde_json::Value {
    let mut job = with("kind", "chat".into());
    job["thread_id"] = "th-1".into();
    job
}

fn plan() -> serde_json::Value {
    let mut job = without_in(with("kind", "plan".into()), "version_id");
    job["tasks"] = serde_json::json!([
        {"id": "app", "prompt": "Create App.tsx"},
        {"id": "header", "prompt": "Create Header.tsx"}
    ]);
    job
}

fn with_in(mut job: serde_json::Value, field: &str, value: serde_json::Value) -> serde_json::Value {
    job[field] = value;
    job
}

fn without_in(mut job: serde_json::Value, field: &str) -> serde_json::Value {
    job.as_object_mut().unwrap().remove(field);
    job
}

#[test]
fn only_rust_sees_duplicate_task_ids_and_a_thread_forking_itself() {
    let twice = with_in(
        plan(),
        "tasks",
        serde_json::json!([{"id": "a", "prompt": "x"}, {"id": "a", "prompt": "y"}]),
    );
    let err = Job::from_json(twice.to_string().as_bytes(), &Limits::default()).unwrap_err();
    assert!(
        err.to_string().contains("taken by an earlier task"),
        "{err}"
    );
    let itself = with_in(chat(), "fork_from", "th-1".into());
    let err = Job::from_json(itself.to_string().as_bytes(), &Limits::default()).unwrap_err();
    assert!(err.to_string().contains("itself"), "{err}");
}

#[test]
fn a_plan_runs_its_tasks_as_steps_in_order() {
    let job = Job::from_json(plan().to_string().as_bytes(), &Limits::default()).unwrap();
    let steps = crate::Step::plan_of(&job);
    let names: Vec<&str> = steps.iter().map(|s| s.name()).collect();
    assert_eq!(names, ["task:app", "task:header"]);
    let prompts = crate::plan::StepPrompts::default();
    assert_eq!(steps[1].prompt(&job, &prompts), "Create Header.tsx");
    assert_eq!(job.version_id, "");
    assert!(!job.to_json().contains("version_id"));
}

#[test]
fn the_ids_of_an_invalid_job_are_read_when_its_build_id_is() {
    let bad = serde_json::json!({"v": 2, "build_id": "b1", "project_id": "p 1", "kind": "create"});
    let r = ReadableJob::from_payload(bad.to_string().as_bytes()).unwrap();
    assert_eq!(
        (r.build_id.as_str(), r.project_id.as_str(), r.kind.as_str()),
        ("b1", "", "create")
    );
    for unreadable in [
        &b"{not json"[..],
        br#"{"build_id": "a/b"}"#,
        br#"{"build_id": 7}"#,
        br#"[1]"#,
    ] {
        assert!(ReadableJob::from_payload(unreadable).is_none());
    }
}

#[test]
fn rust_validation_accepts_and_refuses_each_case() {
    for (name, job, ok) in cases() {
        let result = Job::from_json(job.to_string().as_bytes(), &Limits::default());
        assert_eq!(result.is_ok(), ok, "{name}: {result:?}");
    }
}

/// The published schema, its formats asserted as a strict consumer would.
fn schema_validator() -> jsonschema::Validator {
    let schema: serde_json::Value = serde_json::from_str(JOB_SCHEMA).unwrap();
    jsonschema::options()
        .should_validate_formats(true)
        .build(&schema)
        .expect("schema compiles")
}

#[test]
fn published_schema_agrees_with_rust_validation() {
    let validator = schema_validator();
    for (name, job, ok) in cases() {
        assert_eq!(validator.is_valid(&job), ok, "schema disagrees on {name}");
    }
}

#[test]
fn schema_and_rust_validation_agree_on_every_damaged_job() {
    // A payload is damaged one byte at a time, with a replacement that takes turns; whatever
    // still parses as JSON must be judged alike by the published schema and by the worker.
    let validator = schema_validator();
    let replacements = [b'"', b'0', b'-', b'/', b' ', b'.', 0xff, b'x'];
    let mut parsed = 0;
    for job in [valid(), cases()[1].1.clone()] {
        let bytes = job.to_string().into_bytes();
        for at in 0..bytes.len() {
            for (k, &replacement) in replacements.iter().enumerate() {
                if (at + k) % 2 == 1 {
                    continue;
                }
                let mut damaged = bytes.clone();
                damaged[at] = replacement;
                let Ok(value) = serde_json::from_slice::<serde_json::Value>(&damaged) else {
                    assert!(matches!(
                        Job::from_json(&damaged, &Limits::default()),
                        Err(JobError::NotJson(_))
                    ));
                    continue;
                };
                parsed += 1;
                let rust = Job::from_json(&damaged, &Limits::default());
                assert_eq!(
                    validator.is_valid(&value),
                    rust.is_ok(),
                    "schema and worker disagree on {value}: {rust:?}"
                );
            }
        }
    }
    assert!(
        parsed > 100,
        "too few damaged payloads still parsed: {parsed}"
    );
}

#[test]
fn errors_name_the_problem() {
    let err = Job::from_json(b"not json", &Limits::default()).unwrap_err();
    assert!(matches!(err, JobError::NotJson(_)), "{err}");
    let err = Job::from_json(
        with("v", 7.into()).to_string().as_bytes(),
        &Limits::default(),
    )
    .unwrap_err();
    assert_eq!(err, JobError::UnsupportedVersion("7".into()));
    let err = Job::from_json(
        without("project_id").to_string().as_bytes(),
        &Limits::default(),
    )
    .unwrap_err();
    assert!(err.to_string().contains("project_id"), "{err}");
    let err = Job::from_json(
        with("project_path", "../x".into()).to_string().as_bytes(),
        &Limits::default(),
    )
    .unwrap_err();
    assert!(err.to_string().contains("'..'"), "{err}");
}

#[test]
fn new_job_defaults_path_to_project_and_round_trips() {
    let job = NewJob {
        kind: Some(JobKind::Update),
        project_id: "proj-9".into(),
        version_id: "v2".into(),
        user_id: "u".into(),
        prompt: "add a button".into(),
        ..NewJob::default()
    }
    .into_job(&Limits::default())
    .unwrap();
    assert_eq!(job.project_path, "proj-9");
    assert!(uuid::Uuid::parse_str(&job.build_id).is_ok());
    let back = Job::from_json(job.to_json().as_bytes(), &Limits::default()).unwrap();
    assert_eq!(back, job);
}

#[test]
fn prompt_limit_is_configurable() {
    let limits = Limits {
        max_prompt_bytes: 4,
    };
    let err = Job::from_json(valid().to_string().as_bytes(), &limits).unwrap_err();
    assert!(err.to_string().contains("BATON_MAX_PROMPT_BYTES"), "{err}");
}
