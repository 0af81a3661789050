//! The engine on the real default model: the chat API, validation, stop strings, stop
//! reasons, streaming text that is always whole UTF-8, cancellation, admission control,
//! prefix reuse, batch invariance, and a handle shared across threads.

mod common;

use std::sync::OnceLock;

use common::{engine, start, submit_chat, submit_prompt};
use ingot_core::template::{ChatTemplate, Message};
use ingot_engine::{
    ChatRequest, EngineConfig, EngineError, EngineHandle, Event, FinishReason, GenParams, Prompt, PromptRequest, Usage,
};

/// Computes every prompt in full: the reference for prefix reuse and batch invariance.
fn uncached_engine() -> &'static EngineHandle {
    static E: OnceLock<EngineHandle> = OnceLock::new();
    E.get_or_init(|| start(EngineConfig { prefix_cache: false, ..EngineConfig::default() }))
}

fn prompt(user: &str) -> Vec<u32> {
    let e = engine();
    let tok = e.tokenizer();
    let t = ChatTemplate::from_jinja(e.chat_template().expect("template"), tok.bos_token(), tok.eos_token()).expect("template");
    let text = t.render(&[Message { role: "user".into(), content: user.into() }], None, true).expect("render");
    tok.encode_prompt(&text).expect("encode")
}

/// A greedy raw-prompt request of `user`'s chat prompt.
fn request(user: &str, max_new_tokens: usize) -> PromptRequest {
    PromptRequest {
        prompt: Prompt::Ids(prompt(user)),
        params: GenParams { max_new_tokens: Some(max_new_tokens), ..GenParams::greedy() },
    }
}

/// Collects the text deltas and the final usage.
fn collect(req: PromptRequest) -> (Vec<String>, Usage) {
    collect_stream(submit_prompt(engine(), req).expect("submit"))
}

fn collect_stream(stream: ingot_engine::Stream) -> (Vec<String>, Usage) {
    let mut deltas = Vec::new();
    for event in stream.events.iter() {
        match event {
            Event::Text(t) => deltas.push(t),
            Event::Logprobs(_) => {}
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
    req.params.stop = vec![" is".into()];
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
    let invalid = |req: PromptRequest| match e.validate_prompt(req) {
        Err(EngineError::Invalid { field, message }) => (field, message),
        other => panic!("expected Invalid, got {other:?}"),
    };
    let mut bad = request("hi", 8);
    bad.params.top_p = Some(0.0);
    let (field, message) = invalid(bad);
    assert!(field == "top_p" && message.contains("top_p must be in (0, 1]"), "{field}: {message}");
    let mut long = request("hi", 8);
    long.params.max_new_tokens = Some(e.model_config().max_position_embeddings);
    let (field, message) = invalid(long);
    assert!(field == "max_new_tokens" && message.contains("context of 32768"), "{field}: {message}");
    let mut oov = request("hi", 8);
    if let Prompt::Ids(ids) = &mut oov.prompt {
        ids.push(10_000_000);
    }
    let (field, message) = invalid(oov);
    assert!(field == "prompt" && message.contains("10000000"), "{field}: {message}");
    let mut stop = request("hi", 8);
    stop.params.stop = vec!["a".into(), String::new()];
    assert_eq!(invalid(stop).0, "stop[1]");
}

#[test]
fn cancelled_requests_finish_as_cancelled_and_the_engine_keeps_serving() {
    let stream = submit_prompt(engine(), request("Count from 1 to 100, one number per line.", 200)).expect("submit");
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
    // Without the prefix cache, so that every prompt is computed in full in both runs.
    let e = uncached_engine();
    let run = |q: &str| collect_stream(submit_prompt(e, request(q, 24)).expect("submit")).0.concat();
    let alone: Vec<String> = questions.iter().map(|q| run(q)).collect();
    // All at once, twice over (16 streams): the scheduler batches them into shared steps.
    let together: Vec<String> = std::thread::scope(|s| {
        let jobs: Vec<_> = questions.iter().chain(questions.iter()).map(|q| s.spawn(move || run(q))).collect();
        jobs.into_iter().map(|j| j.join().expect("thread")).collect()
    });
    for (i, text) in together.iter().enumerate() {
        assert_eq!(text, &alone[i % questions.len()], "request {i} changed when batched");
    }
}

#[test]
fn a_dropped_stream_stops_its_sequence() {
    let stream = submit_prompt(engine(), request("Count from 1 to 100, one number per line.", 200)).expect("submit");
    drop(stream);
    // The engine notices at its next emit and keeps serving others.
    let (text, usage) = collect(request("What is the capital of France?", 64));
    assert!(text.concat().contains("Paris"));
    assert_eq!(usage.finish_reason, FinishReason::Stop);
}

fn user(text: &str, params: GenParams) -> ChatRequest {
    ChatRequest::from_turns([("user", text)], params)
}

#[test]
fn chat_returns_llama_factory_responses() {
    let r = engine().chat(user("What is the capital of France?", GenParams::greedy())).expect("chat");
    assert_eq!(r.len(), 1);
    assert_eq!(r[0].text, "The capital of France is Paris.");
    assert_eq!((r[0].response_length, r[0].finish_reason), (8, FinishReason::Stop));
    assert_eq!(r[0].prompt_length, prompt("What is the capital of France?").len());
    let short = GenParams { max_new_tokens: Some(3), ..GenParams::greedy() };
    let r = engine().chat(user("What is the capital of France?", short)).expect("chat");
    assert_eq!((r[0].text.as_str(), r[0].finish_reason), ("The capital of", FinishReason::Length));
    let stop = GenParams { stop: vec![" is".into()], ..GenParams::greedy() };
    let r = engine().chat(user("What is the capital of France?", stop)).expect("chat");
    assert_eq!((r[0].text.as_str(), r[0].finish_reason), ("The capital of France", FinishReason::Stop));
    // max_length counts the prompt: 2 new tokens here.
    let total = GenParams { max_length: Some(r[0].prompt_length + 2), ..GenParams::greedy() };
    let r = engine().chat(user("What is the capital of France?", total)).expect("chat");
    assert_eq!((r[0].response_length, r[0].finish_reason), (2, FinishReason::Length));
}

#[test]
fn stream_chat_streams_the_same_text_as_chat() {
    let q = "Name three prime numbers.";
    let whole = engine().chat(user(q, GenParams::greedy())).expect("chat").remove(0);
    let (deltas, usage) = collect_stream(engine().stream_chat(user(q, GenParams::greedy())).expect("stream"));
    assert!(deltas.len() > 1, "{deltas:?}");
    assert_eq!(deltas.concat(), whole.text);
    assert_eq!(usage.completion_tokens, whole.response_length);
}

#[test]
fn n_samples_with_a_seed_are_reproducible() {
    let params = GenParams {
        temperature: Some(1.0),
        top_p: Some(1.0),
        top_k: Some(0),
        num_return_sequences: Some(3),
        seed: Some(1234),
        max_new_tokens: Some(12),
        ..GenParams::default()
    };
    let q = "Write a short poem about the sea.";
    let texts = |r: Vec<ingot_engine::Response>| r.into_iter().map(|r| r.text).collect::<Vec<_>>();
    let first = texts(engine().chat(user(q, params.clone())).expect("chat"));
    let second = texts(engine().chat(user(q, params.clone())).expect("chat"));
    assert_eq!(first.len(), 3);
    assert_eq!(first, second, "the same seed must give the same samples");
    assert!(first[0] != first[1] || first[1] != first[2], "samples use different seeds: {first:?}");
}

#[test]
fn chat_requests_are_validated_before_they_run() {
    let e = engine();
    let cases = [
        (GenParams { top_p: Some(1.5), ..Default::default() }, "top_p", "top_p must be in (0, 1]"),
        (GenParams { temperature: Some(-1.0), ..Default::default() }, "temperature", "temperature"),
        (GenParams { num_return_sequences: Some(0), ..Default::default() }, "num_return_sequences", "between 1 and 16"),
        (GenParams { num_return_sequences: Some(17), ..Default::default() }, "num_return_sequences", "between 1 and 16"),
        (GenParams { max_new_tokens: Some(40_000), ..Default::default() }, "max_new_tokens", "context of 32768"),
    ];
    for (params, field, want) in cases {
        match e.chat(user("hi", params.clone())) {
            Err(EngineError::Invalid { field: f, message }) => assert!(f == field && message.contains(want), "{params:?}: {f}: {message}"),
            other => panic!("{params:?}: {other:?}"),
        }
    }
    let empty = ChatRequest { messages: Vec::new(), ..Default::default() };
    assert!(matches!(e.chat(empty), Err(EngineError::Invalid { field, .. }) if field == "messages"));
}

#[test]
fn a_full_queue_is_overloaded_and_a_dropped_stream_frees_its_place() {
    let e = start(EngineConfig { max_seqs: 1, max_queue: 1, ..EngineConfig::default() });
    let long = GenParams { max_new_tokens: Some(500), ..GenParams::greedy() };
    let running = submit_chat(&e, user("Count from 1 to 500, one number per line.", long)).expect("submit").streams;
    // Wait until it runs, so the next request is the one waiting in the queue.
    assert!(matches!(running[0].events.recv(), Ok(Event::Text(_))));
    let waiting = submit_chat(&e, user("What is the capital of France?", GenParams::greedy())).expect("queued").streams;
    assert_eq!(e.queue_depth(), 1);
    match submit_chat(&e, user("Say hello.", GenParams::greedy())) {
        Err(EngineError::Overloaded { queued: 1, limit: 1 }) => {}
        Err(other) => panic!("expected Overloaded, got {other:?}"),
        Ok(_) => panic!("expected Overloaded, got a queued request"),
    }
    drop(running);
    let (text, usage) = collect_stream(waiting.into_iter().next().expect("one stream"));
    assert_eq!(text.concat(), "The capital of France is Paris.");
    assert_eq!(usage.finish_reason, FinishReason::Stop);
}

#[test]
fn the_second_turn_of_a_chat_prefills_only_its_new_tokens() {
    let e = engine();
    let q1 = "Which planet is known as the red planet?";
    let first = e.chat(user(q1, GenParams::greedy())).expect("turn 1").remove(0);
    let turn2 = || {
        ChatRequest::from_turns(
            [("user", q1), ("assistant", first.text.as_str()), ("user", "How far is it from the Sun?")],
            GenParams { max_new_tokens: Some(16), ..GenParams::greedy() },
        )
    };
    let before = e.reused_prompt_tokens();
    let second = e.chat(turn2()).expect("turn 2").remove(0);
    // Everything up to the end of the first reply comes from the cache.
    assert!(
        second.usage.cached_tokens >= first.prompt_length + first.response_length - 1,
        "cached {} of {} prompt tokens; turn 1 was {} + {} tokens",
        second.usage.cached_tokens,
        second.prompt_length,
        first.prompt_length,
        first.response_length
    );
    assert!(second.usage.cached_tokens < second.prompt_length);
    assert!(e.reused_prompt_tokens() >= before + second.usage.cached_tokens);
    // And the answer is exactly the one computed from scratch.
    let reference = uncached_engine().chat(turn2()).expect("reference").remove(0);
    assert_eq!(reference.usage.cached_tokens, 0);
    assert_eq!(second.text, reference.text);
}
