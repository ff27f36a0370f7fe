//! CPU accounting: each process's and the machine's CPU time, the hypervisor's steal, and what
//! the machine is.

use super::*;

/// The share of the cores' time the hypervisor may take during a phase before the run's fractions
/// are called unreliable. On the fourteenth round's VM the host took 0.4% over a quiet half hour and
/// 6.4% over twenty other minutes, in which two runs measured a p99 overhead of 33 and 162 ms.
pub(crate) const STEAL_WARNING: f64 = 0.02;

pub(crate) fn rss_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| {
            l.strip_prefix(field)
                .map(|v| v.trim().trim_end_matches(" kB").trim().parse().unwrap_or(0))
        })
        .unwrap_or(0)
}

/// CPU seconds spent by each part of the pipeline.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Cpu {
    pub(crate) postgres: f64,
    pub(crate) redis: f64,
    pub(crate) workers: f64,
    pub(crate) children: f64,
    pub(crate) bench: f64,
}

impl Cpu {
    /// Cumulative CPU of the Postgres and Redis servers, the workers, the workers' reaped children
    /// (the CLI runs), and the bench: this process and the Postgres backends in `bench_backends`.
    pub(crate) fn sample(workers: &[u32], bench_backends: &[u32]) -> Cpu {
        let mut cpu = Cpu::default();
        for entry in std::fs::read_dir("/proc")
            .into_iter()
            .flatten()
            .filter_map(Result::ok)
        {
            let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
                continue;
            };
            let comm = std::fs::read_to_string(entry.path().join("comm")).unwrap_or_default();
            match comm.trim() {
                "postgres" if bench_backends.contains(&pid) => {
                    cpu.bench += process_times(pid).map(|t| t.0).unwrap_or(0.0)
                }
                "postgres" => cpu.postgres += process_times(pid).map(|t| t.0).unwrap_or(0.0),
                "redis-server" => cpu.redis += process_times(pid).map(|t| t.0).unwrap_or(0.0),
                _ => {}
            }
        }
        for &w in workers {
            if let Some((own, children)) = process_times(w) {
                cpu.workers += own;
                cpu.children += children;
            }
        }
        cpu.bench += own_cpu();
        cpu
    }

    pub(crate) fn since(&self, before: &Cpu) -> Cpu {
        Cpu {
            postgres: self.postgres - before.postgres,
            redis: self.redis - before.redis,
            workers: self.workers - before.workers,
            children: self.children - before.children,
            bench: self.bench - before.bench,
        }
    }

    pub(crate) fn total(&self) -> f64 {
        self.postgres + self.redis + self.workers + self.children + self.bench
    }
}

/// CPU seconds process `pid` has spent itself, and those of its reaped children; `None` once it is
/// gone.
pub(crate) fn process_times(pid: u32) -> Option<(f64, f64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command, in parentheses, may hold spaces; the fields after it do not.
    let (_, rest) = stat.rsplit_once(')')?;
    let f: Vec<f64> = rest
        .split_whitespace()
        .map(|x| x.parse().unwrap_or(0.0))
        .collect();
    // After the command: state(0) ... utime(11) stime(12) cutime(13) cstime(14), in USER_HZ, which
    // Linux fixes at 100 per second.
    let at = |i: usize| f.get(i).copied().unwrap_or(0.0) / 100.0;
    Some((at(11) + at(12), at(13) + at(14)))
}

/// CPU seconds of this process's reaped children: during the CLI limit, the CLI's processes and
/// their supervisors, as a worker's reaped children are in the pipeline.
pub(crate) fn reaped_cpu() -> f64 {
    process_times(std::process::id()).map_or(0.0, |t| t.1)
}

/// CPU seconds this process has spent itself: its runtime and, during the CLI limit, the lanes that
/// drive the CLI as a worker would.
pub(crate) fn own_cpu() -> f64 {
    process_times(std::process::id()).map_or(0.0, |t| t.0)
}

/// What the whole machine has done since it started: CPU seconds spent working, over every core and
/// process (user, nice, system, irq and softirq in `/proc/stat`; idle, I/O wait and time stolen by
/// the hypervisor are not work), context switches, and the seconds the hypervisor gave this
/// machine's cores to someone else while they had work (steal). The difference of two readings is
/// what a phase cost, whoever spent it.
#[derive(Clone, Copy)]
pub(crate) struct Machine {
    pub(crate) busy: f64,
    pub(crate) switches: f64,
    pub(crate) stolen: f64,
    pub(crate) at: Instant,
}

/// What the machine did during one phase of the bench, from a [`Machine`] reading to its end.
#[derive(Clone, Copy)]
pub(crate) struct Spent {
    /// CPU seconds of work per job.
    pub(crate) busy: f64,
    /// Context switches per job.
    pub(crate) switches: f64,
    /// The share of the cores' time the hypervisor took away. Every figure of a phase where this is
    /// more than a few percent measured a slower machine than the phases around it.
    pub(crate) stolen: f64,
}

impl Machine {
    pub(crate) fn read() -> Machine {
        let (busy, stolen, switches) =
            parse_stat(&std::fs::read_to_string("/proc/stat").unwrap_or_default());
        Machine {
            busy,
            switches,
            stolen,
            at: Instant::now(),
        }
    }

    /// What the machine has done per job since this reading, over `jobs`.
    pub(crate) fn per_job(&self, jobs: usize) -> Spent {
        let now = Machine::read();
        let core_seconds = now.at.duration_since(self.at).as_secs_f64() * cores() as f64;
        Spent {
            busy: (now.busy - self.busy) / jobs as f64,
            switches: (now.switches - self.switches) / jobs as f64,
            stolen: if core_seconds > 0.0 {
                (now.stolen - self.stolen) / core_seconds
            } else {
                0.0
            },
        }
    }
}

/// Busy seconds, stolen seconds and context switches from the text of `/proc/stat`. Missing
/// fields read as zero: an older kernel without the steal column simply reports none.
pub(crate) fn parse_stat(stat: &str) -> (f64, f64, f64) {
    let ticks: Vec<f64> = stat
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .skip(1)
        .map(|x| x.parse().unwrap_or(0.0))
        .collect();
    // In USER_HZ, which Linux fixes at 100 per second.
    let seconds =
        |fields: &[usize]| fields.iter().filter_map(|&i| ticks.get(i)).sum::<f64>() / 100.0;
    let switches = stat
        .lines()
        .find_map(|l| l.strip_prefix("ctxt "))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0.0);
    (seconds(&[0, 1, 2, 5, 6]), seconds(&[7]), switches)
}

pub(crate) fn cores() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

pub(crate) fn machine() -> String {
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let mem_gib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .next()
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|k| k.parse::<f64>().ok())
        })
        .map(|kib| kib / 1024.0 / 1024.0)
        .unwrap_or(0.0);
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines().find_map(|l| {
                l.strip_prefix("model name")
                    .map(|v| v.trim_start_matches([' ', '\t', ':']).to_string())
            })
        })
        .unwrap_or_else(|| "unknown CPU".into());
    format!("{cores} cores ({cpu}), {mem_gib:.0} GiB")
}

/// The line that warns of a phase the hypervisor took too much of, if any: `stolen` holds the
/// pipeline and the CLI limit's two phases first, then the ledger's and Redis's limits.
pub(crate) fn steal_warning(stolen: &[(&str, f64)]) -> Option<String> {
    let worst = |phases: &[(&str, f64)]| {
        phases
            .iter()
            .filter(|(_, share)| *share > STEAL_WARNING)
            .max_by(|a, b| a.1.total_cmp(&b.1))
            .map(|(phase, share)| (phase.to_string(), 100.0 * share))
    };
    // The fraction of the tightest limit rests on the pipeline and the CLI limit alone; the ledger's
    // and Redis's phases feed only the ceiling and the combined bound. Those phases are also short
    // (a second or less), where `/proc/stat`'s 10 ms ticks make the share coarse.
    let (main, side) = stolen.split_at(stolen.len().min(3));
    if let Some((phase, share)) = worst(main) {
        return Some(format!(
            "warning: the hypervisor took {share:.1}% of the cores' time during {phase}; this run \
             compared a slower machine with a faster one, so its fractions do not hold: run it again"
        ));
    }
    worst(side).map(|(phase, share)| {
        format!(
            "note: the hypervisor took {share:.1}% of the cores' time during {phase}; the ceiling \
             and the combined bound are less reliable, the fraction of the CLI limit does not \
             depend on it"
        )
    })
}
