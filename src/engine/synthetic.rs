//! The synthetic engine (`engine.backend = "synthetic"`): the engine's contract without a
//! model, so that the whole path (gateway, queue, worker, commit, reply) runs at the
//! broker's speed and a fleet costs nothing but processes. It answers the same
//! [`Message`]s as the llama.cpp thread: jobs wait for one of `engine.slots` slots, take
//! `[engine.synthetic]`'s time to a first token, then make up one word per token at its
//! pace, streamed as they come; `max_tokens`, stop sequences, timeouts, cancels (a caller
//! that drops its future), the context's size and a seed (same seed, same words) behave as
//! with a model. What it cannot fake honestly it refuses by name: output constraints, tools,
//! log probabilities and logit biases. Its replies name the model "synthetic".

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, Semaphore};

use super::generated_text::longest_suffix_prefix;
use super::{
    Delta, Engine, EngineStartError, Generation, Job, Message, ModelInfo, Occupancy, StepTimes,
};
use crate::config::{EngineSettings, SyntheticSettings};
use crate::protocol::{ErrorCode, FinishReason, Input, Task, TaskError};

/// The model name replies carry.
pub const MODEL_NAME: &str = "synthetic";

/// The words made-up text is drawn from.
const WORDS: [&str; 16] = [
    "the", "warren", "rabbit", "queue", "runs", "under", "a", "quiet", "field", "and", "every",
    "burrow", "keeps", "its", "own", "path",
];

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

/// The made-up completion of `task`, at `pace`, its words sent to `stream` as they come.
async fn generate(
    task: &Task,
    stream: Option<&mpsc::UnboundedSender<Delta>>,
    pace: &SyntheticSettings,
    context: u32,
) -> Result<Generation, TaskError> {
    refuse_what_needs_a_model(task)?;
    let prompt_tokens = prompt_tokens(&task.input);
    let room = context.saturating_sub(prompt_tokens);
    if room == 0 {
        return Err(TaskError::new(
            ErrorCode::PromptTooLong,
            format!("the prompt's {prompt_tokens} tokens fill the context of {context}"),
        ));
    }
    let (limit, limited) = match (task.max_tokens, task.default_max_tokens) {
        (Some(asked), _) if asked > room => {
            return Err(TaskError::new(
                ErrorCode::ContextLengthExceeded,
                format!("the prompt's {prompt_tokens} tokens and max_tokens {asked} do not fit in the context of {context}"),
            ))
        }
        (Some(asked), _) => (asked, true),
        (None, Some(default)) => (default.min(room), true),
        (None, None) if pace.tokens > room => (room, true),
        (None, None) => (pace.tokens, false),
    };
    let mut words = match task.sampling.seed {
        Some(seed) => fastrand::Rng::with_seed(u64::from(seed)),
        None if task.sampling.temperature == 0.0 => fastrand::Rng::with_seed(0),
        None => fastrand::Rng::new(),
    };
    let mut jitter = fastrand::Rng::new();
    let started = Instant::now();
    tokio::time::sleep(jittered(
        Duration::from_millis(pace.first_token_ms),
        pace.jitter,
        &mut jitter,
    ))
    .await;
    let prompt_time = started.elapsed();
    let per_token = Duration::from_secs_f64(1.0 / pace.tokens_per_second);
    let (mut text, mut completion_tokens, mut finish_reason) = (String::new(), 0, None);
    // Bytes of `text` streamed so far: an end that may begin a stop string is held back.
    let mut streamed = 0;
    while completion_tokens < limit {
        if completion_tokens > 0 {
            tokio::time::sleep(jittered(per_token, pace.jitter, &mut jitter)).await;
        }
        text.push(' ');
        text.push_str(WORDS[words.usize(..WORDS.len())]);
        completion_tokens += 1;
        let stop_at = task.stop.iter().filter_map(|s| text.find(s.as_str())).min();
        if let Some(at) = stop_at {
            text.truncate(at);
            finish_reason = Some(FinishReason::Stop);
        }
        let last = finish_reason.is_some() || completion_tokens == limit;
        let held = match last {
            true => 0,
            false => task
                .stop
                .iter()
                .map(|stop| longest_suffix_prefix(text.as_bytes(), stop.as_bytes()))
                .max()
                .unwrap_or(0),
        };
        // The words are ASCII: every byte is a character boundary.
        let ready = text.len() - held;
        if let (Some(stream), true) = (stream, ready > streamed) {
            let _ = stream.send(Delta {
                text: text[streamed..ready].to_owned(),
                logprobs: Vec::new(),
                tool_calls: Vec::new(),
            });
            streamed = ready;
        }
        if finish_reason.is_some() {
            break;
        }
    }
    let finish_reason = finish_reason.unwrap_or(if limited {
        FinishReason::Length
    } else {
        FinishReason::Stop
    });
    Ok(Generation {
        text,
        tool_calls: Vec::new(),
        finish_reason,
        prompt_tokens,
        cached_prompt_tokens: 0,
        completion_tokens,
        logprobs: None,
        slot_wait: Duration::ZERO,
        prompt_time,
        generation_time: started.elapsed().saturating_sub(prompt_time),
    })
}

/// Refuses the fields whose answer only a model can give.
fn refuse_what_needs_a_model(task: &Task) -> Result<(), TaskError> {
    let asked = [
        ("json_schema or grammar", task.constraint.is_some()),
        ("tools", !task.tools.is_empty()),
        ("logprobs", task.logprobs.is_some()),
        ("logit_bias", !task.sampling.logit_bias.is_empty()),
    ];
    match asked.iter().find(|(_, given)| *given) {
        Some((field, _)) => Err(TaskError::new(
            ErrorCode::InvalidRequest,
            format!("`{field}` needs a model: this worker runs the synthetic engine (engine.backend = \"synthetic\")"),
        )),
        None => Ok(()),
    }
}

/// A prompt's tokens as the synthetic engine counts them: a token per four bytes of text.
fn prompt_tokens(input: &Input) -> u32 {
    let bytes = match input {
        Input::Prompt(prompt) => prompt.len(),
        Input::Messages(messages) => messages.iter().map(|m| m.content.len() + 4).sum(),
    };
    u32::try_from(bytes.div_ceil(4).max(1)).unwrap_or(u32::MAX)
}

/// `base`, longer or shorter by up to `share` of it at random.
fn jittered(base: Duration, share: f64, rng: &mut fastrand::Rng) -> Duration {
    base.mul_f64(1.0 + share * (rng.f64() * 2.0 - 1.0))
}

#[cfg(test)]
#[path = "synthetic_tests.rs"]
mod tests;
