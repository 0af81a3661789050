//! OpenAI's request and response bodies, and the edge where an untrusted request becomes a
//! validated, typed one ([`ChatCompletionRequest::validate`] → [`ValidChat`]).
//!
//! Deserialization checks the shape (a wrong type or an unknown role is a 422 naming the
//! field's path); the sampling fields are the engine's one parameters type, [`GenParams`],
//! flattened into each body (OpenAI's names are its serde aliases). `validate` translates:
//! OpenAI messages become the Hugging Face message objects chat templates expect (text parts
//! joined; `image_url`, `video_url`, `audio_url` and `input_audio` parts becoming Hugging
//! Face's `{"type": "image"}`-style parts, their URLs kept in [`ValidChat::media`] for the
//! route to fetch; assistant
//! tool-call `arguments`, a JSON *string* in OpenAI's format, decoded into JSON objects, so
//! they are rendered once, not twice). Values are the engine's to check (it names the field
//! and the limit); nothing here duplicates them.

use ingot_engine::{ChatRequest, GenParams, MediaKind, Prompt as EnginePrompt, ToolChoice};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use crate::error::ApiError;
use crate::logprobs::{ChatLogprobs, CompletionLogprobs};
use crate::request_limits;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    System,
    /// OpenAI's newer name for system instructions.
    Developer,
    User,
    Assistant,
    Tool,
}

/// Message content: a string, or a list of text and `image_url` parts.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum Content {
    Text(String),
    Parts(Vec<ContentPart>),
}

#[derive(Debug, Clone, Deserialize)]
pub struct ContentPart {
    #[serde(rename = "type")]
    pub kind: String,
    pub text: Option<String>,
    pub image_url: Option<ImageUrl>,
    /// vLLM's (and LLaMA Factory's API's) `video_url` / `audio_url` parts, shaped as `image_url`.
    pub video_url: Option<ImageUrl>,
    pub audio_url: Option<ImageUrl>,
    /// OpenAI's `{"type": "input_audio", "input_audio": {"data": base64, "format": "wav"}}`.
    pub input_audio: Option<InputAudio>,
}

impl ContentPart {
    /// A text part, as other APIs' translations build it.
    pub(crate) fn text(text: String) -> Self {
        Self { kind: "text".into(), text: Some(text), image_url: None, video_url: None, audio_url: None, input_audio: None }
    }

    /// An `image_url` part with a bare URL, as other APIs' translations build it.
    pub(crate) fn image(url: String) -> Self {
        Self { kind: "image_url".into(), text: None, image_url: Some(ImageUrl::Bare(url)), video_url: None, audio_url: None, input_audio: None }
    }
}

/// An `input_audio` part's value: the clip's bytes in base64 and its format (`wav`, `mp3`, ...).
#[derive(Debug, Clone, Deserialize)]
pub struct InputAudio {
    pub data: String,
    pub format: String,
}

/// An `image_url` part's value: OpenAI's `{"url", "detail"}`, or the bare URL some clients send.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum ImageUrl {
    /// (OpenAI's `detail` resolution hint is accepted and ignored: the model's preprocessor
    /// decides the resolution.)
    Object { url: String },
    Bare(String),
}

/// A media item a request names: its modality, where in the request, and its URL (data,
/// file or http(s); an `input_audio` part's data as a data URL).
#[derive(Debug, Clone, PartialEq)]
pub struct MediaRef {
    pub kind: MediaKind,
    /// `messages[i].content[j].image_url`.
    pub field: String,
    pub url: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct ChatMessage {
    pub role: Role,
    pub content: Option<Content>,
    pub tool_calls: Option<Vec<ToolCallIn>>,
    pub tool_call_id: Option<String>,
    pub name: Option<String>,
}

impl ChatMessage {
    /// The message's text in bytes (content, tool calls, names), for the size limits.
    pub fn text_bytes(&self) -> usize {
        let content = match &self.content {
            None => 0,
            Some(Content::Text(t)) => t.len(),
            Some(Content::Parts(parts)) => parts.iter().map(|p| p.text.as_ref().map_or(0, String::len)).sum(),
        };
        let calls: usize = self.tool_calls.iter().flatten().map(|c| c.function.name.len() + c.function.arguments.len()).sum();
        let name = |s: &Option<String>| s.as_ref().map_or(0, String::len);
        content + calls + name(&self.name) + name(&self.tool_call_id)
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct ToolCallIn {
    pub id: Option<String>,
    #[serde(rename = "type")]
    pub kind: Option<String>,
    pub function: FunctionCallIn,
}

#[derive(Debug, Clone, Deserialize)]
pub struct FunctionCallIn {
    pub name: String,
    /// JSON text, as OpenAI sends it.
    pub arguments: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct StreamOptions {
    #[serde(default)]
    pub include_usage: bool,
}

/// How the answer is delivered: fields OpenAI's bodies have besides the sampling ones.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct DeliveryFields {
    #[serde(default)]
    pub stream: bool,
    pub stream_options: Option<StreamOptions>,
    /// OpenAI's newer name for `max_tokens`; wins when both are given.
    pub max_completion_tokens: Option<usize>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct ChatCompletionRequest {
    /// Left out: the served model (as vLLM and llama.cpp's server do).
    pub model: Option<String>,
    pub messages: Vec<ChatMessage>,
    pub tools: Option<Vec<Value>>,
    pub chat_template_kwargs: Option<Map<String, Value>>,
    /// Report each generated token's log-probability (`choices[].logprobs.content`).
    pub logprobs: Option<bool>,
    /// And this many alternatives per token (0 to 20; needs `logprobs: true`).
    pub top_logprobs: Option<usize>,
    #[serde(flatten)]
    pub delivery: DeliveryFields,
    /// Sampling, `n`, `stop`, `max_tokens`, `response_format`, `tool_choice` (`"none"` also
    /// switches tool-call parsing off), ...
    #[serde(flatten)]
    pub params: GenParams,
    /// Every other field: refused unless [`IGNORED_FIELDS`] names it (see [`check_extra`]).
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// `/v1/completions`: a raw prompt, no chat template.
#[derive(Debug, Clone, Deserialize)]
pub struct CompletionRequest {
    pub model: Option<String>,
    pub prompt: Prompt,
    #[serde(flatten)]
    pub delivery: DeliveryFields,
    #[serde(flatten)]
    pub params: GenParams,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// Fields OpenAI's API has that ingot accepts and ignores on purpose: bookkeeping for OpenAI's
/// own service, with no effect on the reply.
pub const IGNORED_FIELDS: [&str; 6] = ["user", "store", "metadata", "service_tier", "prompt_cache_key", "safety_identifier"];

/// Fields ingot does not implement are refused with a 400 naming them, rather than dropped:
/// a client asking for `echo` or a `logit_bias` must not get a reply made without them.
/// Values that ask for nothing (null, `echo: false`, an empty `logit_bias`) pass.
fn check_extra(extra: &Map<String, Value>) -> Result<(), ApiError> {
    for (key, value) in extra {
        let asks_nothing = match (key.as_str(), value) {
            (_, Value::Null) => true,
            ("echo", Value::Bool(false)) => true,
            ("logit_bias", Value::Object(m)) => m.is_empty(),
            (k, v) if crate::router_info::asks_nothing_of_routers(k, v) => true,
            (k, _) => IGNORED_FIELDS.contains(&k) || params_take(k, value),
        };
        if !asks_nothing {
            return Err(ApiError::invalid(
                key.clone(),
                format!("`{key}` is not supported by this server (ignored on purpose: {})", IGNORED_FIELDS.join(", ")),
            ));
        }
    }
    Ok(())
}

/// Whether the parameters type takes `key` (under an alias serde's `flatten` left in the
/// remaining fields).
fn params_take(key: &str, value: &Value) -> bool {
    let one = Map::from_iter([(key.to_owned(), value.clone())]);
    serde_json::from_value::<GenParams>(Value::Object(one)).is_ok_and(|p| p != GenParams::default())
}

pub use crate::request_limits::MAX_TOOLS;

#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum Prompt {
    Text(String),
    /// A list holding one string (what clients send for a single prompt); more are refused.
    Texts(Vec<String>),
    /// Token ids (OpenAI's legacy shape), used as they are.
    Ids(Vec<u32>),
}

/// LLaMA Factory's reward route: already templated texts to score.
#[derive(Debug, Clone, Deserialize)]
pub struct ScoreRequest {
    pub model: Option<String>,
    pub messages: Vec<String>,
    /// Texts longer than this many tokens (default: the model's context) are cut, as LLaMA
    /// Factory cuts them.
    pub max_length: Option<usize>,
}

impl ScoreRequest {
    /// The texts within the size limits (as many as messages, each as large as one).
    pub fn check_sizes(&self) -> Result<(), ApiError> {
        request_limits::check_messages("messages", self.messages.iter().map(String::len))
    }
}

/// What a validated request asks of the response, besides the generation itself.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Delivery {
    pub stream: bool,
    pub include_usage: bool,
    /// Choices carry `logprobs` (the engine sends them as `Event::Logprobs`).
    pub logprobs: bool,
    /// `parallel_tool_calls: false`: a reply carries at most its first call (the grammar
    /// admits one where it constrains calls; a free reply may still write more).
    pub single_call: bool,
}

/// A chat request past the edge: every field checked, messages in the template's format.
pub struct ValidChat {
    pub chat: ChatRequest,
    pub delivery: Delivery,
    /// The names of the tools given (none when switched off by `tool_choice: "none"`):
    /// replies are parsed for calls to them.
    pub tool_names: Vec<String>,
    /// The request's media in message order; the route fetches them into `chat.media`.
    pub media: Vec<MediaRef>,
}

pub struct ValidCompletion {
    pub prompt: EnginePrompt,
    pub params: GenParams,
    pub delivery: Delivery,
}

impl DeliveryFields {
    /// The delivery, and `params` with `max_completion_tokens` taken in.
    fn validate(self, mut params: GenParams) -> Result<(GenParams, Delivery), ApiError> {
        if self.stream_options.is_some() && !self.stream {
            return Err(ApiError::invalid("stream_options", "stream_options is only allowed when stream is true"));
        }
        if let Some(m) = self.max_completion_tokens {
            params.max_new_tokens = Some(m);
        }
        let include_usage = self.stream_options.as_ref().is_some_and(|o| o.include_usage);
        let logprobs = params.logprobs.is_some();
        let single_call = params.parallel_tool_calls == Some(false);
        Ok((params, Delivery { stream: self.stream, include_usage, logprobs, single_call }))
    }
}

impl ChatCompletionRequest {
    pub fn validate(self) -> Result<ValidChat, ApiError> {
        check_extra(&self.extra)?;
        let mut params = self.params;
        params.logprobs = match (self.logprobs, self.top_logprobs) {
            (Some(true), n) => Some(n.unwrap_or(0)),
            (_, Some(_)) => return Err(ApiError::invalid("top_logprobs", "top_logprobs needs `logprobs: true`")),
            (_, None) => None,
        };
        if let Some(n) = self.top_logprobs.filter(|&n| n > ingot_core::sampling::MAX_TOP_LOGPROBS) {
            let max = ingot_core::sampling::MAX_TOP_LOGPROBS;
            return Err(ApiError::invalid("top_logprobs", format!("top_logprobs must be between 0 and {max}, got {n}")));
        }
        let (params, delivery) = self.delivery.validate(params)?;
        request_limits::check_messages("messages", self.messages.iter().map(ChatMessage::text_bytes))?;
        request_limits::check_tools(self.tools.as_deref())?;
        request_limits::check_params(&params)?;
        if self.messages.is_empty() {
            return Err(ApiError::invalid("messages", "messages must hold at least one message"));
        }
        let mut media = Vec::new();
        let messages = self
            .messages
            .iter()
            .enumerate()
            .map(|(i, m)| hf_message(i, m, &mut media))
            .collect::<Result<Vec<_>, _>>()?;
        let tools_off = params.tool_choice == Some(ToolChoice::None);
        let tools = self.tools.filter(|t| !t.is_empty() && !tools_off);
        let tool_names = match &tools {
            None => Vec::new(),
            Some(t) => t
                .iter()
                .enumerate()
                .map(|(i, t)| match t.get("function").and_then(|f| f.get("name")).and_then(Value::as_str) {
                    Some(name) => Ok(name.to_owned()),
                    None => Err(ApiError::invalid(format!("tools[{i}].function.name"), "each tool needs a function name")),
                })
                .collect::<Result<_, _>>()?,
        };
        // The engine checks a forced choice against the tools (and refuses one without them).
        let chat = ChatRequest {
            messages,
            system: None,
            tools,
            template_kwargs: self.chat_template_kwargs.unwrap_or_default(),
            params,
            media: Vec::new(),
        };
        Ok(ValidChat { chat, delivery, tool_names, media })
    }
}

impl CompletionRequest {
    pub fn validate(self) -> Result<ValidCompletion, ApiError> {
        check_extra(&self.extra)?;
        let prompt_bytes = match &self.prompt {
            Prompt::Text(t) => t.len(),
            Prompt::Texts(v) => v.iter().map(String::len).sum(),
            Prompt::Ids(_) => 0,
        };
        request_limits::check_text("prompt", prompt_bytes)?;
        request_limits::check_params(&self.params)?;
        let (params, delivery) = self.delivery.validate(self.params)?;
        let prompt = match self.prompt {
            Prompt::Text(t) => EnginePrompt::Text(t),
            Prompt::Texts(mut v) if v.len() == 1 => EnginePrompt::Text(v.remove(0)),
            Prompt::Texts(v) => {
                return Err(ApiError::invalid("prompt", format!("one prompt per request is supported, got {}", v.len())))
            }
            Prompt::Ids(ids) => EnginePrompt::Ids(ids),
        };
        if matches!(&prompt, EnginePrompt::Text(t) if t.is_empty()) || matches!(&prompt, EnginePrompt::Ids(ids) if ids.is_empty()) {
            return Err(ApiError::invalid("prompt", "the prompt is empty"));
        }
        Ok(ValidCompletion { prompt, params, delivery })
    }
}

/// One OpenAI message as the Hugging Face message object chat templates read: text parts
/// joined, and with media parts, Hugging Face's parts (`{"type": "audio"}`, ...) that the
/// engine places; the media's URLs are appended to `media`.
/// A media content part (`field` is `messages[i].content[j]`): `image_url`, `video_url`,
/// `audio_url` (a URL under the media policy) or `input_audio` (base64 data and a format).
fn media_part(p: &ContentPart, field: &str) -> Result<MediaRef, ApiError> {
    let url_of = |key: &str, value: &Option<ImageUrl>, kind: MediaKind| match value {
        Some(ImageUrl::Object { url } | ImageUrl::Bare(url)) => Ok(MediaRef { kind, field: format!("{field}.{key}"), url: url.clone() }),
        None => Err(ApiError::invalid(format!("{field}.{key}"), format!("a {key} part needs `{key}: {{\"url\": ...}}`"))),
    };
    match p.kind.as_str() {
        "image_url" => url_of("image_url", &p.image_url, MediaKind::Image),
        "video_url" => url_of("video_url", &p.video_url, MediaKind::Video),
        "audio_url" => url_of("audio_url", &p.audio_url, MediaKind::Audio),
        "input_audio" => {
            let a = p.input_audio.as_ref().ok_or_else(|| {
                ApiError::invalid(format!("{field}.input_audio"), "an input_audio part needs `input_audio: {\"data\": base64, \"format\": \"wav\"}`")
            })?;
            let format = a.format.trim().to_ascii_lowercase();
            if format.is_empty() || !format.bytes().all(|b| b.is_ascii_alphanumeric()) {
                return Err(ApiError::invalid(format!("{field}.input_audio.format"), format!("`{}` is not an audio format name (wav, mp3, flac, ogg)", a.format)));
            }
            // The data URL path decodes and bounds it like any other media.
            Ok(MediaRef { kind: MediaKind::Audio, field: format!("{field}.input_audio"), url: format!("data:audio/{format};base64,{}", a.data) })
        }
        kind => Err(ApiError::invalid(
            format!("{field}.type"),
            format!("content parts of type `{kind}` are not supported (text, image_url, video_url, audio_url and input_audio are)"),
        )),
    }
}

fn hf_message(i: usize, m: &ChatMessage, media: &mut Vec<MediaRef>) -> Result<Value, ApiError> {
    let field = |f: &str| format!("messages[{i}].{f}");
    let content = match &m.content {
        None => None,
        Some(Content::Text(t)) => Some(Value::String(t.clone())),
        Some(Content::Parts(parts)) => {
            let mut out: Vec<Value> = Vec::new();
            let mut text = String::new();
            for (j, p) in parts.iter().enumerate() {
                if p.kind == "text" {
                    let t = p.text.as_ref().ok_or_else(|| ApiError::invalid(field(&format!("content[{j}].text")), "a text part needs text"))?;
                    text.push_str(t);
                    continue;
                }
                let item = media_part(p, &field(&format!("content[{j}]")))?;
                if m.role != Role::User {
                    return Err(ApiError::invalid(field(&format!("content[{j}]")), format!("{}s go in user messages", item.kind.name())));
                }
                if !text.is_empty() {
                    out.push(json!({"type": "text", "text": std::mem::take(&mut text)}));
                }
                out.push(json!({"type": item.kind.name()}));
                media.push(item);
            }
            Some(if out.is_empty() {
                Value::String(text)
            } else {
                if !text.is_empty() {
                    out.push(json!({"type": "text", "text": text}));
                }
                Value::Array(out)
            })
        }
    };
    let role = match m.role {
        Role::System | Role::Developer => "system",
        Role::User => "user",
        Role::Assistant => "assistant",
        Role::Tool => "tool",
    };
    let has_calls = m.tool_calls.as_ref().is_some_and(|c| !c.is_empty());
    if content.is_none() && !(m.role == Role::Assistant && has_calls) {
        return Err(ApiError::invalid(field("content"), format!("a {role} message needs content")));
    }
    let mut out = Map::new();
    out.insert("role".into(), role.into());
    out.insert("content".into(), content.unwrap_or_else(|| Value::String(String::new())));
    if let Some(calls) = &m.tool_calls {
        if m.role != Role::Assistant {
            return Err(ApiError::invalid(field("tool_calls"), "only assistant messages carry tool_calls"));
        }
        let calls = calls
            .iter()
            .enumerate()
            .map(|(j, c)| {
                let arguments: Value = serde_json::from_str(&c.function.arguments).map_err(|e| {
                    ApiError::invalid(field(&format!("tool_calls[{j}].function.arguments")), format!("not valid JSON: {e}"))
                })?;
                let mut call = json!({"type": c.kind.as_deref().unwrap_or("function"),
                    "function": {"name": c.function.name, "arguments": arguments}});
                if let Some(id) = &c.id {
                    call["id"] = id.clone().into();
                }
                Ok(call)
            })
            .collect::<Result<Vec<_>, ApiError>>()?;
        out.insert("tool_calls".into(), calls.into());
    }
    if m.role == Role::Tool {
        if let Some(id) = &m.tool_call_id {
            out.insert("tool_call_id".into(), id.clone().into());
        }
    }
    if let Some(name) = &m.name {
        out.insert("name".into(), name.clone().into());
    }
    Ok(Value::Object(out))
}

// ---- responses ----

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Usage {
    pub prompt_tokens: usize,
    pub completion_tokens: usize,
    pub total_tokens: usize,
    pub prompt_tokens_details: PromptTokensDetails,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PromptTokensDetails {
    pub cached_tokens: usize,
}

impl Usage {
    pub fn new(prompt_tokens: usize, completion_tokens: usize, cached_tokens: usize) -> Self {
        Self {
            prompt_tokens,
            completion_tokens,
            total_tokens: prompt_tokens + completion_tokens,
            prompt_tokens_details: PromptTokensDetails { cached_tokens },
        }
    }
}

/// A tool call in a response: `arguments` is JSON text, as OpenAI sends it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ToolCall {
    pub id: String,
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub function: FunctionCall,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct FunctionCall {
    pub name: String,
    pub arguments: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct AssistantMessage {
    pub role: &'static str,
    pub content: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reasoning_content: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tool_calls: Vec<ToolCall>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ChatChoice {
    pub index: usize,
    pub message: AssistantMessage,
    pub finish_reason: &'static str,
    pub logprobs: Option<ChatLogprobs>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ChatCompletion {
    pub id: String,
    pub object: &'static str,
    pub created: u64,
    pub model: String,
    pub choices: Vec<ChatChoice>,
    pub usage: Usage,
}

/// A streamed tool call fragment: the first one of a call carries id, type and name.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ToolCallDelta {
    pub index: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    pub kind: Option<&'static str>,
    pub function: FunctionCallDelta,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct FunctionCallDelta {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub arguments: String,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Delta {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub role: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reasoning_content: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tool_calls: Vec<ToolCallDelta>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ChunkChoice {
    pub index: usize,
    pub delta: Delta,
    pub finish_reason: Option<&'static str>,
    pub logprobs: Option<ChatLogprobs>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ChatCompletionChunk {
    pub id: String,
    pub object: &'static str,
    pub created: u64,
    pub model: String,
    pub choices: Vec<ChunkChoice>,
    /// Present (as null until the last chunk) only when the client asked for usage.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usage: Option<Option<Usage>>,
}

#[derive(Debug, Clone, Serialize)]
pub struct CompletionChoice {
    pub index: usize,
    pub text: String,
    pub finish_reason: Option<&'static str>,
    pub logprobs: Option<CompletionLogprobs>,
}

/// A `/v1/completions` response, and (with `usage` absent or null) one of its stream chunks.
#[derive(Debug, Clone, Serialize)]
pub struct Completion {
    pub id: String,
    pub object: &'static str,
    pub created: u64,
    pub model: String,
    pub choices: Vec<CompletionChoice>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usage: Option<Option<Usage>>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ModelCard {
    pub id: String,
    pub object: &'static str,
    pub created: u64,
    pub owned_by: &'static str,
    /// The context length, in tokens (vLLM's field).
    pub max_model_len: usize,
    /// For a LoRA adapter: the base model it runs over (vLLM's field); absent for the base.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parent: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ModelList {
    pub object: &'static str,
    pub data: Vec<ModelCard>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ScoreResponse {
    pub id: String,
    pub object: &'static str,
    pub model: String,
    pub scores: Vec<f32>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chat(body: Value) -> Result<ValidChat, ApiError> {
        serde_json::from_value::<ChatCompletionRequest>(body).expect("shape").validate()
    }

    #[test]
    fn messages_become_template_messages() {
        let v = chat(json!({"model": "m", "messages": [
            {"role": "developer", "content": "be brief"},
            {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]},
            {"role": "assistant", "content": null, "tool_calls": [{"id": "c1", "type": "function",
                "function": {"name": "f", "arguments": "{\"x\": 1}"}}]},
            {"role": "tool", "tool_call_id": "c1", "content": "2"},
            {"role": "tool", "tool_call_id": "c2", "content": "3"}]}))
        .map_err(|e| e.message)
        .expect("valid");
        let m = &v.chat.messages;
        assert_eq!(m[0], json!({"role": "system", "content": "be brief"}));
        assert_eq!(m[1]["content"], "ab");
        // Arguments become an object: the template encodes them once.
        assert_eq!(m[2]["tool_calls"][0]["function"]["arguments"], json!({"x": 1}));
        assert_eq!(m[4]["role"], "tool");
        assert!(v.tool_names.is_empty() && !v.delivery.stream);
    }

    #[test]
    fn invalid_values_name_the_field() {
        // (Ranges, `n`, `max_tokens` and `stop` are the engine's to check: see the server's
        // handler tests and the API tests through the real engine.)
        let cases = [
            (json!({"model": "m", "messages": []}), "messages"),
            (json!({"model": "m", "messages": [{"role": "user", "content": "x"}], "stream_options": {}}), "stream_options"),
            (json!({"model": "m", "messages": [{"role": "user", "content": "x"}], "logit_bias": {"abc": 5}}), "logit_bias"),
            (json!({"model": "m", "messages": [{"role": "user", "content": "x"}], "top_logprobs": 2}), "top_logprobs"),
            (json!({"model": "m", "messages": [{"role": "user", "content": "x"}], "logprobs": true, "top_logprobs": 21}), "top_logprobs"),
            (json!({"model": "m", "messages": [{"role": "user", "content": "x"}], "echo": true}), "echo"),
            (json!({"model": "m", "messages": [{"role": "user", "content": "x"}], "frobnicate": 1}), "frobnicate"),
            (json!({"model": "m", "messages": [{"role": "user"}]}), "messages[0].content"),
            (json!({"model": "m", "messages": [{"role": "user", "content": [{"type": "image_url"}]}]}), "messages[0].content[0].image_url"),
            (json!({"model": "m", "messages": [{"role": "user", "content": [{"type": "input_audio"}]}]}), "messages[0].content[0].input_audio"),
            (json!({"model": "m", "messages": [{"role": "user", "content": [{"type": "input_file"}]}]}), "messages[0].content[0].type"),
            (json!({"model": "m", "messages": [{"role": "assistant", "content": "", "tool_calls": [{"function": {"name": "f", "arguments": "{"}}]}]}),
             "messages[0].tool_calls[0].function.arguments"),
        ];
        for (body, param) in cases {
            let e = chat(body.clone()).err().unwrap_or_else(|| panic!("{body} should be refused"));
            assert_eq!(e.status, axum::http::StatusCode::BAD_REQUEST, "{body}");
            assert_eq!(e.param.as_deref(), Some(param), "{body}: {}", e.message);
        }
    }

    #[test]
    fn sampling_fields_reach_the_engine_params() {
        let v = chat(json!({"model": "m", "messages": [{"role": "user", "content": "x"}], "n": 2, "stop": "END",
            "max_tokens": 5, "max_completion_tokens": 7, "temperature": 0, "seed": 3, "stream": true,
            "stream_options": {"include_usage": true}, "tools": [{"type": "function", "function": {"name": "f"}}],
            "chat_template_kwargs": {"enable_thinking": false}}))
        .map_err(|e| e.message)
        .expect("valid");
        let p = &v.chat.params;
        assert_eq!((p.num_return_sequences, p.max_new_tokens, p.seed), (Some(2), Some(7), Some(3)));
        assert_eq!(p.stop, ["END"]);
        assert_eq!(p.temperature, Some(0.0));
        assert_eq!(p.tool_choice, None);
        // Aliases, bookkeeping fields and values that ask for nothing pass.
        chat(json!({"model": "m", "messages": [{"role": "user", "content": "x"}], "n": 1, "max_tokens": 3,
            "user": "u", "store": false, "metadata": {"a": "b"}, "logprobs": false, "logit_bias": {},
            "parallel_tool_calls": true, "seed": null}))
        .map_err(|e| e.message)
        .expect("valid");
        assert_eq!(v.delivery, Delivery { stream: true, include_usage: true, logprobs: false, single_call: false });
        assert_eq!(v.tool_names, ["f"]);
        assert_eq!(v.chat.template_kwargs["enable_thinking"], false);
        let lp = chat(json!({"messages": [{"role": "user", "content": "x"}], "logprobs": true, "top_logprobs": 3}))
            .map_err(|e| e.message)
            .expect("valid");
        assert_eq!((lp.chat.params.logprobs, lp.delivery.logprobs), (Some(3), true));
        let one = chat(json!({"messages": [{"role": "user", "content": "x"}], "parallel_tool_calls": false}))
            .map_err(|e| e.message)
            .expect("valid");
        assert_eq!((one.chat.params.parallel_tool_calls, one.delivery.single_call), (Some(false), true));
    }
}
