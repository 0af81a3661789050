//! A Messages reply: whole ([`Reply::complete`]) or as Anthropic's stream of events
//! ([`Reply::stream`]).
//!
//! The generated text is split as the chat route splits it ([`crate::reply`]): reasoning
//! becomes a `thinking` block, content a `text` block, each tool call a `tool_use` block.
//! A stream is `message_start`, a `ping`, then per block `content_block_start`, its deltas
//! (`text_delta`, `thinking_delta`, `input_json_delta`) and `content_block_stop`, then
//! `message_delta` (stop reason, output tokens) and `message_stop`; an engine failure
//! mid-stream is an `error` event in Anthropic's error shape. The blocks of a streamed reply
//! are those of the same reply unstreamed.
//!
//! Usage follows Anthropic's split: `input_tokens` excludes the prompt tokens read from the
//! prefix cache, which are `cache_read_input_tokens`. One of the request's `stop_sequences`
//! ends the reply as `stop_reason: "stop_sequence"` with it in `stop_sequence`.

use axum::response::sse::Event as SseEvent;
use ingot_engine::FinishReason;
use serde_json::{json, Value};
use tokio::sync::mpsc;

use super::AnthropicError;
use crate::completions::{collect, Submission};
use crate::openai::ToolCall;
use crate::reply::{self, Piece, ReplyFormat};
use crate::reply_stream::{stream_reply, EventWriter};
use crate::ApiError;

/// A reply's id and model.
pub struct Reply {
    pub id: String,
    pub model: String,
}

fn tool_use(call: &ToolCall, input: Value) -> Value {
    json!({"type": "tool_use", "id": call.id, "name": call.function.name, "input": input})
}

fn stop_reason(u: &ingot_engine::Usage, calls: usize) -> &'static str {
    match u.finish_reason {
        _ if calls > 0 => "tool_use",
        FinishReason::Length => "max_tokens",
        _ if u.stop_string.is_some() => "stop_sequence",
        _ => "end_turn",
    }
}

fn usage(prompt_tokens: usize, cached: usize, output_tokens: usize) -> Value {
    json!({"input_tokens": prompt_tokens - cached.min(prompt_tokens), "output_tokens": output_tokens,
        "cache_read_input_tokens": cached, "cache_creation_input_tokens": 0})
}

impl Reply {
    pub async fn complete(self, submission: Submission, format: &ReplyFormat) -> Result<Value, AnthropicError> {
        let prompt_tokens = submission.prompt_tokens;
        let mut finished = collect(submission).await?;
        let (text, u) = (finished.texts.remove(0), finished.usages.remove(0));
        let r = reply::split(&text, format);
        let mut content = Vec::new();
        if let Some(thinking) = &r.reasoning {
            content.push(json!({"type": "thinking", "thinking": thinking, "signature": ""}));
        }
        if let Some(text) = r.shown_content() {
            content.push(json!({"type": "text", "text": text}));
        }
        for c in &r.calls {
            // The template's parser has checked the arguments are a JSON object.
            content.push(tool_use(c, serde_json::from_str(&c.function.arguments).unwrap_or_else(|_| json!({}))));
        }
        Ok(json!({"id": self.id, "type": "message", "role": "assistant", "model": self.model, "content": content,
            "stop_reason": stop_reason(&u, r.calls.len()), "stop_sequence": u.stop_string,
            "usage": usage(prompt_tokens, u.cached_tokens, u.completion_tokens)}))
    }

    pub fn stream(self, submission: Submission, format: ReplyFormat) -> mpsc::Receiver<SseEvent> {
        stream_reply(submission, format, Writer { reply: self, blocks: 0, open: None, calls: 0 })
    }
}

/// The kind of block a stream has open.
#[derive(Clone, Copy, PartialEq)]
enum Open {
    Thinking,
    Text,
}

struct Writer {
    reply: Reply,
    /// Blocks started so far.
    blocks: usize,
    open: Option<Open>,
    calls: usize,
}

fn event(kind: &str, mut body: Value) -> SseEvent {
    body["type"] = kind.into();
    SseEvent::default().event(kind).data(body.to_string())
}

impl EventWriter for Writer {
    fn start(&mut self, prompt_tokens: usize) -> Vec<SseEvent> {
        let message = json!({"id": self.reply.id, "type": "message", "role": "assistant", "model": self.reply.model, "content": [],
            "stop_reason": null, "stop_sequence": null, "usage": usage(prompt_tokens, 0, 0)});
        vec![event("message_start", json!({"message": message})), event("ping", json!({}))]
    }

    fn piece(&mut self, piece: Piece) -> Vec<SseEvent> {
        match piece {
            Piece::Reasoning(t) => {
                let mut out = self.start_block(Some(Open::Thinking), json!({"type": "thinking", "thinking": "", "signature": ""}));
                out.push(self.delta(json!({"type": "thinking_delta", "thinking": t})));
                out
            }
            Piece::Content(t) => {
                let mut out = self.start_block(Some(Open::Text), json!({"type": "text", "text": ""}));
                out.push(self.delta(json!({"type": "text_delta", "text": t})));
                out
            }
            Piece::Call(c) => {
                self.calls += 1;
                let mut out = self.start_block(None, tool_use(&c, json!({})));
                out.push(self.delta(json!({"type": "input_json_delta", "partial_json": c.function.arguments})));
                out.push(self.stop_block());
                out
            }
        }
    }

    fn done(&mut self, prompt_tokens: usize, u: &ingot_engine::Usage) -> Vec<SseEvent> {
        let mut out = self.close();
        let delta = json!({"delta": {"stop_reason": stop_reason(u, self.calls), "stop_sequence": u.stop_string},
            "usage": usage(prompt_tokens, u.cached_tokens, u.completion_tokens)});
        out.extend([event("message_delta", delta), event("message_stop", json!({}))]);
        out
    }

    fn error(&mut self, e: &ApiError) -> SseEvent {
        SseEvent::default().event("error").data(AnthropicError(e.clone()).body().to_string())
    }
}

impl Writer {
    /// Starts block `self.blocks` with `block`, unless a block of kind `open` is open.
    fn start_block(&mut self, open: Option<Open>, block: Value) -> Vec<SseEvent> {
        if open.is_some() && self.open == open {
            return Vec::new();
        }
        let mut out = self.close();
        self.open = open;
        self.blocks += 1;
        out.push(event("content_block_start", json!({"index": self.blocks - 1, "content_block": block})));
        out
    }

    fn delta(&self, delta: Value) -> SseEvent {
        event("content_block_delta", json!({"index": self.blocks - 1, "delta": delta}))
    }

    /// Closes the open text or thinking block, if any.
    fn close(&mut self) -> Vec<SseEvent> {
        match self.open {
            None => Vec::new(),
            Some(_) => vec![self.stop_block()],
        }
    }

    fn stop_block(&mut self) -> SseEvent {
        self.open = None;
        event("content_block_stop", json!({"index": self.blocks - 1}))
    }
}
