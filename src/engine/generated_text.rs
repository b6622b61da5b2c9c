//! The text a sequence generates: stop strings cut it, a tool-call parser reads it (a task
//! with tools), and what can no longer change is streamed with its tokens' log
//! probabilities: never the tail that may still begin a stop string, never half a UTF-8
//! character. Also the byte-level helpers for that: where a stop string starts, how much of
//! one the text's end may begin, and UTF-8 text from bytes a token limit may have cut.

use llama_cpp_2::token::LlamaToken;
use tokio::sync::mpsc;

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
        if let Some(cut) = self.find_stop(before) {
            self.text.truncate(cut);
            return true;
        }
        self.tools
            .as_mut()
            .is_some_and(|tools| tools.ends_at(&String::from_utf8_lossy(&self.text)))
    }

    /// Earliest start of a stop sequence that ends in the bytes appended after `before`.
    fn find_stop(&self, before: usize) -> Option<usize> {
        let longest = self.stops.iter().map(String::len).max()?;
        let from = before.saturating_sub(longest.saturating_sub(1));
        let window = &self.text[from..];
        self.stops
            .iter()
            .filter_map(|stop| find_bytes(window, stop.as_bytes()))
            .min()
            .map(|at| from + at)
    }

    /// Streams the text that can no longer change: not the tail that might still begin a
    /// stop sequence, and never half a UTF-8 character.
    pub(super) fn stream_safe_text(&mut self) {
        let Some(stream) = &self.stream else {
            return;
        };
        let held_back = self
            .stops
            .iter()
            .map(|stop| longest_suffix_prefix(&self.text, stop.as_bytes()))
            .max()
            .unwrap_or(0);
        let safe_end = self.text.len() - held_back;
        if safe_end <= self.streamed {
            return;
        }
        let fresh = &self.text[self.streamed..safe_end];
        let valid = match std::str::from_utf8(fresh) {
            Ok(text) => text,
            // Stop at the first incomplete or invalid character; the rest goes out at the end.
            Err(e) => std::str::from_utf8(&fresh[..e.valid_up_to()]).unwrap_or_default(),
        };
        if let Some(tools) = &mut self.tools {
            // The parser re-reads all the text so far and says what is new.
            self.streamed += valid.len();
            let so_far = std::str::from_utf8(&self.text[..self.streamed]).unwrap_or_default();
            if let Some(delta) = tools.advance(so_far) {
                let _ = stream.send(delta);
            }
            return;
        }
        if !valid.is_empty() {
            self.streamed += valid.len();
            let completed = self.token_ends[self.logprobs_streamed..]
                .iter()
                .take_while(|&&end| end <= self.streamed)
                .count();
            let from = self.logprobs_streamed;
            self.logprobs_streamed += completed;
            let _ = stream.send(Delta {
                text: valid.to_owned(),
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
        let mut text = utf8_text(std::mem::take(&mut self.text));
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
            finish_reason = answer.finish_reason;
            tool_calls = answer.calls;
        }
        let mut logprobs = std::mem::take(&mut self.token_logprobs);
        logprobs.truncate(self.tokens_in_text(text.len()));
        if let Some(stream) = self.stream.take() {
            let rest = text.get(self.streamed..).unwrap_or_default();
            let unsent = logprobs.get(self.logprobs_streamed..).unwrap_or_default();
            if !rest.is_empty() || !unsent.is_empty() {
                let _ = stream.send(Delta {
                    text: rest.to_owned(),
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

/// Where `needle` first starts in `haystack`.
pub(super) fn find_bytes(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() || needle.len() > haystack.len() {
        return None;
    }
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Length of the longest suffix of `text` that is a proper prefix of `stop`.
pub(super) fn longest_suffix_prefix(text: &[u8], stop: &[u8]) -> usize {
    (1..stop.len().min(text.len() + 1))
        .rev()
        .find(|&n| text.ends_with(&stop[..n]))
        .unwrap_or(0)
}

/// Turns generated bytes into text. A character cut in half by the token limit is dropped
/// rather than replaced; invalid bytes elsewhere become U+FFFD.
pub(super) fn utf8_text(mut bytes: Vec<u8>) -> String {
    if let Err(e) = std::str::from_utf8(&bytes) {
        if e.error_len().is_none() {
            bytes.truncate(e.valid_up_to());
        }
    }
    match String::from_utf8(bytes) {
        Ok(text) => text,
        Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
    }
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

    #[test]
    fn a_character_cut_at_the_end_is_dropped() {
        let mut bytes = "héllo ".as_bytes().to_vec();
        bytes.extend_from_slice(&"€".as_bytes()[..2]);
        assert_eq!(utf8_text(bytes), "héllo ");
    }

    #[test]
    fn invalid_bytes_in_the_middle_are_replaced() {
        assert_eq!(utf8_text(vec![b'a', 0xff, b'b']), "a\u{fffd}b");
    }

    #[test]
    fn byte_search_finds_the_first_occurrence() {
        assert_eq!(find_bytes(b"abcabc", b"ca"), Some(2));
        assert_eq!(find_bytes(b"ab", b"abc"), None);
    }

    #[test]
    fn the_tail_that_may_begin_a_stop_sequence_is_held_back() {
        assert_eq!(longest_suffix_prefix(b"hello wor", b"world"), 3);
        assert_eq!(longest_suffix_prefix(b"hello", b"world"), 0);
        assert_eq!(
            longest_suffix_prefix(b"ab", b"b"),
            0,
            "a whole stop is not a proper prefix"
        );
        assert_eq!(longest_suffix_prefix(b"", b"xy"), 0);
    }
}
