//! llama.cpp's chat machinery, through `native/chat.cpp`: a Jinja chat template turns a
//! conversation and its tools into the prompt, the tool-call grammar with its lazy triggers,
//! and the parser that turns the output back into content and tool calls — what llama-server
//! does with a request, none of it re-implemented here. This module only crosses the FFI
//! boundary and reads the shim's JSON; what to render and how to use the result is
//! [`super::prompt`]'s and [`super::tools`]'s. [`output`] reads a task's output back
//! with the parser a rendering gave. One of the crate's modules with unsafe code,
//! each block with its reason.

#![allow(unsafe_code)]

use std::ffi::{c_char, c_int, CStr, CString};
use std::ptr::NonNull;

use serde::Deserialize;

mod output;

pub(super) use output::{OutputParser, Parsed, ParsedCall};

/// The shim's opaque handle (`struct warren_chat`).
#[repr(C)]
struct WarrenChat {
    _private: [u8; 0],
}

extern "C" {
    fn warren_chat_init(
        template_source: *const c_char,
        bos_token: *const c_char,
        eos_token: *const c_char,
        add_bos: c_int,
        handle: *mut *mut WarrenChat,
        error: *mut *mut c_char,
    ) -> c_int;
    fn warren_chat_free(handle: *mut WarrenChat);
    fn warren_chat_caps(handle: *const WarrenChat, out: *mut *mut c_char) -> c_int;
    fn warren_chat_apply(
        handle: *const WarrenChat,
        request_json: *const c_char,
        out: *mut *mut c_char,
    ) -> c_int;
    fn warren_chat_parser_init(
        format: c_int,
        generation_prompt: *const c_char,
        parser: *const c_char,
        handle: *mut *mut output::WarrenChatParser,
        error: *mut *mut c_char,
    ) -> c_int;
    fn warren_chat_parser_free(handle: *mut output::WarrenChatParser);
    fn warren_chat_parse(
        handle: *const output::WarrenChatParser,
        generated: *const c_char,
        is_partial: c_int,
        out: *mut *mut c_char,
    ) -> c_int;
    fn warren_chat_text_free(text: *mut c_char);
}

/// A parsed Jinja chat template. Not `Send` (it holds a raw pointer): it lives on the
/// engine thread with the model.
pub(super) struct ChatTemplate {
    handle: NonNull<WarrenChat>,
}

/// What the template made of a conversation (the shim's JSON, field for field).
#[derive(Debug, Clone, Deserialize)]
pub(super) struct Rendered {
    /// The prompt text (a leading BOS already dropped when the tokenizer adds one).
    pub prompt: String,
    /// llama.cpp's `common_chat_format` of the output, for the parser.
    pub format: i32,
    /// That format's name, for logs.
    pub format_name: String,
    /// The text the template ends the prompt with to open the model's turn.
    pub generation_prompt: String,
    /// The tool-call grammar (GBNF); empty without tools.
    pub grammar: String,
    /// Whether the grammar applies only from a trigger on (`tool_choice: "auto"`).
    pub grammar_lazy: bool,
    /// Regular expressions that wake a lazy grammar.
    pub trigger_patterns: Vec<String>,
    /// The literal texts among those triggers (where a call begins).
    pub trigger_words: Vec<String>,
    /// Token texts that wake a lazy grammar.
    pub trigger_tokens: Vec<String>,
    /// Extra texts that end generation.
    pub additional_stops: Vec<String>,
    /// Special tokens the output may hold as syntax (call markers): they must come out as
    /// their text for the parser to see them.
    pub preserved_tokens: Vec<String>,
    /// The serialized output parser.
    pub parser: String,
}

/// Reads what the shim left in `out`, then frees it. `status` 0 means success.
///
/// # Safety
/// `out` must be null or a NUL-terminated string the shim allocated and nobody freed yet.
unsafe fn take(status: c_int, out: *mut c_char) -> Result<String, String> {
    let text = (!out.is_null()).then(|| {
        // SAFETY: the caller's contract: a live NUL-terminated string from the shim.
        unsafe { CStr::from_ptr(out) }
            .to_string_lossy()
            .into_owned()
    });
    // SAFETY: as above; freed once, by the allocator that made it (the shim's free).
    unsafe { warren_chat_text_free(out) };
    match (status, text) {
        (0, Some(text)) => Ok(text),
        (0, None) => Err("llama.cpp's chat code ran out of memory".to_owned()),
        (_, Some(why)) => Err(why.trim().replace('\n', "; ")),
        (_, None) => Err("llama.cpp's chat code failed and ran out of memory".to_owned()),
    }
}

/// The handle one of the shim's init functions set (status 0), or its reason for failing.
///
/// # Safety
/// `error` must be null or a NUL-terminated string the shim allocated and nobody freed yet.
unsafe fn created<T>(
    status: c_int,
    handle: *mut T,
    error: *mut c_char,
) -> Result<NonNull<T>, String> {
    match NonNull::new(handle) {
        Some(handle) if status == 0 => Ok(handle),
        // SAFETY: the caller's contract.
        _ => Err(unsafe { take(1, error) }.unwrap_or_else(|why| why)),
    }
}

fn c_string(what: &str, text: &str) -> Result<CString, String> {
    CString::new(text).map_err(|_| format!("{what} holds a NUL character"))
}

impl ChatTemplate {
    /// Parses a Jinja template. `bos`/`eos` are the model's token texts (the template's
    /// `bos_token`/`eos_token`); `add_bos` is whether the tokenizer adds BOS itself.
    pub(super) fn new(
        source: &str,
        bos: &str,
        eos: &str,
        add_bos: bool,
    ) -> Result<ChatTemplate, String> {
        let source = c_string("the chat template", source)?;
        let bos = c_string("the BOS token", bos)?;
        let eos = c_string("the EOS token", eos)?;
        let mut handle: *mut WarrenChat = std::ptr::null_mut();
        let mut error: *mut c_char = std::ptr::null_mut();
        // SAFETY: the strings are NUL-terminated and outlive the call; the shim catches
        // every exception, and sets `handle` (owned by us from now) or `error`.
        let status = unsafe {
            warren_chat_init(
                source.as_ptr(),
                bos.as_ptr(),
                eos.as_ptr(),
                c_int::from(add_bos),
                &mut handle,
                &mut error,
            )
        };
        // SAFETY: the shim left `error` null or its string, not freed yet.
        let handle = unsafe { created(status, handle, error) }?;
        Ok(ChatTemplate { handle })
    }

    /// llama.cpp's capability flags for the template (`supports_tool_calls`, …).
    pub(super) fn caps(&self) -> Result<serde_json::Value, String> {
        let mut out: *mut c_char = std::ptr::null_mut();
        // SAFETY: `handle` is live (freed only in Drop); the shim sets `out`.
        let text = unsafe { take(warren_chat_caps(self.handle.as_ptr(), &mut out), out) }?;
        serde_json::from_str(&text).map_err(|e| format!("the shim's caps are not JSON: {e}"))
    }

    /// Renders `request` (`{"messages", "tools", "tool_choice", "parallel_tool_calls"}` in
    /// OpenAI's shapes), or llama.cpp's reason for refusing it.
    pub(super) fn apply(&self, request: &serde_json::Value) -> Result<Rendered, String> {
        let request = c_string("the conversation", &request.to_string())?;
        let mut out: *mut c_char = std::ptr::null_mut();
        // SAFETY: `handle` is live; `request` is NUL-terminated and outlives the call.
        let text = unsafe {
            take(
                warren_chat_apply(self.handle.as_ptr(), request.as_ptr(), &mut out),
                out,
            )
        }?;
        serde_json::from_str(&text).map_err(|e| format!("the shim's rendering is not JSON: {e}"))
    }
}

impl Drop for ChatTemplate {
    fn drop(&mut self) {
        // SAFETY: the handle came from warren_chat_init and is freed only here.
        unsafe { warren_chat_free(self.handle.as_ptr()) };
    }
}

#[cfg(test)]
mod tests;
