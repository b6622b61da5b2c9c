//! The inference engine: one GGUF model and one llama.cpp context, owned by a dedicated OS
//! thread, serving generation jobs sent from async code through a channel.
//!
//! Owns everything llama.cpp: loading, tokenizing, chat templates, sampling, decoding. The
//! llama objects never leave the engine thread, so no llama.cpp call can block the tokio
//! runtime and no thread-safety question about contexts arises. It knows nothing of AMQP:
//! it takes a [`GenerationRequest`] and answers a [`Generation`] or a [`TaskError`].
//!
//! Layout: [`runner`] is the step loop on the thread: the scheduler (admit waiting jobs into
//! free slots, drop those timed out or abandoned) and the batch step (one llama.cpp decode
//! holding every generating sequence's next token plus as much prompt as fits, then one
//! sample per sequence; a batch-invariant task in a decode of its own). [`sequence`]
//! is one task's state while it holds a slot (prompt progress, stops, limits, streaming);
//! [`sampling`] picks a task's next token (an argmax for greedy, else a sampler chain;
//! [`best_logits`] finds the few tokens either looks at), within the grammar [`grammar`] builds
//! for a task that constrains its output, asking it about the few tokens [`first_bytes`]
//! leaves when a whole-vocabulary mask is due; [`logprobs`] reports the log probabilities a
//! task asks for; [`prefix`] decides which slot's KV cells a
//! new prompt can start from, and [`chunking`] cuts prompts so that reuse never changes a
//! text; [`prompt`] turns a task's input into tokens;
//! [`device_sampling`] lets the backend (a GPU) choose the tokens of tasks that need no
//! host-side logic, so their logits never cross to the host; [`step_times`] splits each
//! step's time into warren's host work and llama.cpp's. With `engine.role = "embed"` the
//! thread runs [`embedder`] instead: a context made for embeddings, one vector per input
//! ([`pooling`] pools its tokens' vectors).
//! With `engine.backend = "synthetic"`, [`synthetic`] answers instead, without a model.

mod best_logits;
mod chat_template;
mod chunking;
mod device_sampling;
mod embedder;
mod embedding_batch;
mod embedding_inputs;
mod embedding_model;
mod first_bytes;
mod generated_text;
mod grammar;
mod grammar_expansion;
mod grammar_rules;
mod logprobs;
mod occupancy;
mod params;
mod pooling;
mod prefix;
mod prompt;
mod runner;
mod sampling;
mod sequence;
mod step_times;
mod synthetic;
#[cfg(test)]
mod test_model;
mod text_bytes;
mod token_choice;
mod tool_output;
mod tools;
mod watchdog;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};

pub use occupancy::Occupancy;
pub use step_times::{Phase, StepProfile, StepSnapshot, StepTimes};
pub use synthetic::MODEL_NAME as SYNTHETIC_MODEL;

use crate::config::EngineSettings;
use crate::protocol::{
    EmbeddingTask, ErrorCode, FinishReason, Task, TaskError, TokenLogprob, ToolCall, ToolCallDelta,
};

/// What the engine needs to generate one completion.
#[derive(Debug, Clone)]
pub struct GenerationRequest {
    /// The validated task: input, `max_tokens`, sampling, stops, and `timeout` (counted from
    /// when it gets a slot).
    pub task: Task,
    /// Where to send the text as it is generated (pieces that concatenate to the final
    /// text); `None` for no streaming.
    pub stream: Option<mpsc::UnboundedSender<Delta>>,
}

/// A piece of streamed text.
#[derive(Debug, Clone, PartialEq)]
pub struct Delta {
    /// The new text.
    pub text: String,
    /// When the task asked for log probabilities: the tokens whose text this piece completes.
    pub logprobs: Vec<TokenLogprob>,
    /// Pieces of tool calls (a task with tools), as OpenAI streams them.
    pub tool_calls: Vec<ToolCallDelta>,
}

impl Delta {
    /// Adds a later piece to this one, as if they had come as one: text and log
    /// probabilities appended, a call's arguments joined to the piece of the same call.
    pub fn append(&mut self, later: Delta) {
        self.text.push_str(&later.text);
        self.logprobs.extend(later.logprobs);
        for call in later.tool_calls {
            match self.tool_calls.last_mut() {
                Some(last) if last.index == call.index && call.id.is_none() => {
                    last.function.arguments.push_str(&call.function.arguments)
                }
                _ => self.tool_calls.push(call),
            }
        }
    }
}

/// A finished completion.
#[derive(Debug, Clone, PartialEq)]
pub struct Generation {
    /// The generated text (stop sequence excluded); with tool calls, what the model said
    /// besides them.
    pub text: String,
    /// The calls the model made (a task with tools).
    pub tool_calls: Vec<ToolCall>,
    /// Why generation ended.
    pub finish_reason: FinishReason,
    /// Tokens in the rendered prompt.
    pub prompt_tokens: u32,
    /// Of those, tokens whose KV cells were reused from an earlier task (not read again).
    pub cached_prompt_tokens: u32,
    /// Tokens generated.
    pub completion_tokens: u32,
    /// When the task asked for them: the log probabilities of the text's tokens.
    pub logprobs: Option<Vec<TokenLogprob>>,
    /// Time spent waiting for a free slot.
    pub slot_wait: Duration,
    /// Time spent reading the prompt.
    pub prompt_time: Duration,
    /// Time spent generating.
    pub generation_time: Duration,
}

/// An embedding task's vectors.
#[derive(Debug, Clone, PartialEq)]
pub struct Embeddings {
    /// One vector per input, in order, shaped as the task asked (`dimensions`, `normalize`).
    pub vectors: Vec<Vec<f32>>,
    /// Tokens of every input together.
    pub prompt_tokens: u32,
    /// Time between the job reaching the engine and its decodes starting.
    pub wait: Duration,
    /// Time spent embedding.
    pub time: Duration,
}

/// What is known about the loaded model.
#[derive(Debug, Clone)]
pub struct ModelInfo {
    /// Name reported in replies.
    pub name: String,
    /// Context size available to one task, in tokens.
    pub context_per_slot: u32,
    /// Tasks decoded at once.
    pub slots: u32,
    /// Layers offloaded to a GPU.
    pub gpu_layers: u32,
    /// Where the chat template comes from: `gguf` or `builtin:<name>`.
    pub chat_template_source: String,
}

/// The engine could not start.
#[derive(Debug, thiserror::Error)]
pub enum EngineStartError {
    /// The model file does not exist.
    #[error("model file {0} not found (run `make model` to fetch the default model)")]
    ModelMissing(PathBuf),
    /// llama.cpp failed while loading the model or creating the context.
    #[error("llama.cpp could not start: {0}")]
    Llama(String),
    /// The engine thread ended before it reported.
    #[error("the engine thread ended during start-up")]
    ThreadDied,
}

/// What the engine thread receives.
pub(crate) enum Message {
    /// Generate.
    Job(Box<Job>),
    /// Embed (a worker with `engine.role = "embed"`).
    Embed(Box<EmbedJob>),
    /// Drop what is running and end the thread.
    Stop,
}

/// A job handed to the engine thread.
pub(crate) struct Job {
    request: GenerationRequest,
    submitted: Instant,
    reply: oneshot::Sender<Result<Generation, TaskError>>,
}

/// An embedding job handed to the engine thread.
pub(crate) struct EmbedJob {
    task: EmbeddingTask,
    submitted: Instant,
    reply: oneshot::Sender<Result<Embeddings, TaskError>>,
}

impl EmbedJob {
    /// Answers the job with `error`.
    pub(crate) fn refuse(self, error: TaskError) {
        let _ = self.reply.send(Err(error));
    }
}

/// Handle to the engine thread. Cheap to share behind an `Arc`; dropping the last handle
/// lets the thread finish its jobs and exit.
pub struct Engine {
    jobs: mpsc::UnboundedSender<Message>,
    info: ModelInfo,
    occupancy: Arc<Occupancy>,
    times: Arc<StepTimes>,
    thread: std::sync::Mutex<Option<std::thread::JoinHandle<()>>>,
    /// Told when the worker stops its engine, so that its watchdog does not take a panic
    /// while stopping for a death (a thread that returns ends the watch by itself).
    heartbeat: Arc<watchdog::Heartbeat>,
}

impl Engine {
    /// Loads the model on a new engine thread and waits until it is ready to serve.
    /// Blocking: call it from `spawn_blocking` or before the runtime is busy.
    pub fn start(settings: &EngineSettings) -> Result<Engine, EngineStartError> {
        if settings.backend == crate::config::EngineBackend::Synthetic {
            return synthetic::start(settings);
        }
        if !settings.model_path.is_file() {
            return Err(EngineStartError::ModelMissing(settings.model_path.clone()));
        }
        let (jobs_tx, jobs_rx) = mpsc::unbounded_channel();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let stall_timeout_ms = settings.stall_timeout_ms;
        let settings = settings.clone();
        let occupancy = Arc::new(Occupancy::default());
        let times = Arc::new(StepTimes::default());
        let heartbeat = watchdog::Heartbeat::new();
        let reports = runner::Reports {
            occupancy: occupancy.clone(),
            times: times.clone(),
            heartbeat: heartbeat.clone(),
        };
        let thread = std::thread::Builder::new()
            .name("warren-engine".into())
            .spawn(move || runner::run(settings, jobs_rx, ready_tx, reports))
            .map_err(|e| EngineStartError::Llama(format!("cannot spawn engine thread: {e}")))?;
        let info = ready_rx
            .recv()
            .map_err(|_| EngineStartError::ThreadDied)??;
        // Watched from here on: loading a model may take as long as it takes.
        if stall_timeout_ms > 0 {
            let limit = std::time::Duration::from_millis(stall_timeout_ms);
            watchdog::watch(heartbeat.clone(), limit).map_err(|e| {
                EngineStartError::Llama(format!("cannot spawn the engine's watchdog: {e}"))
            })?;
        }
        Ok(Engine {
            jobs: jobs_tx,
            info,
            occupancy,
            times,
            thread: std::sync::Mutex::new(Some(thread)),
            heartbeat,
        })
    }

    /// Stops the engine thread at its next round (a running decode ends first) and waits for
    /// it: tasks still running or waiting are dropped (their callers get `internal`), and the llama objects are freed on the thread that owns them.
    /// Blocking. Call it before the process exits: tearing llama.cpp down while a decode runs
    /// on another thread can crash the process at exit.
    pub fn stop(&self) {
        self.heartbeat.ask_to_stop();
        let _ = self.jobs.send(Message::Stop);
        let thread = self.thread.lock().ok().and_then(|mut t| t.take());
        if let Some(thread) = thread {
            let _ = thread.join();
        }
    }

    /// Slots busy, tasks waiting, KV cells used, read live (for whoever reports on the
    /// engine).
    pub fn occupancy(&self) -> Arc<Occupancy> {
        self.occupancy.clone()
    }

    /// Where the engine thread's steps spend their time, read live.
    pub fn step_times(&self) -> Arc<StepTimes> {
        self.times.clone()
    }

    /// What the engine loaded.
    pub fn info(&self) -> &ModelInfo {
        &self.info
    }

    /// Generates a completion. Dropping the returned future cancels the job: the engine frees
    /// its slot at the next step.
    pub async fn generate(&self, request: GenerationRequest) -> Result<Generation, TaskError> {
        let (reply, result) = oneshot::channel();
        let job = Job {
            request,
            submitted: Instant::now(),
            reply,
        };
        self.ask(Message::Job(Box::new(job)), result).await
    }

    /// Sends `message` to the engine thread and waits for its answer on `result`.
    async fn ask<T>(
        &self,
        message: Message,
        result: oneshot::Receiver<Result<T, TaskError>>,
    ) -> Result<T, TaskError> {
        // Counted before the engine thread can take it, so that its taking never comes first.
        self.occupancy.job_sent();
        if self.jobs.send(message).is_err() {
            self.occupancy.job_taken();
            return Err(engine_gone());
        }
        result.await.map_err(|_| engine_gone())?
    }
}

impl Engine {
    /// Embeds an embedding task's inputs (an engine started with `engine.role = "embed"`;
    /// one that generates refuses it). Dropping the future abandons the job.
    pub async fn embed(&self, task: EmbeddingTask) -> Result<Embeddings, TaskError> {
        let (reply, result) = oneshot::channel();
        let job = EmbedJob {
            task,
            submitted: Instant::now(),
            reply,
        };
        self.ask(Message::Embed(Box::new(job)), result).await
    }
}

fn engine_gone() -> TaskError {
    TaskError::new(ErrorCode::Internal, "the inference engine has stopped")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{FunctionDelta, FunctionKind};

    fn piece(index: u32, id: Option<&str>, name: Option<&str>, arguments: &str) -> ToolCallDelta {
        ToolCallDelta {
            index,
            id: id.map(str::to_owned),
            kind: id.map(|_| FunctionKind::Function),
            function: FunctionDelta {
                name: name.map(str::to_owned),
                arguments: arguments.to_owned(),
            },
        }
    }

    fn delta(text: &str, tool_calls: Vec<ToolCallDelta>) -> Delta {
        Delta {
            text: text.to_owned(),
            logprobs: Vec::new(),
            tool_calls,
        }
    }

    #[test]
    fn appended_pieces_join_text_and_each_calls_arguments() {
        let mut first = delta("a", vec![piece(0, Some("call_1"), Some("f"), "{")]);
        first.append(delta("b", vec![piece(0, None, None, "\"x\"")]));
        first.append(delta(
            "",
            vec![
                piece(0, None, None, ": 1}"),
                piece(1, Some("call_2"), Some("g"), ""),
            ],
        ));
        first.append(delta("", vec![piece(1, None, None, "{}")]));
        assert_eq!(first.text, "ab");
        assert_eq!(
            first.tool_calls,
            vec![
                piece(0, Some("call_1"), Some("f"), "{\"x\": 1}"),
                piece(1, Some("call_2"), Some("g"), "{}"),
            ]
        );
    }
}
