//! Sampling on the device: where the backend can, a task's next token is chosen inside the
//! decode graph itself (an argmax, or top-k / top-p / min-p / temperature / a random draw), so
//! only its id crosses to the host instead of the 262,144 logits per sequence per token that
//! the host-side picker ([`super::sampling`]) reads. On a GPU that copy and the host's scan of
//! it, not the GPU, set the pace of the step loop.
//!
//! Owns one llama.cpp sampler chain per slot, attached to the slot's sequence with
//! `llama_set_sampler`. A slot keeps its chain between tasks: attaching a new one makes
//! llama.cpp redo its graph reservation (a new chain's first token came ~13 ms later on an
//! H100), so a task whose filters and temperature equal its slot's chain keeps it and only
//! takes its own random state (its seed, or a fresh random one) into it. Tasks the device
//! cannot serve — a grammar (it masks the vocabulary on the host), a penalty on recent
//! tokens (kept on the host for the same history as before) — detach the chain and use the
//! host path; llama.cpp then copies logits for that batch as before.
//!
//! llama-cpp-2 (0.1.160) wraps the per-context samplers only at context creation, which cannot
//! follow each task's settings, and keeps the context's raw pointer to itself; [`raw_context`]
//! recovers it from the wrapper's `Debug` output and compares llama.cpp's answers about it
//! with the wrapper's before any other use (which catches a changed format, not a wrong
//! address). That output is not an API llama-cpp-2 promises, so this path is an opt-in
//! (`engine.device_sampling`, off by default) and the crate is pinned to an exact version.
//! This module must not decode, touch the KV cache, or read logits.

// llama.cpp's per-sequence sampler API has no safe wrapper in llama-cpp-2 yet.
#![allow(unsafe_code)]

use std::ptr::NonNull;

use llama_cpp_2::context::LlamaContext;
use llama_cpp_2::token::LlamaToken;
use llama_cpp_sys_2 as sys;

use super::token_choice::{reshapes_logits, Draw};
use crate::protocol::Sampling;

/// How a task's token is chosen on the device: the settings a slot's chain was built from.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum DeviceChoice {
    /// The most likely token (temperature 0).
    Greedy,
    /// A random draw, filtered as the host's chain filters.
    Draw(Draw),
}

impl DeviceChoice {
    /// Whether a chain built for `self` computes what one built for `other` does, seeds
    /// aside (the random state is copied in per task).
    fn same_chain(&self, other: &DeviceChoice) -> bool {
        self.without_seed() == other.without_seed()
    }

    fn without_seed(self) -> DeviceChoice {
        match self {
            DeviceChoice::Draw(draw) => DeviceChoice::Draw(Draw { seed: 0, ..draw }),
            greedy => greedy,
        }
    }

    /// How `sampling` runs on the device over a vocabulary of `n_vocab` tokens; `None` where
    /// the task needs the host: when it needs its logits there (`needs_logits`: a grammar,
    /// log probabilities), reshapes them (a logit bias, a penalty on recent tokens) or asks
    /// for a top-k the device cannot take.
    pub(super) fn for_task(
        sampling: &Sampling,
        needs_logits: bool,
        n_vocab: i32,
    ) -> Option<DeviceChoice> {
        if needs_logits || reshapes_logits(sampling) {
            return None;
        }
        if sampling.temperature <= 0.0 {
            return Some(DeviceChoice::Greedy);
        }
        let mut draw = Draw::of(sampling);
        // A top-k of the whole vocabulary keeps every token: no filter. The device's top-k
        // does not clamp k as the host's does: past its row (the vocabulary, or the probe
        // graph llama.cpp builds when a chain is attached) ggml aborts the process.
        draw.top_k = draw.top_k.filter(|k| *k < n_vocab);
        if draw.top_k.is_some_and(|k| k > DEVICE_TOP_K_MAX) {
            return None;
        }
        Some(DeviceChoice::Draw(draw))
    }
}

/// The largest top-k the device takes: llama.cpp probes each sampler it attaches on a graph
/// of this many candidates (`llama_sampler_backend_support`), and `ggml_top_k` asserts that
/// k fits its row.
const DEVICE_TOP_K_MAX: i32 = 128 * 1024;

/// A llama.cpp sampler chain this module owns (freed on drop).
struct DeviceChain(NonNull<sys::llama_sampler>);

impl DeviceChain {
    fn build(choice: DeviceChoice) -> Option<DeviceChain> {
        // SAFETY: each sampler is new, and the chain takes ownership of what is added to it.
        unsafe {
            let chain = NonNull::new(sys::llama_sampler_chain_init(
                sys::llama_sampler_chain_default_params(),
            ))?;
            let chain = DeviceChain(chain);
            let add = |sampler: *mut sys::llama_sampler| {
                if !sampler.is_null() {
                    sys::llama_sampler_chain_add(chain.0.as_ptr(), sampler);
                }
            };
            match choice {
                DeviceChoice::Greedy => add(sys::llama_sampler_init_greedy()),
                DeviceChoice::Draw(draw) => {
                    if let Some(k) = draw.top_k {
                        add(sys::llama_sampler_init_top_k(k));
                    }
                    if let Some(p) = draw.top_p {
                        add(sys::llama_sampler_init_top_p(p, 1));
                    }
                    if let Some(p) = draw.min_p {
                        add(sys::llama_sampler_init_min_p(p, 1));
                    }
                    add(sys::llama_sampler_init_temp(draw.temperature));
                    add(sys::llama_sampler_init_dist(draw.seed));
                }
            }
            Some(chain)
        }
    }
}

impl Drop for DeviceChain {
    fn drop(&mut self) {
        // SAFETY: the chain is ours; llama.cpp holds it only while attached, and it is
        // detached (or replaced, or the context gone) before it is dropped.
        unsafe { sys::llama_sampler_free(self.0.as_ptr()) }
    }
}

struct Attached {
    choice: DeviceChoice,
    chain: DeviceChain,
}

/// The chains attached to the context's sequences, one per slot.
pub(super) struct DeviceSamplers {
    ctx: NonNull<sys::llama_context>,
    attached: Vec<Option<Attached>>,
}

impl DeviceSamplers {
    /// Sampling on the device for `slots` sequences of `ctx`; `None` if the context's handle
    /// cannot be recovered (then every task uses the host path). The runner must drop it
    /// after `ctx`, never before while a chain is attached.
    pub(super) fn new(ctx: &LlamaContext<'_>, slots: usize) -> Option<DeviceSamplers> {
        let Some(raw) = raw_context(ctx) else {
            tracing::warn!("sampling on the device is unavailable with this llama-cpp-2 version; sampling on the host");
            return None;
        };
        Some(DeviceSamplers {
            ctx: raw,
            attached: (0..slots).map(|_| None).collect(),
        })
    }

    /// Prepares `slot` for a task that samples by `choice` (`None`: on the host). Answers
    /// whether the task's tokens are chosen on the device; where the backend cannot run
    /// the chain, the slot is left on the host path.
    pub(super) fn prepare(&mut self, slot: usize, choice: Option<DeviceChoice>) -> bool {
        let Some(current) = self.attached.get(slot) else {
            return false;
        };
        let Some(choice) = choice else {
            self.detach(slot);
            return false;
        };
        let kept = current.as_ref().filter(|a| a.choice.same_chain(&choice));
        if kept.is_some_and(|a| a.choice == DeviceChoice::Greedy) {
            return true;
        }
        // A chain for this task: attached, or the source of its random state.
        let Some(fresh) = DeviceChain::build(choice) else {
            self.detach(slot);
            return false;
        };
        if let Some(kept) = kept {
            // SAFETY: both chains are ours and of the same structure (same_chain): llama.cpp
            // copies the samplers' state (the dist sampler's seed and generator), not the
            // graph it holds for the attached one.
            unsafe { sys::llama_sampler_copy(fresh.0.as_ptr(), kept.chain.0.as_ptr()) };
            if let Some(Some(attached)) = self.attached.get_mut(slot) {
                attached.choice = choice;
            }
            return true;
        }
        // SAFETY: the chain outlives its attachment (kept below, or dropped after llama.cpp
        // refused it and erased the slot's entry).
        let offloaded =
            unsafe { sys::llama_set_sampler(self.ctx.as_ptr(), slot as i32, fresh.0.as_ptr()) };
        // llama.cpp no longer refers to the previous chain either way.
        self.attached[slot] = offloaded.then_some(Attached {
            choice,
            chain: fresh,
        });
        if !offloaded {
            tracing::debug!(
                slot,
                ?choice,
                "the backend cannot run this sampler chain; sampling on the host"
            );
        }
        offloaded
    }

    /// Leaves `slot` to the host: llama.cpp copies its logits again.
    fn detach(&mut self, slot: usize) {
        if let Some(Some(_)) = self.attached.get(slot) {
            // SAFETY: detaching; the chain is freed below, after llama.cpp forgets it.
            unsafe { sys::llama_set_sampler(self.ctx.as_ptr(), slot as i32, std::ptr::null_mut()) };
            self.attached[slot] = None;
        }
    }

    /// The token the device chose for batch position `batch_index`, committed to the slot's
    /// chain (its random state moves on only then).
    pub(super) fn take(
        &mut self,
        ctx: &LlamaContext<'_>,
        slot: usize,
        batch_index: i32,
    ) -> Option<LlamaToken> {
        let attached = self.attached.get(slot)?.as_ref()?;
        let token = ctx.sampled_token_ith(batch_index)?;
        // SAFETY: the chain is ours and attached; the engine thread is the only user.
        unsafe { sys::llama_sampler_accept(attached.chain.0.as_ptr(), token.0) };
        Some(token)
    }
}

/// The `llama_context` behind `ctx`. llama-cpp-2 0.1.160 prints it as
/// `LlamaContext { context: 0x… }` (its derived `Debug` of the `Ptr` it holds); the comparison
/// below catches a format that no longer shows it, not a wrong address.
fn raw_context(ctx: &LlamaContext<'_>) -> Option<NonNull<sys::llama_context>> {
    let shown = format!("{ctx:?}");
    let hex = shown.split("context: 0x").nth(1)?;
    let hex = &hex[..hex.find(|c: char| !c.is_ascii_hexdigit())?];
    let address = usize::from_str_radix(hex, 16).ok()?;
    let raw = NonNull::new(address as *mut sys::llama_context)?;
    // SAFETY: sound only if `raw` is the context pointer `ctx` holds, which is what the derived
    // Debug of llama-cpp-2 0.1.160 prints (read in that version's source; Cargo.toml pins the
    // crate exactly, and engine.device_sampling is an opt-in because no API promises it). The
    // pointer is then live for as long as `ctx`, which outlives this call.
    let same = unsafe { sys::llama_n_ctx(raw.as_ptr()) } == ctx.n_ctx()
        && !unsafe { sys::llama_get_model(raw.as_ptr()) }.is_null();
    same.then_some(raw)
}

#[cfg(test)]
#[path = "device_sampling_tests.rs"]
mod tests;
