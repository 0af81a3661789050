//! `POST /tokenize` and `POST /detokenize` (also under `/v1`), in the shapes llama.cpp's and
//! vLLM's servers use, so other front ends can send exact ids.
//!
//! - llama.cpp: `{"content", "add_special": false, "with_pieces": false}` → `{"tokens": [...]}`
//!   (with pieces: `[{"id", "piece"}]`, a piece that is not whole UTF-8 given as its bytes);
//!   `{"tokens"}` → `{"content"}`.
//! - vLLM: `{"prompt", "add_special_tokens": true}` or `{"messages", "add_generation_prompt":
//!   true}` → `{"tokens", "count", "max_model_len"}` (and `token_strs` when asked);
//!   `{"tokens"}` → `{"prompt"}`.
//!
//! Every answer carries both families' fields. Text is tokenized as a prompt is (special-token
//! text becomes its id), and ids are detokenized as llama.cpp does, special tokens kept. Other
//! fields are refused (422 naming them), and `add_generation_prompt: false` with a 400: a chat
//! is always tokenized as the prompt the engine would run.

use axum::extract::State;
use axum::Json;
use ingot_engine::EngineError;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::openai::ChatCompletionRequest;
use crate::{ApiError, AppState, JsonBody};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenizeRequest {
    model: Option<String>,
    /// llama.cpp's field.
    content: Option<String>,
    /// vLLM's field.
    prompt: Option<String>,
    /// vLLM's chat form: rendered with the chat template first.
    messages: Option<Value>,
    /// vLLM's switch for chats; only `true` (its default) is supported.
    add_generation_prompt: Option<bool>,
    /// llama.cpp's switch (default false).
    add_special: Option<bool>,
    /// vLLM's switch (default true).
    add_special_tokens: Option<bool>,
    #[serde(default)]
    with_pieces: bool,
    #[serde(default)]
    return_token_strs: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DetokenizeRequest {
    model: Option<String>,
    tokens: Vec<u32>,
}

pub async fn tokenize(State(s): State<AppState>, JsonBody(req): JsonBody<TokenizeRequest>) -> Result<Json<Value>, ApiError> {
    s.check_model(req.model.as_deref())?;
    if req.add_generation_prompt == Some(false) {
        return Err(ApiError::invalid("add_generation_prompt", "add_generation_prompt: false is not supported (chats are tokenized as the prompt the engine runs)"));
    }
    let ids = match (&req.content, &req.prompt, &req.messages) {
        (Some(text), None, None) => {
            let (engine, text, add) = (s.engine.clone(), text.clone(), req.add_special.unwrap_or(false));
            s.workers.run(move || engine.tokenize(&text, add)).await??
        }
        (None, Some(text), None) => {
            let (engine, text, add) = (s.engine.clone(), text.clone(), req.add_special_tokens.unwrap_or(true));
            s.workers.run(move || engine.tokenize(&text, add)).await??
        }
        (None, None, Some(messages)) => {
            let chat: ChatCompletionRequest = serde_json::from_value(json!({"messages": messages}))
                .map_err(|e| ApiError::schema(Some("messages".into()), format!("messages: {e}")))?;
            let chat = chat.validate()?.chat;
            let engine = s.engine.clone();
            s.workers.run(move || engine.apply_template(chat)).await??.1
        }
        _ => return Err(ApiError::invalid("content", "give exactly one of `content`, `prompt` or `messages`")),
    };
    let mut out = json!({"count": ids.len(), "max_model_len": s.engine.context_length()});
    if req.with_pieces {
        let pieces: Vec<Value> = ids.iter().map(|&id| json!({"id": id, "piece": piece(s.engine.piece(id))})).collect();
        out["tokens"] = pieces.into();
    } else {
        out["tokens"] = json!(ids);
    }
    if req.return_token_strs {
        let strs: Vec<String> = ids.iter().map(|&id| String::from_utf8_lossy(&s.engine.piece(id)).into_owned()).collect();
        out["token_strs"] = json!(strs);
    }
    Ok(Json(out))
}

/// A piece as llama.cpp gives it: a string when it is whole UTF-8, else its bytes.
fn piece(bytes: Vec<u8>) -> Value {
    match String::from_utf8(bytes) {
        Ok(text) => text.into(),
        Err(e) => json!(e.into_bytes()),
    }
}

pub async fn detokenize(State(s): State<AppState>, JsonBody(req): JsonBody<DetokenizeRequest>) -> Result<Json<Value>, ApiError> {
    s.check_model(req.model.as_deref())?;
    let engine = s.engine.clone();
    let text = s.workers.run(move || engine.detokenize(&req.tokens)).await?.map_err(|e| match e {
        // Name the offending entry.
        EngineError::Invalid { field, message } => ApiError::invalid(field, message),
        e => ApiError::from(e),
    })?;
    Ok(Json(json!({"content": text, "prompt": text})))
}
