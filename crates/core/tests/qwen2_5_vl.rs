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

mod vlm;

use std::path::PathBuf;

use ingot_core::load::{load_with, LoadOptions, LoadedModel};
use ingot_core::media::{Image, Media, MediaLimits, MediaProcessor, Qwen2VlImageProcessor};
use ingot_core::config::vision::VisionArch;
use ingot_core::config::KvType;
use safetensors::SafeTensors;
use vlm::{f32_tensor, grid, max_diff};
use serde_json::Value;

const PIXEL_TOLERANCE: f32 = 1e-5;
const VISION_TOLERANCE: f32 = 1e-4;

fn dir() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/tiny-qwen2.5-vl"))
}

fn load() -> LoadedModel {
    let mut m = load_with(&dir(), &LoadOptions::default()).unwrap_or_else(|e| panic!("loading tiny-qwen2.5-vl: {e}"));
    // transformers' reference keeps an f32 KV cache; f16 rounding alone exceeds the tolerances.
    m.model.set_kv_type(KvType::F32);
    m
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
    let bytes = tensors();
    let st = SafeTensors::deserialize(&bytes).expect("safetensors");
    for case in cases(&reference()) {
        vlm::check_case(&m, case, &st);
    }
}

/// The windows are not a no-op on this fixture: the same checkpoint with every block on full
/// attention (or with no reordering, which is what that amounts to) is far from the reference.
#[test]
fn window_attention_matters() {
    let scratch = ingot_testkit::scratch_dir("qwen2.5-vl-no-windows");
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
    let files = ["tokenizer.json", "tokenizer_config.json", "chat_template.json", "generation_config.json", "preprocessor_config.json"];
    vlm::check_classic_layout(&dir(), "qwen2_5_vl", &files, [1, 6, 8]);
}
