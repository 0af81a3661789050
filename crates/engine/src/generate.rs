//! The generation loop for one sequence: chunked prefill, then sample → detokenize →
//! stop-string check → emit, until a stop condition.

use std::time::Instant;

use ingot_core::kv_cache::SeqCache;
use ingot_core::model::{Logits, Model, SeqInput};
use ingot_core::sampling::Sampler;
use ingot_core::stop::StopMatcher;
use ingot_core::tokenizer::{StreamDecoder, Tokenizer};

use crate::{Event, Job, Usage};

/// Prompt tokens per forward pass during prefill; bounds the activation memory of one step.
const PREFILL_CHUNK: usize = 512;

/// Why generation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FinishReason {
    /// An end-of-generation token, a stop token or a stop string.
    Stop,
    /// `max_new_tokens` reached.
    Length,
    /// The caller cancelled (or stopped listening).
    Cancelled,
}

impl FinishReason {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Stop => "stop",
            Self::Length => "length",
            Self::Cancelled => "cancelled",
        }
    }
}

pub(crate) struct Runner<'m> {
    model: &'m Model,
    tokenizer: &'m Tokenizer,
    /// Reused across requests so its memory is allocated once.
    cache: SeqCache,
    eog: Vec<u32>,
}

impl<'m> Runner<'m> {
    pub(crate) fn new(model: &'m Model, tokenizer: &'m Tokenizer) -> Self {
        Self { model, tokenizer, cache: SeqCache::new(model.config()), eog: tokenizer.eog_ids() }
    }

    pub(crate) fn run(&mut self, job: Job) {
        let events = job.events.clone();
        let event = match self.generate(&job) {
            Ok(usage) => Event::Done(usage),
            Err(message) => Event::Error(message),
        };
        // The caller may have gone away; nothing is waiting for the result then.
        let _ = events.send(event);
    }

    fn forward(&mut self, tokens: &[u32], logits: Logits) -> Result<Vec<f32>, String> {
        let mut out = self
            .model
            .forward(&mut [SeqInput { tokens, cache: &mut self.cache, logits }])
            .map_err(|e| e.to_string())?;
        Ok(out.pop().unwrap_or_default())
    }

    fn generate(&mut self, job: &Job) -> Result<Usage, String> {
        let req = &job.request;
        self.cache.clear();
        let cancelled = || job.cancel.load(std::sync::atomic::Ordering::Relaxed);
        let started = Instant::now();
        let mut logits = Vec::new();
        let chunks: Vec<&[u32]> = req.prompt_ids.chunks(PREFILL_CHUNK).collect();
        for (i, chunk) in chunks.iter().enumerate() {
            if cancelled() {
                return Ok(self.usage(job, FinishReason::Cancelled, 0, None, started, started));
            }
            let want = if i + 1 == chunks.len() { Logits::Last } else { Logits::None };
            logits = self.forward(chunk, want)?;
        }
        let prefill_done = Instant::now();

        let mut sampler = Sampler::new(req.params.clone());
        let mut decoder = StreamDecoder::new(self.tokenizer, req.skip_special_tokens);
        let mut stop = StopMatcher::new(req.stop.clone());
        let mut generated: Vec<u32> = Vec::new();
        let mut first_token_at = None;
        let reason = loop {
            let id = sampler.sample(&mut logits, &req.prompt_ids, &generated);
            first_token_at.get_or_insert_with(Instant::now);
            generated.push(id);
            if (!req.ignore_eos && self.eog.contains(&id)) || req.stop_ids.contains(&id) {
                break FinishReason::Stop;
            }
            let text = decoder.push(id).map_err(|e| e.to_string())?;
            let step = stop.push(&text);
            if !step.emit.is_empty() && job.events.send(Event::Text(step.emit)).is_err() {
                break FinishReason::Cancelled;
            }
            if step.stopped {
                break FinishReason::Stop;
            }
            if generated.len() >= req.max_new_tokens {
                break FinishReason::Length;
            }
            if cancelled() {
                break FinishReason::Cancelled;
            }
            logits = self.forward(&[id], Logits::Last)?;
        };
        let rest = stop.finish();
        if reason != FinishReason::Stop && !rest.is_empty() {
            let _ = job.events.send(Event::Text(rest));
        }
        Ok(self.usage(job, reason, generated.len(), first_token_at, started, prefill_done))
    }

    fn usage(
        &self,
        job: &Job,
        finish_reason: FinishReason,
        completion_tokens: usize,
        first_token_at: Option<Instant>,
        started: Instant,
        prefill_done: Instant,
    ) -> Usage {
        let now = Instant::now();
        let first = first_token_at.unwrap_or(now);
        Usage {
            finish_reason,
            prompt_tokens: job.request.prompt_ids.len(),
            completion_tokens,
            time_to_first_token: first.duration_since(job.submitted).as_secs_f64(),
            prefill_seconds: prefill_done.duration_since(started).as_secs_f64(),
            decode_seconds: now.duration_since(first).as_secs_f64(),
        }
    }
}
