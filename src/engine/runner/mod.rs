//! The engine thread's loop: load the model, then repeat { admit waiting jobs into free
//! slots, drop sequences that timed out or were abandoned, decode one token for every active
//! sequence in a single batch, pick each next token (read from the device where it chose
//! it) }. A sequence finishes on its own schedule and frees its slot at once; nothing waits
//! for a whole batch. [`startup`] loads the model and creates the context.

use std::cell::OnceCell;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Instant;

use llama_cpp_2::context::LlamaContext;
use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::model::LlamaModel;
use llama_cpp_2::token::LlamaToken;
use tokio::sync::mpsc::{self, error::TryRecvError};

mod admit;
mod cells;
mod startup;

#[cfg(test)]
pub(super) use startup::backend;
use startup::load;

use super::chat_template::ChatTemplate;
use super::chunking::Chunking;
use super::device_sampling::DeviceSamplers;
use super::first_bytes::FirstBytes;
use super::logprobs;
use super::occupancy::Occupancy;
use super::prefix::PrefixCache;
use super::sequence::{InBatch, Sequence, Step};
use super::step_times::{Lap, Phase, StepTimes};
use super::{EngineStartError, Message, ModelInfo};
use crate::config::{EngineRole, EngineSettings};
use crate::protocol::{ErrorCode, TaskError};

/// What the engine thread reports as it runs, shared with the [`super::Engine`] handle.
pub(super) struct Reports {
    pub occupancy: Arc<Occupancy>,
    pub times: Arc<StepTimes>,
}

/// Entry point of the engine thread. Reports start-up on `ready`, then serves `jobs` until
/// every [`super::Engine`] handle is gone and no sequence is active.
pub(super) fn run(
    settings: EngineSettings,
    jobs: mpsc::UnboundedReceiver<Message>,
    ready: std::sync::mpsc::Sender<Result<ModelInfo, EngineStartError>>,
    reports: Reports,
) {
    let Reports { occupancy, times } = reports;
    if settings.role == EngineRole::Embed {
        match startup::embedder(&settings) {
            Ok((mut embedder, info)) => {
                if ready.send(Ok(info)).is_ok() {
                    embedder.serve(jobs, &occupancy);
                }
            }
            Err(e) => {
                let _ = ready.send(Err(e));
            }
        }
        return;
    }
    let (model, backend) = match load(&settings) {
        Ok(started) => started,
        Err(e) => {
            let _ = ready.send(Err(e));
            return;
        }
    };
    let mut runner = match Runner::new(&settings, &model, backend, times) {
        Ok(runner) => runner,
        Err(e) => {
            let _ = ready.send(Err(e));
            return;
        }
    };
    if ready.send(Ok(runner.info(&settings))).is_err() {
        return;
    }
    runner.serve(jobs, &occupancy);
}

/// A generating engine has no embedding context.
fn refuse_embedding(job: super::EmbedJob, occupancy: &Occupancy) {
    occupancy.job_taken();
    job.refuse(TaskError::new(
        ErrorCode::Internal,
        "this worker generates: embedding tasks go to workers with engine.role = \"embed\"",
    ));
}

struct Runner<'m> {
    model: &'m LlamaModel,
    ctx: LlamaContext<'m>,
    /// Chains attached to `ctx`'s sequences; declared after `ctx` so they are freed after it.
    device: Option<DeviceSamplers>,
    batch: LlamaBatch<'static>,
    batch_capacity: usize,
    template: ChatTemplate,
    template_source: String,
    context_per_slot: u32,
    slots: Vec<Option<Sequence>>,
    prefix: PrefixCache,
    /// Where prompts are cut into decodes.
    chunking: Chunking,
    /// Tasks admitted so far: tells a slot's successive sequences apart.
    admissions: u64,
    /// The vocabulary by first byte, built when the first constrained task comes.
    first_bytes: OnceCell<Rc<FirstBytes>>,
    /// Where each step's time goes, shared with whoever reports on the engine.
    times: Arc<StepTimes>,
    /// The sequences of a step between picking their tokens and emitting them (kept to reuse
    /// its allocation).
    picked: Vec<(usize, Sequence, Result<LlamaToken, TaskError>)>,
}

impl<'m> Runner<'m> {
    fn serve(&mut self, mut jobs: mpsc::UnboundedReceiver<Message>, occupancy: &Occupancy) {
        let mut open = true;
        let started = self.times.snapshot();
        let mut lap = Lap::start();
        loop {
            occupancy.set_busy(self.active());
            occupancy.set_kv_cells_used(self.kv_cells_used());
            if self.active() == 0 {
                if !open {
                    return self.report(&started);
                }
                let waiting = jobs.blocking_recv();
                // Time idle is no step's.
                lap = Lap::start();
                match waiting {
                    Some(Message::Job(job)) => {
                        occupancy.job_taken();
                        self.admit(*job);
                    }
                    Some(Message::Embed(job)) => refuse_embedding(*job, occupancy),
                    Some(Message::Stop) | None => {
                        self.report(&started);
                        return self.stop(occupancy);
                    }
                }
            }
            while open && self.free_slot().is_some() {
                match jobs.try_recv() {
                    Ok(Message::Job(job)) => {
                        occupancy.job_taken();
                        self.admit(*job);
                    }
                    Ok(Message::Embed(job)) => refuse_embedding(*job, occupancy),
                    Ok(Message::Stop) => {
                        self.report(&started);
                        return self.stop(occupancy);
                    }
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) => open = false,
                }
            }
            self.reap();
            if self.active() > 0 {
                self.step(&mut lap);
            }
        }
    }

    /// Logs where the steps' time went since `started`.
    fn report(&self, started: &super::step_times::StepSnapshot) {
        if let Some(profile) = self.times.snapshot().since(started).profile() {
            tracing::info!(%profile, "engine step times");
        }
    }

    /// Ends every sequence (its caller gets `internal`) before the thread returns.
    fn stop(&mut self, occupancy: &Occupancy) {
        for slot in 0..self.slots.len() {
            if let Some(sequence) = self.release(slot) {
                sequence.fail(internal("the worker is stopping"));
            }
        }
        occupancy.set_busy(0);
        occupancy.set_kv_cells_used(0);
    }

    fn active(&self) -> usize {
        self.slots.iter().filter(|s| s.is_some()).count()
    }

    /// KV cells holding a token: each running sequence's and each free slot's kept prefix.
    fn kv_cells_used(&self) -> usize {
        (0..self.slots.len())
            .map(|slot| match &self.slots[slot] {
                Some(sequence) => sequence.cells_in_cache(),
                None => self.prefix.kept(slot).len(),
            })
            .sum()
    }

    fn free_slot(&self) -> Option<usize> {
        self.slots.iter().position(Option::is_none)
    }

    /// Appends a sampled token to its sequence, with its log probability if it asked.
    fn push(&self, sequence: &mut Sequence, token: LlamaToken) -> Step {
        let vocab = self.model.vocab();
        if vocab.is_eog(token) {
            return sequence.push(token, &[], true, None);
        }
        let piece = vocab.token_to_piece(token, sequence.keeps_special(token), None);
        // Sequences that want log probabilities are picked on the host: their logits exist.
        let logprob = sequence.logprobs_wanted().map(|top| {
            let logits = self.ctx.get_logits_ith(sequence.batch_index);
            logprobs::entry(self.model, logits, token, top)
        });
        sequence.push(token, &piece, false, logprob)
    }

    /// Ends sequences whose time is up or whose caller left.
    fn reap(&mut self) {
        let now = Instant::now();
        for slot in 0..self.slots.len() {
            let Some(sequence) = &self.slots[slot] else {
                continue;
            };
            let abandoned = sequence.is_abandoned();
            if !abandoned && !sequence.is_past_deadline(now) {
                continue;
            }
            if let Some(sequence) = self.release(slot) {
                // An abandoned task has nobody to tell.
                if !abandoned {
                    let error = timeout_error(sequence.timeout());
                    sequence.fail(error);
                }
            }
        }
    }

    /// One decode: the pending token of every generating sequence, then as much prompt as
    /// fits, then a sample for every sequence that has logits in this batch.
    fn step(&mut self, lap: &mut Lap) {
        self.start_followers();
        self.batch.clear();
        for sequence in self.slots.iter_mut().flatten() {
            sequence.in_batch = InBatch::Nothing;
            if sequence.is_reading_prompt() {
                continue;
            }
            sequence.batch_index = self.batch.n_tokens();
            sequence.in_batch = InBatch::NextToken;
            // The batch holds at least `slots` tokens, so one token per sequence always fits.
            let _ = self
                .batch
                .add(sequence.pending, sequence.n_past, &[sequence.seq_id], true);
        }
        for sequence in self.slots.iter_mut().flatten() {
            let room = self.batch_capacity - self.batch.n_tokens() as usize;
            if room == 0 {
                break;
            }
            if !sequence.is_reading_prompt() || sequence.follow.is_some() {
                continue;
            }
            let start = sequence.prompt_done;
            let end = self.chunking.piece_end(start, sequence.prompt.len(), room);
            for pos in start..end {
                let is_last = pos + 1 == sequence.prompt.len();
                if is_last {
                    sequence.batch_index = self.batch.n_tokens();
                }
                let _ = self.batch.add(
                    sequence.prompt[pos],
                    pos as i32,
                    &[sequence.seq_id],
                    is_last,
                );
            }
            sequence.prompt_done = end;
            sequence.in_batch = if end == sequence.prompt.len() {
                InBatch::PromptEnd
            } else {
                InBatch::PromptPart
            };
        }
        if self.batch.n_tokens() == 0 {
            return;
        }
        lap.to(&self.times, Phase::Schedule);
        let decoded = self.ctx.decode(&mut self.batch);
        lap.to(&self.times, Phase::Decode);
        self.times.stepped(self.batch.n_tokens() as usize);
        if let Err(e) = decoded {
            tracing::error!(error = %e, "llama.cpp decode failed; failing the tasks in the batch");
            for slot in 0..self.slots.len() {
                let in_batch = self.slots[slot]
                    .as_ref()
                    .is_some_and(|s| s.in_batch != InBatch::Nothing);
                if in_batch {
                    if let Some(sequence) = self.release(slot) {
                        // What the failed decode left in these cells is unknown.
                        self.clear_slot(slot as i32);
                        sequence.fail(TaskError::new(
                            ErrorCode::InferenceFailed,
                            format!("llama.cpp decode failed: {e}"),
                        ));
                    }
                }
            }
            return;
        }
        // Every next token first: on a device, the first read waits for the decode's results.
        let mut picked = std::mem::take(&mut self.picked);
        for slot in 0..self.slots.len() {
            let Some(mut sequence) = self.slots[slot].take() else {
                continue;
            };
            match sequence.in_batch {
                InBatch::Nothing | InBatch::PromptPart => {
                    self.slots[slot] = Some(sequence);
                    continue;
                }
                InBatch::PromptEnd => sequence.prompt_read(),
                InBatch::NextToken => sequence.next_token_decoded(),
            }
            let token = self.pick(slot, &mut sequence);
            picked.push((slot, sequence, token));
        }
        lap.to(&self.times, Phase::Sample);
        for (slot, mut sequence, token) in picked.drain(..) {
            let token = match token {
                Ok(token) => token,
                Err(e) => {
                    self.prefix
                        .keep(slot, sequence.tokens_in_cache(), sequence.prompt.len());
                    sequence.fail(e);
                    continue;
                }
            };
            match self.push(&mut sequence, token) {
                Step::Continue => self.slots[slot] = Some(sequence),
                Step::Finished(reason) => {
                    self.prefix
                        .keep(slot, sequence.tokens_in_cache(), sequence.prompt.len());
                    sequence.finish(reason);
                }
            }
        }
        self.picked = picked;
        lap.to(&self.times, Phase::Emit);
    }

    /// The sequence's next token, from the last decode: chosen on the device, or by its picker
    /// from the logits.
    fn pick(&mut self, slot: usize, sequence: &mut Sequence) -> Result<LlamaToken, TaskError> {
        if !sequence.on_device {
            return sequence.picker.pick(&self.ctx, sequence.batch_index);
        }
        self.device
            .as_mut()
            .and_then(|device| device.take(&self.ctx, slot, sequence.batch_index))
            .ok_or_else(|| {
                TaskError::new(
                    ErrorCode::InferenceFailed,
                    "llama.cpp's device sampler chose no token",
                )
            })
    }

    /// Takes the sequence out of `slot`, its KV cells left for the prefix cache.
    fn release(&mut self, slot: usize) -> Option<Sequence> {
        let sequence = self.slots[slot].take()?;
        self.prefix
            .keep(slot, sequence.tokens_in_cache(), sequence.prompt.len());
        Some(sequence)
    }
}

fn internal(message: impl Into<String>) -> TaskError {
    TaskError::new(ErrorCode::Internal, message)
}

fn timeout_error(timeout: std::time::Duration) -> TaskError {
    TaskError::new(
        ErrorCode::Timeout,
        format!(
            "inference took longer than the task's timeout_ms ({} ms)",
            timeout.as_millis()
        ),
    )
}
