//! `warren worker`: load the model, then consume until SIGINT or SIGTERM.

use std::sync::Arc;

use anyhow::Context;
use tracing::info;

use super::CliError;
use crate::config::Settings;
use crate::engine::{Engine, EngineStartError};

/// Options of `warren worker` (everything else comes from the configuration).
#[derive(Debug, clap::Args)]
pub struct Args {}

/// Runs the worker until a shutdown signal.
pub async fn run(settings: Settings, _args: Args) -> anyhow::Result<()> {
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
    crate::worker::run(&settings, Arc::new(engine), shutdown_signal()).await?;
    info!("worker stopped");
    Ok(())
}

/// Resolves on the first SIGINT or SIGTERM.
async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(term) => term,
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => info!("SIGINT received"),
        _ = term.recv() => info!("SIGTERM received"),
    }
}
