//! `warren dlq list | replay | purge`: inspect and replay the dead-letter queue.

use std::time::Duration;

use anyhow::bail;

use super::CliError;
use crate::broker::{self, Topology};
use crate::config::Settings;
use crate::dlq::{self, Filter};

/// Options of `warren dlq`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// What to do.
    #[command(subcommand)]
    pub action: Action,
}

/// The dead-letter actions.
#[derive(Debug, clap::Subcommand)]
pub(crate) enum Action {
    /// Show the dead letters (id, code, attempts, age, size, reason) without removing them.
    List {
        /// Show at most this many.
        #[arg(long, default_value_t = 100)]
        limit: usize,
        /// One JSON object per line instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Send dead letters back to the requests queue as fresh tasks (attempt count reset).
    Replay {
        /// Only the task with this message_id (else correlation_id).
        #[arg(long, group = "which")]
        id: Option<String>,
        /// Only tasks with this error code (or broker reason, e.g. delivery_limit).
        #[arg(long, group = "which")]
        code: Option<String>,
        /// Every dead letter.
        #[arg(long, group = "which")]
        all: bool,
        /// Replay at most this many.
        #[arg(long, default_value_t = usize::MAX)]
        limit: usize,
    },
    /// Delete every dead letter.
    Purge {
        /// Confirm: purging cannot be undone.
        #[arg(long)]
        yes: bool,
    },
}

/// Runs a dead-letter action.
pub(super) async fn run(settings: Settings, args: Args) -> anyhow::Result<()> {
    let topology = Topology::new(&settings);
    let queue = topology.dead_letter_queue().to_owned();
    if let Action::Purge { yes: false } = args.action {
        bail!("purging {queue} deletes every dead letter for good: add --yes to confirm");
    }
    let routed = settings.topology.routes_by_model();
    if matches!(args.action, Action::Replay { .. })
        && routed
        && settings.engine.model_name.is_empty()
    {
        // Without a model the replay would go to the requests queue no worker reads once the
        // fleet routes by model.
        return Err(CliError::Config(
            "tasks are routed by model (topology.tasks_exchange): set engine.model_name \
             (WARREN__ENGINE__MODEL_NAME) to the model whose queue takes the replayed tasks"
                .into(),
        )
        .into());
    }
    let connection =
        broker::connect(&settings.broker.url, &broker::process_name("warren-dlq")).await?;
    match args.action {
        Action::List { limit, json } => {
            let channel = connection.create_channel().await?;
            let letters = dlq::list(&channel, &queue, limit).await?;
            broker::close_channel(&channel, "listed").await;
            if json {
                for letter in &letters {
                    println!("{}", serde_json::to_string(letter)?);
                }
            } else {
                println!(
                    "{:<38} {:<18} {:>8} {:>6} {:>8}  REASON",
                    "ID", "CODE", "ATTEMPTS", "AGE", "SIZE"
                );
                for l in &letters {
                    println!(
                        "{:<38} {:<18} {:>8} {:>6} {:>8}  {}",
                        l.id.as_deref().unwrap_or("-"),
                        l.code,
                        l.attempts.map_or("-".to_owned(), |a| a.to_string()),
                        l.age_ms.map_or("-".to_owned(), |ms| dlq::human_age(
                            Duration::from_millis(ms)
                        )),
                        l.size,
                        l.reason
                    );
                }
                eprintln!("{} dead letter(s) in {queue}", letters.len());
            }
        }
        Action::Replay {
            id,
            code,
            all,
            limit,
        } => {
            let filter = match (id, code, all) {
                (Some(id), _, _) => Filter::Id(id),
                (_, Some(code), _) => Filter::Code(code),
                (_, _, true) => Filter::All,
                _ => bail!("say which dead letters to replay: --id ID, --code CODE or --all"),
            };
            let summary = dlq::replay(&connection, &topology, &filter, limit).await?;
            let route = topology.task_route();
            let target = match route.exchange.as_str() {
                "" => route.routing_key,
                exchange => format!("exchange {exchange} with key {}", route.routing_key),
            };
            let embeddings = topology.embeddings_route().routing_key;
            println!(
                "replayed {} to {target} ({} of them embedding tasks, to {embeddings}); \
                 {} left in {queue} ({} chosen but past their deadline_ms)",
                summary.replayed, summary.embeddings, summary.kept, summary.past_deadline
            );
            if let (Filter::Id(id), 0) = (&filter, summary.replayed) {
                broker::close(&connection, "done").await;
                bail!("no dead letter with id {id} was replayed");
            }
        }
        Action::Purge { .. } => {
            let channel = connection.create_channel().await?;
            let purged = dlq::purge(&channel, &queue).await?;
            broker::close_channel(&channel, "purged").await;
            println!("purged {purged} dead letter(s) from {queue}");
        }
    }
    broker::close(&connection, "done").await;
    Ok(())
}
