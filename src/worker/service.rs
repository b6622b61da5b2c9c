//! The worker as a value: [`Worker::build`] binds the metrics listener and loads the model;
//! [`Worker::run_until`] serves until its shutdown token is cancelled, then stops the engine.
//! The CLI runs it with signals; tests start it in-process and ask it for its metrics address
//! instead of reading logs. It composes; it decides nothing about tasks.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::broker::BrokerError;
use crate::config::{EngineBackend, Settings};
use crate::engine::{Engine, EngineStartError};
use crate::telemetry::Telemetry;

/// Why a worker could not start.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    /// The metrics listener cannot bind its address.
    #[error("cannot listen on metrics.listen = {address}: {source}")]
    Metrics {
        /// The configured address.
        address: String,
        /// Why.
        source: std::io::Error,
    },
    /// The model could not be loaded.
    #[error(transparent)]
    Engine(#[from] EngineStartError),
    /// The broker's queues contradict the configuration (see [`BrokerError::TopologyMismatch`]).
    #[error(transparent)]
    Topology(BrokerError),
}

/// A worker with its model loaded and its metrics listener bound, ready to serve.
pub struct Worker {
    settings: Settings,
    telemetry: Arc<Telemetry>,
    engine: Arc<Engine>,
    metrics_addr: Option<SocketAddr>,
}

impl Worker {
    /// Binds `metrics.listen` (unless empty) and loads the model.
    pub async fn build(settings: Settings) -> Result<Worker, WorkerError> {
        let telemetry = Arc::new(Telemetry::default());
        let metrics_addr = if settings.metrics.listen.is_empty() {
            None
        } else {
            let listen = &settings.metrics.listen;
            let address = crate::telemetry::http::serve(listen, telemetry.clone())
                .await
                .map_err(|source| WorkerError::Metrics {
                    address: listen.clone(),
                    source,
                })?;
            info!(%address, "metrics and health listening on http://{address}/metrics, /healthz, /readyz");
            Some(address)
        };
        let engine_settings = settings.engine.clone();
        let backend = match engine_settings.backend {
            EngineBackend::Llama => {
                info!(path = %engine_settings.model_path.display(), "loading the model");
                "llama"
            }
            EngineBackend::Synthetic => {
                warn!("engine.backend = \"synthetic\": NO MODEL; tasks get made-up words at the pace of [engine.synthetic], replies name the model \"synthetic\" (for measuring the queue, never for serving)");
                "synthetic"
            }
        };
        let engine = tokio::task::spawn_blocking(move || Engine::start(&engine_settings))
            .await
            .map_err(|_| EngineStartError::ThreadDied)??;
        let model = engine.info().clone();
        info!(
            model = %model.name,
            slots = model.slots,
            context_per_slot = model.context_per_slot,
            gpu_layers = model.gpu_layers,
            chat_template = %model.chat_template_source,
            "model loaded"
        );
        telemetry.watch_engine(
            engine.occupancy(),
            model.slots as usize,
            model.slots as usize * model.context_per_slot as usize,
        );
        telemetry.watch_steps(engine.step_times());
        telemetry.metrics.engine_loaded(backend, &model.name);
        Ok(Worker {
            settings,
            telemetry,
            engine: Arc::new(engine),
            metrics_addr,
        })
    }

    /// Where `/metrics`, `/healthz` and `/readyz` answer, if the listener is on.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_addr
    }

    /// Serves tasks until `shutdown` is cancelled (draining as configured), then stops the
    /// engine thread: llama.cpp must not be torn down by the process exit while it decodes.
    /// Ends early with [`WorkerError::Topology`] when the broker's queues contradict the
    /// configuration.
    pub async fn run_until(self, shutdown: CancellationToken) -> Result<(), WorkerError> {
        let settings = &self.settings;
        let served = super::run(settings, self.engine.clone(), shutdown, self.telemetry).await;
        let engine = self.engine;
        let _ = tokio::task::spawn_blocking(move || engine.stop()).await;
        info!("worker stopped");
        served.map_err(WorkerError::Topology)
    }
}
