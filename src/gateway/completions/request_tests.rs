//! How OpenAI's request shapes become tasks, and the 400s for those that cannot.

use super::*;
use serde_json::json;

#[test]
fn a_chat_request_becomes_a_task_with_messages() {
    let body = json!({
        "model": "m", "messages": [
            {"role": "developer", "content": "Be brief."},
            {"role": "user", "content": [{"type": "text", "text": "Hi "}, {"type": "text", "text": "there"}]}
        ],
        "max_completion_tokens": 9, "max_tokens": 100, "stop": "\n", "seed": 3,
        "stream": true, "stream_options": {"include_usage": true}, "user": "u1", "n": 1
    });
    let request = parse_request(Kind::Chat, body.to_string().as_bytes()).unwrap();
    let messages = request.task.messages.clone().unwrap();
    assert_eq!(messages[0].role, crate::protocol::Role::System);
    assert_eq!(messages[1].content, "Hi there");
    assert_eq!(
        request.task.max_tokens,
        Some(9),
        "max_completion_tokens wins"
    );
    assert_eq!(request.task.stop, Some(vec!["\n".to_owned()]));
    assert_eq!(request.task.stream, Some(true));
    assert!(request.stream && request.include_usage);
    assert_eq!(request.model, "m");
}

#[test]
fn a_completion_request_becomes_a_task_with_a_prompt() {
    let body = json!({"model": "m", "prompt": "Once", "stop": ["a", "b"], "temperature": 0.5,
        "frequency_penalty": 0.25, "presence_penalty": -1});
    let request = parse_request(Kind::Completion, body.to_string().as_bytes()).unwrap();
    assert_eq!(request.task.prompt.as_deref(), Some("Once"));
    assert_eq!(request.task.temperature, Some(0.5));
    assert_eq!(
        (
            request.task.frequency_penalty,
            request.task.presence_penalty
        ),
        (Some(0.25), Some(-1.0))
    );
    assert_eq!(
        (
            request.task.top_k,
            request.task.min_p,
            request.task.repeat_penalty
        ),
        (None, None, None)
    );
    assert_eq!(request.task.stream, None);
    assert_eq!(request.prompt_chars, 4);
}

#[test]
fn the_tools_offered_count_toward_the_prompts_size() {
    let ask = |tools: Option<Value>| {
        let mut body = json!({"model": "m", "messages": [{"role": "user", "content": "Hi"}]});
        if let Some(tools) = tools {
            body["tools"] = tools;
        }
        parse_request(Kind::Chat, body.to_string().as_bytes()).unwrap()
    };
    let tools = json!([{"type": "function", "function": {"name": "get_weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}]);
    let bare = ask(None).prompt_chars;
    let offered: Vec<crate::protocol::Tool> = serde_json::from_value(tools.clone()).unwrap();
    assert_eq!(
        ask(Some(tools)).prompt_chars,
        bare + crate::protocol::tools::counted_len(&offered)
    );
}

#[test]
fn llama_servers_sampling_extensions_reach_the_task() {
    let body = json!({"model": "m", "prompt": "x", "temperature": 0.8, "top_k": 5,
        "min_p": 0.1, "repeat_penalty": 1.2});
    let request = parse_request(Kind::Completion, body.to_string().as_bytes()).unwrap();
    assert_eq!(
        (
            request.task.top_k,
            request.task.min_p,
            request.task.repeat_penalty
        ),
        (Some(5), Some(0.1), Some(1.2))
    );
    let task: serde_json::Value = serde_json::from_slice(&request.task.to_bytes()).unwrap();
    assert_eq!(
        (&task["top_k"], &task["min_p"], &task["repeat_penalty"]),
        (&json!(5), &json!(0.1), &json!(1.2)),
        "named as the wire contract names them"
    );
    let body = json!({"model": "m", "prompt": "x", "top_k": "many"});
    let refused = parse_request(Kind::Completion, body.to_string().as_bytes()).unwrap_err();
    assert_eq!(refused.param.as_deref(), Some("top_k"));
}

#[test]
fn batch_invariance_is_an_extension_that_reaches_the_task() {
    let body = json!({"model": "m", "messages": [{"role": "user", "content": "x"}],
        "seed": 7, "batch_invariant": true});
    let request = parse_request(Kind::Chat, body.to_string().as_bytes()).unwrap();
    let task: serde_json::Value = serde_json::from_slice(&request.task.to_bytes()).unwrap();
    assert_eq!(task["batch_invariant"], json!(true));
    let plain = json!({"model": "m", "prompt": "x"});
    let request = parse_request(Kind::Completion, plain.to_string().as_bytes()).unwrap();
    assert_eq!(request.task.batch_invariant, None, "absent unless asked");
    let body = json!({"model": "m", "prompt": "x", "batch_invariant": "yes"});
    let refused = parse_request(Kind::Completion, body.to_string().as_bytes()).unwrap_err();
    assert_eq!(refused.param.as_deref(), Some("batch_invariant"));
}

#[test]
fn a_response_format_or_a_grammar_constrains_the_task() {
    let schema = json!({"type": "object", "properties": {"a": {"type": "integer"}}});
    let body = json!({"model": "m", "messages": [{"role": "user", "content": "x"}],
        "response_format": {"type": "json_schema", "json_schema": {"name": "n", "schema": schema}}});
    let request = parse_request(Kind::Chat, body.to_string().as_bytes()).unwrap();
    assert_eq!(request.task.json_schema, Some(schema));
    let body = json!({"model": "m", "prompt": "x", "grammar": "root ::= \"a\""});
    let request = parse_request(Kind::Completion, body.to_string().as_bytes()).unwrap();
    assert_eq!(request.task.grammar.as_deref(), Some("root ::= \"a\""));
    assert_eq!(request.task.json_schema, None);
}

#[test]
fn requests_the_gateway_cannot_serve_are_rejected_naming_the_field() {
    let cases = [
        (Kind::Chat, json!({"model": "m"}), "messages"),
        (Kind::Chat, json!({"messages": []}), "model"),
        (
            Kind::Chat,
            json!({"model": "m", "messages": [], "n": 2}),
            "n",
        ),
        (
            Kind::Chat,
            json!({"model": "m", "messages": [{"role": "function", "content": "x"}]}),
            "role",
        ),
        (
            Kind::Chat,
            json!({"model": "m", "messages": [{"role": "user", "content": [{"type": "image_url"}]}]}),
            "image_url",
        ),
        (
            Kind::Completion,
            json!({"model": "m", "prompt": [1, 2]}),
            "prompt",
        ),
        (
            Kind::Completion,
            json!({"model": "m", "prompt": "a", "max_tokens": "many"}),
            "max_tokens",
        ),
        (Kind::Completion, json!([1]), "valid"),
        (
            Kind::Chat,
            json!({"model": "m", "messages": [], "response_format": {"type": "xml"}}),
            "response_format",
        ),
        (
            Kind::Completion,
            json!({"model": "m", "prompt": "a", "grammar": "root ::= \"a\"",
                "response_format": {"type": "json_object"}}),
            "grammar",
        ),
    ];
    for (kind, body, expected) in cases {
        let err = parse_request(kind, body.to_string().as_bytes()).unwrap_err();
        assert_eq!(err.status.as_u16(), 400, "{body}");
        assert!(err.message.contains(expected), "{body}: {}", err.message);
    }
}

#[test]
fn nested_fields_openai_does_not_define_are_refused_by_their_path() {
    let tool = |extra: Value| {
        let mut function = json!({"name": "f", "parameters": {"type": "object"}});
        let mut tool = json!({"type": "function"});
        for (key, value) in extra.as_object().cloned().unwrap_or_default() {
            match key.strip_prefix("function.") {
                Some(inner) => function[inner] = value,
                None => tool[key] = value,
            }
        }
        tool["function"] = function;
        tool
    };
    let chat = |fields: Value| {
        let mut body = json!({"model": "m", "messages": [{"role": "user", "content": "Hi"}]});
        for (key, value) in fields.as_object().cloned().unwrap_or_default() {
            body[key] = value;
        }
        parse_request(Kind::Chat, body.to_string().as_bytes())
    };
    for (fields, param) in [
        (
            json!({"tools": [tool(json!({"function.examples": ["x"]}))]}),
            "tools[0].function.examples",
        ),
        (
            json!({"tools": [tool(json!({"cache_control": {}}))]}),
            "tools[0].cache_control",
        ),
        (
            json!({"stream": true, "stream_options": {"include_obfuscation": true}}),
            "stream_options.include_obfuscation",
        ),
        (
            json!({"stream": true, "stream_options": {"chunk_size": 4}}),
            "stream_options.chunk_size",
        ),
    ] {
        let err = chat(fields.clone()).unwrap_err();
        assert_eq!(
            err.param.as_deref(),
            Some(param),
            "{fields}: {}",
            err.message
        );
        assert!(err.message.contains("is not supported"), "{}", err.message);
    }
    // A format's fields are OpenAI's: a schema beside `json_object` is not dropped unseen.
    for (fields, param, named) in [
        (
            json!({"response_format": {"type": "json_object", "schema": {"type": "object"}}}),
            "response_format",
            "`schema`",
        ),
        (
            json!({"response_format": {"type": "json_schema",
                   "json_schema": {"name": "n", "schema": {}, "examples": []}}}),
            // serde reads a tagged enum's content whole: the path stops at the format.
            "response_format",
            "`examples`",
        ),
    ] {
        let err = chat(fields.clone()).unwrap_err();
        assert_eq!(err.param.as_deref(), Some(param), "{}", err.message);
        assert!(err.message.contains(named), "{}", err.message);
    }
    // A text part is `type` and `text`; another type is refused for its type.
    let part = |part: Value| chat(json!({"messages": [{"role": "user", "content": [part]}]}));
    let cached =
        part(json!({"type": "text", "text": "Hi", "cache_control": {"type": "ephemeral"}}));
    let cached = cached.unwrap_err();
    assert_eq!(
        cached.param.as_deref(),
        Some("messages[0].content[0].cache_control")
    );
    let image = part(json!({"type": "image_url", "image_url": {"url": "https://x/y.png"}}));
    assert!(image.unwrap_err().message.contains("only text parts"));
    let earlier = json!({"type": "output_text", "text": "Hi", "annotations": [], "logprobs": []});
    assert!(chat(json!({"messages": [{"role": "assistant", "content": [earlier]}]})).is_ok());
    // An assistant message as OpenAI's own answer holds it passes; real annotations do not.
    let answered =
        json!({"role": "assistant", "content": "Hi", "refusal": null, "annotations": []});
    assert!(chat(json!({"messages": [answered]})).is_ok());
    let cited =
        json!({"role": "assistant", "content": "Hi", "annotations": [{"type": "url_citation"}]});
    let cited = chat(json!({"messages": [cited]})).unwrap_err();
    assert_eq!(cited.param.as_deref(), Some("messages[0].annotations"));
    // What OpenAI's shapes hold, and `null` or the default for the rest, pass.
    let full = tool(json!({"function.description": "d", "function.strict": true}));
    assert!(chat(json!({"tools": [full], "tool_choice": "auto"})).is_ok());
    assert!(chat(json!({"tools": [tool(json!({"function.examples": null}))]})).is_ok());
    // A tool of another type is refused for its type, not for its fields.
    let custom = chat(json!({"tools": [{"type": "custom", "custom": {"name": "x"}}]})).unwrap_err();
    assert!(
        !custom.message.contains("tools[0].custom"),
        "{}",
        custom.message
    );
    let options = json!({"include_usage": true, "include_obfuscation": false});
    assert!(chat(json!({"stream": true, "stream_options": options})).is_ok());
}
