//! How long a settled task took, read two ways: the reply's `timings_ms` and the
//! [`Completion`] the worker's histograms record once the reply is committed. Pure: the
//! instant it is asked is the only input besides the task's metadata and outcome.

use std::time::{Duration, Instant};

use super::outbox::Outcome;
use super::task_meta::TaskMeta;
use crate::protocol::Timings;
use crate::telemetry::Completion;

/// Where the time went, in whole milliseconds, at `now`. Without an outcome (the task did
/// not run, or failed) when it started is unknown: the wait counts to its receipt.
pub(crate) fn of(meta: &TaskMeta, outcome: Option<&Outcome>, now: Instant) -> Timings {
    let total = now.saturating_duration_since(meta.received);
    let (prompt, generation, slot_wait) = match outcome {
        None => (Duration::ZERO, Duration::ZERO, Duration::ZERO),
        Some(Outcome::Generated(g)) => (g.prompt_time, g.generation_time, g.slot_wait),
        // An embedding's time is all prompt reading.
        Some(Outcome::Embedded(e)) => (e.time, Duration::ZERO, e.wait),
    };
    let in_worker_before_start = match outcome {
        None => Duration::ZERO,
        Some(_) => total.saturating_sub(prompt + generation).max(slot_wait),
    };
    // `age` runs from the publish to the receipt: all of it was spent in the broker.
    let in_broker = meta.age.unwrap_or(Duration::ZERO);
    Timings {
        queued: millis(in_broker + in_worker_before_start),
        prompt: millis(prompt),
        generation: millis(generation),
        total: millis(total),
    }
}

/// What the histograms record of a task that ran, at `now` (its reply built).
pub(crate) fn completion(
    meta: &TaskMeta,
    outcome: &Outcome,
    timings: Timings,
    now: Instant,
) -> Completion {
    let total = now.saturating_duration_since(meta.received);
    let queue_wait = Duration::from_millis(timings.queued).as_secs_f64();
    match outcome {
        Outcome::Generated(g) => Completion {
            queue_wait,
            time_to_first_token: Some(total.saturating_sub(g.generation_time).as_secs_f64()),
            total: total.as_secs_f64(),
            generation: Some(g.generation_time.as_secs_f64()),
            prompt_tokens: g.prompt_tokens,
            cached_prompt_tokens: g.cached_prompt_tokens,
            completion_tokens: g.completion_tokens,
        },
        // No token is generated: the vectors come all at once.
        Outcome::Embedded(e) => Completion {
            queue_wait,
            time_to_first_token: None,
            total: total.as_secs_f64(),
            generation: None,
            prompt_tokens: e.prompt_tokens,
            cached_prompt_tokens: 0,
            completion_tokens: 0,
        },
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::{Embeddings, Generation};
    use crate::protocol::FinishReason;

    fn meta(received: Instant, age: Option<Duration>) -> TaskMeta {
        TaskMeta {
            wake: false,
            replays: 0,
            id: Some("t".into()),
            correlation_id: None,
            reply_to: None,
            attempt: 1,
            received,
            age,
        }
    }

    fn generated(prompt_ms: u64, generation_ms: u64) -> Outcome {
        Outcome::Generated(Box::new(Generation {
            text: String::new(),
            tool_calls: Vec::new(),
            finish_reason: FinishReason::Length,
            prompt_tokens: 10,
            cached_prompt_tokens: 0,
            completion_tokens: 4,
            logprobs: None,
            slot_wait: Duration::ZERO,
            prompt_time: Duration::from_millis(prompt_ms),
            generation_time: Duration::from_millis(generation_ms),
        }))
    }

    #[test]
    fn the_wait_is_the_time_in_the_broker_plus_the_time_before_the_run_started() {
        let received = Instant::now();
        let now = received + Duration::from_millis(1000);
        // Two seconds in the queue, then 100 ms in the worker before reading the prompt.
        let task = meta(received, Some(Duration::from_millis(2000)));
        let took = of(&task, Some(&generated(500, 400)), now);
        assert_eq!(took.queued, 2100);
        assert_eq!((took.prompt, took.generation, took.total), (500, 400, 1000));
        // A task that waited less than it ran still shows its whole wait.
        let short_wait = meta(received, Some(Duration::from_millis(300)));
        assert_eq!(of(&short_wait, Some(&generated(500, 400)), now).queued, 400);
        // Without a publish time, the wait starts at the receipt.
        let unstamped = meta(received, None);
        assert_eq!(of(&unstamped, Some(&generated(500, 400)), now).queued, 100);
        // A task without an outcome (not run, or failed after a run of unknown length)
        // waited until its receipt, as far as anyone can tell.
        assert_eq!(of(&task, None, now).queued, 2000);
    }

    #[test]
    fn a_completion_times_the_first_token_of_a_generation_and_none_of_an_embedding() {
        let received = Instant::now();
        let now = received + Duration::from_millis(1000);
        let task = meta(received, Some(Duration::from_millis(2000)));
        let outcome = generated(500, 400);
        let generation = completion(&task, &outcome, of(&task, Some(&outcome), now), now);
        assert_eq!(generation.queue_wait, 2.1);
        assert_eq!(generation.time_to_first_token, Some(0.6));
        assert_eq!(generation.generation, Some(0.4));
        assert_eq!(
            (generation.prompt_tokens, generation.completion_tokens),
            (10, 4)
        );
        let embedded = Outcome::Embedded(Embeddings {
            vectors: vec![vec![0.0; 4]],
            prompt_tokens: 7,
            time: Duration::from_millis(200),
            wait: Duration::ZERO,
        });
        let embedding = completion(&task, &embedded, of(&task, Some(&embedded), now), now);
        assert_eq!(embedding.time_to_first_token, None);
        assert_eq!(embedding.generation, None);
        assert_eq!(embedding.prompt_tokens, 7);
        assert_eq!(embedding.queue_wait, 2.8);
    }
}
