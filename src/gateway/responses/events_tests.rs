use serde_json::json;

use super::*;
use crate::protocol::{FinishReason, FunctionDelta, FunctionKind, Timings, ToolCall, Usage};

fn reply(text: &str, calls: Vec<ToolCall>, finish: FinishReason) -> Reply {
    Reply {
        version: 1,
        id: Some("resp_1".into()),
        status: ReplyStatus::Ok,
        text: Some(text.into()),
        finish_reason: Some(finish),
        usage: Some(Usage {
            prompt_tokens: 3,
            cached_prompt_tokens: 0,
            completion_tokens: 5,
        }),
        timings_ms: Timings::default(),
        model: "m".into(),
        attempt: 1,
        logprobs: None,
        tool_calls: (!calls.is_empty()).then_some(calls),
        embeddings: None,
        error: None,
    }
}

fn events() -> Events {
    Events::new(json!({"id": "resp_1", "object": "response", "status": "queued", "output": []}))
}

fn kinds(events: &[Value]) -> Vec<&str> {
    events
        .iter()
        .map(|e| e["type"].as_str().unwrap_or("?"))
        .collect()
}

#[test]
fn text_streams_as_one_message_and_the_sequence_numbers_count_from_zero() {
    let mut stream = events();
    let mut all = stream.opening();
    all.extend(stream.text("Par", &[]));
    all.extend(stream.text("is", &[]));
    all.extend(stream.finish(&reply("Paris.", vec![], FinishReason::Stop)));
    assert_eq!(
        kinds(&all),
        [
            "response.created",
            "response.in_progress",
            "response.output_item.added",
            "response.content_part.added",
            "response.output_text.delta",
            "response.output_text.delta",
            "response.output_text.delta",
            "response.output_text.done",
            "response.content_part.done",
            "response.output_item.done",
            "response.completed",
        ]
    );
    let numbers: Vec<u64> = all
        .iter()
        .filter_map(|e| e["sequence_number"].as_u64())
        .collect();
    assert_eq!(numbers, (0..all.len() as u64).collect::<Vec<_>>());
    assert_eq!(all[7]["text"], "Paris.");
    assert_eq!(all[10]["response"]["output"][0]["id"], all[2]["item"]["id"]);
}

#[test]
fn each_delta_carries_the_log_probabilities_of_its_tokens_and_the_end_the_rest() {
    let token = |text: &str| crate::protocol::TokenLogprob {
        token: text.into(),
        bytes: text.as_bytes().to_vec(),
        logprob: -0.5,
        top_logprobs: Vec::new(),
    };
    let tokens = vec![token("Par"), token("is"), token(".")];
    let mut stream = events();
    let first = stream.text("Par", &tokens[..1]);
    let delta = first.last().unwrap();
    assert_eq!(delta["type"], "response.output_text.delta");
    assert_eq!(delta["logprobs"][0]["token"], "Par");
    let mut answer = reply("Paris.", vec![], FinishReason::Stop);
    answer.logprobs = Some(tokens);
    let end = stream.finish(&answer);
    let rest = end
        .iter()
        .find(|e| e["type"] == "response.output_text.delta")
        .expect("the rest of the text");
    assert_eq!(rest["delta"], "is.");
    let sent: Vec<_> = rest["logprobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["token"].as_str().unwrap())
        .collect();
    assert_eq!(sent, ["is", "."], "the entries the chunks did not carry");
    let done = end
        .iter()
        .find(|e| e["type"] == "response.output_text.done")
        .expect("the text's end");
    assert_eq!(done["logprobs"].as_array().map(Vec::len), Some(3));
}

#[test]
fn text_before_a_call_is_sent_once_and_the_call_follows_it() {
    let mut stream = events();
    let mut all = stream.text("Let me look.", &[]);
    all.extend(stream.calls(&[ToolCallDelta {
        index: 0,
        id: Some("call_1".into()),
        kind: Some(FunctionKind::Function),
        function: FunctionDelta {
            name: Some("f".into()),
            arguments: "{\"a\":".into(),
        },
    }]));
    let call = ToolCall {
        id: "call_1".into(),
        kind: FunctionKind::Function,
        function: crate::protocol::FunctionCall {
            name: "f".into(),
            arguments: "{\"a\": 1}".into(),
        },
    };
    all.extend(stream.finish(&reply("Let me look.", vec![call], FinishReason::ToolCalls)));
    let text: String = all
        .iter()
        .filter(|e| e["type"] == "response.output_text.delta")
        .filter_map(|e| e["delta"].as_str())
        .collect();
    assert_eq!(text, "Let me look.");
    let added: Vec<_> = all
        .iter()
        .filter(|e| e["type"] == "response.output_item.added")
        .map(|e| (e["output_index"].as_u64(), e["item"]["type"].clone()))
        .collect();
    assert_eq!(
        added,
        [
            (Some(0), json!("message")),
            (Some(1), json!("function_call"))
        ]
    );
    let done = all.last().unwrap();
    assert_eq!(done["type"], "response.completed");
    assert_eq!(done["response"]["output"][1]["call_id"], "call_1");
    let arguments = all
        .iter()
        .find(|e| e["type"] == "response.function_call_arguments.done")
        .map(|e| e["arguments"].clone());
    assert_eq!(arguments, Some(json!("{\"a\": 1}")));
}

#[test]
fn a_message_cut_short_by_its_token_limit_is_done_incomplete_as_in_the_object() {
    let mut stream = events();
    stream.opening();
    stream.text("Par", &[]);
    let end = stream.finish(&reply("Par", vec![], FinishReason::Length));
    let done: Vec<_> = (end.iter())
        .filter(|e| e["type"] == "response.output_item.done")
        .collect();
    assert_eq!(done[0]["item"]["status"], "incomplete");
    let last = end.last().expect("a final event");
    assert_eq!(last["type"], "response.incomplete");
    assert_eq!(last["response"]["output"][0]["status"], "incomplete");
}

#[test]
fn streamed_arguments_the_reply_does_not_continue_end_the_stream_with_an_error() {
    let mut stream = events();
    stream.calls(&[ToolCallDelta {
        index: 0,
        id: Some("call_1".into()),
        kind: Some(FunctionKind::Function),
        function: FunctionDelta {
            name: Some("f".into()),
            arguments: "{\"b\":".into(),
        },
    }]);
    let call = ToolCall::new("f".into(), "{\"a\": 1}".into());
    let end = stream.finish(&reply("", vec![call], FinishReason::ToolCalls));
    assert_eq!(kinds(&end), ["error"]);
    assert_eq!(end[0]["code"], "internal");
}
