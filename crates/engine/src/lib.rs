//! The engine: one thread owns the model weights and every KV cache; front ends hold a
//! cloneable [`EngineHandle`] and talk to it through channels.
//!
//! Requests arrive as token ids (template rendering and tokenisation happen in the caller's
//! thread, see [`EngineHandle::tokenizer`]); the engine streams [`Event`]s back: text deltas
//! that never split a UTF-8 character, then exactly one `Done` (or `Error`).
//!
//! The engine thread batches every running request into one forward pass per step
//! (continuous batching, see `generate`): a new request joins at the next step.
//!
//! A reward model (one loaded with a value head) does not generate: it scores texts
//! ([`EngineHandle::get_scores`]), and a causal LM does not score; each refuses the other's
//! requests with an [`EngineError`], as LLaMA Factory does.

mod generate;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crossbeam_channel::{Receiver, Sender};
use ingot_core::config::ModelConfig;
use ingot_core::load::LoadedModel;
use ingot_core::sampling::SamplingParams;
use ingot_core::tokenizer::Tokenizer;

pub use generate::FinishReason;

/// Engine-wide settings.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Threads for the model's kernels (0 = one per core).
    pub threads: usize,
    /// Sequences decoded together; further requests wait in the queue.
    pub max_seqs: usize,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self { threads: 0, max_seqs: 16 }
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
    /// Keep generating past end-of-generation tokens (benchmarks).
    pub ignore_eos: bool,
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
    /// Seconds from submission to the first generated token.
    pub time_to_first_token: f64,
    /// Seconds spent in the prompt's forward pass.
    pub prefill_seconds: f64,
    /// Seconds spent generating after the first token.
    pub decode_seconds: f64,
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
}

/// A request being served: its event stream and a way to cancel it.
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
    chat_template: Option<String>,
    config: ModelConfig,
    reward_model: bool,
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
    let LoadedModel { model, tokenizer, chat_template, value_head } = loaded;
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(cfg.threads)
        .thread_name(|i| format!("ingot-kernel-{i}"))
        .build()
        .map_err(|e| EngineError::Invalid(format!("cannot start {} kernel threads: {e}", cfg.threads)))?;
    let shared = Arc::new(Shared {
        config: model.config().clone(),
        tokenizer,
        chat_template,
        reward_model: value_head.is_some(),
    });
    let (tx, rx) = crossbeam_channel::unbounded::<Job>();
    let worker_shared = shared.clone();
    std::thread::Builder::new()
        .name("ingot-engine".into())
        .spawn(move || {
            let mut scheduler =
                generate::Scheduler::new(&model, &worker_shared.tokenizer, value_head.as_ref(), cfg.max_seqs);
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

    /// The model file's own chat template, if any.
    pub fn chat_template(&self) -> Option<&str> {
        self.shared.chat_template.as_deref()
    }

    pub fn model_config(&self) -> &ModelConfig {
        &self.shared.config
    }

    /// Whether the model has a value head: it scores texts and does not generate.
    pub fn is_reward_model(&self) -> bool {
        self.shared.reward_model
    }

    /// Validates and queues a request; events arrive on the returned stream.
    pub fn submit(&self, request: GenerateRequest) -> Result<Stream, EngineError> {
        if self.shared.reward_model {
            return Err(EngineError::RewardModel);
        }
        self.validate(&request)?;
        let (events, rx) = crossbeam_channel::unbounded();
        let cancel = Arc::new(AtomicBool::new(false));
        let job = Job::Generate(GenerateJob { request, events, cancel: cancel.clone(), submitted: std::time::Instant::now() });
        self.jobs.send(job).map_err(|_| EngineError::Stopped)?;
        Ok(Stream { events: rx, cancel })
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
    pub fn get_scores(&self, texts: Vec<String>) -> Result<Vec<f32>, EngineError> {
        if !self.shared.reward_model {
            return Err(EngineError::NoValueHead);
        }
        let ctx = self.shared.config.max_position_embeddings;
        let mut sequences = Vec::with_capacity(texts.len());
        for (i, text) in texts.iter().enumerate() {
            let ids = self.shared.tokenizer.encode(text, false).map_err(|e| EngineError::Invalid(format!("text {}: {e}", i + 1)))?;
            if ids.is_empty() {
                return Err(EngineError::Invalid(format!("text {} is empty", i + 1)));
            }
            if ids.len() > ctx {
                return Err(EngineError::Invalid(format!(
                    "text {} has {} tokens, more than the context of {ctx}",
                    i + 1,
                    ids.len()
                )));
            }
            sequences.push(ids);
        }
        if sequences.is_empty() {
            return Ok(Vec::new());
        }
        let (reply, rx) = crossbeam_channel::bounded(1);
        self.jobs.send(Job::Score(ScoreJob { sequences, reply })).map_err(|_| EngineError::Stopped)?;
        rx.recv().map_err(|_| EngineError::Stopped)?.map_err(EngineError::Invalid)
    }

    /// Tokenizes a rendered prompt: special-token text maps to single ids, and BOS is
    /// prepended when the model wants it and the template did not already write it.
    pub fn encode_prompt(&self, text: &str) -> Result<Vec<u32>, EngineError> {
        let tok = &self.shared.tokenizer;
        let mut ids = tok.encode(text, false).map_err(|e| EngineError::Invalid(e.to_string()))?;
        if let Some(bos) = tok.bos_id().filter(|_| tok.add_bos()) {
            if ids.first() != Some(&bos) {
                ids.insert(0, bos);
            }
        }
        Ok(ids)
    }
}
