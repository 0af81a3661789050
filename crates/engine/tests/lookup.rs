//! Lookup (prompt n-gram) speculative decoding on the real default model: it gives exactly the
//! tokens, text, logprobs and finish of plain decoding (greedy, penalised, sampled with a seed,
//! under a JSON grammar, with a stop string inside a copied run), saves steps where the output
//! copies its prompt, and rests on the kernels giving a row the same bits alone or in a chunk.

mod common;

use common::start;
use ingot_core::kv_cache::SeqCache;
use ingot_core::model::{Logits, SeqInput};
use ingot_engine::{ChatRequest, EngineConfig, EngineHandle, Event, FinishReason, GenParams, ResponseFormat, DEFAULT_LOOKUP};

const PASSAGE: &str = "The quick brown fox jumps over the lazy dog near the riverbank, \
while three small birds sing on a branch of the old oak tree and a farmer walks slowly home.";

/// Every text and logprob event of one sample (as text), and its finish reason and length.
fn run(e: &EngineHandle, user: &str, params: GenParams) -> (Vec<String>, String, FinishReason, usize) {
    let params = GenParams { logprobs: Some(2), ..params };
    let stream = e.stream_chat(ChatRequest::from_turns([("user", user)], params)).expect("submit");
    let (mut events, mut text) = (Vec::new(), String::new());
    for event in stream.events.iter() {
        match event {
            Event::Text(t) => {
                text.push_str(&t);
                events.push(format!("{t:?}"));
            }
            Event::Logprobs(l) => events.push(format!("{l:?}")),
            Event::Done(u) => return (events, text, u.finish_reason, u.completion_tokens),
            Event::Error(err) => panic!("engine error: {err}"),
        }
    }
    panic!("stream ended without Done");
}

fn greedy(max_new_tokens: usize) -> GenParams {
    GenParams { max_new_tokens: Some(max_new_tokens), ..GenParams::greedy() }
}

// One test, so that the engine-wide counters measure its requests alone.
#[test]
fn lookup_gives_plain_decodings_tokens_and_saves_steps_on_a_copying_prompt() {
    let plain = start(EngineConfig { lookup: 0, ..EngineConfig::default() });
    let fast = start(EngineConfig { lookup: DEFAULT_LOOKUP, ..EngineConfig::default() });
    let copy = format!("Repeat this text exactly, with nothing else:\n\n{PASSAGE}");

    let want = run(&plain, &copy, greedy(64));
    let got = run(&fast, &copy, greedy(64));
    assert_eq!(got, want);
    assert!(want.1.contains("three small birds sing"), "the model copies: {}", want.1);
    let stats = fast.lookup_stats();
    assert_eq!(plain.lookup_stats().drafted, 0);
    // Steps: one prefill step, then one per token after the first, less one per accepted draft token.
    let plain_steps = want.3;
    let fast_steps = want.3 - stats.accepted;
    eprintln!(
        "copy prompt, {} tokens: {plain_steps} steps plain, {fast_steps} with lookup {DEFAULT_LOOKUP} ({} of {} draft tokens accepted)",
        want.3, stats.accepted, stats.drafted
    );
    assert!(stats.accepted * 2 >= want.3, "lookup saved under half the steps of a copy: {stats:?}");

    // A stop string inside the copied run ends it where plain decoding does.
    let stop = GenParams { stop: vec!["small".into()], ..greedy(64) };
    let (want, got) = (run(&plain, &copy, stop.clone()), run(&fast, &copy, stop));
    assert_eq!(got, want);
    assert_eq!(want.2, FinishReason::Stop);
    assert!(want.1.ends_with("three "), "{}", want.1);

    // Penalties, seeded sampling and a grammar see the same history and logits per token.
    let penalised = GenParams { repetition_penalty: Some(1.1), presence_penalty: Some(0.3), ..greedy(40) };
    let sampled = GenParams { do_sample: Some(true), temperature: Some(0.8), top_p: Some(0.9), seed: Some(5), max_new_tokens: Some(40), ..Default::default() };
    let schema = serde_json::json!({"type": "object", "properties": {"text": {"type": "string"}}, "required": ["text"]});
    let json = GenParams { response_format: Some(ResponseFormat::JsonObject { schema: Some(schema) }), ..greedy(60) };
    let as_json = format!("Return JSON {{\"text\": ...}} holding this text exactly:\n\n{PASSAGE}");
    for (user, params) in [(&copy, penalised), (&copy, sampled), (&as_json, json)] {
        assert_eq!(run(&fast, user, params.clone()), run(&plain, user, params.clone()), "{params:?}");
    }
    assert!(fast.lookup_stats().accepted > stats.accepted);
}

/// The promise lookup's exactness rests on, for the quantized kernels: a token's logits are the
/// same bits whether it is a single decode row or one row of a chunk.
#[test]
fn a_chunk_gives_each_row_the_logits_of_a_single_decode_row() {
    let path = ingot_testkit::model_path(&ingot_core::load::models_dir(), ingot_core::load::DEFAULT_MODEL_FILE);
    let loaded = ingot_core::load::load(&path).expect("load model");
    let model = &loaded.model;
    let ids = loaded.tokenizer.encode_prompt(&format!("{PASSAGE} {PASSAGE}")).expect("encode");
    let (head, tail) = ids.split_at(ids.len() - 6);
    let mut chunked = SeqCache::new(model.config());
    let mut single = SeqCache::new(model.config());
    let forward = |cache: &mut SeqCache, tokens: &[u32], logits| {
        let mut input = [SeqInput { tokens, cache, logits, positions: None, embeds: &[] }];
        model.forward(&mut input).expect("forward").remove(0)
    };
    forward(&mut chunked, head, Logits::None);
    forward(&mut single, head, Logits::None);
    let all = forward(&mut chunked, tail, Logits::All);
    let one_by_one: Vec<f32> = tail.iter().flat_map(|t| forward(&mut single, std::slice::from_ref(t), Logits::Last)).collect();
    assert_eq!(all.len(), one_by_one.len());
    let differing = all.iter().zip(&one_by_one).filter(|(a, b)| a.to_bits() != b.to_bits()).count();
    assert_eq!(differing, 0, "of {} logits", all.len());
}

#[test]
fn a_lookup_over_the_limit_is_refused_naming_it() {
    let path = ingot_testkit::model_path(&ingot_core::load::models_dir(), ingot_core::load::DEFAULT_MODEL_FILE);
    let loaded = ingot_core::load::load(&path).expect("load model");
    let cfg = EngineConfig { lookup: ingot_engine::MAX_LOOKUP + 1, ..EngineConfig::default() };
    let e = ingot_engine::start(loaded, cfg).err().expect("refused");
    assert_eq!(e.field(), Some("lookup"));
    assert!(e.to_string().contains("at most 64"), "{e}");
}
