//! The embed role on the engine thread (`engine.role = "embed"`): a model and context made
//! for embeddings ([`EmbeddingModel`]), and a loop that turns embedding jobs into one vector
//! per input. The inputs of every job waiting at the same moment share decodes (packed as
//! [`embedding_batch`](super::embedding_batch) says), so that each input's tokens are read in
//! one pass; each input's token vectors are then pooled here (`engine.pooling`). The cells
//! are cleared after each decode: nothing of one input can leak into another's vector.

use std::collections::VecDeque;
use std::time::Instant;

use tokio::sync::mpsc::{self, error::TryRecvError};

use super::embedding_batch::{lay_out, DecodeSize, Item, ROWS_ALIGNED};
use super::embedding_inputs::tokenized;
use super::embedding_model::EmbeddingModel;
use super::occupancy::Occupancy;
use super::pooling::pool;
use super::watchdog::Heartbeat;
use super::{EmbedJob, Embeddings, EngineStartError, Message};
use crate::config::{EngineSettings, Pooling};
use crate::protocol::{shape_vector, ErrorCode, TaskError};

/// The embedding model and context, and what packing inputs into its decodes needs.
pub(super) struct Embedder {
    llama: EmbeddingModel,
    pooling: Pooling,
    /// Inputs and rows (one micro-batch, padding included) one decode takes; the padding
    /// is sequence `decode_size.inputs`.
    decode_size: DecodeSize,
    /// Tokens of the longest input (`engine.context_size`).
    longest_input: usize,
    /// The token that pads an input's rows.
    pad: i32,
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
            decode_size: DecodeSize {
                inputs: settings.slots as usize,
                rows: rows as usize,
            },
            longest_input: settings.context_size as usize,
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
        heartbeat: &Heartbeat,
    ) {
        let mut waiting: VecDeque<Box<EmbedJob>> = VecDeque::new();
        let mut open = true;
        loop {
            heartbeat.round();
            occupancy.set_busy(0);
            if heartbeat.stop_asked() {
                return;
            }
            if waiting.is_empty() {
                if !open {
                    return;
                }
                let message = heartbeat.waiting(|| jobs.blocking_recv());
                match message {
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
            self.run(waiting.drain(..).map(|job| *job).collect(), heartbeat);
        }
    }

    /// Embeds every input of `jobs`, packing inputs of different jobs into the same decodes,
    /// and answers each job.
    fn run(&mut self, jobs: Vec<EmbedJob>, heartbeat: &Heartbeat) {
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
            match tokenized(&state.job.task, &self.llama, self.longest_input) {
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
            let mut group = self.decode_size.next_group(&mut items);
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
            // Each decode is a round of its own: a job's inputs may take many.
            heartbeat.round();
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

    /// One decode of `group` (each input its own sequence), its pooled vectors in order.
    fn decode(&mut self, group: &[Item]) -> Result<Vec<Vec<f32>>, TaskError> {
        let (rows, spans) = lay_out(group, self.pad, self.decode_size.inputs as i32);
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
