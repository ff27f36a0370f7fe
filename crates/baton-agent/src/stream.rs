//! Reading the CLI's stream-json: one JSON object per line, any key order, unknown types ignored.

use std::collections::HashSet;

use serde::Serialize;
use serde_json::Value;

/// Token usage of a run, summed over its API messages (each counted once, by `message.id`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Usage {
    /// Uncached input tokens.
    pub input_tokens: u64,
    /// Output tokens.
    pub output_tokens: u64,
    /// Input tokens read from the prompt cache.
    pub cache_read_input_tokens: u64,
    /// Input tokens written to the prompt cache.
    pub cache_creation_input_tokens: u64,
}

impl Usage {
    fn from_value(v: &Value) -> Usage {
        let n = |k: &str| v.get(k).and_then(Value::as_u64).unwrap_or(0);
        Usage {
            input_tokens: n("input_tokens"),
            output_tokens: n("output_tokens"),
            cache_read_input_tokens: n("cache_read_input_tokens"),
            cache_creation_input_tokens: n("cache_creation_input_tokens"),
        }
    }

    fn add(&mut self, other: Usage) {
        self.input_tokens += other.input_tokens;
        self.output_tokens += other.output_tokens;
        self.cache_read_input_tokens += other.cache_read_input_tokens;
        self.cache_creation_input_tokens += other.cache_creation_input_tokens;
    }
}

/// The `result` line's fields that decide the outcome.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ResultLine {
    /// `success` or an `error_*` subtype.
    pub subtype: String,
    /// Whether the CLI marked the run as failed (even with `subtype:"success"`).
    pub is_error: bool,
    /// The final text (on success, and on `is_error` successes such as "Not logged in").
    pub result: Option<String>,
    /// The error texts of the `error_*` subtypes.
    pub errors: Vec<String>,
    /// Why the turn ended (`completed`, `max_turns`, `api_error`, ...), where reported.
    pub terminal_reason: Option<String>,
    /// The session id the result names.
    pub session_id: Option<String>,
    /// Usage as the result reports it.
    pub usage: Option<Usage>,
    /// `total_cost_usd`.
    pub cost_usd: Option<f64>,
    /// `duration_ms`.
    pub duration_ms: Option<u64>,
    /// `num_turns`.
    pub num_turns: Option<u64>,
    /// Why the model's last message ended (`end_turn`, `tool_use`, ...).
    pub stop_reason: Option<String>,
    /// The HTTP status of an API error, where the CLI reports one.
    pub api_error_status: Option<u64>,
    /// The tool calls the permission mode refused, as the CLI reports them.
    pub permission_denials: Vec<Value>,
}

impl ResultLine {
    /// The ids of the tool calls the permission mode refused.
    pub fn denied_tool_ids(&self) -> Vec<&str> {
        self.permission_denials
            .iter()
            .filter_map(|d| d.get("tool_use_id").and_then(Value::as_str))
            .collect()
    }
}

/// Everything a run's stdout told us, accumulated line by line.
#[derive(Debug, Clone, Default)]
pub struct StreamState {
    /// The session id of the first line that carried one.
    pub session_id: Option<String>,
    /// Whether an `init` line was seen.
    pub saw_init: bool,
    /// Files the run wrote or edited, in first-seen order.
    pub files_created: Vec<String>,
    /// The ids of the tool calls that write files, to tell which a permission denial stopped.
    pub writing_tool_ids: Vec<String>,
    /// Usage summed over distinct `message.id`s.
    pub usage: Usage,
    seen_messages: HashSet<String>,
    /// The `error` of a synthetic assistant line (auth, rate limit, ...), if any.
    pub api_error: Option<String>,
    /// `resetsAt` (epoch seconds) of the last `rate_limit_event`, if any.
    pub rate_limit_resets_at: Option<u64>,
    /// `compact_result` of a compaction status line, if any.
    pub compact_result: Option<String>,
    /// `compact_error` of a compaction status line, if any.
    pub compact_error: Option<String>,
    /// Whether a `compact_boundary` line was seen.
    pub saw_compact_boundary: bool,
    /// The `result` line, if one came.
    pub result: Option<ResultLine>,
    /// Lines that were not JSON objects and were skipped.
    pub skipped_lines: u64,
    /// Lines read in all.
    pub lines: u64,
}

/// The tools whose `file_path` input names a file the run wrote.
const WRITING_TOOLS: &[&str] = &["Write", "Edit", "MultiEdit", "NotebookEdit"];

impl StreamState {
    /// Takes in one line of stdout. Lines that are not JSON objects are logged and skipped.
    pub fn feed(&mut self, line: &str) {
        let line = line.trim();
        if line.is_empty() {
            return;
        }
        self.lines += 1;
        let value: Value = match serde_json::from_str(line) {
            Ok(v @ Value::Object(_)) => v,
            _ => {
                self.skipped_lines += 1;
                let preview: String = line.chars().take(120).collect();
                tracing::warn!(line = %preview, "skipping a stdout line that is not a JSON object");
                return;
            }
        };
        if self.session_id.is_none()
            && let Some(id) = value.get("session_id").and_then(Value::as_str)
        {
            self.session_id = Some(id.to_string());
        }
        let subtype = value.get("subtype").and_then(Value::as_str);
        match value.get("type").and_then(Value::as_str) {
            Some("system") => self.system(subtype, &value),
            Some("assistant") => self.assistant(&value),
            Some("rate_limit_event") => {
                let resets = value
                    .get("rate_limit_info")
                    .and_then(|i| i.get("resetsAt"))
                    .or_else(|| value.get("resetsAt"))
                    .and_then(Value::as_u64);
                if resets.is_some() {
                    self.rate_limit_resets_at = resets;
                }
            }
            Some("result") => self.result = Some(result_line(&value)),
            _ => {}
        }
    }

    fn system(&mut self, subtype: Option<&str>, value: &Value) {
        match subtype {
            Some("init") => self.saw_init = true,
            Some("status") => {
                if let Some(r) = value.get("compact_result").and_then(Value::as_str) {
                    self.compact_result = Some(r.to_string());
                }
                if let Some(e) = value.get("compact_error").and_then(Value::as_str) {
                    self.compact_error = Some(e.to_string());
                }
            }
            Some("compact_boundary") => self.saw_compact_boundary = true,
            _ => {}
        }
    }

    fn assistant(&mut self, value: &Value) {
        if let Some(err) = value.get("error").and_then(Value::as_str) {
            self.api_error = Some(err.to_string());
        }
        let Some(message) = value.get("message") else {
            return;
        };
        // Several lines of one API turn repeat its usage under the same id; count it once.
        let first_sight = match message.get("id").and_then(Value::as_str) {
            Some(id) => self.seen_messages.insert(id.to_string()),
            None => true,
        };
        if first_sight && let Some(u) = message.get("usage") {
            self.usage.add(Usage::from_value(u));
        }
        for block in message
            .get("content")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let is_write = block.get("type").and_then(Value::as_str) == Some("tool_use")
                && block
                    .get("name")
                    .and_then(Value::as_str)
                    .is_some_and(|n| WRITING_TOOLS.contains(&n));
            if !is_write {
                continue;
            }
            if let Some(id) = block.get("id").and_then(Value::as_str) {
                self.writing_tool_ids.push(id.to_string());
            }
            let input = block.get("input");
            let path = input
                .and_then(|i| i.get("file_path").or_else(|| i.get("notebook_path")))
                .and_then(Value::as_str);
            if let Some(path) = path
                && !self.files_created.iter().any(|f| f == path)
            {
                self.files_created.push(path.to_string());
            }
        }
    }
}

fn result_line(v: &Value) -> ResultLine {
    let s = |k: &str| v.get(k).and_then(Value::as_str).map(str::to_string);
    ResultLine {
        subtype: s("subtype").unwrap_or_default(),
        is_error: v.get("is_error").and_then(Value::as_bool).unwrap_or(false),
        result: s("result"),
        errors: v
            .get("errors")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|e| e.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default(),
        terminal_reason: s("terminal_reason"),
        session_id: s("session_id"),
        usage: v.get("usage").map(Usage::from_value),
        cost_usd: v.get("total_cost_usd").and_then(Value::as_f64),
        duration_ms: v.get("duration_ms").and_then(Value::as_u64),
        num_turns: v.get("num_turns").and_then(Value::as_u64),
        stop_reason: s("stop_reason"),
        api_error_status: v.get("api_error_status").and_then(Value::as_u64),
        permission_denials: v
            .get("permission_denials")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed_all(text: &str) -> StreamState {
        let mut s = StreamState::default();
        for line in text.lines() {
            s.feed(line);
        }
        s
    }

    #[test]
    fn usage_is_counted_once_per_message_id() {
        let usage = r#"{"input_tokens":10,"output_tokens":5}"#;
        let text = format!(
            "{{\"type\":\"assistant\",\"session_id\":\"s\",\"message\":{{\"id\":\"m1\",\"usage\":{usage},\"content\":[{{\"type\":\"text\",\"text\":\"a\"}}]}}}}\n\
             {{\"type\":\"assistant\",\"session_id\":\"s\",\"message\":{{\"id\":\"m1\",\"usage\":{usage},\"content\":[{{\"type\":\"tool_use\",\"name\":\"Write\",\"input\":{{\"file_path\":\"/w/a.md\"}}}}]}}}}\n\
             {{\"type\":\"assistant\",\"session_id\":\"s\",\"message\":{{\"id\":\"m2\",\"usage\":{usage},\"content\":[{{\"type\":\"tool_use\",\"name\":\"Edit\",\"input\":{{\"file_path\":\"/w/a.md\"}}}}]}}}}\n"
        );
        let s = feed_all(&text);
        assert_eq!(s.usage.input_tokens, 20);
        assert_eq!(s.usage.output_tokens, 10);
        assert_eq!(s.files_created, ["/w/a.md"]);
    }

    #[test]
    fn garbage_and_unknown_types_are_skipped() {
        let s = feed_all(
            "hello, not json\n[1,2]\n{\"type\":\"brand_new\",\"session_id\":\"x\"}\n{\"session_id\":\"y\",\"type\":\"result\",\"subtype\":\"success\"}\n",
        );
        assert_eq!(s.skipped_lines, 2);
        assert_eq!(s.session_id.as_deref(), Some("x"));
        assert_eq!(s.result.unwrap().session_id.as_deref(), Some("y"));
    }
}
