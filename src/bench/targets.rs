//! The four targets `warren bench` can drive, each measured the same way by [`super::drive`]:
//! warren through RabbitMQ (with the broker floor probe), the engine alone in this process,
//! a llama-server over HTTP, and a warren gateway over HTTP.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::{drive, floor, task_body, Load, Sample};
use crate::broker::{self, Topology};
use crate::client::{Answer, Client, ClientError};
use crate::config::Settings;
use crate::engine::{Engine, GenerationRequest};
use crate::protocol::{
    ChatMessage, Input, OutputConstraint, ReplyStatus, Role, Sampling, Task, ToolChoice,
};

/// Sends the load to a warren deployment through RabbitMQ, with the broker floor probe
/// running alongside; returns the samples, the wall time and the probe's round trips.
pub(crate) async fn against_warren(
    settings: &Settings,
    load: &Load,
) -> anyhow::Result<(Vec<Sample>, Duration, Vec<Duration>)> {
    let name = broker::process_name("warren-bench");
    let topology = Topology::new(settings);
    let client =
        Arc::new(Client::connect(&settings.broker.url, &name, topology.client_route()).await?);
    topology.declare(client.connection()).await?;
    let probe = floor::FloorProbe::start(settings, &name).await?;
    let load_for_tasks = load.clone();
    let task_client = client.clone();
    let (samples, wall) = drive(load, move |index| {
        let client = task_client.clone();
        let body = task_body(&load_for_tasks, index);
        let load_for_model = load_for_tasks.expect_model.clone();
        async move {
            let id = uuid::Uuid::new_v4().to_string();
            let sent = Instant::now();
            let pending = match client.submit(&id, &body).await {
                Ok(pending) => pending,
                Err(ClientError::QueueFull(_)) => return Sample::refusal(sent.elapsed()),
                Err(_) => return Sample::default(),
            };
            let Ok(Answer {
                reply,
                arrived,
                worker_time,
            }) = pending.reply().await
            else {
                return Sample::default();
            };
            let latency = arrived - sent;
            let unexpected = (load_for_model.as_deref()).is_some_and(|m| reply.model != m);
            if reply.status != ReplyStatus::Ok || unexpected {
                return Sample {
                    latency,
                    ..Sample::default()
                };
            }
            let t = reply.timings_ms;
            let generation = Duration::from_millis(t.generation);
            // A worker older than the header only reports whole milliseconds.
            let worker_time = worker_time.unwrap_or(Duration::from_millis(t.total));
            Sample {
                ok: true,
                refused: false,
                latency,
                time_to_first_token: latency.saturating_sub(generation),
                queue_wait: Duration::from_millis(t.queued),
                overhead: Some(latency.saturating_sub(worker_time)),
                completion_tokens: reply.usage.map_or(0, |u| u.completion_tokens),
                prompt_read: reply.usage.map_or(0, |u| {
                    u.prompt_tokens.saturating_sub(u.cached_prompt_tokens)
                }),
            }
        }
    })
    .await;
    let broker_floor = probe.finish().await;
    client.close().await;
    Ok((samples, wall, broker_floor))
}

/// Sends the load to an engine in this process (no broker).
pub(crate) async fn against_engine(engine: Arc<Engine>, load: &Load) -> (Vec<Sample>, Duration) {
    let load_for_tasks = load.clone();
    drive(load, move |index| {
        let engine = engine.clone();
        let prompt = load_for_tasks.prompts[index % load_for_tasks.prompts.len()].clone();
        // The tool-calling workload: a chat turn that must call the bench's function.
        let (input, tools, tool_choice) = match &load_for_tasks.tool_schema {
            Some(parameters) => (
                Input::Messages(vec![ChatMessage::new(Role::User, prompt)]),
                vec![super::bench_tool(parameters)],
                ToolChoice::Function(super::BENCH_TOOL.to_owned()),
            ),
            None => (Input::Prompt(prompt), Vec::new(), ToolChoice::None),
        };
        let task = Task {
            tools,
            tool_choice,
            parallel_tool_calls: false,
            input,
            max_tokens: Some(load_for_tasks.max_tokens_of(index)),
            default_max_tokens: None,
            sampling: Sampling {
                temperature: load_for_tasks.temperature,
                top_p: load_for_tasks.top_p,
                top_k: (load_for_tasks.temperature > 0.0).then_some(load_for_tasks.top_k),
                min_p: None,
                repeat_penalty: None,
                frequency_penalty: None,
                presence_penalty: None,
                seed: Some(index as u32),
                logit_bias: Vec::new(),
            },
            stop: Vec::new(),
            constraint: load_for_tasks
                .json_schema
                .clone()
                .map(OutputConstraint::JsonSchema),
            timeout: Duration::from_secs(600),
            deadline_ms: None,
            stream: false,
            progress: false,
            batch_invariant: load_for_tasks.batch_invariant(index),
            logprobs: load_for_tasks.logprobs,
        };
        let request = GenerationRequest { task, stream: None };
        async move {
            let sent = Instant::now();
            match engine.generate(request).await {
                Ok(generation) => {
                    let latency = sent.elapsed();
                    Sample {
                        ok: true,
                        refused: false,
                        latency,
                        time_to_first_token: latency.saturating_sub(generation.generation_time),
                        queue_wait: generation.slot_wait,
                        overhead: None,
                        completion_tokens: generation.completion_tokens,
                        prompt_read: generation.prompt_tokens - generation.cached_prompt_tokens,
                    }
                }
                Err(_) => Sample::default(),
            }
        }
    })
    .await
}

/// Sends the load to a llama-server at `base_url` (`POST /completion`).
pub(crate) async fn against_llama_server(base_url: &str, load: &Load) -> (Vec<Sample>, Duration) {
    let url = format!("{}/completion", base_url.trim_end_matches('/'));
    let load_for_tasks = load.clone();
    drive(load, move |index| {
        let url = url.clone();
        let task = task_body(&load_for_tasks, index);
        let load_top_k = load_for_tasks.top_k;
        let cache_prompt = load_for_tasks.cache_prompt;
        async move {
            let mut body = json!({
                "prompt": task.prompt,
                "n_predict": task.max_tokens,
                "temperature": task.temperature,
                "top_k": load_top_k,
                "top_p": task.top_p.unwrap_or(1.0),
                "min_p": 0.0,
                "seed": task.seed,
                "cache_prompt": cache_prompt,
            });
            if let Some(schema) = task.json_schema {
                body["json_schema"] = schema;
            }
            if let Some(n) = task.logprobs {
                // llama-server reports the chosen token among its n_probs (at least one).
                body["n_probs"] = json!(n.max(1));
            }
            tokio::task::spawn_blocking(move || {
                let sent = Instant::now();
                let response = ureq::post(&url).send_json(&body);
                let latency = sent.elapsed();
                let Ok(mut response) = response else {
                    return Sample::default();
                };
                let Ok(reply) = response.body_mut().read_json::<Value>() else {
                    return Sample::default();
                };
                let predicted_ms = reply["timings"]["predicted_ms"].as_f64().unwrap_or(0.0);
                Sample {
                    ok: true,
                    refused: false,
                    latency,
                    time_to_first_token: latency
                        .saturating_sub(Duration::from_secs_f64(predicted_ms / 1000.0)),
                    queue_wait: Duration::ZERO,
                    overhead: None,
                    completion_tokens: reply["tokens_predicted"].as_u64().unwrap_or(0) as u32,
                    prompt_read: reply["timings"]["prompt_n"].as_u64().unwrap_or(0) as u32,
                }
            })
            .await
            .unwrap_or_default()
        }
    })
    .await
}

/// Sends the load to a warren gateway at `base_url` (`POST {base_url}/completions`, the
/// OpenAI shape) over kept-alive connections. Its path cost is the latency minus the worker's
/// own time, which the gateway passes on in the `x-warren-worker-us` response header.
pub(crate) async fn against_gateway(base_url: &str, load: &Load) -> (Vec<Sample>, Duration) {
    let url = format!("{}/completions", base_url.trim_end_matches('/'));
    let agent = ureq::Agent::new_with_defaults();
    let load_for_tasks = load.clone();
    drive(load, move |index| {
        let (url, agent) = (url.clone(), agent.clone());
        let task = task_body(&load_for_tasks, index);
        async move {
            let body = json!({
                "model": "warren-bench",
                "prompt": task.prompt,
                "max_tokens": task.max_tokens,
                "temperature": task.temperature,
                "top_p": task.top_p,
                "seed": task.seed,
                "logprobs": task.logprobs,
            });
            tokio::task::spawn_blocking(move || {
                let sent = Instant::now();
                let mut response = match agent.post(&url).send_json(&body) {
                    Ok(response) => response,
                    // A full queue's answer (a rate limit's too: the bench sends no key).
                    Err(ureq::Error::StatusCode(429)) => return Sample::refusal(sent.elapsed()),
                    Err(_) => return Sample::default(),
                };
                let reply = response.body_mut().read_json::<Value>();
                let latency = sent.elapsed();
                let worker_time = response
                    .headers()
                    .get(crate::protocol::HEADER_WORKER_MICROS)
                    .and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
                    .map(Duration::from_micros);
                let Ok(reply) = reply else {
                    return Sample::default();
                };
                let usage = &reply["usage"];
                let prompt_read = usage["prompt_tokens"].as_u64().unwrap_or(0).saturating_sub(
                    usage["prompt_tokens_details"]["cached_tokens"]
                        .as_u64()
                        .unwrap_or(0),
                ) as u32;
                Sample {
                    ok: true,
                    refused: false,
                    latency,
                    // The gateway does not report generation time: TTFT is not measured.
                    time_to_first_token: Duration::ZERO,
                    queue_wait: Duration::ZERO,
                    overhead: worker_time.map(|w| latency.saturating_sub(w)),
                    completion_tokens: reply["usage"]["completion_tokens"].as_u64().unwrap_or(0)
                        as u32,
                    prompt_read,
                }
            })
            .await
            .unwrap_or_default()
        }
    })
    .await
}
