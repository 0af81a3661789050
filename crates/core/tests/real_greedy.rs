//! Golden test: greedy decoding of the real GGUF models against llama.cpp's tokens
//! (`fixtures/real/*-greedy.json`). Exact over each item's robust prefix; whole answers for
//! most items; Qwen's first-position top-5 logits within 0.25.

use ingot_core::kv_cache::SeqCache;
use ingot_testkit::{fixtures_dir, model_path};
use ingot_core::model::{Logits, Model, SeqInput};
use ingot_core::weights::gguf::GgufFile;
use ingot_core::sampling::argmax;
use ingot_testkit::json_ids;
use serde_json::Value;

fn load(file: &str) -> Model {
    let path = model_path(&ingot_core::load::models_dir(), file);
    let gguf = GgufFile::open(&path).expect("open model");
    Model::load(&gguf, gguf.config().expect("config")).expect("load model")
}

/// Greedy loop as the fixtures ran it: stop after emitting `eos`, at most `max_new` tokens.
/// Returns the new ids and the first-position logits.
fn greedy(model: &Model, prompt: &[u32], eos: u32, max_new: usize) -> (Vec<u32>, Vec<f32>) {
    let mut cache = SeqCache::new(model.config());
    let mut logits = model
        .forward(&mut [SeqInput { tokens: prompt, cache: &mut cache, logits: Logits::Last, positions: None, embeds: &[] }])
        .expect("prefill")
        .remove(0);
    let first = logits.clone();
    let mut out = Vec::new();
    while out.len() < max_new {
        let next = argmax(&logits);
        out.push(next);
        if next == eos {
            break;
        }
        logits = model
            .forward(&mut [SeqInput { tokens: &[next], cache: &mut cache, logits: Logits::Last, positions: None, embeds: &[] }])
            .expect("decode")
            .remove(0);
    }
    (out, first)
}

/// `logit_tolerance`: bound on the first-position top-5 logit gaps, when the fixture's
/// margins make one meaningful.
fn check(model_file: &str, fixture: &str, min_whole: usize, logit_tolerance: Option<f32>) {
    let model = load(model_file);
    let path = fixtures_dir().join("real").join(fixture);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let doc: Value = serde_json::from_str(&text).expect("fixture json");
    let eos = doc["eos_id"].as_u64().expect("eos_id") as u32;
    let max_new = doc["max_new_tokens"].as_u64().expect("max_new_tokens") as usize;
    let items = doc["items"].as_array().expect("items");
    let mut whole = 0;
    let (mut worst_logit, mut logit_misses) = (0f32, Vec::new());
    for (n, item) in items.iter().enumerate() {
        let prompt = json_ids(&item["prompt_ids"]);
        let expected = json_ids(&item["new_ids"]);
        let robust = item["robust_prefix_len"].as_u64().expect("robust_prefix_len") as usize;
        let (got, first) = greedy(&model, &prompt, eos, max_new);
        assert_eq!(
            got[..robust.min(got.len())],
            expected[..robust],
            "item {n}: tokens differ from llama.cpp within the robust prefix ({robust} tokens)"
        );
        if got == expected {
            whole += 1;
        }
        for pair in item["top5_first_position"].as_array().expect("top5") {
            let id = pair[0].as_u64().expect("id") as usize;
            let want = pair[1].as_f64().expect("logit") as f32;
            worst_logit = worst_logit.max((first[id] - want).abs());
            if logit_tolerance.is_some_and(|tol| (first[id] - want).abs() > tol) {
                logit_misses.push(format!("item {n}: token {id} has {}, llama.cpp {want}", first[id]));
            }
        }
    }
    eprintln!("{fixture}: {whole}/{} whole answers, worst first-position logit gap {worst_logit}", items.len());
    assert!(logit_misses.is_empty(), "first-position top-5 logits off by more than {logit_tolerance:?}: {logit_misses:?}");
    assert!(whole >= min_whole, "only {whole} of {} answers equal llama.cpp's whole (need {min_whole})", items.len());
}

#[test]
fn qwen_greedy_matches_llama_cpp() {
    check(ingot_core::load::DEFAULT_MODEL_FILE, "qwen2.5-coder-0.5b-greedy.json", 6, Some(0.25));
}

#[test]
fn gemma_greedy_matches_llama_cpp() {
    // Gemma's first-position logits are not held to 0.25: computing this file's weights
    // exactly in f32 already lands up to 0.33 away from llama.cpp (its f16 GELU table and
    // 8-bit activations), so the gap measures rounding, not correctness. Tokens are exact.
    check("gemma-3-270m-q4_k_m.gguf", "gemma-3-270m-greedy.json", 4, None);
}
