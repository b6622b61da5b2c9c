//! The rules of task parsing, one case per line.

use super::*;
use crate::protocol::{ErrorCode, Input, Role, MAX_LOGIT_BIAS};
use serde_json::{json, Map, Value};
use std::time::Duration;

pub(in crate::protocol) fn limits() -> Limits {
    Limits {
        default_max_tokens: 128,
        max_tokens_cap: 1024,
        default_timeout_ms: 60_000,
        timeout_cap_ms: 600_000,
        max_body_bytes: 4096,
        max_stop_sequences: 4,
        max_stop_bytes: 16,
        default_top_k: 40,
    }
}

fn parse(value: Value) -> Result<Task, TaskError> {
    parse_task(value.to_string().as_bytes(), &limits())
}

fn rejection(value: Value) -> String {
    let err = parse(value).expect_err("should be rejected");
    assert_eq!(err.code, ErrorCode::InvalidRequest);
    err.message
}

#[test]
fn a_minimal_prompt_task_gets_the_defaults() {
    let task = parse(json!({"prompt": "The capital of France is"})).unwrap();
    assert_eq!(task.input, Input::Prompt("The capital of France is".into()));
    assert_eq!(task.default_max_tokens, Some(128));
    assert_eq!(task.sampling.temperature, 0.0);
    assert_eq!(task.sampling.top_k, Some(40));
    assert_eq!(task.timeout, Duration::from_millis(60_000));
    assert!(task.stop.is_empty());
}

#[test]
fn every_optional_field_is_read() {
    let task = parse(json!({
        "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}],
        "max_tokens": 7, "temperature": 0.8, "top_p": 0.9, "top_k": 0, "min_p": 0.05,
        "repeat_penalty": 1.1, "frequency_penalty": -0.5, "presence_penalty": 2,
        "seed": 42, "stop": ["\n"], "timeout_ms": 1000,
        "deadline_ms": 1_900_000_000_000u64, "stream": false, "version": 1,
        "some_future_field": {"ignored": true}
    }))
    .unwrap();
    let Input::Messages(messages) = &task.input else {
        panic!("expected messages")
    };
    assert_eq!(messages[0].role, Role::System);
    assert_eq!(messages[1].content, "Hi");
    assert_eq!(task.max_tokens, Some(7));
    assert_eq!(task.sampling.top_k, None, "top_k 0 turns it off");
    assert_eq!(task.sampling.frequency_penalty, Some(-0.5));
    assert_eq!(task.sampling.presence_penalty, Some(2.0));
    assert_eq!(task.sampling.seed, Some(42));
    assert_eq!(task.sampling.min_p, Some(0.05));
    let top_p_zero = parse(json!({"prompt": "a", "top_p": 0})).unwrap();
    assert_eq!(
        top_p_zero.sampling.top_p,
        Some(0.0),
        "top_p 0 is OpenAI's lower bound"
    );
    assert_eq!(task.stop, vec!["\n".to_string()]);
    assert_eq!(task.deadline_ms, Some(1_900_000_000_000));
    assert!(!task.stream);
    assert!(
        parse(json!({"prompt": "a", "stream": true}))
            .unwrap()
            .stream
    );
    assert!(!task.batch_invariant, "batched unless asked");
    let alone = parse(json!({"prompt": "a", "batch_invariant": true})).unwrap();
    assert!(alone.batch_invariant);
}

#[test]
fn bad_tasks_are_rejected_with_a_message_naming_the_problem() {
    let cases: Vec<(&[u8], &str)> = vec![
        (b"not json", "not valid JSON"),
        (b"[1,2]", "must be a JSON object, not a list"),
        (b"\"prompt\"", "must be a JSON object, not a string"),
        (b"{\"prompt\": NaN}", "not valid JSON"),
        (b"{\"prompt\": \"a\"", "not valid JSON"),
        (b"\xff\xfe{}", "not valid JSON"),
    ];
    for (body, expected) in cases {
        let err = parse_task(body, &limits()).unwrap_err();
        assert_eq!(err.code, ErrorCode::InvalidRequest);
        assert!(err.message.contains(expected), "{body:?}: {}", err.message);
    }
}

#[test]
fn field_rules() {
    let cases = vec![
        (json!({}), "exactly one of"),
        (json!({"prompt": "a", "messages": []}), "not both"),
        (json!({"prompt": 5}), "`prompt` must be a string"),
        (json!({"prompt": ""}), "must not be empty"),
        (json!({"prompt": "a\u{0}b"}), "NUL"),
        (json!({"messages": "hi"}), "`messages` must be a list"),
        (json!({"messages": []}), "must not be empty"),
        (
            json!({"messages": [{"role": "robot", "content": "x"}]}),
            "messages[0].role",
        ),
        (
            json!({"messages": [{"role": "user"}]}),
            "messages[0].content` is missing",
        ),
        (
            json!({"messages": [{"role": "user", "content": 3}]}),
            "must be a string",
        ),
        (
            json!({"prompt": "a", "max_tokens": 0}),
            "`max_tokens` must be an integer from 1 to 1024",
        ),
        (json!({"prompt": "a", "max_tokens": 1025}), "`max_tokens`"),
        (json!({"prompt": "a", "max_tokens": 2.5}), "`max_tokens`"),
        (json!({"prompt": "a", "max_tokens": "10"}), "`max_tokens`"),
        (json!({"prompt": "a", "temperature": -0.1}), "`temperature`"),
        (
            json!({"prompt": "a", "top_p": -0.1}),
            "`top_p` must be a number in [0, 1], not -0.1",
        ),
        (json!({"prompt": "a", "top_p": 1.5}), "`top_p`"),
        (json!({"prompt": "a", "top_k": -1}), "`top_k`"),
        (json!({"prompt": "a", "min_p": 2}), "`min_p`"),
        (
            json!({"prompt": "a", "repeat_penalty": 0}),
            "`repeat_penalty`",
        ),
        (
            json!({"prompt": "a", "frequency_penalty": 2.5}),
            "`frequency_penalty` must be a number in [-2, 2]",
        ),
        (
            json!({"prompt": "a", "presence_penalty": "high"}),
            "`presence_penalty`",
        ),
        (
            json!({"prompt": "a", "seed": 4_294_967_295u64}),
            "`seed` must be an integer from 0 to 4294967294",
        ),
        (json!({"prompt": "a", "stop": "x"}), "`stop` must be a list"),
        (
            json!({"prompt": "a", "stop": [1]}),
            "`stop[0]` must be a string",
        ),
        (
            json!({"prompt": "a", "stop": [""]}),
            "`stop[0]` must not be empty",
        ),
        (
            json!({"prompt": "a", "stop": ["this one is far too long"]}),
            "more than the limit",
        ),
        (
            json!({"prompt": "a", "stop": ["a", "b", "c", "d", "e"]}),
            "5 entries",
        ),
        (json!({"prompt": "a", "timeout_ms": 0}), "`timeout_ms`"),
        (
            json!({"prompt": "a", "timeout_ms": 600_001}),
            "`timeout_ms`",
        ),
        (
            json!({"prompt": "a", "stream": "yes"}),
            "`stream` must be true or false",
        ),
        (
            json!({"prompt": "a", "version": 2}),
            "version 2 is not supported",
        ),
    ];
    for (value, expected) in cases {
        let message = rejection(value.clone());
        assert!(message.contains(expected), "{value}: {message}");
    }
}

#[test]
fn null_optional_fields_count_as_absent() {
    let task = parse(json!({"prompt": "a", "max_tokens": null, "stop": null})).unwrap();
    assert_eq!(task.default_max_tokens, Some(128));
}

#[test]
fn an_oversized_body_is_rejected_before_parsing() {
    let body = format!("{{\"prompt\": \"{}\"}}", "x".repeat(5000));
    let err = parse_task(body.as_bytes(), &limits()).unwrap_err();
    assert!(err.message.contains("more than the limit of 4096 bytes"));
}

#[test]
fn a_huge_value_is_not_echoed_back_in_full() {
    let message = rejection(json!({"prompt": "a", "max_tokens": "9".repeat(1000)}));
    assert!(message.len() < 200, "{message}");
}

#[test]
fn content_type_must_be_json_when_given() {
    assert!(check_content_properties(None, None).is_ok());
    assert!(check_content_properties(Some("application/json; charset=utf-8"), None).is_ok());
    assert!(check_content_properties(Some("application/vnd.warren+json"), Some("utf-8")).is_ok());
    let err = check_content_properties(Some("text/plain"), None).unwrap_err();
    assert!(err.message.contains("text/plain"));
    let err = check_content_properties(Some("application/json"), Some("gzip")).unwrap_err();
    assert!(err.message.contains("gzip"));
}

#[test]
fn logprobs_asks_for_up_to_twenty_alternatives_and_is_off_when_absent() {
    assert_eq!(parse(json!({"prompt": "x"})).unwrap().logprobs, None);
    assert_eq!(
        parse(json!({"prompt": "x", "logprobs": null}))
            .unwrap()
            .logprobs,
        None
    );
    assert_eq!(
        parse(json!({"prompt": "x", "logprobs": 0}))
            .unwrap()
            .logprobs,
        Some(0)
    );
    assert_eq!(
        parse(json!({"prompt": "x", "logprobs": 20}))
            .unwrap()
            .logprobs,
        Some(20)
    );
    for bad in [json!(21), json!(-1), json!(true), json!("3"), json!(1.5)] {
        let message = rejection(json!({"prompt": "x", "logprobs": bad}));
        assert!(message.contains("`logprobs`"), "{message}");
    }
}

#[test]
fn logit_bias_maps_token_ids_to_biases_within_a_hundred() {
    let task = parse(json!({"prompt": "x", "logit_bias": {"50": -100, "7": 2.5}})).unwrap();
    assert_eq!(task.sampling.logit_bias, vec![(7, 2.5), (50, -100.0)]);
    assert!(parse(json!({"prompt": "x"}))
        .unwrap()
        .sampling
        .logit_bias
        .is_empty());
    for (bad, fragment) in [
        (json!([1, 2]), "must be an object"),
        (json!({"abc": 1}), "token ids"),
        (json!({"-1": 1}), "token ids"),
        (json!({"4294967295": 1}), "token ids"),
        (json!({"3": 101}), "`logit_bias[3]`"),
        (json!({"3": "1"}), "`logit_bias[3]`"),
        (json!({"3": 1, "03": 1}), "twice"),
    ] {
        let message = rejection(json!({"prompt": "x", "logit_bias": bad}));
        assert!(message.contains(fragment), "{message}");
    }
    let too_many: Map<String, Value> = (0..=MAX_LOGIT_BIAS)
        .map(|id| (id.to_string(), json!(1)))
        .collect();
    let body = json!({"prompt": "x", "logit_bias": too_many}).to_string();
    let roomy = Limits {
        max_body_bytes: 1 << 20,
        ..limits()
    };
    let err = parse_task(body.as_bytes(), &roomy).expect_err("too many");
    assert!(err.message.contains("limit of 1024"), "{}", err.message);
}

#[test]
fn a_conversation_with_calls_and_results_is_read_and_checked() {
    let tool = json!({"type": "function", "function": {"name": "get_weather",
        "parameters": {"type": "object"}}});
    let call = json!({"id": "call_1", "type": "function",
        "function": {"name": "get_weather", "arguments": "{}"}});
    let task = parse(json!({
        "messages": [
            {"role": "user", "content": "Weather?"},
            {"role": "assistant", "content": null, "tool_calls": [call]},
            {"role": "tool", "tool_call_id": "call_1", "content": "sunny"}],
        "tools": [tool], "tool_choice": "required", "parallel_tool_calls": false
    }))
    .unwrap();
    let Input::Messages(messages) = &task.input else {
        panic!("expected messages")
    };
    assert_eq!(messages[1].content, "");
    assert_eq!(messages[1].tool_calls[0].function.name, "get_weather");
    assert_eq!(messages[2].tool_call_id.as_deref(), Some("call_1"));
    assert_eq!(task.tool_choice, crate::protocol::ToolChoice::Required);
    assert!(!task.parallel_tool_calls);

    // A message dumped whole by an SDK: `null` fields count as absent.
    let dumped = parse(json!({"messages": [
        {"role": "user", "content": "Hi", "tool_calls": null, "tool_call_id": null}]}))
    .unwrap();
    let Input::Messages(messages) = &dumped.input else {
        panic!("expected messages")
    };
    assert!(messages[0].tool_calls.is_empty());

    let user = json!({"role": "user", "content": "x"});
    for (body, says) in [
        (
            json!({"messages": [{"role": "tool", "content": "x"}]}),
            "`messages[0].tool_call_id` is missing",
        ),
        (
            json!({"messages": [{"role": "user", "content": "x", "tool_call_id": "c"}]}),
            "tool messages only",
        ),
        (
            json!({"messages": [{"role": "user", "content": "x", "tool_calls": [call]}]}),
            "assistant messages only",
        ),
        (
            json!({"messages": [{"role": "assistant", "tool_calls": [call]}]}),
            "`messages[0].content` is missing",
        ),
        (
            json!({"prompt": "x", "tools": [tool]}),
            "`tools` needs `messages`",
        ),
        (
            json!({"prompt": "x", "tools": [tool], "tool_choice": "none"}),
            "`tools` needs `messages`",
        ),
        (
            json!({"messages": [user], "tools": [tool], "grammar": "root ::= \"a\""}),
            "cannot be combined",
        ),
        (
            json!({"messages": [user], "tools": [tool], "logprobs": 2}),
            "cannot be combined",
        ),
        (
            json!({"messages": [user], "tools": [tool], "json_schema": {"type": "array"}}),
            "must describe an object",
        ),
    ] {
        let message = rejection(body.clone());
        assert!(message.contains(says), "{body}: {message}");
    }
    // Without a call to make, the combinations are fine.
    parse(json!({"messages": [user], "tools": [tool], "tool_choice": "none", "logprobs": 2}))
        .unwrap();
    // An answer format beside tools is an object the model may answer with, or moot when a
    // call is forced.
    let object = json!({"type": "object"});
    for choice in [json!("auto"), json!("required")] {
        parse(
            json!({"messages": [user], "tools": [tool], "tool_choice": choice,
                     "json_schema": object}),
        )
        .unwrap();
    }
    parse(
        json!({"messages": [user], "tools": [tool], "tool_choice": "required",
                 "json_schema": {"type": "array"}}),
    )
    .unwrap();
}

#[test]
fn without_a_default_or_cap_an_omitted_max_tokens_means_until_the_context_is_full() {
    let open = Limits {
        default_max_tokens: 0,
        max_tokens_cap: 0,
        ..limits()
    };
    let read = |body: Value, limits: &Limits| parse_task(body.to_string().as_bytes(), limits);
    assert_eq!(
        read(json!({"prompt": "x"}), &open).unwrap().max_tokens,
        None
    );
    let big = json!({"prompt": "x", "max_tokens": 100_000});
    assert_eq!(read(big.clone(), &open).unwrap().max_tokens, Some(100_000));
    // An operator's cap still bounds both: an omitted value takes it as its default (which
    // the engine cuts to what the context holds, where an asked value is refused).
    let capped = Limits {
        max_tokens_cap: 512,
        ..open
    };
    let omitted = read(json!({"prompt": "x"}), &capped).unwrap();
    assert_eq!(
        (omitted.max_tokens, omitted.default_max_tokens),
        (None, Some(512))
    );
    assert!(read(big, &capped).is_err());
}
