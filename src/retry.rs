//! The retry policy: which failures are retried, after how long, through which delay queue;
//! and the backoff between reconnection tries.
//!
//! This is the only module that uses the `backoff` crate (it is flagged unmaintained
//! upstream; swapping it touches this file alone). It decides; it does not publish anything.
//!
//! Delays are served by delay queues, one per level, because RabbitMQ expires per-message TTLs
//! only at the head of a queue: in a queue whose messages all share one TTL, none waits behind
//! a longer one. Jitter spreads each message's `expiration` within ±`jitter` of its level
//! (the queue's TTL is the top of that band), so a message can wait at most the band's width
//! behind another of the same level.

use std::time::Duration;

use backoff::backoff::Backoff;
use backoff::{ExponentialBackoff, ExponentialBackoffBuilder};

use crate::config::{BrokerSettings, RetrySettings};
use crate::protocol::ErrorCode;

/// What to do with a task whose attempt failed.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// Republish it to `queue` with this per-message `expiration`; it comes back to the
    /// requests queue when that passes.
    Retry {
        /// The delay queue for this level.
        queue: String,
        /// This message's delay (the level's delay, jittered).
        delay: Duration,
    },
    /// No more attempts: error reply and dead letter.
    GiveUp,
}

/// A delay queue: its name and the TTL that sends messages back to the requests queue.
#[derive(Debug, Clone, PartialEq)]
pub struct DelayQueue {
    /// Queue name, e.g. `warren.delay.1s`.
    pub name: String,
    /// `x-message-ttl` of the queue (the top of the level's jitter band).
    pub ttl: Duration,
}

/// The configured retry policy.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    max_attempts: u32,
    /// Nominal delay after attempt n (index n - 1), n = 1..max_attempts.
    levels: Vec<Duration>,
    jitter: f64,
    retry_timeouts: bool,
    queue_prefix: String,
}

impl RetryPolicy {
    /// The policy described by `[retry]`.
    pub fn new(settings: &RetrySettings) -> Self {
        let mut ladder = exponential(
            Duration::from_millis(settings.initial_delay_ms),
            settings.multiplier,
            Duration::from_millis(settings.max_delay_ms),
            0.0,
        );
        let max_delay = Duration::from_millis(settings.max_delay_ms);
        let levels = (1..settings.max_attempts)
            .map(|_| round_to_ms(ladder.next_backoff().unwrap_or(max_delay)))
            .collect();
        RetryPolicy {
            max_attempts: settings.max_attempts,
            levels,
            jitter: settings.jitter,
            retry_timeouts: settings.retry_timeouts,
            queue_prefix: settings.queue_prefix.clone(),
        }
    }

    /// Attempts in all.
    pub fn max_attempts(&self) -> u32 {
        self.max_attempts
    }

    /// Whether a failure with `code` is worth another attempt under this policy.
    pub fn retries(&self, code: ErrorCode) -> bool {
        match code {
            ErrorCode::Timeout => self.retry_timeouts,
            other => other.retryable(),
        }
    }

    /// What to do after attempt `attempt` (counted from 1) failed with `code`.
    pub fn decide(&self, code: ErrorCode, attempt: u32) -> Decision {
        if !self.retries(code) || attempt >= self.max_attempts {
            return Decision::GiveUp;
        }
        let index = (attempt.max(1) - 1) as usize;
        let Some(&nominal) = self.levels.get(index) else {
            return Decision::GiveUp;
        };
        let delay = exponential(nominal, 1.0, nominal * 2, self.jitter)
            .next_backoff()
            .map_or(nominal, round_to_ms)
            .min(self.band_top(nominal));
        Decision::Retry {
            queue: self.queue_name(nominal),
            delay,
        }
    }

    /// Every delay queue the policy uses, one per distinct level.
    pub fn delay_queues(&self) -> Vec<DelayQueue> {
        let mut queues: Vec<DelayQueue> = Vec::new();
        for &level in &self.levels {
            let name = self.queue_name(level);
            if !queues.iter().any(|q| q.name == name) {
                queues.push(DelayQueue {
                    name,
                    ttl: self.band_top(level),
                });
            }
        }
        queues
    }

    fn band_top(&self, nominal: Duration) -> Duration {
        round_to_ms(nominal.mul_f64(1.0 + self.jitter))
    }

    fn queue_name(&self, nominal: Duration) -> String {
        let ms = nominal.as_millis();
        let label = if ms.is_multiple_of(1000) {
            format!("{}s", ms / 1000)
        } else {
            format!("{ms}ms")
        };
        format!("{}.{label}", self.queue_prefix)
    }
}

/// Exponential backoff between reconnection tries, from `[broker]`.
pub struct ReconnectBackoff {
    inner: ExponentialBackoff,
    max: Duration,
}

impl ReconnectBackoff {
    /// Starts at `reconnect_initial_ms`, doubles, caps at `reconnect_max_ms`, ±20% jitter,
    /// and never gives up.
    pub fn new(settings: &BrokerSettings) -> Self {
        Self::between(
            Duration::from_millis(settings.reconnect_initial_ms),
            Duration::from_millis(settings.reconnect_max_ms),
        )
    }

    /// Starts at `initial`, doubles, caps at `max`, ±20% jitter (also the webhook retries).
    pub fn between(initial: Duration, max: Duration) -> Self {
        ReconnectBackoff {
            inner: exponential(initial, 2.0, max, 0.2),
            max,
        }
    }

    /// The delay before the next try.
    pub fn next_delay(&mut self) -> Duration {
        self.inner.next_backoff().unwrap_or(self.max)
    }

    /// Back to the initial delay (after a connection that worked).
    pub fn reset(&mut self) {
        self.inner.reset();
    }
}

fn exponential(
    initial: Duration,
    multiplier: f64,
    max: Duration,
    randomization: f64,
) -> ExponentialBackoff {
    let mut backoff = ExponentialBackoffBuilder::new()
        .with_initial_interval(initial)
        .with_multiplier(multiplier)
        .with_max_interval(max)
        .with_randomization_factor(randomization)
        .with_max_elapsed_time(None)
        .build();
    backoff.reset();
    backoff
}

fn round_to_ms(d: Duration) -> Duration {
    Duration::from_millis(d.as_millis().max(1) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(max_attempts: u32, jitter: f64) -> RetrySettings {
        RetrySettings {
            max_attempts,
            initial_delay_ms: 1000,
            multiplier: 4.0,
            max_delay_ms: 30_000,
            jitter,
            retry_timeouts: true,
            queue_prefix: "warren.delay".into(),
        }
    }

    #[test]
    fn delays_grow_by_the_multiplier_up_to_the_cap_one_queue_per_level() {
        let policy = RetryPolicy::new(&settings(5, 0.0));
        let names: Vec<_> = policy.delay_queues().into_iter().map(|q| q.name).collect();
        assert_eq!(
            names,
            [
                "warren.delay.1s",
                "warren.delay.4s",
                "warren.delay.16s",
                "warren.delay.30s"
            ]
        );
        assert_eq!(
            policy.decide(ErrorCode::Timeout, 2),
            Decision::Retry {
                queue: "warren.delay.4s".into(),
                delay: Duration::from_secs(4)
            }
        );
    }

    #[test]
    fn the_last_attempt_and_non_retryable_codes_give_up() {
        let policy = RetryPolicy::new(&settings(3, 0.0));
        assert!(matches!(
            policy.decide(ErrorCode::InferenceFailed, 1),
            Decision::Retry { .. }
        ));
        assert!(matches!(
            policy.decide(ErrorCode::Internal, 2),
            Decision::Retry { .. }
        ));
        assert_eq!(policy.decide(ErrorCode::Internal, 3), Decision::GiveUp);
        for code in [
            ErrorCode::InvalidRequest,
            ErrorCode::PromptTooLong,
            ErrorCode::Expired,
        ] {
            assert_eq!(policy.decide(code, 1), Decision::GiveUp, "{code}");
        }
    }

    #[test]
    fn timeouts_retry_only_when_configured() {
        let mut s = settings(3, 0.0);
        s.retry_timeouts = false;
        assert_eq!(
            RetryPolicy::new(&s).decide(ErrorCode::Timeout, 1),
            Decision::GiveUp
        );
    }

    #[test]
    fn one_attempt_means_no_retry_and_no_delay_queue() {
        let policy = RetryPolicy::new(&settings(1, 0.1));
        assert!(policy.delay_queues().is_empty());
        assert_eq!(policy.decide(ErrorCode::Timeout, 1), Decision::GiveUp);
    }

    #[test]
    fn jitter_stays_within_the_band_and_under_the_queue_ttl() {
        let policy = RetryPolicy::new(&settings(3, 0.2));
        let ttl = policy.delay_queues()[0].ttl;
        assert_eq!(ttl, Duration::from_millis(1200));
        let mut seen = std::collections::HashSet::new();
        for _ in 0..200 {
            let Decision::Retry { delay, queue } = policy.decide(ErrorCode::Timeout, 1) else {
                panic!("should retry")
            };
            assert_eq!(queue, "warren.delay.1s");
            assert!(
                delay >= Duration::from_millis(800) && delay <= ttl,
                "{delay:?}"
            );
            seen.insert(delay);
        }
        assert!(seen.len() > 10, "delays should spread: {seen:?}");
    }

    #[test]
    fn sub_second_levels_are_named_in_milliseconds() {
        let mut s = settings(3, 0.0);
        s.initial_delay_ms = 250;
        s.multiplier = 2.0;
        let names: Vec<_> = RetryPolicy::new(&s)
            .delay_queues()
            .into_iter()
            .map(|q| q.name)
            .collect();
        assert_eq!(names, ["warren.delay.250ms", "warren.delay.500ms"]);
    }
}
