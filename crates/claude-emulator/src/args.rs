//! The print-mode command line of the real CLI, with its validation texts and exit codes.

/// How the run prints its output (`--output-format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputFormat {
    /// Only the result text.
    Text,
    /// The `result` object, or with `--verbose` an array of every message.
    Json,
    /// One JSON object per line, as it happens.
    StreamJson,
}

/// The parsed command line.
#[derive(Debug, Default)]
pub struct Args {
    pub print: bool,
    pub output_format: Option<OutputFormat>,
    pub verbose: bool,
    /// `Some(None)` is `--resume` without a value (the interactive picker, refused in print mode).
    pub resume: Option<Option<String>>,
    pub fork_session: bool,
    pub session_id: Option<String>,
    pub model: Option<String>,
    pub max_turns: Option<u32>,
    pub permission_mode: Option<String>,
    /// `--allowed-tools` / `--allowedTools`: one or more tools, each a word of its own or
    /// comma-separated.
    pub allowed_tools: Vec<String>,
    /// `--disallowed-tools` / `--disallowedTools`.
    pub disallowed_tools: Vec<String>,
    pub max_budget_usd: Option<f64>,
    pub prompt: Option<String>,
    pub version: bool,
    pub help: bool,
}

/// A command line the CLI refuses: what it prints on stderr and its exit code.
#[derive(Debug, PartialEq, Eq)]
pub struct Refusal {
    pub stderr: String,
    pub code: i32,
}

impl Refusal {
    fn new(stderr: impl Into<String>) -> Self {
        Refusal {
            stderr: stderr.into(),
            code: 1,
        }
    }
}

/// Options that take a value and that the emulator accepts without acting on them.
const IGNORED_WITH_VALUE: &[&str] = &[
    "--append-system-prompt",
    "--system-prompt",
    "--system-prompt-snapshot",
    "--add-dir",
    "--settings",
    "--fallback-model",
    "--input-format",
];

/// The permission modes the real CLI 2.1.329 lists (it takes `default` too, unlisted).
const PERMISSION_MODES: &[&str] = &[
    "acceptEdits",
    "auto",
    "bypassPermissions",
    "manual",
    "dontAsk",
    "plan",
];

/// Parses argv (without the program name) the way the real CLI's parser does.
pub fn parse(argv: &[String]) -> Result<Args, Refusal> {
    let mut args = Args::default();
    let mut positionals = Vec::new();
    let mut i = 0;
    let mut options_done = false;
    while i < argv.len() {
        let raw = &argv[i];
        i += 1;
        if options_done || !raw.starts_with('-') || raw == "-" {
            positionals.push(raw.clone());
            continue;
        }
        if raw == "--" {
            options_done = true;
            continue;
        }
        let (flag, inline) = match raw.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f.to_string(), Some(v.to_string())),
            _ => (raw.clone(), None),
        };
        let mut value = |name: &str| -> Result<String, Refusal> {
            if let Some(v) = inline.clone() {
                return Ok(v);
            }
            match argv.get(i) {
                Some(v) => {
                    i += 1;
                    Ok(v.clone())
                }
                None => Err(Refusal::new(format!(
                    "error: option '{name}' argument missing"
                ))),
            }
        };
        match flag.as_str() {
            "-p" | "--print" => args.print = true,
            "--verbose" => args.verbose = true,
            "--fork-session" => args.fork_session = true,
            "-v" | "--version" => args.version = true,
            "-h" | "--help" => args.help = true,
            "--dangerously-skip-permissions" => {
                args.permission_mode = Some("bypassPermissions".into())
            }
            "--output-format" => {
                let v = value("--output-format <format>")?;
                args.output_format = Some(match v.as_str() {
                    "text" => OutputFormat::Text,
                    "json" => OutputFormat::Json,
                    "stream-json" => OutputFormat::StreamJson,
                    other => {
                        return Err(Refusal::new(format!(
                            "error: option '--output-format <format>' argument '{other}' is invalid. Allowed choices are text, json, stream-json."
                        )));
                    }
                });
            }
            "-r" | "--resume" => {
                // An optional value: taken inline, or from the next word unless it looks like a flag.
                let v = match inline {
                    Some(v) => Some(v),
                    None => match argv.get(i) {
                        Some(next) if !next.starts_with('-') => {
                            i += 1;
                            Some(next.clone())
                        }
                        _ => None,
                    },
                };
                args.resume = Some(v);
            }
            "--session-id" => args.session_id = Some(value("--session-id <uuid>")?),
            "--model" => args.model = Some(value("--model <model>")?),
            "--permission-mode" => {
                let v = value("--permission-mode <mode>")?;
                if v != "default" && !PERMISSION_MODES.contains(&v.as_str()) {
                    return Err(Refusal::new(format!(
                        "error: option '--permission-mode <mode>' argument '{v}' is invalid. Allowed choices are {}.",
                        PERMISSION_MODES.join(", ")
                    )));
                }
                args.permission_mode = Some(v);
            }
            "--max-budget-usd" => {
                let v = value("--max-budget-usd <amount>")?;
                match v.parse::<f64>() {
                    Ok(b) if b.is_finite() && b > 0.0 => args.max_budget_usd = Some(b),
                    _ => {
                        return Err(Refusal::new(format!(
                            "error: option '--max-budget-usd <amount>' argument '{v}' is invalid."
                        )));
                    }
                }
            }
            // Variadic, as the real CLI's: the inline value and every following word up to the
            // next flag; each may also be a comma-separated list.
            "--allowedTools" | "--allowed-tools" | "--disallowedTools" | "--disallowed-tools"
            | "--mcp-config" => {
                let mut values: Vec<String> = inline.clone().into_iter().collect();
                while let Some(next) = argv.get(i).filter(|n| !n.starts_with('-')) {
                    values.push(next.clone());
                    i += 1;
                }
                if values.is_empty() {
                    return Err(Refusal::new(format!(
                        "error: option '{flag} <values...>' argument missing"
                    )));
                }
                let tools = values
                    .iter()
                    .flat_map(|v| v.split(','))
                    .map(|t| t.trim().to_string())
                    .filter(|t| !t.is_empty());
                match flag.as_str() {
                    "--allowedTools" | "--allowed-tools" => args.allowed_tools.extend(tools),
                    "--disallowedTools" | "--disallowed-tools" => {
                        args.disallowed_tools.extend(tools)
                    }
                    _ => {}
                }
            }
            "--max-turns" => {
                let v = value("--max-turns <turns>")?;
                args.max_turns = Some(v.parse().map_err(|_| {
                    Refusal::new(format!(
                        "error: option '--max-turns <turns>' argument '{v}' is invalid."
                    ))
                })?);
            }
            f if IGNORED_WITH_VALUE.contains(&f) => {
                value(f)?;
            }
            _ => return Err(Refusal::new(format!("error: unknown option '{flag}'"))),
        }
    }
    if positionals.len() > 1 {
        return Err(Refusal::new(format!(
            "error: too many arguments. Expected 1 argument but got {}.",
            positionals.len()
        )));
    }
    args.prompt = positionals.pop();
    Ok(args)
}

/// Checks that need the whole command line, in the order the real CLI applies them.
pub fn validate(args: &Args) -> Result<(), Refusal> {
    if args.print && args.output_format == Some(OutputFormat::StreamJson) && !args.verbose {
        return Err(Refusal::new(
            "Error: When using --print, --output-format=stream-json requires --verbose",
        ));
    }
    if let Some(id) = &args.session_id {
        if uuid::Uuid::parse_str(id).is_err() {
            return Err(Refusal::new(
                "Error: Invalid session ID. Must be a valid UUID.",
            ));
        }
        if args.resume.is_some() && !args.fork_session {
            return Err(Refusal::new(
                "Error: --session-id with --continue or --resume also needs --fork-session.",
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(s: &[&str]) -> Vec<String> {
        s.iter().map(|a| a.to_string()).collect()
    }

    #[test]
    fn resume_takes_inline_or_next_value_but_not_a_flag() {
        let a = parse(&argv(&["-p", "--resume=abc", "hi"])).unwrap();
        assert_eq!(a.resume, Some(Some("abc".into())));
        assert_eq!(a.prompt.as_deref(), Some("hi"));
        let a = parse(&argv(&["-p", "--resume", "abc", "hi"])).unwrap();
        assert_eq!(a.resume, Some(Some("abc".into())));
        let a = parse(&argv(&["-p", "--resume", "--verbose", "hi"])).unwrap();
        assert_eq!(a.resume, Some(None));
        assert!(a.verbose);
    }

    #[test]
    fn stream_json_needs_verbose() {
        let a = parse(&argv(&["-p", "hi", "--output-format", "stream-json"])).unwrap();
        let err = validate(&a).unwrap_err();
        assert_eq!(
            err.stderr,
            "Error: When using --print, --output-format=stream-json requires --verbose"
        );
        assert_eq!(err.code, 1);
    }

    #[test]
    fn unknown_flags_are_refused() {
        let err = parse(&argv(&["-p", "--frobnicate", "hi"])).unwrap_err();
        assert_eq!(err.stderr, "error: unknown option '--frobnicate'");
    }

    #[test]
    fn session_id_rules() {
        let a = parse(&argv(&["-p", "--session-id", "nope", "hi"])).unwrap();
        assert_eq!(
            validate(&a).unwrap_err().stderr,
            "Error: Invalid session ID. Must be a valid UUID."
        );
        let id = "22222222-2222-4222-8222-222222222222";
        let a = parse(&argv(&["-p", "--session-id", id, "--resume", id, "hi"])).unwrap();
        assert_eq!(
            validate(&a).unwrap_err().stderr,
            "Error: --session-id with --continue or --resume also needs --fork-session."
        );
    }
}
