//! Sampling on the device (`engine.device_sampling`), end to end on the real model: tokens
//! chosen in llama.cpp's decode graph read the same as tokens chosen on the host, seeds keep
//! their meaning, and tasks the device cannot sample (a grammar, a repeat penalty) share the
//! batch with those it can. The CPU backend runs the same graph a GPU would ("on" forces it
//! here; "auto" turns it on only with layers on a GPU).

use crate::common::Caller;
use serde_json::{json, Value};

/// Batches of at most 2 tokens keep llama.cpp's CPU kernels on one rounding path whatever a
/// task's neighbours are (see tests/e2e/prefix_cache.rs), so greedy texts compare exactly.
const ONE_TOKEN_ROWS: (&str, &str) = ("WARREN__ENGINE__BATCH_SIZE", "1");
const TWO_SLOTS: (&str, &str) = ("WARREN__ENGINE__SLOTS", "2");

const PROMPTS: [&str; 3] = [
    "The capital of France is",
    "Once upon a time, in a small village,",
    "List three colours:",
];

fn ok_text(reply: &Value) -> String {
    assert_eq!(reply["status"], "ok", "{reply}");
    reply["text"].as_str().expect("text").to_owned()
}

async fn greedy_texts(upstream: &mut Caller, queue: &str) -> Vec<String> {
    let mut texts = Vec::new();
    for prompt in PROMPTS {
        let reply = upstream
            .request(queue, &json!({"prompt": prompt, "max_tokens": 20}))
            .await;
        texts.push(ok_text(&reply));
    }
    texts
}

#[tokio::test]
async fn greedy_text_chosen_on_the_device_is_the_text_chosen_on_the_host() {
    let crate::common::Serving {
        mut upstream,
        worker: host_worker,
        names: host,
    } = crate::common::serving(
        "devhost",
        &[
            ("WARREN__ENGINE__DEVICE_SAMPLING", "off"),
            TWO_SLOTS,
            ONE_TOKEN_ROWS,
        ],
    )
    .await;
    let on_host = greedy_texts(&mut upstream, &host.requests).await;
    assert_eq!(
        admitted(&host_worker.log(), false),
        3,
        "off: every task on the host"
    );
    drop(host_worker);

    let device = crate::common::Names::new("devgreedy");
    let worker = crate::common::WorkerProcess::start(
        &device,
        &[
            ("WARREN__ENGINE__DEVICE_SAMPLING", "on"),
            TWO_SLOTS,
            ONE_TOKEN_ROWS,
        ],
    )
    .await;
    assert_eq!(greedy_texts(&mut upstream, &device.requests).await, on_host);

    // All at once on two slots: each slot's chain serves task after task.
    let mut sent = Vec::new();
    for round in 0..2 {
        for (index, prompt) in PROMPTS.iter().enumerate() {
            let id = upstream
                .send(
                    &device.requests,
                    &json!({"prompt": prompt, "max_tokens": 20}),
                )
                .await;
            sent.push((round, index, id));
        }
    }
    for (round, index, id) in sent {
        let reply = upstream.reply(&id).await;
        assert_eq!(
            ok_text(&reply),
            on_host[index],
            "round {round}, prompt {index}"
        );
    }
    let log = worker.log();
    assert_eq!(
        admitted(&log, true),
        9,
        "every task chosen on the device:\n{log}"
    );
    assert_eq!(admitted(&log, false), 0);
}

/// How many tasks the worker's log shows admitted with their tokens chosen on the device
/// (`on_device`) or on the host.
fn admitted(log: &str, on_device: bool) -> usize {
    let mark = format!("on_device={on_device}");
    log.lines()
        .filter(|line| line.contains("task admitted") && line.contains(&mark))
        .count()
}

#[tokio::test]
async fn a_seed_drawn_on_the_device_repeats_its_text_and_other_seeds_differ() {
    let crate::common::Serving {
        mut upstream,
        worker,
        names,
    } = crate::common::serving(
        "devseed",
        &[("WARREN__ENGINE__DEVICE_SAMPLING", "on"), TWO_SLOTS],
    )
    .await;
    let drawn = |seed: Option<u64>| {
        let mut task = json!({"prompt": PROMPTS[1], "max_tokens": 24, "temperature": 1.0,
            "top_k": 40, "top_p": 0.95});
        if let Some(seed) = seed {
            task["seed"] = json!(seed);
        }
        task
    };
    let first = ok_text(&upstream.request(&names.requests, &drawn(Some(7))).await);
    // Unseeded tasks in between: the slot's chain takes a fresh random seed for each.
    let unseeded_a = ok_text(&upstream.request(&names.requests, &drawn(None)).await);
    let unseeded_b = ok_text(&upstream.request(&names.requests, &drawn(None)).await);
    let again = ok_text(&upstream.request(&names.requests, &drawn(Some(7))).await);
    let again_reused = ok_text(&upstream.request(&names.requests, &drawn(Some(7))).await);
    assert_eq!(again, first, "seed 7 draws the same text on a new chain");
    assert_eq!(again_reused, first, "and on the slot's reused chain");
    let mut differing = 0;
    for seed in [8, 9, 10] {
        if ok_text(&upstream.request(&names.requests, &drawn(Some(seed))).await) != first {
            differing += 1;
        }
    }
    assert!(
        differing >= 2,
        "other seeds draw other texts ({differing} of 3 differ)"
    );
    assert_ne!(
        unseeded_a, unseeded_b,
        "two unseeded draws of 24 tokens at temperature 1 differ"
    );
    assert_eq!(admitted(&worker.log(), true), 8, "every draw on the device");

    // A top-k the device's kernel cannot take (past llama.cpp's probe graph, past the
    // vocabulary) aborted the worker: now the host draws the first, the second is no filter.
    let wide = |top_k: u64| {
        json!({"prompt": PROMPTS[1], "max_tokens": 8, "temperature": 1.0,
        "seed": 7, "top_k": top_k})
    };
    ok_text(&upstream.request(&names.requests, &wide(200_000)).await);
    let whole = ok_text(
        &upstream
            .request(&names.requests, &wide(4_000_000_000))
            .await,
    );
    let open = ok_text(&upstream.request(&names.requests, &wide(0)).await);
    assert_eq!(whole, open, "a top-k past the vocabulary filters nothing");
    assert_eq!(admitted(&worker.log(), true), 10, "the first on the host");
}

#[tokio::test]
async fn tasks_the_device_cannot_sample_run_on_the_host_beside_those_it_can() {
    let reference = {
        let crate::common::Serving {
            mut upstream,
            worker: _worker,
            names,
        } = crate::common::serving(
            "devmixref",
            &[
                ("WARREN__ENGINE__DEVICE_SAMPLING", "off"),
                TWO_SLOTS,
                ONE_TOKEN_ROWS,
            ],
        )
        .await;
        greedy_texts(&mut upstream, &names.requests).await
    };
    let crate::common::Serving {
        mut upstream,
        worker,
        names,
    } = crate::common::serving(
        "devmix",
        &[
            ("WARREN__ENGINE__DEVICE_SAMPLING", "on"),
            ("WARREN__RETRY__MAX_ATTEMPTS", "1"),
            TWO_SLOTS,
            ONE_TOKEN_ROWS,
        ],
    )
    .await;
    // Bounded, so that the whole object fits in `max_tokens` and the check below always runs.
    let schema = json!({"type": "object", "properties": {
        "city": {"type": "string", "maxLength": 20},
        "population": {"type": "integer", "minimum": 0, "maximum": 99_999_999}},
        "required": ["city", "population"], "additionalProperties": false});
    let constrained = json!({"prompt": "Describe Paris as JSON:", "max_tokens": 160,
        "json_schema": schema});
    let penalised = json!({"prompt": PROMPTS[2], "max_tokens": 20, "repeat_penalty": 1.3});
    for host_task in [constrained, penalised] {
        // The host-sampled task and a device-greedy one decode in the same batches.
        let host_id = upstream.send(&names.requests, &host_task).await;
        let greedy_id = upstream
            .send(
                &names.requests,
                &json!({"prompt": PROMPTS[0], "max_tokens": 20}),
            )
            .await;
        let host_reply = upstream.reply(&host_id).await;
        let text = ok_text(&host_reply);
        if host_task.get("json_schema").is_some() {
            assert_eq!(host_reply["finish_reason"], "stop", "{host_reply}");
            let value: Value = serde_json::from_str(&text).expect("the output is JSON");
            assert!(
                value["city"].is_string() && value["population"].is_i64(),
                "{value}"
            );
        }
        assert_eq!(ok_text(&upstream.reply(&greedy_id).await), reference[0]);
    }
    // A draw cut short by its timeout leaves its slot's chain as the next task needs it.
    let cut = json!({"prompt": PROMPTS[1], "max_tokens": 400, "temperature": 0.8,
        "timeout_ms": 50});
    let reply = upstream.request(&names.requests, &cut).await;
    assert_eq!(reply["error"]["code"], "timeout", "{reply}");
    // The slot that served the host is back on the device for the next greedy task.
    assert_eq!(
        greedy_texts(&mut upstream, &names.requests).await,
        reference
    );
    let log = worker.log();
    assert_eq!(
        admitted(&log, false),
        2,
        "the grammar and the penalty:\n{log}"
    );
    assert_eq!(admitted(&log, true), 6, "the greedy tasks and the draw");
}
