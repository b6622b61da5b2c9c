//! Turns a task's [`OutputConstraint`] into llama.cpp's grammar sampler, and turns llama.cpp's
//! refusal into an `invalid_request` that says why.
//!
//! llama.cpp reports why a grammar is unusable (a missing `root`, an undefined rule, left
//! recursion) only through its log, so while one grammar is built the engine thread collects
//! what llama.cpp logs from that thread. Everything logged still reaches the worker's log.
//! It also answers which tokens a grammar allows next ([`allows`], [`best_allowed`]), for
//! the picker. This module builds samplers and asks them; it must not sample or decode. Its
//! unsafe code is the FFI log callback and the JSON Schema converter of
//! `native/schema_grammar.cpp`, which keeps llama.cpp's message (`lib.rs` lists every module
//! with unsafe code), each block with its reason.

#![allow(unsafe_code)]

use std::cell::RefCell;
use std::ffi::{c_char, c_void, CStr};
use std::rc::Rc;
use std::sync::OnceLock;

use llama_cpp_2::model::LlamaModel;
use llama_cpp_2::sampling::LlamaSampler;
use llama_cpp_2::token::data::LlamaTokenData;
use llama_cpp_2::token::data_array::LlamaTokenDataArray;
use llama_cpp_2::token::LlamaToken;
use llama_cpp_sys_2::{ggml_log_callback, ggml_log_level};

use super::best_logits;
use super::first_bytes::{names_no_tokens, FirstBytes};
use super::grammar_expansion;
use super::grammar_rules::{self, Verdict};
use super::tools::ToolGrammar;
use crate::protocol::{OutputConstraint, TaskError};

/// A task's grammar sampler, and the index that narrows its whole-vocabulary mask.
pub(super) struct Constrained {
    pub grammar: LlamaSampler,
    /// `None` for a grammar that names tokens by id: the whole vocabulary is then asked.
    pub search: Option<Rc<FirstBytes>>,
}

/// Where a task's grammar comes from.
#[derive(Clone, Copy)]
pub(super) enum GrammarSource<'a> {
    /// The caller's `json_schema` or `grammar`.
    Task(&'a OutputConstraint),
    /// The tool-call grammar the chat template gave.
    Tools(&'a ToolGrammar),
}

/// The grammar sampler for `source` and whether its grammar reads text alone, or why
/// llama.cpp refused it.
pub(super) fn sampler(
    model: &LlamaModel,
    source: GrammarSource<'_>,
) -> Result<(LlamaSampler, bool), TaskError> {
    let constraint = match source {
        GrammarSource::Task(constraint) => constraint,
        GrammarSource::Tools(tools) => return tool_sampler(model, tools),
    };
    let (grammar, field) = match constraint {
        OutputConstraint::JsonSchema(schema) => {
            let grammar = schema_grammar(&schema.to_string()).map_err(|why| {
                let why = why.trim().replace('\n', "; ");
                TaskError::invalid(format!("`json_schema` was rejected by llama.cpp: {why}"))
            })?;
            (grammar, "json_schema")
        }
        OutputConstraint::Grammar(grammar) => (grammar.clone(), "grammar"),
    };
    refuse_unbounded(&grammar, &format!("`{field}`"))?;
    let (built, logged) = logged_while(|| LlamaSampler::grammar(model, &grammar, "root"));
    let reads_text = names_no_tokens(&grammar);
    built.map(|sampler| (sampler, reads_text)).map_err(|e| {
        let why = logged.trim();
        let why = if why.is_empty() {
            e.to_string()
        } else {
            why.replace('\n', "; ")
        };
        TaskError::invalid(format!("`{field}` was rejected by llama.cpp: {why}"))
    })
}

/// Refuses a grammar llama.cpp would expand without end or for minutes before llama.cpp
/// sees it: left recursion hidden behind rules that match nothing (llama.cpp refuses only
/// the plain kind) and nested repetitions of what can match nothing (see
/// [`super::grammar_expansion`]). A grammar its parser refuses is refused here too, so that
/// no grammar reaches llama.cpp unchecked.
fn refuse_unbounded(grammar: &str, what: &str) -> Result<(), TaskError> {
    match grammar_rules::check(grammar) {
        Verdict::Runnable => Ok(()),
        Verdict::LeftRecursive(rule) => Err(TaskError::invalid(format!(
            "{what} was rejected: left recursion through rule `{rule}` (it can begin with \
             itself, perhaps after rules that match nothing), which llama.cpp cannot run"
        ))),
        Verdict::TooManyStacks(rule) => Err(TaskError::invalid(format!(
            "{what} was rejected: expanding rule `{rule}` could hold more parse stacks than \
             llama.cpp can build in time (over {} at once, or {} visited; nested repetitions \
             of something that can match nothing multiply them)",
            grammar_expansion::MAX_STACKS,
            grammar_expansion::MAX_VISITED
        ))),
        Verdict::Unparsed => Err(TaskError::invalid(format!(
            "{what} was rejected by llama.cpp: failed to parse grammar (its parser's \
             complaint is in the worker's log)"
        ))),
    }
}

/// The sampler of a tool-call grammar: lazy (woken by its triggers) or applying from the
/// start, then advanced past the generation prompt it begins with.
fn tool_sampler(
    model: &LlamaModel,
    tools: &ToolGrammar,
) -> Result<(LlamaSampler, bool), TaskError> {
    refuse_unbounded(&tools.grammar, "the tool-call grammar")?;
    let (built, logged) = logged_while(|| {
        if tools.lazy {
            LlamaSampler::grammar_lazy_patterns(
                model,
                &tools.grammar,
                "root",
                &tools.patterns,
                &tools.trigger_tokens,
            )
        } else {
            LlamaSampler::grammar(model, &tools.grammar, "root")
        }
    });
    let mut sampler = built.map_err(|e| {
        let why = logged.trim();
        let why = if why.is_empty() {
            e.to_string()
        } else {
            why.replace('\n', "; ")
        };
        TaskError::invalid(format!(
            "the tool-call grammar was rejected by llama.cpp: {why}"
        ))
    })?;
    let vocab = model.vocab();
    for (i, &token) in tools.prefill.iter().enumerate() {
        // As llama.cpp's own sampler: some tokenizers put a space before the first special
        // token, which the text (and so the grammar) does not have.
        let piece = vocab.token_to_piece(token, true, None);
        let starts_with_space = |bytes: &[u8]| bytes.first().is_some_and(u8::is_ascii_whitespace);
        if i == 0 && starts_with_space(&piece) && !starts_with_space(tools.prefill_text.as_bytes())
        {
            continue;
        }
        // Deterministic for this template and model: not worth a retry.
        sampler.try_accept(token).map_err(|_| {
            TaskError::invalid(
                "this model's chat template and its tool-call grammar disagree: the grammar \
                 does not begin with the text that opens the model's answer",
            )
        })?;
    }
    Ok((sampler, names_no_tokens(&tools.grammar)))
}

extern "C" {
    /// `native/schema_grammar.cpp`: llama.cpp's converter, its exception text kept.
    fn warren_json_schema_to_grammar(schema_json: *const c_char, out: *mut *mut c_char) -> i32;
    fn warren_schema_text_free(text: *mut c_char);
}

/// llama.cpp's GBNF grammar for a JSON Schema, or llama.cpp's reason for refusing it.
/// (llama-cpp-2's own `json_schema_to_grammar` returns only a status code.)
fn schema_grammar(schema_json: &str) -> Result<String, String> {
    let schema = std::ffi::CString::new(schema_json)
        .map_err(|_| "the schema holds a NUL character".to_owned())?;
    let mut out: *mut c_char = std::ptr::null_mut();
    // SAFETY: `schema` is a NUL-terminated string that outlives the call; the shim catches
    // every C++ exception and sets `out` to null or to a malloc'd NUL-terminated string,
    // which is copied here and then freed once, by the shim's own free.
    let (status, text) = unsafe {
        let status = warren_json_schema_to_grammar(schema.as_ptr(), &mut out);
        let text = (!out.is_null()).then(|| CStr::from_ptr(out).to_string_lossy().into_owned());
        warren_schema_text_free(out);
        (status, text)
    };
    match (status, text) {
        (0, Some(grammar)) => Ok(grammar),
        (_, Some(why)) if status != 0 => Err(why),
        _ => Err("llama.cpp's converter ran out of memory".to_owned()),
    }
}

/// How many of the most likely tokens [`best_allowed`] tries before giving up.
pub(super) const SCANNED: usize = 512;

/// Whether the grammar, in its current state, lets `token` come next.
pub(super) fn allows(grammar: &mut LlamaSampler, token: LlamaToken) -> bool {
    let mut one = LlamaTokenDataArray::new(vec![LlamaTokenData::new(token, 0.0, 0.0)], false);
    one.apply_sampler(grammar);
    one.data.first().is_some_and(|d| d.logit().is_finite())
}

/// The `wanted` most likely tokens the grammar allows, most likely first (the lower id first
/// on equal logits, as an argmax takes it), found by trying the [`SCANNED`] most likely
/// tokens in order; `None` when fewer of them fit.
pub(super) fn best_allowed(
    grammar: &mut LlamaSampler,
    logits: &[f32],
    wanted: usize,
) -> Option<Vec<LlamaTokenData>> {
    let order = best_logits::top_k(logits, SCANNED);
    let mut allowed = Vec::with_capacity(wanted);
    for (id, logit) in order {
        if logit.is_finite() && allows(grammar, LlamaToken(id)) {
            allowed.push(LlamaTokenData::new(LlamaToken(id), logit, 0.0));
            if allowed.len() == wanted {
                return Some(allowed);
            }
        }
    }
    None
}

thread_local! {
    /// Set while this thread builds a grammar: what llama.cpp logs meanwhile.
    static CAPTURED: RefCell<Option<String>> = const { RefCell::new(None) };
    /// The line llama.cpp is logging on this thread (it may come in pieces), and its level.
    static LINE: RefCell<(ggml_log_level, String)> =
        const { RefCell::new((llama_cpp_sys_2::GGML_LOG_LEVEL_INFO, String::new())) };
}

/// Sends llama.cpp's own log (not ggml's, which stays llama-cpp-2's) to [`capture_and_trace`]
/// (call once, after llama-cpp-2 sent both logs to tracing). Nothing of the callback it
/// replaces is kept or called: llama.cpp's lines are traced here, under the target
/// `llama.cpp` at llama.cpp's level (the default log filter keeps it to warnings).
pub(super) fn capture_logs() {
    static INSTALLED: OnceLock<()> = OnceLock::new();
    INSTALLED.get_or_init(|| {
        let mut ggml_callback: ggml_log_callback = None;
        let mut ggml_user_data: *mut c_void = std::ptr::null_mut();
        // SAFETY: the getter writes ggml's current callback and user data into live locals;
        // the setters store a function pointer and user data, which llama.cpp and ggml only
        // pass back to that function. llama_log_set also sets ggml's callback, so ggml's own
        // pair is put back as it was. `capture_and_trace` reads no user data.
        unsafe {
            llama_cpp_sys_2::ggml_log_get(&mut ggml_callback, &mut ggml_user_data);
            llama_cpp_sys_2::llama_log_set(Some(capture_and_trace), std::ptr::null_mut());
            llama_cpp_sys_2::ggml_log_set(ggml_callback, ggml_user_data);
        }
    });
}

unsafe extern "C" fn capture_and_trace(
    level: ggml_log_level,
    text: *const c_char,
    _user_data: *mut c_void,
) {
    if text.is_null() {
        return;
    }
    // SAFETY: llama.cpp passes a NUL-terminated string that lives for this call.
    let piece = unsafe { CStr::from_ptr(text) }.to_string_lossy();
    let _ = CAPTURED.try_with(|captured| {
        if let Some(buffer) = captured.borrow_mut().as_mut() {
            buffer.push_str(&piece);
        }
    });
    let _ = LINE.try_with(|line| {
        let (line_level, line) = &mut *line.borrow_mut();
        if level != llama_cpp_sys_2::GGML_LOG_LEVEL_CONT {
            *line_level = level;
        }
        line.push_str(&piece);
        while let Some(end) = line.find('\n') {
            let whole: String = line.drain(..=end).collect();
            trace_line(*line_level, whole.trim_end());
        }
    });
}

/// One whole line of llama.cpp's log, at the level it gave.
fn trace_line(level: ggml_log_level, line: &str) {
    match level {
        llama_cpp_sys_2::GGML_LOG_LEVEL_ERROR => tracing::error!(target: "llama.cpp", "{line}"),
        llama_cpp_sys_2::GGML_LOG_LEVEL_WARN => tracing::warn!(target: "llama.cpp", "{line}"),
        llama_cpp_sys_2::GGML_LOG_LEVEL_DEBUG => tracing::debug!(target: "llama.cpp", "{line}"),
        _ => tracing::info!(target: "llama.cpp", "{line}"),
    }
}

/// Runs `build`, returning what llama.cpp logged on this thread meanwhile.
fn logged_while<T>(build: impl FnOnce() -> T) -> (T, String) {
    CAPTURED.with(|captured| *captured.borrow_mut() = Some(String::new()));
    let result = build();
    let logged = CAPTURED.with(|captured| captured.borrow_mut().take().unwrap_or_default());
    (result, logged)
}

#[cfg(test)]
mod tests {
    use super::schema_grammar;

    #[test]
    fn a_schema_becomes_llama_cpps_grammar() {
        let grammar = schema_grammar(
            r#"{"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}"#,
        )
        .expect("a plain schema converts");
        assert!(grammar.contains("root ::="), "{grammar}");
    }

    #[test]
    fn a_schema_llama_cpp_refuses_comes_back_with_llama_cpps_reason() {
        let unresolved = schema_grammar(r##"{"$ref": "#/definitions/missing"}"##).unwrap_err();
        assert!(unresolved.contains("cannot resolve $ref"), "{unresolved}");
        let pattern =
            schema_grammar(r#"{"type": "string", "pattern": "^(unbalanced$"}"#).unwrap_err();
        assert!(pattern.contains("unbalanced parentheses"), "{pattern}");
        let not_json = schema_grammar("{").unwrap_err();
        assert!(!not_json.is_empty());
    }
}
