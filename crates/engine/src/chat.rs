//! The chat API of LLaMA Factory's `ChatModel` on the handle: `chat`, `stream_chat` (and
//! `get_scores` in the crate root), plus `submit_chat` / `submit_prompt` for front ends that
//! stream several samples.
//!
//! Everything here runs in the caller's thread: rendering the template, tokenizing, resolving
//! and validating the parameters. Only validated token ids reach the engine thread, so a bad
//! request fails before anything is queued.

use std::sync::Arc;

use ingot_core::constraint::Constraint;
use ingot_core::media::Media;
use serde_json::{Map, Value};

use crate::media::{place_media, MediaPrompt};
use crate::params::{self, GenParams, Limits};
use crate::{EngineError, EngineHandle, Event, FinishReason, GenerateRequest, ResponseFormat, Stream, Usage};

/// One chat turn to answer.
#[derive(Debug, Clone, Default)]
pub struct ChatRequest {
    /// Hugging Face style message objects, given to the chat template as they are
    /// (`{"role", "content"}`, assistant `tool_calls`, `tool` results, ...).
    pub messages: Vec<Value>,
    /// System prompt; prepended as a system message (the engine's default system prompt is
    /// used when neither this nor the messages give one).
    pub system: Option<String>,
    /// JSON-schema tool definitions for the template (and for a forcing
    /// [`GenParams::tool_choice`]).
    pub tools: Option<Vec<Value>>,
    /// Extra template variables, e.g. `enable_thinking` (over the engine's defaults).
    pub template_kwargs: Map<String, Value>,
    pub params: GenParams,
    /// Images, in the order of the messages' `<image>` placeholders (or image content parts);
    /// when the messages have none, they go before the first user message's text.
    pub media: Vec<Media>,
}

impl ChatRequest {
    /// A request for plain text messages given as (role, content) pairs.
    pub fn from_turns<'a>(turns: impl IntoIterator<Item = (&'a str, &'a str)>, params: GenParams) -> Self {
        let messages = turns.into_iter().map(|(role, content)| serde_json::json!({"role": role, "content": content})).collect();
        Self { messages, params, ..Self::default() }
    }
}

/// A chat request's prompt, as the model will see it.
pub struct ChatPrompt {
    /// The rendered template (images as `<image>` placeholders).
    pub text: String,
    /// The token ids, with each image's placeholder expanded into the model's vision tokens.
    pub ids: Vec<u32>,
    media: Option<Arc<MediaPrompt>>,
}

/// A queued chat request.
pub struct Submission {
    /// The prompt as the model sees it.
    pub prompt_ids: Vec<u32>,
    /// One stream per sample, in sample order.
    pub streams: Vec<Stream>,
}

/// One finished sample, as LLaMA Factory's `Response`.
#[derive(Debug, Clone, PartialEq)]
pub struct Response {
    pub text: String,
    pub response_length: usize,
    pub prompt_length: usize,
    pub finish_reason: FinishReason,
    pub usage: Usage,
}

impl EngineHandle {
    /// The prompt text a chat request renders to. For a model that takes images, image
    /// content parts become `<image>` placeholders (prepended to the first user message when
    /// the messages have none and images are given); they are expanded into the model's vision
    /// tokens only when the prompt is tokenized.
    pub fn render_chat(&self, req: &ChatRequest) -> Result<String, EngineError> {
        let template = self.shared.template.as_ref().ok_or(EngineError::NoTemplate)?;
        if req.messages.is_empty() {
            return Err(EngineError::Invalid("messages must not be empty".into()));
        }
        for (i, m) in req.messages.iter().enumerate() {
            if !m.get("role").is_some_and(Value::is_string) {
                return Err(EngineError::Invalid(format!("messages[{i}] needs a string `role`")));
            }
        }
        let has_system = req.messages[0]["role"] == "system";
        let system = req.system.as_ref().or(self.shared.default_system.as_ref().filter(|_| !has_system));
        let mut messages = Vec::with_capacity(req.messages.len() + 1);
        match system {
            Some(_) if has_system && req.system.is_some() => {
                return Err(EngineError::Invalid("the system prompt is given twice (`system` and a system message)".into()))
            }
            Some(s) => messages.push(serde_json::json!({"role": "system", "content": s})),
            None => {}
        }
        messages.extend(req.messages.iter().cloned());
        match &self.shared.media {
            Some(_) => place_media(&mut messages, req.media.len())?,
            None if !req.media.is_empty() => {
                return Err(EngineError::Invalid(format!(
                    "{} image(s) given, but this model takes text only (it has no vision encoder)",
                    req.media.len()
                )))
            }
            None => {}
        }
        let tools = req.tools.clone().map(Value::Array);
        let mut kwargs = self.shared.template_kwargs.clone();
        kwargs.extend(req.template_kwargs.iter().map(|(k, v)| (k.clone(), v.clone())));
        template
            .render_json(&Value::Array(messages), tools.as_ref(), true, &kwargs)
            .map_err(|e| EngineError::Invalid(e.to_string()))
    }

    /// Renders, tokenizes, validates and queues a chat request: one stream per sample.
    pub fn submit_chat(&self, req: ChatRequest) -> Result<Submission, EngineError> {
        if self.shared.reward_model {
            return Err(EngineError::RewardModel);
        }
        let prompt = self.tokenize_chat(&req)?;
        let template_stops = self.shared.template.as_ref().map_or(&[][..], |t| t.stop_strings());
        self.queue(prompt.ids, prompt.media, &req.params, template_stops, Some(req.tools.as_deref().unwrap_or_default()))
    }

    /// Renders and tokenizes a chat request (preprocessing its images), without queueing it.
    pub fn tokenize_chat(&self, req: &ChatRequest) -> Result<ChatPrompt, EngineError> {
        let text = self.render_chat(req)?;
        let (ids, media) = match &self.shared.media {
            Some(support) if !req.media.is_empty() => {
                let (ids, media) = support.build_prompt(&self.shared.tokenizer, &text, &req.media)?;
                (ids, Some(Arc::new(media)))
            }
            _ => (self.encode_prompt(&text)?, None),
        };
        Ok(ChatPrompt { text, ids, media })
    }

    /// Validates and queues an already tokenized prompt (no template, no template stop words,
    /// no tools: a forcing `tool_choice` is refused).
    pub fn submit_prompt(&self, prompt_ids: Vec<u32>, params: &GenParams) -> Result<Submission, EngineError> {
        self.queue(prompt_ids, None, params, &[], None)
    }

    /// Answers a chat request: one [`Response`] per sample. Blocks until all are done.
    pub fn chat(&self, req: ChatRequest) -> Result<Vec<Response>, EngineError> {
        let sub = self.submit_chat(req)?;
        let prompt_length = sub.prompt_ids.len();
        sub.streams
            .into_iter()
            .map(|stream| {
                let mut text = String::new();
                for event in stream.events.iter() {
                    match event {
                        Event::Text(t) => text.push_str(&t),
                        Event::Done(usage) => {
                            return Ok(Response {
                                text,
                                response_length: usage.completion_tokens,
                                prompt_length,
                                finish_reason: usage.finish_reason,
                                usage,
                            })
                        }
                        Event::Error(e) => return Err(EngineError::Invalid(e)),
                    }
                }
                Err(EngineError::Stopped)
            })
            .collect()
    }

    /// Streams the answer to a chat request (one sample: `num_return_sequences` must be 1).
    pub fn stream_chat(&self, req: ChatRequest) -> Result<Stream, EngineError> {
        if req.params.num_return_sequences.is_some_and(|n| n != 1) {
            return Err(EngineError::Invalid("stream_chat streams one sample: num_return_sequences must be 1 (use submit_chat)".into()));
        }
        let mut params = req.params.clone();
        params.num_return_sequences = Some(1);
        Ok(self.submit_chat(ChatRequest { params, ..req })?.streams.pop().expect("one sample"))
    }

    /// `tools`: a chat request's tool definitions (`None` for a prompt request, which has none).
    fn queue(
        &self,
        prompt_ids: Vec<u32>,
        media: Option<Arc<MediaPrompt>>,
        params: &GenParams,
        extra_stop: &[String],
        tools: Option<&[Value]>,
    ) -> Result<Submission, EngineError> {
        let merged = params.clone().or(&self.shared.defaults);
        let limits = Limits {
            context: self.shared.config.max_position_embeddings.min(self.shared.budget_positions),
            max_n: self.shared.max_n,
        };
        let resolved = params::resolve(params, &merged, prompt_ids.len(), limits).map_err(EngineError::Invalid)?;
        let mut stop = resolved.stop;
        stop.extend(extra_stop.iter().filter(|s| !s.is_empty()).cloned());
        let constraint = self.constraint_for(&merged, tools)?;
        let requests = resolved
            .samples
            .into_iter()
            .map(|sampling| GenerateRequest {
                prompt_ids: prompt_ids.clone(),
                params: sampling,
                max_new_tokens: resolved.max_new_tokens,
                stop: stop.clone(),
                stop_ids: Vec::new(),
                skip_special_tokens: resolved.skip_special_tokens,
                ignore_eos: false,
                constraint: constraint.clone(),
                media: media.clone(),
            })
            .collect();
        let streams = self.submit_all(requests)?;
        Ok(Submission { prompt_ids, streams })
    }

    /// The grammar a request's replies follow: a forcing `tool_choice` (which needs the chat
    /// request's tools and the template's tool format) or a `response_format`, not both.
    fn constraint_for(&self, params: &GenParams, tools: Option<&[Value]>) -> Result<Option<Constraint>, EngineError> {
        let format = params.response_format.as_ref().filter(|f| **f != ResponseFormat::Text);
        let Some(choice) = params.tool_choice.as_ref().filter(|c| c.forces_call()) else {
            return format.map_or(Ok(None), |f| self.compile_response_format(f));
        };
        if format.is_some() {
            return Err(EngineError::Invalid(
                "tool_choice: a forced tool call cannot also follow a response_format (give one of them)".into(),
            ));
        }
        let (Some(tools), Some(template)) = (tools, self.shared.template.as_ref()) else {
            return Err(EngineError::Invalid(
                "tool_choice: forcing a tool call needs a chat request (its tools and chat template)".into(),
            ));
        };
        self.constraint_compiler()?
            .compile_tool_choice(template.tool_format(), tools, choice)
            .map_err(|e| EngineError::Invalid(e.to_string()))
    }
}
