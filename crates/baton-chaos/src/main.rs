//! `just chaos`: Baton under mixed faults. It starts its own Redis (append-only) and PostgreSQL,
//! a fleet of workers each on a host of its own, and a mixed load of creates, updates, chats in
//! threads, plans and planning chats over many projects; on a seeded schedule it kills workers
//! (`kill -9`), stops them past the claim timeout (SIGSTOP), cuts one worker from Redis, and
//! crashes Redis and PostgreSQL. Then it waits for every build to end and checks what Baton
//! promises, exiting 1 when any promise is broken.

mod fleet;
mod load;
mod seed;
mod services;
mod verdict;

use std::process::ExitCode;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use clap::Parser;
use nix::sys::signal::Signal;

use fleet::{Setting, Worker};
use seed::Seed;
use services::{Postgres, Proxy, Redis};

/// Baton under mixed faults, and the invariants checked at the end.
#[derive(Debug, Parser)]
#[command(name = "baton-chaos")]
struct Args {
    /// How long the load and the faults go on, in seconds.
    #[arg(long, default_value_t = 120)]
    duration: u64,
    /// Seeds the load and the fault schedule: the same seed, the same run.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Worker replicas, each a host of its own.
    #[arg(long, default_value_t = 3)]
    workers: usize,
    /// Projects the load is spread over.
    #[arg(long, default_value_t = 8)]
    projects: u32,
    /// How long each CLI run takes.
    #[arg(long, default_value_t = 300)]
    latency_ms: u64,
    /// Keep the run's folder (logs, data) instead of deleting it.
    #[arg(long)]
    keep: bool,
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args).await {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("chaos: {e:#}");
            ExitCode::from(2)
        }
    }
}

/// A fault and how long it lasts before it is healed.
#[derive(Debug, Clone, Copy)]
enum Fault {
    Kill9(usize),
    Stop(usize),
    CutRedis,
    RedisCrash,
    PostgresCrash,
}

impl Fault {
    fn name(self) -> &'static str {
        match self {
            Fault::Kill9(_) => "kill -9 a worker",
            Fault::Stop(_) => "SIGSTOP a worker past the claim timeout",
            Fault::CutRedis => "cut a worker from Redis",
            Fault::RedisCrash => "crash Redis",
            Fault::PostgresCrash => "crash PostgreSQL",
        }
    }
}

async fn run(args: &Args) -> anyhow::Result<bool> {
    let scratch = tempfile::Builder::new().prefix("baton-chaos-").tempdir()?;
    let dir = scratch.path().to_path_buf();
    println!(
        "chaos: seed {}, {} s, {} workers, {} projects, folder {}",
        args.seed,
        args.duration,
        args.workers,
        args.projects,
        dir.display()
    );
    let mut redis = Redis::start(&dir.join("redis"))?;
    let postgres = Postgres::start(&dir.join("postgres"))?;
    let proxy = Proxy::start(redis.port).await?;
    let setting = Setting {
        dir: dir.clone(),
        redis_url: redis.url(),
        database_url: postgres.url(),
        latency_ms: args.latency_ms,
    };
    let migrate = setting.command("baton").arg("migrate").output()?;
    anyhow::ensure!(
        migrate.status.success(),
        "baton migrate: {}",
        String::from_utf8_lossy(&migrate.stderr)
    );

    // Worker 0 reaches Redis through the proxy, so it alone can be cut off.
    let mut workers: Vec<Worker> = (0..args.workers)
        .map(|i| {
            let url = if i == 0 {
                format!("redis://127.0.0.1:{}", proxy.port)
            } else {
                redis.url()
            };
            Worker::new(format!("host-{i}"), url)
        })
        .collect();
    for w in &mut workers {
        w.start(&setting)?;
    }

    // The load, on a thread of its own: one job every few hundred milliseconds.
    let load_setting = setting.clone();
    let (projects, duration, seed) = (args.projects, Duration::from_secs(args.duration), args.seed);
    let load = std::thread::spawn(move || -> anyhow::Result<Vec<load::Enqueued>> {
        let mut seed = Seed::new(seed ^ 0x10ad);
        let mut done = Vec::new();
        let mut counts = vec![0u32; projects as usize];
        let mut threads: Vec<Vec<u32>> = vec![Vec::new(); projects as usize];
        let started = Instant::now();
        while started.elapsed() < duration {
            let p = seed.below(u64::from(projects)) as usize;
            let project = format!("proj-{p}");
            let n = counts[p];
            counts[p] += 1;
            let (job, kind) = load::job_args(&mut seed, &project, n, &mut threads[p]);
            let build_id = format!("chaos-{p}-{n}");
            load::enqueue(&load_setting, &build_id, &job)?;
            done.push(load::Enqueued {
                build_id,
                project,
                kind,
            });
            std::thread::sleep(Duration::from_millis(150 + seed.below(300)));
        }
        Ok(done)
    });

    // The faults, on a seeded schedule, each healed before the next.
    let mut seed = Seed::new(args.seed);
    let mut fault_ends: Vec<(String, DateTime<Utc>)> = Vec::new();
    let started = Instant::now();
    tokio::time::sleep(Duration::from_secs(3)).await;
    while started.elapsed() + Duration::from_secs(8) < duration {
        let fault = match seed.below(5) {
            0 => Fault::Kill9(seed.below(args.workers as u64) as usize),
            1 => Fault::Stop(seed.below(args.workers as u64) as usize),
            2 => Fault::CutRedis,
            3 => Fault::RedisCrash,
            _ => Fault::PostgresCrash,
        };
        println!(
            "chaos: {:>5.1} s  {}",
            started.elapsed().as_secs_f64(),
            fault.name()
        );
        match fault {
            Fault::Kill9(i) => {
                workers[i].kill9();
                tokio::time::sleep(Duration::from_secs(1)).await;
                workers[i].start(&setting)?;
            }
            Fault::Stop(i) => {
                workers[i].signal(Signal::SIGSTOP);
                tokio::time::sleep(Duration::from_secs(5)).await;
                workers[i].signal(Signal::SIGCONT);
            }
            Fault::CutRedis => {
                proxy.cut();
                tokio::time::sleep(Duration::from_secs(4)).await;
                proxy.restore();
            }
            Fault::RedisCrash => redis.crash_and_restart()?,
            Fault::PostgresCrash => postgres.crash_and_restart()?,
        }
        fault_ends.push((fault.name().to_string(), Utc::now()));
        tokio::time::sleep(Duration::from_millis(2000 + seed.below(3000))).await;
    }

    let enqueued = load
        .join()
        .map_err(|_| anyhow::anyhow!("the load thread panicked"))??;
    println!(
        "chaos: {} builds enqueued; waiting for every one to end",
        enqueued.len()
    );
    let settled = wait_settled(&setting, &enqueued, Duration::from_secs(240)).await?;
    let findings = verdict::judge(&setting, &enqueued, &fault_ends).await?;
    for w in &mut workers {
        w.stop();
    }
    postgres.stop("fast");
    redis.stop();

    println!("\n| check | result |\n|---|---|");
    let mut ok = settled;
    if !settled {
        println!("| every build ended within 240 s | no |");
    }
    for f in &findings {
        println!(
            "| {}{} | {} |",
            f.name,
            if f.violated { " (VIOLATED)" } else { "" },
            f.figure
        );
        ok &= !f.violated;
    }
    if args.keep || !ok {
        let kept = scratch.keep();
        println!("\nchaos: logs and data kept in {}", kept.display());
    }
    println!(
        "\nchaos: {}",
        if ok {
            "every invariant held"
        } else {
            "an invariant was broken"
        }
    );
    Ok(ok)
}

/// Waits until every enqueued build has ended (completed, failed or cancelled); false on timeout.
async fn wait_settled(
    setting: &Setting,
    enqueued: &[load::Enqueued],
    limit: Duration,
) -> anyhow::Result<bool> {
    let started = Instant::now();
    let ids: Vec<String> = enqueued.iter().map(|e| e.build_id.clone()).collect();
    loop {
        let open: Option<i64> = async {
            let mut db = <sqlx::PgConnection as sqlx::Connection>::connect(&setting.database_url)
                .await
                .ok()?;
            sqlx::query_scalar(
                "SELECT count(*) FROM unnest($1::text[]) AS e(id)
                 LEFT JOIN baton.builds b ON b.build_id = e.id
                 WHERE b.status IS NULL OR b.status NOT IN ('completed', 'failed', 'cancelled')",
            )
            .bind(&ids)
            .fetch_one(&mut db)
            .await
            .ok()
        }
        .await;
        if open == Some(0) {
            return Ok(true);
        }
        if started.elapsed() > limit {
            return Ok(false);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
