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
    while completion_tokens < limit {
        if completion_tokens > 0 {
            tokio::time::sleep(jittered(per_token, pace.jitter, &mut jitter)).await;
        }
        let piece = format!(" {}", WORDS[words.usize(..WORDS.len())]);
        completion_tokens += 1;
        let before = text.len();
        text.push_str(&piece);
        if let Some(at) = task
            .stop
            .iter()
            .filter_map(|stop| text.find(stop.as_str()))
            .min()
        {
            text.truncate(at);
            finish_reason = Some(FinishReason::Stop);
        }
        if let (Some(stream), true) = (stream, text.len() > before) {
            let _ = stream.send(Delta {
                text: text[before..].to_owned(),
                logprobs: Vec::new(),
                tool_calls: Vec::new(),
            });
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
mod tests {
    use super::*;
    use crate::config::Settings;
    use crate::engine::GenerationRequest;

    fn task(body: serde_json::Value) -> Task {
        let limits = Settings::defaults().task_limits();
        crate::protocol::parse_task(body.to_string().as_bytes(), &limits).unwrap()
    }

    /// A pace fast enough for tests, or slow enough to time out.
    fn pace(tokens_per_second: f64) -> SyntheticSettings {
        SyntheticSettings {
            first_token_ms: 0,
            tokens_per_second,
            jitter: 0.5,
            tokens: 5,
        }
    }

    async fn made_up(body: serde_json::Value) -> Result<Generation, TaskError> {
        generate(&task(body), None, &pace(1e6), 64).await
    }

    #[tokio::test]
    async fn max_tokens_ends_with_length_and_no_limit_ends_with_stop_after_the_configured_length() {
        let limited = made_up(serde_json::json!({"prompt": "Hi", "max_tokens": 7}))
            .await
            .unwrap();
        assert_eq!(
            (limited.completion_tokens, limited.finish_reason),
            (7, FinishReason::Length)
        );
        assert_eq!(limited.text.split_whitespace().count(), 7);
        let free = made_up(serde_json::json!({"prompt": "Hi"})).await.unwrap();
        assert_eq!(
            (free.completion_tokens, free.finish_reason),
            (5, FinishReason::Stop)
        );
        assert_eq!(free.prompt_tokens, 1);
    }

    #[tokio::test]
    async fn the_same_seed_gives_the_same_words_and_greedy_tasks_agree() {
        let seeded =
            serde_json::json!({"prompt": "Hi", "max_tokens": 12, "temperature": 0.8, "seed": 7});
        let (a, b) = (
            made_up(seeded.clone()).await.unwrap(),
            made_up(seeded).await.unwrap(),
        );
        assert_eq!(a.text, b.text);
        let greedy = serde_json::json!({"prompt": "Hi", "max_tokens": 12});
        assert_eq!(
            made_up(greedy.clone()).await.unwrap().text,
            made_up(greedy).await.unwrap().text
        );
    }

    #[tokio::test]
    async fn a_stop_sequence_cuts_the_text_before_it() {
        let all = made_up(serde_json::json!({"prompt": "Hi", "max_tokens": 12}))
            .await
            .unwrap();
        let stop = all.text.split_whitespace().nth(3).unwrap().to_owned();
        let cut = made_up(serde_json::json!({"prompt": "Hi", "max_tokens": 12, "stop": [stop]}))
            .await
            .unwrap();
        assert_eq!(cut.finish_reason, FinishReason::Stop);
        assert!(all.text.starts_with(&cut.text) && cut.text.len() < all.text.len());
        assert!(
            !cut.text.contains(&stop),
            "{:?} still holds {stop:?}",
            cut.text
        );
    }

    #[tokio::test]
    async fn what_needs_a_model_is_refused_by_name_and_the_context_bounds_a_task() {
        for (field, value) in [
            ("json_schema", serde_json::json!({"type": "object"})),
            ("logprobs", serde_json::json!(2)),
        ] {
            let mut body = serde_json::json!({"prompt": "Hi", "max_tokens": 2});
            body[field] = value;
            let refused = made_up(body).await.unwrap_err();
            assert_eq!(refused.code, ErrorCode::InvalidRequest);
            assert!(
                refused.message.contains("synthetic engine"),
                "{}",
                refused.message
            );
        }
        let long = made_up(serde_json::json!({"prompt": "Hi", "max_tokens": 64})).await;
        assert_eq!(long.unwrap_err().code, ErrorCode::ContextLengthExceeded);
    }

    #[tokio::test]
    async fn streamed_words_add_up_to_the_text() {
        let (sender, mut received) = mpsc::unbounded_channel();
        let task = task(serde_json::json!({"prompt": "Hi", "max_tokens": 6, "stream": true}));
        let done = generate(&task, Some(&sender), &pace(1e6), 64)
            .await
            .unwrap();
        drop(sender);
        let mut streamed = String::new();
        while let Some(delta) = received.recv().await {
            streamed.push_str(&delta.text);
        }
        assert_eq!(streamed, done.text);
    }

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
