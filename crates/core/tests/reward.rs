//! Reward models (LLaMA Factory's value-head layout) against transformers: the tiny-qwen2-rm
//! fixture's five texts, batched in one forward pass, must give `scores.json`'s scores within
//! 1e-4; a value head of the wrong shape must fail naming the file and tensor.

use std::collections::HashMap;
use std::path::Path;

use ingot_core::config::KvType;
use ingot_core::kv_cache::SeqCache;
use ingot_core::load::{load, LoadedModel};
use ingot_core::model::{Logits, SeqInput};
use ingot_core::reward::VALUE_HEAD_FILE;
use ingot_testkit::{fixtures_dir, json_ids, scratch_dir};
use serde_json::Value;

const SCORE_TOLERANCE: f32 = 1e-4;

fn load_rm() -> LoadedModel {
    let mut m = load(&fixtures_dir().join("tiny-qwen2-rm")).expect("load tiny-qwen2-rm");
    // transformers' reference keeps an f32 KV cache; f16 rounding alone exceeds the tolerances.
    m.model.set_kv_type(KvType::F32);
    m
}

fn items() -> Vec<Value> {
    let path = fixtures_dir().join("tiny-qwen2-rm/scores.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let v: Value = serde_json::from_str(&text).expect("scores.json");
    v["items"].as_array().expect("items").clone()
}

#[test]
fn batched_scores_match_transformers() {
    let rm = load_rm();
    let head = rm.value_head.as_ref().expect("tiny-qwen2-rm has a value head");
    let items = items();
    let ids: Vec<Vec<u32>> = items
        .iter()
        .map(|item| {
            let ids = rm.tokenizer.encode(item["text"].as_str().expect("text"), false).expect("encode");
            assert_eq!(ids, json_ids(&item["input_ids"]), "tokenization of {:?}", item["text"]);
            ids
        })
        .collect();
    let mut caches: Vec<SeqCache> = ids.iter().map(|_| SeqCache::new(rm.model.config())).collect();
    let mut batch: Vec<SeqInput<'_>> =
        ids.iter().zip(&mut caches).map(|(tokens, cache)| SeqInput { tokens, cache, logits: Logits::Hidden, positions: None, embeds: &[] }).collect();
    let hidden = rm.model.forward(&mut batch).expect("forward");
    for (item, h) in items.iter().zip(&hidden) {
        assert_eq!(h.len(), rm.model.config().hidden_size);
        let want = item["score"].as_f64().expect("score") as f32;
        let got = head.score(h);
        assert!((got - want).abs() <= SCORE_TOLERANCE, "{:?}: got {got}, transformers {want}", item["text"]);
    }
}

#[test]
fn a_causal_lm_has_no_value_head() {
    assert!(load(&fixtures_dir().join("tiny-qwen2")).expect("load").value_head.is_none());
}

#[test]
fn a_value_head_of_the_wrong_width_names_the_file_and_tensor() {
    let src = fixtures_dir().join("tiny-qwen2-rm");
    let dir = scratch_dir("bad-value-head");
    for entry in std::fs::read_dir(&src).expect("read fixture") {
        let path = entry.expect("entry").path();
        let name = path.file_name().expect("name");
        if name != VALUE_HEAD_FILE {
            std::fs::copy(&path, dir.join(name)).expect("copy");
        }
    }
    write_value_head(&dir, 32);
    let err = load(&dir).err().expect("a [1, 32] head on a 64-wide model is refused").to_string();
    assert!(err.contains(VALUE_HEAD_FILE) && err.contains("v_head.summary.weight") && err.contains("[1, 64]"), "{err}");
}

fn write_value_head(dir: &Path, width: usize) {
    use safetensors::tensor::{Dtype, TensorView};
    let weight: Vec<u8> = vec![0f32; width].iter().flat_map(|v| v.to_le_bytes()).collect();
    let bias = 0f32.to_le_bytes().to_vec();
    let tensors = HashMap::from([
        ("v_head.summary.weight".to_string(), TensorView::new(Dtype::F32, vec![1, width], &weight).expect("view")),
        ("v_head.summary.bias".to_string(), TensorView::new(Dtype::F32, vec![1], &bias).expect("view")),
    ]);
    safetensors::serialize_to_file(tensors, None, &dir.join(VALUE_HEAD_FILE)).expect("write value head");
}
