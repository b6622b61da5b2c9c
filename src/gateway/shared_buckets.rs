//! Rate-limit buckets kept in Redis, so that a key's limit holds across every gateway
//! replica: one atomic Lua script per charge, the generic cell rate algorithm (GCRA, what
//! governor runs in-process): a bucket is its "theoretical arrival time", refilled
//! continuously at `limit` units a minute, with room for `limit` at once. Redis's own clock
//! (`TIME`) decides, so replicas whose clocks differ agree. A charge may be negative: the
//! gateway refunds what a request's estimate overcounted once its reply says what it used.

use std::sync::Arc;
use std::time::Duration;

use crate::redis_link::{RedisError, RedisLink};

/// Takes `ARGV[3]` units (a negative number refunds) from the bucket `KEYS[1]` that refills
/// one unit every `ARGV[1]` µs and holds at most `ARGV[2]` µs of units. A charge that does
/// not fit is refused unless `ARGV[4]` is 1 (force: a correction after the fact). Answers
/// {taken (0/1), µs until it would fit, units left, µs until the bucket is full again}.
const GCRA: &str = r"
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000000 + tonumber(time[2])
local interval = tonumber(ARGV[1])
local capacity = tonumber(ARGV[2])
local units = tonumber(ARGV[3])
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local next_tat = tat + units * interval
if units > 0 and ARGV[4] ~= '1' and next_tat - capacity > now then
  return {0, next_tat - capacity - now, math.floor((capacity - (tat - now)) / interval), tat - now}
end
if next_tat < now then next_tat = now end
local ttl_ms = math.ceil((next_tat - now) / 1000) + 1000
redis.call('SET', KEYS[1], string.format('%.0f', next_tat), 'PX', ttl_ms)
return {1, 0, math.floor((capacity - (next_tat - now)) / interval), next_tat - now}
";

/// A bucket's answer to a charge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verdict {
    /// Whether the units were taken.
    pub taken: bool,
    /// How long until they would be (zero when taken).
    pub retry_after: Duration,
    /// Units left in the bucket after the charge.
    pub remaining: u64,
    /// How long until the bucket is full again.
    pub full_in: Duration,
}

/// One kind of limit (`requests`, `tokens`) at `per_minute` units a minute.
#[derive(Debug, Clone, Copy)]
pub struct Rate {
    kind: &'static str,
    per_minute: u32,
}

impl Rate {
    /// `per_minute` units a minute of `kind`; `None` when 0 (unlimited).
    pub fn new(kind: &'static str, per_minute: u32) -> Option<Rate> {
        (per_minute > 0).then_some(Rate { kind, per_minute })
    }

    /// The capacity in units (a full minute's worth).
    pub fn capacity(&self) -> u32 {
        self.per_minute
    }

    /// µs between two units (fractional: a whole number would round large limits off), and
    /// the bucket's capacity in µs (a minute: `per_minute` units).
    fn script_args(&self) -> (f64, u64) {
        (60_000_000.0 / f64::from(self.per_minute.max(1)), 60_000_000)
    }
}

/// The buckets of every key, in Redis under `warren:ratelimit:`.
pub struct SharedBuckets {
    redis: Arc<RedisLink>,
}

impl SharedBuckets {
    /// Buckets kept in `redis`.
    pub fn new(redis: Arc<RedisLink>) -> SharedBuckets {
        SharedBuckets { redis }
    }

    /// Takes `units` from `owner`'s bucket of `rate` (refused when it does not fit).
    pub async fn take(&self, rate: Rate, owner: &str, units: i64) -> Result<Verdict, RedisError> {
        self.charge(rate, owner, units, false).await
    }

    /// Charges (positive) or refunds (negative) `units` after the fact: never refused.
    pub async fn correct(&self, rate: Rate, owner: &str, units: i64) -> Result<(), RedisError> {
        self.charge(rate, owner, units, true).await.map(|_| ())
    }

    async fn charge(
        &self,
        rate: Rate,
        owner: &str,
        units: i64,
        force: bool,
    ) -> Result<Verdict, RedisError> {
        let (interval, capacity) = rate.script_args();
        let key = bucket_key(rate.kind, owner);
        let args = [
            format!("{interval:.6}"),
            capacity.to_string(),
            units.to_string(),
            if force { "1" } else { "0" }.to_owned(),
        ];
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let (taken, wait_us, remaining, full_in_us): (i64, i64, i64, i64) =
            self.redis.script(GCRA, &key, &args).await?;
        Ok(Verdict {
            taken: taken == 1,
            retry_after: Duration::from_micros(wait_us.max(0) as u64),
            remaining: remaining.max(0) as u64,
            full_in: Duration::from_micros(full_in_us.max(0) as u64),
        })
    }
}

/// The Redis key of `owner`'s bucket of `kind`: the owner is a hash of the API key, never
/// the key itself.
fn bucket_key(kind: &str, owner: &str) -> String {
    let owner = if owner.is_empty() { "anonymous" } else { owner };
    format!("warren:ratelimit:{kind}:{owner}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_minute_of_units_spreads_evenly_and_fills_the_bucket() {
        let rate = Rate::new("requests", 4).unwrap();
        assert_eq!(rate.script_args(), (15_000_000.0, 60_000_000));
        assert_eq!(rate.capacity(), 4);
        assert!(Rate::new("tokens", 0).is_none(), "0 is unlimited");
        // A large limit keeps its exact rate: 40 million a minute is one per 1.5 µs.
        let fast = Rate::new("tokens", 40_000_000).unwrap();
        assert_eq!(fast.script_args(), (1.5, 60_000_000));
    }

    #[test]
    fn buckets_are_named_by_kind_and_owner_hash() {
        assert_eq!(bucket_key("tokens", "ab12"), "warren:ratelimit:tokens:ab12");
        assert_eq!(
            bucket_key("requests", ""),
            "warren:ratelimit:requests:anonymous"
        );
    }
}
