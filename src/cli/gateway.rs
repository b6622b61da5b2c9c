//! `warren gateway`: serve the OpenAI-compatible HTTP API until SIGINT or SIGTERM, then stop
//! taking connections and let open requests finish.

use tokio_util::sync::CancellationToken;
use tracing::info;

use super::CliError;
use crate::config::Settings;
use crate::gateway::{Gateway, GatewayError};

/// Options of `warren gateway` (everything else comes from `[gateway]`).
#[derive(Debug, clap::Args)]
pub(crate) struct Args {}

/// Runs the gateway until a shutdown signal.
pub(super) async fn run(settings: Settings, _args: Args) -> anyhow::Result<()> {
    let gateway = Gateway::build(settings).await.map_err(|e| match e {
        GatewayError::Config(e) => anyhow::Error::new(CliError::Config(e.to_string())),
        other => anyhow::Error::new(other),
    })?;
    let address = gateway.local_addr()?;
    info!(%address, "gateway listening on http://{address}/v1");
    let shutdown = CancellationToken::new();
    let signalled = shutdown.clone();
    tokio::spawn(async move {
        super::worker::first_signal().await;
        info!("signal received: finishing open requests");
        signalled.cancel();
    });
    gateway.run_until(shutdown).await?;
    info!("gateway stopped");
    Ok(())
}
