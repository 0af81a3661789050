//! Turning a choice's generated text into OpenAI's reply parts: content, reasoning and tool
//! calls, both for a finished reply ([`split`]) and while streaming ([`ReplySplitter`]).
//!
//! INTEGRATION POINT (issue 5): the tool-call and reasoning parsers (`<tool_call>` JSON, bare
//! JSON, `<think>` reasoning; the format follows the template) are being added to
//! `ingot_core` on the `tools` branch. Until they land, this module recognises no tool calls
//! and no reasoning: all text is content. Once they land, `split` and `ReplySplitter` call
//! them; the route code and the response types do not change.

use crate::openai::{FunctionCall, ToolCall};

/// One piece of a reply, in the order generated.
#[derive(Debug, Clone, PartialEq)]
pub enum Piece {
    Content(String),
    Reasoning(String),
    /// A complete tool call; `arguments` is JSON text.
    Call { name: String, arguments: String },
}

/// A finished reply.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Reply {
    pub content: String,
    pub reasoning: Option<String>,
    pub calls: Vec<ToolCall>,
}

/// Splits a whole reply. With `tools` false, tool-call text is left in the content.
pub fn split(text: &str, tools: bool, call_id: impl FnMut() -> String) -> Reply {
    let mut s = ReplySplitter::new(tools);
    let mut pieces = s.push(text);
    pieces.extend(s.finish());
    collect(pieces, call_id)
}

fn collect(pieces: Vec<Piece>, mut call_id: impl FnMut() -> String) -> Reply {
    let mut reply = Reply::default();
    for p in pieces {
        match p {
            Piece::Content(t) => reply.content.push_str(&t),
            Piece::Reasoning(t) => reply.reasoning.get_or_insert_with(String::new).push_str(&t),
            Piece::Call { name, arguments } => {
                reply.calls.push(ToolCall { id: call_id(), kind: "function", function: FunctionCall { name, arguments } })
            }
        }
    }
    reply
}

/// Streaming counterpart of [`split`]: text deltas in, reply pieces out.
pub struct ReplySplitter {
    /// Whether tool calls are looked for (tools were given).
    #[allow(dead_code)] // read by the tool-call extractor once it lands (see the module doc)
    tools: bool,
}

impl ReplySplitter {
    pub fn new(tools: bool) -> Self {
        Self { tools }
    }

    /// The pieces `delta` completes; text that may still turn out to be a tool call is held.
    pub fn push(&mut self, delta: &str) -> Vec<Piece> {
        if delta.is_empty() {
            return Vec::new();
        }
        vec![Piece::Content(delta.to_owned())]
    }

    /// Whatever is held at the end of the reply.
    pub fn finish(&mut self) -> Vec<Piece> {
        Vec::new()
    }
}
