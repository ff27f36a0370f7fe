//! Every setting the code reads is documented: in the README's configuration table and in
//! `.env.example`.

use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The Rust files of the crates an operator runs (the bench and the emulator read settings of
/// their own, documented with them).
fn sources() -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut dirs: Vec<PathBuf> = [
        "baton-core",
        "baton-agent",
        "baton-ledger",
        "baton-queue",
        "baton-transcript",
        "baton-producer",
        "baton-worker",
    ]
    .iter()
    .map(|c| root().join("crates").join(c).join("src"))
    .collect();
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "rs")
                && path.file_name().is_none_or(|n| n != "tests.rs")
            {
                files.push(path);
            }
        }
    }
    files
}

/// The variable names that follow `marker` and a quote in `text`.
fn names_after(text: &str, marker: &str) -> Vec<String> {
    text.match_indices(marker)
        .filter_map(|(at, _)| {
            let rest = &text[at + marker.len()..];
            let name: String = rest
                .chars()
                .take_while(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || *c == '_')
                .collect();
            (!name.is_empty() && rest[name.len()..].starts_with('"')).then_some(name)
        })
        .collect()
}

#[test]
fn every_variable_the_code_reads_is_in_the_readme_table_and_env_example() {
    let mut read = std::collections::BTreeSet::new();
    for file in sources() {
        let text = std::fs::read_to_string(&file).unwrap();
        for marker in [
            "env = \"",
            "env::var(\"",
            "env::var_os(\"",
            "try_from_env(\"",
        ] {
            read.extend(names_after(&text, marker));
        }
    }
    // The child's PATH is the host's, not a setting.
    read.remove("PATH");
    assert!(read.len() > 40, "the scan found too few: {read:?}");
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    let example = std::fs::read_to_string(root().join(".env.example")).unwrap();
    let table_rows: Vec<&str> = readme.lines().filter(|l| l.starts_with("| `")).collect();
    for name in &read {
        let quoted = format!("`{name}`");
        assert!(
            table_rows.iter().any(|row| row.contains(&quoted)),
            "{name} is read but not in the README's configuration table"
        );
        assert!(
            example.contains(&format!("{name}=")),
            "{name} is read but not in .env.example"
        );
    }
}
