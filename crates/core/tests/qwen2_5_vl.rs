//! Qwen2.5-VL against transformers on the checked-in `tests/fixtures/tiny-qwen2.5-vl` fixture
//! (made by `scripts/gen-tiny-qwen2.5-vl.py`): a 4-block vision tower with 2×2-unit windows,
//! blocks 1 and 3 full attention, and both fixture images giving merged grids of several
//! windows, the right-hand ones cut short. For both reference cases:
//! * our preprocessing of the image (`Qwen2VlImageProcessor::from_dir`) is within 1e-5 of
//!   transformers' `pixel_values` (PIL backend), with the same grid;
//! * the vision tower's output from the stored `pixel_values` is within 1e-4 of
//!   `model.visual(...)`'s merged output (window reordering and its inverse included);
//! * the M-RoPE position ids and delta equal `get_rope_index`'s;
//! * the whole prompt's logits are within 1e-3 at every position, and 10 greedy tokens decoded
//!   with the KV cache are transformers' exactly.
//!
//! Also: the windows matter on this fixture (all blocks on full attention is far off), and the
//! published checkpoints' layout (classic top-level config, nested weight names) loads the same.

use std::path::PathBuf;

use ingot_core::kv_cache::SeqCache;
use ingot_core::load::{load_with, LoadOptions, LoadedModel};
use ingot_core::media::{Image, Media, MediaLimits, MediaProcessor, Qwen2VlImageProcessor};
use ingot_core::model::vision::{rope_index, VisionArch};
use ingot_core::model::{Embeds, Logits, SeqInput};
use ingot_core::sampling::argmax;
use ingot_core::testing::json_ids;
use safetensors::SafeTensors;
use serde_json::Value;

const PIXEL_TOLERANCE: f32 = 1e-5;
const VISION_TOLERANCE: f32 = 1e-4;
const LOGIT_TOLERANCE: f32 = 1e-3;

fn dir() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/tiny-qwen2.5-vl"))
}

fn load() -> LoadedModel {
    load_with(&dir(), &LoadOptions::default()).unwrap_or_else(|e| panic!("loading tiny-qwen2.5-vl: {e}"))
}

fn reference() -> Value {
    let text = std::fs::read_to_string(dir().join("reference.json")).expect("reference.json");
    serde_json::from_str(&text).expect("reference.json")
}

fn cases(reference: &Value) -> &Vec<Value> {
    let cases = reference["cases"].as_array().expect("cases");
    assert_eq!(cases.len(), 2);
    cases
}

fn tensors() -> Vec<u8> {
    std::fs::read(dir().join("reference_tensors.safetensors")).expect("reference tensors")
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

fn grid(st: &SafeTensors<'_>, name: &str) -> [usize; 3] {
    let g: Vec<usize> = i64_tensor(st, &format!("{name}.image_grid_thw")).iter().map(|&v| v as usize).collect();
    [g[0], g[1], g[2]]
}

/// Largest absolute difference, and where.
fn max_diff(a: &[f32], b: &[f32]) -> (f32, usize) {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).enumerate().map(|(i, (x, y))| ((x - y).abs(), i)).fold((0f32, 0), |acc, x| if x.0 > acc.0 { x } else { acc })
}

#[test]
fn loads_as_a_qwen2_5_vl_model() {
    let m = load();
    let vision = m.vision.as_ref().expect("Qwen2.5-VL has a vision side");
    let cfg = vision.encoder.config();
    assert_eq!(cfg.arch, VisionArch::Qwen25Vl { window_size: 56, fullatt_block_indexes: vec![1, 3] });
    assert_eq!((cfg.depth, cfg.embed_dim, cfg.intermediate_size, cfg.num_heads, cfg.hidden_size), (4, 32, 48, 2, 64));
    assert_eq!(
        (vision.tokens.image_token_id, vision.tokens.video_token_id, vision.tokens.vision_start_token_id, vision.tokens.vision_end_token_id),
        (2033, Some(2034), 2031, 2032)
    );
    assert_eq!(m.model.config().mrope_section, Some([2, 3, 3]));
    assert!(m.chat_template.as_deref().expect("chat template").contains("<|vision_start|>"));
}

#[test]
fn preprocessing_matches_transformers() {
    let processor = Qwen2VlImageProcessor::from_dir(&dir()).expect("config").expect("preprocessor_config.json");
    let bytes = tensors();
    let st = SafeTensors::deserialize(&bytes).expect("safetensors");
    let reference = reference();
    for case in cases(&reference) {
        let name = case["name"].as_str().expect("name");
        let path = dir().join(case["image"].as_str().expect("image"));
        let image = Image::decode(&std::fs::read(&path).expect("image"), &path.display().to_string(), &MediaLimits::default())
            .expect("decode");
        let out = processor.process(&Media::Image(image)).expect("process");
        assert_eq!(out.grid_thw, grid(&st, name), "{name}: grid");
        let (shape, want) = f32_tensor(&st, &format!("{name}.pixel_values"));
        assert_eq!(shape, [out.rows, out.row_len], "{name}: shape");
        let (worst, at) = max_diff(&out.pixel_values, &want);
        eprintln!("{name}: grid {:?}, max |pixel diff| {worst:.2e}", out.grid_thw);
        assert!(worst <= PIXEL_TOLERANCE, "{name}: max |diff| {worst} at row {}, col {}", at / out.row_len, at % out.row_len);
        assert_eq!(processor.placeholder_tokens(&out), case["num_image_pad_tokens"].as_u64().expect("pads") as usize);
    }
}

#[test]
fn vision_tower_matches_transformers() {
    let m = load();
    let vision = m.vision.as_ref().expect("vision");
    let bytes = tensors();
    let st = SafeTensors::deserialize(&bytes).expect("safetensors");
    let reference = reference();
    for case in cases(&reference) {
        let name = case["name"].as_str().expect("name");
        let grid = grid(&st, name);
        // The grids have several windows, some cut short (what this fixture is for).
        let windows = case["cu_window_seqlens"].as_array().expect("cu_window_seqlens").len() - 1;
        assert!(windows > 2, "{name}: {windows} windows");
        let (_, pixels) = f32_tensor(&st, &format!("{name}.pixel_values"));
        let got = vision.encoder.encode(&pixels, grid).expect("encode");
        let (shape, want) = f32_tensor(&st, &format!("{name}.vision"));
        assert_eq!(shape, [vision.tokens.image_tokens(grid), m.model.config().hidden_size], "{name}: shape");
        let (worst, at) = max_diff(&got, &want);
        eprintln!("{name}: grid {grid:?}, {windows} windows, max |vision diff| {worst:.2e}");
        assert!(worst < VISION_TOLERANCE, "{name}: max |diff| {worst} at row {}", at / shape[1]);
    }
}

#[test]
fn matches_transformers_on_both_cases() {
    let m = load();
    let vision = m.vision.as_ref().expect("vision");
    let vocab = m.model.config().vocab_size;
    let bytes = tensors();
    let st = SafeTensors::deserialize(&bytes).expect("safetensors");
    let reference = reference();
    for case in cases(&reference) {
        let name = case["name"].as_str().expect("name");
        let ids = json_ids(&case["input_ids"]);
        let stored_ids: Vec<u32> = i64_tensor(&st, &format!("{name}.input_ids")).iter().map(|&v| v as u32).collect();
        assert_eq!(ids, stored_ids, "{name}: input ids");
        let grid = grid(&st, name);
        let (_, pixels) = f32_tensor(&st, &format!("{name}.pixel_values"));

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
        let (shape, want_logits) = f32_tensor(&st, &format!("{name}.logits"));
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
}

/// The windows are not a no-op on this fixture: the same checkpoint with every block on full
/// attention (or with no reordering, which is what that amounts to) is far from the reference.
#[test]
fn window_attention_matters() {
    let scratch = ingot_core::testing::scratch_dir("qwen2.5-vl-no-windows");
    for f in ["model.safetensors", "tokenizer.json", "tokenizer_config.json", "chat_template.json", "generation_config.json", "preprocessor_config.json"] {
        std::fs::copy(dir().join(f), scratch.join(f)).expect("copy");
    }
    let mut config: Value = serde_json::from_str(&std::fs::read_to_string(dir().join("config.json")).expect("config")).expect("json");
    config["vision_config"]["fullatt_block_indexes"] = serde_json::json!([0, 1, 2, 3]);
    std::fs::write(scratch.join("config.json"), config.to_string()).expect("write config");
    let m = load_with(&scratch, &LoadOptions::default()).expect("load");
    let vision = m.vision.as_ref().expect("vision");
    let bytes = tensors();
    let st = SafeTensors::deserialize(&bytes).expect("safetensors");
    let name = "image1_describe";
    let (_, pixels) = f32_tensor(&st, &format!("{name}.pixel_values"));
    let got = vision.encoder.encode(&pixels, grid(&st, name)).expect("encode");
    let (_, want) = f32_tensor(&st, &format!("{name}.vision"));
    let (worst, _) = max_diff(&got, &want);
    assert!(worst > 100.0 * VISION_TOLERANCE, "full attention everywhere should differ, max |diff| {worst}");
    let _ = std::fs::remove_dir_all(&scratch);
}

/// The layout of the published Qwen2.5-VL checkpoints: text keys at the top level with the
/// classic `rope_scaling: {type: mrope}`, `in_chans`, and weights under
/// `model.language_model.*` / `model.visual.*`. It must load to the same model and encoder.
#[test]
fn classic_config_and_nested_weight_names_load_the_same_model() {
    let scratch = ingot_core::testing::scratch_dir("qwen2.5-vl-layouts");
    for f in ["tokenizer.json", "tokenizer_config.json", "chat_template.json", "generation_config.json", "preprocessor_config.json"] {
        std::fs::copy(dir().join(f), scratch.join(f)).expect("copy");
    }
    let config: Value = serde_json::from_str(&std::fs::read_to_string(dir().join("config.json")).expect("config")).expect("json");
    let mut classic = config["text_config"].clone();
    for key in ["architectures", "image_token_id", "video_token_id", "vision_start_token_id", "vision_end_token_id", "vision_config"] {
        classic[key] = config[key].clone();
    }
    classic["model_type"] = "qwen2_5_vl".into();
    classic["rope_theta"] = 1e6.into();
    classic["rope_scaling"] = serde_json::json!({"type": "mrope", "mrope_section": [2, 3, 3]});
    classic.as_object_mut().expect("object").remove("rope_parameters");
    let vision = classic["vision_config"].as_object_mut().expect("vision_config");
    let channels = vision.remove("in_channels").expect("in_channels");
    vision.insert("in_chans".into(), channels);
    vision.remove("model_type");
    std::fs::write(scratch.join("config.json"), classic.to_string()).expect("write config");

    let original = std::fs::read(dir().join("model.safetensors")).expect("weights");
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

    let (a, b) = (load(), load_with(&scratch, &LoadOptions::default()).expect("other layout"));
    assert_eq!(a.model.config(), b.model.config());
    let (va, vb) = (a.vision.as_ref().expect("vision"), b.vision.as_ref().expect("vision"));
    assert_eq!((va.encoder.config(), va.tokens), (vb.encoder.config(), vb.tokens));
    let pixels: Vec<f32> = (0..48 * va.encoder.config().patch_len()).map(|i| (i as f32 * 0.013).sin()).collect();
    assert_eq!(va.encoder.encode(&pixels, [1, 6, 8]).expect("a"), vb.encoder.encode(&pixels, [1, 6, 8]).expect("b"));
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
