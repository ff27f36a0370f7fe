//! A transcript read as a conversation: who said what, for people (`baton session show`).

use serde::Serialize;

/// One message of a conversation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Message {
    /// `user` or `assistant`.
    pub role: String,
    /// Its text; tool calls and tool results are left out of it.
    pub text: String,
    /// The tools it called, each as `Name: input` (the input's JSON, cut to 200 bytes).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tools: Vec<String>,
}

/// The user's prompts and the assistant's text and tool calls in a transcript, in order. Lines
/// that are not JSON, or carry neither text nor a tool call (tool results, attachments,
/// bookkeeping), are passed over.
pub fn messages(transcript: &[u8]) -> Vec<Message> {
    String::from_utf8_lossy(transcript)
        .lines()
        .filter_map(|line| {
            let v: serde_json::Value = serde_json::from_str(line).ok()?;
            let role = v.get("type")?.as_str()?;
            if role != "user" && role != "assistant" {
                return None;
            }
            let content = v.get("message")?.get("content")?;
            let of_type = |blocks: &[serde_json::Value], kind: &str| -> Vec<serde_json::Value> {
                blocks
                    .iter()
                    .filter(|b| b.get("type").and_then(|t| t.as_str()) == Some(kind))
                    .cloned()
                    .collect()
            };
            let (text, tools) = match content {
                serde_json::Value::String(s) => (s.clone(), Vec::new()),
                serde_json::Value::Array(blocks) => (
                    of_type(blocks, "text")
                        .iter()
                        .filter_map(|b| b.get("text")?.as_str().map(str::to_string))
                        .collect::<Vec<_>>()
                        .join("\n"),
                    of_type(blocks, "tool_use").iter().map(tool_call).collect(),
                ),
                _ => return None,
            };
            (!text.trim().is_empty() || !tools.is_empty()).then(|| Message {
                role: role.to_string(),
                text,
                tools,
            })
        })
        .collect()
}

/// A tool call as `Name: input`, its input cut at a character boundary near 200 bytes.
fn tool_call(block: &serde_json::Value) -> String {
    let name = block.get("name").and_then(|n| n.as_str()).unwrap_or("tool");
    let input = block
        .get("input")
        .map(|i| i.to_string())
        .unwrap_or_default();
    let mut cut = input.len().min(200);
    while !input.is_char_boundary(cut) {
        cut -= 1;
    }
    let more = if cut < input.len() { "..." } else { "" };
    format!("{name}: {}{more}", &input[..cut])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tool_calls_are_kept_beside_the_text_and_tool_results_left_out() {
        // Lines shaped as the real CLI writes them: one content block per assistant line.
        let long = "x".repeat(300);
        let transcript = [
            r#"{"type":"user","message":{"role":"user","content":"Create index.html"}}"#.to_string(),
            r#"{"type":"assistant","message":{"role":"assistant","content":[{"type":"text","text":"I'll write it."}]}}"#.to_string(),
            format!(
                r#"{{"type":"assistant","message":{{"role":"assistant","content":[{{"type":"tool_use","id":"t1","name":"Write","input":{{"file_path":"index.html","content":"{long}"}}}}]}}}}"#
            ),
            r#"{"type":"user","message":{"role":"user","content":[{"type":"tool_result","tool_use_id":"t1","content":"ok"}]}}"#.to_string(),
            r#"{"type":"summary","summary":"x"}"#.to_string(),
            "not json".to_string(),
        ]
        .join("\n");
        let messages = messages(transcript.as_bytes());
        assert_eq!(messages.len(), 3, "{messages:?}");
        assert_eq!(messages[0].text, "Create index.html");
        assert_eq!(messages[1].text, "I'll write it.");
        assert!(messages[1].tools.is_empty());
        let call = &messages[2].tools[0];
        assert!(call.starts_with(r#"Write: {"#), "{call}");
        assert!(call.ends_with("..."), "a long input is cut: {call}");
        assert!(call.len() < 220, "{call}");
    }
}
