//! The broker topology warren declares (read back from RabbitMQ), backpressure and
//! priorities, naming for ops, and the command line: exit codes, `submit`, secrets.

use std::time::{Duration, Instant};

use crate::common::{management_get, queue_info, warren, Caller, Names, WorkerProcess};
use lapin::BasicProperties;
use serde_json::{json, Value};

fn declare(names: &Names, extra: &[(&str, &str)]) -> String {
    let mut command = warren(names);
    command.arg("topology");
    for (key, value) in extra {
        command.env(key, value);
    }
    let output = command.output().expect("run warren topology");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "warren topology failed: {stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

#[tokio::test]
async fn the_default_topology_is_declared_as_documented() {
    let names = Names::new("topo");
    let printed = declare(&names, &[]);
    assert!(printed.contains(&names.requests), "{printed}");

    let requests = queue_info(&names.requests).expect("requests queue exists");
    assert_eq!(requests["type"], "quorum");
    assert_eq!(requests["durable"], true);
    assert_eq!(requests["arguments"]["x-queue-type"], "quorum");
    assert_eq!(
        requests["arguments"]["x-dead-letter-exchange"],
        names.dlx.as_str()
    );
    assert_eq!(requests["arguments"]["x-delivery-limit"], 5);
    assert!(requests["arguments"].get("x-max-length").is_none());

    let dlx = management_get(&format!("exchanges/%2F/{}", names.dlx)).unwrap();
    assert_eq!(dlx["type"], "fanout");
    assert_eq!(dlx["durable"], true);
    let bindings = management_get(&format!("exchanges/%2F/{}/bindings/source", names.dlx)).unwrap();
    assert!(
        bindings
            .as_array()
            .unwrap()
            .iter()
            .any(|b| b["destination"] == names.dead.as_str()),
        "{} is bound to {}: {bindings}",
        names.dead,
        names.dlx
    );
    for parked in [&names.dead, &names.results] {
        let queue = queue_info(parked).unwrap();
        assert_eq!(queue["durable"], true, "{parked}");
    }

    let again = declare(&names, &[]);
    assert_eq!(
        printed, again,
        "declaring twice is harmless and gives the same topology"
    );
}

#[tokio::test]
async fn a_conflicting_existing_queue_is_reported_by_name() {
    let names = Names::new("conflict");
    declare(&names, &[]);
    let output = warren(&names)
        .arg("topology")
        .env("WARREN__TOPOLOGY__DELIVERY_LIMIT", "9")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(stderr.contains(&names.requests), "{stderr}");
    assert!(stderr.contains("other arguments"), "{stderr}");
}

#[tokio::test]
async fn a_worker_facing_a_queue_with_other_arguments_exits_64_naming_the_queue_and_argument() {
    let names = Names::new("conflict-worker");
    declare(&names, &[]);
    let mut worker = WorkerProcess::spawn(&names, &[("WARREN__TOPOLOGY__DELIVERY_LIMIT", "9")]);
    let status = worker
        .exit_within(crate::common::PATIENCE)
        .await
        .unwrap_or_else(|| panic!("the worker kept retrying:\n{}", worker.log()));
    let log = worker.log();
    assert_eq!(status.code(), Some(64), "{log}");
    assert!(log.contains(&names.requests), "{log}");
    assert!(log.contains("x-delivery-limit"), "{log}");
    assert!(
        !log.contains("reconnecting"),
        "an operator error is not retried: {log}"
    );
}

#[tokio::test]
async fn a_classic_queue_takes_a_backlog_bound_and_priorities() {
    let names = Names::new("classic");
    declare(
        &names,
        &[
            ("WARREN__TOPOLOGY__QUEUE_TYPE", "classic"),
            ("WARREN__TOPOLOGY__MAX_LENGTH", "100"),
            ("WARREN__TOPOLOGY__MAX_PRIORITY", "9"),
        ],
    );
    let requests = queue_info(&names.requests).unwrap();
    assert_eq!(requests["type"], "classic");
    assert_eq!(requests["arguments"]["x-max-length"], 100);
    assert_eq!(requests["arguments"]["x-overflow"], "reject-publish");
    assert_eq!(requests["arguments"]["x-max-priority"], 9);
    assert!(requests["arguments"].get("x-delivery-limit").is_none());
}

#[tokio::test]
async fn a_full_backlog_nacks_new_publishes() {
    let names = Names::new("backlog");
    declare(&names, &[("WARREN__TOPOLOGY__MAX_LENGTH", "2")]);
    let upstream = Caller::connect().await;
    let task = json!({"prompt": "a", "max_tokens": 1}).to_string();

    let mut outcomes = Vec::new();
    for _ in 0..4 {
        let confirm = upstream
            .publish(&names.requests, task.as_bytes(), BasicProperties::default())
            .await;
        outcomes.push(confirm.is_ack());
    }

    // A quorum queue checks the bound before it counts the message being published, so it
    // takes one message beyond max_length; after that every publish is nacked.
    assert_eq!(outcomes, vec![true, true, true, false]);
    let upstream_again = upstream
        .publish(&names.requests, task.as_bytes(), BasicProperties::default())
        .await;
    assert!(upstream_again.is_nack());
}

#[tokio::test]
async fn higher_priority_tasks_are_served_first_on_a_classic_queue() {
    let names = Names::new("priority");
    let classic = [
        ("WARREN__TOPOLOGY__QUEUE_TYPE", "classic"),
        ("WARREN__TOPOLOGY__MAX_PRIORITY", "5"),
    ];
    declare(&names, &classic);
    let mut upstream = Caller::connect().await;
    let task = json!({"prompt": "Hello", "max_tokens": 2}).to_string();
    let mut low = Vec::new();
    for _ in 0..3 {
        let id = uuid::Uuid::new_v4().to_string();
        let properties = upstream.properties(&id).with_priority(0);
        assert!(upstream
            .publish(&names.requests, task.as_bytes(), properties)
            .await
            .is_ack());
        low.push(id);
    }
    let urgent = uuid::Uuid::new_v4().to_string();
    let properties = upstream.properties(&urgent).with_priority(5);
    assert!(upstream
        .publish(&names.requests, task.as_bytes(), properties)
        .await
        .is_ack());

    let _worker = WorkerProcess::start(&names, &classic).await;
    let arrival = upstream.next_replies(4).await;

    assert_eq!(
        arrival[0], urgent,
        "the priority-5 task is served first: {arrival:?}"
    );
    let mut rest = arrival[1..].to_vec();
    rest.sort();
    low.sort();
    assert_eq!(rest, low);
}

#[tokio::test]
async fn ops_see_the_worker_by_name_in_the_management_ui() {
    let names = Names::new("naming");
    let worker = WorkerProcess::start(&names, &[]).await;
    let expected = format!(":{}", worker.pid());

    let deadline = Instant::now() + crate::common::PATIENCE;
    let (connection_name, consumer_tag) = loop {
        let connections = management_get("connections").unwrap_or(Value::Null);
        let name = connections.as_array().into_iter().flatten().find_map(|c| {
            let name = c["client_properties"]["connection_name"].as_str()?;
            (name.starts_with("warren-worker@") && name.ends_with(&expected))
                .then(|| name.to_owned())
        });
        let consumers = management_get("consumers/%2F").unwrap_or(Value::Null);
        let tag = consumers.as_array().into_iter().flatten().find_map(|c| {
            (c["queue"]["name"] == names.requests.as_str())
                .then(|| c["consumer_tag"].as_str().map(str::to_owned))?
        });
        if let (Some(name), Some(tag)) = (name, tag) {
            break (name, tag);
        }
        assert!(
            Instant::now() < deadline,
            "worker not visible in the management API"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert!(
        consumer_tag.starts_with(&connection_name),
        "consumer tag {consumer_tag} names the worker {connection_name}"
    );
}

#[test]
fn a_bad_configuration_value_exits_64_naming_the_key() {
    let names = Names::new("badcfg");
    let output = warren(&names)
        .arg("worker")
        .env("WARREN__ENGINE__SLOTS", "0")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&output.stderr).contains("engine.slots"));

    let output = warren(&names)
        .arg("worker")
        .env("WARREN__ENGINE__MODEL_PATH", "/nonexistent/model.gguf")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(64));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("engine.model_path"), "{stderr}");
    assert!(stderr.contains("make model"), "{stderr}");
}

#[test]
fn the_broker_password_never_reaches_the_logs() {
    let names = Names::new("secret");
    let output = warren(&names)
        .args(["topology"])
        .env(
            "WARREN__BROKER__URL",
            "amqp://warren:hunter2-s3cr3t@127.0.0.1:1/%2f",
        )
        .env("RUST_LOG", "trace")
        .output()
        .unwrap();
    assert!(!output.status.success());
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(!all.contains("hunter2-s3cr3t"), "password leaked:\n{all}");
    assert!(all.contains("warren:***@127.0.0.1"), "{all}");
}

#[tokio::test]
async fn submit_prints_the_reply_and_exits_by_its_status() {
    let names = Names::new("submit");
    let _worker = WorkerProcess::start(&names, &[]).await;

    let ok = warren(&names)
        .args([
            "submit",
            "--json",
            "--max-tokens",
            "4",
            "The capital of France is",
        ])
        .output()
        .unwrap();
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let reply: Value = serde_json::from_slice(&ok.stdout).expect("--json prints the reply");
    assert_eq!(reply["status"], "ok");
    assert_eq!(reply["usage"]["completion_tokens"], 4);

    let failed = warren(&names)
        .args(["submit", "--max-tokens", "100000", "Hello"])
        .output()
        .unwrap();
    assert_eq!(failed.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&failed.stderr).contains("context_length_exceeded"));
}
