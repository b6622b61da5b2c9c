//! The configuration's layering and every validation rule, by example.

use super::*;
use std::collections::HashMap;

fn env(vars: &[(&str, &str)]) -> Environment {
    let map: HashMap<String, String> = vars
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    Environment::with_prefix("WARREN").source(Some(map))
}

fn load(vars: &[(&str, &str)]) -> Result<Settings, ConfigError> {
    Settings::load_from(None, env(vars))
}

#[test]
fn defaults_load_and_validate() {
    let s = load(&[]).expect("defaults are valid");
    assert_eq!(s.topology.requests_queue, "warren.requests");
    assert_eq!(s.topology.queue_type, QueueType::Quorum);
    assert_eq!(s.topology.dead_letter_exchange, "warren.dlx");
    assert_eq!(s.topology.dead_letter_queue, "warren.dead");
    assert_eq!(s.topology.results_queue, "warren.results");
    assert_eq!(s.engine.chat_template, "gemma");
    assert_eq!(
        s.effective_prefetch(),
        1,
        "prefetch follows the single slot"
    );
}

#[test]
fn prefetch_follows_the_slots_plus_headroom_unless_set() {
    let s = load(&[
        ("WARREN__ENGINE__SLOTS", "4"),
        ("WARREN__BROKER__PREFETCH_EXTRA", "2"),
    ])
    .unwrap();
    assert_eq!(s.effective_prefetch(), 6);
    let s = load(&[
        ("WARREN__ENGINE__SLOTS", "4"),
        ("WARREN__BROKER__PREFETCH", "3"),
    ])
    .unwrap();
    assert_eq!(s.effective_prefetch(), 3);
}

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
fn environment_overrides_nested_keys_with_double_underscores() {
    let s = load(&[
        ("WARREN__BROKER__PREFETCH", "7"),
        ("WARREN__TOPOLOGY__QUEUE_TYPE", "classic"),
        ("WARREN__TOPOLOGY__MAX_PRIORITY", "5"),
        ("WARREN__ENGINE__MODEL_PATH", "/tmp/x.gguf"),
    ])
    .expect("valid overrides");
    assert_eq!(s.broker.prefetch, 7);
    assert_eq!(s.topology.queue_type, QueueType::Classic);
    assert_eq!(s.topology.max_priority, 5);
    assert_eq!(s.engine.model_path, PathBuf::from("/tmp/x.gguf"));
}

#[test]
fn a_file_layer_overrides_the_defaults_and_env_overrides_the_file() {
    let dir = std::env::temp_dir().join(format!("warren-cfg-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("w.toml");
    std::fs::write(&path, "[broker]\nprefetch = 3\n[engine]\nslots = 2\n").unwrap();
    let s = Settings::load_from(Some(&path), env(&[("WARREN__ENGINE__SLOTS", "4")])).unwrap();
    assert_eq!(s.broker.prefetch, 3);
    assert_eq!(s.engine.slots, 4);
    std::fs::remove_dir_all(dir).unwrap();
}

fn error_text(vars: &[(&str, &str)]) -> String {
    load(vars).expect_err("should be rejected").to_string()
}

#[test]
fn bad_values_name_their_key() {
    let cases: &[(&[(&str, &str)], &str)] = &[
        (&[("WARREN__BROKER__PREFETCH", "lots")], "prefetch"),
        (&[("WARREN__BROKER__URL", "http://x")], "broker.url"),
        (&[("WARREN__TOPOLOGY__QUEUE_TYPE", "stream")], "queue_type"),
        (
            &[("WARREN__TOPOLOGY__MAX_PRIORITY", "3")],
            "topology.max_priority",
        ),
        (
            &[("WARREN__TOPOLOGY__REQUESTS_QUEUE", "amq.x")],
            "topology.requests_queue",
        ),
        (&[("WARREN__ENGINE__SLOTS", "0")], "engine.slots"),
        (
            &[
                ("WARREN__LIMITS__MAX_TOKENS_CAP", "1024"),
                ("WARREN__LIMITS__DEFAULT_MAX_TOKENS", "5000"),
            ],
            "limits.default_max_tokens",
        ),
        (
            &[("WARREN__LIMITS__TIMEOUT_CAP_MS", "1800000")],
            "limits.timeout_cap_ms",
        ),
        (&[("WARREN__LOG__FORMAT", "xml")], "format"),
        (&[("WARREN__BROKER__PREFETCHH", "2")], "prefetchh"),
        (
            &[("WARREN__RETRY__MAX_ATTEMPTS", "0")],
            "retry.max_attempts",
        ),
        (&[("WARREN__RETRY__JITTER", "0.9")], "retry.jitter"),
        (&[("WARREN__RETRY__MULTIPLIER", "0.5")], "retry.multiplier"),
        (
            &[("WARREN__WORKER__MAX_REDELIVERIES", "5")],
            "worker.max_redeliveries",
        ),
    ];
    for (vars, key) in cases {
        let text = error_text(vars);
        assert!(
            text.contains(key),
            "error for {vars:?} should name {key}: {text}"
        );
    }
}

#[test]
fn the_password_never_appears_in_the_redacted_url_or_debug_output() {
    let s = load(&[(
        "WARREN__BROKER__URL",
        "amqp://app:s3cr3t@mq.example:5672/%2f",
    )])
    .unwrap();
    let redacted = s.redacted_broker_url();
    assert!(!redacted.contains("s3cr3t"), "{redacted}");
    assert!(redacted.contains("app:***@mq.example"), "{redacted}");
    assert!(!format!("{s:?}").contains("s3cr3t"));
}

#[test]
fn the_url_can_come_from_a_file() {
    let path = std::env::temp_dir().join(format!("warren-url-{}", uuid::Uuid::new_v4()));
    std::fs::write(&path, "amqp://u:p@h:5672/%2f\n").unwrap();
    let s = load(&[("WARREN__BROKER__URL_FILE", path.to_str().unwrap())]).unwrap();
    assert_eq!(s.broker.url.expose_secret(), "amqp://u:p@h:5672/%2f");
    std::fs::remove_file(path).unwrap();
}

#[test]
fn gateway_and_worker_redis_and_webhook_settings_are_checked_by_key() {
    let cases = [
        (
            ("WARREN__WORKER__REDIS_URL", "http://x"),
            "worker.redis_url",
        ),
        (
            ("WARREN__GATEWAY__REDIS_URL", "not a url"),
            "gateway.redis_url",
        ),
        (("WARREN__GATEWAY__STATE_TTL_S", "0"), "gateway.state_ttl_s"),
        (
            ("WARREN__GATEWAY__WEBHOOK_URL", "http://127.0.0.1/h"),
            "gateway.webhook_url",
        ),
        (
            ("WARREN__GATEWAY__WEBHOOK_MAX_ATTEMPTS", "0"),
            "gateway.webhook_max_attempts",
        ),
        (("WARREN__GATEWAY__LISTEN", "nowhere"), "gateway.listen"),
        (
            ("WARREN__GATEWAY__COLD_START_RETRY_AFTER_S", "0"),
            "gateway.cold_start_retry_after_s",
        ),
        (
            ("WARREN__GATEWAY__REQUEST_TIMEOUT_MS", "700000"),
            "gateway.request_timeout_ms",
        ),
        (
            ("WARREN__TOPOLOGY__CONTROL_EXCHANGE", "amq.nope"),
            "topology.control_exchange",
        ),
    ];
    for (var, key) in cases {
        let err = load(&[var]).expect_err(var.0).to_string();
        assert!(err.contains(key), "{var:?}: {err}");
    }
    let on = load(&[("WARREN__WORKER__REDIS_URL", "redis://127.0.0.1:6379")]).unwrap();
    assert_eq!(on.worker.finished_ttl_s, 86_400);
}

#[test]
fn tokens_are_chosen_on_the_device_only_when_asked_and_batches_are_larger_with_a_gpu() {
    let cpu = load(&[]).unwrap();
    assert_eq!(cpu.engine.device_sampling, DeviceSampling::Off);
    assert!(!cpu.engine.samples_on_device());
    assert_eq!(cpu.engine.effective_batch_size(), 128);
    let gpu = load(&[("WARREN__ENGINE__N_GPU_LAYERS", "99")]).unwrap();
    assert!(!gpu.engine.samples_on_device(), "an opt-in, even on a GPU");
    assert_eq!(gpu.engine.effective_batch_size(), 512);
    let gpu_auto = load(&[
        ("WARREN__ENGINE__N_GPU_LAYERS", "99"),
        ("WARREN__ENGINE__DEVICE_SAMPLING", "auto"),
    ])
    .unwrap();
    assert!(gpu_auto.engine.samples_on_device());
    let forced = load(&[("WARREN__ENGINE__DEVICE_SAMPLING", "on")]).unwrap();
    assert!(forced.engine.samples_on_device(), "on: the CPU backend too");
    let off = load(&[
        ("WARREN__ENGINE__N_GPU_LAYERS", "99"),
        ("WARREN__ENGINE__DEVICE_SAMPLING", "off"),
        ("WARREN__ENGINE__BATCH_SIZE", "64"),
    ])
    .unwrap();
    assert!(!off.engine.samples_on_device());
    assert_eq!(off.engine.effective_batch_size(), 64, "a set size is kept");
    assert!(load(&[("WARREN__ENGINE__DEVICE_SAMPLING", "gpu")]).is_err());
}

#[test]
fn a_quantized_kv_cache_needs_flash_attention() {
    let err = load(&[
        ("WARREN__ENGINE__KV_CACHE_TYPE", "q8_0"),
        ("WARREN__ENGINE__FLASH_ATTENTION", "off"),
    ])
    .unwrap_err()
    .to_string();
    assert!(err.contains("engine.kv_cache_type"), "{err}");
    let s = load(&[("WARREN__ENGINE__KV_CACHE_TYPE", "q8_0")]).unwrap();
    assert_eq!(s.engine.flash_attention, FlashAttention::Auto);
    assert!(load(&[("WARREN__ENGINE__FLASH_ATTENTION", "sometimes")]).is_err());
}

#[test]
fn batch_invariance_needs_a_kv_stream_per_slot() {
    let err = load(&[
        ("WARREN__ENGINE__BATCH_INVARIANT", "true"),
        ("WARREN__ENGINE__KV_UNIFIED", "true"),
    ])
    .unwrap_err()
    .to_string();
    assert!(err.contains("engine.batch_invariant"), "{err}");
    assert!(!load(&[]).unwrap().engine.batch_invariant, "off by default");
    let on = load(&[("WARREN__ENGINE__BATCH_INVARIANT", "true")]).unwrap();
    assert!(on.engine.batch_invariant && !on.engine.kv_unified);
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
