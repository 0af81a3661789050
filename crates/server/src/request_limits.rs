//! Bounds on the sizes of a request's strings and lists, checked before anything renders,
//! tokenizes or compiles them: each refusal is a 400 naming the field and the limit.
//!
//! The body limit (`--max-body-bytes`) already bounds everything together; these bound what
//! one field may cost when that limit is raised (for images in data URLs): a template
//! renders every message, the tokenizer reads all text, a grammar compiles every tool
//! schema. Limits the engine owns (at most 16 `stop` strings of at most 1 KiB each, `n` up
//! to `max_n`, prompt plus `max_tokens` within the context) are checked there; `logit_bias`
//! is refused whole (see `openai::check_extra`), so it has no entry limit.
//!
//! The request types (`openai`) measure themselves and call these; this module knows only
//! sizes, so it depends on no request type.

use ingot_engine::GenParams;
use serde_json::Value;

use crate::error::ApiError;

/// Most messages in a chat request (or texts in a score request).
pub const MAX_MESSAGES: usize = 1024;
/// Most text bytes in one message: its content, tool-call arguments and names.
pub const MAX_MESSAGE_BYTES: usize = 1 << 20;
/// Most text bytes in all messages (or a completion's prompt) together.
pub const MAX_TEXT_BYTES: usize = 2 << 20;
/// Most tools a request may define.
pub const MAX_TOOLS: usize = 128;
/// Most bytes of one tool definition's JSON.
pub const MAX_TOOL_BYTES: usize = 64 << 10;
/// Most bytes of all tool definitions' JSON together.
pub const MAX_TOOLS_BYTES: usize = 512 << 10;
/// Most bytes of a `response_format`'s JSON (its schema, mostly).
pub const MAX_RESPONSE_FORMAT_BYTES: usize = 64 << 10;

fn over(field: impl Into<String>, what: &str, got: usize, limit: usize) -> ApiError {
    ApiError::invalid(field, format!("{what} is {got} bytes, over this server's limit of {limit} bytes"))
}

fn json_len(v: &impl serde::Serialize) -> usize {
    serde_json::to_vec(v).map_or(usize::MAX, |b| b.len())
}

/// Messages (or texts) of `field`, given by their text sizes in bytes: how many, bytes each
/// and in all.
pub fn check_messages(field: &str, sizes: impl ExactSizeIterator<Item = usize>) -> Result<(), ApiError> {
    if sizes.len() > MAX_MESSAGES {
        return Err(ApiError::invalid(field, format!("at most {MAX_MESSAGES} {field}, got {}", sizes.len())));
    }
    let mut total = 0usize;
    for (i, bytes) in sizes.enumerate() {
        if bytes > MAX_MESSAGE_BYTES {
            return Err(over(format!("{field}[{i}]"), &format!("{field}[{i}]'s text"), bytes, MAX_MESSAGE_BYTES));
        }
        total += bytes;
    }
    if total > MAX_TEXT_BYTES {
        return Err(over(field, &format!("the {field}' text"), total, MAX_TEXT_BYTES));
    }
    Ok(())
}

/// One text of `field` (a completion's prompt), in bytes.
pub fn check_text(field: &str, bytes: usize) -> Result<(), ApiError> {
    if bytes > MAX_TEXT_BYTES {
        return Err(over(field, &format!("the {field}"), bytes, MAX_TEXT_BYTES));
    }
    Ok(())
}

/// Tools: how many, bytes each and in all.
pub fn check_tools(tools: Option<&[Value]>) -> Result<(), ApiError> {
    let tools = tools.unwrap_or_default();
    if tools.len() > MAX_TOOLS {
        return Err(ApiError::invalid("tools", format!("at most {MAX_TOOLS} tools, got {}", tools.len())));
    }
    let mut total = 0;
    for (i, t) in tools.iter().enumerate() {
        let bytes = json_len(t);
        if bytes > MAX_TOOL_BYTES {
            return Err(over(format!("tools[{i}]"), &format!("tools[{i}]'s JSON"), bytes, MAX_TOOL_BYTES));
        }
        total += bytes;
    }
    if total > MAX_TOOLS_BYTES {
        return Err(over("tools", "the tools' JSON", total, MAX_TOOLS_BYTES));
    }
    Ok(())
}

/// The sampling fields' sizes: the response format's schema.
pub fn check_params(params: &GenParams) -> Result<(), ApiError> {
    if let Some(format) = &params.response_format {
        let bytes = json_len(format);
        if bytes > MAX_RESPONSE_FORMAT_BYTES {
            return Err(over("response_format", "response_format's JSON", bytes, MAX_RESPONSE_FORMAT_BYTES));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::openai::{CompletionRequest, ScoreRequest};
    use serde_json::json;

    fn user(text: String) -> Value {
        json!({"role": "user", "content": text})
    }

    /// The refusal of `body` by the chat route's validation: its param and message.
    fn chat_refusal(body: Value) -> (String, String) {
        let req: crate::openai::ChatCompletionRequest = serde_json::from_value(body).expect("shape");
        let e = req.validate().err().expect("refused");
        assert_eq!(e.status, axum::http::StatusCode::BAD_REQUEST);
        (e.param.unwrap_or_default(), e.message)
    }

    fn chat_passes(body: Value) {
        let req: crate::openai::ChatCompletionRequest = serde_json::from_value(body).expect("shape");
        req.validate().map_err(|e| e.message).expect("valid");
    }

    #[test]
    fn message_count_and_sizes_are_bounded() {
        let many: Vec<Value> = (0..=MAX_MESSAGES).map(|_| user("x".into())).collect();
        let (param, msg) = chat_refusal(json!({"messages": many}));
        assert_eq!(param, "messages");
        assert!(msg.contains(&format!("at most {MAX_MESSAGES} messages")), "{msg}");
        chat_passes(json!({"messages": many[..MAX_MESSAGES]}));

        let big = "x".repeat(MAX_MESSAGE_BYTES + 1);
        let (param, msg) = chat_refusal(json!({"messages": [user("a".into()), user(big)]}));
        assert_eq!(param, "messages[1]");
        assert!(msg.contains(&MAX_MESSAGE_BYTES.to_string()), "{msg}");
        // Parts and tool-call arguments count too.
        let parts = json!({"role": "user", "content": [{"type": "text", "text": "x".repeat(MAX_MESSAGE_BYTES)}, {"type": "text", "text": "y"}]});
        assert_eq!(chat_refusal(json!({"messages": [parts]})).0, "messages[0]");
        let args = format!("{{\"a\": \"{}\"}}", "x".repeat(MAX_MESSAGE_BYTES));
        let call = json!({"role": "assistant", "tool_calls": [{"function": {"name": "f", "arguments": args}}]});
        assert_eq!(chat_refusal(json!({"messages": [user("q".into()), call]})).0, "messages[1]");

        let third = "x".repeat(MAX_TEXT_BYTES / 3 + 1);
        let (param, msg) = chat_refusal(json!({"messages": [user(third.clone()), user(third.clone()), user(third)]}));
        assert_eq!(param, "messages");
        assert!(msg.contains(&MAX_TEXT_BYTES.to_string()), "{msg}");
    }

    #[test]
    fn tool_and_schema_sizes_are_bounded() {
        let tool = |desc: usize| json!({"type": "function", "function": {"name": "f", "description": "d".repeat(desc)}});
        let (param, msg) = chat_refusal(json!({"messages": [user("x".into())], "tools": [tool(1), tool(MAX_TOOL_BYTES)]}));
        assert_eq!(param, "tools[1]");
        assert!(msg.contains(&MAX_TOOL_BYTES.to_string()), "{msg}");
        let tools: Vec<Value> = (0..MAX_TOOLS_BYTES / (MAX_TOOL_BYTES / 2) + 1).map(|_| tool(MAX_TOOL_BYTES / 2)).collect();
        assert_eq!(chat_refusal(json!({"messages": [user("x".into())], "tools": tools})).0, "tools");
        let many: Vec<Value> = (0..=MAX_TOOLS).map(|_| tool(1)).collect();
        assert_eq!(chat_refusal(json!({"messages": [user("x".into())], "tools": many})).0, "tools");

        let schema = json!({"type": "object", "description": "d".repeat(MAX_RESPONSE_FORMAT_BYTES)});
        let format = json!({"type": "json_schema", "json_schema": {"name": "s", "schema": schema}});
        let (param, msg) = chat_refusal(json!({"messages": [user("x".into())], "response_format": format}));
        assert_eq!(param, "response_format");
        assert!(msg.contains(&MAX_RESPONSE_FORMAT_BYTES.to_string()), "{msg}");
    }

    #[test]
    fn prompts_and_score_texts_are_bounded() {
        let req: CompletionRequest = serde_json::from_value(json!({"prompt": "x".repeat(MAX_TEXT_BYTES + 1)})).expect("shape");
        assert_eq!(req.validate().err().expect("refused").param.as_deref(), Some("prompt"));
        let req: ScoreRequest = serde_json::from_value(json!({"messages": ["a", "x".repeat(MAX_MESSAGE_BYTES + 1)]})).expect("shape");
        assert_eq!(req.check_sizes().expect_err("refused").param.as_deref(), Some("messages[1]"));
        let req: ScoreRequest = serde_json::from_value(json!({"messages": vec!["a"; MAX_MESSAGES + 1]})).expect("shape");
        assert_eq!(req.check_sizes().expect_err("refused").param.as_deref(), Some("messages"));
    }
}
