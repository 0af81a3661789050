//! The scheduler: continuous batching of every running sequence, on the engine thread.
//!
//! Our own code (the engine's edge). Each step builds one batch: one token for every
//! decoding sequence (followed by its lookup draft, if any: see [`lookup`] and
//! `Scheduler::accept`, which samples the draft's rows exactly as plain steps would) plus prompt chunks of newly admitted ones (at most
//! [`PREFILL_BUDGET`] prompt tokens per step, so a long prompt never stalls running streams
//! for more than one chunk), runs the model once, then samples, detokenizes and checks stop
//! conditions per sequence. A finished, cancelled or abandoned sequence leaves at once.
//!
//! Memory: the [`PrefixPool`] holds the KV budget. A request is admitted only when its whole
//! reservation fits; until then it waits in a FIFO queue (the handle refuses new work once
//! that queue holds `max_queue` requests). A new request takes the pooled cache sharing its
//! longest prefix and prefills only the rest (at least its last prompt token, whose logits it
//! needs). Reuse is exact: the kernels compute each row alone, so a prefix computed in another
//! batch or chunk has the very same keys and values.
//!
//! Events go straight into each sample's [`EventSink`]; a sink that is closed or refuses an
//! event cancels its sequence at the next step, as does its [`Cancel`].
//!
//! Media: a multimodal request's items are encoded by their modality's encoder once, after
//! admission, in bounded slices between the steps ([`encode`]; an item wholly inside a reused
//! prefix is not encoded at all), and their feature rows replace the embeddings of the item's pad tokens as its prompt chunks go
//! through the model, with the request's M-RoPE positions (vision models). The prefix pool keys
//! such tokens by the item's bytes (see `MediaPrompt::keys`), so a cached image, video or clip is
//! reused only for the very same bytes.
//!
//! LoRA adapters: a request naming an adapter runs with it unmerged; each step passes every
//! sequence's adapter to the forward pass, which groups rows by adapter. Admission makes the
//! adapter resident first (`crate::lora`: read between steps, at most one per admission
//! pass; the request waits at the head of the queue while no slot is free), and the prefix
//! pool only shares caches computed with the same adapter.
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
use ingot_core::model::lora::LoraAdapter;
use ingot_core::model::{Embeds, ForwardError, Logits, Model, SeqInput};
use ingot_core::reward::ValueHead;
use ingot_core::sampling::{token_logprobs, Sampler};
use ingot_core::stop::StopMatcher;
use ingot_core::tokenizer::{StreamDecoder, Tokenizer};

use crate::event::{Cancel, Event, EventSink, FinishReason, TokenLogprob, TokenLogprobs, Usage};
use crate::lora::{Acquired, Resident};
use crate::media::Encoders;
use crate::prefix_pool::PrefixPool;
use crate::queue_wait::{QueueClock, Shed};
use crate::request::ValidRequest;
use crate::EngineError;
use self::encode::Encoding;
use self::lookup::{Drafter, LookupCounters};

/// Prompt tokens processed per step, over all prefilling sequences: bounds both the
/// activation memory of a step and how long decoding streams wait behind a new prompt.
const PREFILL_BUDGET: usize = 512;

/// Work for the engine thread.
pub(crate) enum Job {
    Generate(GenerateJob),
    Score(ScoreJob),
}

/// One sample of a validated request.
pub(crate) struct GenerateJob {
    pub request: Arc<ValidRequest>,
    /// Which sample (its sampling settings are `request.samples[sample]`).
    pub sample: usize,
    pub sink: Box<dyn EventSink>,
    pub cancel: Cancel,
    pub submitted: Instant,
}

impl GenerateJob {
    /// Whether the caller cancelled or stopped listening.
    pub(super) fn abandoned(&self) -> bool {
        self.cancel.is_cancelled() || self.sink.is_closed()
    }
}

/// Texts to score, already tokenized; the scores (in order) or the failure go to `reply`.
pub(crate) struct ScoreJob {
    pub sequences: Vec<Vec<u32>>,
    pub reply: Box<dyn FnOnce(Result<Vec<f32>, EngineError>) + Send>,
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
    /// The step's logits as the model gave them, kept only when the request asks for
    /// logprobs (which describe the model's distribution, not the penalised or masked one).
    raw_logits: Vec<f32>,
    /// The request's LoRA adapter, held while the sequence runs.
    adapter: Option<Arc<LoraAdapter>>,
    /// Drafts for lookup decoding (`None`: off).
    drafter: Option<Drafter>,
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
    /// Multiply-adds of one media encoder slice between two steps (0: a whole item at once).
    pub encode_slice_macs: u64,
    /// Queue and service times (shared with the handles, which estimate waits from them).
    pub clock: Arc<QueueClock>,
    /// Queued requests that wait longer than this for a slot end with
    /// [`EngineError::QueueExpired`] (`None`: they wait however long it takes).
    pub max_queue_wait: Option<std::time::Duration>,
    /// Most draft tokens lookup decoding verifies per step and sequence (0: off).
    pub lookup: usize,
    /// Draft tokens verified and accepted since the start (shared with the handles).
    pub lookup_counters: Arc<LookupCounters>,
}

pub(crate) struct Scheduler<'m> {
    model: &'m Model,
    encoders: Encoders<'m>,
    tokenizer: &'m Tokenizer,
    value_head: Option<&'m ValueHead>,
    eog: Vec<u32>,
    cap: Capacity,
    bytes_per_position: usize,
    waiting: VecDeque<GenerateJob>,
    /// Admitted requests whose media are being encoded, in admission order.
    encoding: VecDeque<Encoding<'m>>,
    /// The KV budget and the finished caches kept for reuse.
    pool: PrefixPool<SeqCache>,
    /// The LoRA adapters in memory.
    adapters: Resident,
}

impl<'m> Scheduler<'m> {
    pub(crate) fn new(
        model: &'m Model,
        encoders: Encoders<'m>,
        tokenizer: &'m Tokenizer,
        value_head: Option<&'m ValueHead>,
        cap: Capacity,
    ) -> Self {
        Self {
            model,
            encoders,
            tokenizer,
            value_head,
            eog: tokenizer.eog_ids(),
            bytes_per_position: SeqCache::bytes_per_position(model.config()),
            pool: PrefixPool::new(cap.kv_budget_bytes, cap.prefix_cache),
            cap: Capacity { max_seqs: cap.max_seqs.max(1), ..cap },
            waiting: VecDeque::new(),
            adapters: Resident::default(),
            encoding: VecDeque::new(),
        }
    }

    /// Serves the LoRA adapters of `resident` (none by default).
    pub(crate) fn with_adapters(self, resident: Resident) -> Self {
        Self { adapters: resident, ..self }
    }

    /// Serves jobs until the channel closes and every sequence has finished.
    pub(crate) fn run(&mut self, jobs: &Receiver<Job>) {
        let mut active: Vec<Seq<'m>> = Vec::new();
        let mut open = true;
        loop {
            // Take what has arrived; block only when there is nothing else to do.
            while open {
                let idle = active.is_empty() && self.waiting.is_empty() && self.encoding.is_empty();
                let next = if idle { jobs.recv().map_err(|_| TryRecvError::Disconnected) } else { jobs.try_recv() };
                match next {
                    Ok(Job::Generate(job)) => self.waiting.push_back(job),
                    Ok(Job::Score(job)) => self.score(job),
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) => open = false,
                }
            }
            self.admit_waiting(&mut active);
            self.encode_slice(&mut active);
            if active.is_empty() && self.encoding.is_empty() {
                if let Some(job) = self.waiting.pop_front() {
                    // Cannot happen (the handle rejects requests larger than the whole
                    // budget, and an empty batch frees every byte), but never spin.
                    self.cap.queued.fetch_sub(1, Ordering::Relaxed);
                    let mut job = job;
                    let budget = self.pool.capacity() / self.bytes_per_position.max(1);
                    let _ = job.sink.send(Event::Error(EngineError::invalid(
                        "max_new_tokens",
                        format!("the request does not fit in the KV cache budget of {budget} tokens"),
                    )));
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
            if self.waiting[i].abandoned() {
                let mut job = self.waiting.remove(i).expect("index in range");
                self.cap.queued.fetch_sub(1, Ordering::Relaxed);
                let _ = job.sink.send(Event::Done(Usage::unstarted(job.request.prompt_ids.len())));
            } else {
                i += 1;
            }
        }
        let mut may_read = true;
        while active.len() + self.encoding.len() < self.cap.max_seqs {
            let Some(job) = self.waiting.front() else { break };
            let adapter = match job.request.adapter.map(|id| self.adapter_for(id, may_read, active)) {
                None => None,
                Some(Ok(Acquired::Resident(a))) => Some(a),
                Some(Ok(Acquired::Read(a))) => {
                    may_read = false;
                    Some(a)
                }
                Some(Ok(Acquired::Wait)) => break,
                Some(Err(e)) => {
                    let mut job = self.waiting.pop_front().expect("front exists");
                    self.cap.queued.fetch_sub(1, Ordering::Relaxed);
                    let _ = job.sink.send(Event::Error(e));
                    continue;
                }
            };
            let job = self.waiting.front().expect("front exists");
            let prompt_len = job.request.prompt_ids.len();
            let need = (prompt_len + job.request.max_new_tokens) * self.bytes_per_position;
            let keys = job.request.prefix_keys();
            // The last prompt token is always recomputed, since its logits are needed.
            let Some(admission) = self.pool.admit(job.request.adapter, &keys, prompt_len - 1, need) else { break };
            let job = self.waiting.pop_front().expect("front exists");
            self.cap.queued.fetch_sub(1, Ordering::Relaxed);
            self.cap.clock.admitted(job.submitted);
            let (mut cache, cached) = admission.reused.unwrap_or_else(|| (SeqCache::new(self.model.config()), 0));
            cache.truncate(cached);
            cache.reserve_positions(prompt_len + job.request.max_new_tokens);
            self.cap.reused_tokens.fetch_add(cached, Ordering::Relaxed);
            let mut seq = self.start(job, keys, cache, cached, need);
            seq.adapter = adapter;
            self.enter(seq, active);
        }
        self.expire_waiting();
        self.cap.clock.set_head(self.waiting.front().map(|job| job.submitted), self.cap.queued.load(Ordering::Relaxed));
    }

    /// Ends the queued requests that have waited past `max_queue_wait` with a "retry later":
    /// the handle's estimate at submission can be short (a burst, or no service time measured
    /// yet), and a client is better told at once than left to time out.
    fn expire_waiting(&mut self) {
        let Some(limit) = self.cap.max_queue_wait else { return };
        let (queued, clock) = (&self.cap.queued, &self.cap.clock);
        self.waiting.retain_mut(|job| {
            let waited = job.submitted.elapsed();
            if waited <= limit {
                return true;
            }
            queued.fetch_sub(1, Ordering::Relaxed);
            clock.shed(Shed::QueueWait);
            let _ = job.sink.send(Event::Error(EngineError::QueueExpired { waited, limit }));
            false
        });
    }

    /// Adapter `id`, for a queued request, made resident if need be; reads
    /// one from disk only if `may_read`, evicting one no sequence in `active` uses.
    fn adapter_for(&mut self, id: usize, may_read: bool, active: &[Seq<'m>]) -> Result<Acquired, EngineError> {
        let in_use = |i| active.iter().any(|s| s.job.request.adapter == Some(i));
        self.adapters.acquire(self.model, id, may_read, in_use)
    }

    /// Scores every sequence of the job and replies; the caches go back to the free list.
    fn score(&mut self, job: ScoreJob) {
        let Some(head) = self.value_head else {
            // The handle only sends score jobs for reward models; answer rather than hang.
            (job.reply)(Err(EngineError::NoValueHead));
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
                    result = Err(e.into());
                    break;
                }
            }
        }
        (job.reply)(result.map(|()| scores));
    }

    fn start(&self, job: GenerateJob, keys: Vec<u64>, cache: SeqCache, cached: usize, reserved: usize) -> Seq<'m> {
        let req = &job.request;
        Seq {
            constraint: req.constraint.clone(),
            adapter: None,
            drafter: (self.cap.lookup > 0).then(|| Drafter::new(self.cap.lookup, &req.prompt_ids)),
            sampler: Sampler::new(req.samples[job.sample].clone()),
            decoder: StreamDecoder::new(self.tokenizer, req.skip_special_tokens),
            stop: StopMatcher::new(req.stop.clone()),
            cache,
            keys,
            prefilled: cached,
            cached_tokens: cached,
            reserved,
            raw_logits: Vec::new(),
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
            if active[i].job.abandoned() {
                let seq = active.swap_remove(i);
                self.finish(seq, Ok(FinishReason::Cancelled));
            } else {
                i += 1;
            }
        }
        if active.is_empty() {
            return;
        }
        debug_assert!(self.pool.used() <= self.pool.capacity(), "the KV budget is exceeded");

        let feeds = plan(active);
        let result = self.forward(active, &feeds);
        let outputs = match result {
            Ok(o) => o,
            Err(e) => {
                // A model error is specific to the batch's inputs, which were validated; fail
                // every sequence in it rather than loop on the same error.
                for feed in feeds.iter().rev() {
                    let seq = active.swap_remove(feed.idx);
                    self.finish(seq, Err(e.clone().into()));
                }
                return;
            }
        };

        let mut done: Vec<(usize, Result<FinishReason, EngineError>)> = Vec::new();
        for (feed, mut logits) in feeds.iter().zip(outputs) {
            let seq = &mut active[feed.idx];
            if !seq.decoding() {
                seq.prefilled += feed.tokens.len();
                if !seq.decoding() {
                    continue;
                }
                seq.prefill_done = Some(Instant::now());
            }
            if let Some(reason) = self.accept(seq, &feed.tokens, &mut logits) {
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

    /// One forward pass over the planned feeds, each with its sequence's cache and feature rows.
    fn forward(&self, active: &mut [Seq<'m>], feeds: &[Feed]) -> Result<Vec<Vec<f32>>, ForwardError> {
        let hidden = self.model.config().hidden_size;
        // Each feed's cache and feature rows, borrowed from its sequence.
        let mut parts: Vec<(&mut SeqCache, Vec<Embeds<'_>>)> = Vec::with_capacity(feeds.len());
        let mut adapters: Vec<Option<&LoraAdapter>> = Vec::with_capacity(feeds.len());
        let mut rest: &mut [Seq<'m>] = active;
        let mut offset = 0;
        for feed in feeds {
            // Feeds are in increasing index order: split off each sequence.
            let (_, tail) = std::mem::take(&mut rest).split_at_mut(feed.idx - offset);
            let (seq, tail) = tail.split_first_mut().expect("index within active");
            let Seq { cache, job, adapter, .. } = seq;
            adapters.push(adapter.as_deref());
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
            .zip(feeds)
            .map(|((cache, embeds), feed)| SeqInput {
                tokens: &feed.tokens,
                cache,
                logits: feed.logits,
                positions: feed.positions.as_deref(),
                embeds,
            })
            .collect();
        self.model.forward_with_adapters(&mut inputs, &adapters)
    }

    /// Samples a decoding sequence's new tokens from the step's logits rows, in order, and
    /// streams them; returns why the sequence ends, if it does. `fed` is what the sequence fed
    /// the step: with a lookup draft, its last token and the draft, one row each.
    ///
    /// Exact, whatever the sampling settings: row `i` is sampled only when every earlier draft
    /// token was the very token sampled before it, so its logits are those plain decoding
    /// would compute at that step (the kernels compute each row alone: see the module's
    /// invariants), and it goes through [`advance`](Self::advance) with the same history,
    /// grammar state, penalties and random stream as a plain step would. The first row whose
    /// sampled token differs from the draft ends the run (that token is the correction), and
    /// the cache forgets the rejected draft positions.
    fn accept(&self, seq: &mut Seq<'m>, fed: &[u32], logits: &mut [f32]) -> Option<Result<FinishReason, EngineError>> {
        let vocab = self.model.config().vocab_size;
        let rows = logits.len() / vocab;
        let draft = &fed[fed.len() + 1 - rows..];
        let mut accepted = 0;
        let mut outcome = None;
        for row in logits.chunks_exact_mut(vocab) {
            let before = seq.generated.len();
            outcome = self.advance(seq, row);
            // A draft token equal to the one sampled saves the step that would have sampled it.
            let hit = seq.generated.len() > before && draft.get(accepted) == seq.generated.last();
            accepted += usize::from(hit);
            if outcome.is_some() || !hit {
                break;
            }
        }
        if !draft.is_empty() {
            // The cache holds every token but the last sampled one, as after a plain step.
            seq.cache.truncate(seq.job.request.prompt_ids.len() + seq.generated.len() - 1);
            self.cap.lookup_counters.add(draft.len(), accepted);
        }
        outcome
    }

    /// Samples the next token of a decoding sequence and streams its text; returns why the
    /// sequence ends, if it does.
    fn advance(&self, seq: &mut Seq<'m>, logits: &mut [f32]) -> Option<Result<FinishReason, EngineError>> {
        if seq.job.request.logprobs.is_some() {
            seq.raw_logits.clear();
            seq.raw_logits.extend_from_slice(logits);
        }
        // Structured output: only what the grammar allows (this sequence's row alone).
        if let Some(Err(e)) = seq.constraint.as_mut().map(|c| c.mask_logits(logits)) {
            return Some(Err(e.into()));
        }
        let req = &seq.job.request;
        let id = seq.sampler.sample(logits, &req.prompt_ids, &seq.generated);
        seq.first_token_at.get_or_insert_with(Instant::now);
        seq.generated.push(id);
        if let Some(d) = &mut seq.drafter {
            d.sampled(id);
        }
        let eos_ends = !req.ignore_eos || seq.constraint.is_some();
        if (eos_ends && self.eog.contains(&id)) || req.stop_ids.contains(&id) {
            return Some(Ok(FinishReason::Stop));
        }
        if let Some(Err(e)) = seq.constraint.as_mut().map(|c| c.advance(id)) {
            return Some(Err(e.into()));
        }
        if let Some(n) = req.logprobs {
            let event = Event::Logprobs(self.named(token_logprobs(&seq.raw_logits, id, n)));
            if seq.job.sink.send(event).is_err() {
                return Some(Ok(FinishReason::Cancelled));
            }
        }
        let text = match seq.decoder.push(id) {
            Ok(t) => t,
            Err(e) => return Some(Err(e.into())),
        };
        let step = seq.stop.push(&text);
        if !step.emit.is_empty() && seq.job.sink.send(Event::Text(step.emit)).is_err() {
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

    /// Log-probabilities with each token's text.
    fn named(&self, lp: ingot_core::sampling::TokenLogprobs) -> TokenLogprobs {
        let entry = |id: u32, logprob: f32| {
            // Control tokens are not text; they are reported by their own text, as vLLM does.
            let bytes = self
                .tokenizer
                .text_bytes(id)
                .unwrap_or_else(|| self.tokenizer.id_to_token(id).unwrap_or_default().as_bytes().to_vec());
            TokenLogprob { id, bytes, logprob }
        };
        TokenLogprobs { token: entry(lp.id, lp.logprob), top: lp.top.into_iter().map(|(id, l)| entry(id, l)).collect() }
    }

    /// Sends the terminal event and offers the cache to the prefix pool.
    fn finish(&mut self, seq: Seq<'m>, outcome: Result<FinishReason, EngineError>) {
        let Seq { mut job, mut cache, mut keys, generated, mut stop, reserved, cached_tokens, started, prefill_done, first_token_at, .. } =
            seq;
        // The caller may have gone away; nothing is waiting for the result then.
        let event = match outcome {
            Ok(reason) => {
                let rest = stop.finish();
                if reason != FinishReason::Stop && !rest.is_empty() {
                    let _ = job.sink.send(Event::Text(rest));
                }
                let now = Instant::now();
                let first = first_token_at.unwrap_or(now);
                let own = &job.request.stop[..job.request.own_stops];
                let stop_string = stop.matched().filter(|m| own.iter().any(|s| s == m)).map(str::to_owned);
                Event::Done(Usage {
                    finish_reason: reason,
                    prompt_tokens: job.request.prompt_ids.len(),
                    completion_tokens: generated.len(),
                    cached_tokens,
                    time_to_first_token: first.duration_since(job.submitted).as_secs_f64(),
                    prefill_seconds: prefill_done.unwrap_or(now).duration_since(started).as_secs_f64(),
                    decode_seconds: now.duration_since(first).as_secs_f64(),
                    stop_string,
                })
            }
            Err(e) => Event::Error(e),
        };
        let _ = job.sink.send(event);
        self.cap.clock.served(started);
        self.pool.release(reserved);
        if cache.is_empty() || !self.cap.prefix_cache {
            return;
        }
        keys.extend(generated.iter().map(|&id| u64::from(id)));
        keys.truncate(cache.len());
        cache.truncate(keys.len());
        cache.shrink_to_fit();
        let bytes = cache.size_in_bytes();
        self.pool.offer(job.request.adapter, keys, cache, bytes);
    }
}

/// What each sequence feeds this step: one token per decoding sequence, and prompt chunks of
/// prefilling ones, in order, while the step's prefill budget lasts. In index order.
fn plan(active: &[Seq<'_>]) -> Vec<Feed> {
    let mut budget = PREFILL_BUDGET;
    // Draft rows fill what the decoding sequences leave of one weight tile (see `lookup`).
    let mut draft_rows = lookup::STEP_ROWS.saturating_sub(active.iter().filter(|s| s.decoding()).count());
    let mut feeds: Vec<Feed> = Vec::new();
    for (idx, seq) in active.iter().enumerate() {
        let media = seq.job.request.media.as_deref();
        if seq.decoding() {
            let last = *seq.generated.last().expect("a decoding sequence has sampled a token");
            // A draft never runs past the last token the request may still sample.
            let room = seq.job.request.max_new_tokens - seq.generated.len() - 1;
            let draft = seq.drafter.as_ref().map_or(&[][..], |d| {
                let candidate = d.draft(room.min(draft_rows));
                &candidate[..d.worth(candidate.len())]
            });
            draft_rows -= draft.len();
            let mut tokens = Vec::with_capacity(1 + draft.len());
            tokens.push(last);
            tokens.extend_from_slice(draft);
            let at = seq.cache.len();
            let positions = media.and_then(|m| m.positions_after_prompt(at..at + tokens.len()));
            let logits = if draft.is_empty() { Logits::Last } else { Logits::All };
            feeds.push(Feed { idx, tokens, logits, positions, embeds: Vec::new() });
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
            let positions = media.and_then(|m| m.prompt_positions(start..end));
            feeds.push(Feed { idx, tokens: prompt[start..end].to_vec(), logits, positions, embeds });
        }
    }
    feeds
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

mod encode;
pub(crate) mod lookup;
#[cfg(test)]
mod tests;
