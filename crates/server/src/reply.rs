//! Turning a choice's generated text into OpenAI's reply parts: reasoning (`<think>` blocks),
//! content and tool calls, both for a finished reply ([`split`]) and while it streams
//! ([`ReplySplitter`]).
//!
//! The parsing itself is `ingot_core::template`'s: reasoning is split first
//! ([`ReasoningStream`]), then the content is searched for calls in the template's tool format
//! ([`ToolCallStream`]), only when the request gave tools and only for calls to those tools.
//! Both hold back text that may still turn out to be a marker, so a streamed reply's pieces
//! add up to exactly what [`split`] finds in the whole reply.

use ingot_core::template::{ReasoningStream, ToolCallStream, ToolFormat};

use crate::openai::{FunctionCall, ToolCall};

/// One piece of a reply, in the order generated.
#[derive(Debug, Clone, PartialEq)]
pub enum Piece {
    Content(String),
    Reasoning(String),
    /// A complete tool call.
    Call(ToolCall),
}

/// A finished reply.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Reply {
    pub content: String,
    pub reasoning: Option<String>,
    pub calls: Vec<ToolCall>,
}

impl Reply {
    /// The content worth an output block of its own (Responses, Messages): none when empty,
    /// or only whitespace beside tool calls.
    pub fn shown_content(&self) -> Option<&str> {
        (!self.content.is_empty() && (self.calls.is_empty() || !self.content.trim().is_empty())).then_some(self.content.as_str())
    }
}

/// How replies of one request are read.
#[derive(Debug, Clone)]
pub struct ReplyFormat {
    pub tools: ToolFormat,
    /// The request's tool names; empty = no tools, no call extraction.
    pub tool_names: Vec<String>,
    /// The prompt leaves the model inside a `<think>` block (DeepSeek-R1's templates).
    pub prompt_opens_thinking: bool,
}

/// Splits a whole reply.
pub fn split(text: &str, format: &ReplyFormat) -> Reply {
    let mut s = ReplySplitter::new(format);
    let mut pieces = s.push(text);
    pieces.extend(s.finish());
    assemble(pieces)
}

/// The reply that a sequence of pieces adds up to.
fn assemble(pieces: Vec<Piece>) -> Reply {
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
pub struct ReplySplitter {
    reasoning: Option<ReasoningStream>,
    tools: Option<ToolCallStream>,
}

impl ReplySplitter {
    pub fn new(format: &ReplyFormat) -> Self {
        let tools = (!format.tool_names.is_empty()).then(|| ToolCallStream::new(format.tools, &format.tool_names));
        Self { reasoning: Some(ReasoningStream::new(format.prompt_opens_thinking)), tools }
    }

    /// The pieces `delta` makes certain; text that may still be a marker is held.
    pub fn push(&mut self, delta: &str) -> Vec<Piece> {
        let Some(r) = self.reasoning.as_mut() else { return Vec::new() };
        let d = r.push(delta);
        self.pieces(d.reasoning, d.content)
    }

    /// Everything held, at the end of the reply. Calling it again yields nothing.
    pub fn finish(&mut self) -> Vec<Piece> {
        let Some(r) = self.reasoning.take() else { return Vec::new() };
        let d = r.finish();
        let mut pieces = self.pieces(d.reasoning, d.content);
        if let Some(t) = self.tools.take() {
            let parsed = t.finish();
            if !parsed.content.is_empty() {
                pieces.push(Piece::Content(parsed.content));
            }
            pieces.extend(parsed.tool_calls.into_iter().map(|c| {
                Piece::Call(ToolCall { id: c.id, kind: "function", function: FunctionCall { name: c.name, arguments: c.arguments } })
            }));
        }
        pieces
    }

    fn pieces(&mut self, reasoning: String, content: String) -> Vec<Piece> {
        let mut out = Vec::new();
        if !reasoning.is_empty() {
            out.push(Piece::Reasoning(reasoning));
        }
        let content = match self.tools.as_mut() {
            Some(t) => t.push(&content),
            None => content,
        };
        if !content.is_empty() {
            out.push(Piece::Content(content));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn format(tools: &[&str], opens: bool) -> ReplyFormat {
        ReplyFormat { tools: ToolFormat::Qwen, tool_names: tools.iter().map(|s| s.to_string()).collect(), prompt_opens_thinking: opens }
    }

    /// The reply fed in pieces of `step` bytes (on char boundaries), collected.
    fn streamed(text: &str, f: &ReplyFormat, step: usize) -> Reply {
        let mut s = ReplySplitter::new(f);
        let mut pieces = Vec::new();
        let mut rest = text;
        while !rest.is_empty() {
            let mut cut = step.min(rest.len());
            while !rest.is_char_boundary(cut) {
                cut += 1;
            }
            pieces.extend(s.push(&rest[..cut]));
            rest = &rest[cut..];
        }
        pieces.extend(s.finish());
        assert!(s.finish().is_empty(), "finish twice yields nothing");
        assemble(pieces)
    }

    /// Streaming gives what the whole reply gives, whatever the delta sizes (ids aside).
    fn same_streamed(text: &str, f: &ReplyFormat) -> Reply {
        let whole = split(text, f);
        for step in [1, 2, 5, 64] {
            let mut s = streamed(text, f, step);
            for (a, b) in s.calls.iter_mut().zip(&whole.calls) {
                a.id.clone_from(&b.id);
            }
            assert_eq!(s, whole, "step {step}: {text:?}");
        }
        whole
    }

    #[test]
    fn qwen_tool_call_and_bare_json_become_calls() {
        let f = format(&["get_weather"], false);
        let r = same_streamed("Let me check.\n<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n</tool_call>", &f);
        assert_eq!(r.content, "Let me check.");
        assert_eq!(r.calls.len(), 1);
        assert_eq!((r.calls[0].function.name.as_str(), r.calls[0].function.arguments.as_str()), ("get_weather", "{\"city\": \"Paris\"}"));
        assert!(r.calls[0].id.starts_with("call_"));
        // What the shipped Qwen2.5-Coder-0.5B answers: bare JSON naming a given tool.
        let r = same_streamed("{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}", &f);
        assert_eq!((r.content.as_str(), r.calls.len()), ("", 1));
    }

    #[test]
    fn without_tools_call_text_stays_content() {
        let text = "{\"name\": \"get_weather\", \"arguments\": {}}";
        let r = same_streamed(text, &format(&[], false));
        assert_eq!((r.content.as_str(), r.calls.len()), (text, 0));
    }

    #[test]
    fn reasoning_is_split_from_content() {
        let r = same_streamed("<think>\nThe user greets.\n</think>\n\nHello!", &format(&[], false));
        assert_eq!((r.reasoning.as_deref(), r.content.as_str()), (Some("The user greets."), "Hello!"));
        // DeepSeek-R1's prompt opens the block itself.
        let r = same_streamed("Short.</think>Hi", &format(&[], true));
        assert_eq!((r.reasoning.as_deref(), r.content.as_str()), (Some("Short."), "Hi"));
        let r = same_streamed("Plain answer.", &format(&["f"], false));
        assert_eq!((r.reasoning, r.content.as_str()), (None, "Plain answer."));
    }
}
