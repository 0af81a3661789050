//! ingot's HTTP front end: an OpenAI-compatible API (what `llamafactory-cli api` serves) and a
//! web chat page at `/`, on axum.
//!
//! [`app`] builds the router around a [`Backend`] (the engine's handle, or a stub in tests);
//! the binary binds and serves it. The data path of a request: body → [`openai`] request type
//! (shape errors are 422s) → `validate` (translation into the engine's request; its errors are
//! 400s naming the field) → the engine's validation and queueing on a request worker
//! ([`workers`]: rendering and tokenising stay off the async runtime; the engine's typed
//! errors become 400, 429, ... by one table) → events straight from the engine thread into
//! the request's channel ([`sink`]) → a JSON body or SSE chunks. Everything is checked before
//! a stream starts, so a bad streaming request gets a clean 4xx. Every failure goes through
//! [`error::ApiError`], as a response or as an SSE event.
//!
//! Routes: `GET /v1/models`, `GET /v1/models/{id}`, `POST /v1/chat/completions`,
//! `POST /v1/completions` (each also without the `/v1` prefix, as local servers accept),
//! `POST /tokenize` and `POST /detokenize` (llama.cpp's and vLLM's shapes, also under `/v1`),
//! `POST /v1/score/evaluation` (LLaMA Factory's reward route), `POST /apply-template` (the
//! prompt a chat request renders to, and its ids), `GET /health`,
//! `GET /metrics` (Prometheus text), `GET /` (the page), and what routers probe
//! ([`router_info`]: `/model_info`, `/server_info`, their `get_` forms, `/health_generate`).
//! Other APIs' shapes on the same path:
//! OpenAI's Responses ([`responses`]), Anthropic's Messages ([`anthropic`]) and llama.cpp's
//! native `/completion`, `/infill`, `/props`, `/slots` ([`llama_native`]). With API keys
//! configured, the API routes need `Authorization: Bearer KEY` (or `x-api-key: KEY`); the page,
//! health and metrics do not.
//!
//! Model names: one model is served, under its name and any aliases, and each LoRA adapter
//! the engine serves under its own name (`/v1/models` lists them all, adapters with their
//! `parent`). A request naming an adapter runs with it; one naming another model is answered
//! by the base model (LLaMA Factory's and llama.cpp's servers accept any name), or refused
//! with OpenAI's 404 under `strict_model_name`; a request without `model` gets the base one.

pub mod backend;
mod anthropic;
mod completions;
mod cors;
mod error;
mod llama_native;
mod logprobs;
mod http_limits;
pub mod media;
mod metrics;
pub mod openai;
mod reply;
mod router_info;
mod reply_stream;
mod responses;
mod request_limits;
pub mod sink;
mod tokenize;
mod workers;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::extract::{DefaultBodyLimit, FromRequest, MatchedPath, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use ingot_engine::GenParams;
use serde::de::DeserializeOwned;
use tokio_stream::StreamExt;

pub use backend::Backend;
pub use error::ApiError;
pub use http_limits::{serve, HttpLimits};
pub use media::{fetch_media, MediaPolicy, MediaSourceError};
pub use router_info::Deployment;
use metrics::Metrics;
use openai::{ModelCard, ModelList, ScoreRequest, ScoreResponse};
use workers::Workers;

/// The page served at `/`: one self-contained file.
const PAGE: &str = include_str!("page.html");

/// Every route, as the request metrics label them.
const ROUTES: [&str; 28] = [
    "/v1/models",
    "/v1/models/{id}",
    "/v1/chat/completions",
    "/v1/completions",
    "/models",
    "/chat/completions",
    "/completions",
    "/tokenize",
    "/detokenize",
    "/v1/tokenize",
    "/v1/detokenize",
    "/v1/score/evaluation",
    "/v1/responses",
    "/v1/responses/{id}",
    "/responses",
    "/responses/{id}",
    "/v1/messages",
    "/v1/messages/count_tokens",
    "/messages",
    "/messages/count_tokens",
    "/completion",
    "/infill",
    "/props",
    "/slots",
    "/apply-template",
    "/health",
    "/metrics",
    "/",
];

/// Settings of the HTTP layer (the engine has its own).
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// The model's name in `/v1/models` and in responses.
    pub model_name: String,
    /// Other names requests may use for it.
    pub aliases: Vec<String>,
    /// Refuse requests naming a model that is not served (OpenAI's 404) instead of
    /// answering them with the served one.
    pub strict_model_name: bool,
    /// Accepted API keys; empty means no authentication.
    pub api_keys: Vec<String>,
    /// Largest accepted request body, in bytes (larger ones get a 413), on every route.
    pub max_body_bytes: usize,
    /// Time a request's body may take to arrive, from the end of its head (then 408).
    pub body_read_timeout: Duration,
    /// Where `image_url` parts may point (see [`media`]): by default data URLs only.
    pub media: MediaPolicy,
    /// Threads that validate requests (render, tokenize, decode media); 0 = one per core.
    pub request_workers: usize,
    /// Web origins besides this machine's that may call the API from a browser (`*`: any);
    /// see [`cors`].
    pub cors_origins: Vec<String>,
    /// What routers probing `/server_info` and `/model_info` learn (see [`router_info`]).
    pub deployment: Deployment,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            model_name: "ingot".into(),
            aliases: Vec::new(),
            strict_model_name: false,
            api_keys: Vec::new(),
            max_body_bytes: 1 << 20,
            body_read_timeout: Duration::from_secs(60),
            media: MediaPolicy::default(),
            request_workers: 0,
            cors_origins: Vec::new(),
            deployment: Deployment::default(),
        }
    }
}

/// What every handler shares.
#[derive(Clone)]
struct AppState {
    engine: Arc<dyn Backend>,
    workers: Workers,
    cfg: Arc<ServerConfig>,
    metrics: Arc<Metrics>,
    /// Unix time the server started (the model card's `created`).
    started: u64,
}

/// The whole API and page around a running engine. Fails only when the request workers
/// cannot start.
pub fn app(engine: impl Backend, cfg: ServerConfig) -> std::io::Result<Router> {
    let threads = match cfg.request_workers {
        0 => std::thread::available_parallelism().map_or(2, |n| n.get()),
        n => n,
    };
    let state = AppState {
        engine: Arc::new(engine),
        workers: Workers::new(threads)?,
        cfg: Arc::new(cfg),
        metrics: Arc::new(Metrics::default()),
        started: unix_now(),
    };
    let v1 = Router::new()
        .route("/v1/models", get(models))
        .route("/v1/models/{id}", get(model))
        .route("/v1/chat/completions", post(completions::chat))
        .route("/v1/completions", post(completions::completions))
        .route("/models", get(models))
        .route("/chat/completions", post(completions::chat))
        .route("/completions", post(completions::completions))
        .route("/tokenize", post(tokenize::tokenize))
        .route("/detokenize", post(tokenize::detokenize))
        .route("/v1/tokenize", post(tokenize::tokenize))
        .route("/v1/detokenize", post(tokenize::detokenize))
        .route("/v1/score/evaluation", post(score))
        .route("/apply-template", post(apply_template))
        .merge(router_info::keyed_routes())
        .merge(responses::routes())
        .route("/completion", post(llama_native::completion))
        .route("/infill", post(llama_native::infill))
        .route("/props", get(llama_native::props))
        .route("/slots", get(llama_native::slots))
        .route_layer(middleware::from_fn_with_state(state.clone(), require_key));
    Ok(Router::new()
        .merge(v1)
        .merge(anthropic::routes(state.clone()))
        .route("/", get(|| async { Html(PAGE) }))
        .route("/health", get(|| async { Json(serde_json::json!({"status": "ok"})) }))
        .route("/metrics", get(metrics_text))
        .merge(router_info::open_routes())
        .fallback(|| async { ApiError::not_found("no such route") })
        .method_not_allowed_fallback(|| async { ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "method not allowed on this route") })
        .layer(middleware::from_fn_with_state(state.cfg.body_read_timeout, http_limits::body_deadline))
        .layer(DefaultBodyLimit::max(state.cfg.max_body_bytes))
        .layer(middleware::from_fn_with_state(state.clone(), count_requests))
        .layer(middleware::from_fn_with_state(state.clone(), cors::cors))
        .with_state(state))
}

fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// A unique id with OpenAI's prefix (`chatcmpl-…`, `call_…`).
fn new_id(prefix: &str) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
    format!("{prefix}{:08x}{n:06x}", nanos)
}

async fn require_key(State(s): State<AppState>, req: Request, next: Next) -> Response {
    match check_key(&s.cfg, req.headers()) {
        Ok(()) => next.run(req).await,
        Err(e) => e.into_response(),
    }
}

/// Whether a request carries an accepted API key (when any is configured), as
/// `Authorization: Bearer KEY` or as Anthropic's (and llama.cpp's) `x-api-key: KEY`.
fn check_key(cfg: &ServerConfig, headers: &axum::http::HeaderMap) -> Result<(), ApiError> {
    if cfg.api_keys.is_empty() {
        return Ok(());
    }
    let header = |name| headers.get(name).and_then(|v: &header::HeaderValue| v.to_str().ok());
    let given = header(header::AUTHORIZATION).and_then(|v| v.strip_prefix("Bearer ")).or_else(|| header(header::HeaderName::from_static("x-api-key")));
    match given {
        Some(k) if cfg.api_keys.iter().any(|key| key == k.trim()) => Ok(()),
        Some(_) => Err(ApiError::new(StatusCode::UNAUTHORIZED, "invalid API key").with_code("invalid_api_key")),
        None => Err(ApiError::new(StatusCode::UNAUTHORIZED, "missing API key: send the header `Authorization: Bearer KEY` (or `x-api-key: KEY`)")
            .with_code("invalid_api_key")),
    }
}

async fn count_requests(State(s): State<AppState>, req: Request, next: Next) -> Response {
    // Only known routes become label values: unmatched paths are unbounded.
    let matched = req.extensions().get::<MatchedPath>().map(MatchedPath::as_str);
    let route = ROUTES.iter().chain(&router_info::ROUTES).copied().find(|r| Some(*r) == matched).unwrap_or("other");
    let response = next.run(req).await;
    s.metrics.request(route, response.status().as_u16());
    response
}

/// A JSON body whose every failure has OpenAI's error shape: over the size limit 413,
/// not JSON 400, JSON of the wrong shape 422 naming the field's path.
struct JsonBody<T>(T);

impl<T: DeserializeOwned> FromRequest<AppState> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, ApiError> {
        let bytes = read_body(req, state.cfg.max_body_bytes).await?;
        let value: serde_json::Value = serde_json::from_slice(&bytes)
            .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, format!("the body is not valid JSON: {e}")))?;
        serde_path_to_error::deserialize(&value).map(JsonBody).map_err(|e| {
            let mut path = e.path().to_string();
            let mut message = e.inner().to_string();
            // serde's `flatten` hides the path of the flattened fields; reading them alone
            // finds it.
            if path == "." {
                if let Err(e) = serde_path_to_error::deserialize::<_, GenParams>(&value) {
                    (path, message) = (e.path().to_string(), e.inner().to_string());
                } else if let Err(e) = serde_path_to_error::deserialize::<_, openai::DeliveryFields>(&value) {
                    (path, message) = (e.path().to_string(), e.inner().to_string());
                }
            }
            let param = (path != ".").then(|| path.clone());
            ApiError::schema(param, format!("{path}: {message}"))
        })
    }
}

/// Bytes past the limit that are still read (and dropped) before answering 413: a client
/// that is still sending when the server closes the connection gets a reset instead of the
/// answer, so moderately oversized bodies are drained first (as web servers' "lingering
/// close" does); anything larger is cut off.
const DRAIN_BYTES: usize = 16 << 20;
/// How long draining may take.
const DRAIN_TIME: Duration = Duration::from_secs(10);

/// The whole body, or a 413 once it exceeds `limit` bytes.
async fn read_body(req: Request, limit: usize) -> Result<Vec<u8>, ApiError> {
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("the request body is larger than the server's limit of {limit} bytes (ingot api --max-body-bytes)"),
        )
    };
    let mut stream = req.into_body().into_data_stream();
    let mut body = Vec::new();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(http_limits::read_error)?;
        if body.len() + chunk.len() > limit {
            let mut drained = 0;
            let drain = async {
                while let Some(Ok(chunk)) = stream.next().await {
                    drained += chunk.len();
                    if drained > DRAIN_BYTES {
                        break;
                    }
                }
            };
            let _ = tokio::time::timeout(DRAIN_TIME, drain).await;
            return Err(too_large());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

impl AppState {
    /// The served model's name for a request naming `model` (see the module doc): an
    /// adapter's name, or the base model's; a name that is not served is a 404 only under
    /// `strict_model_name`.
    fn check_model(&self, model: Option<&str>) -> Result<String, ApiError> {
        let cfg = &self.cfg;
        let adapters = self.engine.adapters();
        match model {
            Some(m) if adapters.iter().any(|a| a == m) => Ok(m.to_string()),
            Some(m) if cfg.strict_model_name && m != cfg.model_name && !cfg.aliases.iter().any(|a| a == m) => {
                let served = std::iter::once(&cfg.model_name).chain(adapters).map(|n| format!("`{n}`")).collect::<Vec<_>>();
                Err(ApiError::not_found(format!("model `{m}` does not exist; this server serves {}", served.join(", ")))
                    .with_code("model_not_found"))
            }
            _ => Ok(cfg.model_name.clone()),
        }
    }

    /// The LoRA adapter a served name (from [`check_model`](Self::check_model)) runs with.
    fn adapter(&self, served: &str) -> Option<String> {
        self.engine.adapters().iter().find(|a| *a == served).cloned()
    }

    /// The card of served name `id`: the base model's, or an adapter's.
    fn card(&self, id: String) -> ModelCard {
        let parent = (id != self.cfg.model_name).then(|| self.cfg.model_name.clone());
        ModelCard { id, object: "model", created: self.started, owned_by: "ingot", max_model_len: self.engine.context_length(), parent }
    }
}

async fn models(State(s): State<AppState>) -> Json<ModelList> {
    let names = std::iter::once(s.cfg.model_name.clone()).chain(s.engine.adapters().iter().cloned());
    Json(ModelList { object: "list", data: names.map(|n| s.card(n)).collect() })
}

/// `GET /v1/models/{id}` (the SDK's `models.retrieve`), under the same naming rule.
async fn model(State(s): State<AppState>, axum::extract::Path(id): axum::extract::Path<String>) -> Result<Json<ModelCard>, ApiError> {
    let served = s.check_model(Some(&id))?;
    Ok(Json(s.card(served)))
}

async fn score(State(s): State<AppState>, JsonBody(req): JsonBody<ScoreRequest>) -> Result<Json<ScoreResponse>, ApiError> {
    let model = s.check_model(req.model.as_deref())?;
    req.check_sizes()?;
    if req.messages.is_empty() {
        return Err(ApiError::invalid("messages", "messages must hold at least one text"));
    }
    let (done, scores) = tokio::sync::oneshot::channel();
    let engine = s.engine.clone();
    let texts = req.messages;
    let max_length = req.max_length;
    s.workers
        .run(move || {
            let done = Box::new(move |scores| {
                // The client may have gone away; then nobody waits for the scores.
                let _ = done.send(scores);
            });
            engine.submit_scores(&texts, max_length, done)
        })
        .await??;
    let scores = scores.await.map_err(|_| ApiError::from(ingot_engine::EngineError::Stopped))??;
    Ok(Json(ScoreResponse { id: new_id("scoreval-"), object: "score.evaluation", model, scores }))
}

/// `POST /apply-template`: a chat completion request's prompt exactly as the model would see
/// it (`ingot template` over HTTP), and its token ids. Nothing is generated.
async fn apply_template(
    State(s): State<AppState>,
    JsonBody(req): JsonBody<openai::ChatCompletionRequest>,
) -> Result<Json<serde_json::Value>, ApiError> {
    s.check_model(req.model.as_deref())?;
    let valid = req.validate()?;
    let mut chat = valid.chat;
    chat.media = completions::fetch_all_media(&s, &valid.media).await?;
    let engine = s.engine.clone();
    let (prompt, ids) = s.workers.run(move || engine.apply_template(chat)).await??;
    Ok(Json(serde_json::json!({"prompt": prompt, "prompt_ids": ids, "prompt_tokens": ids.len()})))
}

async fn metrics_text(State(s): State<AppState>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], s.metrics.render(s.engine.queue_depth(), &s.engine.queue_stats()))
}
