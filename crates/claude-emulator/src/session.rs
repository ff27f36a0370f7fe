//! Session transcripts as the real CLI keeps them:
//! `$CLAUDE_CONFIG_DIR/projects/<cwd with every non-alphanumeric as '-'>/<session-id>.jsonl`.

use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use serde_json::{Value, json};

/// The folder that holds the real CLI's settings and transcripts.
pub fn config_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("CLAUDE_CONFIG_DIR") {
        return PathBuf::from(dir);
    }
    let home = std::env::var_os("HOME").unwrap_or_else(|| "/".into());
    PathBuf::from(home).join(".claude")
}

/// The CLI's name for a project folder, as CLI 2.1.332 makes it: the cwd with every UTF-16 unit
/// that is not an ASCII letter or digit as `-`; past 200 characters, cut there and suffixed with `-`
/// and the base-36 absolute value of the path's 32-bit `hash * 31 + unit` hash. (The emulator
/// stands in for the CLI and shares no code with Baton, so it has its own copy of the rule.)
pub fn encode_cwd(cwd: &Path) -> String {
    let path = cwd.to_string_lossy();
    let units: Vec<u16> = path.encode_utf16().collect();
    let name: String = units
        .iter()
        .map(|&u| match u8::try_from(u) {
            Ok(b) if b.is_ascii_alphanumeric() => char::from(b),
            _ => '-',
        })
        .collect();
    if name.len() <= 200 {
        return name;
    }
    let hash = units.iter().fold(0i32, |h, &u| {
        h.wrapping_shl(5).wrapping_sub(h).wrapping_add(i32::from(u))
    });
    let mut n = hash.unsigned_abs();
    let mut digits = Vec::new();
    loop {
        digits.push(b"0123456789abcdefghijklmnopqrstuvwxyz"[(n % 36) as usize]);
        n /= 36;
        if n == 0 {
            break;
        }
    }
    digits.reverse();
    format!("{}-{}", &name[..200], String::from_utf8_lossy(&digits))
}

/// One session transcript file and what it holds.
#[derive(Debug)]
pub struct Session {
    pub id: String,
    pub path: PathBuf,
    pub lines: Vec<Value>,
    /// How many of `lines` are already in the file: the transcript is appended to, as the CLI does.
    saved: usize,
}

impl Session {
    /// A new, empty session for `cwd`.
    pub fn create(cwd: &Path, id: String) -> Session {
        let path = config_dir()
            .join("projects")
            .join(encode_cwd(cwd))
            .join(format!("{id}.jsonl"));
        Session {
            id,
            path,
            lines: Vec::new(),
            saved: 0,
        }
    }

    /// Finds a session by id: in the cwd's project folder first, then in any other (as CLIs since
    /// 2.1.223 do).
    pub fn find(cwd: &Path, id: &str) -> Option<Session> {
        let projects = config_dir().join("projects");
        let own = projects.join(encode_cwd(cwd)).join(format!("{id}.jsonl"));
        let path = if own.is_file() {
            own
        } else {
            fs::read_dir(&projects)
                .ok()?
                .filter_map(Result::ok)
                .map(|e| e.path().join(format!("{id}.jsonl")))
                .find(|p| p.is_file())?
        };
        let text = fs::read_to_string(&path).ok()?;
        let lines: Vec<Value> = text
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect();
        let saved = lines.len();
        Some(Session {
            id: id.to_string(),
            path,
            lines,
            saved,
        })
    }

    /// Whether a transcript with this id exists anywhere.
    pub fn exists(cwd: &Path, id: &str) -> bool {
        Session::find(cwd, id).is_some()
    }

    /// A copy of this history under a new id in `cwd`'s folder (fork, or a rolling-id resume).
    pub fn copy_as(&self, cwd: &Path, id: String) -> Session {
        let mut copy = Session::create(cwd, id.clone());
        copy.lines = self
            .lines
            .iter()
            .map(|l| {
                let mut l = l.clone();
                l["sessionId"] = json!(id);
                l
            })
            .collect();
        copy
    }

    /// Every prompt a user sent in this session, oldest first (compaction keeps them in its summary).
    pub fn prompts(&self) -> Vec<String> {
        self.lines
            .iter()
            .filter(|l| l["type"] == "user" && l["message"]["content"].is_string())
            .filter_map(|l| l["message"]["content"].as_str().map(str::to_string))
            .collect()
    }

    /// Messages since the last compaction: what a compaction would fold.
    pub fn messages_since_compaction(&self) -> usize {
        self.lines
            .iter()
            .rev()
            .take_while(|l| l["type"] != "compact_boundary")
            .filter(|l| l["type"] == "user" || l["type"] == "assistant")
            .count()
    }

    /// Tokens the context holds now: a rough four characters a token over what a compaction keeps.
    pub fn context_tokens(&self) -> u64 {
        let mut tokens = 0u64;
        for line in &self.lines {
            if line["type"] == "compact_boundary" {
                tokens = line["postTokens"].as_u64().unwrap_or(0);
            } else if line["type"] == "user" || line["type"] == "assistant" {
                tokens += text_tokens(&line["message"]["content"].to_string());
            }
        }
        tokens
    }

    /// Adds a line to the transcript in memory; [`Session::save`] writes what is new.
    pub fn push(&mut self, mut line: Value, cwd: &Path) {
        line["sessionId"] = json!(self.id);
        line["cwd"] = json!(cwd.to_string_lossy());
        line["timestamp"] = json!(chrono::Utc::now().to_rfc3339());
        line["uuid"] = json!(uuid::Uuid::new_v4().to_string());
        self.lines.push(line);
    }

    /// The session's folder beside its transcript (`<id>/`), where large tool results go.
    pub fn side_folder(&self) -> PathBuf {
        self.path.with_extension("")
    }

    /// Appends the lines not yet in the file.
    pub fn save(&mut self) -> io::Result<()> {
        if let Some(dir) = self.path.parent() {
            fs::create_dir_all(dir)?;
        }
        let mut file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)?;
        let mut text = String::new();
        for line in &self.lines[self.saved..] {
            text.push_str(&line.to_string());
            text.push('\n');
        }
        file.write_all(text.as_bytes())?;
        self.saved = self.lines.len();
        Ok(())
    }
}

/// A rough token count: four characters a token, at least one.
pub fn text_tokens(text: &str) -> u64 {
    (text.len() as u64).div_ceil(4).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cwd_encoding_matches_the_cli() {
        assert_eq!(
            encode_cwd(Path::new("/srv/work/project-a")),
            "-srv-work-project-a"
        );
        assert_eq!(encode_cwd(Path::new("/tmp/a.b_c")), "-tmp-a-b-c");
        // Seen from the real CLI 2.1.332.
        let long = format!("/tmp/cc/{}/{}", "a".repeat(120), "b".repeat(100));
        assert!(encode_cwd(Path::new(&long)).ends_with("bbb-yutexz"));
        assert_eq!(encode_cwd(Path::new(&long)).len(), 207);
    }
}
