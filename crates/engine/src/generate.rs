//! The scheduler: continuous batching of every running sequence, on the engine thread.
//!
//! Our own code (the engine's edge). Each step builds one batch: one token for every
//! decoding sequence plus prompt chunks of newly admitted ones (at most
//! [`PREFILL_BUDGET`] prompt tokens per step, so a long prompt never stalls running streams
//! for more than one chunk), runs the model once, then samples, detokenizes and checks stop
//! conditions per sequence. A finished, cancelled or abandoned sequence leaves at once.
//!
//! Memory: KV caches live within a byte budget. A request is admitted only when its whole
//! reservation (prompt plus `max_new_tokens` positions) fits, so a running sequence never
//! runs out of room and nothing needs preempting; until then it waits in a FIFO queue (the
//! handle refuses new work once that queue holds `max_queue` requests). Finished sequences'
//! caches stay in a prefix pool, inside the same budget, and are evicted least recently used
//! first when an admission needs the room.
//!
//! Prefix reuse: a new request takes the pooled cache sharing its longest token prefix and
//! prefills only the rest (at least its last prompt token, whose logits it needs). Reuse is
//! exact: the kernels compute each row alone, so a prefix computed in another batch or chunk
//! has the very same keys and values.
//!
//! Media: a multimodal request's items are encoded by the vision encoder once, when the
//! request is admitted (an item wholly inside a reused prefix is not encoded at all), and
//! their feature rows replace the embeddings of the item's pad tokens as its prompt chunks go
//! through the model, with the request's M-RoPE positions. The prefix pool keys such tokens by
//! the item's bytes (see `MediaPrompt::keys`), so a cached image is reused only for the very
//! same image.
//!
//! Score jobs (reward models, which never generate) run at once when they arrive: their
//! texts, in batches of at most `max_seqs`, each go through one forward pass from an empty
//! cache, and the value head turns each last hidden state into a score.
//!
//! Invariants: every job gets exactly one terminal event (`Done` or `Error`); a sequence's
//! tokens do not depend on what else is in the batch (the kernels quantize and accumulate
//! each row independently, and attention is per sequence); reserved plus pooled bytes never
//! exceed the budget.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use crossbeam_channel::{Receiver, TryRecvError};
use ingot_core::constraint::Constraint;
use ingot_core::kv_cache::SeqCache;
use ingot_core::model::vision::VisionModel;
use ingot_core::model::{Embeds, Logits, Model, SeqInput};
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
    /// The prompt's prefix-cache keys (computed once, at admission; the pool keeps them).
    keys: Vec<u64>,
    /// Prompt tokens already in the cache.
    prefilled: usize,
    /// Prompt tokens found in the prefix pool rather than computed.
    cached_tokens: usize,
    /// Bytes of the budget held for this sequence.
    reserved: usize,
    sampler: Sampler,
    decoder: StreamDecoder<'t>,
    stop: StopMatcher,
    /// The request's grammar state (taken out of the request), if it asked for structured
    /// output.
    constraint: Option<Constraint>,
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

/// A finished sequence's cache, kept for requests that share its prefix.
struct Pooled {
    /// The prefix keys (see `GenerateRequest::prefix_keys`) of the tokens whose keys and
    /// values the cache holds.
    keys: Vec<u64>,
    cache: SeqCache,
    bytes: usize,
    last_used: u64,
}

/// How the scheduler may use memory and how many sequences it runs.
pub(crate) struct Capacity {
    pub max_seqs: usize,
    pub kv_budget_bytes: usize,
    /// Whether finished caches go to the prefix pool.
    pub prefix_cache: bool,
    /// Requests submitted but not yet admitted, shared with the handles (which refuse new
    /// work when it reaches their limit).
    pub queued: Arc<AtomicUsize>,
    /// Prompt tokens served from the prefix pool since the start (shared with the handles).
    pub reused_tokens: Arc<AtomicUsize>,
}

pub(crate) struct Scheduler<'m> {
    model: &'m Model,
    vision: Option<&'m VisionModel>,
    tokenizer: &'m Tokenizer,
    value_head: Option<&'m ValueHead>,
    eog: Vec<u32>,
    cap: Capacity,
    bytes_per_position: usize,
    waiting: VecDeque<GenerateJob>,
    pool: Vec<Pooled>,
    /// Bytes reserved by running sequences plus bytes held by the pool.
    used_bytes: usize,
    /// Ticks once per admission; orders the pool by recency.
    clock: u64,
}

impl<'m> Scheduler<'m> {
    pub(crate) fn new(
        model: &'m Model,
        vision: Option<&'m VisionModel>,
        tokenizer: &'m Tokenizer,
        value_head: Option<&'m ValueHead>,
        cap: Capacity,
    ) -> Self {
        Self {
            model,
            vision,
            tokenizer,
            value_head,
            eog: tokenizer.eog_ids(),
            bytes_per_position: SeqCache::bytes_per_position(model.config()),
            cap: Capacity { max_seqs: cap.max_seqs.max(1), ..cap },
            waiting: VecDeque::new(),
            pool: Vec::new(),
            used_bytes: 0,
            clock: 0,
        }
    }

    /// Serves jobs until the channel closes and every sequence has finished.
    pub(crate) fn run(&mut self, jobs: &Receiver<Job>) {
        let mut active: Vec<Seq<'m>> = Vec::new();
        let mut open = true;
        loop {
            // Take what has arrived; block only when there is nothing else to do.
            while open {
                let idle = active.is_empty() && self.waiting.is_empty();
                let next = if idle { jobs.recv().map_err(|_| TryRecvError::Disconnected) } else { jobs.try_recv() };
                match next {
                    Ok(Job::Generate(job)) => self.waiting.push_back(job),
                    Ok(Job::Score(job)) => self.score(job),
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) => open = false,
                }
            }
            self.admit_waiting(&mut active);
            if active.is_empty() {
                if let Some(job) = self.waiting.pop_front() {
                    // Cannot happen (the handle rejects requests larger than the whole
                    // budget, and an empty batch frees every byte), but never spin.
                    self.cap.queued.fetch_sub(1, Ordering::Relaxed);
                    let _ = job.events.send(Event::Error("the request does not fit in the KV cache budget".into()));
                    continue;
                }
                if open {
                    continue;
                }
                return;
            }
            self.step(&mut active);
        }
    }

    /// Moves queued requests into the batch, in arrival order, while they fit.
    fn admit_waiting(&mut self, active: &mut Vec<Seq<'m>>) {
        // Requests cancelled while queued leave without running.
        let mut i = 0;
        while i < self.waiting.len() {
            if self.waiting[i].cancel.load(Ordering::Relaxed) {
                let job = self.waiting.remove(i).expect("index in range");
                self.cap.queued.fetch_sub(1, Ordering::Relaxed);
                let _ = job.events.send(Event::Done(Usage::unstarted(&job)));
            } else {
                i += 1;
            }
        }
        while active.len() < self.cap.max_seqs {
            let Some(job) = self.waiting.front() else { break };
            let prompt_len = job.request.prompt_ids.len();
            let need = (prompt_len + job.request.max_new_tokens) * self.bytes_per_position;
            let keys = job.request.prefix_keys();
            // The pooled cache with the longest shared prefix; the last prompt token is
            // always recomputed, since its logits are needed.
            let best = self
                .pool
                .iter()
                .enumerate()
                .map(|(i, p)| (i, common_prefix(&p.keys, &keys).min(prompt_len - 1)))
                .filter(|&(_, k)| k > 0)
                .max_by_key(|&(i, k)| (k, self.pool[i].last_used));
            let reuse = best.map(|(i, k)| (self.pool.swap_remove(i), k));
            if let Some((p, _)) = &reuse {
                self.used_bytes -= p.bytes;
            }
            while self.used_bytes + need > self.cap.kv_budget_bytes && !self.pool.is_empty() {
                let lru = (0..self.pool.len()).min_by_key(|&i| self.pool[i].last_used).expect("pool not empty");
                self.used_bytes -= self.pool.swap_remove(lru).bytes;
            }
            if self.used_bytes + need > self.cap.kv_budget_bytes {
                if let Some((p, _)) = reuse {
                    self.used_bytes += p.bytes;
                    self.pool.push(p);
                }
                break;
            }
            let job = self.waiting.pop_front().expect("front exists");
            self.cap.queued.fetch_sub(1, Ordering::Relaxed);
            self.used_bytes += need;
            self.clock += 1;
            let (mut cache, cached) = match reuse {
                Some((p, k)) => (p.cache, k),
                None => (SeqCache::new(self.model.config()), 0),
            };
            cache.truncate(cached);
            cache.reserve_positions(job.request.prompt_ids.len() + job.request.max_new_tokens);
            self.cap.reused_tokens.fetch_add(cached, Ordering::Relaxed);
            let seq = self.start(job, keys, cache, cached, need);
            match self.encode_media(&seq) {
                Ok(()) => active.push(seq),
                Err(e) => self.finish(seq, Err(e)),
            }
        }
    }

    /// Runs the vision encoder over the request's media items that the reused prefix does
    /// not already hold and that no other sample of the request has encoded yet.
    fn encode_media(&self, seq: &Seq<'m>) -> Result<(), String> {
        let Some(media) = &seq.job.request.media else { return Ok(()) };
        let vision = self.vision.ok_or("this model has no vision encoder")?;
        for (i, item) in media.items.iter().enumerate() {
            if item.start + item.len <= seq.prefilled || item.features.get().is_some() {
                continue;
            }
            let rows = vision
                .encode(&item.processed.pixel_values, item.processed.grid_thw)
                .map_err(|e| format!("image {}: {e}", i + 1))?;
            // Only this thread sets it, and it was empty just above.
            let _ = item.features.set(rows);
        }
        Ok(())
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
        for chunk in job.sequences.chunks(self.cap.max_seqs) {
            let mut caches: Vec<SeqCache> = chunk.iter().map(|_| SeqCache::new(self.model.config())).collect();
            let mut inputs: Vec<SeqInput<'_>> = chunk
                .iter()
                .zip(&mut caches)
                .map(|(tokens, cache)| SeqInput { tokens, cache, logits: Logits::Hidden, positions: None, embeds: &[] })
                .collect();
            match self.model.forward(&mut inputs) {
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

    fn start(&self, mut job: GenerateJob, keys: Vec<u64>, cache: SeqCache, cached: usize, reserved: usize) -> Seq<'m> {
        let constraint = job.request.constraint.take();
        let req = &job.request;
        Seq {
            constraint,
            sampler: Sampler::new(req.params.clone()),
            decoder: StreamDecoder::new(self.tokenizer, req.skip_special_tokens),
            stop: StopMatcher::new(req.stop.clone()),
            cache,
            keys,
            prefilled: cached,
            cached_tokens: cached,
            reserved,
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
        let mut feeds: Vec<Feed> = Vec::new();
        for (idx, seq) in active.iter().enumerate() {
            let media = seq.job.request.media.as_deref();
            if seq.decoding() {
                let last = *seq.generated.last().expect("a decoding sequence has sampled a token");
                let at = seq.cache.len();
                let positions = media.map(|m| m.positions_after_prompt(at..at + 1));
                feeds.push(Feed { idx, tokens: vec![last], logits: Logits::Last, positions, embeds: Vec::new() });
            } else if budget > 0 {
                let prompt = &seq.job.request.prompt_ids;
                let n = (prompt.len() - seq.prefilled).min(budget);
                budget -= n;
                let (start, end) = (seq.prefilled, seq.prefilled + n);
                let logits = if end == prompt.len() { Logits::Last } else { Logits::None };
                let mut embeds = Vec::new();
                if let Some(m) = media {
                    for (item, media_item) in m.items.iter().enumerate() {
                        let (s, e) = (media_item.start.max(start), (media_item.start + media_item.len).min(end));
                        if s < e {
                            embeds.push((item, s - media_item.start..e - media_item.start, s - start));
                        }
                    }
                }
                let positions = media.map(|m| m.positions[start..end].to_vec());
                feeds.push(Feed { idx, tokens: prompt[start..end].to_vec(), logits, positions, embeds });
            }
        }

        let result = {
            let hidden = self.model.config().hidden_size;
            // Each feed's cache and feature rows, borrowed from its sequence.
            let mut parts: Vec<(&mut SeqCache, Vec<Embeds<'_>>)> = Vec::with_capacity(feeds.len());
            let mut rest: &mut [Seq<'m>] = active.as_mut_slice();
            let mut offset = 0;
            for feed in &feeds {
                // Feeds are in increasing index order: split off each sequence.
                let (_, tail) = std::mem::take(&mut rest).split_at_mut(feed.idx - offset);
                let (seq, tail) = tail.split_first_mut().expect("index within active");
                let Seq { cache, job, .. } = seq;
                let embeds = match &job.request.media {
                    None => Vec::new(),
                    Some(media) => feed
                        .embeds
                        .iter()
                        .map(|(item, rows, at)| Embeds {
                            at: *at,
                            rows: &media.items[*item].features.get().expect("an item still to prefill was encoded")
                                [rows.start * hidden..rows.end * hidden],
                        })
                        .collect(),
                };
                parts.push((cache, embeds));
                rest = tail;
                offset = feed.idx + 1;
            }
            let mut inputs: Vec<SeqInput<'_>> = parts
                .iter_mut()
                .zip(&feeds)
                .map(|((cache, embeds), feed)| SeqInput {
                    tokens: &feed.tokens,
                    cache,
                    logits: feed.logits,
                    positions: feed.positions.as_deref(),
                    embeds,
                })
                .collect();
            self.model.forward(&mut inputs)
        };
        let outputs = match result {
            Ok(o) => o,
            Err(e) => {
                // A model error is specific to the batch's inputs, which were validated; fail
                // every sequence in it rather than loop on the same error.
                for feed in feeds.iter().rev() {
                    let seq = active.swap_remove(feed.idx);
                    self.finish(seq, Err(e.to_string()));
                }
                return;
            }
        };

        let mut done: Vec<(usize, Result<FinishReason, String>)> = Vec::new();
        for (feed, mut logits) in feeds.iter().zip(outputs) {
            let seq = &mut active[feed.idx];
            if !seq.decoding() {
                seq.prefilled += feed.tokens.len();
                if !seq.decoding() {
                    continue;
                }
                seq.prefill_done = Some(Instant::now());
            }
            if let Some(reason) = self.advance(seq, &mut logits) {
                done.push((feed.idx, reason));
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
        // Structured output: only what the grammar allows (this sequence's row alone).
        if let Some(Err(e)) = seq.constraint.as_mut().map(|c| c.mask_logits(logits)) {
            return Some(Err(e.to_string()));
        }
        let req = &seq.job.request;
        let id = seq.sampler.sample(logits, &req.prompt_ids, &seq.generated);
        seq.first_token_at.get_or_insert_with(Instant::now);
        seq.generated.push(id);
        let eos_ends = !req.ignore_eos || seq.constraint.is_some();
        if (eos_ends && self.eog.contains(&id)) || req.stop_ids.contains(&id) {
            return Some(Ok(FinishReason::Stop));
        }
        if let Some(Err(e)) = seq.constraint.as_mut().map(|c| c.advance(id)) {
            return Some(Err(e.to_string()));
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

    /// Sends the terminal event and moves the cache into the prefix pool.
    fn finish(&mut self, seq: Seq<'m>, outcome: Result<FinishReason, String>) {
        let Seq { job, mut cache, mut keys, generated, mut stop, reserved, cached_tokens, started, prefill_done, first_token_at, .. } =
            seq;
        let event = match outcome {
            Ok(reason) => {
                let rest = stop.finish();
                if reason != FinishReason::Stop && !rest.is_empty() {
                    let _ = job.events.send(Event::Text(rest));
                }
                let now = Instant::now();
                let first = first_token_at.unwrap_or(now);
                Event::Done(Usage {
                    finish_reason: reason,
                    prompt_tokens: job.request.prompt_ids.len(),
                    completion_tokens: generated.len(),
                    cached_tokens,
                    time_to_first_token: first.duration_since(job.submitted).as_secs_f64(),
                    prefill_seconds: prefill_done.unwrap_or(now).duration_since(started).as_secs_f64(),
                    decode_seconds: now.duration_since(first).as_secs_f64(),
                })
            }
            Err(message) => Event::Error(message),
        };
        // The caller may have gone away; nothing is waiting for the result then.
        let _ = job.events.send(event);
        self.used_bytes -= reserved;
        if cache.is_empty() || !self.cap.prefix_cache {
            return;
        }
        keys.extend(generated.iter().map(|&id| u64::from(id)));
        keys.truncate(cache.len());
        cache.truncate(keys.len());
        cache.shrink_to_fit();
        let bytes = cache.size_in_bytes();
        // A pooled prefix of these tokens is redundant now; if these tokens are a prefix of
        // a pooled entry, that entry serves every request these would.
        if self.pool.iter().any(|p| p.keys.starts_with(&keys)) {
            return;
        }
        let mut i = 0;
        while i < self.pool.len() {
            if keys.starts_with(&self.pool[i].keys) {
                self.used_bytes -= self.pool.swap_remove(i).bytes;
            } else {
                i += 1;
            }
        }
        if self.used_bytes + bytes <= self.cap.kv_budget_bytes {
            self.used_bytes += bytes;
            self.pool.push(Pooled { keys, cache, bytes, last_used: self.clock });
        }
    }
}

/// What one sequence feeds a step.
struct Feed {
    /// Index in the active list.
    idx: usize,
    tokens: Vec<u32>,
    logits: Logits,
    /// M-RoPE positions of `tokens` (multimodal requests only).
    positions: Option<Vec<[u32; 3]>>,
    /// Feature rows replacing token embeddings: (media item, its rows, index in `tokens`).
    embeds: Vec<(usize, std::ops::Range<usize>, usize)>,
}

/// Length of the common prefix of `a` and `b`.
fn common_prefix(a: &[u64], b: &[u64]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}
