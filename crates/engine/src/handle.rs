//! The engine thread and the cheap, cloneable [`EngineHandle`] front ends hold.
//!
//! [`start`] moves the loaded model onto its own thread, which owns the weights and every KV
//! cache and runs the [`crate::scheduler`]. The handle validates requests in the caller's
//! thread (see [`crate::request`]), then [`EngineHandle::submit`]s a [`ValidRequest`] with one
//! [`EventSink`] per sample. It also speaks LLaMA Factory's `ChatModel` API
//! ([`EngineHandle::chat`], [`EngineHandle::stream_chat`], [`EngineHandle::get_scores`]).
//!
//! A reward model (one loaded with a value head) does not generate: it scores texts, and a
//! causal LM does not score; each refuses the other's requests, as LLaMA Factory does.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

use crossbeam_channel::Sender;
use ingot_core::config::ModelConfig;
use ingot_core::kv_cache::SeqCache;
use ingot_core::load::{AudioSupport, LoadedModel, Vision};
use ingot_core::model::audio::AudioEncoder;
use ingot_core::model::vision::VisionModel;
use ingot_core::template::ChatTemplate;
use ingot_core::tokenizer::Tokenizer;

use crate::event::{Cancel, Event, EventSink, FinishReason, Stream, Usage};
use crate::media::{AudioInput, Encoders, MediaKind, MediaSupport, VisionInput};
use crate::lora::Resident;
use crate::prompter::pick_template;
use crate::queue_wait::{QueueClock, QueueStats, Shed};
use crate::request::{ChatRequest, PromptRequest, ValidRequest, Validator};
use crate::scheduler::lookup::{LookupCounters, LookupStats};
use crate::scheduler::{Capacity, GenerateJob, Job, ScoreJob, Scheduler};
use crate::config::MAX_LOOKUP;
use crate::{EngineConfig, EngineError, GenParams};

/// What every handle shares: what requests are validated against, and the counters the
/// engine thread updates.
struct Shared {
    validator: Validator,
    /// The model file's own template source.
    chat_template: Option<String>,
    max_queue: usize,
    max_queue_wait: Option<std::time::Duration>,
    /// Batch slots (for the queue-wait estimate).
    max_seqs: usize,
    queued: Arc<AtomicUsize>,
    clock: Arc<QueueClock>,
    reused_tokens: Arc<AtomicUsize>,
    lookup: Arc<LookupCounters>,
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
    let LoadedModel { model, tokenizer, chat_template, value_head, generation, vision, audio } = loaded;
    let (vision, audio, media) = media_support(vision, audio, &cfg)?;
    let template = pick_template(cfg.template.as_deref(), chat_template.as_deref(), &tokenizer)?;
    let kv_budget_bytes = cfg.kv_cache_mb.saturating_mul(1 << 20);
    let budget_positions = kv_budget_bytes / SeqCache::bytes_per_position(model.config()).max(1);
    if budget_positions == 0 {
        return Err(EngineError::invalid("kv_cache_mb", format!("kv_cache_mb ({}) holds no token of this model", cfg.kv_cache_mb)));
    }
    if cfg.lookup > MAX_LOOKUP {
        return Err(EngineError::invalid("lookup", format!("lookup ({}) must be at most {MAX_LOOKUP} draft tokens", cfg.lookup)));
    }
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(cfg.threads)
        .thread_name(|i| format!("ingot-kernel-{i}"))
        .build()
        .map_err(|e| EngineError::Start(std::io::Error::other(e)))?;
    let queued = Arc::new(AtomicUsize::new(0));
    let clock = Arc::new(QueueClock::new());
    let reused_tokens = Arc::new(AtomicUsize::new(0));
    let lookup = Arc::new(LookupCounters::default());
    let (resident, adapters) = Resident::load(&model, &cfg.loras, cfg.max_loras)?;
    let model_context = model.config().max_position_embeddings;
    let context = match cfg.ctx_size {
        Some(0) => return Err(EngineError::invalid("ctx_size", "ctx_size must be at least 1")),
        Some(n) => n.min(model_context),
        None => model_context,
    };
    let validator = Validator {
        config: model.config().clone(),
        context,
        tokenizer,
        media,
        template,
        reward_model: value_head.is_some(),
        params: cfg.params.clone(),
        defaults: GenParams::from_generation_config(&generation).or(&cfg.defaults),
        default_system: cfg.default_system.clone(),
        template_kwargs: cfg.template_kwargs.clone(),
        max_n: cfg.max_n.max(1),
        budget_positions,
        constraints: OnceLock::new(),
        adapters,
    };
    // A default adapter (`--use-lora`) must be one of those served.
    if let Some(name) = &cfg.params.adapter {
        validator.adapter_id(name)?;
    }
    let shared = Arc::new(Shared {
        validator,
        chat_template,
        max_queue: cfg.max_queue,
        max_queue_wait: cfg.max_queue_wait,
        max_seqs: cfg.max_seqs.max(1),
        queued: queued.clone(),
        clock: clock.clone(),
        reused_tokens: reused_tokens.clone(),
        lookup: lookup.clone(),
    });
    let capacity = Capacity {
        max_seqs: cfg.max_seqs,
        kv_budget_bytes,
        prefix_cache: cfg.prefix_cache,
        queued,
        reused_tokens,
        encode_slice_macs: cfg.encode_slice_macs,
        clock,
        max_queue_wait: cfg.max_queue_wait,
        lookup: cfg.lookup,
        lookup_counters: lookup,
    };
    let (tx, rx) = crossbeam_channel::unbounded::<Job>();
    let worker_shared = shared.clone();
    std::thread::Builder::new()
        .name("ingot-engine".into())
        .spawn(move || {
            let tokenizer = &worker_shared.validator.tokenizer;
            let encoders = Encoders { vision: vision.as_ref(), audio: audio.as_ref() };
            let mut scheduler = Scheduler::new(&model, encoders, tokenizer, value_head.as_ref(), capacity).with_adapters(resident);
            pool.install(|| scheduler.run(&rx));
        })
        .map_err(EngineError::Start)?;
    Ok(EngineHandle { jobs: tx, shared })
}

/// One finished sample, as LLaMA Factory's `Response`.
#[derive(Debug, Clone, PartialEq)]
pub struct Response {
    pub text: String,
    pub response_length: usize,
    pub prompt_length: usize,
    pub finish_reason: FinishReason,
    pub usage: Usage,
}

/// A model's encoders (vision, audio) and what lays out its media prompts.
pub(crate) type MediaSide = (Option<VisionModel>, Option<AudioEncoder>, Option<MediaSupport>);

/// The encoders of a loaded model and the request-side support for its media, with the
/// configured preprocessing bounds applied.
pub(crate) fn media_support(
    vision: Option<Vision>,
    audio: Option<AudioSupport>,
    cfg: &EngineConfig,
) -> Result<MediaSide, EngineError> {
    let media_err = |field: &str| {
        let field = field.to_string();
        move |source| EngineError::Media { field, source }
    };
    let (vision_encoder, vision_input) = match vision {
        Some(v) => {
            let (mut image, mut video) = (v.image_processor, v.video_processor);
            if cfg.image_min_pixels.is_some() || cfg.image_max_pixels.is_some() {
                image.set_pixel_limits(cfg.image_min_pixels, cfg.image_max_pixels).map_err(media_err("image_max_pixels"))?;
            }
            if cfg.video_min_pixels.is_some() || cfg.video_max_pixels.is_some() {
                video.set_pixel_limits(cfg.video_min_pixels, cfg.video_max_pixels).map_err(media_err("video_max_pixels"))?;
            }
            (Some(v.encoder), Some(VisionInput { tokens: v.tokens, image, video }))
        }
        None => (None, None),
    };
    let (audio_encoder, audio_input) = match audio {
        Some(a) => {
            let extractor = match cfg.audio_sampling_rate {
                Some(rate) if rate != a.feature_extractor.sampling_rate() => a
                    .feature_extractor
                    .with_sampling_rate(rate)
                    .map_err(|e| EngineError::invalid("audio_sampling_rate", format!("audio_sampling_rate {rate}: {e}")))?,
                _ => a.feature_extractor,
            };
            (Some(a.encoder), Some(AudioInput { token_id: a.audio_token_id, extractor }))
        }
        None => (None, None),
    };
    let support = (vision_input.is_some() || audio_input.is_some()).then_some(MediaSupport { vision: vision_input, audio: audio_input });
    Ok((vision_encoder, audio_encoder, support))
}

impl EngineHandle {
    /// The model's tokenizer, for callers to encode prompts in their own thread.
    pub fn tokenizer(&self) -> &Tokenizer {
        &self.shared.validator.tokenizer
    }

    /// The names of the LoRA adapters requests may pick ([`GenParams::adapter`]), in the
    /// order they were given.
    pub fn adapters(&self) -> &[String] {
        self.shared.validator.adapters.names()
    }

    /// The model file's own chat template source, if any.
    pub fn chat_template(&self) -> Option<&str> {
        self.shared.chat_template.as_deref()
    }

    /// The template chat requests are rendered with (the configured named one, else the
    /// model's own), if there is one.
    pub fn template(&self) -> Option<&ChatTemplate> {
        self.shared.validator.template.as_ref()
    }

    /// Requests waiting for a place in the batch.
    pub fn queue_depth(&self) -> usize {
        self.shared.queued.load(Ordering::Relaxed)
    }

    /// Queue times of admitted requests and counts of refused ones, since the start.
    pub fn queue_stats(&self) -> QueueStats {
        self.shared.clock.stats()
    }

    /// Prompt tokens served from the prefix cache since the engine started.
    pub fn reused_prompt_tokens(&self) -> usize {
        self.shared.reused_tokens.load(Ordering::Relaxed)
    }

    /// Lookup decoding's draft tokens verified and accepted since the engine started.
    pub fn lookup_stats(&self) -> LookupStats {
        self.shared.lookup.snapshot()
    }

    pub fn model_config(&self) -> &ModelConfig {
        &self.shared.validator.config
    }

    /// The context requests get, in tokens (the model's, or the configured `ctx_size`).
    pub fn context_length(&self) -> usize {
        self.shared.validator.context
    }

    /// Whether the model takes images (it has a vision encoder).
    pub fn takes_images(&self) -> bool {
        self.takes(MediaKind::Image)
    }

    /// Whether the model takes media of `kind`.
    pub fn takes(&self, kind: MediaKind) -> bool {
        self.shared.validator.media.as_ref().is_some_and(|m| m.takes(kind))
    }

    /// Whether the model has a value head: it scores texts and does not generate.
    pub fn is_reward_model(&self) -> bool {
        self.shared.validator.reward_model
    }

    /// The prompt text a chat request renders to (see [`crate::request`]).
    pub fn render_chat(&self, req: &ChatRequest) -> Result<String, EngineError> {
        self.shared.validator.render_chat(req)
    }

    /// Renders, tokenizes and validates a chat request, in the caller's thread.
    pub fn validate_chat(&self, req: ChatRequest) -> Result<ValidRequest, EngineError> {
        self.shared.validator.validate_chat(req)
    }

    /// Tokenizes and validates a raw prompt, in the caller's thread.
    pub fn validate_prompt(&self, req: PromptRequest) -> Result<ValidRequest, EngineError> {
        self.shared.validator.validate_prompt(req)
    }

    /// Queues a validated request: sample `i`'s events go to `sink(i)`. All samples are
    /// queued, or none (when the queue has no room for all of them). Returns one [`Cancel`]
    /// per sample; dropping them does not cancel (a closed sink does).
    pub fn submit<S: EventSink + 'static>(
        &self,
        request: ValidRequest,
        mut sink: impl FnMut(usize) -> S,
    ) -> Result<Vec<Cancel>, EngineError> {
        let n = request.samples.len();
        let limit = self.shared.max_queue;
        let before = self.shared.queued.fetch_add(n, Ordering::Relaxed);
        if before + n > limit {
            self.shared.queued.fetch_sub(n, Ordering::Relaxed);
            self.shared.clock.shed(Shed::QueueFull);
            return Err(EngineError::Overloaded { queued: before, limit });
        }
        if let Some(limit) = self.shared.max_queue_wait {
            let expected = self.shared.clock.expected_wait(before, self.shared.max_seqs);
            if expected > limit {
                self.shared.queued.fetch_sub(n, Ordering::Relaxed);
                self.shared.clock.shed(Shed::QueueWait);
                return Err(EngineError::QueueWait { expected, limit });
            }
        }
        self.shared.clock.submitted(before);
        let request = Arc::new(request);
        let submitted = std::time::Instant::now();
        let mut cancels = Vec::with_capacity(n);
        for sample in 0..n {
            let cancel = Cancel::default();
            let job = GenerateJob { request: request.clone(), sample, sink: Box::new(sink(sample)), cancel: cancel.clone(), submitted };
            if self.jobs.send(Job::Generate(job)).is_err() {
                self.shared.queued.fetch_sub(n - sample, Ordering::Relaxed);
                return Err(EngineError::Stopped);
            }
            cancels.push(cancel);
        }
        Ok(cancels)
    }

    /// Queues a validated request with one crossbeam [`Stream`] per sample.
    pub fn stream(&self, request: ValidRequest) -> Result<Vec<Stream>, EngineError> {
        let (mut sinks, receivers): (Vec<_>, Vec<_>) =
            (0..request.samples()).map(|_| crossbeam_channel::unbounded::<Event>()).map(|(tx, rx)| (Some(tx), rx)).unzip();
        let cancels = self.submit(request, |i| sinks[i].take().expect("one sink per sample"))?;
        Ok(receivers.into_iter().zip(cancels).map(|(rx, cancel)| Stream::new(rx, cancel)).collect())
    }

    /// Answers a chat request: one [`Response`] per sample. Blocks until all are done.
    pub fn chat(&self, req: ChatRequest) -> Result<Vec<Response>, EngineError> {
        let valid = self.validate_chat(req)?;
        let prompt_length = valid.prompt_ids().len();
        self.stream(valid)?.into_iter().map(|stream| collect(stream, prompt_length)).collect()
    }

    /// Streams the answer to a chat request (one sample: `num_return_sequences` must be 1).
    pub fn stream_chat(&self, req: ChatRequest) -> Result<Stream, EngineError> {
        if req.params.num_return_sequences.is_some_and(|n| n != 1) {
            return Err(EngineError::invalid(
                "num_return_sequences",
                "stream_chat streams one sample: num_return_sequences must be 1",
            ));
        }
        let params = GenParams { num_return_sequences: Some(1), ..req.params.clone() };
        let valid = self.validate_chat(ChatRequest { params, ..req })?;
        Ok(self.stream(valid)?.pop().expect("one sample"))
    }

    /// Scores already-templated texts with the reward model, one score per text in order.
    /// Blocks until done; see [`EngineHandle::submit_scores`].
    pub fn get_scores(&self, texts: Vec<String>, max_length: Option<usize>) -> Result<Vec<f32>, EngineError> {
        let (reply, rx) = crossbeam_channel::bounded(1);
        self.submit_scores(&texts, max_length, move |scores| {
            // The caller waits on `rx` below; it cannot have gone.
            let _ = reply.send(scores);
        })?;
        rx.recv().map_err(|_| EngineError::Stopped)?
    }

    /// Tokenizes texts to score (here, in the caller's thread) and queues them; `done` gets
    /// the scores, in order, on the engine thread.
    ///
    /// Texts are tokenized without special tokens added (as LLaMA Factory's reward-model
    /// inference does; special-token text still maps to its id). They are scored in batches of
    /// at most `max_seqs` sequences per forward pass; a sequence's score does not depend on
    /// its batch. As in LLaMA Factory, a text longer than `max_length` tokens (default, and at
    /// most: the model's context) is cut to its first `max_length` tokens and scored at the
    /// last one kept.
    pub fn submit_scores(
        &self,
        texts: &[String],
        max_length: Option<usize>,
        done: impl FnOnce(Result<Vec<f32>, EngineError>) + Send + 'static,
    ) -> Result<(), EngineError> {
        let v = &self.shared.validator;
        if !v.reward_model {
            return Err(EngineError::NoValueHead);
        }
        let ctx = v.context;
        if max_length == Some(0) {
            return Err(EngineError::invalid("max_length", "max_length must be at least 1"));
        }
        let limit = max_length.unwrap_or(ctx).min(ctx);
        let mut sequences = Vec::with_capacity(texts.len());
        for (i, text) in texts.iter().enumerate() {
            let mut ids = v.tokenizer.encode(text, false)?;
            if ids.is_empty() {
                return Err(EngineError::invalid(format!("messages[{i}]"), format!("text {} is empty", i + 1)));
            }
            ids.truncate(limit);
            sequences.push(ids);
        }
        if sequences.is_empty() {
            done(Ok(Vec::new()));
            return Ok(());
        }
        self.jobs.send(Job::Score(ScoreJob { sequences, reply: Box::new(done) })).map_err(|_| EngineError::Stopped)
    }
}

/// Reads a sample's stream to its end.
fn collect(stream: Stream, prompt_length: usize) -> Result<Response, EngineError> {
    let mut text = String::new();
    for event in stream.events.iter() {
        match event {
            Event::Text(t) => text.push_str(&t),
            Event::Logprobs(_) => {}
            Event::Done(usage) => {
                return Ok(Response {
                    text,
                    response_length: usage.completion_tokens,
                    prompt_length,
                    finish_reason: usage.finish_reason,
                    usage,
                })
            }
            Event::Error(e) => return Err(e),
        }
    }
    Err(EngineError::Stopped)
}
