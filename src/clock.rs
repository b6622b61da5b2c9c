//! Wall-clock time as the wire contract and OpenAI's objects count it: Unix milliseconds
//! (`deadline_ms`, `x-warren-failed-at`), Unix seconds (AMQP timestamps, `created_at`) and
//! Unix microseconds (`x-warren-published-us`).
//! The one place that reads the system clock for a timestamp; durations use `Instant`.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Time since the Unix epoch; zero for a clock set before it.
pub fn since_epoch() -> Duration {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
}

/// Now, in Unix milliseconds.
pub fn unix_ms() -> u64 {
    u64::try_from(since_epoch().as_millis()).unwrap_or(u64::MAX)
}

/// Now, in Unix microseconds.
pub fn unix_micros() -> u64 {
    u64::try_from(since_epoch().as_micros()).unwrap_or(u64::MAX)
}

/// Now, in Unix seconds.
pub fn unix_seconds() -> u64 {
    since_epoch().as_secs()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seconds_and_milliseconds_agree() {
        let ms = unix_ms();
        let s = unix_seconds();
        // 2020-01-01 in Unix seconds: a clock reading before it is not a real one.
        assert!(s > 1_577_836_800, "{s}");
        assert!(ms / 1000 <= s && s <= ms / 1000 + 1, "{ms} ms vs {s} s");
    }
}
