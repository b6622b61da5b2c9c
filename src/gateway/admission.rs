//! Who may send a request, and how many: API keys (`Authorization: Bearer KEY`) and per-key
//! token buckets for requests and tokens per minute (the governor crate). It decides only;
//! the handlers turn its verdicts into responses.

use axum::http::{header, HeaderMap};
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use std::collections::HashSet;
use std::num::NonZeroU32;

use crate::config::{ConfigError, GatewaySettings};
use crate::gateway::errors::ApiError;

/// The bucket key when no API keys are configured: one bucket for every caller.
const ANONYMOUS: &str = "";

/// API keys and rate limits of one gateway.
pub struct Admission {
    keys: HashSet<String>,
    requests: Option<DefaultKeyedRateLimiter<String>>,
    tokens: Option<(DefaultKeyedRateLimiter<String>, NonZeroU32)>,
    clock: DefaultClock,
}

impl Admission {
    /// From `[gateway]`: `api_keys`/`api_keys_file`, `requests_per_minute`, `tokens_per_minute`.
    pub fn new(settings: &GatewaySettings) -> Result<Admission, ConfigError> {
        let limiter = |per_minute: u32| {
            NonZeroU32::new(per_minute).map(|n| (RateLimiter::keyed(Quota::per_minute(n)), n))
        };
        Ok(Admission {
            keys: settings.keys()?.into_iter().collect(),
            requests: limiter(settings.requests_per_minute).map(|(l, _)| l),
            tokens: limiter(settings.tokens_per_minute),
            clock: DefaultClock::default(),
        })
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

    /// Takes one request and `tokens` tokens from `key`'s buckets, or says when to retry.
    pub fn admit(&self, key: &str, tokens: u32) -> Result<(), ApiError> {
        let key = key.to_owned();
        if let Some(requests) = &self.requests {
            if let Err(not_until) = requests.check_key(&key) {
                let wait = not_until.wait_time_from(self.clock.now());
                return Err(ApiError::rate_limited(
                    "rate_limit_exceeded",
                    "requests per minute exceeded for this API key",
                    wait,
                ));
            }
        }
        if let Some((bucket, capacity)) = &self.tokens {
            let wanted = NonZeroU32::new(tokens.max(1)).unwrap_or(NonZeroU32::MIN);
            match bucket.check_key_n(&key, wanted) {
                Ok(Ok(())) => {}
                Ok(Err(not_until)) => {
                    return Err(ApiError::rate_limited(
                        "rate_limit_exceeded",
                        format!("tokens per minute exceeded for this API key (this request counts {tokens})"),
                        not_until.wait_time_from(self.clock.now()),
                    ))
                }
                Err(_) => {
                    return Err(ApiError::invalid(
                        format!(
                            "this request counts {tokens} tokens, more than the {capacity} tokens per minute allowed: ask for fewer `max_tokens`"
                        ),
                        Some("max_tokens".into()),
                    ))
                }
            }
        }
        Ok(())
    }
}

/// The tokens a request counts against `tokens_per_minute`: its prompt's characters / 4
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
        let admission = Admission::new(&settings("", 0, 0)).unwrap();
        assert!(admission.authenticate(&HeaderMap::new()).is_ok());
        assert!(admission.admit("", 1_000_000).is_ok());
    }

    #[test]
    fn with_keys_a_missing_or_unknown_key_is_a_401() {
        let admission = Admission::new(&settings("k1, k2", 0, 0)).unwrap();
        assert_eq!(admission.authenticate(&bearer("k2")).unwrap(), "k2");
        let missing = admission.authenticate(&HeaderMap::new()).unwrap_err();
        assert_eq!(missing.status.as_u16(), 401);
        let unknown = admission.authenticate(&bearer("k3")).unwrap_err();
        assert_eq!(unknown.status.as_u16(), 401);
    }

    #[test]
    fn a_spent_request_bucket_is_a_429_per_key() {
        let admission = Admission::new(&settings("a,b", 2, 0)).unwrap();
        assert!(admission.admit("a", 1).is_ok());
        assert!(admission.admit("a", 1).is_ok());
        let err = admission.admit("a", 1).unwrap_err();
        assert_eq!(err.status.as_u16(), 429);
        assert!(err.retry_after.unwrap() > Duration::ZERO);
        assert!(
            admission.admit("b", 1).is_ok(),
            "each key has its own bucket"
        );
    }

    #[test]
    fn tokens_are_charged_and_an_impossible_request_is_a_400() {
        let admission = Admission::new(&settings("", 0, 100)).unwrap();
        assert!(admission.admit("", 60).is_ok());
        assert_eq!(admission.admit("", 60).unwrap_err().status.as_u16(), 429);
        assert_eq!(admission.admit("", 101).unwrap_err().status.as_u16(), 400);
    }

    #[test]
    fn the_token_estimate_counts_prompt_characters_by_four_plus_max_tokens() {
        assert_eq!(token_estimate(0, Some(10)), 10);
        assert_eq!(token_estimate(0, None), 1024);
        assert_eq!(token_estimate(9, Some(10)), 13);
    }
}
