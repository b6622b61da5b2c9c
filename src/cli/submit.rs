//! `warren submit`: publish one task the way an upstream service would (confirmed, with
//! `reply_to` and `correlation_id`), wait for its reply and print it; or, with `--file`, a
//! whole task file as a bulk job (see [`super::bulk`]).

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context};

use super::CliError;
use crate::broker::{self, Topology};
use crate::client::{Client, Incoming};
use crate::config::Settings;
use crate::protocol::{ChatMessage, TaskBody};
use crate::protocol::{ReplyStatus, Tier};

/// Options of `warren submit`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Text to complete.
    #[arg(conflicts_with = "messages", required_unless_present_any = ["messages", "file"])]
    pub prompt: Option<String>,
    /// Chat messages as JSON, e.g. '[{"role":"user","content":"Hi"}]'.
    #[arg(long)]
    pub messages: Option<String>,
    /// Most tokens to generate.
    #[arg(long)]
    pub max_tokens: Option<u32>,
    /// Sampling temperature; 0 = greedy.
    #[arg(long)]
    pub temperature: Option<f64>,
    /// Nucleus sampling threshold in [0, 1] (0 keeps only the most likely token).
    #[arg(long)]
    pub top_p: Option<f64>,
    /// Keep the k most likely tokens.
    #[arg(long)]
    pub top_k: Option<u32>,
    /// Seed for sampling.
    #[arg(long)]
    pub seed: Option<u32>,
    /// Stop sequence (repeatable).
    #[arg(long)]
    pub stop: Vec<String>,
    /// Bound on the inference, in milliseconds.
    #[arg(long)]
    pub timeout_ms: Option<u64>,
    /// Print the whole reply as JSON instead of its text (with --stream: every message).
    #[arg(long)]
    pub json: bool,
    /// Stream: print the text as it is generated.
    #[arg(long)]
    pub stream: bool,
    /// The model to run the task on, with routing by model (`topology.tasks_exchange`): the
    /// routing key on the tasks exchange.
    #[arg(long)]
    pub model: Option<String>,
    /// Priority tier: `interactive` (the default for one task) or `batch` (the default with
    /// --file): workers take batch tasks only when a slot would otherwise stay free.
    #[arg(long, value_enum)]
    pub tier: Option<TierArg>,
    /// Seconds to wait for the reply (with --file: for each task's reply once published).
    #[arg(long, default_value_t = 300)]
    pub wait: u64,
    /// A bulk job: a JSONL file of tasks (one contract-v1 task per line) to publish.
    /// Each line carries its own task settings: the one-task options are refused with it.
    #[arg(long, requires = "out", conflicts_with_all = [
        "prompt", "messages", "stream", "json", "max_tokens", "temperature", "top_p", "top_k",
        "seed", "stop", "timeout_ms",
    ])]
    pub file: Option<PathBuf>,
    /// With --file: where each reply goes, one JSON line per task; lines already there are
    /// not sent again (resume).
    #[arg(long, requires = "file")]
    pub out: Option<PathBuf>,
    /// With --file: most tasks published and not yet answered at once.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub in_flight: u32,
}

/// `--tier`.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub(crate) enum TierArg {
    /// Served first.
    Interactive,
    /// Served when a slot would otherwise stay free.
    Batch,
}

impl TierArg {
    fn tier(self) -> Tier {
        match self {
            TierArg::Interactive => Tier::Interactive,
            TierArg::Batch => Tier::Batch,
        }
    }
}

impl Args {
    fn body(&self) -> anyhow::Result<TaskBody> {
        let messages = match &self.messages {
            Some(messages) => Some(serde_json::from_str::<Vec<ChatMessage>>(messages).context(
                "--messages must be a JSON list of {\"role\", \"content\"} objects \
                     (role system, user or assistant)",
            )?),
            None => None,
        };
        Ok(TaskBody {
            prompt: self.prompt.clone(),
            messages,
            max_tokens: self.max_tokens.map(u64::from),
            temperature: self.temperature,
            top_p: self.top_p,
            top_k: self.top_k.map(u64::from),
            seed: self.seed.map(u64::from),
            stop: (!self.stop.is_empty()).then(|| self.stop.clone()),
            timeout_ms: self.timeout_ms,
            stream: self.stream.then_some(true),
            ..TaskBody::default()
        })
    }
}

/// Publishes the task and prints its reply.
pub(super) async fn run(settings: Settings, args: Args) -> anyhow::Result<()> {
    if args.model.is_some() && !settings.topology.routes_by_model() {
        return Err(CliError::Config(
            "--model needs routing by model: set topology.tasks_exchange".into(),
        )
        .into());
    }
    let routed = settings.topology.routes_by_model();
    if routed && args.model.is_none() && settings.engine.model_name.is_empty() {
        return Err(CliError::Config(
            "tasks are routed by model (topology.tasks_exchange): give --model".into(),
        )
        .into());
    }
    if let (Some(tasks), Some(results)) = (&args.file, &args.out) {
        let job = super::submit_file::Job {
            tasks: tasks.clone(),
            results: results.clone(),
            in_flight: args.in_flight as usize,
            wait: Duration::from_secs(args.wait),
            model: args.model.clone(),
            tier: args.tier.map_or(Tier::Batch, TierArg::tier),
        };
        return super::submit_file::run(settings, job).await;
    }
    let body = args.body()?;
    let name = broker::process_name("warren-submit");
    let topology = Topology::new(&settings);
    let client = Client::connect(&settings.broker.url, &name, topology.client_route()).await?;
    // Declaring is idempotent and keeps the task from being dropped when no worker ran yet.
    topology.declare(client.connection()).await?;

    let id = uuid::Uuid::new_v4().to_string();
    // `--wait` bounds the publish too: a broker blocking publishers (a resource alarm)
    // never confirms it.
    let wait = Duration::from_secs(args.wait);
    let deadline = tokio::time::Instant::now() + wait;
    let task = body.to_bytes();
    let published = client.submit_routed(
        &id,
        &task,
        args.model.as_deref(),
        args.tier.map_or(Tier::Interactive, TierArg::tier),
    );
    let mut pending = tokio::time::timeout_at(deadline, published)
        .await
        .map_err(|_| CliError::NotConfirmed(args.wait))??;
    match &args.model {
        Some(model) => eprintln!("task {id} published for model {model}"),
        None => eprintln!("task {id} published to {}", topology.requests_queue()),
    }

    let reply = tokio::time::timeout_at(deadline, async {
        while let Some(incoming) = pending.next().await {
            match incoming {
                Incoming::Chunk(chunk) if args.json => {
                    println!("{}", serde_json::to_string(&chunk).unwrap_or_default());
                }
                Incoming::Chunk(chunk) => {
                    print!("{}", chunk.delta);
                    let _ = std::io::Write::flush(&mut std::io::stdout());
                }
                Incoming::Reply { reply, .. } => return Ok(reply),
                Incoming::Started => {}
            }
        }
        bail!("the connection to RabbitMQ was lost before the reply came")
    })
    .await
    .map_err(|_| CliError::NoReply(args.wait))??;
    client.close().await;

    if args.json {
        println!("{}", String::from_utf8_lossy(&reply.to_bytes()));
    } else if args.stream {
        println!();
    } else if let Some(text) = &reply.text {
        println!("{text}");
    }
    if reply.status == ReplyStatus::Error {
        let error = reply
            .error
            .map(|e| format!("{}: {}", e.code, e.message))
            .unwrap_or_else(|| "unknown error".to_owned());
        return Err(CliError::TaskFailed(error).into());
    }
    Ok(())
}
