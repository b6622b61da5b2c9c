//! The deploy/ files, parsed and checked (Docker cannot run here): the compose stack, the
//! image builds, the GPU build's wiring, and the RabbitMQ definitions against what the worker
//! really declares.

use std::process::Command;

use crate::common::{management_get, queue_info, repo, warren, Names};
use serde_json::Value;
use yaml_rust2::{Yaml, YamlLoader};

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
    // A worker aborts itself when its engine stalls: something must bring it back.
    assert_eq!(warren["restart"].as_str(), Some("unless-stopped"));
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
    assert!(cuda.contains("COPY deploy/image-cuda.toml /etc/warren/image.toml"));
}

/// Each image's settings are a configuration file WARREN_CONFIG names, which warren loads; no
/// WARREN__* variable is baked in, since one would override the chart's `--config` file.
#[test]
fn the_images_settings_are_a_configuration_file_a_config_argument_replaces() {
    use warren::config::{DeviceSampling, LogFormat, Settings};
    for (dockerfile, file, gpu_layers) in [
        ("deploy/Dockerfile", "deploy/image.toml", 0),
        ("deploy/Dockerfile.cuda", "deploy/image-cuda.toml", 99),
    ] {
        let text = std::fs::read_to_string(repo(dockerfile)).unwrap();
        assert!(
            text.contains(&format!("COPY {file} /etc/warren/image.toml"))
                && text.contains("ENV WARREN_CONFIG=/etc/warren/image.toml"),
            "{dockerfile}"
        );
        let mut instructions = text.lines().filter(|l| !l.trim_start().starts_with('#'));
        assert!(
            !instructions.any(|l| l.contains("WARREN__")),
            "{dockerfile} sets a WARREN__ variable"
        );
        let no_env = config::Environment::with_prefix("WARREN_DEPLOY_TEST_NO_ENV");
        let settings = Settings::load_from(Some(&repo(file)), no_env)
            .unwrap_or_else(|e| panic!("{file}: {e}"));
        assert_eq!(settings.engine.n_gpu_layers, gpu_layers, "{file}");
        assert_eq!(settings.metrics.listen, "0.0.0.0:9090", "{file}");
        assert_eq!(settings.log.format, LogFormat::Json, "{file}");
        let device = if gpu_layers > 0 {
            DeviceSampling::Auto
        } else {
            DeviceSampling::Off
        };
        assert_eq!(settings.engine.device_sampling, device, "{file}");
    }
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
