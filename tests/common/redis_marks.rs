//! The Redis the tests share (started by `make redis-up`), and a look at the finished marks
//! a worker with `worker.redis_url` records there.

use std::time::{Duration, Instant};

use super::PATIENCE;

pub const REDIS: &str = "redis://127.0.0.1:6379";

/// Waits until Redis holds `key` (a worker's finished mark follows its commit by a moment).
pub async fn wait_for_mark(key: &str) {
    let client = redis::Client::open(REDIS).expect("a Redis URL");
    let mut redis = client
        .get_multiplexed_async_connection()
        .await
        .expect("Redis answers");
    let deadline = Instant::now() + PATIENCE;
    loop {
        let exists: bool = redis::cmd("EXISTS")
            .arg(key)
            .query_async(&mut redis)
            .await
            .expect("EXISTS");
        if exists {
            return;
        }
        assert!(Instant::now() < deadline, "{key} was never recorded");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}
