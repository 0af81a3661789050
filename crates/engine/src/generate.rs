//! The scheduler: continuous batching of every running sequence, on the engine thread.
//!
//! Our own code (the engine's edge). Each step builds one batch: one token for every
//! decoding sequence plus prompt chunks of newly admitted ones (at most
//! [`PREFILL_BUDGET`] prompt tokens per step, so a long prompt never stalls running streams
//! for more than one chunk), runs the model once, then samples, detokenizes and checks stop
//! conditions per sequence. A finished, cancelled or abandoned sequence leaves at once and
//! its KV cache goes back to a free list for the next request.
//!
//! Score jobs (reward models, which never generate) run at once when they arrive: their
//! texts, in batches of at most `max_seqs`, each go through one forward pass from an empty
//! cache, and the value head turns each last hidden state into a score.
//!
//! Invariants: every job gets exactly one terminal event (`Done` or `Error`); a sequence's
//! tokens do not depend on what else is in the batch (the kernels quantize and accumulate
//! each row independently, and attention is per sequence).

use std::sync::atomic::Ordering;
use std::time::Instant;

use crossbeam_channel::{Receiver, TryRecvError};
use ingot_core::kv_cache::SeqCache;
use ingot_core::model::{Logits, Model, SeqInput};
use ingot_core::reward::ValueHead;
use ingot_core::sampling::Sampler;
use ingot_core::stop::StopMatcher;
use ingot_core::tokenizer::{StreamDecoder, Tokenizer};

use crate::{Event, GenerateJob, Job, ScoreJob, Usage};

/// Prompt tokens processed per step, over all prefilling sequences: bounds both the
/// activation memory of a step and how long decoding streams wait behind a new prompt.
const PREFILL_BUDGET: usize = 512;

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

/// One running request.
struct Seq<'t> {
    job: GenerateJob,
    cache: SeqCache,
    /// Prompt tokens already in the cache.
    prefilled: usize,
    sampler: Sampler,
    decoder: StreamDecoder<'t>,
    stop: StopMatcher,
    generated: Vec<u32>,
    started: Instant,
    prefill_done: Option<Instant>,
    first_token_at: Option<Instant>,
}

impl Seq<'_> {
    fn decoding(&self) -> bool {
        self.prefilled == self.job.request.prompt_ids.len()
    }
}

pub(crate) struct Scheduler<'m> {
    model: &'m Model,
    tokenizer: &'m Tokenizer,
    value_head: Option<&'m ValueHead>,
    eog: Vec<u32>,
    max_seqs: usize,
    /// Caches of finished sequences, kept for reuse.
    free: Vec<SeqCache>,
}

impl<'m> Scheduler<'m> {
    pub(crate) fn new(model: &'m Model, tokenizer: &'m Tokenizer, value_head: Option<&'m ValueHead>, max_seqs: usize) -> Self {
        Self { model, tokenizer, value_head, eog: tokenizer.eog_ids(), max_seqs: max_seqs.max(1), free: Vec::new() }
    }

    /// Serves jobs until the channel closes and every sequence has finished.
    pub(crate) fn run(&mut self, jobs: &Receiver<Job>) {
        let mut active: Vec<Seq<'m>> = Vec::new();
        let mut open = true;
        loop {
            // Admit: block only when idle, otherwise take what has arrived.
            while open && active.len() < self.max_seqs {
                let next = if active.is_empty() { jobs.recv().map_err(|_| TryRecvError::Disconnected) } else { jobs.try_recv() };
                match next {
                    Ok(Job::Generate(job)) => active.push(self.admit(job)),
                    Ok(Job::Score(job)) => self.score(job),
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) => open = false,
                }
            }
            if active.is_empty() {
                if open {
                    continue;
                }
                return;
            }
            self.step(&mut active);
        }
    }

    /// A cleared cache, recycled when one is free.
    fn take_cache(&mut self) -> SeqCache {
        let mut cache = self.free.pop().unwrap_or_else(|| SeqCache::new(self.model.config()));
        cache.clear();
        cache
    }

    /// Scores every sequence of the job and replies; the caches go back to the free list.
    fn score(&mut self, job: ScoreJob) {
        let Some(head) = self.value_head else {
            // The handle only sends score jobs for reward models; answer rather than hang.
            let _ = job.reply.send(Err("this model has no value head".into()));
            return;
        };
        let mut scores = Vec::with_capacity(job.sequences.len());
        let mut result = Ok(());
        for chunk in job.sequences.chunks(self.max_seqs) {
            let mut caches: Vec<SeqCache> = chunk.iter().map(|_| self.take_cache()).collect();
            let mut inputs: Vec<SeqInput<'_>> = chunk
                .iter()
                .zip(&mut caches)
                .map(|(tokens, cache)| SeqInput { tokens, cache, logits: Logits::Hidden })
                .collect();
            let outcome = self.model.forward(&mut inputs);
            // `take_cache` clears a cache when it is taken again.
            self.free.extend(caches);
            match outcome {
                Ok(hidden) => scores.extend(hidden.iter().map(|h| head.score(h))),
                Err(e) => {
                    result = Err(e.to_string());
                    break;
                }
            }
        }
        // The caller may have gone away; nothing is waiting for the result then.
        let _ = job.reply.send(result.map(|()| scores));
    }

    fn admit(&mut self, job: GenerateJob) -> Seq<'m> {
        let cache = self.take_cache();
        let req = &job.request;
        Seq {
            sampler: Sampler::new(req.params.clone()),
            decoder: StreamDecoder::new(self.tokenizer, req.skip_special_tokens),
            stop: StopMatcher::new(req.stop.clone()),
            cache,
            prefilled: 0,
            generated: Vec::new(),
            started: Instant::now(),
            prefill_done: None,
            first_token_at: None,
            job,
        }
    }

    /// One forward pass over the whole batch, then sampling and bookkeeping.
    fn step(&mut self, active: &mut Vec<Seq<'m>>) {
        // Drop sequences whose caller cancelled before spending compute on them.
        let mut i = 0;
        while i < active.len() {
            if active[i].job.cancel.load(Ordering::Relaxed) {
                let seq = active.swap_remove(i);
                self.finish(seq, Ok(FinishReason::Cancelled));
            } else {
                i += 1;
            }
        }
        if active.is_empty() {
            return;
        }

        // What each sequence feeds this step.
        let mut budget = PREFILL_BUDGET;
        let mut feeds: Vec<(usize, Vec<u32>, Logits)> = Vec::new();
        for (idx, seq) in active.iter().enumerate() {
            if seq.decoding() {
                let last = *seq.generated.last().expect("a decoding sequence has sampled a token");
                feeds.push((idx, vec![last], Logits::Last));
            } else if budget > 0 {
                let prompt = &seq.job.request.prompt_ids;
                let n = (prompt.len() - seq.prefilled).min(budget);
                budget -= n;
                let end = seq.prefilled + n;
                let logits = if end == prompt.len() { Logits::Last } else { Logits::None };
                feeds.push((idx, prompt[seq.prefilled..end].to_vec(), logits));
            }
        }

        let result = {
            let mut inputs: Vec<SeqInput<'_>> = Vec::with_capacity(feeds.len());
            let mut rest: &mut [Seq<'m>] = active.as_mut_slice();
            let mut offset = 0;
            for (idx, tokens, logits) in &feeds {
                // Feeds are in increasing index order: split off each sequence's cache.
                let (_, tail) = std::mem::take(&mut rest).split_at_mut(idx - offset);
                let (seq, tail) = tail.split_first_mut().expect("index within active");
                inputs.push(SeqInput { tokens, cache: &mut seq.cache, logits: *logits });
                rest = tail;
                offset = idx + 1;
            }
            self.model.forward(&mut inputs)
        };
        let outputs = match result {
            Ok(o) => o,
            Err(e) => {
                // A model error is specific to the batch's inputs, which were validated; fail
                // every sequence in it rather than loop on the same error.
                for (idx, _, _) in feeds.iter().rev() {
                    let seq = active.swap_remove(*idx);
                    self.finish(seq, Err(e.to_string()));
                }
                return;
            }
        };

        let mut done: Vec<(usize, Result<FinishReason, String>)> = Vec::new();
        for ((idx, tokens, _), mut logits) in feeds.iter().zip(outputs) {
            let seq = &mut active[*idx];
            if !seq.decoding() {
                seq.prefilled += tokens.len();
                if !seq.decoding() {
                    continue;
                }
                seq.prefill_done = Some(Instant::now());
            }
            if let Some(reason) = self.advance(seq, &mut logits) {
                done.push((*idx, reason));
            }
        }
        // Remove from the back so earlier indices stay valid.
        done.sort_by_key(|(idx, _)| std::cmp::Reverse(*idx));
        for (idx, reason) in done {
            let seq = active.swap_remove(idx);
            self.finish(seq, reason);
        }
    }

    /// Samples the next token of a decoding sequence and streams its text; returns why the
    /// sequence ends, if it does.
    fn advance(&self, seq: &mut Seq<'m>, logits: &mut [f32]) -> Option<Result<FinishReason, String>> {
        let req = &seq.job.request;
        let id = seq.sampler.sample(logits, &req.prompt_ids, &seq.generated);
        seq.first_token_at.get_or_insert_with(Instant::now);
        seq.generated.push(id);
        if (!req.ignore_eos && self.eog.contains(&id)) || req.stop_ids.contains(&id) {
            return Some(Ok(FinishReason::Stop));
        }
        let text = match seq.decoder.push(id) {
            Ok(t) => t,
            Err(e) => return Some(Err(e.to_string())),
        };
        let step = seq.stop.push(&text);
        if !step.emit.is_empty() && seq.job.events.send(Event::Text(step.emit)).is_err() {
            // Nobody is listening any more: stop within this step.
            return Some(Ok(FinishReason::Cancelled));
        }
        if step.stopped {
            return Some(Ok(FinishReason::Stop));
        }
        if seq.generated.len() >= req.max_new_tokens {
            return Some(Ok(FinishReason::Length));
        }
        None
    }

    /// Sends the terminal event and recycles the cache.
    fn finish(&mut self, mut seq: Seq<'m>, outcome: Result<FinishReason, String>) {
        let event = match outcome {
            Ok(reason) => {
                let rest = seq.stop.finish();
                if reason != FinishReason::Stop && !rest.is_empty() {
                    let _ = seq.job.events.send(Event::Text(rest));
                }
                let now = Instant::now();
                let first = seq.first_token_at.unwrap_or(now);
                Event::Done(Usage {
                    finish_reason: reason,
                    prompt_tokens: seq.job.request.prompt_ids.len(),
                    completion_tokens: seq.generated.len(),
                    time_to_first_token: first.duration_since(seq.job.submitted).as_secs_f64(),
                    prefill_seconds: seq.prefill_done.unwrap_or(now).duration_since(seq.started).as_secs_f64(),
                    decode_seconds: now.duration_since(first).as_secs_f64(),
                })
            }
            Err(message) => Event::Error(message),
        };
        // The caller may have gone away; nothing is waiting for the result then.
        let _ = seq.job.events.send(event);
        seq.cache.clear();
        self.free.push(seq.cache);
    }
}
