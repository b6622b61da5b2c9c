//! Tool calling in the engine, during and after generation: [`ToolOutput`] reads a
//! tool-using task's text with the parser its rendering gave ([`super::tools`]) into content
//! and [`ToolCall`]s, and while streaming turns each re-read into the pieces OpenAI streams
//! (content, then per call its id and name, then its arguments as they grow). A call of the
//! answer function ([`super::tools::answer_tool`]) is read as the answer's text. What is
//! parsed and how is llama.cpp's; what this module owns is which pieces go out when, and the
//! calls' ids.

use llama_cpp_2::token::LlamaToken;
use serde_json::Value;

use super::chat_template::{OutputParser, Parsed, ParsedCall};
use super::Delta;
use crate::protocol::{FinishReason, FunctionDelta, FunctionKind, ToolCall, ToolCallDelta};

/// A call as sent so far in a stream.
#[derive(Debug, Clone, PartialEq)]
struct SentCall {
    id: String,
    arguments: String,
}

/// Reads a tool-using task's output into content and calls, streamed or at the end.
#[derive(Debug)]
pub(super) struct ToolOutput {
    parser: OutputParser,
    /// Text the prompt ended with that belongs to the answer (the start of a required call).
    prefix: String,
    /// Whether more than one call may come back; when not, generation ends with the first.
    parallel: bool,
    /// Special tokens the output holds as syntax, rendered as their text.
    preserved: Vec<LlamaToken>,
    /// The answer function's name, when the task's answer format is one.
    answer: Option<String>,
    /// Content already streamed.
    content_sent: String,
    /// Calls already streamed (at least their id and name).
    calls_sent: Vec<SentCall>,
    /// The literal texts that open a call (where one begins before its name can be read).
    openers: Vec<String>,
    /// Stop strings the template asks for (a turn's end written as text): they apply inside
    /// calls too, unlike the task's own.
    turn_ends: Vec<String>,
    /// The last partial read and the text it read: after each token [`ToolOutput::ends_at`]
    /// and [`ToolOutput::advance`] read the same text, and a read costs the whole text.
    last_read: Option<(String, Parsed)>,
}

/// Whether `call`'s arguments are a closed JSON object.
fn arguments_closed(call: &ParsedCall) -> bool {
    serde_json::from_str::<Value>(&call.arguments).is_ok_and(|args| args.is_object())
}

/// A tool-using task's output, read.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct ToolAnswer {
    /// What the model said besides its calls.
    pub content: String,
    /// Its calls.
    pub calls: Vec<ToolCall>,
    /// `tool_calls` when it made any and ended by itself; else the reason generation ended.
    pub finish_reason: FinishReason,
}

impl ToolOutput {
    /// Reads output with `parser`; `parallel` false keeps only the first call.
    pub(super) fn new(parser: OutputParser, prefix: String, parallel: bool) -> ToolOutput {
        ToolOutput {
            parser,
            prefix,
            parallel,
            preserved: Vec::new(),
            answer: None,
            content_sent: String::new(),
            calls_sent: Vec::new(),
            openers: Vec::new(),
            turn_ends: Vec::new(),
            last_read: None,
        }
    }

    /// The same reader, with the texts that open a call and the template's stop strings.
    pub(super) fn delimited(mut self, openers: Vec<String>, turn_ends: Vec<String>) -> ToolOutput {
        self.openers = openers;
        self.turn_ends = turn_ends;
        self
    }

    /// The template's stop strings.
    pub(super) fn turn_ends(&self) -> &[String] {
        &self.turn_ends
    }

    /// The same reader, rendering `tokens` (special ones) as their text.
    pub(super) fn preserving(mut self, tokens: Vec<LlamaToken>) -> ToolOutput {
        self.preserved = tokens;
        self
    }

    /// The same reader, reading a call of the function `answer` as the answer's text.
    pub(super) fn answering(mut self, answer: Option<String>) -> ToolOutput {
        self.answer = answer;
        self
    }

    /// Whether `token` is a special token the output holds as syntax (its text is kept).
    pub(super) fn preserves(&self, token: LlamaToken) -> bool {
        self.preserved.contains(&token)
    }

    /// Whether generation should end at `text`: one call is all the task takes and its
    /// arguments object is closed, or the answer function's is (the answer ends the turn), or
    /// the answer begins after another call (it would answer before the call's result).
    /// (llama.cpp's grammar lets calls repeat; a model that does not end its turn would fill
    /// its token limit with more.)
    pub(super) fn ends_at(&mut self, text: &str) -> bool {
        if self.parallel && self.answer.is_none() {
            return false;
        }
        let Ok(parsed) = self.read_partial(text) else {
            return false;
        };
        let closed = arguments_closed;
        match parsed.tool_calls.as_slice() {
            [] => false,
            [first, ..] if !self.parallel || self.is_answer(first) => closed(first),
            [_, later @ ..] => later
                .iter()
                .any(|call| self.is_answer(call) && !call.arguments.is_empty()),
        }
    }

    /// Whether a call is open at the end of `text` (the text so far): its opening written and
    /// its arguments object not closed yet.
    pub(super) fn call_open(&mut self, text: &str) -> bool {
        let whole = format!("{}{text}", self.prefix);
        let opened: usize = (self.openers.iter())
            .map(|opener| whole.matches(opener.as_str()).count())
            .sum();
        let Ok(parsed) = self.read_partial(text) else {
            return opened > 0;
        };
        match parsed.tool_calls.last() {
            Some(last) if !arguments_closed(last) => true,
            // An opening whose call has no name read yet.
            _ => opened > parsed.tool_calls.len(),
        }
    }

    /// Whether `call` is of the answer function (its name whole once its arguments began).
    fn is_answer(&self, call: &ParsedCall) -> bool {
        self.answer.as_ref() == Some(&call.name)
    }

    /// The pieces to stream now that the text so far is `text` (`None`: nothing new yet).
    pub(super) fn advance(&mut self, text: &str) -> Option<Delta> {
        let read = self.read_partial(text).ok()?;
        let parsed = self.answered(read);
        let delta = self.pieces(&parsed, false);
        (!delta.text.is_empty() || !delta.tool_calls.is_empty()).then_some(delta)
    }

    /// Reads the whole `text`, ended for `reason`, and the pieces a stream has not had yet.
    /// Output the parser cannot read comes back as content: only a task cut short by its
    /// token limit or an `auto` one can end that way (a grammar holds the rest).
    pub(super) fn finish(&mut self, text: &str, reason: FinishReason) -> (ToolAnswer, Delta) {
        let cut_short = reason == FinishReason::Length;
        let text = format!("{}{text}", self.prefix);
        // A parse as final can refuse what a partial one (as streamed) reads: the content
        // then stays what the stream sent. Only output neither reads is content as it is.
        let parsed = self
            .parser
            .parse(&text, cut_short)
            .or_else(|_| self.parser.parse(&text, true))
            .map(|parsed| self.answered(parsed))
            .unwrap_or_else(|why| {
                tracing::warn!(%why, "the output is not in the template's tool-call format");
                Parsed {
                    content: text.clone(),
                    tool_calls: Vec::new(),
                }
            });
        let delta = self.pieces(&parsed, true);
        let calls: Vec<ToolCall> = self
            .kept(&parsed)
            .iter()
            .zip(&self.calls_sent)
            .map(|(call, sent)| ToolCall {
                id: sent.id.clone(),
                kind: FunctionKind::Function,
                function: crate::protocol::FunctionCall {
                    name: call.name.clone(),
                    arguments: call.arguments.clone(),
                },
            })
            .collect();
        let finish_reason = if calls.is_empty() || cut_short {
            reason
        } else {
            FinishReason::ToolCalls
        };
        let answer = ToolAnswer {
            content: parsed.content,
            calls,
            finish_reason,
        };
        (answer, delta)
    }

    /// The calls of `parsed` this task keeps.
    fn kept<'p>(&self, parsed: &'p Parsed) -> &'p [ParsedCall] {
        let keep = if self.parallel { usize::MAX } else { 1 };
        &parsed.tool_calls[..parsed.tool_calls.len().min(keep)]
    }

    /// `parsed` as the task answers: with an answer function, the content is its call's
    /// arguments when it is the first call (the answer) and nothing otherwise (the format
    /// shapes all the text there is), and a call of it is never a call. One after other calls
    /// is dropped: it was written before their results.
    fn answered(&self, mut parsed: Parsed) -> Parsed {
        if self.answer.is_none() {
            return parsed;
        }
        parsed.content = match parsed.tool_calls.first() {
            Some(first) if self.is_answer(first) => first.arguments.clone(),
            _ => String::new(),
        };
        parsed.tool_calls.retain(|call| !self.is_answer(call));
        parsed
    }

    /// Parses the answer so far: the prompt's share of it, then `text`.
    /// `text` read as the start of the output, once per text.
    fn read_partial(&mut self, text: &str) -> Result<Parsed, String> {
        if let Some((read, parsed)) = &self.last_read {
            if read == text {
                return Ok(parsed.clone());
            }
        }
        let parsed = self.parse(text, true)?;
        self.last_read = Some((text.to_owned(), parsed.clone()));
        Ok(parsed)
    }

    fn parse(&self, text: &str, partial: bool) -> Result<Parsed, String> {
        self.parser
            .parse(&format!("{}{text}", self.prefix), partial)
    }

    /// What `parsed` adds to what was sent. A call goes out once its name is whole (its
    /// arguments have begun, or the text is `last`); its arguments as they grow. A re-read
    /// that rewrote what was sent (it should not) sends nothing for that part.
    fn pieces(&mut self, parsed: &Parsed, last: bool) -> Delta {
        let mut delta = Delta {
            text: String::new(),
            logprobs: Vec::new(),
            tool_calls: Vec::new(),
        };
        if let Some(fresh) = parsed.content.strip_prefix(self.content_sent.as_str()) {
            delta.text = fresh.to_owned();
            self.content_sent = parsed.content.clone();
        }
        for (index, call) in self.kept(parsed).iter().enumerate() {
            if index == self.calls_sent.len() {
                if call.arguments.is_empty() && !last {
                    break;
                }
                // The model's own id where the format has one (its template may check it
                // when the call comes back), else one of warren's: also for a repeated one,
                // which would leave the calls' results ambiguous.
                let repeated = self.calls_sent.iter().any(|sent| sent.id == call.id);
                let id = match call.id.as_str() {
                    written if !written.is_empty() && !repeated => written.to_owned(),
                    _ => crate::protocol::tools::new_call_id(),
                };
                delta.tool_calls.push(ToolCallDelta {
                    index: index as u32,
                    id: Some(id.clone()),
                    kind: Some(FunctionKind::Function),
                    function: FunctionDelta {
                        name: Some(call.name.clone()),
                        arguments: String::new(),
                    },
                });
                self.calls_sent.push(SentCall {
                    id,
                    arguments: String::new(),
                });
            }
            let sent = &mut self.calls_sent[index];
            let Some(more) = call.arguments.strip_prefix(sent.arguments.as_str()) else {
                continue;
            };
            if more.is_empty() {
                continue;
            }
            let more = more.to_owned();
            sent.arguments = call.arguments.clone();
            match delta.tool_calls.last_mut() {
                Some(piece) if piece.index == index as u32 => {
                    piece.function.arguments.push_str(&more)
                }
                _ => delta.tool_calls.push(ToolCallDelta {
                    index: index as u32,
                    id: None,
                    kind: None,
                    function: FunctionDelta {
                        name: None,
                        arguments: more,
                    },
                }),
            }
        }
        delta
    }
}

#[cfg(test)]
#[path = "tool_output_tests.rs"]
mod tests;
