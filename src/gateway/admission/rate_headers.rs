//! OpenAI's `x-ratelimit-*` response headers, from a bucket's verdict.

use std::time::Duration;

use axum::http::HeaderValue;
use axum::response::Response;

use crate::gateway::shared_buckets::{Rate, Verdict};

/// Sets a charge's headers ([`super::Charge::headers`]) on `response`.
pub fn add_rate_headers(response: &mut Response, headers: &[(&'static str, String)]) {
    for (name, value) in headers {
        if let Ok(value) = HeaderValue::from_str(value) {
            response.headers_mut().insert(*name, value);
        }
    }
}

/// `x-ratelimit-limit-KIND`, `-remaining-KIND` and `-reset-KIND` (until the bucket is full
/// again), as OpenAI sends them.
pub(super) fn rate_headers(
    kind: &str,
    rate: Rate,
    verdict: &Verdict,
) -> [(&'static str, String); 3] {
    let (limit, remaining, reset) = match kind {
        "requests" => (
            "x-ratelimit-limit-requests",
            "x-ratelimit-remaining-requests",
            "x-ratelimit-reset-requests",
        ),
        _ => (
            "x-ratelimit-limit-tokens",
            "x-ratelimit-remaining-tokens",
            "x-ratelimit-reset-tokens",
        ),
    };
    [
        (limit, rate.capacity().to_string()),
        (remaining, verdict.remaining.to_string()),
        (reset, duration_text(verdict.full_in)),
    ]
}

/// A duration as OpenAI writes its resets: `20ms`, `1.5s`, `6m0s`.
pub(super) fn duration_text(duration: Duration) -> String {
    let ms = duration.as_millis();
    if ms < 1000 {
        return format!("{ms}ms");
    }
    if ms < 60_000 {
        let seconds = format!("{:.3}", duration.as_secs_f64());
        return format!("{}s", seconds.trim_end_matches('0').trim_end_matches('.'));
    }
    format!("{}m{}s", ms / 60_000, (ms % 60_000) / 1000)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resets_read_as_openai_writes_them() {
        assert_eq!(duration_text(Duration::from_millis(20)), "20ms");
        assert_eq!(duration_text(Duration::from_millis(1500)), "1.5s");
        assert_eq!(duration_text(Duration::from_secs(1)), "1s");
        assert_eq!(duration_text(Duration::from_secs(360)), "6m0s");
    }
}
