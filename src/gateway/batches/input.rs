//! A batch's input file: its JSONL lines read, each request checked the way the gateway
//! checks a single request (a refused request is answered in the error file, as alone it
//! would be), and the problems that fail the whole batch instead (a line that is not a
//! request object, another endpoint, a repeated `custom_id`, too many requests). Pure values.

use serde::Deserialize;
use serde_json::{json, Value};

use super::object::{endpoint_kind, Endpoint};
use crate::gateway::completions::request;
use crate::gateway::embeddings::Encoding;
use crate::gateway::errors::ApiError;
use crate::gateway::models::Models;
use crate::gateway::responses;
use crate::protocol::Limits;

/// One line of an input file, checked.
#[derive(Debug, Clone)]
pub struct Line {
    /// The caller's id for it.
    pub custom_id: String,
    /// Its task, or why it is refused without running.
    pub task: Result<LineTask, ApiError>,
}

impl Line {
    /// The task to publish for this line, or why it is refused: its own problem, or (under
    /// routing by model) a generation naming a model not served. Embeddings go to the
    /// embeddings queue whatever their model, as a request of their own does. The batch's
    /// creation and its runner ask this alike, so a line refused at creation is never
    /// published.
    pub fn task_for(&self, models: &Models) -> Result<&LineTask, ApiError> {
        let task = self.task.as_ref().map_err(Clone::clone)?;
        if !matches!(task.kind, LineKind::Embedding(_)) {
            models.routing_key(&task.model)?;
        }
        Ok(task)
    }
}

/// A request that will be published.
#[derive(Debug, Clone, PartialEq)]
pub struct LineTask {
    /// The contract-v1 task body.
    pub body: Vec<u8>,
    /// The model it names (its routing key under routing by model).
    pub model: String,
    /// What it is, with what its output line needs besides the reply.
    pub kind: LineKind,
}

/// What kind of request a line is.
#[derive(Debug, Clone, PartialEq)]
pub enum LineKind {
    /// A chat or text completion.
    Completion,
    /// An embedding request (published to the embeddings queue), with how its vectors are
    /// written.
    Embedding(Encoding),
    /// A Responses API request, with its response object as created (its id, time and model
    /// are set when its output line is written).
    Response(Value),
}

/// Why an input file fails the whole batch (OpenAI's `errors.data[]`).
#[derive(Debug, Clone, PartialEq)]
pub struct FileProblem {
    /// Machine-readable code.
    pub code: &'static str,
    /// What is wrong.
    pub message: String,
    /// The line, counted from 1 (none for the file as a whole).
    pub line: Option<usize>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLine {
    custom_id: String,
    method: String,
    url: String,
    body: Value,
}

/// Reads an input file for `endpoint`: its lines, or the problems that fail the batch (a
/// line that is not a request object, a repeated `custom_id`, another endpoint). A request
/// whose body the gateway would refuse is not a problem of the file: it is answered in the
/// error file, as a single request would be.
pub fn parse_input(
    content: &[u8],
    endpoint: &str,
    max_requests: usize,
    limits: &Limits,
) -> Result<Vec<Line>, Vec<FileProblem>> {
    let Some(kind) = endpoint_kind(endpoint) else {
        return Err(vec![problem(
            "invalid_endpoint",
            "endpoint not served",
            None,
        )]);
    };
    let Ok(text) = std::str::from_utf8(content) else {
        return Err(vec![problem(
            "invalid_file",
            "the file is not UTF-8 text",
            None,
        )]);
    };
    let mut lines = Vec::new();
    let mut problems = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for (number, raw) in text.lines().enumerate().map(|(i, l)| (i + 1, l.trim())) {
        if raw.is_empty() {
            continue;
        }
        let line: RawLine = match serde_json::from_str(raw) {
            Ok(line) => line,
            Err(e) => {
                let message = format!("not a request object (custom_id, method, url, body): {e}");
                problems.push(problem("invalid_json_line", message, Some(number)));
                continue;
            }
        };
        if line.method != "POST" {
            problems.push(problem(
                "invalid_method",
                "`method` must be POST",
                Some(number),
            ));
        }
        if line.url != endpoint {
            let message = format!(
                "`url` {:?} is not the batch's endpoint {endpoint}",
                line.url
            );
            problems.push(problem("mismatched_url", message, Some(number)));
        }
        if !seen.insert(line.custom_id.clone()) {
            let message = format!("`custom_id` {:?} is used twice", line.custom_id);
            problems.push(problem("duplicate_custom_id", message, Some(number)));
        }
        let task = line_task(kind, &line.body, limits);
        lines.push(Line {
            custom_id: line.custom_id,
            task,
        });
    }
    if lines.is_empty() && problems.is_empty() {
        problems.push(problem("empty_file", "the file has no requests", None));
    }
    if lines.len() > max_requests {
        let message = format!(
            "{} requests; a batch takes at most {max_requests}",
            lines.len()
        );
        problems.push(problem("too_many_requests", message, None));
    }
    if problems.is_empty() {
        Ok(lines)
    } else {
        Err(problems)
    }
}

fn problem(code: &'static str, message: impl Into<String>, line: Option<usize>) -> FileProblem {
    FileProblem {
        code,
        message: message.into(),
        line,
    }
}

/// The task of one request body, checked as `POST <endpoint>` would check it.
fn line_task(endpoint: Endpoint, body: &Value, limits: &Limits) -> Result<LineTask, ApiError> {
    let bytes = serde_json::to_vec(body).unwrap_or_default();
    let kind = match endpoint {
        Endpoint::Completions(kind) => kind,
        Endpoint::Embeddings => {
            let request = crate::gateway::embeddings::parse_request(&bytes, limits)?;
            return Ok(LineTask {
                body: request.body.to_bytes(),
                model: request.model,
                kind: LineKind::Embedding(request.encoding),
            });
        }
        Endpoint::Responses => return response_task(&bytes, body, limits),
    };
    let request = request::parse_request(kind, &bytes)?;
    if request.stream {
        return Err(not_in_batch("stream", STREAM_WHY));
    }
    let (task, _) = (request.task.checked_bytes(limits)).map_err(ApiError::refused_task)?;
    Ok(LineTask {
        body: task,
        model: request.model,
        kind: LineKind::Completion,
    })
}

/// Why a line may not stream, whatever its endpoint.
const STREAM_WHY: &str = "its output file holds each response whole";

/// The refusal of a line's `field`, which a batch does not serve, and `why`.
fn not_in_batch(field: &str, why: &str) -> ApiError {
    ApiError::invalid(
        format!("`{field}` is not served in a batch: {why}"),
        Some(field.to_owned()),
    )
}

/// The task of a `/v1/responses` line. What needs a response kept or a connection open is
/// refused by name: a batch's responses are its output file's lines.
fn response_task(bytes: &[u8], body: &Value, limits: &Limits) -> Result<LineTask, ApiError> {
    let request = responses::request::parse_request(bytes)?;
    let refused = |field: &str, why: &str| Err(not_in_batch(field, why));
    if request.stream {
        return refused("stream", STREAM_WHY);
    }
    if request.background {
        return refused("background", "a batch runs in the background already");
    }
    if request.previous_response_id.is_some() {
        return refused(
            "previous_response_id",
            "send the conversation in `input` instead",
        );
    }
    if body.get("store") == Some(&Value::Bool(true)) {
        return refused(
            "store",
            "its responses are in its output file, not kept for retrieval",
        );
    }
    if request.callback_url.is_some() {
        return refused(
            "metadata",
            "`callback_url` webhooks are for a response of its own; a batch's end is its status",
        );
    }
    let (task, _) = request
        .task
        .checked_bytes(limits)
        .map_err(ApiError::refused_task)?;
    Ok(LineTask {
        body: task,
        kind: LineKind::Response(responses::object::queued("", 0, &request)),
        model: request.model,
    })
}

/// The `errors` of a batch that failed validation.
pub fn errors_object(problems: &[FileProblem]) -> Value {
    let data: Vec<Value> = problems
        .iter()
        .map(|p| json!({"code": p.code, "message": p.message, "param": null, "line": p.line}))
        .collect();
    json!({"object": "list", "data": data})
}

#[cfg(test)]
mod tests {
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
            r#"{"custom_id": "d", "method": "GET", "url": "/v1/completions", "body": {}}"#
                .to_owned(),
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
}
