//! The Responses API's request body, and its translation into the chat completion request
//! every chat-shaped route validates ([`ChatCompletionRequest::validate`]): input items become
//! chat messages (consecutive `function_call` items one assistant message with tool calls, a
//! `function_call_output` a tool message), `instructions` a leading system message, function
//! tools and `tool_choice` the chat shapes, `text.format` a `response_format`.
//!
//! Fields the chat route also has (sampling, `parallel_tool_calls`, bookkeeping) pass through
//! to its checks unchanged, so an unsupported one is refused the same way, naming it. Fields of
//! this API only are checked here: those that ask for something ingot does not do (built-in
//! tools, `reasoning` settings, `truncation: "auto"`, background runs, stored prompts) are a
//! 400 naming them.

use ingot_engine::GenParams;
use serde::Deserialize;
use serde_json::{json, Map, Value};

use crate::error::ApiError;
use crate::openai::{ChatCompletionRequest, ChatMessage, Content, ContentPart, DeliveryFields, FunctionCallIn, Role, ToolCallIn};

#[derive(Debug, Clone, Deserialize)]
pub struct ResponsesRequest {
    pub model: Option<String>,
    pub input: Input,
    pub instructions: Option<String>,
    pub tools: Option<Vec<Value>>,
    pub tool_choice: Option<Value>,
    pub text: Option<TextOptions>,
    #[serde(default)]
    pub stream: bool,
    pub max_output_tokens: Option<usize>,
    pub previous_response_id: Option<String>,
    /// Whether the response is kept for `previous_response_id` and `GET` (OpenAI's default:
    /// yes).
    pub store: Option<bool>,
    #[serde(flatten)]
    pub params: GenParams,
    /// Every other field: this API's own are checked in [`ResponsesRequest::into_chat`], the
    /// rest by the chat route's check.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// `input`: a user message's text, or a list of items.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum Input {
    Text(String),
    Items(Vec<Value>),
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TextOptions {
    pub format: Option<Value>,
    /// (GPT-5's length hint: accepted and echoed, no effect on this model.)
    #[serde(default)]
    pub verbosity: Option<String>,
}

/// A Responses request as a chat request, with what the reply needs besides.
pub struct Turn {
    pub chat: ChatCompletionRequest,
    /// The conversation so far (history and this input, instructions aside), kept with the
    /// response for a later `previous_response_id`.
    pub conversation: Vec<ChatMessage>,
    /// `input[i].content[j]` of each image, in order (the chat request names them by message).
    pub image_fields: Vec<String>,
}

impl ResponsesRequest {
    /// The chat request this asks for, continuing `history` (the conversation of the
    /// response named by `previous_response_id`).
    pub fn into_chat(self, history: Vec<ChatMessage>) -> Result<Turn, ApiError> {
        let mut extra = self.extra;
        check_own_fields(&mut extra)?;
        let mut conversation = history;
        let mut image_fields = Vec::new();
        match self.input {
            Input::Text(t) => conversation.push(message(Role::User, Content::Text(t))),
            Input::Items(items) => {
                for (i, item) in items.iter().enumerate() {
                    push_item(&mut conversation, i, item, &mut image_fields)?;
                }
            }
        }
        let mut messages = Vec::with_capacity(conversation.len() + 1);
        if let Some(instructions) = self.instructions {
            messages.push(message(Role::System, Content::Text(instructions)));
        }
        messages.extend(conversation.iter().cloned());
        let mut params = self.params;
        if let Some(format) = self.text.and_then(|t| t.format) {
            if params.response_format.is_some() {
                return Err(ApiError::invalid("text.format", "give text.format or response_format, not both"));
            }
            params.response_format = response_format(format)?;
        }
        if let Some(choice) = self.tool_choice {
            params.tool_choice = Some(tool_choice(choice)?);
        }
        let tools = self.tools.map(|t| t.iter().enumerate().map(|(i, t)| chat_tool(i, t)).collect::<Result<Vec<_>, _>>()).transpose()?;
        let delivery = DeliveryFields { stream: self.stream, stream_options: None, max_completion_tokens: self.max_output_tokens };
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
        Ok(Turn { chat, conversation, image_fields })
    }
}

/// Takes out this API's own fields, refusing those that ask for what ingot does not do.
fn check_own_fields(extra: &mut Map<String, Value>) -> Result<(), ApiError> {
    for key in ["truncation", "include", "reasoning", "background", "stream_options", "max_tool_calls", "prompt", "conversation", "top_logprobs"] {
        let Some(value) = extra.remove(key) else { continue };
        let asks_nothing = match (key, &value) {
            (_, Value::Null) => true,
            ("truncation", Value::String(s)) => s == "disabled",
            ("include", Value::Array(a)) => a.is_empty(),
            ("reasoning", Value::Object(o)) => o.values().all(Value::is_null),
            ("background", Value::Bool(b)) => !b,
            // Obfuscation padding is a hosted-service matter; nothing to ask here.
            ("stream_options", Value::Object(_)) => true,
            ("top_logprobs", Value::Number(n)) => n.as_u64() == Some(0),
            _ => false,
        };
        if !asks_nothing {
            let why = match key {
                "truncation" => "may only be \"disabled\": a conversation longer than the context is refused, not cut",
                _ => "is not supported by this server",
            };
            return Err(ApiError::invalid(key, format!("`{key}` {why}")));
        }
    }
    Ok(())
}

fn message(role: Role, content: Content) -> ChatMessage {
    ChatMessage { role, content: Some(content), tool_calls: None, tool_call_id: None, name: None }
}

/// One input item into the conversation.
fn push_item(conversation: &mut Vec<ChatMessage>, i: usize, item: &Value, images: &mut Vec<String>) -> Result<(), ApiError> {
    let field = |f: &str| format!("input[{i}].{f}");
    let text = |f: &str| -> Result<String, ApiError> {
        item.get(f).and_then(Value::as_str).map(str::to_owned).ok_or_else(|| ApiError::invalid(field(f), format!("a {f} string is required")))
    };
    let kind = item.get("type").and_then(Value::as_str).unwrap_or("message");
    match kind {
        "message" => {
            let role: Role = serde_json::from_value(item.get("role").cloned().unwrap_or(Value::Null))
                .map_err(|_| ApiError::invalid(field("role"), "role must be user, assistant, system or developer"))?;
            if role == Role::Tool {
                return Err(ApiError::invalid(field("role"), "tool outputs are function_call_output items"));
            }
            let content = match item.get("content") {
                Some(Value::String(t)) => Content::Text(t.clone()),
                Some(Value::Array(parts)) => Content::Parts(
                    parts.iter().enumerate().map(|(j, p)| content_part(&field(&format!("content[{j}]")), p, images)).collect::<Result<_, _>>()?,
                ),
                _ => return Err(ApiError::invalid(field("content"), "content must be a string or a list of parts")),
            };
            conversation.push(message(role, content));
        }
        "function_call" => {
            let call = ToolCallIn {
                id: Some(text("call_id")?),
                kind: Some("function".into()),
                function: FunctionCallIn { name: text("name")?, arguments: text("arguments")? },
            };
            // Calls right after an assistant message belong to it, as in a chat request.
            match conversation.last_mut() {
                Some(m) if m.role == Role::Assistant => m.tool_calls.get_or_insert_with(Vec::new).push(call),
                _ => conversation.push(ChatMessage { role: Role::Assistant, content: None, tool_calls: Some(vec![call]), tool_call_id: None, name: None }),
            }
        }
        "function_call_output" => {
            let output = match item.get("output") {
                Some(Value::String(t)) => t.clone(),
                Some(Value::Array(parts)) => parts
                    .iter()
                    .map(|p| p.get("text").and_then(Value::as_str).ok_or_else(|| ApiError::invalid(field("output"), "output parts must be input_text")))
                    .collect::<Result<String, _>>()?,
                _ => return Err(ApiError::invalid(field("output"), "an output string is required")),
            };
            conversation.push(ChatMessage { tool_call_id: Some(text("call_id")?), ..message(Role::Tool, Content::Text(output)) });
        }
        // A reasoning model's earlier thinking: chat templates drop it from past turns.
        "reasoning" => {}
        other => {
            return Err(ApiError::invalid(
                field("type"),
                format!("input items of type `{other}` are not supported (message, function_call, function_call_output and reasoning are)"),
            ))
        }
    }
    Ok(())
}

/// A content part in the chat request's terms; an image's field is appended to `images`.
fn content_part(field: &str, p: &Value, images: &mut Vec<String>) -> Result<ContentPart, ApiError> {
    let kind = p.get("type").and_then(Value::as_str).unwrap_or_default();
    let text = |t: Option<&Value>| t.and_then(Value::as_str).map(str::to_owned);
    match kind {
        "input_text" | "output_text" | "text" | "refusal" => {
            let t = text(p.get("text").or_else(|| p.get("refusal")))
                .ok_or_else(|| ApiError::invalid(format!("{field}.text"), "a text part needs text"))?;
            Ok(ContentPart::text(t))
        }
        "input_image" => {
            let url = text(p.get("image_url")).ok_or_else(|| {
                ApiError::invalid(format!("{field}.image_url"), "an input_image part needs `image_url` (uploaded file ids are not supported)")
            })?;
            images.push(format!("{field}.image_url"));
            Ok(ContentPart::image(url))
        }
        other => Err(ApiError::invalid(
            format!("{field}.type"),
            format!("content parts of type `{other}` are not supported (input_text, output_text and input_image are)"),
        )),
    }
}

/// A Responses function tool (`{"type": "function", "name", "parameters", ...}`) in the chat
/// shape.
fn chat_tool(i: usize, tool: &Value) -> Result<Value, ApiError> {
    match tool.get("type").and_then(Value::as_str) {
        Some("function") => {}
        other => {
            return Err(ApiError::invalid(
                format!("tools[{i}].type"),
                format!("tools of type {} are not supported (function tools are)", other.map_or("(none)".into(), |t| format!("`{t}`"))),
            ))
        }
    }
    let mut function = tool.as_object().cloned().unwrap_or_default();
    function.remove("type");
    // `strict` asks for arguments that follow the schema; forced calls always do.
    function.remove("strict");
    Ok(json!({"type": "function", "function": function}))
}

/// `tool_choice` in the chat shape: `{"type": "function", "name"}` becomes
/// `{"type": "function", "function": {"name"}}`.
fn tool_choice(choice: Value) -> Result<ingot_engine::ToolChoice, ApiError> {
    let chat = match choice.get("type").and_then(Value::as_str) {
        Some("function") => json!({"type": "function", "function": {"name": choice.get("name")}}),
        _ => choice,
    };
    serde_json::from_value(chat).map_err(|_| {
        ApiError::invalid("tool_choice", "tool_choice must be \"none\", \"auto\", \"required\" or {\"type\": \"function\", \"name\": ...}")
    })
}

/// `text.format` (`{"type": "json_schema", "name", "schema", "strict"}`, `json_object`,
/// `text`) as the chat request's `response_format`.
fn response_format(format: Value) -> Result<Option<ingot_engine::ResponseFormat>, ApiError> {
    let chat = match format.get("type").and_then(Value::as_str) {
        Some("json_schema") => {
            let mut schema = format.as_object().cloned().unwrap_or_default();
            schema.remove("type");
            json!({"type": "json_schema", "json_schema": schema})
        }
        _ => format,
    };
    serde_json::from_value(chat)
        .map(Some)
        .map_err(|e| ApiError::invalid("text.format", format!("text.format must be text, json_object or json_schema with a name and schema: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn turn(body: Value, history: Vec<ChatMessage>) -> Result<Turn, ApiError> {
        serde_json::from_value::<ResponsesRequest>(body).expect("shape").into_chat(history)
    }

    #[test]
    fn items_become_chat_messages() {
        let t = turn(
            json!({"input": [
                {"role": "user", "content": [{"type": "input_text", "text": "weather?"}]},
                {"type": "function_call", "call_id": "c1", "name": "get_weather", "arguments": "{\"city\": \"Paris\"}", "id": "fc_1", "status": "completed"},
                {"type": "function_call_output", "call_id": "c1", "output": "sunny"},
                {"type": "reasoning", "id": "rs_1", "summary": []}],
                "instructions": "be brief", "tools": [{"type": "function", "name": "get_weather", "parameters": {"type": "object"}, "strict": true}],
                "tool_choice": {"type": "function", "name": "get_weather"}, "max_output_tokens": 9, "store": false, "include": []}),
            Vec::new(),
        )
        .map_err(|e| e.message)
        .expect("valid");
        assert_eq!(t.conversation.len(), 3, "instructions are not part of the kept conversation");
        let v = t.chat.validate().map_err(|e| e.message).expect("valid chat");
        let m = &v.chat.messages;
        assert_eq!(m[0], json!({"role": "system", "content": "be brief"}));
        assert_eq!(m[1], json!({"role": "user", "content": "weather?"}));
        assert_eq!(m[2]["tool_calls"][0]["function"]["arguments"], json!({"city": "Paris"}));
        assert_eq!(m[3], json!({"role": "tool", "content": "sunny", "tool_call_id": "c1"}));
        assert_eq!(v.chat.params.tool_choice, Some(ingot_engine::ToolChoice::Function("get_weather".into())));
        assert_eq!(v.chat.params.max_new_tokens, Some(9));
        assert_eq!(v.tool_names, ["get_weather"]);
        assert_eq!(v.chat.tools.expect("tools")[0]["function"]["name"], "get_weather");
    }

    #[test]
    fn history_comes_first_and_formats_translate() {
        let history = vec![message(Role::User, Content::Text("hi".into()))];
        let t = turn(
            json!({"input": "again", "text": {"format": {"type": "json_schema", "name": "x", "schema": {"type": "object"}, "strict": true}}}),
            history,
        )
        .map_err(|e| e.message)
        .expect("valid");
        let v = t.chat.validate().map_err(|e| e.message).expect("valid chat");
        assert_eq!(v.chat.messages.len(), 2);
        assert_eq!(v.chat.messages[1]["content"], "again");
        assert!(matches!(v.chat.params.response_format, Some(ingot_engine::ResponseFormat::JsonSchema { .. })));
    }

    #[test]
    fn unsupported_asks_name_the_field() {
        let cases = [
            (json!({"input": "x", "tools": [{"type": "web_search"}]}), "tools[0].type"),
            (json!({"input": "x", "truncation": "auto"}), "truncation"),
            (json!({"input": "x", "background": true}), "background"),
            (json!({"input": [{"type": "item_reference", "id": "a"}]}), "input[0].type"),
            (json!({"input": [{"role": "user", "content": [{"type": "input_file", "file_id": "f"}]}]}), "input[0].content[0].type"),
            (json!({"input": [{"type": "function_call_output", "output": "x"}]}), "input[0].call_id"),
            (json!({"input": "x", "text": {"format": {"type": "xml"}}}), "text.format"),
            (json!({"input": "x", "tool_choice": {"type": "file_search"}}), "tool_choice"),
        ];
        for (body, param) in cases {
            let e = turn(body.clone(), Vec::new()).err().unwrap_or_else(|| panic!("{body} should be refused"));
            assert_eq!(e.param.as_deref(), Some(param), "{body}: {}", e.message);
        }
        // The chat route's own check refuses the rest.
        let t = turn(json!({"input": "x", "frobnicate": 1}), Vec::new()).map_err(|e| e.message).expect("translates");
        assert_eq!(t.chat.validate().err().and_then(|e| e.param).as_deref(), Some("frobnicate"));
    }
}
