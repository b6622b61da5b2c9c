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

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde::Serialize;
use serde_json::{json, Value};

use crate::broker::{self, Topology};
use crate::client::{Client, Incoming, TaskBody};
use crate::config::Settings;
use crate::engine::{Engine, GenerationRequest};
use crate::protocol::{Input, ReplyStatus, Sampling, Task};

/// Prompts used when no file is given: short openings that make a base model write on.
pub const BUILT_IN_PROMPTS: [&str; 8] = [
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
pub struct Load {
    /// Tasks in all.
    pub tasks: usize,
    /// Tasks outstanding at once.
    pub concurrency: usize,
    /// Prompts, used in turn.
    pub prompts: Vec<String>,
    /// `max_tokens` of each task.
    pub max_tokens: u32,
    /// `temperature` of each task.
    pub temperature: f32,
    /// top-k when sampling (`sampling.default_top_k`, as a worker applies it).
    pub top_k: u32,
}

/// One task as the client saw it.
#[derive(Debug, Clone, Default)]
pub struct Sample {
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
}

/// p50 / p90 / p99 in milliseconds.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Percentiles {
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
}

/// The outcome of a run.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub label: String,
    pub tasks: usize,
    pub errors: usize,
    pub concurrency: usize,
    pub wall_s: f64,
    pub tasks_per_s: f64,
    pub completion_tokens: u64,
    pub tokens_per_s: f64,
    pub latency_ms: Percentiles,
    pub ttft_ms: Percentiles,
    pub queue_wait_ms: Percentiles,
    pub overhead_ms: Option<Percentiles>,
    /// Warren only: round trips of bare probes through the same broker during the run.
    pub broker_floor_ms: Option<Percentiles>,
}

impl Report {
    /// Summarizes `samples` taken over `wall`.
    pub fn new(
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
            latency_ms: percentiles(ok.iter().map(|s| s.latency)),
            ttft_ms: percentiles(ok.iter().map(|s| s.time_to_first_token)),
            queue_wait_ms: percentiles(ok.iter().map(|s| s.queue_wait)),
            overhead_ms: (!overheads.is_empty()).then(|| percentiles(overheads.into_iter())),
            broker_floor_ms: (!broker_floor.is_empty())
                .then(|| percentiles(broker_floor.iter().copied())),
        }
    }

    /// A human-readable table of this report.
    pub fn table(&self) -> String {
        let p = |x: &Percentiles| format!("{:>8.1} {:>8.1} {:>8.1}", x.p50, x.p90, x.p99);
        let mut out = format!(
            "{}: {} tasks ({} errors) at concurrency {} in {:.1} s\n\
             throughput   {:.2} tasks/s, {:.1} completion tokens/s ({} tokens)\n\
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

/// Prompts from `file` (one per non-empty line), or the built-in ones.
pub fn prompts(file: Option<&Path>) -> std::io::Result<Vec<String>> {
    match file {
        Some(path) => Ok(std::fs::read_to_string(path)?
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(str::to_owned)
            .collect()),
        None => Ok(BUILT_IN_PROMPTS.iter().map(|p| (*p).to_owned()).collect()),
    }
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

fn task_body(load: &Load, index: usize) -> TaskBody {
    TaskBody {
        max_tokens: Some(u64::from(load.max_tokens)),
        temperature: Some(f64::from(load.temperature)),
        seed: Some(index as u64),
        ..TaskBody::prompt(load.prompts[index % load.prompts.len()].clone())
    }
}

/// Sends the load to a warren deployment through RabbitMQ, with the broker floor probe
/// running alongside; returns the samples, the wall time and the probe's round trips.
pub async fn against_warren(
    settings: &Settings,
    load: &Load,
) -> anyhow::Result<(Vec<Sample>, Duration, Vec<Duration>)> {
    let name = broker::process_name("warren-bench");
    let topology = Topology::new(settings);
    let client =
        Arc::new(Client::connect(&settings.broker.url, &name, topology.client_route()).await?);
    topology
        .declare(&client.connection().create_channel().await?)
        .await?;
    let probe = floor::FloorProbe::start(settings, &name).await?;
    let load_for_tasks = load.clone();
    let task_client = client.clone();
    let (samples, wall) = drive(load, move |index| {
        let client = task_client.clone();
        let body = task_body(&load_for_tasks, index);
        async move {
            let id = uuid::Uuid::new_v4().to_string();
            let sent = Instant::now();
            let Ok(mut pending) = client.submit(&id, &body).await else {
                return Sample::default();
            };
            let (reply, arrived, worker_time) = loop {
                match pending.next().await {
                    Some(Incoming::Reply {
                        reply,
                        arrived,
                        worker_time,
                    }) => break (reply, arrived, worker_time),
                    Some(Incoming::Chunk(_)) => continue,
                    None => return Sample::default(),
                }
            };
            let latency = arrived - sent;
            if reply.status != ReplyStatus::Ok {
                return Sample {
                    latency,
                    ..Sample::default()
                };
            }
            let t = reply.timings_ms;
            let generation = Duration::from_millis(t.generation);
            // A worker older than the header only reports whole milliseconds.
            let worker_time = worker_time.unwrap_or(Duration::from_millis(t.total));
            Sample {
                ok: true,
                latency,
                time_to_first_token: latency.saturating_sub(generation),
                queue_wait: Duration::from_millis(t.queued),
                overhead: Some(latency.saturating_sub(worker_time)),
                completion_tokens: reply.usage.map_or(0, |u| u.completion_tokens),
            }
        }
    })
    .await;
    let broker_floor = probe.finish().await;
    client.close().await;
    Ok((samples, wall, broker_floor))
}

/// Sends the load to an engine in this process (no broker).
pub async fn against_engine(engine: Arc<Engine>, load: &Load) -> (Vec<Sample>, Duration) {
    let load_for_tasks = load.clone();
    drive(load, move |index| {
        let engine = engine.clone();
        let task = Task {
            input: Input::Prompt(
                load_for_tasks.prompts[index % load_for_tasks.prompts.len()].clone(),
            ),
            max_tokens: load_for_tasks.max_tokens,
            sampling: Sampling {
                temperature: load_for_tasks.temperature,
                top_p: None,
                top_k: (load_for_tasks.temperature > 0.0).then_some(load_for_tasks.top_k),
                min_p: None,
                repeat_penalty: None,
                seed: Some(index as u32),
            },
            stop: Vec::new(),
            timeout: Duration::from_secs(600),
            deadline_ms: None,
            stream: false,
        };
        let request = GenerationRequest { task, stream: None };
        async move {
            let sent = Instant::now();
            match engine.generate(request).await {
                Ok(generation) => {
                    let latency = sent.elapsed();
                    Sample {
                        ok: true,
                        latency,
                        time_to_first_token: latency.saturating_sub(generation.generation_time),
                        queue_wait: generation.slot_wait,
                        overhead: None,
                        completion_tokens: generation.completion_tokens,
                    }
                }
                Err(_) => Sample::default(),
            }
        }
    })
    .await
}

/// Sends the load to a llama-server at `base_url` (`POST /completion`).
pub async fn against_llama_server(base_url: &str, load: &Load) -> (Vec<Sample>, Duration) {
    let url = format!("{}/completion", base_url.trim_end_matches('/'));
    let load_for_tasks = load.clone();
    drive(load, move |index| {
        let url = url.clone();
        let task = task_body(&load_for_tasks, index);
        let load_top_k = load_for_tasks.top_k;
        async move {
            let body = json!({
                "prompt": task.prompt,
                "n_predict": task.max_tokens,
                "temperature": task.temperature,
                "top_k": load_top_k,
                "seed": task.seed,
                "cache_prompt": false,
            });
            tokio::task::spawn_blocking(move || {
                let sent = Instant::now();
                let response = ureq::post(&url).send_json(&body);
                let latency = sent.elapsed();
                let Ok(mut response) = response else {
                    return Sample::default();
                };
                let Ok(reply) = response.body_mut().read_json::<Value>() else {
                    return Sample::default();
                };
                let predicted_ms = reply["timings"]["predicted_ms"].as_f64().unwrap_or(0.0);
                Sample {
                    ok: true,
                    latency,
                    time_to_first_token: latency
                        .saturating_sub(Duration::from_secs_f64(predicted_ms / 1000.0)),
                    queue_wait: Duration::ZERO,
                    overhead: None,
                    completion_tokens: reply["tokens_predicted"].as_u64().unwrap_or(0) as u32,
                }
            })
            .await
            .unwrap_or_default()
        }
    })
    .await
}

/// Sends the load to a warren gateway at `base_url` (`POST {base_url}/completions`, the
/// OpenAI shape) over kept-alive connections. Its path cost is the latency minus the worker's
/// own time, which the gateway passes on in the `x-warren-worker-us` response header.
pub async fn against_gateway(base_url: &str, load: &Load) -> (Vec<Sample>, Duration) {
    let url = format!("{}/completions", base_url.trim_end_matches('/'));
    let agent = ureq::Agent::new_with_defaults();
    let load_for_tasks = load.clone();
    drive(load, move |index| {
        let (url, agent) = (url.clone(), agent.clone());
        let task = task_body(&load_for_tasks, index);
        async move {
            let body = json!({
                "model": "warren-bench",
                "prompt": task.prompt,
                "max_tokens": task.max_tokens,
                "temperature": task.temperature,
                "seed": task.seed,
            });
            tokio::task::spawn_blocking(move || {
                let sent = Instant::now();
                let Ok(mut response) = agent.post(&url).send_json(&body) else {
                    return Sample::default();
                };
                let reply = response.body_mut().read_json::<Value>();
                let latency = sent.elapsed();
                let worker_time = response
                    .headers()
                    .get(crate::protocol::HEADER_WORKER_MICROS)
                    .and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
                    .map(Duration::from_micros);
                let Ok(reply) = reply else {
                    return Sample::default();
                };
                Sample {
                    ok: true,
                    latency,
                    // The gateway does not report generation time: TTFT is not measured.
                    time_to_first_token: Duration::ZERO,
                    queue_wait: Duration::ZERO,
                    overhead: worker_time.map(|w| latency.saturating_sub(w)),
                    completion_tokens: reply["usage"]["completion_tokens"].as_u64().unwrap_or(0)
                        as u32,
                }
            })
            .await
            .unwrap_or_default()
        }
    })
    .await
}

/// Peak resident memory of this process (VmHWM), in MiB, where /proc tells.
pub fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}
