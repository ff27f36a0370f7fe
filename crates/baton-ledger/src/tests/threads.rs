//! Threads in the ledger: each its own chain beside the main one, forks pinned and recorded, other
//! users refused, deletion that leaves the main session alone.

use super::*;

/// A chat job of user `u1` in `thread` of project `p1`, forking `fork_from` when given.
fn chat(build: &str, thread: &str, fork_from: Option<&str>) -> Job {
    NewJob {
        kind: Some(JobKind::Chat),
        project_id: "p1".into(),
        user_id: "u1".into(),
        prompt: "hello".into(),
        build_id: Some(build.into()),
        thread_id: Some(thread.into()),
        fork_from: fork_from.map(str::to_string),
        ..NewJob::default()
    }
    .into_job(&Limits::default())
    .unwrap()
}

#[sqlx::test(migrator = "crate::MIGRATOR")]
async fn a_thread_forks_main_into_its_own_chain_and_leaves_main_alone(pool: PgPool) {
    let ledger = Ledger::from_pool(pool.clone());
    created(&ledger, "p1", "v1", "s-main").await;

    let first = chat("c1", "t1", Some("main"));
    let claim = ledger.claim_build(&first, None).await.unwrap();
    assert_eq!(
        claim.project.last_session, None,
        "a new thread has no session"
    );
    assert_eq!(claim.project.fork_session.as_deref(), Some("s-main"));
    let fork = RunRecord {
        source: Some(Source::Fork),
        ..run(&first, claim.fence, Step::Chat, Some("s-main"), "s-t1")
    };
    assert_eq!(ledger.record_run(&fork).await.unwrap(), Recorded::Written);
    assert_eq!(
        ledger.project_session("p1").await.unwrap().as_deref(),
        Some("s-main"),
        "main is untouched"
    );
    assert_eq!(
        ledger
            .chain_head("p1", Some("t1"))
            .await
            .unwrap()
            .as_deref(),
        Some("s-t1")
    );
    let chain = ledger.chain_of("p1", Some("t1")).await.unwrap();
    assert_eq!(chain.len(), 1);
    assert_eq!(chain[0].source, Source::Fork);
    assert_eq!(ledger.chain("p1").await.unwrap().len(), 1, "main's chain");

    // The next chat resumes the thread, whatever it names as a fork now.
    let second = chat("c2", "t1", Some("main"));
    let claim = ledger.claim_build(&second, None).await.unwrap();
    assert_eq!(claim.project.last_session.as_deref(), Some("s-t1"));
    assert_eq!(claim.project.fork_session, None);
    // A run that resumed something else than the thread's newest is refused as stale.
    let stale = ledger
        .record_run(&run(
            &second,
            claim.fence,
            Step::Chat,
            Some("s-main"),
            "s-x",
        ))
        .await;
    assert!(
        matches!(&stale, Err(LedgerError::StaleSession { actual: Some(a), .. }) if a == "s-t1"),
        "{stale:?}"
    );
    ledger
        .record_run(&run(&second, claim.fence, Step::Chat, Some("s-t1"), "s-t1"))
        .await
        .unwrap();
    assert_eq!(ledger.threads("u1", None).await.unwrap()[0].runs, 2);
    let sync = ledger.sync_check().await.unwrap();
    assert_eq!(
        sync.synced, sync.total,
        "threads do not unsettle main: {sync:?}"
    );
}

#[sqlx::test(migrator = "crate::MIGRATOR")]
async fn forks_of_nothing_and_of_another_users_thread_are_refused(pool: PgPool) {
    let ledger = Ledger::from_pool(pool.clone());
    let nothing = chat("c1", "t1", Some("main"));
    let refused = ledger.claim_build(&nothing, None).await;
    assert!(
        matches!(refused, Err(LedgerError::ForkSourceUnknown { .. })),
        "main has no session yet: {refused:?}"
    );
    assert_eq!(count(&pool, "threads").await, 0, "nothing is left behind");
    assert_eq!(count(&pool, "builds").await, 0);

    // A thread made by u1 that the ledger says belongs to u2 (a project shared in the past).
    created(&ledger, "p1", "v1", "s-main").await;
    sqlx::query(
        "INSERT INTO threads (project_id, thread_id, user_id) VALUES ('p1', 'theirs', 'u2')",
    )
    .execute(&pool)
    .await
    .unwrap();
    for job in [
        chat("c2", "theirs", None),
        chat("c3", "mine", Some("theirs")),
    ] {
        let refused = ledger.claim_build(&job, None).await;
        assert!(
            matches!(refused, Err(LedgerError::NotThreadOwner { .. })),
            "{refused:?}"
        );
        assert!(refused.unwrap_err().is_terminal_for_job());
    }
    let by_session = chat("c4", "t4", Some("s-main"));
    let claim = ledger.claim_build(&by_session, None).await.unwrap();
    assert_eq!(claim.project.fork_session.as_deref(), Some("s-main"));
}

#[sqlx::test(migrator = "crate::MIGRATOR")]
async fn deleting_a_thread_takes_its_chain_and_files_and_nothing_of_main(pool: PgPool) {
    let ledger = Ledger::from_pool(pool.clone());
    created(&ledger, "p1", "v1", "s-main").await;
    let first = chat("c1", "t1", None);
    let claim = ledger.claim_build(&first, None).await.unwrap();
    ledger
        .record_run(&run(&first, claim.fence, Step::Chat, None, "s-t1"))
        .await
        .unwrap();
    ledger
        .finish_build(&first.build_id, claim.fence, BuildStatus::Completed, None)
        .await
        .unwrap();
    sqlx::query("INSERT INTO session_transcripts (session_id, project_id) VALUES ('s-t1', 'p1'), ('s-main', 'p1')")
        .execute(&pool)
        .await
        .unwrap();

    let branch = ledger.fork_thread("p1", "t1", "t2").await.unwrap();
    assert_eq!(branch.fork_session_id.as_deref(), Some("s-t1"));
    assert!(matches!(
        ledger.fork_thread("p1", "t1", "t2").await,
        Err(crate::threads::ThreadError::Exists { .. })
    ));
    // t2 is still to fork s-t1: its files stay while t1 goes.
    let gone = ledger.delete_thread("p1", "t1").await.unwrap();
    assert_eq!((gone.transitions, gone.transcripts), (1, 0));
    assert!(matches!(
        ledger.thread("p1", "t1").await,
        Err(crate::threads::ThreadError::NotFound { .. })
    ));
    assert_eq!(count(&pool, "session_transcripts").await, 2);
    assert_eq!(ledger.chain("p1").await.unwrap().len(), 1, "main's chain");
    assert_eq!(
        ledger.project_session("p1").await.unwrap().as_deref(),
        Some("s-main")
    );
    assert!(matches!(
        ledger.delete_thread("p1", "t1").await,
        Err(crate::threads::ThreadError::NotFound { .. })
    ));
}
