//! What a request was charged in the fleet's token bucket, and its correction once the
//! reply says how many tokens it used.

use std::sync::Arc;

use super::SHARED_CALL_LIMIT;
use crate::gateway::errors::ApiError;
use crate::gateway::shared_buckets::{Rate, SharedBuckets};
use crate::redis_link::RedisError;

/// What a request was charged, to be corrected by what it used ([`Charge::settle`]), or
/// given back when it was not queued ([`Charge::refund`]).
#[derive(Default)]
pub struct Charge {
    /// The fleet's buckets and the owner charged in them (none: nothing to correct).
    pub(super) shared: Option<(Arc<SharedBuckets>, String)>,
    /// The request bucket it took one request from, if one is set.
    pub(super) requests: Option<Rate>,
    /// The token bucket it took `estimated` tokens from, if one is set.
    pub(super) tokens: Option<Rate>,
    pub(super) estimated: u32,
    /// The buckets' state after the charge (the fleet's buckets only).
    pub(super) headers: Vec<(&'static str, String)>,
}

impl std::fmt::Debug for Charge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Charge")
            .field("shared", &self.shared.is_some())
            .field("estimated", &self.estimated)
            .finish()
    }
}

impl Charge {
    /// OpenAI's `x-ratelimit-*` headers for the buckets this request was charged in (none
    /// when a replica's own buckets decided, or no limit is set).
    pub fn headers(&self) -> &[(&'static str, String)] {
        &self.headers
    }

    /// The request used `used` tokens: refunds (or charges) the difference from its
    /// estimate in the fleet's bucket.
    pub async fn settle(&mut self, used: u32) {
        if let Some((buckets, rate, owner, difference)) = self.correction(used) {
            correct(&buckets, rate, &owner, difference).await;
        }
    }

    /// [`Charge::settle`] in the background (where the caller cannot wait).
    pub fn settle_later(&mut self, used: u32) {
        let Some((buckets, rate, owner, difference)) = self.correction(used) else {
            return;
        };
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move { correct(&buckets, rate, &owner, difference).await });
        }
    }

    /// The request was not queued (a full queue, a lost broker, a refused publish): gives
    /// its request and its estimate back to the fleet's buckets, so a caller that retries
    /// the 429 or 503 pays once. A replica's own buckets cannot give back: there each try
    /// counts.
    pub async fn refund(&mut self) {
        let Some((buckets, owner)) = self.shared.take() else {
            return;
        };
        if let Some(rate) = self.tokens.filter(|_| self.estimated > 0) {
            correct(&buckets, rate, &owner, -i64::from(self.estimated)).await;
        }
        if let Some(rate) = self.requests {
            correct(&buckets, rate, &owner, -1).await;
        }
    }

    /// `published` as it is, with this charge given back when it failed ([`Charge::refund`]).
    pub async fn refund_unless<T>(
        &mut self,
        published: Result<T, ApiError>,
    ) -> Result<T, ApiError> {
        if published.is_err() {
            self.refund().await;
        }
        published
    }

    /// What to correct, once: the bucket and the difference from the estimate.
    fn correction(&mut self, used: u32) -> Option<(Arc<SharedBuckets>, Rate, String, i64)> {
        let rate = self.tokens?;
        let (buckets, owner) = self.shared.take()?;
        let difference = i64::from(used) - i64::from(self.estimated);
        (difference != 0).then_some((buckets, rate, owner, difference))
    }
}

/// Adds `difference` to `owner`'s use of `rate` in the fleet's buckets, within the shared
/// call limit (a failure is logged: the bucket then stays as charged).
async fn correct(buckets: &SharedBuckets, rate: Rate, owner: &str, difference: i64) {
    let corrected =
        tokio::time::timeout(SHARED_CALL_LIMIT, buckets.correct(rate, owner, difference))
            .await
            .unwrap_or(Err(RedisError::TimedOut));
    if let Err(e) = corrected {
        tracing::debug!(error = %e, "a rate-limit charge was not corrected");
    }
}
