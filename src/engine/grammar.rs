//! Turns a task's [`OutputConstraint`] into llama.cpp's grammar sampler, and turns llama.cpp's
//! refusal into an `invalid_request` that says why.
//!
//! llama.cpp reports why a grammar is unusable (a missing `root`, an undefined rule, left
//! recursion) only through its log, so while one grammar is built the engine thread collects
//! what llama.cpp logs from that thread. Everything logged still reaches the worker's log.
//! This module builds samplers; it must not sample or decode. It is the crate's one module
//! with unsafe code (the FFI log callback), each block with its reason.

#![allow(unsafe_code)]

use std::cell::RefCell;
use std::ffi::{c_char, c_void, CStr};
use std::sync::OnceLock;

use llama_cpp_2::model::LlamaModel;
use llama_cpp_2::sampling::LlamaSampler;
use llama_cpp_sys_2::{ggml_log_callback, ggml_log_level};

use super::sampling::TokenPicker;
use crate::protocol::{OutputConstraint, Sampling, TaskError};

/// The token picker of a task: its sampling, within its constraint's grammar if it has one.
pub(super) fn picker(
    model: &LlamaModel,
    sampling: &Sampling,
    constraint: Option<&OutputConstraint>,
) -> Result<TokenPicker, TaskError> {
    let grammar = constraint.map(|c| sampler(model, c)).transpose()?;
    Ok(TokenPicker::new(sampling, grammar))
}

/// The grammar sampler for `constraint`, or why llama.cpp refused it.
fn sampler(model: &LlamaModel, constraint: &OutputConstraint) -> Result<LlamaSampler, TaskError> {
    let (grammar, field) = match constraint {
        OutputConstraint::JsonSchema(schema) => {
            // llama-cpp-2 drops the converter's own message, so this names the usual causes.
            let grammar =
                llama_cpp_2::json_schema_to_grammar(&schema.to_string()).map_err(|_| {
                    TaskError::invalid(
                    "`json_schema` could not be turned into a grammar by llama.cpp: it holds an \
                     invalid or unsupported construct (for example a `pattern` that is not a valid \
                     regular expression, or a `$ref` that does not resolve)",
                )
                })?;
            (grammar, "json_schema")
        }
        OutputConstraint::Grammar(grammar) => (grammar.clone(), "grammar"),
    };
    let (built, logged) = logged_while(|| LlamaSampler::grammar(model, &grammar, "root"));
    built.map_err(|e| {
        let why = logged.trim();
        let why = if why.is_empty() {
            e.to_string()
        } else {
            why.replace('\n', "; ")
        };
        TaskError::invalid(format!("`{field}` was rejected by llama.cpp: {why}"))
    })
}

thread_local! {
    /// Set while this thread builds a grammar: what llama.cpp logs meanwhile.
    static CAPTURED: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// The log callback (and its user data) that was installed before ours.
struct Forward {
    callback: ggml_log_callback,
    user_data: usize,
}

static FORWARD: OnceLock<Forward> = OnceLock::new();

/// Puts the capturing callback in front of the one already installed (call once, after
/// llama.cpp's logs were sent to tracing).
pub(super) fn capture_logs() {
    FORWARD.get_or_init(|| {
        let mut callback: ggml_log_callback = None;
        let mut user_data: *mut c_void = std::ptr::null_mut();
        // SAFETY: llama_log_get writes the current callback and user data into the two
        // pointers, which point at live locals; llama_log_set stores a plain function pointer.
        unsafe {
            llama_cpp_sys_2::llama_log_get(&mut callback, &mut user_data);
            llama_cpp_sys_2::llama_log_set(Some(capture_then_forward), std::ptr::null_mut());
        }
        Forward {
            callback,
            user_data: user_data as usize,
        }
    });
}

unsafe extern "C" fn capture_then_forward(
    level: ggml_log_level,
    text: *const c_char,
    _user_data: *mut c_void,
) {
    if !text.is_null() {
        // SAFETY: llama.cpp passes a NUL-terminated string that lives for this call.
        let piece = unsafe { CStr::from_ptr(text) }.to_string_lossy();
        let _ = CAPTURED.try_with(|captured| {
            if let Some(buffer) = captured.borrow_mut().as_mut() {
                buffer.push_str(&piece);
            }
        });
    }
    if let Some(Forward {
        callback: Some(callback),
        user_data,
    }) = FORWARD.get()
    {
        // SAFETY: the callback and user data are those llama.cpp held before, unchanged.
        unsafe { callback(level, text, *user_data as *mut c_void) };
    }
}

/// Runs `build`, returning what llama.cpp logged on this thread meanwhile.
fn logged_while<T>(build: impl FnOnce() -> T) -> (T, String) {
    CAPTURED.with(|captured| *captured.borrow_mut() = Some(String::new()));
    let result = build();
    let logged = CAPTURED.with(|captured| captured.borrow_mut().take().unwrap_or_default());
    (result, logged)
}
