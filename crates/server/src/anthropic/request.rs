//! Anthropic's Messages request body, and its translation into the chat completion request
//! every chat-shaped route validates: `system` (a string or text blocks) becomes a leading
//! system message; a user turn's `tool_result` blocks become tool messages (before the rest of
//! the turn, as they answer the previous assistant turn's calls), its text and image blocks a
//! user message (a base64 image a data URL, fetched and decoded under the server's media
//! policy like any other); an assistant turn's `tool_use` blocks its tool calls; tools and
//! `tool_choice` the chat shapes (`any` is `required`, `tool` a named function).
//!
//! Sampling fields (`temperature`, `top_p`, `top_k`, `max_tokens`, ...) are the engine's
//! parameters, `stop_sequences` its stop strings; `max_tokens` is required, as Anthropic
//! requires it. Unknown fields go through the chat route's check (a 400 naming them), except
//! Anthropic's bookkeeping ones (`metadata`, `service_tier`, a top-level `cache_control`),
//! accepted and ignored.

use ingot_engine::{GenParams, ToolChoice};
use serde::Deserialize;
use serde_json::{json, Map, Value};

use crate::error::ApiError;
use crate::openai::{ChatCompletionRequest, ChatMessage, Content, ContentPart, DeliveryFields, FunctionCallIn, Role, ToolCallIn};

#[derive(Debug, Clone, Deserialize)]
pub struct MessagesRequest {
    pub model: Option<String>,
    pub messages: Vec<Turn>,
    pub system: Option<System>,
    pub tools: Option<Vec<Tool>>,
    pub tool_choice: Option<AnthropicToolChoice>,
    #[serde(default)]
    pub stream: bool,
    #[serde(default)]
    pub stop_sequences: Vec<String>,
    pub thinking: Option<Value>,
    #[serde(flatten)]
    pub params: GenParams,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// `count_tokens`' body: a Messages request without the generation fields.
#[derive(Debug, Clone, Deserialize)]
pub struct CountRequest {
    pub model: Option<String>,
    pub messages: Vec<Turn>,
    pub system: Option<System>,
    pub tools: Option<Vec<Tool>>,
    pub tool_choice: Option<AnthropicToolChoice>,
    pub thinking: Option<Value>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Turn {
    pub role: TurnRole,
    pub content: TurnContent,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TurnRole {
    User,
    Assistant,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum TurnContent {
    Text(String),
    Blocks(Vec<Block>),
}

#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum System {
    Text(String),
    Blocks(Vec<Block>),
}

/// A content block. (`cache_control` and `citations` are accepted: prompt caching is automatic
/// here, and citations are not produced.)
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Block {
    Text { text: String },
    Image { source: ImageSource },
    ToolUse { id: String, name: String, input: Value },
    ToolResult { tool_use_id: String, content: Option<ToolResultContent> },
    /// Earlier thinking: chat templates drop it from past turns.
    Thinking {},
    RedactedThinking {},
}

#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ImageSource {
    Base64 { media_type: String, data: String },
    Url { url: String },
}

#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum ToolResultContent {
    Text(String),
    Blocks(Vec<Block>),
}

#[derive(Debug, Clone, Deserialize)]
pub struct Tool {
    pub name: String,
    pub description: Option<String>,
    pub input_schema: Value,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum AnthropicToolChoice {
    Auto {
        #[serde(default)]
        disable_parallel_tool_use: bool,
    },
    Any {
        #[serde(default)]
        disable_parallel_tool_use: bool,
    },
    Tool {
        name: String,
        #[serde(default)]
        disable_parallel_tool_use: bool,
    },
    None {},
}

/// The chat request a Messages request asks for, and each image's field in this API's terms.
pub struct Translated {
    pub chat: ChatCompletionRequest,
    pub image_fields: Vec<String>,
}

impl MessagesRequest {
    pub fn into_chat(self) -> Result<Translated, ApiError> {
        if self.params.max_new_tokens.is_none() {
            return Err(ApiError::invalid("max_tokens", "max_tokens is required"));
        }
        let mut extra = self.extra;
        // Anthropic's bookkeeping and cache hints (prefix caching is automatic here): no
        // effect on the reply.
        for key in ["service_tier", "cache_control"] {
            extra.remove(key);
        }
        let mut params = self.params;
        if !self.stop_sequences.is_empty() {
            params.stop = self.stop_sequences;
        }
        let stream = self.stream;
        let count = CountRequest {
            model: self.model,
            messages: self.messages,
            system: self.system,
            tools: self.tools,
            tool_choice: self.tool_choice,
            thinking: self.thinking,
        };
        let mut t = count.into_chat(params)?;
        t.chat.delivery.stream = stream;
        t.chat.extra = extra;
        Ok(t)
    }
}

impl CountRequest {
    /// The chat request, with `params`.
    pub fn into_chat(self, mut params: GenParams) -> Result<Translated, ApiError> {
        if let Some(t) = self.thinking.as_ref().filter(|t| t.get("type").and_then(Value::as_str) != Some("disabled")) {
            return Err(ApiError::invalid("thinking", format!("extended thinking is not supported by this server (got {t})")));
        }
        let mut messages = Vec::new();
        match self.system {
            None => {}
            Some(System::Text(t)) => messages.push(message(Role::System, Content::Text(t))),
            Some(System::Blocks(blocks)) => {
                let text = blocks
                    .iter()
                    .enumerate()
                    .map(|(i, b)| match b {
                        Block::Text { text } => Ok(text.as_str()),
                        _ => Err(ApiError::invalid(format!("system[{i}].type"), "system blocks must be text")),
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                messages.push(message(Role::System, Content::Text(text.join("\n"))));
            }
        }
        let mut image_fields = Vec::new();
        for (i, turn) in self.messages.into_iter().enumerate() {
            push_turn(&mut messages, i, turn, &mut image_fields)?;
        }
        let mut extra = Map::new();
        if let Some(choice) = self.tool_choice {
            let (choice, no_parallel) = match choice {
                AnthropicToolChoice::Auto { disable_parallel_tool_use } => (ToolChoice::Auto, disable_parallel_tool_use),
                AnthropicToolChoice::Any { disable_parallel_tool_use } => (ToolChoice::Required, disable_parallel_tool_use),
                AnthropicToolChoice::Tool { name, disable_parallel_tool_use } => (ToolChoice::Function(name), disable_parallel_tool_use),
                AnthropicToolChoice::None {} => (ToolChoice::None, false),
            };
            params.tool_choice = Some(choice);
            if no_parallel {
                // The chat route's field: it decides whether one call at a time is honoured.
                extra.insert("parallel_tool_calls".into(), Value::Bool(false));
            }
        }
        let tools = self.tools.map(|tools| {
            tools
                .into_iter()
                .map(|t| json!({"type": "function", "function": {"name": t.name, "description": t.description, "parameters": t.input_schema}}))
                .collect()
        });
        let delivery = DeliveryFields::default();
        let chat = ChatCompletionRequest {
            model: self.model,
            messages,
            tools,
            chat_template_kwargs: None,
            logprobs: None,
            top_logprobs: None,
            delivery,
            params,
            extra,
        };
        Ok(Translated { chat, image_fields })
    }
}

fn message(role: Role, content: Content) -> ChatMessage {
    ChatMessage { role, content: Some(content), tool_calls: None, tool_call_id: None, name: None }
}

/// One turn into chat messages.
fn push_turn(messages: &mut Vec<ChatMessage>, i: usize, turn: Turn, images: &mut Vec<String>) -> Result<(), ApiError> {
    let role = match turn.role {
        TurnRole::User => Role::User,
        TurnRole::Assistant => Role::Assistant,
    };
    let blocks = match turn.content {
        TurnContent::Text(t) => {
            messages.push(message(role, Content::Text(t)));
            return Ok(());
        }
        TurnContent::Blocks(b) => b,
    };
    let field = |j: usize| format!("messages[{i}].content[{j}]");
    let (mut parts, mut calls) = (Vec::new(), Vec::new());
    for (j, block) in blocks.into_iter().enumerate() {
        match (block, role) {
            (Block::Text { text }, _) => parts.push(ContentPart::text(text)),
            (Block::Image { source }, Role::User) => {
                let url = match source {
                    ImageSource::Base64 { media_type, data } => format!("data:{media_type};base64,{data}"),
                    ImageSource::Url { url } => url,
                };
                images.push(format!("{}.source", field(j)));
                parts.push(ContentPart::image(url));
            }
            (Block::ToolUse { id, name, input }, Role::Assistant) => {
                let arguments = input.to_string();
                calls.push(ToolCallIn { id: Some(id), kind: Some("function".into()), function: FunctionCallIn { name, arguments } });
            }
            (Block::ToolResult { tool_use_id, content }, Role::User) => {
                let text = match content {
                    None => String::new(),
                    Some(ToolResultContent::Text(t)) => t,
                    Some(ToolResultContent::Blocks(b)) => b
                        .into_iter()
                        .map(|b| match b {
                            Block::Text { text } => Ok(text),
                            _ => Err(ApiError::invalid(format!("{}.content", field(j)), "tool results must be text")),
                        })
                        .collect::<Result<String, _>>()?,
                };
                messages.push(ChatMessage { tool_call_id: Some(tool_use_id), ..message(Role::Tool, Content::Text(text)) });
            }
            (Block::Thinking {} | Block::RedactedThinking {}, Role::Assistant) => {}
            (_, _) => {
                let what = if role == Role::User { "tool_use and thinking blocks go in assistant turns" } else { "image and tool_result blocks go in user turns" };
                return Err(ApiError::invalid(format!("{}.type", field(j)), what));
            }
        }
    }
    if !parts.is_empty() || !calls.is_empty() {
        let content = (!parts.is_empty()).then_some(Content::Parts(parts));
        messages.push(ChatMessage { role, content, tool_calls: (!calls.is_empty()).then_some(calls), tool_call_id: None, name: None });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn translate(body: Value) -> Result<Translated, ApiError> {
        serde_path_to_error::deserialize::<_, MessagesRequest>(body).map_err(|e| ApiError::schema(None, e.to_string()))?.into_chat()
    }

    #[test]
    fn blocks_become_chat_messages() {
        let t = translate(json!({"model": "m", "max_tokens": 9, "system": [{"type": "text", "text": "be brief", "cache_control": {"type": "ephemeral"}}],
            "stop_sequences": ["END"], "top_k": 5, "metadata": {"user_id": "u"},
            "tools": [{"name": "get_weather", "description": "d", "input_schema": {"type": "object"}}],
            "tool_choice": {"type": "any"},
            "messages": [
                {"role": "user", "content": "weather?"},
                {"role": "assistant", "content": [{"type": "text", "text": "Checking."}, {"type": "tool_use", "id": "t1", "name": "get_weather", "input": {"city": "Paris"}}]},
                {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1", "content": [{"type": "text", "text": "sunny"}]}, {"type": "text", "text": "thanks"}]}]}))
        .map_err(|e| e.message)
        .expect("valid");
        let v = t.chat.validate().map_err(|e| e.message).expect("valid chat");
        let m = &v.chat.messages;
        assert_eq!(m[0], json!({"role": "system", "content": "be brief"}));
        assert_eq!(m[2]["content"], "Checking.");
        assert_eq!(m[2]["tool_calls"][0]["function"]["arguments"], json!({"city": "Paris"}));
        assert_eq!(m[3], json!({"role": "tool", "content": "sunny", "tool_call_id": "t1"}));
        assert_eq!(m[4], json!({"role": "user", "content": "thanks"}));
        let p = &v.chat.params;
        assert_eq!((p.max_new_tokens, p.top_k, p.stop.as_slice()), (Some(9), Some(5), ["END".to_owned()].as_slice()));
        assert_eq!(p.tool_choice, Some(ToolChoice::Required));
        assert_eq!(v.tool_names, ["get_weather"]);
    }

    #[test]
    fn refusals_name_the_field() {
        let user = |content: Value| json!({"max_tokens": 4, "messages": [{"role": "user", "content": content}]});
        let cases = [
            (json!({"messages": [{"role": "user", "content": "x"}]}), "max_tokens"),
            (user(json!([{"type": "tool_use", "id": "a", "name": "f", "input": {}}])), "messages[0].content[0].type"),
            (json!({"max_tokens": 4, "thinking": {"type": "enabled", "budget_tokens": 1024}, "messages": []}), "thinking"),
        ];
        for (body, param) in cases {
            let e = translate(body.clone()).err().unwrap_or_else(|| panic!("{body} should be refused"));
            assert_eq!(e.param.as_deref(), Some(param), "{body}: {}", e.message);
        }
        let t = translate(user(json!([{"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "AAAA"}}]))).map_err(|e| e.message).expect("valid");
        assert_eq!(t.image_fields, ["messages[0].content[0].source"]);
        let v = t.chat.validate().map_err(|e| e.message).expect("valid chat");
        assert_eq!(v.media[0].url, "data:image/png;base64,AAAA");
    }
}
