//! A transcript read as a conversation: who said what, for people (`baton session show`).

use serde::Serialize;

/// One message of a conversation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Message {
    /// `user` or `assistant`.
    pub role: String,
    /// Its text; tool calls and tool results are left out.
    pub text: String,
}

/// The user's prompts and the assistant's text in a transcript, in order. Lines that are not JSON,
/// or carry no text (tool results, attachments, bookkeeping), are passed over.
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
            let text = match content {
                serde_json::Value::String(s) => s.clone(),
                serde_json::Value::Array(blocks) => blocks
                    .iter()
                    .filter(|b| b.get("type").and_then(|t| t.as_str()) == Some("text"))
                    .filter_map(|b| b.get("text")?.as_str())
                    .collect::<Vec<_>>()
                    .join("\n"),
                _ => return None,
            };
            (!text.trim().is_empty()).then(|| Message {
                role: role.to_string(),
                text,
            })
        })
        .collect()
}
