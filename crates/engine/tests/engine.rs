//! The engine on the real default model: validation, stop strings, stop reasons, streaming
//! text that is always whole UTF-8, cancellation, and a handle shared across threads.

use std::sync::OnceLock;

use ingot_core::sampling::SamplingParams;
use ingot_core::template::{ChatTemplate, Message};
use ingot_engine::{EngineConfig, EngineError, EngineHandle, Event, FinishReason, GenerateRequest, Usage};

fn engine() -> &'static EngineHandle {
    static E: OnceLock<EngineHandle> = OnceLock::new();
    E.get_or_init(|| {
        let path = ingot_core::testing::model_path(ingot_core::load::DEFAULT_MODEL_FILE);
        let loaded = ingot_core::load::load(&path).expect("load model");
        ingot_engine::start(loaded, EngineConfig { threads: 2, ..EngineConfig::default() }).expect("start engine")
    })
}

fn prompt(user: &str) -> Vec<u32> {
    let e = engine();
    let tok = e.tokenizer();
    let t = ChatTemplate::from_jinja(e.chat_template().expect("template"), tok.bos_token(), tok.eos_token()).expect("template");
    let text = t.render(&[Message { role: "user".into(), content: user.into() }], None, true).expect("render");
    e.encode_prompt(&text).expect("encode")
}

fn request(user: &str, max_new_tokens: usize) -> GenerateRequest {
    GenerateRequest {
        prompt_ids: prompt(user),
        params: SamplingParams::greedy(),
        max_new_tokens,
        stop: Vec::new(),
        stop_ids: Vec::new(),
        skip_special_tokens: true,
        ignore_eos: false,
    }
}

/// Collects the text deltas and the final usage.
fn collect(req: GenerateRequest) -> (Vec<String>, Usage) {
    let stream = engine().submit(req).expect("submit");
    let mut deltas = Vec::new();
    for event in stream.events.iter() {
        match event {
            Event::Text(t) => deltas.push(t),
            Event::Done(u) => return (deltas, u),
            Event::Error(e) => panic!("engine error: {e}"),
        }
    }
    panic!("stream ended without Done");
}

#[test]
fn eos_is_stop_and_limit_is_length() {
    let (text, usage) = collect(request("What is the capital of France?", 64));
    assert_eq!(text.concat(), "The capital of France is Paris.");
    assert_eq!(usage.finish_reason, FinishReason::Stop);
    assert_eq!(usage.completion_tokens, 8, "7 tokens of text and <|im_end|>");
    let (text, usage) = collect(request("What is the capital of France?", 3));
    assert_eq!(usage.finish_reason, FinishReason::Length);
    assert_eq!(usage.completion_tokens, 3);
    assert_eq!(text.concat(), "The capital of");
}

#[test]
fn stop_strings_end_generation_and_are_not_emitted() {
    let mut req = request("What is the capital of France?", 64);
    req.stop = vec![" is".into()];
    let (text, usage) = collect(req);
    assert_eq!(text.concat(), "The capital of France");
    assert_eq!(usage.finish_reason, FinishReason::Stop);
}

#[test]
fn streamed_text_is_whole_utf8_characters() {
    let (text, _) = collect(request("Reply with three emoji and the word 東京 (Tokyo), nothing else.", 24));
    // Every delta is a String, so valid UTF-8; none may carry a replacement character from
    // a character cut in half between tokens.
    assert!(text.iter().all(|d| !d.contains('\u{FFFD}')), "{text:?}");
    assert!(text.concat().chars().any(|c| c as u32 > 0xFFFF || ('\u{4E00}'..='\u{9FFF}').contains(&c)), "{text:?}");
}

#[test]
fn invalid_requests_name_the_field_and_limit() {
    let e = engine();
    let mut bad = request("hi", 8);
    bad.params.top_p = 0.0;
    assert!(matches!(e.submit(bad), Err(EngineError::Invalid(m)) if m.contains("top_p")));
    let mut long = request("hi", 8);
    long.max_new_tokens = e.model_config().max_position_embeddings;
    assert!(matches!(e.submit(long), Err(EngineError::Invalid(m)) if m.contains("context of 32768")));
    let mut oov = request("hi", 8);
    oov.prompt_ids.push(10_000_000);
    assert!(matches!(e.submit(oov), Err(EngineError::Invalid(m)) if m.contains("10000000")));
}

#[test]
fn cancelled_requests_finish_as_cancelled_and_the_engine_keeps_serving() {
    let stream = engine().submit(request("Count from 1 to 100, one number per line.", 200)).expect("submit");
    stream.cancel();
    let last = stream.events.iter().last().expect("events");
    assert!(matches!(last, Event::Done(Usage { finish_reason: FinishReason::Cancelled, .. })), "{last:?}");
    let (text, _) = collect(request("What is the capital of France?", 64));
    assert!(text.concat().contains("Paris"));
}

#[test]
fn handles_work_from_many_threads() {
    let answers: Vec<String> = std::thread::scope(|s| {
        let jobs: Vec<_> = (0..3)
            .map(|_| s.spawn(|| collect(request("What is the capital of France?", 16)).0.concat()))
            .collect();
        jobs.into_iter().map(|j| j.join().expect("thread")).collect()
    });
    assert!(answers.iter().all(|a| a == "The capital of France is Paris."), "{answers:?}");
}

#[test]
fn concurrent_greedy_requests_get_the_tokens_they_get_alone() {
    let questions = [
        "What is the capital of France?",
        "Write a Python function that reverses a string.",
        "Name three prime numbers.",
        "What is 12 times 12?",
        "Explain what a hash map is in one sentence.",
        "Say hello in Spanish.",
        "What colour is the sky on a clear day?",
        "List the first five letters of the alphabet.",
    ];
    let alone: Vec<String> = questions.iter().map(|q| collect(request(q, 24)).0.concat()).collect();
    // All at once, twice over (16 streams): the scheduler batches them into shared steps.
    let together: Vec<String> = std::thread::scope(|s| {
        let jobs: Vec<_> = questions
            .iter()
            .chain(questions.iter())
            .map(|q| s.spawn(move || collect(request(q, 24)).0.concat()))
            .collect();
        jobs.into_iter().map(|j| j.join().expect("thread")).collect()
    });
    for (i, text) in together.iter().enumerate() {
        assert_eq!(text, &alone[i % questions.len()], "request {i} changed when batched");
    }
}

#[test]
fn a_dropped_stream_stops_its_sequence() {
    let stream = engine().submit(request("Count from 1 to 100, one number per line.", 200)).expect("submit");
    drop(stream);
    // The engine notices at its next emit and keeps serving others.
    let (text, usage) = collect(request("What is the capital of France?", 64));
    assert!(text.concat().contains("Paris"));
    assert_eq!(usage.finish_reason, FinishReason::Stop);
}
