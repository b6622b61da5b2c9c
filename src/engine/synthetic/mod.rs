//! The synthetic engine (`engine.backend = "synthetic"`): the engine's contract without a
//! model, so that the whole path (gateway, queue, worker, commit, reply) runs at the
//! broker's speed and a fleet costs nothing but processes. It answers the same
//! [`Message`]s as the llama.cpp thread: jobs wait for one of `engine.slots` slots, take
//! `[engine.synthetic]`'s time to a first token, then make up one word per token at its
//! pace, streamed as they come; `max_tokens`, stop sequences, timeouts, cancels (a caller
//! that drops its future), the context's size and a seed (same seed, same words) behave as
//! with a model. What it cannot fake honestly it refuses by name: output constraints, tools,
//! log probabilities and logit biases. Its replies name the model "synthetic". This module
//! owns the thread and the slots; [`text`] the made-up text.

use std::sync::Arc;

use tokio::sync::{mpsc, Semaphore};

use super::{Engine, EngineStartError, Job, Message, ModelInfo, Occupancy, StepTimes};
use crate::config::{EngineSettings, SyntheticSettings};
use crate::protocol::{ErrorCode, TaskError};

mod text;

use text::generate;

/// The model name replies carry.
pub const MODEL_NAME: &str = "synthetic";

/// Starts the synthetic engine on a thread of its own.
pub(super) fn start(settings: &EngineSettings) -> Result<Engine, EngineStartError> {
    let (jobs, received) = mpsc::unbounded_channel();
    let occupancy = Arc::new(Occupancy::default());
    let slots = settings.slots as usize;
    let context = settings.context_size;
    let (pace, served) = (settings.synthetic.clone(), occupancy.clone());
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .map_err(|e| EngineStartError::Llama(format!("cannot start the synthetic engine: {e}")))?;
    let thread = std::thread::Builder::new()
        .name("warren-synthetic".into())
        .spawn(move || runtime.block_on(serve(received, pace, served, slots, context)))
        .map_err(|e| EngineStartError::Llama(format!("cannot spawn the engine thread: {e}")))?;
    Ok(Engine {
        jobs,
        info: ModelInfo {
            name: MODEL_NAME.to_owned(),
            context_per_slot: context,
            slots: settings.slots,
            gpu_layers: 0,
            chat_template_source: "none (synthetic engine)".to_owned(),
        },
        occupancy,
        times: Arc::new(StepTimes::default()),
        thread: std::sync::Mutex::new(Some(thread)),
        // Unwatched: no llama.cpp call runs here.
        heartbeat: super::watchdog::Heartbeat::new(),
    })
}

/// Serves jobs until `Stop` (or every handle is gone); jobs still running are then dropped,
/// and their callers told the engine stopped.
async fn serve(
    mut received: mpsc::UnboundedReceiver<Message>,
    pace: SyntheticSettings,
    occupancy: Arc<Occupancy>,
    slots: usize,
    context: u32,
) {
    let free = Arc::new(Semaphore::new(slots));
    let pace = Arc::new(pace);
    while let Some(message) = received.recv().await {
        match message {
            Message::Job(job) => {
                let (free, pace, occupancy) = (free.clone(), pace.clone(), occupancy.clone());
                tokio::spawn(async move {
                    run(*job, &free, &pace, &occupancy, slots, context).await;
                });
            }
            Message::Embed(job) => {
                occupancy.job_taken();
                job.refuse(TaskError::new(
                    ErrorCode::InvalidRequest,
                    "embedding needs a model: this worker runs the synthetic engine",
                ));
            }
            Message::Stop => break,
        }
    }
    occupancy.set_busy(0);
}

/// One job: a slot, then the made-up text; abandoned as soon as its caller goes away.
async fn run(
    job: Job,
    free: &Arc<Semaphore>,
    pace: &SyntheticSettings,
    occupancy: &Occupancy,
    slots: usize,
    context: u32,
) {
    let Job {
        request,
        submitted,
        mut reply,
    } = job;
    let slot = tokio::select! {
        slot = free.clone().acquire_owned() => slot.ok(),
        _ = reply.closed() => None,
    };
    occupancy.job_taken();
    let Some(slot) = slot else { return };
    occupancy.set_busy(slots - free.available_permits());
    let slot_wait = submitted.elapsed();
    let task = &request.task;
    let generated = tokio::select! {
        result = tokio::time::timeout(task.timeout, generate(task, request.stream.as_ref(), pace, context)) => Some(result),
        _ = reply.closed() => None,
    };
    drop(slot);
    occupancy.set_busy(slots - free.available_permits());
    let result = match generated {
        None => return,
        Some(Err(_)) => Err(TaskError::new(
            ErrorCode::Timeout,
            format!(
                "generation took longer than the task's timeout of {} ms",
                task.timeout.as_millis()
            ),
        )),
        Some(Ok(result)) => result.map(|mut g| {
            g.slot_wait = slot_wait;
            g
        }),
    };
    let _ = reply.send(result);
}

#[cfg(test)]
mod tests {
    use super::text::tests::{pace, task};
    use super::*;
    use crate::config::Settings;
    use crate::engine::GenerationRequest;
    #[tokio::test(flavor = "multi_thread")]
    async fn the_engine_times_out_a_slow_task_and_serves_the_next() {
        let mut settings = Settings::defaults().engine;
        settings.backend = crate::config::EngineBackend::Synthetic;
        settings.synthetic = pace(5.0);
        let engine = tokio::task::spawn_blocking(move || start(&settings).unwrap())
            .await
            .unwrap();
        assert_eq!(engine.info().name, MODEL_NAME);
        let request = |body| GenerationRequest {
            task: task(body),
            stream: None,
        };
        let slow = serde_json::json!({"prompt": "Hi", "max_tokens": 50, "timeout_ms": 300});
        let timed_out = engine.generate(request(slow)).await.unwrap_err();
        assert_eq!(timed_out.code, ErrorCode::Timeout);
        let next = engine
            .generate(request(
                serde_json::json!({"prompt": "Hi", "max_tokens": 2}),
            ))
            .await
            .unwrap();
        assert_eq!(next.completion_tokens, 2);
        assert_eq!(engine.occupancy().busy(), 0);
        tokio::task::spawn_blocking(move || engine.stop())
            .await
            .unwrap();
    }
}
