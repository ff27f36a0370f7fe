//! Queue tests against a real Redis (`REDIS_URL`, default 127.0.0.1:6379); each test uses its own stream.

use super::*;
use baton_core::{JobKind, Limits, NewJob};

fn redis_url() -> String {
    std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

async fn queue() -> Queue {
    let stream = format!("baton-test:{}", uuid::Uuid::new_v4());
    let q = Queue::connect(&redis_url(), &stream, "workers")
        .await
        .expect("redis answers at REDIS_URL");
    q.ensure_group().await.unwrap();
    q
}

fn job() -> Job {
    NewJob {
        kind: Some(JobKind::Create),
        project_id: "p1".into(),
        version_id: "v1".into(),
        user_id: "u1".into(),
        prompt: "go".into(),
        ..NewJob::default()
    }
    .into_job(&Limits::default())
    .unwrap()
}

#[tokio::test]
async fn an_enqueued_job_is_read_once_by_the_group_and_acked() {
    let q = queue().await;
    q.ensure_group()
        .await
        .expect("creating the group twice is fine");
    let j = job();
    let id = q.enqueue(&j).await.unwrap();
    let mut a = q.consumer("a").await.unwrap();
    let mut b = q.consumer("b").await.unwrap();
    let got = a.read(10, Duration::from_millis(100)).await.unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].id, id);
    assert_eq!(
        Job::from_json(
            got[0].payload.as_ref().unwrap().as_bytes(),
            &Limits::default()
        )
        .unwrap(),
        j
    );
    assert!(
        b.read(10, Duration::from_millis(100))
            .await
            .unwrap()
            .is_empty(),
        "one consumer per entry"
    );
    q.ack(&id).await.unwrap();
    assert_eq!(q.pending_count().await.unwrap(), 0);
}

#[tokio::test]
async fn a_blocking_read_outlives_the_default_reply_timeout() {
    let q = queue().await;
    let mut c = q.consumer("a").await.unwrap();
    // redis 1.x cuts replies after 500 ms by default; a 1.5 s block must come back empty, not fail.
    let got = c
        .read(1, Duration::from_millis(1500))
        .await
        .expect("no reply timeout on the blocking connection");
    assert!(got.is_empty());
}

#[tokio::test]
async fn a_dead_letter_keeps_the_payload_and_reason_and_acks_the_entry() {
    let q = queue().await;
    let id = q.enqueue_raw("{not json").await.unwrap();
    let mut c = q.consumer("a").await.unwrap();
    let got = c.read(1, Duration::from_millis(100)).await.unwrap();
    q.dead_letter(&DeadLetter {
        stream_id: &got[0].id,
        payload: &got[0].original(),
        reason: "job is not valid JSON",
        attempts: 1,
        last_error: None,
        consumer: "a",
    })
    .await
    .unwrap();
    let mut conn = q.pool.get().await.unwrap();
    let dead: redis::streams::StreamRangeReply = redis::cmd("XRANGE")
        .arg(q.dead_stream())
        .arg("-")
        .arg("+")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(dead.ids.len(), 1);
    let fields = &dead.ids[0].map;
    assert_eq!(value_text(&fields["payload"]), "{not json");
    assert_eq!(value_text(&fields["reason"]), "job is not valid JSON");
    assert_eq!(value_text(&fields["stream_id"]), id);
    assert_eq!(
        q.pending_count().await.unwrap(),
        0,
        "the dead-lettered entry is acknowledged"
    );
}

#[tokio::test]
async fn a_checkpoint_round_trips_with_an_hour_to_live() {
    let q = queue().await;
    let build_id = uuid::Uuid::new_v4().to_string();
    let cp = Checkpoint {
        session_id: "s1".into(),
        build_id: build_id.clone(),
        project_path: "p1".into(),
        files_created: vec!["/w/p1/a.md".into()],
        step: "build".into(),
        updated_at: chrono::Utc::now(),
    };
    q.save_checkpoint(&cp).await.unwrap();
    assert_eq!(q.load_checkpoint(&build_id).await.unwrap(), Some(cp));
    let mut conn = q.pool.get().await.unwrap();
    let ttl: i64 = redis::cmd("TTL")
        .arg(checkpoint_key(&build_id))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(ttl > 0 && ttl <= 3600, "ttl {ttl}");
    let raw: String = redis::cmd("GET")
        .arg(checkpoint_key(&build_id))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(
        raw.contains("\"sessionId\"") && raw.contains("\"filesCreated\""),
        "camelCase fields: {raw}"
    );
    assert_eq!(q.load_checkpoint("no-such-build").await.unwrap(), None);
}
