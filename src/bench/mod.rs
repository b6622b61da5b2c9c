//! The load generator behind `warren bench`: sends N tasks at a fixed concurrency to one of
//! three targets and reports throughput and latency percentiles (HDR histograms):
//! - a warren deployment, through RabbitMQ, as an upstream service would;
//! - the engine alone, in this process (same step loop, no broker), to see what the broker
//!   path costs;
//! - llama.cpp's `llama-server`, over HTTP (`/completion`), for comparison.
//!
//! For warren, [`floor`] measures the broker's own round trip alongside the load, as the
//! baseline for the broker path.
//!
//! Every target is measured the same way: latency is end to end as the client sees it; time to
//! first token is latency minus the server's own generation time; tokens are the server's
//! counts of generated tokens.

mod floor;
mod report;
mod targets;

pub(crate) use report::Report;
pub(crate) use targets::{against_engine, against_gateway, against_llama_server, against_warren};

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::protocol::{ChatMessage, FunctionDef, FunctionKind, Role, TaskBody, Tool, ToolChoice};
use serde_json::Value;

/// Prompts used when no file is given: short openings that make a base model write on.
pub(crate) const BUILT_IN_PROMPTS: [&str; 8] = [
    "Once upon a time, in a small village by the sea,",
    "The history of the printing press begins",
    "Here is a recipe for a simple tomato soup:",
    "The three most important ideas in thermodynamics are",
    "Dear diary, today I finally",
    "In the year 2150, the first city on Mars",
    "A good way to learn a new programming language is",
    "The old lighthouse keeper looked at the storm and",
];

/// What to send.
#[derive(Debug, Clone)]
pub(crate) struct Load {
    /// Tasks in all.
    pub tasks: usize,
    /// Tasks outstanding at once.
    pub concurrency: usize,
    /// Prompts, used in turn.
    pub prompts: Vec<String>,
    /// `max_tokens` of each task (the longest, with `mixed_lengths`).
    pub max_tokens: u32,
    /// Tasks of eight lengths, 1/8 to 8/8 of `max_tokens`, in a scrambled order: they end at
    /// different times and free slots here and there, as real traffic does.
    pub mixed_lengths: bool,
    /// `temperature` of each task.
    pub temperature: f32,
    /// top-k when sampling (`sampling.default_top_k`, as a worker applies it).
    pub top_k: u32,
    /// `top_p` of each task, if any.
    pub top_p: Option<f32>,
    /// llama-server only: its `cache_prompt` (reuse the slot's common prompt prefix). A
    /// warren worker's equivalent is `engine.prefix_cache`.
    pub cache_prompt: bool,
    /// A JSON Schema every task's output must match (the structured-output workload).
    pub json_schema: Option<Value>,
    /// The parameters of a tool every task must call (the tool-calling workload): each task
    /// is then a chat turn that names the function [`BENCH_TOOL`].
    pub tool_schema: Option<Value>,
    /// Alternatives per token when every task asks for log probabilities.
    pub logprobs: Option<u32>,
    /// Every Nth task asks for `batch_invariant`.
    pub batch_invariant_every: Option<u32>,
    /// Through RabbitMQ only: every task streams (`stream: true`), so the worker publishes
    /// chunk messages to the caller as it generates.
    pub stream: bool,
    /// After a refused task (a full queue), how long its loop waits before the next: a
    /// client backing off.
    pub refused_pause: Duration,
    /// The model every AMQP reply must name (`warren bench --synthetic`: "synthetic"); a
    /// reply from another counts as an error, so that a model's numbers never pass for the
    /// queue's.
    pub expect_model: Option<String>,
}

/// One task as the client saw it.
#[derive(Debug, Clone, Default)]
pub(crate) struct Sample {
    /// Whether it completed.
    pub ok: bool,
    /// Whether a full queue refused it (a nack over AMQP, a 429 `queue_full` over HTTP);
    /// `latency` is then how long the refusal took.
    pub refused: bool,
    /// Send to reply.
    pub latency: Duration,
    /// Latency minus the server's generation time.
    pub time_to_first_token: Duration,
    /// Time waiting before inference started, as the server reports it.
    pub queue_wait: Duration,
    /// Warren only: latency minus the worker's own time for the task (broker path).
    pub overhead: Option<Duration>,
    /// Tokens generated.
    pub completion_tokens: u32,
    /// Prompt tokens the server evaluated (those not reused from a cache).
    pub prompt_read: u32,
}

impl Sample {
    /// A task a full queue refused after `latency`.
    pub(crate) fn refusal(latency: Duration) -> Sample {
        Sample {
            refused: true,
            latency,
            ..Sample::default()
        }
    }
}

/// Prompts from `file` (one per non-empty line; `\n` in a line stands for a line break), or
/// the built-in ones; each after the text of `prefix` and a blank line, when given (the
/// shared-prefix workload: one long common prefix, short distinct endings).
pub(crate) fn prompts(file: Option<&Path>, prefix: Option<&Path>) -> std::io::Result<Vec<String>> {
    let endings: Vec<String> = match file {
        Some(path) => std::fs::read_to_string(path)?
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(|l| l.replace("\\n", "\n"))
            .collect(),
        None => BUILT_IN_PROMPTS.iter().map(|p| (*p).to_owned()).collect(),
    };
    let prefix = match prefix {
        Some(path) => format!("{}\n\n", std::fs::read_to_string(path)?.trim_end()),
        None => String::new(),
    };
    Ok(endings
        .into_iter()
        .map(|ending| format!("{prefix}{ending}"))
        .collect())
}

/// Prints `done/total` on stderr about once a second until `done` reaches `total`.
fn progress(done: Arc<AtomicUsize>, total: usize) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let started = Instant::now();
        loop {
            tokio::time::sleep(Duration::from_secs(1)).await;
            let n = done.load(Ordering::Relaxed);
            eprint!(
                "\r{n}/{total} tasks, {:.0} s",
                started.elapsed().as_secs_f64()
            );
            if n >= total {
                eprintln!();
                return;
            }
        }
    })
}

/// Runs `load` with `concurrency` loops each calling `one(index)` until every task is sent.
async fn drive<F, Fut>(load: &Load, one: F) -> (Vec<Sample>, Duration)
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Sample> + Send,
{
    let next = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicUsize::new(0));
    let samples = Arc::new(Mutex::new(Vec::with_capacity(load.tasks)));
    let one = Arc::new(one);
    let reporter = progress(done.clone(), load.tasks);
    let started = Instant::now();
    let mut loops = Vec::new();
    for _ in 0..load.concurrency.max(1) {
        let (next, done, samples, one) = (next.clone(), done.clone(), samples.clone(), one.clone());
        let (total, pause) = (load.tasks, load.refused_pause);
        loops.push(tokio::spawn(async move {
            loop {
                let index = next.fetch_add(1, Ordering::Relaxed);
                if index >= total {
                    return;
                }
                let sample = one(index).await;
                let refused = sample.refused;
                if let Ok(mut samples) = samples.lock() {
                    samples.push(sample);
                }
                done.fetch_add(1, Ordering::Relaxed);
                if refused && !pause.is_zero() {
                    tokio::time::sleep(pause).await;
                }
            }
        }));
    }
    for task in loops {
        let _ = task.await;
    }
    let wall = started.elapsed();
    reporter.abort();
    eprintln!();
    let samples = samples.lock().map(|s| s.clone()).unwrap_or_default();
    (samples, wall)
}

impl Load {
    /// Whether task `index` asks for `batch_invariant`.
    pub(crate) fn batch_invariant(&self, index: usize) -> bool {
        self.batch_invariant_every
            .is_some_and(|every| index.is_multiple_of(every as usize))
    }

    /// `max_tokens` of task `index`.
    pub(crate) fn max_tokens_of(&self, index: usize) -> u32 {
        if !self.mixed_lengths {
            return self.max_tokens;
        }
        let eighths = 1 + (index * 5 % 8) as u32;
        (self.max_tokens * eighths / 8).max(1)
    }
}

/// The function every task of the tool-calling workload must call.
pub(crate) const BENCH_TOOL: &str = "record";

/// The tool of the tool-calling workload, whose arguments follow `parameters`.
pub(crate) fn bench_tool(parameters: &Value) -> Tool {
    Tool {
        kind: FunctionKind::Function,
        function: FunctionDef {
            name: BENCH_TOOL.to_owned(),
            description: Some("Records the answer.".to_owned()),
            parameters: Some(parameters.clone()),
            strict: None,
        },
    }
}

/// The task `index` of `load`, as every target is sent it.
fn task_body(load: &Load, index: usize) -> TaskBody {
    let prompt = load.prompts[index % load.prompts.len()].clone();
    let mut body = TaskBody {
        max_tokens: Some(u64::from(load.max_tokens_of(index))),
        temperature: Some(f64::from(load.temperature)),
        top_p: load.top_p.map(f64::from),
        seed: Some(index as u64),
        json_schema: load.json_schema.clone(),
        logprobs: load.logprobs.map(u64::from),
        batch_invariant: load.batch_invariant(index).then_some(true),
        stream: load.stream.then_some(true),
        ..TaskBody::prompt(prompt.clone())
    };
    if let Some(parameters) = &load.tool_schema {
        body.prompt = None;
        body.messages = Some(vec![ChatMessage::new(Role::User, prompt)]);
        body.tools = Some(vec![bench_tool(parameters)]);
        body.tool_choice = Some(ToolChoice::Function(BENCH_TOOL.to_owned()).to_json());
    }
    body
}

/// Peak resident memory of this process (VmHWM), in MiB, where /proc tells.
pub(crate) fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mixed_lengths_cover_eighths_of_max_tokens_in_a_scrambled_order() {
        let load = Load {
            tasks: 16,
            concurrency: 4,
            prompts: vec!["x".into()],
            max_tokens: 96,
            mixed_lengths: true,
            temperature: 0.0,
            top_k: 40,
            top_p: None,
            cache_prompt: false,
            json_schema: None,
            tool_schema: None,
            logprobs: None,
            batch_invariant_every: None,
            stream: false,
            refused_pause: Duration::ZERO,
            expect_model: None,
        };
        let lengths: Vec<u32> = (0..8).map(|i| load.max_tokens_of(i)).collect();
        assert_eq!(lengths, [12, 72, 36, 96, 60, 24, 84, 48]);
        assert_eq!(load.max_tokens_of(8), 12, "the pattern repeats");
        let same = Load {
            mixed_lengths: false,
            ..load
        };
        assert!((0..8).all(|i| same.max_tokens_of(i) == 96));
    }
}
