//! What ops rely on from a running worker: metrics and health endpoints, and structured logs
//! that keep task text private.

use std::time::{Duration, Instant};

use crate::common::{serving, InProcessWorker, Names, Serving, WorkerProcess};
use serde_json::{json, Value};

fn http_get(url: &str) -> (u16, String, String) {
    match ureq::get(url).call() {
        Ok(mut response) => {
            let content_type = response
                .headers()
                .get("content-type")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned();
            let body = response.body_mut().read_to_string().unwrap_or_default();
            (response.status().as_u16(), content_type, body)
        }
        Err(ureq::Error::StatusCode(code)) => (code, String::new(), String::new()),
        Err(e) => panic!("GET {url}: {e}"),
    }
}

/// The value of one sample line of the metrics text, e.g. `warren_ready`.
fn sample(metrics: &str, series: &str) -> Option<f64> {
    metrics.lines().find_map(|line| {
        line.strip_prefix(series)?
            .strip_prefix(' ')?
            .trim()
            .parse()
            .ok()
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_and_health_report_what_the_worker_did() {
    // In-process: the app says where its metrics are (no log to read).
    let names = Names::new("metrics");
    let worker = InProcessWorker::start(&names, &[]).await;
    let mut upstream = crate::common::Caller::connect().await;
    let base = format!("http://{}", worker.metrics_addr);

    assert_eq!(http_get(&format!("{base}/healthz")).0, 200);
    let deadline = Instant::now() + crate::common::PATIENCE;
    while http_get(&format!("{base}/readyz")).0 != 200 {
        assert!(Instant::now() < deadline, "never ready");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let ok = upstream
        .request(
            &names.requests,
            &json!({"prompt": "Hello", "max_tokens": 3}),
        )
        .await;
    assert_eq!(ok["status"], "ok");
    let bad = upstream
        .request(&names.requests, &json!({"prompt": 42}))
        .await;
    assert_eq!(bad["status"], "error");
    // The dead letter is published just after the error reply.
    tokio::time::sleep(Duration::from_millis(300)).await;

    let (status, content_type, metrics) = http_get(&format!("{base}/metrics"));
    assert_eq!(status, 200);
    assert!(
        content_type.starts_with("application/openmetrics-text"),
        "{content_type}"
    );
    let expect = [
        (r#"warren_tasks_total{outcome="ok",code=""}"#, 1.0),
        (
            r#"warren_tasks_total{outcome="error",code="invalid_request"}"#,
            1.0,
        ),
        (r#"warren_dead_letters_total{code="invalid_request"}"#, 1.0),
        ("warren_attempts_total", 1.0),
        ("warren_completion_tokens_total", 3.0),
        ("warren_task_duration_seconds_count", 1.0),
        ("warren_time_to_first_token_seconds_count", 1.0),
        ("warren_queue_wait_seconds_count", 1.0),
        ("warren_slots", 1.0),
        ("warren_slots_busy", 0.0),
        ("warren_tasks_waiting", 0.0),
        ("warren_messages_in_flight", 0.0),
        ("warren_reconnects_total", 0.0),
        ("warren_ready", 1.0),
    ];
    for (series, value) in expect {
        assert_eq!(
            sample(&metrics, series),
            Some(value),
            "{series} in:\n{metrics}"
        );
    }
    let prompt_tokens = sample(&metrics, "warren_prompt_tokens_total").unwrap();
    assert!(prompt_tokens >= 2.0);
    assert!(metrics.contains("warren_generation_tokens_per_second_bucket"));
    // Every generated token took a decode; the batches held the prompt and the tokens fed back.
    let steps = sample(&metrics, "warren_engine_steps_total").unwrap();
    assert!(steps >= 3.0, "{metrics}");
    let batch_tokens = sample(&metrics, "warren_engine_batch_tokens_total").unwrap();
    assert!(batch_tokens >= prompt_tokens + 2.0, "{metrics}");
    for phase in ["schedule", "decode", "sample", "emit"] {
        let series = format!(r#"warren_engine_step_seconds_total{{phase="{phase}"}}"#);
        let seconds = sample(&metrics, &series).unwrap_or(-1.0);
        assert!(seconds >= 0.0, "{series} in:\n{metrics}");
    }
    // The finished task's cells stay for the prefix cache: its prompt and its tokens.
    let kv_cells = sample(&metrics, "warren_kv_cells").unwrap();
    let kv_used = sample(&metrics, "warren_kv_cells_used").unwrap();
    assert!(kv_cells >= 512.0, "{metrics}");
    assert!(
        kv_used >= prompt_tokens + 2.0 && kv_used <= kv_cells,
        "{metrics}"
    );
    let decode = r#"warren_engine_step_seconds_total{phase="decode"}"#;
    assert!(sample(&metrics, decode).unwrap() > 0.0, "{metrics}");
    upstream.close().await;
    worker.stop().await;
}

#[tokio::test]
async fn a_worker_that_cannot_reach_the_broker_is_alive_but_not_ready() {
    let names = Names::new("notready");
    let worker = WorkerProcess::spawn(
        &names,
        &[("WARREN__BROKER__URL", "amqp://guest:guest@127.0.0.1:1/%2f")],
    );
    let base = worker.health_url().await;
    let deadline = Instant::now() + crate::common::PATIENCE;
    while !worker.log().contains("reconnecting") {
        assert!(Instant::now() < deadline, "{}", worker.log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(http_get(&format!("{base}/healthz")).0, 200);
    assert_eq!(http_get(&format!("{base}/readyz")).0, 503);
    let (_, _, metrics) = http_get(&format!("{base}/metrics"));
    assert_eq!(sample(&metrics, "warren_ready"), Some(0.0));
    assert!(sample(&metrics, "warren_reconnects_total").unwrap() >= 1.0);
}

#[tokio::test]
async fn a_warn_line_carries_its_tasks_span_with_the_level_above_info() {
    let Serving {
        mut upstream,
        worker,
        names,
    } = serving(
        "warnlog",
        &[("WARREN__LOG__FORMAT", "json"), ("RUST_LOG", "warn")],
    )
    .await;
    let reply = upstream
        .request(&names.requests, &json!({"prompt": "x", "max_tokens": -1}))
        .await;
    assert_eq!(reply["status"], "error");
    tokio::time::sleep(Duration::from_millis(200)).await;
    let log = worker.log();
    let failed = log
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .find(|entry| entry["fields"]["message"] == "task failed")
        .unwrap_or_else(|| panic!("no `task failed` line:\n{log}"));
    assert_eq!(failed["span"]["correlation_id"], reply["id"]);
    assert!(
        !log.contains("\"level\":\"INFO\""),
        "info events stay filtered out"
    );
}

#[tokio::test]
async fn json_logs_carry_a_span_per_task_and_never_the_task_text() {
    let Serving {
        mut upstream,
        worker,
        names,
    } = serving("jsonlog", &[("WARREN__LOG__FORMAT", "json")]).await;
    let secret = "Zanzibar-7431 confidential";
    let reply = upstream
        .request(
            &names.requests,
            &json!({"prompt": format!("{secret}. The capital of France is"), "max_tokens": 6}),
        )
        .await;
    let completion = reply["text"].as_str().unwrap().trim().to_owned();
    tokio::time::sleep(Duration::from_millis(200)).await;

    let log = worker.log();
    let mut completed = None;
    for line in log.lines().filter(|l| !l.trim().is_empty()) {
        let entry: Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        if entry["fields"]["message"] == "task completed" {
            completed = Some(entry);
        }
    }
    let completed = completed.expect("a `task completed` log line");
    let correlation_id = reply["id"].as_str().unwrap();
    assert_eq!(completed["span"]["correlation_id"], correlation_id);
    assert_eq!(completed["span"]["attempt"], 1);
    assert!(
        !log.contains("Zanzibar-7431"),
        "the prompt leaked into the logs"
    );
    if completion.len() > 8 {
        assert!(
            !log.contains(&completion),
            "the completion leaked into the logs"
        );
    }
}
