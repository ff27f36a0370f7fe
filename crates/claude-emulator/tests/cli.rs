//! The emulator's output formats and history, through its binary.

use std::process::Command;

use serde_json::Value;

/// The emulator in `dir` with its sessions there and no faults, ready to run.
fn emulator_command(dir: &std::path::Path, args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_claude-emulator"));
    cmd.args(args)
        .current_dir(dir)
        .env("CLAUDE_CONFIG_DIR", dir.join(".claude"))
        .env_remove("CLAUDE_EMULATOR_FAULT");
    cmd
}

fn emulator(dir: &std::path::Path, args: &[&str]) -> std::process::Output {
    emulator_command(dir, args).output().unwrap()
}

#[test]
fn json_prints_the_result_object_or_with_verbose_every_message() {
    let dir = tempfile::tempdir().unwrap();
    let out = emulator(dir.path(), &["-p", "hi", "--output-format", "json"]);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["type"], "result");
    let out = emulator(
        dir.path(),
        &["-p", "hi", "--output-format", "json", "--verbose"],
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let messages = v.as_array().expect("an array with --verbose");
    assert_eq!(messages.first().unwrap()["subtype"], "init");
    assert_eq!(messages.last().unwrap()["type"], "result");
}

#[test]
fn text_prints_only_the_answer() {
    let dir = tempfile::tempdir().unwrap();
    let out = emulator(
        dir.path(),
        &["-p", "Write a.md", "--permission-mode", "acceptEdits"],
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "Done: wrote a.md."
    );
    assert!(dir.path().join("a.md").is_file());
}

#[test]
fn permissions_decide_what_a_run_may_write() {
    let dir = tempfile::tempdir().unwrap();
    // Headless in the default mode, nobody can approve the write: it is refused and reported.
    let out = emulator(dir.path(), &["-p", "Write b.md", "--output-format", "json"]);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["permission_denials"][0]["tool_name"], "Write");
    assert!(!dir.path().join("b.md").exists());
    // The tool allowed by name, the same mode writes.
    emulator(
        dir.path(),
        &["-p", "Write c.md", "--allowed-tools", "Read", "Write"],
    );
    assert!(dir.path().join("c.md").is_file());
    // Disallowed wins over the mode; plan mode plans and writes nothing.
    for args in [
        &[
            "-p",
            "Write d.md",
            "--permission-mode",
            "acceptEdits",
            "--disallowedTools",
            "Write",
        ][..],
        &["-p", "Write d.md", "--permission-mode", "plan"][..],
    ] {
        emulator(dir.path(), args);
        assert!(!dir.path().join("d.md").exists(), "{args:?}");
    }
    // An unknown mode is refused with the real CLI's words.
    let out = emulator(dir.path(), &["-p", "x", "--permission-mode", "bogus"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains(
        "argument 'bogus' is invalid. Allowed choices are acceptEdits, auto, bypassPermissions, manual, dontAsk, plan."
    ));
}

#[test]
fn turn_and_budget_limits_stop_a_run_as_the_real_cli_does() {
    let dir = tempfile::tempdir().unwrap();
    let run = |extra: &[&str]| -> Value {
        let mut args = vec![
            "-p",
            "Write e.md",
            "--output-format",
            "json",
            "--permission-mode",
            "acceptEdits",
        ];
        args.extend(extra);
        serde_json::from_slice(&emulator(dir.path(), &args).stdout).unwrap()
    };
    let v = run(&["--max-turns", "1"]);
    assert_eq!(v["subtype"], "error_max_turns");
    let v = run(&["--max-budget-usd", "0.0000001"]);
    assert_eq!(v["subtype"], "error_max_budget_usd");
    assert_eq!(v["is_error"], true);
    let v = run(&["--max-budget-usd", "10", "--max-turns", "2"]);
    assert_eq!(v["subtype"], "success");
}

#[test]
fn token_counts_grow_with_the_history() {
    let dir = tempfile::tempdir().unwrap();
    let run = |resume: Option<&str>| -> Value {
        let mut args = vec!["-p", "Write more into notes.md", "--output-format", "json"];
        let flag;
        if let Some(id) = resume {
            flag = format!("--resume={id}");
            args.push(&flag);
        }
        serde_json::from_slice(&emulator(dir.path(), &args).stdout).unwrap()
    };
    let first = run(None);
    let id = first["session_id"].as_str().unwrap().to_string();
    let second = run(Some(&id));
    let third = run(Some(&id));
    let cached = |v: &Value| v["usage"]["cache_read_input_tokens"].as_u64().unwrap();
    assert!(cached(&first) < cached(&second) && cached(&second) < cached(&third));
    assert_eq!(
        third["session_id"], first["session_id"],
        "the id is kept on resume"
    );
}

#[test]
fn the_run_log_dates_the_process_from_its_creation_before_main() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("runs.jsonl");
    let before_spawn = chrono::Utc::now();
    let out = emulator_command(dir.path(), &["-p", "hi", "--output-format", "json"])
        .env("CLAUDE_EMULATOR_LOG", &log)
        .output()
        .unwrap();
    assert!(out.status.success());
    let line: Value = serde_json::from_str(&std::fs::read_to_string(&log).unwrap()).unwrap();
    let at = |k: &str| {
        chrono::DateTime::parse_from_rfc3339(line[k].as_str().unwrap_or_else(|| panic!("{k}")))
            .unwrap()
            .with_timezone(&chrono::Utc)
    };
    let (created, started, ended) = (at("created_at"), at("started_at"), at("ended_at"));
    // The log keeps microseconds, so the spawn instant is compared at that precision.
    let spawn_floor = before_spawn - chrono::Duration::microseconds(1);
    assert!(
        spawn_floor <= created && created <= started && started <= ended,
        "spawned after {before_spawn}, created {created}, main {started}, ended {ended}"
    );
    // An exec and a dynamic loader take far longer than this anywhere; a `created_at` that merely
    // repeated `started_at` would fail here.
    assert!(
        started - created >= chrono::Duration::microseconds(50),
        "created {created}, main {started}"
    );
    // Its CPU, exec included, for the benchmark; a run that was never measured would log null.
    let cpu = line["cpu_ms"].as_f64().expect("cpu_ms is a number");
    assert!(cpu > 0.0 && cpu < 10_000.0, "cpu_ms {cpu}");
}
