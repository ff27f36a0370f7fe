//! What the run proves: read from the ledger and the emulator's run log at the end, printed, and
//! each invariant judged.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Utc};
use sqlx::Row;

use crate::fleet::Setting;
use crate::load::Enqueued;

/// One finding: its name, its figure, and whether it breaks a promise.
pub struct Finding {
    pub name: &'static str,
    pub figure: String,
    pub violated: bool,
}

/// Judges the run: every build completed once, no run recorded twice, no two runs of a project at
/// once, every chain continuous, the ledger in sync, no conversation lost to a fresh start.
pub async fn judge(
    setting: &Setting,
    enqueued: &[Enqueued],
    fault_ends: &[(String, DateTime<Utc>)],
) -> anyhow::Result<Vec<Finding>> {
    let mut db = <sqlx::PgConnection as sqlx::Connection>::connect(&setting.database_url).await?;
    let mut findings = Vec::new();

    let statuses: HashMap<String, String> =
        sqlx::query("SELECT build_id, status FROM baton.builds")
            .fetch_all(&mut db)
            .await?
            .into_iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect();
    let lost: Vec<String> = enqueued
        .iter()
        .filter(|e| statuses.get(&e.build_id).map(String::as_str) != Some("completed"))
        .map(|e| {
            format!(
                "{} ({} of {}: {})",
                e.build_id,
                e.kind,
                e.project,
                statuses.get(&e.build_id).map_or("missing", String::as_str)
            )
        })
        .collect();
    findings.push(Finding {
        name: "builds not completed",
        figure: format!("{} of {}{}", lost.len(), enqueued.len(), listed(&lost)),
        violated: !lost.is_empty(),
    });

    let twice: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM (SELECT 1 FROM baton.session_transitions WHERE build_id IS NOT NULL
         AND step IS NOT NULL GROUP BY build_id, step HAVING count(*) > 1) d",
    )
    .fetch_one(&mut db)
    .await?;
    findings.push(Finding {
        name: "runs recorded twice",
        figure: twice.to_string(),
        violated: twice > 0,
    });

    let runs = emulator_runs(setting);
    let overlaps = overlapping(&runs);
    findings.push(Finding {
        name: "overlapping CLI runs of one project",
        figure: format!("{}{}", overlaps.len(), listed(&overlaps)),
        violated: !overlaps.is_empty(),
    });

    let breaks = chain_breaks(&mut db).await?;
    findings.push(Finding {
        name: "chain breaks",
        figure: format!("{}{}", breaks.len(), listed(&breaks)),
        violated: !breaks.is_empty(),
    });

    let sync = setting.command("baton").arg("sync-check").output()?;
    findings.push(Finding {
        name: "sync-check",
        figure: if sync.status.success() {
            "every project in sync".into()
        } else {
            String::from_utf8_lossy(&sync.stdout).trim().to_string()
        },
        violated: !sync.status.success(),
    });

    let fresh: Vec<(String, i64)> = sqlx::query(
        "SELECT coalesce(fresh_reason, source), count(*) FROM baton.session_transitions
         WHERE source = 'resume_fallback'
            OR fresh_reason IN ('resume_fallback', 'transcript_incomplete', 'not_resumable')
         GROUP BY 1 ORDER BY 1",
    )
    .fetch_all(&mut db)
    .await?
    .into_iter()
    .map(|r| (r.get(0), r.get(1)))
    .collect();
    let lost_sessions: i64 = fresh.iter().map(|(_, n)| n).sum();
    findings.push(Finding {
        name: "conversations lost to a fresh start",
        figure: format!("{lost_sessions} {fresh:?}"),
        violated: lost_sessions > 0,
    });

    // Not a broken promise: a run a fault cut off, or whose record it prevented, is run again.
    // Reported as a figure: CLI runs that ended, less the runs the ledger recorded.
    let recorded: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM baton.session_transitions
         WHERE build_id IS NOT NULL AND new_session_id IS NOT NULL",
    )
    .fetch_one(&mut db)
    .await?;
    let ended = runs.iter().filter(|r| r.ended.is_some()).count() as i64;
    findings.push(Finding {
        name: "CLI runs not recorded (cut off by a fault and run again)",
        figure: format!("{} of {ended} that ended", (ended - recorded).max(0)),
        violated: false,
    });

    let finished: Vec<DateTime<Utc>> = sqlx::query_scalar(
        "SELECT finished_at FROM baton.builds WHERE status = 'completed' ORDER BY finished_at",
    )
    .fetch_all(&mut db)
    .await?;
    let mut recovery: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    for (fault, end) in fault_ends {
        if let Some(next) = finished.iter().find(|t| *t > end) {
            let secs = (*next - *end).num_milliseconds() as f64 / 1000.0;
            recovery.entry(fault.clone()).or_default().push(secs);
        }
    }
    let figure = recovery
        .iter()
        .map(|(fault, secs)| {
            let max = secs.iter().copied().fold(0.0, f64::max);
            format!("{fault} x{}: max {max:.1} s", secs.len())
        })
        .collect::<Vec<_>>()
        .join("; ");
    findings.push(Finding {
        name: "time to the next completed build after each fault",
        figure,
        violated: false,
    });
    Ok(findings)
}

/// A few of `items`, for a figure.
fn listed(items: &[String]) -> String {
    if items.is_empty() {
        String::new()
    } else {
        format!(
            ": {}",
            items.iter().take(5).cloned().collect::<Vec<_>>().join(", ")
        )
    }
}

/// One CLI run from the emulator's log.
struct Run {
    cwd: String,
    started: DateTime<Utc>,
    ended: Option<DateTime<Utc>>,
}

fn emulator_runs(setting: &Setting) -> Vec<Run> {
    let text = std::fs::read_to_string(setting.emulator_log()).unwrap_or_default();
    text.lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| {
            let time = |k: &str| v.get(k)?.as_str()?.parse::<DateTime<Utc>>().ok();
            Some(Run {
                cwd: v.get("cwd")?.as_str()?.to_string(),
                started: time("started_at")?,
                ended: time("ended_at"),
            })
        })
        .collect()
}

/// Runs in one project folder that were running at the same time.
fn overlapping(runs: &[Run]) -> Vec<String> {
    let mut by_project: HashMap<&str, Vec<&Run>> = HashMap::new();
    for r in runs.iter().filter(|r| r.ended.is_some()) {
        by_project.entry(&r.cwd).or_default().push(r);
    }
    let mut found = Vec::new();
    for (cwd, mut list) in by_project {
        list.sort_by_key(|r| r.started);
        for pair in list.windows(2) {
            if pair[1].started < pair[0].ended.expect("finished runs only") {
                found.push(format!("{cwd} at {}", pair[1].started));
            }
        }
    }
    found
}

/// Links whose resumed session is not the one the link before left, chain by chain.
async fn chain_breaks(db: &mut sqlx::PgConnection) -> anyhow::Result<Vec<String>> {
    let rows = sqlx::query(
        "SELECT project_id, thread_id, id, old_session_id::text, new_session_id::text, source,
                fresh_reason
         FROM baton.session_transitions ORDER BY project_id, thread_id, id",
    )
    .fetch_all(db)
    .await?;
    let mut breaks = Vec::new();
    let mut chain: Option<(String, String)> = None;
    let mut head: Option<String> = None;
    for r in rows {
        let key: (String, String) = (r.get(0), r.get(1));
        if chain.as_ref() != Some(&key) {
            chain = Some(key.clone());
            head = None;
        }
        let id: i64 = r.get(2);
        let old: Option<String> = r.get(3);
        let new: Option<String> = r.get(4);
        let source: String = r.get(5);
        let fresh: Option<String> = r.get(6);
        match (source.as_str(), &old) {
            ("reset" | "resume_fallback", _) => {
                head = None;
                continue;
            }
            ("fork" | "import", _) => {}
            (_, Some(old)) if head.as_deref() != Some(old.as_str()) => breaks.push(format!(
                "{}/{} #{id} resumed {old}, the chain was at {head:?}",
                key.0, key.1
            )),
            (_, None) if fresh.is_none() => breaks.push(format!(
                "{}/{} #{id} started fresh with no reason",
                key.0, key.1
            )),
            _ => {}
        }
        head = new;
    }
    Ok(breaks)
}
