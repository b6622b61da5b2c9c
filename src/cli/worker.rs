//! `warren worker`: load the model, then serve until SIGINT or SIGTERM. The first signal
//! drains gracefully; a second one exits at once (unacked tasks return to the queue).

use std::sync::Arc;

use anyhow::Context;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::CliError;
use crate::config::Settings;
use crate::engine::{Engine, EngineStartError};
use crate::telemetry::Telemetry;

/// Exit code after a second shutdown signal (128 + SIGINT, as shells report it).
const EXIT_FORCED: i32 = 130;

/// Options of `warren worker` (everything else comes from the configuration).
#[derive(Debug, clap::Args)]
pub struct Args {}

/// Runs the worker until a shutdown signal.
pub async fn run(settings: Settings, _args: Args) -> anyhow::Result<()> {
    let shutdown = CancellationToken::new();
    tokio::spawn(watch_signals(shutdown.clone()));
    let telemetry = Arc::new(Telemetry::default());
    if !settings.metrics.listen.is_empty() {
        let address = crate::telemetry::http::serve(&settings.metrics.listen, telemetry.clone())
            .await
            .with_context(|| {
                format!(
                    "cannot listen on metrics.listen = {}",
                    settings.metrics.listen
                )
            })?;
        info!(%address, "metrics and health listening on http://{address}/metrics, /healthz, /readyz");
    }

    let engine_settings = settings.engine.clone();
    info!(path = %engine_settings.model_path.display(), "loading the model");
    let engine = tokio::task::spawn_blocking(move || Engine::start(&engine_settings))
        .await
        .context("the model loader panicked")?
        .map_err(|e| match e {
            EngineStartError::ModelMissing(_) => {
                anyhow::Error::new(CliError::Config(format!("`engine.model_path`: {e}")))
            }
            other => anyhow::Error::new(other),
        })?;
    let model = engine.info().clone();
    info!(
        model = %model.name,
        slots = model.slots,
        context_per_slot = model.context_per_slot,
        gpu_layers = model.gpu_layers,
        chat_template = %model.chat_template_source,
        "model loaded"
    );
    let engine = Arc::new(engine);
    telemetry.engine_loaded(engine.clone());
    crate::worker::run(&settings, engine.clone(), shutdown, telemetry).await;
    // llama.cpp must not be torn down by the process exit while it decodes on its thread.
    tokio::task::spawn_blocking(move || engine.stop())
        .await
        .context("stopping the engine")?;
    info!("worker stopped");
    Ok(())
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
