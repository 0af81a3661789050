//! The scheduler on a tiny model (the transformers-made `tiny-qwen2` fixture: 2 layers,
//! context 512), stepped by hand: admission order, the queue counter, chunked prefill,
//! cancellation by flag and by a closed sink, and a KV budget that is never exceeded. On the
//! tiny Qwen2-VL fixture: image encoding in slices between the steps of a running stream, and
//! cancellation in the middle of an encoding.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use ingot_core::load::LoadedModel;

use super::*;

fn tiny() -> LoadedModel {
    ingot_core::load::load(&ingot_testkit::fixtures_dir().join("tiny-qwen2")).expect("load tiny-qwen2")
}

/// Records every event; reports itself closed once `closed` is set.
#[derive(Clone, Default)]
struct Recorder {
    events: Arc<Mutex<Vec<(usize, Event)>>>,
    closed: Arc<AtomicBool>,
}

struct Tag(usize, Recorder);

impl EventSink for Tag {
    fn send(&mut self, event: Event) -> Result<(), crate::Closed> {
        self.1.events.lock().expect("lock").push((self.0, event));
        Ok(())
    }

    fn is_closed(&self) -> bool {
        self.1.closed.load(Ordering::Relaxed)
    }
}

impl Recorder {
    /// Each tag's text, and its usage once done.
    fn results(&self, tags: usize) -> Vec<(String, Option<Usage>)> {
        let mut out = vec![(String::new(), None); tags];
        for (tag, e) in self.events.lock().expect("lock").iter() {
            match e {
                Event::Text(t) => out[*tag].0.push_str(t),
                Event::Logprobs(_) => {}
                Event::Done(u) => out[*tag].1 = Some(u.clone()),
                Event::Error(e) => panic!("tag {tag}: {e}"),
            }
        }
        out
    }

    /// The position of the first event of `tag` and of its `Done`.
    fn span(&self, tag: usize) -> (usize, usize) {
        let events = self.events.lock().expect("lock");
        let first = events.iter().position(|(t, _)| *t == tag).expect("an event");
        let done = events.iter().position(|(t, e)| *t == tag && matches!(e, Event::Done(_))).expect("done");
        (first, done)
    }
}

/// A prompt of `len` ids drawn from the vocabulary (deterministic).
fn prompt(len: usize, seed: u32) -> Vec<u32> {
    (0..len as u32).map(|i| (i.wrapping_mul(2_654_435_761).wrapping_add(seed * 7919)) % 2000).collect()
}

struct Harness<'m> {
    sched: Scheduler<'m>,
    active: Vec<Seq<'m>>,
    rec: Recorder,
    queued: Arc<AtomicUsize>,
    steps: usize,
}

impl<'m> Harness<'m> {
    fn new(m: &'m LoadedModel, max_seqs: usize, kv_budget_bytes: usize) -> Self {
        Self::with_slices(m, max_seqs, kv_budget_bytes, 0)
    }

    /// A harness whose media encoder slices are `encode_slice_macs` multiply-adds.
    fn with_slices(m: &'m LoadedModel, max_seqs: usize, kv_budget_bytes: usize, encode_slice_macs: u64) -> Self {
        let queued = Arc::new(AtomicUsize::new(0));
        let cap = Capacity {
            max_seqs,
            kv_budget_bytes,
            prefix_cache: true,
            queued: queued.clone(),
            reused_tokens: Arc::default(),
            encode_slice_macs,
            clock: Arc::new(QueueClock::new()),
            max_queue_wait: None,
            lookup: 0,
            lookup_counters: Arc::default(),
        };
        let sched = Scheduler::new(&m.model, Encoders { vision: m.vision.as_ref().map(|v| &v.encoder), audio: None }, &m.tokenizer, None, cap);
        Self { sched, active: Vec::new(), rec: Recorder::default(), queued, steps: 0 }
    }

    /// Queues a request as the handle would; returns its cancel flag.
    fn queue(&mut self, tag: usize, request: ValidRequest) -> Cancel {
        let cancel = Cancel::default();
        self.queued.fetch_add(1, Ordering::Relaxed);
        let sink = Box::new(Tag(tag, self.rec.clone()));
        let job = GenerateJob { request: Arc::new(request), sample: 0, sink, cancel: cancel.clone(), submitted: Instant::now() };
        self.sched.waiting.push_back(job);
        cancel
    }

    /// One turn of the engine loop; false when nothing is left to do.
    fn tick(&mut self) -> bool {
        self.tick_logged(&mut Vec::new())
    }

    /// [`tick`](Self::tick), noting in `log` an `S` when an encoder slice ran and a `T` per
    /// token the text-only sequences sampled in the step.
    fn tick_logged(&mut self, log: &mut Vec<char>) -> bool {
        self.sched.admit_waiting(&mut self.active);
        if self.sched.encode_slice(&mut self.active) {
            log.push('S');
        }
        if self.active.is_empty() && self.sched.encoding.is_empty() {
            return false;
        }
        let text_tokens = |active: &[Seq<'_>]| -> usize {
            active.iter().filter(|s| s.job.request.media.is_none()).map(|s| s.generated.len()).sum()
        };
        let before = text_tokens(&self.active);
        self.sched.step(&mut self.active);
        // A sequence that finished in this step took its token with it; none do while logged.
        log.extend(std::iter::repeat_n('T', text_tokens(&self.active).saturating_sub(before)));
        self.steps += 1;
        assert!(self.sched.pool.used() <= self.sched.pool.capacity(), "the KV budget was exceeded");
        true
    }

    fn run(&mut self) {
        while self.tick() {}
    }
}

/// Text of a request run alone.
fn solo(m: &LoadedModel, ids: Vec<u32>, max_new: usize) -> String {
    let mut h = Harness::new(m, 4, 64 << 20);
    h.queue(0, ValidRequest::greedy(ids, max_new));
    h.run();
    h.rec.results(1).remove(0).0
}

#[test]
fn requests_are_admitted_in_arrival_order_up_to_max_seqs() {
    let m = tiny();
    let mut h = Harness::new(&m, 2, 64 << 20);
    for tag in 0..4 {
        h.queue(tag, ValidRequest::greedy(prompt(6, tag as u32), 3));
    }
    assert!(h.tick());
    assert_eq!(h.active.len(), 2, "max_seqs");
    assert_eq!(h.queued.load(Ordering::Relaxed), 2, "admission takes requests off the queue count");
    h.run();
    let results = h.rec.results(4);
    assert!(results.iter().all(|(_, u)| u.as_ref().is_some_and(|u| u.completion_tokens == 3)), "{results:?}");
    // The later two start only after the first two finished.
    let first_done = h.rec.span(0).1.min(h.rec.span(1).1);
    assert!(h.rec.span(2).0 > first_done && h.rec.span(3).0 > first_done);
    assert_eq!(h.queued.load(Ordering::Relaxed), 0);
}

#[test]
fn a_prompt_split_across_steps_gives_its_solo_tokens() {
    let m = tiny();
    let (a, b) = (prompt(300, 1), prompt(300, 2));
    let want = [solo(&m, a.clone(), 8), solo(&m, b.clone(), 8)];
    let mut h = Harness::new(&m, 4, 64 << 20);
    h.queue(0, ValidRequest::greedy(a, 8));
    h.queue(1, ValidRequest::greedy(b, 8));
    assert!(h.tick());
    // One step prefills at most PREFILL_BUDGET prompt tokens: B got the rest of it.
    assert_eq!((h.active[0].prefilled, h.active[1].prefilled), (300, PREFILL_BUDGET - 300));
    h.run();
    let got: Vec<String> = h.rec.results(2).into_iter().map(|(t, _)| t).collect();
    assert_eq!(got, want);
}

#[test]
fn cancelled_requests_and_closed_sinks_end_at_the_next_step() {
    let m = tiny();
    let mut h = Harness::new(&m, 1, 64 << 20);
    let running = h.queue(0, ValidRequest::greedy(prompt(5, 1), 100));
    let queued = h.queue(1, ValidRequest::greedy(prompt(5, 2), 100));
    assert!(h.tick() && h.tick());
    running.cancel();
    queued.cancel();
    assert!(h.tick() || h.active.is_empty());
    let results = h.rec.results(2);
    let done = |i: usize| results[i].1.clone().expect("done");
    assert_eq!(done(0).finish_reason, FinishReason::Cancelled);
    assert!(done(0).completion_tokens <= 2, "{:?}", done(0));
    assert_eq!((done(1).finish_reason, done(1).completion_tokens), (FinishReason::Cancelled, 0), "left the queue unstarted");
    assert_eq!(h.queued.load(Ordering::Relaxed), 0);

    // A sink that closes (the client went away) cancels the same way.
    let mut h = Harness::new(&m, 1, 64 << 20);
    h.queue(0, ValidRequest::greedy(prompt(5, 3), 100));
    assert!(h.tick());
    h.rec.closed.store(true, Ordering::Relaxed);
    let steps = h.steps;
    h.run();
    assert!(h.steps <= steps + 1, "noticed within a step");
    assert_eq!(h.rec.results(1)[0].1.as_ref().map(|u| u.finish_reason), Some(FinishReason::Cancelled));
}

#[test]
fn the_kv_budget_bounds_what_runs_and_is_never_exceeded() {
    let m = tiny();
    let per_position = SeqCache::bytes_per_position(m.model.config());
    // Room for 100 positions: two 40-position requests at a time, never three.
    let mut h = Harness::new(&m, 8, 100 * per_position);
    for tag in 0..6 {
        h.queue(tag, ValidRequest::greedy(prompt(30, tag as u32), 10));
    }
    let mut most = 0;
    while h.tick() {
        most = most.max(h.active.len());
    }
    assert_eq!(most, 2);
    let results = h.rec.results(6);
    assert!(results.iter().all(|(_, u)| u.as_ref().is_some_and(|u| u.completion_tokens == 10)), "{results:?}");
    assert!(h.sched.pool.used() <= h.sched.pool.capacity());
}

fn tiny_vl() -> LoadedModel {
    ingot_core::load::load(&ingot_testkit::fixtures_dir().join("tiny-qwen2-vl")).expect("load tiny-qwen2-vl")
}

/// A request for the fixture's 64×48 image (16 patches) with a short question, laid out as the
/// handle does.
fn image_request(m: &LoadedModel, max_new: usize) -> ValidRequest {
    use ingot_core::media::{Image, Media, MediaLimits};
    let dir = ingot_testkit::fixtures_dir().join("tiny-qwen2-vl");
    let bytes = std::fs::read(dir.join("image_64x48.png")).expect("image");
    let image = Media::Image(Image::decode(&bytes, "image_64x48.png", &MediaLimits::default()).expect("decode"));
    // The support owns its processors: take them from a second load, as the handle does.
    let (_, _, support) = crate::handle::media_support(tiny_vl().vision, None, &crate::EngineConfig::default()).expect("media support");
    let support = support.expect("a vision model");
    let (ids, media) = support.build_prompt(&m.tokenizer, "<image>Describe this image.", &[image]).expect("layout");
    let mut request = ValidRequest::greedy(ids, max_new);
    request.media = Some(Arc::new(media));
    request
}

#[test]
fn a_running_stream_gets_a_token_between_every_two_encoder_slices() {
    let m = tiny_vl();
    // The image's text when its encoding runs whole, alone.
    let mut alone = Harness::new(&m, 4, 64 << 20);
    alone.queue(0, image_request(&m, 6));
    alone.run();
    let want = alone.rec.results(1).remove(0).0;

    // One row of one stage per slice: 16 patches through the embedding and 2 stages per block,
    // 4 merge units through the merger.
    let mut h = Harness::with_slices(&m, 4, 64 << 20, 1);
    h.queue(0, ValidRequest::greedy(prompt(6, 1), 400));
    while h.active.first().is_none_or(|s| !s.decoding()) {
        assert!(h.tick());
    }
    h.queue(1, image_request(&m, 6));
    let mut log = Vec::new();
    // The first turn admits it and runs its first slice; turn until its encoding is over.
    loop {
        assert!(h.tick_logged(&mut log));
        if h.sched.encoding.is_empty() {
            break;
        }
    }
    let log: String = log.into_iter().collect();
    let depth = m.vision.as_ref().expect("vision").encoder.config().depth;
    assert_eq!(log.matches('S').count(), 16 * (1 + 2 * depth) + 4, "{log}");
    // Slice, token, slice, token...: the stream never waits for two slices.
    assert!(!log.contains("SS"), "{log}");
    assert_eq!(log.matches('T').count(), log.matches('S').count(), "{log}");

    h.run();
    let results = h.rec.results(2);
    assert_eq!(results[1].0, want, "slicing and batching change nothing in the image's answer");
    assert_eq!(results[0].1.as_ref().map(|u| u.completion_tokens), Some(400));
}

#[test]
fn cancelling_a_request_mid_encoding_frees_it() {
    let m = tiny_vl();
    let mut h = Harness::with_slices(&m, 4, 64 << 20, 1);
    let cancel = h.queue(0, image_request(&m, 6));
    for _ in 0..5 {
        assert!(h.tick());
    }
    assert_eq!(h.sched.encoding.len(), 1, "still encoding after 5 slices");
    assert!(h.sched.pool.used() > 0, "it holds its reservation");
    cancel.cancel();
    assert!(!h.tick(), "nothing left to do");
    assert!(h.sched.encoding.is_empty() && h.active.is_empty());
    assert_eq!(h.sched.pool.used(), 0, "its reservation is released");
    let results = h.rec.results(1);
    assert_eq!(results[0].1.as_ref().map(|u| (u.finish_reason, u.completion_tokens)), Some((FinishReason::Cancelled, 0)));
    // The item was never set: a later request with the same image encodes it afresh.
    h.queue(1, image_request(&m, 2));
    h.run();
    assert_eq!(h.rec.results(2)[1].1.as_ref().map(|u| u.completion_tokens), Some(2));
}

#[test]
fn a_request_queued_past_the_wait_bound_is_told_to_retry() {
    let m = tiny();
    let mut h = Harness::new(&m, 1, 64 << 20);
    // Any wait is over a bound of 1 ns: the request that gets the only slot runs, the one
    // still queued behind it after admission is ended at once.
    h.sched.cap.max_queue_wait = Some(std::time::Duration::from_nanos(1));
    h.queue(0, ValidRequest::greedy(prompt(6, 1), 4));
    h.queue(1, ValidRequest::greedy(prompt(6, 2), 4));
    h.run();
    let events = h.rec.events.lock().expect("lock");
    let expired = events.iter().filter(|(tag, e)| *tag == 1 && matches!(e, Event::Error(EngineError::QueueExpired { .. }))).count();
    assert_eq!(expired, 1, "{:?}", events.iter().map(|(t, e)| (t, format!("{e:?}"))).collect::<Vec<_>>());
    assert!(events.iter().any(|(tag, e)| *tag == 0 && matches!(e, Event::Done(_))));
    assert_eq!(h.queued.load(Ordering::Relaxed), 0);
}

/// What a run of one request gave: every text and logprob event (as text), the finish
/// reason and token count, the steps taken and the draft tokens fed and accepted.
#[derive(Debug, PartialEq)]
struct Run {
    events: Vec<String>,
    text: String,
    finish: (FinishReason, usize),
    steps: usize,
    drafted: usize,
    accepted: usize,
}

/// The request `make` gives, run with lookup off and with drafts of up to `lookup` tokens.
fn plain_and_lookup(m: &LoadedModel, make: impl Fn() -> ValidRequest, lookup: usize) -> (Run, Run) {
    let run = |lookup| {
        let mut h = Harness::new(m, 4, 64 << 20);
        h.sched.cap.lookup = lookup;
        h.queue(0, make());
        h.run();
        let mut events = Vec::new();
        let mut text = String::new();
        let mut finish = None;
        for (_, e) in h.rec.events.lock().expect("lock").iter() {
            match e {
                Event::Done(u) => finish = Some((u.finish_reason, u.completion_tokens)),
                Event::Error(e) => panic!("{e}"),
                Event::Text(t) => {
                    text.push_str(t);
                    events.push(format!("{e:?}"));
                }
                other => events.push(format!("{other:?}")),
            }
        }
        let stats = h.sched.cap.lookup_counters.snapshot();
        Run { events, text, finish: finish.expect("done"), steps: h.steps, drafted: stats.drafted, accepted: stats.accepted }
    };
    (run(0), run(lookup))
}

/// Checks that lookup changed nothing but the steps, and that each accepted token saved one.
fn assert_exact(plain: &Run, fast: &Run) {
    assert_eq!(fast.events, plain.events, "the same text and logprob events");
    assert_eq!(fast.finish, plain.finish);
    assert_eq!(plain.accepted, 0);
    assert_eq!(plain.steps - fast.steps, fast.accepted, "every accepted draft token saves one step");
}

/// `request` changed by `f`.
fn with(mut request: ValidRequest, f: impl FnOnce(&mut ValidRequest)) -> ValidRequest {
    f(&mut request);
    request
}

/// A prompt that repeats itself. The tiny model's weights are random, so it copies little;
/// on `repetitive(1)` its greedy text still has n-grams that recur and drafts that hold.
fn repetitive(seed: u32) -> Vec<u32> {
    prompt(3, seed).repeat(20)
}

#[test]
fn lookup_gives_the_tokens_and_logprobs_of_plain_greedy_and_saves_steps() {
    let m = tiny();
    let (plain, fast) = plain_and_lookup(&m, || with(ValidRequest::greedy(repetitive(1), 64), |r| r.logprobs = Some(3)), 4);
    assert_exact(&plain, &fast);
    // The random tiny model seldom copies (drafts mostly miss and then stop): this checks the
    // rejection path; tests/lookup.rs shows acceptance on the real model.
    assert!(fast.drafted > 0, "no draft fed");
    eprintln!("tiny model: {} steps plain, {} with lookup ({} of {} draft tokens accepted)", plain.steps, fast.steps, fast.accepted, fast.drafted);
}

#[test]
fn seeded_sampling_with_penalties_draws_the_same_tokens_with_lookup() {
    let m = tiny();
    let params = ingot_core::sampling::SamplingParams {
        temperature: 0.7,
        top_p: 0.9,
        repetition_penalty: 1.05,
        frequency_penalty: 0.1,
        seed: Some(11),
        ..Default::default()
    };
    let make = || {
        with(ValidRequest::greedy(repetitive(2), 40), |r| {
            r.samples = vec![params.clone()];
            r.logprobs = Some(1);
        })
    };
    let (plain, fast) = plain_and_lookup(&m, make, 4);
    assert_exact(&plain, &fast);
}

#[test]
fn stop_strings_and_token_limits_end_runs_as_in_plain_decoding() {
    let m = tiny();
    let (plain, _) = plain_and_lookup(&m, || ValidRequest::greedy(repetitive(1), 48), 0);
    // A stop string from late in the plain text.
    let at = plain.text.char_indices().nth(plain.text.chars().count() * 3 / 4).expect("text").0;
    let stop: String = plain.text[at..].chars().take(2).collect();
    let (plain, fast) = plain_and_lookup(&m, || with(ValidRequest::greedy(repetitive(1), 48), |r| r.stop = vec![stop.clone()]), 4);
    assert_eq!(plain.finish.0, FinishReason::Stop);
    assert_exact(&plain, &fast);
    for max_new in [1, 2, 7, 30] {
        let (plain, fast) = plain_and_lookup(&m, || ValidRequest::greedy(repetitive(1), max_new), 5);
        assert_eq!(plain.finish, (FinishReason::Length, max_new));
        assert_exact(&plain, &fast);
    }
}

/// The promise lookup's exactness rests on: a token's logits are the same bits whether it
/// is a single decode row or one row of a chunk.
#[test]
fn a_chunk_gives_each_row_the_logits_of_a_single_decode_row() {
    let m = tiny();
    let ids = repetitive(3);
    let (head, tail) = ids.split_at(60);
    let mut chunked = SeqCache::new(m.model.config());
    let mut single = SeqCache::new(m.model.config());
    let run = |cache: &mut SeqCache, tokens: &[u32], logits| {
        let mut input = [SeqInput { tokens, cache, logits, positions: None, embeds: &[] }];
        m.model.forward(&mut input).expect("forward").remove(0)
    };
    run(&mut chunked, head, Logits::None);
    run(&mut single, head, Logits::None);
    let all = run(&mut chunked, tail, Logits::All);
    let one_by_one: Vec<f32> = tail.iter().flat_map(|t| run(&mut single, std::slice::from_ref(t), Logits::Last)).collect();
    assert!(all.iter().zip(&one_by_one).all(|(a, b)| a.to_bits() == b.to_bits()), "rows differ");
}

