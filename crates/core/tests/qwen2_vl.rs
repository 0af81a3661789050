//! Qwen2-VL against transformers on the shared `tiny-qwen2-vl` fixture: for both reference
//! cases, from the stored `pixel_values` and `image_grid_thw` (the image preprocessor is not
//! under test here), the M-RoPE position ids must equal `get_rope_index`'s, the whole prompt's
//! logits with the vision features injected must be within 1e-3 of transformers' at every
//! position, and 10 greedy tokens decoded with the KV cache must be transformers' exactly.
//! Text alone must be plain RoPE, and bad inputs must be errors, not panics.

use std::path::PathBuf;

use ingot_core::kv_cache::SeqCache;
use ingot_core::load::{load_with, LoadOptions, LoadedModel};
use ingot_core::model::vision::rope_index;
use ingot_core::model::{Embeds, ForwardError, Logits, SeqInput};
use ingot_core::sampling::argmax;
use ingot_core::testing::{fixtures_dir, json_ids};
use safetensors::SafeTensors;
use serde_json::Value;

const LOGIT_TOLERANCE: f32 = 1e-3;

fn dir() -> PathBuf {
    fixtures_dir().join("tiny-qwen2-vl")
}

fn load() -> LoadedModel {
    load_with(&dir(), &LoadOptions::default()).unwrap_or_else(|e| panic!("loading tiny-qwen2-vl: {e}"))
}

fn reference() -> Value {
    let text = std::fs::read_to_string(dir().join("reference.json")).expect("reference.json");
    serde_json::from_str(&text).expect("reference.json")
}

fn f32_tensor(st: &SafeTensors<'_>, name: &str) -> (Vec<usize>, Vec<f32>) {
    let t = st.tensor(name).unwrap_or_else(|e| panic!("{name}: {e}"));
    let v = t.data().chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
    (t.shape().to_vec(), v)
}

fn i64_tensor(st: &SafeTensors<'_>, name: &str) -> Vec<i64> {
    let t = st.tensor(name).unwrap_or_else(|e| panic!("{name}: {e}"));
    t.data().chunks_exact(8).map(|c| i64::from_le_bytes(c.try_into().expect("8 bytes"))).collect()
}

/// Index of the first image pad token.
fn first_image_token(ids: &[u32], image: u32) -> usize {
    ids.iter().position(|&id| id == image).expect("an image token")
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
    let opts = LoadOptions { quantize: Some(ingot_core::load::Quantization::Q8_0), ..LoadOptions::default() };
    let q = load_with(&dir(), &opts).expect("quantized load");
    let pixels: Vec<f32> = (0..16 * vision.encoder.config().patch_len()).map(|i| (i as f32 * 0.07).cos()).collect();
    let encode = |m: &LoadedModel| m.vision.as_ref().expect("vision").encoder.encode(&pixels, [1, 4, 4]).expect("encode");
    assert_eq!(encode(&m), encode(&q));
}

#[test]
fn matches_transformers_on_both_cases() {
    let m = load();
    let vision = m.vision.as_ref().expect("vision");
    let vocab = m.model.config().vocab_size;
    let bytes = std::fs::read(dir().join("reference_tensors.safetensors")).expect("reference tensors");
    let st = SafeTensors::deserialize(&bytes).expect("safetensors");
    let reference = reference();
    for case in reference["cases"].as_array().expect("cases") {
        let name = case["name"].as_str().expect("name");
        let ids = json_ids(&case["input_ids"]);
        let stored_ids: Vec<u32> = i64_tensor(&st, &format!("{name}.input_ids")).iter().map(|&v| v as u32).collect();
        assert_eq!(ids, stored_ids, "{name}: input ids");
        let grid: Vec<usize> = i64_tensor(&st, &format!("{name}.image_grid_thw")).iter().map(|&v| v as usize).collect();
        let grid = [grid[0], grid[1], grid[2]];
        let (_, pixels) = f32_tensor(&st, &format!("{name}.pixel_values"));

        // Position ids and delta.
        let (positions, delta) = rope_index(&ids, &[grid], &vision.tokens).expect("rope index");
        let want: Vec<Vec<u32>> = case["rope_position_ids"].as_array().expect("3 rows").iter().map(json_ids).collect();
        for axis in 0..3 {
            let got: Vec<u32> = positions.iter().map(|p| p[axis]).collect();
            assert_eq!(got, want[axis], "{name}: axis {axis}");
        }
        assert_eq!(delta, case["rope_deltas"][0].as_i64().expect("delta"), "{name}: rope delta");

        // The whole prompt, vision features at the pad tokens.
        let features = vision.encoder.encode(&pixels, grid).expect("encode");
        assert_eq!(features.len(), vision.tokens.image_tokens(grid) * m.model.config().hidden_size);
        let at = first_image_token(&ids, vision.tokens.image_token_id);
        let embeds = [Embeds { at, rows: &features }];
        let mut cache = SeqCache::new(m.model.config());
        let logits = m
            .model
            .forward(&mut [SeqInput {
                tokens: &ids,
                cache: &mut cache,
                logits: Logits::All,
                positions: Some(&positions),
                embeds: &embeds,
            }])
            .expect("prefill")
            .remove(0);
        let (shape, want_logits) = f32_tensor(&st, &format!("{name}.logits"));
        assert_eq!(shape, [ids.len(), vocab]);
        let max_diff = logits.iter().zip(&want_logits).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
        eprintln!("{name}: {} tokens, max |logit diff| over all positions {max_diff:.2e}", ids.len());
        assert!(max_diff < LOGIT_TOLERANCE, "{name}: max logit difference {max_diff}");
        let last = &logits[(ids.len() - 1) * vocab..];
        let mut order: Vec<u32> = (0..vocab as u32).collect();
        order.sort_by(|&a, &b| last[b as usize].total_cmp(&last[a as usize]));
        let top10: Vec<u32> = case["last_position_top10"].as_array().expect("top10").iter().map(|p| p[0].as_u64().expect("id") as u32).collect();
        assert_eq!(&order[..10], &top10[..], "{name}: last-position top 10");

        // Greedy decoding with the cache: each new token at cache position + delta, all axes.
        let want_greedy = json_ids(&case["greedy_new_ids"]);
        let mut next = argmax(last);
        let mut greedy = vec![next];
        while greedy.len() < want_greedy.len() {
            let p = (cache.len() as i64 + delta) as u32;
            let logits = m
                .model
                .forward(&mut [SeqInput {
                    tokens: &[next],
                    cache: &mut cache,
                    logits: Logits::Last,
                    positions: Some(&[[p; 3]]),
                    embeds: &[],
                }])
                .expect("decode")
                .remove(0);
            next = argmax(&logits);
            greedy.push(next);
        }
        assert_eq!(greedy, want_greedy, "{name}: greedy tokens");
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
    let dir = ingot_core::testing::scratch_dir("qwen2-vl-layouts");
    for f in ["tokenizer.json", "tokenizer_config.json", "chat_template.json", "generation_config.json"] {
        std::fs::copy(self::dir().join(f), dir.join(f)).expect("copy");
    }
    let config: Value = serde_json::from_str(&std::fs::read_to_string(self::dir().join("config.json")).expect("config")).expect("json");
    let mut classic = config["text_config"].clone();
    for key in ["architectures", "image_token_id", "video_token_id", "vision_start_token_id", "vision_end_token_id", "vision_config"] {
        classic[key] = config[key].clone();
    }
    classic["model_type"] = "qwen2_vl".into();
    classic["rope_theta"] = 1e6.into();
    classic["rope_scaling"] = serde_json::json!({"type": "mrope", "mrope_section": [2, 3, 3]});
    classic.as_object_mut().expect("object").remove("rope_parameters");
    // The classic vision key name for in_channels.
    let vision = classic["vision_config"].as_object_mut().expect("vision_config");
    let channels = vision.remove("in_channels").expect("in_channels");
    vision.insert("in_chans".into(), channels);
    std::fs::write(dir.join("config.json"), classic.to_string()).expect("write config");

    let original = std::fs::read(self::dir().join("model.safetensors")).expect("weights");
    let st = SafeTensors::deserialize(&original).expect("safetensors");
    let tensors: Vec<(String, safetensors::tensor::TensorView)> = st
        .tensors()
        .into_iter()
        .map(|(name, view)| {
            let renamed = if let Some(rest) = name.strip_prefix("model.") {
                format!("model.language_model.{rest}")
            } else if let Some(rest) = name.strip_prefix("visual.") {
                format!("model.visual.{rest}")
            } else {
                name
            };
            (renamed, view)
        })
        .collect();
    safetensors::serialize_to_file(tensors, None, &dir.join("model.safetensors")).expect("write weights");

    let (a, b) = (load(), load_with(&dir, &LoadOptions::default()).expect("other layout"));
    assert_eq!(a.model.config(), b.model.config());
    let (va, vb) = (a.vision.as_ref().expect("vision"), b.vision.as_ref().expect("vision"));
    assert_eq!((va.encoder.config(), va.tokens), (vb.encoder.config(), vb.tokens));
    let pixels: Vec<f32> = (0..16 * va.encoder.config().patch_len()).map(|i| (i as f32 * 0.013).sin()).collect();
    assert_eq!(va.encoder.encode(&pixels, [1, 4, 4]).expect("a"), vb.encoder.encode(&pixels, [1, 4, 4]).expect("b"));
    let ids = [2025u32, 82, 1241, 198];
    let logits = |m: &LoadedModel| {
        let mut cache = SeqCache::new(m.model.config());
        m.model
            .forward(&mut [SeqInput { tokens: &ids, cache: &mut cache, logits: Logits::All, positions: None, embeds: &[] }])
            .expect("forward")
            .remove(0)
    };
    assert_eq!(logits(&a), logits(&b));
    let _ = std::fs::remove_dir_all(&dir);
}
