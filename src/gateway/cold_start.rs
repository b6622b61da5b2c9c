//! What a caller sees while no worker serves its model (scaled to zero, or the first worker
//! still starting). By default its request is published and waits for a worker like any
//! other. A caller that must not wait sends `X-Warren-Cold-Start: refuse`: when the task's
//! queue has no consumer it is answered 503 `no_worker_ready` with a `Retry-After`
//! (`gateway.cold_start_retry_after_s`) and nothing of it is queued; so that a scaler which
//! watches the queue's depth (KEDA) still starts a worker, the gateway leaves a wake-up
//! message (header `x-warren-wake`, acked by a worker without running) in a queue that
//! holds nothing else.
//!
//! [`ColdStart::from_headers`] and [`verdict`] are pure; [`refuse_if_cold`] asks the broker.

use std::time::Duration;

use axum::http::HeaderMap;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::types::AMQPValue;
use lapin::BasicProperties;
use tracing::{debug, info};

use super::broker_link::BrokerLink;
use super::errors::ApiError;
use super::queue_depth::depth;
use crate::protocol::HEADER_WAKE;

/// The request header a caller sets to say whether it waits for a cold start.
pub const HEADER: &str = "x-warren-cold-start";

/// The code of the 503 answered to a caller that refused to wait.
pub const NO_WORKER_READY: &str = "no_worker_ready";

/// Whether a caller waits for a worker to start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColdStart {
    /// Publish and wait, up to the request timeout (the default).
    Wait,
    /// Refuse at once (503) while no worker consumes the task's queue.
    Refuse,
}

impl ColdStart {
    /// The caller's choice from its headers: absent is [`ColdStart::Wait`]; a value other
    /// than `wait` or `refuse` is a 400 naming the header.
    pub fn from_headers(headers: &HeaderMap) -> Result<ColdStart, ApiError> {
        let Some(value) = headers.get(HEADER) else {
            return Ok(ColdStart::Wait);
        };
        match value
            .to_str()
            .map(|v| v.trim().to_ascii_lowercase())
            .as_deref()
        {
            Ok("wait") => Ok(ColdStart::Wait),
            Ok("refuse") => Ok(ColdStart::Refuse),
            _ => Err(ApiError::invalid(
                format!(
                    "the header `X-Warren-Cold-Start` must be `wait` or `refuse`, not {:?}",
                    String::from_utf8_lossy(value.as_bytes())
                ),
                Some("X-Warren-Cold-Start".into()),
            )),
        }
    }
}

/// What to do with a request that refuses to wait, from what its queue holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// A worker consumes the queue (or the queue does not exist, which publishing reports
    /// better): publish as usual.
    Publish,
    /// No worker, and the queue holds nothing a scaler could see: wake, then refuse.
    WakeAndRefuse,
    /// No worker, but the queue already holds messages (a wake-up among them, or waiting
    /// tasks): refuse.
    Refuse,
}

/// The verdict for a queue holding `ready` messages with `consumers` consumers (`None`: the
/// queue does not exist).
pub fn verdict(queue: Option<(u32, u32)>) -> Verdict {
    match queue {
        None => Verdict::Publish,
        Some((_, consumers)) if consumers > 0 => Verdict::Publish,
        Some((0, 0)) => Verdict::WakeAndRefuse,
        Some(_) => Verdict::Refuse,
    }
}

/// How long the look at the queue, and the wake-up's publish, may take: the caller asked
/// for an answer now.
const BROKER_WAIT: Duration = Duration::from_secs(5);

/// For a caller that refuses to wait: `Ok` when a worker consumes `queue` (the queue the
/// task would go to; a batch-tier task's interactive queue, which workers consume), else
/// the 503, after leaving a wake-up message in an empty queue. `Ok` for a caller that waits,
/// and while the broker cannot say or blocks publishers (publishing then answers for it).
pub async fn refuse_if_cold(
    link: &BrokerLink,
    wanted: ColdStart,
    queue: &str,
    model: &str,
    retry_after: Duration,
) -> Result<(), ApiError> {
    if wanted == ColdStart::Wait || link.blocked_reason().is_some() {
        return Ok(());
    }
    let Some(client) = link.client() else {
        return Ok(());
    };
    // Each look runs as a task of its own: one the caller stops waiting for still closes
    // its channel when the broker answers.
    let look = tokio::spawn({
        let (client, queue) = (client.clone(), queue.to_owned());
        async move { depth(client.connection(), &queue).await }
    });
    let Ok(Ok(held)) = tokio::time::timeout(BROKER_WAIT, look).await else {
        return Ok(());
    };
    let verdict = verdict(held);
    if verdict == Verdict::Publish {
        return Ok(());
    }
    if verdict == Verdict::WakeAndRefuse {
        let waking = tokio::spawn({
            let (client, queue) = (client.clone(), queue.to_owned());
            async move { wake(client.connection(), &queue).await }
        });
        match tokio::time::timeout(BROKER_WAIT, waking).await {
            Ok(Ok(Ok(true))) => info!(queue, "no worker serves this queue: left a wake-up message"),
            Ok(Ok(Ok(false))) => debug!(queue, "the broker refused the wake-up message (nack)"),
            Ok(Ok(Err(e))) => debug!(queue, error = %e, "the wake-up message was not published"),
            Ok(Err(e)) => debug!(queue, error = %e, "the wake-up task failed"),
            Err(_) => debug!(queue, "the wake-up message was not confirmed in time"),
        }
    }
    Err(no_worker_ready(model, retry_after))
}

fn no_worker_ready(model: &str, retry_after: Duration) -> ApiError {
    ApiError {
        retry_after: Some(retry_after),
        no_retry: true,
        ..ApiError::service_unavailable(
            NO_WORKER_READY,
            format!(
                "no worker serves the model `{model}` yet (scaled to zero or starting); the \
                 request was not queued because of `X-Warren-Cold-Start: refuse`: try again \
                 after Retry-After, or send it without that header to wait for a worker"
            ),
        )
    }
}

/// Publishes a wake-up message to `queue` through the default exchange on a channel of its
/// own, closed whatever happens; whether the broker confirmed it (`false`: a nack).
async fn wake(connection: &lapin::Connection, queue: &str) -> Result<bool, lapin::Error> {
    let channel = connection.create_channel().await?;
    let published = async {
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await?;
        let headers = crate::broker::headers::table([(HEADER_WAKE, AMQPValue::Boolean(true))]);
        let properties = BasicProperties::default()
            .with_content_type("application/json".into())
            .with_delivery_mode(2)
            .with_headers(headers);
        let confirmation = channel
            .basic_publish(
                "".into(),
                queue.into(),
                BasicPublishOptions::default(),
                b"{}",
                properties,
            )
            .await?
            .await?;
        Ok(confirmation.is_ack())
    }
    .await;
    crate::broker::close_channel(&channel, "OK").await;
    published
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::{HeaderValue, StatusCode};

    #[test]
    fn a_caller_waits_unless_it_says_refuse_and_anything_else_is_a_400() {
        let mut headers = HeaderMap::new();
        assert_eq!(ColdStart::from_headers(&headers).unwrap(), ColdStart::Wait);
        for (value, wanted) in [("wait", ColdStart::Wait), (" Refuse ", ColdStart::Refuse)] {
            headers.insert(HEADER, HeaderValue::from_static(value));
            assert_eq!(ColdStart::from_headers(&headers).unwrap(), wanted);
        }
        headers.insert(HEADER, HeaderValue::from_static("fail"));
        let refused = ColdStart::from_headers(&headers).unwrap_err();
        assert_eq!(refused.status, StatusCode::BAD_REQUEST);
        assert_eq!(refused.param.as_deref(), Some("X-Warren-Cold-Start"));
        assert!(refused.message.contains("\"fail\""), "{}", refused.message);
    }

    #[test]
    fn only_an_empty_queue_without_consumers_gets_a_wake_up() {
        assert_eq!(verdict(None), Verdict::Publish);
        assert_eq!(verdict(Some((0, 1))), Verdict::Publish);
        assert_eq!(verdict(Some((7, 2))), Verdict::Publish);
        assert_eq!(verdict(Some((0, 0))), Verdict::WakeAndRefuse);
        assert_eq!(verdict(Some((3, 0))), Verdict::Refuse);
    }

    #[test]
    fn the_503_names_the_model_and_carries_the_retry_after() {
        let error = no_worker_ready("small", Duration::from_secs(30));
        assert_eq!(error.status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(error.code, NO_WORKER_READY);
        assert_eq!(error.retry_after, Some(Duration::from_secs(30)));
        assert!(
            error.no_retry,
            "an SDK must not wait out Retry-After by itself"
        );
        assert!(error.message.contains("`small`"));
    }
}
