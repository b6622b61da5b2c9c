//! Who may send a request, and how many: API keys (`Authorization: Bearer KEY`) and per-key
//! buckets for requests and tokens per minute. The buckets live in Redis
//! ([`SharedBuckets`]), so that a key's limit holds across every gateway replica, and a
//! request's token charge (an estimate) is corrected by what its reply used; while Redis is
//! unavailable each replica falls back to buckets of its own (the governor crate). It
//! decides only; the handlers turn its verdicts into responses.

use axum::http::{header, HeaderMap};
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use prometheus_client::metrics::counter::Counter;
use std::collections::HashSet;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::config::{ConfigError, GatewaySettings};
use crate::gateway::errors::ApiError;
use crate::gateway::shared_buckets::{Rate, SharedBuckets};
use crate::redis_link::RedisError;

mod charge;
mod rate_headers;

pub use charge::Charge;
pub use rate_headers::add_rate_headers;
use rate_headers::rate_headers;

/// After Redis fails a charge, the replica's own buckets decide for this long before Redis
/// is asked again (a Redis that times out must not slow every request).
const SHARED_RETRY_AFTER: Duration = Duration::from_secs(5);

/// The most a request waits on the fleet's buckets (a charge, or a correction) before this
/// replica's own decide.
const SHARED_CALL_LIMIT: Duration = Duration::from_millis(500);

/// The bucket key when no API keys are configured: one bucket for every caller.
const ANONYMOUS: &str = "";

/// API keys and rate limits of one gateway.
pub struct Admission {
    keys: HashSet<String>,
    requests: Option<DefaultKeyedRateLimiter<String>>,
    tokens: Option<(DefaultKeyedRateLimiter<String>, NonZeroU32)>,
    clock: DefaultClock,
    request_rate: Option<Rate>,
    token_rate: Option<Rate>,
    /// The fleet's buckets, when any limit is set.
    shared: Option<Arc<SharedBuckets>>,
    /// Until when the replica's own buckets decide (Redis failed a charge).
    shared_down_until: Mutex<Option<Instant>>,
    /// Requests the replica's own buckets decided while the fleet's were unavailable.
    fallbacks: Counter,
}

impl Admission {
    /// From `[gateway]`: `api_keys`/`api_keys_file`, `requests_per_minute`, `tokens_per_minute`;
    /// the fleet's buckets in `redis` (`None`: this replica's own only).
    pub fn new(
        settings: &GatewaySettings,
        redis: Option<Arc<crate::redis_link::RedisLink>>,
    ) -> Result<Admission, ConfigError> {
        let limiter = |per_minute: u32| {
            NonZeroU32::new(per_minute).map(|n| (RateLimiter::keyed(Quota::per_minute(n)), n))
        };
        let request_rate = Rate::new("requests", settings.requests_per_minute);
        let token_rate = Rate::new("tokens", settings.tokens_per_minute);
        let limited = request_rate.is_some() || token_rate.is_some();
        Ok(Admission {
            keys: settings.keys()?.into_iter().collect(),
            requests: limiter(settings.requests_per_minute).map(|(l, _)| l),
            tokens: limiter(settings.tokens_per_minute),
            clock: DefaultClock::default(),
            request_rate,
            token_rate,
            shared: redis
                .filter(|_| limited)
                .map(|redis| Arc::new(SharedBuckets::new(redis))),
            shared_down_until: Mutex::new(None),
            fallbacks: Counter::default(),
        })
    }

    /// Counts into `fallbacks` each request this replica's own buckets decide because the
    /// fleet's (Redis) are unavailable.
    pub fn counting_fallbacks(mut self, fallbacks: Counter) -> Admission {
        self.fallbacks = fallbacks;
        self
    }

    /// The caller's key (the rate-limit bucket), or 401 when keys are required and the
    /// request has none or an unknown one.
    pub fn authenticate(&self, headers: &HeaderMap) -> Result<String, ApiError> {
        if self.keys.is_empty() {
            return Ok(ANONYMOUS.to_owned());
        }
        let presented = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim);
        match presented {
            None => Err(ApiError::unauthorized(
                "no API key: send `Authorization: Bearer YOUR_KEY`",
            )),
            Some(key) if self.keys.contains(key) => Ok(key.to_owned()),
            Some(_) => Err(ApiError::unauthorized("the API key is not valid")),
        }
    }

    /// Takes one request and `tokens` tokens from `key`'s buckets, or says when to retry:
    /// the fleet's buckets in Redis, else (Redis unavailable) this replica's own.
    pub async fn admit(&self, key: &str, tokens: u32) -> Result<Charge, ApiError> {
        if let Some(rate) = self.token_rate {
            if tokens > rate.capacity() {
                return Err(too_many_tokens(tokens, rate.capacity()));
            }
        }
        if let Some(shared) = self.shared_now() {
            let verdict =
                tokio::time::timeout(SHARED_CALL_LIMIT, self.admit_shared(&shared, key, tokens))
                    .await
                    .unwrap_or(Err(RedisError::TimedOut));
            match verdict {
                Ok(verdict) => return verdict,
                Err(e) => {
                    tracing::warn!(
                        error = %e,
                        "rate limits: Redis unavailable, this replica's own buckets decide for now"
                    );
                    if let Ok(mut until) = self.shared_down_until.lock() {
                        *until = Some(Instant::now() + SHARED_RETRY_AFTER);
                    }
                }
            }
        }
        if self.shared.is_some() {
            self.fallbacks.inc();
        }
        self.admit_local(key, tokens)?;
        Ok(Charge::default())
    }

    /// The fleet's buckets, unless Redis failed a moment ago.
    fn shared_now(&self) -> Option<Arc<SharedBuckets>> {
        let shared = self.shared.clone()?;
        let down = self
            .shared_down_until
            .lock()
            .ok()
            .and_then(|until| *until)
            .is_some_and(|until| Instant::now() < until);
        (!down).then_some(shared)
    }

    async fn admit_shared(
        &self,
        shared: &Arc<SharedBuckets>,
        key: &str,
        tokens: u32,
    ) -> Result<Result<Charge, ApiError>, RedisError> {
        let owner = owner_of(key);
        let mut headers = Vec::new();
        if let Some(rate) = self.request_rate {
            let verdict = shared.take(rate, &owner, 1).await?;
            headers.extend(rate_headers("requests", rate, &verdict));
            if !verdict.taken {
                return Ok(Err(
                    requests_exceeded(verdict.retry_after).with_headers(headers)
                ));
            }
        }
        let Some(rate) = self.token_rate else {
            return Ok(Ok(Charge {
                shared: Some((shared.clone(), owner)),
                requests: self.request_rate,
                headers,
                ..Charge::default()
            }));
        };
        let verdict = shared.take(rate, &owner, i64::from(tokens)).await?;
        headers.extend(rate_headers("tokens", rate, &verdict));
        if !verdict.taken {
            // A refused request does not count against the requests either: refunded apart,
            // best effort, so that a slow refund cannot outlast the time limit on this verdict
            // and turn the refusal into this replica's own buckets' admission.
            if let Some(requests) = self.request_rate {
                let (shared, owner) = (shared.clone(), owner.clone());
                tokio::spawn(async move {
                    if let Err(e) = shared.correct(requests, &owner, -1).await {
                        tracing::debug!(error = %e, "a refused request's charge was not refunded");
                    }
                });
            }
            return Ok(Err(
                tokens_exceeded(tokens, verdict.retry_after).with_headers(headers)
            ));
        }
        Ok(Ok(Charge {
            shared: Some((shared.clone(), owner)),
            requests: self.request_rate,
            tokens: Some(rate),
            estimated: tokens,
            headers,
        }))
    }

    /// This replica's own buckets (governor).
    fn admit_local(&self, key: &str, tokens: u32) -> Result<(), ApiError> {
        let key = key.to_owned();
        if let Some(requests) = &self.requests {
            if let Err(not_until) = requests.check_key(&key) {
                return Err(requests_exceeded(
                    not_until.wait_time_from(self.clock.now()),
                ));
            }
        }
        if let Some((bucket, capacity)) = &self.tokens {
            let wanted = NonZeroU32::new(tokens.max(1)).unwrap_or(NonZeroU32::MIN);
            match bucket.check_key_n(&key, wanted) {
                Ok(Ok(())) => {}
                Ok(Err(not_until)) => {
                    return Err(tokens_exceeded(
                        tokens,
                        not_until.wait_time_from(self.clock.now()),
                    ))
                }
                Err(_) => return Err(too_many_tokens(tokens, capacity.get())),
            }
        }
        Ok(())
    }
}

fn requests_exceeded(retry_after: Duration) -> ApiError {
    ApiError::rate_limited(
        "rate_limit_exceeded",
        "requests per minute exceeded for this API key",
        retry_after,
    )
}

fn tokens_exceeded(tokens: u32, retry_after: Duration) -> ApiError {
    ApiError::rate_limited(
        "rate_limit_exceeded",
        format!("tokens per minute exceeded for this API key (this request counts {tokens})"),
        retry_after,
    )
}

fn too_many_tokens(tokens: u32, capacity: u32) -> ApiError {
    ApiError::invalid(
        format!(
            "this request counts {tokens} tokens, more than the {capacity} tokens per minute \
             allowed: ask for fewer `max_tokens`"
        ),
        Some("max_tokens".into()),
    )
}

/// A stable, non-secret name for an API key, for scoping idempotency keys and ownership.
pub fn owner_of(key: &str) -> String {
    if key.is_empty() {
        return String::new();
    }
    hmac_sha256::Hash::hash(key.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The tokens a request counts against `tokens_per_minute`: its prompt's characters / 4
/// (a common estimate; the gateway does not tokenize) plus the tokens it may generate.
/// A task without `max_tokens` counts as [`UNBOUNDED_OUTPUT_ESTIMATE`] generated tokens.
pub fn token_estimate(prompt_chars: usize, max_tokens: Option<u32>) -> u32 {
    let prompt = prompt_chars.div_ceil(4) as u64;
    let output = max_tokens.map_or(UNBOUNDED_OUTPUT_ESTIMATE, u64::from);
    u32::try_from(prompt.saturating_add(output)).unwrap_or(u32::MAX)
}

/// The output a task without `max_tokens` counts for in `gateway.tokens_per_minute` (it
/// may generate until its context is full, which the gateway does not know).
pub const UNBOUNDED_OUTPUT_ESTIMATE: u64 = 1024;

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;
    use std::time::Duration;

    fn block_on<T>(future: impl std::future::Future<Output = T>) -> T {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(future)
    }

    fn settings(keys: &str, rpm: u32, tpm: u32) -> GatewaySettings {
        let mut s = crate::config::Settings::defaults().gateway;
        s.api_keys = keys.to_owned().into();
        s.requests_per_minute = rpm;
        s.tokens_per_minute = tpm;
        s
    }

    fn bearer(key: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::AUTHORIZATION,
            HeaderValue::from_str(&format!("Bearer {key}")).unwrap(),
        );
        headers
    }

    #[test]
    fn without_keys_everyone_is_admitted() {
        let admission = Admission::new(&settings("", 0, 0), None).unwrap();
        assert!(admission.authenticate(&HeaderMap::new()).is_ok());
        assert!(block_on(admission.admit("", 1_000_000)).is_ok());
    }

    #[test]
    fn with_keys_a_missing_or_unknown_key_is_a_401() {
        let admission = Admission::new(&settings("k1, k2", 0, 0), None).unwrap();
        assert_eq!(admission.authenticate(&bearer("k2")).unwrap(), "k2");
        let missing = admission.authenticate(&HeaderMap::new()).unwrap_err();
        assert_eq!(missing.status.as_u16(), 401);
        let unknown = admission.authenticate(&bearer("k3")).unwrap_err();
        assert_eq!(unknown.status.as_u16(), 401);
    }

    #[test]
    fn a_spent_request_bucket_is_a_429_per_key() {
        let admission = Admission::new(&settings("a,b", 2, 0), None).unwrap();
        assert!(block_on(admission.admit("a", 1)).is_ok());
        assert!(block_on(admission.admit("a", 1)).is_ok());
        let err = block_on(admission.admit("a", 1)).unwrap_err();
        assert_eq!(err.status.as_u16(), 429);
        assert!(err.retry_after.unwrap() > Duration::ZERO);
        assert!(
            block_on(admission.admit("b", 1)).is_ok(),
            "each key has its own bucket"
        );
    }

    #[test]
    fn tokens_are_charged_and_an_impossible_request_is_a_400() {
        let admission = Admission::new(&settings("", 0, 100), None).unwrap();
        assert!(block_on(admission.admit("", 60)).is_ok());
        assert_eq!(
            block_on(admission.admit("", 60))
                .unwrap_err()
                .status
                .as_u16(),
            429
        );
        assert_eq!(
            block_on(admission.admit("", 101))
                .unwrap_err()
                .status
                .as_u16(),
            400
        );
    }

    #[test]
    fn the_token_estimate_counts_prompt_characters_by_four_plus_max_tokens() {
        assert_eq!(token_estimate(0, Some(10)), 10);
        assert_eq!(token_estimate(0, None), 1024);
        assert_eq!(token_estimate(9, Some(10)), 13);
    }
}
