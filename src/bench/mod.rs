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
mod targets;

pub(crate) use targets::{against_engine, against_gateway, against_llama_server, against_warren};

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde::Serialize;

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
}

/// One task as the client saw it.
#[derive(Debug, Clone, Default)]
pub(crate) struct Sample {
    /// Whether it completed.
    pub ok: bool,
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

/// p50 / p90 / p99 in milliseconds.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub(crate) struct Percentiles {
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
}

/// The outcome of a run.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Report {
    /// Name of the run.
    pub label: String,
    /// Tasks sent.
    pub tasks: usize,
    /// Tasks that did not complete.
    pub errors: usize,
    /// Tasks outstanding at once.
    pub concurrency: usize,
    /// Wall time of the run, in seconds.
    pub wall_s: f64,
    /// Completed tasks per second.
    pub tasks_per_s: f64,
    /// Tokens generated, in all.
    pub completion_tokens: u64,
    /// Tokens generated per second.
    pub tokens_per_s: f64,
    /// Prompt tokens the server evaluated per task, on average (the rest came from a cache).
    pub prompt_read_per_task: f64,
    /// End-to-end latency as the client saw it.
    pub latency_ms: Percentiles,
    /// Latency minus the server's generation time.
    pub ttft_ms: Percentiles,
    /// Time before inference started, as the server reports it.
    pub queue_wait_ms: Percentiles,
    /// Latency minus the worker's own time: the broker path (AMQP), or the HTTP and broker
    /// path (gateway).
    pub overhead_ms: Option<Percentiles>,
    /// Warren only: round trips of bare probes through the same broker during the run.
    pub broker_floor_ms: Option<Percentiles>,
}

impl Report {
    /// Summarizes `samples` taken over `wall`.
    pub(crate) fn new(
        label: &str,
        concurrency: usize,
        samples: &[Sample],
        wall: Duration,
        broker_floor: &[Duration],
    ) -> Report {
        let ok: Vec<_> = samples.iter().filter(|s| s.ok).collect();
        let tokens: u64 = ok.iter().map(|s| u64::from(s.completion_tokens)).sum();
        let wall_s = wall.as_secs_f64().max(1e-9);
        let overheads: Vec<_> = ok.iter().filter_map(|s| s.overhead).collect();
        Report {
            label: label.to_owned(),
            tasks: samples.len(),
            errors: samples.len() - ok.len(),
            concurrency,
            wall_s,
            tasks_per_s: ok.len() as f64 / wall_s,
            completion_tokens: tokens,
            tokens_per_s: tokens as f64 / wall_s,
            prompt_read_per_task: ok.iter().map(|s| f64::from(s.prompt_read)).sum::<f64>()
                / (ok.len().max(1) as f64),
            latency_ms: percentiles(ok.iter().map(|s| s.latency)),
            ttft_ms: percentiles(ok.iter().map(|s| s.time_to_first_token)),
            queue_wait_ms: percentiles(ok.iter().map(|s| s.queue_wait)),
            overhead_ms: (!overheads.is_empty()).then(|| percentiles(overheads.into_iter())),
            broker_floor_ms: (!broker_floor.is_empty())
                .then(|| percentiles(broker_floor.iter().copied())),
        }
    }

    /// A human-readable table of this report.
    pub(crate) fn table(&self) -> String {
        let p = |x: &Percentiles| format!("{:>8.1} {:>8.1} {:>8.1}", x.p50, x.p90, x.p99);
        let mut out = format!(
            "{}: {} tasks ({} errors) at concurrency {} in {:.1} s\n\
             throughput   {:.2} tasks/s, {:.1} completion tokens/s ({} tokens)\n\
             prompt       {:.1} tokens read per task\n\
             {:<12} {:>8} {:>8} {:>8}\n\
             {:<12} {}\n{:<12} {}\n{:<12} {}\n",
            self.label,
            self.tasks,
            self.errors,
            self.concurrency,
            self.wall_s,
            self.tasks_per_s,
            self.tokens_per_s,
            self.completion_tokens,
            self.prompt_read_per_task,
            "ms",
            "p50",
            "p90",
            "p99",
            "latency",
            p(&self.latency_ms),
            "ttft",
            p(&self.ttft_ms),
            "queue wait",
            p(&self.queue_wait_ms),
        );
        if let Some(overhead) = &self.overhead_ms {
            out.push_str(&format!("{:<12} {}\n", "broker path", p(overhead)));
        }
        if let Some(floor) = &self.broker_floor_ms {
            out.push_str(&format!("{:<12} {}\n", "broker floor", p(floor)));
        }
        out
    }
}

fn percentiles(values: impl Iterator<Item = Duration>) -> Percentiles {
    let Ok(mut histogram) = Histogram::<u64>::new(3) else {
        return Percentiles::default();
    };
    let mut any = false;
    for value in values {
        any = true;
        let _ = histogram.record(value.as_micros().max(1) as u64);
    }
    if !any {
        return Percentiles::default();
    }
    let ms = |q: f64| histogram.value_at_quantile(q) as f64 / 1000.0;
    Percentiles {
        p50: ms(0.50),
        p90: ms(0.90),
        p99: ms(0.99),
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
        let total = load.tasks;
        loops.push(tokio::spawn(async move {
            loop {
                let index = next.fetch_add(1, Ordering::Relaxed);
                if index >= total {
                    return;
                }
                let sample = one(index).await;
                if let Ok(mut samples) = samples.lock() {
                    samples.push(sample);
                }
                done.fetch_add(1, Ordering::Relaxed);
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
