//! `warren bench`: load-test a warren deployment (through RabbitMQ), the engine alone (in this
//! process), or a llama-server (HTTP), and print throughput and latency percentiles.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;

use crate::bench::{self, Load, Report};
use crate::config::Settings;
use crate::engine::Engine;

/// Options of `warren bench`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Tasks to send.
    #[arg(long, default_value_t = 32)]
    pub tasks: usize,
    /// Tasks outstanding at once.
    #[arg(long, default_value_t = 4)]
    pub concurrency: usize,
    /// max_tokens of each task.
    #[arg(long, default_value_t = 64)]
    pub max_tokens: u32,
    /// Tasks of eight lengths (1/8 to 8/8 of --max-tokens) in a scrambled order, so that they
    /// end at different times and free slots here and there.
    #[arg(long)]
    pub mixed_lengths: bool,
    /// temperature of each task (0 = greedy).
    #[arg(long, default_value_t = 0.0)]
    pub temperature: f32,
    /// top_p of each task (nucleus sampling; only with a temperature above 0).
    #[arg(long)]
    pub top_p: Option<f32>,
    /// Prompts, one per line, `\n` for a line break (default: 8 built-in prompts).
    #[arg(long)]
    pub prompts: Option<PathBuf>,
    /// Text put before every prompt, then a blank line: the shared-prefix workload (see
    /// bench/shared-prefix/).
    #[arg(long)]
    pub prefix: Option<PathBuf>,
    /// llama-server only: let it reuse a slot's common prompt prefix (its `cache_prompt`).
    /// A warren worker's equivalent is engine.prefix_cache.
    #[arg(long, requires = "llama_server")]
    pub cache_prompt: bool,
    /// A JSON Schema file: every task's output must match it (`json_schema`), to measure
    /// what structured output costs per token.
    #[arg(long)]
    pub json_schema: Option<PathBuf>,
    /// A JSON Schema file: every task is a chat turn that must call a function whose
    /// arguments follow it (`tools` with a named `tool_choice`), to measure what a
    /// tool-constrained request costs. Not for llama-server.
    #[arg(long, conflicts_with_all = ["json_schema", "llama_server"])]
    pub tool_schema: Option<PathBuf>,
    /// Ask for each token's log probability with this many alternatives (`logprobs`;
    /// llama-server's `n_probs`), to measure what reporting them costs.
    #[arg(long, value_parser = clap::value_parser!(u32).range(0..=20))]
    pub logprobs: Option<u32>,
    /// Every Nth task asks for `batch_invariant` (decoded alone), to measure what a few such
    /// tasks cost the others. Not for llama-server.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..), conflicts_with = "llama_server")]
    pub batch_invariant_every: Option<u32>,
    /// After a task a full queue refused (a nack, a 429), wait this long before that loop's
    /// next task: a client backing off. 0 = at once.
    #[arg(long, default_value_t = 0)]
    pub refused_pause_ms: u64,
    /// Run the engine in this process (engine.* settings, e.g. WARREN__ENGINE__SLOTS) instead
    /// of going through RabbitMQ.
    #[arg(long, conflicts_with = "llama_server")]
    pub in_process: bool,
    /// Drive a llama-server at this URL (e.g. http://127.0.0.1:8080) instead.
    #[arg(long, conflicts_with = "gateway")]
    pub llama_server: Option<String>,
    /// Drive a warren gateway at this base URL (e.g. http://127.0.0.1:8080/v1) instead: the
    /// HTTP path, to compare with the AMQP path.
    #[arg(long, conflicts_with = "in_process")]
    pub gateway: Option<String>,
    /// The deployment serves tasks with the synthetic engine (engine.backend = "synthetic",
    /// no model): a reply that does not name the model `synthetic` counts as an error, so a
    /// model's numbers never pass for the queue's. Through --gateway the model is not checked
    /// (the gateway names the model the caller asked for).
    #[arg(long, conflicts_with_all = ["in_process", "llama_server"])]
    pub synthetic: bool,
    /// Every task streams its text (`stream: true`): the worker publishes chunk messages to
    /// this client's reply queue as it generates, to measure what streaming costs the queue.
    /// Through RabbitMQ only.
    #[arg(long, conflicts_with_all = ["in_process", "llama_server", "gateway"])]
    pub stream: bool,
    /// Name of this run in the report.
    #[arg(long)]
    pub label: Option<String>,
    /// Print the report as one JSON object instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// Runs the benchmark and prints its report.
pub(super) async fn run(settings: Settings, args: Args) -> anyhow::Result<()> {
    let load = Load {
        tasks: args.tasks,
        concurrency: args.concurrency,
        prompts: bench::prompts(args.prompts.as_deref(), args.prefix.as_deref())
            .context("reading --prompts or --prefix")?,
        max_tokens: args.max_tokens,
        mixed_lengths: args.mixed_lengths,
        temperature: args.temperature,
        top_k: settings.sampling.default_top_k,
        top_p: args.top_p,
        cache_prompt: args.cache_prompt,
        json_schema: read_schema(args.json_schema.as_deref(), "--json-schema")?,
        tool_schema: read_schema(args.tool_schema.as_deref(), "--tool-schema")?,
        logprobs: args.logprobs,
        batch_invariant_every: args.batch_invariant_every,
        stream: args.stream,
        refused_pause: std::time::Duration::from_millis(args.refused_pause_ms),
        expect_model: args
            .synthetic
            .then(|| crate::engine::SYNTHETIC_MODEL.to_owned()),
    };
    anyhow::ensure!(!load.prompts.is_empty(), "no prompts");
    let mut step_profile = None;
    let (label, (samples, wall), broker_floor, peak_rss) = if args.in_process {
        let engine_settings = settings.engine.clone();
        let engine = tokio::task::spawn_blocking(move || Engine::start(&engine_settings))
            .await
            .context("the model loader panicked")??;
        let label = format!("engine alone, {} slots", engine.info().slots);
        let engine = Arc::new(engine);
        let before = engine.step_times().snapshot();
        let result = bench::against_engine(engine.clone(), &load).await;
        step_profile = engine.step_times().snapshot().since(&before).profile();
        tokio::task::spawn_blocking(move || engine.stop()).await?;
        (label, result, Vec::new(), bench::peak_rss_mib())
    } else if let Some(url) = &args.gateway {
        let result = bench::against_gateway(url, &load).await;
        (format!("warren gateway {url}"), result, Vec::new(), None)
    } else if let Some(url) = &args.llama_server {
        let result = bench::against_llama_server(url, &load).await;
        (format!("llama-server {url}"), result, Vec::new(), None)
    } else {
        let (samples, wall, broker_floor) = bench::against_warren(&settings, &load).await?;
        (
            format!("warren via {}", settings.topology.requests_queue),
            (samples, wall),
            broker_floor,
            None,
        )
    };
    let report = Report::new(
        args.label.as_deref().unwrap_or(&label),
        load.concurrency,
        &samples,
        wall,
        &broker_floor,
    );
    if args.json {
        let mut value = serde_json::to_value(&report)?;
        if let Some(rss) = peak_rss {
            value["peak_rss_mib"] = serde_json::json!(rss);
        }
        if let Some(profile) = step_profile {
            value["step_profile"] = serde_json::to_value(profile)?;
        }
        println!("{value}");
    } else {
        print!("{}", report.table());
        if let Some(rss) = peak_rss {
            println!("peak RSS     {rss:.0} MiB");
        }
        if let Some(profile) = step_profile {
            println!("steps        {profile}");
        }
    }
    Ok(())
}

/// The JSON file at `path`, if given (`flag` names it in errors).
fn read_schema(
    path: Option<&std::path::Path>,
    flag: &str,
) -> anyhow::Result<Option<serde_json::Value>> {
    let Some(path) = path else {
        return Ok(None);
    };
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {flag}"))?;
    let schema = serde_json::from_str(&text).with_context(|| format!("{flag} is not JSON"))?;
    Ok(Some(schema))
}
