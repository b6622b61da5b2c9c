//! Dead-letter tools for ops: list what sits in the dead-letter queue without consuming or
//! reordering it, replay chosen tasks to the requests queue, purge.
//!
//! Listing takes messages with `basic.get` (unacked) and returns them all with one
//! `basic.nack(multiple, requeue)`: the dead-letter queue is a classic queue, where requeued
//! messages go back to their original positions. Replaying republishes a task (confirmed) and
//! only then acks its dead letter, so a crash in between leaves a duplicate, never a loss;
//! it makes one pass over what the queue held when it began.

use std::time::Duration;

use lapin::options::{BasicGetOptions, BasicNackOptions, QueuePurgeOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel, Connection};

use crate::broker::{headers, BrokerError, Outgoing, Publisher, Topology};
use crate::clock;
use crate::protocol::{
    FAILURE_HEADERS, HEADER_ATTEMPTS, HEADER_ERROR, HEADER_ERROR_CODE, HEADER_FAILED_AT,
    HEADER_PUBLISHED_US, HEADER_REPLAYS,
};

/// One message in the dead-letter queue, as ops see it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct DeadLetter {
    /// `message_id`, else `correlation_id`.
    pub id: Option<String>,
    /// warren's error code, or the broker's dead-letter reason (`delivery_limit`,
    /// `expired`, `rejected`, `maxlen`) for messages the broker parked itself.
    pub code: String,
    /// Why, in words.
    pub reason: String,
    /// Attempts made, when warren recorded them.
    pub attempts: Option<i64>,
    /// Time since it was dead-lettered (or published), when known.
    pub age_ms: Option<u64>,
    /// Body size in bytes.
    pub size: usize,
}

impl DeadLetter {
    fn from_message(properties: &BasicProperties, body: &[u8]) -> DeadLetter {
        let id = properties
            .message_id()
            .as_ref()
            .or(properties.correlation_id().as_ref())
            .map(|s| s.to_string());
        let (code, reason) = match headers::string(properties, HEADER_ERROR_CODE) {
            Some(code) => (
                code,
                headers::string(properties, HEADER_ERROR).unwrap_or_default(),
            ),
            None => match broker_death(properties) {
                Some((reason, queue)) => (
                    reason.clone(),
                    format!("dead-lettered by RabbitMQ from `{queue}` ({reason})"),
                ),
                None => ("unknown".to_owned(), String::new()),
            },
        };
        let now_ms = i64::try_from(clock::unix_ms()).unwrap_or(i64::MAX);
        let since_ms = headers::integer(properties, HEADER_FAILED_AT)
            .or_else(|| properties.timestamp().map(|ts| ts as i64 * 1000));
        DeadLetter {
            id,
            code,
            reason,
            attempts: headers::integer(properties, HEADER_ATTEMPTS),
            age_ms: since_ms.map(|since| now_ms.saturating_sub(since).max(0) as u64),
            size: body.len(),
        }
    }

    fn matches(&self, filter: &Filter) -> bool {
        match filter {
            Filter::All => true,
            Filter::Id(id) => self.id.as_deref() == Some(id.as_str()),
            Filter::Code(code) => &self.code == code,
        }
    }
}

/// The reason and source queue of the broker's first dead-lettering, from `x-death`.
fn broker_death(properties: &BasicProperties) -> Option<(String, String)> {
    let deaths = properties.headers().as_ref()?.inner().get("x-death")?;
    let AMQPValue::FieldArray(deaths) = deaths else {
        return None;
    };
    let AMQPValue::FieldTable(first) = deaths.as_slice().first()? else {
        return None;
    };
    let field = |table: &FieldTable, key: &str| match table.inner().get(key) {
        Some(AMQPValue::LongString(s)) => Some(String::from_utf8_lossy(s.as_bytes()).into_owned()),
        Some(AMQPValue::ShortString(s)) => Some(s.to_string()),
        _ => None,
    };
    Some((
        field(first, "reason")?,
        field(first, "queue").unwrap_or_default(),
    ))
}

/// Which dead letters to replay.
#[derive(Debug, Clone)]
pub enum Filter {
    /// Every message.
    All,
    /// The one whose `message_id` (else `correlation_id`) is this.
    Id(String),
    /// Those with this code.
    Code(String),
}

/// Up to `limit` dead letters, oldest first, left in place and in order.
pub async fn list(
    channel: &Channel,
    queue: &str,
    limit: usize,
) -> Result<Vec<DeadLetter>, BrokerError> {
    let mut found = Vec::new();
    let mut last_tag = None;
    while found.len() < limit {
        let Some(message) = channel
            .basic_get(queue.into(), BasicGetOptions { no_ack: false })
            .await?
        else {
            break;
        };
        let delivery = &message.delivery;
        last_tag = Some(delivery.delivery_tag);
        found.push(DeadLetter::from_message(
            &delivery.properties,
            &delivery.data,
        ));
    }
    if let Some(tag) = last_tag {
        give_back(channel, tag).await?;
    }
    Ok(found)
}

/// What a replay did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReplaySummary {
    /// Dead letters republished (and removed from the dead-letter queue).
    pub replayed: usize,
    /// Of those, embedding tasks, republished to the embeddings queue.
    pub embeddings: usize,
    /// Dead letters looked at and left in place.
    pub kept: usize,
    /// Of those, chosen but left because their `deadline_ms` has passed.
    pub past_deadline: usize,
}

/// Where a chosen dead letter goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Destination {
    /// The generation tasks' queue (also a body that is no task at all: it fails there
    /// again, as it did).
    Generation,
    /// The embeddings queue: a body with `input` and neither `prompt` nor `messages`.
    Embeddings,
    /// Nowhere: its `deadline_ms` has passed, so a worker would expire it again at once.
    PastDeadline,
}

/// Where the dead letter whose task body is `body` is replayed to at `now_ms`.
fn destination(body: &[u8], now_ms: u64) -> Destination {
    let Ok(serde_json::Value::Object(task)) = serde_json::from_slice(body) else {
        return Destination::Generation;
    };
    let deadline = task.get("deadline_ms").and_then(serde_json::Value::as_u64);
    if deadline.is_some_and(|deadline| deadline <= now_ms) {
        return Destination::PastDeadline;
    }
    let has = |field: &str| task.get(field).is_some_and(|v| !v.is_null());
    if has("input") && !has("prompt") && !has("messages") {
        Destination::Embeddings
    } else {
        Destination::Generation
    }
}

/// Republishes the dead letters matching `filter` (at most `limit`) as fresh tasks (attempt
/// count and failure headers removed), generation tasks to the requests queue and embedding
/// tasks to the embeddings queue, then removes them from the dead-letter queue. The others
/// stay, in order, as do chosen ones whose deadline has passed. One pass: it looks at as
/// many letters as the queue held when it began, so a replayed task that fails again and
/// comes back during the pass is not replayed again.
pub async fn replay(
    connection: &Connection,
    topology: &Topology,
    filter: &Filter,
    limit: usize,
) -> Result<ReplaySummary, BrokerError> {
    let channel = connection.create_channel().await?;
    let publisher = Publisher::open(connection).await?;
    let mut summary = ReplaySummary::default();
    let mut last_kept = None;
    let (mut looked_at, mut held_at_start) = (0u64, None);
    while summary.replayed < limit && held_at_start.is_none_or(|held| looked_at < held) {
        let Some(message) = channel
            .basic_get(
                topology.dead_letter_queue().into(),
                BasicGetOptions { no_ack: false },
            )
            .await?
        else {
            break;
        };
        looked_at += 1;
        held_at_start.get_or_insert(u64::from(message.message_count) + 1);
        let delivery = message.delivery;
        let letter = DeadLetter::from_message(&delivery.properties, &delivery.data);
        let chosen = letter.matches(filter);
        let destination = destination(&delivery.data, clock::unix_ms());
        if !chosen || destination == Destination::PastDeadline {
            summary.kept += 1;
            summary.past_deadline += usize::from(chosen);
            last_kept = Some(delivery.delivery_tag);
            continue;
        }
        let properties = replayed(&delivery.properties, clock::unix_micros());
        let route = match destination {
            Destination::Embeddings => {
                summary.embeddings += 1;
                topology.embeddings_route()
            }
            _ => topology.task_route(),
        };
        let task = Outgoing {
            exchange: route.exchange,
            routing_key: route.routing_key,
            body: delivery.data,
            properties,
        };
        publisher.publish_routed(&task).await?;
        delivery.acker.ack(Default::default()).await?;
        summary.replayed += 1;
    }
    if let Some(tag) = last_kept {
        give_back(&channel, tag).await?;
    }
    crate::broker::close_channel(&channel, "replay done").await;
    publisher.close("replay done").await;
    Ok(summary)
}

/// Deletes every message in the dead-letter queue; returns how many there were.
pub async fn purge(channel: &Channel, queue: &str) -> Result<u32, BrokerError> {
    Ok(channel
        .queue_purge(queue.into(), QueuePurgeOptions::default())
        .await?)
}

/// Returns every message this channel holds unacked, up to `tag`, to its place in the queue.
async fn give_back(channel: &Channel, tag: u64) -> Result<(), BrokerError> {
    channel
        .basic_nack(
            tag,
            BasicNackOptions {
                multiple: true,
                requeue: true,
            },
        )
        .await?;
    Ok(())
}

/// A replayed task starts over as a fresh task: without the headers of its failed life.
fn without_failure_headers(properties: BasicProperties) -> BasicProperties {
    let kept = headers::headers_without(&properties, &FAILURE_HEADERS);
    properties.with_headers(kept)
}

/// The properties of a dead letter's replay, published at `now_us`: a fresh task (no header
/// of its failed life; its age counted from now, so `limits.max_age_ms` does not expire it
/// at once) that keeps what addresses its reply, one more replay counted.
fn replayed(dead_letter: &BasicProperties, now_us: u64) -> BasicProperties {
    let replays = headers::integer(dead_letter, HEADER_REPLAYS)
        .unwrap_or(0)
        .max(0);
    let fresh = without_failure_headers(headers::republishable(dead_letter));
    let now_us = i64::try_from(now_us).unwrap_or(i64::MAX);
    headers::with_headers(
        fresh,
        [
            (HEADER_REPLAYS, headers::int(replays.saturating_add(1))),
            (HEADER_PUBLISHED_US, headers::int(now_us)),
        ],
    )
}

/// A duration as ops read it: `42s`, `7m`, `3h`, `2d`.
pub fn human_age(age: Duration) -> String {
    let secs = age.as_secs();
    match secs {
        0..=119 => format!("{secs}s"),
        120..=7199 => format!("{}m", secs / 60),
        7200..=172_799 => format!("{}h", secs / 3600),
        _ => format!("{}d", secs / 86_400),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_replayed_task_loses_every_header_of_its_failed_life_and_keeps_the_rest() {
        let mut original = FAILURE_HEADERS
            .iter()
            .map(|name| (*name, headers::text("x")))
            .collect::<Vec<_>>();
        original.push(("x-caller-trace", headers::text("keep me")));
        let properties = BasicProperties::default()
            .with_headers(headers::table(original))
            .with_correlation_id("c1".into());
        let replayed = without_failure_headers(properties);
        let kept = replayed.headers().clone().unwrap_or_default();
        let names: Vec<_> = kept.inner().keys().map(|k| k.as_str().to_owned()).collect();
        assert_eq!(names, vec!["x-caller-trace".to_owned()]);
        assert!(FAILURE_HEADERS.contains(&crate::protocol::HEADER_ORIGINAL_EXPIRATION));
        assert_eq!(
            replayed.correlation_id().as_ref().map(|c| c.as_str()),
            Some("c1")
        );
    }

    #[test]
    fn a_letter_goes_back_to_the_queue_of_its_kind_unless_its_deadline_passed() {
        let at = |body: &str| destination(body.as_bytes(), 1_000);
        assert_eq!(at(r#"{"prompt": "hi"}"#), Destination::Generation);
        assert_eq!(
            at(r#"{"messages": [], "input": "x"}"#),
            Destination::Generation
        );
        assert_eq!(at(r#"{"input": ["a", "b"]}"#), Destination::Embeddings);
        assert_eq!(
            at(r#"{"input": "a", "prompt": null}"#),
            Destination::Embeddings
        );
        assert_eq!(at("not json"), Destination::Generation);
        assert_eq!(
            at(r#"{"prompt": "hi", "deadline_ms": 1000}"#),
            Destination::PastDeadline
        );
        assert_eq!(
            at(r#"{"input": "a", "deadline_ms": 999}"#),
            Destination::PastDeadline
        );
        assert_eq!(
            at(r#"{"prompt": "hi", "deadline_ms": 1001}"#),
            Destination::Generation
        );
    }

    #[test]
    fn a_replay_counts_itself_and_is_published_now() {
        let dead_letter = BasicProperties::default()
            .with_message_id("m1".into())
            .with_reply_to("caller".into())
            .with_headers(headers::table([
                (HEADER_PUBLISHED_US, headers::int(5)),
                (HEADER_ATTEMPTS, headers::int(4)),
            ]));
        let first = replayed(&dead_letter, 1_000);
        assert_eq!(headers::integer(&first, HEADER_REPLAYS), Some(1));
        assert_eq!(headers::integer(&first, HEADER_PUBLISHED_US), Some(1_000));
        assert_eq!(headers::integer(&first, HEADER_ATTEMPTS), None);
        assert_eq!(first.message_id().as_ref().map(|m| m.as_str()), Some("m1"));
        assert_eq!(
            first.reply_to().as_ref().map(|r| r.as_str()),
            Some("caller")
        );
        // Dead-lettered again and replayed again.
        let second = replayed(&first, 2_000);
        assert_eq!(headers::integer(&second, HEADER_REPLAYS), Some(2));
        assert_eq!(headers::integer(&second, HEADER_PUBLISHED_US), Some(2_000));
    }
}
