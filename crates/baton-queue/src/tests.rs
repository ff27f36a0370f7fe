//! Queue tests against a real Redis (`REDIS_URL`, default 127.0.0.1:6379); each test uses its own stream.

use super::*;
use baton_core::{JobKind, Limits, NewJob};

fn redis_url() -> String {
    std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

/// A queue on a stream of its own, whose keys are deleted when the test ends.
struct Scratch(Queue);

impl std::ops::Deref for Scratch {
    type Target = Queue;

    fn deref(&self) -> &Queue {
        &self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let stream = self.0.stream().to_string();
        // Drop runs inside the test's runtime, which the queue's connection needs, so the cleanup
        // gets a runtime and a connection of its own.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .ok()?;
            rt.block_on(async {
                let queue = Queue::connect(&redis_url(), &stream, "workers")
                    .await
                    .ok()?;
                queue.delete_all_keys().await.ok()
            })
        })
        .join();
    }
}

async fn queue() -> Scratch {
    let stream = format!("baton-test:{}", uuid::Uuid::new_v4());
    let q = Queue::connect(&redis_url(), &stream, "workers")
        .await
        .expect("redis answers at REDIS_URL");
    q.ensure_group().await.unwrap();
    Scratch(q)
}

fn job(project: &str) -> Job {
    NewJob {
        kind: Some(JobKind::Create),
        project_id: project.into(),
        version_id: format!("v-{}", uuid::Uuid::new_v4().simple()),
        user_id: "u1".into(),
        prompt: "go".into(),
        ..NewJob::default()
    }
    .into_job(&Limits::default())
    .unwrap()
}

const LEASE: Duration = Duration::from_secs(30);

/// The dead letter of a garbage entry `id` that consumer `a` gives up on.
fn garbage_letter(id: &str) -> DeadLetter<'_> {
    DeadLetter {
        stream_id: id,
        payload: "{not json",
        reason: "not a job",
        attempts: 0,
        last_error: None,
        consumer: "a",
    }
}
const SHORT: Duration = Duration::from_millis(50);

/// A checkpoint of `build_id`'s build step in `phase`, with no files.
fn checkpoint(build_id: &str, phase: baton_core::checkpoint::Phase) -> Checkpoint {
    Checkpoint {
        session_id: "s1".into(),
        build_id: build_id.into(),
        project_path: "p1".into(),
        files_created: vec![],
        step: baton_core::Step::Build,
        phase,
        updated_at: chrono::Utc::now(),
    }
}

#[tokio::test]
async fn an_enqueued_job_is_delivered_once_and_acked() {
    let q = queue().await;
    assert!(
        !q.ensure_group()
            .await
            .expect("creating the group twice is fine"),
        "the group already existed"
    );
    let j = job("p1");
    let id = q.enqueue(&j).await.unwrap();
    let mut a = q.consumer("a").await.unwrap();
    let mut b = q.consumer("b").await.unwrap();
    let got = a.next(10, SHORT).await.unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(
        (got[0].id.as_str(), got[0].project.as_deref()),
        (id.as_str(), Some("p1"))
    );
    assert_eq!(
        Job::from_json(
            got[0].payload.as_ref().unwrap().as_bytes(),
            &Limits::default()
        )
        .unwrap(),
        j
    );
    assert!(
        b.next(10, SHORT).await.unwrap().is_empty(),
        "one consumer per entry"
    );
    assert_eq!(
        q.try_start("a", &got[0], LEASE).await.unwrap(),
        Start::Started
    );
    assert!(q.finish("a", &got[0], Ending::Ack).await.unwrap());
    assert_eq!(q.pending_count().await.unwrap(), 0);
    let mut conn = q.conn.clone();
    let queued: i64 = redis::cmd("LLEN")
        .arg(q.project_queue_key("p1"))
        .query_async(&mut conn)
        .await
        .unwrap();
    let lease: i64 = redis::cmd("EXISTS")
        .arg(q.lease_key("p1"))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(
        (queued, lease),
        (0, 0),
        "finishing clears the queue slot and the lease"
    );
}

#[tokio::test]
async fn a_wait_returns_when_an_entry_arrives() {
    let q = queue().await;
    let mut c = q.consumer("a").await.unwrap();
    let producer = q.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        producer.enqueue(&job("p1")).await.unwrap();
    });
    // redis 1.x cuts replies after 500 ms by default; this wait may take far longer.
    let got = c
        .next(1, Duration::from_secs(20))
        .await
        .expect("no reply timeout on the waiting connection");
    assert_eq!(
        got.len(),
        1,
        "the entry that arrived during the wait is delivered"
    );
}

#[tokio::test]
async fn a_long_empty_wait_outlives_the_default_reply_timeout() {
    let q = queue().await;
    let mut c = q.consumer("a").await.unwrap();
    assert!(
        c.next(1, Duration::from_millis(1500))
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn one_project_runs_one_entry_at_a_time_in_stream_order() {
    let q = queue().await;
    for p in ["p1", "p1", "p2", "p1"] {
        q.enqueue(&job(p)).await.unwrap();
    }
    let mut a = q.consumer("a").await.unwrap();
    let mut b = q.consumer("b").await.unwrap();
    // The replicas read alternately, so p1's entries are spread over both.
    let mut got = Vec::new();
    for _ in 0..2 {
        got.push(("a", a.next(1, SHORT).await.unwrap().remove(0)));
        got.push(("b", b.next(1, SHORT).await.unwrap().remove(0)));
    }
    let (first, second, other, third) = (&got[0], &got[1], &got[2], &got[3]);
    assert_eq!(other.1.project.as_deref(), Some("p2"));
    // Later entries of p1 wait, whoever holds them; p2 is not held up.
    assert_eq!(
        q.try_start(third.0, &third.1, LEASE).await.unwrap(),
        Start::Wait
    );
    assert_eq!(
        q.try_start(second.0, &second.1, LEASE).await.unwrap(),
        Start::Wait
    );
    assert_eq!(
        q.try_start(other.0, &other.1, LEASE).await.unwrap(),
        Start::Started
    );
    assert_eq!(
        q.try_start(first.0, &first.1, LEASE).await.unwrap(),
        Start::Started
    );
    assert_eq!(
        q.try_start(second.0, &second.1, LEASE).await.unwrap(),
        Start::Wait,
        "the first still runs"
    );
    assert!(q.finish(first.0, &first.1, Ending::Ack).await.unwrap());
    assert_eq!(
        q.try_start(third.0, &third.1, LEASE).await.unwrap(),
        Start::Wait,
        "order holds"
    );
    assert_eq!(
        q.try_start(second.0, &second.1, LEASE).await.unwrap(),
        Start::Started
    );
}

#[tokio::test]
async fn a_heartbeat_keeps_entries_and_tells_when_one_was_taken() {
    let q = queue().await;
    q.enqueue(&job("p1")).await.unwrap();
    let mut a = q.consumer("a").await.unwrap();
    let d = a.next(1, SHORT).await.unwrap().remove(0);
    assert_eq!(
        q.try_start("a", &d, Duration::from_millis(300))
            .await
            .unwrap(),
        Start::Started
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    let entries = vec![(d.id.clone(), d.project.clone())];
    assert_eq!(
        q.heartbeat("a", &entries, Duration::from_secs(30))
            .await
            .unwrap(),
        [Holding::Ours]
    );
    // Refreshed: not idle enough to be claimed, and the lease outlives its first 300 ms.
    assert!(
        q.autoclaim("b", Duration::from_millis(150), 10)
            .await
            .unwrap()
            .is_empty()
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut conn = q.conn.clone();
    let lease: Option<String> = redis::cmd("GET")
        .arg(q.lease_key("p1"))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(lease, Some(format!("a:{}", d.id)));
    // b takes it over after it goes stale; a's heartbeat then learns it lost it, and cannot ack.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let taken = q
        .autoclaim("b", Duration::from_millis(150), 10)
        .await
        .unwrap();
    assert_eq!(taken.len(), 1);
    assert_eq!(taken[0].project.as_deref(), Some("p1"));
    assert_eq!(
        q.heartbeat("a", &entries, LEASE).await.unwrap(),
        [Holding::Taken]
    );
    assert_eq!(q.try_start("a", &d, LEASE).await.unwrap(), Start::Lost);
    assert!(
        !q.finish("a", &d, Ending::Ack).await.unwrap(),
        "a stale holder cannot end the entry"
    );
    // b waits for a's lease, which a still holds until it expires or is released.
    assert_eq!(
        q.try_start("b", &taken[0], LEASE).await.unwrap(),
        Start::Wait
    );
    redis::cmd("DEL")
        .arg(q.lease_key("p1"))
        .query_async::<i64>(&mut conn)
        .await
        .unwrap();
    assert_eq!(
        q.try_start("b", &taken[0], LEASE).await.unwrap(),
        Start::Started
    );
    // Once b has ended it, the entry is nobody's, but it was not lost: a still learns it was taken,
    // so a stalled holder's run is stopped rather than run on.
    assert!(q.finish("b", &taken[0], Ending::Ack).await.unwrap());
    assert_eq!(
        q.heartbeat("a", &entries, LEASE).await.unwrap(),
        [Holding::Taken]
    );
    assert_eq!(q.try_start("a", &d, LEASE).await.unwrap(), Start::Lost);
    assert!(!q.finish("a", &d, Ending::Ack).await.unwrap());
}

#[tokio::test]
async fn handed_back_entries_are_claimed_at_once_and_their_lease_freed() {
    let q = queue().await;
    q.enqueue(&job("p1")).await.unwrap();
    let mut a = q.consumer("a").await.unwrap();
    let d = a.next(1, SHORT).await.unwrap().remove(0);
    assert_eq!(q.try_start("a", &d, LEASE).await.unwrap(), Start::Started);
    assert_eq!(
        q.hand_back("a", &[(d.id.clone(), d.project.clone())])
            .await
            .unwrap(),
        [Holding::Ours]
    );
    // A heartbeat that was already under way when the entry went back does not hide it again.
    assert_eq!(
        q.heartbeat("a", &[(d.id.clone(), d.project.clone())], LEASE)
            .await
            .unwrap(),
        [Holding::Ours]
    );
    let taken = q.autoclaim("b", Duration::from_secs(30), 10).await.unwrap();
    assert_eq!(taken.len(), 1, "no need to wait out the claim timeout");
    assert_eq!(
        q.try_start("b", &taken[0], LEASE).await.unwrap(),
        Start::Started
    );
}

#[tokio::test]
async fn a_dead_letter_keeps_the_payload_and_reason_and_acks_the_entry() {
    let q = queue().await;
    let id = q.enqueue_raw("{not json").await.unwrap();
    let mut c = q.consumer("a").await.unwrap();
    let got = c.next(1, SHORT).await.unwrap();
    assert_eq!(got[0].project, None, "not a job: no project queue");
    let letter = DeadLetter {
        stream_id: &got[0].id,
        payload: &got[0].original(),
        reason: "job is not valid JSON",
        attempts: 1,
        last_error: None,
        consumer: "a",
    };
    let from = q.last_event_id().await.unwrap();
    let failed = baton_core::events::Event::new(
        baton_core::events::EventType::JobFailed,
        "b-dead",
        "p-dead",
    );
    assert!(
        q.finish_with_event("a", &got[0], Ending::DeadLetter(letter), Some(&failed))
            .await
            .unwrap()
    );
    let mut reader = q.event_reader(&from).await.unwrap();
    let events = reader.next(SHORT).await.unwrap();
    assert!(
        events
            .iter()
            .any(|e| e.build_id == "b-dead" && e.event == baton_core::events::EventType::JobFailed),
        "the job's last event rides with the ending: {events:?}"
    );
    let dead = q.dead_letters(10).await.unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].fields["payload"], "{not json");
    assert_eq!(dead[0].fields["reason"], "job is not valid JSON");
    assert_eq!(dead[0].fields["stream_id"], id);
    assert_eq!(
        q.pending_count().await.unwrap(),
        0,
        "the dead-lettered entry is acknowledged"
    );
    // Replay puts the payload back on the stream and removes the letter.
    let replayed = q.replay_dead_letter(&dead[0].id).await.unwrap().unwrap();
    assert_ne!(replayed, id);
    assert_eq!(q.dead_letter_length().await.unwrap(), 0);
    assert_eq!(
        c.next(1, SHORT).await.unwrap()[0].payload.as_deref(),
        Some("{not json")
    );
    assert_eq!(q.replay_dead_letter("0-1").await.unwrap(), None);
}

#[tokio::test]
async fn a_queue_head_that_nobody_holds_does_not_block_the_project() {
    let q = queue().await;
    q.enqueue(&job("p1")).await.unwrap();
    q.enqueue(&job("p1")).await.unwrap();
    let mut a = q.consumer("a").await.unwrap();
    let first = a.next(1, SHORT).await.unwrap().remove(0);
    let second = a.next(1, SHORT).await.unwrap().remove(0);
    // The first entry is acknowledged behind Baton's back (an operator's XACK).
    let mut conn = q.conn.clone();
    redis::cmd("XACK")
        .arg(q.stream())
        .arg(q.group())
        .arg(&first.id)
        .query_async::<i64>(&mut conn)
        .await
        .unwrap();
    assert_eq!(
        q.try_start("a", &second, LEASE).await.unwrap(),
        Start::Started
    );
}

#[tokio::test]
async fn a_checkpoint_round_trips_with_an_hour_to_live() {
    let q = queue().await;
    let build_id = uuid::Uuid::new_v4().to_string();
    let cp = Checkpoint {
        files_created: vec!["/w/p1/a.md".into()],
        ..checkpoint(&build_id, baton_core::checkpoint::Phase::Finished)
    };
    q.save_checkpoint(&cp).await.unwrap();
    assert_eq!(q.load_checkpoint(&build_id).await.unwrap(), Some(cp));
    let mut conn = q.conn.clone();
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

/// The kinds of `build_id`'s events published after `from`, in order.
async fn event_kinds(q: &Queue, from: &str, build_id: &str) -> Vec<baton_core::events::EventType> {
    let mut reader = q.event_reader(from).await.unwrap();
    reader
        .next(Duration::from_millis(200))
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.build_id == build_id)
        .map(|e| e.event)
        .collect()
}

#[tokio::test]
async fn a_checkpoint_and_its_events_are_written_together_in_order() {
    let q = queue().await;
    let from = q.last_event_id().await.unwrap();
    let build_id = uuid::Uuid::new_v4().to_string();
    let cp = checkpoint(&build_id, baton_core::checkpoint::Phase::Started);
    use baton_core::events::{Event, EventType};
    let started = Event::new(EventType::RunStarted, &build_id, "p1");
    let seen = Event::new(EventType::SessionSeen, &build_id, "p1");
    q.save_checkpoint_with_events(&cp, &[&started, &seen])
        .await
        .unwrap();
    assert_eq!(q.load_checkpoint(&build_id).await.unwrap(), Some(cp));
    let kinds = event_kinds(&q, &from, &build_id).await;
    assert_eq!(kinds, [EventType::RunStarted, EventType::SessionSeen]);
}

#[tokio::test]
async fn events_published_together_arrive_in_order_and_write_no_checkpoint() {
    use baton_core::events::{Event, EventType};
    let q = queue().await;
    let from = q.last_event_id().await.unwrap();
    let build_id = uuid::Uuid::new_v4().to_string();
    let started = Event::new(EventType::RunStarted, &build_id, "p1");
    let finished = Event::new(EventType::RunFinished, &build_id, "p1");
    q.publish_events(&[&started, &finished]).await.unwrap();
    q.publish_events(&[]).await.unwrap();
    let kinds = event_kinds(&q, &from, &build_id).await;
    assert_eq!(kinds, [EventType::RunStarted, EventType::RunFinished]);
    assert_eq!(q.load_checkpoint(&build_id).await.unwrap(), None);
}

#[tokio::test]
async fn a_job_start_publishes_its_event_and_reads_the_checkpoint_in_one_call() {
    use baton_core::events::{Event, EventType};
    let q = queue().await;
    let from = q.last_event_id().await.unwrap();
    let build_id = uuid::Uuid::new_v4().to_string();
    let started = Event::new(EventType::JobStarted, &build_id, "p1");
    assert_eq!(
        q.publish_and_load_checkpoint(&started, &build_id)
            .await
            .unwrap(),
        None
    );
    let cp = checkpoint(&build_id, baton_core::checkpoint::Phase::Finished);
    q.save_checkpoint(&cp).await.unwrap();
    assert_eq!(
        q.publish_and_load_checkpoint(&started, &build_id)
            .await
            .unwrap(),
        Some(cp)
    );
    let mut reader = q.event_reader(&from).await.unwrap();
    let starts = reader
        .next(Duration::from_millis(200))
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.build_id == build_id && e.event == EventType::JobStarted)
        .count();
    assert_eq!(starts, 2);
}

#[tokio::test]
async fn commands_go_on_after_the_connection_is_cut() {
    let q = queue().await;
    let id: i64 = redis::cmd("CLIENT")
        .arg("ID")
        .query_async(&mut q.conn.clone())
        .await
        .unwrap();
    let mut other = redis::Client::open(redis_url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let killed: i64 = redis::cmd("CLIENT")
        .arg("KILL")
        .arg("ID")
        .arg(id)
        .query_async(&mut other)
        .await
        .unwrap();
    assert_eq!(killed, 1);
    // The command in flight when the cut is noticed may fail; the queue reconnects by itself.
    let mut answered = false;
    for _ in 0..40 {
        if q.enqueue(&job("p1")).await.is_ok() {
            answered = true;
            break;
        }
        tokio::time::sleep(SHORT).await;
    }
    assert!(answered, "the queue never reconnected");
    let now: i64 = redis::cmd("CLIENT")
        .arg("ID")
        .query_async(&mut q.conn.clone())
        .await
        .unwrap();
    assert_ne!(now, id, "a new connection");
}

#[tokio::test]
async fn entries_redis_lost_are_told_apart_from_taken_ones_and_can_be_enqueued_again() {
    let q = queue().await;
    let j = job("p1");
    q.enqueue(&j).await.unwrap();
    q.enqueue_raw("{not json").await.unwrap();
    let mut a = q.consumer("a").await.unwrap();
    let got = a.next(10, SHORT).await.unwrap();
    assert_eq!(got.len(), 2);
    let (running, garbage) = (&got[0], &got[1]);
    assert_eq!(
        q.try_start("a", running, LEASE).await.unwrap(),
        Start::Started
    );
    // As a worker sends them: the project only for the running entry.
    let entries = [
        (running.id.clone(), running.project.clone()),
        (garbage.id.clone(), None),
    ];

    // Redis loses everything of this stream, as a restart without its data does.
    let mut conn = q.conn.clone();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{}*", q.stream()))
        .query_async(&mut conn)
        .await
        .unwrap();
    redis::cmd("DEL")
        .arg(&keys)
        .query_async::<i64>(&mut conn)
        .await
        .unwrap();
    let err = q.heartbeat("a", &entries, LEASE).await.unwrap_err();
    assert!(err.is_missing_group(), "{err}");
    assert!(a.next(1, SHORT).await.unwrap_err().is_missing_group());
    assert!(
        !QueueError::BadCheckpoint {
            build_id: "b".into(),
            cause: serde_json::from_str::<u8>("x").unwrap_err(),
        }
        .is_missing_group()
    );

    assert!(q.ensure_group().await.unwrap(), "the group is created anew");
    assert_eq!(
        q.heartbeat("a", &entries, LEASE).await.unwrap(),
        [Holding::Gone, Holding::Gone]
    );
    let lease: Option<String> = redis::cmd("GET")
        .arg(q.lease_key("p1"))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(
        lease,
        Some(format!("a:{}", running.id)),
        "the running job took its project's lease back"
    );
    assert_eq!(q.try_start("a", running, LEASE).await.unwrap(), Start::Gone);

    // Enqueued again, each comes back as it was delivered.
    let copy = q.requeue(running).await.unwrap();
    assert_ne!(copy, running.id);
    q.requeue(garbage).await.unwrap();
    let again = a.next(10, SHORT).await.unwrap();
    assert_eq!(again.len(), 2);
    assert_eq!(again[0].id, copy);
    assert_eq!(again[0].payload, running.payload);
    assert_eq!(again[0].project.as_deref(), Some("p1"));
    assert_eq!(again[1].payload, garbage.payload);
    assert_eq!(
        q.try_start("a", &again[0], LEASE).await.unwrap(),
        Start::Wait,
        "the copy waits while the job Redis lost still runs"
    );
    // A lost entry cannot be handed back, but handing it back frees its lease for the copy.
    assert_eq!(
        q.hand_back("a", &entries).await.unwrap(),
        [Holding::Gone, Holding::Gone]
    );
    assert_eq!(
        q.try_start("a", &again[0], LEASE).await.unwrap(),
        Start::Started
    );
    // Once acknowledged, an entry is nobody's but not lost, and its heartbeat takes no lease.
    q.finish("a", &again[0], Ending::Ack).await.unwrap();
    assert_eq!(
        q.heartbeat("a", &[(again[0].id.clone(), Some("p1".into()))], LEASE)
            .await
            .unwrap(),
        [Holding::Taken]
    );
    let lease: Option<String> = redis::cmd("GET")
        .arg(q.lease_key("p1"))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(lease, None);

    // An entry nobody holds is still ended by the worker that ran it, so its dead letter survives;
    // one another consumer took is not.
    assert!(
        q.finish(
            "a",
            garbage,
            Ending::DeadLetter(garbage_letter(&garbage.id))
        )
        .await
        .unwrap()
    );
    assert_eq!(q.dead_letter_length().await.unwrap(), 1);
    tokio::time::sleep(Duration::from_millis(20)).await;
    let taken = q
        .autoclaim("b", Duration::from_millis(10), 10)
        .await
        .unwrap();
    assert_eq!(taken.len(), 1);
    assert!(
        !q.finish(
            "a",
            &again[1],
            Ending::DeadLetter(garbage_letter(&again[1].id))
        )
        .await
        .unwrap()
    );
    assert_eq!(q.dead_letter_length().await.unwrap(), 1);
}

#[tokio::test]
async fn deleting_a_streams_keys_leaves_other_streams_alone() {
    let q = queue().await;
    let longer = Queue::connect(&redis_url(), &format!("{}-longer", q.stream()), "workers")
        .await
        .unwrap();
    longer.ensure_group().await.unwrap();
    longer.enqueue(&job("p1")).await.unwrap();
    q.enqueue(&job("p1")).await.unwrap();
    q.enqueue_raw("{not json").await.unwrap();
    let mut a = q.consumer("a").await.unwrap();
    let got = a.next(10, SHORT).await.unwrap();
    assert_eq!(
        q.try_start("a", &got[0], LEASE).await.unwrap(),
        Start::Started
    );
    assert!(
        q.finish("a", &got[1], Ending::DeadLetter(garbage_letter(&got[1].id)))
            .await
            .unwrap()
    );
    q.publish_event(&baton_core::events::Event::new(
        baton_core::events::EventType::JobStarted,
        "b1",
        "p1",
    ))
    .await
    .unwrap();
    // The stream, its dead letters, its events, its project queue, its lease and the group's
    // creation time.
    assert_eq!(q.delete_all_keys().await.unwrap(), 6);
    assert_eq!(q.delete_all_keys().await.unwrap(), 0);
    assert_eq!(longer.stream_length().await.unwrap(), 1);
    assert_eq!(longer.delete_all_keys().await.unwrap(), 2);
}

#[tokio::test]
async fn an_ended_entry_leaves_the_stream_and_lag_counts_what_is_undelivered() {
    let q = queue().await;
    for project in ["p1", "p2", "p3"] {
        q.enqueue(&job(project)).await.unwrap();
    }
    assert_eq!(q.lag().await.unwrap(), 3);
    let mut a = q.consumer("a").await.unwrap();
    let got = a.next(1, SHORT).await.unwrap();
    assert_eq!(
        (q.stream_length().await.unwrap(), q.lag().await.unwrap()),
        (3, 2)
    );
    assert_eq!(q.pending_count().await.unwrap(), 1);
    assert_eq!(
        q.try_start("a", &got[0], LEASE).await.unwrap(),
        Start::Started
    );
    assert!(q.finish("a", &got[0], Ending::Ack).await.unwrap());
    // The backlog is what is left: lag plus pending.
    assert_eq!(
        (q.stream_length().await.unwrap(), q.lag().await.unwrap()),
        (2, 2)
    );
    assert_eq!(q.pending_count().await.unwrap(), 0);
    let rest = a.next(10, SHORT).await.unwrap();
    assert_eq!(q.lag().await.unwrap(), 0);
    for entry in &rest {
        q.finish("a", entry, Ending::DeadLetter(garbage_letter(&entry.id)))
            .await
            .unwrap();
    }
    assert_eq!(q.stream_length().await.unwrap(), 0);
    assert_eq!(q.dead_letter_length().await.unwrap(), 2);
}

#[tokio::test]
async fn an_entry_enqueued_before_the_group_existed_and_ended_elsewhere_is_taken_not_lost() {
    let stream = format!("baton-test:{}", uuid::Uuid::new_v4());
    let q = Scratch(
        Queue::connect(&redis_url(), &stream, "workers")
            .await
            .unwrap(),
    );
    // The producer is first: its XADD makes the stream, and the group comes later.
    q.enqueue(&job("p1")).await.unwrap();
    tokio::time::sleep(Duration::from_millis(5)).await;
    q.ensure_group().await.unwrap();
    let mut a = q.consumer("a").await.unwrap();
    let d = a.next(1, SHORT).await.unwrap().remove(0);
    tokio::time::sleep(Duration::from_millis(20)).await;
    let taken = q
        .autoclaim("b", Duration::from_millis(10), 10)
        .await
        .unwrap();
    assert_eq!(
        q.try_start("b", &taken[0], LEASE).await.unwrap(),
        Start::Started
    );
    assert!(q.finish("b", &taken[0], Ending::Ack).await.unwrap());
    assert_eq!(
        q.heartbeat("a", &[(d.id.clone(), Some("p1".into()))], LEASE)
            .await
            .unwrap(),
        [Holding::Taken],
        "ended by b, not lost with Redis's data"
    );
}

#[tokio::test]
async fn a_cancel_request_is_seen_for_its_build_only_until_it_is_cleared() {
    let q = queue().await;
    assert_eq!(
        q.cancel_requested(&["b1", "b2"]).await.unwrap(),
        [false, false]
    );
    q.request_cancel("b2").await.unwrap();
    assert_eq!(
        q.cancel_requested(&["b1", "b2"]).await.unwrap(),
        [false, true]
    );
    q.clear_cancel("b2").await.unwrap();
    assert_eq!(q.cancel_requested(&["b2"]).await.unwrap(), [false]);
    assert!(q.cancel_requested(&[]).await.unwrap().is_empty());
}
