//! The worker's background loops beside reading and dispatching: taking over entries a dead
//! replica left, the heartbeat (and what its answer means, see `reconcile`), the wake channel,
//! and probing the CLI while paused on its credentials.

use std::time::Duration;

use baton_queue::Wake;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::reconcile::{Action, Seen, reconcile};
use crate::{CLAIM_BATCH, Phase, StreamId, Worker};

impl Worker {
    /// Takes over entries nobody refreshed for the claim timeout: their worker died, or handed
    /// them back.
    pub(crate) fn claim_loop(
        &self,
        shutdown: CancellationToken,
    ) -> impl std::future::Future<Output = ()> + Send + 'static {
        let this = self.clone();
        async move {
            let every = (this.ctx.scheduling.claim_idle / 4)
                .clamp(Duration::from_millis(250), Duration::from_secs(2));
            loop {
                tokio::select! {
                    _ = tokio::time::sleep(every) => {}
                    _ = shutdown.cancelled() => return,
                }
                if this.paused().is_some() || this.held_count().0 >= this.ctx.scheduling.max_held {
                    continue;
                }
                match this
                    .ctx
                    .queue
                    .autoclaim(&this.consumer, this.ctx.scheduling.claim_idle, CLAIM_BATCH)
                    .await
                {
                    Ok(taken) if !taken.is_empty() => {
                        this.ctx.metrics.claims.inc_by(taken.len() as u64);
                        info!(entries = taken.len(), "took over entries a replica left");
                        this.hold(taken);
                    }
                    Ok(_) => {}
                    Err(e) => {
                        warn!(error = %e, "claim pass failed");
                        this.recover_group(&e).await;
                    }
                }
            }
        }
    }

    /// Refreshes every held entry and lease; cancels the jobs whose entries another worker took.
    pub(crate) fn heartbeat_loop(
        &self,
        stop: CancellationToken,
    ) -> impl std::future::Future<Output = ()> + Send + 'static {
        let this = self.clone();
        async move {
            loop {
                tokio::select! {
                    _ = tokio::time::sleep(this.ctx.scheduling.heartbeat) => {}
                    _ = stop.cancelled() => return,
                }
                let entries: Vec<(String, Option<String>)> = {
                    let state = this.state.lock().expect("state lock");
                    state
                        .held
                        .values()
                        .map(|h| {
                            let project = h.delivery.project.clone().filter(|_| h.in_slot());
                            (h.delivery.id.clone(), project)
                        })
                        .collect()
                };
                let beat = tokio::time::Instant::now();
                let holdings = match this
                    .ctx
                    .queue
                    .heartbeat(&this.consumer, &entries, this.ctx.scheduling.claim_idle)
                    .await
                {
                    Ok(h) => h,
                    Err(e) => {
                        let running = entries.iter().filter(|(_, p)| p.is_some()).count();
                        match this.ctx.hold.lapsed() {
                            Some(ago) if running > 0 => error!(
                                error = %e,
                                running,
                                lapsed_secs = ago.as_secs_f64(),
                                "heartbeat failed and this worker's hold on its jobs has run out: its CLI runs are stopped, since another replica may take the jobs over"
                            ),
                            _ => warn!(error = %e, "heartbeat failed"),
                        }
                        this.recover_group(&e).await;
                        continue;
                    }
                };
                this.ctx.hold.renew(beat);
                this.ctx
                    .agent
                    .hold_runs_until(this.ctx.hold.expires_at_std());
                // With every heartbeat, so a cancel reaches its build within one.
                if let Err(e) = this.ctx.cancels.poll(&this.ctx.queue).await {
                    warn!(error = %e, "could not read cancel requests");
                }
                let mut requeue = Vec::new();
                {
                    let mut state = this.state.lock().expect("state lock");
                    for ((id, _), holding) in entries.iter().zip(holdings) {
                        let key = StreamId::parse(id);
                        let Some(held) = state.held.get_mut(&key) else {
                            continue;
                        };
                        let seen = Seen {
                            running: held.in_slot(),
                            ending: matches!(held.phase, Phase::Ending),
                            vanished: held.vanished,
                        };
                        let project = held.delivery.project.as_deref().unwrap_or("-");
                        match reconcile(seen, holding) {
                            Action::Keep => {}
                            Action::StopRun | Action::Forget => {
                                warn!(
                                    entry = %id,
                                    project_id = project,
                                    "another worker took this entry; dropping it"
                                );
                                match held.signals() {
                                    Some(signals) => signals.lost.cancel(),
                                    None => {
                                        state.held.remove(&key);
                                    }
                                }
                            }
                            Action::MarkLost => {
                                this.ctx.metrics.lost_entries.inc();
                                let next = if seen.running {
                                    "running entry; the job runs on"
                                } else {
                                    "waiting entry; enqueueing its job again at the next heartbeat"
                                };
                                warn!(
                                    entry = %id,
                                    project_id = project,
                                    "Redis lost this {next} (did it restart without its data?)"
                                );
                                held.vanished = true;
                            }
                            Action::Requeue => {
                                if let Some(held) = state.held.remove(&key) {
                                    requeue.push(held.delivery);
                                }
                            }
                        }
                    }
                }
                // The copies arrive through the stream, like any new entry.
                for delivery in &requeue {
                    this.requeue(delivery).await;
                }
            }
        }
    }

    /// Wakes the dispatcher whenever any worker ends or hands back an entry: a project this worker
    /// waits on may be free now.
    pub(crate) fn wake_loop(
        &self,
        stop: CancellationToken,
    ) -> impl std::future::Future<Output = ()> + Send + 'static {
        let this = self.clone();
        async move {
            while !stop.is_cancelled() {
                let wake = this.wake.clone();
                let state = this.state.clone();
                let watch = this.ctx.queue.watch_wakes(move |what| {
                    {
                        let mut state = state.lock().expect("state lock");
                        match what {
                            Wake::Freed(project) => {
                                state.freed.insert(project);
                            }
                            Wake::Any => state.retry_all = true,
                        }
                    }
                    wake.notify_one();
                });
                tokio::select! {
                    ended = watch => {
                        if let Err(e) = ended {
                            warn!(error = %e, "lost the wake channel; waiting entries retry on their tick");
                        }
                    }
                    _ = stop.cancelled() => return,
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }

    /// While paused on an authentication failure, probes the CLI now and then; resumes when it works.
    pub(crate) fn auth_probe_loop(
        &self,
        shutdown: CancellationToken,
    ) -> impl std::future::Future<Output = ()> + Send + 'static {
        let this = self.clone();
        async move {
            loop {
                tokio::select! {
                    _ = tokio::time::sleep(this.ctx.scheduling.auth_probe_interval) => {}
                    _ = shutdown.cancelled() => return,
                }
                // Only a pause on credentials is probed; a misconfiguration does not pass.
                if this.state.lock().expect("state lock").paused.is_none() {
                    continue;
                }
                if this.ctx.probe_cli().await {
                    info!("the CLI's credentials work again; taking jobs");
                    this.state.lock().expect("state lock").paused = None;
                    this.wake.notify_one();
                } else {
                    warn!("the CLI's credentials still fail; staying paused");
                }
            }
        }
    }
}
