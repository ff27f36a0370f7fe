//! `claude-emulator`: a stand-in for the `claude` CLI in print mode.
//!
//! It accepts the real CLI's print-mode flags with the real validation texts and exit codes, prints
//! stream-json in the real line shapes (see `docs/claude-cli.md`), keeps sessions as JSONL files where
//! the real CLI keeps them, keeps the session id on `--resume` (or rolls it, as old CLIs did, with
//! `CLAUDE_EMULATOR_SESSION_IDS=rolling`), and does visible work: it writes a file into its cwd and
//! answers from the session's history. A prompt that asks what was asked before is answered with
//! the session's earlier prompts; one that mentions a "large output" saves a tool result under
//! `<id>/tool-results/` beside the transcript, as the real CLI does; one that asks for the "saved
//! tool results" is answered with the first line of each. A resume whose transcript is absent fails
//! as the real CLI's does.
//!
//! Environment:
//! - `CLAUDE_CONFIG_DIR`: where sessions live (default `~/.claude`).
//! - `CLAUDE_EMULATOR_SESSION_IDS`: `keep` (default, current CLIs) or `rolling` (old CLIs).
//! - `CLAUDE_EMULATOR_LATENCY_MS`: time each run takes before its result;
//!   `CLAUDE_EMULATOR_LATENCY_MATCH` limits it to runs whose prompt contains that text.
//! - `CLAUDE_EMULATOR_LOG`: a file that gets one JSON line per run (its argv, the prompt it read,
//!   sessions in and out, outcome, times).
//! - `CLAUDE_EMULATOR_FAULT`, `_FAULT_RATE`, `_SEED`, `_FAULT_MATCH`, `_FAULT_FILE`: fault injection
//!   (see `fault.rs`); `CLAUDE_EMULATOR_RATE_LIMIT_RESET_SECS`: when a rate limit resets (default 60).

mod args;
mod fault;
mod output;
mod session;

use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use args::{Args, OutputFormat};
use fault::Fault;
use output::Output;
use serde_json::{Value, json};
use session::{Session, text_tokens};

/// The CLI version the emulator imitates.
const VERSION: &str = "2.1.329";
const DEFAULT_MODEL: &str = "claude-sonnet-4-6";
const TOOLS: &[&str] = &[
    "Task",
    "Bash",
    "Edit",
    "MultiEdit",
    "NotebookEdit",
    "Read",
    "Write",
    "WebFetch",
    "WebSearch",
];

/// When this process started, for the run log.
static STARTED: std::sync::OnceLock<chrono::DateTime<chrono::Utc>> = std::sync::OnceLock::new();

/// The prompt this run was given (argument or standard input), for the run log.
static PROMPT: std::sync::OnceLock<String> = std::sync::OnceLock::new();

/// When this process was created, for the run log; see [`created_at`].
static CREATED: std::sync::OnceLock<Option<chrono::DateTime<chrono::Utc>>> =
    std::sync::OnceLock::new();

fn main() {
    let now = chrono::Utc::now();
    STARTED.get_or_init(|| now);
    CREATED.get_or_init(|| created_at(now));
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let ended = invoke(&argv).unwrap_or_else(|e| {
        eprintln!("Error: {e}");
        Ended {
            code: 1,
            session_in: None,
            session_out: None,
            outcome: format!("io_error: {e}"),
        }
    });
    log_run(&argv, &ended, true);
    let _ = io::stdout().flush();
    std::process::exit(ended.code);
}

/// What one invocation ended as, for the run log.
struct Ended {
    code: i32,
    session_in: Option<String>,
    session_out: Option<String>,
    outcome: String,
}

fn refuse(stderr: &str, session_in: Option<String>, outcome: &str) -> Ended {
    eprintln!("{stderr}");
    Ended {
        code: 1,
        session_in,
        session_out: None,
        outcome: outcome.to_string(),
    }
}

fn invoke(argv: &[String]) -> io::Result<Ended> {
    let args = match args::parse(argv) {
        Ok(a) => a,
        Err(r) => return Ok(refuse(&r.stderr, None, "invalid_invocation")),
    };
    if args.version {
        println!("{VERSION} (Claude Code)");
        return Ok(ended_ok(None, None, "version"));
    }
    if args.help {
        println!(
            "Usage: claude [options] [command] [prompt]\n\n(claude-emulator: print mode only)"
        );
        return Ok(ended_ok(None, None, "help"));
    }
    if let Err(r) = args::validate(&args) {
        return Ok(refuse(&r.stderr, None, "invalid_invocation"));
    }
    if !args.print {
        return Ok(refuse(
            "claude-emulator supports print mode (-p) only",
            None,
            "invalid_invocation",
        ));
    }
    if args.permission_mode.as_deref() == Some("bypassPermissions")
        && nix::unistd::geteuid().is_root()
    {
        return Ok(refuse(
            "--dangerously-skip-permissions cannot be used with root/sudo privileges for security reasons",
            None,
            "invalid_invocation",
        ));
    }
    let prompt = match &args.prompt {
        Some(p) => p.clone(),
        None => {
            let mut buf = String::new();
            io::Read::read_to_string(&mut io::stdin(), &mut buf)?;
            if buf.trim().is_empty() {
                return Ok(refuse(
                    "Error: Input must be provided either through stdin or as a prompt argument when using --print",
                    None,
                    "invalid_invocation",
                ));
            }
            buf
        }
    };
    PROMPT.get_or_init(|| prompt.clone());
    let cwd = std::env::current_dir()?;
    let format = args.output_format.unwrap_or(OutputFormat::Text);
    let mut out = Output::new(format, args.verbose);

    let resume_id = match &args.resume {
        None => None,
        Some(None) => {
            return Ok(refuse(
                "Error: --resume requires a valid session ID or session title when used with --print",
                None,
                "invalid_invocation",
            ));
        }
        Some(Some(id)) => Some(id.clone()),
    };
    if let Some(id) = &args.session_id
        && Session::exists(&cwd, id)
    {
        return Ok(refuse(
            &format!("Error: Session ID {id} is already in use."),
            resume_id,
            "invalid_invocation",
        ));
    }

    let mut session = match &resume_id {
        None => Session::create(&cwd, args.session_id.clone().unwrap_or_else(new_id)),
        Some(id) => match Session::find(&cwd, id) {
            Some(found) => {
                let rolling =
                    std::env::var("CLAUDE_EMULATOR_SESSION_IDS").as_deref() == Ok("rolling");
                if args.fork_session || rolling {
                    found.copy_as(&cwd, args.session_id.clone().unwrap_or_else(new_id))
                } else {
                    found
                }
            }
            None => {
                // A value that is not a UUID is looked up as a session title; the emulator keeps
                // no titles, so it is never found.
                let (message, result_session, outcome) = if uuid::Uuid::parse_str(id).is_ok() {
                    (
                        format!("No conversation found with session ID: {id}"),
                        id.clone(),
                        "resume_not_found",
                    )
                } else {
                    (
                        format!(
                            "Error: --resume requires a valid session ID or session title when used with --print. Usage: claude -p --resume <session-id|title>. Provided value \"{id}\" is not a UUID and does not match any session title."
                        ),
                        new_id(),
                        "invalid_resume_value",
                    )
                };
                if format == OutputFormat::StreamJson {
                    out.emit(failed_resume_result(&result_session, &message));
                }
                out.finish();
                return Ok(refuse(&message, resume_id, outcome));
            }
        },
    };

    let model = args
        .model
        .clone()
        .unwrap_or_else(|| DEFAULT_MODEL.to_string());
    let slow = std::env::var("CLAUDE_EMULATOR_LATENCY_MATCH").map_or(true, |m| prompt.contains(&m));
    let latency = std::env::var("CLAUDE_EMULATOR_LATENCY_MS")
        .ok()
        .and_then(|v| v.parse().ok())
        .map(Duration::from_millis)
        .filter(|_| slow)
        .unwrap_or_default();
    let clock = Instant::now();
    let fault = match fault::draw(&prompt, &session::config_dir()) {
        Ok(f) => f,
        Err(e) => {
            return Ok(refuse(
                &format!("claude-emulator: {e}"),
                resume_id,
                "invalid_invocation",
            ));
        }
    };
    // The regression: the history is found, then not used.
    if fault == Some(Fault::SilentFresh) && resume_id.is_some() {
        session = Session::create(&cwd, new_id());
    }
    let run = Run {
        cwd: &cwd,
        model: &model,
        args: &args,
        latency,
        clock,
        fault,
        resume_id: resume_id.clone(),
    };

    let (outcome, code) = if prompt.trim() == "/compact" {
        (compact(&mut session, &run, &mut out)?, 0)
    } else {
        turn(&mut session, &run, &prompt, &mut out)?
    };
    out.finish();
    Ok(Ended {
        code,
        session_in: resume_id,
        session_out: Some(session.id),
        outcome,
    })
}

/// What every part of one run needs to know.
struct Run<'a> {
    cwd: &'a Path,
    model: &'a str,
    args: &'a Args,
    latency: Duration,
    clock: Instant,
    fault: Option<Fault>,
    resume_id: Option<String>,
}

/// What the run's permissions let it do with the project's files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Access {
    /// Plan mode: it plans and writes nothing.
    PlanOnly,
    /// Its mode or its allowed tools grant Write.
    Write,
    /// It asks for Write and is refused: no one is there to approve, as in a headless run.
    Denied,
}

impl Run<'_> {
    /// What this run may do: acceptEdits, auto and bypassPermissions grant edits; `default`,
    /// `manual` and `dontAsk` only what `--allowed-tools` names; `--disallowed-tools` always wins.
    fn access(&self) -> Access {
        let mode = self.args.permission_mode.as_deref().unwrap_or("default");
        let names_write = |tools: &[String]| {
            tools
                .iter()
                .any(|t| t == "Write" || t.starts_with("Write(") || t == "Edit")
        };
        if mode == "plan" {
            Access::PlanOnly
        } else if names_write(&self.args.disallowed_tools) {
            Access::Denied
        } else if matches!(mode, "acceptEdits" | "auto" | "bypassPermissions")
            || names_write(&self.args.allowed_tools)
        {
            Access::Write
        } else {
            Access::Denied
        }
    }

    /// Logs the run as it stands and never returns: a hang the caller's watchdog must end.
    fn hang(&self, session: &Session, out: &mut Output) -> ! {
        out.finish();
        self.log_unfinished(session, self.fault.map(Fault::name).unwrap_or("hang"));
        loop {
            std::thread::sleep(Duration::from_secs(3600));
        }
    }

    /// Logs the run and dies by SIGABRT, as a crashing CLI does.
    fn crash(&self, session: &Session) -> ! {
        self.log_unfinished(session, "crash");
        std::process::abort();
    }

    fn log_unfinished(&self, session: &Session, outcome: &str) {
        let _ = io::stdout().flush();
        let ended = Ended {
            code: -1,
            session_in: self.resume_id.clone(),
            session_out: Some(session.id.clone()),
            outcome: outcome.to_string(),
        };
        let argv: Vec<String> = std::env::args().skip(1).collect();
        log_run(&argv, &ended, false);
    }
}

fn ended_ok(session_in: Option<String>, session_out: Option<String>, outcome: &str) -> Ended {
    Ended {
        code: 0,
        session_in,
        session_out,
        outcome: outcome.to_string(),
    }
}

fn new_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

fn init_line(session: &Session, cwd: &Path, model: &str, args: &Args) -> Value {
    json!({
        "type": "system",
        "subtype": "init",
        "cwd": cwd.to_string_lossy(),
        "session_id": session.id,
        "tools": TOOLS,
        "mcp_servers": [],
        "model": model,
        "permissionMode": args.permission_mode.as_deref().unwrap_or("default"),
        "slash_commands": ["compact", "clear", "context", "init", "review"],
        "apiKeySource": "none",
        "claude_code_version": VERSION,
        "output_style": "default",
        "agents": ["general-purpose", "Explore", "Plan"],
        "skills": [],
        "plugins": [],
        "uuid": new_id(),
        "fast_mode_state": "off"
    })
}

fn usage(input: u64, cache_read: u64, output: u64) -> Value {
    json!({
        "input_tokens": input,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": cache_read,
        "output_tokens": output,
        "service_tier": "standard"
    })
}

fn cost(input: u64, cache_read: u64, output: u64) -> f64 {
    (input as f64 * 3.0 + cache_read as f64 * 0.3 + output as f64 * 15.0) / 1_000_000.0
}

/// The file a prompt asks for (the first name with an extension it mentions), or a note per turn.
fn target_file(prompt: &str, turn: usize) -> String {
    prompt
        .split(|c: char| c.is_whitespace() || matches!(c, ',' | ':' | ';' | '(' | ')' | '`' | '"'))
        .map(|w| w.trim_end_matches('.'))
        .find(|w| {
            w.rsplit_once('.').is_some_and(|(stem, ext)| {
                !stem.is_empty()
                    && (1..=4).contains(&ext.len())
                    && ext.chars().all(|c| c.is_ascii_alphanumeric())
                    && w.chars()
                        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
            })
        })
        .map(str::to_string)
        .unwrap_or_else(|| format!("notes/turn-{turn}.md"))
}

fn asks_for_history(prompt: &str) -> bool {
    let p = prompt.to_lowercase();
    [
        "what was asked",
        "what did i ask",
        "previous prompts",
        "earlier prompts",
    ]
    .iter()
    .any(|k| p.contains(k))
}

fn asks_for_tool_results(prompt: &str) -> bool {
    prompt.to_lowercase().contains("saved tool results")
}

/// The first line of every tool result the session saved beside its transcript, as an answer.
fn tool_results_answer(session: &Session) -> String {
    let dir = session.side_folder().join("tool-results");
    let mut names: Vec<PathBuf> = std::fs::read_dir(&dir)
        .map(|d| d.filter_map(Result::ok).map(|e| e.path()).collect())
        .unwrap_or_default();
    names.sort();
    if names.is_empty() {
        return "This session saved no tool results.".into();
    }
    let mut a = String::from("Saved tool results:");
    for path in names {
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        a.push_str(&format!("\n- {}", text.lines().next().unwrap_or("")));
    }
    a
}

/// A tool output too large for the transcript: the real CLI saves it under `<id>/tool-results/`
/// and keeps a reference in the transcript.
fn save_large_output(
    session: &mut Session,
    cwd: &Path,
    turn_no: usize,
    prompt: &str,
) -> io::Result<()> {
    let tool_id = format!("toolu_{}", uuid::Uuid::new_v4().simple());
    let dir = session.side_folder().join("tool-results");
    std::fs::create_dir_all(&dir)?;
    let path = dir.join(format!("{tool_id}.txt"));
    let first = format!("Output of turn {turn_no}: {prompt}");
    std::fs::write(&path, format!("{first}\n{}\n", "x".repeat(40_000)))?;
    session.push(
        json!({"type": "user", "message": {"role": "user", "content": [{"type": "tool_result", "tool_use_id": tool_id, "content": format!("Output too large ({} bytes). Saved to {}", 40_000 + first.len() + 2, path.display())}]}}),
        cwd,
    );
    Ok(())
}

fn turn(
    session: &mut Session,
    run: &Run<'_>,
    prompt: &str,
    out: &mut Output,
) -> io::Result<(String, i32)> {
    let (cwd, model, clock) = (run.cwd, run.model, run.clock);
    let earlier = session.prompts();
    let history_tokens = session.context_tokens();
    out.emit(init_line(session, cwd, model, run.args));
    // Like the real CLI, the prompt is in the transcript before any work: a run cut off mid-turn
    // leaves a session that can be resumed.
    session.push(
        json!({"type": "user", "message": {"role": "user", "content": prompt}}),
        cwd,
    );
    session.save()?;
    match run.fault {
        Some(Fault::HangBeforeResult) => run.hang(session, out),
        Some(Fault::NotLoggedIn) => {
            let text = "Not logged in · Please run /login";
            return api_error(session, run, out, "authentication_failed", text);
        }
        Some(Fault::RateLimited) => {
            let wait: i64 = std::env::var("CLAUDE_EMULATOR_RATE_LIMIT_RESET_SECS")
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(60);
            let resets = chrono::Utc::now().timestamp() + wait;
            out.emit(json!({"type": "rate_limit_event", "rate_limit_info": {"status": "rejected", "resetsAt": resets, "rateLimitType": "five_hour"}, "session_id": session.id, "uuid": new_id()}));
            let text = "API Error: Rate limit reached";
            return api_error(session, run, out, "rate_limit", text);
        }
        Some(Fault::Garbage) => {
            out.emit_raw("this line is not JSON");
            out.emit(json!({"type": "mystery_event", "subtype": "from_the_future", "session_id": session.id}));
            out.emit_raw("[1, 2, 3]");
        }
        _ => {}
    }

    let turn_no = earlier.len() + 1;
    let file = target_file(prompt, turn_no);
    let file_path: PathBuf = cwd.join(&file);
    let content = format!(
        "# {file}\n\nWritten in turn {turn_no} of session {}.\n\nAsked: {prompt}\n",
        session.id
    );
    if prompt.to_lowercase().contains("large output") {
        save_large_output(session, cwd, turn_no, prompt)?;
    }
    let answer = if asks_for_tool_results(prompt) {
        tool_results_answer(session)
    } else if asks_for_history(prompt) {
        let mut a = String::from("Earlier prompts in this session:");
        for (i, p) in earlier.iter().enumerate() {
            a.push_str(&format!("\n{}. {p}", i + 1));
        }
        a
    } else {
        format!("Done: wrote {file}.")
    };

    let prompt_tokens = text_tokens(prompt);
    let first_id = format!("msg_{}", uuid::Uuid::new_v4().simple());
    let first_out = text_tokens(&content) + 10;
    let first_usage = usage(prompt_tokens, history_tokens, first_out);
    let tool_id = format!("toolu_{}", uuid::Uuid::new_v4().simple());
    // The real CLI prints one assistant line per content block, each repeating the turn's usage.
    out.emit(assistant_line(
        session,
        model,
        &first_id,
        json!({"type": "text", "text": format!("I'll write {file}.")}),
        &first_usage,
        None,
    ));
    // In plan mode the agent only plans; otherwise it asks for Write, which a headless run is
    // granted only by its permission mode or its allowed tools.
    let mut denials = Vec::new();
    let wrote = match run.access() {
        Access::PlanOnly => false,
        access => {
            out.emit(assistant_line(
                session,
                model,
                &first_id,
                json!({"type": "tool_use", "id": tool_id, "name": "Write", "input": {"file_path": file_path.to_string_lossy(), "content": content}}),
                &first_usage,
                Some("tool_use"),
            ));
            if run.fault == Some(Fault::Crash) {
                run.crash(session);
            }
            let granted = access == Access::Write;
            let said = if granted {
                if let Some(dir) = file_path.parent() {
                    std::fs::create_dir_all(dir)?;
                }
                std::fs::write(&file_path, &content)?;
                format!("File created successfully at: {}", file_path.display())
            } else {
                denials.push(json!({"tool_name": "Write", "tool_use_id": tool_id, "tool_input": {"file_path": file_path.to_string_lossy()}}));
                format!(
                    "Claude requested permissions to write to {}, but you haven't granted it yet.",
                    file_path.display()
                )
            };
            out.emit(json!({
                "type": "user",
                "message": {"role": "user", "content": [{"tool_use_id": tool_id, "type": "tool_result", "content": said, "is_error": !granted}]},
                "parent_tool_use_id": null,
                "session_id": session.id,
                "uuid": new_id()
            }));
            granted
        }
    };
    let answer = match (wrote, run.access()) {
        _ if asks_for_history(prompt) || asks_for_tool_results(prompt) => answer,
        (true, _) => answer,
        (false, Access::PlanOnly) => format!("Plan: write {file}."),
        (false, _) => format!("I could not write {file}: permission to use Write was denied."),
    };

    std::thread::sleep(run.latency);
    if run.fault == Some(Fault::Garbage) {
        out.emit_raw("{\"truncated\": ");
    }
    let second_id = format!("msg_{}", uuid::Uuid::new_v4().simple());
    let second_in = prompt_tokens + first_out + 20;
    let second_out = text_tokens(&answer);
    let second_usage = usage(second_in, history_tokens, second_out);
    out.emit(assistant_line(
        session,
        model,
        &second_id,
        json!({"type": "text", "text": answer}),
        &second_usage,
        Some("end_turn"),
    ));

    let files: Vec<&str> = if wrote {
        vec![file.as_str()]
    } else {
        Vec::new()
    };
    session.push(json!({"type": "assistant", "message": {"role": "assistant", "content": answer, "files": files}}), cwd);
    session.save()?;

    let input = prompt_tokens + second_in;
    let output = first_out + second_out;
    let cache_read = history_tokens * 2;
    // A run takes two turns: the tool call and the answer.
    let turn_limit = run.args.max_turns.filter(|n| *n < 2);
    if run.fault == Some(Fault::MaxTurns) || turn_limit.is_some() {
        let limit = run.args.max_turns.unwrap_or(1);
        out.emit(json!({
            "type": "result",
            "subtype": "error_max_turns",
            "duration_ms": clock.elapsed().as_millis() as u64,
            "duration_api_ms": clock.elapsed().as_millis() as u64,
            "is_error": true,
            "num_turns": limit + 1,
            "stop_reason": "tool_use",
            "session_id": session.id,
            "total_cost_usd": cost(input, cache_read, output),
            "usage": usage(input, cache_read, output),
            "modelUsage": {},
            "permission_denials": [],
            "terminal_reason": "max_turns",
            "uuid": new_id(),
            "errors": [format!("Reached maximum number of turns ({limit})")]
        }));
        return Ok(("max_turns".into(), 1));
    }
    let spent = cost(input, cache_read, output);
    if let Some(budget) = run.args.max_budget_usd.filter(|b| spent > *b) {
        out.emit(json!({
            "type": "result",
            "subtype": "error_max_budget_usd",
            "duration_ms": clock.elapsed().as_millis() as u64,
            "duration_api_ms": clock.elapsed().as_millis() as u64,
            "is_error": true,
            "num_turns": 2,
            "stop_reason": "end_turn",
            "session_id": session.id,
            "total_cost_usd": spent,
            "usage": usage(input, cache_read, output),
            "modelUsage": {},
            "permission_denials": denials,
            "terminal_reason": "budget_exhausted",
            "uuid": new_id(),
            "errors": [format!("Reached maximum budget (${budget})")]
        }));
        return Ok(("max_budget".into(), 1));
    }
    out.emit(json!({
        "type": "result",
        "subtype": "success",
        "is_error": false,
        "duration_ms": clock.elapsed().as_millis() as u64,
        "duration_api_ms": clock.elapsed().as_millis() as u64,
        "num_turns": 2,
        "result": answer,
        "stop_reason": "end_turn",
        "session_id": session.id,
        "total_cost_usd": cost(input, cache_read, output),
        "usage": usage(input, cache_read, output),
        "modelUsage": {model: {"inputTokens": input, "outputTokens": output, "cacheReadInputTokens": cache_read, "cacheCreationInputTokens": 0, "costUSD": cost(input, cache_read, output)}},
        "permission_denials": denials,
        "terminal_reason": "completed",
        "uuid": new_id()
    }));
    match run.fault {
        Some(Fault::HangAfterResult) => run.hang(session, out),
        Some(Fault::ExitAfterSuccess) => {
            eprintln!("MCP server \"emulated\" failed to shut down cleanly");
            Ok(("exit_after_success".into(), 1))
        }
        Some(Fault::Garbage) => Ok(("garbage".into(), 0)),
        _ => Ok(("success".into(), 0)),
    }
}

/// The shape CLI 2.1.329 prints for API and account errors: a synthetic assistant line with `error`,
/// then a `result` with `subtype:"success"` and `is_error:true`; exit 1.
fn api_error(
    session: &mut Session,
    run: &Run<'_>,
    out: &mut Output,
    error: &str,
    text: &str,
) -> io::Result<(String, i32)> {
    // The real CLI keeps the transcript of a failed turn: the prompt and the synthetic answer.
    session.push(
        json!({"type": "assistant", "error": error, "isApiErrorMessage": true, "message": {"role": "assistant", "model": "<synthetic>", "content": text}}),
        run.cwd,
    );
    session.save()?;
    out.emit(json!({
        "type": "assistant",
        "message": {"id": new_id(), "model": "<synthetic>", "role": "assistant", "type": "message", "stop_reason": "stop_sequence", "stop_sequence": "", "usage": usage(0, 0, 0), "content": [{"type": "text", "text": text}]},
        "parent_tool_use_id": null,
        "session_id": session.id,
        "uuid": new_id(),
        "error": error,
        "is_api_error_message": true
    }));
    out.emit(json!({
        "type": "result",
        "subtype": "success",
        "is_error": true,
        "api_error_status": null,
        "duration_ms": run.clock.elapsed().as_millis() as u64,
        "duration_api_ms": 0,
        "num_turns": 1,
        "result": text,
        "stop_reason": "stop_sequence",
        "session_id": session.id,
        "total_cost_usd": 0,
        "usage": usage(0, 0, 0),
        "modelUsage": {},
        "permission_denials": [],
        "terminal_reason": "api_error",
        "uuid": new_id()
    }));
    Ok((
        run.fault
            .map(Fault::name)
            .unwrap_or("api_error")
            .to_string(),
        1,
    ))
}

fn assistant_line(
    session: &Session,
    model: &str,
    id: &str,
    block: Value,
    usage: &Value,
    stop: Option<&str>,
) -> Value {
    json!({
        "type": "assistant",
        "message": {"model": model, "id": id, "type": "message", "role": "assistant", "content": [block], "stop_reason": stop, "stop_sequence": null, "usage": usage},
        "parent_tool_use_id": null,
        "session_id": session.id,
        "uuid": new_id()
    })
}

fn compact(session: &mut Session, run: &Run<'_>, out: &mut Output) -> io::Result<String> {
    let (cwd, model, args, clock) = (run.cwd, run.model, run.args, run.clock);
    out.emit(json!({"type": "system", "subtype": "status", "status": "compacting", "session_id": session.id, "uuid": new_id()}));
    match run.fault {
        Some(Fault::HangBeforeResult) => run.hang(session, out),
        Some(Fault::Crash) => run.crash(session),
        _ => {}
    }
    std::thread::sleep(run.latency);
    let enough = session.messages_since_compaction() >= 2;
    let (result_text, outcome) = if enough {
        let pre = session.context_tokens();
        let summary = format!(
            "Summary of {} earlier prompts: {}",
            session.prompts().len(),
            session.prompts().join(" | ")
        );
        let post = text_tokens(&summary).min(pre);
        out.emit(json!({"type": "system", "subtype": "status", "status": null, "compact_result": "success", "session_id": session.id, "uuid": new_id()}));
        out.emit(init_line(session, cwd, model, args));
        out.emit(json!({"type": "system", "subtype": "compact_boundary", "session_id": session.id, "uuid": new_id(), "compact_metadata": {"trigger": "manual", "pre_tokens": pre, "post_tokens": post, "duration_ms": clock.elapsed().as_millis() as u64}}));
        session.push(json!({"type": "compact_boundary", "preTokens": pre, "postTokens": post, "summary": summary}), cwd);
        session.save()?;
        ("Compacted. ".to_string(), "compacted")
    } else {
        let error = "Not enough messages to compact.";
        out.emit(json!({"type": "system", "subtype": "status", "status": null, "compact_result": "failed", "compact_error": error, "session_id": session.id, "uuid": new_id()}));
        out.emit(init_line(session, cwd, model, args));
        // A fresh session has no transcript yet; the real CLI leaves none behind either.
        (error.to_string(), "compact_failed")
    };
    out.emit(json!({
        "type": "result",
        "subtype": "success",
        "is_error": false,
        "duration_ms": clock.elapsed().as_millis() as u64,
        "duration_api_ms": 0,
        "num_turns": 0,
        "result": result_text,
        "local_command": "compact",
        "stop_reason": null,
        "session_id": session.id,
        "total_cost_usd": 0,
        "usage": usage(0, 0, 0),
        "modelUsage": {},
        "permission_denials": [],
        "uuid": new_id()
    }));
    Ok(outcome.into())
}

/// The one `result` line the CLI prints in stream-json when the session to resume cannot be found
/// (2.1.329 for a missing id; also 2.1.197 for a value that is no UUID and no title).
fn failed_resume_result(session_id: &str, message: &str) -> Value {
    json!({
        "type": "result",
        "subtype": "error_during_execution",
        "duration_ms": 0,
        "duration_api_ms": 0,
        "is_error": true,
        "num_turns": 0,
        "stop_reason": null,
        "session_id": session_id,
        "total_cost_usd": 0,
        "usage": usage(0, 0, 0),
        "modelUsage": {},
        "permission_denials": [],
        "uuid": new_id(),
        "errors": [message]
    })
}

/// When this process was created (the `clone` that became it, before its `exec`), at the latest:
/// now minus the CPU time it has used, which until `main` is all it has done but wait for a core.
/// Lets the benchmark count the process's own start (exec, loader, runtime) as time inside the CLI.
/// The estimate is late by whatever the new process waited, so that wait is charged to Baton. The
/// scheduler's count of it (`/proc/self/schedstat`) was tried and overshot by milliseconds on a
/// loaded machine, dating processes before the worker had spawned them. `None` if the clock fails.
fn created_at(now: chrono::DateTime<chrono::Utc>) -> Option<chrono::DateTime<chrono::Utc>> {
    let cpu = cpu_time(nix::time::ClockId::CLOCK_THREAD_CPUTIME_ID)?;
    Some(now - chrono::Duration::from_std(cpu).ok()?)
}

/// CPU this process has used so far (user and system, its exec included), in milliseconds; lets the
/// benchmark compare what a CLI run costs inside the pipeline with what it costs alone.
fn process_cpu_ms() -> Option<f64> {
    let cpu = cpu_time(nix::time::ClockId::CLOCK_PROCESS_CPUTIME_ID)?;
    Some(cpu.as_secs_f64() * 1000.0)
}

/// The CPU time `clock` has counted; `None` if the clock fails.
fn cpu_time(clock: nix::time::ClockId) -> Option<std::time::Duration> {
    nix::time::clock_gettime(clock)
        .ok()
        .map(std::time::Duration::from)
}

/// Appends one line about this run to `CLAUDE_EMULATOR_LOG`; `ended_at` is null for a run that
/// hangs or crashes.
fn log_run(argv: &[String], ended: &Ended, finished: bool) {
    let Some(path) = std::env::var_os("CLAUDE_EMULATOR_LOG") else {
        return;
    };
    let line = json!({
        "pid": std::process::id(),
        "argv": argv,
        "prompt": PROMPT.get(),
        "cwd": std::env::current_dir().ok().map(|d| d.to_string_lossy().into_owned()),
        "session_in": ended.session_in,
        "session_out": ended.session_out,
        "created_at": CREATED.get().copied().flatten().map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)),
        "started_at": STARTED.get().map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)),
        "ended_at": finished.then(|| chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true)),
        "outcome": ended.outcome,
        "exit_code": ended.code,
        "cpu_ms": process_cpu_ms()
    });
    // One write of one line with O_APPEND keeps lines of concurrent runs whole.
    if let Ok(mut f) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
    {
        let _ = f.write_all(format!("{line}\n").as_bytes());
    }
}
