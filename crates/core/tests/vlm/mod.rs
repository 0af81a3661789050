//! What the vision-language golden tests share: reading the reference tensors, checking one
//! reference case end to end (M-RoPE ids, every position's logits, top 10, greedy decoding
//! with the cache), and rewriting a fixture into the published checkpoints' layout.
// Each test binary uses its own part of this module.
#![allow(dead_code)]

use std::path::Path;

use ingot_core::kv_cache::SeqCache;
use ingot_core::load::{load_with, LoadOptions, LoadedModel};
use ingot_core::model::mrope::rope_index;
use ingot_core::model::{Embeds, Logits, SeqInput};
use ingot_core::sampling::argmax;
use ingot_testkit::json_ids;
use safetensors::SafeTensors;
use serde_json::Value;

pub const LOGIT_TOLERANCE: f32 = 1e-3;

pub fn f32_tensor(st: &SafeTensors<'_>, name: &str) -> (Vec<usize>, Vec<f32>) {
    let t = st.tensor(name).unwrap_or_else(|e| panic!("{name}: {e}"));
    let v = t.data().chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
    (t.shape().to_vec(), v)
}

pub fn i64_tensor(st: &SafeTensors<'_>, name: &str) -> Vec<i64> {
    let t = st.tensor(name).unwrap_or_else(|e| panic!("{name}: {e}"));
    t.data().chunks_exact(8).map(|c| i64::from_le_bytes(c.try_into().expect("8 bytes"))).collect()
}

/// A case's `image_grid_thw`.
pub fn grid(st: &SafeTensors<'_>, name: &str) -> [usize; 3] {
    let g: Vec<usize> = i64_tensor(st, &format!("{name}.image_grid_thw")).iter().map(|&v| v as usize).collect();
    [g[0], g[1], g[2]]
}

/// Largest absolute difference, and where.
pub fn max_diff(a: &[f32], b: &[f32]) -> (f32, usize) {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).enumerate().map(|(i, (x, y))| ((x - y).abs(), i)).fold((0f32, 0), |acc, x| if x.0 > acc.0 { x } else { acc })
}

/// One reference case from its stored `input_ids` and `pixel_values`: the M-RoPE ids and
/// delta exactly, the whole prompt's logits within [`LOGIT_TOLERANCE`] at every position
/// (vision features injected at the pad tokens), the last position's top 10, and greedy
/// decoding with the cache (each new token at cache position + delta on all axes).
pub fn check_case(m: &LoadedModel, case: &Value, st: &SafeTensors<'_>) {
    let vision = m.vision.as_ref().expect("vision");
    let vocab = m.model.config().vocab_size;
    let name = case["name"].as_str().expect("name");
    let ids = json_ids(&case["input_ids"]);
    let stored_ids: Vec<u32> = i64_tensor(st, &format!("{name}.input_ids")).iter().map(|&v| v as u32).collect();
    assert_eq!(ids, stored_ids, "{name}: input ids");
    let grid = grid(st, name);
    let (_, pixels) = f32_tensor(st, &format!("{name}.pixel_values"));

    // Position ids and delta: images take the same M-RoPE layout as in Qwen2-VL.
    let (positions, delta) = rope_index(&ids, &[grid], &vision.tokens).expect("rope index");
    let want: Vec<Vec<u32>> = case["rope_position_ids"].as_array().expect("3 rows").iter().map(json_ids).collect();
    for (axis, want) in want.iter().enumerate() {
        let got: Vec<u32> = positions.iter().map(|p| p[axis]).collect();
        assert_eq!(&got, want, "{name}: axis {axis}");
    }
    assert_eq!(delta, case["rope_deltas"][0].as_i64().expect("delta"), "{name}: rope delta");

    // The whole prompt, vision features at the pad tokens.
    let features = vision.encoder.encode(&pixels, grid).expect("encode");
    let at = ids.iter().position(|&id| id == vision.tokens.image_token_id).expect("an image token");
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
    let (shape, want_logits) = f32_tensor(st, &format!("{name}.logits"));
    assert_eq!(shape, [ids.len(), vocab]);
    let (worst, at) = max_diff(&logits, &want_logits);
    eprintln!("{name}: {} tokens, max |logit diff| over all positions {worst:.2e}", ids.len());
    assert!(worst < LOGIT_TOLERANCE, "{name}: max logit difference {worst} at position {}", at / vocab);
    let last = &logits[(ids.len() - 1) * vocab..];
    let mut order: Vec<u32> = (0..vocab as u32).collect();
    order.sort_by(|&a, &b| last[b as usize].total_cmp(&last[a as usize]));
    let top10: Vec<u32> =
        case["last_position_top10"].as_array().expect("top10").iter().map(|p| p[0].as_u64().expect("id") as u32).collect();
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

/// Rewrites the fixture at `src` into the layout of the published checkpoints: text keys at
/// the top level with the classic `rope_scaling: {type: mrope}`, `in_chans`, and weights under
/// `model.language_model.*` / `model.visual.*`. Asserts it loads to the same model, encoder
/// (on an input of `grid`) and logits.
pub fn check_classic_layout(src: &Path, model_type: &str, files: &[&str], grid: [usize; 3]) {
    let scratch = ingot_testkit::scratch_dir(&format!("{model_type}-layouts"));
    for f in files {
        std::fs::copy(src.join(f), scratch.join(f)).expect("copy");
    }
    let config: Value = serde_json::from_str(&std::fs::read_to_string(src.join("config.json")).expect("config")).expect("json");
    let mut classic = config["text_config"].clone();
    for key in ["architectures", "image_token_id", "video_token_id", "vision_start_token_id", "vision_end_token_id", "vision_config"] {
        classic[key] = config[key].clone();
    }
    classic["model_type"] = model_type.into();
    classic["rope_theta"] = 1e6.into();
    classic["rope_scaling"] = serde_json::json!({"type": "mrope", "mrope_section": [2, 3, 3]});
    classic.as_object_mut().expect("object").remove("rope_parameters");
    let vision = classic["vision_config"].as_object_mut().expect("vision_config");
    let channels = vision.remove("in_channels").expect("in_channels");
    vision.insert("in_chans".into(), channels);
    vision.remove("model_type");
    std::fs::write(scratch.join("config.json"), classic.to_string()).expect("write config");

    let original = std::fs::read(src.join("model.safetensors")).expect("weights");
    let st = SafeTensors::deserialize(&original).expect("safetensors");
    // The fixture (transformers 5's save_pretrained) has `model.*` and `visual.*`.
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
    assert!(tensors.iter().any(|(name, _)| name.starts_with("model.visual.blocks.")), "renamed the vision weights");
    safetensors::serialize_to_file(tensors, None, &scratch.join("model.safetensors")).expect("write weights");

    let (a, b) = (load_with(src, &LoadOptions::default()).expect("fixture layout"), load_with(&scratch, &LoadOptions::default()).expect("other layout"));
    assert_eq!(a.model.config(), b.model.config());
    let (va, vb) = (a.vision.as_ref().expect("vision"), b.vision.as_ref().expect("vision"));
    assert_eq!((va.encoder.config(), va.tokens), (vb.encoder.config(), vb.tokens));
    let pixels: Vec<f32> = (0..grid.iter().product::<usize>() * va.encoder.config().patch_len()).map(|i| (i as f32 * 0.013).sin()).collect();
    assert_eq!(va.encoder.encode(&pixels, grid).expect("a"), vb.encoder.encode(&pixels, grid).expect("b"));
    let ids = [2025u32, 82, 1241, 198];
    let logits = |m: &LoadedModel| {
        let mut cache = SeqCache::new(m.model.config());
        m.model
            .forward(&mut [SeqInput { tokens: &ids, cache: &mut cache, logits: Logits::All, positions: None, embeds: &[] }])
            .expect("forward")
            .remove(0)
    };
    assert_eq!(logits(&a), logits(&b));
    let _ = std::fs::remove_dir_all(&scratch);
}
