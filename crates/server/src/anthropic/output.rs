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
//! prefix cache, which are `cache_read_input_tokens`. A stop string ends the reply as
//! `end_turn` (the engine does not report which string matched, so `stop_sequence` is null).

use axum::response::sse::Event as SseEvent;
use ingot_engine::{Event, FinishReason};
use serde_json::{json, Value};
use tokio::sync::mpsc;

use super::AnthropicError;
use crate::completions::{collect, next_event, Submission};
use crate::openai::ToolCall;
use crate::reply::{self, Piece, ReplyFormat, ReplySplitter};
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
        if !r.content.is_empty() && !(r.content.trim().is_empty() && !r.calls.is_empty()) {
            content.push(json!({"type": "text", "text": r.content}));
        }
        for c in &r.calls {
            // The template's parser has checked the arguments are a JSON object.
            content.push(tool_use(c, serde_json::from_str(&c.function.arguments).unwrap_or_else(|_| json!({}))));
        }
        Ok(json!({"id": self.id, "type": "message", "role": "assistant", "model": self.model, "content": content,
            "stop_reason": stop_reason(&u, r.calls.len()), "stop_sequence": null,
            "usage": usage(prompt_tokens, u.cached_tokens, u.completion_tokens)}))
    }

    pub fn stream(self, submission: Submission, format: ReplyFormat) -> mpsc::Receiver<SseEvent> {
        let (tx, rx) = mpsc::channel(64);
        tokio::spawn(async move {
            let Submission { prompt_tokens, mut events, .. } = submission;
            let mut w = Writer { tx, blocks: 0, open: None, calls: 0 };
            let start = json!({"message": {"id": self.id, "type": "message", "role": "assistant", "model": self.model, "content": [],
                "stop_reason": null, "stop_sequence": null, "usage": usage(prompt_tokens, 0, 0)}});
            if !w.send("message_start", start).await || !w.send("ping", json!({})).await {
                return;
            }
            let mut splitter = ReplySplitter::new(&format);
            while let Some((_, event)) = next_event(&mut events, &w.tx).await {
                let (pieces, done) = match event {
                    Event::Text(t) => (splitter.push(&t), None),
                    Event::Done(u) => (splitter.finish(), Some(u)),
                    Event::Error(e) => {
                        w.error(ApiError::from(e)).await;
                        return;
                    }
                };
                for piece in pieces {
                    if !w.piece(piece).await {
                        return;
                    }
                }
                if let Some(u) = done {
                    let delta = json!({"delta": {"stop_reason": stop_reason(&u, w.calls), "stop_sequence": null},
                        "usage": usage(prompt_tokens, u.cached_tokens, u.completion_tokens)});
                    let _ = w.close().await && w.send("message_delta", delta).await && w.send("message_stop", json!({})).await;
                    return;
                }
            }
            w.error(ApiError::from(ingot_engine::EngineError::Stopped)).await;
        });
        rx
    }
}

/// The kind of block a stream has open.
#[derive(Clone, Copy, PartialEq)]
enum Open {
    Thinking,
    Text,
}

struct Writer {
    tx: mpsc::Sender<SseEvent>,
    /// Blocks started so far.
    blocks: usize,
    open: Option<Open>,
    calls: usize,
}

impl Writer {
    /// Sends one event; false when the client has gone.
    async fn send(&mut self, kind: &str, mut body: Value) -> bool {
        body["type"] = kind.into();
        self.tx.send(SseEvent::default().event(kind).data(body.to_string())).await.is_ok()
    }

    async fn error(&mut self, e: ApiError) {
        if !self.tx.is_closed() {
            let _ = self.tx.send(SseEvent::default().event("error").data(AnthropicError(e).body().to_string())).await;
        }
    }

    /// Starts block `self.blocks` with `block` unless a block of kind `open` is open.
    async fn start(&mut self, open: Option<Open>, block: Value) -> bool {
        if open.is_some() && self.open == open {
            return true;
        }
        if !self.close().await {
            return false;
        }
        self.open = open;
        self.blocks += 1;
        self.send("content_block_start", json!({"index": self.blocks - 1, "content_block": block})).await
    }

    async fn delta(&mut self, delta: Value) -> bool {
        self.send("content_block_delta", json!({"index": self.blocks - 1, "delta": delta})).await
    }

    async fn piece(&mut self, piece: Piece) -> bool {
        match piece {
            Piece::Reasoning(t) => {
                self.start(Some(Open::Thinking), json!({"type": "thinking", "thinking": "", "signature": ""})).await
                    && self.delta(json!({"type": "thinking_delta", "thinking": t})).await
            }
            Piece::Content(t) => {
                self.start(Some(Open::Text), json!({"type": "text", "text": ""})).await && self.delta(json!({"type": "text_delta", "text": t})).await
            }
            Piece::Call(c) => {
                self.calls += 1;
                self.start(None, tool_use(&c, json!({}))).await
                    && self.delta(json!({"type": "input_json_delta", "partial_json": c.function.arguments})).await
                    && self.close_block().await
            }
        }
    }

    /// Closes the open text or thinking block, if any.
    async fn close(&mut self) -> bool {
        match self.open.take() {
            None => true,
            Some(_) => self.close_block().await,
        }
    }

    async fn close_block(&mut self) -> bool {
        self.open = None;
        self.send("content_block_stop", json!({"index": self.blocks - 1})).await
    }
}
