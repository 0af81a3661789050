//! End-to-end tests through the real `ingot` binary.

mod common;

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};

use common::{chat, chat_with, ingot, run_chat};
use ingot_testkit::model_path;

/// The replies, one per user turn, in order.
fn replies(out: &Output) -> Vec<String> {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.strip_prefix("Assistant: "))
        .map(str::to_string)
        .collect()
}

#[test]
fn chat_answers_keeps_history_and_clear_forgets_it() {
    let out = chat(
        &["--temperature", "0", "--max-new-tokens", "48"],
        "What is the capital of France?\nMy name is Zorblax.\nWhat is my name?\nclear\nWhat is my name?\nexit\nWhat is ignored after exit?\n",
    );
    assert!(out.status.success(), "exit status {:?}, stderr: {}", out.status, String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let r = replies(&out);
    assert_eq!(r.len(), 4, "one reply per user turn before exit: {stdout}");
    assert!(r[0].contains("Paris"), "{stdout}");
    assert!(r[2].contains("Zorblax"), "with history the model knows the name: {stdout}");
    assert!(stdout.contains("History has been removed."), "{stdout}");
    assert!(!r[3].contains("Zorblax"), "after clear the name is gone: {stdout}");
}

#[test]
fn chat_with_the_same_seed_repeats_itself() {
    let args = ["--temperature", "0.9", "--top-p", "0.95", "--seed", "7", "--max-new-tokens", "24"];
    let (a, b) = (chat(&args, "Write a haiku about rust.\n"), chat(&args, "Write a haiku about rust.\n"));
    assert!(a.status.success() && b.status.success());
    assert_eq!(replies(&a), replies(&b));
    assert_eq!(replies(&a).len(), 1);
}

#[test]
fn chat_rejects_invalid_sampling_flags() {
    let out = chat(&["--top-p", "1.5"], "hi\n");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("top_p") && err.contains("1.5"), "{err}");
}

/// A model path ingot cannot use must give a non-zero exit and one error line naming the
/// file: no panic message, no backtrace.
fn assert_clean_failure(model: &Path, expect: &str) {
    let out = ingot().arg("chat").arg("--model").arg(model).stdin(Stdio::null()).output().expect("run ingot");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{model:?} was accepted");
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 1, "expected one error line, got: {err}");
    assert!(lines[0].starts_with("error: "), "{err}");
    assert!(lines[0].contains(&model.display().to_string()), "the error must name the file: {err}");
    assert!(lines[0].contains(expect), "expected {expect:?} in: {err}");
    assert!(!err.contains("panicked") && !err.contains("backtrace"), "{err}");
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ingot-cli-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir.join(name)
}

#[test]
fn missing_model_file_is_a_clean_error() {
    assert_clean_failure(&scratch("no-such-model.gguf"), "cannot read");
}

#[test]
fn truncated_gguf_is_a_clean_error() {
    let real = std::fs::read(model_path(&ingot_core::load::models_dir(), ingot_core::load::DEFAULT_MODEL_FILE)).expect("read model");
    // Cut in the header (the vocabulary) and in the tensor data.
    for (name, len) in [("cut-header.gguf", 4096), ("cut-data.gguf", real.len() / 2)] {
        let path = scratch(name);
        std::fs::write(&path, &real[..len]).expect("write truncated copy");
        assert_clean_failure(&path, "not a valid GGUF file");
    }
}

#[test]
fn unknown_architecture_lists_the_supported_ones() {
    // A minimal GGUF v3 header: no tensors, one metadata key.
    let mut bytes = b"GGUF".to_vec();
    bytes.extend(3u32.to_le_bytes());
    bytes.extend(0u64.to_le_bytes());
    bytes.extend(1u64.to_le_bytes());
    let key = b"general.architecture";
    bytes.extend((key.len() as u64).to_le_bytes());
    bytes.extend(key);
    bytes.extend(8u32.to_le_bytes()); // string
    let value = b"mamba9";
    bytes.extend((value.len() as u64).to_le_bytes());
    bytes.extend(value);
    let path = scratch("unknown-arch.gguf");
    std::fs::write(&path, bytes).expect("write");
    assert_clean_failure(&path, "unsupported architecture 'mamba9' (supported: llama, mistral, qwen2, qwen3, gemma3)");
}

#[test]
fn gemma_base_needs_a_named_template_and_chats_with_one() {
    let gemma = model_path(&ingot_core::load::models_dir(), "gemma-3-270m-q4_k_m.gguf");
    let run = |extra: &[&str]| {
        let args: Vec<&str> = ["--temperature", "0", "--max-new-tokens", "8"].iter().chain(extra).copied().collect();
        chat_with(&gemma, &args, "The capital of France is\n")
    };
    let without = run(&[]);
    assert!(!without.status.success());
    assert!(String::from_utf8_lossy(&without.stderr).contains("--template"));
    let with = run(&["--template", "empty"]);
    assert!(with.status.success(), "{}", String::from_utf8_lossy(&with.stderr));
    assert_eq!(replies(&with).len(), 1);
}

#[test]
fn chat_loads_a_hugging_face_checkpoint_directory() {
    let dir = ingot_testkit::fixtures_dir().join("tiny-qwen2");
    let out = chat_with(&dir, &["--temperature", "0", "--max-new-tokens", "4", "--quantize", "q8_0"], "hello\n");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(replies(&out).len(), 1);
}

#[test]
fn a_directory_without_config_json_is_a_clean_error() {
    let dir = scratch("empty-checkpoint");
    std::fs::create_dir_all(&dir).expect("mkdir");
    assert_clean_failure(&dir, "config.json");
}

/// Runs `ingot score` on `model` with `jsonl` as the input file.
fn score(model: &Path, name: &str, jsonl: &str) -> Output {
    let input = scratch(name);
    std::fs::write(&input, jsonl).expect("write input");
    // transformers' scores come from an f32 KV cache; f16 rounding alone exceeds 1e-4.
    let args = ["--batch-size", "2", "--cache-type", "f32"];
    ingot().arg("score").arg("--model").arg(model).arg("--input").arg(&input).args(args).output().expect("run ingot")
}

fn rm_items() -> Vec<serde_json::Value> {
    let path = ingot_testkit::fixtures_dir().join("tiny-qwen2-rm/scores.json");
    let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(path).expect("read scores.json")).expect("json");
    v["items"].as_array().expect("items").clone()
}

#[test]
fn score_prints_transformers_scores_in_order() {
    let items = rm_items();
    // Alternate the two line forms; a blank line is skipped.
    let lines: Vec<String> = items
        .iter()
        .enumerate()
        .map(|(i, item)| {
            let text = &item["text"];
            if i % 2 == 0 { text.to_string() } else { serde_json::json!({ "text": text, "id": i }).to_string() }
        })
        .collect();
    let out = score(&ingot_testkit::fixtures_dir().join("tiny-qwen2-rm"), "texts.jsonl", &(lines.join("\n\n") + "\n"));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let scores: Vec<f32> = stdout.lines().map(|l| l.parse().expect("a score per line")).collect();
    assert_eq!(scores.len(), items.len(), "{stdout}");
    for (item, got) in items.iter().zip(scores) {
        let want = item["score"].as_f64().expect("score") as f32;
        assert!((got - want).abs() <= 1e-4, "{:?}: got {got}, transformers {want}", item["text"]);
    }
}

/// One `error:` line containing every one of `expect`, and no panic.
fn assert_one_error_line(out: &Output, expect: &[&str]) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    let lines: Vec<&str> = err.lines().filter(|l| !l.starts_with("Welcome")).collect();
    assert_eq!(lines.len(), 1, "expected one error line, got: {err}");
    assert!(lines[0].starts_with("error: "), "{err}");
    for e in expect {
        assert!(lines[0].contains(e), "expected {e:?} in: {err}");
    }
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn a_malformed_line_names_the_file_and_line() {
    let rm = ingot_testkit::fixtures_dir().join("tiny-qwen2-rm");
    for (name, jsonl, problem) in [
        ("bad-json.jsonl", "\"ok\"\n{\"text\": \"fine\"}\n{not json\n", "invalid JSON"),
        ("bad-shape.jsonl", "\"ok\"\n{\"text\": \"fine\"}\n[1, 2]\n", "expected a JSON string"),
        ("no-text.jsonl", "\"ok\"\n{\"text\": \"fine\"}\n{\"prompt\": \"x\"}\n", "\"text\""),
    ] {
        let out = score(&rm, name, jsonl);
        let at = format!("{}:3", scratch(name).display());
        assert_one_error_line(&out, &[&at, problem]);
    }
}

#[test]
fn score_on_a_causal_lm_is_an_error() {
    let lm = ingot_testkit::fixtures_dir().join("tiny-qwen2");
    let out = score(&lm, "lm.jsonl", "\"hello\"\n");
    assert_one_error_line(&out, &[&lm.display().to_string(), "no value head"]);
}

#[test]
fn chat_on_a_reward_model_is_an_error() {
    let rm = ingot_testkit::fixtures_dir().join("tiny-qwen2-rm");
    let out = chat_with(&rm, &["--max-new-tokens", "4"], "hello\n");
    assert_one_error_line(&out, &[&rm.display().to_string(), "reward model", "ingot score"]);
}

#[test]
fn chat_merges_lora_adapters_given_with_adapter() {
    let fixtures = ingot_testkit::fixtures_dir();
    let (base, adapter) = (fixtures.join("tiny-llama"), fixtures.join("tiny-llama-lora"));
    let greedy = ["--temperature", "0", "--max-new-tokens", "8"];
    let without = chat_with(&base, &greedy, "hello\n");
    assert!(without.status.success(), "{}", String::from_utf8_lossy(&without.stderr));
    let adapter_arg = adapter.to_str().expect("utf-8 fixture path");
    let with = chat_with(&base, &[&greedy[..], &["--adapter", adapter_arg]].concat(), "hello\n");
    assert!(with.status.success(), "{}", String::from_utf8_lossy(&with.stderr));
    // The adapter changes the fixture's greedy tokens in every reference case.
    assert_ne!(replies(&with), replies(&without), "the adapter changed nothing");

    // Comma-separated: the second (missing) directory is reported.
    let list = format!("{adapter_arg},{}", scratch("no-such-adapter").display());
    let out = chat_with(&base, &[&greedy[..], &["--adapter", &list]].concat(), "hello\n");
    assert!(!out.status.success(), "a missing adapter directory was accepted");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("no-such-adapter") && stderr.contains("adapter_config.json"), "{stderr}");
}

/// `--lora NAME=DIR --use-lora NAME` (unmerged, per sequence) replies as `--adapter DIR`
/// (merged at load) does; the same adapter served but not used leaves the base replies.
#[test]
fn chat_with_an_unmerged_lora_replies_as_the_merged_adapter() {
    let fixtures = ingot_testkit::fixtures_dir();
    let (base, adapter) = (fixtures.join("tiny-llama"), fixtures.join("tiny-llama-lora"));
    let adapter_arg = adapter.to_str().expect("utf-8 fixture path");
    let lora = format!("tuned={adapter_arg}");
    let greedy = ["--temperature", "0", "--max-new-tokens", "8"];
    let run = |extra: &[&str]| {
        let out = chat_with(&base, &[&greedy[..], extra].concat(), "hello\nwhat now?\n");
        assert!(out.status.success(), "{extra:?}: {}", String::from_utf8_lossy(&out.stderr));
        replies(&out)
    };
    let merged = run(&["--adapter", adapter_arg]);
    assert_eq!(run(&["--lora", &lora, "--use-lora", "tuned"]), merged);
    assert_eq!(run(&["--lora", &lora]), run(&[]), "an adapter served but not used changed the base replies");
}

/// Bad adapters stop `ingot chat` at start, naming the adapter, its file and the setting.
#[test]
fn bad_unmerged_adapters_are_refused_at_start() {
    let fixtures = ingot_testkit::fixtures_dir();
    let (llama, gemma, adapter) = (fixtures.join("tiny-llama"), fixtures.join("tiny-gemma3"), fixtures.join("tiny-llama-lora"));
    let refused = |model: &std::path::Path, args: &[&str], expected: &[&str]| {
        let out = chat_with(model, &[&["--max-new-tokens", "4"][..], args].concat(), "hello\n");
        assert!(!out.status.success(), "{args:?} was accepted");
        let stderr = String::from_utf8_lossy(&out.stderr);
        for part in expected {
            assert!(stderr.contains(part), "{args:?}: {stderr:?} should mention {part:?}");
        }
    };
    let for_llama = format!("tuned={}", adapter.display());
    refused(&gemma, &["--lora", &for_llama], &["'tuned'", "adapter_model.safetensors", "do not fit", "another model"]);
    let missing = scratch("no-such-lora");
    refused(&llama, &["--lora", &format!("gone={}", missing.display())], &["'gone'", "no-such-lora", "adapter_config.json"]);
    let dora = scratch("dora-lora");
    std::fs::create_dir_all(&dora).expect("scratch dir");
    std::fs::copy(adapter.join("adapter_model.safetensors"), dora.join("adapter_model.safetensors")).expect("copy weights");
    let config = std::fs::read_to_string(adapter.join("adapter_config.json")).expect("adapter config");
    std::fs::write(dora.join("adapter_config.json"), config.replace("\"use_dora\": false", "\"use_dora\": true")).expect("write config");
    refused(&llama, &["--lora", &format!("dora={}", dora.display())], &["'dora'", "adapter_config.json", "use_dora: true (DoRA)", "not supported"]);
    refused(&llama, &["--lora", &for_llama, "--use-lora", "nope"], &["no LoRA adapter is called 'nope'", "tuned"]);
    refused(&llama, &["--lora", "no-equals-sign"], &["NAME=DIR"]);
}

/// Runs `ingot chat` with `args` (config file and overrides first) and one user turn.
fn chat_args(args: &[&str]) -> Output {
    run_chat(args.iter().map(OsStr::new), "hello\n")
}

/// A LLaMA Factory inference config for the tiny Qwen2 checkpoint, plus `extra` lines.
fn tiny_config(name: &str, extra: &str) -> String {
    let model = ingot_testkit::fixtures_dir().join("tiny-qwen2");
    let path = scratch(name).join("infer.yaml");
    std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
    let text = format!(
        "model_name_or_path: {}\ntemplate: qwen\ndo_sample: false\nmax_new_tokens: 4\n{extra}",
        model.display()
    );
    std::fs::write(&path, text).expect("write config");
    path.display().to_string()
}

/// The one reply of a successful run.
fn reply_of(out: &Output) -> String {
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let r = replies(out);
    assert_eq!(r.len(), 1, "{}", String::from_utf8_lossy(&out.stdout));
    r[0].clone()
}

#[test]
fn chat_takes_a_llama_factory_config_and_overrides() {
    let cfg = tiny_config("yaml-chat", "");
    let four = reply_of(&chat_args(&[&cfg]));
    let two = reply_of(&chat_args(&[&cfg, "max_new_tokens=2"]));
    // Greedy: the two-token reply is a prefix of the four-token one, and shorter.
    assert!(four.starts_with(&two) && two.len() < four.len(), "{two:?} vs {four:?}");
    // An explicit flag beats both the file and the overrides.
    let flag = reply_of(&chat_args(&[&cfg, "max_new_tokens=2", "--max-new-tokens", "4"]));
    assert_eq!(flag, four);
}

#[test]
fn a_config_with_an_unknown_key_fails_naming_it() {
    let cfg = tiny_config("yaml-unknown", "temprature: 0.3\n");
    let out = chat_args(&[&cfg]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("temprature") && err.contains("infer.yaml"), "{err}");
}

#[test]
fn ignored_llama_factory_keys_warn_once() {
    let cfg = tiny_config("yaml-ignored", "infer_backend: huggingface\ntrust_remote_code: true\n");
    let out = chat_args(&[&cfg]);
    reply_of(&out);
    let err = String::from_utf8_lossy(&out.stderr);
    let warnings: Vec<&str> = err.lines().filter(|l| l.starts_with("warning:")).collect();
    assert_eq!(warnings.len(), 1, "{err}");
    assert!(warnings[0].contains("infer_backend") && warnings[0].contains("trust_remote_code"), "{err}");
}
