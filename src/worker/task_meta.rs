//! What a task delivery's AMQP properties say about it, read once on receipt: the id a reply
//! and a cancel name, where the reply goes, which attempt this is, and how old the task is.
//! [`super::delivery`] reads it; [`super::outbox`] addresses what a delivery owes with it.

use std::time::{Duration, Instant};

use lapin::message::Delivery;

use crate::broker::headers;
use crate::clock::{unix_micros, unix_ms};
use crate::protocol::{HEADER_ATTEMPTS, HEADER_PUBLISHED_US, HEADER_REPLAYS, HEADER_WAKE};

/// What the task's properties say about it, read once.
pub(crate) struct TaskMeta {
    /// `message_id`, else `correlation_id`: the reply's `id`, and what a cancel names.
    pub(crate) id: Option<String>,
    pub(crate) correlation_id: Option<String>,
    pub(crate) reply_to: Option<String>,
    /// This delivery's attempt, counted from 1.
    pub(crate) attempt: u32,
    pub(crate) received: Instant,
    /// Lower bound of the time since the task was published (`x-warren-published-us`, else
    /// the AMQP `timestamp`).
    pub(crate) age: Option<Duration>,
    /// A wake-up message (header `x-warren-wake: true`): acked, never run.
    pub(crate) wake: bool,
    /// Replays from the dead-letter queue so far (`x-warren-replays`).
    pub(crate) replays: u32,
}

impl TaskMeta {
    pub(super) fn read(delivery: &Delivery) -> TaskMeta {
        let properties = &delivery.properties;
        let message_id = properties.message_id().as_ref().map(|s| s.to_string());
        let correlation_id = properties.correlation_id().as_ref().map(|s| s.to_string());
        let reply_to = properties
            .reply_to()
            .as_ref()
            .map(|s| s.to_string())
            .filter(|s| !s.is_empty());
        // x-warren-attempts counts the attempts already made; this delivery is the next one.
        let previous = headers::integer(properties, HEADER_ATTEMPTS).unwrap_or(0);
        let attempt = u32::try_from(previous.clamp(0, 1_000)).unwrap_or(0) + 1;
        let published_us =
            headers::integer(properties, HEADER_PUBLISHED_US).and_then(|us| u64::try_from(us).ok());
        let age = published_us.map(|us| Duration::from_micros(unix_micros().saturating_sub(us)));
        let age = age.or_else(|| {
            properties.timestamp().map(|ts| {
                // AMQP timestamps are whole seconds (some clients send milliseconds): take the
                // latest instant the second allows, so the age is never overstated.
                let sent_ms = if ts > 100_000_000_000 {
                    ts
                } else {
                    ts.saturating_mul(1000).saturating_add(999)
                };
                Duration::from_millis(unix_ms().saturating_sub(sent_ms))
            })
        });
        let wake = headers::is_true(properties, HEADER_WAKE);
        let replays = headers::integer(properties, HEADER_REPLAYS).unwrap_or(0);
        TaskMeta {
            wake,
            replays: u32::try_from(replays.max(0)).unwrap_or(u32::MAX),
            id: message_id.or_else(|| correlation_id.clone()),
            correlation_id,
            reply_to,
            attempt,
            received: Instant::now(),
            age,
        }
    }
}

impl TaskMeta {
    /// What the task's finished mark is kept under: its id, and for a replay from the
    /// dead-letter queue the replay's number too (each replay is a run of its own).
    pub(crate) fn finished_key(&self) -> Option<String> {
        let id = self.id.as_deref()?;
        Some(match self.replays {
            0 => id.to_owned(),
            n => format!("{id}:replay:{n}"),
        })
    }
}
