//! Log-probabilities on the tiny Qwen2 fixture: the values are `log_softmax` of the model's
//! logits (checked against transformers' reference logits), the most likely first, the greedy
//! token the largest, and independent of the sampling settings (the model's distribution).

use ingot_engine::{EngineConfig, EngineHandle, Event, GenParams, Prompt, PromptRequest, TokenLogprobs};
use ingot_testkit::{fixtures_dir, json_ids};
use safetensors::SafeTensors;
use serde_json::Value;

/// Largest difference allowed between a reported logprob and `log_softmax` of transformers'
/// f32 logits.
const TOLERANCE: f64 = 1e-4;

fn engine() -> EngineHandle {
    let mut loaded = ingot_core::load::load(&fixtures_dir().join("tiny-qwen2")).expect("load tiny-qwen2");
    // transformers' reference keeps an f32 KV cache; f16 rounding alone exceeds the tolerance.
    loaded.model.set_kv_type(ingot_core::config::KvType::F32);
    ingot_engine::start(loaded, EngineConfig { threads: 2, ..EngineConfig::default() }).expect("start engine")
}

/// Each reference case: its prompt, its first greedy token, `log_softmax` of its last-position
/// logits.
fn cases() -> Vec<(String, Vec<u32>, u32, Vec<f64>)> {
    let dir = fixtures_dir().join("tiny-qwen2");
    let reference: Value = serde_json::from_slice(&std::fs::read(dir.join("reference.json")).expect("reference.json")).expect("json");
    let file = std::fs::read(dir.join("reference_logits.safetensors")).expect("reference logits");
    let logits = SafeTensors::deserialize(&file).expect("safetensors");
    let mut out = Vec::new();
    for case in reference["cases"].as_array().expect("cases") {
        let name = case["name"].as_str().expect("name").to_owned();
        let t = logits.tensor(&name).expect("case logits");
        let vocab = t.shape()[1];
        let rows: Vec<f64> = t.data().chunks_exact(4).map(|c| f64::from(f32::from_le_bytes([c[0], c[1], c[2], c[3]]))).collect();
        let last = &rows[rows.len() - vocab..];
        let max = last.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let log_sum = max + last.iter().map(|l| (l - max).exp()).sum::<f64>().ln();
        let greedy = json_ids(&case["greedy_new_ids"])[0];
        out.push((name, json_ids(&case["input_ids"]), greedy, last.iter().map(|l| l - log_sum).collect()));
    }
    out
}

/// The logprobs events and the number of generated tokens of one raw-prompt request.
fn run(e: &EngineHandle, ids: &[u32], params: GenParams) -> (Vec<TokenLogprobs>, usize) {
    let valid = e.validate_prompt(PromptRequest { prompt: Prompt::Ids(ids.to_vec()), params }).expect("valid");
    let stream = e.stream(valid).expect("queued").remove(0);
    let mut lps = Vec::new();
    for event in stream.events.iter() {
        match event {
            Event::Logprobs(lp) => lps.push(lp),
            Event::Text(_) => {}
            Event::Done(u) => return (lps, u.completion_tokens),
            Event::Error(e) => panic!("{e}"),
        }
    }
    panic!("no Done");
}

fn params(logprobs: Option<usize>, max_new_tokens: usize) -> GenParams {
    GenParams { max_new_tokens: Some(max_new_tokens), ignore_eos: Some(true), logprobs, ..GenParams::greedy() }
}

#[test]
fn logprobs_are_log_softmax_of_the_models_logits() {
    let e = engine();
    for (name, ids, greedy, expected) in cases() {
        let (lps, _) = run(&e, &ids, params(Some(20), 1));
        let [lp] = &lps[..] else { panic!("{name}: one token, one entry: {lps:?}") };
        assert_eq!(lp.token.id, greedy, "{name}: the greedy token");
        assert_eq!(lp.top.len(), 20);
        assert_eq!(lp.top[0].logprob, lp.token.logprob, "{name}: greedy's token is the most likely");
        let mut worst = 0f64;
        for t in std::iter::once(&lp.token).chain(&lp.top) {
            worst = worst.max((f64::from(t.logprob) - expected[t.id as usize]).abs());
        }
        eprintln!("{name}: max |logprob - log_softmax(reference logits)| = {worst:.2e}");
        assert!(worst <= TOLERANCE, "{name}: {worst}");
        assert!(lp.top.windows(2).all(|w| w[0].logprob >= w[1].logprob), "{name}: most likely first");
        let mut best: Vec<usize> = (0..expected.len()).collect();
        best.sort_by(|&a, &b| expected[b].total_cmp(&expected[a]));
        // The reference's 20 best ids (their gaps are far above the tolerance on this model).
        assert_eq!(lp.top.iter().map(|t| t.id as usize).collect::<Vec<_>>(), best[..20], "{name}");
        let mass: f64 = lp.top.iter().map(|t| f64::from(t.logprob).exp()).sum();
        assert!(mass <= 1.0 + 1e-6, "{name}: the top 20 hold {mass}");
    }
}

#[test]
fn one_entry_per_token_only_when_asked_and_whatever_the_sampling() {
    let e = engine();
    let (_, ids, _, _) = cases().remove(0);
    let (lps, n) = run(&e, &ids, params(Some(2), 5));
    assert_eq!((lps.len(), n), (5, 5));
    assert!(lps.iter().all(|lp| lp.top.len() == 2 && !lp.token.bytes.is_empty()));
    assert!(run(&e, &ids, params(None, 5)).0.is_empty(), "not asked, not sent");
    // The model's distribution: a hot, penalised sample reports the same first step.
    let hot = GenParams {
        do_sample: Some(true),
        temperature: Some(3.0),
        top_k: Some(5),
        repetition_penalty: Some(1.5),
        seed: Some(1),
        ..params(Some(2), 1)
    };
    assert_eq!(run(&e, &ids, hot).0[0].top, lps[0].top);
}
