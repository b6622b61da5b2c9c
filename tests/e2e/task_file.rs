//! `warren submit --file tasks.jsonl --out results.jsonl`: a bulk job against a real worker,
//! model and broker. Every task line gets exactly one result line, a bad line its own error,
//! the number of published-and-unanswered tasks stays within `--in-flight`, the summary
//! decides the exit code, and an interrupted job resumes without re-sending finished lines.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::common::{ready_count, signal, warren, Names, WorkerProcess, PATIENCE};
use serde_json::{json, Value};

/// A fresh folder for one job: (folder, task file, results file).
fn job_files() -> (PathBuf, PathBuf, PathBuf) {
    let dir = std::env::temp_dir().join(format!("warren-bulk-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let (tasks, out) = (dir.join("tasks.jsonl"), dir.join("results.jsonl"));
    (dir, tasks, out)
}

fn write_tasks(path: &Path, lines: &[String]) {
    std::fs::write(path, lines.join("\n") + "\n").expect("write the task file");
}

/// The results file, as line number → result.
fn results(path: &Path) -> BTreeMap<u64, Value> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let mut by_line = BTreeMap::new();
    for record in text.lines().filter(|l| !l.trim().is_empty()) {
        let value: Value = serde_json::from_str(record).expect("every result line is JSON");
        let line = value["line"].as_u64().expect("a line number");
        assert!(
            by_line.insert(line, value).is_none(),
            "line {line} has two results"
        );
    }
    by_line
}

fn bulk(names: &Names, tasks: &Path, out: &Path, in_flight: &str) -> Command {
    let mut command = warren(names);
    command
        .args(["submit", "--file"])
        .arg(tasks)
        .arg("--out")
        .arg(out)
        .args(["--in-flight", in_flight])
        .stdin(Stdio::null());
    command
}

#[tokio::test(flavor = "multi_thread")]
async fn every_task_line_gets_one_result_line_with_at_most_in_flight_tasks_queued() {
    let names = Names::new("bulk");
    // One slot: tasks the job has in flight beyond it wait ready in the batch tier's queue
    // (a job's tasks are batch work).
    let _worker = WorkerProcess::start(&names, &[("WARREN__ENGINE__SLOTS", "1")]).await;
    let (dir, tasks, out) = job_files();
    let mut lines: Vec<String> = (0..10)
        .map(|i| json!({"prompt": format!("Count to {i}:"), "max_tokens": 12}).to_string())
        .collect();
    lines.insert(3, "this line is not JSON".to_owned());
    lines.insert(5, String::new());
    lines[0] =
        json!({"prompt": "The capital of France is", "max_tokens": 12, "custom_id": "first"})
            .to_string();
    write_tasks(&tasks, &lines);

    let most_ready = Arc::new(AtomicU32::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let watcher = {
        let queue = format!("{}.batch", names.requests);
        let (most_ready, done) = (most_ready.clone(), done.clone());
        tokio::spawn(async move {
            while !done.load(Ordering::Relaxed) {
                most_ready.fetch_max(ready_count(&queue).await, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };
    let mut command = bulk(&names, &tasks, &out, "4");
    let output = tokio::task::spawn_blocking(move || command.output().unwrap())
        .await
        .unwrap();
    done.store(true, Ordering::Relaxed);
    watcher.await.unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);

    assert_eq!(
        output.status.code(),
        Some(1),
        "a failed line fails the run: {stderr}"
    );
    assert!(
        stderr
            .contains("10 ok, 1 failed, 0 unanswered, 0 already done (failed: invalid_request: 1)"),
        "{stderr}"
    );
    assert!(
        stderr.contains("progress: 11/11 done, 1 failed"),
        "plain progress lines off a terminal: {stderr}"
    );
    let by_line = results(&out);
    let expected: BTreeSet<u64> = [1, 2, 3, 4, 5, 7, 8, 9, 10, 11, 12].into();
    assert_eq!(by_line.keys().copied().collect::<BTreeSet<_>>(), expected);
    assert_eq!(by_line[&4]["reply"]["status"], "error");
    assert_eq!(by_line[&4]["reply"]["error"]["code"], "invalid_request");
    assert_eq!(by_line[&1]["custom_id"], "first");
    for (line, result) in &by_line {
        if *line == 4 {
            continue;
        }
        assert_eq!(result["reply"]["status"], "ok", "line {line}: {result}");
        assert!(
            result["reply"]["usage"]["completion_tokens"]
                .as_u64()
                .unwrap()
                <= 12
        );
        assert_eq!(result["reply"]["id"], result["id"]);
    }
    // Four in flight, one of them at the worker: up to three wait ready (a fourth for the
    // moment between a reply's arrival and the broker taking the worker's ack). Without the
    // bound all eleven would be queued at once.
    let most_ready = most_ready.load(Ordering::Relaxed);
    assert!(
        most_ready >= 1,
        "the queue was sampled while tasks waited in it"
    );
    assert!(
        most_ready <= 4,
        "{most_ready} tasks waited at once, over --in-flight 4"
    );
    // Run again: nothing is sent, and the failed line still fails the job.
    let again = bulk(&names, &tasks, &out, "4").output().unwrap();
    let stderr = String::from_utf8_lossy(&again.stderr);
    assert_eq!(again.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("0 ok, 0 failed, 0 unanswered, 11 already done (1 of them failed)"),
        "{stderr}"
    );
    // Each line carries its own settings: a one-task option is refused, not ignored.
    let refused = bulk(&names, &tasks, &out, "4")
        .args(["--max-tokens", "8"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(refused.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("--max-tokens"), "{stderr}");
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_interrupted_job_resumes_without_resending_lines_that_have_a_result() {
    let names = Names::new("bulk-resume");
    let _worker = WorkerProcess::start(&names, &[("WARREN__ENGINE__SLOTS", "2")]).await;
    let (dir, tasks, out) = job_files();
    let lines: Vec<String> = (0..16)
        .map(|i| json!({"prompt": format!("Story number {i}:"), "max_tokens": 24}).to_string())
        .collect();
    write_tasks(&tasks, &lines);

    let first = bulk(&names, &tasks, &out, "2")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    while results(&out).len() < 4 {
        assert!(
            started.elapsed() < PATIENCE,
            "no results from the first run"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    signal(first.id(), "INT");
    let first = first.wait_with_output().unwrap();
    let first_stderr = String::from_utf8_lossy(&first.stderr);
    assert_eq!(first.status.code(), Some(1), "{first_stderr}");
    assert!(first_stderr.contains("interrupted"), "{first_stderr}");
    let before = results(&out);
    assert!(before.len() < 16, "the run was interrupted before the end");

    let second = bulk(&names, &tasks, &out, "2").output().unwrap();
    let second_stderr = String::from_utf8_lossy(&second.stderr);
    assert!(second.status.success(), "{second_stderr}");
    assert!(
        second_stderr.contains(&format!(
            "{} to send, {} already have a result",
            16 - before.len(),
            before.len()
        )),
        "{second_stderr}"
    );
    let after = results(&out);
    assert_eq!(
        after.keys().copied().collect::<Vec<_>>(),
        (1..=16).collect::<Vec<u64>>()
    );
    for (line, result) in &before {
        assert_eq!(
            after[line]["id"], result["id"],
            "line {line} was sent again"
        );
    }
    assert!(after.values().all(|r| r["reply"]["status"] == "ok"));
    let _ = std::fs::remove_dir_all(dir);
}
