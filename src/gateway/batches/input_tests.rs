use super::*;
use crate::config::Settings;

fn parse(text: &str, endpoint: &str, max: usize) -> Result<Vec<Line>, Vec<FileProblem>> {
    let settings = Settings::defaults();
    parse_input(text.as_bytes(), endpoint, max, &settings.task_limits())
}

fn chat_line(custom_id: &str, body: &str) -> String {
    format!(
        r#"{{"custom_id": "{custom_id}", "method": "POST", "url": "/v1/chat/completions", "body": {body}}}"#
    )
}

const HELLO: &str =
    r#"{"model": "m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 8}"#;

#[test]
fn each_line_becomes_a_task_or_its_refusal() {
    let text = [
        chat_line("a", HELLO),
        String::new(),
        chat_line("b", r#"{"model": "m", "messages": [], "max_tokens": 8}"#),
        chat_line(
            "c",
            r#"{"model": "m", "messages": [{"role": "user", "content": "x"}], "stream": true}"#,
        ),
    ]
    .join("\n");
    let lines = parse(&text, "/v1/chat/completions", 10).expect("the file is well formed");
    assert_eq!(lines.len(), 3, "the blank line is skipped");
    assert_eq!(lines[0].custom_id, "a");
    assert_eq!(
        lines[0].task.as_ref().map(|t| t.model.as_str()).ok(),
        Some("m")
    );
    assert_eq!(lines[1].task.as_ref().unwrap_err().status.as_u16(), 400);
    assert_eq!(
        lines[2].task.as_ref().unwrap_err().param.as_deref(),
        Some("stream")
    );
}

#[test]
fn a_responses_line_keeps_its_object_and_what_needs_a_kept_response_is_refused() {
    let line = |id: &str, extra: &str| {
        format!(
            r#"{{"custom_id": "{id}", "method": "POST", "url": "/v1/responses", "body": {{"model": "m", "input": "hi"{extra}}}}}"#
        )
    };
    let text = [
        line("ok", r#", "max_output_tokens": 4, "store": false"#),
        line("stream", r#", "stream": true"#),
        line("background", r#", "background": true"#),
        line("previous", r#", "previous_response_id": "resp_1""#),
        line("store", r#", "store": true"#),
        line(
            "hook",
            r#", "metadata": {"callback_url": "https://example.com/h"}"#,
        ),
    ]
    .join("\n");
    let lines = parse(&text, "/v1/responses", 10).expect("the file is well formed");
    let Ok(LineTask {
        kind: LineKind::Response(created),
        ..
    }) = &lines[0].task
    else {
        panic!("a response line: {:?}", lines[0].task);
    };
    assert_eq!(created["object"], "response");
    assert_eq!(created["max_output_tokens"], 4);
    let refused: Vec<_> = lines[1..]
        .iter()
        .map(|line| {
            line.task
                .as_ref()
                .unwrap_err()
                .param
                .as_deref()
                .unwrap_or("")
        })
        .collect();
    let expected = [
        "stream",
        "background",
        "previous_response_id",
        "store",
        "metadata",
    ];
    assert_eq!(refused, expected);
}

#[test]
fn a_malformed_file_fails_the_batch_naming_each_line() {
    let text = [
        chat_line("a", HELLO),
        "not json".to_owned(),
        chat_line("a", HELLO),
        r#"{"custom_id": "d", "method": "GET", "url": "/v1/completions", "body": {}}"#.to_owned(),
    ]
    .join("\n");
    let problems = parse(&text, "/v1/chat/completions", 10).unwrap_err();
    let found: Vec<(&str, Option<usize>)> = problems.iter().map(|p| (p.code, p.line)).collect();
    assert_eq!(
        found,
        vec![
            ("invalid_json_line", Some(2)),
            ("duplicate_custom_id", Some(3)),
            ("invalid_method", Some(4)),
            ("mismatched_url", Some(4)),
        ]
    );
    assert_eq!(
        parse("\n\n", "/v1/chat/completions", 10).unwrap_err()[0].code,
        "empty_file"
    );
    let three = [
        chat_line("a", HELLO),
        chat_line("b", HELLO),
        chat_line("c", HELLO),
    ]
    .join("\n");
    assert_eq!(
        parse(&three, "/v1/chat/completions", 2).unwrap_err()[0].code,
        "too_many_requests"
    );
    let binary = parse_input(
        &[0xff, 0xfe],
        "/v1/chat/completions",
        2,
        &Settings::defaults().task_limits(),
    );
    assert_eq!(binary.unwrap_err()[0].code, "invalid_file");
}

#[test]
fn a_line_over_todays_limits_keeps_its_shape_under_no_limits() {
    // Published under one gateway's limits, written by another's that would refuse it: the
    // answer's line still needs its response object and its encoding.
    let mut strict = Settings::defaults().task_limits();
    strict.max_tokens_cap = 8;
    let text = [
        r#"{"custom_id": "r", "method": "POST", "url": "/v1/responses", "body": {"model": "m", "input": "hi", "max_output_tokens": 64}}"#,
    ]
    .join("\n");
    let refused = parse_input(text.as_bytes(), "/v1/responses", 10, &strict);
    let refused = refused.expect("the file is well formed");
    assert_eq!(
        refused[0].task.as_ref().err().map(|e| e.status.as_u16()),
        Some(400)
    );
    let loose = parse_input(text.as_bytes(), "/v1/responses", 10, &no_limits());
    let task = loose.expect("the file is well formed")[0].task.clone();
    let task = task.expect("no limit refuses it");
    assert_eq!(task.model, "m");
    let LineKind::Response(created) = task.kind else {
        panic!("a response line: {:?}", task.kind);
    };
    assert_eq!(created["max_output_tokens"], 64);

    let mut strict = Settings::defaults().task_limits();
    strict.max_body_bytes = 16;
    let text = r#"{"custom_id": "e", "method": "POST", "url": "/v1/embeddings", "body": {"model": "m", "input": "a long enough text", "encoding_format": "base64"}}"#;
    let refused = parse_input(text.as_bytes(), "/v1/embeddings", 10, &strict);
    assert!(refused.expect("the file is well formed")[0].task.is_err());
    let loose = parse_input(text.as_bytes(), "/v1/embeddings", 10, &no_limits());
    let kind = loose.expect("the file is well formed")[0]
        .task
        .clone()
        .map(|t| t.kind);
    assert_eq!(kind.ok(), Some(LineKind::Embedding(Encoding::Base64)));
}
