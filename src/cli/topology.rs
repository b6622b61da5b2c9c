//! `warren topology`: declare the queues and exchanges (idempotent) and print them.

use crate::broker::{self, Topology};
use crate::config::Settings;

/// Options of `warren topology`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Print the topology without connecting to the broker.
    #[arg(long)]
    pub dry_run: bool,
}

/// Declares and prints the topology.
pub(super) async fn run(settings: Settings, args: Args) -> anyhow::Result<()> {
    let topology = Topology::new(&settings);
    if !args.dry_run {
        let name = broker::process_name("warren-topology");
        let connection = broker::connect(&settings.broker.url, &name).await?;
        topology.declare(&connection).await?;
        broker::close(&connection, "done").await;
        println!("declared on {}:", settings.redacted_broker_url());
        match broker::management::apply_queue_bound(&settings).await {
            Ok(Some(policy)) => println!(
                "policy   {policy}  max-length={}, overflow=reject-publish (0: removed)",
                settings.topology.queue_bound
            ),
            Ok(None) => {}
            // The queues are declared; a broker without the management API stays unbounded.
            Err(e) => {
                eprintln!("warren: the queue bound policy was not set: {e} (broker.management_url)")
            }
        }
    }
    print!("{}", topology.describe());
    Ok(())
}
