//! The engine thread's loop: load the model, then repeat { admit waiting jobs into free
//! slots, drop sequences that timed out or were abandoned, decode one token for every active
//! sequence in a single batch, pick each next token (read from the device where it chose
//! it) }. A sequence finishes on its own schedule and frees its slot at once; nothing waits
//! for a whole batch. [`startup`] loads the model and creates the context, [`admit`] places
//! a job in a slot, [`step`] decodes and picks.

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
mod step;
#[cfg(test)]
#[path = "stop_tests.rs"]
mod stop_tests;

#[cfg(test)]
pub(super) use startup::backend;
use startup::load;

use super::chat_template::ChatTemplate;
use super::chunking::Chunking;
use super::device_sampling::DeviceSamplers;
use super::first_bytes::FirstBytes;
use super::occupancy::Occupancy;
use super::prefix::PrefixCache;
use super::sequence::Sequence;
use super::step_times::{Lap, StepTimes};
use super::watchdog::Heartbeat;
use super::{EngineStartError, Message, ModelInfo};
use crate::config::{EngineRole, EngineSettings};
use crate::protocol::{ErrorCode, TaskError};

/// What the engine thread reports as it runs, shared with the [`super::Engine`] handle.
pub(super) struct Reports {
    pub occupancy: Arc<Occupancy>,
    pub times: Arc<StepTimes>,
    /// Each round of work begun, each wait for work, and the thread's end.
    pub heartbeat: Arc<Heartbeat>,
}

/// Entry point of the engine thread. Reports start-up on `ready`, then serves `jobs` until
/// every [`super::Engine`] handle is gone and no sequence is active.
pub(super) fn run(
    settings: EngineSettings,
    jobs: mpsc::UnboundedReceiver<Message>,
    ready: std::sync::mpsc::Sender<Result<ModelInfo, EngineStartError>>,
    reports: Reports,
) {
    let Reports {
        occupancy,
        times,
        heartbeat,
    } = reports;
    let _ended = heartbeat.guard();
    if settings.role == EngineRole::Embed {
        match startup::embedder(&settings) {
            Ok((mut embedder, info)) => {
                if ready.send(Ok(info)).is_ok() {
                    embedder.serve(jobs, &occupancy, &heartbeat);
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
    runner.serve(jobs, &occupancy, &heartbeat);
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
    /// Which tasks are decoded alone (see [`step`]).
    invariance: step::Invariance,
}

impl<'m> Runner<'m> {
    fn serve(
        &mut self,
        mut jobs: mpsc::UnboundedReceiver<Message>,
        occupancy: &Occupancy,
        heartbeat: &Heartbeat,
    ) {
        let mut open = true;
        let started = self.times.snapshot();
        let mut lap = Lap::start();
        loop {
            heartbeat.round();
            if heartbeat.stop_asked() {
                self.report(&started);
                return self.stop(occupancy);
            }
            occupancy.set_busy(self.active());
            occupancy.set_kv_cells_used(self.kv_cells_used());
            if self.active() == 0 {
                if !open {
                    return self.report(&started);
                }
                let waiting = heartbeat.waiting(|| jobs.blocking_recv());
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
                self.step(&mut lap, heartbeat);
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

    /// Takes the sequence out of `slot`, its KV cells left for the prefix cache.
    fn release(&mut self, slot: usize) -> Option<Sequence> {
        let sequence = self.slots[slot].take()?;
        self.keep_cells(slot, &sequence);
        Some(sequence)
    }

    /// Leaves the ending `sequence`'s KV cells in `slot` for the prefix cache.
    fn keep_cells(&mut self, slot: usize, sequence: &Sequence) {
        self.prefix.keep(
            slot,
            sequence.tokens_in_cache(),
            sequence.prompt.len(),
            sequence.alone,
        );
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
