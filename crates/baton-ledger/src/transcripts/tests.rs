//! The transcript store against a real Postgres.

use baton_core::{JobKind, Step};
use baton_transcript::{SessionFile, archive::Imported, changes};
use sqlx::PgPool;

use crate::tests::{job, run};
use crate::{Ledger, LedgerError, Recorded, TranscriptWrite};

fn files(session: &str, transcript: &str, extra: Option<&str>) -> Vec<SessionFile> {
    let mut out = vec![SessionFile {
        path: format!("{session}.jsonl"),
        bytes: transcript.as_bytes().to_vec(),
    }];
    if let Some(text) = extra {
        out.push(SessionFile {
            path: format!("{session}/tool-results/t1.txt"),
            bytes: text.as_bytes().to_vec(),
        });
    }
    out
}

#[sqlx::test(migrator = "crate::MIGRATOR")]
async fn a_run_stores_its_files_with_its_record_and_later_runs_only_what_is_new(pool: PgPool) {
    let ledger = Ledger::from_pool(pool.clone());
    let j = job("p1", "v1", "u1", JobKind::Create);
    let claim = ledger.claim_build(&j, None).await.unwrap();
    let first = files("s1", "{\"n\":1}\n", Some("tool output"));
    let write = TranscriptWrite {
        changes: changes(&first, &[]),
        incomplete: None,
    };
    let mut record = run(&j, claim.fence, Step::Build, None, "s1");
    record.transcript = Some(&write);
    assert_eq!(ledger.record_run(&record).await.unwrap(), Recorded::Written);
    let stored = ledger.stored_session("s1").await.unwrap().unwrap();
    let back = ledger.stored_files("s1", None).await.unwrap();
    assert_eq!(back, first);
    assert_eq!(stored.project_id, "p1");
    let stats = ledger.transcript_stats("s1").await.unwrap();
    assert_eq!((stats.bytes, stats.pieces), (8 + 11, 2));
    assert!(stats.stored_bytes > 0 && stats.updated_at.is_some());
    assert_eq!(stored.files[0].path, "s1.jsonl", "the transcript first");

    // The next run appends to the transcript: one more piece, and only its bytes are sent.
    let second = files("s1", "{\"n\":1}\n{\"n\":2}\n", Some("tool output"));
    let write = TranscriptWrite {
        changes: changes(&second, &stored.files),
        incomplete: None,
    };
    assert_eq!(write.changes.len(), 1, "the tool result did not change");
    assert_eq!(write.changes[0].base_length, 8);
    let mut record = run(&j, claim.fence, Step::Recommendations, Some("s1"), "s1");
    record.transcript = Some(&write);
    ledger.record_run(&record).await.unwrap();
    let stored = ledger.stored_session("s1").await.unwrap().unwrap();
    let back = ledger.stored_files("s1", None).await.unwrap();
    assert_eq!(back, second);
    assert_eq!(stored.files[0].pieces, 2);
    assert_eq!(ledger.transcript_stats("s1").await.unwrap().pieces, 3);

    // Only the files asked for.
    let only = vec!["s1/tool-results/t1.txt".to_string()];
    let some = ledger.stored_files("s1", Some(&only)).await.unwrap();
    assert_eq!(some, second[1..]);
    assert!(ledger.stored_files("nope", None).await.unwrap().is_empty());
    assert!(ledger.stored_session("nope").await.unwrap().is_none());
}

#[sqlx::test(migrator = "crate::MIGRATOR")]
async fn a_store_against_a_changed_copy_writes_neither_files_nor_record(pool: PgPool) {
    let ledger = Ledger::from_pool(pool.clone());
    let j = job("p1", "v1", "u1", JobKind::Create);
    let claim = ledger.claim_build(&j, None).await.unwrap();
    let first = files("s1", "{\"n\":1}\n", None);
    let write = TranscriptWrite {
        changes: changes(&first, &[]),
        incomplete: None,
    };
    let mut record = run(&j, claim.fence, Step::Build, None, "s1");
    record.transcript = Some(&write);
    ledger.record_run(&record).await.unwrap();
    let stored = ledger.stored_session("s1").await.unwrap().unwrap();

    // Computed against a copy the ledger no longer has.
    let mut stale = stored.files.clone();
    stale[0].length = 3;
    stale[0].sha256 = baton_transcript::sha256(b"{\"n");
    let grown = files("s1", "{\"n\":1}\n{\"n\":2}\n", None);
    let mut conflicting = changes(&grown, &stale);
    if conflicting[0].base_length == 0 {
        // `changes` saw the start differ and sent it whole; force an append against the stale base.
        conflicting[0].base_length = 3;
        conflicting[0].base_sha256 = stale[0].sha256.clone();
    }
    let write = TranscriptWrite {
        changes: conflicting,
        incomplete: None,
    };
    let mut record = run(&j, claim.fence, Step::Recommendations, Some("s1"), "s1");
    record.transcript = Some(&write);
    let err = ledger.record_run(&record).await.unwrap_err();
    assert!(
        matches!(&err, LedgerError::TranscriptConflict { path, .. } if path == "s1.jsonl"),
        "{err:?}"
    );
    let chain = ledger.chain("p1").await.unwrap();
    assert_eq!(chain.len(), 1, "the run was not recorded either");

    // Sent whole, it goes through.
    let write = TranscriptWrite {
        changes: changes(&grown, &[]),
        incomplete: None,
    };
    record.transcript = Some(&write);
    ledger.record_run(&record).await.unwrap();
    let back = ledger.stored_files("s1", None).await.unwrap();
    assert_eq!(back, grown);
}

#[sqlx::test(migrator = "crate::MIGRATOR")]
async fn an_incomplete_session_keeps_its_reason_and_no_half_copy(pool: PgPool) {
    let ledger = Ledger::from_pool(pool.clone());
    let j = job("p1", "v1", "u1", JobKind::Create);
    let claim = ledger.claim_build(&j, None).await.unwrap();
    let write = TranscriptWrite {
        changes: changes(&files("s1", "{}\n", None), &[]),
        incomplete: None,
    };
    let mut record = run(&j, claim.fence, Step::Build, None, "s1");
    record.transcript = Some(&write);
    ledger.record_run(&record).await.unwrap();
    let too_big = TranscriptWrite {
        changes: Vec::new(),
        incomplete: Some("over BATON_TRANSCRIPT_MAX_BYTES".into()),
    };
    let mut record = run(&j, claim.fence, Step::Recommendations, Some("s1"), "s1");
    record.transcript = Some(&too_big);
    ledger.record_run(&record).await.unwrap();
    let stored = ledger.stored_session("s1").await.unwrap().unwrap();
    assert_eq!(
        stored.incomplete.as_deref(),
        Some("over BATON_TRANSCRIPT_MAX_BYTES")
    );
    assert!(stored.files.is_empty());
    assert_eq!(ledger.transcript_stats("s1").await.unwrap().bytes, 0);
}

fn imported(session: &str) -> Imported {
    Imported {
        session_id: session.into(),
        files: files(session, "{\"type\":\"user\"}\n", Some("x")),
    }
}

#[sqlx::test(migrator = "crate::MIGRATOR")]
async fn an_imported_session_becomes_the_projects_newest(pool: PgPool) {
    let ledger = Ledger::from_pool(pool.clone());
    assert_eq!(
        ledger
            .import_session("p9", "u1", &imported("s9"))
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        ledger.project_session("p9").await.unwrap().as_deref(),
        Some("s9")
    );
    let chain = ledger.chain("p9").await.unwrap();
    assert_eq!(chain.len(), 1);
    assert_eq!(chain[0].source, baton_core::Source::Import);
    assert_eq!(chain[0].new_session_id.as_deref(), Some("s9"));
    let back = ledger.stored_files("s9", None).await.unwrap();
    assert_eq!(back, imported("s9").files);
    assert!(ledger.sync_check().await.unwrap().projects[0].synced);

    // Known sessions and other users' projects are refused, and nothing changes.
    let err = ledger.import_session("p9", "u1", &imported("s9")).await;
    assert!(matches!(err, Err(LedgerError::SessionKnown(_))), "{err:?}");
    let err = ledger.import_session("p9", "u2", &imported("s10")).await;
    assert!(matches!(err, Err(LedgerError::NotOwner { .. })), "{err:?}");
    assert_eq!(ledger.chain("p9").await.unwrap().len(), 1);
    assert!(ledger.stored_session("s10").await.unwrap().is_none());
    // A second import on the same project follows the first.
    assert_eq!(
        ledger
            .import_session("p9", "u1", &imported("s11"))
            .await
            .unwrap()
            .as_deref(),
        Some("s9")
    );
}

#[sqlx::test(migrator = "crate::MIGRATOR")]
async fn prune_removes_old_transcripts_but_never_a_projects_newest(pool: PgPool) {
    let ledger = Ledger::from_pool(pool.clone());
    ledger
        .import_session("p1", "u1", &imported("old"))
        .await
        .unwrap();
    ledger
        .import_session("p1", "u1", &imported("newest"))
        .await
        .unwrap();
    // A dry run counts what would go and deletes nothing.
    let dry = ledger
        .prune(chrono::Utc::now() + chrono::Duration::seconds(60), true)
        .await
        .unwrap();
    assert_eq!((dry.transcripts, dry.dry_run), (1, true));
    assert!(ledger.stored_session("old").await.unwrap().is_some());
    let report = ledger
        .prune(chrono::Utc::now() + chrono::Duration::seconds(60), false)
        .await
        .unwrap();
    assert_eq!(report.transcripts, 1);
    assert!(ledger.stored_session("old").await.unwrap().is_none());
    assert!(ledger.stored_session("newest").await.unwrap().is_some());
    // Nothing is that old yet.
    ledger
        .import_session("p2", "u1", &imported("other"))
        .await
        .unwrap();
    ledger
        .import_session("p2", "u1", &imported("other2"))
        .await
        .unwrap();
    let report = ledger
        .prune(chrono::Utc::now() - chrono::Duration::seconds(60), false)
        .await
        .unwrap();
    assert_eq!(report.transcripts, 0);
}
