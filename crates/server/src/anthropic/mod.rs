//! Anthropic's Messages API: `POST /v1/messages` and `POST /v1/messages/count_tokens` (also
//! without `/v1`), what Claude-Code-style clients speak.
//!
//! A request is translated into the chat completion request the chat route validates
//! ([`request`]) and queued on the same path (validation, error table, body limit, metrics);
//! only the shapes differ ([`output`]). Every failure, the body's own included, is answered in
//! Anthropic's error shape, `{"type": "error", "error": {"type", "message"}}` (the message
//! names the field), with the status the shared table gives. With API keys configured the
//! key may come as Anthropic's `x-api-key` header or as `Authorization: Bearer`.

mod output;
mod request;

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde_json::{json, Value};

use crate::completions::{queue_chat, sse};
use crate::openai::ValidChat;
use crate::{check_key, new_id, ApiError, AppState, JsonBody};
use output::Reply;
pub use request::{CountRequest, MessagesRequest};

/// The Messages routes, behind the API key (either header) when one is configured.
pub(crate) fn routes(state: AppState) -> Router<AppState> {
    Router::new()
        .route("/v1/messages", post(messages))
        .route("/messages", post(messages))
        .route("/v1/messages/count_tokens", post(count_tokens))
        .route("/messages/count_tokens", post(count_tokens))
        .route_layer(middleware::from_fn_with_state(state, require_key))
}

/// An [`ApiError`] in Anthropic's shape.
#[derive(Debug)]
pub(crate) struct AnthropicError(pub ApiError);

impl From<ApiError> for AnthropicError {
    fn from(e: ApiError) -> Self {
        Self(e)
    }
}

impl AnthropicError {
    pub(crate) fn body(&self) -> Value {
        let e = &self.0;
        let kind = match e.status {
            StatusCode::UNAUTHORIZED => "authentication_error",
            StatusCode::FORBIDDEN => "permission_error",
            StatusCode::NOT_FOUND => "not_found_error",
            StatusCode::PAYLOAD_TOO_LARGE => "request_too_large",
            StatusCode::TOO_MANY_REQUESTS => "rate_limit_error",
            StatusCode::SERVICE_UNAVAILABLE => "overloaded_error",
            s if s.is_server_error() => "api_error",
            _ => "invalid_request_error",
        };
        let message = match &e.param {
            Some(p) => format!("{p}: {}", e.message),
            None => e.message.clone(),
        };
        json!({"type": "error", "error": {"type": kind, "message": message}})
    }
}

impl IntoResponse for AnthropicError {
    fn into_response(self) -> Response {
        let mut response = (self.0.status, Json(self.body())).into_response();
        // Overload answers say when to come back, whatever the error's shape.
        if let Some(secs) = self.0.retry_after {
            response.headers_mut().insert(axum::http::header::RETRY_AFTER, secs.into());
        }
        response
    }
}

async fn require_key(State(s): State<AppState>, req: Request, next: Next) -> Response {
    match check_key(&s.cfg, req.headers()) {
        Ok(()) => next.run(req).await,
        Err(e) => AnthropicError(e).into_response(),
    }
}

/// A validated chat request from a Messages body, images named in this API's terms.
fn validate(chat: request::Translated) -> Result<ValidChat, ApiError> {
    let mut valid = chat.chat.validate()?;
    for (image, field) in valid.media.iter_mut().zip(chat.image_fields) {
        image.field = field;
    }
    if valid.chat.params.num_return_sequences.is_some_and(|n| n != 1) {
        return Err(ApiError::invalid("n", "a message has one reply: n must be 1"));
    }
    Ok(valid)
}

async fn messages(State(s): State<AppState>, body: Result<JsonBody<MessagesRequest>, ApiError>) -> Result<Response, AnthropicError> {
    let JsonBody(req) = body?;
    let model = s.check_model(req.model.as_deref())?;
    let mut valid = validate(req.into_chat()?)?;
    valid.chat.params.adapter = s.adapter(&model);
    let stream = valid.delivery.stream;
    let (submission, format) = queue_chat(&s, valid).await?;
    let reply = Reply { id: new_id("msg_"), model };
    Ok(if stream { sse(reply.stream(submission.started().await?, format)) } else { Json(reply.complete(submission, &format).await?).into_response() })
}

/// The prompt's length in tokens, as the model would see it (its images included).
async fn count_tokens(State(s): State<AppState>, body: Result<JsonBody<CountRequest>, ApiError>) -> Result<Json<Value>, AnthropicError> {
    let JsonBody(req) = body?;
    s.check_model(req.model.as_deref())?;
    let valid = validate(req.into_chat(ingot_engine::GenParams::default())?)?;
    let mut chat = valid.chat;
    chat.media = crate::completions::fetch_all_media(&s, &valid.media).await?;
    let engine = s.engine.clone();
    let (_, ids) = s.workers.run(move || engine.apply_template(chat)).await?.map_err(ApiError::from)?;
    Ok(Json(json!({"input_tokens": ids.len()})))
}
