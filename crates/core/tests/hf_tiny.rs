//! Hugging Face checkpoint directories against transformers: the five tiny random-weight
//! checkpoints of the shared fixtures (f32/bf16/f16, sharded, tied and untied, llama3 RoPE,
//! Gemma 3 sliding layers) must give transformers' full prompt logits within 1e-3 and its
//! 20 greedy tokens exactly, alone and batched; broken checkpoints must fail with errors that
//! name the file and the key or tensor at fault. The same checks cover `tiny-llama` with the
//! `tiny-llama-lora` PEFT adapter merged at load (against PEFT's `merge_and_unload`) and kept
//! unmerged (applied per sequence, mixed in one batch with another adapter and with none), and
//! broken adapters must fail naming the adapter file and tensor or setting.

use std::path::{Path, PathBuf};

use ingot_core::config::KvType;
use ingot_core::kv_cache::SeqCache;
use ingot_core::load::{load_checkpoint_model, load_with, LoadOptions};
use ingot_core::model::lora::LoraAdapter;
use ingot_core::model::{Logits, Model, SeqInput};
use ingot_core::weights::lora::{ADAPTER_CONFIG, ADAPTER_WEIGHTS};
use ingot_core::weights::{Quantization, WeightDType};
use ingot_testkit::{fixtures_dir, scratch_dir, write_random_lora};
use safetensors::SafeTensors;
use ingot_core::sampling::argmax;
use ingot_testkit::json_ids;
use serde_json::Value;

const LOGIT_TOLERANCE: f32 = 1e-3;

fn model_dir(name: &str) -> PathBuf {
    fixtures_dir().join(name)
}

fn load(name: &str, opts: &LoadOptions) -> Model {
    let mut m = load_checkpoint_model(&model_dir(name), opts).unwrap_or_else(|e| panic!("loading {name}: {e}"));
    // transformers' reference keeps an f32 KV cache; f16 rounding alone exceeds the tolerances.
    m.set_kv_type(KvType::F32);
    m
}

fn reference(name: &str) -> Value {
    let path = model_dir(name).join("reference.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).expect("reference.json")
}

/// Full prompt logits (`[len][vocab]`) and the greedy continuation decoded one token at a
/// time with the KV cache, with `adapter` unmerged (or none).
fn prompt_logits_and_greedy(model: &Model, adapter: Option<&LoraAdapter>, prompt: &[u32], n_new: usize) -> (Vec<f32>, Vec<u32>) {
    let vocab = model.config().vocab_size;
    let mut cache = SeqCache::new(model.config());
    let input = SeqInput { tokens: prompt, cache: &mut cache, logits: Logits::All, positions: None, embeds: &[] };
    let all = model.forward_with_adapters(&mut [input], &[adapter]).expect("prefill").remove(0);
    let mut next = argmax(&all[all.len() - vocab..]);
    let mut out = vec![next];
    while out.len() < n_new {
        let input = SeqInput { tokens: &[next], cache: &mut cache, logits: Logits::Last, positions: None, embeds: &[] };
        let logits = model.forward_with_adapters(&mut [input], &[adapter]).expect("decode").remove(0);
        next = argmax(&logits);
        out.push(next);
    }
    (all, out)
}

/// Greedy continuations of several prompts run as one batch: the prompts in one forward call,
/// then every decode step for all sequences in one call; prompt `i` with `adapters[i]`.
fn batched_greedy(model: &Model, adapters: &[Option<&LoraAdapter>], prompts: &[Vec<u32>], n_new: usize) -> Vec<Vec<u32>> {
    let mut caches: Vec<SeqCache> = prompts.iter().map(|_| SeqCache::new(model.config())).collect();
    let mut inputs: Vec<SeqInput> = prompts
        .iter()
        .zip(caches.iter_mut())
        .map(|(p, cache)| SeqInput { tokens: p, cache, logits: Logits::Last, positions: None, embeds: &[] })
        .collect();
    let mut next: Vec<u32> = model.forward_with_adapters(&mut inputs, adapters).expect("batched prefill").iter().map(|l| argmax(l)).collect();
    let mut out: Vec<Vec<u32>> = next.iter().map(|&t| vec![t]).collect();
    for _ in 1..n_new {
        let tokens: Vec<[u32; 1]> = next.iter().map(|&t| [t]).collect();
        let mut inputs: Vec<SeqInput> = tokens
            .iter()
            .zip(caches.iter_mut())
            .map(|(t, cache)| SeqInput { tokens: t, cache, logits: Logits::Last, positions: None, embeds: &[] })
            .collect();
        next = model.forward_with_adapters(&mut inputs, adapters).expect("batched decode").iter().map(|l| argmax(l)).collect();
        out.iter_mut().zip(&next).for_each(|(o, &t)| o.push(t));
    }
    out
}

/// Checks every case of one tiny model against its own reference; returns the largest logit
/// difference seen.
fn check_model(name: &str, opts: &LoadOptions) -> f32 {
    check_against(name, opts, name)
}

/// Checks every case of the tiny model `name`, loaded with `opts`, against the reference files
/// of fixture `reference_name`; returns the largest logit difference seen.
fn check_against(name: &str, opts: &LoadOptions, reference_name: &str) -> f32 {
    // Messages name the model, and the reference when it is another fixture's.
    let label = if name == reference_name { name.to_string() } else { format!("{name} vs {reference_name}") };
    check_loaded(&load(name, opts), None, &label, reference_name)
}

/// Checks every case of `model` with `adapter` unmerged (or none) against the reference files
/// of fixture `reference_name`, alone and batched; returns the largest logit difference seen.
fn check_loaded(model: &Model, adapter: Option<&LoraAdapter>, name: &str, reference_name: &str) -> f32 {
    check_within(model, adapter, name, reference_name, LOGIT_TOLERANCE)
}

/// [`check_loaded`] with prompt logits allowed to differ from the reference by `tolerance`.
fn check_within(model: &Model, adapter: Option<&LoraAdapter>, name: &str, reference_name: &str, tolerance: f32) -> f32 {
    let reference = reference(reference_name);
    let logits_path = model_dir(reference_name).join("reference_logits.safetensors");
    let logits_file = std::fs::read(&logits_path).expect("reference_logits.safetensors");
    let ref_logits = SafeTensors::deserialize(&logits_file).expect("reference logits");
    let n_new = reference["n_new"].as_u64().expect("n_new") as usize;
    let mut worst = 0f32;
    let mut case_prompts = std::collections::HashMap::new();
    for case in reference["cases"].as_array().expect("cases") {
        let case_name = case["name"].as_str().expect("case name");
        let prompt = json_ids(&case["input_ids"]);
        let (logits, greedy) = prompt_logits_and_greedy(model, adapter, &prompt, n_new);

        let expected = ref_logits.tensor(case_name).expect("case logits");
        assert_eq!(expected.shape(), [prompt.len(), model.config().vocab_size], "{name}/{case_name}: logits shape");
        let expected: Vec<f32> =
            expected.data().chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
        let diff = logits.iter().zip(&expected).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
        eprintln!("{name}/{case_name}: {} prompt tokens, max |logit diff| = {diff:.2e}", prompt.len());
        assert!(diff <= tolerance, "{name}/{case_name}: prompt logits differ from transformers by {diff}");
        worst = worst.max(diff);

        assert_eq!(greedy, json_ids(&case["greedy_new_ids"]), "{name}/{case_name}: greedy tokens differ from transformers");
        case_prompts.insert(case_name.to_string(), prompt);
    }

    let batched = &reference["batched"];
    let prompts: Vec<Vec<u32>> =
        batched["members"].as_array().expect("members").iter().map(|m| case_prompts[m.as_str().expect("member")].clone()).collect();
    let expected: Vec<Vec<u32>> = batched["greedy_new_ids"].as_array().expect("batched ids").iter().map(json_ids).collect();
    let adapters = vec![adapter; prompts.len()];
    assert_eq!(batched_greedy(model, &adapters, &prompts, n_new), expected, "{name}: batched greedy tokens differ");
    worst
}

#[test]
fn tiny_llama_matches_transformers() {
    check_model("tiny-llama", &LoadOptions::default());
}

#[test]
fn tiny_qwen2_sharded_matches_transformers() {
    check_model("tiny-qwen2", &LoadOptions::default());
}

#[test]
fn tiny_qwen3_matches_transformers() {
    check_model("tiny-qwen3", &LoadOptions::default());
}

#[test]
fn tiny_mistral_matches_transformers() {
    check_model("tiny-mistral", &LoadOptions::default());
}

#[test]
fn tiny_gemma3_matches_transformers() {
    check_model("tiny-gemma3", &LoadOptions::default());
}

/// Holding weights in the 16-bit type they are stored in changes no value: same results.
#[test]
fn sixteen_bit_weights_held_as_stored_match() {
    check_model("tiny-mistral", &LoadOptions { dtype: WeightDType::F16, quantize: None, adapters: Vec::new() });
    check_model("tiny-gemma3", &LoadOptions { dtype: WeightDType::Bf16, quantize: None, adapters: Vec::new() });
}

/// The default f16 KV cache (the other tests use f32, as transformers does): prompt logits
/// stay within f16 rounding of transformers' (at most ~6e-2 on these random models, against 1e-3
/// with f32) and the greedy tokens, alone and batched, are transformers' own.
#[test]
fn f16_kv_cache_keeps_transformers_greedy_tokens() {
    for name in ["tiny-llama", "tiny-qwen2", "tiny-qwen3", "tiny-mistral", "tiny-gemma3"] {
        let mut model = load(name, &LoadOptions::default());
        model.set_kv_type(KvType::F16);
        check_within(&model, None, &format!("{name} (f16 KV)"), name, 0.1);
    }
}

/// q8_0 at load perturbs every logit a little; the top token at the last prompt position of
/// the `short` case stays (a loose check of the quantized path, not of its accuracy).
#[test]
fn quantized_at_load_keeps_the_top_token() {
    for name in ["tiny-llama", "tiny-qwen2", "tiny-qwen3", "tiny-mistral", "tiny-gemma3"] {
        let model = load(name, &LoadOptions { dtype: WeightDType::Auto, quantize: Some(Quantization::Q8_0), adapters: Vec::new() });
        let case = &reference(name)["cases"][0];
        let mut cache = SeqCache::new(model.config());
        let prompt = json_ids(&case["input_ids"]);
        let logits = model.forward(&mut [SeqInput { tokens: &prompt, cache: &mut cache, logits: Logits::Last, positions: None, embeds: &[] }]).expect("forward");
        assert_eq!(argmax(&logits[0]), json_ids(&case["greedy_new_ids"])[0], "{name}: q8_0 changed the top token");
    }
}

fn copy(from: &str, files: &[&str], to: &Path) {
    for f in files {
        std::fs::copy(model_dir(from).join(f), to.join(f)).unwrap_or_else(|e| panic!("copy {f}: {e}"));
    }
}

/// The load error's message; panics if loading succeeds.
fn load_error(dir: &Path) -> String {
    load_error_with(dir, &LoadOptions::default())
}

fn load_error_with(dir: &Path, opts: &LoadOptions) -> String {
    match load_checkpoint_model(dir, opts) {
        Ok(_) => panic!("{} loaded, expected an error", dir.display()),
        Err(e) => e.to_string(),
    }
}

fn assert_mentions(message: &str, parts: &[&str]) {
    for p in parts {
        assert!(message.contains(p), "error {message:?} should mention {p:?}");
    }
}

#[test]
fn directory_without_config_is_a_clean_error() {
    let dir = scratch_dir("no-config");
    copy("tiny-llama", &["model.safetensors"], &dir);
    assert_mentions(&load_error(&dir), &["config.json", "cannot read"]);
}

#[test]
fn directory_without_weights_is_a_clean_error() {
    let dir = scratch_dir("no-weights");
    copy("tiny-llama", &["config.json"], &dir);
    assert_mentions(&load_error(&dir), &["no model.safetensors or model.safetensors.index.json"]);
}

#[test]
fn index_naming_a_missing_shard_is_a_clean_error() {
    let dir = scratch_dir("missing-shard");
    copy("tiny-qwen2", &["config.json", "model.safetensors.index.json", "model-00001-of-00002.safetensors"], &dir);
    assert_mentions(&load_error(&dir), &["model.safetensors.index.json", "model-00002-of-00002.safetensors", "missing"]);
}

#[test]
fn config_problems_name_the_key() {
    let config: Value = serde_json::from_str(&std::fs::read_to_string(model_dir("tiny-llama").join("config.json")).expect("config"))
        .expect("config json");
    let cases: [(&str, Value, &[&str]); 4] = [
        ("unsupported-arch", serde_json::json!({"model_type": "mamba"}), &["unsupported architecture 'mamba'", "llama, mistral, qwen2, qwen3, gemma3_text"]),
        ("bad-value", serde_json::json!({"hidden_size": "wide"}), &["config.json", "key 'hidden_size'"]),
        ("missing-key", serde_json::json!({"num_hidden_layers": null}), &["config.json", "missing key 'num_hidden_layers'"]),
        ("bad-rope", serde_json::json!({"rope_scaling": {"rope_type": "yarn", "factor": 4.0}}), &["config.json", "RoPE type 'yarn'"]),
    ];
    for (name, patch, expected) in cases {
        let mut config = config.clone();
        for (k, v) in patch.as_object().expect("patch") {
            config[k] = v.clone();
        }
        let dir = scratch_dir(name);
        copy("tiny-llama", &["model.safetensors"], &dir);
        std::fs::write(dir.join("config.json"), config.to_string()).expect("write config");
        assert_mentions(&load_error(&dir), expected);
    }
    let dir = scratch_dir("not-json");
    std::fs::write(dir.join("config.json"), "{\"model_type\": ").expect("write config");
    assert_mentions(&load_error(&dir), &["config.json", "not a JSON object"]);
}

#[test]
fn tensor_with_the_wrong_shape_is_a_clean_error() {
    let dir = scratch_dir("wrong-shape");
    copy("tiny-llama", &["config.json"], &dir);
    let original = std::fs::read(model_dir("tiny-llama").join("model.safetensors")).expect("weights");
    let st = SafeTensors::deserialize(&original).expect("safetensors");
    let victim = "model.layers.1.self_attn.k_proj.weight";
    let tensors: Vec<(String, safetensors::tensor::TensorView)> = st
        .tensors()
        .into_iter()
        .map(|(name, view)| {
            if name != victim {
                return (name, view);
            }
            // Drop the last row: [32, 64] becomes [31, 64].
            let shape = [view.shape()[0] - 1, view.shape()[1]];
            let bytes = &view.data()[..shape[0] * shape[1] * 4];
            (name, safetensors::tensor::TensorView::new(view.dtype(), shape.to_vec(), bytes).expect("view"))
        })
        .collect();
    safetensors::serialize_to_file(tensors, None, &dir.join("model.safetensors")).expect("write weights");
    assert_mentions(&load_error(&dir), &[victim, "shape [31, 64], expected [32, 64]"]);

    // A truncated file is caught by the header check, naming the file.
    let dir = scratch_dir("truncated");
    copy("tiny-llama", &["config.json"], &dir);
    std::fs::write(dir.join("model.safetensors"), &original[..original.len() / 2]).expect("write");
    assert_mentions(&load_error(&dir), &["model.safetensors", "not a valid safetensors file"]);
}

#[test]
fn load_options_are_refused_for_gguf_files() {
    let opts = LoadOptions { dtype: WeightDType::F16, quantize: None, adapters: Vec::new() };
    let Err(e) = load_with(Path::new("model.gguf"), &opts) else { panic!("options accepted for a GGUF file") };
    assert_mentions(&e.to_string(), &["model.gguf", "--dtype and --quantize apply to Hugging Face checkpoint directories"]);
}

fn with_adapters(adapters: Vec<PathBuf>) -> LoadOptions {
    LoadOptions { adapters, ..LoadOptions::default() }
}

#[test]
fn lora_adapter_merged_at_load_matches_peft() {
    let worst = check_against("tiny-llama", &with_adapters(vec![model_dir("tiny-llama-lora")]), "tiny-llama-lora");
    eprintln!("tiny-llama + tiny-llama-lora: worst |logit diff| = {worst:.2e}");
    // The base model is unchanged without the adapter.
    check_model("tiny-llama", &LoadOptions::default());
}

/// The adapter also applies with `--quantize q8_0` (merged, then quantized): the top-10
/// last-position logits of every case stay near the adapter's reference. Loosely: q8_0 moves
/// these random-weight logits by ~0.1, while the adapter itself moves them by up to 9.
#[test]
fn lora_adapter_merges_before_quantizing() {
    let opts = LoadOptions { quantize: Some(Quantization::Q8_0), ..with_adapters(vec![model_dir("tiny-llama-lora")]) };
    let model = load("tiny-llama", &opts);
    for case in reference("tiny-llama-lora")["cases"].as_array().expect("cases") {
        let mut cache = SeqCache::new(model.config());
        let prompt = json_ids(&case["input_ids"]);
        let logits = model.forward(&mut [SeqInput { tokens: &prompt, cache: &mut cache, logits: Logits::Last, positions: None, embeds: &[] }]).expect("forward");
        for pair in case["last_position_top10"].as_array().expect("top10") {
            let (id, expected) = (pair[0].as_u64().expect("id") as usize, pair[1].as_f64().expect("logit") as f32);
            let diff = (logits[0][id] - expected).abs();
            assert!(diff < 0.5, "{}: token {id}: q8_0 logit {} vs {expected}", case["name"], logits[0][id]);
        }
    }
}

/// An adapter with `lora_alpha` 8 merged twice equals the fixture's alpha 16 merged once:
/// several adapters add up, in order.
#[test]
fn several_adapters_add_up() {
    let half = scratch_dir("lora-half");
    copy("tiny-llama-lora", &[ADAPTER_WEIGHTS], &half);
    write_adapter_config(&half, |c| c["lora_alpha"] = 8.into());
    check_against("tiny-llama", &with_adapters(vec![half.clone(), half]), "tiny-llama-lora");
}

/// `use_rslora` scales by `lora_alpha / √r`: alpha `2·√8` then gives the fixture's scale 2.
#[test]
fn rslora_scales_by_the_square_root_of_the_rank() {
    let dir = scratch_dir("lora-rslora");
    copy("tiny-llama-lora", &[ADAPTER_WEIGHTS], &dir);
    write_adapter_config(&dir, |c| {
        c["use_rslora"] = true.into();
        c["lora_alpha"] = (2.0 * 8f64.sqrt()).into();
    });
    check_against("tiny-llama", &with_adapters(vec![dir]), "tiny-llama-lora");
}

/// A copy of the fixture's adapter config, edited by `edit`, written into `dir`.
fn write_adapter_config(dir: &Path, edit: impl FnOnce(&mut Value)) {
    let text = std::fs::read_to_string(model_dir("tiny-llama-lora").join(ADAPTER_CONFIG)).expect("adapter config");
    let mut config: Value = serde_json::from_str(&text).expect("adapter config json");
    edit(&mut config);
    std::fs::write(dir.join(ADAPTER_CONFIG), config.to_string()).expect("write adapter config");
}

/// The fixture's adapter weights with each `(victim, new_name, rows)` tensor renamed and/or cut
/// to its first `rows` rows (dropped when `new_name` is empty), written into `dir` with the
/// fixture's config.
fn write_adapter_weights(dir: &Path, edits: &[(&str, &str, usize)]) {
    let original = std::fs::read(model_dir("tiny-llama-lora").join(ADAPTER_WEIGHTS)).expect("adapter weights");
    let st = SafeTensors::deserialize(&original).expect("safetensors");
    let tensors: Vec<(String, safetensors::tensor::TensorView)> = st
        .tensors()
        .into_iter()
        .filter_map(|(name, view)| {
            let Some(&(_, new_name, rows)) = edits.iter().find(|e| e.0 == name) else {
                return Some((name, view));
            };
            let shape = [rows, view.shape()[1]];
            let bytes = &view.data()[..shape[0] * shape[1] * 4];
            let view = safetensors::tensor::TensorView::new(view.dtype(), shape.to_vec(), bytes).expect("view");
            (!new_name.is_empty()).then(|| (new_name.to_string(), view))
        })
        .collect();
    safetensors::serialize_to_file(tensors, None, &dir.join(ADAPTER_WEIGHTS)).expect("write adapter weights");
    copy("tiny-llama-lora", &[ADAPTER_CONFIG], dir);
}

#[test]
fn broken_adapters_are_clean_errors() {
    let base = model_dir("tiny-llama");
    let error = |adapter: &Path| load_error_with(&base, &with_adapters(vec![adapter.to_path_buf()]));

    let dir = scratch_dir("lora-empty");
    assert_mentions(&error(&dir), &[ADAPTER_CONFIG, "cannot read"]);
    copy("tiny-llama-lora", &[ADAPTER_CONFIG], &dir);
    assert_mentions(&error(&dir), &[ADAPTER_WEIGHTS, "cannot read"]);

    let dir = scratch_dir("lora-bad-json");
    copy("tiny-llama-lora", &[ADAPTER_WEIGHTS], &dir);
    std::fs::write(dir.join(ADAPTER_CONFIG), "{\"r\": ").expect("write");
    assert_mentions(&error(&dir), &[ADAPTER_CONFIG, "invalid adapter config"]);
    write_adapter_config(&dir, |c| {
        c.as_object_mut().expect("object").remove("r");
    });
    assert_mentions(&error(&dir), &[ADAPTER_CONFIG, "missing field `r`"]);
    write_adapter_config(&dir, |c| c["fan_in_fan_out"] = true.into());
    assert_mentions(&error(&dir), &[ADAPTER_CONFIG, "fan_in_fan_out", "not supported"]);
    write_adapter_config(&dir, |c| c["target_modules"] = ".*proj".into());
    assert_mentions(&error(&dir), &[ADAPTER_CONFIG, "regex", "not supported"]);

    // Layer 7 of a 2-layer model.
    let dir = scratch_dir("lora-unknown-module");
    let victim = "base_model.model.model.layers.1.self_attn.q_proj.lora_";
    let renamed = "base_model.model.model.layers.7.self_attn.q_proj.lora_";
    let (a, b) = ([victim, "A.weight"].concat(), [victim, "B.weight"].concat());
    let (new_a, new_b) = ([renamed, "A.weight"].concat(), [renamed, "B.weight"].concat());
    write_adapter_weights(&dir, &[(&a, &new_a, 8), (&b, &new_b, 64)]);
    assert_mentions(&error(&dir), &[ADAPTER_WEIGHTS, &new_a, "module 'model.layers.7.self_attn.q_proj', which the model lacks"]);

    // lora_B of k_proj cut from [32, 8] to [31, 8]: made for another model.
    let dir = scratch_dir("lora-wrong-shape");
    let victim = "base_model.model.model.layers.0.self_attn.k_proj.lora_B.weight";
    write_adapter_weights(&dir, &[(victim, victim, 31)]);
    assert_mentions(
        &error(&dir),
        &[ADAPTER_WEIGHTS, "layers.0.self_attn.k_proj.lora_B.weight", "lora_B [31, 8]", "[32, 64]", "another model"],
    );

    // The same adapter on a model of other sizes.
    let dir = model_dir("tiny-llama-lora");
    let opts = with_adapters(vec![dir]);
    assert_mentions(&load_error_with(&model_dir("tiny-gemma3"), &opts), &[ADAPTER_WEIGHTS, "do not fit"]);

    let dir = scratch_dir("lora-unexpected");
    let victim = "base_model.model.model.layers.0.mlp.up_proj.lora_B.weight";
    write_adapter_weights(&dir, &[(victim, "base_model.model.model.layers.0.mlp.up_proj.lora_C.weight", 64)]);
    assert_mentions(&error(&dir), &[ADAPTER_WEIGHTS, "lora_C.weight", "not a LoRA weight"]);

    let dir = scratch_dir("lora-unpaired");
    write_adapter_weights(&dir, &[(victim, "", 0)]);
    assert_mentions(&error(&dir), &[ADAPTER_WEIGHTS, "layers.0.mlp.up_proj.lora_A.weight", "no matching lora_B.weight"]);
}

#[test]
fn adapters_are_refused_for_gguf_files() {
    let Err(e) = load_with(Path::new("model.gguf"), &with_adapters(vec![model_dir("tiny-llama-lora")])) else {
        panic!("adapter accepted for a GGUF file")
    };
    assert_mentions(&e.to_string(), &["model.gguf", "merge the adapter before converting to GGUF"]);
}

/// The fixture adapter loaded unmerged for `model`.
fn unmerged_fixture(model: &Model) -> LoraAdapter {
    LoraAdapter::load(&model_dir("tiny-llama-lora"), model).unwrap_or_else(|e| panic!("unmerged adapter: {e}"))
}

/// The unmerged path (`x·Wᵀ + scale·(x·Aᵀ)·Bᵀ` per sequence) against PEFT's merged reference:
/// greedy tokens exactly and logits within 1e-4, alone and batched; the same model without the
/// adapter still gives the base reference.
#[test]
fn unmerged_lora_matches_the_merged_reference() {
    let base = load("tiny-llama", &LoadOptions::default());
    let adapter = unmerged_fixture(&base);
    let worst = check_loaded(&base, Some(&adapter), "tiny-llama + unmerged tiny-llama-lora", "tiny-llama-lora");
    eprintln!("unmerged tiny-llama-lora vs PEFT's merged reference: worst |logit diff| = {worst:.2e}");
    assert!(worst <= 1e-4, "unmerged logits differ from the merged reference by {worst}");
    // And against our own merged load, which sees the same base weights.
    let merged = load("tiny-llama", &with_adapters(vec![model_dir("tiny-llama-lora")]));
    for case in reference("tiny-llama-lora")["cases"].as_array().expect("cases") {
        let prompt = json_ids(&case["input_ids"]);
        let (ours, _) = prompt_logits_and_greedy(&base, Some(&adapter), &prompt, 1);
        let (theirs, _) = prompt_logits_and_greedy(&merged, None, &prompt, 1);
        let diff = ours.iter().zip(&theirs).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
        assert!(diff <= 1e-4, "{}: unmerged vs merged at load differ by {diff}", case["name"]);
    }
    check_loaded(&base, None, "tiny-llama beside an unmerged adapter", "tiny-llama");
    // 2 layers × (q, k, v, o, gate, up, down) × r 8 × (in + out) f32 values.
    let cfg = base.config();
    let (h, q, kv, ffn) = (cfg.hidden_size, cfg.num_heads * cfg.head_dim, cfg.kv_dim(), cfg.intermediate_size);
    let per_layer = (h + q) + 2 * (h + kv) + (q + h) + 2 * (h + ffn) + (ffn + h);
    assert_eq!(adapter.size_in_bytes(), cfg.num_layers() * per_layer * 8 * 4);
}

/// One batch mixing the fixture adapter, a second adapter (random A/B written here) and no
/// adapter, with an adapter shared by sequences that are not neighbours: every sequence gets
/// exactly its solo greedy tokens.
#[test]
fn a_batch_mixing_adapters_gives_each_sequence_its_solo_tokens() {
    let base = load("tiny-llama", &LoadOptions::default());
    let first = unmerged_fixture(&base);
    let dir = scratch_dir("lora-second");
    write_random_lora(&model_dir("tiny-llama-lora"), &dir, 0x9e37_79b9_7f4a_7c15);
    let second = LoraAdapter::load(&dir, &base).expect("second adapter");
    let reference = reference("tiny-llama-lora");
    let n_new = reference["n_new"].as_u64().expect("n_new") as usize;
    let cases: Vec<Vec<u32>> = reference["cases"].as_array().expect("cases").iter().map(|c| json_ids(&c["input_ids"])).collect();
    let plan: [(usize, Option<&LoraAdapter>); 5] =
        [(0, Some(&first)), (1, Some(&second)), (2, None), (1, Some(&first)), (0, Some(&second))];
    let prompts: Vec<Vec<u32>> = plan.iter().map(|&(c, _)| cases[c].clone()).collect();
    let adapters: Vec<Option<&LoraAdapter>> = plan.iter().map(|&(_, a)| a).collect();
    let solo: Vec<Vec<u32>> =
        plan.iter().map(|&(c, a)| prompt_logits_and_greedy(&base, a, &cases[c], n_new).1).collect();
    // The adapters matter: the same prompt continues differently under each.
    assert_ne!(solo[0], solo[4], "the second adapter changed nothing");
    assert_ne!(solo[1], solo[3], "the second adapter changed nothing");
    assert_eq!(batched_greedy(&base, &adapters, &prompts, n_new), solo, "a mixed batch changed some sequence's tokens");
}

/// Unmerged adapters are checked against the model at load: errors name the adapter file and
/// the setting or tensor at fault.
#[test]
fn unmerged_adapter_errors_name_the_file_and_setting() {
    let base = load("tiny-llama", &LoadOptions::default());
    let error = |dir: &Path| match LoraAdapter::load(dir, &base) {
        Ok(_) => panic!("{}: adapter loaded, expected an error", dir.display()),
        Err(e) => e.to_string(),
    };
    // Made for another model: tiny-llama's adapter on tiny-gemma3.
    let gemma = load("tiny-gemma3", &LoadOptions::default());
    let Err(e) = LoraAdapter::load(&model_dir("tiny-llama-lora"), &gemma) else { panic!("tiny-llama's adapter fit tiny-gemma3") };
    assert_mentions(&e.to_string(), &[ADAPTER_WEIGHTS, "do not fit", "another model"]);

    let missing = scratch_dir("lora-unmerged-missing").join("no-such-adapter");
    assert_mentions(&error(&missing), &["no-such-adapter", ADAPTER_CONFIG, "cannot read"]);

    let dir = scratch_dir("lora-unmerged-settings");
    copy("tiny-llama-lora", &[ADAPTER_WEIGHTS], &dir);
    let refused: [(&str, Value, &str); 5] = [
        ("use_dora", true.into(), "use_dora: true (DoRA)"),
        ("modules_to_save", serde_json::json!(["lm_head"]), "modules_to_save (lm_head)"),
        ("bias", "all".into(), "bias: \"all\""),
        ("layers_to_transform", serde_json::json!([0]), "layers_to_transform"),
        ("lora_bias", true.into(), "lora_bias: true"),
    ];
    for (key, value, expected) in refused {
        write_adapter_config(&dir, |c| c[key] = value);
        assert_mentions(&error(&dir), &[ADAPTER_CONFIG, expected, "not supported"]);
    }
}
