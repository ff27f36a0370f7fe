//! The queue's shared Redis connection, which gives up a connection that stopped answering.
//!
//! `redis`'s `ConnectionManager` reconnects when its connection breaks, but not when replies stop
//! coming on a connection that stays open: a Redis behind a firewall or NAT that forgot the
//! connection, or a half-open socket. Each command then times out, forever. This wrapper counts
//! consecutive reply timeouts and, after a few, puts a fresh connection in the old one's place.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::{Cmd, Pipeline, RedisFuture, RedisResult, Value};

/// Consecutive reply timeouts after which the connection is replaced. One timeout can be a slow
/// reply; three in a row, on a connection used every second, are a dead one.
const TIMEOUTS_BEFORE_RECONNECT: u32 = 3;

/// A `ConnectionManager` that is replaced after [`TIMEOUTS_BEFORE_RECONNECT`] consecutive reply
/// timeouts. Cheap to clone; clones share the connection.
#[derive(Clone)]
pub(crate) struct Conn(Arc<Shared>);

struct Shared {
    current: Mutex<ConnectionManager>,
    client: redis::Client,
    config: ConnectionManagerConfig,
    timeouts: AtomicU32,
    replaced: AtomicU64,
}

impl Conn {
    /// A connection to `client`'s Redis, opened on first use.
    pub(crate) fn new(client: redis::Client, config: ConnectionManagerConfig) -> RedisResult<Conn> {
        let current = ConnectionManager::new_lazy_with_config(client.clone(), config.clone())?;
        Ok(Conn(Arc::new(Shared {
            current: Mutex::new(current),
            client,
            config,
            timeouts: AtomicU32::new(0),
            replaced: AtomicU64::new(0),
        })))
    }

    /// How many times a connection that stopped answering was replaced.
    pub(crate) fn replaced(&self) -> u64 {
        self.0.replaced.load(Ordering::Relaxed)
    }

    fn current(&self) -> ConnectionManager {
        self.0
            .current
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    fn observe<T>(&self, result: &RedisResult<T>) {
        match result {
            Err(e) if e.is_timeout() => {
                let timeouts = self.0.timeouts.fetch_add(1, Ordering::SeqCst) + 1;
                // Only the call that reaches the count replaces; the others go on counting anew.
                if timeouts == TIMEOUTS_BEFORE_RECONNECT {
                    self.replace();
                }
            }
            _ => self.0.timeouts.store(0, Ordering::SeqCst),
        }
    }

    fn replace(&self) {
        match ConnectionManager::new_lazy_with_config(self.0.client.clone(), self.0.config.clone())
        {
            Ok(fresh) => {
                *self
                    .0
                    .current
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner) = fresh;
                self.0.replaced.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(
                    timeouts = TIMEOUTS_BEFORE_RECONNECT,
                    "Redis stopped answering on its connection; opening a new one"
                );
            }
            Err(e) => tracing::warn!(error = %e, "cannot replace the Redis connection"),
        }
        self.0.timeouts.store(0, Ordering::SeqCst);
    }
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        Box::pin(async move {
            let result = self.current().req_packed_command(cmd).await;
            self.observe(&result);
            result
        })
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        Box::pin(async move {
            let result = self
                .current()
                .req_packed_commands(pipeline, offset, count)
                .await;
            self.observe(&result);
            result
        })
    }

    fn get_db(&self) -> i64 {
        self.current().get_db()
    }
}
