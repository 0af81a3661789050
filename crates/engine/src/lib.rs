//! The engine: one thread owns the model weights and every KV cache; front ends hold a
//! cloneable [`EngineHandle`] and talk to it through channels.
//!
//! The handle speaks LLaMA Factory's `ChatModel` API ([`EngineHandle::chat`],
//! [`EngineHandle::stream_chat`], [`EngineHandle::get_scores`]); template rendering,
//! tokenisation and validation happen in the caller's thread (see `chat`), so the engine thread
//! only ever sees token ids. It streams [`Event`]s back: text deltas that never split a UTF-8
//! character, then exactly one `Done` (or `Error`).
//!
//! The engine thread batches every running request into one forward pass per step
//! (continuous batching, KV budget, admission queue and prefix reuse: see `generate`): a new
//! request joins at the next step.
//!
//! Structured output: [`GenParams::response_format`] (OpenAI's `json_object` / `json_schema`
//! shapes, [`ResponseFormat`]) is compiled in the caller's thread, once per request, into a
//! grammar ([`ingot_core::constraint`]); each sample's sequence owns a copy and, every step,
//! masks its own logits row to the tokens the grammar allows before sampling, so the reply
//! parses (and validates) whenever it finishes with "stop". Requests without one pay nothing.
//! [`GenParams::tool_choice`] (OpenAI's, [`ToolChoice`]) is the same machinery for tool calls:
//! `"required"` or a named function compiles, in `submit_chat`, the chat request's `tools` and
//! the template's tool format into a grammar that admits only well-formed calls to those tools
//! (arguments valid against their schemas), which the template's `ToolFormat::parse` extracts.
//! A front end maps the OpenAI request's `tool_choice` onto that field as it is
//! (`serde_json::from_value::<ToolChoice>`), and parses calls unless it is `"none"`.
//!
//! A reward model (one loaded with a value head) does not generate: it scores texts
//! ([`EngineHandle::get_scores`]), and a causal LM does not score; each refuses the other's
//! requests with an [`EngineError`], as LLaMA Factory does.

mod chat;
mod generate;
mod media;
mod params;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

use crossbeam_channel::{Receiver, Sender};
use ingot_core::config::ModelConfig;
use ingot_core::constraint::{Constraint, ConstraintCompiler};
pub use ingot_core::constraint::{JsonSchemaFormat, ResponseFormat};
pub use ingot_core::template::ToolChoice;
use ingot_core::load::LoadedModel;
use ingot_core::sampling::SamplingParams;
use ingot_core::template::ChatTemplate;
use ingot_core::tokenizer::Tokenizer;

pub use chat::{ChatPrompt, ChatRequest, Response, Submission};
pub use ingot_core::media::{Image, Media, MediaError, MediaLimits};
pub use media::{MediaPrompt, IMAGE_PLACEHOLDER};
pub use generate::FinishReason;
pub use params::GenParams;

/// Engine-wide settings.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Threads for the model's kernels (0 = one per core).
    pub threads: usize,
    /// Sequences decoded together; further requests wait in the queue.
    pub max_seqs: usize,
    /// Requests waiting for a place in the batch beyond which new ones are refused
    /// ([`EngineError::Overloaded`]).
    pub max_queue: usize,
    /// Memory for KV caches, in MiB: running sequences' reservations (prompt plus
    /// `max_new_tokens` positions each) and the prefix pool together never exceed it.
    pub kv_cache_mb: usize,
    /// Keep finished sequences' caches so requests sharing a prefix skip recomputing it
    /// (off for benchmarks, which repeat the same prompt).
    pub prefix_cache: bool,
    /// A named chat template overriding the model's own (`--template`).
    pub template: Option<String>,
    /// System prompt used when a chat request has none.
    pub default_system: Option<String>,
    /// Template variables every chat request gets unless it sets them itself (e.g.
    /// `enable_thinking`, LLaMA Factory's model argument of that name).
    pub template_kwargs: serde_json::Map<String, serde_json::Value>,
    /// Generation defaults below the model's `generation_config.json`.
    pub defaults: GenParams,
    /// Largest `num_return_sequences` a request may ask for.
    pub max_n: usize,
    /// Bounds on an image's pixel count after resizing (LLaMA Factory's `image_min_pixels` /
    /// `image_max_pixels`), over the model's preprocessor config.
    pub image_min_pixels: Option<usize>,
    pub image_max_pixels: Option<usize>,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            threads: 0,
            max_seqs: 16,
            max_queue: 256,
            kv_cache_mb: 1024,
            prefix_cache: true,
            template: None,
            default_system: None,
            template_kwargs: serde_json::Map::new(),
            defaults: GenParams::llama_factory(),
            max_n: 16,
            image_min_pixels: None,
            image_max_pixels: None,
        }
    }
}

/// One generation request, already tokenized.
#[derive(Debug, Clone)]
pub struct GenerateRequest {
    pub prompt_ids: Vec<u32>,
    pub params: SamplingParams,
    pub max_new_tokens: usize,
    /// Stop strings: generation ends before the first occurrence, which is not emitted.
    pub stop: Vec<String>,
    /// Token ids that end generation (in addition to the tokenizer's end-of-generation ids).
    pub stop_ids: Vec<u32>,
    pub skip_special_tokens: bool,
    /// Keep generating past end-of-generation tokens (benchmarks); a constrained sequence
    /// still ends at one, which its grammar allows only once complete.
    pub ignore_eos: bool,
    /// Structured output: the grammar every sampled token must follow, in its start state
    /// (from [`EngineHandle::compile_response_format`]; chat requests get it from
    /// [`GenParams::response_format`] or [`GenParams::tool_choice`]). `None` costs nothing per step.
    pub constraint: Option<Constraint>,
    /// The prompt's media items and M-RoPE positions (built by `submit_chat`); `None` for text.
    pub media: Option<Arc<MediaPrompt>>,
}

impl GenerateRequest {
    /// The prefix-cache key of each prompt token (its id, or for media tokens a key tied to
    /// the media item's bytes).
    fn prefix_keys(&self) -> Vec<u64> {
        match &self.media {
            Some(m) => m.keys(&self.prompt_ids),
            None => self.prompt_ids.iter().map(|&id| u64::from(id)).collect(),
        }
    }
}

/// What the engine sends back for a request.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// Newly completed text.
    Text(String),
    /// The request ended; always the last event.
    Done(Usage),
    /// The request failed; always the last event.
    Error(String),
}

/// Summary of a finished request.
#[derive(Debug, Clone, PartialEq)]
pub struct Usage {
    pub finish_reason: FinishReason,
    pub prompt_tokens: usize,
    pub completion_tokens: usize,
    /// Prompt tokens whose keys and values came from the prefix cache rather than a forward pass.
    pub cached_tokens: usize,
    /// Seconds from submission to the first generated token.
    pub time_to_first_token: f64,
    /// Seconds spent in the prompt's forward pass.
    pub prefill_seconds: f64,
    /// Seconds spent generating after the first token.
    pub decode_seconds: f64,
}

impl Usage {
    /// A request cancelled before it ran.
    fn unstarted(job: &GenerateJob) -> Self {
        Self {
            finish_reason: FinishReason::Cancelled,
            prompt_tokens: job.request.prompt_ids.len(),
            completion_tokens: 0,
            cached_tokens: 0,
            time_to_first_token: 0.0,
            prefill_seconds: 0.0,
            decode_seconds: 0.0,
        }
    }
}

/// Errors visible to callers of the handle.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum EngineError {
    #[error("the engine has stopped")]
    Stopped,
    #[error("invalid request: {0}")]
    Invalid(String),
    #[error("this model is a reward model (it has a value head); use `ingot score`")]
    RewardModel,
    #[error("this model has no value head (value_head.safetensors), so it cannot score texts")]
    NoValueHead,
    #[error("the server is overloaded: {queued} requests are already waiting (limit {limit}); retry later")]
    Overloaded { queued: usize, limit: usize },
    #[error("this model has no chat template; choose a named one (one of: {})", ChatTemplate::names().join(", "))]
    NoTemplate,
}

/// A request being served: its event stream and a way to cancel it. Dropping the stream
/// cancels the request (the engine notices within one step).
pub struct Stream {
    pub events: Receiver<Event>,
    cancel: Arc<AtomicBool>,
}

impl Stream {
    /// Asks the engine to stop this request; it finishes with `FinishReason::Cancelled`.
    pub fn cancel(&self) {
        self.cancel.store(true, Ordering::Relaxed);
    }

    /// A flag that cancels the request when set (e.g. from a Ctrl-C handler).
    pub fn cancel_flag(&self) -> Arc<AtomicBool> {
        self.cancel.clone()
    }
}

impl Drop for Stream {
    fn drop(&mut self) {
        self.cancel();
    }
}

/// Work for the engine thread.
enum Job {
    Generate(GenerateJob),
    Score(ScoreJob),
}

struct GenerateJob {
    request: GenerateRequest,
    events: Sender<Event>,
    cancel: Arc<AtomicBool>,
    submitted: std::time::Instant,
}

/// Texts to score, already tokenized; the scores (in order) or the failure go back on `reply`.
struct ScoreJob {
    sequences: Vec<Vec<u32>>,
    reply: Sender<Result<Vec<f32>, String>>,
}

struct Shared {
    tokenizer: Tokenizer,
    /// The model file's own template source.
    chat_template: Option<String>,
    /// Placeholder tokens and preprocessors of a model that takes media.
    media: Option<media::MediaSupport>,
    /// The template chat requests are rendered with: the configured named one, else the model's.
    template: Option<ChatTemplate>,
    config: ModelConfig,
    reward_model: bool,
    /// Request defaults: the model's generation config over the engine's defaults.
    defaults: GenParams,
    default_system: Option<String>,
    template_kwargs: serde_json::Map<String, serde_json::Value>,
    max_n: usize,
    max_queue: usize,
    /// Largest prompt plus `max_new_tokens` the KV budget can hold.
    budget_positions: usize,
    queued: Arc<AtomicUsize>,
    reused_tokens: Arc<AtomicUsize>,
    /// The vocabulary indexed for constrained decoding, built by the first request that
    /// asks for a `response_format` or forces a tool call (about a second on a 150k vocabulary).
    constraints: OnceLock<Result<ConstraintCompiler, String>>,
}

/// Cheap, cloneable access to a running engine.
#[derive(Clone)]
pub struct EngineHandle {
    jobs: Sender<Job>,
    shared: Arc<Shared>,
}

/// Starts the engine thread with a loaded model and returns the first handle to it. The
/// thread ends when the last handle is dropped.
pub fn start(loaded: LoadedModel, cfg: EngineConfig) -> Result<EngineHandle, EngineError> {
    let LoadedModel { model, tokenizer, chat_template, value_head, generation, vision, audio: _ } = loaded;
    let (vision, media) = match vision {
        Some(v) => {
            let mut image = v.image_processor;
            if cfg.image_min_pixels.is_some() || cfg.image_max_pixels.is_some() {
                image.set_pixel_limits(cfg.image_min_pixels, cfg.image_max_pixels).map_err(|e| EngineError::Invalid(e.to_string()))?;
            }
            (Some(v.encoder), Some(media::MediaSupport { tokens: v.tokens, image }))
        }
        None => (None, None),
    };
    let template = match (&cfg.template, &chat_template) {
        (Some(name), _) => Some(ChatTemplate::named(name, tokenizer.bos_token(), tokenizer.eos_token())),
        (None, Some(src)) => Some(ChatTemplate::from_jinja(src, tokenizer.bos_token(), tokenizer.eos_token())),
        (None, None) => None,
    }
    .transpose()
    .map_err(|e| EngineError::Invalid(format!("chat template: {e}")))?;
    let kv_budget_bytes = cfg.kv_cache_mb.saturating_mul(1 << 20);
    let budget_positions = kv_budget_bytes / ingot_core::kv_cache::SeqCache::bytes_per_position(model.config()).max(1);
    if budget_positions == 0 {
        return Err(EngineError::Invalid(format!("kv_cache_mb ({}) holds no token of this model", cfg.kv_cache_mb)));
    }
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(cfg.threads)
        .thread_name(|i| format!("ingot-kernel-{i}"))
        .build()
        .map_err(|e| EngineError::Invalid(format!("cannot start {} kernel threads: {e}", cfg.threads)))?;
    let queued = Arc::new(AtomicUsize::new(0));
    let reused_tokens = Arc::new(AtomicUsize::new(0));
    let shared = Arc::new(Shared {
        config: model.config().clone(),
        tokenizer,
        chat_template,
        media,
        template,
        reward_model: value_head.is_some(),
        defaults: GenParams::from_generation_config(&generation).or(&cfg.defaults),
        default_system: cfg.default_system.clone(),
        template_kwargs: cfg.template_kwargs.clone(),
        max_n: cfg.max_n.max(1),
        max_queue: cfg.max_queue,
        budget_positions,
        queued: queued.clone(),
        reused_tokens: reused_tokens.clone(),
        constraints: OnceLock::new(),
    });
    let capacity = generate::Capacity { max_seqs: cfg.max_seqs, kv_budget_bytes, prefix_cache: cfg.prefix_cache, queued, reused_tokens };
    let (tx, rx) = crossbeam_channel::unbounded::<Job>();
    let worker_shared = shared.clone();
    std::thread::Builder::new()
        .name("ingot-engine".into())
        .spawn(move || {
            let mut scheduler =
                generate::Scheduler::new(&model, vision.as_ref(), &worker_shared.tokenizer, value_head.as_ref(), capacity);
            pool.install(|| scheduler.run(&rx));
        })
        .map_err(|e| EngineError::Invalid(format!("cannot start the engine thread: {e}")))?;
    Ok(EngineHandle { jobs: tx, shared })
}

impl EngineHandle {
    /// The model's tokenizer, for callers to encode prompts in their own thread.
    pub fn tokenizer(&self) -> &Tokenizer {
        &self.shared.tokenizer
    }

    /// The model file's own chat template source, if any.
    pub fn chat_template(&self) -> Option<&str> {
        self.shared.chat_template.as_deref()
    }

    /// The template chat requests are rendered with (the configured named one, else the
    /// model's own), if there is one.
    pub fn template(&self) -> Option<&ChatTemplate> {
        self.shared.template.as_ref()
    }

    /// Requests waiting for a place in the batch.
    pub fn queue_depth(&self) -> usize {
        self.shared.queued.load(Ordering::Relaxed)
    }

    /// Prompt tokens served from the prefix cache since the engine started.
    pub fn reused_prompt_tokens(&self) -> usize {
        self.shared.reused_tokens.load(Ordering::Relaxed)
    }

    pub fn model_config(&self) -> &ModelConfig {
        &self.shared.config
    }

    /// Whether the model takes images (it has a vision encoder).
    pub fn takes_images(&self) -> bool {
        self.shared.media.is_some()
    }

    /// Whether the model has a value head: it scores texts and does not generate.
    pub fn is_reward_model(&self) -> bool {
        self.shared.reward_model
    }

    /// Validates and queues a request; events arrive on the returned stream.
    pub fn submit(&self, request: GenerateRequest) -> Result<Stream, EngineError> {
        Ok(self.submit_all(vec![request])?.pop().expect("one stream per request"))
    }

    /// Validates and queues requests together: all are queued, or none (when one is
    /// invalid or the queue has no room for all of them).
    pub(crate) fn submit_all(&self, requests: Vec<GenerateRequest>) -> Result<Vec<Stream>, EngineError> {
        if self.shared.reward_model {
            return Err(EngineError::RewardModel);
        }
        for r in &requests {
            self.validate(r)?;
        }
        let n = requests.len();
        let limit = self.shared.max_queue;
        let before = self.shared.queued.fetch_add(n, Ordering::Relaxed);
        if before + n > limit {
            self.shared.queued.fetch_sub(n, Ordering::Relaxed);
            return Err(EngineError::Overloaded { queued: before, limit });
        }
        let mut streams = Vec::with_capacity(n);
        for request in requests {
            let (events, rx) = crossbeam_channel::unbounded();
            let cancel = Arc::new(AtomicBool::new(false));
            let job = GenerateJob { request, events, cancel: cancel.clone(), submitted: std::time::Instant::now() };
            if self.jobs.send(Job::Generate(job)).is_err() {
                self.shared.queued.fetch_sub(n - streams.len(), Ordering::Relaxed);
                return Err(EngineError::Stopped);
            }
            streams.push(Stream { events: rx, cancel });
        }
        Ok(streams)
    }

    fn validate(&self, r: &GenerateRequest) -> Result<(), EngineError> {
        let invalid = |m: String| Err(EngineError::Invalid(m));
        r.params.validate().map_err(|e| EngineError::Invalid(e.to_string()))?;
        let ctx = self.shared.config.max_position_embeddings;
        if r.prompt_ids.is_empty() {
            return invalid("the prompt is empty".into());
        }
        if r.max_new_tokens == 0 {
            return invalid("max_new_tokens must be at least 1".into());
        }
        if r.prompt_ids.len() + r.max_new_tokens > ctx {
            return invalid(format!(
                "prompt ({} tokens) plus max_new_tokens ({}) exceeds the context of {ctx} tokens",
                r.prompt_ids.len(),
                r.max_new_tokens
            ));
        }
        let budget = self.shared.budget_positions;
        if r.prompt_ids.len() + r.max_new_tokens > budget {
            return invalid(format!(
                "prompt ({} tokens) plus max_new_tokens ({}) exceeds the KV cache budget of {budget} tokens (raise --kv-cache-mb)",
                r.prompt_ids.len(),
                r.max_new_tokens
            ));
        }
        if let Some(m) = &r.media {
            if m.positions.len() != r.prompt_ids.len() {
                return invalid(format!(
                    "the media prompt has {} positions for {} tokens",
                    m.positions.len(),
                    r.prompt_ids.len()
                ));
            }
        }
        let vocab = self.shared.config.vocab_size;
        if let Some(id) = r.prompt_ids.iter().chain(&r.stop_ids).find(|&&id| id as usize >= vocab) {
            return invalid(format!("token id {id} is outside the vocabulary (size {vocab})"));
        }
        Ok(())
    }
}

impl EngineHandle {
    /// Scores already-templated texts with the reward model, one score per text in order.
    ///
    /// Texts are tokenized here, in the caller's thread, without special tokens added (as
    /// LLaMA Factory's reward-model inference does; special-token text still maps to its id).
    /// They are scored on the engine thread in batches of at most `max_seqs` sequences per
    /// forward pass; a sequence's score does not depend on its batch. Blocks until done.
    ///
    /// As in LLaMA Factory, a text longer than `max_length` tokens (default, and at most: the
    /// model's context) is cut to its first `max_length` tokens and scored at the last one kept.
    pub fn get_scores(&self, texts: Vec<String>, max_length: Option<usize>) -> Result<Vec<f32>, EngineError> {
        if !self.shared.reward_model {
            return Err(EngineError::NoValueHead);
        }
        let ctx = self.shared.config.max_position_embeddings;
        if max_length == Some(0) {
            return Err(EngineError::Invalid("max_length must be at least 1".into()));
        }
        let limit = max_length.unwrap_or(ctx).min(ctx);
        let mut sequences = Vec::with_capacity(texts.len());
        for (i, text) in texts.iter().enumerate() {
            let mut ids =
                self.shared.tokenizer.encode(text, false).map_err(|e| EngineError::Invalid(format!("text {}: {e}", i + 1)))?;
            if ids.is_empty() {
                return Err(EngineError::Invalid(format!("text {} is empty", i + 1)));
            }
            ids.truncate(limit);
            sequences.push(ids);
        }
        if sequences.is_empty() {
            return Ok(Vec::new());
        }
        let (reply, rx) = crossbeam_channel::bounded(1);
        self.jobs.send(Job::Score(ScoreJob { sequences, reply })).map_err(|_| EngineError::Stopped)?;
        rx.recv().map_err(|_| EngineError::Stopped)?.map_err(EngineError::Invalid)
    }

    /// Tokenizes a rendered prompt (see [`Tokenizer::encode_prompt`]).
    pub fn encode_prompt(&self, text: &str) -> Result<Vec<u32>, EngineError> {
        self.shared.tokenizer.encode_prompt(text).map_err(|e| EngineError::Invalid(e.to_string()))
    }

    /// Compiles a `response_format` into the constraint a [`GenerateRequest`] carries (`None`
    /// for `text`); clone it for each sequence. The first call for a JSON format indexes the
    /// vocabulary (about a second for 150k tokens; once per engine). An
    /// invalid or unsupported schema is [`EngineError::Invalid`] naming the field
    /// (`response_format.json_schema.schema: ...`).
    pub fn compile_response_format(&self, format: &ResponseFormat) -> Result<Option<Constraint>, EngineError> {
        if *format == ResponseFormat::Text {
            // Plain text needs no grammar, so it never pays for indexing the vocabulary.
            return Ok(None);
        }
        self.constraint_compiler()?.compile(format).map_err(|e| EngineError::Invalid(e.to_string()))
    }

    /// The vocabulary's grammar compiler, built on first use.
    fn constraint_compiler(&self) -> Result<&ConstraintCompiler, EngineError> {
        self.shared
            .constraints
            .get_or_init(|| ConstraintCompiler::for_tokenizer(&self.shared.tokenizer).map_err(|e| e.to_string()))
            .as_ref()
            .map_err(|e| EngineError::Invalid(e.clone()))
    }
}
