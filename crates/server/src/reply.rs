//! Turning a choice's generated text into OpenAI's reply parts: content, reasoning and tool
//! calls, both for a finished reply ([`split`]) and while streaming ([`ReplySplitter`]).
//!
//! INTEGRATION POINT (issue 5): the tool-call and reasoning parsers (`<tool_call>` JSON, bare
//! JSON, `<think>` reasoning; the format follows the template) are being added to
//! `ingot_core` on the `tools` branch. Until they land, this module recognises no tool calls
//! and no reasoning: all text is content. Once they land, `ReplySplitter` calls them; the
//! route code and the response types do not change.

use crate::openai::ToolCall;

/// One piece of a reply, in the order generated.
#[derive(Debug, Clone, PartialEq)]
pub enum Piece {
    Content(String),
    #[allow(dead_code)] // produced once the reasoning parser lands (see the module doc)
    Reasoning(String),
    /// A complete tool call.
    #[allow(dead_code)] // produced once the tool-call parser lands (see the module doc)
    Call(ToolCall),
}

/// A finished reply.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Reply {
    pub content: String,
    pub reasoning: Option<String>,
    pub calls: Vec<ToolCall>,
}

/// Splits a whole reply; calls are looked for only to the tools named.
pub fn split(text: &str, tool_names: &[String]) -> Reply {
    let mut s = ReplySplitter::new(tool_names);
    let mut pieces = s.push(text);
    pieces.extend(s.finish());
    let mut reply = Reply::default();
    for p in pieces {
        match p {
            Piece::Content(t) => reply.content.push_str(&t),
            Piece::Reasoning(t) => reply.reasoning.get_or_insert_with(String::new).push_str(&t),
            Piece::Call(c) => reply.calls.push(c),
        }
    }
    reply
}

/// Streaming counterpart of [`split`]: text deltas in, reply pieces out.
pub struct ReplySplitter {}

impl ReplySplitter {
    pub fn new(_tool_names: &[String]) -> Self {
        Self {}
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
