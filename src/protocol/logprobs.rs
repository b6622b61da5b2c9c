//! Log probabilities of generated tokens, as a reply (and each chunk) carries them when a
//! task asks for `logprobs`: for each token its text, its bytes (a token may hold part of a
//! character), its log probability, and the tokens that were most likely in its place.

use serde::{Deserialize, Serialize};

/// Most alternatives a task may ask for per token (OpenAI's bound for `top_logprobs`).
pub const MAX_TOP_LOGPROBS: u64 = 20;

/// One generated token.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TokenLogprob {
    /// The token's text (U+FFFD where it holds part of a character).
    pub token: String,
    /// The token's bytes.
    pub bytes: Vec<u8>,
    /// Natural log of its probability under the model (before sampling settings).
    pub logprob: f32,
    /// The most likely tokens at this position, most likely first (as many as asked).
    #[serde(default)]
    pub top_logprobs: Vec<TopLogprob>,
}

/// One of the most likely tokens at a position.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TopLogprob {
    /// The token's text.
    pub token: String,
    /// The token's bytes.
    pub bytes: Vec<u8>,
    /// Natural log of its probability.
    pub logprob: f32,
}
