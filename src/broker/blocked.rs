//! RabbitMQ's `connection.blocked`: when a memory or disk alarm fires, the broker stops
//! reading from connections that publish, and a publish (or a transaction's commit) waits
//! until the alarm clears. Nothing is lost, but nothing moves, and without this nothing says
//! why. [`BlockedWatch`] follows a connection's blocked and unblocked notices (lapin reports
//! both as events), logs them, and lets a process report the state (a gauge, `/readyz`'s
//! body) or refuse new work at once instead of hanging (the gateway's 503).

use futures_util::StreamExt;
use lapin::{Connection, Event};
use tokio::sync::watch;

/// Whether the broker is blocking this process's connection, and why. Cheap to clone; one
/// per process, following whichever connection it holds now.
#[derive(Clone, Debug)]
pub struct BlockedWatch {
    state: watch::Sender<Option<String>>,
}

impl Default for BlockedWatch {
    fn default() -> Self {
        BlockedWatch {
            state: watch::Sender::new(None),
        }
    }
}

impl BlockedWatch {
    /// Follows `connection` from now on (a new connection starts unblocked).
    pub fn follow(&self, connection: &Connection) {
        self.state.send_replace(None);
        let state = self.state.clone();
        let mut events = connection.events_listener();
        tokio::spawn(async move {
            while let Some(event) = events.next().await {
                match event {
                    Event::ConnectionBlocked(reason) => {
                        tracing::warn!(
                            reason = %reason,
                            "RabbitMQ is blocking this connection (a resource alarm): \
                             publishes and commits wait until it clears"
                        );
                        state.send_replace(Some(reason));
                    }
                    Event::ConnectionUnblocked => {
                        tracing::info!("RabbitMQ unblocked this connection");
                        state.send_replace(None);
                    }
                    _ => {}
                }
            }
        });
    }

    /// The broker's reason while it blocks the connection.
    pub fn reason(&self) -> Option<String> {
        self.state.borrow().clone()
    }

    /// Returns once the connection is blocked, with the broker's reason.
    pub async fn blocked(&self) -> String {
        let mut receiver = self.state.subscribe();
        // The borrow the wait returns must end before any other await (it is not Send).
        let reason = receiver
            .wait_for(Option::is_some)
            .await
            .map(|reason| reason.clone().unwrap_or_default());
        match reason {
            Ok(reason) => reason,
            // The sender lives in `self`: it cannot be gone while this waits.
            Err(_) => std::future::pending().await,
        }
    }

    #[cfg(test)]
    fn set(&self, reason: Option<&str>) {
        self.state.send_replace(reason.map(str::to_owned));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_waiter_wakes_when_the_connection_is_blocked_and_reads_the_reason() {
        let watch = BlockedWatch::default();
        assert_eq!(watch.reason(), None);
        let waiting = tokio::spawn({
            let watch = watch.clone();
            async move { watch.blocked().await }
        });
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished());
        watch.set(Some("low on memory"));
        assert_eq!(waiting.await.unwrap(), "low on memory");
        assert_eq!(watch.reason().as_deref(), Some("low on memory"));
        watch.set(None);
        assert_eq!(watch.reason(), None);
    }
}
