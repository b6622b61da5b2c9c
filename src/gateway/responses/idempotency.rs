//! `Idempotency-Key` on background responses. The first request with a key claims it (one
//! `SET NX` in Redis) for its response. A repeat answers with that response once its task is
//! confirmed; claims the key itself when the first request was refused (it released the
//! key); and takes the key over when the first request is gone, its gateway having stopped
//! between its claim and its broker's confirm.

use std::time::{Duration, Instant};

use crate::gateway::errors::ApiError;
use crate::gateway::Shared;

use super::store::Store;

/// How long a background response's publish may wait for the broker's confirm. With it,
/// and every Redis call bounded, accepting ends well within [`ABANDONED_AFTER_S`].
pub(super) const PUBLISH_BOUND: Duration = Duration::from_secs(10);

/// A claim this old whose response was never accepted has no request accepting it any more.
const ABANDONED_AFTER_S: u64 = 30;

/// How long a repeat waits for the first request's outcome.
const REPEAT_WAITS: Duration = Duration::from_secs(5);

/// Claims idempotency `key` of `owner` for response `id`: `None` when this request holds it,
/// else the object of the earlier request that does, once that one is accepted.
pub(super) async fn first_of(
    app: &Shared,
    owner: &str,
    key: &str,
    id: &str,
) -> Result<Option<serde_json::Value>, ApiError> {
    let store = &app.responses.store;
    for _ in 0..3 {
        let Some(earlier) = store.claim(owner, key, id).await? else {
            return Ok(None);
        };
        if store
            .take_over(owner, key, &earlier, id, ABANDONED_AFTER_S)
            .await?
        {
            // Its task may have gone out before its gateway stopped: it must not run for
            // nobody.
            tracing::warn!(abandoned = %earlier, response = %id, "an abandoned Idempotency-Key is taken over");
            app.broker_link.cancel_later(earlier);
            return Ok(None);
        }
        if let Some(object) = accepted_earlier(store, owner, key, &earlier).await? {
            return Ok(Some(object));
        }
    }
    Err(ApiError::internal(
        "the requests with this Idempotency-Key keep being refused; send it again",
    ))
}

/// The object of `earlier`, the response idempotency `key` is claimed for, once its task
/// is confirmed; `None` once its request was refused (the key released).
async fn accepted_earlier(
    store: &Store,
    owner: &str,
    key: &str,
    earlier: &str,
) -> Result<Option<serde_json::Value>, ApiError> {
    let deadline = Instant::now() + REPEAT_WAITS;
    loop {
        match store.accepted(earlier).await? {
            Some(true) => {
                if let Some(record) = store.get(earlier).await? {
                    return Ok(Some(record.object));
                }
            }
            Some(false) => {}
            // Not recorded yet, or refused: its request deletes the record, then the claim.
            None => {
                if store.claimed(owner, key).await?.as_deref() != Some(earlier) {
                    return Ok(None);
                }
            }
        }
        if Instant::now() > deadline {
            return Err(ApiError::internal(
                "the request with this Idempotency-Key is still being accepted; send it again",
            ));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
