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

/// Limits that refuse nothing: what a line asked for (its model, its kind) read when its
/// answer is written. The gateway writing a batch's files may have other limits than the one
/// that published its lines, and a line that ran keeps the shape it asked for.
pub fn no_limits() -> Limits {
    Limits {
        max_body_bytes: usize::MAX,
        default_max_tokens: 0,
        max_tokens_cap: 0,
        default_timeout_ms: u64::MAX,
        timeout_cap_ms: u64::MAX,
        max_stop_sequences: usize::MAX,
        max_stop_bytes: usize::MAX,
        default_top_k: 0,
    }
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
#[path = "input_tests.rs"]
mod tests;
