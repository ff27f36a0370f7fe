//! The `dispatch` mode: a backlog over few projects, where most held entries wait behind a busy
//! project. It reports the Redis calls and Redis CPU a job costs, which must stay flat as
//! concurrency and backlog grow.

use super::*;

/// Redis's own counters: calls per command and the server's CPU seconds.
struct RedisStats {
    calls: HashMap<String, u64>,
    cpu: f64,
}

impl RedisStats {
    async fn read(queue_url: &str) -> anyhow::Result<RedisStats> {
        let client = redis::Client::open(queue_url)?;
        let mut conn = client.get_multiplexed_async_connection().await?;
        let stats: String = redis::cmd("INFO")
            .arg("commandstats")
            .query_async(&mut conn)
            .await?;
        let cpu_info: String = redis::cmd("INFO").arg("cpu").query_async(&mut conn).await?;
        // `cmdstat_xack:calls=12,usec=...`
        let calls = stats
            .lines()
            .filter_map(|line| {
                let (name, rest) = line.strip_prefix("cmdstat_")?.split_once(':')?;
                let calls = rest.split(',').find_map(|kv| kv.strip_prefix("calls="))?;
                Some((name.to_string(), calls.parse().ok()?))
            })
            .collect();
        let cpu = cpu_info
            .lines()
            .filter_map(|line| {
                let (key, value) = line.split_once(':')?;
                matches!(key, "used_cpu_sys" | "used_cpu_user")
                    .then(|| value.trim().parse::<f64>().ok())
                    .flatten()
            })
            .sum();
        Ok(RedisStats { calls, cpu })
    }
}

pub(crate) async fn dispatch(args: &Args) -> anyhow::Result<()> {
    let mut bench = Bench::new(args, "dispatch").await?;
    let queue = bench.queue().await?;
    // The backlog is there before the workers start, as after a burst.
    let builds = enqueue(&queue, args.jobs, args.projects, "dispatch").await?;
    let before = RedisStats::read(&args.redis_url).await?;
    let started = Instant::now();
    for _ in 0..args.replicas {
        bench.start_worker(&[("BATON_CONCURRENCY", args.concurrency.to_string())])?;
    }
    let mut watcher = sqlx::PgConnection::connect(&bench.db_url).await?;
    sqlx::query("SET search_path TO baton")
        .execute(&mut watcher)
        .await?;
    wait_finished_in_ledger(&mut watcher, &builds, Duration::from_secs(1200)).await?;
    let wall = started.elapsed().as_secs_f64();
    let after = RedisStats::read(&args.redis_url).await?;
    bench.stop_workers();
    let jobs = args.jobs as f64;
    let mut per_command: Vec<(String, f64)> = after
        .calls
        .iter()
        .map(|(name, n)| {
            let was = before.calls.get(name).copied().unwrap_or(0);
            (name.clone(), n.saturating_sub(was) as f64 / jobs)
        })
        .filter(|(name, per_job)| *per_job > 0.0 && name != "info")
        .collect();
    per_command.sort_by(|a, b| b.1.total_cmp(&a.1));
    let total: f64 = per_command.iter().map(|(_, n)| n).sum();
    println!(
        "\n## Dispatch: {} jobs over {} projects, {} replicas x concurrency {}, backlog queued first\n",
        args.jobs, args.projects, args.replicas, args.concurrency
    );
    println!("| measure | value |\n|---|---|");
    println!("| jobs/s | {:.1} |", jobs / wall);
    println!("| Redis calls per job | {total:.1} |");
    let top: Vec<String> = per_command
        .iter()
        .take(8)
        .map(|(name, n)| format!("{} {n:.1}", name.to_uppercase()))
        .collect();
    println!("| of which | {} |", top.join(", "));
    println!(
        "| Redis CPU per job | {:.3} ms |",
        (after.cpu - before.cpu) * 1000.0 / jobs
    );
    bench.cleanup().await;
    Ok(())
}
