//! Assistant prefill: a chat whose last message is an assistant turn with text asks for that
//! turn to be continued, not for a new one (llama.cpp's server and Anthropic's Messages API
//! always read it so; vLLM's `continue_final_message`). The chat renders without the
//! generation prompt and the prompt is cut right after the final message's text, so the
//! template's end-of-turn (and anything after it) is gone and the model's next token extends
//! the assistant's text; the reply carries only the continuation.
//!
//! Invariant: a prefilled prompt ends with the final message's text (its trailing whitespace
//! trimmed when the template trims it), never with an end-of-turn marker. A template that does
//! not copy the text into the prompt cannot be continued: a 400 naming `messages`.

use serde_json::Value;

use crate::EngineError;

/// The text a final assistant message asks to continue, if the chat ends with one: its string
/// content, or its text parts joined. An assistant turn with tool calls or without text is not
/// a prefill (it renders as before).
pub(crate) fn final_assistant_text(messages: &[Value]) -> Option<String> {
    let last = messages.last()?;
    if last["role"] != "assistant" || last.get("tool_calls").is_some_and(|c| !c.is_null()) {
        return None;
    }
    let text = match &last["content"] {
        Value::String(s) => s.clone(),
        Value::Array(parts) => parts.iter().filter(|p| p["type"] == "text").filter_map(|p| p["text"].as_str()).collect(),
        _ => return None,
    };
    (!text.trim().is_empty()).then_some(text)
}

/// `rendered` (the chat rendered without a generation prompt) cut right after the last
/// occurrence of the final message's `text` (or of it with trailing whitespace trimmed, as
/// many templates trim content).
pub(crate) fn continue_final(mut rendered: String, text: &str) -> Result<String, EngineError> {
    let found = [text, text.trim_end()].into_iter().find_map(|t| rendered.rfind(t).map(|at| at + t.len()));
    let Some(end) = found else {
        return Err(EngineError::invalid(
            "messages",
            "the final assistant message is continued (a prefill), but the chat template does not copy its text into the prompt",
        ));
    };
    rendered.truncate(end);
    Ok(rendered)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn only_a_final_assistant_turn_with_text_is_a_prefill() {
        let user = json!({"role": "user", "content": "hi"});
        let cases = [
            (json!({"role": "assistant", "content": "Sure, "}), Some("Sure, ")),
            (json!({"role": "assistant", "content": [{"type": "text", "text": "A"}, {"type": "text", "text": "B"}]}), Some("AB")),
            (json!({"role": "assistant", "content": "  "}), None),
            (json!({"role": "assistant", "content": null, "tool_calls": [{"id": "1"}]}), None),
            (json!({"role": "assistant", "content": "x", "tool_calls": [{"id": "1"}]}), None),
            (json!({"role": "user", "content": "again"}), None),
        ];
        for (last, wanted) in cases {
            assert_eq!(final_assistant_text(&[user.clone(), last.clone()]).as_deref(), wanted, "{last}");
        }
    }

    #[test]
    fn the_prompt_ends_with_the_text_not_the_end_of_turn() {
        let rendered = "<|im_start|>user\nSay x<|im_end|>\n<|im_start|>assistant\nSay x<|im_end|>\n".to_string();
        assert_eq!(continue_final(rendered.clone(), "Say x").expect("continues"), "<|im_start|>user\nSay x<|im_end|>\n<|im_start|>assistant\nSay x");
        // A template that trims the content: the trimmed text is found.
        assert!(continue_final(rendered.clone(), "Say x \n").expect("continues").ends_with("assistant\nSay x"));
        let e = continue_final(rendered, "absent").expect_err("an error");
        assert_eq!(e.field(), Some("messages"));
    }
}
