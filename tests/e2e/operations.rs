//! What ops and upstream teams rely on: metrics and health endpoints, structured logs that keep
//! task text private, the deploy/ files (parsed and checked; Docker cannot run here), the
//! RabbitMQ definitions against what the worker really declares, and the Python client
//! example against a live worker.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::common::{
    management_get, queue_info, serving, warren, InProcessWorker, Names, Serving, WorkerProcess,
};
use serde_json::{json, Value};
use yaml_rust2::{Yaml, YamlLoader};

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

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

fn yaml(path: &str) -> Vec<Yaml> {
    let text = std::fs::read_to_string(repo(path)).unwrap_or_else(|e| panic!("{path}: {e}"));
    YamlLoader::load_from_str(&text).unwrap_or_else(|e| panic!("{path} is not YAML: {e}"))
}

#[test]
fn the_compose_file_runs_the_whole_stack_with_healthchecks() {
    let compose = &yaml("deploy/docker-compose.yml")[0];
    let rabbitmq = &compose["services"]["rabbitmq"];
    assert_eq!(rabbitmq["image"].as_str(), Some("rabbitmq:3-management"));
    let ports: Vec<_> = rabbitmq["ports"]
        .as_vec()
        .unwrap()
        .iter()
        .filter_map(|p| p.as_str())
        .collect();
    assert!(
        ports.contains(&"5672:5672") && ports.contains(&"15672:15672"),
        "{ports:?}"
    );
    let warren = &compose["services"]["worker"];
    assert_eq!(
        warren["build"]["dockerfile"].as_str(),
        Some("deploy/Dockerfile")
    );
    // The gateway runs the same image against the same broker, with Redis for its state.
    let gateway = &compose["services"]["gateway"];
    assert_eq!(gateway["image"].as_str(), warren["image"].as_str());
    assert_eq!(gateway["command"][0].as_str(), Some("gateway"));
    assert_eq!(
        gateway["environment"]["WARREN__BROKER__URL"].as_str(),
        warren["environment"]["WARREN__BROKER__URL"].as_str()
    );
    let redis_url = gateway["environment"]["WARREN__GATEWAY__REDIS_URL"]
        .as_str()
        .unwrap();
    assert!(!compose["services"]["redis"].is_badvalue());
    assert!(redis_url.starts_with("redis://redis:6379"), "{redis_url}");
    let listen = gateway["environment"]["WARREN__GATEWAY__LISTEN"]
        .as_str()
        .unwrap();
    let port = listen.rsplit(':').next().unwrap();
    assert!(gateway["healthcheck"]["test"]
        .as_vec()
        .unwrap()
        .iter()
        .any(|a| a.as_str() == Some(&format!("http://127.0.0.1:{port}/readyz"))));
    let check: Vec<_> = warren["healthcheck"]["test"]
        .as_vec()
        .unwrap()
        .iter()
        .filter_map(|p| p.as_str())
        .collect();
    assert!(
        check.iter().any(|a| a.ends_with(":9090/readyz")),
        "{check:?}"
    );
    assert!(warren["volumes"]
        .as_vec()
        .unwrap()
        .iter()
        .any(|v| v.as_str().unwrap().contains("/models")));
    let dockerfile = std::fs::read_to_string(repo("deploy/Dockerfile")).unwrap();
    assert!(dockerfile.contains("USER 10001") && dockerfile.contains("libgomp1"));
    let cuda = std::fs::read_to_string(repo("deploy/Dockerfile.cuda")).unwrap();
    assert!(cuda.contains("--features cuda"));

    // The broker's users are rendered from the environment into the directory RabbitMQ loads
    // its definitions from, beside the topology; the worker connects as the `warren` user.
    // (tests/python/test_deploy.py boots a blank node with this very layout.)
    let strings = |v: &Yaml| -> Vec<String> {
        v.as_vec()
            .unwrap()
            .iter()
            .filter_map(|s| s.as_str().map(str::to_owned))
            .collect()
    };
    let conf = std::fs::read_to_string(repo("deploy/rabbitmq/rabbitmq.conf")).unwrap();
    let definitions_dir = conf
        .lines()
        .find_map(|l| l.strip_prefix("management.load_definitions = "))
        .expect("definitions loaded at boot");
    let mounts = strings(&rabbitmq["volumes"]);
    assert!(mounts.contains(&format!(
        "./rabbitmq/definitions.json:{definitions_dir}/topology.json:ro"
    )));
    let render = mounts
        .iter()
        .find(|m| m.starts_with("./rabbitmq/render-users.sh:"))
        .expect("the users script is mounted");
    let render_path = render.split(':').nth(1).unwrap();
    assert_eq!(strings(&rabbitmq["entrypoint"])[1], render_path);
    for key in ["WARREN_RABBITMQ_PASSWORD", "OPS_RABBITMQ_PASSWORD"] {
        let value = rabbitmq["environment"][key].as_str().unwrap();
        assert!(
            value.starts_with(&format!("${{{key}:?")),
            "{key} is required: {value}"
        );
    }
    let url = warren["environment"]["WARREN__BROKER__URL"]
        .as_str()
        .unwrap();
    assert_eq!(
        url,
        "amqp://warren:${WARREN_RABBITMQ_PASSWORD}@rabbitmq:5672/%2f"
    );
    let example = std::fs::read_to_string(repo("deploy/.env.example")).unwrap();
    assert!(
        example.contains("WARREN_RABBITMQ_PASSWORD=") && example.contains("OPS_RABBITMQ_PASSWORD=")
    );
}

#[test]
fn image_builds_leave_out_build_output_and_the_cuda_image_targets_current_gpus() {
    let ignored = std::fs::read_to_string(repo(".dockerignore")).unwrap();
    for path in ["target/", "models/", ".git/"] {
        assert!(
            ignored.lines().any(|l| l.trim() == path),
            ".dockerignore lacks {path}"
        );
    }
    let cuda = std::fs::read_to_string(repo("deploy/Dockerfile.cuda")).unwrap();
    let archs = cuda
        .lines()
        .find_map(|l| l.strip_prefix("ARG CUDA_ARCHITECTURES="))
        .expect("a CUDA_ARCHITECTURES build argument with a default");
    for arch in ["80", "86", "89", "90"] {
        assert!(
            archs.trim_matches('"').split(';').any(|a| a == arch),
            "{arch} in {archs}"
        );
    }
    assert!(
        cuda.contains("CMAKE_CUDA_ARCHITECTURES=\"${CUDA_ARCHITECTURES}\" cargo build"),
        "the architectures reach llama.cpp's CMake build"
    );
    assert!(cuda.contains("WARREN__ENGINE__N_GPU_LAYERS=99"));
}

#[test]
fn the_rabbitmq_definitions_match_what_the_worker_declares() {
    let names = Names::new("defs");
    let output = warren(&names).arg("topology").output().unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );

    // definitions.json uses the default names; map them to this test's.
    let text = std::fs::read_to_string(repo("deploy/rabbitmq/definitions.json")).unwrap();
    let text = text
        .replace("warren.requests", &names.requests)
        .replace("warren.dlx", &names.dlx)
        .replace("warren.dead", &names.dead)
        .replace("warren.results", &names.results)
        .replace("warren.control", &names.control)
        .replace("warren.delay", &names.retry_prefix);
    let definitions: Value = serde_json::from_str(&text).unwrap();

    let declared_queues = management_get("queues/%2F?columns=name").unwrap();
    let ours: Vec<_> = declared_queues
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|q| q["name"].as_str())
        .filter(|n| n.starts_with(&names.requests[..names.requests.len() - ".requests".len()]))
        .map(str::to_owned)
        .collect();
    let defined = definitions["queues"].as_array().unwrap();
    assert_eq!(ours.len(), defined.len(), "declared {ours:?}");
    for queue in defined {
        let name = queue["name"].as_str().unwrap();
        let live = queue_info(name).unwrap_or_else(|e| panic!("{name} not declared: {e}"));
        assert_eq!(live["durable"], queue["durable"], "{name}");
        assert_eq!(live["arguments"], queue["arguments"], "{name}");
    }
    for exchange in definitions["exchanges"].as_array().unwrap() {
        let name = exchange["name"].as_str().unwrap();
        let live = management_get(&format!("exchanges/%2F/{name}")).unwrap();
        assert_eq!(live["type"], exchange["type"]);
        assert_eq!(live["durable"], exchange["durable"]);
    }
    for binding in definitions["bindings"].as_array().unwrap() {
        let source = binding["source"].as_str().unwrap();
        let live = management_get(&format!("exchanges/%2F/{source}/bindings/source")).unwrap();
        assert!(
            live.as_array()
                .unwrap()
                .iter()
                .any(|b| b["destination"] == binding["destination"]),
            "binding {binding}"
        );
    }
}

/// An example client's run: exit 0 and, on stdout, an ok reply of `tokens` tokens.
fn assert_client_got_an_ok_reply(run: &std::process::Output, tokens: u64) {
    assert_eq!(
        run.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let reply: Value = serde_json::from_slice(&run.stdout).unwrap();
    assert_eq!(reply["status"], "ok");
    assert_eq!(reply["usage"]["completion_tokens"], tokens);
}

/// A Python virtual environment with the example's requirements, under target/.
fn python_env() -> PathBuf {
    let venv = repo("target/pyenv");
    let python = venv.join("bin/python");
    if !python.exists() {
        let status = Command::new("python3")
            .args(["-m", "venv"])
            .arg(&venv)
            .status()
            .unwrap();
        assert!(
            status.success(),
            "python3 -m venv failed (apt-get install python3-venv)"
        );
    }
    let status = Command::new(&python)
        .args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "-r",
        ])
        .arg(repo("examples/python/requirements.txt"))
        .status()
        .unwrap();
    assert!(
        status.success(),
        "pip install of the example's requirements failed"
    );
    python
}

#[tokio::test]
async fn the_python_pika_client_gets_a_completion_and_reports_errors() {
    let python = python_env();
    let Serving {
        upstream: _upstream,
        worker: _worker,
        names,
    } = serving("python", &[]).await;
    let client = repo("examples/python/client.py");

    let ok = Command::new(&python)
        .arg(&client)
        .args([
            "The capital of France is",
            "--max-tokens",
            "5",
            "--json",
            "--queue",
        ])
        .arg(&names.requests)
        .output()
        .unwrap();
    assert_client_got_an_ok_reply(&ok, 5);

    let failed = Command::new(&python)
        .arg(&client)
        .args(["Hello", "--max-tokens", "100000", "--queue"])
        .arg(&names.requests)
        .output()
        .unwrap();
    assert_eq!(failed.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&failed.stderr).contains("context_length_exceeded"));
}

/// amqplib from npm, installed under target/ for the Node example; returns its node_modules.
fn node_modules() -> PathBuf {
    let prefix = repo("target/node-example");
    let status = Command::new("npm")
        .args(["install", "--silent", "--no-audit", "--no-fund", "--prefix"])
        .arg(&prefix)
        .arg("amqplib@2.3.1")
        .status()
        .expect("npm (apt-get install npm)");
    assert!(status.success(), "npm install amqplib failed");
    prefix.join("node_modules")
}

fn run_node_client(modules: &Path, args: &[&str]) -> std::process::Output {
    Command::new("node")
        .arg(repo("examples/node/client.js"))
        .args(args)
        .env("NODE_PATH", modules)
        .output()
        .expect("node")
}

#[tokio::test]
async fn the_node_amqplib_client_gets_a_completion_reports_errors_and_sees_a_full_queue() {
    let modules = node_modules();
    let Serving {
        upstream: _upstream,
        worker,
        names,
    } = serving("node", &[]).await;
    let queue = names.requests.clone();
    let ok = run_node_client(
        &modules,
        &[
            "The capital of France is",
            "--max-tokens",
            "5",
            "--queue",
            &queue,
        ],
    );
    assert_client_got_an_ok_reply(&ok, 5);
    let failed = run_node_client(
        &modules,
        &["Hello", "--max-tokens", "100000", "--queue", &queue],
    );
    assert_eq!(failed.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&failed.stderr).contains("context_length_exceeded"));
    drop(worker);

    // No worker, a backlog bound of 1: the queue fills up and the broker nacks the publish.
    let full = Names::new("node-full");
    let declared = warren(&full)
        .arg("topology")
        .env("WARREN__TOPOLOGY__MAX_LENGTH", "1")
        .output()
        .unwrap();
    assert!(declared.status.success());
    let mut codes = Vec::new();
    for _ in 0..3 {
        let run = run_node_client(&modules, &["Hi", "--queue", &full.requests, "--wait", "1"]);
        codes.push(run.status.code());
        if run.status.code() == Some(1) {
            let stderr = String::from_utf8_lossy(&run.stderr);
            assert!(stderr.contains("refused"), "{stderr}");
            break;
        }
    }
    assert_eq!(
        codes.last(),
        Some(&Some(1)),
        "the full queue was never reported: {codes:?}"
    );
    assert!(
        codes[..codes.len() - 1].iter().all(|c| *c == Some(2)),
        "{codes:?}"
    );
}

#[test]
fn the_gpu_build_and_check_are_wired_for_the_cuda_feature_and_current_architectures() {
    // No GPU or CUDA toolkit here: check what can be checked without one.
    for script in [
        "scripts/gpu-check.sh",
        "scripts/gpu-bundle.sh",
        "scripts/gpu-remote.sh",
    ] {
        let syntax = Command::new("bash")
            .args(["-n"])
            .arg(repo(script))
            .status()
            .unwrap();
        assert!(syntax.success(), "{script} parses");
    }
    let plan = Command::new("make")
        .args(["-n", "build-cuda"])
        .current_dir(repo(""))
        .output()
        .unwrap();
    let plan = String::from_utf8_lossy(&plan.stdout);
    assert!(
        plan.contains("CMAKE_CUDA_ARCHITECTURES=\"80;86;89;90\"")
            && plan.contains("--features cuda"),
        "{plan}"
    );
    assert!(
        plan.contains("CARGO_TARGET_DIR=target-cuda"),
        "the CPU build stays: {plan}"
    );
    let script = std::fs::read_to_string(repo("scripts/gpu-check.sh")).unwrap();
    for needed in [
        "WARREN__ENGINE__N_GPU_LAYERS=99",
        "WARREN__ENGINE__DEVICE_SAMPLING=off engine",
        "WARREN__ENGINE__DEVICE_SAMPLING=on engine",
        "bench --in-process",
        "\" worker",
        "--backend-sampling",
        "WARREN__ENGINE__KV_UNIFIED=true engine",
        "--mixed-lengths",
        "\"$BATCHED_BENCH\" -m",
        "--query-gpu=utilization.gpu",
        "-fa \"$FLASH_ATTENTION\"",
    ] {
        assert!(script.contains(needed), "gpu-check.sh lacks {needed}");
    }

    // The tables come from the runs' JSON reports, whichever ran.
    let results = std::env::temp_dir().join(format!("gpu-table-{}", std::process::id()));
    std::fs::create_dir_all(&results).unwrap();
    let report = |tokens_per_s: f64| {
        serde_json::json!({"tokens_per_s": tokens_per_s, "errors": 0, "tasks_per_s": 1.0,
            "ttft_ms": {"p50": 1.0}, "latency_ms": {"p50": 1.0}})
        .to_string()
    };
    for (name, tokens_per_s) in [
        ("engine-host-32", 1700.0),
        ("llama-server-host-greedy-32", 850.0),
        ("engine-device-unified-32", 6800.0),
    ] {
        std::fs::write(results.join(format!("{name}.json")), report(tokens_per_s)).unwrap();
    }
    // The device run with its step profile, the GPU's utilisation samples during it, and
    // llama-batched-bench's line for 32 sequences.
    let mut device: serde_json::Value = serde_json::from_str(&report(3400.0)).unwrap();
    device["step_profile"] = serde_json::json!({"steps": 10, "tokens_per_step": 32.0,
        "schedule_ms": 0.1, "decode_ms": 5.0, "sample_ms": 4.0, "emit_ms": 0.9, "host_share": 0.1});
    std::fs::write(results.join("engine-device-32.json"), device.to_string()).unwrap();
    std::fs::write(results.join("engine-device-32.gpu"), "50, 1000\n70, 1000\n").unwrap();
    std::fs::write(
        results.join("batched-bench.jsonl"),
        "{\"n_kv_max\": 5000, \"pl\": 32, \"speed_tg\": 9000.0}\n",
    )
    .unwrap();
    let table = Command::new("bash")
        .arg(repo("scripts/gpu-check.sh"))
        .env("TABLE_ONLY", "1")
        .env("RESULTS", &results)
        .env("SLOTS", "32")
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&table.stdout);
    assert!(
        table.contains("| 32 | 1700 | 3400 | - | 850 | - | 9000 | - | - |"),
        "{table}"
    );
    assert!(
        table
            .contains("| 32 | 32.0 | 10.000 | 0.100 | 5.000 | 4.000 | 0.900 | 10% | 60% | - | - |"),
        "where the step's time goes: {table}"
    );
    assert!(
        table.contains("| 32 | 6800 | 3400 | 2.00x | - | - | - |"),
        "the KV layouts side by side: {table}"
    );
    std::fs::remove_dir_all(&results).ok();
}

#[test]
fn the_go_example_is_a_complete_gofmt_clean_program_that_checks_the_confirm() {
    // No Go module proxy is reachable here, so the example cannot be built against
    // amqp091-go; gofmt at least parses the whole file and checks its formatting.
    let file = repo("examples/go/main.go");
    let output = Command::new("gofmt")
        .arg("-e")
        .arg("-l")
        .arg(&file)
        .output()
        .expect("gofmt (apt-get install golang-go)");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.stdout.is_empty(), "gofmt would reformat it");
    let source = std::fs::read_to_string(&file).unwrap();
    assert!(source.starts_with("// Command warren-client") && source.contains("package main"));
    assert!(
        source.contains("acked, err := confirm.WaitContext(ctx)") && source.contains("if !acked {"),
        "a nacked publish (full queue) is reported, not ignored"
    );
    let module = std::fs::read_to_string(repo("examples/go/go.mod")).unwrap();
    assert!(module.contains("github.com/rabbitmq/amqp091-go"));
}

/// A throwaway CA and a server certificate for `localhost`, in `dir`.
fn make_certificates(dir: &Path) {
    let run = |args: &[&str]| {
        let output = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    };
    run(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "1",
        "-subj",
        "/CN=warren-test-ca",
    ]);
    run(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        "/CN=localhost",
    ]);
    std::fs::write(
        dir.join("ext.cnf"),
        "subjectAltName=DNS:localhost,IP:127.0.0.1\n",
    )
    .unwrap();
    run(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.pem",
        "-days",
        "1",
        "-extfile",
        "ext.cnf",
    ]);
}

/// socat terminating TLS on a free port in front of RabbitMQ's plain port; killed on drop.
struct TlsTerminator(std::process::Child, u16);

impl TlsTerminator {
    fn start(dir: &Path) -> TlsTerminator {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let listen = format!(
            "openssl-listen:{port},reuseaddr,fork,bind=127.0.0.1,cert={},key={},verify=0",
            dir.join("server.pem").display(),
            dir.join("server.key").display()
        );
        let child = Command::new("socat")
            .args([listen.as_str(), "tcp:127.0.0.1:5672"])
            .spawn()
            .expect("socat (apt-get install socat)");
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "socat did not listen");
            std::thread::sleep(Duration::from_millis(50));
        }
        TlsTerminator(child, port)
    }
}

impl Drop for TlsTerminator {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn a_worker_serves_over_amqps_trusting_a_private_ca_from_ssl_cert_file() {
    let dir = std::env::temp_dir().join(format!("warren-tls-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    make_certificates(&dir);
    let tls = TlsTerminator::start(&dir);
    let url = format!("amqps://guest:guest@localhost:{}/%2f", tls.1);
    let ca = dir.join("ca.pem");
    let names = Names::new("tls");

    // Without the CA the certificate is not trusted: the connection must fail.
    let untrusted = warren(&names)
        .arg("topology")
        .env("WARREN__BROKER__URL", &url)
        .env("SSL_CERT_FILE", "/nonexistent-ca.pem")
        .output()
        .unwrap();
    assert!(
        !untrusted.status.success(),
        "an untrusted certificate was accepted"
    );

    let worker = WorkerProcess::start(
        &names,
        &[
            ("WARREN__BROKER__URL", url.as_str()),
            ("SSL_CERT_FILE", ca.to_str().unwrap()),
        ],
    )
    .await;
    let mut upstream = crate::common::Caller::connect().await;
    let reply = upstream
        .request(
            &names.requests,
            &json!({"prompt": "Hello", "max_tokens": 3}),
        )
        .await;
    assert_eq!(reply["status"], "ok", "{reply}\n{}", worker.log());
    assert!(
        worker.log().contains("amqps://guest:***@localhost"),
        "{}",
        worker.log()
    );
    drop(worker);
    std::fs::remove_dir_all(&dir).unwrap();
}
