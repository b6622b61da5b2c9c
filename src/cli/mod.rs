//! The `warren` command line: global options, the subcommands, and exit codes.
//!
//! Exit codes: 0 success; 1 failure (or an error reply for `submit`); 2 bad command line
//! (clap); 64 bad configuration (the message names the key); 75 no reply in time (`submit`).

mod bench;
mod dlq;
mod gateway;
mod submit;
mod submit_file;
mod topology;
mod worker;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::config::Settings;

/// Exit code for an unusable configuration (EX_USAGE in sysexits.h).
pub(crate) const EXIT_CONFIG: u8 = 64;
/// Exit code when `submit` got no reply in time (EX_TEMPFAIL).
pub(crate) const EXIT_NO_REPLY: u8 = 75;
/// How long a finished command waits for the tasks it leaves behind.
const RUNTIME_SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(2);

/// warren: serve LLM inference from RabbitMQ with llama.cpp.
#[derive(Debug, Parser)]
#[command(name = "warren", version, about, long_about = None)]
pub(crate) struct Cli {
    /// Configuration file layered over the built-in defaults (also: WARREN_CONFIG).
    #[arg(long, global = true, value_name = "PATH")]
    pub config: Option<PathBuf>,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Consume tasks from the requests queue and serve them with the model (the main job).
    Worker(worker::Args),
    /// Publish one task, wait for its reply and print it; or a JSONL file of tasks (--file).
    Submit(submit::Args),
    /// Declare the queues and exchanges, then print them.
    Topology(topology::Args),
    /// Inspect, replay or purge the dead-letter queue.
    Dlq(dlq::Args),
    /// Serve the OpenAI-compatible HTTP API in front of the queue.
    Gateway(gateway::Args),
    /// Load-test warren (through RabbitMQ), the engine alone, or a llama-server.
    Bench(bench::Args),
}

impl Command {
    /// The `service.name` of the commands whose spans are exported (`[trace]`).
    fn traced_as(&self) -> Option<&'static str> {
        match self {
            Command::Worker(_) => Some("warren-worker"),
            Command::Gateway(_) => Some("warren-gateway"),
            Command::Submit(_) => Some("warren-submit"),
            Command::Topology(_) | Command::Dlq(_) | Command::Bench(_) => None,
        }
    }
}

/// An error that decides the exit code.
#[derive(Debug, thiserror::Error)]
pub(crate) enum CliError {
    /// Bad configuration: exit 64.
    #[error("{0}")]
    Config(String),
    /// `submit` got an error reply: exit 1, reply already printed.
    #[error("the task failed: {0}")]
    TaskFailed(String),
    /// `submit` got no reply in time: exit 75.
    #[error("no reply within {0} s")]
    NoReply(u64),
    /// `submit`'s publish was not confirmed in time (RabbitMQ blocking publishers): exit 75.
    #[error("RabbitMQ did not confirm the task within {0} s (is it blocking publishers? a memory or disk alarm)")]
    NotConfirmed(u64),
}

/// Parses the command line, runs the subcommand and maps the outcome to an exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let settings = match Settings::load(cli.config.as_deref()) {
        Ok(settings) => settings,
        Err(e) => {
            eprintln!("warren: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let traces = match cli.command.traced_as() {
        Some(service) => match crate::telemetry::traces::Traces::start(&settings.trace, service) {
            Ok(traces) => traces,
            Err(e) => {
                eprintln!("warren: {e}");
                return ExitCode::from(EXIT_CONFIG);
            }
        },
        None => None,
    };
    crate::telemetry::init_logging(&settings.log, traces.as_ref());
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("warren: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Worker(args) => worker::run(settings, args).await,
            Command::Submit(args) => submit::run(settings, args).await,
            Command::Topology(args) => topology::run(settings, args).await,
            Command::Dlq(args) => dlq::run(settings, args).await,
            Command::Bench(args) => bench::run(settings, args).await,
            Command::Gateway(args) => gateway::run(settings, args).await,
        }
    });
    // Work left on the blocking pool (a name lookup for a connection given up on, say) must
    // not keep a finished command from exiting; dropping the runtime would wait for it.
    runtime.shutdown_timeout(RUNTIME_SHUTDOWN_GRACE);
    if let Some(traces) = traces {
        traces.shutdown();
    }
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("warren: {e:#}");
            match e.downcast_ref::<CliError>() {
                Some(CliError::Config(_)) => ExitCode::from(EXIT_CONFIG),
                Some(CliError::NoReply(_) | CliError::NotConfirmed(_)) => {
                    ExitCode::from(EXIT_NO_REPLY)
                }
                _ => ExitCode::FAILURE,
            }
        }
    }
}
