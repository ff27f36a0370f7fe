//! A short seeded chaos run (`just chaos` is the long one): workers on hosts of their own under
//! `kill -9`, SIGSTOP, a cut from Redis, and Redis and PostgreSQL crashes, with a mixed load;
//! `baton-chaos` exits non-zero when a build is lost, a run recorded twice, two runs of a project
//! overlap, a chain breaks, the ledger is out of sync or a conversation is lost.

#[test]
fn a_short_seeded_chaos_run_keeps_every_promise() {
    let out = std::process::Command::new(claude_emulator::sibling_binary("baton-chaos"))
        .args([
            "--duration",
            "25",
            "--seed",
            "7",
            "--workers",
            "3",
            "--projects",
            "6",
        ])
        .output()
        .expect("run baton-chaos (cargo build --workspace --bins)");
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "chaos found a broken promise:\n{report}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        report.contains("| builds not completed | 0 of "),
        "{report}"
    );
    println!("{report}");
}
