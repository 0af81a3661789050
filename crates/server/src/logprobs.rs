//! OpenAI's `logprobs` objects, made from the engine's per-token [`TokenLogprobs`] events.
//!
//! Chat (`logprobs: true`, `top_logprobs: N`): `choices[].logprobs.content[]` holds, per
//! generated token, `{token, logprob, bytes, top_logprobs: [{token, logprob, bytes}]}`.
//! Completions (`logprobs: N`): `choices[].logprobs` holds the parallel lists `tokens`,
//! `token_logprobs`, `top_logprobs` (one `{token: logprob}` object per token) and
//! `text_offset` (each token's character offset in the choice's generated text).
//!
//! The values are the model's own distribution (see `ingot_core::sampling::token_logprobs`).
//! JSON has no -inf, so an impossible token is reported as -9999, as vLLM does. When streaming,
//! a token's entry rides on the first chunk sent after it was sampled (text that may still be
//! a stop string or a tool-call marker is held back, so entries can come a chunk early or
//! late relative to their text, never lost).

use ingot_engine::{TokenLogprob, TokenLogprobs};
use serde::Serialize;
use serde_json::Map;

/// What -inf becomes in JSON (vLLM's value).
const IMPOSSIBLE: f32 = -9999.0;

fn finite(logprob: f32) -> f32 {
    logprob.max(IMPOSSIBLE)
}

fn text(t: &TokenLogprob) -> String {
    String::from_utf8_lossy(&t.bytes).into_owned()
}

/// One alternative token of a chat step.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct TopLogprob {
    pub token: String,
    pub logprob: f32,
    pub bytes: Vec<u8>,
}

/// One generated token of a chat reply.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ChatTokenLogprob {
    pub token: String,
    pub logprob: f32,
    pub bytes: Vec<u8>,
    pub top_logprobs: Vec<TopLogprob>,
}

/// A chat choice's (or chunk's) `logprobs`.
#[derive(Debug, Clone, Serialize, PartialEq, Default)]
pub struct ChatLogprobs {
    pub content: Vec<ChatTokenLogprob>,
}

impl ChatLogprobs {
    pub fn push(&mut self, lp: TokenLogprobs) {
        let top = |t: TokenLogprob| TopLogprob { token: text(&t), logprob: finite(t.logprob), bytes: t.bytes };
        self.content.push(ChatTokenLogprob {
            token: text(&lp.token),
            logprob: finite(lp.token.logprob),
            bytes: lp.token.bytes,
            top_logprobs: lp.top.into_iter().map(top).collect(),
        });
    }

    /// The entries so far, leaving this empty (a stream chunk's share).
    pub fn take(&mut self) -> Self {
        std::mem::take(self)
    }
}

/// A completion choice's (or chunk's) `logprobs`: OpenAI's legacy shape.
#[derive(Debug, Clone, Serialize, PartialEq, Default)]
pub struct CompletionLogprobs {
    pub tokens: Vec<String>,
    pub token_logprobs: Vec<f32>,
    pub top_logprobs: Vec<Map<String, serde_json::Value>>,
    pub text_offset: Vec<usize>,
}

/// A completion choice's entries, with the running text offset (kept across stream chunks).
#[derive(Debug, Default)]
pub struct CompletionLogprobsBuilder {
    pending: CompletionLogprobs,
    offset: usize,
}

impl CompletionLogprobsBuilder {
    pub fn push(&mut self, lp: TokenLogprobs) {
        let token = text(&lp.token);
        let p = &mut self.pending;
        p.text_offset.push(self.offset);
        self.offset += token.chars().count();
        p.token_logprobs.push(finite(lp.token.logprob));
        p.tokens.push(token);
        p.top_logprobs.push(lp.top.iter().map(|t| (text(t), finite(t.logprob).into())).collect());
    }

    /// The entries so far, leaving none pending (a stream chunk's share).
    pub fn take(&mut self) -> CompletionLogprobs {
        std::mem::take(&mut self.pending)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lp(id: u32, text: &str, logprob: f32, top: &[(&str, f32)]) -> TokenLogprobs {
        let entry = |(t, l): (&str, f32)| TokenLogprob { id, bytes: t.as_bytes().to_vec(), logprob: l };
        TokenLogprobs { token: entry((text, logprob)), top: top.iter().copied().map(entry).collect() }
    }

    #[test]
    fn chat_entries_carry_text_bytes_and_finite_values() {
        let mut c = ChatLogprobs::default();
        c.push(lp(1, "Hi", -0.5, &[("Hi", -0.5), ("Hey", f32::NEG_INFINITY)]));
        let v = serde_json::to_value(c.take()).expect("serializes");
        assert_eq!(v["content"][0]["token"], "Hi");
        assert_eq!(v["content"][0]["bytes"], serde_json::json!([72, 105]));
        assert_eq!(v["content"][0]["top_logprobs"][1]["logprob"], -9999.0);
        assert!(c.content.is_empty(), "taken");
    }

    #[test]
    fn completion_offsets_run_on_across_chunks() {
        let mut b = CompletionLogprobsBuilder::default();
        b.push(lp(1, "Hé", -0.1, &[("Hé", -0.1)]));
        let first = b.take();
        b.push(lp(2, " there", -0.2, &[]));
        let second = b.take();
        assert_eq!((first.text_offset, second.text_offset), (vec![0], vec![2]));
        assert_eq!(first.top_logprobs[0]["Hé"], serde_json::json!(-0.1f32));
        assert_eq!(second.tokens, [" there"]);
    }
}
