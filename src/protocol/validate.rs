//! From a [`TaskBody`] to a [`Task`]: every value checked against the contract's ranges and
//! the operator's [`Limits`], every default applied. A refusal is `invalid_request` with a
//! message naming the field. The gateway validates the body it built; the worker validates
//! what it read ([`super::parse_task`]).

use std::time::Duration;

use serde_json::{Map, Value};

use super::constraint::constraint;
use super::error::short;
use super::task::{ChatMessage, Input, Role, Sampling, Task};
use super::task_body::unsupported_version;
use super::tools::{checked_tools, ToolChoice};
use super::{OutputConstraint, TaskBody, TaskError, MAX_TOP_LOGPROBS, WIRE_VERSION};

/// Most tokens a task's `logit_bias` may name.
pub const MAX_LOGIT_BIAS: usize = 1024;

/// The operator's bounds and defaults for a task (from `[limits]` and `[sampling]`).
#[derive(Debug, Clone, PartialEq)]
pub struct Limits {
    /// Largest task body.
    pub max_body_bytes: usize,
    /// `max_tokens` when the task gives none; 0: none (the cap if there is one, else until
    /// the model stops or the context is full).
    pub default_max_tokens: u32,
    /// Largest `max_tokens`; 0: none (the context bounds it).
    pub max_tokens_cap: u32,
    /// `timeout_ms` when the task gives none.
    pub default_timeout_ms: u64,
    /// Largest `timeout_ms`.
    pub timeout_cap_ms: u64,
    /// Most stop sequences.
    pub max_stop_sequences: usize,
    /// Longest stop sequence, in bytes.
    pub max_stop_bytes: usize,
    /// `top_k` when the task gives none; 0 = off.
    pub default_top_k: u32,
}

impl TaskBody {
    /// The task this body asks for, within `limits`, or why not.
    pub fn validate(&self, limits: &Limits) -> Result<Task, TaskError> {
        if let Some(version) = integer("version", self.version, 0, u64::from(u32::MAX))? {
            if version != u64::from(WIRE_VERSION) {
                return Err(unsupported_version(version));
            }
        }
        let input = match (&self.prompt, &self.messages) {
            (Some(_), Some(_)) => {
                return Err(TaskError::invalid(
                    "give exactly one of `prompt` or `messages`, not both",
                ))
            }
            (None, None) => {
                return Err(TaskError::invalid(
                    "give exactly one of `prompt` (a string) or `messages` (a list)",
                ))
            }
            (Some(prompt), None) => Input::Prompt(checked_prompt(prompt)?),
            (None, Some(messages)) => Input::Messages(checked_messages(messages)?),
        };
        let cap = match limits.max_tokens_cap {
            0 => u32::MAX,
            cap => cap,
        };
        let max_tokens =
            integer("max_tokens", self.max_tokens, 1, u64::from(cap))?.map(|v| v as u32);
        let default_max_tokens = [limits.default_max_tokens, limits.max_tokens_cap]
            .into_iter()
            .find(|&n| n > 0 && max_tokens.is_none());
        let timeout_ms = integer("timeout_ms", self.timeout_ms, 1, limits.timeout_cap_ms)?
            .unwrap_or(limits.default_timeout_ms);
        let (tools, tool_choice) = checked_tools(
            self.tools.as_deref().unwrap_or_default(),
            self.tool_choice.as_ref(),
        )?;
        let constraint = constraint(self.json_schema.as_ref(), self.grammar.as_deref())?;
        let logprobs = integer("logprobs", self.logprobs, 0, MAX_TOP_LOGPROBS)?.map(|v| v as u32);
        if !tools.is_empty() && matches!(input, Input::Prompt(_)) {
            // Also with `tool_choice: "none"`: the tools would be dropped unseen.
            return Err(TaskError::invalid(
                "`tools` needs `messages`: a raw `prompt` has no chat template to render them",
            ));
        }
        if tool_choice != ToolChoice::None {
            check_tool_use(constraint.as_ref(), &tool_choice, logprobs.is_some())?;
        }
        Ok(Task {
            input,
            max_tokens,
            default_max_tokens,
            sampling: self.sampling(limits)?,
            stop: checked_stop(self.stop.as_deref(), limits)?,
            constraint,
            timeout: Duration::from_millis(timeout_ms),
            deadline_ms: integer("deadline_ms", self.deadline_ms, 0, i64::MAX as u64)?,
            stream: self.stream.unwrap_or(false),
            progress: self.progress.unwrap_or(false),
            batch_invariant: self.batch_invariant.unwrap_or(false),
            logprobs,
            tools,
            tool_choice,
            parallel_tool_calls: self.parallel_tool_calls.unwrap_or(true),
        })
    }

    /// The bytes to publish and the task they ask for, refused as a worker would refuse them
    /// (its size included): what a caller that builds bodies checks before publishing.
    pub fn checked_bytes(&self, limits: &Limits) -> Result<(Vec<u8>, Task), TaskError> {
        let bytes = self.to_bytes();
        if bytes.len() > limits.max_body_bytes {
            return Err(TaskError::invalid(format!(
                "body is {} bytes, more than the limit of {} bytes",
                bytes.len(),
                limits.max_body_bytes
            )));
        }
        let task = self.validate(limits)?;
        Ok((bytes, task))
    }

    fn sampling(&self, limits: &Limits) -> Result<Sampling, TaskError> {
        let f32_of = |v: f64| v as f32;
        Ok(Sampling {
            temperature: number("temperature", self.temperature, 0.0, 100.0, true)?
                .map_or(0.0, f32_of),
            top_p: number("top_p", self.top_p, 0.0, 1.0, true)?.map(f32_of),
            top_k: integer("top_k", self.top_k, 0, u64::from(u32::MAX))?
                .map(|v| v as u32)
                .or(Some(limits.default_top_k))
                .filter(|k| *k > 0),
            min_p: number("min_p", self.min_p, 0.0, 1.0, true)?.map(f32_of),
            repeat_penalty: number("repeat_penalty", self.repeat_penalty, 0.0, 100.0, false)?
                .map(f32_of),
            frequency_penalty: number(
                "frequency_penalty",
                self.frequency_penalty,
                -2.0,
                2.0,
                true,
            )?
            .map(f32_of),
            presence_penalty: number("presence_penalty", self.presence_penalty, -2.0, 2.0, true)?
                .map(f32_of),
            // u32::MAX is llama.cpp's "pick a random seed", so it is not a valid fixed seed.
            seed: integer("seed", self.seed, 0, u64::from(u32::MAX - 1))?.map(|v| v as u32),
            logit_bias: checked_logit_bias(self.logit_bias.as_ref())?,
        })
    }
}

/// `value` if within `min ..= max`.
pub(super) fn integer(
    name: &str,
    value: Option<u64>,
    min: u64,
    max: u64,
) -> Result<Option<u64>, TaskError> {
    match value {
        Some(v) if !(min..=max).contains(&v) => Err(TaskError::invalid(format!(
            "`{name}` must be an integer from {min} to {max}, not {v}"
        ))),
        _ => Ok(value),
    }
}

/// `value` if finite and in `[min, max]`, or `(min, max]` when `min_inclusive` is false.
fn number(
    name: &str,
    value: Option<f64>,
    min: f64,
    max: f64,
    min_inclusive: bool,
) -> Result<Option<f64>, TaskError> {
    let in_range =
        |v: f64| v.is_finite() && v <= max && if min_inclusive { v >= min } else { v > min };
    match value {
        Some(v) if !in_range(v) => {
            let open = if min_inclusive { '[' } else { '(' };
            Err(TaskError::invalid(format!(
                "`{name}` must be a number in {open}{min}, {max}], not {v}"
            )))
        }
        _ => Ok(value),
    }
}

fn checked_prompt(prompt: &str) -> Result<String, TaskError> {
    if prompt.is_empty() {
        return Err(TaskError::invalid("`prompt` must not be empty"));
    }
    if prompt.contains('\0') {
        return Err(TaskError::invalid(
            "`prompt` must not contain NUL characters",
        ));
    }
    Ok(prompt.to_owned())
}

fn checked_messages(messages: &[ChatMessage]) -> Result<Vec<ChatMessage>, TaskError> {
    if messages.is_empty() {
        return Err(TaskError::invalid("`messages` must not be empty"));
    }
    for (i, message) in messages.iter().enumerate() {
        if message.content.contains('\0') {
            return Err(TaskError::invalid(format!(
                "`messages[{i}].content` must not contain NUL characters"
            )));
        }
        if !message.tool_calls.is_empty() && message.role != Role::Assistant {
            return Err(TaskError::invalid(format!(
                "`messages[{i}].tool_calls` belongs to assistant messages only"
            )));
        }
        match (&message.tool_call_id, message.role) {
            (None, Role::Tool) => {
                return Err(TaskError::invalid(format!(
                    "`messages[{i}].tool_call_id` is missing: a tool message answers a call"
                )))
            }
            (Some(_), role) if role != Role::Tool => {
                return Err(TaskError::invalid(format!(
                    "`messages[{i}].tool_call_id` belongs to tool messages only"
                )))
            }
            _ => {}
        }
    }
    Ok(messages.to_vec())
}

/// What tools called for cannot be combined with: a grammar of the caller's (the tool-call grammar is the constraint), log probabilities. An answer
/// format goes with them when it describes an object: with `auto` it becomes one more
/// function, the answer's (see the engine's tools), with a forced call there is no text for
/// it to shape.
fn check_tool_use(
    constraint: Option<&OutputConstraint>,
    choice: &ToolChoice,
    logprobs: bool,
) -> Result<(), TaskError> {
    match constraint {
        Some(OutputConstraint::Grammar(_)) => {
            return Err(TaskError::invalid(
                "`tools` cannot be combined with a `grammar` unless `tool_choice` is \"none\": \
                 the tool-call grammar is the turn's constraint. Give the answer's shape as \
                 `json_schema` instead",
            ))
        }
        Some(OutputConstraint::JsonSchema(schema))
            if *choice == ToolChoice::Auto
                && schema.get("type") != Some(&Value::from("object")) =>
        {
            return Err(TaskError::invalid(
                "an answer format (`json_schema`, over HTTP `response_format` or `text.format`) \
                 beside `tools` with `tool_choice` \"auto\" must describe an object \
                 (`\"type\": \"object\"` at its root): the answer is offered to the model as \
                 one more function, whose arguments are an object",
            ))
        }
        _ => {}
    }
    if logprobs {
        return Err(TaskError::invalid(
            "`logprobs` cannot be combined with `tools` (unless `tool_choice` is \"none\")",
        ));
    }
    Ok(())
}

fn checked_stop(stop: Option<&[String]>, limits: &Limits) -> Result<Vec<String>, TaskError> {
    let stop = stop.unwrap_or_default();
    if stop.len() > limits.max_stop_sequences {
        return Err(TaskError::invalid(format!(
            "`stop` has {} entries, more than the limit of {}",
            stop.len(),
            limits.max_stop_sequences
        )));
    }
    for (i, s) in stop.iter().enumerate() {
        if s.is_empty() {
            return Err(TaskError::invalid(format!("`stop[{i}]` must not be empty")));
        }
        if s.len() > limits.max_stop_bytes {
            return Err(TaskError::invalid(format!(
                "`stop[{i}]` is {} bytes, more than the limit of {}",
                s.len(),
                limits.max_stop_bytes
            )));
        }
    }
    Ok(stop.to_vec())
}

/// `logit_bias`: an object from token ids (decimal strings, as OpenAI's JSON has them) to a
/// bias in -100 ..= 100; sorted by id. Whether an id is in the vocabulary is the engine's
/// to say.
fn checked_logit_bias(entries: Option<&Map<String, Value>>) -> Result<Vec<(u32, f32)>, TaskError> {
    let Some(entries) = entries else {
        return Ok(Vec::new());
    };
    if entries.len() > MAX_LOGIT_BIAS {
        return Err(TaskError::invalid(format!(
            "`logit_bias` names {} tokens, more than the limit of {MAX_LOGIT_BIAS}",
            entries.len()
        )));
    }
    let mut biases = Vec::with_capacity(entries.len());
    for (key, bias) in entries {
        let id = key
            .parse::<u32>()
            .ok()
            .filter(|id| *id <= i32::MAX as u32)
            .ok_or_else(|| {
                TaskError::invalid(format!(
                    "`logit_bias` keys must be token ids (decimal integers), not {:?}",
                    key.chars().take(40).collect::<String>()
                ))
            })?;
        let bias = bias
            .as_f64()
            .filter(|b| (-100.0..=100.0).contains(b))
            .ok_or_else(|| {
                TaskError::invalid(format!(
                    "`logit_bias[{id}]` must be a number from -100 to 100, not {}",
                    short(bias)
                ))
            })?;
        biases.push((id, bias as f32));
    }
    biases.sort_by_key(|(id, _)| *id);
    if let Some(pair) = biases.windows(2).find(|pair| pair[0].0 == pair[1].0) {
        return Err(TaskError::invalid(format!(
            "`logit_bias` names token {} twice",
            pair[0].0
        )));
    }
    Ok(biases)
}
