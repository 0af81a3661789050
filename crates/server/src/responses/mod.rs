//! OpenAI's Responses API: `POST /v1/responses` and `GET /v1/responses/{id}` (also without
//! `/v1`), what the Agents SDK and Codex-style agents speak.
//!
//! A request is translated into the chat completion request the chat route validates
//! ([`request`]), then queued and answered on the same path (validation, error table, auth,
//! body limit, metrics): only the reply's shape differs ([`output`]). One output per request
//! (no `n`). Responses made with `store` (the default) are kept in a bounded memory
//! ([`store`]) so a later request can continue one with `previous_response_id` (its
//! conversation, not its `instructions`, as OpenAI does) or fetch it again.

mod output;
mod request;
mod store;

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use serde_json::{json, Map, Value};

use crate::completions::{queue_chat, sse};
use crate::{new_id, unix_now, ApiError, AppState, JsonBody};
use output::Finish;
pub use request::ResponsesRequest;
use store::{Store, MAX_RESPONSES};

/// The Responses routes, with their own store.
pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/responses", post(create))
        .route("/responses", post(create))
        .route("/v1/responses/{id}", get(retrieve))
        .route("/responses/{id}", get(retrieve))
        .layer(Extension(Arc::new(Store::default())))
}

async fn create(State(s): State<AppState>, Extension(store): Extension<Arc<Store>>, JsonBody(req): JsonBody<ResponsesRequest>) -> Result<Response, ApiError> {
    let model = s.check_model(req.model.as_deref())?;
    // The LoRA adapter the name picks, if any.
    let adapter = s.adapter(&model);
    let history = match &req.previous_response_id {
        None => Vec::new(),
        Some(id) => store.get(id).map(|k| k.conversation).ok_or_else(|| {
            ApiError::invalid(
                "previous_response_id",
                format!("no response `{id}` is kept: this server keeps the last {MAX_RESPONSES} responses made with `store`, in memory"),
            )
        })?,
    };
    let head = head(&req, model);
    let keep = req.store != Some(false);
    let turn = req.into_chat(history)?;
    let mut valid = turn.chat.validate().map_err(own_param)?;
    if valid.chat.params.num_return_sequences.is_some_and(|n| n != 1) {
        return Err(ApiError::invalid("n", "a response has one output: n must be 1"));
    }
    for (image, field) in valid.media.iter_mut().zip(turn.image_fields) {
        image.field = field;
    }
    valid.chat.params.adapter = adapter;
    let stream = valid.delivery.stream;
    let (submission, format) = queue_chat(&s, valid).await.map_err(own_param)?;
    let finish = Finish { head, store: keep.then_some(store), conversation: turn.conversation };
    Ok(if stream { sse(finish.stream(submission.started().await?, format)) } else { Json(finish.complete(submission, &format).await?).into_response() })
}

async fn retrieve(Extension(store): Extension<Arc<Store>>, Path(id): Path<String>) -> Result<Json<Value>, ApiError> {
    store.get(&id).map(|k| Json(k.response)).ok_or_else(|| {
        ApiError::not_found(format!("no response `{id}` is kept (the last {MAX_RESPONSES} responses made with `store` are, in memory)"))
    })
}

/// The response object's fields that do not depend on the reply: its id and the request's
/// settings, as OpenAI echoes them.
fn head(req: &ResponsesRequest, model: String) -> Map<String, Value> {
    let extra = |key: &str, default: Value| req.extra.get(key).filter(|v| !v.is_null()).cloned().unwrap_or(default);
    let text = req.text.as_ref().and_then(|t| t.format.clone()).unwrap_or_else(|| json!({"type": "text"}));
    let verbosity = req.text.as_ref().and_then(|t| t.verbosity.clone());
    let fields = json!({
        "id": new_id("resp_"),
        "object": "response",
        "created_at": unix_now(),
        "model": model,
        "instructions": req.instructions,
        "tools": req.tools.clone().unwrap_or_default(),
        "tool_choice": req.tool_choice.clone().unwrap_or_else(|| json!("auto")),
        "parallel_tool_calls": extra("parallel_tool_calls", json!(true)),
        "temperature": req.params.temperature,
        "top_p": req.params.top_p,
        "max_output_tokens": req.max_output_tokens,
        "previous_response_id": req.previous_response_id,
        "text": {"format": text, "verbosity": verbosity},
        "truncation": "disabled",
        "store": req.store != Some(false),
        "metadata": extra("metadata", json!({})),
        "error": null,
    });
    match fields {
        Value::Object(m) => m,
        _ => Map::new(),
    }
}

/// A chat-route error in this API's terms: the field names it has for the same things.
fn own_param(mut e: ApiError) -> ApiError {
    if let Some(p) = &e.param {
        let renamed = if p.starts_with("response_format") {
            Some("text.format")
        } else if p == "max_tokens" {
            Some("max_output_tokens")
        } else if p.starts_with("messages") {
            Some("input")
        } else {
            None
        };
        if let Some(r) = renamed {
            e.param = Some(r.to_owned());
        }
    }
    e
}
