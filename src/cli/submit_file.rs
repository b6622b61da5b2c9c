//! `warren submit --file tasks.jsonl --out results.jsonl`: a task file run through the queue. Every task line is
//! published (persistent, confirmed; at most `--in-flight` tasks published and not yet
//! answered, so at most that many unconfirmed), each reply is appended to the results file as
//! one JSON line the moment it arrives, progress is shown on the terminal, and a second run
//! with the same files sends only the lines without a result. Exits 1 with a summary when a
//! task failed or was left unanswered.
//!
//! The decisions (which lines, what a result line holds, the tally) are in [`crate::task_file`];
//! this module does the publishing and the file and terminal I/O.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use indicatif::{ProgressBar, ProgressStyle};
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::{mpsc, Semaphore};

use super::CliError;
use crate::broker::{self, Topology};
use crate::client::{Client, ClientError};
use crate::config::Settings;
use crate::protocol::{Reply, Tier};
use crate::task_file::{self, ResultLine, Tally, TaskLine};

/// What a bulk run is given.
#[derive(Debug, Clone)]
pub(super) struct Job {
    pub tasks: PathBuf,
    pub results: PathBuf,
    pub in_flight: usize,
    pub wait: Duration,
    /// With routing by model: the model every task goes to.
    pub model: Option<String>,
    /// The tier every task goes to (`batch` unless asked otherwise).
    pub tier: Tier,
}

/// How one sent task ended.
enum Outcome {
    Replied(Box<Reply>),
    /// No reply within the wait, or the connection went first.
    Unanswered(String),
}

/// Runs the job and prints its summary.
pub(super) async fn run(settings: Settings, job: Job) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(&job.tasks)
        .with_context(|| format!("reading {}", job.tasks.display()))?;
    let lines = task_file::task_lines(&text);
    let previous = match std::fs::read_to_string(&job.results) {
        Ok(previous) => previous,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(e).with_context(|| format!("reading {}", job.results.display())),
    };
    let done = task_file::lines_done(&previous);
    let todo: Vec<TaskLine> = lines
        .iter()
        .filter(|line| !done.contains_key(&line.line))
        .cloned()
        .collect();
    let mut tally = Tally {
        already_done: lines.len() - todo.len(),
        already_failed: lines
            .iter()
            .filter(|line| done.get(&line.line) == Some(&false))
            .count(),
        ..Tally::default()
    };
    let mut results = open_results(&job.results, &previous)?;
    eprintln!(
        "{} tasks in {}: {} to send, {} already have a result in {}",
        lines.len(),
        job.tasks.display(),
        todo.len(),
        tally.already_done,
        job.results.display()
    );

    let name = broker::process_name("warren-submit");
    let topology = Topology::new(&settings);
    let client =
        Arc::new(Client::connect(&settings.broker.url, &name, topology.client_route()).await?);
    topology.declare(client.connection()).await?;

    let total = todo.len();
    let (outcomes, mut arrived) = mpsc::unbounded_channel();
    let sender = tokio::spawn(send_all(client.clone(), todo, job.clone(), outcomes));
    let mut progress = Progress::new(total);
    let mut first_problem = None;
    // Listening from here on, so that a Ctrl-C between two replies is not missed.
    let mut interrupt = signal(SignalKind::interrupt()).context("listening for Ctrl-C")?;
    loop {
        let next = tokio::select! {
            next = arrived.recv() => next,
            _ = interrupt.recv() => {
                eprintln!("interrupted: the results so far are kept; run the same command again to send the rest");
                None
            }
        };
        let Some((line, id, outcome)) = next else {
            break;
        };
        match outcome {
            Outcome::Replied(reply) => {
                tally.count(&reply);
                let record = ResultLine {
                    line: line.line,
                    custom_id: line.custom_id,
                    id,
                    reply: *reply,
                };
                writeln!(results, "{}", serde_json::to_string(&record)?)
                    .and_then(|()| results.flush())
                    .with_context(|| format!("writing {}", job.results.display()))?;
            }
            Outcome::Unanswered(why) => {
                first_problem.get_or_insert(why);
            }
        }
        progress.update(tally.ok + tally.failed_total(), tally.failed_total());
    }
    sender.abort();
    progress.finish();
    client.close().await;

    tally.unanswered = total - tally.ok - tally.failed_total();
    eprintln!("{}", tally.summary());
    if let Some(problem) = first_problem {
        eprintln!("first task left unanswered: {problem}");
    }
    if tally.all_ok() {
        Ok(())
    } else {
        Err(CliError::TaskFailed(format!(
            "{} of {} tasks without an ok result (see {})",
            tally.failed_total() + tally.unanswered,
            lines.len(),
            job.results.display()
        ))
        .into())
    }
}

/// The results file, opened to append; a line cut short by an interrupted run is ended
/// first, so the next record starts on its own line.
fn open_results(path: &Path, previous: &str) -> anyhow::Result<std::fs::File> {
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .with_context(|| format!("opening {}", path.display()))?;
    if !previous.is_empty() && !previous.ends_with('\n') {
        writeln!(file)?;
    }
    Ok(file)
}

/// Publishes every line, never more than `in_flight` awaiting their reply; a full queue is
/// waited out (the broker's backpressure), a lost connection ends the sending.
async fn send_all(
    client: Arc<Client>,
    todo: Vec<TaskLine>,
    job: Job,
    outcomes: mpsc::UnboundedSender<(TaskLine, String, Outcome)>,
) {
    let wait = job.wait;
    let slots = Arc::new(Semaphore::new(job.in_flight.max(1)));
    for line in todo {
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let id = uuid::Uuid::new_v4().to_string();
        let mut backoff = Duration::from_millis(100);
        let pending = loop {
            match client
                .submit_routed(&id, &line.body, job.model.as_deref(), job.tier)
                .await
            {
                Ok(pending) => break pending,
                Err(ClientError::QueueFull(_)) => {
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(2));
                }
                Err(e) => {
                    let _ = outcomes.send((line, id, Outcome::Unanswered(e.to_string())));
                    return;
                }
            }
        };
        let outcomes = outcomes.clone();
        tokio::spawn(async move {
            let outcome = match tokio::time::timeout(wait, pending.reply()).await {
                Ok(Ok(answer)) => Outcome::Replied(Box::new(answer.reply)),
                Ok(Err(e)) => Outcome::Unanswered(e.to_string()),
                Err(_) => Outcome::Unanswered(format!("no reply within {} s", wait.as_secs())),
            };
            let _ = outcomes.send((line, id, outcome));
            drop(slot);
        });
    }
}

/// A progress bar with rate and ETA on a terminal; a plain line every few seconds otherwise.
struct Progress {
    bar: Option<ProgressBar>,
    total: usize,
    started: Instant,
    last_line: Instant,
}

impl Progress {
    fn new(total: usize) -> Progress {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = ProgressBar::new(total as u64);
            if let Ok(style) = ProgressStyle::with_template(
                "{bar:40} {pos}/{len} {msg} {per_sec} eta {eta} ({elapsed})",
            ) {
                bar.set_style(style);
            }
            bar
        });
        Progress {
            bar,
            total,
            started: Instant::now(),
            last_line: Instant::now(),
        }
    }

    fn update(&mut self, finished: usize, failed: usize) {
        if let Some(bar) = &self.bar {
            bar.set_position(finished as u64);
            bar.set_message(format!("{failed} failed"));
            return;
        }
        if self.last_line.elapsed() < Duration::from_secs(2) && finished < self.total {
            return;
        }
        self.last_line = Instant::now();
        let elapsed = self.started.elapsed().as_secs_f64();
        let rate = finished as f64 / elapsed.max(1e-3);
        let eta = (self.total - finished.min(self.total)) as f64 / rate.max(1e-9);
        eprintln!(
            "progress: {finished}/{} done, {failed} failed, {rate:.2} tasks/s, eta {eta:.0} s",
            self.total
        );
    }

    fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish();
        }
    }
}
