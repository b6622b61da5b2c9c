//! Admission: a job becomes a sequence in a free slot. Its prompt is tokenized (through the
//! chat template, with the tools' grammar when it calls tools), checked against the context,
//! given its token picker, and placed where the KV cells hold the longest prefix of it.

use std::rc::Rc;
use std::time::Instant;

use super::super::device_sampling::DeviceChoice;
use super::super::first_bytes::FirstBytes;
use super::super::grammar::GrammarSource;
use super::super::prompt;
use super::super::sampling::TokenPicker;
use super::super::sequence::{Sequence, SequenceStart};
use super::super::Job;
use super::{internal, Runner};
use crate::protocol::{ErrorCode, TaskError};

impl Runner<'_> {
    /// Puts a job in a free slot: the one whose KV cells already hold the longest prefix of
    /// its prompt (see [`PrefixCache`]). The rest of the prompt is read by the following
    /// steps, in chunks that share each batch with the other sequences' next tokens.
    pub(super) fn admit(&mut self, job: Job) {
        if job.reply.is_closed() {
            return;
        }
        let slot_wait = job.submitted.elapsed();
        let prompt::Prompt {
            tokens: prompt,
            tools,
        } = match prompt::tokenize(self.model, &self.template, &job.request.task) {
            Ok(prompt) => prompt,
            Err(e) => {
                let _ = job.reply.send(Err(e));
                return;
            }
        };
        if prompt.len() >= self.context_per_slot as usize {
            let _ = job.reply.send(Err(TaskError::new(
                ErrorCode::PromptTooLong,
                format!(
                    "the prompt is {} tokens; the context holds {} tokens including the completion",
                    prompt.len(),
                    self.context_per_slot
                ),
            )));
            return;
        }
        let task = &job.request.task;
        let alone = match self.invariance.decodes_alone(task.batch_invariant) {
            Ok(alone) => alone,
            Err(e) => {
                let _ = job.reply.send(Err(e));
                return;
            }
        };
        if let Some(asked) = task.max_tokens {
            let room = self.context_per_slot as usize - prompt.len();
            if asked as usize > room {
                let _ = job.reply.send(Err(TaskError::new(
                    ErrorCode::ContextLengthExceeded,
                    format!(
                        "the context holds {} tokens: the prompt is {} tokens, so `max_tokens` \
                         may be at most {room}, not {asked}",
                        self.context_per_slot,
                        prompt.len()
                    ),
                )));
                return;
            }
        }
        let first_bytes = || {
            Rc::clone(self.first_bytes.get_or_init(|| {
                let started = Instant::now();
                let index = FirstBytes::new(self.model);
                let ms = started.elapsed().as_millis() as u64;
                tracing::debug!(ms, "vocabulary grouped by first byte for grammar masks");
                Rc::new(index)
            }))
        };
        let grammar = match &tools {
            Some(tools) => Some(GrammarSource::Tools(&tools.grammar)),
            None => task.constraint.as_ref().map(GrammarSource::Task),
        };
        let picker = match TokenPicker::for_task(self.model, &task.sampling, grammar, first_bytes) {
            Ok(picker) => picker,
            Err(e) => {
                let _ = job.reply.send(Err(e));
                return;
            }
        };
        let Some(placement) = self.place(&prompt, alone) else {
            // serve() only admits when a slot is free.
            let _ = job.reply.send(Err(internal("no free slot")));
            return;
        };
        let slot = placement.slot;
        let (reused, follow) = self.settle(placement);
        let on_device = self.device.as_mut().is_some_and(|device| {
            device.prepare(
                slot,
                DeviceChoice::for_task(
                    &task.sampling,
                    grammar.is_some() || task.logprobs.is_some(),
                    self.model.n_vocab(),
                ),
            )
        });
        tracing::debug!(slot, reused, on_device, "task admitted");
        self.admissions += 1;
        let stops = task.stop.clone();
        let tool_output = tools.map(|tools| tools.output);
        self.slots[slot] = Some(Sequence::new(SequenceStart {
            seq_id: slot as i32,
            admission: self.admissions,
            prompt,
            reused,
            follow,
            reply: job.reply,
            stream: job.request.stream,
            logprobs: task.logprobs.map(|top| top as usize),
            picker,
            on_device,
            alone,
            stops,
            tools: tool_output,
            max_tokens: task
                .max_tokens
                .or(task.default_max_tokens)
                .unwrap_or(u32::MAX),
            context_limit: self.context_per_slot as i32,
            timeout: job.request.task.timeout,
            slot_wait,
        }));
    }
}
