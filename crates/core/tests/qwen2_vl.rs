//! Qwen2-VL against transformers on the shared `tiny-qwen2-vl` fixture: for both reference
//! cases, from the stored `pixel_values` and `image_grid_thw` (the image preprocessor is not
//! under test here), the M-RoPE position ids must equal `get_rope_index`'s, the whole prompt's
//! logits with the vision features injected must be within 1e-3 of transformers' at every
//! position, and 10 greedy tokens decoded with the KV cache must be transformers' exactly.
//! Text alone must be plain RoPE, and bad inputs must be errors, not panics.

mod vlm;

use std::path::PathBuf;

use ingot_core::config::KvType;
use ingot_core::kv_cache::SeqCache;
use ingot_core::load::{load_with, LoadOptions, LoadedModel};
use ingot_core::model::mrope::rope_index;
use ingot_core::model::{Embeds, ForwardError, Logits, SeqInput};
use ingot_testkit::{fixtures_dir, json_ids};
use safetensors::SafeTensors;
use serde_json::Value;


fn dir() -> PathBuf {
    fixtures_dir().join("tiny-qwen2-vl")
}

fn load() -> LoadedModel {
    let mut m = load_with(&dir(), &LoadOptions::default()).unwrap_or_else(|e| panic!("loading tiny-qwen2-vl: {e}"));
    // transformers' reference keeps an f32 KV cache; f16 rounding alone exceeds the tolerances.
    m.model.set_kv_type(KvType::F32);
    m
}

fn reference() -> Value {
    let text = std::fs::read_to_string(dir().join("reference.json")).expect("reference.json");
    serde_json::from_str(&text).expect("reference.json")
}

#[test]
fn loads_as_a_vision_language_model() {
    let m = load();
    let vision = m.vision.as_ref().expect("Qwen2-VL has a vision side");
    assert_eq!(
        (vision.tokens.image_token_id, vision.tokens.video_token_id, vision.tokens.vision_start_token_id, vision.tokens.vision_end_token_id),
        (2033, Some(2034), 2031, 2032)
    );
    assert_eq!(m.model.config().mrope_section, Some([2, 3, 3]));
    assert_eq!(vision.encoder.config().hidden_size, m.model.config().hidden_size);
    let template = m.chat_template.as_deref().expect("chat template");
    assert!(template.contains("<|vision_start|>"), "the Qwen2-VL template");
    assert_eq!(m.tokenizer.token_to_id("<|image_pad|>"), Some(2033));

    // --quantize applies to the language model only: the encoder is the same.
    let opts = LoadOptions { quantize: Some(ingot_core::weights::Quantization::Q8_0), ..LoadOptions::default() };
    let q = load_with(&dir(), &opts).expect("quantized load");
    let pixels: Vec<f32> = (0..16 * vision.encoder.config().patch_len()).map(|i| (i as f32 * 0.07).cos()).collect();
    let encode = |m: &LoadedModel| m.vision.as_ref().expect("vision").encoder.encode(&pixels, [1, 4, 4]).expect("encode");
    assert_eq!(encode(&m), encode(&q));
}

#[test]
fn matches_transformers_on_both_cases() {
    let m = load();
    let bytes = std::fs::read(dir().join("reference_tensors.safetensors")).expect("reference tensors");
    let st = SafeTensors::deserialize(&bytes).expect("safetensors");
    for case in reference()["cases"].as_array().expect("cases") {
        vlm::check_case(&m, case, &st);
    }
}

#[test]
fn text_alone_is_plain_rope() {
    let m = load();
    let vision = m.vision.as_ref().expect("vision");
    let ids: Vec<u32> = json_ids(&reference()["cases"][0]["input_ids"]).into_iter().filter(|&id| id != 2033).collect();
    let (positions, delta) = rope_index(&ids, &[], &vision.tokens).expect("text only");
    assert_eq!(delta, 0);
    let run = |positions: Option<&[[u32; 3]]>| {
        let mut cache = SeqCache::new(m.model.config());
        m.model
            .forward(&mut [SeqInput { tokens: &ids, cache: &mut cache, logits: Logits::All, positions, embeds: &[] }])
            .expect("forward")
            .remove(0)
    };
    assert_eq!(run(None), run(Some(&positions)), "M-RoPE with equal axes is ordinary RoPE");
}

#[test]
fn bad_inputs_are_errors() {
    let m = load();
    let vision = m.vision.as_ref().expect("vision");
    let h = m.model.config().hidden_size;
    let ids = [2025u32, 2031, 2033, 2033, 2032];
    let mut cache = SeqCache::new(m.model.config());
    let mut forward = |positions: Option<&[[u32; 3]]>, embeds: &[Embeds<'_>]| {
        m.model.forward(&mut [SeqInput { tokens: &ids, cache: &mut cache, logits: Logits::Last, positions, embeds }])
    };
    assert_eq!(forward(Some(&[[0; 3]; 4]), &[]).expect_err("short positions"), ForwardError::PositionsLength { positions: 4, tokens: 5 });
    let rows = vec![0.5f32; 2 * h];
    assert_eq!(
        forward(None, &[Embeds { at: 4, rows: &rows }]).expect_err("past the end"),
        ForwardError::EmbedsOutOfRange { at: 4, rows: 2, tokens: 5 }
    );
    assert!(matches!(forward(None, &[Embeds { at: usize::MAX, rows: &rows }]), Err(ForwardError::EmbedsOutOfRange { .. })));
    assert_eq!(
        forward(None, &[Embeds { at: 2, rows: &rows[1..] }]).expect_err("ragged rows"),
        ForwardError::EmbedsWidth { len: 2 * h - 1, hidden: h }
    );
    assert!(forward(Some(&[[0; 3]; 5]), &[Embeds { at: 2, rows: &rows }]).is_ok(), "a valid input still runs");
    assert_eq!(cache.len(), 5, "failed calls appended nothing");

    let patch = vision.encoder.config().patch_len();
    let pixels = vec![0.1f32; 16 * patch];
    assert!(matches!(vision.encoder.encode(&pixels[1..], [1, 4, 4]), Err(ForwardError::PixelValuesLength { .. })));
    assert!(vision.encoder.encode(&pixels, [1, 2, 8]).is_ok(), "a 2×8 grid is whole merge groups");
    assert!(matches!(vision.encoder.encode(&pixels[..12 * patch], [1, 3, 4]), Err(ForwardError::BadGrid { .. })));
    assert!(matches!(vision.encoder.encode(&[], [0, 4, 4]), Err(ForwardError::BadGrid { .. })));
    assert!(matches!(rope_index(&ids, &[[1, 4, 4]], &vision.tokens), Err(ForwardError::ImageTokens { .. })));
    assert!(matches!(rope_index(&ids, &[[1, 2, 3]], &vision.tokens), Err(ForwardError::BadGrid { .. })));
}

/// The other layouts in circulation: config keys at the top level with the classic
/// `rope_scaling: {type: mrope}`, and weights under `model.language_model.*` / `model.visual.*`.
/// They must load to the same model as the fixture's own layout.
#[test]
fn classic_config_and_nested_weight_names_load_the_same_model() {
    let files = ["tokenizer.json", "tokenizer_config.json", "chat_template.json", "generation_config.json"];
    vlm::check_classic_layout(&dir(), "qwen2_vl", &files, [1, 4, 4]);
}
