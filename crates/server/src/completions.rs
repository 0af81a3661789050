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
use ingot_core::media::{Audio, Video};
use ingot_engine::{EngineError, Event, FinishReason, GenParams, Image, Media, MediaKind, MediaLimits, PromptRequest};
use serde::Serialize;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use crate::openai::{
    AssistantMessage, ChatChoice, ChatCompletion, ChatCompletionChunk, ChatCompletionRequest, ChunkChoice, Completion,
    CompletionChoice, CompletionRequest, Delivery, Delta, FunctionCall, FunctionCallDelta, MediaRef, ToolCall, ToolCallDelta,
    Usage,
};
use crate::openai::ValidChat;
use crate::logprobs::{ChatLogprobs, CompletionLogprobsBuilder};
use crate::media::fetch_media;
use crate::reply::{self, Piece, ReplyFormat, ReplySplitter};
use crate::{new_id, sink, unix_now, ApiError, AppState, JsonBody};

/// A queued request: its prompt's length, its choices and their events.
pub(crate) struct Submission {
    pub(crate) prompt_tokens: usize,
    pub(crate) samples: usize,
    pub(crate) events: mpsc::UnboundedReceiver<(usize, Event)>,
}

impl Submission {
    /// Waits for the engine's first event before a stream's response header goes out, so a
    /// request shed while it waited in the queue (past `--max-queue-wait`, or the engine
    /// stopping) gets its HTTP status (503 with `Retry-After`) instead of a 200 stream that
    /// carries only an error event, which clients, routers and retry logic would count as
    /// served. The other events follow through a relay that stops when the client goes.
    pub(crate) async fn started(mut self) -> Result<Submission, ApiError> {
        let Some(first) = self.events.recv().await else { return Ok(self) };
        if let (_, Event::Error(e)) = first {
            return Err(ApiError::from(e));
        }
        let (tx, rx) = mpsc::unbounded_channel();
        let _ = tx.send(first);
        let mut rest = std::mem::replace(&mut self.events, rx);
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    e = rest.recv() => {
                        if e.is_none_or(|e| tx.send(e).is_err()) {
                            return;
                        }
                    }
                    () = tx.closed() => return,
                }
            }
        });
        Ok(self)
    }
}

pub async fn chat(State(s): State<AppState>, JsonBody(req): JsonBody<ChatCompletionRequest>) -> Result<Response, ApiError> {
    let model = s.check_model(req.model.as_deref())?;
    let mut valid = req.validate()?;
    valid.chat.params.adapter = s.adapter(&model);
    let delivery = valid.delivery;
    let (submission, format) = queue_chat(&s, valid).await?;
    let ctx = Ctx { id: new_id("chatcmpl-"), created: unix_now(), model };
    Ok(if delivery.stream {
        sse(ctx.stream_chat(submission.started().await?, delivery, format))
    } else {
        ctx.complete_chat(submission, &format, delivery).await?.into_response()
    })
}

/// Fetches a validated chat request's images and queues it: what every chat-shaped route
/// (chat completions, Responses, Messages) does before it reads the events.
pub(crate) async fn queue_chat(s: &AppState, valid: ValidChat) -> Result<(Submission, ReplyFormat), ApiError> {
    let mut chat = valid.chat;
    chat.media = fetch_all_media(s, &valid.media).await?;
    let (mut sinks, events) = sink::channel(&s.metrics);
    let engine = s.engine.clone();
    let submitted = s.workers.run(move || engine.submit_chat(chat, &mut sinks)).await??;
    let (tools, prompt_opens_thinking) = s.engine.reply_format(&submitted.prompt_ids);
    let format = ReplyFormat { tools, tool_names: valid.tool_names, prompt_opens_thinking };
    Ok((Submission { prompt_tokens: submitted.prompt_ids.len(), samples: submitted.samples, events }, format))
}

/// Fetches and decodes a request's media, in order, under the server's media policy. Media of
/// a modality the model does not take is refused up front (400 naming the part), before
/// anything is fetched.
pub(crate) async fn fetch_all_media(s: &AppState, refs: &[MediaRef]) -> Result<Vec<Media>, ApiError> {
    if let Some(r) = refs.iter().find(|r| !s.engine.takes(r.kind)) {
        return Err(ApiError::invalid(r.field.clone(), format!("this model does not take {}s", r.kind.name())));
    }
    let mut out = Vec::with_capacity(refs.len());
    for r in refs {
        let param = format!("{}.url", r.field);
        let bytes = fetch_media(&r.url, &s.cfg.media).await.map_err(|e| ApiError::media(param.clone(), e))?;
        let limits =
            MediaLimits { max_bytes: s.cfg.media.max_bytes, max_audio_seconds: s.cfg.media.max_audio_seconds, ..MediaLimits::default() };
        let (field, kind, sampling) = (r.field.clone(), r.kind, s.cfg.media.video_sampling);
        // Decoding a large item takes a while: off the runtime.
        let decoded = s
            .workers
            .run(move || match kind {
                MediaKind::Image => Image::decode(&bytes, &field, &limits).map(Media::Image),
                MediaKind::Video => Video::decode(&bytes, &field, &limits, &sampling).map(Media::Video),
                MediaKind::Audio => Audio::decode(&bytes, &field, &limits).map(Media::Audio),
            })
            .await?;
        out.push(decoded.map_err(|source| ApiError::from(EngineError::Media { field: param, source }))?);
    }
    Ok(out)
}

pub async fn completions(State(s): State<AppState>, JsonBody(req): JsonBody<CompletionRequest>) -> Result<Response, ApiError> {
    let model = s.check_model(req.model.as_deref())?;
    let valid = req.validate()?;
    let params = GenParams { adapter: s.adapter(&model), ..valid.params };
    let submission = queue_prompt(&s, PromptRequest { prompt: valid.prompt, params }).await?;
    let ctx = Ctx { id: new_id("cmpl-"), created: unix_now(), model };
    Ok(if valid.delivery.stream {
        sse(ctx.stream_completion(submission.started().await?, valid.delivery))
    } else {
        ctx.complete_text(submission, valid.delivery).await?.into_response()
    })
}

/// Queues a raw prompt (`/v1/completions`, llama.cpp's `/completion`).
pub(crate) async fn queue_prompt(s: &AppState, request: PromptRequest) -> Result<Submission, ApiError> {
    let (mut sinks, events) = sink::channel(&s.metrics);
    let engine = s.engine.clone();
    let submitted = s.workers.run(move || engine.submit_prompt(request, &mut sinks)).await??;
    Ok(Submission { prompt_tokens: submitted.prompt_ids.len(), samples: submitted.samples, events })
}

pub(crate) fn sse(rx: mpsc::Receiver<SseEvent>) -> Response {
    let events = tokio_stream::StreamExt::map(ReceiverStream::new(rx), Ok::<_, Infallible>);
    Sse::new(events).keep_alive(KeepAlive::default()).into_response()
}

/// The next engine event, or `None` when every choice is done or the client has gone away
/// (so a request still waiting in the engine's queue is cancelled too).
pub(crate) async fn next_event(events: &mut mpsc::UnboundedReceiver<(usize, Event)>, client: &mpsc::Sender<SseEvent>) -> Option<(usize, Event)> {
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

/// Every choice's text, usage and token log-probabilities (if asked for), once all are done.
pub(crate) struct Finished {
    pub(crate) texts: Vec<String>,
    pub(crate) usages: Vec<ingot_engine::Usage>,
    pub(crate) logprobs: Vec<Vec<ingot_engine::TokenLogprobs>>,
}

/// Waits for every choice; the first engine error fails the request.
pub(crate) async fn collect(mut submission: Submission) -> Result<Finished, ApiError> {
    let n = submission.samples;
    let mut texts = vec![String::new(); n];
    let mut usages = vec![None; n];
    let mut logprobs = vec![Vec::new(); n];
    while let Some((i, event)) = submission.events.recv().await {
        match event {
            Event::Text(t) => texts[i].push_str(&t),
            Event::Logprobs(lp) => logprobs[i].push(lp),
            Event::Done(u) => usages[i] = Some(u),
            Event::Error(e) => return Err(e.into()),
        }
    }
    // Every sink is gone: a choice without its `Done` means the engine stopped.
    let usages = usages.into_iter().collect::<Option<Vec<_>>>().ok_or_else(|| ApiError::from(EngineError::Stopped))?;
    Ok(Finished { texts, usages, logprobs })
}

impl Ctx {
    fn usage(prompt_tokens: usize, usages: &[ingot_engine::Usage]) -> Usage {
        let completion = usages.iter().map(|u| u.completion_tokens).sum();
        let cached = usages.first().map_or(0, |u| u.cached_tokens);
        Usage::new(prompt_tokens, completion, cached)
    }

    async fn complete_chat(&self, submission: Submission, format: &ReplyFormat, delivery: Delivery) -> Result<Json<ChatCompletion>, ApiError> {
        let prompt_tokens = submission.prompt_tokens;
        let f = collect(submission).await?;
        let choices = f
            .texts
            .iter()
            .zip(&f.usages)
            .zip(f.logprobs)
            .enumerate()
            .map(|(index, ((text, u), lps))| {
                let logprobs = delivery.logprobs.then(|| {
                    let mut l = ChatLogprobs::default();
                    lps.into_iter().for_each(|lp| l.push(lp));
                    l
                });
                let mut r = reply::split(text, format);
                if delivery.single_call {
                    r.calls.truncate(1);
                }
                let finish_reason = finish_reason(u.finish_reason, r.calls.len());
                let content = (r.calls.is_empty() || !r.content.trim().is_empty()).then_some(r.content);
                let message = AssistantMessage { role: "assistant", content, reasoning_content: r.reasoning, tool_calls: r.calls };
                ChatChoice { index, message, finish_reason, logprobs }
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

    async fn complete_text(&self, submission: Submission, delivery: Delivery) -> Result<Json<Completion>, ApiError> {
        let prompt_tokens = submission.prompt_tokens;
        let f = collect(submission).await?;
        let choices = f
            .texts
            .into_iter()
            .zip(&f.usages)
            .zip(f.logprobs)
            .enumerate()
            .map(|(index, ((text, u), lps))| {
                let logprobs = delivery.logprobs.then(|| {
                    let mut b = CompletionLogprobsBuilder::default();
                    lps.into_iter().for_each(|lp| b.push(lp));
                    b.take()
                });
                CompletionChoice { index, text, finish_reason: Some(finish_reason(u.finish_reason, 0)), logprobs }
            })
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
        self.chunk_with(index, delta, finish_reason, include_usage, None)
    }

    /// A chunk carrying `logprobs` (the entries sampled since the choice's previous chunk).
    fn chunk_with(
        &self,
        index: usize,
        delta: Delta,
        finish_reason: Option<&'static str>,
        include_usage: bool,
        logprobs: Option<ChatLogprobs>,
    ) -> ChatCompletionChunk {
        ChatCompletionChunk {
            id: self.id.clone(),
            object: "chat.completion.chunk",
            created: self.created,
            model: self.model.clone(),
            choices: vec![ChunkChoice { index, delta, finish_reason, logprobs }],
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
            let mut logprobs = vec![ChatLogprobs::default(); n];
            let inc = delivery.include_usage;
            for i in 0..n {
                let delta = Delta { role: Some("assistant"), content: Some(String::new()), ..Delta::default() };
                if tx.send(data(&self.chunk(i, delta, None, inc))).await.is_err() {
                    return;
                }
            }
            while let Some((i, event)) = next_event(&mut events, &tx).await {
                let (pieces, usage) = match event {
                    Event::Logprobs(lp) => {
                        logprobs[i].push(lp);
                        continue;
                    }
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
                        Piece::Call(_) if delivery.single_call && calls[i] > 0 => continue,
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
                    let lps = delivery.logprobs.then(|| logprobs[i].take());
                    if tx.send(data(&self.chunk_with(i, delta, None, inc, lps))).await.is_err() {
                        return;
                    }
                }
                if let Some(u) = usage {
                    let reason = finish_reason(u.finish_reason, calls[i]);
                    usages.push(u);
                    let lps = delivery.logprobs.then(|| logprobs[i].take());
                    if tx.send(data(&self.chunk_with(i, Delta::default(), Some(reason), inc, lps))).await.is_err() {
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
            let mut logprobs: Vec<CompletionLogprobsBuilder> = (0..n).map(|_| CompletionLogprobsBuilder::default()).collect();
            let inc = delivery.include_usage;
            let chunk = |index, text, finish_reason, logprobs| Completion {
                id: self.id.clone(),
                object: "text_completion",
                created: self.created,
                model: self.model.clone(),
                choices: vec![CompletionChoice { index, text, finish_reason, logprobs }],
                usage: inc.then_some(None),
            };
            while let Some((i, event)) = next_event(&mut events, &tx).await {
                let c = match event {
                    Event::Logprobs(lp) => {
                        logprobs[i].push(lp);
                        continue;
                    }
                    Event::Text(t) => chunk(i, t, None, delivery.logprobs.then(|| logprobs[i].take())),
                    Event::Done(u) => {
                        let reason = finish_reason(u.finish_reason, 0);
                        usages.push(u);
                        chunk(i, String::new(), Some(reason), delivery.logprobs.then(|| logprobs[i].take()))
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
                let mut last = chunk(0, String::new(), None, None);
                last.choices.clear();
                last.usage = Some(Some(Self::usage(prompt_tokens, &usages)));
                data(&last)
            });
            end_stream(&tx, usages.len() == n, usage).await;
        });
        rx
    }
}

