//! Ledger tests against a real Postgres: each test gets a fresh database with the migrations applied.

use super::*;
use baton_core::policy::FreshReason;
use baton_core::{JobKind, Limits, NewJob};
use sqlx::PgPool;

pub(crate) fn job(project: &str, version: &str, user: &str, kind: JobKind) -> Job {
    NewJob {
        kind: Some(kind),
        project_id: project.into(),
        version_id: version.into(),
        user_id: user.into(),
        prompt: "build it".into(),
        ..NewJob::default()
    }
    .into_job(&Limits::default())
    .unwrap()
}

pub(crate) fn run<'a>(
    job: &'a Job,
    fence: baton_core::Fence,
    step: Step,
    old: Option<&'a str>,
    new: &'a str,
) -> RunRecord<'a> {
    RunRecord {
        job,
        fence,
        step,
        source: None,
        old_session_id: old,
        new_session_id: new,
        metrics: RunMetrics {
            input_tokens: 10,
            output_tokens: 5,
            num_turns: 1,
            ..RunMetrics::default()
        },
        fresh_reason: if old.is_none() {
            Some(FreshReason::Create)
        } else {
            None
        },
        note: None,
        completes: false,
        transcript: None,
        result: None,
    }
}

/// A project owned by `u1` whose create job, claimed once, recorded its build run in `session`.
async fn created(ledger: &Ledger, project: &str, version: &str, session: &str) -> (Job, Claim) {
    let j = job(project, version, "u1", JobKind::Create);
    let claim = ledger.claim_build(&j, None).await.unwrap();
    ledger
        .record_run(&run(&j, claim.fence, Step::Build, None, session))
        .await
        .unwrap();
    (j, claim)
}

/// Records `step` of the job `created` claimed as a run that resumed its session `s1` and kept it.
async fn resume_s1(ledger: &Ledger, j: &Job, claim: &Claim, step: Step) -> Recorded {
    ledger
        .record_run(&run(j, claim.fence, step, Some("s1"), "s1"))
        .await
        .unwrap()
}

async fn count(pool: &PgPool, table: &str) -> i64 {
    // Table names come from the tests themselves, never from input.
    sqlx::query_scalar::<_, i64>(sqlx::AssertSqlSafe(format!("SELECT count(*) FROM {table}")))
        .fetch_one(pool)
        .await
        .unwrap()
}

#[sqlx::test(migrator = "crate::MIGRATOR")]
async fn a_recorded_run_updates_every_table_in_one_go(pool: PgPool) {
    let ledger = Ledger::from_pool(pool.clone());
    let j = job("p1", "v1", "u1", JobKind::Create);
    let claim = ledger.claim_build(&j, Some("1-0")).await.unwrap();
    assert_eq!((claim.fence, claim.attempt), (Fence(1), 1));
    assert_eq!(claim.project.last_session, None);

    let written = ledger
        .record_run(&run(&j, claim.fence, Step::Build, None, "s1"))
        .await
        .unwrap();
    assert_eq!(written, Recorded::Written);
    assert_eq!(
        ledger.project_session("p1").await.unwrap().as_deref(),
        Some("s1")
    );
    let version = sqlx::query!("SELECT ai_session_id, ai_session_created_at, ai_session_last_used_at FROM project_versions WHERE version_id = 'v1'")
        .fetch_one(&pool).await.unwrap();
    assert_eq!(version.ai_session_id.as_deref(), Some("s1"));
    assert!(version.ai_session_created_at.is_some() && version.ai_session_last_used_at.is_some());
    let stamped = sqlx::query_scalar!(
        "SELECT last_ai_session_updated_at FROM projects WHERE project_id = 'p1'"
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert!(stamped.is_some(), "the trigger stamps the session time");
    assert_eq!(count(&pool, "project_ai_session_metrics").await, 1);
    let chain = ledger.chain("p1").await.unwrap();
    assert_eq!(chain.len(), 1);
    assert_eq!(
        (chain[0].source.as_str(), chain[0].new_session_id.as_deref()),
        ("build", Some("s1"))
    );
    assert_eq!(chain[0].fresh_reason.as_deref(), Some("create"));
}

#[sqlx::test(migrator = "crate::MIGRATOR")]
async fn a_replayed_run_records_nothing_twice(pool: PgPool) {
    let ledger = Ledger::from_pool(pool.clone());
    let (j, _) = created(&ledger, "p1", "v1", "s1").await;
    // A second claim (the first worker died) replays the same run.
    let again = ledger.claim_build(&j, None).await.unwrap();
    assert_eq!(again.recorded.len(), 1);
    let replay = ledger
        .record_run(&run(&j, again.fence, Step::Build, None, "s1-other"))
        .await
        .unwrap();
    assert_eq!(replay, Recorded::AlreadyRecorded);
    assert_eq!(count(&pool, "session_transitions").await, 1);
    assert_eq!(count(&pool, "project_ai_session_metrics").await, 1);
    assert_eq!(
        ledger.project_session("p1").await.unwrap().as_deref(),
        Some("s1")
    );
}

#[sqlx::test(migrator = "crate::MIGRATOR")]
async fn a_new_claim_lists_the_recorded_runs_in_order(pool: PgPool) {
    let ledger = Ledger::from_pool(pool);
    let (j, claim) = created(&ledger, "p1", "v1", "s1").await;
    ledger
        .record_run(&run(
            &j,
            claim.fence,
            Step::Recommendations,
            Some("s1"),
            "s2",
        ))
        .await
        .unwrap();
    let again = ledger.claim_build(&j, None).await.unwrap();
    let recorded: Vec<_> = again
        .recorded
        .iter()
        .map(|r| {
            (
                r.step.name(),
                r.old_session_id.as_deref(),
                r.new_session_id.as_str(),
            )
        })
        .collect();
    assert_eq!(
        recorded,
        [
            (Step::Build.name(), None, "s1"),
            (Step::Recommendations.name(), Some("s1"), "s2")
        ]
    );
    assert_eq!(again.project.last_session.as_deref(), Some("s2"));
}

#[sqlx::test(migrator = "crate::MIGRATOR")]
async fn a_stale_claim_cannot_write(pool: PgPool) {
    let ledger = Ledger::from_pool(pool.clone());
    let j = job("p1", "v1", "u1", JobKind::Create);
    let stale = ledger.claim_build(&j, None).await.unwrap();
    let fresh = ledger.claim_build(&j, None).await.unwrap();
    assert_eq!(fresh.fence, Fence(stale.fence.get() + 1));
    let err = ledger
        .record_run(&run(&j, stale.fence, Step::Build, None, "stale"))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            LedgerError::Fenced {
                yours: Fence(1),
                current: Fence(2),
                ..
            }
        ),
        "{err}"
    );
    let err = ledger
        .finish_build(&j.build_id, stale.fence, BuildStatus::Completed, None)
        .await
        .unwrap_err();
    assert!(matches!(err, LedgerError::Fenced { .. }));
    let err = ledger
        .requeue_build(&j.build_id, stale.fence, "shutdown")
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            LedgerError::Fenced {
                current: Fence(2),
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(count(&pool, "session_transitions").await, 0);
    assert_eq!(ledger.project_session("p1").await.unwrap(), None);
    assert_eq!(
        ledger.build_state(&j.build_id).await.unwrap().status,
        BuildStatus::Running
    );
}

#[sqlx::test(migrator = "crate::MIGRATOR")]
async fn writes_for_a_build_the_ledger_never_claimed_say_so(pool: PgPool) {
    let ledger = Ledger::from_pool(pool.clone());
    let (_, claim) = created(&ledger, "p1", "v1", "s1").await;
    let unknown = job("p1", "v-unknown", "u1", JobKind::Update);
    let err = ledger
        .record_run(&run(&unknown, claim.fence, Step::Build, Some("s1"), "s2"))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, LedgerError::UnknownBuild(b) if unknown.build_id == *b),
        "{err}"
    );
    let elsewhere = job("p-unknown", "v2", "u1", JobKind::Create);
    let err = ledger
        .record_run(&run(&elsewhere, Fence(1), Step::Build, None, "s9"))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, LedgerError::UnknownProject(p) if p == "p-unknown"),
        "{err}"
    );
    let err = ledger
        .finish_build(&unknown.build_id, Fence(1), BuildStatus::Completed, None)
        .await
        .unwrap_err();
    assert!(matches!(err, LedgerError::UnknownBuild(_)), "{err}");
    let err = ledger
        .requeue_build(&unknown.build_id, Fence(1), "shutdown")
        .await
        .unwrap_err();
    assert!(matches!(err, LedgerError::UnknownBuild(_)), "{err}");
    assert_eq!(
        ledger.project_session("p1").await.unwrap().as_deref(),
        Some("s1")
    );
}

#[sqlx::test(migrator = "crate::MIGRATOR")]
async fn a_kept_session_id_is_recorded_for_every_operation(pool: PgPool) {
    let ledger = Ledger::from_pool(pool.clone());
    let (j, claim) = created(&ledger, "p1", "v1", "s1").await;
    resume_s1(&ledger, &j, &claim, Step::Recommendations).await;
    let chain = ledger.chain("p1").await.unwrap();
    assert_eq!(chain.len(), 2);
    assert_eq!(chain[1].old_session_id.as_deref(), Some("s1"));
    assert_eq!(chain[1].source, Source::Metadata);
}

#[sqlx::test(migrator = "crate::MIGRATOR")]
async fn another_users_job_cannot_claim_the_project(pool: PgPool) {
    let ledger = Ledger::from_pool(pool.clone());
    ledger
        .claim_build(&job("p1", "v1", "alice", JobKind::Create), None)
        .await
        .unwrap();
    let err = ledger
        .claim_build(&job("p1", "v2", "mallory", JobKind::Update), None)
        .await
        .unwrap_err();
    assert!(matches!(err, LedgerError::NotOwner { .. }), "{err}");
    assert!(err.is_terminal_for_job());
    // Refused claims leave nothing behind, and the refusal names nobody else's project or user.
    assert!(!err.to_string().contains("alice"), "{err}");
    assert_eq!(count(&pool, "projects").await, 1);
    assert_eq!(count(&pool, "builds").await, 1);
    // A version belongs to its project: another project may have a version of the same name.
    ledger
        .claim_build(&job("p2", "v1", "bob", JobKind::Create), None)
        .await
        .unwrap();
    assert_eq!(count(&pool, "project_versions").await, 2);
}

#[sqlx::test(migrator = "crate::MIGRATOR")]
async fn concurrent_first_claims_of_a_project_create_it_once(pool: PgPool) {
    let ledger = Ledger::from_pool(pool.clone());
    let mut tasks = Vec::new();
    for i in 0..8 {
        let ledger = ledger.clone();
        tasks.push(tokio::spawn(async move {
            let j = job("p1", &format!("v{i}"), "u1", JobKind::Create);
            ledger.claim_build(&j, None).await
        }));
    }
    for t in tasks {
        let claim = t.await.unwrap().unwrap();
        assert_eq!(claim.fence, Fence(1));
    }
    assert_eq!(count(&pool, "projects").await, 1);
    assert_eq!(count(&pool, "builds").await, 8);
}

#[sqlx::test(migrator = "crate::MIGRATOR")]
async fn a_claim_locks_a_known_project_without_rewriting_its_row(pool: PgPool) {
    let ledger = Ledger::from_pool(pool.clone());
    created(&ledger, "p1", "v1", "s1").await;
    let row_version = || async {
        sqlx::query_scalar::<_, String>(
            "SELECT xmin::text || ctid::text FROM projects WHERE project_id = 'p1'",
        )
        .fetch_one(&pool)
        .await
        .unwrap()
    };
    let before = row_version().await;

    // The claim runs in a transaction left open, so its lock can be seen from outside.
    let j = job("p1", "v2", "u1", JobKind::Update);
    let mut tx = pool.begin().await.unwrap();
    let fence: i64 = sqlx::query_scalar(
        "SELECT fence FROM baton_claim_build(p_build_id => $1, p_project_id => $2, p_version_id => $3,
             p_user_id => $4, p_kind => $5, p_stream => NULL, p_stream_id => NULL,
             p_payload => '{}'::jsonb, p_enqueued_at => now(), p_previous_session_id => NULL)",
    )
    .bind(j.build_id.as_str())
    .bind(j.project_id.as_str())
    .bind(&j.version_id)
    .bind(&j.user_id)
    .bind(j.kind.as_str())
    .fetch_one(&mut *tx)
    .await
    .unwrap();
    assert_eq!(fence, 1);
    let mut other = pool.acquire().await.unwrap();
    sqlx::query("SET lock_timeout = '200ms'")
        .execute(&mut *other)
        .await
        .unwrap();
    let blocked =
        sqlx::query("UPDATE projects SET last_ai_session_id = 'x' WHERE project_id = 'p1'")
            .execute(&mut *other)
            .await
            .unwrap_err();
    assert_eq!(
        blocked
            .as_database_error()
            .and_then(|e| e.code())
            .as_deref(),
        Some("55P03"),
        "a record of the project waits for the claim: {blocked}"
    );
    tx.commit().await.unwrap();
    assert_eq!(
        row_version().await,
        before,
        "the claim wrote no new row version"
    );
}

#[sqlx::test(migrator = "crate::MIGRATOR")]
async fn a_finished_build_is_not_run_again(pool: PgPool) {
    let ledger = Ledger::from_pool(pool);
    let j = job("p1", "v1", "u1", JobKind::Create);
    let claim = ledger.claim_build(&j, None).await.unwrap();
    ledger
        .finish_build(&j.build_id, claim.fence, BuildStatus::Completed, None)
        .await
        .unwrap();
    let again = ledger.claim_build(&j, None).await.unwrap();
    assert_eq!(again.finished, Some(BuildStatus::Completed));
    assert_eq!(
        again.fence, claim.fence,
        "a finished build's token does not move"
    );
}

#[sqlx::test(migrator = "crate::MIGRATOR")]
async fn thirty_two_concurrent_writers_leave_one_linear_chain(pool: PgPool) {
    let ledger = Ledger::from_pool(pool.clone());
    created(&ledger, "p1", "v0", "s0").await;
    let mut tasks = Vec::new();
    for i in 1..=32 {
        let ledger = ledger.clone();
        tasks.push(tokio::spawn(async move {
            let j = job("p1", &format!("v{i}"), "u1", JobKind::Update);
            let claim = ledger.claim_build(&j, None).await.unwrap();
            let mut resumed = claim.project.last_session.clone().unwrap();
            let mut stale = 0;
            loop {
                // Each writer "resumes" the newest it saw; the ledger refuses it if another moved on.
                let new = format!("s{i}-{stale}");
                match ledger
                    .record_run(&run(&j, claim.fence, Step::Build, Some(&resumed), &new))
                    .await
                {
                    Ok(Recorded::Written) => return,
                    Err(LedgerError::StaleSession { actual, .. }) => {
                        stale += 1;
                        resumed = actual.unwrap().into();
                    }
                    other => panic!("writer {i}: {other:?}"),
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let chain = ledger.chain("p1").await.unwrap();
    assert_eq!(chain.len(), 33, "no lost update");
    for pair in chain.windows(2) {
        assert_eq!(
            pair[1].old_session_id, pair[0].new_session_id,
            "the chain is linear"
        );
    }
    assert_eq!(
        ledger.project_session("p1").await.unwrap(),
        chain.last().unwrap().new_session_id
    );
    let sync = ledger.sync_check().await.unwrap();
    assert_eq!((sync.synced, sync.total), (1, 1), "{sync:?}");
}

#[sqlx::test(migrator = "crate::MIGRATOR")]
async fn a_run_resuming_an_older_session_is_refused(pool: PgPool) {
    let ledger = Ledger::from_pool(pool.clone());
    let (j, claim) = created(&ledger, "p1", "v1", "s1").await;
    ledger
        .record_run(&run(
            &j,
            claim.fence,
            Step::Recommendations,
            Some("s1"),
            "s2",
        ))
        .await
        .unwrap();
    let err = ledger
        .record_run(&run(&j, claim.fence, Step::Documentation, Some("s1"), "s3"))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, LedgerError::StaleSession { actual: Some(a), .. } if a == "s2"),
        "{err}"
    );
    assert_eq!(count(&pool, "session_transitions").await, 2);
}

#[sqlx::test(migrator = "crate::MIGRATOR")]
async fn a_resume_fallback_marks_the_session_and_clears_the_project(pool: PgPool) {
    let ledger = Ledger::from_pool(pool.clone());
    created(&ledger, "p1", "v1", "s1").await;
    let update = job("p1", "v2", "u1", JobKind::Update);
    let claim = ledger.claim_build(&update, None).await.unwrap();
    assert!(claim.project.last_resumable);
    ledger
        .record_resume_fallback(&update, claim.fence, &Step::Build, "s1")
        .await
        .unwrap();
    ledger
        .record_resume_fallback(&update, claim.fence, &Step::Build, "s1")
        .await
        .unwrap();
    let row = sqlx::query!("SELECT is_resumable, resume_failure_count FROM project_ai_session_metrics WHERE session_id = 's1'")
        .fetch_one(&pool).await.unwrap();
    assert!(!row.is_resumable);
    assert_eq!(
        ledger.project_session("p1").await.unwrap(),
        None,
        "the project forgets the lost session"
    );
    let chain = ledger.chain("p1").await.unwrap();
    assert_eq!(chain.len(), 2, "the fallback is recorded once");
    assert_eq!(
        (chain[1].source.as_str(), chain[1].new_session_id.as_deref()),
        ("resume_fallback", None)
    );
    // The fresh run that follows records normally and the ledger stays in sync.
    let mut fresh = run(&update, claim.fence, Step::Build, None, "s2");
    fresh.fresh_reason = Some(FreshReason::ResumeFallback);
    ledger.record_run(&fresh).await.unwrap();
    assert!(ledger.sync_check().await.unwrap().projects[0].synced);
}

#[sqlx::test(migrator = "crate::MIGRATOR")]
async fn a_reset_makes_the_next_job_start_fresh_and_stays_in_sync(pool: PgPool) {
    let ledger = Ledger::from_pool(pool.clone());
    let (running, claim) = created(&ledger, "p1", "v1", "s1").await;
    // A job of the project runs: the reset waits for it, and the job records its next run.
    let asked = ledger.reset_session("p1").await.unwrap();
    assert_eq!(
        (asked.session.as_deref(), asked.deferred),
        (Some("s1"), true)
    );
    resume_s1(&ledger, &running, &claim, Step::Recommendations).await;
    assert_eq!(
        ledger.project_session("p1").await.unwrap().as_deref(),
        Some("s1")
    );
    ledger
        .finish_build(&running.build_id, claim.fence, BuildStatus::Completed, None)
        .await
        .unwrap();
    // The next claim performs it.
    let next_job = job("p1", "v2", "u1", JobKind::Update);
    let next = ledger.claim_build(&next_job, None).await.unwrap();
    assert_eq!(
        (next.project.last_session.as_deref(), next.project.reset),
        (None, true)
    );
    assert!(ledger.sync_check().await.unwrap().projects[0].synced);
    ledger
        .record_run(&run(&next_job, next.fence, Step::Build, None, "s2"))
        .await
        .unwrap();
    ledger
        .finish_build(&next_job.build_id, next.fence, BuildStatus::Completed, None)
        .await
        .unwrap();
    // With nothing running, a reset is immediate.
    let now = ledger.reset_session("p1").await.unwrap();
    assert_eq!((now.session.as_deref(), now.deferred), (Some("s2"), false));
    assert_eq!(ledger.project_session("p1").await.unwrap(), None);
    assert!(ledger.sync_check().await.unwrap().projects[0].synced);
    assert!(matches!(
        ledger.reset_session("nope").await,
        Err(LedgerError::UnknownProject(_))
    ));
}

#[sqlx::test(migrator = "crate::MIGRATOR")]
async fn the_claim_tells_the_policy_what_it_needs(pool: PgPool) {
    let ledger = Ledger::from_pool(pool.clone());
    let (a, claim) = created(&ledger, "pa", "va1", "sa1").await;
    ledger
        .record_run(&run(
            &a,
            claim.fence,
            Step::Recommendations,
            Some("sa1"),
            "sa2",
        ))
        .await
        .unwrap();
    created(&ledger, "pb", "vb1", "sb1").await;

    let mut own_old = job("pa", "va2", "u1", JobKind::Update);
    own_old.previous_session_id = Some("sa1".into());
    let seen = ledger.claim_build(&own_old, None).await.unwrap().project;
    assert_eq!(seen.previous_in_chain, Some(true));
    assert_eq!(seen.last_session.as_deref(), Some("sa2"));
    assert_eq!(seen.ops_since_fresh, 2);
    assert!(seen.fresh_start_at.is_some() && seen.last_resumable && !seen.reset);

    assert_eq!(
        in_chain(&ledger, "pa", "va3", Some("sb1")).await,
        Some(false)
    );
    assert_eq!(in_chain(&ledger, "pa", "va4", None).await, None);
}

/// What a claim of a new update job for `version` of `project`, carrying `previous`, says of
/// whether that session is in the project's chain.
async fn in_chain(
    ledger: &Ledger,
    project: &str,
    version: &str,
    previous: Option<&str>,
) -> Option<bool> {
    let mut j = job(project, version, "u1", JobKind::Update);
    j.previous_session_id = previous.map(SessionId::from);
    ledger
        .claim_build(&j, None)
        .await
        .unwrap()
        .project
        .previous_in_chain
}

#[sqlx::test(migrator = "crate::MIGRATOR")]
async fn the_claim_counts_from_the_last_fresh_start_and_knows_a_session_kept_only_as_an_old_link(
    pool: PgPool,
) {
    let ledger = Ledger::from_pool(pool.clone());
    let (first, claim) = created(&ledger, "p1", "v1", "s1").await;
    resume_s1(&ledger, &first, &claim, Step::Recommendations).await;
    let first_fresh = ledger.claim_build(&first, None).await.unwrap().project;
    assert_eq!(first_fresh.ops_since_fresh, 2);

    // A second fresh start, then a resume that got a new id (an older CLI).
    let second = job("p1", "v2", "u1", JobKind::Update);
    let claim = ledger.claim_build(&second, None).await.unwrap();
    ledger
        .record_run(&run(&second, claim.fence, Step::Build, None, "s2"))
        .await
        .unwrap();
    ledger
        .record_run(&run(
            &second,
            claim.fence,
            Step::Recommendations,
            Some("s2"),
            "s3",
        ))
        .await
        .unwrap();
    let mut third = job("p1", "v3", "u1", JobKind::Update);
    third.previous_session_id = Some("s1".into());
    let seen = ledger.claim_build(&third, None).await.unwrap().project;
    assert_eq!(
        seen.ops_since_fresh, 2,
        "counted from the second fresh start"
    );
    assert!(seen.fresh_start_at > first_fresh.fresh_start_at);
    assert_eq!(seen.last_session.as_deref(), Some("s3"));
    assert_eq!(seen.previous_in_chain, Some(true));

    // Pruning keeps only the newest link, s2 -> s3: s2 survives as an old id, and s1, whose links
    // went, is still known as the project's own; another project's session is not.
    created(&ledger, "p2", "w1", "t1").await;
    ledger
        .prune(chrono::Utc::now() + chrono::Duration::seconds(1), false)
        .await
        .unwrap();
    assert_eq!(ledger.chain("p1").await.unwrap().len(), 1);
    assert_eq!(in_chain(&ledger, "p1", "v4", Some("s2")).await, Some(true));
    assert_eq!(in_chain(&ledger, "p1", "v5", Some("s1")).await, Some(true));
    assert_eq!(in_chain(&ledger, "p1", "v6", Some("t1")).await, Some(false));
}

#[sqlx::test(migrator = "crate::MIGRATOR")]
async fn prune_keeps_each_projects_newest_link(pool: PgPool) {
    let ledger = Ledger::from_pool(pool.clone());
    let (j, claim) = created(&ledger, "p1", "v1", "s1").await;
    ledger
        .record_run(&run(
            &j,
            claim.fence,
            Step::Recommendations,
            Some("s1"),
            "s2",
        ))
        .await
        .unwrap();
    ledger
        .record_run(&run(&j, claim.fence, Step::Documentation, Some("s2"), "s3"))
        .await
        .unwrap();
    let report = ledger
        .prune(chrono::Utc::now() + chrono::Duration::seconds(1), false)
        .await
        .unwrap();
    assert_eq!((report.transitions, report.metrics), (2, 2));
    let chain = ledger.chain("p1").await.unwrap();
    assert_eq!(chain.len(), 1);
    assert_eq!(chain[0].new_session_id.as_deref(), Some("s3"));
    assert!(ledger.sync_check().await.unwrap().projects[0].synced);
    let nothing = ledger
        .prune(chrono::Utc::now() - chrono::Duration::days(30), false)
        .await
        .unwrap();
    assert_eq!((nothing.transitions, nothing.metrics), (0, 0));
}

#[sqlx::test(migrator = "crate::MIGRATOR")]
async fn stats_count_sessions_resumes_and_usage(pool: PgPool) {
    let ledger = Ledger::from_pool(pool.clone());
    let (j, claim) = created(&ledger, "p1", "v1", "s1").await;
    resume_s1(&ledger, &j, &claim, Step::Recommendations).await;
    ledger
        .claim_build(&job("p2", "v2", "u1", JobKind::Create), None)
        .await
        .unwrap();
    let stats = ledger.stats().await.unwrap();
    assert_eq!(
        (
            stats.projects,
            stats.projects_with_sessions,
            stats.active_last_hour
        ),
        (2, 1, 1)
    );
    assert_eq!(stats.adoption_rate, 0.5);
    assert_eq!((stats.resumed_runs, stats.resume_failures), (1, 0));
    assert_eq!(stats.fresh_starts.get("create"), Some(&1));
    assert_eq!(stats.usage_by_source["build"].input_tokens, 10);
    assert_eq!(stats.usage_by_source["metadata"].runs, 1);
}

#[sqlx::test(migrator = "crate::MIGRATOR")]
async fn sync_check_finds_a_drifted_project(pool: PgPool) {
    let ledger = Ledger::from_pool(pool.clone());
    created(&ledger, "p1", "v1", "s1").await;
    // Something outside the ledger writes the project's id: the seed design's failure.
    sqlx::query!("UPDATE projects SET last_ai_session_id = 'elsewhere' WHERE project_id = 'p1'")
        .execute(&pool)
        .await
        .unwrap();
    let report = ledger.sync_check().await.unwrap();
    assert_eq!((report.synced, report.total), (0, 1));
    assert_eq!(report.rate, 0.0);
}

#[test]
fn database_names_are_swapped_in_urls() {
    assert_eq!(
        url_with_database("postgres://root@127.0.0.1:5432/baton", "x"),
        "postgres://root@127.0.0.1:5432/x"
    );
    assert_eq!(
        url_with_database("postgres://127.0.0.1", "x"),
        "postgres://127.0.0.1/x"
    );
    assert_eq!(
        url_with_database("postgres://u:p@h/db?sslmode=disable", "x"),
        "postgres://u:p@h/x?sslmode=disable"
    );
    assert_eq!(
        url_with_database("postgresql:///baton?host=/run/postgresql", "x"),
        "postgresql:///x?host=/run/postgresql"
    );
}

#[sqlx::test(migrator = "crate::MIGRATOR")]
async fn the_last_runs_record_completes_the_build_and_a_refused_one_writes_nothing(pool: PgPool) {
    let ledger = Ledger::from_pool(pool.clone());
    let (j, claim) = created(&ledger, "p1", "v1", "s1").await;

    // Refused after the project's check passed (the fence is wrong): the project's session written
    // before the refusal is undone, and the build keeps running.
    let mut fenced = run(
        &j,
        Fence(claim.fence.get() + 7),
        Step::Recommendations,
        Some("s1"),
        "s2",
    );
    fenced.completes = true;
    let err = ledger.record_run(&fenced).await.unwrap_err();
    assert!(
        matches!(
            err,
            LedgerError::Fenced {
                current: Fence(1),
                ..
            }
        ),
        "{err}"
    );
    // Refused by the project's check itself: it resumed a session the project moved on from.
    let mut stale = run(&j, claim.fence, Step::Recommendations, Some("s0"), "s2");
    stale.completes = true;
    let err = ledger.record_run(&stale).await.unwrap_err();
    assert!(
        matches!(&err, LedgerError::StaleSession { actual: Some(a), .. } if a == "s1"),
        "{err}"
    );
    let state = ledger.build_state(&j.build_id).await.unwrap();
    assert_eq!(
        (state.status.as_str(), state.finished_at),
        ("running", None)
    );
    assert_eq!(
        ledger.project_session("p1").await.unwrap().as_deref(),
        Some("s1")
    );
    assert_eq!(count(&pool, "session_transitions").await, 1);
    assert_eq!(count(&pool, "project_ai_session_metrics").await, 1);

    let mut last = run(&j, claim.fence, Step::Recommendations, Some("s1"), "s2");
    last.completes = true;
    assert_eq!(ledger.record_run(&last).await.unwrap(), Recorded::Written);
    let state = ledger.build_state(&j.build_id).await.unwrap();
    assert_eq!(state.status, BuildStatus::Completed);
    assert!(state.finished_at.is_some());
    assert_eq!(state.step, Some(Step::Recommendations));
    assert_eq!(
        ledger.project_session("p1").await.unwrap().as_deref(),
        Some("s2")
    );
    // Replayed (its commit's answer was lost): nothing is written twice, the build stays completed.
    assert_eq!(
        ledger.record_run(&last).await.unwrap(),
        Recorded::AlreadyRecorded
    );
    assert_eq!(count(&pool, "session_transitions").await, 2);
    assert_eq!(
        ledger.build_state(&j.build_id).await.unwrap().status,
        BuildStatus::Completed
    );
}

#[sqlx::test(migrator = "crate::MIGRATOR")]
async fn stale_builds_are_the_unfinished_ones_unchanged_since_the_cutoff(pool: PgPool) {
    let ledger = Ledger::from_pool(pool.clone());
    let queued = job("p1", "v1", "u1", JobKind::Create);
    ledger.record_queued(&queued, None).await.unwrap();
    let (running, _) = created(&ledger, "p2", "v2", "s2").await;
    let (completed, claim) = created(&ledger, "p3", "v3", "s3").await;
    ledger
        .finish_build(
            &completed.build_id,
            claim.fence,
            BuildStatus::Completed,
            None,
        )
        .await
        .unwrap();
    let failed = job("p4", "v4", "u1", JobKind::Create);
    ledger.fail_unclaimed(&failed, "refused").await.unwrap();

    let later = chrono::Utc::now() + chrono::Duration::seconds(1);
    let stale = ledger.stale_builds(later).await.unwrap();
    let ids: Vec<&str> = stale.iter().map(|b| b.build_id.as_str()).collect();
    assert_eq!(ids, [queued.build_id.as_str(), running.build_id.as_str()]);
    assert_eq!(stale[0].status, "queued");
    assert_eq!(stale[1].status, "running");
    let payload = stale[0].payload.as_ref().expect("the job as enqueued");
    let back = Job::from_json(payload.to_string().as_bytes(), &Limits::default()).unwrap();
    assert_eq!(back, queued);

    // A build that changed after the cutoff is not stale.
    let earlier = chrono::Utc::now() - chrono::Duration::minutes(5);
    assert!(ledger.stale_builds(earlier).await.unwrap().is_empty());
}

mod hot_path;
mod threads;
