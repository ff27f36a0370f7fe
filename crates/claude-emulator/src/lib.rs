//! Helpers for tests that run the `claude-emulator` binary.

use std::path::PathBuf;

/// The emulator binary of the current build, beside the running test executable
/// (`target/<profile>/claude-emulator`). Panics with the fix when it has not been built.
pub fn binary() -> PathBuf {
    sibling_binary("claude-emulator")
}

/// A workspace binary of the current build, found from the test executable's location.
pub fn sibling_binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("the test knows its own path");
    // Test executables live in target/<profile>/deps; binaries one level up.
    let profile_dir = exe
        .parent()
        .and_then(|d| {
            if d.ends_with("deps") {
                d.parent()
            } else {
                Some(d)
            }
        })
        .expect("the test executable has a parent folder")
        .to_path_buf();
    let path = profile_dir.join(name);
    assert!(
        path.is_file(),
        "{} is missing: build the workspace binaries first (`cargo build --workspace --bins`; `just test` does)",
        path.display()
    );
    path
}
