//! `baton-bench`: Baton's pipeline through real Redis, Postgres and worker replicas, held against the
//! limits a job is made of, measured on the same machine in the same run.
//!
//! Modes:
//! - `fast` (default): N jobs over P projects with the emulator at zero latency; reports jobs/s,
//!   runs/s, enqueue-to-done latency, Baton's overhead per run, peak RSS per worker, Postgres
//!   transactions and WAL flushes per job, what Postgres's backends wait for; then the three limits
//!   alone (CLI runs, ledger transactions, Redis operations of a job), the pipeline's throughput as
//!   a fraction of the tightest, the ledger's commit floor (a job's transactions as bare durable
//!   commits), the CPU a job may cost for the pipeline to reach 70% of the tightest limit, and where
//!   the pipeline's CPU beyond the limits went, part by part.
//! - `slow`: runs of `--latency-ms` with many jobs in flight; reports memory per in-flight job and
//!   throughput across concurrency and replica counts.
//! - `failover`: kills one of two workers mid-run and reports how long its jobs took to resume.
//! - `dispatch`: a backlog over few projects (`--projects 16`); reports the Redis calls and Redis
//!   CPU per job, which must stay flat as `--concurrency` and `--jobs` grow.
//!
//! Needs `REDIS_URL` and `DATABASE_URL` (an account that may create databases) and the release
//! binaries beside this one: run it with `just bench`.
//!
//! By concern: `pipeline` (the system under test and its waits), `limits` and `ledger_limit` (each
//! limit alone), `cpu` (CPU accounting), `report` (overhead, budget, excess), `modes` (`slow`,
//! `failover`); this file holds the arguments and the `fast` mode's run and table.

use std::collections::{HashMap, HashSet, VecDeque};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use baton_agent::{Agent, AgentConfig, RunRequest};
use baton_core::checkpoint::Phase;
use baton_core::events::EventType;
use baton_core::{JobKind, Limits, NewJob, Step};
use baton_ledger::Ledger;
use baton_producer::Producer;
use baton_queue::{Ending, Queue};
use chrono::{DateTime, Utc};
use clap::{Parser, ValueEnum};
use sqlx::Connection;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

mod cpu;
mod dispatch;
mod ledger_limit;
mod limits;
mod modes;
mod pipeline;
mod report;

use cpu::*;
use dispatch::*;
use limits::*;
use modes::*;
use pipeline::*;
use report::*;

use ledger_limit::ledger_limit;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Mode {
    Fast,
    Slow,
    Failover,
    Dispatch,
}

/// Benchmark Baton against the machine's own limits.
#[derive(Debug, Parser)]
struct Args {
    /// What to measure.
    #[arg(long, value_enum, default_value = "fast")]
    mode: Mode,
    /// Jobs (fast mode). Enough that the pipeline runs for seconds, not a blink the machine's
    /// noise would swamp.
    #[arg(long, default_value_t = 1000)]
    jobs: usize,
    /// Projects the jobs are spread over (fast mode): ten jobs each by default, so every session
    /// is resumed ten times.
    #[arg(long, default_value_t = 100)]
    projects: usize,
    /// Worker replicas (fast and failover modes).
    #[arg(long, default_value_t = 2)]
    replicas: usize,
    /// `BATON_CONCURRENCY` of each worker (fast mode).
    #[arg(long, default_value_t = 4)]
    concurrency: usize,
    /// Jobs in flight at once on one worker (slow mode).
    #[arg(long, default_value_t = 256)]
    in_flight: usize,
    /// Latency of each CLI run in slow mode.
    #[arg(long, default_value_t = 2000)]
    latency_ms: u64,
    #[arg(
        long,
        env = "REDIS_URL",
        hide_env_values = true,
        default_value = "redis://127.0.0.1:6379"
    )]
    redis_url: String,
    #[arg(
        long,
        env = "DATABASE_URL",
        hide_env_values = true,
        default_value = "postgres://postgres@127.0.0.1:5432/baton?sslmode=disable"
    )]
    database_url: String,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let machine = machine();
    println!(
        "baton-bench {:?} on {machine}, {}",
        args.mode,
        Utc::now().format("%Y-%m-%d")
    );
    match args.mode {
        Mode::Fast => fast(&args).await,
        Mode::Slow => slow(&args).await,
        Mode::Failover => failover(&args).await,
        Mode::Dispatch => dispatch(&args).await,
    }
}

/// A completed build as the ledger has it: project, enqueued, started, finished.
type BuildRow = (String, DateTime<Utc>, DateTime<Utc>, DateTime<Utc>);

async fn fast(args: &Args) -> anyhow::Result<()> {
    let mut bench = Bench::new(args, "fast").await?;
    let queue = bench.queue().await?;
    let lanes = args.replicas * args.concurrency;
    // The CLI limit is measured before the pipeline and again after it: the machine's speed drifts
    // by several percent within a minute, and the mean of the two brackets the pipeline's run.
    let machine = Machine::read();
    let driver = own_cpu();
    let reaped = reaped_cpu();
    let agent_before = agent_limit(
        &bench,
        args.replicas,
        args.concurrency,
        args.jobs,
        args.projects,
        "before",
    )
    .await?;
    let agent_before_machine = machine.per_job(args.jobs);
    let driver_before = (own_cpu() - driver) / args.jobs as f64;
    let cli_before = (reaped_cpu() - reaped) / args.jobs as f64;
    let before = xact_commits(&bench.admin_url, &bench.db_name).await?;
    let mut pids = Vec::new();
    for _ in 0..args.replicas {
        pids.push(bench.start_worker(&[("BATON_CONCURRENCY", args.concurrency.to_string())])?);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let ledger = Ledger::connect(&bench.db_url, baton_ledger::DEFAULT_SCHEMA).await?;
    // The bench watches the ledger on a connection of its own, whose backend's CPU is the bench's
    // and not the pipeline's.
    let mut watcher = sqlx::PgConnection::connect(&bench.db_url).await?;
    sqlx::query("SET search_path TO baton")
        .execute(&mut watcher)
        .await?;
    let watcher_backend: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
        .fetch_one(&mut watcher)
        .await?;
    let mut waits = PgWaits::connect(&bench.admin_url, &bench.db_name).await?;
    let not_pipeline = [
        u32::try_from(watcher_backend)?,
        u32::try_from(waits.backend)?,
    ];
    let wal_before = waits.wal_flushes().await;
    let stop_sampling = CancellationToken::new();
    let sampling = tokio::spawn(waits.sample(watcher_backend, stop_sampling.clone()));
    let cpu_before = Cpu::sample(&pids, &not_pipeline);
    let machine = Machine::read();
    let started = Utc::now();
    let builds = enqueue(&queue, args.jobs, args.projects, "fast").await?;
    let (last, polls) =
        wait_finished_in_ledger(&mut watcher, &builds, Duration::from_secs(600)).await?;
    let cpu = Cpu::sample(&pids, &not_pipeline).since(&cpu_before);
    let pipeline = machine.per_job(args.jobs);
    let pipeline_cpu = pipeline.busy;
    stop_sampling.cancel();
    let (mut waits, shares) = sampling.await??;
    let wall = (last - started).num_microseconds().unwrap_or(0) as f64 / 1e6;
    let peak_rss: Vec<u64> = pids.iter().map(|p| rss_kib(*p, "VmHWM:")).collect();
    bench.stop_workers();
    // Backends flush their statistics when they exit; a busy one, only once a second.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let after = xact_commits(&bench.admin_url, &bench.db_name).await?;
    let wal = match (wal_before, waits.wal_flushes().await) {
        (Some(before), Some(after)) => Some((after.0 - before.0, after.1 - before.1)),
        _ => None,
    };

    let rows: Vec<BuildRow> = sqlx::query_as(
        "SELECT project_id, enqueued_at, started_at, finished_at FROM builds WHERE status = 'completed'",
    )
    .fetch_all(ledger.pool())
    .await?;
    let children = child_runs(&bench.emulator_log());
    let runs_total: usize = children.values().map(Vec::len).sum();
    let mut latency: Vec<f64> = rows.iter().map(|r| ms(r.3 - r.1)).collect();
    let overhead = Overhead::measure(&rows, &children);
    latency.sort_by(f64::total_cmp);
    let jobs_per_s = args.jobs as f64 / wall;
    let (store_bytes, store_compressed, _) = ledger_limit::stored(&ledger).await?;
    let per_run = |b: i64| b as f64 / runs_total.max(1) as f64;
    let store_per_run = per_run(store_bytes).round() as usize;

    println!(
        "\n## Pipeline: {} jobs over {} projects, {} replicas x concurrency {}, emulator at zero latency\n",
        args.jobs, args.projects, args.replicas, args.concurrency
    );
    println!("| measure | value |\n|---|---|");
    println!("| jobs/s | {jobs_per_s:.1} |");
    println!("| runs/s | {:.1} |", runs_total as f64 / wall);
    println!(
        "| enqueue-to-done latency p50 / p99 | {:.0} ms / {:.0} ms |",
        percentile(&latency, 50.0),
        percentile(&latency, 99.0)
    );
    let p50_p99 = |v: &[f64]| {
        format!(
            "{:.2} ms / {:.2} ms",
            percentile(v, 50.0),
            percentile(v, 99.0)
        )
    };
    println!(
        "| Baton's overhead per run (job time not inside a CLI process, from its creation to its last line) p50 / p99 | {} |",
        p50_p99(&overhead.per_run)
    );
    println!(
        "| the same, counting the CLI's start before its main (exec, loader) as Baton's | {} |",
        p50_p99(&overhead.per_run_from_main)
    );
    println!(
        "| where it is spent: claim to first run / between runs / last run to the build's end, p50 / p99 | {} / {} / {} |",
        p50_p99(&overhead.claim_to_first),
        p50_p99(&overhead.between),
        p50_p99(&overhead.last_to_end)
    );
    println!(
        "| peak RSS per worker | {} |",
        peak_rss
            .iter()
            .map(|k| format!("{:.1} MB", *k as f64 / 1024.0))
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!(
        "| Postgres transactions per job | {:.1} |",
        (after - before - polls) as f64 / args.jobs as f64
    );
    println!(
        "| CPU per job: Postgres / Redis / workers / CLI children (emulator) / bench | {:.2} / {:.2} / {:.2} / {:.2} / {:.2} ms |",
        cpu.postgres * 1000.0 / args.jobs as f64,
        cpu.redis * 1000.0 / args.jobs as f64,
        cpu.workers * 1000.0 / args.jobs as f64,
        cpu.children * 1000.0 / args.jobs as f64,
        cpu.bench * 1000.0 / args.jobs as f64,
    );
    println!(
        "| machine CPU used during the run | {:.0}% of {} cores |",
        100.0 * cpu.total() / (wall * cores() as f64),
        cores()
    );
    if let Some((flushes, ms)) = wal {
        let per_flush = if ms > 0.0 {
            format!("{:.2} ms", ms / flushes as f64)
        } else {
            "not timed (track_wal_io_timing is off)".into()
        };
        println!(
            "| Postgres WAL flushes per job (the whole server's); mean time per flush | {:.1}; {per_flush} |",
            flushes as f64 / args.jobs as f64
        );
    }
    println!("| {} | {} |", PgWaits::HEADING, shares.percentages());
    println!(
        "| transcript store: session bytes per run (new, as stored compressed) | {:.0} B, {:.0} B |",
        per_run(store_bytes),
        per_run(store_compressed)
    );

    // The limits, each alone at the same concurrency.
    let machine = Machine::read();
    let driver = own_cpu();
    let reaped = reaped_cpu();
    let agent_after = agent_limit(
        &bench,
        args.replicas,
        args.concurrency,
        args.jobs,
        args.projects,
        "after",
    )
    .await?;
    let agent_after_machine = machine.per_job(args.jobs);
    let driver_after = (own_cpu() - driver) / args.jobs as f64;
    let cli_after = (reaped_cpu() - reaped) / args.jobs as f64;
    let driver_cpu = (driver_before + driver_after) / 2.0;
    let agent_jobs = (agent_before + agent_after) / 2.0;
    let agent_cpu = (agent_before_machine.busy + agent_after_machine.busy) / 2.0;
    let agent_switches = (agent_before_machine.switches + agent_after_machine.switches) / 2.0;
    // The same without the session files, for what the transcript store costs the ledger.
    let (plain_jobs, plain_record_tx) =
        ledger_limit(&ledger, lanes, args.jobs, args.projects, None, "plain").await?;
    let machine = Machine::read();
    let cpu_before = Cpu::sample(&[], &[]);
    let wal_before = waits.wal_flushes().await;
    // The pipeline's runs stored this much of their sessions' files each; the ledger's limit stores
    // as much with each record, as the workers' records do.

    let (ledger_jobs, record_tx) = ledger_limit(
        &ledger,
        lanes,
        args.jobs,
        args.projects,
        Some(store_per_run),
        "store",
    )
    .await?;
    let ledger_machine = machine.per_job(args.jobs);
    let ledger_alone = Cpu::sample(&[], &[]).since(&cpu_before);
    // Its backends report their WAL flushes when they exit, as the workers' did.
    let pool = ledger.pool().clone();
    drop(ledger);
    pool.close().await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let ledger_wal = match (wal_before, waits.wal_flushes().await) {
        (Some(before), Some(after)) => Some(after.0 - before.0),
        _ => None,
    };
    let ledger_cpu = ledger_machine.busy;
    let (floor_jobs, floor_machine) = commit_floor(&bench.db_url, lanes, args.jobs).await?;
    let redis_job_count = args.jobs.max(lanes);
    let machine = Machine::read();
    let cpu_before = Cpu::sample(&[], &[]);
    let redis_jobs = redis_limit(&bench, lanes, redis_job_count).await?;
    let redis_machine = machine.per_job(redis_job_count);
    let redis_alone = Cpu::sample(&[], &[]).since(&cpu_before);
    let redis_cpu = redis_machine.busy;
    let tightest = [
        ("CLI runs", agent_jobs, agent_cpu),
        ("ledger", ledger_jobs, ledger_cpu),
        ("Redis", redis_jobs, redis_cpu),
    ]
    .into_iter()
    .min_by(|a, b| a.1.total_cmp(&b.1))
    .expect("three limits");
    println!("\n## Limits, each alone at concurrency {lanes} (jobs/s)\n");
    println!("| limit | jobs/s | machine CPU per job |\n|---|---|---|");
    let cpu_ms = |seconds: f64| format!("{:.2} ms", seconds * 1000.0);
    println!(
        "| spawning and reading the CLI (4 runs a job, supervised and driven as in the workers); mean of {agent_before:.1} before the pipeline and {agent_after:.1} after | {agent_jobs:.1} | {} |",
        cpu_ms(agent_cpu)
    );
    println!(
        "| ledger: a job's transactions (claim, 4 records with {store_per_run} new bytes of the session's transcript each, the last completing the build); record_run alone {record_tx:.0} tx/s | {ledger_jobs:.1} | {} |",
        cpu_ms(ledger_cpu)
    );
    println!(
        "| the same without the transcript store: record_run alone {plain_record_tx:.0} tx/s (the store costs {:.0}% of the limit, {:.3} ms a record) | {plain_jobs:.1} | |",
        100.0 * (1.0 - ledger_jobs / plain_jobs),
        1000.0 / record_tx - 1000.0 / plain_record_tx
    );
    println!(
        "| Redis: a job's operations (enqueue, read, start, checkpoint read with an event, 4 checkpoints with 12 events, finish with an event) | {redis_jobs:.1} | {} |",
        cpu_ms(redis_cpu)
    );
    // Each limit was measured with the whole machine to itself; the pipeline pays for all three on
    // the same cores, so the bound it can reach is their combination.
    let combined = 1.0 / (1.0 / agent_jobs + 1.0 / ledger_jobs + 1.0 / redis_jobs);
    println!(
        "\npipeline {jobs_per_s:.1} jobs/s = {:.0}% of the tightest limit ({}, {:.1} jobs/s)",
        100.0 * jobs_per_s / tightest.1,
        tightest.0,
        tightest.1
    );
    println!(
        "pipeline {jobs_per_s:.1} jobs/s = {:.0}% of the combined bound of the three sharing the machine ({combined:.1} jobs/s)",
        100.0 * jobs_per_s / combined
    );
    // A limit alone need not keep every core busy (Redis alone waits on round trips far more than
    // it computes), so the combined bound above understates what the three leave room for. On a
    // CPU-bound machine the ceiling of the first fraction is the limits' CPU: what a pipeline that
    // cost no more than the three, with every core busy, would reach.
    let limits_cpu = agent_cpu + ledger_cpu + redis_cpu;
    let cpu_bound = cores() as f64 / limits_cpu;
    println!(
        "limits' machine CPU per job {} + {} + {} = {}: on {} cores at most {cpu_bound:.1} jobs/s = {:.0}% of the tightest limit; the pipeline used {} per job, {} more",
        cpu_ms(agent_cpu),
        cpu_ms(ledger_cpu),
        cpu_ms(redis_cpu),
        cpu_ms(limits_cpu),
        cores(),
        100.0 * cpu_bound / tightest.1,
        cpu_ms(pipeline_cpu),
        cpu_ms(pipeline_cpu - limits_cpu)
    );
    println!(
        "the ledger's commit floor, a job's {} transactions as one-row durable commits and nothing else, {lanes} at once: {floor_jobs:.1} jobs/s, {} of machine CPU per job, {:.0}% of the ledger's {}",
        job_transactions(),
        cpu_ms(floor_machine.busy),
        100.0 * floor_machine.busy / ledger_cpu,
        cpu_ms(ledger_cpu)
    );
    let budget = Budget {
        cores: cores(),
        busy: pipeline_cpu * args.jobs as f64 / (wall * cores() as f64),
        tightest,
        others: limits_cpu - tightest.2,
        others_at_floor: (tightest.0 != "ledger")
            .then_some(limits_cpu - tightest.2 - ledger_cpu + floor_machine.busy),
        pipeline: pipeline_cpu,
    };
    println!("{}", budget.line());
    // The CLI limit's lanes spawn, read and reap the CLI as a worker does and nothing else, so what a
    // worker spends beyond them is its own work: the part of the excess above that Baton can cut.
    let workers_cpu = cpu.workers / args.jobs as f64;
    println!(
        "the workers used {} of CPU per job; the CLI limit's lanes, which only drive the CLI as a worker does, {}; the rest of a worker's work (the stream, the ledger's and Redis's clients, leases, events) {}",
        cpu_ms(workers_cpu),
        cpu_ms(driver_cpu),
        cpu_ms(workers_cpu - driver_cpu)
    );
    let per_job = |seconds: f64, jobs: usize| seconds / jobs as f64;
    let excess = Excess {
        pipeline: pipeline_cpu,
        limits: limits_cpu,
        cli: (
            per_job(cpu.children, args.jobs),
            (cli_before + cli_after) / 2.0,
        ),
        postgres: (
            per_job(cpu.postgres, args.jobs),
            per_job(ledger_alone.postgres, args.jobs),
        ),
        redis: (
            per_job(cpu.redis, args.jobs),
            per_job(redis_alone.redis, redis_job_count),
        ),
        clients: (
            per_job(cpu.workers, args.jobs),
            driver_cpu
                + per_job(ledger_alone.bench, args.jobs)
                + per_job(redis_alone.bench, redis_job_count),
        ),
    };
    println!("{}", excess.line());
    // A commit that finds its WAL already flushed by another's costs no flush of its own. Lanes
    // that commit back to back share flushes; in the pipeline a lane commits when its run ends.
    if let (Some((pipeline_flushes, _)), Some(ledger_flushes)) = (wal, ledger_wal) {
        println!(
            "Postgres WAL flushes per job: the pipeline {:.1}, the ledger's limit {:.1}, of {} commits",
            pipeline_flushes as f64 / args.jobs as f64,
            ledger_flushes as f64 / args.jobs as f64,
            job_transactions()
        );
    }
    // Each hand-off between processes (worker to Postgres or Redis and back, worker to CLI) is a
    // wakeup. A limit alone keeps its server busy, so it serves many requests per wakeup; in the
    // pipeline the servers sleep between a job's requests.
    println!(
        "context switches per job, whole machine: the pipeline {:.0}; the limits {:.0} + {:.0} + {:.0} = {:.0}",
        pipeline.switches,
        agent_switches,
        ledger_machine.switches,
        redis_machine.switches,
        agent_switches + ledger_machine.switches + redis_machine.switches
    );
    // A VM's cores are lent: where the host takes them away during some phases of a run and not
    // others, the fractions above compare machines of different speeds.
    let stolen = [
        ("the pipeline", pipeline.stolen),
        ("the CLI limit before it", agent_before_machine.stolen),
        ("after it", agent_after_machine.stolen),
        ("the ledger's limit", ledger_machine.stolen),
        ("Redis's", redis_machine.stolen),
    ];
    println!(
        "cores' time taken by the hypervisor (steal): {}",
        stolen
            .iter()
            .map(|(phase, share)| format!("{phase} {:.1}%", 100.0 * share))
            .collect::<Vec<_>>()
            .join(", ")
    );
    if let Some(line) = steal_warning(&stolen) {
        println!("{line}");
    }
    let limit_cli: Vec<f64> = ["before", "after"]
        .iter()
        .filter_map(|label| cli_cpu_per_run(&bench.dir.join(format!("limit-runs-{label}.jsonl"))))
        .collect();
    if let (Some(pipeline), false) = (cli_cpu_per_run(&bench.emulator_log()), limit_cli.is_empty())
    {
        let limit = limit_cli.iter().sum::<f64>() / limit_cli.len() as f64;
        println!(
            "a CLI run's own CPU, as the process measured it: {pipeline:.2} ms in the pipeline, {limit:.2} ms in the CLI limit"
        );
        // Every CLI run does the same work, so its CPU tells the machine's speed at the time, and
        // the CLI limit's throughput follows that cost. A VM's speed drifts between the phases of
        // one run; scaled to the CLI's cost during the pipeline, the limit is compared at one speed.
        // It also counts as drift what the pipeline's neighbours add to a CLI run, hence both lines.
        if pipeline > 0.0 {
            let scaled = agent_jobs * limit / pipeline;
            println!(
                "pipeline {jobs_per_s:.1} jobs/s = {:.0}% of the CLI limit at the CLI's speed during the pipeline ({agent_jobs:.1} jobs/s x {limit:.2} / {pipeline:.2} ms a run = {scaled:.1} jobs/s)",
                100.0 * jobs_per_s / scaled
            );
        }
    }
    bench.cleanup().await;
    Ok(())
}

/// Jobs not yet handed out, as (project, round), and the projects in flight.
type ScheduleState = (VecDeque<(usize, usize)>, HashSet<usize>);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steal_in_the_pipeline_or_cli_limit_voids_the_fractions_and_elsewhere_only_the_ceiling() {
        let phases = |shares: [f64; 5]| {
            let names = ["the pipeline", "before", "after", "the ledger's", "Redis's"];
            steal_warning(&names.into_iter().zip(shares).collect::<Vec<_>>())
        };
        assert_eq!(
            phases([0.01, 0.0, 0.015, 0.0, 0.02]),
            None,
            "at most 2% is fine"
        );
        let line = phases([0.01, 0.03, 0.0, 0.0, 0.30]).unwrap();
        assert!(
            line.starts_with("warning: the hypervisor took 3.0%"),
            "{line}"
        );
        assert!(line.contains("during before;"), "{line}");
        let line = phases([0.0, 0.0, 0.0, 0.05, 0.12]).unwrap();
        assert!(
            line.starts_with("note: the hypervisor took 12.0%"),
            "{line}"
        );
        assert!(line.contains("during Redis's;"), "{line}");
    }

    #[test]
    fn the_budget_is_what_a_job_may_cost_at_the_target_with_the_cores_as_busy() {
        let budget = Budget {
            cores: 2,
            busy: 0.9,
            tightest: ("CLI runs", 180.0, 0.008),
            others: 0.003,
            others_at_floor: Some(0.002),
            pipeline: 0.0125,
        };
        // 2 cores x 90% / (70% x 180 jobs/s) = 14.29 ms a job, 6.29 ms beyond the CLI's 8 ms.
        assert!((budget.per_job() - 0.014_285_7).abs() < 1e-6);
        let line = budget.line();
        assert!(
            line.starts_with("budget for 70% of the tightest limit with 90% of the cores busy"),
            "{line}"
        );
        assert!(
            line.contains(
                ": 14.29 ms of machine CPU per job, which leaves 6.29 ms beside the CLI runs limit's 8.00 ms;"
            ),
            "{line}"
        );
        assert!(line.contains("alone took 3.00 ms (2.00 ms with the ledger at its commit floor), the pipeline 4.50 ms beside it"), "{line}");
        let ledger_tightest = Budget {
            others_at_floor: None,
            ..budget
        };
        assert!(!ledger_tightest.line().contains("floor"));
    }

    #[test]
    fn the_excess_is_each_part_against_its_limit_and_the_rest_is_what_no_part_accounts_for() {
        let excess = Excess {
            pipeline: 0.0130,
            limits: 0.0093,
            cli: (0.0064, 0.0057),
            postgres: (0.0031, 0.0017),
            redis: (0.0006, 0.0003),
            clients: (0.0022, 0.0013),
        };
        let line = excess.line();
        assert!(
            line.starts_with("where the pipeline's +3.70 ms per job beyond its limits went: "),
            "{line}"
        );
        assert!(
            line.contains(
                "the CLI's processes +0.70 ms (6.40 ms in the pipeline, 5.70 ms in the CLI limit), "
            ),
            "{line}"
        );
        assert!(
            line.contains(
                "Postgres +1.40 ms (3.10 ms in the pipeline, 1.70 ms in the ledger's limit), "
            ),
            "{line}"
        );
        assert!(
            line.contains("Redis +0.30 ms (0.60 ms in the pipeline, 0.30 ms in its limit), "),
            "{line}"
        );
        assert!(
            line.contains(
                "the workers +0.90 ms (2.20 ms in the pipeline, 1.30 ms for the limits' drivers); "
            ),
            "{line}"
        );
        // 3.70 - (0.70 + 1.40 + 0.30 + 0.90) = 0.40 ms that no part accounts for.
        assert!(line.contains("; the rest +0.40 ms (the bench"), "{line}");
        let cheaper = Excess {
            postgres: (0.0015, 0.0017),
            ..excess
        };
        assert!(
            cheaper.line().contains("Postgres -0.20 ms"),
            "{}",
            cheaper.line()
        );
    }

    #[test]
    fn stat_reads_work_steal_and_switches_apart() {
        // user nice system idle iowait irq softirq steal guest guest_nice
        let stat = "cpu  1000 20 300 5000 400 6 70 800 0 0\ncpu0 1 2 3 4 5 6 7 8 0 0\nctxt 123456\nbtime 1\n";
        let (busy, stolen, switches) = parse_stat(stat);
        // Idle, I/O wait and steal are not work.
        assert_eq!(busy, (1000.0 + 20.0 + 300.0 + 6.0 + 70.0) / 100.0);
        assert_eq!(stolen, 8.0);
        assert_eq!(switches, 123456.0);
    }

    #[test]
    fn stat_without_a_steal_column_reports_none_stolen() {
        let (busy, stolen, switches) = parse_stat("cpu  100 0 100 900 0 0 0\nctxt 7\n");
        assert_eq!((busy, stolen, switches), (2.0, 0.0, 7.0));
        assert_eq!(parse_stat(""), (0.0, 0.0, 0.0));
    }
}
