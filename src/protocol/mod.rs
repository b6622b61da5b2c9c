//! Wire contract v1: the JSON a task carries, the JSON a reply carries, the headers warren
//! adds, and the control messages. This module is the product's API (docs/src/wire-contract documents it
//! field by field). It must not touch the broker or the engine; it only turns bytes into
//! checked values and back.
//!
//! [`task_body`] is a task as it travels (built by callers, read by workers), [`validate`]
//! turns one into a [`task`] within the operator's [`Limits`], and [`parse`] does both for a
//! delivery's bytes; [`reply`] holds replies and chunks, [`logprobs`] the log
//! probabilities they may carry; [`constraint`] a task's `json_schema` or `grammar`; [`tools`] its tools and
//! the calls replies carry;
//! [`embedding`] holds embedding tasks (their own queue and body);
//! [`error`] the error codes; [`headers`] every `x-warren-*` header name; [`control`] the
//! cancel message; [`tier`] the priority tiers and their queues.

pub mod constraint;
pub mod control;
pub mod embedding;
pub mod error;
pub mod headers;
pub mod logprobs;
pub mod parse;
pub mod reply;
pub mod task;
pub mod task_body;
pub mod tier;
pub mod tools;
pub mod validate;

pub use constraint::OutputConstraint;
pub use control::Cancel;
pub use embedding::{
    parse_embedding_task, shape_vector, EmbeddingBody, EmbeddingInput, EmbeddingItem,
    EmbeddingTask, MAX_EMBEDDING_INPUTS,
};
pub use error::{ErrorCode, TaskError};
pub use headers::*;
pub use logprobs::{TokenLogprob, TopLogprob, MAX_TOP_LOGPROBS};
pub use parse::{check_content_properties, parse_task};
pub use reply::{
    Chunk, ErrorBody, FinishReason, Message, Reply, ReplyStatus, Started, Timings, Usage,
};
pub use task::{ChatMessage, Input, Role, Sampling, Task};
pub use task_body::TaskBody;
pub use tier::{Tier, BATCH_SUFFIX};
pub use tools::{
    FunctionCall, FunctionDef, FunctionDelta, FunctionKind, Tool, ToolCall, ToolCallDelta,
    ToolChoice,
};
pub use validate::{Limits, MAX_LOGIT_BIAS};

/// Version of the wire contract, sent in every reply's `version`.
pub const WIRE_VERSION: u32 = 1;
