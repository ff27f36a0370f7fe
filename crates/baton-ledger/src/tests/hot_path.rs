//! The hot path's kept connections.

use super::*;

/// The backend process behind the connection the hot path kept most recently.
async fn kept_backend(ledger: &Ledger) -> i32 {
    let mut hot = ledger.kept.lock().pop().expect("a kept connection");
    let pid = sqlx::query_scalar::<_, i32>("SELECT pg_backend_pid()")
        .fetch_one(&mut *hot.conn)
        .await
        .unwrap();
    ledger.kept.lock().push(hot);
    pid
}

#[sqlx::test(migrator = "crate::MIGRATOR")]
async fn the_hot_path_keeps_its_connection_and_replaces_one_that_broke(pool: PgPool) {
    let ledger = Ledger::from_pool(pool.clone());
    let (j, claim) = created(&ledger, "p1", "v1", "s1").await;
    let first = kept_backend(&ledger).await;
    resume_s1(&ledger, &j, &claim, Step::Recommendations).await;
    assert_eq!(
        kept_backend(&ledger).await,
        first,
        "the next record reuses the kept connection"
    );

    // Postgres ends that backend (a restart, an idle timeout) while the connection sits unused
    // long enough to be checked before its next use.
    sqlx::query("SELECT pg_terminate_backend($1)")
        .bind(first)
        .execute(&pool)
        .await
        .unwrap();
    if let Some(hot) = ledger.kept.lock().last_mut() {
        hot.last_used = std::time::Instant::now() - IDLE_BEFORE_PING * 2;
    }
    assert_eq!(
        resume_s1(&ledger, &j, &claim, Step::Documentation).await,
        Recorded::Written
    );
    assert_ne!(
        kept_backend(&ledger).await,
        first,
        "a new connection took its place"
    );
}

#[sqlx::test(migrator = "crate::MIGRATOR")]
async fn the_hot_path_keeps_at_most_a_few_connections(pool: PgPool) {
    let ledger = Ledger::from_pool(pool.clone());
    let mut set = tokio::task::JoinSet::new();
    for i in 0..8 {
        let ledger = ledger.clone();
        set.spawn(async move {
            let j = job(&format!("p{i}"), &format!("v{i}"), "u1", JobKind::Create);
            let claim = ledger.claim_build(&j, None).await.unwrap();
            ledger
                .record_run(&run(&j, claim.fence, Step::Build, None, "s"))
                .await
                .unwrap()
        });
    }
    while let Some(written) = set.join_next().await {
        assert_eq!(written.unwrap(), Recorded::Written);
    }
    let kept = ledger.kept.lock().len();
    let half_the_pool = pool.options().get_max_connections() as usize / 2;
    assert!(
        (1..=KEEP_MAX.min(half_the_pool)).contains(&kept),
        "{kept} connections kept of a pool of {}; the rest went back to the pool",
        pool.options().get_max_connections()
    );
}

#[sqlx::test(migrator = "crate::MIGRATOR")]
async fn kept_connections_go_back_to_the_pool_when_unused_or_old(pool: PgPool) {
    let ledger = Ledger::from_pool(pool.clone());
    let now = std::time::Instant::now();
    for last_used in [now - KEEP_IDLE * 2, now] {
        let conn = pool.acquire().await.unwrap();
        ledger.kept.lock().push(HotConnection {
            conn,
            first_kept: now,
            last_used,
        });
    }
    let (j, claim) = created(&ledger, "p1", "v1", "s1").await;
    assert_eq!(
        ledger.kept.lock().len(),
        1,
        "the one unused for a minute went back; the one in use stays"
    );

    if let Some(hot) = ledger.kept.lock().last_mut() {
        hot.first_kept = now - KEEP_LIFETIME * 2;
    }
    resume_s1(&ledger, &j, &claim, Step::Recommendations).await;
    assert!(
        ledger.kept.lock().is_empty(),
        "a connection kept past its lifetime goes back after its call"
    );
}
