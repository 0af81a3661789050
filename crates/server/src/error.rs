//! The one mapping from every failure to HTTP: a status and OpenAI's error body
//! `{"error": {"message", "type", "param", "code"}}`.
//!
//! The same [`ApiError`] is a plain response before a stream starts and an SSE `data:` event
//! once it has (see [`ApiError::sse_event`]), so a client sees one error shape either way.
//! Statuses: 400 invalid values (naming the field), 401 missing or wrong key, 404 unknown
//! route or model, 413 body over the limit, 422 schema errors (wrong types, unknown fields'
//! values), 429 queue full, 503 engine stopped or the expected queue wait over
//! `--max-queue-wait` (with `Retry-After`: the server as a whole is busy, not this client over
//! a quota, which is what 429 says; OpenAI's SDKs retry both and honour the header); media sources ([`MediaSourceError`]) add 403
//! refused by the server's media policy, 502 the remote server failed and 504 timeout.
//! Engine errors map by their type in one table (`From<EngineError>`), which also renames
//! the engine's field names to OpenAI's for `param`.

use axum::http::StatusCode;
use axum::response::sse::Event as SseEvent;
use axum::response::{IntoResponse, Response};
use axum::Json;
use ingot_engine::EngineError;
use serde::Serialize;

use crate::media::MediaSourceError;

#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
    /// The offending request field, in the request's own terms (`messages[1].role`).
    pub param: Option<String>,
    pub code: Option<&'static str>,
    /// Seconds a client should wait before retrying (the `Retry-After` header), on overload.
    pub retry_after: Option<u64>,
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: ErrorDetail<'a>,
}

#[derive(Serialize)]
struct ErrorDetail<'a> {
    message: &'a str,
    #[serde(rename = "type")]
    kind: &'static str,
    param: Option<&'a str>,
    code: Option<&'static str>,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self { status, message: message.into(), param: None, code: None, retry_after: None }
    }

    /// 400: a value out of range or inconsistent with the rest of the request.
    pub fn invalid(param: impl Into<String>, message: impl Into<String>) -> Self {
        Self { param: Some(param.into()), ..Self::new(StatusCode::BAD_REQUEST, message) }
    }

    /// 422: the body is JSON but not of the request's shape.
    pub fn schema(param: Option<String>, message: impl Into<String>) -> Self {
        Self { param, ..Self::new(StatusCode::UNPROCESSABLE_ENTITY, message) }
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, message)
    }

    pub fn with_code(mut self, code: &'static str) -> Self {
        self.code = Some(code);
        self
    }

    /// OpenAI's error `type` for the status.
    fn kind(&self) -> &'static str {
        match self.status {
            StatusCode::UNAUTHORIZED => "authentication_error",
            StatusCode::NOT_FOUND => "not_found_error",
            StatusCode::TOO_MANY_REQUESTS => "rate_limit_error",
            s if s.is_server_error() => "server_error",
            _ => "invalid_request_error",
        }
    }

    /// The error body as JSON text.
    pub fn body(&self) -> String {
        let body = ErrorBody {
            error: ErrorDetail {
                message: &self.message,
                kind: self.kind(),
                param: self.param.as_deref(),
                code: self.code,
            },
        };
        serde_json::to_string(&body).unwrap_or_else(|_| String::from(r#"{"error":{"message":"error"}}"#))
    }

    /// The error as the last event of a stream that has already started.
    pub fn sse_event(&self) -> SseEvent {
        SseEvent::default().data(self.body())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body: serde_json::Value =
            serde_json::from_str(&self.body()).unwrap_or(serde_json::Value::Null);
        let mut response = (self.status, Json(body)).into_response();
        if let Some(secs) = self.retry_after {
            response.headers_mut().insert(axum::http::header::RETRY_AFTER, secs.into());
        }
        response
    }
}

impl ApiError {
    /// A media source's failure, for the request field that named it
    /// (`messages[0].content[1].image_url.url`).
    pub fn media(param: impl Into<String>, e: MediaSourceError) -> Self {
        Self { param: Some(param.into()), ..Self::from(e) }
    }
}

impl From<MediaSourceError> for ApiError {
    fn from(e: MediaSourceError) -> Self {
        let code = match &e {
            MediaSourceError::Forbidden(_) => Some("media_source_forbidden"),
            _ => None,
        };
        Self { code, ..Self::new(e.status(), e.message()) }
    }
}

/// The engine's field names (LLaMA Factory's) where OpenAI's request calls the field
/// otherwise, and paths the API reports by their parent.
const PARAM_NAMES: [(&str, &str); 4] = [
    ("num_return_sequences", "n"),
    ("max_new_tokens", "max_tokens"),
    ("response_format.json_schema.schema", "response_format.json_schema"),
    ("response_format.json_schema.name", "response_format.json_schema"),
];

/// The request field an engine error names, in the API's terms.
fn param(field: &str) -> String {
    PARAM_NAMES.iter().find(|(engine, _)| *engine == field).map_or(field, |(_, api)| api).to_owned()
}

/// The one table from engine errors to HTTP: status, `param`, `code`.
impl From<EngineError> for ApiError {
    fn from(e: EngineError) -> Self {
        use ingot_core::media::MediaError;
        let status = match &e {
            EngineError::Media { source: MediaError::TooManyBytes { .. }, .. } => StatusCode::PAYLOAD_TOO_LARGE,
            EngineError::Overloaded { .. } => StatusCode::TOO_MANY_REQUESTS,
            EngineError::Stopped | EngineError::QueueWait { .. } | EngineError::QueueExpired { .. } => StatusCode::SERVICE_UNAVAILABLE,
            e if e.is_request_error() => StatusCode::BAD_REQUEST,
            EngineError::RewardModel | EngineError::NoValueHead | EngineError::NoTemplate => StatusCode::BAD_REQUEST,
            EngineError::Remote { .. } => StatusCode::BAD_GATEWAY,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        let code = match &e {
            EngineError::Overloaded { .. } => Some("server_overloaded"),
            EngineError::QueueWait { .. } | EngineError::QueueExpired { .. } => Some("server_busy"),
            EngineError::Media { .. } => Some("invalid_media"),
            _ => None,
        };
        let retry_after = match &e {
            EngineError::QueueWait { expected, .. } => Some(ingot_engine::retry_after_secs(*expected)),
            EngineError::QueueExpired { limit, .. } => Some(ingot_engine::retry_after_secs(*limit)),
            _ => None,
        };
        Self { param: e.field().map(param), code, retry_after, ..Self::new(status, e.to_string()) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_has_openai_shape() {
        let e = ApiError::invalid("temperature", "temperature must be >= 0, got -1");
        let v: serde_json::Value = serde_json::from_str(&e.body()).expect("json");
        assert_eq!(v["error"]["type"], "invalid_request_error");
        assert_eq!(v["error"]["param"], "temperature");
        assert_eq!(v["error"]["code"], serde_json::Value::Null);
        assert!(v["error"]["message"].as_str().is_some_and(|m| m.contains("-1")));
    }

    #[test]
    fn engine_errors_map_to_statuses() {
        let e = ApiError::from(EngineError::invalid("num_return_sequences", "n must be between 1 and 16, got 0"));
        assert_eq!((e.status, e.param.as_deref()), (StatusCode::BAD_REQUEST, Some("n")));
        let e = ApiError::from(EngineError::invalid("temperature", "temperature must be finite and >= 0, got -1"));
        assert_eq!(e.param.as_deref(), Some("temperature"));
        assert_eq!(e.message, "temperature must be finite and >= 0, got -1");
        let e = ApiError::from(EngineError::invalid("max_new_tokens", "too many"));
        assert_eq!(e.param.as_deref(), Some("max_tokens"));
        assert_eq!(ApiError::from(EngineError::Stopped).status, StatusCode::SERVICE_UNAVAILABLE);
        let e = ApiError::from(EngineError::Overloaded { queued: 3, limit: 3 });
        assert_eq!((e.status, e.param), (StatusCode::TOO_MANY_REQUESTS, None));
        assert_eq!(ApiError::from(EngineError::RewardModel).status, StatusCode::BAD_REQUEST);
        let e = ApiError::from(EngineError::Remote { url: "http://a:1".into(), message: "refused".into() });
        assert_eq!(e.status, StatusCode::BAD_GATEWAY);
        assert_eq!(e.message, "--remote http://a:1: refused");
        let wait = EngineError::QueueWait { expected: std::time::Duration::from_millis(2500), limit: std::time::Duration::from_secs(1) };
        let e = ApiError::from(wait);
        assert_eq!((e.status, e.retry_after, e.code), (StatusCode::SERVICE_UNAVAILABLE, Some(3), Some("server_busy")));
        assert!(e.message.contains("2.5 s") && e.message.contains("--max-queue-wait"), "{}", e.message);
        let response = e.into_response();
        assert_eq!(response.headers()[axum::http::header::RETRY_AFTER], "3");
        let e = ApiError::new(StatusCode::UNAUTHORIZED, "no key");
        assert!(e.body().contains("authentication_error"));
    }

    #[test]
    fn media_errors_keep_their_status_and_name_the_part() {
        let e = ApiError::media("messages[0].content[1].image_url.url", MediaSourceError::Forbidden("local media paths are disabled".into()));
        assert_eq!((e.status, e.param.as_deref()), (StatusCode::FORBIDDEN, Some("messages[0].content[1].image_url.url")));
        assert_eq!(e.message, "local media paths are disabled");
        let e = ApiError::from(MediaSourceError::Timeout("slow".into()));
        assert_eq!(e.status, StatusCode::GATEWAY_TIMEOUT);
        assert!(e.body().contains("server_error"));
        assert_eq!(ApiError::from(MediaSourceError::TooLarge("big".into())).status, StatusCode::PAYLOAD_TOO_LARGE);
    }
}
