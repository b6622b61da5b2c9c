//! The embed role's llama.cpp model and context, owned here through llama-cpp-sys-2's raw
//! calls: llama-cpp-2 creates a context only from its own parameters, which cannot carry an
//! evaluation callback, and the embed role needs one. A decoder model's graph ends in its
//! output layer (262,144 logits per token for the default model), which an embedding never
//! reads and which is most of a pooled decode's work; llama.cpp computes it for every token
//! of an embeddings context. The callback stops the graph once the embeddings tensor is
//! computed (ggml-backend.h: "if the user returns false, the scheduler will cancel the graph
//! compute"). The context pools nothing (pooling "none": one vector per token); the caller
//! pools each input's vectors. A graph may name several tensors so (a model with dense
//! layers after its norm renames each step's output); llama.cpp reads the last, so a first
//! decode at load counts them and later decodes stop at the last. The stop ends only the
//! part of the graph on the device computing it: where the output layer lies in another part
//! (layers split between a GPU and the CPU), or comes before the last embeddings tensor, it
//! is computed anyway. Then, or were llama.cpp to rename that tensor, the vectors stay the
//! same, decodes are slower, a warning says so once, and [`EmbeddingModel::early_stops`]
//! does not count the decode (a test checks it does on the default model).
#![allow(unsafe_code)]

use std::ffi::{c_void, CStr, CString};
use std::path::Path;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;

use llama_cpp_sys_2 as sys;

use super::{params, EngineStartError};
use crate::config::EngineSettings;

/// The name llama.cpp's graph gives its embeddings output (llama-graph.cpp's
/// `build_pooling`); with pooling "none" it is the final norm's output, one row per token.
const EMBEDDINGS_TENSOR: &[u8] = b"result_embd_pooled";
/// The name llama.cpp's models give their output layer's logits.
const LOGITS_TENSOR: &[u8] = b"result_output";

/// A model loaded for embedding and its one context. Not `Send` (raw pointers): it lives and
/// dies on the engine thread.
pub(super) struct EmbeddingModel {
    model: NonNull<sys::llama_model>,
    ctx: NonNull<sys::llama_context>,
    /// The callback's state. Shared (read through its address by the callback, atomics
    /// only) and kept here, so it outlives the context, which holds its address.
    stop: Arc<GraphStop>,
    /// Decodes whose graph stopped after the embeddings, before the output layer.
    early_stops: u64,
    /// Whether a decode that computed the output layer was reported.
    reported_full_graph: bool,
    /// Rows one decode may take.
    capacity: usize,
    width: usize,
}

/// Where the callback stops a decode's graph, and what happened in the current decode.
#[derive(Default)]
struct GraphStop {
    /// Embeddings tensors computed so far in the current graph.
    seen: AtomicU32,
    /// Stop after this many (the graph's last); 0 while counting them.
    stop_at: AtomicU32,
    /// The callback stopped the graph.
    stopped: AtomicBool,
    /// The graph went on after a stop (another device's part), or reached the output layer
    /// before it.
    went_on: AtomicBool,
}

/// One row of a decode: a token at a position of a sequence. Every row is an output.
#[derive(Debug, Clone, Copy)]
pub(super) struct Row {
    pub token: i32,
    pub position: i32,
    pub sequence: i32,
}

impl EmbeddingModel {
    /// Loads `settings.model_path` (with `settings.n_gpu_layers` on a GPU) and creates an
    /// embeddings context of `rows` cells and rows per decode, shared by `sequences`
    /// sequences. llama.cpp's backend must be initialised first.
    pub(super) fn load(
        settings: &EngineSettings,
        rows: u32,
        sequences: u32,
    ) -> Result<Self, EngineStartError> {
        let path = path_c(&settings.model_path)?;
        // SAFETY: returns a plain struct of defaults; no pointers in it are owned.
        let mut model_params = unsafe { sys::llama_model_default_params() };
        model_params.n_gpu_layers = i32::try_from(settings.n_gpu_layers).unwrap_or(i32::MAX);
        // SAFETY: `path` is a NUL-terminated string alive for the call; the result is null or
        // a model this value owns from here on, freed once in `drop` (or below on failure).
        let model = unsafe { sys::llama_model_load_from_file(path.as_ptr(), model_params) };
        let model = NonNull::new(model).ok_or_else(|| {
            EngineStartError::Llama(format!("loading {}", settings.model_path.display()))
        })?;
        let stop = Arc::<GraphStop>::default();
        let params = context_params(settings, rows, sequences, &stop);
        // SAFETY: `model` is the live model loaded above; `params.cb_eval_user_data` points
        // at the shared state, which this value keeps until after the context is freed.
        let ctx = unsafe { sys::llama_init_from_model(model.as_ptr(), params) };
        let Some(ctx) = NonNull::new(ctx) else {
            // SAFETY: the model was loaded above and nothing else holds it.
            unsafe { sys::llama_model_free(model.as_ptr()) };
            return Err(EngineStartError::Llama(
                "creating the embedding context".to_owned(),
            ));
        };
        // SAFETY: `model` is live; the call only reads it.
        let width = unsafe { sys::llama_model_n_embd_out(model.as_ptr()) };
        let mut loaded = EmbeddingModel {
            model,
            ctx,
            stop,
            early_stops: 0,
            reported_full_graph: false,
            capacity: rows as usize,
            width: usize::try_from(width).unwrap_or(0),
        };
        loaded.count_embeddings_tensors()?;
        Ok(loaded)
    }

    /// One decode of one token, stopping nowhere, to count the graph's embeddings tensors;
    /// later decodes stop after the last.
    fn count_embeddings_tensors(&mut self) -> Result<(), EngineStartError> {
        let row = Row {
            token: self.padding_token(),
            position: 0,
            sequence: 0,
        };
        self.reported_full_graph = true;
        let decoded = self.decode(&[row]);
        self.reported_full_graph = false;
        self.clear();
        decoded.map_err(|status| {
            EngineStartError::Llama(format!(
                "the embedding context could not decode a token (status {status})"
            ))
        })?;
        let seen = self.stop.seen.load(Ordering::Relaxed);
        self.stop.stop_at.store(seen, Ordering::Relaxed);
        Ok(())
    }

    /// Floats in one token's vector.
    pub(super) fn width(&self) -> usize {
        self.width
    }

    /// Tokens in the model's vocabulary.
    pub(super) fn vocabulary_size(&self) -> i32 {
        // SAFETY: the vocabulary belongs to the live model; the call only reads it.
        unsafe { sys::llama_vocab_n_tokens(self.vocab()) }
    }

    /// The token that pads rows: the model's beginning-of-text token.
    pub(super) fn padding_token(&self) -> i32 {
        // SAFETY: as in `vocabulary_size`.
        let bos = unsafe { sys::llama_vocab_bos(self.vocab()) };
        if bos < 0 {
            0
        } else {
            bos
        }
    }

    /// The GGUF's `general.name`, when it has one.
    pub(super) fn name(&self) -> Option<String> {
        let mut buffer = vec![0u8; 256];
        loop {
            // SAFETY: the key is NUL-terminated; llama.cpp writes at most `buffer.len()`
            // bytes, NUL included, and returns the value's whole length or a negative number.
            let length = unsafe {
                sys::llama_model_meta_val_str(
                    self.model.as_ptr(),
                    c"general.name".as_ptr(),
                    buffer.as_mut_ptr().cast(),
                    buffer.len(),
                )
            };
            let length = usize::try_from(length).ok()?;
            if length < buffer.len() {
                buffer.truncate(length);
                return String::from_utf8(buffer).ok();
            }
            buffer.resize(length + 1, 0);
        }
    }

    /// `text` as tokens, with the special tokens (BOS) the model adds; None where llama.cpp
    /// cannot take it (longer than an i32 of bytes).
    pub(super) fn tokenize(&self, text: &str) -> Option<Vec<i32>> {
        let length = i32::try_from(text.len()).ok()?;
        // A token covers at least one byte; the specials add a few.
        let mut tokens = vec![0i32; text.len() + 8];
        for _ in 0..2 {
            let room = i32::try_from(tokens.len()).ok()?;
            // SAFETY: `text` is valid for `length` bytes (no NUL needed); llama.cpp writes at
            // most `room` tokens into `tokens`, which holds that many.
            let n = unsafe {
                sys::llama_tokenize(
                    self.vocab(),
                    text.as_ptr().cast(),
                    length,
                    tokens.as_mut_ptr(),
                    room,
                    true,
                    false,
                )
            };
            match usize::try_from(n) {
                Ok(n) => {
                    tokens.truncate(n);
                    return Some(tokens);
                }
                // Negative: the buffer was short by that much; grow it once and try again.
                Err(_) => tokens.resize(n.unsigned_abs() as usize, 0),
            }
        }
        None
    }

    /// Decodes `rows` (at most the context's capacity) into an empty cache; each row's
    /// vector is then [`Self::row_vector`]. llama.cpp's status code on failure.
    pub(super) fn decode(&mut self, rows: &[Row]) -> Result<(), i32> {
        if rows.is_empty() || rows.len() > self.capacity {
            return Err(-1);
        }
        let mut tokens: Vec<i32> = rows.iter().map(|r| r.token).collect();
        let mut positions: Vec<i32> = rows.iter().map(|r| r.position).collect();
        let mut sequences: Vec<i32> = rows.iter().map(|r| r.sequence).collect();
        let mut sequence_ptrs: Vec<*mut i32> =
            sequences.iter_mut().map(|s| s as *mut i32).collect();
        let mut one_sequence = vec![1i32; rows.len()];
        let mut outputs = vec![1i8; rows.len()];
        let batch = sys::llama_batch {
            n_tokens: rows.len() as i32,
            token: tokens.as_mut_ptr(),
            embd: std::ptr::null_mut(),
            pos: positions.as_mut_ptr(),
            n_seq_id: one_sequence.as_mut_ptr(),
            seq_id: sequence_ptrs.as_mut_ptr(),
            logits: outputs.as_mut_ptr(),
        };
        self.stop.seen.store(0, Ordering::Relaxed);
        self.stop.stopped.store(false, Ordering::Relaxed);
        self.stop.went_on.store(false, Ordering::Relaxed);
        // SAFETY: every array the batch points to holds `n_tokens` entries (each `seq_id`
        // entry points at one i32 of `sequences`) and outlives the call, which only reads
        // them; the context is live and used by this thread alone.
        let status = unsafe { sys::llama_decode(self.ctx.as_ptr(), batch) };
        if status != 0 {
            return Err(status);
        }
        let early =
            self.stop.stopped.load(Ordering::Relaxed) && !self.stop.went_on.load(Ordering::Relaxed);
        if early {
            self.early_stops += 1;
            if self.early_stops == 1 {
                tracing::info!("embedding decodes stop before the model's output layer");
            }
        } else if !self.reported_full_graph {
            self.reported_full_graph = true;
            tracing::warn!(
                "llama.cpp computed the model's output layer in an embedding decode, which \
                 embeddings do not need: the vectors are right, decodes are slower (the \
                 output layer on another device than the last layer, or a llama.cpp without \
                 the `result_embd_pooled` tensor)"
            );
        }
        Ok(())
    }

    /// The vector of row `row` of the last decode; None when llama.cpp has none.
    pub(super) fn row_vector(&self, row: usize) -> Option<&[f32]> {
        let row = i32::try_from(row).ok()?;
        // SAFETY: the context is live; llama.cpp returns null for a row it has no vector of.
        let vector = unsafe { sys::llama_get_embeddings_ith(self.ctx.as_ptr(), row) };
        let vector = NonNull::new(vector)?;
        // SAFETY: a non-null row points at `width` floats in the context's output buffer,
        // which stays put until the next decode or the context's end; both need `&mut self`
        // or `self` gone, which the returned borrow of `self` rules out. The first read after a
        // decode may reorder the buffer's rows (llama.cpp's output_reorder), before it returns
        // this pointer and while no slice of an earlier read can exist (that read's borrow
        // ended with the decode's `&mut self`); later reads find nothing to reorder.
        Some(unsafe { std::slice::from_raw_parts(vector.as_ptr(), self.width) })
    }

    /// Empties the KV cache: nothing of one decode's inputs reaches the next.
    pub(super) fn clear(&mut self) {
        // SAFETY: the context is live; its memory belongs to it.
        unsafe { sys::llama_memory_clear(sys::llama_get_memory(self.ctx.as_ptr()), true) };
    }

    /// Decodes stopped right after the embeddings, so far.
    #[cfg(test)]
    pub(super) fn early_stops(&self) -> u64 {
        self.early_stops
    }

    fn vocab(&self) -> *const sys::llama_vocab {
        // SAFETY: the model is live; the vocabulary lives as long as it.
        unsafe { sys::llama_model_get_vocab(self.model.as_ptr()) }
    }
}

impl Drop for EmbeddingModel {
    fn drop(&mut self) {
        // SAFETY: both were created in `load` and are freed once, the context (which uses
        // the model) first; the callback's state, a field, is dropped after this.
        unsafe {
            sys::llama_free(self.ctx.as_ptr());
            sys::llama_model_free(self.model.as_ptr());
        }
    }
}

/// ggml's evaluation callback. Asked (`ask`) before each node whether it wants to see it,
/// it wants only embeddings tensors; shown the last one, computed, it stops the graph.
unsafe extern "C" fn stop_after_embeddings(
    tensor: *mut sys::ggml_tensor,
    ask: bool,
    stop: *mut c_void,
) -> bool {
    if tensor.is_null() {
        return !ask;
    }
    // SAFETY: ggml passes a node of the graph it is computing, alive during the call; a
    // tensor's name is a fixed array that ggml keeps NUL-terminated.
    let name = unsafe { CStr::from_ptr(sys::ggml_get_name(tensor)) }.to_bytes();
    let is_embeddings = name == EMBEDDINGS_TENSOR;
    // SAFETY: the user data is the `GraphStop` the context's `EmbeddingModel` shares, which
    // outlives the context; it is only read and changed through atomics.
    let stop = unsafe { &*(stop as *const GraphStop) };
    if ask {
        if stop.stopped.load(Ordering::Relaxed) || name == LOGITS_TENSOR {
            stop.went_on.store(true, Ordering::Relaxed);
        }
        return is_embeddings;
    }
    if !is_embeddings {
        return true;
    }
    let seen = stop.seen.fetch_add(1, Ordering::Relaxed) + 1;
    if seen == stop.stop_at.load(Ordering::Relaxed) {
        stop.stopped.store(true, Ordering::Relaxed);
        // A decode llama.cpp splits into several micro-batches counts each graph anew.
        stop.seen.store(0, Ordering::Relaxed);
        return false;
    }
    true
}

/// The raw context parameters: `rows` cells and rows per decode, one KV cache for
/// `sequences` sequences, one vector per token, the engine's threads, flash attention and
/// KV cache type, and the early stop.
fn context_params(
    settings: &EngineSettings,
    rows: u32,
    sequences: u32,
    stop: &Arc<GraphStop>,
) -> sys::llama_context_params {
    // SAFETY: returns a plain struct of defaults; no pointers in it are owned.
    let mut raw = unsafe { sys::llama_context_default_params() };
    let threads = settings.effective_threads();
    raw.n_ctx = rows;
    raw.n_batch = rows;
    raw.n_ubatch = rows;
    raw.n_seq_max = sequences;
    raw.kv_unified = true;
    raw.swa_full = params::full_swa_cache(settings);
    raw.embeddings = true;
    raw.pooling_type = sys::LLAMA_POOLING_TYPE_NONE;
    raw.n_threads = threads;
    raw.n_threads_batch = threads;
    raw.flash_attn_type = params::flash_attention_policy(settings.flash_attention);
    let kv = sys::ggml_type::from(params::kv_type(settings.kv_cache_type));
    raw.type_k = kv;
    raw.type_v = kv;
    raw.cb_eval = Some(stop_after_embeddings);
    raw.cb_eval_user_data = Arc::as_ptr(stop) as *mut c_void;
    raw
}

fn path_c(path: &Path) -> Result<CString, EngineStartError> {
    let text = path.to_str().ok_or_else(|| {
        EngineStartError::Llama(format!("model path {} is not UTF-8", path.display()))
    })?;
    CString::new(text).map_err(|_| {
        EngineStartError::Llama(format!("model path {} holds a NUL byte", path.display()))
    })
}
