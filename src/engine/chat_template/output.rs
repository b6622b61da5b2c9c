//! A task's output read back into content and tool calls, by the parser llama.cpp's chat
//! code returned with the task's rendering (`common_chat_parse`, through the shim), loaded
//! once per task. One of the crate's modules with unsafe code: the calls across the FFI
//! (load, parse, free), each with its reason.

#![allow(unsafe_code)]

use std::ffi::{c_char, c_int};
use std::ptr::NonNull;

use serde::Deserialize;

use super::{
    c_string, created, take, warren_chat_parse, warren_chat_parser_free, warren_chat_parser_init,
    Rendered,
};

/// One tool call read from the output.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub(in crate::engine) struct ParsedCall {
    /// The function's name.
    pub name: String,
    /// Its arguments, as the JSON text the model wrote.
    pub arguments: String,
    /// The call's id when the format has the model write one (Mistral's do, and their
    /// templates check it on the next turn); empty otherwise.
    #[serde(default)]
    pub id: String,
}

/// The output split into what the model said and what it called.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub(in crate::engine) struct Parsed {
    /// Text outside tool calls.
    pub content: String,
    /// The calls, in order.
    pub tool_calls: Vec<ParsedCall>,
}

/// The shim's opaque handle (`struct warren_chat_parser`).
#[repr(C)]
pub(super) struct WarrenChatParser {
    _private: [u8; 0],
}

/// The parser a rendering returned, loaded once to read that task's output. Not `Send` (it
/// holds a raw pointer): it lives on the engine thread with its task.
#[derive(Debug)]
pub(in crate::engine) struct OutputParser {
    handle: NonNull<WarrenChatParser>,
}

impl OutputParser {
    /// The parser of `rendered`, or llama.cpp's reason for refusing it.
    pub(in crate::engine) fn of(rendered: &Rendered) -> Result<OutputParser, String> {
        let generation_prompt = c_string("the generation prompt", &rendered.generation_prompt)?;
        let parser = c_string("the output parser", &rendered.parser)?;
        let mut handle: *mut WarrenChatParser = std::ptr::null_mut();
        let mut error: *mut c_char = std::ptr::null_mut();
        // SAFETY: the strings are NUL-terminated and outlive the call; the shim catches
        // every exception, and sets `handle` (owned by us from now) or `error`.
        let status = unsafe {
            warren_chat_parser_init(
                rendered.format,
                generation_prompt.as_ptr(),
                parser.as_ptr(),
                &mut handle,
                &mut error,
            )
        };
        // SAFETY: the shim left `error` null or its string, not freed yet.
        let handle = unsafe { created(status, handle, error) }?;
        Ok(OutputParser { handle })
    }

    /// Splits `text` into content and tool calls; `partial` while it may still grow.
    pub(in crate::engine) fn parse(&self, text: &str, partial: bool) -> Result<Parsed, String> {
        let text = c_string("the output", text)?;
        let mut out: *mut c_char = std::ptr::null_mut();
        // SAFETY: `handle` is live (freed only in Drop) and only read by the shim; `text` is
        // NUL-terminated and outlives the call; the shim catches every exception and sets
        // `out`.
        let json = unsafe {
            take(
                warren_chat_parse(
                    self.handle.as_ptr(),
                    text.as_ptr(),
                    c_int::from(partial),
                    &mut out,
                ),
                out,
            )
        }?;
        serde_json::from_str(&json).map_err(|e| format!("the shim's parse is not JSON: {e}"))
    }
}

impl Drop for OutputParser {
    fn drop(&mut self) {
        // SAFETY: the handle came from warren_chat_parser_init, is owned by this value alone
        // and is freed once, here.
        unsafe { warren_chat_parser_free(self.handle.as_ptr()) };
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::super::tests::{asked, gemma, weather_tool};
    use super::*;

    #[test]
    fn a_call_in_the_output_is_parsed_back() {
        let rendered = asked("Weather in Paris?", "required");
        let parser = OutputParser::of(&rendered).unwrap();
        let parsed = parser
            .parse(
                "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n</tool_call>",
                false,
            )
            .unwrap();
        assert_eq!(parsed.tool_calls.len(), 1, "{parsed:?}");
        assert_eq!(parsed.tool_calls[0].name, "get_weather");
        let arguments: serde_json::Value =
            serde_json::from_str(&parsed.tool_calls[0].arguments).unwrap();
        assert_eq!(arguments, json!({"city": "Paris"}));
    }

    #[test]
    fn output_that_is_no_call_is_refused_or_content() {
        let rendered = gemma()
            .apply(&json!({"messages": [{"role": "user", "content": "Hi"}],
                           "tools": [weather_tool()], "tool_choice": "auto"}))
            .unwrap();
        let parser = OutputParser::of(&rendered).unwrap();
        let parsed = parser.parse("Hello there.", false).unwrap();
        assert_eq!(parsed.content, "Hello there.");
        assert!(parsed.tool_calls.is_empty());
    }
}
