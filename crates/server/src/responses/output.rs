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
use ingot_engine::FinishReason;
use serde_json::{json, Map, Value};
use tokio::sync::mpsc;

use super::store::{Kept, Store};
use crate::completions::{collect, Submission};
use crate::openai::{ChatMessage, Content, FunctionCallIn, Role, ToolCall, ToolCallIn};
use crate::reply::{self, Piece, ReplyFormat};
use crate::reply_stream::{stream_reply, EventWriter};
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
        if let Some(text) = r.shown_content() {
            output.push(message_item(&new_id("msg_"), text, "completed"));
        }
        output.extend(r.calls.iter().map(|c| call_item(&new_id("fc_"), c, "completed")));
        let response = self.response(output, Some((prompt_tokens, &u)));
        self.keep(&response, &r.content, &r.calls);
        Ok(response)
    }

    /// The stream of Responses events for the reply.
    pub fn stream(self, submission: Submission, format: ReplyFormat) -> mpsc::Receiver<SseEvent> {
        let w = Writer { finish: Some(self), sequence: 0, output: Vec::new(), open: None, content: String::new(), calls: Vec::new() };
        stream_reply(submission, format, w)
    }
}

/// The item a stream has open.
enum Open {
    Reasoning { id: String, text: String },
    Message { id: String, text: String },
}

/// A stream's writer: numbers the events and tracks the output items.
struct Writer {
    /// Taken when the response is finished.
    finish: Option<Finish>,
    sequence: u64,
    /// Finished items.
    output: Vec<Value>,
    open: Option<Open>,
    /// The reply's content and calls so far (for the store).
    content: String,
    calls: Vec<ToolCall>,
}

impl EventWriter for Writer {
    fn start(&mut self, _: usize) -> Vec<SseEvent> {
        let start = self.finish.as_ref().map(|f| f.response(Vec::new(), None));
        vec![self.event("response.created", json!({"response": start})), self.event("response.in_progress", json!({"response": start}))]
    }

    fn piece(&mut self, piece: Piece) -> Vec<SseEvent> {
        let mut out = Vec::new();
        match piece {
            Piece::Reasoning(t) => {
                if !matches!(self.open, Some(Open::Reasoning { .. })) {
                    out.extend(self.close());
                    let id = new_id("rs_");
                    out.push(self.event("response.output_item.added", json!({"output_index": self.index(), "item": reasoning_item(&id, "", "in_progress")})));
                    self.open = Some(Open::Reasoning { id, text: String::new() });
                }
                let i = self.index();
                let Some(Open::Reasoning { id, text }) = &mut self.open else { return out };
                text.push_str(&t);
                let body = json!({"item_id": id, "output_index": i, "content_index": 0, "delta": t});
                out.push(self.event("response.reasoning_text.delta", body));
            }
            Piece::Content(t) => {
                if !matches!(self.open, Some(Open::Message { .. })) {
                    out.extend(self.close());
                    let (id, i) = (new_id("msg_"), self.index());
                    out.push(self.event("response.output_item.added", json!({"output_index": i, "item": message_item(&id, "", "in_progress")})));
                    out.push(self.event("response.content_part.added", json!({"item_id": id, "output_index": i, "content_index": 0, "part": text_part("")})));
                    self.open = Some(Open::Message { id, text: String::new() });
                }
                let i = self.index();
                let Some(Open::Message { id, text }) = &mut self.open else { return out };
                text.push_str(&t);
                self.content.push_str(&t);
                let body = json!({"item_id": id, "output_index": i, "content_index": 0, "delta": t, "logprobs": []});
                out.push(self.event("response.output_text.delta", body));
            }
            Piece::Call(c) => {
                out.extend(self.close());
                let (id, i) = (new_id("fc_"), self.index());
                let (name, arguments) = (&c.function.name, &c.function.arguments);
                let item = call_item(&id, &c, "completed");
                out.push(self.event("response.output_item.added", json!({"output_index": i, "item": call_item(&id, &c, "in_progress")})));
                out.push(self.event("response.function_call_arguments.delta", json!({"item_id": id, "output_index": i, "delta": arguments})));
                out.push(self.event("response.function_call_arguments.done", json!({"item_id": id, "output_index": i, "name": name, "arguments": arguments})));
                out.push(self.event("response.output_item.done", json!({"output_index": i, "item": item})));
                self.output.push(item);
                self.calls.push(c);
            }
        }
        out
    }

    fn done(&mut self, prompt_tokens: usize, usage: &ingot_engine::Usage) -> Vec<SseEvent> {
        let mut out = self.close();
        let Some(finish) = self.finish.take() else { return out };
        let response = finish.response(std::mem::take(&mut self.output), Some((prompt_tokens, usage)));
        let kind = if response["status"] == "incomplete" { "response.incomplete" } else { "response.completed" };
        out.push(self.event(kind, json!({"response": response})));
        finish.keep(&response, &self.content, &self.calls);
        out
    }

    fn error(&mut self, e: &ApiError) -> SseEvent {
        self.event("error", json!({"code": e.code, "message": e.message, "param": e.param}))
    }
}

impl Writer {
    /// One event, numbered.
    fn event(&mut self, kind: &str, mut body: Value) -> SseEvent {
        body["type"] = kind.into();
        body["sequence_number"] = self.sequence.into();
        self.sequence += 1;
        SseEvent::default().event(kind).data(body.to_string())
    }

    fn index(&self) -> usize {
        self.output.len()
    }

    /// Closes the open item, if any: its `.done` events.
    fn close(&mut self) -> Vec<SseEvent> {
        let i = self.index();
        let (item, mut out) = match self.open.take() {
            None => return Vec::new(),
            Some(Open::Reasoning { id, text }) => {
                let done = self.event("response.reasoning_text.done", json!({"item_id": id, "output_index": i, "content_index": 0, "text": text}));
                (reasoning_item(&id, &text, "completed"), vec![done])
            }
            Some(Open::Message { id, text }) => {
                let body = json!({"item_id": id, "output_index": i, "content_index": 0, "text": text, "logprobs": []});
                let text_done = self.event("response.output_text.done", body);
                let part_done = self.event("response.content_part.done", json!({"item_id": id, "output_index": i, "content_index": 0, "part": text_part(&text)}));
                (message_item(&id, &text, "completed"), vec![text_done, part_done])
            }
        };
        out.push(self.event("response.output_item.done", json!({"output_index": i, "item": item})));
        self.output.push(item);
        out
    }
}
