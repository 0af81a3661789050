//! A response object and its output items, whole ([`Finish::complete`]) or as the stream of
//! Responses events ([`Finish::stream`]).
//!
//! The reply is split as the chat route splits it ([`crate::reply`]): reasoning becomes a
//! `reasoning` item, content a `message` item with one `output_text` part, each tool call a
//! `function_call` item. A stream opens an item when its first piece arrives and closes it
//! (its `.done` events) when a piece of another kind arrives or the reply ends, so the items of
//! a streamed response are those of the same reply unstreamed; every event carries its `type`
//! (also the SSE event name) and a `sequence_number` counting from 0. The last event is
//! `response.completed` (`response.incomplete` when `max_output_tokens` cut the reply), or an
//! `error` event when the engine failed mid-stream.

use std::sync::Arc;

use axum::response::sse::Event as SseEvent;
use ingot_engine::{Event, FinishReason};
use serde_json::{json, Map, Value};
use tokio::sync::mpsc;

use super::store::{Kept, Store};
use crate::completions::{collect, next_event, Submission};
use crate::openai::{ChatMessage, Content, FunctionCallIn, Role, ToolCall, ToolCallIn};
use crate::reply::{self, Piece, ReplyFormat, ReplySplitter};
use crate::{new_id, ApiError};

/// What a response needs once the reply is generated.
pub struct Finish {
    /// The response object's fields besides `status`, `output`, `usage` and
    /// `incomplete_details` (id, model, the request's settings echoed).
    pub head: Map<String, Value>,
    /// Where the response is kept (`store` not false).
    pub store: Option<Arc<Store>>,
    /// The conversation the reply continues, for the store.
    pub conversation: Vec<ChatMessage>,
}

fn message_item(id: &str, text: &str, status: &str) -> Value {
    json!({"type": "message", "id": id, "status": status, "role": "assistant",
        "content": if status == "in_progress" { json!([]) } else { json!([text_part(text)]) }})
}

fn text_part(text: &str) -> Value {
    json!({"type": "output_text", "text": text, "annotations": [], "logprobs": []})
}

fn reasoning_item(id: &str, text: &str, status: &str) -> Value {
    json!({"type": "reasoning", "id": id, "status": status, "summary": [],
        "content": if status == "in_progress" { json!([]) } else { json!([{"type": "reasoning_text", "text": text}]) }})
}

fn call_item(id: &str, call: &ToolCall, status: &str) -> Value {
    let arguments = if status == "in_progress" { "" } else { call.function.arguments.as_str() };
    json!({"type": "function_call", "id": id, "call_id": call.id, "name": call.function.name, "arguments": arguments, "status": status})
}

fn usage(prompt_tokens: usize, u: &ingot_engine::Usage) -> Value {
    json!({"input_tokens": prompt_tokens, "input_tokens_details": {"cached_tokens": u.cached_tokens},
        "output_tokens": u.completion_tokens, "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": prompt_tokens + u.completion_tokens})
}

/// The assistant turn a reply adds to the conversation.
fn assistant_turn(content: &str, calls: &[ToolCall]) -> ChatMessage {
    let tool_calls = calls
        .iter()
        .map(|c| ToolCallIn {
            id: Some(c.id.clone()),
            kind: Some("function".into()),
            function: FunctionCallIn { name: c.function.name.clone(), arguments: c.function.arguments.clone() },
        })
        .collect::<Vec<_>>();
    ChatMessage {
        role: Role::Assistant,
        content: Some(Content::Text(content.to_owned())),
        tool_calls: (!tool_calls.is_empty()).then_some(tool_calls),
        tool_call_id: None,
        name: None,
    }
}

impl Finish {
    /// The response object in a state: `in_progress` (no output yet) or the final one.
    fn response(&self, output: Vec<Value>, end: Option<(usize, &ingot_engine::Usage)>) -> Value {
        let mut r = self.head.clone();
        let status = match end {
            None => "in_progress",
            Some((_, u)) if u.finish_reason == FinishReason::Length => "incomplete",
            Some(_) => "completed",
        };
        r.insert("status".into(), status.into());
        let incomplete = (status == "incomplete").then(|| json!({"reason": "max_output_tokens"}));
        r.insert("incomplete_details".into(), incomplete.into());
        r.insert("output".into(), output.into());
        r.insert("usage".into(), end.map(|(prompt, u)| usage(prompt, u)).into());
        Value::Object(r)
    }

    /// Keeps the finished response and its conversation, when asked to.
    fn keep(mut self, response: &Value, content: &str, calls: &[ToolCall]) {
        let Some(store) = self.store.take() else { return };
        self.conversation.push(assistant_turn(content, calls));
        let id = response["id"].as_str().unwrap_or_default().to_owned();
        store.put(id, Kept { response: response.clone(), conversation: self.conversation });
    }

    /// The whole response, once the reply is done.
    pub async fn complete(self, submission: Submission, format: &ReplyFormat) -> Result<Value, ApiError> {
        let prompt_tokens = submission.prompt_tokens;
        let mut finished = collect(submission).await?;
        let (text, u) = (finished.texts.remove(0), finished.usages.remove(0));
        let r = reply::split(&text, format);
        let mut output = Vec::new();
        if let Some(reasoning) = &r.reasoning {
            output.push(reasoning_item(&new_id("rs_"), reasoning, "completed"));
        }
        if !r.content.is_empty() && !(r.content.trim().is_empty() && !r.calls.is_empty()) {
            output.push(message_item(&new_id("msg_"), &r.content, "completed"));
        }
        output.extend(r.calls.iter().map(|c| call_item(&new_id("fc_"), c, "completed")));
        let response = self.response(output, Some((prompt_tokens, &u)));
        self.keep(&response, &r.content, &r.calls);
        Ok(response)
    }

    /// The stream of Responses events for the reply.
    pub fn stream(self, submission: Submission, format: ReplyFormat) -> mpsc::Receiver<SseEvent> {
        let (tx, rx) = mpsc::channel(64);
        tokio::spawn(async move {
            let mut w = Writer { tx, sequence: 0, output: Vec::new(), open: None, content: String::new(), calls: Vec::new() };
            let Submission { prompt_tokens, mut events, .. } = submission;
            let start = self.response(Vec::new(), None);
            if !w.send("response.created", json!({"response": start})).await || !w.send("response.in_progress", json!({"response": start})).await {
                return;
            }
            let mut splitter = ReplySplitter::new(&format);
            while let Some((_, event)) = next_event(&mut events, &w.tx).await {
                let (pieces, done) = match event {
                    Event::Text(t) => (splitter.push(&t), None),
                    Event::Done(u) => (splitter.finish(), Some(u)),
                    Event::Error(e) => {
                        w.error(&ApiError::from(e)).await;
                        return;
                    }
                };
                for piece in pieces {
                    if !w.piece(piece).await {
                        return;
                    }
                }
                if let Some(u) = done {
                    if !w.close().await {
                        return;
                    }
                    let response = self.response(std::mem::take(&mut w.output), Some((prompt_tokens, &u)));
                    let kind = if response["status"] == "incomplete" { "response.incomplete" } else { "response.completed" };
                    w.send(kind, json!({"response": response})).await;
                    self.keep(&response, &w.content, &w.calls);
                    return;
                }
            }
            // The engine stopped before the reply ended (or the client went away).
            w.error(&ApiError::from(ingot_engine::EngineError::Stopped)).await;
        });
        rx
    }
}

/// The item a stream has open.
enum Open {
    Reasoning { id: String, text: String },
    Message { id: String, text: String },
}

/// A stream's writer: numbers the events and tracks the output items.
struct Writer {
    tx: mpsc::Sender<SseEvent>,
    sequence: u64,
    /// Finished items.
    output: Vec<Value>,
    open: Option<Open>,
    /// The reply's content and calls so far (for the store).
    content: String,
    calls: Vec<ToolCall>,
}

impl Writer {
    /// Sends one event; false when the client has gone.
    async fn send(&mut self, kind: &str, mut body: Value) -> bool {
        body["type"] = kind.into();
        body["sequence_number"] = self.sequence.into();
        self.sequence += 1;
        let event = SseEvent::default().event(kind).data(body.to_string());
        self.tx.send(event).await.is_ok()
    }

    async fn error(&mut self, e: &ApiError) {
        if !self.tx.is_closed() {
            self.send("error", json!({"code": e.code, "message": e.message, "param": e.param})).await;
        }
    }

    fn index(&self) -> usize {
        self.output.len()
    }

    async fn piece(&mut self, piece: Piece) -> bool {
        let i = self.index();
        match piece {
            Piece::Reasoning(t) => {
                if !matches!(self.open, Some(Open::Reasoning { .. })) {
                    let id = new_id("rs_");
                    if !self.close().await || !self.send("response.output_item.added", json!({"output_index": i, "item": reasoning_item(&id, "", "in_progress")})).await {
                        return false;
                    }
                    self.open = Some(Open::Reasoning { id, text: String::new() });
                }
                let Some(Open::Reasoning { id, text }) = &mut self.open else { return false };
                text.push_str(&t);
                let id = id.clone();
                self.send("response.reasoning_text.delta", json!({"item_id": id, "output_index": i, "content_index": 0, "delta": t})).await
            }
            Piece::Content(t) => {
                if !matches!(self.open, Some(Open::Message { .. })) {
                    let id = new_id("msg_");
                    if !self.close().await
                        || !self.send("response.output_item.added", json!({"output_index": i, "item": message_item(&id, "", "in_progress")})).await
                        || !self.send("response.content_part.added", json!({"item_id": id, "output_index": i, "content_index": 0, "part": text_part("")})).await
                    {
                        return false;
                    }
                    self.open = Some(Open::Message { id, text: String::new() });
                }
                let Some(Open::Message { id, text }) = &mut self.open else { return false };
                text.push_str(&t);
                self.content.push_str(&t);
                let id = id.clone();
                self.send("response.output_text.delta", json!({"item_id": id, "output_index": i, "content_index": 0, "delta": t, "logprobs": []})).await
            }
            Piece::Call(c) => {
                if !self.close().await {
                    return false;
                }
                let i = self.index();
                let id = new_id("fc_");
                let item = call_item(&id, &c, "completed");
                let ok = self.send("response.output_item.added", json!({"output_index": i, "item": call_item(&id, &c, "in_progress")})).await
                    && self.send("response.function_call_arguments.delta", json!({"item_id": id, "output_index": i, "delta": c.function.arguments})).await
                    && self
                        .send("response.function_call_arguments.done", json!({"item_id": id, "output_index": i, "name": c.function.name, "arguments": c.function.arguments}))
                        .await
                    && self.send("response.output_item.done", json!({"output_index": i, "item": item})).await;
                self.output.push(item);
                self.calls.push(c);
                ok
            }
        }
    }

    /// Closes the open item, if any: its `.done` events.
    async fn close(&mut self) -> bool {
        let i = self.index();
        let (item, ok) = match self.open.take() {
            None => return true,
            Some(Open::Reasoning { id, text }) => {
                let ok = self.send("response.reasoning_text.done", json!({"item_id": id, "output_index": i, "content_index": 0, "text": text})).await;
                (reasoning_item(&id, &text, "completed"), ok)
            }
            Some(Open::Message { id, text }) => {
                let ok = self.send("response.output_text.done", json!({"item_id": id, "output_index": i, "content_index": 0, "text": text, "logprobs": []})).await
                    && self.send("response.content_part.done", json!({"item_id": id, "output_index": i, "content_index": 0, "part": text_part(&text)})).await;
                (message_item(&id, &text, "completed"), ok)
            }
        };
        let ok = ok && self.send("response.output_item.done", json!({"output_index": i, "item": item})).await;
        self.output.push(item);
        ok
    }
}
