//! Cancel requests on their way to the worker that runs the build: the hash `<stream>:cancel`
//! (build id → when it was asked, in ms). The ledger decides what a cancel does; this hash only
//! carries the request to whichever replica holds the build, which looks at it with every
//! heartbeat, so a cancel reaches a worker on another machine within a heartbeat.

use super::*;

impl Queue {
    /// The hash of cancel requests of this stream.
    fn cancel_key(&self) -> String {
        format!("{}:cancel", self.stream)
    }

    /// Asks the worker that runs `build_id` to stop it.
    pub async fn request_cancel(&self, build_id: &str) -> Result<(), QueueError> {
        let mut conn = self.conn.clone();
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let _: i64 = redis::cmd("HSET")
            .arg(self.cancel_key())
            .arg(build_id)
            .arg(now_ms)
            .query_async(&mut conn)
            .await?;
        Ok(())
    }

    /// Which of `build_ids` someone asked to cancel, in their order.
    pub async fn cancel_requested(&self, build_ids: &[&str]) -> Result<Vec<bool>, QueueError> {
        if build_ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut conn = self.conn.clone();
        let asked: Vec<Option<String>> = redis::cmd("HMGET")
            .arg(self.cancel_key())
            .arg(build_ids)
            .query_async(&mut conn)
            .await?;
        Ok(asked.iter().map(Option::is_some).collect())
    }

    /// Forgets the request to cancel `build_id`, once its job has ended.
    pub async fn clear_cancel(&self, build_id: &str) -> Result<(), QueueError> {
        let mut conn = self.conn.clone();
        let _: i64 = redis::cmd("HDEL")
            .arg(self.cancel_key())
            .arg(build_id)
            .query_async(&mut conn)
            .await?;
        Ok(())
    }
}
