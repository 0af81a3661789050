//! The routes production routers probe on a worker, so `ingot api` replicas can sit behind
//! `sglang-router` (SGLang's model gateway) and similar routers unchanged.
//!
//! When a worker registers, sglang-router reads `GET /server_info` (`model_path`,
//! `served_model_name`, batch limits) and `GET /model_info` (`model_path`, `tokenizer_path`,
//! `is_generation`, `model_type`), falling back to SGLang's older `/get_server_info` and
//! `/get_model_info`; the served model name it lists in its own `/v1/models` and uses to pick
//! a routing policy comes from there (without them it registers the worker as `unknown`).
//! Both names answer with the same bodies here. Its periodic health check is `GET /health`
//! (served in `lib.rs`); `GET /health_generate` is SGLang's deeper check, which a router can
//! be pointed at (`--health-check-endpoint /health_generate`): it generates one token, so it
//! fails when the engine has stopped even though the HTTP side still answers.
//!
//! The routers also write their engines' own request fields into every request they forward,
//! at their defaults (sglang-router SGLang's, vllm-router those and vLLM's
//! `include_reasoning`); [`asks_nothing_of_routers`] lets those through the unknown-field check.
//!
//! Invariant: the bodies only describe what is served (no engine state changes), and the
//! info routes sit behind the API key like the other API routes, since they name a path on
//! the server's disk.

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use ingot_engine::{Event, GenParams, Prompt, PromptRequest};
use serde_json::{json, Value};

use crate::{sink, ApiError, AppState};

/// The routes below, as the request metrics label them.
pub(crate) const ROUTES: [&str; 5] = ["/model_info", "/get_model_info", "/server_info", "/get_server_info", "/health_generate"];

/// What a router learns about a replica's deployment besides the model's name.
#[derive(Debug, Clone, Default)]
pub struct Deployment {
    /// The model file or checkpoint directory served, as given (routers load a tokenizer
    /// from it when it is a checkpoint directory on their machine); empty when unknown.
    pub model_path: String,
    /// The model's architecture name (`qwen2`, `llama`, ...), when known.
    pub model_type: Option<String>,
    /// Sequences decoded together (`--max-seqs`).
    pub max_running_requests: usize,
}

/// Whether `key: value` is one of SGLang's or vLLM's request extensions at a value that asks
/// for what ingot does anyway. sglang-router and vllm-router re-serialize every request they
/// forward with these fields filled in (`no_stop_trim: false`, `separate_reasoning: true`,
/// vLLM's `include_reasoning: true`: the reasoning comes back apart, as ingot returns it), so
/// they must pass `openai::check_extra`; any other value of them is still refused.
pub(crate) fn asks_nothing_of_routers(key: &str, value: &Value) -> bool {
    matches!(
        (key, value),
        ("no_stop_trim" | "continue_final_message" | "return_hidden_states", Value::Bool(false))
            | ("separate_reasoning" | "stream_reasoning" | "include_reasoning", Value::Bool(true))
    )
}

/// The model and server info routes, which need the API key when one is configured.
pub(crate) fn keyed_routes() -> Router<AppState> {
    Router::new()
        .route("/model_info", get(model_info))
        .route("/get_model_info", get(model_info))
        .route("/server_info", get(server_info))
        .route("/get_server_info", get(server_info))
}

/// The health route that needs no key, as `/health` does.
pub(crate) fn open_routes() -> Router<AppState> {
    Router::new().route("/health_generate", get(health_generate))
}

/// An empty string as JSON null: routers treat a missing path as unknown, an empty one as
/// a path.
fn path_or_null(path: &str) -> Value {
    if path.is_empty() {
        Value::Null
    } else {
        Value::String(path.to_owned())
    }
}

async fn model_info(State(s): State<AppState>) -> Json<Value> {
    let d = &s.cfg.deployment;
    Json(json!({
        "model_path": path_or_null(&d.model_path),
        "tokenizer_path": path_or_null(&d.model_path),
        "is_generation": true,
        "model_type": d.model_type,
        "served_model_name": s.cfg.model_name,
        "has_image_understanding": s.engine.takes_images(),
    }))
}

async fn server_info(State(s): State<AppState>) -> Json<Value> {
    let d = &s.cfg.deployment;
    Json(json!({
        "model_path": path_or_null(&d.model_path),
        "tokenizer_path": path_or_null(&d.model_path),
        "served_model_name": s.cfg.model_name,
        "context_length": s.engine.context_length(),
        "max_running_requests": d.max_running_requests,
        "dp_size": 1,
        "tp_size": 1,
        "version": env!("CARGO_PKG_VERSION"),
        "engine": "ingot",
    }))
}

/// Generates one token from a one-token prompt: 200 once it is out, else the engine's error.
async fn health_generate(State(s): State<AppState>) -> Result<Json<Value>, ApiError> {
    let (mut sinks, mut events) = sink::channel(&s.metrics);
    let engine = s.engine.clone();
    s.workers
        .run(move || {
            // Any single token the vocabulary has will do: the model's BOS where it has one,
            // else the first token of a short text.
            let ids = engine.tokenize("ok", true)?;
            let prompt = Prompt::Ids(ids.into_iter().take(1).collect());
            let params = GenParams { max_new_tokens: Some(1), temperature: Some(0.0), ..GenParams::default() };
            engine.submit_prompt(PromptRequest { prompt, params }, &mut sinks)
        })
        .await??;
    while let Some((_, event)) = events.recv().await {
        match event {
            Event::Text(_) | Event::Logprobs(_) => {}
            Event::Done(_) => return Ok(Json(json!({"status": "ok"}))),
            Event::Error(e) => return Err(e.into()),
        }
    }
    Err(ingot_engine::EngineError::Stopped.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn router_fields_pass_only_at_the_values_ingot_honours() {
        assert!(asks_nothing_of_routers("no_stop_trim", &json!(false)));
        assert!(asks_nothing_of_routers("separate_reasoning", &json!(true)));
        assert!(!asks_nothing_of_routers("no_stop_trim", &json!(true)));
        assert!(!asks_nothing_of_routers("return_hidden_states", &json!(true)));
        assert!(!asks_nothing_of_routers("stream_reasoning", &json!(false)));
        assert!(!asks_nothing_of_routers("lora_path", &json!(false)));
        assert!(asks_nothing_of_routers("include_reasoning", &json!(true)));
        assert!(!asks_nothing_of_routers("include_reasoning", &json!(false)));
    }
}
