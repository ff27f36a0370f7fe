//! The ledger's limit: a job's transactions alone, with or without the session files each run's
//! record stores; and what the pipeline stored.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use baton_core::{JobKind, Limits, NewJob, Step};
use baton_ledger::{Ledger, RunMetrics, RunRecord, TranscriptWrite};
use baton_transcript::{SessionFile, StoredFile};
use tokio::task::JoinSet;

use crate::Schedule;

/// A project's session as the limit grows it: its transcript so far and what the ledger holds.
#[derive(Default)]
struct Grown {
    transcript: Vec<u8>,
    stored: Vec<StoredFile>,
}

/// `bytes` of transcript lines, as a run appends them: JSON objects, each with ids that do not
/// repeat, so they compress as a real transcript's do rather than as one repeated line.
fn new_lines(bytes: usize, seed: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes + 128);
    let mut n = 0usize;
    while out.len() < bytes {
        let id = uuid::Uuid::new_v4();
        out.extend_from_slice(
            format!(
                "{{\"type\":\"assistant\",\"uuid\":\"{id}\",\"seq\":{seed}.{n},\"message\":{{\"role\":\"assistant\",\"content\":\"Done: wrote notes/turn-{n}.md.\"}}}}\n"
            )
            .as_bytes(),
        );
        n += 1;
    }
    out
}

/// Jobs/s of the ledger alone: `jobs` jobs' transactions over `projects` projects at `lanes` at
/// once; and record_run tx/s. With `transcript_bytes`, each run's record also stores that many new
/// bytes of its session's transcript, as a worker's does.
pub async fn ledger_limit(
    ledger: &Ledger,
    lanes: usize,
    jobs: usize,
    projects: usize,
    transcript_bytes: Option<usize>,
    label: &str,
) -> anyhow::Result<(f64, f64)> {
    let schedule = Schedule::new(jobs, projects);
    let started = Instant::now();
    let record_time = Arc::new(std::sync::Mutex::new(Duration::ZERO));
    let grown = Arc::new(std::sync::Mutex::new(HashMap::<usize, Grown>::new()));
    let mut set = JoinSet::new();
    for _ in 0..lanes {
        let ledger = ledger.clone();
        let record_time = record_time.clone();
        let schedule = schedule.clone();
        let grown = grown.clone();
        let label = label.to_string();
        set.spawn(async move {
            while let Some((project, round)) = schedule.next().await {
                let job = NewJob {
                    kind: Some(if round == 0 {
                        JobKind::Create
                    } else {
                        JobKind::Update
                    }),
                    project_id: format!("ledger-{label}-{project}"),
                    version_id: format!("ledger-{label}-{project}-v{round}"),
                    user_id: "bench".into(),
                    prompt: "x".into(),
                    ..NewJob::default()
                }
                .into_job(&Limits::default())?;
                let claim = ledger.claim_build(&job, None).await?;
                let mut old: Option<String> = claim.project.last_session.clone().map(String::from);
                // As a worker does: the last run's record also completes the build.
                let plan = Step::plan(job.kind);
                for (i, step) in plan.iter().enumerate() {
                    let new = old
                        .clone()
                        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
                    let write = transcript_bytes.map(|bytes| {
                        let mut all = grown.lock().expect("lock");
                        let g = all.entry(project).or_default();
                        g.transcript.extend(new_lines(bytes, round * 10 + i));
                        let files = [SessionFile {
                            path: format!("{new}.jsonl"),
                            bytes: g.transcript.clone(),
                        }];
                        TranscriptWrite {
                            changes: baton_transcript::changes(&files, &g.stored),
                            incomplete: None,
                        }
                    });
                    let t = Instant::now();
                    ledger
                        .record_run(&RunRecord {
                            job: &job,
                            fence: claim.fence,
                            step: step.clone(),
                            source: None,
                            old_session_id: old.as_deref(),
                            new_session_id: &new,
                            metrics: RunMetrics::default(),
                            fresh_reason: None,
                            note: None,
                            completes: i + 1 == plan.len(),
                            transcript: write.as_ref(),
                            result: None,
                        })
                        .await?;
                    *record_time.lock().expect("lock") += t.elapsed();
                    if let Some(write) = &write {
                        let mut all = grown.lock().expect("lock");
                        let g = all.entry(project).or_default();
                        g.stored = baton_transcript::stored_after(&g.stored, &write.changes);
                    }
                    old = Some(new);
                }
                schedule.done(project);
            }
            anyhow::Ok(())
        });
    }
    while let Some(r) = set.join_next().await {
        r??;
    }
    let jobs_per_s = jobs as f64 / started.elapsed().as_secs_f64();
    let record_busy = record_time.lock().expect("lock").as_secs_f64() / lanes as f64;
    Ok((jobs_per_s, jobs as f64 * 4.0 / record_busy))
}

/// What the pipeline's runs left in the transcript store: the sessions' bytes, what their pieces
/// take compressed, and how many pieces.
pub async fn stored(ledger: &Ledger) -> anyhow::Result<(i64, i64, i64)> {
    Ok(sqlx::query_as(
        "SELECT (SELECT coalesce(sum(length), 0) FROM session_transcript_files)::bigint,
                coalesce(sum(octet_length(data)), 0)::bigint, count(*)
         FROM session_transcript_pieces",
    )
    .fetch_one(ledger.pool())
    .await?)
}
