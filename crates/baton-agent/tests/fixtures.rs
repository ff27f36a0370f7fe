//! The parser and classifier against real CLI output (`tests/fixtures/`, described in its README).

use baton_agent::{Exit, Outcome, Stop, StreamState, classify};

fn fixture(name: &str) -> String {
    let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn parse(text: &str) -> StreamState {
    let mut state = StreamState::default();
    for line in text.lines() {
        state.feed(line);
    }
    state
}

fn outcome(name: &str, exit: i32, stderr: &str, compact: bool) -> (StreamState, Outcome) {
    let state = parse(&fixture(name));
    let outcome = classify(
        &state,
        Some(Exit::Code(exit)),
        stderr,
        Stop::Natural,
        compact,
        0,
    );
    (state, outcome)
}

#[test]
fn success_on_2_1_195() {
    let (state, outcome) = outcome("v2.1.195-success.stream.jsonl", 0, "", false);
    assert_eq!(outcome, Outcome::Success);
    assert_eq!(
        state.session_id.as_deref(),
        Some("81898c55-fde9-4d44-b1f5-fbd77cd4fef6")
    );
    assert_eq!(state.usage.cache_read_input_tokens, 15934);
    let result = state.result.unwrap();
    assert_eq!(result.num_turns, Some(1));
    assert_eq!(result.cost_usd, Some(0.043551200000000005));
}

#[test]
fn not_logged_in_is_an_auth_failure_despite_subtype_success() {
    let (state, outcome) = outcome("v2.1.329-not-logged-in.stream.jsonl", 1, "", false);
    assert!(matches!(outcome, Outcome::AuthFailed { .. }), "{outcome:?}");
    assert!(!outcome.is_retryable());
    assert_eq!(state.result.unwrap().subtype, "success");
}

#[test]
fn resume_of_a_missing_session_on_2_1_329() {
    let stderr = "No conversation found with session ID: 00000000-0000-4000-8000-000000000000\n";
    let (_, outcome) = outcome("v2.1.329-resume-missing.stream.jsonl", 1, stderr, false);
    assert_eq!(
        outcome,
        Outcome::ResumeNotFound {
            session_id: Some("00000000-0000-4000-8000-000000000000".into())
        }
    );
}

#[test]
fn resume_of_a_missing_session_on_2_1_195_with_empty_stdout() {
    let state = StreamState::default();
    let stderr = "No conversation found with session ID: 11111111-1111-4111-8111-111111111111\n";
    let outcome = classify(&state, Some(Exit::Code(1)), stderr, Stop::Natural, false, 0);
    assert_eq!(
        outcome,
        Outcome::ResumeNotFound {
            session_id: Some("11111111-1111-4111-8111-111111111111".into())
        }
    );
}

#[test]
fn failed_compaction_exits_zero_but_is_not_success() {
    let (_, outcome) = outcome("v2.1.329-compact-failed.stream.jsonl", 0, "", true);
    // The synthetic assistant line here carries no `error`, so the compaction verdict decides.
    match outcome {
        Outcome::CompactionFailed { detail } => {
            assert!(detail.contains("Not logged in"), "{detail}")
        }
        other => panic!("expected a failed compaction, got {other:?}"),
    }
}

#[test]
fn compaction_succeeds_only_with_a_boundary_or_success_status() {
    let mut state = parse(&fixture("compact-boundary.line.json"));
    state.feed(r#"{"type":"result","subtype":"success","is_error":false,"result":"","session_id":"30461b56-4238-4d93-9acd-443eae43e5a1"}"#);
    let outcome = classify(&state, Some(Exit::Code(0)), "", Stop::Natural, true, 0);
    assert_eq!(outcome, Outcome::Success);
    let mut bare = StreamState::default();
    bare.feed(r#"{"type":"result","subtype":"success","is_error":false,"result":"Not enough messages to compact.","session_id":"s"}"#);
    let outcome = classify(&bare, Some(Exit::Code(0)), "", Stop::Natural, true, 0);
    assert!(
        matches!(outcome, Outcome::CompactionFailed { .. }),
        "{outcome:?}"
    );
}

#[test]
fn fork_gives_the_new_id_from_init() {
    let (state, outcome) = outcome("v2.1.329-fork.stream.jsonl", 1, "", false);
    assert_eq!(
        state.session_id.as_deref(),
        Some("e6efdbef-92e6-4e6d-a7a7-cb09d662e8ac")
    );
    assert!(matches!(outcome, Outcome::AuthFailed { .. }), "{outcome:?}");
}

#[test]
fn turn_limit_from_its_result_line() {
    let (_, outcome) = outcome("error-max-turns.result.json", 1, "", false);
    match outcome {
        Outcome::TurnLimit { detail } => assert_eq!(detail, "Reached maximum number of turns (30)"),
        other => panic!("expected a turn limit, got {other:?}"),
    }
}

#[test]
fn json_output_not_logged_in_is_classified_from_the_result_object() {
    let (_, outcome) = outcome("v2.1.329-json-not-logged-in.json", 1, "", false);
    assert!(matches!(outcome, Outcome::AuthFailed { .. }), "{outcome:?}");
}

#[test]
fn flag_errors_are_invalid_invocations() {
    let state = StreamState::default();
    let stderr = "Error: When using --print, --output-format=stream-json requires --verbose\n";
    let outcome = classify(&state, Some(Exit::Code(1)), stderr, Stop::Natural, false, 0);
    assert!(
        matches!(outcome, Outcome::InvalidInvocation { .. }),
        "{outcome:?}"
    );
}

#[test]
fn a_success_result_outranks_a_nonzero_exit() {
    let (_, outcome) = outcome(
        "v2.1.195-success.stream.jsonl",
        1,
        "MCP server failed",
        false,
    );
    assert_eq!(outcome, Outcome::Success);
}

#[test]
fn death_by_signal_without_result_is_a_retryable_crash() {
    let state = parse(
        fixture("v2.1.195-success.stream.jsonl")
            .lines()
            .next()
            .unwrap(),
    );
    let outcome = classify(&state, Some(Exit::Signal(15)), "", Stop::Natural, false, 0);
    assert!(matches!(outcome, Outcome::Crashed { .. }), "{outcome:?}");
    assert!(outcome.is_retryable());
}

#[test]
fn budget_limit_from_its_result_subtype() {
    let mut state = StreamState::default();
    state.feed(r#"{"session_id":"s","is_error":true,"subtype":"error_max_budget_usd","type":"result","errors":["Reached maximum budget ($1)"]}"#);
    let outcome = classify(&state, Some(Exit::Code(1)), "", Stop::Natural, false, 0);
    assert!(
        matches!(outcome, Outcome::BudgetLimit { .. }),
        "{outcome:?}"
    );
    assert!(!outcome.is_retryable());
}

/// Every real stream in the fixtures, with the exit code its CLI ended with.
const STREAMS: [(&str, i32); 5] = [
    ("v2.1.195-success.stream.jsonl", 0),
    ("v2.1.329-compact-failed.stream.jsonl", 1),
    ("v2.1.329-fork.stream.jsonl", 0),
    ("v2.1.329-not-logged-in.stream.jsonl", 1),
    ("v2.1.329-resume-missing.stream.jsonl", 1),
];

#[test]
fn a_stream_cut_off_before_its_result_line_ends_is_never_a_success() {
    let text = fixture("v2.1.195-success.stream.jsonl");
    let result_line = text
        .lines()
        .find(|l| l.contains(r#""type":"result""#))
        .expect("the fixture has a result line");
    let result_ends = text.find(result_line).unwrap() + result_line.len();
    for cut in (0..=text.len()).filter(|&i| text.is_char_boundary(i)) {
        let state = parse(&text[..cut]);
        let outcome = classify(&state, Some(Exit::Code(0)), "", Stop::Natural, false, 0);
        if cut < result_ends {
            assert!(
                matches!(outcome, Outcome::Crashed { .. }),
                "cut at {cut}: {outcome:?}"
            );
        } else {
            assert_eq!(outcome, Outcome::Success, "cut at {cut}");
        }
    }
}

#[test]
fn a_stream_with_any_byte_damaged_is_classified_without_a_panic() {
    // Each byte is damaged once, with a replacement that takes turns: a quote, a brace, an
    // escape, a line break or a byte that is not UTF-8.
    let replacements = [b'"', b'}', b'\\', b'\n', 0xff];
    for (name, exit) in STREAMS {
        let bytes = fixture(name).into_bytes();
        for at in 0..bytes.len() {
            let mut damaged = bytes.clone();
            damaged[at] = replacements[at % replacements.len()];
            let state = parse(&String::from_utf8_lossy(&damaged));
            let outcome = classify(&state, Some(Exit::Code(exit)), "", Stop::Natural, false, 0);
            // Only a result line that still parses can make a run a success.
            if outcome == Outcome::Success {
                assert!(state.result.is_some(), "{name}, byte {at}");
            }
        }
    }
}

/// An error `result` of the shape CLI 2.1.329 prints, with the API status and terminal reason it
/// carries where known.
fn error_result(status: Option<u64>, terminal: &str) -> Outcome {
    let line = serde_json::json!({
        "type": "result", "subtype": "success", "is_error": true, "result": "API Error",
        "api_error_status": status, "terminal_reason": terminal, "session_id": "s",
        "permission_denials": []
    });
    classify(
        &parse(&line.to_string()),
        Some(Exit::Code(1)),
        "",
        Stop::Natural,
        false,
        0,
    )
}

#[test]
fn the_api_status_decides_whether_an_error_is_retried() {
    assert!(matches!(
        error_result(Some(529), "api_error"),
        Outcome::Failed {
            retryable: true,
            ..
        }
    ));
    assert!(matches!(
        error_result(Some(400), "api_error"),
        Outcome::Failed {
            retryable: false,
            ..
        }
    ));
    assert!(matches!(
        error_result(Some(401), "api_error"),
        Outcome::AuthFailed { .. }
    ));
    assert!(matches!(
        error_result(Some(429), "api_error"),
        Outcome::RateLimited { .. }
    ));
    assert!(matches!(
        error_result(None, "api_error"),
        Outcome::Failed {
            retryable: true,
            ..
        }
    ));
    assert!(matches!(
        error_result(None, "budget_exhausted"),
        Outcome::BudgetLimit { .. }
    ));
}

#[test]
fn permission_denials_are_read_from_the_result() {
    let text = [
        r#"{"type":"assistant","session_id":"s","message":{"id":"m1","content":[{"type":"tool_use","id":"t1","name":"Write","input":{"file_path":"/w/a.md"}}]}}"#,
        r#"{"type":"result","subtype":"success","is_error":false,"result":"could not","session_id":"s","permission_denials":[{"tool_name":"Write","tool_use_id":"t1","tool_input":{}}]}"#,
    ]
    .join("\n");
    let state = parse(&text);
    let result = state.result.clone().unwrap();
    assert_eq!(result.denied_tool_ids(), ["t1"]);
    assert_eq!(state.writing_tool_ids, ["t1"]);
}
