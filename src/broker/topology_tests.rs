//! Tests of the topology: names, arguments and bindings derived from the settings, without
//! a broker.

use super::describe::show;
use super::*;

#[test]
fn routing_by_model_publishes_to_the_tasks_exchange_with_the_model_as_key() {
    let mut settings = Settings::defaults();
    let single = Topology::new(&settings).client_route();
    assert_eq!(
        (single.exchange.as_str(), single.routing_key.as_str()),
        ("", "warren.requests")
    );
    settings.topology.tasks_exchange = "warren.tasks".into();
    let publisher = Topology::new(&settings);
    assert!(publisher.routes_by_model());
    assert_eq!(publisher.client_route().exchange, "warren.tasks");
    assert!(publisher
        .describe()
        .contains("warren.tasks  direct, durable"));
    settings.engine.model_name = "small".into();
    let worker = Topology::new(&settings);
    assert_eq!(worker.client_route().routing_key, "small");
}

#[test]
fn the_batch_tier_has_its_own_requests_and_delay_queues_and_routing_key() {
    let mut settings = Settings::defaults();
    settings.topology.tasks_exchange = "warren.tasks".into();
    settings.engine.model_name = "small".into();
    let batch = Topology::new(&settings.batch_tier().unwrap());
    assert_eq!(batch.requests_queue(), "warren.requests.batch");
    assert_eq!(batch.delay_queues()[0].name, "warren.delay.batch.1s");
    let tier = Topology::new(&settings).batch.unwrap();
    assert_eq!(tier.client_route().routing_key, "small.batch");
    assert_eq!(
        tier.delay_arguments(&tier.delay_queues()[0])[3].1,
        text("warren.requests.batch")
    );
    settings.engine.role = crate::config::EngineRole::Embed;
    assert!(Topology::new(&settings).batch_tier().is_none());
}

#[test]
fn the_queues_that_hold_messages_for_later_take_the_parking_type() {
    let mut settings = Settings::defaults();
    let classic = Topology::new(&settings);
    assert!(classic
        .describe()
        .contains("warren.dead  durable, x-queue-type=classic"));
    settings.topology.parking_queue_type = QueueType::Quorum;
    let quorum = Topology::new(&settings);
    let described = quorum.describe();
    assert!(described.contains("warren.dead  durable, x-queue-type=quorum"));
    assert!(described.contains("warren.results  durable, x-queue-type=quorum"));
}

#[test]
fn delay_queues_are_quorum_queues_that_dead_letter_at_least_once_whatever_the_parking_type() {
    let settings = Settings::defaults();
    assert_eq!(settings.topology.parking_queue_type, QueueType::Classic);
    let topology = Topology::new(&settings);
    let delay = &topology.delay_queues()[0];
    assert_eq!(delay.name, "warren.delay.1s");
    let arguments: std::collections::HashMap<_, _> = topology
        .delay_arguments(delay)
        .into_iter()
        .map(|(key, value)| (key, show(&value)))
        .collect();
    assert_eq!(arguments["x-queue-type"], "quorum");
    assert_eq!(arguments["x-dead-letter-strategy"], "at-least-once");
    // RabbitMQ falls back to at-most-once unless the source queue rejects publishes.
    assert_eq!(arguments["x-overflow"], "reject-publish");
    assert_eq!(arguments["x-dead-letter-routing-key"], "warren.requests");
    assert!(topology
        .describe()
        .contains("warren.delay.1s  durable, x-queue-type=quorum"));
}
