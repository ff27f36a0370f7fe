//! The worker: one replica of the fleet. It reads entries from the consumer group, keeps every entry
//! it holds fresh with a heartbeat, takes over entries of replicas that died, starts each job when
//! its project is free (one job per project at a time, in enqueue order), runs up to
//! `BATON_CONCURRENCY` jobs at once, and on shutdown hands back what it could not finish.

mod background;
pub mod cancels;
pub mod config;
pub mod end;
pub mod error;
pub mod hold;
pub mod http;
pub mod job;
pub mod metrics;
mod panics;
mod plans;
pub mod progress;
mod reconcile;
mod report;
mod runs;
pub mod transcripts;
pub mod webhooks;
mod workspace;

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use baton_agent::Agent;
use baton_core::JobKind;
use baton_core::events::Event;
use baton_ledger::Ledger;
use baton_queue::{DeadLetter, Delivery, Ending, Holding, Queue, QueueError, Start};
use error::{WorkerError, ensure};
use tokio::sync::Notify;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, error, info, warn};

pub use config::{Config, Scheduling};
pub use job::{JobContext, JobEnd, JobSignals};

/// How long one wait for new entries lasts before the loop looks at shutdown again.
const READ_BLOCK: Duration = Duration::from_secs(1);
/// How often waiting entries retry their project's lease when no announcement wakes them first.
const DISPATCH_TICK: Duration = Duration::from_millis(250);
/// Entries taken over per claim pass.
const CLAIM_BATCH: usize = 100;

/// How many entries a worker holds waiting per slot, at most: enough to find another project's
/// job when the entries it read first wait behind busy projects, few enough that it neither
/// hoards the backlog from other replicas nor spends Redis calls on entries that cannot start.
const WAITING_PER_SLOT: usize = 4;

/// An entry this worker holds.
struct Held {
    delivery: Delivery,
    phase: Phase,
    /// A heartbeat found that Redis lost the entry. A running job runs on, holding its project's
    /// lease; a waiting entry is enqueued again at the next heartbeat.
    vanished: bool,
}

/// Where a held entry is.
enum Phase {
    /// Waiting for its project. `blocked`: its last try found the project busy or an older entry
    /// of it unfinished, or it waits behind another entry of its project held here.
    Waiting { blocked: bool },
    /// Its job runs; the signals end it early.
    Running(JobSignals),
    /// Its job has ended and the entry is being ended: nobody holding it is expected from now on.
    /// It keeps its slot and its project's lease until then.
    Ending,
}

impl Held {
    /// Whether it holds a slot: running, or ending.
    fn in_slot(&self) -> bool {
        !matches!(self.phase, Phase::Waiting { .. })
    }

    /// The signals of its running job.
    fn signals(&self) -> Option<&JobSignals> {
        match &self.phase {
            Phase::Running(signals) => Some(signals),
            _ => None,
        }
    }
}

/// What the worker holds and whether it takes work, shared by its tasks.
#[derive(Default)]
struct State {
    /// Held entries by stream id; the map's order is the stream's order.
    held: BTreeMap<StreamId, Held>,
    /// Why the worker takes no new jobs, when it does not.
    paused: Option<String>,
    /// Projects whose job ended since the last dispatch: their waiting entries may start now.
    freed: HashSet<String>,
    /// Entries were handed back somewhere: every waiting entry may start now.
    retry_all: bool,
}

/// A stream id, ordered as the stream orders them (`<ms>-<seq>`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct StreamId(u64, u64, String);

impl StreamId {
    fn parse(id: &str) -> StreamId {
        let (ms, seq) = id.split_once('-').unwrap_or((id, "0"));
        StreamId(
            ms.parse().unwrap_or(u64::MAX),
            seq.parse().unwrap_or(0),
            id.to_string(),
        )
    }
}

/// A running worker's parts.
pub struct Worker {
    ctx: JobContext,
    /// Why this worker's configuration cannot run any job, when it cannot; it takes none.
    misconfigured: Option<String>,
    consumer: String,
    state: Arc<Mutex<State>>,
    wake: Arc<Notify>,
    /// Wakes the reader when a slot may have come free (a job ended, an entry turned out blocked).
    room: Arc<Notify>,
    /// One permit per slot: a running job holds one until its entry is ended.
    slots: Arc<tokio::sync::Semaphore>,
    claude_bin: PathBuf,
    metrics_addr: Option<std::net::SocketAddr>,
}

impl Worker {
    /// Connects to Redis and Postgres, applies migrations unless told not to, and joins the group.
    pub async fn connect(config: &Config) -> Result<Worker, WorkerError> {
        let queue = Queue::connect(
            &config.connection.redis_url,
            &config.connection.stream,
            &config.connection.group,
        )
        .await?
        .with_dead_letter_maxlen(config.dead_letter_maxlen);
        queue.ensure_group().await?;
        let ledger = Ledger::connect(
            &config.connection.database_url,
            &config.connection.db_schema,
        )
        .await?
        .for_stream(&config.connection.stream);
        if !config.no_migrate {
            ledger.migrate().await?;
        }
        std::fs::create_dir_all(&config.workspace_root)?;
        resolve_program(&config.claude_bin)?;
        let scheduling = config.scheduling()?;
        let agent_settings = config.operator_agent()?;
        // Started all the same, so that it says why on /readyz; it takes no job.
        let misconfigured = baton_agent::refused_as_root(Some(&agent_settings.permission_mode))
            .map(|why| {
                let why = format!(
                    "BATON_PERMISSION_MODE=bypassPermissions, but this worker runs as root, and the claude CLI refuses that: {why}"
                );
                error!("{why}; taking no jobs");
                why
            });
        let agent = Agent::new(config.agent());
        let transcripts = transcripts::TranscriptSettings {
            config_dir: agent.claude_config_dir(),
            max_bytes: config.transcript_max_bytes,
            keep_ids: config.cli_session_ids == config::CliSessionIds::Keep,
        };
        info!(config_dir = %transcripts.config_dir.display(), "the CLI keeps its sessions here; the ledger keeps a copy of each");
        Ok(Worker {
            ctx: JobContext {
                queue,
                ledger,
                agent,
                workspace_root: config.workspace_root.canonicalize()?,
                limits: config.limits(),
                policy: config.policy()?,
                scheduling,
                metrics: Arc::new(metrics::Metrics::new()),
                hold: job::Hold::new(scheduling.claim_idle),
                transcripts,
                step_prompts: config.step_prompts()?,
                agent_settings: agent_settings.clone(),
                job_max_budget_usd: config.job_max_budget_usd,
                max_result_bytes: config.max_result_bytes,
                cancels: cancels::Cancels::default(),
                webhooks: Arc::new(config.webhooks()?),
            },
            misconfigured,
            consumer: config.consumer_name(),
            state: Arc::new(Mutex::new(State::default())),
            wake: Arc::new(Notify::new()),
            room: Arc::new(Notify::new()),
            slots: Arc::new(tokio::sync::Semaphore::new(scheduling.concurrency)),
            claude_bin: config.claude_bin.clone(),
            metrics_addr: config.metrics_addr()?,
        })
    }

    /// The worker's metrics.
    pub fn metrics(&self) -> &metrics::Metrics {
        &self.ctx.metrics
    }

    /// Updates the stream gauges from Redis (on each scrape).
    pub async fn refresh_queue_gauges(&self) {
        let q = &self.ctx.queue;
        let m = &self.ctx.metrics;
        if let Ok(n) = q.stream_length().await {
            m.stream_length.set(n as i64);
        }
        if let Ok(n) = q.pending_count().await {
            m.stream_pending.set(n as i64);
        }
        if let Ok(n) = q.lag().await {
            m.stream_lag.set(n as i64);
        }
        if let Ok(n) = q.dead_letter_length().await {
            m.dead_letter_length.set(n as i64);
        }
        m.sync_redis_reconnects(q.connections_replaced());
    }

    /// What stops the worker from running jobs: Redis or Postgres not answering, the CLI missing.
    pub async fn check_dependencies(&self, timeout: Duration) -> Vec<String> {
        let mut problems = Vec::new();
        match tokio::time::timeout(timeout, self.ctx.queue.ping()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => problems.push(format!("redis: {e}")),
            Err(_) => problems.push("redis: no answer".into()),
        }
        match tokio::time::timeout(timeout, self.ctx.ledger.ping()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => problems.push(format!("postgres: {e}")),
            Err(_) => problems.push("postgres: no answer".into()),
        }
        if let Err(e) = resolve_program(&self.claude_bin) {
            problems.push(format!("{e}"));
        }
        problems
    }

    /// What works but risks jobs (for the start's log and readiness): a Redis that keeps nothing
    /// on disk loses the stream, with every job not yet ended, when it restarts.
    pub async fn warnings(&self) -> Vec<String> {
        let mut warnings = Vec::new();
        if self.ctx.queue.keeps_data().await == Some(false) {
            warnings.push(
                "redis keeps nothing on disk (no append-only file, no snapshots): a restart loses every queued job (the ledger keeps them; `baton requeue` enqueues them again); set `appendonly yes`".to_string(),
            );
        }
        warnings
    }

    /// This worker's consumer name.
    pub fn consumer(&self) -> &str {
        &self.consumer
    }

    /// Why the worker takes no new jobs, if it does not (for readiness).
    pub fn paused(&self) -> Option<String> {
        self.misconfigured
            .clone()
            .or_else(|| self.state.lock().expect("state lock").paused.clone())
    }

    /// Runs until `shutdown`: reads, claims, dispatches and heartbeats. After `shutdown`, running
    /// jobs get the grace, then are cancelled; everything unfinished is handed back.
    pub async fn run(&self, shutdown: CancellationToken) -> Result<(), WorkerError> {
        let s = self.ctx.scheduling;
        info!(consumer = %self.consumer, stream = %self.ctx.queue.stream(), group = %self.ctx.queue.group(),
              concurrency = s.concurrency, claim_idle_ms = s.claim_idle.as_millis() as u64, "worker started");
        for warning in self.warnings().await {
            warn!("{warning}");
        }
        // The heartbeat (and the wake channel) must outlive the drain below: jobs still running
        // after shutdown was asked for keep their entries and leases only while it beats, and a
        // lapsed hold would have the supervisor kill their runs mid-grace. It stops last.
        let stop_heartbeat = CancellationToken::new();
        if let Some(addr) = self.metrics_addr {
            let bound =
                http::serve(self.clone(), addr, shutdown.clone(), stop_heartbeat.clone()).await?;
            info!(addr = %bound, "serving /metrics, /healthz and /readyz");
        }
        // Entries read from now on are fresh: the hold starts with the worker.
        self.ctx.hold.renew(tokio::time::Instant::now());
        self.ctx
            .agent
            .hold_runs_until(self.ctx.hold.expires_at_std());
        let mut background = JoinSet::new();
        background.spawn(self.heartbeat_loop(stop_heartbeat.clone()));
        background.spawn(self.claim_loop(shutdown.clone()));
        background.spawn(self.auth_probe_loop(shutdown.clone()));
        background.spawn(self.wake_loop(stop_heartbeat.clone()));
        background.spawn(webhooks::deliver_loop(
            self.ctx.ledger.clone(),
            self.ctx.webhooks.clone(),
            self.ctx.metrics.clone(),
            shutdown.clone(),
        ));
        let mut jobs = JoinSet::new();
        let reader = self.read_loop(shutdown.clone());
        let dispatcher = self.dispatch_loop(shutdown.clone(), &mut jobs);
        tokio::join!(reader, dispatcher);

        // Shutdown: the running jobs get the grace, then are cancelled and handed back.
        info!(
            running = jobs.len(),
            grace_secs = s.shutdown_grace.as_secs(),
            "shutting down"
        );
        if tokio::time::timeout(s.shutdown_grace, drain(&mut jobs))
            .await
            .is_err()
        {
            warn!("grace over; cancelling the running jobs");
            for held in self.state.lock().expect("state lock").held.values() {
                if let Some(signals) = held.signals() {
                    signals.cancel.cancel();
                }
            }
            drain(&mut jobs).await;
        }
        let waiting = self.take_all_waiting();
        self.hand_back(&waiting).await;
        stop_heartbeat.cancel();
        background.shutdown().await;
        // A clean exit takes the consumer out of the group, so the group lists only live
        // replicas; one that handed entries back stays until they are claimed from it.
        match self.ctx.queue.leave(&self.consumer).await {
            Ok(true) => info!(consumer = %self.consumer, "left the consumer group"),
            Ok(false) => {
                info!(consumer = %self.consumer, "stays in the consumer group: it holds handed-back entries")
            }
            Err(e) => warn!(error = %e, "could not leave the consumer group"),
        }
        info!(consumer = %self.consumer, "worker stopped");
        Ok(())
    }

    /// Held entries: (all, running, waiting without being known blocked).
    fn held_count(&self) -> (usize, usize, usize) {
        let state = self.state.lock().expect("state lock");
        let running = self.ctx.scheduling.concurrency - self.slots.available_permits();
        let ready = state
            .held
            .values()
            .filter(|h| matches!(h.phase, Phase::Waiting { blocked: false }))
            .count();
        (state.held.len(), running, ready)
    }

    fn hold(&self, deliveries: Vec<Delivery>) {
        if deliveries.is_empty() {
            return;
        }
        let mut state = self.state.lock().expect("state lock");
        for d in deliveries {
            state.held.entry(StreamId::parse(&d.id)).or_insert(Held {
                delivery: d,
                phase: Phase::Waiting { blocked: false },
                vanished: false,
            });
        }
        drop(state);
        self.wake.notify_one();
    }

    async fn read_loop(&self, shutdown: CancellationToken) {
        let mut consumer = loop {
            match self.ctx.queue.consumer(&self.consumer).await {
                Ok(c) => break c,
                Err(e) => {
                    error!(error = %e, "cannot open the reading connection; retrying");
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                        _ = shutdown.cancelled() => return,
                    }
                }
            }
        };
        while !shutdown.is_cancelled() {
            let (held, running, ready) = self.held_count();
            // Read while a slot would stay free: entries blocked behind a busy project do not hold
            // up other projects' jobs. But the entries waiting are bounded by the slots too (and
            // all held entries by BATON_MAX_HELD): past that, more entries stay in the stream for
            // the other replicas rather than be held here behind busy projects.
            let concurrency = self.ctx.scheduling.concurrency;
            let full = held >= self.ctx.scheduling.max_held
                || running + ready >= concurrency
                || held.saturating_sub(running) >= concurrency * WAITING_PER_SLOT;
            if full || self.paused().is_some() {
                tokio::select! {
                    _ = self.room.notified() => {}
                    _ = tokio::time::sleep(DISPATCH_TICK) => {}
                    _ = shutdown.cancelled() => return,
                }
                continue;
            }
            // Not cut short on shutdown: a reply dropped after the script ran would strand entries.
            // Only as many as there are free slots: more would starve the other replicas.
            let free = self
                .ctx
                .scheduling
                .concurrency
                .saturating_sub(running + ready)
                .max(1);
            match consumer.next(free, READ_BLOCK).await {
                Ok(deliveries) => self.hold(deliveries),
                Err(e) => {
                    error!(error = %e, "reading the job stream failed; retrying");
                    self.recover_group(&e).await;
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    if let Ok(c) = self.ctx.queue.consumer(&self.consumer).await {
                        consumer = c;
                    }
                }
            }
        }
    }

    async fn dispatch_loop(&self, shutdown: CancellationToken, jobs: &mut JoinSet<()>) {
        let mut last_full = tokio::time::Instant::now();
        loop {
            while jobs.try_join_next().is_some() {}
            if shutdown.is_cancelled() {
                return;
            }
            // Waiting entries are tried again when their project is announced free; all of them
            // every DISPATCH_TICK too, for what no announcement covers (a lease that expired with
            // its worker, a lost message).
            let everything = last_full.elapsed() >= DISPATCH_TICK;
            if everything {
                last_full = tokio::time::Instant::now();
            }
            self.dispatch(jobs, everything).await;
            tokio::select! {
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(DISPATCH_TICK) => {}
                _ = shutdown.cancelled() => return,
            }
        }
    }

    /// Starts waiting entries, oldest first, while there are free slots. An entry that waited
    /// before is tried again only when its project was announced free, or with `everything`.
    async fn dispatch(&self, jobs: &mut JoinSet<()>, everything: bool) {
        let candidates: Vec<Delivery> = {
            let mut state = self.state.lock().expect("state lock");
            if state.paused.is_some() {
                return;
            }
            // Only what can start is tried: of each project, the oldest entry this worker holds,
            // unless it runs one of the project's jobs already. A try costs a Redis call, so trying
            // every held entry on every wake grew with the backlog. The others are blocked behind
            // their project's head and leave their slots to other projects' entries.
            let busy: HashSet<String> = state
                .held
                .values()
                .filter(|h| h.in_slot())
                .filter_map(|h| h.delivery.project.clone())
                .collect();
            let everything = everything || std::mem::take(&mut state.retry_all);
            let freed = std::mem::take(&mut state.freed);
            let mut heads = HashSet::new();
            let mut waiting = Vec::new();
            for held in state.held.values_mut() {
                let Phase::Waiting { blocked } = &mut held.phase else {
                    continue;
                };
                match &held.delivery.project {
                    Some(project) if busy.contains(project) || !heads.insert(project.clone()) => {
                        *blocked = true;
                    }
                    // It waited, and nothing says its project is free now.
                    Some(project) if *blocked && !everything && !freed.contains(project) => {}
                    _ => waiting.push(held.delivery.clone()),
                }
            }
            waiting
        };
        for delivery in candidates {
            // A free slot first: a try that starts the job hands it the permit.
            let Ok(slot) = self.slots.clone().try_acquire_owned() else {
                return;
            };
            let key = StreamId::parse(&delivery.id);
            match self
                .ctx
                .queue
                .try_start(&self.consumer, &delivery, self.ctx.scheduling.claim_idle)
                .await
            {
                Ok(Start::Started) => {
                    let signals = JobSignals::default();
                    if let Some(h) = self.state.lock().expect("state lock").held.get_mut(&key) {
                        h.phase = Phase::Running(signals.clone());
                    } else {
                        continue;
                    }
                    let this = self.clone();
                    jobs.spawn(async move { this.run_job(delivery, signals, slot).await });
                }
                // Redis lost it: the heartbeat enqueues it again.
                Ok(Start::Wait | Start::Gone) => {
                    if let Some(h) = self.state.lock().expect("state lock").held.get_mut(&key) {
                        h.phase = Phase::Waiting { blocked: true };
                    }
                    // A blocked entry leaves its slot to entries of other projects.
                    self.room.notify_one();
                }
                Ok(Start::Lost) => {
                    self.state.lock().expect("state lock").held.remove(&key);
                }
                Err(e) => {
                    warn!(error = %e, "starting an entry failed");
                    self.recover_group(&e).await;
                    return;
                }
            }
        }
    }

    async fn run_job(
        &self,
        delivery: Delivery,
        signals: JobSignals,
        slot: tokio::sync::OwnedSemaphorePermit,
    ) {
        let started = tokio::time::Instant::now();
        self.ctx.metrics.jobs_in_flight.inc();
        let job::Processed {
            end,
            event,
            span,
            kind,
        } = self.ctx.process(&delivery, &signals).await;
        self.ctx.metrics.jobs_in_flight.dec();
        let end = if signals.lost.is_cancelled() {
            JobEnd::Fenced
        } else {
            end
        };
        if let Some(held) = self
            .state
            .lock()
            .expect("state lock")
            .held
            .get_mut(&StreamId::parse(&delivery.id))
        {
            held.phase = Phase::Ending;
        }
        self.end_entry(&delivery, &end, event.as_ref())
            .instrument(span)
            .await;
        let kind = kind
            .filter(|_| !matches!(end, JobEnd::DeadLettered { attempts: 0, .. }))
            .map_or("invalid", JobKind::as_str);
        self.ctx
            .metrics
            .job_ended(kind, end.outcome(), started.elapsed().as_secs_f64());
        {
            let mut state = self.state.lock().expect("state lock");
            state.held.remove(&StreamId::parse(&delivery.id));
            // Its project's next entry held here may start now, without waiting for the
            // announcement to come back from Redis.
            if let Some(project) = &delivery.project {
                state.freed.insert(project.clone());
            }
        }
        // The slot is free before the dispatcher is woken to fill it.
        drop(slot);
        self.wake.notify_one();
        self.room.notify_one();
    }

    /// Ends the job's stream entry as its end says: acknowledged, dead-lettered, handed back, or
    /// left alone when a newer claim owns it.
    async fn end_entry(&self, delivery: &Delivery, end: &JobEnd, event: Option<&Event>) {
        info!(
            entry = %delivery.id,
            outcome = end.outcome(),
            session = end.session(),
            reason = end.reason(),
            "job ended"
        );
        let entry = [delivery.clone()];
        match end {
            JobEnd::Completed { .. } | JobEnd::Cancelled { .. } => {
                self.finish(delivery, Ending::Ack, event).await
            }
            JobEnd::DeadLettered { .. } | JobEnd::Conflict(_) => {
                let (reason, attempts) = end.dead_letter().unwrap_or(("", 0));
                let payload = delivery.original();
                let letter = DeadLetter {
                    stream_id: &delivery.id,
                    payload: &payload,
                    reason,
                    attempts,
                    last_error: Some(reason),
                    consumer: &self.consumer,
                };
                self.finish(delivery, Ending::DeadLetter(letter), event)
                    .await
            }
            JobEnd::Fenced => {}
            JobEnd::HandBack(_) => {
                self.publish(event).await;
                self.hand_back(&entry).await
            }
            JobEnd::AuthFailed(why) => {
                self.publish(event).await;
                // Not the job's fault: give back everything and take nothing until the CLI works.
                let reason = format!("the claude CLI cannot authenticate: {why}");
                warn!(%reason, "paused: taking no jobs until a probe of the CLI succeeds");
                self.state.lock().expect("state lock").paused = Some(reason);
                self.hand_back(&entry).await;
                let waiting = self.take_all_waiting();
                self.hand_back(&waiting).await;
            }
        }
    }

    /// Publishes a job's last progress event on its own, when it has one.
    async fn publish(&self, event: Option<&Event>) {
        if let Some(event) = event {
            self.ctx.publish(event).await;
        }
    }

    async fn finish(&self, delivery: &Delivery, ending: Ending<'_>, event: Option<&Event>) {
        let queue = &self.ctx.queue;
        let mut ended = queue
            .finish_with_event(&self.consumer, delivery, ending.clone(), event)
            .await;
        // Redis lost the group: once it is back, the entry (now nobody's) can still be ended, so a
        // dead letter is not lost with it.
        if let Err(e) = &ended
            && self.recover_group(e).await
        {
            ended = queue
                .finish_with_event(&self.consumer, delivery, ending, None)
                .await;
        }
        match ended {
            Ok(true) => {}
            Ok(false) => {
                warn!(entry = %delivery.id, "the entry was taken over before it could be ended")
            }
            // The job's work is recorded; a replica replays it, skips every recorded run, and ends it.
            Err(e) => {
                error!(entry = %delivery.id, error = %e, "could not end the entry; it stays pending")
            }
        }
    }

    /// Removes every held entry that is not running and returns them for handing back.
    fn take_all_waiting(&self) -> Vec<Delivery> {
        let mut state = self.state.lock().expect("state lock");
        let waiting: Vec<StreamId> = state
            .held
            .iter()
            .filter(|(_, h)| !h.in_slot())
            .map(|(k, _)| k.clone())
            .collect();
        waiting
            .into_iter()
            .filter_map(|k| state.held.remove(&k))
            .map(|h| h.delivery)
            .collect()
    }

    /// Gives entries back to the group; those Redis lost are enqueued again instead.
    async fn hand_back(&self, deliveries: &[Delivery]) {
        if deliveries.is_empty() {
            return;
        }
        let entries: Vec<(String, Option<String>)> = deliveries
            .iter()
            .map(|d| (d.id.clone(), d.project.clone()))
            .collect();
        match self.ctx.queue.hand_back(&self.consumer, &entries).await {
            Ok(holdings) => {
                let handed = holdings.iter().filter(|h| **h == Holding::Ours).count();
                info!(entries = handed, "handed entries back to the group");
                for (delivery, holding) in deliveries.iter().zip(holdings) {
                    if holding == Holding::Gone {
                        self.requeue(delivery).await;
                    }
                }
            }
            Err(e) => {
                warn!(error = %e, "could not hand entries back; they return after the claim timeout")
            }
        }
    }

    /// Enqueues again the job of an entry Redis lost, so it is not lost with it.
    async fn requeue(&self, delivery: &Delivery) {
        match self.ctx.queue.requeue(delivery).await {
            Ok(id) => {
                info!(entry = %delivery.id, new_entry = %id, "enqueued the lost entry's job again")
            }
            Err(e) => error!(
                entry = %delivery.id,
                error = %e,
                "could not enqueue the lost entry's job again; the ledger still shows its build unfinished"
            ),
        }
    }

    /// Creates the consumer group again when `e` says Redis no longer has it; returns whether the
    /// group exists again. Without this, a Redis that restarted without its data would leave every
    /// replica failing its reads forever while new jobs pile up.
    async fn recover_group(&self, e: &QueueError) -> bool {
        if !e.is_missing_group() {
            return false;
        }
        match self.ctx.queue.ensure_group().await {
            Ok(created) => {
                // Several of this worker's loops may meet the same loss; one of them creates it.
                if created {
                    self.ctx.metrics.group_recreations.inc();
                    warn!(
                        group = %self.ctx.queue.group(),
                        stream = %self.ctx.queue.stream(),
                        "Redis no longer had the consumer group (did it restart without its data?); created it again"
                    );
                }
                true
            }
            Err(e) => {
                error!(error = %e, "could not create the consumer group again");
                false
            }
        }
    }
}

impl Clone for Worker {
    fn clone(&self) -> Self {
        Worker {
            ctx: self.ctx.clone(),
            misconfigured: self.misconfigured.clone(),
            consumer: self.consumer.clone(),
            state: self.state.clone(),
            wake: self.wake.clone(),
            room: self.room.clone(),
            slots: self.slots.clone(),
            claude_bin: self.claude_bin.clone(),
            metrics_addr: self.metrics_addr,
        }
    }
}

async fn drain(jobs: &mut JoinSet<()>) {
    while jobs.join_next().await.is_some() {}
}

/// Finds the CLI the way the child's spawn will, so a missing one stops the worker at start
/// instead of failing every job.
fn resolve_program(program: &Path) -> Result<PathBuf, WorkerError> {
    if program.components().count() > 1 {
        ensure(program.is_file(), || {
            format!("BATON_CLAUDE_BIN {} does not exist", program.display())
        })?;
        return Ok(program.to_path_buf());
    }
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|dir| dir.join(program))
        .find(|p| p.is_file())
        .ok_or_else(|| {
            WorkerError::Setting(format!(
                "BATON_CLAUDE_BIN {} is not on PATH; install the claude CLI or point BATON_CLAUDE_BIN at it (or at claude-emulator)",
                program.display()
            ))
        })
}
