//! What the bench reports: Baton's overhead per run, percentiles, the CPU budget a job may cost to
//! reach the target, and where the pipeline's CPU beyond its limits went.

use super::*;

/// The share of the tightest limit the pipeline is to reach (the target `just bench` is held to).
pub(crate) const TARGET: f64 = 0.70;

/// What a job may cost for the pipeline to reach [`TARGET`] of the tightest limit, and what it
/// did cost. Throughput on a CPU-bound machine is busy cores over CPU per job, so the target fixes
/// a budget per job; set against what the limits spend alone, it shows how much room is left.
pub(crate) struct Budget {
    pub(crate) cores: usize,
    /// The share of the cores' time the pipeline kept busy.
    pub(crate) busy: f64,
    /// The tightest limit: its name, jobs/s and machine CPU per job.
    pub(crate) tightest: (&'static str, f64, f64),
    /// The other two limits' machine CPU per job together.
    pub(crate) others: f64,
    /// The same with the ledger at its commit floor, unless the ledger is the tightest.
    pub(crate) others_at_floor: Option<f64>,
    /// The pipeline's machine CPU per job.
    pub(crate) pipeline: f64,
}

impl Budget {
    /// Machine CPU seconds a job may cost.
    pub(crate) fn per_job(&self) -> f64 {
        self.cores as f64 * self.busy / (TARGET * self.tightest.1)
    }

    pub(crate) fn line(&self) -> String {
        let ms = |s: f64| format!("{:.2} ms", s * 1000.0);
        let (name, _, tightest_cpu) = self.tightest;
        let budget = self.per_job();
        let floor = self
            .others_at_floor
            .map(|f| format!(" ({} with the ledger at its commit floor)", ms(f)))
            .unwrap_or_default();
        format!(
            "budget for {:.0}% of the tightest limit with {:.0}% of the cores busy, as in the \
             pipeline: {} of machine CPU per job, which leaves {} beside the {name} limit's {}; \
             the other two limits alone took {}{floor}, the pipeline {} beside it",
            100.0 * TARGET,
            100.0 * self.busy,
            ms(budget),
            ms(budget - tightest_cpu),
            ms(tightest_cpu),
            ms(self.others),
            ms(self.pipeline - tightest_cpu),
        )
    }
}

/// Where the pipeline's machine CPU per job beyond its three limits went: each part of the pipeline
/// as (in the pipeline, in its limit alone), all in seconds per job. The limits each had the machine
/// to themselves; the pipeline's parts share its cores, so a part that costs more here pays for
/// the sharing (caches another process emptied, a server woken for each request) or for work the
/// limits leave out.
pub(crate) struct Excess {
    /// The pipeline's machine CPU per job.
    pub(crate) pipeline: f64,
    /// The three limits' machine CPU per job together.
    pub(crate) limits: f64,
    /// The CLI's processes (with their supervisors): the workers' reaped children, and the CLI
    /// limit's.
    pub(crate) cli: (f64, f64),
    /// The Postgres server's processes: in the pipeline, and in the ledger's limit.
    pub(crate) postgres: (f64, f64),
    /// The Redis server: in the pipeline, and in Redis's limit.
    pub(crate) redis: (f64, f64),
    /// The clients: the workers, and the three limits' drivers (the CLI limit's lanes and the
    /// ledger's and Redis's clients), which do the rest of a worker's work between them.
    pub(crate) clients: (f64, f64),
}

impl Excess {
    pub(crate) fn line(&self) -> String {
        let ms = |s: f64| format!("{:+.2} ms", s * 1000.0);
        let part = |name: &str, (pipeline, alone): (f64, f64), alone_name: &str| {
            format!(
                "{name} {} ({:.2} ms in the pipeline, {:.2} ms {alone_name})",
                ms(pipeline - alone),
                pipeline * 1000.0,
                alone * 1000.0
            )
        };
        let parts = [self.cli, self.postgres, self.redis, self.clients];
        let named: f64 = parts.iter().map(|(p, a)| p - a).sum();
        format!(
            "where the pipeline's {} per job beyond its limits went: {}, {}, {}, {}; the rest {} \
             (the bench, the kernel's threads and interrupts)",
            ms(self.pipeline - self.limits),
            part("the CLI's processes", self.cli, "in the CLI limit"),
            part("Postgres", self.postgres, "in the ledger's limit"),
            part("Redis", self.redis, "in its limit"),
            part("the workers", self.clients, "for the limits' drivers"),
            ms(self.pipeline - self.limits - named),
        )
    }
}

/// A span of time in milliseconds, to the microsecond.
pub(crate) fn ms(d: chrono::TimeDelta) -> f64 {
    d.num_microseconds().unwrap_or(0) as f64 / 1000.0
}

pub(crate) fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

/// Baton's overhead, from the jobs' times in the ledger and their CLI runs in the emulator's log.
/// Every list is sorted, in milliseconds.
#[derive(Default)]
pub(crate) struct Overhead {
    /// Per job: its time from claim to end that no CLI process of it spent, divided by its runs. A
    /// run's time starts when its process was created, so the CLI's own start (exec, loader,
    /// runtime) is inside it.
    pub(crate) per_run: Vec<f64>,
    /// The same with a run's time starting at the CLI's `main`, as the benchmark measured before
    /// the emulator could tell its creation.
    pub(crate) per_run_from_main: Vec<f64>,
    /// From the claim to the first run's process.
    pub(crate) claim_to_first: Vec<f64>,
    /// From one run's last line to the next run's process: the CLI's exit, the run's record and the
    /// next spawn.
    pub(crate) between: Vec<f64>,
    /// From the last run's last line to the build's end.
    pub(crate) last_to_end: Vec<f64>,
}

impl Overhead {
    pub(crate) fn measure(rows: &[BuildRow], children: &HashMap<String, Vec<ChildRun>>) -> Self {
        let mut o = Overhead::default();
        for (project, _, start, end) in rows {
            let mut inside: Vec<&ChildRun> = children
                .get(project)
                .into_iter()
                .flatten()
                .filter(|r| r.created >= *start && r.ended <= *end)
                .collect();
            // A job's runs follow one another, so in order of creation the last one ends last.
            inside.sort_by_key(|r| r.created);
            let (Some(first), Some(last)) = (inside.first(), inside.last()) else {
                continue;
            };
            let runs = inside.len() as f64;
            let job_ms = ms(*end - *start);
            let created_ms: f64 = inside.iter().map(|r| ms(r.ended - r.created)).sum();
            let main_ms: f64 = inside.iter().map(|r| ms(r.ended - r.started)).sum();
            o.per_run.push((job_ms - created_ms) / runs);
            o.per_run_from_main.push((job_ms - main_ms) / runs);
            o.claim_to_first.push(ms(first.created - *start));
            o.between
                .extend(inside.windows(2).map(|w| ms(w[1].created - w[0].ended)));
            o.last_to_end.push(ms(*end - last.ended));
        }
        for v in [
            &mut o.per_run,
            &mut o.per_run_from_main,
            &mut o.claim_to_first,
            &mut o.between,
            &mut o.last_to_end,
        ] {
            v.sort_by(f64::total_cmp);
        }
        o
    }
}

/// One CLI run from the emulator's run log: when its process was created (before its `exec`; the
/// start of `main` where the log has no creation), when `main` started, and its last line.
#[derive(Clone, Copy)]
pub(crate) struct ChildRun {
    pub(crate) created: DateTime<Utc>,
    pub(crate) started: DateTime<Utc>,
    pub(crate) ended: DateTime<Utc>,
}

/// Child runs per project folder, from the emulator's run log.
pub(crate) fn child_runs(log: &Path) -> HashMap<String, Vec<ChildRun>> {
    let mut out: HashMap<String, Vec<_>> = HashMap::new();
    for line in std::fs::read_to_string(log).unwrap_or_default().lines() {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        let parse = |k: &str| {
            v[k].as_str()
                .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
                .map(|t| t.with_timezone(&Utc))
        };
        if let (Some(started), Some(ended), Some(cwd)) =
            (parse("started_at"), parse("ended_at"), v["cwd"].as_str())
        {
            let project = Path::new(cwd)
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let created = parse("created_at").unwrap_or(started);
            out.entry(project).or_default().push(ChildRun {
                created,
                started,
                ended,
            });
        }
    }
    out
}

/// The mean CPU of a CLI run in the emulator's run log `log`, as each process measured itself (its
/// exec included, its exit not); `None` without such lines.
pub(crate) fn cli_cpu_per_run(log: &Path) -> Option<f64> {
    let text = std::fs::read_to_string(log).ok()?;
    let cpu: Vec<f64> = text
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| v["cpu_ms"].as_f64())
        .collect();
    (!cpu.is_empty()).then(|| cpu.iter().sum::<f64>() / cpu.len() as f64)
}
