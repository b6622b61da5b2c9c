//! The client examples against a live worker: Python (pika) and Node (amqplib) run, Go is
//! checked for completeness (no Go toolchain here).

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::common::{repo, serving, warren, Names, Serving};
use serde_json::Value;

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

    // A queue nobody declared: the broker returns the mandatory publish, at once.
    let returned = Command::new(&python)
        .arg(&client)
        .args(["Hi", "--timeout", "60", "--queue"])
        .arg(format!("{}.nobody", names.base))
        .output()
        .unwrap();
    assert_eq!(returned.status.code(), Some(1), "{returned:?}");
    let stderr = String::from_utf8_lossy(&returned.stderr);
    assert!(stderr.contains("returned the task"), "{stderr}");
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

    // A queue nobody declared: the broker returns the mandatory publish, at once.
    let nowhere = format!("{}.nobody", names.base);
    let returned = run_node_client(&modules, &["Hi", "--queue", &nowhere, "--wait", "60"]);
    assert_eq!(returned.status.code(), Some(1), "{returned:?}");
    let stderr = String::from_utf8_lossy(&returned.stderr);
    assert!(stderr.contains("returned the task"), "{stderr}");

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
fn the_go_example_parses_is_gofmt_clean_and_names_the_confirm() {
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
