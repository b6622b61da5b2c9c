//! `warren worker`: load the model, then serve until SIGINT or SIGTERM. The first signal
//! drains gracefully; a second one exits at once (unacked tasks return to the queue).

use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::CliError;
use crate::config::Settings;
use crate::engine::EngineStartError;
use crate::worker::{Worker, WorkerError};

/// Exit code after a second shutdown signal (128 + SIGINT, as shells report it).
const EXIT_FORCED: i32 = 130;

/// Options of `warren worker` (everything else comes from the configuration).
#[derive(Debug, clap::Args)]
pub(crate) struct Args {}

/// Runs the worker until a shutdown signal.
pub(crate) async fn run(settings: Settings, _args: Args) -> anyhow::Result<()> {
    if settings.topology.routes_by_model() && settings.engine.model_name.is_empty() {
        return Err(CliError::Config(
            "`engine.model_name` must be set when `topology.tasks_exchange` is: it names the \
             model's queue and is its routing key"
                .into(),
        )
        .into());
    }
    let shutdown = CancellationToken::new();
    tokio::spawn(watch_signals(shutdown.clone()));
    let app = Worker::build(settings).await.map_err(exit_reason)?;
    app.run_until(shutdown).await.map_err(exit_reason)
}

/// Operator errors (a missing model, queues that contradict the configuration) exit 64.
fn exit_reason(error: WorkerError) -> anyhow::Error {
    match error {
        WorkerError::Engine(EngineStartError::ModelMissing(_)) => {
            anyhow::Error::new(CliError::Config(format!("`engine.model_path`: {error}")))
        }
        WorkerError::Topology(_) => anyhow::Error::new(CliError::Config(error.to_string())),
        other => anyhow::Error::new(other),
    }
}

/// Resolves on the first SIGINT or SIGTERM (never, if signals cannot be watched).
pub(super) async fn first_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        warn!("cannot listen for signals; stop the process with SIGKILL");
        return std::future::pending().await;
    };
    tokio::select! {
        _ = int.recv() => {}
        _ = term.recv() => {}
    }
}

/// Cancels `shutdown` on the first SIGINT or SIGTERM; exits the process on the second.
async fn watch_signals(shutdown: CancellationToken) {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        warn!("cannot listen for signals; stop the worker with SIGKILL");
        return;
    };
    tokio::select! {
        _ = int.recv() => info!("SIGINT received: draining (send it again to exit at once)"),
        _ = term.recv() => info!("SIGTERM received: draining (send it again to exit at once)"),
    }
    shutdown.cancel();
    tokio::select! {
        _ = int.recv() => {}
        _ = term.recv() => {}
    }
    warn!("second signal: exiting now; unacked tasks return to the queue");
    std::process::exit(EXIT_FORCED);
}
