//! The configuration's layering and every validation rule, by example: here the layering,
//! the broker's and the gateway's settings; the engine's in [`engine`], routing by model, the
//! cluster's URLs and shards in [`routing`].

use super::*;
use std::collections::HashMap;

mod engine;
mod routing;

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
            &[("WARREN__ENGINE__STALL_TIMEOUT_MS", "99")],
            "engine.stall_timeout_ms",
        ),
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
        (
            ("WARREN__GATEWAY__BATCH_LEASE_MS", "4999"),
            "gateway.batch_lease_ms",
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
fn numeric_looking_strings_from_the_environment_stay_as_written() {
    let s = load(&[
        ("WARREN__GATEWAY__API_KEYS", "0123456789,1e3"),
        ("WARREN__GATEWAY__MODEL_NAME", "007"),
        ("WARREN__ENGINE__SLOTS", "3"),
        ("WARREN__RETRY__JITTER", "0.25"),
        ("WARREN__WORKER__FAULT_INJECTION", "true"),
    ])
    .unwrap();
    assert_eq!(s.gateway.keys().unwrap(), ["0123456789", "1e3"]);
    assert_eq!(s.gateway.model_name, "007");
    // Numbers and booleans are still read from their strings.
    assert_eq!(s.engine.slots, 3);
    assert_eq!(s.retry.jitter, 0.25);
    assert!(s.worker.fault_injection);
}

#[test]
fn an_embed_worker_has_at_most_255_slots() {
    let embed = |slots| {
        load(&[
            ("WARREN__ENGINE__ROLE", "embed"),
            ("WARREN__ENGINE__SLOTS", slots),
        ])
    };
    let refused = embed("256").expect_err("256 slots").to_string();
    assert!(refused.contains("engine.slots"), "{refused}");
    assert!(embed("255").is_ok());
    assert!(load(&[("WARREN__ENGINE__SLOTS", "256")]).is_ok());
}
