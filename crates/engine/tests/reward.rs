//! The engine serving a reward model: `get_scores` reproduces transformers' scores in order
//! across several forward passes, and reward models and causal LMs refuse each other's requests.

use ingot_testkit::fixtures_dir;
use ingot_engine::{EngineConfig, EngineError, EngineHandle, GenParams, Prompt, PromptRequest};
use serde_json::Value;

fn start(fixture: &str) -> EngineHandle {
    let mut loaded = ingot_core::load::load(&fixtures_dir().join(fixture)).expect("load");
    // transformers' reference keeps an f32 KV cache; f16 rounding alone exceeds the tolerance.
    loaded.model.set_kv_type(ingot_core::config::KvType::F32);
    // max_seqs 2: the five texts take three forward passes, so chunking and ordering are exercised.
    ingot_engine::start(loaded, EngineConfig { threads: 2, max_seqs: 2, ..EngineConfig::default() }).expect("start engine")
}

#[test]
fn get_scores_matches_transformers_in_order() {
    let path = fixtures_dir().join("tiny-qwen2-rm/scores.json");
    let v: Value = serde_json::from_str(&std::fs::read_to_string(&path).expect("read scores.json")).expect("json");
    let items = v["items"].as_array().expect("items");
    let texts: Vec<String> = items.iter().map(|i| i["text"].as_str().expect("text").to_string()).collect();
    let scores = start("tiny-qwen2-rm").get_scores(texts, None).expect("scores");
    assert_eq!(scores.len(), items.len());
    for (item, got) in items.iter().zip(scores) {
        let want = item["score"].as_f64().expect("score") as f32;
        assert!((got - want).abs() <= 1e-4, "{:?}: got {got}, transformers {want}", item["text"]);
    }
}

#[test]
fn a_reward_model_does_not_chat_and_a_causal_lm_does_not_score() {
    let rm = start("tiny-qwen2-rm");
    let request = PromptRequest { prompt: Prompt::Ids(vec![1, 2, 3]), params: GenParams::greedy() };
    assert!(matches!(rm.validate_prompt(request), Err(EngineError::RewardModel)));
    assert!(rm.is_reward_model());
    let lm = start("tiny-qwen2");
    assert!(!lm.is_reward_model());
    assert!(matches!(lm.get_scores(vec!["hi".into()], None), Err(EngineError::NoValueHead)));
}

#[test]
fn max_length_cuts_texts_as_llama_factory_does() {
    let rm = start("tiny-qwen2-rm");
    let text = "The quick brown fox jumps over the lazy dog.".to_string();
    let ids = rm.tokenizer().encode(&text, false).expect("encode");
    assert!(ids.len() > 4, "{ids:?}");
    // A text whose tokens are exactly the first four.
    let head = rm.tokenizer().decode(&ids[..4], false).expect("decode");
    assert_eq!(rm.tokenizer().encode(&head, false).expect("encode"), ids[..4], "the prefix re-encodes to itself");
    let cut = rm.get_scores(vec![text.clone()], Some(4)).expect("scores");
    assert_eq!(cut, rm.get_scores(vec![head], None).expect("scores"));
    assert_ne!(cut, rm.get_scores(vec![text.clone()], None).expect("scores"), "cutting changes the score");
    assert_eq!(
        rm.get_scores(vec![text.clone()], Some(ids.len())).expect("scores"),
        rm.get_scores(vec![text.clone()], None).expect("scores")
    );
    assert!(matches!(rm.get_scores(vec![text], Some(0)), Err(EngineError::Invalid { field, .. }) if field == "max_length"));
}
