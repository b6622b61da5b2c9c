//! The embed role on the engine thread (`engine.role = "embed"`): a model and context made
//! for embeddings ([`EmbeddingModel`]), and a loop that turns embedding jobs into one vector
//! per input. The inputs of every job waiting at the same moment share decodes: as many
//! sequences as the context holds, as many tokens as one micro-batch takes, so that each
//! input's tokens are read in one pass; each input's token vectors are then pooled here
//! (`engine.pooling`). The cells are cleared after each decode: nothing of one input can
//! leak into another's vector. Each input's rows are padded to a multiple of
//! [`ROWS_ALIGNED`] (the padding is a sequence of its own, whose vectors are dropped):
//! llama.cpp's CPU matmuls take rows in tiles and leftover rows by another kernel, which
//! rounds differently, so an input must land in whole tiles wherever it sits for its vector
//! not to depend on what it shares a decode with.

use std::collections::VecDeque;
use std::time::Instant;

use tokio::sync::mpsc::{self, error::TryRecvError};

use super::embedding_model::{EmbeddingModel, Row};
use super::occupancy::Occupancy;
use super::pooling::pool;
use super::{EmbedJob, Embeddings, EngineStartError, Message};
use crate::config::{EngineSettings, Pooling};
use crate::protocol::{shape_vector, EmbeddingItem, EmbeddingTask, ErrorCode, TaskError};

/// Rows an input's tokens are padded to a multiple of: the CPU backend's quantized matmuls
/// take rows four at a time and some kernels switch at eight.
const ROWS_ALIGNED: usize = 8;

/// Rows `tokens` tokens take in a decode, padding included.
fn padded(tokens: usize) -> usize {
    tokens.div_ceil(ROWS_ALIGNED) * ROWS_ALIGNED
}

/// The embedding model and context, and what packing inputs into its decodes needs.
pub(super) struct Embedder {
    llama: EmbeddingModel,
    pooling: Pooling,
    /// Rows one decode (one micro-batch) takes, padding included.
    rows_per_decode: usize,
    /// Tokens of the longest input (`engine.context_size`).
    longest_input: usize,
    /// Inputs one decode takes; the padding is sequence `inputs_per_decode`.
    inputs_per_decode: usize,
    /// The token that pads an input's rows.
    pad: i32,
}

/// One input, tokenized, and where its vector goes.
struct Item {
    job: usize,
    index: usize,
    tokens: Vec<i32>,
}

/// A job while its inputs are embedded.
struct Running {
    job: EmbedJob,
    vectors: Vec<Option<Vec<f32>>>,
    prompt_tokens: u32,
    started: Instant,
    failed: Option<TaskError>,
}

impl Embedder {
    /// The model and embedding context for `settings`: one KV cache of `context_size` cells
    /// shared by up to `slots` inputs per decode, a micro-batch as large as the cache (one
    /// input may fill it). llama.cpp's backend must be initialised first.
    pub(super) fn new(settings: &EngineSettings) -> Result<Self, EngineStartError> {
        // llama.cpp reserves its graphs with the micro-batch's tokens spread evenly over the
        // sequences: the rows must be a multiple of the sequences (the inputs and the padding).
        let sequences = settings.slots + 1;
        let rows = (settings.context_size as usize)
            .next_multiple_of(ROWS_ALIGNED * sequences as usize) as u32;
        let llama = EmbeddingModel::load(settings, rows, sequences)?;
        Ok(Embedder {
            pad: llama.padding_token(),
            llama,
            pooling: settings.pooling,
            rows_per_decode: rows as usize,
            longest_input: settings.context_size as usize,
            inputs_per_decode: settings.slots as usize,
        })
    }

    /// The GGUF's `general.name`, when it has one.
    pub(super) fn model_name(&self) -> Option<String> {
        self.llama.name()
    }

    /// Serves embedding jobs until every engine handle is gone or a stop comes. A generation
    /// job sent here is refused: this worker does not generate.
    pub(super) fn serve(
        &mut self,
        mut jobs: mpsc::UnboundedReceiver<Message>,
        occupancy: &Occupancy,
    ) {
        let mut waiting: VecDeque<Box<EmbedJob>> = VecDeque::new();
        let mut open = true;
        loop {
            occupancy.set_busy(0);
            if waiting.is_empty() {
                if !open {
                    return;
                }
                match jobs.blocking_recv() {
                    Some(message) => {
                        if !take(message, &mut waiting, occupancy) {
                            return;
                        }
                    }
                    None => return,
                }
            }
            loop {
                match jobs.try_recv() {
                    Ok(message) => {
                        if !take(message, &mut waiting, occupancy) {
                            for job in waiting.drain(..) {
                                let _ = job.reply.send(Err(stopping()));
                            }
                            return;
                        }
                    }
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) => {
                        open = false;
                        break;
                    }
                }
            }
            occupancy.set_busy(waiting.len());
            self.run(waiting.drain(..).map(|job| *job).collect());
        }
    }

    /// Embeds every input of `jobs`, packing inputs of different jobs into the same decodes,
    /// and answers each job.
    fn run(&mut self, jobs: Vec<EmbedJob>) {
        let mut running: Vec<Running> = Vec::with_capacity(jobs.len());
        let mut items: Vec<Item> = Vec::new();
        for job in jobs {
            if job.reply.is_closed() {
                continue;
            }
            let n = running.len();
            let mut state = Running {
                vectors: vec![None; job.task.inputs.len()],
                prompt_tokens: 0,
                started: Instant::now(),
                failed: None,
                job,
            };
            match self.prepare(&state.job.task) {
                Ok(tokenized) => {
                    for (index, tokens) in tokenized.into_iter().enumerate() {
                        state.prompt_tokens += tokens.len() as u32;
                        items.push(Item {
                            job: n,
                            index,
                            tokens,
                        });
                    }
                }
                Err(error) => state.failed = Some(error),
            }
            running.push(state);
        }
        let mut items = items.into_iter().peekable();
        while items.peek().is_some() {
            let mut group = Vec::new();
            let mut rows = 0;
            while let Some(item) = items.peek() {
                let fits = group.len() < self.inputs_per_decode
                    && rows + padded(item.tokens.len()) <= self.rows_per_decode;
                if !fits {
                    break;
                }
                rows += padded(item.tokens.len());
                group.extend(items.next());
            }
            // Inputs of a job that failed or timed out are not embedded.
            group.retain(|item| {
                let state = &mut running[item.job];
                if state.failed.is_none() && state.started.elapsed() > state.job.task.timeout {
                    state.failed = Some(TaskError::new(
                        ErrorCode::Timeout,
                        format!(
                            "embedding took longer than the task's timeout of {} ms",
                            state.job.task.timeout.as_millis()
                        ),
                    ));
                }
                state.failed.is_none()
            });
            if group.is_empty() {
                continue;
            }
            match self.decode(&group) {
                Ok(vectors) => {
                    for (item, vector) in group.iter().zip(vectors) {
                        running[item.job].vectors[item.index] = Some(vector);
                    }
                }
                Err(error) => {
                    for item in &group {
                        running[item.job]
                            .failed
                            .get_or_insert_with(|| error.clone());
                    }
                }
            }
        }
        for state in running {
            let result = match state.failed {
                Some(error) => Err(error),
                None => finish(
                    state.vectors,
                    &state.job,
                    state.prompt_tokens,
                    state.started,
                ),
            };
            let _ = state.job.reply.send(result);
        }
    }

    /// Each input's tokens: text with the model's BOS where it wants one, token ids checked
    /// against the vocabulary; none longer than one decode takes. Refuses `dimensions` wider
    /// than the model's vectors.
    fn prepare(&self, task: &EmbeddingTask) -> Result<Vec<Vec<i32>>, TaskError> {
        let width = self.llama.width();
        if let Some(dimensions) = task.dimensions {
            if dimensions as usize > width {
                return Err(TaskError::invalid(format!(
                    "`dimensions` is {dimensions}, more than the model's {width}"
                )));
            }
        }
        let n_vocab = self.llama.vocabulary_size();
        task.inputs
            .iter()
            .enumerate()
            .map(|(index, input)| {
                let tokens = match input {
                    EmbeddingItem::Text(text) => self.llama.tokenize(text).ok_or_else(|| {
                        TaskError::invalid(format!("`input[{index}]` is too long to tokenize"))
                    })?,
                    EmbeddingItem::Tokens(ids) => ids
                        .iter()
                        .map(|&id| match i32::try_from(id) {
                            Ok(id) if id < n_vocab => Ok(id),
                            _ => Err(TaskError::invalid(format!(
                                "`input[{index}]` holds token id {id}, beyond the model's vocabulary of {n_vocab} tokens"
                            ))),
                        })
                        .collect::<Result<Vec<_>, _>>()?,
                };
                if tokens.is_empty() {
                    return Err(TaskError::invalid(format!(
                        "`input[{index}]` has no tokens"
                    )));
                }
                if tokens.len() > self.longest_input {
                    return Err(TaskError::new(
                        ErrorCode::PromptTooLong,
                        format!(
                            "`input[{index}]` is {} tokens, more than the {} an input may have (engine.context_size)",
                            tokens.len(),
                            self.longest_input
                        ),
                    ));
                }
                Ok(tokens)
            })
            .collect()
    }

    /// One decode of `group` (each input its own sequence), its pooled vectors in order.
    fn decode(&mut self, group: &[Item]) -> Result<Vec<Vec<f32>>, TaskError> {
        let padding_seq = self.inputs_per_decode as i32;
        let mut padding_position = 0;
        let mut rows = Vec::with_capacity(self.rows_per_decode);
        let mut spans = Vec::with_capacity(group.len());
        for (seq, item) in group.iter().enumerate() {
            spans.push(rows.len()..rows.len() + item.tokens.len());
            rows.extend(
                item.tokens
                    .iter()
                    .enumerate()
                    .map(|(position, &token)| Row {
                        token,
                        position: position as i32,
                        sequence: seq as i32,
                    }),
            );
            for _ in item.tokens.len()..padded(item.tokens.len()) {
                rows.push(Row {
                    token: self.pad,
                    position: padding_position,
                    sequence: padding_seq,
                });
                padding_position += 1;
            }
        }
        let vectors = self
            .llama
            .decode(&rows)
            .map_err(|status| {
                failed(format!(
                    "llama.cpp could not decode the inputs (status {status})"
                ))
            })
            .and_then(|()| {
                spans
                    .into_iter()
                    .map(|span| {
                        pool(span, self.pooling, self.llama.width(), |row| {
                            self.llama.row_vector(row)
                        })
                    })
                    .collect()
            });
        self.llama.clear();
        vectors
    }
}

/// Takes one message into `waiting`; false when it says stop.
fn take(message: Message, waiting: &mut VecDeque<Box<EmbedJob>>, occupancy: &Occupancy) -> bool {
    match message {
        Message::Embed(job) => {
            occupancy.job_taken();
            waiting.push_back(job);
            true
        }
        Message::Job(job) => {
            occupancy.job_taken();
            let _ = job.reply.send(Err(TaskError::new(
                ErrorCode::Internal,
                "this worker embeds (engine.role = \"embed\"): generation tasks go to workers that generate",
            )));
            true
        }
        Message::Stop => false,
    }
}

/// The job's vectors, shaped as it asked.
fn finish(
    vectors: Vec<Option<Vec<f32>>>,
    job: &EmbedJob,
    prompt_tokens: u32,
    started: Instant,
) -> Result<Embeddings, TaskError> {
    let task = &job.task;
    let vectors = vectors
        .into_iter()
        .map(|v| v.map(|v| shape_vector(v, task.dimensions, task.normalize)))
        .collect::<Option<Vec<_>>>()
        .ok_or_else(|| TaskError::new(ErrorCode::Internal, "an input's vector was lost"))?;
    Ok(Embeddings {
        vectors,
        prompt_tokens,
        wait: started.saturating_duration_since(job.submitted),
        time: started.elapsed(),
    })
}

fn failed(message: String) -> TaskError {
    TaskError::new(ErrorCode::InferenceFailed, message)
}

fn stopping() -> TaskError {
    TaskError::new(ErrorCode::Internal, "the worker is stopping")
}

#[cfg(test)]
#[path = "embedder_tests.rs"]
mod tests;
