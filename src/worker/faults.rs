//! Fault injection for tests, enabled only by `worker.fault_injection = true`: markers in a
//! task's text make the worker fail in ways a real model cannot be made to fail on demand.
//!
//! - `[[warren-fault:crash]]`: the process aborts (as if llama.cpp crashed) — a poison task.
//! - `[[warren-fault:panic]]`: the task's handler panics while running it (a bug in warren's
//!   code), on every attempt.
//! - `[[warren-fault:fail-attempts=N]]`: attempts 1..=N fail with `inference_failed`; later
//!   attempts run on the real engine.
//! - `[[warren-fault:crash-before-commit]]`: on the task's first delivery, the process aborts
//!   with the reply published and the ack sent in a transaction that is not committed yet.
//! - `[[warren-fault:crash-after-commit]]`: on the task's first delivery, the process aborts
//!   right after the commit (reply and ack taken by the broker), before the finished mark.
//! - `[[warren-fault:close-channel-before-commit]]`: on the task's first delivery, the worker
//!   closes the channel its transaction is staged on just before the commit, which then
//!   fails as a commit cut off by a lost connection does (its outcome unknown to the worker).
//!
//! With fault injection off (the default) the markers are plain text.

use super::fate::Redeliveries;
use crate::protocol::{ErrorCode, Input, TaskError};

const PREFIX: &str = "[[warren-fault:";

/// Applies the fault named in `input`, if any, for attempt `attempt`.
pub(super) fn inject(input: &Input, attempt: u32) -> Result<(), TaskError> {
    let text = match input {
        Input::Prompt(prompt) => prompt.as_str(),
        Input::Messages(messages) => match messages.iter().find(|m| m.content.contains(PREFIX)) {
            Some(message) => message.content.as_str(),
            None => return Ok(()),
        },
    };
    let Some(start) = text.find(PREFIX) else {
        return Ok(());
    };
    let rest = &text[start + PREFIX.len()..];
    let spec = rest.split("]]").next().unwrap_or("");
    if spec == "crash" {
        tracing::error!("fault injection: crashing the process");
        std::process::abort();
    }
    if spec == "panic" {
        panic!("fault injection: the handler panics");
    }
    if let Some(n) = spec.strip_prefix("fail-attempts=") {
        let failing: u32 = n.parse().unwrap_or(0);
        if attempt <= failing {
            return Err(TaskError::new(
                ErrorCode::InferenceFailed,
                format!("injected fault: attempt {attempt} of the first {failing} fails"),
            ));
        }
    }
    Ok(())
}

/// Just before the commit, on the task's first delivery: aborts when the task body carries
/// `[[warren-fault:crash-before-commit]]`, closes `channel` (the one the commit is staged on)
/// when it carries `[[warren-fault:close-channel-before-commit]]`.
pub(super) async fn before_commit(body: Vec<u8>, counts: Redeliveries, channel: lapin::Channel) {
    crash_on_first_delivery(&body, counts, "crash-before-commit", "before the commit");
    if marked_on_first_delivery(&body, counts, "close-channel-before-commit") {
        tracing::error!("fault injection: closing the channel before the commit");
        crate::broker::close_channel(&channel, "fault injection").await;
    }
}

/// Aborts after the commit when the task body carries `[[warren-fault:crash-after-commit]]`
/// and this is its first delivery.
pub(super) fn after_commit(body: &[u8], counts: Redeliveries) {
    crash_on_first_delivery(body, counts, "crash-after-commit", "after the commit");
}

fn crash_on_first_delivery(body: &[u8], counts: Redeliveries, fault: &str, when: &str) {
    if marked_on_first_delivery(body, counts, fault) {
        tracing::error!("fault injection: crashing {when}");
        std::process::abort();
    }
}

/// Whether `body` carries the marker of `fault` and this is its first delivery.
fn marked_on_first_delivery(body: &[u8], counts: Redeliveries, fault: &str) -> bool {
    let marker = format!("{PREFIX}{fault}]]");
    let first_delivery =
        counts.quorum_count == 0 && counts.warren_count == 0 && !counts.redelivered;
    first_delivery && body.windows(marker.len()).any(|w| w == marker.as_bytes())
}
