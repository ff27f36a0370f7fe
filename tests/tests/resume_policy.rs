//! The resume policy end to end: refusals dead-lettered, a lost session replaced by a fresh one, a
//! reset honoured, and the ledger in sync afterwards, through the real binaries.

use std::time::Duration;

use baton_tests::TestEnv;
use serde_json::Value;

const LIMIT: Duration = Duration::from_secs(60);

fn enqueue(env: &TestEnv, args: &[&str]) -> String {
    let mut all = vec!["enqueue"];
    all.extend_from_slice(args);
    env.baton_json(&all)["build_id"]
        .as_str()
        .unwrap()
        .to_string()
}

/// One transition of `baton chain --json`.
struct Link {
    source: String,
    old: Option<String>,
    new: Option<String>,
    fresh_reason: Option<String>,
}

fn sessions_of(chain: &Value) -> Vec<Link> {
    chain
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            let s = |k: &str| t[k].as_str().map(str::to_string);
            Link {
                source: t["source"].as_str().unwrap().to_string(),
                old: s("old_session_id"),
                new: s("new_session_id"),
                fresh_reason: s("fresh_reason"),
            }
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_policy_holds_end_to_end() {
    let mut env = TestEnv::new().await;
    env.start_worker();

    // Two projects with a session each.
    let a = enqueue(
        &env,
        &[
            "--project",
            "alpha",
            "--version",
            "a1",
            "--kind",
            "create",
            "--prompt",
            "Build alpha",
            "--user",
            "ann",
        ],
    );
    let b = enqueue(
        &env,
        &[
            "--project",
            "beta",
            "--version",
            "b1",
            "--kind",
            "create",
            "--prompt",
            "Build beta",
            "--user",
            "bob",
        ],
    );
    let a_done = env.wait_finished(&a, LIMIT);
    env.wait_finished(&b, LIMIT);
    let alpha_session = a_done["runs"][3]["new_session_id"]
        .as_str()
        .unwrap()
        .to_string();
    let beta_session = env
        .baton_json(&["chain", "beta"])
        .as_array()
        .unwrap()
        .last()
        .unwrap()["new_session_id"]
        .as_str()
        .unwrap()
        .to_string();

    // A session never crosses projects, nor a project users.
    let cross = enqueue(
        &env,
        &[
            "--project",
            "alpha",
            "--version",
            "a2",
            "--kind",
            "update",
            "--prompt",
            "x",
            "--user",
            "ann",
            "--previous-session",
            &beta_session,
        ],
    );
    let refused = env.wait_finished(&cross, LIMIT);
    assert_eq!(refused["status"], "failed");
    assert!(
        refused["last_error"]
            .as_str()
            .unwrap()
            .contains("not in the session chain of project alpha"),
        "{refused}"
    );
    let theft = enqueue(
        &env,
        &[
            "--project",
            "alpha",
            "--version",
            "a3",
            "--kind",
            "update",
            "--prompt",
            "x",
            "--user",
            "bob",
        ],
    );
    let refused = env.wait_finished(&theft, LIMIT);
    assert_eq!(refused["status"], "failed");
    assert!(
        refused["last_error"]
            .as_str()
            .unwrap()
            .contains("belongs to another user"),
        "{refused}"
    );
    let dead = env.dead_letter_count().await;
    assert_eq!(dead, 2, "both refusals are dead-lettered");

    // Alpha's session is lost everywhere (its transcripts were cleaned up on the host and pruned
    // from the ledger): the update falls back to fresh.
    let mut db = env.db().await;
    sqlx::query("DELETE FROM session_transcripts WHERE session_id = $1")
        .bind(&alpha_session)
        .execute(&mut db)
        .await
        .unwrap();
    for entry in walk(&env.hosts_dir()) {
        if entry
            .file_name()
            .is_some_and(|n| n.to_string_lossy() == format!("{alpha_session}.jsonl"))
        {
            std::fs::remove_file(entry).unwrap();
        }
    }
    let lost = enqueue(
        &env,
        &[
            "--project",
            "alpha",
            "--version",
            "a4",
            "--kind",
            "update",
            "--prompt",
            "Add a footer",
            "--user",
            "ann",
            "--previous-session",
            &alpha_session,
        ],
    );
    let done = env.wait_finished(&lost, LIMIT);
    assert_eq!(done["status"], "completed", "{done}\n{}", env.worker_logs());
    let chain = sessions_of(&env.baton_json(&["chain", "alpha"]));
    let fallback = chain
        .iter()
        .position(|t| t.source == "resume_fallback")
        .expect("a resume_fallback transition");
    assert_eq!(chain[fallback].old.as_deref(), Some(alpha_session.as_str()));
    let fresh = &chain[fallback + 1];
    assert_eq!(
        (
            fresh.source.as_str(),
            fresh.old.as_deref(),
            fresh.fresh_reason.as_deref()
        ),
        ("build", None, Some("resume_fallback"))
    );
    assert_ne!(
        fresh.new.as_deref(),
        Some(alpha_session.as_str()),
        "a new session replaces the lost one"
    );

    // A reset makes the next job start fresh, and says so.
    let out = env.baton(&["session", "reset", "alpha"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let after_reset = enqueue(
        &env,
        &[
            "--project",
            "alpha",
            "--version",
            "a5",
            "--kind",
            "update",
            "--prompt",
            "Start over",
            "--user",
            "ann",
        ],
    );
    assert_eq!(
        env.wait_finished(&after_reset, LIMIT)["status"],
        "completed"
    );
    let chain = sessions_of(&env.baton_json(&["chain", "alpha"]));
    let reset = chain
        .iter()
        .position(|t| t.source == "reset")
        .expect("a reset transition");
    assert_eq!(
        (
            chain[reset + 1].old.as_deref(),
            chain[reset + 1].fresh_reason.as_deref()
        ),
        (None, Some("reset"))
    );

    // After refusals, a lost session and a reset, every project is in sync.
    let out = env.baton(&["sync-check", "--json"]);
    assert!(
        out.status.success(),
        "sync-check exits 0 when all agree: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    let sync: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(sync["rate"], 1.0);
    let stats = env.baton_json(&["stats"]);
    assert_eq!(stats["resume_failures"], 1);
    assert_eq!(stats["fresh_starts"]["create"], 2);
    assert_eq!(stats["fresh_starts"]["reset"], 1);
    assert_eq!(stats["fresh_starts"]["resume_fallback"], 1);
    // Under a day needs --force; a dry run shows what would go and deletes nothing.
    let refused = env.baton(&["prune", "--older-than", "1h"]);
    assert_eq!(refused.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("--force"));
    let dry = env.baton_json(&["prune", "--older-than", "0s", "--dry-run"]);
    assert_eq!(dry["dry_run"], true);
    assert!(dry["metrics"].as_u64().unwrap() > 0, "{dry}");
    let still = env.baton_json(&["stats"]);
    assert_eq!(still["fresh_starts"]["create"], 2, "nothing was deleted");
    let pruned = env.baton_json(&["prune", "--older-than", "30d"]);
    assert_eq!(
        (pruned["transitions"].as_u64(), pruned["metrics"].as_u64()),
        (Some(0), Some(0))
    );
    // Durations the ledger cannot use are refused with a reason, not a panic.
    for (bad, says) in [
        ("5x", "unknown unit"),
        ("300000000000000d", "too long a duration"),
        ("100000000d", "before any date"),
    ] {
        for command in ["prune --older-than", "requeue --idle-for"] {
            let mut args: Vec<&str> = command.split(' ').collect();
            args.push(bad);
            let out = env.baton(&args);
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
            assert!(stderr.contains(says), "{args:?}: {stderr}");
        }
    }

    // And sync-check does exit non-zero on drift.
    let mut db = env.db().await;
    sqlx::query("UPDATE projects SET last_ai_session_id = 'drifted' WHERE project_id = 'beta'")
        .execute(&mut db)
        .await
        .unwrap();
    let out = env.baton(&["sync-check"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stdout).contains("OUT_OF_SYNC  beta"));
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .filter_map(Result::ok)
    {
        let path = entry.path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else {
            out.push(path);
        }
    }
    out
}
