//! Ledger tests against a real Postgres: each test gets a fresh database with the migrations applied.

use super::*;
use baton_core::{JobKind, Limits, NewJob};
use sqlx::PgPool;

fn job(project: &str, version: &str, user: &str, kind: JobKind) -> Job {
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

fn run<'a>(
    job: &'a Job,
    fence: i64,
    step: Step,
    old: Option<&'a str>,
    new: &'a str,
) -> RunRecord<'a> {
    RunRecord {
        job,
        fence,
        step,
        old_session_id: old,
        new_session_id: new,
        metrics: RunMetrics {
            input_tokens: 10,
            output_tokens: 5,
            num_turns: 1,
            ..RunMetrics::default()
        },
    }
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
    assert_eq!((claim.fence, claim.attempt), (1, 1));
    assert_eq!(claim.project_session, None);

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
        (chain[0].source.as_str(), chain[0].new_session_id.as_str()),
        ("build", "s1")
    );
}

#[sqlx::test(migrator = "crate::MIGRATOR")]
async fn a_replayed_run_records_nothing_twice(pool: PgPool) {
    let ledger = Ledger::from_pool(pool.clone());
    let j = job("p1", "v1", "u1", JobKind::Create);
    let claim = ledger.claim_build(&j, None).await.unwrap();
    ledger
        .record_run(&run(&j, claim.fence, Step::Build, None, "s1"))
        .await
        .unwrap();
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
async fn a_stale_claim_cannot_write(pool: PgPool) {
    let ledger = Ledger::from_pool(pool.clone());
    let j = job("p1", "v1", "u1", JobKind::Create);
    let stale = ledger.claim_build(&j, None).await.unwrap();
    let fresh = ledger.claim_build(&j, None).await.unwrap();
    assert_eq!(fresh.fence, stale.fence + 1);
    let err = ledger
        .record_run(&run(&j, stale.fence, Step::Build, None, "stale"))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            LedgerError::Fenced {
                yours: 1,
                current: 2,
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
    assert_eq!(count(&pool, "session_transitions").await, 0);
    assert_eq!(ledger.project_session("p1").await.unwrap(), None);
    assert_eq!(
        ledger.build_state(&j.build_id).await.unwrap().status,
        "running"
    );
}

#[sqlx::test(migrator = "crate::MIGRATOR")]
async fn a_kept_session_id_is_recorded_for_every_operation(pool: PgPool) {
    let ledger = Ledger::from_pool(pool.clone());
    let j = job("p1", "v1", "u1", JobKind::Create);
    let claim = ledger.claim_build(&j, None).await.unwrap();
    ledger
        .record_run(&run(&j, claim.fence, Step::Build, None, "s1"))
        .await
        .unwrap();
    ledger
        .record_run(&run(
            &j,
            claim.fence,
            Step::Recommendations,
            Some("s1"),
            "s1",
        ))
        .await
        .unwrap();
    let chain = ledger.chain("p1").await.unwrap();
    assert_eq!(chain.len(), 2);
    assert_eq!(chain[1].old_session_id.as_deref(), Some("s1"));
    assert_eq!(chain[1].source, "metadata");
}

#[sqlx::test(migrator = "crate::MIGRATOR")]
async fn another_users_job_cannot_claim_the_project(pool: PgPool) {
    let ledger = Ledger::from_pool(pool);
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
    let err = ledger
        .claim_build(&job("p2", "v1", "alice", JobKind::Create), None)
        .await
        .unwrap_err();
    assert!(
        matches!(err, LedgerError::VersionOfOtherProject { .. }),
        "{err}"
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
async fn concurrent_writers_on_one_project_leave_a_linear_chain(pool: PgPool) {
    let ledger = Ledger::from_pool(pool.clone());
    let mut tasks = Vec::new();
    for i in 0..16 {
        let ledger = ledger.clone();
        tasks.push(tokio::spawn(async move {
            let j = job("p1", &format!("v{i}"), "u1", JobKind::Update);
            let claim = ledger.claim_build(&j, None).await.unwrap();
            let session = format!("s{i}");
            ledger
                .record_run(&run(&j, claim.fence, Step::Build, None, &session))
                .await
                .unwrap();
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let chain = ledger.chain("p1").await.unwrap();
    assert_eq!(chain.len(), 16);
    let newest = chain.last().unwrap().new_session_id.clone();
    assert_eq!(
        ledger.project_session("p1").await.unwrap(),
        Some(newest),
        "the project holds the newest link"
    );
}
