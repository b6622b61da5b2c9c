//! Where a worker consumes and publishes: routing by model, the embeddings queue, shards, a
//! cluster's URLs.

use super::{error_text, load};

#[test]
fn shards_share_the_prefetch_out_and_need_routing_by_model() {
    let s = load(&[
        ("WARREN__ENGINE__SLOTS", "8"),
        ("WARREN__BROKER__PREFETCH_EXTRA", "2"),
    ])
    .expect("valid");
    assert_eq!(s.consumer_prefetch(1), 10);
    assert_eq!(s.consumer_prefetch(4), 3);
    assert_eq!(s.consumer_prefetch(64), 1);
    let err = load(&[("WARREN__TOPOLOGY__SHARDS", "4")]).unwrap_err();
    assert!(err.to_string().contains("topology.tasks_exchange"), "{err}");
    let err = load(&[
        ("WARREN__TOPOLOGY__TASKS_EXCHANGE", "warren.tasks"),
        ("WARREN__TOPOLOGY__SHARDS", "0"),
    ])
    .unwrap_err();
    assert!(err.to_string().contains("topology.shards"), "{err}");
    let sharded = load(&[
        ("WARREN__TOPOLOGY__TASKS_EXCHANGE", "warren.tasks"),
        ("WARREN__TOPOLOGY__SHARDS", "2"),
        ("WARREN__ENGINE__MODEL_NAME", "m"),
    ])
    .expect("valid");
    assert!(sharded.topology.is_sharded());
    assert_eq!(
        sharded
            .topology
            .consumed_queues(&sharded.topology.requests_queue),
        ["warren.requests.m.shard-0", "warren.requests.m.shard-1"]
    );
}

#[test]
fn a_broker_url_may_list_the_nodes_of_a_cluster() {
    let s = load(&[(
        "WARREN__BROKER__URL",
        "amqp://app:pw1@node1:5672/%2f, amqp://app:pw1@node2:5672/%2f ,amqps://app:pw1@node3/%2f",
    )])
    .expect("three URLs load");
    assert_eq!(
        s.redacted_broker_url(),
        "amqp://app:***@node1:5672/%2f,amqp://app:***@node2:5672/%2f,amqps://app:***@node3/%2f"
    );
    let bad = error_text(&[("WARREN__BROKER__URL", "amqp://node1:5672/%2f,http://node2")]);
    assert!(bad.contains("broker.url"), "{bad}");
    let empty = error_text(&[("WARREN__BROKER__URL", " , ")]);
    assert!(empty.contains("at least one URL"), "{empty}");
}

#[test]
fn routing_by_model_gives_a_worker_its_models_queue_and_delay_queues() {
    let single = load(&[("WARREN__ENGINE__MODEL_NAME", "small")]).unwrap();
    assert_eq!(single.topology.requests_queue, "warren.requests");
    assert_eq!(single.routed_model(), None);
    let routed = load(&[
        ("WARREN__TOPOLOGY__TASKS_EXCHANGE", "warren.tasks"),
        ("WARREN__ENGINE__MODEL_NAME", "small"),
    ])
    .unwrap();
    assert_eq!(routed.topology.requests_queue, "warren.requests.small");
    assert_eq!(routed.retry.queue_prefix, "warren.delay.small");
    assert_eq!(routed.routed_model(), Some("small"));
    let publisher = load(&[("WARREN__TOPOLOGY__TASKS_EXCHANGE", "warren.tasks")]).unwrap();
    assert_eq!(publisher.topology.requests_queue, "warren.requests");
    assert_eq!(publisher.routed_model(), None);
    let reserved = load(&[("WARREN__TOPOLOGY__TASKS_EXCHANGE", "amq.direct")]);
    assert!(reserved
        .unwrap_err()
        .to_string()
        .contains("topology.tasks_exchange"));
}

#[test]
fn an_embed_worker_consumes_the_embeddings_queue_with_its_own_delay_queues() {
    let embed = load(&[("WARREN__ENGINE__ROLE", "embed")]).unwrap();
    assert_eq!(embed.topology.requests_queue, "warren.embeddings");
    assert_eq!(embed.retry.queue_prefix, "warren.delay.embed");
    assert_eq!(embed.engine.pooling, crate::config::Pooling::Mean);
    let generate = load(&[]).unwrap();
    assert_eq!(generate.topology.requests_queue, "warren.requests");
    assert_eq!(generate.topology.embeddings_queue, "warren.embeddings");
    let routed = load(&[
        ("WARREN__ENGINE__ROLE", "embed"),
        ("WARREN__TOPOLOGY__TASKS_EXCHANGE", "warren.tasks"),
    ]);
    assert!(routed.unwrap_err().to_string().contains("engine.role"));
    let same = load(&[("WARREN__TOPOLOGY__EMBEDDINGS_QUEUE", "warren.requests")]);
    assert!(same
        .unwrap_err()
        .to_string()
        .contains("topology.embeddings_queue"));
}

#[test]
fn a_model_named_like_another_model_s_batch_tier_is_refused() {
    let worker = load(&[
        ("WARREN__TOPOLOGY__TASKS_EXCHANGE", "warren.tasks"),
        ("WARREN__ENGINE__MODEL_NAME", "small.batch"),
    ]);
    assert!(worker
        .unwrap_err()
        .to_string()
        .contains("engine.model_name"));
    let gateway = load(&[
        ("WARREN__TOPOLOGY__TASKS_EXCHANGE", "warren.tasks"),
        ("WARREN__GATEWAY__MODELS", "small,small.batch"),
    ]);
    assert!(gateway.unwrap_err().to_string().contains("gateway.models"));
    let bare = load(&[
        ("WARREN__TOPOLOGY__TASKS_EXCHANGE", "warren.tasks"),
        ("WARREN__ENGINE__MODEL_NAME", "batch"),
    ]);
    assert!(bare.unwrap_err().to_string().contains("engine.model_name"));
    // Without routing by model, names are not routing keys.
    assert!(load(&[("WARREN__GATEWAY__MODELS", "small.batch")]).is_ok());
}
