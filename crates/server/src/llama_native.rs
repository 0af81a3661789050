//! llama.cpp's native server routes, for the scripts and UIs written against them:
//! `POST /completion`, `POST /infill`, `GET /props` and `GET /slots`.
//!
//! `/completion` is a raw-prompt completion in llama.cpp's shapes: `prompt` (text or token ids),
//! `n_predict` (-1 or absent: the server's default), `stream` (SSE `data:` lines, one per text
//! piece, the last with `stop: true` and the totals; no `[DONE]`), llama.cpp's sampling names
//! (`repeat_penalty`, `seed: -1` for a random seed) beside the engine's own, `json_schema`;
//! `cache_prompt`, `id_slot` and `n_keep` are accepted and ignored (prefix caching is automatic,
//! slots are the engine's). Everything else goes through `/v1/completions`' validation, so an
//! unknown field is a 400 naming it. The answer has `content`, `tokens_predicted`,
//! `tokens_evaluated`, `tokens_cached`, `stop_type` (`eos`, `limit`, or `word` with the
//! request's stop string that ended the reply in `stopping_word`) and `timings` from the
//! engine's usage (`prompt_ms` the prompt's forward pass, `predicted_ms` the decoding after
//! the first token).
//!
//! `/infill` fills the gap between `input_prefix` and `input_suffix` with the model's
//! fill-in-the-middle tokens (Qwen2.5-Coder's `<|fim_prefix|>`, `<|fim_suffix|>`,
//! `<|fim_middle|>`, `<|file_sep|>` before each `input_extra` file; StarCoder's spelling too),
//! `prompt` after the middle marker, and `/completion`'s fields and answer.
//!
//! `/props` reports what the server knows honestly (the context size, the served name, the
//! modalities); `/slots` is a 501, as the engine's batch has no per-slot view to report.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::sse::Event as SseEvent;
use axum::response::{IntoResponse, Response};
use axum::Json;
use ingot_engine::{Event, FinishReason, GenParams, PromptRequest};
use serde::Deserialize;
use serde_json::{json, Map, Value};
use tokio::sync::mpsc;

use crate::completions::{collect, next_event, queue_prompt, sse, Submission};
use crate::openai::{CompletionRequest, DeliveryFields, Prompt};
use crate::{ApiError, AppState, Backend, JsonBody};

#[derive(Debug, Clone, Deserialize)]
pub struct NativeCompletion {
    /// Required by `/completion`; `/infill` puts it after the middle marker.
    pub prompt: Option<Prompt>,
    pub n_predict: Option<i64>,
    #[serde(default)]
    pub stream: bool,
    /// -1: a random seed.
    pub seed: Option<i64>,
    pub repeat_penalty: Option<f32>,
    /// A JSON schema the reply must follow.
    pub json_schema: Option<Value>,
    #[serde(flatten)]
    pub params: GenParams,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// The prompt completion request this asks for.
fn translate(req: NativeCompletion) -> Result<CompletionRequest, ApiError> {
    let mut params = req.params;
    params.max_new_tokens = match req.n_predict {
        None | Some(-1) => params.max_new_tokens,
        Some(n) => Some(usize::try_from(n).map_err(|_| ApiError::invalid("n_predict", format!("n_predict must be -1 or >= 0, got {n}")))?),
    };
    params.seed = match req.seed {
        None | Some(-1) => params.seed,
        Some(s) => Some(u64::try_from(s).map_err(|_| ApiError::invalid("seed", format!("seed must be -1 or >= 0, got {s}")))?),
    };
    if let Some(p) = req.repeat_penalty {
        params.repetition_penalty = Some(p);
    }
    if let Some(schema) = req.json_schema {
        let format = json!({"type": "json_schema", "json_schema": {"name": "json_schema", "schema": schema}});
        params.response_format = Some(serde_json::from_value(format).map_err(|e| ApiError::invalid("json_schema", e.to_string()))?);
    }
    let mut extra = req.extra;
    for key in ["cache_prompt", "id_slot", "slot_id", "n_keep"] {
        extra.remove(key);
    }
    let delivery = DeliveryFields { stream: req.stream, stream_options: None, max_completion_tokens: None };
    let prompt = req.prompt.ok_or_else(|| ApiError::invalid("prompt", "a prompt (text or token ids) is required"))?;
    Ok(CompletionRequest { model: None, prompt, delivery, params, extra })
}

pub async fn completion(State(s): State<AppState>, JsonBody(req): JsonBody<NativeCompletion>) -> Result<Response, ApiError> {
    answer(s, translate(req)?).await
}

/// `/infill`'s body: the code around the gap, other files, and `/completion`'s fields.
#[derive(Debug, Clone, Deserialize)]
pub struct InfillRequest {
    #[serde(default)]
    pub input_prefix: String,
    #[serde(default)]
    pub input_suffix: String,
    /// Other files for context: `{"filename", "text"}`.
    #[serde(default)]
    pub input_extra: Vec<ExtraChunk>,
    #[serde(flatten)]
    pub completion: NativeCompletion,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExtraChunk {
    #[serde(default)]
    pub filename: String,
    pub text: String,
}

/// Fill-in-the-middle markers of the model families that have them: prefix, suffix, middle,
/// file separator (Qwen2.5-Coder's, then StarCoder's spelling).
const FIM_MARKERS: [[&str; 4]; 2] = [
    ["<|fim_prefix|>", "<|fim_suffix|>", "<|fim_middle|>", "<|file_sep|>"],
    ["<fim_prefix>", "<fim_suffix>", "<fim_middle>", "<file_sep>"],
];

/// `POST /infill`: the gap between `input_prefix` and `input_suffix` filled, with the model's
/// fill-in-the-middle tokens (`{file_sep}{filename}\n{text}` per extra file, then
/// `{prefix}…{suffix}…{middle}` and `prompt`); a model without them is a 400 naming them.
/// (The parts are tokenized as a prompt is, so marker text inside them is read as a marker.)
pub async fn infill(State(s): State<AppState>, JsonBody(req): JsonBody<InfillRequest>) -> Result<Response, ApiError> {
    let InfillRequest { input_prefix, input_suffix, input_extra, mut completion } = req;
    let tail = match completion.prompt.take() {
        None => String::new(),
        Some(Prompt::Text(t)) => t,
        Some(_) => return Err(ApiError::invalid("prompt", "/infill takes `prompt` as text (it follows the middle marker)")),
    };
    let engine = s.engine.clone();
    let need_sep = !input_extra.is_empty();
    let markers = s.workers.run(move || fim_markers(&*engine, need_sep)).await?.ok_or_else(|| {
        let names = FIM_MARKERS.map(|m| m[..3].join(", ")).join("; or ");
        let sep = if need_sep { " (and a file separator for input_extra)" } else { "" };
        ApiError::new(StatusCode::BAD_REQUEST, format!("this model has no fill-in-the-middle tokens{sep}: /infill needs {names}"))
    })?;
    let mut text = String::new();
    for c in &input_extra {
        text.push_str(&format!("{}{}\n{}", markers[3], c.filename, c.text));
    }
    text.push_str(&format!("{}{input_prefix}{}{input_suffix}{}{tail}", markers[0], markers[1], markers[2]));
    completion.prompt = Some(Prompt::Text(text));
    answer(s, translate(completion)?).await
}

/// The model's fill-in-the-middle markers: each a single token of the vocabulary.
fn fim_markers(engine: &dyn Backend, need_sep: bool) -> Option<[&'static str; 4]> {
    let has = |marker: &str| engine.tokenize(marker, false).is_ok_and(|ids| ids.len() == 1 && engine.piece(ids[0]) == marker.as_bytes());
    FIM_MARKERS.into_iter().find(|m| m[..3].iter().all(|t| has(t)) && (!need_sep || has(m[3])))
}

async fn answer(s: AppState, req: CompletionRequest) -> Result<Response, ApiError> {
    let model = s.cfg.model_name.clone();
    let valid = req.validate()?;
    let n = valid.params.num_return_sequences.unwrap_or(1);
    if n != 1 {
        return Err(ApiError::invalid("n", "one completion per request: n must be 1"));
    }
    let submission = queue_prompt(&s, PromptRequest { prompt: valid.prompt, params: valid.params }).await?;
    if valid.delivery.stream {
        return Ok(sse(stream(submission.started().await?, model)));
    }
    let prompt_tokens = submission.prompt_tokens;
    let mut f = collect(submission).await?;
    Ok(Json(last(f.texts.remove(0), &f.usages[0], prompt_tokens, &model)).into_response())
}

/// The final answer (or last stream line): the content and the totals.
fn last(content: String, u: &ingot_engine::Usage, prompt_tokens: usize, model: &str) -> Value {
    let stop_type = match u.finish_reason {
        FinishReason::Length => "limit",
        FinishReason::Stop if u.stop_string.is_some() => "word",
        FinishReason::Stop => "eos",
        FinishReason::Cancelled => "none",
    };
    let stopping_word = u.stop_string.as_deref().unwrap_or_default();
    let (prompt_n, predicted_n) = (prompt_tokens - u.cached_tokens.min(prompt_tokens), u.completion_tokens);
    let (prompt_ms, predicted_ms) = (u.prefill_seconds * 1000.0, u.decode_seconds * 1000.0);
    let per = |ms: f64, n: usize| if n == 0 { (0.0, 0.0) } else { (ms / n as f64, n as f64 * 1000.0 / ms.max(f64::MIN_POSITIVE)) };
    let ((prompt_per_token_ms, prompt_per_second), (predicted_per_token_ms, predicted_per_second)) =
        (per(prompt_ms, prompt_n), per(predicted_ms, predicted_n.saturating_sub(1)));
    json!({"content": content, "stop": true, "model": model, "id_slot": 0,
        "tokens_predicted": predicted_n, "tokens_evaluated": prompt_tokens, "tokens_cached": u.cached_tokens,
        "stop_type": stop_type, "stopping_word": stopping_word, "truncated": false,
        "timings": {"cache_n": u.cached_tokens, "prompt_n": prompt_n, "prompt_ms": prompt_ms,
            "prompt_per_token_ms": prompt_per_token_ms, "prompt_per_second": prompt_per_second,
            "predicted_n": predicted_n, "predicted_ms": predicted_ms,
            "predicted_per_token_ms": predicted_per_token_ms, "predicted_per_second": predicted_per_second}})
}

fn stream(submission: Submission, model: String) -> mpsc::Receiver<SseEvent> {
    let (tx, rx) = mpsc::channel(64);
    tokio::spawn(async move {
        let Submission { prompt_tokens, mut events, .. } = submission;
        while let Some((_, event)) = next_event(&mut events, &tx).await {
            let line = match event {
                Event::Text(t) => json!({"content": t, "stop": false, "id_slot": 0}),
                // Not asked for by this route.
                Event::Logprobs(_) => continue,
                Event::Done(u) => {
                    let _ = tx.send(SseEvent::default().data(last(String::new(), &u, prompt_tokens, &model).to_string())).await;
                    return;
                }
                Event::Error(e) => {
                    let _ = tx.send(ApiError::from(e).sse_event()).await;
                    return;
                }
            };
            if tx.send(SseEvent::default().data(line.to_string())).await.is_err() {
                return;
            }
        }
        if !tx.is_closed() {
            let _ = tx.send(ApiError::from(ingot_engine::EngineError::Stopped).sse_event()).await;
        }
    });
    rx
}

/// `GET /props`: the server's settings, as far as it knows them.
pub async fn props(State(s): State<AppState>) -> Json<Value> {
    Json(json!({
        "default_generation_settings": {"n_ctx": s.engine.context_length()},
        "model_alias": s.cfg.model_name,
        "modalities": {"vision": s.engine.takes_images(), "audio": false},
        "build_info": concat!("ingot ", env!("CARGO_PKG_VERSION")),
    }))
}

/// `GET /slots`: not available.
pub async fn slots() -> ApiError {
    ApiError::new(StatusCode::NOT_IMPLEMENTED, "/slots is not available: the engine batches sequences without llama.cpp's fixed slots (see /metrics for running and queued sequences)")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn native(body: Value) -> Result<CompletionRequest, ApiError> {
        translate(serde_json::from_value(body).expect("shape"))
    }

    #[test]
    fn llama_cpp_fields_become_engine_params() {
        let r = native(json!({"prompt": "x", "n_predict": 7, "seed": 3, "repeat_penalty": 1.1, "top_k": 5, "min_p": 0.1,
            "cache_prompt": true, "id_slot": -1, "stop": ["\n"], "ignore_eos": true, "json_schema": {"type": "object"}}))
        .map_err(|e| e.message)
        .expect("valid");
        let v = r.validate().map_err(|e| e.message).expect("valid completion");
        let p = &v.params;
        assert_eq!((p.max_new_tokens, p.seed, p.repetition_penalty, p.top_k), (Some(7), Some(3), Some(1.1), Some(5)));
        assert_eq!((p.stop.as_slice(), p.ignore_eos), (["\n".to_owned()].as_slice(), Some(true)));
        assert!(p.response_format.is_some());
        let v = native(json!({"prompt": [1, 2, 3], "n_predict": -1, "seed": -1})).expect("valid").validate().map_err(|e| e.message).expect("valid");
        assert_eq!((v.params.max_new_tokens, v.params.seed), (None, None));
    }

    #[test]
    fn bad_values_and_unknown_fields_name_the_field() {
        for (body, param) in [
            (json!({"prompt": "x", "n_predict": -2}), "n_predict"),
            (json!({"prompt": "x", "seed": -5}), "seed"),
        ] {
            assert_eq!(native(body).err().and_then(|e| e.param).as_deref(), Some(param));
        }
        let e = native(json!({"prompt": "x", "mirostat": 2})).expect("translates").validate().err().expect("refused");
        assert_eq!(e.param.as_deref(), Some("mirostat"));
    }
}
