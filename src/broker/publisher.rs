//! Publishing with publisher confirms: a message counts as sent only once the broker has
//! confirmed it, and an unroutable message (mandatory, no queue) comes back as
//! [`Published::Returned`] instead of vanishing.

use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::{BasicProperties, Channel, Confirmation, Connection};

use super::{BrokerError, Outgoing};

/// What became of a confirmed publish.
#[derive(Debug)]
pub enum Published {
    /// The broker routed and stored the message.
    Delivered,
    /// No queue matched (the message was `mandatory`); the broker gave it back.
    Returned,
}

/// A channel in confirm mode. Cheap to clone; publishes may run concurrently.
#[derive(Clone)]
pub struct Publisher {
    channel: Channel,
}

impl Publisher {
    /// Opens a new channel on `connection` and puts it in confirm mode.
    pub async fn open(connection: &Connection) -> Result<Publisher, BrokerError> {
        let channel = connection.create_channel().await?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await?;
        Ok(Publisher { channel })
    }

    /// Closes the channel (bounded, as [`super::close_channel`]), for every clone of this
    /// publisher. A publisher dropped instead has lapin close its channel in the background,
    /// which races a connection close that follows at once.
    pub async fn close(&self, reason: &str) {
        super::close_channel(&self.channel, reason).await;
    }

    /// The underlying channel.
    pub fn channel(&self) -> &Channel {
        &self.channel
    }

    /// Publishes and waits for the broker's confirm. A nack is an error.
    pub async fn publish(
        &self,
        exchange: &str,
        routing_key: &str,
        mandatory: bool,
        body: &[u8],
        properties: BasicProperties,
    ) -> Result<Published, BrokerError> {
        let confirm = self
            .channel
            .basic_publish(
                exchange.into(),
                routing_key.into(),
                BasicPublishOptions {
                    mandatory,
                    ..BasicPublishOptions::default()
                },
                body,
                properties,
            )
            .await?
            .await?;
        match confirm {
            Confirmation::Ack(None) => Ok(Published::Delivered),
            Confirmation::Ack(Some(_)) => Ok(Published::Returned),
            Confirmation::Nack(_) => Err(BrokerError::Nacked(routing_key.to_owned())),
            // confirm_select ran on this channel, so the broker always confirms.
            Confirmation::NotRequested => Ok(Published::Delivered),
        }
    }

    /// Publishes `message`, mandatory, and waits for the confirm; a message the broker could
    /// not route (returned) is an error, like a nack.
    pub async fn publish_routed(&self, message: &Outgoing) -> Result<(), BrokerError> {
        let published = self
            .publish(
                &message.exchange,
                &message.routing_key,
                true,
                &message.body,
                message.properties.clone(),
            )
            .await?;
        match published {
            Published::Delivered => Ok(()),
            Published::Returned => Err(BrokerError::Unroutable(message.destination())),
        }
    }
}
