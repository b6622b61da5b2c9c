//! Reading and writing the AMQP header values warren uses (attempt counts, error codes),
//! tolerant of the integer and string types different client libraries send.

use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::BasicProperties;

/// An integer header of `properties`, whatever integer (or numeric string) type it was sent as.
pub fn integer(properties: &BasicProperties, name: &str) -> Option<i64> {
    let value = properties.headers().as_ref()?.inner().get(name)?;
    match value {
        AMQPValue::ShortShortInt(v) => Some(i64::from(*v)),
        AMQPValue::ShortShortUInt(v) => Some(i64::from(*v)),
        AMQPValue::ShortInt(v) => Some(i64::from(*v)),
        AMQPValue::ShortUInt(v) => Some(i64::from(*v)),
        AMQPValue::LongInt(v) => Some(i64::from(*v)),
        AMQPValue::LongUInt(v) => Some(i64::from(*v)),
        AMQPValue::LongLongInt(v) => Some(*v),
        AMQPValue::Timestamp(v) => i64::try_from(*v).ok(),
        AMQPValue::LongString(s) => std::str::from_utf8(s.as_bytes()).ok()?.trim().parse().ok(),
        AMQPValue::ShortString(s) => s.as_str().trim().parse().ok(),
        _ => None,
    }
}

/// Whether a header of `properties` is true: the boolean `true` or the string `true` (clients
/// without a boolean header type send that). Absent, or anything else, is false.
pub fn is_true(properties: &BasicProperties, name: &str) -> bool {
    match properties
        .headers()
        .as_ref()
        .and_then(|h| h.inner().get(name))
    {
        Some(AMQPValue::Boolean(value)) => *value,
        _ => string(properties, name).is_some_and(|s| s.trim().eq_ignore_ascii_case("true")),
    }
}

/// A string header of `properties`.
pub fn string(properties: &BasicProperties, name: &str) -> Option<String> {
    let value = properties.headers().as_ref()?.inner().get(name)?;
    match value {
        AMQPValue::LongString(s) => Some(String::from_utf8_lossy(s.as_bytes()).into_owned()),
        AMQPValue::ShortString(s) => Some(s.as_str().to_owned()),
        _ => None,
    }
}

/// `properties` with `additions` set in its headers (existing headers are kept).
pub fn with_headers(
    properties: BasicProperties,
    additions: impl IntoIterator<Item = (&'static str, AMQPValue)>,
) -> BasicProperties {
    let mut table = properties.headers().clone().unwrap_or_default();
    for (key, value) in additions {
        table.insert(ShortString::from(key), value);
    }
    properties.with_headers(table)
}

/// The headers of `properties` without the ones named in `dropped`.
pub fn headers_without(properties: &BasicProperties, dropped: &[&str]) -> FieldTable {
    FieldTable::from(
        properties
            .headers()
            .as_ref()
            .map(|h| h.inner().clone())
            .unwrap_or_default()
            .into_iter()
            .filter(|(key, _)| !dropped.contains(&key.as_str()))
            .collect::<std::collections::BTreeMap<_, _>>(),
    )
}

/// A string header value.
pub fn text(value: impl Into<String>) -> AMQPValue {
    AMQPValue::LongString(LongString::from(value.into()))
}

/// An integer header value (sent as signed 64-bit, which every client reads).
pub fn int(value: i64) -> AMQPValue {
    AMQPValue::LongLongInt(value)
}

/// A table holding the given entries.
pub fn table(entries: impl IntoIterator<Item = (&'static str, AMQPValue)>) -> FieldTable {
    let mut table = FieldTable::default();
    for (key, value) in entries {
        table.insert(ShortString::from(key), value);
    }
    table
}

/// Delivery counters that describe one stay in one queue; a republished copy starts afresh.
const DELIVERY_COUNTERS: [&str; 2] = [
    crate::protocol::QUORUM_DELIVERY_COUNT,
    crate::protocol::HEADER_REDELIVERIES,
];

/// A copy of `original` fit to republish: every property is kept except `expiration` (a
/// parked copy must not silently expire; its value moves to the header
/// `x-warren-original-expiration`), `user_id` (RabbitMQ rejects a publish whose `user_id`
/// is not the publishing connection's user) and the delivery counters.
pub fn republishable(original: &BasicProperties) -> BasicProperties {
    let mut copy = BasicProperties::default();
    if let Some(v) = original.content_type() {
        copy = copy.with_content_type(v.clone());
    }
    if let Some(v) = original.content_encoding() {
        copy = copy.with_content_encoding(v.clone());
    }
    let mut table = headers_without(original, &DELIVERY_COUNTERS);
    if let Some(expiration) = original.expiration() {
        table.insert(
            ShortString::from(crate::protocol::HEADER_ORIGINAL_EXPIRATION),
            text(expiration.as_str()),
        );
    }
    copy = copy.with_headers(table);
    if let Some(v) = original.delivery_mode() {
        copy = copy.with_delivery_mode(*v);
    }
    if let Some(v) = original.priority() {
        copy = copy.with_priority(*v);
    }
    if let Some(v) = original.correlation_id() {
        copy = copy.with_correlation_id(v.clone());
    }
    if let Some(v) = original.reply_to() {
        copy = copy.with_reply_to(v.clone());
    }
    if let Some(v) = original.message_id() {
        copy = copy.with_message_id(v.clone());
    }
    if let Some(v) = original.timestamp() {
        copy = copy.with_timestamp(*v);
    }
    if let Some(v) = original.kind() {
        copy = copy.with_type(v.clone());
    }
    if let Some(v) = original.app_id() {
        copy = copy.with_app_id(v.clone());
    }
    if let Some(v) = original.cluster_id() {
        copy = copy.with_cluster_id(v.clone());
    }
    copy
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_true_boolean_or_the_string_true_is_true() {
        let with =
            |value: AMQPValue| BasicProperties::default().with_headers(table([("h", value)]));
        assert!(is_true(&with(AMQPValue::Boolean(true)), "h"));
        assert!(is_true(&with(text(" True ")), "h"));
        assert!(!is_true(&with(AMQPValue::Boolean(false)), "h"));
        assert!(!is_true(&with(text("false")), "h"));
        assert!(!is_true(&with(int(1)), "h"));
        assert!(!is_true(&with(AMQPValue::Boolean(true)), "other"));
        assert!(!is_true(&BasicProperties::default(), "h"));
    }
}
