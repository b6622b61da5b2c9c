//! The copy of a message a task owed that is kept in the results queue instead of where it
//! was going: for a reply the broker could not deliver at the commit ([`super::outbox`]), and
//! for everything a commit without the broker's answer owed ([`super::unanswered`]).

use crate::broker::{headers, Outgoing};
use crate::protocol::{HEADER_MAYBE_DELIVERED, HEADER_UNDELIVERABLE};

/// The copy of `message` kept in the `results` queue, its headers naming where it was going
/// (`x-warren-undeliverable-reply-to`) and whether it may have got there too
/// (`x-warren-maybe-delivered`). Republishable: a retry's `expiration` (its delay) moves to a
/// header, or the copy would expire unseen in the results queue.
pub(crate) fn kept_copy(message: Outgoing, results: &str, maybe_delivered: bool) -> Outgoing {
    let destination = message.destination();
    Outgoing {
        exchange: String::new(),
        routing_key: results.to_owned(),
        properties: headers::with_headers(
            headers::republishable(&message.properties),
            [
                (HEADER_UNDELIVERABLE, headers::text(destination)),
                (
                    HEADER_MAYBE_DELIVERED,
                    lapin::types::AMQPValue::Boolean(maybe_delivered),
                ),
            ],
        ),
        body: message.body,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::HEADER_ORIGINAL_EXPIRATION;
    use lapin::types::AMQPValue;

    #[test]
    fn a_kept_retry_does_not_expire_and_says_where_it_was_going() {
        let retry = Outgoing {
            exchange: String::new(),
            routing_key: "tasks.retry.2s".to_owned(),
            body: b"{}".to_vec(),
            properties: lapin::BasicProperties::default()
                .with_expiration("2000".into())
                .with_correlation_id("t-1".into()),
        };

        let kept = kept_copy(retry, "warren.results", true);

        assert_eq!(kept.routing_key, "warren.results");
        assert_eq!(kept.properties.expiration(), &None);
        assert_eq!(
            kept.properties
                .correlation_id()
                .as_ref()
                .map(|c| c.as_str()),
            Some("t-1")
        );
        let headers = kept.properties.headers().clone().unwrap_or_default();
        let header = |name: &str| headers.inner().get(name).cloned();
        assert_eq!(
            header(HEADER_UNDELIVERABLE),
            Some(headers::text("tasks.retry.2s"))
        );
        assert_eq!(
            header(HEADER_MAYBE_DELIVERED),
            Some(AMQPValue::Boolean(true))
        );
        assert_eq!(
            header(HEADER_ORIGINAL_EXPIRATION),
            Some(headers::text("2000"))
        );
    }
}
