//! `warren dlq` end to end: dead letters listed, replayed to their queue and answered, and
//! purged.

use std::time::Duration;

use crate::common::{header, ready_count, warren, Caller, Names, WorkerProcess};
use serde_json::{json, Value};

#[tokio::test]
async fn dlq_list_replay_and_purge_round_trip() {
    let names = Names::new("dlq");
    let mut upstream = Caller::connect().await;
    let worker = WorkerProcess::start(&names, &[]).await;
    let mut ids = Vec::new();
    for body in [
        json!({"prompt": 1}),
        json!({"prompt": "Hello", "deadline_ms": 1}),
        json!({"messages": "nope"}),
    ] {
        let id = upstream.send(&names.requests, &body).await;
        assert_eq!(upstream.reply(&id).await["status"], "error");
        ids.push(id);
    }
    // Each dead letter is published right after its error reply.
    let deadline = std::time::Instant::now() + crate::common::PATIENCE;
    while ready_count(&names.dead).await < 3 {
        assert!(std::time::Instant::now() < deadline, "dead letters missing");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drop(worker);

    let dlq = async |args: &[&str]| {
        let mut command = tokio::process::Command::from(warren(&names));
        command.arg("dlq").args(args).kill_on_drop(true);
        let output = tokio::time::timeout(crate::common::PATIENCE, command.output())
            .await
            .unwrap_or_else(|_| panic!("dlq {args:?} did not exit in time"))
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
        // A channel dropped just before the connection's close made lapin log a connection
        // error on most runs, and on some never finish the close.
        assert!(
            !stderr.contains(" ERROR "),
            "dlq {args:?} logs no error: {stderr}"
        );
        (
            output.status.code(),
            String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr,
        )
    };
    let (code, listed, _) = dlq(&["list", "--json"]).await;
    assert_eq!(code, Some(0));
    let letters: Vec<Value> = listed
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let seen: Vec<_> = letters
        .iter()
        .map(|l| l["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(seen, ids, "listed oldest first");
    let codes: Vec<_> = letters
        .iter()
        .map(|l| l["code"].as_str().unwrap())
        .collect();
    assert_eq!(codes, ["invalid_request", "expired", "invalid_request"]);
    assert!(letters
        .iter()
        .all(|l| l["attempts"] == 1 && l["size"].as_u64() > Some(0)));
    let (_, listed_again, _) = dlq(&["list", "--json"]).await;
    let seen_again: Vec<_> = listed_again
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["id"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(seen_again, ids, "listing neither consumes nor reorders");

    let (code, out, err) = dlq(&["replay", "--id", &ids[1]]).await;
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("replayed 1"), "{out}");
    let replayed = upstream
        .get(&names.requests)
        .await
        .expect("the replayed task is back in the requests queue");
    let properties = &replayed.delivery.properties;
    assert_eq!(
        properties.correlation_id().as_ref().map(|c| c.to_string()),
        Some(ids[1].clone())
    );
    assert_eq!(
        header(properties, "x-warren-attempts"),
        None,
        "attempts start over"
    );
    assert_eq!(header(properties, "x-warren-error-code"), None);
    let (_, remaining, _) = dlq(&["list", "--json"]).await;
    assert_eq!(remaining.lines().count(), 2);

    let (code, _, err) = dlq(&["purge"]).await;
    assert_ne!(code, Some(0), "purge asks for --yes");
    assert!(err.contains("--yes"), "{err}");
    assert_eq!(ready_count(&names.dead).await, 2);
    let (code, out, _) = dlq(&["purge", "--yes"]).await;
    assert_eq!(code, Some(0));
    assert!(out.contains("purged 2"), "{out}");
    assert_eq!(ready_count(&names.dead).await, 0);
}
