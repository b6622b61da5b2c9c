//! What a request was charged in the fleet's token bucket, and its correction once the
//! reply says how many tokens it used.

use std::sync::Arc;

use super::SHARED_CALL_LIMIT;
use crate::gateway::shared_buckets::{Rate, SharedBuckets};
use crate::redis_link::RedisError;

/// What a request was charged, to be corrected by what it used ([`Charge::settle`]).
#[derive(Default)]
pub struct Charge {
    /// The fleet's token bucket and the owner charged in it (none: nothing to correct).
    pub(super) shared: Option<(Arc<SharedBuckets>, Rate, String)>,
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
            let corrected =
                tokio::time::timeout(SHARED_CALL_LIMIT, buckets.correct(rate, &owner, difference))
                    .await
                    .unwrap_or(Err(RedisError::TimedOut));
            if let Err(e) = corrected {
                tracing::debug!(error = %e, "a token charge was not corrected");
            }
        }
    }

    /// [`Charge::settle`] in the background (where the caller cannot wait).
    pub fn settle_later(&mut self, used: u32) {
        let Some((buckets, rate, owner, difference)) = self.correction(used) else {
            return;
        };
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                if let Err(e) = buckets.correct(rate, &owner, difference).await {
                    tracing::debug!(error = %e, "a token charge was not corrected");
                }
            });
        }
    }

    /// What to correct, once: the bucket and the difference from the estimate.
    fn correction(&mut self, used: u32) -> Option<(Arc<SharedBuckets>, Rate, String, i64)> {
        let (buckets, rate, owner) = self.shared.take()?;
        let difference = i64::from(used) - i64::from(self.estimated);
        (difference != 0).then_some((buckets, rate, owner, difference))
    }
}
