//! The `slow` and `failover` modes.

use super::*;

pub(crate) async fn slow(args: &Args) -> anyhow::Result<()> {
    // Memory per in-flight job: one worker holding `in_flight` slow jobs at once.
    let mut bench = Bench::new(args, "slow").await?;
    let queue = bench.queue().await?;
    let latency = args.latency_ms.to_string();
    let pid = bench.start_worker(&[
        ("BATON_CONCURRENCY", args.in_flight.to_string()),
        ("CLAUDE_EMULATOR_LATENCY_MS", latency.clone()),
    ])?;
    tokio::time::sleep(Duration::from_millis(800)).await;
    let idle = rss_kib(pid, "VmRSS:");
    let from = queue.last_event_id().await?;
    let builds = enqueue(&queue, args.in_flight, args.in_flight, "slow").await?;
    let mut peak = idle;
    let mut most_children = 0;
    let deadline = Instant::now() + Duration::from_secs(120);
    while Instant::now() < deadline {
        let children = count_children(pid);
        most_children = most_children.max(children);
        peak = peak.max(rss_kib(pid, "VmRSS:"));
        if children >= args.in_flight {
            // Hold the sample a moment: every job is in flight now.
            tokio::time::sleep(Duration::from_millis(300)).await;
            peak = peak.max(rss_kib(pid, "VmRSS:"));
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    wait_completed(&queue, &from, &builds, Duration::from_secs(600)).await?;
    println!("\n## Slow runs: {} ms each, one worker\n", args.latency_ms);
    println!("| measure | value |\n|---|---|");
    println!("| CLI runs in flight at the sample | {most_children} |");
    println!(
        "| worker RSS idle / with {} jobs in flight | {:.1} MB / {:.1} MB |",
        args.in_flight,
        idle as f64 / 1024.0,
        peak as f64 / 1024.0
    );
    println!(
        "| memory per in-flight job | {:.1} KB |",
        (peak.saturating_sub(idle)) as f64 / args.in_flight.max(1) as f64
    );
    bench.cleanup().await;

    // Throughput across concurrency and replicas.
    println!(
        "\n| replicas | concurrency | jobs | jobs/s | expected at zero overhead |\n|---|---|---|---|---|"
    );
    for (replicas, concurrency) in [(1, 8), (1, 32), (2, 32)] {
        let mut bench = Bench::new(args, "scale").await?;
        let queue = bench.queue().await?;
        for _ in 0..replicas {
            bench.start_worker(&[
                ("BATON_CONCURRENCY", concurrency.to_string()),
                ("CLAUDE_EMULATOR_LATENCY_MS", latency.clone()),
            ])?;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        let jobs = replicas * concurrency * 2;
        let from = queue.last_event_id().await?;
        let started = Instant::now();
        let builds = enqueue(&queue, jobs, jobs, "scale").await?;
        wait_completed(&queue, &from, &builds, Duration::from_secs(600)).await?;
        let rate = jobs as f64 / started.elapsed().as_secs_f64();
        let ideal = (replicas * concurrency) as f64 / (4.0 * args.latency_ms as f64 / 1000.0);
        println!("| {replicas} | {concurrency} | {jobs} | {rate:.2} | {ideal:.2} |");
        bench.cleanup().await;
    }
    Ok(())
}

/// Live CLI processes that a worker started: its children.
pub(crate) fn count_children(worker: u32) -> usize {
    let parent = |pid: u32| -> Option<u32> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        let (_, rest) = stat.rsplit_once(')')?;
        // After the command: state, then the parent's pid.
        rest.split_whitespace().nth(1)?.parse().ok()
    };
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_string_lossy().parse::<u32>().ok())
        .filter(|&pid| {
            let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
            comm.trim() == "claude-emulator" && parent(pid) == Some(worker)
        })
        .count()
}

pub(crate) async fn failover(args: &Args) -> anyhow::Result<()> {
    let claim_idle = 10u64;
    let mut bench = Bench::new(args, "failover").await?;
    let queue = bench.queue().await?;
    let env = [
        ("BATON_CLAIM_IDLE", claim_idle.to_string()),
        ("BATON_HEARTBEAT", "2".to_string()),
        ("BATON_CONCURRENCY", "4".to_string()),
        ("CLAUDE_EMULATOR_LATENCY_MS", "1000".to_string()),
    ];
    let victim = bench.start_worker(&env)?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let from = queue.last_event_id().await?;
    let builds = enqueue(&queue, 8, 8, "failover").await?;
    while count_children(victim) < 4 {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    bench.start_worker(&env)?;
    let killed = Utc::now();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(victim as i32),
        nix::sys::signal::Signal::SIGKILL,
    )?;
    wait_completed(&queue, &from, &builds, Duration::from_secs(300)).await?;
    // When each of the dead worker's jobs was claimed again, from the events stream.
    let mut reader = queue.event_reader(&from).await?;
    let mut resumed = Vec::new();
    loop {
        let events = reader.next(Duration::from_millis(200)).await?;
        if events.is_empty() {
            break;
        }
        for e in events {
            if e.event == EventType::JobStarted && e.attempt.unwrap_or(1) > 1 {
                resumed.push((e.at - killed).num_milliseconds() as f64 / 1000.0);
            }
        }
    }
    resumed.sort_by(f64::total_cmp);
    println!(
        "\n## Failover: kill -9 of a worker running 4 jobs (BATON_CLAIM_IDLE {claim_idle} s)\n"
    );
    println!("| measure | value |\n|---|---|");
    println!("| jobs taken over | {} |", resumed.len());
    println!(
        "| kill to takeover, slowest | {:.1} s (target: claim idle + 5 = {} s) |",
        resumed.last().copied().unwrap_or(f64::NAN),
        claim_idle + 5
    );
    bench.cleanup().await;
    Ok(())
}
