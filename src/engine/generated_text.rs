//! The text a sequence generates: stop strings cut it (a task's own not inside an open tool
//! call), a tool-call parser reads it (a task with tools), and what can no longer change is
//! streamed with its tokens' log probabilities: never the tail that may still begin a stop
//! string, never half a UTF-8 character (the byte-level helpers are [`super::text_bytes`]).

use llama_cpp_2::token::LlamaToken;
use tokio::sync::mpsc;

use super::text_bytes::{find_bytes, kept_utf8_len, longest_suffix_prefix, streamable, utf8_text};
use super::tool_output::ToolOutput;
use crate::engine::Delta;
use crate::protocol::{FinishReason, TokenLogprob, ToolCall};

/// A sequence's generated text so far, and what of it has been streamed.
pub(super) struct GeneratedText {
    stream: Option<mpsc::UnboundedSender<Delta>>,
    text: Vec<u8>,
    /// Bytes of `text` already streamed.
    streamed: usize,
    /// One entry per token appended with a log probability, with `token_ends`: where each
    /// token's bytes end in `text` (before a stop string cut it).
    token_logprobs: Vec<TokenLogprob>,
    token_ends: Vec<usize>,
    /// Entries already sent with streamed text.
    logprobs_streamed: usize,
    stops: Vec<String>,
    tools: Option<ToolOutput>,
}

/// The finished text of a sequence.
pub(super) struct FinalText {
    /// The text (stop string excluded; with tool calls, what the model said besides them).
    pub text: String,
    /// The calls the model made (a task with tools).
    pub tool_calls: Vec<ToolCall>,
    /// Why generation ended, once the tool calls are read.
    pub finish_reason: FinishReason,
    /// The log probabilities of the text's tokens (empty when none were appended).
    pub logprobs: Vec<TokenLogprob>,
}

impl GeneratedText {
    /// No text yet; pieces go to `stream` if there is one.
    pub(super) fn new(
        stream: Option<mpsc::UnboundedSender<Delta>>,
        stops: Vec<String>,
        tools: Option<ToolOutput>,
    ) -> GeneratedText {
        GeneratedText {
            stream,
            text: Vec::new(),
            streamed: 0,
            token_logprobs: Vec::new(),
            token_ends: Vec::new(),
            logprobs_streamed: 0,
            stops,
            tools,
        }
    }

    /// Whether `token` is a special token to render as its text (a tool-call marker).
    pub(super) fn keeps_special(&self, token: LlamaToken) -> bool {
        self.tools
            .as_ref()
            .is_some_and(|tools| tools.preserves(token))
    }

    /// Appends one token's bytes (with its log probability when the task asked for it).
    /// `true`: the text is finished, a stop string (cut off) or the end of the tool calls
    /// reached.
    pub(super) fn append(&mut self, piece: &[u8], logprob: Option<TokenLogprob>) -> bool {
        let before = self.text.len();
        self.text.extend_from_slice(piece);
        if let Some(logprob) = logprob {
            self.token_logprobs.push(logprob);
            self.token_ends.push(self.text.len());
        }
        // A task's stop string does not cut an open tool call (its arguments would come back
        // broken); the template's own stop strings end the turn wherever they come.
        let task_stop = find_stop(&self.text, before, &self.stops).filter(|&cut| {
            !self
                .tools
                .as_mut()
                .is_some_and(|tools| tools.call_open(&String::from_utf8_lossy(&self.text[..cut])))
        });
        let turn_end =
            (self.tools.as_ref()).and_then(|t| find_stop(&self.text, before, t.turn_ends()));
        if let Some(cut) = task_stop.into_iter().chain(turn_end).min() {
            self.text.truncate(cut);
            return true;
        }
        self.tools
            .as_mut()
            .is_some_and(|tools| tools.ends_at(&String::from_utf8_lossy(&self.text)))
    }

    /// Streams the text that can no longer change: not the tail that might still begin a
    /// stop sequence, and never half a UTF-8 character.
    pub(super) fn stream_safe_text(&mut self) {
        let Some(stream) = &self.stream else {
            return;
        };
        let turn_ends = self
            .tools
            .as_ref()
            .map(ToolOutput::turn_ends)
            .unwrap_or_default();
        let held_back = (self.stops.iter().chain(turn_ends))
            .map(|stop| longest_suffix_prefix(&self.text, stop.as_bytes()))
            .max()
            .unwrap_or(0);
        let safe_end = self.text.len() - held_back;
        if safe_end <= self.streamed {
            return;
        }
        let (used, fresh) = streamable(&self.text[self.streamed..safe_end]);
        if let Some(tools) = &mut self.tools {
            // The parser re-reads all the text so far and says what is new.
            self.streamed += used;
            let so_far = String::from_utf8_lossy(&self.text[..self.streamed]);
            if let Some(delta) = tools.advance(&so_far) {
                let _ = stream.send(delta);
            }
            return;
        }
        if used > 0 {
            self.streamed += used;
            let completed = self.token_ends[self.logprobs_streamed..]
                .iter()
                .take_while(|&&end| end <= self.streamed)
                .count();
            let from = self.logprobs_streamed;
            self.logprobs_streamed += completed;
            let _ = stream.send(Delta {
                text: fresh,
                logprobs: self.token_logprobs[from..from + completed].to_vec(),
                tool_calls: Vec::new(),
            });
        }
    }

    /// How many tokens the final text of `len` bytes holds: those starting inside it (the
    /// last may reach past it when a stop string begins inside that token) and any empty
    /// ones at its end.
    fn tokens_in_text(&self, len: usize) -> usize {
        let mut start = 0;
        self.token_ends
            .iter()
            .take_while(|&&end| {
                let kept = start < len || end <= len;
                start = end;
                kept
            })
            .count()
    }

    /// The final text, generation having ended for `reason`; what was not streamed yet is
    /// sent now.
    pub(super) fn finish(mut self, reason: FinishReason) -> FinalText {
        let bytes = std::mem::take(&mut self.text);
        // The bytes the text stands for: all but a character the token limit cut.
        let kept = kept_utf8_len(&bytes);
        let unstreamed =
            String::from_utf8_lossy(bytes.get(self.streamed..kept).unwrap_or_default())
                .into_owned();
        let mut text = utf8_text(bytes);
        let mut text_bytes = kept;
        let mut finish_reason = reason;
        let mut tool_calls = Vec::new();
        if let Some(mut tools) = self.tools.take() {
            let (answer, delta) = tools.finish(&text, reason);
            if let Some(stream) = self.stream.take() {
                if !delta.text.is_empty() || !delta.tool_calls.is_empty() {
                    let _ = stream.send(delta);
                }
            }
            text = answer.content;
            text_bytes = text.len();
            finish_reason = answer.finish_reason;
            tool_calls = answer.calls;
        }
        let mut logprobs = std::mem::take(&mut self.token_logprobs);
        logprobs.truncate(self.tokens_in_text(text_bytes));
        if let Some(stream) = self.stream.take() {
            let unsent = logprobs.get(self.logprobs_streamed..).unwrap_or_default();
            if !unstreamed.is_empty() || !unsent.is_empty() {
                let _ = stream.send(Delta {
                    text: unstreamed,
                    logprobs: unsent.to_vec(),
                    tool_calls: Vec::new(),
                });
            }
        }
        FinalText {
            text,
            tool_calls,
            finish_reason,
            logprobs,
        }
    }
}

/// Earliest start in `text` of one of `stops` that ends in the bytes appended after `before`.
fn find_stop(text: &[u8], before: usize, stops: &[String]) -> Option<usize> {
    let longest = stops.iter().map(String::len).max()?;
    let from = before.saturating_sub(longest.saturating_sub(1));
    let window = &text[from..];
    stops
        .iter()
        .filter_map(|stop| find_bytes(window, stop.as_bytes()))
        .min()
        .map(|at| from + at)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn logprob(token: &str) -> Option<TokenLogprob> {
        Some(TokenLogprob {
            token: token.into(),
            bytes: token.as_bytes().to_vec(),
            logprob: -0.5,
            top_logprobs: Vec::new(),
        })
    }

    fn streamed(receiver: &mut mpsc::UnboundedReceiver<Delta>) -> Vec<(String, usize)> {
        std::iter::from_fn(|| receiver.try_recv().ok())
            .map(|delta| (delta.text, delta.logprobs.len()))
            .collect()
    }

    #[test]
    fn a_stop_string_cuts_the_text_and_is_never_streamed() {
        let (sender, mut receiver) = mpsc::unbounded_channel();
        let mut text = GeneratedText::new(Some(sender), vec!["END".into()], None);
        for piece in ["Hello", " E", "N"] {
            assert!(!text.append(piece.as_bytes(), logprob(piece)));
            text.stream_safe_text();
        }
        assert_eq!(
            streamed(&mut receiver),
            [("Hello".to_owned(), 1), (" ".to_owned(), 0)],
            "\"EN\" may begin the stop string: held back"
        );
        assert!(
            text.append(b"D!", logprob("D!")),
            "the stop string ends here"
        );
        let last = text.finish(FinishReason::Stop);
        assert_eq!(last.text, "Hello ");
        assert_eq!(
            last.logprobs.len(),
            2,
            "tokens that begin inside the text keep their log probabilities"
        );
        assert_eq!(streamed(&mut receiver), [(String::new(), 1)]);
    }

    #[test]
    fn text_held_back_goes_out_when_it_cannot_begin_a_stop_string() {
        let (sender, mut receiver) = mpsc::unbounded_channel();
        let mut text = GeneratedText::new(Some(sender), vec!["END".into()], None);
        for piece in ["a E", "Nx"] {
            assert!(!text.append(piece.as_bytes(), None));
            text.stream_safe_text();
        }
        let pieces: Vec<String> = streamed(&mut receiver)
            .into_iter()
            .map(|(t, _)| t)
            .collect();
        assert_eq!(pieces, ["a ", "ENx"]);
        assert_eq!(text.finish(FinishReason::Length).text, "a ENx");
    }

    #[test]
    fn half_a_character_waits_for_its_other_half() {
        let (sender, mut receiver) = mpsc::unbounded_channel();
        let mut text = GeneratedText::new(Some(sender), Vec::new(), None);
        let euro = "€".as_bytes();
        for piece in [&b"1 "[..], &euro[..1], &euro[1..]] {
            assert!(!text.append(piece, None));
            text.stream_safe_text();
        }
        let pieces: Vec<String> = streamed(&mut receiver)
            .into_iter()
            .map(|(t, _)| t)
            .collect();
        assert_eq!(pieces, ["1 ", "€"]);
    }

    #[test]
    fn an_invalid_byte_is_streamed_as_the_final_text_has_it_and_streaming_goes_on() {
        let (sender, mut receiver) = mpsc::unbounded_channel();
        let mut text = GeneratedText::new(Some(sender), Vec::new(), None);
        let euro = "€".as_bytes();
        for piece in [
            &b"a"[..],
            &[0x80],
            &b"b "[..],
            &euro[..1],
            &b"c"[..],
            &euro[..2],
        ] {
            assert!(!text.append(piece, logprob("x")));
            text.stream_safe_text();
        }
        let during = streamed(&mut receiver);
        let last = text.finish(FinishReason::Length);
        assert_eq!(
            last.text, "a\u{fffd}b \u{fffd}c",
            "the cut euro at the end is dropped"
        );
        assert_eq!(
            during,
            [
                ("a".to_owned(), 1),
                ("\u{fffd}".to_owned(), 1),
                ("b ".to_owned(), 1),
                ("\u{fffd}c".to_owned(), 2),
            ],
            "half a character followed by more text is invalid, not waited for"
        );
        assert_eq!(
            last.logprobs.len(),
            5,
            "the cut character's token is not in the text"
        );
        assert!(streamed(&mut receiver).is_empty(), "all of it was streamed");
    }

    #[test]
    fn a_character_cut_by_the_token_limit_is_dropped_from_the_final_text() {
        let mut text = GeneratedText::new(None, Vec::new(), None);
        text.append(b"ok ", None);
        text.append(&"€".as_bytes()[..2], None);
        let last = text.finish(FinishReason::Length);
        assert_eq!(
            (last.text.as_str(), last.finish_reason),
            ("ok ", FinishReason::Length)
        );
    }
}
