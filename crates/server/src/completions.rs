//! `POST /v1/chat/completions` and `POST /v1/completions`: submit to the engine, then answer
//! with one JSON body or a stream of SSE chunks.
//!
//! Validation and queueing run on the request workers ([`crate::workers`]); a request's n
//! choices then send their events into one channel ([`crate::sink`]); streamed chunks of
//! different choices interleave, each carrying its `index`. The streaming side is a task that
//! writes SSE events into a channel the response body reads: when the client goes away the
//! send fails, the task returns and drops the events' receiver, and the engine cancels every
//! sequence of the request at its next step.

use std::convert::Infallible;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::Json;
use ingot_engine::{EngineError, Event, FinishReason, GenParams, Image, Media, MediaLimits, PromptRequest};
use serde::Serialize;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use crate::openai::{
    AssistantMessage, ChatChoice, ChatCompletion, ChatCompletionChunk, ChatCompletionRequest, ChunkChoice, Completion,
    CompletionChoice, CompletionRequest, Delivery, Delta, FunctionCall, FunctionCallDelta, ImageRef, ToolCall, ToolCallDelta,
    Usage,
};
use crate::media::fetch_media;
use crate::reply::{self, Piece, ReplyFormat, ReplySplitter};
use crate::{new_id, sink, unix_now, ApiError, AppState, JsonBody};

/// A queued request: its prompt's length, its choices and their events.
pub(crate) struct Submission {
    prompt_tokens: usize,
    samples: usize,
    events: mpsc::UnboundedReceiver<(usize, Event)>,
}

pub async fn chat(State(s): State<AppState>, JsonBody(req): JsonBody<ChatCompletionRequest>) -> Result<Response, ApiError> {
    let model = s.check_model(req.model.as_deref())?;
    let valid = req.validate()?;
    let mut chat = valid.chat;
    chat.media = fetch_images(&s, &valid.images).await?;
    chat.params.adapter = s.adapter(&model);
    let (mut sinks, events) = sink::channel(&s.metrics);
    let engine = s.engine.clone();
    let submitted = s.workers.run(move || engine.submit_chat(chat, &mut sinks)).await??;
    let (tools, prompt_opens_thinking) = s.engine.reply_format(&submitted.prompt_ids);
    let format = ReplyFormat { tools, tool_names: valid.tool_names, prompt_opens_thinking };
    let submission = Submission { prompt_tokens: submitted.prompt_ids.len(), samples: submitted.samples, events };
    let ctx = Ctx { id: new_id("chatcmpl-"), created: unix_now(), model };
    Ok(if valid.delivery.stream {
        sse(ctx.stream_chat(submission, valid.delivery, format))
    } else {
        ctx.complete_chat(submission, &format).await?.into_response()
    })
}

/// Fetches and decodes a request's images, in order, under the server's media policy. A
/// model without a vision encoder refuses them up front, before anything is fetched.
pub(crate) async fn fetch_images(s: &AppState, images: &[ImageRef]) -> Result<Vec<Media>, ApiError> {
    let Some(first) = images.first() else { return Ok(Vec::new()) };
    if !s.engine.takes_images() {
        return Err(ApiError::invalid(first.field.clone(), "this model takes text only (it has no vision encoder)"));
    }
    let mut out = Vec::with_capacity(images.len());
    for image in images {
        let param = format!("{}.url", image.field);
        let bytes = fetch_media(&image.url, &s.cfg.media).await.map_err(|e| ApiError::media(param.clone(), e))?;
        let limits = MediaLimits { max_bytes: s.cfg.media.max_bytes, ..MediaLimits::default() };
        let field = image.field.clone();
        // Decoding a large image takes a while: off the runtime.
        let decoded = s.workers.run(move || Image::decode(&bytes, &field, &limits)).await?;
        out.push(Media::Image(decoded.map_err(|source| ApiError::from(EngineError::Media { field: param, source }))?));
    }
    Ok(out)
}

pub async fn completions(State(s): State<AppState>, JsonBody(req): JsonBody<CompletionRequest>) -> Result<Response, ApiError> {
    let model = s.check_model(req.model.as_deref())?;
    let valid = req.validate()?;
    let params = GenParams { adapter: s.adapter(&model), ..valid.params };
    let request = PromptRequest { prompt: valid.prompt, params };
    let (mut sinks, events) = sink::channel(&s.metrics);
    let engine = s.engine.clone();
    let submitted = s.workers.run(move || engine.submit_prompt(request, &mut sinks)).await??;
    let submission = Submission { prompt_tokens: submitted.prompt_ids.len(), samples: submitted.samples, events };
    let ctx = Ctx { id: new_id("cmpl-"), created: unix_now(), model };
    Ok(if valid.delivery.stream {
        sse(ctx.stream_completion(submission, valid.delivery))
    } else {
        ctx.complete_text(submission).await?.into_response()
    })
}

fn sse(rx: mpsc::Receiver<SseEvent>) -> Response {
    let events = tokio_stream::StreamExt::map(ReceiverStream::new(rx), Ok::<_, Infallible>);
    Sse::new(events).keep_alive(KeepAlive::default()).into_response()
}

/// The next engine event, or `None` when every choice is done or the client has gone away
/// (so a request still waiting in the engine's queue is cancelled too).
async fn next_event(events: &mut mpsc::UnboundedReceiver<(usize, Event)>, client: &mpsc::Sender<SseEvent>) -> Option<(usize, Event)> {
    tokio::select! {
        e = events.recv() => e,
        () = client.closed() => None,
    }
}

/// The end of a stream: an error event when the engine stopped before every choice finished
/// (unless the client has gone too), else the usage chunk (if asked for) and `[DONE]`.
async fn end_stream(tx: &mpsc::Sender<SseEvent>, finished: bool, usage: Option<SseEvent>) {
    if !finished {
        if !tx.is_closed() {
            let _ = tx.send(ApiError::from(EngineError::Stopped).sse_event()).await;
        }
        return;
    }
    if let Some(u) = usage {
        if tx.send(u).await.is_err() {
            return;
        }
    }
    let _ = tx.send(SseEvent::default().data("[DONE]")).await;
}

fn data(value: &impl Serialize) -> SseEvent {
    SseEvent::default().json_data(value).unwrap_or_else(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).sse_event())
}

fn finish_reason(r: FinishReason, calls: usize) -> &'static str {
    if calls > 0 {
        return "tool_calls";
    }
    match r {
        FinishReason::Length => "length",
        _ => "stop",
    }
}

/// One request's response: its id, creation time and model name.
struct Ctx {
    id: String,
    created: u64,
    model: String,
}

/// Every choice's text and usage, once all are done.
struct Finished {
    texts: Vec<String>,
    usages: Vec<ingot_engine::Usage>,
}

impl Ctx {
    /// Waits for every choice; the first engine error fails the request.
    async fn collect(&self, mut submission: Submission) -> Result<Finished, ApiError> {
        let n = submission.samples;
        let mut texts = vec![String::new(); n];
        let mut usages = vec![None; n];
        while let Some((i, event)) = submission.events.recv().await {
            match event {
                Event::Text(t) => texts[i].push_str(&t),
                Event::Done(u) => usages[i] = Some(u),
                Event::Error(e) => return Err(e.into()),
            }
        }
        // Every sink is gone: a choice without its `Done` means the engine stopped.
        let usages = usages.into_iter().collect::<Option<Vec<_>>>().ok_or_else(|| ApiError::from(EngineError::Stopped))?;
        Ok(Finished { texts, usages })
    }

    fn usage(prompt_tokens: usize, usages: &[ingot_engine::Usage]) -> Usage {
        let completion = usages.iter().map(|u| u.completion_tokens).sum();
        let cached = usages.first().map_or(0, |u| u.cached_tokens);
        Usage::new(prompt_tokens, completion, cached)
    }

    async fn complete_chat(&self, submission: Submission, format: &ReplyFormat) -> Result<Json<ChatCompletion>, ApiError> {
        let prompt_tokens = submission.prompt_tokens;
        let f = self.collect(submission).await?;
        let choices = f
            .texts
            .iter()
            .zip(&f.usages)
            .enumerate()
            .map(|(index, (text, u))| {
                let r = reply::split(text, format);
                let finish_reason = finish_reason(u.finish_reason, r.calls.len());
                let content = (r.calls.is_empty() || !r.content.trim().is_empty()).then_some(r.content);
                let message = AssistantMessage { role: "assistant", content, reasoning_content: r.reasoning, tool_calls: r.calls };
                ChatChoice { index, message, finish_reason, logprobs: None }
            })
            .collect();
        Ok(Json(ChatCompletion {
            id: self.id.clone(),
            object: "chat.completion",
            created: self.created,
            model: self.model.clone(),
            choices,
            usage: Self::usage(prompt_tokens, &f.usages),
        }))
    }

    async fn complete_text(&self, submission: Submission) -> Result<Json<Completion>, ApiError> {
        let prompt_tokens = submission.prompt_tokens;
        let f = self.collect(submission).await?;
        let choices = f
            .texts
            .into_iter()
            .zip(&f.usages)
            .enumerate()
            .map(|(index, (text, u))| CompletionChoice { index, text, finish_reason: Some(finish_reason(u.finish_reason, 0)), logprobs: None })
            .collect();
        Ok(Json(Completion {
            id: self.id.clone(),
            object: "text_completion",
            created: self.created,
            model: self.model.clone(),
            choices,
            usage: Some(Some(Self::usage(prompt_tokens, &f.usages))),
        }))
    }

    fn chunk(&self, index: usize, delta: Delta, finish_reason: Option<&'static str>, include_usage: bool) -> ChatCompletionChunk {
        ChatCompletionChunk {
            id: self.id.clone(),
            object: "chat.completion.chunk",
            created: self.created,
            model: self.model.clone(),
            choices: vec![ChunkChoice { index, delta, finish_reason, logprobs: None }],
            usage: include_usage.then_some(None),
        }
    }

    /// The chat stream: a role chunk per choice, then deltas as they come (content,
    /// reasoning, tool calls), a finishing chunk per choice, the usage chunk if asked, `[DONE]`.
    fn stream_chat(self, submission: Submission, delivery: Delivery, format: ReplyFormat) -> mpsc::Receiver<SseEvent> {
        let (tx, rx) = mpsc::channel(64);
        tokio::spawn(async move {
            let Submission { prompt_tokens, samples: n, mut events } = submission;
            let mut splitters: Vec<ReplySplitter> = (0..n).map(|_| ReplySplitter::new(&format)).collect();
            let mut calls = vec![0usize; n];
            let mut usages = Vec::with_capacity(n);
            let inc = delivery.include_usage;
            for i in 0..n {
                let delta = Delta { role: Some("assistant"), content: Some(String::new()), ..Delta::default() };
                if tx.send(data(&self.chunk(i, delta, None, inc))).await.is_err() {
                    return;
                }
            }
            while let Some((i, event)) = next_event(&mut events, &tx).await {
                let (pieces, usage) = match event {
                    Event::Text(t) => (splitters[i].push(&t), None),
                    Event::Done(u) => (splitters[i].finish(), Some(u)),
                    Event::Error(e) => {
                        let _ = tx.send(ApiError::from(e).sse_event()).await;
                        return;
                    }
                };
                for piece in pieces {
                    let delta = match piece {
                        Piece::Content(t) => Delta { content: Some(t), ..Delta::default() },
                        Piece::Reasoning(t) => Delta { reasoning_content: Some(t), ..Delta::default() },
                        Piece::Call(c) => {
                            calls[i] += 1;
                            let ToolCall { id, function: FunctionCall { name, arguments }, .. } = c;
                            let call = ToolCallDelta {
                                index: calls[i] - 1,
                                id: Some(id),
                                kind: Some("function"),
                                function: FunctionCallDelta { name: Some(name), arguments },
                            };
                            Delta { tool_calls: vec![call], ..Delta::default() }
                        }
                    };
                    if tx.send(data(&self.chunk(i, delta, None, inc))).await.is_err() {
                        return;
                    }
                }
                if let Some(u) = usage {
                    let reason = finish_reason(u.finish_reason, calls[i]);
                    usages.push(u);
                    if tx.send(data(&self.chunk(i, Delta::default(), Some(reason), inc))).await.is_err() {
                        return;
                    }
                }
            }
            let usage = inc.then(|| {
                let mut last = self.chunk(0, Delta::default(), None, true);
                last.choices.clear();
                last.usage = Some(Some(Self::usage(prompt_tokens, &usages)));
                data(&last)
            });
            end_stream(&tx, usages.len() == n, usage).await;
        });
        rx
    }

    fn stream_completion(self, submission: Submission, delivery: Delivery) -> mpsc::Receiver<SseEvent> {
        let (tx, rx) = mpsc::channel(64);
        tokio::spawn(async move {
            let Submission { prompt_tokens, samples: n, mut events } = submission;
            let mut usages = Vec::new();
            let inc = delivery.include_usage;
            let chunk = |index, text, finish_reason| Completion {
                id: self.id.clone(),
                object: "text_completion",
                created: self.created,
                model: self.model.clone(),
                choices: vec![CompletionChoice { index, text, finish_reason, logprobs: None }],
                usage: inc.then_some(None),
            };
            while let Some((i, event)) = next_event(&mut events, &tx).await {
                let c = match event {
                    Event::Text(t) => chunk(i, t, None),
                    Event::Done(u) => {
                        let reason = finish_reason(u.finish_reason, 0);
                        usages.push(u);
                        chunk(i, String::new(), Some(reason))
                    }
                    Event::Error(e) => {
                        let _ = tx.send(ApiError::from(e).sse_event()).await;
                        return;
                    }
                };
                if tx.send(data(&c)).await.is_err() {
                    return;
                }
            }
            let usage = inc.then(|| {
                let mut last = chunk(0, String::new(), None);
                last.choices.clear();
                last.usage = Some(Some(Self::usage(prompt_tokens, &usages)));
                data(&last)
            });
            end_stream(&tx, usages.len() == n, usage).await;
        });
        rx
    }
}

