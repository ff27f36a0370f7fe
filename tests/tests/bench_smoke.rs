//! `just bench` is never a timed test, but it must keep working: a small fast-mode run of the real
//! `baton-bench` binary prints its tables and cleans up after itself. Nothing here looks at a figure's
//! size, only at what the bench reports and leaves behind.

use std::collections::BTreeSet;
use std::process::Command;

use baton_tests::{admin_database_url, redis_url};
use sqlx::Connection;

async fn bench_databases() -> BTreeSet<String> {
    let mut admin = sqlx::PgConnection::connect(&admin_database_url())
        .await
        .expect("DATABASE_URL answers");
    sqlx::query_scalar("SELECT datname FROM pg_database WHERE datname LIKE 'baton_bench_%'")
        .fetch_all(&mut admin)
        .await
        .expect("list databases")
        .into_iter()
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_small_bench_prints_the_pipeline_the_limits_and_the_fractions_and_cleans_up() {
    let before = bench_databases().await;
    let out = Command::new(claude_emulator::sibling_binary("baton-bench"))
        .args(["--jobs", "12", "--projects", "3", "--replicas", "2"])
        .args(["--concurrency", "2"])
        .env("DATABASE_URL", admin_database_url())
        .env("REDIS_URL", redis_url())
        .output()
        .expect("run baton-bench");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    for line in [
        "## Pipeline: 12 jobs over 3 projects, 2 replicas x concurrency 2",
        "| jobs/s |",
        "| Baton's overhead per run",
        "| CPU per job: Postgres / Redis / workers / CLI children (emulator) / bench |",
        "## Limits, each alone at concurrency 4 (jobs/s)",
        "| spawning and reading the CLI",
        "| ledger: a job's transactions",
        "| Redis: a job's operations",
        "% of the tightest limit (",
        "% of the combined bound of the three sharing the machine",
        "| limit | jobs/s | machine CPU per job |",
        "limits' machine CPU per job ",
        "% of the tightest limit; the pipeline used ",
        "the ledger's commit floor, a job's 5 transactions as one-row durable commits and nothing else, 4 at once: ",
        "budget for 70% of the tightest limit with ",
        " of machine CPU per job, which leaves ",
        "the workers used ",
        "; the CLI limit's lanes, which only drive the CLI as a worker does, ",
        " per job beyond its limits went: the CLI's processes ",
        " in the ledger's limit), Redis ",
        "; the rest ",
        // pg_stat_wal is there from Postgres 14; the project's scripts install 15.
        "Postgres WAL flushes per job: the pipeline ",
        "cores' time taken by the hypervisor (steal): the pipeline ",
        "% of the CLI limit at the CLI's speed during the pipeline (",
    ] {
        assert!(stdout.contains(line), "missing {line:?} in\n{stdout}");
    }
    // The CLI limit's processes are counted, as the workers' reaped children are in the pipeline:
    // a limit of no CPU would put the whole CLI into the excess.
    let cli_limit: f64 = stdout
        .split_once("ms in the pipeline, ")
        .and_then(|(_, rest)| rest.split_once(" ms in the CLI limit)"))
        .and_then(|(v, _)| v.parse().ok())
        .unwrap_or_else(|| panic!("no CLI processes' CPU in the CLI limit in\n{stdout}"));
    assert!(
        cli_limit > 0.0,
        "the CLI limit's processes cost nothing:\n{stdout}"
    );
    // At least a claim and four records per job; a small run also shows the workers' start-up.
    let per_job: f64 = stdout
        .lines()
        .find_map(|l| l.strip_prefix("| Postgres transactions per job | "))
        .and_then(|v| v.trim_end_matches(" |").parse().ok())
        .unwrap_or_else(|| panic!("no transactions per job in\n{stdout}"));
    assert!(per_job >= 5.0, "{per_job} transactions per job:\n{stdout}");
    let left: Vec<_> = bench_databases()
        .await
        .difference(&before)
        .cloned()
        .collect();
    assert!(left.is_empty(), "the bench left its databases: {left:?}");
}
