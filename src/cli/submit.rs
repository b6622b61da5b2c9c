//! `warren submit`: publish one task the way an upstream service would (confirmed, with
//! `reply_to` and `correlation_id`), wait for its reply and print it.

use std::time::Duration;

use anyhow::{bail, Context};
use futures_util::StreamExt;
use lapin::BasicProperties;
use serde_json::{json, Map, Value};

use super::CliError;
use crate::broker::{self, Published, Publisher, Topology};
use crate::config::Settings;
use crate::protocol::{Chunk, Reply, ReplyStatus};

/// Options of `warren submit`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Text to complete.
    #[arg(conflicts_with = "messages", required_unless_present = "messages")]
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
    /// Nucleus sampling threshold in (0, 1].
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
    /// Seconds to wait for the reply.
    #[arg(long, default_value_t = 300)]
    pub wait: u64,
}

impl Args {
    fn body(&self) -> anyhow::Result<Value> {
        let mut task = Map::new();
        if let Some(prompt) = &self.prompt {
            task.insert("prompt".into(), json!(prompt));
        }
        if let Some(messages) = &self.messages {
            let messages: Value =
                serde_json::from_str(messages).context("--messages is not valid JSON")?;
            task.insert("messages".into(), messages);
        }
        let optional = [
            ("max_tokens", self.max_tokens.map(|v| json!(v))),
            ("temperature", self.temperature.map(|v| json!(v))),
            ("top_p", self.top_p.map(|v| json!(v))),
            ("top_k", self.top_k.map(|v| json!(v))),
            ("seed", self.seed.map(|v| json!(v))),
            ("timeout_ms", self.timeout_ms.map(|v| json!(v))),
        ];
        for (key, value) in optional {
            if let Some(value) = value {
                task.insert(key.into(), value);
            }
        }
        if !self.stop.is_empty() {
            task.insert("stop".into(), json!(self.stop));
        }
        if self.stream {
            task.insert("stream".into(), json!(true));
        }
        Ok(Value::Object(task))
    }
}

/// Publishes the task and prints its reply.
pub async fn run(settings: Settings, args: Args) -> anyhow::Result<()> {
    let body = serde_json::to_vec(&args.body()?)?;
    let name = broker::process_name("warren-submit");
    let connection = broker::connect(&settings.broker.url, &name).await?;
    let topology = Topology::new(&settings);
    // Declaring is idempotent and keeps the task from being dropped when no worker ran yet.
    topology
        .declare(&connection.create_channel().await?)
        .await?;

    let channel = connection.create_channel().await?;
    let (reply_queue, mut replies) =
        broker::consume_replies(&channel, &format!("{name}#reply")).await?;

    let correlation_id = uuid::Uuid::new_v4().to_string();
    let properties = BasicProperties::default()
        .with_content_type("application/json".into())
        .with_delivery_mode(2)
        .with_correlation_id(correlation_id.as_str().into())
        .with_message_id(correlation_id.as_str().into())
        .with_reply_to(reply_queue.as_str().into())
        .with_timestamp(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
        );
    let publisher = Publisher::open(&connection).await?;
    match publisher
        .publish("", topology.requests_queue(), true, &body, properties)
        .await?
    {
        Published::Delivered => {}
        Published::Returned => bail!("queue `{}` does not exist", topology.requests_queue()),
    }
    eprintln!(
        "task {correlation_id} published to {}",
        topology.requests_queue()
    );

    let wait = Duration::from_secs(args.wait);
    let reply = tokio::time::timeout(wait, async {
        while let Some(delivery) = replies.next().await {
            let delivery = delivery?;
            let matches = delivery
                .properties
                .correlation_id()
                .as_ref()
                .is_some_and(|c| c.as_str() == correlation_id);
            if !matches {
                continue;
            }
            match serde_json::from_slice::<Chunk>(&delivery.data) {
                Ok(chunk) if chunk.status == ReplyStatus::Chunk => {
                    if args.json {
                        println!("{}", String::from_utf8_lossy(&delivery.data));
                    } else {
                        print!("{}", chunk.delta);
                        let _ = std::io::Write::flush(&mut std::io::stdout());
                    }
                }
                _ => return Ok(delivery.data),
            }
        }
        bail!("the reply consumer ended")
    })
    .await
    .map_err(|_| CliError::NoReply(args.wait))??;
    let _ = connection.close(200, "done".into()).await;

    let parsed: Reply = serde_json::from_slice(&reply).context("the reply is not valid JSON")?;
    if args.json {
        println!("{}", String::from_utf8_lossy(&reply));
    } else if args.stream {
        println!();
    } else if let Some(text) = &parsed.text {
        println!("{text}");
    }
    if parsed.status == ReplyStatus::Error {
        let error = parsed
            .error
            .map(|e| format!("{}: {}", e.code, e.message))
            .unwrap_or_else(|| "unknown error".to_owned());
        return Err(CliError::TaskFailed(error).into());
    }
    Ok(())
}
